"""Python glue of the contrastive-loss ops: checks, fake kernels and autograd.

The schemas are in csrc/registration.cpp; the CPU / CUDA kernels in
csrc/*/contrastive_kernel.*. The forward op returns per-row values (nce,
s_pos) plus what the backward needs (inverse row norms, per-row logsumexp);
the backward op takes dL/dnce and dL/ds_pos per row. Loss weights and the
reduction are cheap (B,) tensor ops in cwarp/loss.py, so autograd composes
them with the op's gradient.

The same fake and autograd functions serve the Triton ops
(cwarp/triton/contrastive.py), which have the same signatures.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from cwarp import _extension

__all__ = ["check_contrastive_inputs", "contrastive_forward_op", "register_contrastive_op",
           "register_contrastive_autograd"]

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
REDUCTIONS = ("mean", "sum", "none")


def _shape(t: torch.Tensor) -> str:
    return str(list(t.shape))


def _require(cond, exc_type, message) -> None:
    # Plain `if ... raise` rather than torch._check: Dynamo traces these checks
    # (fullgraph) in the public function, and it cannot trace torch._check
    # message closures that capture tensors.
    if not cond:
        raise exc_type(message())


def check_contrastive_inputs(op: str, p: torch.Tensor, z_pos: torch.Tensor, z_neg: Optional[torch.Tensor],
                             tau) -> None:
    """The checks of csrc/checks.h's check_contrastive_inputs, with the same messages."""
    for name, t in (("p", p), ("z_pos", z_pos), ("z_neg", z_neg)):
        if t is not None and not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}(): expected {name} to be a Tensor, got {type(t).__name__}")
    if z_pos is None:
        raise TypeError(f"{op}(): expected z_pos to be a Tensor, got NoneType")
    _require(p.dim() == 2, ValueError, lambda: f"{op}(): expected p of shape (B, D), got {_shape(p)}")
    _require(p.dtype in FLOAT_DTYPES, TypeError,
             lambda: f"{op}(): expected p of a floating dtype (float16, bfloat16, float32, float64), got {p.dtype}")
    _require(z_pos.dim() == 2 and z_pos.shape[0] == p.shape[0] and z_pos.shape[1] == p.shape[1], ValueError,
             lambda: f"{op}(): expected z_pos of shape (B, D) = {_shape(p)}, got {_shape(z_pos)}")
    _require(z_pos.dtype == p.dtype, TypeError,
             lambda: f"{op}(): expected z_pos of p's dtype {p.dtype}, got {z_pos.dtype}")
    _require(z_pos.device == p.device, RuntimeError,
             lambda: f"{op}(): expected z_pos on p's device {p.device}, got {z_pos.device}")
    if z_neg is not None:
        _require(z_neg.dim() == 3, ValueError,
                 lambda: f"{op}(): expected z_neg of rank 3, shape (B, N, D), got {_shape(z_neg)}")
        _require(z_neg.shape[0] == p.shape[0] and z_neg.shape[2] == p.shape[1], ValueError,
                 lambda: f"{op}(): expected z_neg of shape (B, N, D) with B, D = {p.shape[0]}, {p.shape[1]}, "
                         f"got {_shape(z_neg)}")
        _require(z_neg.dtype == p.dtype, TypeError,
                 lambda: f"{op}(): expected z_neg of p's dtype {p.dtype}, got {z_neg.dtype}")
        _require(z_neg.device == p.device, RuntimeError,
                 lambda: f"{op}(): expected z_neg on p's device {p.device}, got {z_neg.device}")
    if isinstance(tau, bool) or not isinstance(tau, (int, float)):
        raise TypeError(f"{op}(): expected tau to be a float, got {type(tau).__name__}")
    _require(math.isfinite(tau) and tau > 0, ValueError, lambda: f"{op}(): expected tau > 0 and finite, got {tau}")


def _opmath(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def contrastive_forward_fake(p, z_pos, z_neg, tau, in_batch):
    check_contrastive_inputs("cwarp::contrastive_loss_forward", p, z_pos, z_neg, tau)
    b = p.shape[0]
    n = z_neg.shape[1] if z_neg is not None else 0
    dt = _opmath(p.dtype)
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


def contrastive_forward_op(p: torch.Tensor, z_pos: torch.Tensor, z_neg: Optional[torch.Tensor], tau: float,
                           in_batch: bool):
    """torch.ops.cwarp.contrastive_loss_forward (C++ CPU / CUDA kernels)."""
    _extension.require("cwarp.contrastive_loss", p.device)
    return torch.ops.cwarp.contrastive_loss_forward(p, z_pos, z_neg, tau, in_batch)


if _extension.available() and hasattr(torch.ops.cwarp, "contrastive_loss_forward"):
    register_contrastive_op("cwarp::contrastive_loss_forward", "cwarp::contrastive_loss_backward",
                            torch.ops.cwarp.contrastive_loss_backward)
