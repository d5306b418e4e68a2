"""The Kaggle FER2013 csv: columns emotion, pixels (48*48 grey values), Usage."""
from __future__ import annotations

import csv
import os
import warnings
from typing import Optional

import numpy as np
import torch

from .common import EXPRESSIONS, TensorFaces, check_split, resize_uint8, subset_indices

FER_SIZE = 48
# FER2013's labels 0..6 are Angry, Disgust, Fear, Happy, Sad, Surprise, Neutral;
# they are remapped to EXPRESSIONS (RAF-DB order) so labels agree across formats.
FER_TO_EXPRESSION = (5, 2, 1, 3, 4, 0, 6)
# Training is the train split, PublicTest the usual validation split and
# PrivateTest the test split.
USAGE_OF_SPLIT = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}
USAGES = ("Training", "PublicTest", "PrivateTest")


def find_csv(path: str) -> str:
    if not os.path.exists(path):
        raise FileNotFoundError(f"fer2013: data path {path} does not exist")
    if os.path.isfile(path):
        return path
    for candidate in (os.path.join(path, "fer2013.csv"), os.path.join(path, "fer2013", "fer2013.csv")):
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(f"fer2013: no fer2013.csv in folder {path}; PATH must be the Kaggle fer2013.csv "
                            f"(columns emotion, pixels, Usage) or its folder")


def _parse_pixels(text: str, where: str) -> np.ndarray:
    # np.fromstring in text mode parses far faster than split(). On bad input it
    # raises (numpy 2) or stops early with a DeprecationWarning (numpy 1), which
    # the length check then reports.
    expected = f"{where}: pixels must be {FER_SIZE * FER_SIZE} integers in 0..255 separated by spaces"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            values = np.fromstring(text, dtype=np.int32, sep=" ")
    except ValueError as err:
        raise ValueError(f"{expected} ({err})") from None
    if values.size != FER_SIZE * FER_SIZE or values.min() < 0 or values.max() > 255:
        raise ValueError(expected)
    return values.astype(np.uint8)


def load_fer2013(path: str, split: str, image_size: int, *, num_samples: Optional[int] = None,
                 seed: int = 0) -> TensorFaces:
    """The split of fer2013.csv as an in-memory TensorFaces (1 channel).

    Every row's emotion and Usage are checked; the pixels of the rows in the
    requested split are. A malformed row raises ValueError naming its line.
    """
    check_split(split)
    csv_path = find_csv(path)
    wanted_usage = USAGE_OF_SPLIT[split]
    rows = []
    with open(csv_path, "r", newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"fer2013: {csv_path} is empty")
        columns = {name.strip().lower(): j for j, name in enumerate(header)}
        missing = [c for c in ("emotion", "pixels", "usage") if c not in columns]
        if missing:
            raise ValueError(f"fer2013: {csv_path}, line 1: header {header} lacks column(s) {missing}; "
                             f"expected emotion,pixels,Usage")
        ie, ip, iu = columns["emotion"], columns["pixels"], columns["usage"]
        width = max(ie, ip, iu) + 1
        for row in reader:
            where = f"fer2013: {csv_path}, line {reader.line_num}"
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) < width:
                raise ValueError(f"{where}: expected {len(header)} fields (emotion,pixels,Usage), got {len(row)}")
            emotion = row[ie].strip()
            if emotion not in ("0", "1", "2", "3", "4", "5", "6"):
                raise ValueError(f"{where}: emotion {emotion!r} is not an integer in 0..6")
            usage = row[iu].strip()
            if usage not in USAGES:
                raise ValueError(f"{where}: Usage {usage!r} is not one of {', '.join(USAGES)}")
            if usage == wanted_usage:
                rows.append((FER_TO_EXPRESSION[int(emotion)], row[ip], where))
    if not rows:
        raise ValueError(f"fer2013: the {split} split is empty: no row of {csv_path} has Usage {wanted_usage}")
    rows = [rows[i] for i in subset_indices(len(rows), num_samples, seed)]
    pixels = np.stack([_parse_pixels(text, where) for _, text, where in rows])
    images = torch.from_numpy(pixels).view(-1, 1, FER_SIZE, FER_SIZE)
    # Resizing in slices keeps the float temporaries of the antialias kernel small.
    images = torch.cat([resize_uint8(chunk, image_size) for chunk in images.split(4096)])
    labels = torch.tensor([label for label, _, _ in rows], dtype=torch.int64)
    return TensorFaces(images, labels, EXPRESSIONS)
