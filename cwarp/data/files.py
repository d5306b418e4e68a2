"""A face data set backed by a list of image files: decoded lazily or cached in memory."""
from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .common import FaceDataset
from .decode import CorruptImageError, decode_file

# Caching decodes the whole split up front; beyond this the split stays on disk
# and is decoded per item, so a large folder cannot exhaust memory by default.
CACHE_LIMIT_BYTES = 4 << 30


def _decode_threads() -> int:
    # Decoding holds the GIL for much of its time: a second thread gains a few
    # percent on small JPEGs, more threads lose. A DataLoader with worker
    # processes over a cache=False set is the way to use more cores.
    return max(1, min(2, os.cpu_count() or 1))


class ImageFiles(FaceDataset):
    """Images listed by path with their labels.

    cache=True decodes every image once at construction (threaded), which is
    what small sets such as RAF-DB want; cache=False decodes in ``__getitem__``.
    skip_corrupt=True drops unreadable files and counts them in one warning;
    otherwise the first one raises an error naming it. Missing files are found
    at construction either way.
    """

    def __init__(self, paths: Sequence[str], labels: Sequence[int], classes: Sequence[str], *,
                 channels: int, image_size: int, cache: bool = True, skip_corrupt: bool = False,
                 source: str = "images"):
        paths = list(paths)
        labels = list(labels)
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
        self.source = source
        self.skipped: List[Tuple[str, str]] = []
        self.channels = channels
        self.image_size = image_size

        kept = self._drop_missing(paths, skip_corrupt)
        nbytes = len(kept) * channels * image_size * image_size
        self._cache: Optional[Tensor] = None
        if cache and nbytes > CACHE_LIMIT_BYTES:
            warnings.warn(f"{source}: {len(kept)} images need {nbytes / 2**30:.1f} GiB decoded, more than the "
                          f"{CACHE_LIMIT_BYTES / 2**30:.0f} GiB cache limit; decoding them per item instead",
                          stacklevel=3)
            cache = False
        if cache or skip_corrupt:
            # Skipping needs to know which files are corrupt before len() is fixed,
            # so it decodes everything once even when nothing is kept.
            images, ok = self._decode_all([paths[i] for i in kept], skip_corrupt, keep=cache)
            kept = [kept[j] for j in ok]
            self._cache = images
        if self.skipped:
            warnings.warn(f"{source}: skipped {len(self.skipped)} of {len(paths)} images that could not be "
                          f"read (first: {self.skipped[0][1]})", stacklevel=3)
        self.paths = [paths[i] for i in kept]
        super().__init__(torch.tensor([labels[i] for i in kept], dtype=torch.int64), classes,
                         channels, image_size)

    def _drop_missing(self, paths: List[str], skip_corrupt: bool) -> List[int]:
        kept = []
        for i, path in enumerate(paths):
            if os.path.isfile(path):
                kept.append(i)
            elif skip_corrupt:
                self.skipped.append((path, f"image file {path} does not exist"))
            else:
                raise FileNotFoundError(f"{self.source}: image file {path} does not exist")
        return kept

    def _decode_one(self, path: str):
        try:
            return decode_file(path, self.channels, self.image_size), None
        except (CorruptImageError, FileNotFoundError) as err:
            return None, str(err)

    def _decode_all(self, paths: List[str], skip_corrupt: bool, keep: bool = True
                    ) -> Tuple[Optional[Tensor], List[int]]:
        """The decoded images (None unless ``keep``) and the indices of the readable paths."""
        out = None
        if keep:
            out = torch.empty(len(paths), self.channels, self.image_size, self.image_size, dtype=torch.uint8)
        ok = []
        threads = _decode_threads()
        pool = ThreadPoolExecutor(threads)
        try:
            results = pool.map(self._decode_one, paths, chunksize=64) if threads > 1 else map(self._decode_one, paths)
            for j, (image, reason) in enumerate(results):
                if image is None:
                    if not skip_corrupt:
                        raise CorruptImageError(f"{self.source}: {reason}")
                    self.skipped.append((paths[j], reason))
                    continue
                if out is not None:
                    out[len(ok)] = image
                ok.append(j)
        finally:
            # On an error, do not decode the rest of a large set before reporting it.
            pool.shutdown(wait=True, cancel_futures=True)
        return (out[:len(ok)] if out is not None else None), ok

    def _image(self, i: int) -> Tensor:
        if self._cache is not None:
            return self._cache[i]
        try:
            return decode_file(self.paths[i], self.channels, self.image_size)
        except (CorruptImageError, FileNotFoundError) as err:
            raise type(err)(f"{self.source}: {err}") from err

    def _all_images(self) -> Tensor:
        if self._cache is not None:
            return self._cache
        images, _ = self._decode_all(self.paths, skip_corrupt=False)
        return images
