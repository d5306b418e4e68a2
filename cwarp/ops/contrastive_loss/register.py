"""Python glue of the contrastive-loss ops: checks, fake kernels and autograd.

The schemas are in csrc/registration.cpp; the CPU / CUDA kernels in
csrc/*/contrastive_kernel.*. The forward op returns per-row values (nce,
s_pos) plus what the backward needs (inverse row norms, per-row logsumexp);
the backward op takes dL/dnce and dL/ds_pos per row. Loss weights and the
reduction are cheap (B,) tensor ops in cwarp/ops/contrastive_loss/api.py, so autograd composes
them with the op's gradient.

The same fake and autograd functions serve the Triton ops
(cwarp/ops/contrastive_loss/triton_kernels.py), which have the same signatures.
"""
from __future__ import annotations

from typing import Optional

import torch

from cwarp import _extension
from cwarp.ops import _autocast
from cwarp.ops._checks import check_contrastive_inputs, opmath

__all__ = ["contrastive_forward_op", "register_contrastive_op",
           "register_contrastive_autograd"]

def contrastive_forward_fake(p, z_pos, z_neg, tau, in_batch):
    check_contrastive_inputs("cwarp::contrastive_loss_forward", p, z_pos, z_neg, tau)
    b = p.shape[0]
    n = z_neg.shape[1] if z_neg is not None else 0
    dt = opmath(p.dtype)
    row = lambda: p.new_empty((b,), dtype=dt)  # noqa: E731
    return row(), row(), row(), row(), p.new_empty((b, n), dtype=dt), row()


def contrastive_backward_fake(grad_nce, grad_s_pos, p, z_pos, z_neg, inv_p, inv_z_pos, inv_z_neg, lse, tau,
                              in_batch, output_mask):
    check_contrastive_inputs("cwarp::contrastive_loss_backward", p, z_pos, z_neg, tau)
    gp = p.new_empty(p.shape) if output_mask[0] else p.new_empty((0,))
    gz = p.new_empty(p.shape) if output_mask[1] else p.new_empty((0,))
    gn = p.new_empty(z_neg.shape) if (output_mask[2] and z_neg is not None) else p.new_empty((0,))
    return gp, gz, gn


def _setup_context(ctx, inputs, output):
    p, z_pos, z_neg, tau, in_batch = inputs
    _, _, inv_p, inv_z, inv_n, lse = output
    ctx.tau, ctx.in_batch, ctx.has_neg = tau, in_batch, z_neg is not None
    ctx.mark_non_differentiable(inv_p, inv_z, inv_n, lse)
    # Inputs are saved by reference (no copy); with the inverse norms and the
    # logsumexp they are all the backward needs.
    ctx.save_for_backward(p, z_pos, z_neg, inv_p, inv_z, inv_n, lse)


def _make_backward(backward_op):
    def backward(ctx, grad_nce, grad_s_pos, *unused):
        p, z_pos, z_neg, inv_p, inv_z, inv_n, lse = ctx.saved_tensors
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2] and ctx.has_neg]
        if not any(mask):
            return None, None, None, None, None
        if grad_nce is None:
            grad_nce = torch.zeros_like(lse)
        if grad_s_pos is None:
            grad_s_pos = torch.zeros_like(lse)
        gp, gz, gn = backward_op(grad_nce, grad_s_pos, p, z_pos, z_neg, inv_p, inv_z, inv_n, lse, ctx.tau,
                                 ctx.in_batch, mask)
        return (gp if mask[0] else None, gz if mask[1] else None, gn if mask[2] else None, None, None)
    return backward


def register_contrastive_autograd(forward_name: str, backward_op) -> None:
    """Autograd for a forward op with the schema above, whose backward is `backward_op`."""
    torch.library.register_autograd(forward_name, _make_backward(backward_op), setup_context=_setup_context)


def register_contrastive_op(forward_name: str, backward_name: str, backward_op) -> None:
    """Fake kernels and autograd for a C++ (forward, backward) pair with the schemas above."""
    torch.library.register_fake(forward_name)(contrastive_forward_fake)
    torch.library.register_fake(backward_name)(contrastive_backward_fake)
    register_contrastive_autograd(forward_name, backward_op)
    _autocast.register(forward_name, _autocast.POLICY["contrastive_loss"])


def contrastive_forward_op(p: torch.Tensor, z_pos: torch.Tensor, z_neg: Optional[torch.Tensor], tau: float,
                           in_batch: bool):
    """torch.ops.cwarp.contrastive_loss_forward (C++ CPU / CUDA kernels)."""
    _extension.require("cwarp.contrastive_loss", p.device)
    return torch.ops.cwarp.contrastive_loss_forward(p, z_pos, z_neg, tau, in_batch)


if _extension.available() and hasattr(torch.ops.cwarp, "contrastive_loss_forward"):
    register_contrastive_op("cwarp::contrastive_loss_forward", "cwarp::contrastive_loss_backward",
                            torch.ops.cwarp.contrastive_loss_backward)
