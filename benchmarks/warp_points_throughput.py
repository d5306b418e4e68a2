"""Throughput of cwarp.warp_points: the C++ kernel against the same solver in PyTorch.

    python benchmarks/warp_points_throughput.py [--threads 2] [--quick] [--json out.json]

The workload is the one ContraWarpAugment's Views.landmarks gives: the 5 face
landmarks of every view of a batch (B images x V views), each view with K
local warps placed on the landmarks (sample_local_warps, default ranges).
Items are points; "points/s" is the rate. The PyTorch solver
(backend="torch", the oracle, and what a GPU would run without a kernel of
its own) is the baseline. No floor: this is the measurement that decides
whether warp_points needs a GPU kernel.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cwarp  # noqa: E402
from common import Row, add_speedups, format_table, time_interleaved, write_json  # noqa: E402

BASELINE = "torch solver"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--images", type=int, default=128, help="B images of the batch")
    ap.add_argument("--views", type=int, default=6, help="V views per image (pos1, pos2 and negatives)")
    ap.add_argument("--warps", type=int, default=4, help="K local warps per view")
    ap.add_argument("--quick", action="store_true", help="a smaller batch and shorter timing")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    images = 16 if args.quick else args.images
    min_run_time = 0.2 if args.quick else 1.0
    g = torch.Generator().manual_seed(0)
    rows: List[Row] = []
    n = images * args.views
    points = cwarp.FACE_LANDMARKS_5.expand(n, 5, 2).contiguous()
    for kind in ("translate", "gaussian"):
        params = cwarp.sample_local_warps(n, args.warps, centers=cwarp.FACE_LANDMARKS_5, generator=g)
        case = f"{kind} B*V={n} P=5 K={args.warps}"
        fns = {name: (lambda be=be: cwarp.warp_points(points, params, kind=kind, backend=be))
               for name, be in (("cwarp cpp", "cpp"), (BASELINE, "torch"))}
        timings = time_interleaved(fns, torch.device("cpu"), min_run_time, rounds=2)
        for name, t in timings.items():
            if isinstance(t, Exception):
                rows.append(Row(case, name, "float32", None, n * 5, f"failed: {type(t).__name__}: {t}"[:120]))
            else:
                rows.append(Row(case, name, "float32", t, n * 5, "solved in float64"))
    add_speedups(rows, BASELINE)
    print(f"threads={torch.get_num_threads()}  (items = points)")
    print(format_table(rows, unit="points/s"))
    if args.json:
        write_json(args.json, rows, extra={"args": vars(args)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
