"""build_dataset: one entry point from (format, path, split) to a data set."""
from __future__ import annotations

import os
from typing import Optional, Union

from cwarp._constants import FORMATS, SYNTHETIC_FORMATS

from .common import FaceDataset, check_image_size, check_split
from .fer2013 import load_fer2013
from .filelist import load_list
from .folder import load_folder
from .imagefolder import load_imagefolder
from .rafdb import load_rafdb
from .synthetic import SyntheticFaces

# Sizes of the synthetic splits when num_samples is not given: enough for a
# stable linear probe, a few seconds to render.
SYNTHETIC_SIZES = {"train": 7000, "val": 2100, "test": 2100}


def build_dataset(format: str, path: Optional[str], split: str, image_size: int, *, cache: bool = True,
                  skip_corrupt: bool = False, num_samples: Optional[int] = None, seed: int = 0,
                  outside_subset: Optional[int] = None, stream: bool = False
                  ) -> Union[FaceDataset, "ShardFaces"]:   # noqa: F821 - cwarp.data.shards
    """The ``split`` ("train", "val" or "test") of a data set, images resized to image_size x image_size.

    format: "synthetic" (path is None or a cache folder), "synthetic-hard" (the
    same with SyntheticFaces(difficulty="hard")), "rafdb" (RAF-DB's
    basic/ folder), "fer2013" (the Kaggle csv) or "imagefolder"
    (path/train/CLASS/*, path/test/CLASS/*, optionally path/val/CLASS/*), the
    labelled formats; "folder" (every image under path), "list" (a text file
    of image paths) and "webdataset" (tar shards), which have only a train
    split, without labels (webdataset: .cls labels where every sample has one).
    "val": synthetic renders it from its own random stream, fer2013 is its
    PublicTest rows, imagefolder its val/ folder; RAF-DB has none (ValueError). cache keeps decoded images in
    memory (synthetic: saves them under path). skip_corrupt drops unreadable
    images with one warning instead of raising. num_samples takes a seeded
    random subset (synthetic: renders that many faces). outside_subset
    (rafdb, imagefolder) draws only from the images that a num_samples =
    outside_subset subset with the same seed leaves out: what a run trained on
    that subset never saw.

    folder, list and rafdb / imagefolder with ``stream=True`` give a
    StreamedFaces (nothing decoded yet; skip_corrupt then leaves unreadable
    images out batch by batch); webdataset gives a ShardFaces (an
    IterableDataset of batches, cwarp.data.shards).
    """
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    check_split(split)
    check_image_size(image_size)
    if num_samples is not None and (isinstance(num_samples, bool) or not isinstance(num_samples, int)
                                    or num_samples < 1):
        raise ValueError(f"num_samples must be a positive int or None, got {num_samples!r}")
    if outside_subset is not None and format not in ("rafdb", "imagefolder"):
        why = "has a validation split" if format in SYNTHETIC_FORMATS + ("fer2013",) else "is only a training set"
        raise ValueError(f"outside_subset is for rafdb and imagefolder; {format} {why}")
    if format in SYNTHETIC_FORMATS:
        if path is not None and os.path.exists(path) and not os.path.isdir(path):
            raise ValueError(f"{format}: path {path} is a file; give a cache folder or no path")
        count = num_samples if num_samples is not None else SYNTHETIC_SIZES[split]
        return SyntheticFaces(count, image_size, seed, split=split, cache_dir=path if cache else None,
                              difficulty="hard" if format == "synthetic-hard" else "standard")
    if path is None:
        raise ValueError(f"format {format!r} needs a data path")
    path = os.fspath(path)
    common = dict(skip_corrupt=skip_corrupt, num_samples=num_samples, seed=seed)
    if format == "folder":
        return load_folder(path, split, image_size, **common)
    if format == "list":
        return load_list(path, split, image_size, **common)
    if format == "webdataset":
        if split != "train":
            raise ValueError(f"webdataset: tar shards are one training set; they have no {split} split")
        from .shards import ShardFaces
        return ShardFaces(path, image_size, skip_corrupt=skip_corrupt, num_samples=num_samples)
    if format == "rafdb":
        return load_rafdb(path, split, image_size, cache=cache, outside_subset=outside_subset, stream=stream,
                          **common)
    if format == "fer2013":
        return load_fer2013(path, split, image_size, num_samples=num_samples, seed=seed)
    return load_imagefolder(path, split, image_size, cache=cache, outside_subset=outside_subset, stream=stream,
                            **common)
