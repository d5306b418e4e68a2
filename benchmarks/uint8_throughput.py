"""uint8 local warps on the CPU: cwarp.local_warp against albumentations.

A CPU user who wants a local distortion of uint8 images picks albumentations:
GridDistortion (cv2.remap on a coarse grid), ElasticTransform (a dense
smoothed random field) or PiecewiseAffine. All contenders get the same
images, uint8 RGB 224x224, on one thread (torch.set_num_threads(1),
cv2.setNumThreads(1)):

  cwarp uint8 (channels_last)   cwarp.local_warp on the batch viewed as
                                (B, 3, H, W) channels_last from the numpy HWC
                                array (torch.from_numpy(...).permute, no copy);
                                K=4 warps from cwarp.sample_local_warps (its
                                defaults), uint8 out
  cwarp uint8 (NCHW)            the same on a contiguous (B, 3, H, W) copy made
                                beforehand (torchvision's decode_image layout)
  cwarp float round trip        the same through float32 (x.float(), the warp,
                                round, clamp, to uint8): what one writes
                                without the uint8 path
  albumentations <T>            T(p=1.0) with its defaults, one image at a
                                time on the numpy HWC array

Timed with torch.utils.benchmark in interleaved rounds (benchmarks/common.py),
so a burst of outside load slows one pass, not the ratio. The slow
contenders run on fewer images per call; images/s is per image either way.
Prints the table (speedup = images/s over albumentations ElasticTransform)
and the floors:

  cwarp uint8 >= 10x ElasticTransform and >= 1.5x GridDistortion (images/s)

Exits 1 when a floor is missed or could not be measured (albumentations not
installed: the script says so), after writing the JSON.

  python benchmarks/uint8_throughput.py [--batch 64] [--size 224] [--min-run-time 0.5] [--json PATH]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

import cwarp  # noqa: E402

K = 4
CWARP_U8 = "cwarp uint8 (channels_last)"
CWARP_U8_NCHW = "cwarp uint8 (NCHW)"
CWARP_FLOAT = "cwarp float round trip"
ELASTIC = "albumentations ElasticTransform"
GRID = "albumentations GridDistortion"
PIECEWISE = "albumentations PiecewiseAffine"
BASELINE = ELASTIC
# (contender, images per call): PiecewiseAffine takes about a second per image.
ALBU_TRANSFORMS = ((ELASTIC, "ElasticTransform", 16), (GRID, "GridDistortion", None),
                   (PIECEWISE, "PiecewiseAffine", 2))
FLOORS = ((ELASTIC, 10.0), (GRID, 1.5))


def make_images(batch: int, size: int, seed: int = 0) -> np.ndarray:
    """(B, H, W, 3) uint8, as a decoder hands them over."""
    return np.random.default_rng(seed).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)


def cwarp_contenders(images: np.ndarray) -> Dict[str, Callable[[], object]]:
    x = torch.from_numpy(images).permute(0, 3, 1, 2)  # a channels_last view, no copy
    assert x.is_contiguous(memory_format=torch.channels_last)
    params = cwarp.sample_local_warps(x.shape[0], K, generator=torch.Generator().manual_seed(0))

    x_nchw = x.contiguous()

    def uint8():
        return cwarp.local_warp(x, params, backend="cpp")

    def uint8_nchw():
        return cwarp.local_warp(x_nchw, params, backend="cpp")

    def float_round_trip():
        return cwarp.local_warp(x.float(), params, backend="cpp").round_().clamp_(0, 255).to(torch.uint8)

    out = uint8()
    assert out.dtype == torch.uint8 and out.is_contiguous(memory_format=torch.channels_last)
    # Same kernel, same float math: the round trip gives the same bytes.
    assert torch.equal(out, float_round_trip()), "the uint8 path and the float round trip disagree"
    assert torch.equal(out, uint8_nchw()), "the channels_last and NCHW uint8 paths disagree"
    return {CWARP_U8: uint8, CWARP_U8_NCHW: uint8_nchw, CWARP_FLOAT: float_round_trip}


def albumentations_contenders(images: np.ndarray):
    """({name: fn}, {name: images per call}), or None when albumentations is missing."""
    try:
        import albumentations as A
    except ImportError:
        return None
    fns, items = {}, {}
    for name, cls, n in ALBU_TRANSFORMS:
        with warnings.catch_warnings():
            # PiecewiseAffine warns that it is slow: timing that is the point here.
            warnings.filterwarnings("ignore", message="This augmenter is very slow")
            transform = getattr(A, cls)(p=1.0)
        transform.set_random_seed(0)
        subset = list(images[:n] if n else images)

        def run(t=transform, imgs=subset):
            return [t(image=im)["image"] for im in imgs]

        out = run()
        assert out[0].shape == images[0].shape and out[0].dtype == np.uint8
        fns[name], items[name] = run, len(subset)
    return fns, items


def floor_report(rows: List[common.Row]) -> (List[str], bool):
    """(lines, all met); a floor whose contenders did not both run counts as missed."""
    ips = {r.contender: r.items_per_s for r in rows if r.timing is not None}
    lines = [f"Floors (images/s, {torch.get_num_threads()} thread, uint8, K={K}):"]
    all_met = True
    for other, floor in FLOORS:
        if CWARP_U8 not in ips or other not in ips:
            lines.append(f"  {CWARP_U8} vs {other}: not measured")
            all_met = False
            continue
        ratio = ips[CWARP_U8] / ips[other]
        met = ratio >= floor
        all_met &= met
        lines.append(f"  {CWARP_U8} vs {other}: {ratio:.2f}x (floor >= {floor:g}x) {'met' if met else 'NOT met'}")
    return lines, all_met


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--min-run-time", type=float, default=0.5, help="seconds per timing pass")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved passes; the best of each is kept")
    ap.add_argument("--json", metavar="PATH", help="write the rows as JSON")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    try:  # albumentations runs on OpenCV; without it only cwarp runs
        import cv2
        cv2.setNumThreads(1)
    except ImportError:
        pass
    t0 = time.time()
    images = make_images(args.batch, args.size)
    fns = cwarp_contenders(images)
    items = {name: args.batch for name in fns}
    albu = albumentations_contenders(images)
    missing_note = "albumentations is not installed (pip install albumentations)"
    if albu is not None:
        fns.update(albu[0])
        items.update(albu[1])
    case = f"{args.size}x{args.size}x3"
    rows: List[common.Row] = []
    for name, t in common.time_interleaved(fns, torch.device("cpu"), args.min_run_time, args.rounds).items():
        note = f"{items[name]} images per call" if items[name] != args.batch else ""
        if isinstance(t, Exception):
            rows.append(common.Row(case, name, "uint8", None, items[name], f"failed: {type(t).__name__}: {t}"[:120]))
        else:
            rows.append(common.Row(case, name, "uint8", t, items[name], note))
    if albu is None:
        rows += [common.Row(case, name, "uint8", None, 0, missing_note) for name, _, _ in ALBU_TRANSFORMS]
    base = next((r.items_per_s for r in rows if r.contender == BASELINE and r.timing is not None), None)
    for r in rows:
        if base is not None and r.timing is not None:
            r.speedup = r.items_per_s / base
    print(f"uint8 local warps: cpu, 1 thread, uint8 RGB {args.size}x{args.size}, cwarp K={K} on a batch of "
          f"{args.batch}; p50 ms per call; speedup = images/s over {BASELINE}")
    print(common.format_table(rows))
    if albu is None:
        print(f"\n{missing_note}: only cwarp was timed.")
    print()
    floors, met = floor_report(rows)
    print("\n".join(floors))
    print(f"\n(total {time.time() - t0:.0f} s)")
    if args.json:
        common.write_json(args.json, rows, {"floors": floors, "floors_met": met,
                                            "albumentations": albu is not None})
    if not met:
        print("uint8_throughput.py: a floor was missed or not measured (exit 1)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
