"""cwarp-preview: see what ContraWarpAugment does to a few images.

    cwarp-preview IMAGE... --out views.png [--size 112] [--negatives 2] [--warps 2] [--seed 0]
    cwarp-preview --synthetic 4 --out views.png

Draws one row per image: the source (with pos1's and pos2's crop outlined),
pos1, pos2 and the negatives; on each negative, the local warps' centres
(dots) and displacements (arrows: content near a centre moves by about d).
With no IMAGE (or --synthetic N) it uses N faces of cwarp.data.SyntheticFaces
when that module is importable, else N random-noise images, and says which.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional, Sequence, Tuple

import torch

from cwarp.nn.augment import ContraWarpAugment

__all__ = ["main", "make_figure", "load_images", "synthetic_images"]

PANEL_INCHES = 1.6
DPI = 100


def load_images(paths: Sequence[str]) -> List[torch.Tensor]:
    """uint8 (1, 3, H, W) tensors, one per file (sizes may differ)."""
    import numpy as np
    from PIL import Image

    out = []
    for p in paths:
        with Image.open(p) as im:
            arr = np.asarray(im.convert("RGB")).copy()
        out.append(torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).contiguous())
    return out


def synthetic_images(n: int, size: int = 128, seed: int = 0) -> Tuple[torch.Tensor, Optional[torch.Tensor], str]:
    """(images uint8 (n, C, size, size), landmarks (n, 5, 2) or None, what they are)."""
    try:
        from cwarp.data import SyntheticFaces
    except ImportError:
        g = torch.Generator().manual_seed(seed)
        imgs = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
        return imgs, None, "random noise (cwarp.data is not importable, so no SyntheticFaces)"
    ds = SyntheticFaces(n, image_size=size, seed=seed)
    images, _, landmarks = ds.tensors()
    return images, landmarks, f"{n} cwarp.data.SyntheticFaces"


def _to_display(x: torch.Tensor, aug: ContraWarpAugment) -> "object":
    C = x.shape[0]
    mean, std = aug._norm_stats(C, x.device)
    img = (x.float() * std[:, None, None] + mean[:, None, None]).clamp(0, 1)
    return img.permute(1, 2, 0).squeeze(-1).cpu().numpy()


def _crop_outline(theta: torch.Tensor, H: int, W: int):
    """Source pixel coordinates of a view's border (the image of the square [-1, 1]^2 under theta)."""
    corners = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0]])
    s = corners @ theta[:, :2].T.float().cpu() + theta[:, 2].float().cpu()
    return (s[:, 0] + 1) * W / 2 - 0.5, (s[:, 1] + 1) * H / 2 - 0.5


def make_figure(batches: Sequence[torch.Tensor], aug: ContraWarpAugment, landmarks: Sequence[Optional[torch.Tensor]],
                generator: Optional[torch.Generator] = None):
    """A matplotlib figure of the views of every image; returns (figure, number of panels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    N = aug.num_negatives
    cols = 3 + N
    rows = sum(int(b.shape[0]) for b in batches)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * PANEL_INCHES, rows * PANEL_INCHES), dpi=DPI, squeeze=False)
    S = aug.size
    row = 0
    for images, lms in zip(batches, landmarks):
        views = aug(images, landmarks=lms, generator=generator)
        p = views.params
        for b in range(images.shape[0]):
            ax = axes[row]
            H, W = images.shape[-2:]
            src = images[b].permute(1, 2, 0).squeeze(-1).cpu().numpy()
            ax[0].imshow(src, cmap="gray" if images.shape[1] == 1 else None)
            for v, color in ((0, "tab:blue"), (1, "tab:orange")):
                xs, ys = _crop_outline(p.theta[b, v], H, W)
                ax[0].plot(xs.numpy(), ys.numpy(), color=color, linewidth=1)
            ax[0].set_title("source", fontsize=8)
            panels = [("pos1", views.pos1[b]), ("pos2", views.pos2[b])]
            panels += [(f"negative {n + 1}", views.negatives[b, n]) for n in range(N)]
            for k, (title, x) in enumerate(panels, start=1):
                ax[k].imshow(_to_display(x, aug), cmap="gray" if x.shape[0] == 1 else None, vmin=0, vmax=1)
                ax[k].set_title(title, fontsize=8)
                if k >= 3:
                    # Warps live in view coordinates: draw them straight on the view.
                    for cx, cy, _r, dx, dy in p.warps[b, k - 1].cpu().tolist():
                        if dx == 0 and dy == 0:
                            continue
                        u, w = (cx + 1) * S / 2 - 0.5, (cy + 1) * S / 2 - 0.5
                        ax[k].plot([u], [w], "o", color="red", markersize=3)
                        ax[k].annotate("", xy=(u + dx * S / 2, w + dy * S / 2), xytext=(u, w),
                                       arrowprops=dict(arrowstyle="->", color="yellow", linewidth=1.2))
            for a in ax:
                a.set_xticks([])
                a.set_yticks([])
            row += 1
    fig.tight_layout()
    return fig, rows * cols


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="cwarp-preview", description=__doc__.split("\n\n")[0])
    ap.add_argument("images", nargs="*", metavar="IMAGE")
    ap.add_argument("--out", required=True, help="PNG to write")
    ap.add_argument("--synthetic", type=int, default=None, metavar="N",
                    help="use N synthetic images (default 4 when no IMAGE is given)")
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--negatives", type=int, default=2)
    ap.add_argument("--warps", type=int, default=2)
    ap.add_argument("--kind", default="translate", choices=["translate", "gaussian"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    aug = ContraWarpAugment(size=args.size, num_negatives=args.negatives, warps_per_negative=args.warps,
                            kind=args.kind)
    if args.images and args.synthetic is None:
        batches, lms = load_images(args.images), [None] * len(args.images)
        what = f"{len(args.images)} image file(s)"
    else:
        n = 4 if args.synthetic is None else args.synthetic
        if n < 1:
            ap.error(f"--synthetic expects N >= 1, got {n}")
        images, landmarks, what = synthetic_images(n, seed=args.seed)
        batches, lms = [images], [landmarks]
    fig, panels = make_figure(batches, aug, lms, generator=torch.Generator().manual_seed(args.seed))
    fig.savefig(args.out, dpi=DPI)
    print(f"cwarp-preview: {what}; wrote {panels} panels ({len(fig.axes)} axes) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
