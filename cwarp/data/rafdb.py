"""RAF-DB's ``basic/`` folder: EmoLabel/list_patition_label.txt and Image/aligned/*_aligned.jpg."""
from __future__ import annotations

import os
from typing import List, Optional, Tuple

from .common import EXPRESSIONS, check_split, indices_left_out
from .files import ImageFiles, streamed_files
from .streamed import StreamedFaces

# The file name carries RAF-DB's own spelling.
LABEL_FILE = os.path.join("EmoLabel", "list_patition_label.txt")
IMAGE_DIR = os.path.join("Image", "aligned")


def find_root(path: str) -> str:
    """The ``basic/`` folder: ``path`` itself, or ``path/basic`` when given the archive's top folder."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"rafdb: data path {path} does not exist")
    for root in (path, os.path.join(path, "basic")):
        if os.path.isfile(os.path.join(root, LABEL_FILE)):
            return root
    raise FileNotFoundError(f"rafdb: no label file {os.path.join(path, LABEL_FILE)}; PATH must be RAF-DB's "
                            f"basic/ folder holding {LABEL_FILE} and {IMAGE_DIR}/")


def read_labels(label_file: str) -> List[Tuple[str, int]]:
    """All ``(name, label 0..6)`` entries of a RAF-DB label file, in file order.

    A line that is not ``<train|test>_<id>.jpg <1..7>`` raises ValueError naming
    the file and its line number; blank lines are allowed.
    """
    entries = []
    seen = {}
    with open(label_file, "r", encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
            text = line.strip()
            if not text:
                continue
            parts = text.split()
            where = f"rafdb: {label_file}, line {lineno}"
            if len(parts) != 2:
                raise ValueError(f"{where}: expected '<name>.jpg <label 1-7>', got {text!r}")
            name, label = parts
            if not (name.startswith(("train_", "test_")) and name.lower().endswith(".jpg")):
                raise ValueError(f"{where}: image name {name!r} should look like train_00001.jpg or test_0001.jpg")
            try:
                value = int(label)
            except ValueError:
                value = 0
            if not 1 <= value <= len(EXPRESSIONS):
                raise ValueError(f"{where}: label {label!r} of {name} is not an integer in 1..{len(EXPRESSIONS)}")
            if name in seen:
                raise ValueError(f"{where}: {name} is listed twice (first on line {seen[name]})")
            seen[name] = lineno
            entries.append((name, value - 1))
    return entries


def aligned_path(root: str, name: str) -> str:
    stem = os.path.splitext(name)[0]
    return os.path.join(root, IMAGE_DIR, f"{stem}_aligned.jpg")


def load_rafdb(path: str, split: str, image_size: int, *, cache: bool = True, skip_corrupt: bool = False,
               num_samples: Optional[int] = None, seed: int = 0, outside_subset: Optional[int] = None,
               stream: bool = False) -> StreamedFaces:
    check_split(split)
    root = find_root(path)
    if split == "val":
        raise ValueError(f"rafdb: RAF-DB has no validation split, only train_* and test_* images ({path})")
    label_file = os.path.join(root, LABEL_FILE)
    entries = [(name, label) for name, label in read_labels(label_file) if name.startswith(split + "_")]
    if not entries:
        raise ValueError(f"rafdb: the {split} split is empty: no line of {label_file} names a {split}_*.jpg image")
    try:
        entries = [entries[i] for i in indices_left_out(len(entries), num_samples, seed, outside_subset)]
    except ValueError as err:
        raise ValueError(f"rafdb: the {split} split: {err}") from None
    paths = [aligned_path(root, name) for name, _ in entries]
    labels = [label for _, label in entries]
    if stream:
        return streamed_files(paths, labels, EXPRESSIONS, image_size, skip_corrupt, "rafdb")
    return ImageFiles(paths, labels, EXPRESSIONS, channels=3, image_size=image_size, cache=cache,
                      skip_corrupt=skip_corrupt, source="rafdb")
