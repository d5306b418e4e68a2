"""``--format webdataset``: faces in tar shards, read with the ``webdataset`` library, streamed in order.

PATH is a shard pattern in brace notation, ``shards/faces-{000000..000099}.tar``
(as webdataset writes and expands it; several patterns joined by ``::``), or a
folder, meaning every ``*.tar`` in it. Each sample is one image (``.jpg``,
``.jpeg``, ``.png``, ``.webp``, ``.bmp``, ``.tif``, ``.tiff`` or ``.gif``) with
an optional ``.cls`` (the expression label 0..6 in RAF-DB order, as text) and
an optional ``.json`` (``{"landmarks": [[x, y], ...5]}``, pixels of that
image). Shards must be local, uncompressed tar files: at start each shard's
headers are read (not its images) to count its samples, so that every rank
knows how many steps an epoch has.

How an epoch is split (``ShardPlan``): shard k (in the expanded order) is
read by rank k mod W, and a rank's j-th shard by its worker j mod N, every
epoch (webdataset's ``split_by_node`` then ``split_by_worker``). Each epoch a
worker reads its shards in a new order and shuffles their samples through a
buffer of SHUFFLE_BUFFER samples, both seeded by (seed, epoch, rank, worker);
it makes batches of B consecutive samples and drops its last partial batch.
Every rank runs as many steps as the rank with the fewest full batches; the
other ranks leave the rest of their batches unread that epoch (a different
part each epoch, since the order changes). A run needs at least one shard per
rank.

A batch carries ``position`` = (worker, batches that worker made before it),
which is all that a resumed run needs: each worker then skips that many
batches of its stream (reading, not decoding them), and the round-robin over
workers resumes at the next one.
"""
from __future__ import annotations

import dataclasses
import glob
import json
import os
import random
import re
import tarfile
import warnings
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from .batch import UNLABELLED, FaceBatch, decode_batch, one_line, plain_jpeg
from .common import EXPRESSIONS
from .landmarks import NUM_LANDMARKS, parse_landmarks

__all__ = ["ShardFaces", "ShardPlan", "SHUFFLE_BUFFER", "IMAGE_KEYS", "expand_shards", "worker_seeds"]

# Samples each worker holds to shuffle its stream: about 20 MB of 256-pixel JPEGs.
SHUFFLE_BUFFER = 1000
IMAGE_KEYS = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif")
# webdataset leaves these entries out of samples (its tar_file_iterator's skip_meta).
_META = re.compile(r"__[^/]*__($|/)")


def _webdataset():
    try:
        import webdataset
    except ImportError:
        raise ImportError("webdataset: reading tar shards needs the webdataset package: "
                          "pip install 'cwarp[webdataset]' (or pip install webdataset)") from None
    return webdataset


def expand_shards(pattern: str) -> List[str]:
    """The shard files of a brace pattern (webdataset's expansion) or of a folder (its *.tar, sorted)."""
    if os.path.isdir(pattern):
        urls = sorted(glob.glob(os.path.join(glob.escape(pattern), "*.tar")))
        if not urls:
            raise ValueError(f"webdataset: folder {pattern} holds no .tar shard")
        return urls
    from webdataset.shardlists import expand_urls

    _webdataset()
    urls = expand_urls(pattern)
    missing = [u for u in urls if not os.path.isfile(u)]
    if missing:
        raise FileNotFoundError(f"webdataset: {len(missing)} of the {len(urls)} shards of {pattern} do not exist "
                                f"(first: {missing[0]}); shards must be local .tar files")
    return urls


@dataclasses.dataclass
class ShardIndex:
    """What a shard's headers tell: its samples, whether each has .cls, whether any has .json."""
    samples: int
    labelled: bool
    landmarks: bool


def index_shard(path: str) -> ShardIndex:
    """Count a shard's samples as webdataset groups them, from the tar headers alone.

    ValueError naming the shard when it is not a tar file or is truncated.
    """
    from webdataset.tariterators import base_plus_ext

    size = os.path.getsize(path)
    samples, labelled, landmarks = 0, True, False
    current, has_cls = None, False
    try:
        with tarfile.open(path, "r:") as tar:
            for member in tar:
                if member.offset_data + member.size > size:
                    raise ValueError(f"webdataset: shard {path} is truncated: {member.name} ends past the end of "
                                     f"the file")
                name = member.name
                if not member.isreg() or ("/" not in name and name.startswith("__") and name.endswith("__")) \
                        or _META.match(name):
                    continue
                prefix, suffix = base_plus_ext(name)
                if prefix is None:
                    continue
                if prefix != current:
                    if current is not None:
                        labelled &= has_cls
                    current, has_cls = prefix, False
                    samples += 1
                suffix = suffix.lower()
                has_cls |= suffix == "cls"
                landmarks |= suffix == "json"
            end = tar.offset
        # tarfile takes a file cut inside a header for the end of the archive; a whole one ends with two
        # zero blocks.
        with open(path, "rb") as f:
            f.seek(end)
            if f.read(2 * tarfile.BLOCKSIZE) != bytes(2 * tarfile.BLOCKSIZE):
                raise ValueError(f"webdataset: shard {path} is truncated: it ends without the end-of-archive "
                                 f"blocks after its last whole member")
    except tarfile.TarError as err:
        raise ValueError(f"webdataset: shard {path} is not a readable tar file ({one_line(err)})") from None
    if current is not None:
        labelled &= has_cls
    return ShardIndex(samples, labelled and samples > 0, landmarks)


@dataclasses.dataclass(frozen=True)
class ShardPlan:
    """Which shards each (rank, worker) reads and how many full batches it makes (see the module docstring)."""
    world: int
    workers: int          # logical workers per rank (at least 1)
    batch: int            # per rank
    shards: Tuple[Tuple[Tuple[int, ...], ...], ...]       # [rank][worker] -> shard indices
    batches: Tuple[Tuple[int, ...], ...]                  # [rank][worker] -> full batches

    @classmethod
    def make(cls, sizes: Sequence[int], world: int, workers: int, batch: int) -> "ShardPlan":
        workers = max(1, workers)
        shards, batches = [], []
        for rank in range(world):
            mine = list(range(rank, len(sizes), world))
            per_worker = tuple(tuple(mine[w::workers]) for w in range(workers))
            shards.append(per_worker)
            batches.append(tuple(sum(sizes[k] for k in s) // batch for s in per_worker))
        return cls(world, workers, batch, tuple(shards), tuple(batches))

    @property
    def steps_per_epoch(self) -> int:
        return min(sum(b) for b in self.batches)


def worker_seeds(seed: int, epoch: int, rank: int, workers: int) -> List[int]:
    """The seed of each worker's generator (shard order and shuffle buffer) in one epoch of one rank."""
    return [int(np.random.SeedSequence(entropy=seed, spawn_key=(epoch, rank, w)).generate_state(1, np.uint64)[0])
            for w in range(workers)]


class ShardFaces(IterableDataset):
    """Tar shards of faces, streamed batch by batch (see the module docstring).

    ``has_labels`` when every sample has a .cls; ``has_landmarks`` when any has
    a .json. ``set_epoch(...)`` chooses what the next iteration yields: the
    epoch, this process's rank and plan, and where each worker starts.
    """

    def __init__(self, pattern: str, image_size: int, *, channels: int = 3, skip_corrupt: bool = False,
                 num_samples: Optional[int] = None):
        self.pattern = pattern
        self.image_size = int(image_size)
        self.channels = channels
        self.skip_corrupt = skip_corrupt
        self.source = "webdataset"
        if num_samples is not None:
            raise ValueError("webdataset: --num-train takes a subset of a map-style set; to train on fewer "
                             "shards, name fewer in the pattern")
        urls = expand_shards(pattern)
        indices = []
        kept = []
        damaged = []
        for url in urls:
            try:
                indices.append(index_shard(url))
                kept.append(url)
            except ValueError as err:
                if not skip_corrupt:
                    raise
                damaged.append(str(err))
        if damaged:
            warnings.warn(f"webdataset: left out {len(damaged)} of {len(urls)} shards that could not be read "
                          f"(first: {damaged[0]})", stacklevel=2)
        self.urls = kept
        self.sizes = [ix.samples for ix in indices]
        if sum(self.sizes) == 0:
            raise ValueError(f"webdataset: the shards of {pattern} hold no sample")
        self.has_labels = all(ix.labelled for ix, n in zip(indices, self.sizes) if n)
        self.has_landmarks = any(ix.landmarks for ix in indices)
        self.classes = EXPRESSIONS if self.has_labels else ()
        self.gpu_jpeg = False
        self._epoch: Optional[Dict[str, Any]] = None

    def __len__(self) -> int:
        return sum(self.sizes)

    def plan(self, world: int, workers: int, batch: int) -> ShardPlan:
        if len(self.urls) < world:
            raise ValueError(f"webdataset: {len(self.urls)} shard(s) cannot feed {world} processes; each rank "
                             f"reads whole shards, so write at least one shard per process")
        plan = ShardPlan.make(self.sizes, world, workers, batch)
        if plan.steps_per_epoch == 0:
            rank = min(range(world), key=lambda r: sum(plan.batches[r]))
            raise ValueError(f"webdataset: split between {plan.workers} worker(s) a process, the shards of rank "
                             f"{rank} hold no full batch of {batch}; lower --batch-size or --workers, or write "
                             f"more shards")
        return plan

    def set_epoch(self, plan: ShardPlan, seed: int, epoch: int, rank: int, consumed: Sequence[int],
                  first_worker: int) -> None:
        """The next iteration: ``consumed[w]`` batches of logical worker w are skipped, and the round-robin
        starts at worker ``first_worker`` (physical worker p plays logical (p + first_worker) mod N)."""
        self._epoch = dict(plan=plan, seed=seed, epoch=epoch, rank=rank, consumed=tuple(consumed),
                           first=first_worker)

    # ------------------------------------------------------------------ in the worker

    def __iter__(self) -> Iterator[FaceBatch]:
        if self._epoch is None:
            raise RuntimeError("ShardFaces: call set_epoch() before iterating")
        e = self._epoch
        plan: ShardPlan = e["plan"]
        info = get_worker_info()
        physical = info.id if info is not None else 0
        if (info.num_workers if info is not None else 1) != plan.workers:
            raise RuntimeError(f"ShardFaces: the plan has {plan.workers} workers, the DataLoader "
                               f"{info.num_workers if info is not None else 0}")
        worker = (physical + e["first"]) % plan.workers
        shards = list(plan.shards[e["rank"]][worker])
        rng = random.Random(worker_seeds(e["seed"], e["epoch"], e["rank"], plan.workers)[worker])
        rng.shuffle(shards)
        total = plan.batches[e["rank"]][worker]
        done = e["consumed"][worker]
        samples = self._shuffled(self._samples(shards), rng)
        batch: List[Dict[str, Any]] = []
        made = 0
        for sample in samples:
            if made >= total:
                return
            if "__error__" in sample:
                yield self._error(sample["__error__"], worker, made)
                return
            batch.append(sample)
            if len(batch) < plan.batch:
                continue
            if made >= done:   # batches a resumed run consumed before are read, not decoded
                out = self._decode(batch)
                out["position"] = torch.tensor([worker, made], dtype=torch.int64)
                yield out
                if out["error"] is not None:
                    return
            made += 1
            batch = []
        if made < total:
            yield self._error(f"webdataset: worker {worker} of rank {e['rank']} made {made} batches of its shards, "
                              f"whose headers promised {total} (did a shard change during the run?)", worker, made)

    @staticmethod
    def _error(message: str, worker: int, made: int) -> FaceBatch:
        return {"images": None, "labels": None, "landmarks": None, "skipped": [], "error": message,
                "encoded": [], "encoded_at": [], "encoded_names": [],
                "position": torch.tensor([worker, made], dtype=torch.int64)}

    def _samples(self, shards: Sequence[int]) -> Iterator[Dict[str, Any]]:
        from webdataset.tariterators import tarfile_samples

        def reraise(err: BaseException) -> bool:
            raise err

        source = ({"url": self.urls[k]} for k in shards)
        try:
            yield from tarfile_samples(source, handler=reraise)
        except Exception as err:  # noqa: BLE001 - a shard that passed the index at start and then failed
            yield {"__error__": f"webdataset: a shard could not be read: {one_line(err)[:300]} (it was read "
                                f"whole at start: did it change during the run?)"}

    @staticmethod
    def _shuffled(samples: Iterator[Dict[str, Any]], rng: random.Random) -> Iterator[Dict[str, Any]]:
        buffer: List[Dict[str, Any]] = []
        for sample in samples:
            if "__error__" in sample:
                yield sample
                return
            if len(buffer) < SHUFFLE_BUFFER:
                buffer.append(sample)
                continue
            k = rng.randrange(len(buffer))
            yield buffer[k]
            buffer[k] = sample
        rng.shuffle(buffer)
        yield from buffer

    def _decode(self, batch: List[Dict[str, Any]]) -> FaceBatch:
        names = [f"{s.get('__url__', '?')}:{s.get('__key__', '?')}" for s in batch]
        problems: Dict[int, str] = {}
        labels = [self._label(s, names[j], problems, j) for j, s in enumerate(batch)] if self.has_labels else None
        landmarks = None
        if self.has_landmarks:
            landmarks = torch.full((len(batch), NUM_LANDMARKS, 2), float("nan"))
            for j, s in enumerate(batch):
                points = self._landmarks(s, names[j], problems, j)
                if points is not None:
                    landmarks[j] = torch.tensor(points, dtype=torch.float32)

        def read(j: int) -> bytes:
            if j in problems:
                raise ValueError(problems[j])
            key = next((k for k in IMAGE_KEYS if k in batch[j]), None)
            if key is None:
                raise ValueError(f"sample {names[j]} has no image ({', '.join('.' + k for k in IMAGE_KEYS)})")
            return batch[j][key]

        keep = plain_jpeg(landmarks) if self.gpu_jpeg else None
        return decode_batch(names, read, labels, landmarks, channels=self.channels, image_size=self.image_size,
                            skip_corrupt=self.skip_corrupt, source=self.source, keep_jpeg=keep)

    @staticmethod
    def _label(sample: Dict[str, Any], name: str, problems: Dict[int, str], j: int) -> int:
        text = sample.get("cls", b"").decode("utf-8", "replace").strip()
        if text.isdigit() and 0 <= int(text) < len(EXPRESSIONS):
            return int(text)
        problems.setdefault(j, f"sample {name}: .cls {text!r} is not a label 0..{len(EXPRESSIONS) - 1}")
        return UNLABELLED

    @staticmethod
    def _landmarks(sample: Dict[str, Any], name: str, problems: Dict[int, str], j: int):
        if "json" not in sample:
            return None
        try:
            value = json.loads(sample["json"].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            problems.setdefault(j, f"sample {name}: .json is not valid JSON ({one_line(err)})")
            return None
        if not isinstance(value, dict) or "landmarks" not in value:
            return None
        try:
            return parse_landmarks(value["landmarks"], f"sample {name}: .json landmarks")
        except ValueError as err:
            problems.setdefault(j, str(err))
            return None
