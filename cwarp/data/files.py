"""ImageFiles: a labelled face data set backed by a list of image files, cached in memory or decoded lazily."""
from __future__ import annotations

import os
import warnings
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .paths import PathTable
from .streamed import StreamedFaces

# Caching decodes the whole split up front; beyond this the split stays on disk
# and is decoded per item, so a large folder cannot exhaust memory by default.
CACHE_LIMIT_BYTES = 4 << 30


class ImageFiles(StreamedFaces):
    """Images listed by path with their labels.

    cache=True decodes every image once at construction (threaded), which is
    what small sets such as RAF-DB want; cache=False decodes in ``__getitem__``.
    skip_corrupt=True drops unreadable files and counts them in one warning
    (which decodes every image once at construction, so that ``len`` counts
    only readable ones); otherwise the first one raises an error naming it.
    Missing files are found at construction either way.
    """

    def __init__(self, paths: Sequence[str], labels: Sequence[int], classes: Sequence[str], *,
                 channels: int, image_size: int, cache: bool = True, skip_corrupt: bool = False,
                 source: str = "images", root: str = ""):
        paths = list(paths)
        labels = list(labels)
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
        kept, self.skipped = self._drop_missing(paths, root, skip_corrupt, source)
        nbytes = len(kept) * channels * image_size * image_size
        self._cache: Optional[Tensor] = None
        if cache and nbytes > CACHE_LIMIT_BYTES:
            warnings.warn(f"{source}: {len(kept)} images need {nbytes / 2**30:.1f} GiB decoded, more than the "
                          f"{CACHE_LIMIT_BYTES / 2**30:.0f} GiB cache limit; decoding them per item instead",
                          stacklevel=3)
            cache = False
        super().__init__(PathTable(root, [paths[i] for i in kept]), torch.tensor([labels[i] for i in kept],
                         dtype=torch.int64), classes, channels=channels, image_size=image_size,
                         skip_corrupt=skip_corrupt, source=source)
        if cache or skip_corrupt:
            # Skipping needs to know which files are corrupt before len() is fixed,
            # so it decodes everything once even when nothing is kept.
            images, ok, _, skipped = self.decode_all(skip_corrupt, keep=cache)
            self.skipped += skipped
            if len(ok) < len(self):
                self.paths = self.paths.select(ok)
                self.labels = self.labels[ok]
            self._cache = images
        if self.skipped:
            warnings.warn(f"{source}: skipped {len(self.skipped)} of {len(paths)} images that could not be "
                          f"read (first: {self.skipped[0][1]})", stacklevel=3)

    @staticmethod
    def _drop_missing(paths: List[str], root: str, skip_corrupt: bool, source: str
                      ) -> Tuple[List[int], List[Tuple[str, str]]]:
        kept: List[int] = []
        skipped: List[Tuple[str, str]] = []
        for i, path in enumerate(paths):
            full = os.path.join(root, path)
            if os.path.isfile(full):
                kept.append(i)
            elif skip_corrupt:
                skipped.append((full, f"image file {full} does not exist"))
            else:
                raise FileNotFoundError(f"{source}: image file {full} does not exist")
        return kept, skipped

    def _image(self, i: int) -> Tensor:
        if self._cache is not None:
            return self._cache[i]
        return super()._image(i)

    def _all_images(self) -> Tensor:
        if self._cache is not None:
            return self._cache
        return self.decode_all(skip_corrupt=False)[0]


def streamed_files(paths: Sequence[str], labels: Sequence[int], classes: Sequence[str], image_size: int,
                   skip_corrupt: bool, source: str) -> StreamedFaces:
    """A labelled list of files as a StreamedFaces: missing files found now (left out with one warning when
    ``skip_corrupt``), nothing decoded; unreadable ones are left out batch by batch."""
    kept, skipped = ImageFiles._drop_missing(list(paths), "", skip_corrupt, source)
    if skipped:
        warnings.warn(f"{source}: skipped {len(skipped)} of {len(paths)} images that do not exist "
                      f"(first: {skipped[0][0]})", stacklevel=3)
    return StreamedFaces(PathTable.absolute([paths[i] for i in kept]),
                         torch.tensor([labels[i] for i in kept], dtype=torch.int64), classes, channels=3,
                         image_size=image_size, skip_corrupt=skip_corrupt, source=source)
