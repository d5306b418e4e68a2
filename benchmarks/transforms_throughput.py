"""Images per second of cwarp.transforms inside a torchvision v2 pipeline.

The baseline is a typical v2 pipeline on uint8 images:
RandomResizedCrop(S) + RandomHorizontalFlip + ColorJitter + ToDtype(float32,
scale=True). Contenders, per image (3, H, W) and per batch (B, 3, H, W):

- "v2 pipeline": the baseline.
- "v2 + RandomLocalWarp (uint8)": RandomLocalWarp after the flip, on uint8
  (local_warp reads and writes uint8 directly).
- "v2 + RandomLocalWarp (float32)": RandomLocalWarp after ToDtype.
- "ContraWarpViews": replaces the pipeline (it crops, flips and jitters
  itself) and renders 2 + N views per image, normalized; items count
  images, not views.
- "RandomLocalWarp alone (uint8)": the warp on the uncropped source, what
  it adds to a pipeline.

On a batch the v2 transforms draw one set of parameters for the whole batch;
RandomLocalWarp and ContraWarpViews draw per image. No floor is set: the
script prints the table, writes the JSON when asked, and exits 0.

    python benchmarks/transforms_throughput.py [--threads 2] [--batch 32] [--src 256] [--size 224]
        [--negatives 2] [--min-run-time 0.5] [--rounds 2] [--json PATH]
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Row, add_speedups, format_table, time_interleaved, write_json  # noqa: E402

from torchvision import tv_tensors  # noqa: E402
from torchvision.transforms import v2  # noqa: E402

from cwarp.transforms import ContraWarpViews, RandomLocalWarp  # noqa: E402

BASELINE = "v2 pipeline"


def pipelines(size: int, negatives: int):
    def crop_flip():
        return [v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip()]

    jitter, to_float = v2.ColorJitter(0.4, 0.4, 0.2, 0.1), v2.ToDtype(torch.float32, scale=True)
    warp = dict(generator=torch.Generator().manual_seed(0))
    return {
        BASELINE: v2.Compose(crop_flip() + [jitter, to_float]),
        "v2 + RandomLocalWarp (uint8)": v2.Compose(crop_flip() + [RandomLocalWarp(**warp), jitter, to_float]),
        "v2 + RandomLocalWarp (float32)": v2.Compose(crop_flip() + [jitter, to_float, RandomLocalWarp(**warp)]),
        "ContraWarpViews": ContraWarpViews(size, num_negatives=negatives, generator=torch.Generator().manual_seed(0)),
        "RandomLocalWarp alone (uint8)": RandomLocalWarp(**warp),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--src", type=int, default=256, help="side of the uint8 source images")
    ap.add_argument("--size", type=int, default=224, help="side of the pipeline's output")
    ap.add_argument("--negatives", type=int, default=2, help="ContraWarpViews' N")
    ap.add_argument("--min-run-time", type=float, default=0.5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    batch = torch.randint(0, 256, (args.batch, 3, args.src, args.src), dtype=torch.uint8, generator=g)
    cases = [(f"per image 3x{args.src}x{args.src} -> {args.size}", tv_tensors.Image(batch[0].clone()), 1),
             (f"per batch B={args.batch} 3x{args.src}x{args.src} -> {args.size}", tv_tensors.Image(batch),
              args.batch)]
    rows: List[Row] = []
    for case, images, items in cases:
        fns = {name: (lambda t=t, x=images: t(x)) for name, t in pipelines(args.size, args.negatives).items()}
        timings = time_interleaved(fns, torch.device("cpu"), args.min_run_time, args.rounds)
        for name, t in timings.items():
            note = f"{2 + args.negatives} views per image, normalized" if name == "ContraWarpViews" else ""
            if isinstance(t, Exception):  # a contender that cannot run is reported, not hidden
                rows.append(Row(case, name, "uint8", None, items, f"failed: {type(t).__name__}: {t}"[:120]))
            else:
                rows.append(Row(case, name, "uint8", t, items, note))
    add_speedups(rows, BASELINE)
    print(f"device=cpu threads={torch.get_num_threads()}  (items = source images; speedup = {BASELINE} p50 / p50)")
    print(format_table(rows, unit="images/s"))
    if args.json:
        write_json(args.json, rows, extra={"args": vars(args)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
