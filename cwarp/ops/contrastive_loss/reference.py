"""The plain-PyTorch oracle of cwarp.contrastive_loss: normalize, einsum, cat, logsumexp.

Written for clarity, not speed; it is also the "eager" baseline the
benchmarks time the fused kernels against.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

__all__ = ["contrastive_loss"]


def contrastive_loss(p: torch.Tensor, z_pos: torch.Tensor, z_neg: Optional[torch.Tensor] = None, *,
                     tau: float = 0.2, byol_weight: float = 0.0, nce_weight: float = 1.0,
                     in_batch: bool = False, reduction: str = "mean",
                     compute_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """The ContraWarping loss written as a user would: normalize, einsum, cat, logsumexp.

    Computed in ``compute_dtype`` (the input dtype when None; the tests pass
    float64 to get the oracle) and returned in ``p.dtype``. In ``in_batch``
    mode this builds the full (B, B) similarity matrix: it is the baseline the
    tiled kernels are measured against, not a model to follow.
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"cwarp.reference.contrastive_loss(): unknown reduction {reduction!r}; "
                         "expected one of 'mean', 'sum', 'none'")
    dtype = p.dtype if compute_dtype is None else compute_dtype
    p_hat = F.normalize(p.to(dtype), dim=-1, eps=1e-12)
    zp_hat = F.normalize(z_pos.to(dtype), dim=-1, eps=1e-12)
    s_pos = torch.einsum("bd,bd->b", p_hat, zp_hat)
    logits = [s_pos[:, None]]
    if z_neg is not None:
        zn_hat = F.normalize(z_neg.to(dtype), dim=-1, eps=1e-12)
        logits.append(torch.einsum("bd,bnd->bn", p_hat, zn_hat))
    if in_batch:
        sim = torch.einsum("id,kd->ik", p_hat, zp_hat)
        # Row i's own positive is already the first logit: mask it out of the
        # in-batch block so it is counted once (exp(-inf) = 0, no gradient).
        eye = torch.eye(sim.shape[0], dtype=torch.bool, device=sim.device)
        logits.append(sim.masked_fill(eye, float("-inf")))
    nce = torch.logsumexp(torch.cat(logits, dim=1) / tau, dim=1) - s_pos / tau
    byol = 2 - 2 * s_pos
    loss = nce_weight * nce + byol_weight * byol
    if reduction == "mean":
        loss = loss.mean()
    elif reduction == "sum":
        loss = loss.sum()
    return loss.to(p.dtype)
