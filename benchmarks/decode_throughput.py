"""How fast the loaders decode RAF-DB-sized images (100x100 JPEG): images per second (floor: 1,000/s on 2 cores).

    python benchmarks/decode_throughput.py [--num 2000] [--image-size 64] [--json PATH]

The images are synthetic faces exported in RAF-DB's layout, so they compress
like real face crops. Three ways of reading them are timed:
  cached      build_dataset(..., cache=True): every image decoded up front, threaded
  per item    cache=False, ds[i] one after the other in this process
  dataloader  cache=False through a DataLoader with 2 worker processes
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

import common  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from cwarp.data import SyntheticFaces, build_dataset  # noqa: E402

FLOOR = 1000  # images/s on 2 cores


def _time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num", type=int, default=2000, help="images to decode")
    parser.add_argument("--image-size", type=int, default=64, help="size the loader resizes to")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many")
    parser.add_argument("--json", metavar="PATH", help="also write the results here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as root:
        SyntheticFaces(args.num, 100, seed=0, split="train").export_rafdb(root)
        size = args.image_size
        rows = []

        def cached():
            build_dataset("rafdb", root, "train", size, cache=True)

        lazy = build_dataset("rafdb", root, "train", size, cache=False)

        def per_item():
            for i in range(len(lazy)):
                lazy[i]

        def loader():
            for _ in DataLoader(lazy, batch_size=256, num_workers=2):
                pass

        for name, fn in (("cached", cached), ("per item", per_item), ("dataloader", loader)):
            seconds = _time(fn, args.repeats)
            rows.append({"mode": name, "images": args.num, "seconds": seconds, "images_per_s": args.num / seconds})

    print(f"RAF-DB-sized 100x100 JPEG -> {size}x{size} uint8, {os.cpu_count()} CPUs, torch threads "
          f"{torch.get_num_threads()}")
    print(f"{'mode':>11} {'images':>7} {'seconds':>8} {'images/s':>9}")
    for row in rows:
        print(f"{row['mode']:>11} {row['images']:>7} {row['seconds']:>8.3f} {row['images_per_s']:>9.0f}")
    best = max(r["images_per_s"] for r in rows)
    print(f"best {best:.0f} images/s (floor {FLOOR}): {'ok' if best >= FLOOR else 'BELOW FLOOR'}")
    record = {"benchmark": "decode_throughput", "rows": rows, "image_size": size, "floor_images_per_s": FLOOR,
              "cpu_count": os.cpu_count(), "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None}
    if args.json:
        common.write_record(args.json, record)
    return record


if __name__ == "__main__":
    main()
