"""StreamedFaces: a face data set of image files, decoded per batch in DataLoader workers.

Nothing is decoded up front: the paths (a PathTable), labels (or none) and
landmarks in pixels (or none) are all it holds, so its memory does not grow
with the images' size and barely with their number. ``read_batch(indices)``
decodes, resizes and collates one batch (cwarp.data.batch) in the
DataLoader worker that calls it; ``dataset[i]`` decodes one image, as every
FaceDataset does. ``decode_all`` reads the whole set into
memory (threaded), for the small labelled sets that train from RAM.

``BatchReader(dataset)`` is what a DataLoader with a batch sampler reads:
each list of indices becomes one ``read_batch`` in a worker.
"""
from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch.utils.data import Dataset

from .batch import UNLABELLED, FaceBatch, decode_batch, one_line, plain_jpeg
from .common import FaceDataset
from .decode import CorruptImageError, decode_bytes, read_image_bytes
from .landmarks import NUM_LANDMARKS, to_normalized
from .paths import PathTable

__all__ = ["StreamedFaces", "BatchReader", "decode_threads"]


def decode_threads() -> int:
    # Decoding holds the GIL for much of its time: a second thread gains a few
    # percent on small JPEGs, more threads lose. DataLoader worker processes
    # are the way to use more cores.
    return max(1, min(2, os.cpu_count() or 1))


class StreamedFaces(FaceDataset):
    """Images listed by path, decoded when read.

    ``labels``: int64 (N,), or None for a set without labels (its items then
    carry label -1 and ``classes`` is empty). ``landmarks``: float32 (N, 5, 2)
    in pixels of each image (cwarp.data.landmarks), NaN rows where an image
    has none, or None. ``skip_corrupt`` leaves unreadable images out of a
    batch (``__getitems__``); ``dataset[i]`` raises for one either way.
    """

    def __init__(self, paths: PathTable, labels: Optional[Tensor], classes: Sequence[str], *, channels: int,
                 image_size: int, landmarks: Optional[Tensor] = None, skip_corrupt: bool = False,
                 source: str = "images"):
        n = len(paths)
        if labels is not None and len(labels) != n:
            raise ValueError(f"{n} paths but {len(labels)} labels")
        if landmarks is not None and tuple(landmarks.shape) != (n, NUM_LANDMARKS, 2):
            raise ValueError(f"landmarks must be (N, {NUM_LANDMARKS}, 2) pixels, got {tuple(landmarks.shape)}")
        self.has_labels = labels is not None
        super().__init__(labels if labels is not None else torch.full((n,), UNLABELLED, dtype=torch.int64),
                         classes if labels is not None else (), channels, image_size)
        self.paths = paths
        self.pixel_landmarks = None if landmarks is None else landmarks.to(torch.float32).contiguous()
        self.skip_corrupt = skip_corrupt
        self.source = source
        # Set by the trainer for --decode-device cuda: JPEGs stay encoded in read_batch (cwarp.data.batch).
        self.gpu_jpeg = False

    def _read(self, i: int) -> bytes:
        return read_image_bytes(self.paths[i])

    def _image(self, i: int) -> Tensor:
        try:
            return decode_bytes(self._read(i), self.paths[i], self.channels, self.image_size)[0].contiguous()
        except (CorruptImageError, OSError) as err:
            raise type(err)(f"{self.source}: {err}") from err

    def class_counts(self) -> Tensor:
        if not self.has_labels:
            raise ValueError(f"{self.source}: this data set has no labels")
        return super().class_counts()

    def read_batch(self, indices: Sequence[int]) -> FaceBatch:
        """One batch, decoded here (in the DataLoader worker that calls it); see cwarp.data.batch."""
        indices = [int(i) for i in indices]
        names = [self.paths[i] for i in indices]
        lm = None if self.pixel_landmarks is None else self.pixel_landmarks[indices]
        return decode_batch(names, lambda j: read_image_bytes(names[j]),
                            self.labels[indices].tolist() if self.has_labels else None, lm,
                            channels=self.channels, image_size=self.image_size, skip_corrupt=self.skip_corrupt,
                            source=self.source, keep_jpeg=plain_jpeg(lm) if self.gpu_jpeg else None)

    def _decode_one(self, i: int):
        """(image, normalized landmarks or None, None) or (None, None, the one-line reason)."""
        path = self.paths[i]
        try:
            image, (h, w) = decode_bytes(self._read(i), path, self.channels, self.image_size)
            points = None
            if self.pixel_landmarks is not None and not bool(torch.isnan(self.pixel_landmarks[i]).any()):
                points = to_normalized(self.pixel_landmarks[i], h, w, path)
            return image, points, None
        except (CorruptImageError, OSError, ValueError) as err:
            return None, None, one_line(err)

    def decode_all(self, skip_corrupt: bool, keep: bool = True
                   ) -> Tuple[Optional[Tensor], List[int], Optional[Tensor], List[Tuple[str, str]]]:
        """(images uint8 (K, C, S, S), the K kept indices, normalized landmarks (K, 5, 2) or None, skipped).

        Threaded. An unreadable image raises its error (CorruptImageError,
        FileNotFoundError, OSError or LandmarkError, naming the file) unless
        ``skip_corrupt``, which leaves it out and lists (path, reason) in
        skipped. ``keep=False`` only finds the readable images (images and
        landmarks are None).
        """
        from cwarp.ops.local_warp.sampling import FACE_LANDMARKS_5

        n = len(self)
        images = torch.empty(n, self.channels, self.image_size, self.image_size, dtype=torch.uint8) if keep else None
        landmarks = (FACE_LANDMARKS_5.expand(n, NUM_LANDMARKS, 2).clone()
                     if keep and self.pixel_landmarks is not None else None)
        kept: List[int] = []
        skipped: List[Tuple[str, str]] = []
        threads = decode_threads()
        pool = ThreadPoolExecutor(threads)
        try:
            results = (pool.map(self._decode_one, range(n), chunksize=64) if threads > 1
                       else map(self._decode_one, range(n)))
            for i, (image, points, reason) in enumerate(results):
                if image is None:
                    if not skip_corrupt:
                        self._raise(i, reason)
                    skipped.append((self.paths[i], reason))
                    continue
                if images is not None:
                    images[len(kept)] = image
                if points is not None and landmarks is not None:
                    landmarks[len(kept)] = points
                kept.append(i)
        finally:
            # On an error, do not decode the rest of a large set before reporting it.
            pool.shutdown(wait=True, cancel_futures=True)
        k = len(kept)
        return (None if images is None else images[:k]), kept, (None if landmarks is None else landmarks[:k]), skipped

    def _raise(self, i: int, reason: str) -> None:
        path = self.paths[i]
        message = f"{self.source}: {reason}"
        if not os.path.exists(path):
            raise FileNotFoundError(message)
        if "landmarks of" in reason:
            from .landmarks import LandmarkError
            raise LandmarkError(message)
        if reason.startswith("cannot decode"):
            raise CorruptImageError(message)
        raise OSError(message)

    def to_memory(self, skip_corrupt: bool) -> "TensorFaces":   # noqa: F821 - common.TensorFaces
        """The set decoded into a TensorFaces (threaded), unreadable images left out with one warning
        when ``skip_corrupt`` (else the first raises, naming its file)."""
        from .common import TensorFaces

        images, kept, landmarks, skipped = self.decode_all(skip_corrupt)
        if skipped:
            warnings.warn(f"{self.source}: skipped {len(skipped)} of {len(self)} images that could not be read "
                          f"(first: {skipped[0][1]})", stacklevel=2)
        labels = self.labels[kept] if self.has_labels else torch.full((len(kept),), UNLABELLED, dtype=torch.int64)
        return TensorFaces(images, labels, self.classes, landmarks)


class BatchReader(Dataset):
    """A StreamedFaces for a DataLoader with a batch sampler: each index list is one ``read_batch`` (with
    ``collate_fn=cwarp.data.batch.collate_batch``)."""

    def __init__(self, dataset: StreamedFaces):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitems__(self, indices: Sequence[int]) -> FaceBatch:
        return self.dataset.read_batch(indices)

    def __getitem__(self, index: int) -> FaceBatch:
        return self.dataset.read_batch([index])
