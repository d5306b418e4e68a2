"""The batches each training step trains on, and the position a checkpoint resumes them from.

``make_feed`` gives the loop its batches: ``MemoryFeed`` slices the in-memory
tensor (the sampler's order), ``FileFeed`` and ``ShardFeed`` receive batches
decoded by DataLoader worker processes (cwarp.data.batch), pinned when the
training device is CUDA. Every feed tells its position for a checkpoint and
resumes from it exactly (docs/api.md, "Streamed training data").
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple

import torch
from torch import Tensor

from cwarp.train.config import RunConfig, default_workers
from cwarp.train.training_data import DECODER_CHATTER, DataError, TrainingData

__all__ = ["make_feed", "MemoryFeed", "FileFeed", "ShardFeed", "PREFETCH"]

# Batches each DataLoader worker decodes ahead of the step that needs them.
PREFETCH = 2


def _quiet_worker(worker_id: int) -> None:
    """A DataLoader worker's start: Ctrl-C and SIGTERM are for the training process alone (it stops cleanly
    after the current step and ends its workers), and the decoders' own chatter about a damaged file is
    dropped (the batch reports the file in one line where it matters)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _filter_stderr()


def _filter_stderr() -> None:
    """Pass this process's fd 2 through a thread that drops DECODER_CHATTER lines."""
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    original = os.dup(2)
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump() -> None:
        with os.fdopen(read_end, "rb") as lines:
            for line in lines:
                if not line.decode("utf-8", "replace").startswith(DECODER_CHATTER):
                    os.write(original, line)

    threading.Thread(target=pump, name="cwarp-stderr-filter", daemon=True).start()


class _Skips:
    """The images left out (--skip-corrupt) in the epoch so far: a count and the first reason."""

    def __init__(self):
        self.count, self.first = 0, None

    def add(self, reasons: Sequence[str]) -> None:
        if reasons:
            self.count += len(reasons)
            self.first = self.first or reasons[0]

    def state(self) -> Dict[str, Any]:
        return {"count": self.count, "first": self.first}

    def restore(self, state: Optional[Dict[str, Any]]) -> None:
        self.count, self.first = (state["count"], state["first"]) if state else (0, None)

    def warning(self, epoch: int, final: bool) -> Optional[str]:
        """The epoch's one warning line, if any image was left out; the count starts again."""
        if not self.count:
            return None
        when = "" if final else " so far"
        line = (f"epoch {epoch + 1}: skipped {self.count} unreadable image(s){when}, each replaced in its batch "
                f"by a copy of a readable one (first: {self.first})")
        if final:
            self.count, self.first = 0, None
        return line


class MemoryFeed:
    """The training set in memory: each step's batch is a slice of the uint8 tensor, in the order of a
    DistributedSampler (each rank a disjoint part, seeded by --seed and the epoch)."""

    def __init__(self, data: TrainingData, cfg: RunConfig, info, local_batch: int):
        from torch.utils.data.distributed import DistributedSampler

        self.images, self.labels, self.landmarks = data.images, data.labels, data.landmarks
        self.local_batch = local_batch
        self.sampler = DistributedSampler(range(len(self.images)), num_replicas=info.world_size, rank=info.rank,
                                          shuffle=True, seed=cfg.seed, drop_last=True)
        self.steps_per_epoch = len(self.sampler) // local_batch

    def epoch(self, epoch: int, first: int) -> Iterator[Tuple[Tensor, Tensor, Optional[Tensor]]]:
        self.sampler.set_epoch(epoch)
        order = torch.tensor(list(self.sampler), dtype=torch.long)
        b = self.local_batch
        for s in range(first, self.steps_per_epoch):
            idx = order[s * b:(s + 1) * b]
            yield self.images[idx], self.labels[idx], (self.landmarks[idx] if self.landmarks is not None else None)

    def state(self, resume_at: Tuple[int, int]) -> Dict[str, Any]:
        return {"kind": "memory", "num_samples": len(self.images)}

    def restore(self, state: Optional[Dict[str, Any]], resume_at: Tuple[int, int]) -> Optional[str]:
        return _size_changed(state, len(self.images))

    def warning(self, epoch: int, final: bool) -> Optional[str]:
        return None


def _size_changed(state: Optional[Dict[str, Any]], n: int) -> Optional[str]:
    if state and state.get("num_samples") not in (None, n):
        return (f"--resume: the training set has {n} images now and had {state['num_samples']} when the "
                f"checkpoint was written; the rest of this epoch follows the new set's order")
    return None


class _Streamed:
    """What the two streaming feeds share: the DataLoader's settings, batch checks, the GPU decode."""

    def __init__(self, data: TrainingData, cfg: RunConfig, info, device: torch.device, local_batch: int):
        self.dataset = data.dataset
        self.local_batch = local_batch
        self.device = device
        self.workers = default_workers() if cfg.data.workers is None else cfg.data.workers
        self.gpu_decode = cfg.data.decode_device == "cuda"
        self.dataset.gpu_jpeg = self.gpu_decode
        self.skips = _Skips()

    def _loader(self, dataset, **kw):
        from torch.utils.data import DataLoader

        from cwarp.data.batch import collate_batch

        w = self.workers
        # A private generator: the loader's seed draw must not move the training's global RNG.
        return DataLoader(dataset, num_workers=w, collate_fn=collate_batch, pin_memory=self.device.type == "cuda",
                          worker_init_fn=_quiet_worker if w else None, prefetch_factor=PREFETCH if w else None,
                          generator=torch.Generator(), **kw)

    def _unpack(self, batch: Dict[str, Any]) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
        if batch["error"] is not None:
            raise DataError(batch["error"])
        self.skips.add(batch["skipped"])
        images = batch["images"]
        if batch["encoded"]:
            images = self._decode_on_device(batch)
        labels = batch["labels"] if self.dataset.has_labels else None
        return images, labels, batch["landmarks"]

    def _decode_on_device(self, batch: Dict[str, Any]) -> Tensor:
        """The batch's images on the GPU, its JPEGs decoded there by nvJPEG and resized as on the CPU.

        When nvJPEG refuses the batch, each of its JPEGs is decoded on the
        CPU instead, so that a bad one is named (or, with --skip-corrupt,
        replaced by a copy of the batch's first image).
        """
        from torchvision.io import ImageReadMode, decode_jpeg

        from cwarp.data.common import resize_uint8
        from cwarp.data.decode import CorruptImageError, decode_bytes, to_channels

        channels, size = self.dataset.channels, self.dataset.image_size
        images = batch["images"].to(self.device, non_blocking=True)
        try:
            decoded = decode_jpeg(batch["encoded"], mode=ImageReadMode.RGB, device=self.device)
        except RuntimeError:
            decoded = []
            for data, name in zip(batch["encoded"], batch["encoded_names"]):
                try:
                    decoded.append(decode_bytes(data.numpy().tobytes(), name, 3, size)[0].to(self.device))
                except CorruptImageError as e:
                    if not self.dataset.skip_corrupt:
                        raise DataError(f"{self.dataset.source}: {e}") from None
                    self.skips.add([f"{self.dataset.source}: {e}"])
                    decoded.append(None)
        for j, image in zip(batch["encoded_at"], decoded):
            if image is None:
                images[j] = images[0]
                continue
            images[j] = resize_uint8(to_channels(image, channels)[None], size)[0]
        return images

    def _batches(self, loader) -> Iterator[Dict[str, Any]]:
        """The loader's batches, with a worker that died (a decoder crash, the OOM killer) as one line."""
        it = iter(loader)
        while True:
            try:
                batch = next(it)
            except StopIteration:
                return
            except RuntimeError as e:
                if "DataLoader worker" not in str(e):
                    raise
                raise DataError(f"a data loader worker process died ({' '.join(str(e).split())[:200]}): a "
                                f"decoder crashed or the machine ran out of memory; the last checkpoint is "
                                f"kept") from None
            yield batch

    def warning(self, epoch: int, final: bool) -> Optional[str]:
        return self.skips.warning(epoch, final)


class FileFeed(_Streamed):
    """A StreamedFaces: the DistributedSampler's order (as MemoryFeed's), cut into batches that the
    workers decode; a resumed epoch starts at its step."""

    def __init__(self, data: TrainingData, cfg: RunConfig, info, device: torch.device, local_batch: int):
        from torch.utils.data.distributed import DistributedSampler

        super().__init__(data, cfg, info, device, local_batch)
        n = len(self.dataset)
        self.sampler = DistributedSampler(range(n), num_replicas=info.world_size, rank=info.rank, shuffle=True,
                                          seed=cfg.seed, drop_last=True)
        self.steps_per_epoch = len(self.sampler) // local_batch
        self.seed = cfg.seed

    def epoch(self, epoch: int, first: int) -> Iterator[Tuple[Tensor, Optional[Tensor], Optional[Tensor]]]:
        from cwarp.data.streamed import BatchReader

        self.sampler.set_epoch(epoch)
        order = list(self.sampler)
        b = self.local_batch
        batches = [order[s * b:(s + 1) * b] for s in range(first, self.steps_per_epoch)]
        for batch in self._batches(self._loader(BatchReader(self.dataset), batch_sampler=batches)):
            yield self._unpack(batch)

    def state(self, resume_at: Tuple[int, int]) -> Dict[str, Any]:
        return {"kind": "files", "num_samples": len(self.dataset), "sampler_seed": self.seed,
                "resume_at": list(resume_at), "skipped": self.skips.state() if resume_at[1] else None}

    def restore(self, state: Optional[Dict[str, Any]], resume_at: Tuple[int, int]) -> Optional[str]:
        if state and resume_at[1]:
            self.skips.restore(state.get("skipped"))
        return _size_changed(state, len(self.dataset))


class ShardFeed(_Streamed):
    """A ShardFaces: each worker streams its shards (cwarp.data.shards); the feed follows each batch's
    ``position`` so that a checkpoint records where every worker is."""

    def __init__(self, data: TrainingData, cfg: RunConfig, info, device: torch.device, local_batch: int):
        super().__init__(data, cfg, info, device, local_batch)
        self.rank, self.seed = info.rank, cfg.seed
        try:
            self.plan = self.dataset.plan(info.world_size, self.workers, local_batch)
        except ValueError as e:
            raise DataError(f"--data {cfg.data.data}: {e}") from None
        self.steps_per_epoch = self.plan.steps_per_epoch
        self._reset()

    def _reset(self) -> None:
        self.consumed = [0] * self.plan.workers
        self.next_worker = 0

    def epoch(self, epoch: int, first: int) -> Iterator[Tuple[Tensor, Optional[Tensor], Optional[Tensor]]]:
        if first == 0:
            self._reset()
        elif sum(self.consumed) != first:
            raise DataError(f"--resume: the checkpoint's webdataset positions add up to {sum(self.consumed)} "
                            f"batches, its step in the epoch is {first}")
        self.dataset.set_epoch(self.plan, self.seed, epoch, self.rank, self.consumed, self.next_worker)
        step = first
        for batch in self._batches(self._loader(self.dataset, batch_size=None)):
            if step >= self.steps_per_epoch:
                break
            worker, made = (int(v) for v in batch["position"])
            unpacked = self._unpack(batch)
            self.consumed[worker] = made + 1
            self.next_worker = (worker + 1) % self.plan.workers
            step += 1
            yield unpacked
        if step < self.steps_per_epoch:
            raise DataError(f"webdataset: the shards gave {step} of the {self.steps_per_epoch} batches of epoch "
                            f"{epoch + 1} that their headers promised")

    def state(self, resume_at: Tuple[int, int]) -> Dict[str, Any]:
        from cwarp.data.shards import worker_seeds

        middle = resume_at[1] > 0
        return {"kind": "shards", "num_samples": len(self.dataset), "workers": self.plan.workers,
                "resume_at": list(resume_at),
                "worker_seeds": worker_seeds(self.seed, resume_at[0], self.rank, self.plan.workers),
                "batches_read": list(self.consumed) if middle else [0] * self.plan.workers,
                "next_worker": self.next_worker if middle else 0,
                "skipped": self.skips.state() if middle else None}

    def restore(self, state: Optional[Dict[str, Any]], resume_at: Tuple[int, int]) -> Optional[str]:
        if not resume_at[1]:
            return _size_changed(state, len(self.dataset))
        if not state or state.get("kind") != "shards":
            raise DataError("--resume: the checkpoint does not say where each webdataset worker stopped "
                            "mid-epoch")
        if state["workers"] != self.plan.workers:
            raise DataError(f"--workers: the checkpoint streamed its shards through {state['workers']} worker(s) a "
                            f"process and this run has {self.plan.workers}; resume with --workers "
                            f"{state['workers']} (a worker's shards depend on the count)")
        if state["num_samples"] != len(self.dataset):
            raise DataError(f"--resume: the shards hold {len(self.dataset)} samples now and held "
                            f"{state['num_samples']} when the checkpoint was written; an exact resume mid-epoch "
                            f"needs the same shards")
        self.consumed = list(state["batches_read"])
        self.next_worker = int(state["next_worker"])
        self.skips.restore(state.get("skipped"))
        return None


def make_feed(data: TrainingData, cfg: RunConfig, info, device: torch.device, local_batch: int):
    """The feed of a run's training data (see the module docstring)."""
    from cwarp.data.shards import ShardFaces

    if data.in_memory:
        return MemoryFeed(data, cfg, info, local_batch)
    if isinstance(data.dataset, ShardFaces):
        return ShardFeed(data, cfg, info, device, local_batch)
    return FileFeed(data, cfg, info, device, local_batch)
