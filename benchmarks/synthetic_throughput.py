"""How fast SyntheticFaces renders: faces per second on one core (floor: 2,000/s at 64x64).

    python benchmarks/synthetic_throughput.py [--sizes 32 64 96] [--num 4096] [--json PATH]

Faces/s is counted on process CPU time as well as wall time: on a shared
machine the wall clock also counts time spent waiting for a core. The
rendering runs on one thread (SyntheticFaces uses one, by design).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

import common  # noqa: E402

from cwarp.data import SyntheticFaces  # noqa: E402

FLOOR = 2000  # faces/s at 64x64 on one core


def measure(num: int, image_size: int, repeats: int) -> dict:
    SyntheticFaces(256, image_size, seed=99)  # warm up: allocator, kernels
    best_wall, best_cpu = float("inf"), float("inf")
    for r in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        SyntheticFaces(num, image_size, seed=r)
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return {"image_size": image_size, "faces": num, "wall_s": best_wall, "cpu_s": best_cpu,
            "faces_per_s_wall": num / best_wall, "faces_per_s_cpu": num / best_cpu}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 96])
    parser.add_argument("--num", type=int, default=4096, help="faces per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many")
    parser.add_argument("--json", metavar="PATH", help="also write the results here")
    args = parser.parse_args(argv)

    rows = [measure(args.num, size, args.repeats) for size in args.sizes]
    print(f"{'size':>5} {'faces':>6} {'wall s':>7} {'cpu s':>7} {'faces/s wall':>13} {'faces/s cpu':>12}")
    for row in rows:
        print(f"{row['image_size']:>5} {row['faces']:>6} {row['wall_s']:>7.2f} {row['cpu_s']:>7.2f} "
              f"{row['faces_per_s_wall']:>13.0f} {row['faces_per_s_cpu']:>12.0f}")
    at64 = [r for r in rows if r["image_size"] == 64]
    if at64:
        rate = at64[0]["faces_per_s_cpu"]
        print(f"64x64: {rate:.0f} faces/s per core (floor {FLOOR}): {'ok' if rate >= FLOOR else 'BELOW FLOOR'}")
    record = {"benchmark": "synthetic_throughput", "rows": rows, "floor_faces_per_s_at_64": FLOOR,
              "cpu_count": os.cpu_count(), "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None}
    if args.json:
        common.write_record(args.json, record)
    return record


if __name__ == "__main__":
    main()
