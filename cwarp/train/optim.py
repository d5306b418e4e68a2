"""Optimizers (LARS, SGD, AdamW) and the warmup + cosine learning-rate schedule."""
from __future__ import annotations

import math
from typing import Iterable, List, Tuple

import torch
from torch import nn

from cwarp.train.config import OPTIMIZERS

__all__ = ["LARS", "WarmupCosine", "build_optimizer", "OPTIMIZERS"]



class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (You et al., 2017).

    For each parameter with ``lars_adapt`` set in its group, the update is scaled
    by ``trust * |w| / |g + wd * w|``. Biases and normalization parameters go in
    a group with ``lars_adapt=False`` and no weight decay, as in BYOL.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 trust_coefficient: float = 0.001, eps: float = 1e-8):
        if lr <= 0:
            raise ValueError(f"LARS: lr must be > 0, got {lr}")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                        trust_coefficient=trust_coefficient, eps=eps, lars_adapt=True)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if group["weight_decay"]:
                    g = g.add(p, alpha=group["weight_decay"])
                if group["lars_adapt"]:
                    w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(g)
                    # Tensor math, no .item(): the scale stays on the device.
                    trust = group["trust_coefficient"] * w_norm / (g_norm + group["eps"])
                    scale = torch.where((w_norm > 0) & (g_norm > 0), trust, torch.ones_like(trust))
                    g = g * scale
                state = self.state[p]
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = g.clone()
                else:
                    buf.mul_(group["momentum"]).add_(g)
                p.add_(buf, alpha=-group["lr"])
        return loss


def _split_decay(named: Iterable[Tuple[str, nn.Parameter]]) -> Tuple[List[nn.Parameter], List[nn.Parameter]]:
    decay, no_decay = [], []
    for _, p in named:
        if not p.requires_grad:
            continue
        # 1-D tensors are biases and BN affine parameters: no decay, no LARS.
        (no_decay if p.ndim <= 1 else decay).append(p)
    return decay, no_decay


def build_optimizer(name: str, named_params, *, lr: float, weight_decay: float,
                    momentum: float = 0.9) -> torch.optim.Optimizer:
    """``name`` in OPTIMIZERS; weight decay (and LARS scaling) skip 1-D parameters."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    decay, no_decay = _split_decay(named_params)
    if name == "lars":
        groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0, "lars_adapt": False}]
        return LARS(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)


class WarmupCosine:
    """Linear warmup from 0 to base lr over ``warmup_steps``, then cosine to ``final_ratio`` x base.

    Sets every group's lr from its ``initial_lr``; state is the step count, so a
    resumed run continues on the same curve.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int,
                 final_ratio: float = 0.0):
        if total_steps < 1:
            raise ValueError(f"WarmupCosine: total_steps must be >= 1, got {total_steps}")
        self.optimizer = optimizer
        self.total_steps = int(total_steps)
        self.warmup_steps = int(min(max(warmup_steps, 0), total_steps))
        self.final_ratio = float(final_ratio)
        self.step_count = 0
        for g in optimizer.param_groups:
            g.setdefault("initial_lr", g["lr"])
        self._apply()

    def factor(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = max(self.total_steps - self.warmup_steps, 1)
        t = min(step - self.warmup_steps, span) / span
        return self.final_ratio + (1.0 - self.final_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))

    def _apply(self) -> None:
        f = self.factor(self.step_count)
        for g in self.optimizer.param_groups:
            g["lr"] = g["initial_lr"] * f

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    def get_lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def state_dict(self) -> dict:
        return {"step_count": self.step_count, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "final_ratio": self.final_ratio}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
        self.total_steps = int(state["total_steps"])
        self.warmup_steps = int(state["warmup_steps"])
        self.final_ratio = float(state["final_ratio"])
        self._apply()
