"""What every face data set shares: the expression names and the FaceDataset interface.

A FaceDataset yields ``(image, label)`` with ``image`` a uint8 tensor (C, S, S) and
``label`` a 0-based int, and hands the whole split at once through ``tensors()`` so
that trainers on small sets can batch in memory instead of going through a
DataLoader.
"""
from __future__ import annotations

import operator
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch.utils.data import Dataset

# RAF-DB's label order: index i is RAF-DB label i + 1. FER2013 is remapped onto it
# so that label 3 means "happiness" in every format.
EXPRESSIONS = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")

# "val" is a labelled split held out from training, for monitoring a run (never
# the test split); the formats without one say so when it is asked for.
SPLITS = ("train", "val", "test")

# Below this a face has a few pixels per eye; nothing downstream can use it.
MIN_IMAGE_SIZE = 8


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    return split


def check_image_size(image_size: int) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, int):
        raise ValueError(f"image_size must be an int, got {image_size!r}")
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size {image_size} is too small: data sets need at least {MIN_IMAGE_SIZE}")
    return image_size


def subset_indices(n: int, num_samples: Optional[int], seed: int) -> List[int]:
    """Indices of a seeded random subset of ``num_samples`` out of ``n``, in their original order."""
    if num_samples is None or num_samples >= n:
        return list(range(n))
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int or None, got {num_samples!r}")
    generator = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n, generator=generator)[:num_samples].tolist())


def indices_left_out(n: int, num_samples: Optional[int], seed: int, outside_subset: Optional[int]) -> List[int]:
    """As ``subset_indices``, drawn from the indices that a subset of ``outside_subset`` (same seed) leaves out.

    A run that trains on ``subset_indices(n, num_train, seed)`` can be
    evaluated on ``indices_left_out(n, k, seed, num_train)``: no image of it is
    a training image. ValueError when the subset leaves nothing out.
    """
    if outside_subset is None:
        return subset_indices(n, num_samples, seed)
    taken = set(subset_indices(n, outside_subset, seed))
    pool = [i for i in range(n) if i not in taken]
    if not pool:
        raise ValueError(f"a subset of {outside_subset} of its {n} images leaves none out")
    return [pool[j] for j in subset_indices(len(pool), num_samples, seed)]


def resize_uint8(images: Tensor, image_size: int) -> Tensor:
    """Resize a uint8 batch (N, C, H, W) to (N, C, S, S), antialiased when shrinking.

    PyTorch's bilinear antialias kernel takes uint8 directly on the CPU, which is
    about twice as fast as a float round trip and rounds the same way.
    """
    if images.shape[-2:] == (image_size, image_size):
        return images.contiguous()
    if images.device.type != "cpu":
        out = torch.nn.functional.interpolate(images.float(), size=(image_size, image_size),
                                              mode="bilinear", antialias=True, align_corners=False)
        return out.round_().clamp_(0, 255).to(torch.uint8)
    return torch.nn.functional.interpolate(images, size=(image_size, image_size), mode="bilinear",
                                           antialias=True, align_corners=False).contiguous()


class FaceDataset(Dataset):
    """Base class of every cwarp face data set.

    Attributes: ``classes`` (tuple of class names, label i is ``classes[i]``),
    ``channels`` (1 or 3), ``image_size`` (S), ``labels`` (int64 tensor (N,)).
    Subclasses implement ``_image(i)`` and may override ``_all_images()``.
    """

    def __init__(self, labels: Tensor, classes: Sequence[str], channels: int, image_size: int):
        self.classes: Tuple[str, ...] = tuple(classes)
        self.channels = int(channels)
        self.image_size = int(image_size)
        self.labels = torch.as_tensor(labels, dtype=torch.int64).reshape(-1)

    def __len__(self) -> int:
        return self.labels.numel()

    def __getitem__(self, index) -> Tuple[Tensor, int]:
        i = operator.index(index)
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {index} is out of range for a data set of {n} images")
        return self._image(i), int(self.labels[i])

    def tensors(self) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
        """(images uint8 (N, C, S, S), labels int64 (N,), landmarks float32 (N, 5, 2) or None)."""
        return self._all_images(), self.labels, self.landmarks

    @property
    def landmarks(self) -> Optional[Tensor]:
        return None

    def _image(self, i: int) -> Tensor:
        raise NotImplementedError

    def _all_images(self) -> Tensor:
        if len(self) == 0:
            return torch.empty(0, self.channels, self.image_size, self.image_size, dtype=torch.uint8)
        return torch.stack([self._image(i) for i in range(len(self))])

    def class_counts(self) -> Tensor:
        return torch.bincount(self.labels, minlength=len(self.classes))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(n={len(self)}, image_size={self.image_size}, "
                f"channels={self.channels}, classes={self.classes})")


class TensorFaces(FaceDataset):
    """A face data set held in memory as one uint8 tensor."""

    def __init__(self, images: Tensor, labels: Tensor, classes: Sequence[str],
                 landmarks: Optional[Tensor] = None):
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[-1] != images.shape[-2]:
            raise ValueError(f"images must be uint8 (N, C, S, S), got {images.dtype} {tuple(images.shape)}")
        super().__init__(labels, classes, images.shape[1], images.shape[-1])
        if self.labels.numel() != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {self.labels.numel()} labels")
        if landmarks is not None and tuple(landmarks.shape) != (images.shape[0], 5, 2):
            raise ValueError(f"landmarks must be (N, 5, 2), got {tuple(landmarks.shape)}")
        self.images = images.contiguous()
        self._landmarks = None if landmarks is None else landmarks.to(torch.float32).contiguous()

    @property
    def landmarks(self) -> Optional[Tensor]:
        return self._landmarks

    def _image(self, i: int) -> Tensor:
        return self.images[i]

    def _all_images(self) -> Tensor:
        return self.images
