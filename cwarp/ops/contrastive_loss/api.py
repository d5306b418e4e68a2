"""The fused ContraWarping loss (docs/api.md §3): public function, module, dispatch."""
from __future__ import annotations

from typing import Optional

import torch

from cwarp.ops import _autocast, _checks
from cwarp.ops._dispatch import resolve_backend
from cwarp.ops.contrastive_loss import reference, register

__all__ = ["contrastive_loss"]

_OP = "cwarp.contrastive_loss"
def contrastive_loss(p: torch.Tensor, z_pos: torch.Tensor, z_neg: Optional[torch.Tensor] = None, *,
                     tau: float = 0.2, byol_weight: float = 0.0, nce_weight: float = 1.0,
                     in_batch: bool = False, reduction: str = "mean", backend: str = "auto") -> torch.Tensor:
    """InfoNCE with locally warped hard negatives, plus an optional BYOL term.

    Every row is L2-normalized (as ``F.normalize(eps=1e-12)``); for row i::

        logits_i = [s_pos_i, s_neg_i1..s_neg_iN, (<p_i, zpos_k> for k != i if in_batch)]
        nce_i    = logsumexp(logits_i / tau) - s_pos_i / tau
        byol_i   = 2 - 2 s_pos_i
        loss_i   = nce_weight * nce_i + byol_weight * byol_i

    Args:
        p: (B, D) online predictions.
        z_pos: (B, D) targets of the positive view.
        z_neg: (B, N, D) targets of N hard negatives, or None.
        tau: temperature, > 0.
        in_batch: also use the other rows' positives as negatives (tiled: no
            (B, B) matrix is held).
        reduction: "mean", "sum" or "none" (per-row losses, shape (B,)).
        backend: "auto", "cpp" (C++ CPU / CUDA), "triton", "torch" (the reference).
            On CUDA, "auto" runs in-batch losses on Triton when it is
            installed (its in-batch sweep is tiled, the CUDA kernel's serial).

    Differentiable with respect to p, z_pos and z_neg. The result has p's
    dtype; float16 / bfloat16 compute in float32. Under ``torch.autocast``
    the inputs are cast to float32 and so is the result (docs/api.md, "Autocast").
    """
    if _autocast.enabled(p):
        p, z_pos, z_neg = _autocast.cast(_autocast.POLICY["contrastive_loss"], p, z_pos, z_neg)
        with _autocast.disabled(p.device.type):
            return contrastive_loss(p, z_pos, z_neg, tau=tau, byol_weight=byol_weight, nce_weight=nce_weight,
                                    in_batch=in_batch, reduction=reduction, backend=backend)
    _checks.check_contrastive_inputs(_OP, p, z_pos, z_neg, tau)
    if reduction not in _checks.REDUCTIONS:
        raise ValueError(f"{_OP}(): unknown reduction {reduction!r}; expected one of "
                         f"{', '.join(map(repr, _checks.REDUCTIONS))}")
    if reduction == "mean" and p.shape[0] == 0:
        raise ValueError(f"{_OP}(): the mean of an empty batch is undefined (p has shape {list(p.shape)}); "
                         "pass reduction='sum' or 'none'")
    tau = float(tau)
    in_batch = bool(in_batch)
    backend = resolve_backend(_OP, backend, p.device, prefer_triton_on_cuda=in_batch)
    if backend == "torch":
        return reference.contrastive_loss(p, z_pos, z_neg, tau=tau, byol_weight=byol_weight,
                                          nce_weight=nce_weight, in_batch=in_batch, reduction=reduction)
    if backend == "triton":
        from cwarp.ops.contrastive_loss import triton_kernels as triton_contrastive  # imports triton only when asked for
        out = triton_contrastive.contrastive_loss_forward(p, z_pos, z_neg, tau, in_batch)
    else:
        out = register.contrastive_forward_op(p, z_pos, z_neg, tau, in_batch)
    nce, s_pos = out[0], out[1]
    loss = nce if nce_weight == 1 else nce_weight * nce
    if byol_weight != 0:
        loss = loss + byol_weight * (2 - 2 * s_pos)
    if reduction == "mean":
        loss = loss.mean()
    elif reduction == "sum":
        loss = loss.sum()
    return loss.to(p.dtype)
