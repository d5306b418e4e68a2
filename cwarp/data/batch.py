"""One training batch decoded in a DataLoader worker: uint8 images collated in place, errors as data.

A batch is a dict of tensors that the DataLoader pins as it is, with no
collate step: ``images`` uint8 (B, C, S, S), ``labels`` int64 (B,) (-1 where
the data set has none), ``landmarks`` float32 (B, 5, 2) normalized, or None
when the data set has none, ``skipped`` (one line per image left out) and
``error`` (None, or the one line that stops the run). A worker never raises
for a bad file: without skip_corrupt the batch carries the error, so the
training process reports it in one line instead of a worker's traceback.

With skip_corrupt a bad image's place is taken by a copy of one of the
batch's readable images (the first for the first bad one, and so on), so
that every step sees a full batch on every rank; the warning at the end of
the epoch counts them. A batch with no readable image at all is an error.

``encoded`` (with --decode-device cuda) lists the JPEG bytes left for the
training process to decode on the GPU, ``encoded_at`` their positions and
``encoded_names`` their files.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
from torch import Tensor

from .decode import decode_bytes, jpeg_orientation
from .landmarks import NUM_LANDMARKS, to_normalized

__all__ = ["UNLABELLED", "FaceBatch", "decode_batch", "one_line", "collate_batch", "plain_jpeg"]

# The label of an image in a data set without labels.
UNLABELLED = -1

FaceBatch = Dict[str, Any]


def one_line(message: Any) -> str:
    return " ".join(str(message).split())


def _reason(err: BaseException, name: str) -> str:
    text = one_line(err) or type(err).__name__
    return text if name in text else f"{name}: {type(err).__name__}: {text}"


def collate_batch(batch: FaceBatch) -> FaceBatch:
    """The DataLoader's collate_fn: a worker's batch is collated already."""
    return batch


def decode_batch(names: Sequence[str], read: Callable[[int], bytes], labels: Optional[Sequence[int]],
                 landmarks: Optional[Tensor], *, channels: int, image_size: int, skip_corrupt: bool,
                 source: str, keep_jpeg: Optional[Callable[[int, bytes], bool]] = None) -> FaceBatch:
    """Decode the images ``read(0..B-1)`` (named ``names``) into one batch (see the module docstring).

    ``landmarks``: (B, 5, 2) pixels with NaN rows where an image has none, or
    None. ``keep_jpeg(j, data)`` (the GPU decode) says which images to leave
    encoded: never one with landmarks, whose image size must be known here.
    """
    from cwarp.ops.local_warp.sampling import FACE_LANDMARKS_5

    b = len(names)
    images = torch.empty(b, channels, image_size, image_size, dtype=torch.uint8)
    out_labels = torch.full((b,), UNLABELLED, dtype=torch.int64)
    out_landmarks = None if landmarks is None else FACE_LANDMARKS_5.expand(b, NUM_LANDMARKS, 2).clone()
    good: List[int] = []
    skipped: List[str] = []
    encoded: List[Tensor] = []
    encoded_at: List[int] = []
    encoded_names: List[str] = []
    for j, name in enumerate(names):
        try:
            data = read(j)
            if keep_jpeg is not None and keep_jpeg(j, data):
                encoded.append(torch.frombuffer(bytearray(data), dtype=torch.uint8))
                encoded_at.append(j)
                encoded_names.append(name)
            else:
                images[j], size = decode_bytes(data, name, channels, image_size)
                if out_landmarks is not None and not bool(torch.isnan(landmarks[j]).any()):
                    out_landmarks[j] = to_normalized(landmarks[j], size[0], size[1], name)
        except Exception as err:  # noqa: BLE001 - every per-file failure is reported, never raised in a worker
            reason = f"{source}: {_reason(err, name)}"
            if not skip_corrupt:
                return {"images": images, "labels": out_labels, "landmarks": out_landmarks, "skipped": [],
                        "error": reason + "; pass --skip-corrupt to leave unreadable images out",
                        "encoded": [], "encoded_at": [], "encoded_names": []}
            skipped.append(reason)
            if encoded_at and encoded_at[-1] == j:
                encoded.pop()
                encoded_at.pop()
                encoded_names.pop()
            continue
        good.append(j)
        if labels is not None:
            out_labels[j] = int(labels[j])
    error = None
    if skipped:
        if not good:
            error = (f"{source}: none of the {b} images of a batch could be read (first: {skipped[0]}); "
                     f"check the data")
        else:
            _fill_gaps(good, b, images, out_labels, out_landmarks, encoded, encoded_at, encoded_names)
    return {"images": images, "labels": out_labels, "landmarks": out_landmarks, "skipped": skipped,
            "error": error, "encoded": encoded, "encoded_at": encoded_at, "encoded_names": encoded_names}


def _fill_gaps(good: List[int], b: int, images: Tensor, labels: Tensor, landmarks: Optional[Tensor],
               encoded: List[Tensor], encoded_at: List[int], encoded_names: List[str]) -> None:
    """Each unreadable position gets a copy of a readable image of the batch, in order."""
    ok = set(good)
    gaps = [j for j in range(b) if j not in ok]
    where_encoded = {j: k for k, j in enumerate(encoded_at)}
    for n, j in enumerate(gaps):
        src = good[n % len(good)]
        labels[j] = labels[src]
        if landmarks is not None:
            landmarks[j] = landmarks[src]
        if src in where_encoded:
            encoded.append(encoded[where_encoded[src]])
            encoded_at.append(j)
            encoded_names.append(encoded_names[where_encoded[src]])
        else:
            images[j] = images[src]


def plain_jpeg(landmarks: Optional[Tensor]) -> Callable[[int, bytes], bool]:
    """decode_batch's keep_jpeg for --decode-device cuda: the JPEGs nvJPEG may decode as they are (no EXIF
    orientation to apply, no landmarks that need the image's size here)."""
    def keep(j: int, data: bytes) -> bool:
        if data[:3] != b"\xff\xd8\xff":
            return False
        if landmarks is not None and not bool(torch.isnan(landmarks[j]).all()):
            return False
        return jpeg_orientation(data) == 1

    return keep
