"""Write synthetic faces to disk as an image folder, a list file or webdataset tar shards.

    python -m cwarp.data.export DIR --count 20000 [--size 64] [--list]
    python -m cwarp.data.export DIR --count 200000 --shards [--shard-size 1000]

What ``--format folder``, ``list`` and ``webdataset`` read, rendered chunk by
chunk (memory does not grow with N): DIR/000/000000.jpg, ... (1,000 a
sub-folder); with ``--list`` also DIR/faces.txt naming them with their 5
landmarks in pixels; with ``--shards`` instead DIR/faces-000000.tar, ...
(``--shard-size`` samples each: .jpg, .cls with the expression label, .json
with the landmarks). Face i depends only on (seed, split, i), as in
SyntheticFaces.
"""
from __future__ import annotations

import io
import json
import os
import sys
import time
from typing import Dict, Iterator, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from .render import new_workspace
from .synthetic import CHUNK, render_chunk

__all__ = ["FILES_PER_FOLDER", "LIST_NAME", "SHARD_PATTERN", "write_folder", "write_shards", "landmarks_in_pixels"]

FILES_PER_FOLDER = 1000
LIST_NAME = "faces.txt"
SHARD_PATTERN = "faces-%06d.tar"


def landmarks_in_pixels(points: Tensor, size: int) -> Tensor:
    """Normalized (..., 2) positions as pixels of a size x size image (cwarp.data.landmarks' convention)."""
    return (points + 1.0) * (size / 2.0) - 0.5


def _chunks(count: int, size: int, seed: int, split: str) -> Iterator[Tuple[int, Tensor, Tensor, Tensor]]:
    """(first index, uint8 images, labels, normalized landmarks) of each rendered chunk."""
    workspace = new_workspace()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # as SyntheticFaces: the renderer's operations are too small for more
    try:
        for c in range((count + CHUNK - 1) // CHUNK):
            images, labels, landmarks, _, _ = render_chunk(seed, split, c, size, min(CHUNK, count - c * CHUNK),
                                                           workspace)
            yield c * CHUNK, images, labels, landmarks
    finally:
        torch.set_num_threads(threads)


def _jpeg(image: Tensor, quality: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _relative(i: int) -> str:
    return os.path.join(f"{i // FILES_PER_FOLDER:03d}", f"{i:06d}.jpg")


def write_folder(out: str, count: int, size: int = 64, seed: int = 0, split: str = "train", quality: int = 90,
                 list_file: bool = False) -> Dict[str, object]:
    """Write ``count`` faces as JPEGs under ``out`` (and ``out/faces.txt`` with ``list_file``); returns a summary."""
    os.makedirs(out, exist_ok=True)
    started = time.perf_counter()
    lines = []
    nbytes = 0
    for first, images, _, landmarks in _chunks(count, size, seed, split):
        pixels = landmarks_in_pixels(landmarks, size)
        for j in range(len(images)):
            rel = _relative(first + j)
            os.makedirs(os.path.join(out, os.path.dirname(rel)), exist_ok=True)
            data = _jpeg(images[j], quality)
            with open(os.path.join(out, rel), "wb") as f:
                f.write(data)
            nbytes += len(data)
            if list_file:
                lines.append(rel + " " + " ".join(f"{v:.2f}" for v in pixels[j].flatten().tolist()))
    if list_file:
        with open(os.path.join(out, LIST_NAME), "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    return {"images": count, "bytes": nbytes, "seconds": time.perf_counter() - started, "path": out}


def write_shards(out: str, count: int, size: int = 64, seed: int = 0, split: str = "train", quality: int = 90,
                 shard_size: int = 1000) -> Dict[str, object]:
    """Write ``count`` faces into tar shards ``out/faces-000000.tar``, ... of ``shard_size`` samples."""
    from .shards import _webdataset

    wds = _webdataset()
    os.makedirs(out, exist_ok=True)
    started = time.perf_counter()
    nbytes = 0
    shards = (count + shard_size - 1) // shard_size
    writer = None
    try:
        for first, images, labels, landmarks in _chunks(count, size, seed, split):
            pixels = landmarks_in_pixels(landmarks, size)
            for j in range(len(images)):
                i = first + j
                if i % shard_size == 0:
                    if writer is not None:
                        writer.close()
                    writer = wds.TarWriter(os.path.join(out, SHARD_PATTERN % (i // shard_size)))
                data = _jpeg(images[j], quality)
                nbytes += len(data)
                writer.write({"__key__": f"{i:08d}", "jpg": data, "cls": str(int(labels[j])).encode(),
                              "json": json.dumps({"landmarks": np.round(pixels[j].numpy(), 2).tolist()}).encode()})
    finally:
        if writer is not None:
            writer.close()
    pattern = os.path.join(out, f"faces-{{000000..{shards - 1:06d}}}.tar")
    return {"images": count, "bytes": nbytes, "seconds": time.perf_counter() - started, "path": pattern,
            "shards": shards}


def _write(args) -> None:
    common = dict(size=args.size, seed=args.seed, split=args.split, quality=args.quality)
    if args.shards:
        summary = write_shards(args.out, args.count, shard_size=args.shard_size, **common)
    else:
        summary = write_folder(args.out, args.count, list_file=args.list, **common)
    print(f"wrote {summary['images']} faces ({summary['bytes'] / 2**20:.1f} MB of JPEG) to {summary['path']} in "
          f"{summary['seconds']:.1f} s")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console entry point; 0 when written, 2 with one line on bad input."""
    from cwarp._cli import InputError, Parser, positive_int, run_script

    parser = Parser("python -m cwarp.data.export", __doc__)
    parser.add_argument("out", metavar="DIR", help="folder to write into (created)")
    parser.add_argument("--count", type=positive_int, required=True, help="faces to write")
    parser.add_argument("--size", type=positive_int, default=64, help="side of each image, in pixels (>= 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic faces")
    parser.add_argument("--split", choices=("train", "val", "test"), default="train", help="which random stream")
    parser.add_argument("--quality", type=positive_int, default=90, help="JPEG quality (1..95)")
    parser.add_argument("--list", action="store_true", help=f"also write DIR/{LIST_NAME} with 5 landmarks a line")
    parser.add_argument("--shards", action="store_true", help="write tar shards (webdataset) instead of a folder")
    parser.add_argument("--shard-size", type=positive_int, default=1000, help="samples per shard")

    def body(args) -> None:
        if args.size < 8:
            raise InputError(f"--size: expected >= 8, got {args.size}")
        if args.quality > 95:
            raise InputError(f"--quality: expected 1..95, got {args.quality}")
        if args.shards and args.list:
            raise InputError("--list: a list file names a folder's images; it does not go with --shards")
        _write(args)

    return run_script(parser, argv, body)


if __name__ == "__main__":
    sys.exit(main())
