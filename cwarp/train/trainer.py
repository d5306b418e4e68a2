"""One process's training state and step: the model, optimizer, schedule, views and their RNG.

``Trainer`` holds what a step needs and what a checkpoint saves: the
method's networks (``cwarp.train.methods``), the optimizer and its
warm-up-cosine schedule, the ``ContraWarpAugment`` that renders the views on
the training device from an explicit, seeded generator, and the autocast
context. The loop that drives it over epochs, with its logging and
checkpoints, is ``cwarp.train.loop``.
"""
from __future__ import annotations

import random
from contextlib import nullcontext
from typing import Any, Dict, Optional

import torch
from torch import nn

from cwarp.models import build_backbone, convert_sync_batchnorm
from cwarp.train import distributed as cdist
from cwarp.train.config import RunConfig
from cwarp.train.methods import build_method
from cwarp.train.optim import WarmupCosine, build_optimizer

__all__ = ["Trainer", "build_augment", "channels_last", "autocast_dtype"]


def autocast_dtype(precision: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype of the networks, or None for plain fp32.

    "auto" is bf16 on CUDA and fp32 on the CPU, where bf16 is opt-in: faster
    on CPUs with native bf16, but its features probed worse at the demo's
    budget (docs/experiments.md, "Other levers"). The loss always runs in fp32.
    """
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def _rng_state(aug_gen: torch.Generator) -> Dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "augment": aug_gen.get_state(),
             "python": repr(random.getstate())}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Dict[str, Any], aug_gen: torch.Generator) -> None:
    import ast

    torch.set_rng_state(state["torch"])
    aug_gen.set_state(state["augment"])
    random.setstate(ast.literal_eval(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def build_augment(cfg: RunConfig, num_negatives: Optional[int] = None):
    """The ContraWarpAugment of a run's config (docs/api.md)."""
    import cwarp

    v, n = cfg.views, cfg.negatives
    s = v.jitter_strength
    return cwarp.ContraWarpAugment(
        size=cfg.data.image_size, crop_scale=tuple(v.crop_scale), rotation=v.rotation,
        brightness=0.4 * s, contrast=0.4 * s, saturation=0.2 * s, hue=0.1 * s, grayscale_p=v.grayscale_p,
        num_negatives=n.num_negatives if num_negatives is None else num_negatives,
        warps_per_negative=n.warps_per_negative, warp_radius=tuple(n.warp_radius),
        warp_magnitude=tuple(n.warp_magnitude), kind=n.warp_kind, warp_centers=n.warp_centers,
        negative_kind=n.negative_kind)


def channels_last(cfg: RunConfig, device: torch.device) -> bool:
    """Whether the networks run in channels_last: --memory-format, auto meaning on CUDA only (on the CPU,
    torch's BatchNorm in channels_last computes its statistics less accurately; docs/experiments.md)."""
    fmt = cfg.memory_format
    return fmt == "channels_last" or (fmt == "auto" and device.type == "cuda")


class Trainer:
    """Everything one process needs for training; ``train()`` drives it.

    Split into ``make_views`` (augmentation) and ``train_step`` (forward,
    loss, backward, optimizer, EMA) so benchmarks can time the two apart.
    ``cfg`` must be validated; ``self.cfg`` adds what the trainer derives
    (in_channels, the views' mean and std), as checkpoints save it.
    """

    def __init__(self, cfg: RunConfig, info: cdist.DistInfo, device: torch.device,
                 in_channels: int, steps_per_epoch: int, num_classes: Optional[int] = None):
        self.info, self.device = info, device
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = cfg.optimisation.epochs * steps_per_epoch
        self.method = build_method(cfg, info)
        self.supervised = cfg.method == "supervised"
        # Same initial weights on every rank (DDP also broadcasts rank 0's).
        torch.manual_seed(cfg.seed)
        model = self.method.build_model(build_backbone(cfg.arch, in_channels, cfg.data.image_size), num_classes)
        if cfg.byol.sync_bn:
            model = convert_sync_batchnorm(model, cfg.arch)
        model = model.to(device)
        self.channels_last = channels_last(cfg, device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if cfg.compile:
            # In place (nn.Module.compile): parameters, buffers and state_dict keys stay the module's own.
            for name in ("backbone", "target_backbone"):
                if hasattr(model, name):
                    getattr(model, name).compile()
        self.model = model
        self.ddp = None
        if info.enabled:
            self.ddp = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)
        o = cfg.optimisation
        self.optimizer = build_optimizer(o.optimizer, model.online_parameters(), lr=o.lr,
                                         weight_decay=o.weight_decay, momentum=o.momentum)
        self.schedule = WarmupCosine(self.optimizer, self.total_steps, round(o.warmup_epochs * steps_per_epoch),
                                     o.final_lr_ratio)
        self.augment = build_augment(cfg).to(device)
        # The probe normalizes its inputs with the checkpoint config's mean/std.
        self.cfg = cfg.replace(in_channels=int(in_channels), mean=list(self.augment.mean),
                               std=list(self.augment.std))
        self.method.cfg = self.cfg
        # Augmentation randomness: one explicit CPU generator per rank (the
        # sampler draws on the generator's device, so runs agree across devices).
        self.aug_gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 7919 * info.rank + 1)
        self.step = 0
        self.amp_dtype = autocast_dtype(cfg.precision, device)
        self.autocast = (torch.autocast(device.type, dtype=self.amp_dtype) if self.amp_dtype is not None
                         else nullcontext())

    def make_views(self, images: torch.Tensor, landmarks: Optional[torch.Tensor]):
        images = images.to(self.device, non_blocking=True)
        if landmarks is not None:
            landmarks = landmarks.to(self.device, non_blocking=True)
        views = self.augment(images, landmarks=landmarks, generator=self.aug_gen)
        pos1, pos2, neg = views.pos1, views.pos2, views.negatives
        neg = neg if neg is not None and neg.shape[1] > 0 else None
        if self.channels_last:
            cl = torch.channels_last
            pos1, pos2 = pos1.contiguous(memory_format=cl), pos2.contiguous(memory_format=cl)
            if neg is not None:   # (B, N, C, S, S) whose flatten(0, 1) is channels_last
                neg = neg.flatten(0, 1).contiguous(memory_format=cl).unflatten(0, neg.shape[:2])
        return pos1, pos2, neg

    def train_step(self, pos1, pos2, neg, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """One optimisation step; returns the (detached) loss tensor, no host sync.

        ``labels`` (B,) are used by --method supervised only, which trains on
        view 1 alone."""
        net = self.ddp if self.ddp is not None else self.model
        net.train()
        loss = self.method.step_loss(net, pos1, pos2, neg, labels, self.autocast)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.schedule.step()
        self.method.after_step(self.model, self.step, self.total_steps)
        self.step += 1
        return loss.detach()

    def state_dict(self, epoch: int, step_in_epoch: int) -> Dict[str, Any]:
        return {
            "config": self.cfg.to_flat(),
            "backbone": self.model.backbone.state_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "epoch": epoch, "step_in_epoch": step_in_epoch, "step": self.step,
            "rng": _rng_state(self.aug_gen),
            "world_size": self.info.world_size,
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.step = int(state["step"])
        _set_rng_state(state["rng"], self.aug_gen)
