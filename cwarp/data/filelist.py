"""``--format list``: a text file of image paths, one a line, each optionally followed by 5 landmarks.

    # comment lines and blank lines are ignored
    crops/0001.jpg
    crops/0002.jpg 31.5 40.2 68.0 39.8 50.1 60.3 35.0 80.2 66.1 79.7

A path is relative to the list file's folder (or absolute) and may contain
spaces; the 10 numbers after it, when present, are the x y pairs of the left
eye, right eye, nose tip and left and right mouth corners in pixels of that
image (cwarp.data.landmarks). No labels. A malformed line is an error naming
the file and the line; a missing image is one too (with skip_corrupt: left out,
counted in one warning).
"""
from __future__ import annotations

import os
import warnings
from typing import List, Optional

import torch

from .common import subset_indices
from .landmarks import NUM_LANDMARKS, parse_landmarks
from .paths import PathTable
from .streamed import StreamedFaces

__all__ = ["load_list", "read_list"]


def _number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def read_list(list_file: str):
    """(paths as written, landmarks per line or None, line numbers) of a list file."""
    paths: List[str] = []
    points: List[Optional[tuple]] = []
    lines: List[int] = []
    with open(list_file, "r", encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            tokens = text.split()
            trailing = 0
            while trailing < len(tokens) - 1 and _number(tokens[-1 - trailing]):
                trailing += 1
            where = f"list: {list_file}, line {lineno}"
            if trailing == 0:
                paths.append(text)
                points.append(None)
            elif trailing == 2 * NUM_LANDMARKS:
                numbers = tokens[-2 * NUM_LANDMARKS:]
                path = _strip_numbers(text, 2 * NUM_LANDMARKS)
                points.append(parse_landmarks(numbers, where))   # LandmarkError (a ValueError) names the line
                paths.append(path)
            else:
                raise ValueError(f"{where}: expected an image path, optionally followed by {2 * NUM_LANDMARKS} "
                                 f"numbers (x y of {NUM_LANDMARKS} landmarks in pixels); got {trailing} "
                                 f"number(s) after the path")
            lines.append(lineno)
    return paths, points, lines


def _strip_numbers(text: str, count: int) -> str:
    """``text`` without its last ``count`` whitespace-separated tokens (the path may hold spaces)."""
    rest = text
    for _ in range(count):
        rest = rest.rstrip()
        cut = max(rest.rfind(" "), rest.rfind("\t"))
        rest = rest[:cut]
    return rest.strip()


def load_list(path: str, split: str, image_size: int, *, skip_corrupt: bool = False,
              num_samples: Optional[int] = None, seed: int = 0) -> StreamedFaces:
    """The images a list file names, as an unlabelled StreamedFaces (the train split; a list has no other)."""
    if split != "train":
        raise ValueError(f"list: a list of unlabelled images is one training set; it has no {split} split")
    if not os.path.isfile(path):
        what = "is a folder, not a list file" if os.path.isdir(path) else "does not exist"
        raise FileNotFoundError(f"list: data path {path} {what}")
    paths, points, lines = read_list(path)
    if not paths:
        raise ValueError(f"list: {path} names no image (only blank or # lines)")
    root = os.path.dirname(os.path.abspath(path))
    keep = subset_indices(len(paths), num_samples, seed)
    kept, missing = [], []
    for i in keep:
        full = os.path.join(root, paths[i])
        if os.path.isfile(full):
            kept.append(i)
        elif skip_corrupt:
            missing.append(full)
        else:
            raise FileNotFoundError(f"list: {path}, line {lines[i]}: image file {full} does not exist")
    if missing:
        warnings.warn(f"list: skipped {len(missing)} of {len(keep)} listed images that do not exist "
                      f"(first: {missing[0]})", stacklevel=2)
    if not kept:
        raise ValueError(f"list: none of the images {path} names exists")
    landmarks = None
    if any(points[i] is not None for i in kept):
        landmarks = torch.full((len(kept), NUM_LANDMARKS, 2), float("nan"), dtype=torch.float32)
        for row, i in enumerate(kept):
            if points[i] is not None:
                landmarks[row] = torch.tensor(points[i], dtype=torch.float32)
    return StreamedFaces(PathTable(root, [paths[i] for i in kept]), None, (), channels=3, image_size=image_size,
                         landmarks=landmarks, skip_corrupt=skip_corrupt, source="list")
