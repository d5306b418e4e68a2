"""Is SyntheticFaces hard in the right way? Probe scores of several representations of the same faces.

    python benchmarks/synthetic_probe.py [--num-train 2000] [--num-test 1000] [--image-size 64] [--random-init]
                                         [--supervised-steps N [--supervised-faces M]] [--json PATH]

Rows (linear probe, kNN, mAP@R and the probe's own time, feature extraction excluded):
  action units     the 9 ground-truth action-unit intensities: what a perfect
                   expression representation knows; below 100% because classes overlap
  landmarks        the 5 ground-truth landmark positions (mouth corners move with expression)
  aligned pixels   pixels after undoing the pose with the ground-truth landmarks
  raw pixels       the baseline; pose, identity, lighting and background drown the expression
  random convnet   features of an untrained convnet-small (optional, --random-init)
  supervised       features of convnet-small trained with the labels, without augmentation
                   (optional, --supervised-steps): what the images let a convnet learn
                   when it is told the answer, at that many steps
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
from cwarp.eval.probe import DEFAULT_MEAN, DEFAULT_STD, evaluate_features, extract_features  # noqa: E402


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


def train_supervised(faces: SyntheticFaces, steps: int, seed: int, batch_size: int = 128) -> torch.nn.Module:
    """convnet-small + a linear classifier trained on ``faces`` with cross-entropy for ``steps`` steps.

    AdamW (lr 2e-3, weight decay 1e-4, cosine to 0), batches drawn with
    replacement, no augmentation: the images as extract_features feeds them.
    Returns the backbone.
    """
    torch.manual_seed(seed)
    backbone = build_backbone("convnet-small", 3, faces.image_size)
    head = torch.nn.Linear(backbone.feature_dim, len(faces.classes))
    params = list(backbone.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    mean = torch.tensor(DEFAULT_MEAN[3]).view(1, 3, 1, 1)
    std = torch.tensor(DEFAULT_STD[3]).view(1, 3, 1, 1)
    g = torch.Generator().manual_seed(seed)
    backbone.train()
    for _ in range(steps):
        idx = torch.randint(len(faces), (batch_size,), generator=g)
        x = (faces.images[idx].float() / 255 - mean) / std
        loss = F.cross_entropy(head(backbone(x)), faces.labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return backbone


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-train", type=int, default=2000)
    parser.add_argument("--num-test", type=int, default=1000)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--random-init", action="store_true", help="also probe an untrained convnet-small")
    parser.add_argument("--supervised-steps", type=int, default=0, metavar="N",
                        help="also probe convnet-small trained with the labels for N steps of 128 (no augmentation)")
    parser.add_argument("--supervised-faces", type=int, default=None, metavar="M",
                        help="train it on M labelled faces (default: the probe's --num-train faces; more are "
                             "fresh faces of the same seed, the probe's faces their prefix)")
    parser.add_argument("--json", metavar="PATH", help="also write the results here")
    args = parser.parse_args(argv)
    if args.supervised_steps < 0:
        parser.error(f"--supervised-steps: expected >= 0, got {args.supervised_steps}")
    if args.supervised_faces is not None and args.supervised_faces < 1:
        parser.error(f"--supervised-faces: expected >= 1, got {args.supervised_faces}")

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
    n = args.supervised_faces or args.num_train
    if args.supervised_steps:
        faces = train if n == args.num_train else SyntheticFaces(n, args.image_size, args.seed, split="train")
        start = time.perf_counter()
        model = train_supervised(faces, args.supervised_steps, args.seed)
        print(f"supervised convnet: {args.supervised_steps} steps on {n} faces in "
              f"{time.perf_counter() - start:.0f} s", flush=True)
        representations.append((f"supervised {args.supervised_steps}x128 on {n}",
                                extract_features(model, train, 256, "cpu", progress=False),
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
    width = max(15, *(len(r["representation"]) for r in rows))
    print(f"{'representation':>{width}} {'features':>8} {'linear':>7} {'kNN':>6} {'mAP@R':>6} {'probe s':>8}")
    for r in rows:
        print(f"{r['representation']:>{width}} {r['features']:>8} {r['linear_acc']:>7.3f} {r['knn_acc']:>6.3f} "
              f"{r['map_at_r']:>6.3f} {r['probe_s']:>8.1f}")
    record = {"benchmark": "synthetic_probe", "num_train": args.num_train, "num_test": args.num_test,
              "image_size": args.image_size, "seed": args.seed, "supervised_steps": args.supervised_steps,
              "supervised_faces": n if args.supervised_steps else None, "rows": rows, "torch": torch.__version__,
              "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
              "cpu_count": os.cpu_count(), "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None}
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=2)
    return record


if __name__ == "__main__":
    main()
