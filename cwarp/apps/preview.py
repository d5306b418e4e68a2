"""cwarp-preview: see what ContraWarpAugment does to a few images.

    cwarp-preview face1.jpg face2.png --out views.png
    cwarp-preview --synthetic 4 --size 64 --negatives 3 --out views.png

Draws one row per image: the source (pos1's and pos2's crops outlined, the
landmarks as green dots where known), pos1, pos2 and the negatives. In every
view the landmarks are drawn where the view puts them (its affine, and on a
negative its local warps too: cwarp.warp_points); on each negative, the local
warps' centres (red dots) and displacements (yellow arrows: content near a
centre moves by about d). Without IMAGE files it draws
--synthetic N faces of cwarp.data.SyntheticFaces, with their landmarks.
Exit status: 0 on success, 2 on bad input (one line on stderr), 130 on Ctrl-C.
"""
from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple, Union

from cwarp import _cli

if TYPE_CHECKING:  # torch loads only once the arguments are parsed, so that --help is fast
    import torch

    from cwarp.nn.augment import ContraWarpAugment

__all__ = ["main", "build_parser", "make_figure", "load_images", "synthetic_images"]

PROG = "cwarp-preview"
PANEL_INCHES = 1.6
DPI = 100
MAX_SIZE = 1024
FIGURE_FORMATS = (".png", ".jpg", ".jpeg", ".pdf", ".svg")
SYNTHETIC_SOURCE_SIZE = 128
# Colours of pos1's and pos2's crop outlines on the source.
CROP_COLOURS = ("tab:blue", "tab:orange")


def load_images(paths: Sequence[str]) -> List["torch.Tensor"]:
    """uint8 (1, 3, H, W) tensors, one per file (sizes may differ); a file that cannot be read raises ValueError."""
    import numpy as np
    import torch
    from PIL import Image

    out = []
    for path in paths:
        if not os.path.isfile(path):
            raise _cli.InputError(f"image {path} does not exist")
        try:
            with Image.open(path) as image:
                array = np.asarray(image.convert("RGB")).copy()
        except (OSError, ValueError) as err:
            raise _cli.InputError(f"image {path} cannot be read: {err}") from err
        out.append(torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous())
    return out


def synthetic_images(n: int, size: int = SYNTHETIC_SOURCE_SIZE, seed: int = 0
                     ) -> Tuple["torch.Tensor", "torch.Tensor"]:
    """(images uint8 (n, 3, size, size), landmarks (n, 5, 2)) of n cwarp.data.SyntheticFaces."""
    from cwarp.data import SyntheticFaces

    images, _, landmarks = SyntheticFaces(n, image_size=size, seed=seed).tensors()
    return images, landmarks


def make_figure(images: Union["torch.Tensor", Sequence["torch.Tensor"]], aug: "ContraWarpAugment",
                out: Optional[str] = None, *, landmarks=None, generator: Optional["torch.Generator"] = None,
                seed: int = 0, row_labels: Optional[Sequence[str]] = None):
    """A matplotlib Figure of the views of every image, one row per image; written to ``out`` when given.

    images: a uint8 batch (B, C, H, W), or a list of batches (files of
    different sizes). landmarks: None, (B, L, 2) in the source's normalized
    coordinates, or a list matching the batches (None entries allowed).
    generator: the views' random stream (default: one seeded with ``seed``).
    row_labels: one text per image, written left of its row. The figure has
    3 + aug.num_negatives panels per row (len(fig.axes) in all); once
    written, it is closed in pyplot (the object stays usable).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    batches = [images] if isinstance(images, torch.Tensor) else list(images)
    marks = landmarks if isinstance(landmarks, (list, tuple)) else [landmarks] * len(batches)
    if len(marks) != len(batches):
        raise ValueError(f"make_figure(): {len(marks)} landmark entries for {len(batches)} image batches")
    generator = generator if generator is not None else torch.Generator().manual_seed(seed)
    rows, cols = sum(int(b.shape[0]) for b in batches), 3 + aug.num_negatives
    if row_labels is not None and len(row_labels) != rows:
        raise ValueError(f"make_figure(): {len(row_labels)} row labels for {rows} images")
    fig, axes = plt.subplots(rows, cols, figsize=(cols * PANEL_INCHES, rows * PANEL_INCHES), dpi=DPI,
                             squeeze=False)
    row = 0
    for batch, marks_of_batch in zip(batches, marks):
        views = aug(batch, landmarks=marks_of_batch, generator=generator)
        for b in range(batch.shape[0]):
            points = None if marks_of_batch is None else marks_of_batch[b] if marks_of_batch.dim() == 3 \
                else marks_of_batch
            _draw_row(axes[row], batch[b], views, b, aug, points)
            if row_labels is not None:
                axes[row][0].set_ylabel(row_labels[row], fontsize=8)
            row += 1
    fig.tight_layout()
    if out is not None:
        fig.savefig(out, dpi=DPI)
        plt.close(fig)
    return fig


def _draw_row(ax, image, views, b: int, aug, points) -> None:
    """One image's panels: the source, pos1, pos2 and the negatives."""
    params, size = views.params, aug.size
    height, width = image.shape[-2:]
    gray = "gray" if image.shape[0] == 1 else None
    ax[0].imshow(image.permute(1, 2, 0).squeeze(-1).cpu().numpy(), cmap=gray)
    for v, colour in enumerate(CROP_COLOURS):
        xs, ys = _crop_outline(params.theta[b, v], height, width)
        ax[0].plot(xs, ys, color=colour, linewidth=1)
    if points is not None:
        _dots(ax[0], _to_pixels(points.float().cpu(), width, height), "lime")
    panels = [("source", None), ("pos1", views.pos1[b]), ("pos2", views.pos2[b])]
    panels += [(f"negative {n + 1}", views.negatives[b, n]) for n in range(aug.num_negatives)]
    for k, (title, view) in enumerate(panels):
        ax[k].set_title(title, fontsize=8)
        ax[k].set_xticks([])
        ax[k].set_yticks([])
        if view is None:
            continue
        ax[k].imshow(_to_display(view, aug), cmap=gray, vmin=0, vmax=1)
        if views.landmarks is not None:
            _dots(ax[k], _to_pixels(views.landmarks[b, k - 1].float().cpu(), size, size), "lime")
        if k >= 3:
            _draw_warps(ax[k], params.warps[b, k - 1], size)
        # Marks that fall outside the view must not widen its panel.
        ax[k].set_xlim(-0.5, size - 0.5)
        ax[k].set_ylim(size - 0.5, -0.5)


def _draw_warps(ax, warps, size: int) -> None:
    # Warps live in view coordinates: draw them straight on the view.
    for cx, cy, _radius, dx, dy in warps.cpu().tolist():
        if dx == 0 and dy == 0:
            continue
        u, w = (cx + 1) * size / 2 - 0.5, (cy + 1) * size / 2 - 0.5
        ax.plot([u], [w], "o", color="red", markersize=3)
        ax.annotate("", xy=(u + dx * size / 2, w + dy * size / 2), xytext=(u, w),
                    arrowprops=dict(arrowstyle="->", color="yellow", linewidth=1.2))


def _dots(ax, pixels, colour: str) -> None:
    ax.plot(pixels[:, 0].numpy(), pixels[:, 1].numpy(), "o", color=colour, markersize=2.5, linestyle="none")


def _to_pixels(points, width: int, height: int):
    """Normalized coordinates (align_corners=False) -> pixel centres."""
    scale = points.new_tensor([width / 2, height / 2])
    return (points + 1) * scale - 0.5


def _to_display(x, aug):
    mean, std = aug._norm_stats(x.shape[0], x.device)
    image = (x.float() * std[:, None, None] + mean[:, None, None]).clamp(0, 1)
    return image.permute(1, 2, 0).squeeze(-1).cpu().numpy()


def _crop_outline(theta, height: int, width: int):
    """Source pixel coordinates of a view's border (the image of the square [-1, 1]^2 under theta)."""
    import torch

    corners = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0]])
    source = corners @ theta[:, :2].T.float().cpu() + theta[:, 2].float().cpu()
    pixels = _to_pixels(source, width, height)
    return pixels[:, 0].numpy(), pixels[:, 1].numpy()


def build_parser() -> _cli.Parser:
    parser = _cli.Parser(PROG, __doc__)
    parser.add_argument("images", nargs="*", metavar="IMAGE", help="image files to draw (any format PIL reads)")
    parser.add_argument("--out", required=True, metavar="VIEWS.png",
                        help=f"the figure to write ({', '.join(FIGURE_FORMATS)})")
    parser.add_argument("--synthetic", type=_cli.positive_int, default=None, metavar="N",
                        help="draw N synthetic faces (the default, with N = 4, when no IMAGE is given)")
    parser.add_argument("--size", type=_cli.positive_int, default=112, metavar="S",
                        help=f"side of the views, at most {MAX_SIZE}")
    parser.add_argument("--negatives", type=_cli.non_negative_int, default=2, metavar="N",
                        help="locally warped negatives per image")
    parser.add_argument("--warps", type=_cli.non_negative_int, default=2, metavar="K",
                        help="local warps per negative")
    parser.add_argument("--kind", default="translate", choices=("translate", "gaussian"),
                        help="the local warps' displacement profile")
    parser.add_argument("--seed", type=_cli.non_negative_int, default=0,
                        help="seed of the synthetic faces and of the views")
    return parser


def _check_args(args: argparse.Namespace) -> None:
    if args.images and args.synthetic is not None:
        raise _cli.InputError("give IMAGE files or --synthetic N, not both")
    if args.size > MAX_SIZE:
        raise _cli.InputError(f"--size must be at most {MAX_SIZE}, got {args.size}")
    extension = os.path.splitext(args.out)[1].lower()
    if extension not in FIGURE_FORMATS:
        raise _cli.InputError(f"--out {args.out}: expected a file name ending in one of {', '.join(FIGURE_FORMATS)}")
    if os.path.isdir(args.out):
        raise _cli.InputError(f"--out {args.out} is a folder; give the path of the figure to write")


def run(args: argparse.Namespace) -> None:
    """Draw the preview the parsed command line asks for and write it to args.out."""
    _check_args(args)
    if args.images:
        batches, landmarks = load_images(args.images), None
        what = f"{len(args.images)} image file(s)"
    else:
        n = 4 if args.synthetic is None else args.synthetic
        images, marks = synthetic_images(n, seed=args.seed)
        batches, landmarks = images, marks
        what = f"{n} synthetic face(s)"
    from cwarp.nn.augment import ContraWarpAugment

    aug = ContraWarpAugment(size=args.size, num_negatives=args.negatives, warps_per_negative=args.warps,
                            kind=args.kind)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    fig = make_figure(batches, aug, args.out, landmarks=landmarks, seed=args.seed)
    rows = len(fig.axes) // (3 + args.negatives)
    print(f"{PROG}: {what}, {rows} row(s) of source, pos1, pos2 and {args.negatives} negative(s)")
    print(f"{PROG}: wrote {args.out}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``cwarp-preview``: 0 on success, 2 on bad input, 130 on Ctrl-C."""
    return _cli.run_script(build_parser(), argv, run)


if __name__ == "__main__":
    raise SystemExit(main())
