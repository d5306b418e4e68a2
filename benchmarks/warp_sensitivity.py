"""How much do the warped negatives change a face, and does a trained network see it?

    python benchmarks/warp_sensitivity.py RUN [RUN ...] [--faces 512] [--num-negatives 2]
                                          [--warps-per-negative 4] [--warp-radius MIN,MAX]
                                          [--warp-magnitude MIN,MAX] [--seed 123] [--json PATH]

RUN is a cwarp-train run folder or checkpoint of any method. On the first
--faces training faces of the run's data, rendered with the run's global
views and warps (the options override the warps), it reports:

- the warps' size: the largest displacement of each negative's warp field,
  in pixels of the view (a translate warp moves content by at most
  m (r^2 / (r^2 + m^2))^2 <= 0.325 r at its centre, so a magnitude above
  r / sqrt(3) moves it *less*), and the mean absolute pixel change of a
  warped copy against view 2, beside that of view 1 against view 2;
- the frozen backbone (eval mode, what the probe sees): mean cosine of
  view 1 / view 2, of view 2 / its warped copies and of view 2 / another face;
- a supervised run (--method supervised): its classifier's accuracy on
  view 2 and on the copies, and how often a copy's predicted expression
  differs from view 2's (warp flips) against how often view 1's does (view
  flips): whether the warps change the expression as the labels see it;
- a BYOL or ContraWarping run: the target's cosine of view 2 and its
  copies, and p1's InfoNCE half (positive: view 2's target, negatives: the
  copies' targets, at the run's tau; chance ln(1 + N)) and how often the
  positive beats every copy (chance 1 / (1 + N)), with BN in training mode
  as in a training step.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any, Dict, List

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))   # this checkout's cwarp, not an installed one

from cwarp.ops._checks import check_range  # noqa: E402
from cwarp.train.config import RANGE_RULES, parse_pair  # noqa: E402

BATCH = 128


def _mean_cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(a, b, dim=-1).mean()


def max_displacement_px(warps: torch.Tensor, size: int) -> torch.Tensor:
    """(M,) largest |q - p| of each row of (M, K, 5) warps, in pixels of a size x size view."""
    from cwarp import reference

    q = reference.local_warp_grid(warps, (size, size))
    p = reference.base_grid((size, size), False, dtype=q.dtype)
    return (q - p).norm(dim=-1).flatten(1).amax(1) * (size / 2)


def measure(run: str, *, faces: int, num_negatives: int, warps_per_negative: int, warp_radius=None,
            warp_magnitude=None, seed: int = 123) -> Dict[str, Any]:
    import cwarp
    from cwarp.models import checkpoint as ckpt
    from cwarp.train import distributed as cdist
    from cwarp.train import trainer as T
    from cwarp.train.config import migrate
    from cwarp.train.methods import warp_accuracy
    from cwarp.train.training_data import load_data

    state = ckpt.load_checkpoint(run)
    cfg = migrate(state["config"])
    method = cfg.method
    data = load_data(cfg)
    if not data.in_memory:
        raise ValueError(f"{run}: its {cfg.data.format} training set is streamed, not held in memory; "
                         f"this script measures runs on in-memory sets (synthetic, fer2013, small labelled folders)")
    ds, images, labels, landmarks = data.dataset, data.images, data.labels, data.landmarks
    n = min(faces, len(images))
    trainer = T.Trainer(cfg, cdist.init_from_env("cpu"), torch.device("cpu"), cfg.data.in_channels, 1,
                        num_classes=len(ds.classes))
    trainer.load_state_dict(state)
    model = trainer.model
    view_cfg = cfg.replace(num_negatives=num_negatives, warps_per_negative=warps_per_negative,
                           warp_radius=cfg.negatives.warp_radius if warp_radius is None else tuple(warp_radius),
                           warp_magnitude=cfg.negatives.warp_magnitude if warp_magnitude is None
                           else tuple(warp_magnitude))
    augment = T.build_augment(view_cfg)
    gen = torch.Generator().manual_seed(seed)
    size = int(cfg.data.image_size)

    sums: Dict[str, float] = {}

    def add(key: str, value: torch.Tensor, weight: int) -> None:
        sums[key] = sums.get(key, 0.0) + float(value) * weight

    with torch.no_grad():
        for b0 in range(0, n, BATCH):
            sl = slice(b0, min(b0 + BATCH, n))
            if sl.stop - sl.start < 2:
                break                                   # training-mode BN needs two faces
            views = augment(images[sl], landmarks=landmarks[sl] if landmarks is not None else None, generator=gen)
            v1, v2, neg = views.pos1, views.pos2, views.negatives
            B, N = neg.shape[:2]
            other = torch.roll(torch.arange(B), 1)      # another face of the batch
            add("displacement_px", max_displacement_px(views.params.warps[:, 2:].flatten(0, 1), size).mean(), B)
            add("pixels_warp", (neg - v2[:, None]).abs().mean(), B)
            add("pixels_views", (v1 - v2).abs().mean(), B)
            model.eval()
            f1, f2 = model.backbone(v1), model.backbone(v2)
            fn = model.backbone(neg.flatten(0, 1)).view(B, N, -1)
            add("feat_cos_views", _mean_cos(f1, f2), B)
            add("feat_cos_warp", _mean_cos(f2[:, None], fn), B)
            add("feat_cos_other_face", _mean_cos(f2, f2[other]), B)
            if method == "supervised":
                y = labels[sl]
                c1, c2 = model.classifier(f1).argmax(-1), model.classifier(f2).argmax(-1)
                cn = model.classifier(fn).argmax(-1)
                add("acc_view2", (c2 == y).float().mean(), B)
                add("acc_warped", (cn == y[:, None]).float().mean(), B)
                add("view_flips", (c1 != c2).float().mean(), B)
                add("warp_flips", (cn != c2[:, None]).float().mean(), B)
            else:
                model.train()                           # BN as in a training step (batch statistics)
                e = model(v1, v2, neg)
                p1, z2, zn = e.p1, e.z2, e.zneg
                add("target_cos_warp", _mean_cos(z2[:, None], zn), B)
                nce = cwarp.contrastive_loss(p1, z2, zn, tau=cfg.negatives.tau, byol_weight=0.0, nce_weight=1.0)
                add("p1_nce", nce, B)
                add("p1_warp_acc", warp_accuracy(p1, z2, zn), B)
            sums["faces"] = sums.get("faces", 0) + B
    count = sums.pop("faces", 0)
    if not count:
        raise ValueError(f"warp_sensitivity: {run}: expected at least 2 training faces, got {n}")
    out = {k: v / count for k, v in sums.items()}
    out.update(run=run, method=method, faces=int(count), num_negatives=num_negatives,
               warps_per_negative=warps_per_negative, warp_radius=list(view_cfg.negatives.warp_radius),
               warp_magnitude=list(view_cfg.negatives.warp_magnitude), image_size=size)
    if method != "supervised":
        out["p1_chance_nce"], out["p1_chance_acc"] = math.log(1 + num_negatives), 1 / (1 + num_negatives)
    return out


COLUMNS = [("displacement_px", "max shift px", "{:.2f}"), ("pixels_warp", "|copy-v2|", "{:.3f}"),
           ("pixels_views", "|v1-v2|", "{:.3f}"), ("feat_cos_views", "cos views", "{:.3f}"),
           ("feat_cos_warp", "cos warp", "{:.4f}"), ("feat_cos_other_face", "cos other", "{:.3f}"),
           ("acc_view2", "acc view2", "{:.3f}"), ("acc_warped", "acc warped", "{:.3f}"),
           ("view_flips", "view flips", "{:.3f}"), ("warp_flips", "warp flips", "{:.3f}"),
           ("target_cos_warp", "target cos warp", "{:.4f}"), ("p1_nce", "p1 NCE", "{:.4f}"),
           ("p1_warp_acc", "p1 warp acc", "{:.3f}")]


def print_table(rows: List[Dict[str, Any]]) -> None:
    cols = [c for c in COLUMNS if any(c[0] in r for r in rows)]
    header = ["run", "method", "radius", "magnitude"] + [c[1] for c in cols]
    lines = [[r["run"], r["method"], "{:g},{:g}".format(*r["warp_radius"]), "{:g},{:g}".format(*r["warp_magnitude"])]
             + [fmt.format(r[k]) if k in r else "-" for k, _, fmt in cols] for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines)]
    for line in [header] + lines:
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths)))
    if any(r["method"] != "supervised" for r in rows):
        r = next(r for r in rows if r["method"] != "supervised")
        print(f"(p1 chance: NCE ln(1 + N) = {r['p1_chance_nce']:.4f}, warp acc 1 / (1 + N) = {r['p1_chance_acc']:.3f})")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", metavar="RUN", help="cwarp-train run folders or checkpoints")
    p.add_argument("--faces", type=int, default=512)
    p.add_argument("--num-negatives", type=int, default=2)
    p.add_argument("--warps-per-negative", type=int, default=4)
    p.add_argument("--warp-radius", type=parse_pair, default=None, metavar="MIN,MAX", help="default: the run's")
    p.add_argument("--warp-magnitude", type=parse_pair, default=None, metavar="MIN,MAX", help="default: the run's")
    p.add_argument("--seed", type=int, default=123, help="seed of the views' generator")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    for name in ("faces", "num_negatives", "warps_per_negative"):
        if getattr(args, name) < (2 if name == "faces" else 1):
            p.error(f"--{name.replace('_', '-')}: expected >= {2 if name == 'faces' else 1}, "
                    f"got {getattr(args, name)}")
    for name in ("warp_radius", "warp_magnitude"):
        if getattr(args, name) is not None:
            try:   # cwarp-train's rule for the same flag
                check_range(f"--{name.replace('_', '-')}", None, getattr(args, name), scalar="pair", **RANGE_RULES[name])
            except ValueError as err:
                p.error(str(err))
    rows = [measure(run, faces=args.faces, num_negatives=args.num_negatives,
                    warps_per_negative=args.warps_per_negative, warp_radius=args.warp_radius,
                    warp_magnitude=args.warp_magnitude, seed=args.seed) for run in args.runs]
    print_table(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows}, f, indent=2)
    return {"rows": rows}


if __name__ == "__main__":
    main()
