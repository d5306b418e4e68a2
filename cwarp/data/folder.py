"""``--format folder``: every image under a directory tree, any depth, no labels.

The pretraining input ContraWarping is for: a folder of face crops, however
it is organised. Names starting with "." are left out, symbolic links are
followed once per real file and folder, and the order is stable
(cwarp.data.walk).
"""
from __future__ import annotations

import os
import warnings
from typing import Optional

from .common import subset_indices
from .decode import IMAGE_EXTENSIONS
from .paths import PathTable
from .streamed import StreamedFaces
from .walk import ImageWalker

__all__ = ["load_folder"]


def load_folder(path: str, split: str, image_size: int, *, skip_corrupt: bool = False,
                num_samples: Optional[int] = None, seed: int = 0) -> StreamedFaces:
    """The images under ``path`` as an unlabelled StreamedFaces (the train split; a folder has no other)."""
    if split != "train":
        raise ValueError(f"folder: a folder of unlabelled images is one training set; it has no {split} split")
    if not os.path.isdir(path):
        what = "is not a folder" if os.path.exists(path) else "does not exist"
        raise FileNotFoundError(f"folder: data path {path} {what}")
    walker = ImageWalker(path)
    relative = walker.list(path)
    message = walker.warning("folder")
    if message:
        warnings.warn(message, stacklevel=2)
    if not relative:
        raise ValueError(f"folder: no image files ({'|'.join(IMAGE_EXTENSIONS)}) under {path}")
    keep = subset_indices(len(relative), num_samples, seed)
    if len(keep) < len(relative):
        relative = [relative[i] for i in keep]
    return StreamedFaces(PathTable(path, relative), None, (), channels=3, image_size=image_size,
                         skip_corrupt=skip_corrupt, source="folder")
