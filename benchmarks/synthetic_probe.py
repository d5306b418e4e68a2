"""Is SyntheticFaces hard in the right way? Probe scores of several representations of the same faces.

    python benchmarks/synthetic_probe.py [--num-train 2000] [--num-test 1000] [--image-size 64] [--json PATH]

Rows (linear probe, kNN, mAP@R and the probe's own time, feature extraction excluded):
  action units     the 9 ground-truth action-unit intensities: what a perfect
                   expression representation knows; below 100% because classes overlap
  landmarks        the 5 ground-truth landmark positions (mouth corners move with expression)
  aligned pixels   pixels after undoing the pose with the ground-truth landmarks
  raw pixels       the baseline; pose, identity, lighting and background drown the expression
  random convnet   features of an untrained convnet-small (optional, --random-init)
The gap between raw pixels and the first three rows is the point of the data set.
The raw-pixel row is also the probe's worst case for time (12,288 features at 64x64).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from cwarp.data import SyntheticFaces  # noqa: E402
from cwarp.models import build_backbone  # noqa: E402
from cwarp.probe import evaluate_features, extract_features  # noqa: E402


def aligned_pixels(ds: SyntheticFaces) -> torch.Tensor:
    """Pixels resampled so that each face's 5 landmarks best fit (similarity) their mean positions."""
    points = ds.landmarks
    reference = points.mean(0, keepdim=True).expand_as(points)
    p = points - points.mean(1, keepdim=True)
    q = reference - reference.mean(1, keepdim=True)
    norm = q.square().sum((1, 2))
    a = (q * p).sum((1, 2)) / norm
    b = (q[..., 0] * p[..., 1] - q[..., 1] * p[..., 0]).sum(1) / norm
    rotation = torch.stack([torch.stack([a, -b], -1), torch.stack([b, a], -1)], 1)
    shift = points.mean(1) - (rotation @ reference.mean(1).unsqueeze(-1)).squeeze(-1)
    theta = torch.cat([rotation, shift.unsqueeze(-1)], -1)
    size = ds.image_size
    grid = F.affine_grid(theta, [len(ds), 3, size, size], align_corners=False)
    return F.grid_sample(ds.images.float() / 255, grid, align_corners=False).flatten(1)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-train", type=int, default=2000)
    parser.add_argument("--num-test", type=int, default=1000)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--random-init", action="store_true", help="also probe an untrained convnet-small")
    parser.add_argument("--json", metavar="PATH", help="also write the results here")
    args = parser.parse_args(argv)

    train = SyntheticFaces(args.num_train, args.image_size, args.seed, split="train")
    test = SyntheticFaces(args.num_test, args.image_size, args.seed, split="test")
    representations = [
        ("action units", train.action_units, test.action_units),
        ("landmarks", train.landmarks.flatten(1), test.landmarks.flatten(1)),
        ("aligned pixels", aligned_pixels(train), aligned_pixels(test)),
        ("raw pixels", train.images.flatten(1).float() / 255, test.images.flatten(1).float() / 255),
    ]
    if args.random_init:
        torch.manual_seed(args.seed)
        model = build_backbone("convnet-small", 3, args.image_size)
        representations.append(("random convnet", extract_features(model, train, 256, "cpu", progress=False),
                                extract_features(model, test, 256, "cpu", progress=False)))
    rows = []
    for name, train_x, test_x in representations:
        start = time.perf_counter()
        result = evaluate_features(train_x, train.labels, test_x, test.labels, len(train.classes), seed=args.seed,
                                   class_names=train.classes)
        rows.append({"representation": name, "features": int(train_x.shape[1]), "linear_acc": result["linear_acc"],
                     "knn_acc": result["knn_acc"], "map_at_r": result["map_at_r"],
                     "probe_s": time.perf_counter() - start})

    print(f"SyntheticFaces {args.image_size}x{args.image_size}: {args.num_train} train, {args.num_test} test, "
          f"seed {args.seed}, chance {1 / len(train.classes):.3f}")
    print(f"{'representation':>15} {'features':>8} {'linear':>7} {'kNN':>6} {'mAP@R':>6} {'probe s':>8}")
    for r in rows:
        print(f"{r['representation']:>15} {r['features']:>8} {r['linear_acc']:>7.3f} {r['knn_acc']:>6.3f} "
              f"{r['map_at_r']:>6.3f} {r['probe_s']:>8.1f}")
    record = {"benchmark": "synthetic_probe", "num_train": args.num_train, "num_test": args.num_test,
              "image_size": args.image_size, "seed": args.seed, "rows": rows, "torch": torch.__version__,
              "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
              "cpu_count": os.cpu_count(), "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None}
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=2)
    return record


if __name__ == "__main__":
    main()
