"""A folder per split and a sub-folder per class: PATH/train/CLASS/*.jpg|png and PATH/test/CLASS/*."""
from __future__ import annotations

import os
import warnings
from typing import List, Optional, Tuple

from .common import SPLITS, check_split, indices_left_out
from .decode import IMAGE_EXTENSIONS
from .files import ImageFiles, streamed_files
from .streamed import StreamedFaces
from .walk import ImageWalker


def _class_dirs(split_dir: str) -> List[str]:
    if not os.path.isdir(split_dir):
        return []
    return [d for d in os.listdir(split_dir)
            if not d.startswith(".") and os.path.isdir(os.path.join(split_dir, d))]


def find_classes(path: str) -> Tuple[str, ...]:
    """Class names: the sorted union of the class folders of both splits, so labels agree between them."""
    names = set()
    for split in SPLITS:
        names.update(_class_dirs(os.path.join(path, split)))
    return tuple(sorted(names))


def load_imagefolder(path: str, split: str, image_size: int, *, cache: bool = True, skip_corrupt: bool = False,
                     num_samples: Optional[int] = None, seed: int = 0, outside_subset: Optional[int] = None,
                     stream: bool = False) -> StreamedFaces:
    """The split's images under PATH/SPLIT/CLASS/ (cwarp.data.walk: any depth, each real file once, links
    that leave PATH/SPLIT warned about)."""
    check_split(split)
    if not os.path.isdir(path):
        what = "is not a folder" if os.path.exists(path) else "does not exist"
        raise FileNotFoundError(f"imagefolder: data path {path} {what}")
    split_dir = os.path.join(path, split)
    if not os.path.isdir(split_dir):
        raise FileNotFoundError(f"imagefolder: {split_dir} does not exist; expected PATH/train/CLASS/*.jpg|png "
                                f"and PATH/test/CLASS/*")
    classes = find_classes(path)
    walker = ImageWalker(split_dir)
    paths, labels = [], []
    for label, name in enumerate(classes):
        class_dir = os.path.join(split_dir, name)
        if not os.path.isdir(class_dir):
            continue
        for file in walker.list(class_dir):
            paths.append(os.path.join(class_dir, file))
            labels.append(label)
    message = walker.warning("imagefolder")
    if message:
        warnings.warn(message, stacklevel=2)
    if not paths:
        raise ValueError(f"imagefolder: the {split} split is empty: no {'|'.join(IMAGE_EXTENSIONS)} files in "
                         f"class folders under {split_dir}")
    try:
        keep = indices_left_out(len(paths), num_samples, seed, outside_subset)
    except ValueError as err:
        raise ValueError(f"imagefolder: the {split} split: {err}") from None
    paths, labels = [paths[i] for i in keep], [labels[i] for i in keep]
    if stream:
        return streamed_files(paths, labels, classes, image_size, skip_corrupt, "imagefolder")
    return ImageFiles(paths, labels, classes, channels=3, image_size=image_size, cache=cache,
                      skip_corrupt=skip_corrupt, source="imagefolder")
