"""The training split of a run and the batches each step trains on, with data errors as one line.

``load_data`` reads the split once before the first step: a small labelled
set (synthetic, fer2013, and rafdb / imagefolder while their decoded images
fit in CACHE_LIMIT_BYTES) into memory as one uint8 tensor; anything else
(folder, list, webdataset, larger labelled sets) is only listed, and streamed
(cwarp.train.feeds gives each step its batch).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import tempfile
import warnings
from typing import Any, Optional, Tuple

from torch import Tensor

from cwarp._constants import LABELLED_FORMATS as LABELLED
from cwarp.train.config import RunConfig

__all__ = ["DataError", "TrainingData", "load_data", "recorded_data_warnings", "DECODER_CHATTER"]


class DataError(ValueError):
    """The training data cannot be read (missing folder, corrupt image, empty split)."""


# What the image decoders (libpng, libjpeg) print on their own about a file
# they fail on; the error or the --skip-corrupt warning already names it.
DECODER_CHATTER = ("libpng error:", "libpng warning:", "Corrupt JPEG data:", "Premature end of JPEG file")


@contextlib.contextmanager
def _decoder_chatter_filtered():
    """Route the process's stderr (fd 2) through a file while decoding, then
    pass on every line but DECODER_CHATTER."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode("utf-8", "replace").splitlines(keepends=True):
                if not line.startswith(DECODER_CHATTER):
                    sys.stderr.write(line)


@contextlib.contextmanager
def recorded_data_warnings():
    """Record the warnings raised while reading data (the caller prints each as one line), without the
    decoders' own chatter and without the warning cwarp.data silences."""
    from cwarp.data.decode import silence_decoder_deprecation

    with warnings.catch_warnings(record=True) as caught, _decoder_chatter_filtered():
        warnings.simplefilter("always")
        silence_decoder_deprecation()
        yield caught



@dataclasses.dataclass
class TrainingData:
    """A run's training split: ``dataset`` (a FaceDataset, or a ShardFaces), and, when it is held in memory,
    its ``images`` uint8 (N, C, S, S), ``labels`` int64 (N,) and normalized ``landmarks`` (N, 5, 2) or None."""
    dataset: Any
    images: Optional[Tensor]
    labels: Optional[Tensor]
    landmarks: Optional[Tensor]

    @property
    def in_memory(self) -> bool:
        return self.images is not None

    @property
    def has_labels(self) -> bool:
        return bool(getattr(self.dataset, "has_labels", True))

    @property
    def channels(self) -> int:
        return int(self.dataset.channels)

    @property
    def classes(self) -> Tuple[str, ...]:
        return tuple(self.dataset.classes)

    def __len__(self) -> int:
        return len(self.images) if self.images is not None else len(self.dataset)

    def bank(self, indices: Tensor) -> Tuple[Tensor, Tensor]:
        """(images, labels) of the given training images, decoded now when the set is streamed."""
        if self.images is not None:
            return self.images[indices], self.labels[indices]
        if not hasattr(self.dataset, "read_batch"):
            raise DataError("--eval-every: the online evaluation picks its bank among the training images, and "
                            "webdataset shards are read in order, not by index; pass --eval-every 0")
        batch = self.dataset.read_batch(indices.tolist())
        if batch["error"] is not None:
            raise DataError(batch["error"])
        return batch["images"], batch["labels"]


def _fits_in_memory(ds, cfg: RunConfig) -> bool:
    from cwarp.data.files import CACHE_LIMIT_BYTES
    from cwarp.data.streamed import StreamedFaces

    if not isinstance(ds, StreamedFaces) or cfg.data.format not in LABELLED:
        return False
    return len(ds) * ds.channels * ds.image_size * ds.image_size <= CACHE_LIMIT_BYTES


def load_data(cfg: RunConfig) -> TrainingData:
    """The training split of a run config (see the module docstring).

    Raises DataError (one line, naming the data) when it cannot be read; a
    warning (--skip-corrupt, links leaving the folder) is printed as one line.
    """
    from cwarp.data import build_dataset

    d = cfg.data
    try:
        with recorded_data_warnings() as caught:
            ds = build_dataset(d.format, d.data, "train", d.image_size, num_samples=d.num_train, seed=d.data_seed,
                               skip_corrupt=d.skip_corrupt, stream=True)
            if _fits_in_memory(ds, cfg):
                ds = ds.to_memory(d.skip_corrupt)
            images = labels = landmarks = None
            if hasattr(ds, "images"):   # held in memory
                images, labels, landmarks = ds.tensors()
    except (ValueError, OSError, RuntimeError, ImportError) as e:
        hint = "; pass --skip-corrupt to leave unreadable images out" if "decode" in str(e).lower() else ""
        raise DataError(f"--data {d.data}: {' '.join(str(e).split())}{hint}") from e
    for w in caught:
        print(f"cwarp-train: warning: {' '.join(str(w.message).split())}", file=sys.stderr)
    data = TrainingData(ds, images, labels, landmarks)
    if len(data) == 0:
        raise DataError(f"--data {d.data}: the {d.format} training split is empty")
    if cfg.method == "supervised" and not data.has_labels:
        raise DataError(f"--data {d.data}: --method supervised trains on labels and not every sample of these "
                        f"{d.format} shards has a .cls label")
    return data
