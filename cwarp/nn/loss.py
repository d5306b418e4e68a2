"""``cwarp.contrastive_loss`` as an nn.Module."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from cwarp.ops import _checks
from cwarp.ops.contrastive_loss.api import contrastive_loss

__all__ = ["ContraWarpingLoss"]


class ContraWarpingLoss(nn.Module):
    """``contrastive_loss`` as a module: ``loss = ContraWarpingLoss(...)(p, z_pos, z_neg)``."""

    def __init__(self, tau: float = 0.2, byol_weight: float = 0.0, nce_weight: float = 1.0,
                 in_batch: bool = False, reduction: str = "mean", backend: str = "auto") -> None:
        super().__init__()
        if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not (tau > 0 and tau < float("inf")):
            raise ValueError(f"cwarp.ContraWarpingLoss(): expected tau > 0 and finite, got {tau!r}")
        if reduction not in _checks.REDUCTIONS:
            raise ValueError(f"cwarp.ContraWarpingLoss(): unknown reduction {reduction!r}; expected one of "
                             f"{', '.join(map(repr, _checks.REDUCTIONS))}")
        self.tau = float(tau)
        self.byol_weight = float(byol_weight)
        self.nce_weight = float(nce_weight)
        self.in_batch = bool(in_batch)
        self.reduction = reduction
        self.backend = backend

    def forward(self, p: torch.Tensor, z_pos: torch.Tensor, z_neg: Optional[torch.Tensor] = None) -> torch.Tensor:
        return contrastive_loss(p, z_pos, z_neg, tau=self.tau, byol_weight=self.byol_weight,
                                nce_weight=self.nce_weight, in_batch=self.in_batch, reduction=self.reduction,
                                backend=self.backend)

    def extra_repr(self) -> str:
        return (f"tau={self.tau}, byol_weight={self.byol_weight}, nce_weight={self.nce_weight}, "
                f"in_batch={self.in_batch}, reduction={self.reduction!r}")
