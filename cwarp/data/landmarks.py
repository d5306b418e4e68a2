"""Per-image face landmarks given in pixels, turned into the normalized coordinates ContraWarpAugment takes.

A data set's landmarks are five (x, y) points per image (left eye, right
eye, nose tip, left and right mouth corner, as ``cwarp.FACE_LANDMARKS_5``)
in pixels of that image as decoded (after its EXIF orientation, before any
resizing), with (i, j) the centre of column i, row j as torchvision's
KeyPoints take it: normalized x = 2 (x + 0.5) / W - 1 (``align_corners=False``).
A point must lie on the image, -0.5 <= x <= W - 0.5 and -0.5 <= y <= H - 0.5;
a missing one (NaN) takes FACE_LANDMARKS_5's place for that image.
"""
from __future__ import annotations

import math
from typing import Sequence, Tuple

import torch
from torch import Tensor

__all__ = ["NUM_LANDMARKS", "LandmarkError", "to_normalized", "parse_landmarks"]

NUM_LANDMARKS = 5


class LandmarkError(ValueError):
    """Landmarks that are malformed or lie outside their image."""


def parse_landmarks(values: Sequence, where: str) -> Tuple[Tuple[float, float], ...]:
    """Five (x, y) pairs from 10 numbers or 5 pairs; LandmarkError naming ``where`` otherwise."""
    flat = []
    for v in values:
        if isinstance(v, (list, tuple)):
            flat.extend(v)
        else:
            flat.append(v)
    try:
        numbers = [float(v) for v in flat if not isinstance(v, bool)]
    except (TypeError, ValueError):
        numbers = []
    if len(numbers) != 2 * NUM_LANDMARKS or len(flat) != 2 * NUM_LANDMARKS or not all(map(math.isfinite, numbers)):
        raise LandmarkError(f"{where}: expected {NUM_LANDMARKS} landmarks as {2 * NUM_LANDMARKS} finite numbers "
                            f"(x y pairs in pixels), got {list(values)!r}"[:300])
    return tuple((numbers[2 * k], numbers[2 * k + 1]) for k in range(NUM_LANDMARKS))


def to_normalized(points: Tensor, height: int, width: int, name: str) -> Tensor:
    """(5, 2) pixel landmarks of an image of (height, width) as normalized coordinates (float32).

    LandmarkError, naming ``name``, when a point lies off the image.
    """
    x, y = points[:, 0], points[:, 1]
    off = (x < -0.5) | (x > width - 0.5) | (y < -0.5) | (y > height - 0.5)
    if bool(off.any()):
        k = int(off.nonzero()[0, 0])
        raise LandmarkError(f"landmarks of {name}: point {k + 1} ({float(x[k]):g}, {float(y[k]):g}) lies outside "
                            f"the {width} x {height} image (x in [-0.5, {width - 0.5:g}], "
                            f"y in [-0.5, {height - 0.5:g}] pixels)")
    scale = torch.tensor([2.0 / width, 2.0 / height], dtype=torch.float32)
    return ((points.to(torch.float32) + 0.5) * scale - 1.0)
