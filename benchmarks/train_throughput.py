"""Training throughput: cwarp-train's step with views rendered on the fly vs a
loop that feeds pre-rendered views (the floor: within 15%).

    python benchmarks/train_throughput.py [--arch resnet18] [--image-size 64] [--batch-size 64] [--json PATH]

Both contenders run the same Trainer.train_step (forward of the online and
target networks, fused loss, backward, optimizer, EMA); the first also renders
the two global views and the N warped negatives with ContraWarpAugment from
uint8 faces each step, as cwarp-train does.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))   # this checkout's cwarp, not an installed one
from common import Row, add_speedups, format_table, time_cpu, time_fn, write_json  # noqa: E402


def main(argv=None):
    from cwarp.train import distributed as D
    from cwarp.train import trainer as T
    from cwarp.train.config import PRECISIONS, config_from_argv
    from cwarp.data import SyntheticFaces

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--method", default="contrawarp", choices=("contrawarp", "byol"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="auto", choices=PRECISIONS, help="cwarp-train --precision")
    p.add_argument("--min-run-time", type=float, default=3.0)
    p.add_argument("--quick", action="store_true", help="small batch, short timing")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.batch_size, args.min_run_time = 16, 1.0

    cfg = config_from_argv(["--out", "unused", "--arch", args.arch, "--image-size", str(args.image_size),
                            "--batch-size", str(args.batch_size), "--method", args.method,
                            "--device", args.device, "--precision", args.precision])
    dev = torch.device(args.device)
    trainer = T.Trainer(cfg, D.DistInfo(), dev, 3, steps_per_epoch=10_000)
    ds = SyntheticFaces(args.batch_size, image_size=args.image_size, seed=0)
    images, _, landmarks = ds.tensors()
    views = trainer.make_views(images, landmarks)          # pre-rendered once, reused

    def on_the_fly():
        trainer.train_step(*trainer.make_views(images, landmarks))

    def prerendered():
        trainer.train_step(*views)

    def render_only():
        trainer.make_views(images, landmarks)

    case = (f"{args.method} {args.arch} B={args.batch_size} {args.image_size}x{args.image_size} "
            f"N={cfg.negatives.num_negatives}x{cfg.negatives.warps_per_negative} warps")
    dtype = str(trainer.amp_dtype or torch.float32).replace("torch.", "")   # the networks' compute dtype
    rows = []
    for name, fn in (("pre-rendered views (reference loop)", prerendered),
                     ("cwarp-train step (on the fly)", on_the_fly), ("view rendering alone", render_only)):
        rows.append(Row(case=case, contender=name, dtype=dtype, items=args.batch_size,
                        timing=time_fn(fn, dev, args.min_run_time)))
    add_speedups(rows, baseline="pre-rendered views (reference loop)")
    print(format_table(rows))
    ratio = rows[1].items_per_s / rows[0].items_per_s
    verdict = "meets" if ratio >= 0.85 else "MISSES"
    print(f"\non-the-fly / pre-rendered throughput = {ratio:.3f} ({verdict} the 0.85 floor)")
    if args.json:
        write_json(args.json, rows, extra={"ratio": ratio, "floor": 0.85})
    return 0


if __name__ == "__main__":
    sys.exit(main())
