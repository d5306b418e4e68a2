"""cwarp-train's online evaluation (--eval-every): is the run learning?

Every N steps and at the last one, the online backbone embeds a fixed bank of
training images and a held-out labelled set, both un-augmented and
preprocessed as cwarp-probe does (``cwarp.eval.probe.extract_features``);
each held-out image is classified by a weighted kNN vote of the bank
(cwarp-probe's, on features standardized by the bank's statistics), and
optionally by cwarp-probe's linear probe fitted on the bank.

By default the bank is a fixed subset of the training set and the held-out
set is never the test split and never a training image: the data set's
validation split where it has one (synthetic: its own random stream;
fer2013: PublicTest; imagefolder: PATH/val/), else the training split's
images that --num-train leaves out (rafdb, imagefolder without val/).

With --eval-data PATH --eval-format FORMAT (a labelled set apart from the
training set, e.g. RAF-DB while pretraining on unlabelled faces) both come
from that set instead: the bank from its train split (--eval-bank images,
drawn with --data-seed), the held-out images from its validation split, or,
where it has none, from its train images outside the bank. Its test split
is never read, so a final cwarp-probe on it stays a clean measurement.

Monitoring must not change the run: features come in eval mode under
no_grad (BatchNorm's running statistics stay as they are), the backbone goes
back to its mode, and the global RNG states are restored afterwards, so a run
with --eval-every trains exactly as one without it.
"""
from __future__ import annotations

import os
import time
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from cwarp.data import TensorFaces, build_dataset
from cwarp._constants import SYNTHETIC_FORMATS
from cwarp.data.common import FaceDataset
from cwarp.eval import probe
from cwarp.train.config import RunConfig

__all__ = ["OnlineEvaluator", "evaluation_sets", "heldout_split", "separate_evaluation_sets", "bank_indices",
           "FEATURE_BATCH"]

# Images per forward pass while extracting features.
FEATURE_BATCH = 256


def _has_validation_split(format: str, path: Optional[str]) -> bool:
    return format in SYNTHETIC_FORMATS + ("fer2013",) or (
        format == "imagefolder" and path is not None and os.path.isdir(os.path.join(path, "val")))


def heldout_split(cfg: RunConfig) -> FaceDataset:
    """The labelled images the online evaluation scores (see the module docstring); ValueError when there are none."""
    d, size = cfg.data, cfg.evaluation.eval_size
    if _has_validation_split(d.format, d.data):
        return build_dataset(d.format, d.data, "val", d.image_size, num_samples=size, seed=d.data_seed,
                             skip_corrupt=d.skip_corrupt)
    if d.num_train is None:
        raise ValueError(f"{d.format} has no validation split{' (no val/ folder)' if d.format == 'imagefolder' else ''}"
                         f" and the run trains on the whole train split, so no labelled image is held out; pass "
                         f"--num-train below the split's size (the rest is held out) or --eval-every 0")
    try:
        return build_dataset(d.format, d.data, "train", d.image_size, num_samples=size, seed=d.data_seed,
                             skip_corrupt=d.skip_corrupt, outside_subset=d.num_train)
    except ValueError as err:
        raise ValueError(f"{err}: lower --num-train so that some training-split images are held out, or pass "
                         f"--eval-every 0") from None


def separate_evaluation_sets(cfg: RunConfig) -> Tuple[FaceDataset, FaceDataset]:
    """(bank, held-out) of --eval-data / --eval-format (see the module docstring); ValueError naming them."""
    d, ev = cfg.data, cfg.evaluation
    fmt, path = ev.eval_format, ev.eval_data
    where = f"the evaluation set (--eval-format {fmt}{f' --eval-data {path}' if path is not None else ''})"
    common = dict(seed=d.data_seed, skip_corrupt=d.skip_corrupt)
    try:
        bank = build_dataset(fmt, path, "train", d.image_size, num_samples=ev.eval_bank, **common)
        if _has_validation_split(fmt, path):
            held = build_dataset(fmt, path, "val", d.image_size, num_samples=ev.eval_size, **common)
        else:
            held = build_dataset(fmt, path, "train", d.image_size, num_samples=ev.eval_size,
                                 outside_subset=ev.eval_bank, **common)
    except (ValueError, OSError, RuntimeError) as err:
        hint = ""
        if "leaves none out" in str(err):
            hint = (f"; {fmt} has no validation split here, so its held-out images are the train images outside "
                    f"the --eval-bank subset: lower --eval-bank below the train split's size")
        raise ValueError(f"{where}: {' '.join(str(err).split())}{hint}") from None
    return bank, held


def evaluation_sets(cfg: RunConfig, num_train: int, read_train: Callable[[Tensor], Tuple[Tensor, Tensor]],
                    classes: Sequence[str]) -> Tuple[FaceDataset, FaceDataset]:
    """(bank, held-out) of a run: from --eval-data when given, else a fixed subset of the training set and
    heldout_split(cfg). ``read_train(indices)`` gives the training set's (uint8 images, labels) at those
    indices, of ``num_train``; it is called only without --eval-data."""
    if cfg.evaluation.eval_format is not None:
        return separate_evaluation_sets(cfg)
    images, labels = read_train(bank_indices(num_train, cfg.evaluation.eval_bank, cfg.data.data_seed))
    return TensorFaces(images, labels, classes), heldout_split(cfg)


def bank_indices(n: int, size: int, seed: int) -> Tensor:
    """A fixed, sorted subset of ``size`` of n training indices, from its own generator (no global RNG)."""
    if size >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:size].sort().values


class OnlineEvaluator:
    """The bank and the held-out set of one run (``evaluation_sets``), and ``evaluate(backbone, step)`` on them.

    ``cfg`` is the trainer's config (with the views' mean/std); ``bank`` and
    ``heldout`` are labelled sets of the same classes, read into memory once.
    """

    def __init__(self, cfg: RunConfig, bank: FaceDataset, heldout: FaceDataset, device: torch.device):
        started = time.perf_counter()
        self.cfg, self.device = cfg, device
        ev = cfg.evaluation
        self.every = ev.eval_every
        if tuple(heldout.classes) != tuple(bank.classes):
            raise ValueError(f"the held-out images' classes {tuple(heldout.classes)} differ from the bank's "
                             f"{tuple(bank.classes)}")
        # In memory once: every evaluation then slices them instead of decoding or indexing image by image.
        self.bank, self.heldout = (TensorFaces(*part.tensors()[:2], part.classes) for part in (bank, heldout))
        self.num_classes = len(bank.classes)
        self.k = min(ev.eval_knn_k, len(self.bank))
        self.seconds = time.perf_counter() - started   # setup, then every evaluation added

    def due(self, step: int, total_steps: int) -> bool:
        return step % self.every == 0 or step == total_steps

    def _features(self, backbone: nn.Module, dataset: FaceDataset) -> Tensor:
        v = self.cfg.views
        return probe.extract_features(backbone, dataset, FEATURE_BATCH, self.device, mean=v.mean, std=v.std,
                                      progress=False)

    def evaluate(self, backbone: nn.Module, step: int) -> Dict[str, Any]:
        """{step, knn_acc[, linear_acc], eval_bank, eval_size, eval_seconds} of the backbone now."""
        started = time.perf_counter()
        # Whatever the evaluation draws from the global RNGs (a backbone's layer, a data loader's seed) must
        # not shift the training's stream.
        cuda = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda), torch.no_grad():
            bank_x = self._features(backbone, self.bank)
            held_x = self._features(backbone, self.heldout)
        bank_x, held_x = probe.standardize(bank_x, held_x)
        bank_y, held_y = self.bank.labels, self.heldout.labels
        row: Dict[str, Any] = {"step": step}
        with probe.one_thread():
            knn, _ = probe.neighbour_scores(bank_x, bank_y, held_x, held_y, self.num_classes, k=self.k,
                                            temperature=self.cfg.evaluation.eval_knn_temperature)
            row["knn_acc"] = (knn == held_y).double().mean().item()
            if self.cfg.evaluation.eval_linear:
                linear, _, _ = probe.linear_probe(bank_x, bank_y, held_x, self.num_classes, seed=self.cfg.seed)
                row["linear_acc"] = (linear == held_y).double().mean().item()
        seconds = time.perf_counter() - started
        self.seconds += seconds
        row.update(eval_bank=len(self.bank), eval_size=len(self.heldout), eval_seconds=seconds)
        return row
