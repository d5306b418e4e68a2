"""Python glue of torch.ops.cwarp.warp_points: its fake kernel and autograd.

The schema and the CPU kernel are in C++ (csrc/registration.cpp,
csrc/ops/warp_points/). The backward is implicit differentiation at the
solution, through the reference's ``implicit_correction``: the derivative
does not depend on how the solver got there.
"""
from __future__ import annotations

from typing import Optional

import torch

from cwarp import _extension
from cwarp.ops import _checks
from cwarp.ops.warp_points import reference

__all__ = ["warp_points_op"]

_OP = "cwarp::warp_points"


def _fake(points, params, theta, kind):
    _checks.check_warp_points_inputs(_OP, points, params, theta, symbolic=True)
    _checks.check_choice(_OP, "kind", kind, _checks.KINDS)
    return torch.empty(points.shape, dtype=points.dtype, device=points.device)


def _setup_context(ctx, inputs, output):
    points, params, theta, kind = inputs
    ctx.kind = kind
    ctx.has_theta = theta is not None
    ctx.save_for_backward(points, params, theta, output)


def _backward(ctx, grad):
    points, params, theta, solution = ctx.saved_tensors
    inputs = [points, params] + ([theta] if ctx.has_theta else [])
    wanted = [t for t, need in zip(inputs, ctx.needs_input_grad[:3]) if need]
    if not wanted:
        return None, None, None, None
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_(need) for t, need in zip(inputs, ctx.needs_input_grad[:3])]
        correction = reference.implicit_correction(solution, leaves[0], leaves[1],
                                                   leaves[2] if ctx.has_theta else None, ctx.kind)
        asked = [t for t in leaves if t.requires_grad]
        grads = iter(torch.autograd.grad(correction, asked, grad.to(correction.dtype)))
    out = [next(grads).to(t.dtype) if t.requires_grad else None for t in leaves]
    out += [None] * (3 - len(out))
    return out[0], out[1], out[2], None


def warp_points_op(points: torch.Tensor, params: torch.Tensor, theta: Optional[torch.Tensor],
                   kind: str) -> torch.Tensor:
    """torch.ops.cwarp.warp_points (the C++ CPU kernel)."""
    _extension.require("cwarp.warp_points", points.device)
    return torch.ops.cwarp.warp_points(points, params, theta, kind)


if _extension.available():
    torch.library.register_fake(_OP)(_fake)
    torch.library.register_autograd(_OP, _backward, setup_context=_setup_context)
