"""The public warp_points function: argument checks and backend choice."""
from __future__ import annotations

from typing import Optional

import torch

from cwarp.ops import _checks
from cwarp.ops.warp_points import reference, register

__all__ = ["warp_points"]

_OP = "cwarp.warp_points"
_BACKENDS = ("auto", "cpp", "torch")


def warp_points(points: torch.Tensor, params: torch.Tensor, theta: Optional[torch.Tensor] = None, *,
                kind: str = "translate", backend: str = "auto") -> torch.Tensor:
    """Where source points land in the output of ``local_warp`` with the same
    params, theta and kind (docs/api.md, section 2, "Points").

    ``local_warp`` samples its output position p at s = theta (p - D(p)), with
    the warp field D(p) = sum_k w_k(p) d_k. ``warp_points`` inverts that map
    for each point s: it returns the p that samples s. Where the map folds and
    several p sample s, it returns the one nearest q = theta^-1 s (the content
    moved least); NaN where there is none (a NaN point, a singular theta).

    Args:
        points: (B, P, 2) source points (x, y) in normalized coordinates, any
            floating dtype; solved in float64, returned in this dtype.
        params: (B, K, 5) local-warp rows (cx, cy, r, dx, dy), as for local_warp.
        theta: optional (B, 2, 3) affine, as for local_warp.
        kind: "translate" or "gaussian".
        backend: "auto" or "cpp" (the C++ kernel; CUDA points make a round
            trip to it, see below) or "torch" (the same solver in PyTorch,
            on the points' device).

    There is no CUDA kernel: a batch has a few points per image, and the CPU
    kernel solves thousands in milliseconds, so CUDA tensors are copied to
    the CPU and the result back (differentiably). The answer is then the
    same on every device.

    Differentiable with respect to points, params and theta (implicit
    differentiation at the solution; once, not twice).
    """
    _checks.check_choice(_OP, "backend", backend, _BACKENDS)
    _checks.check_warp_points_inputs(_OP, points, params, theta)
    _checks.check_choice(_OP, "kind", kind, _checks.KINDS)
    if backend == "torch":
        return reference.warp_points(points, params, theta, kind=kind)
    if points.device.type == "cpu":
        return register.warp_points_op(points, params, theta, kind)
    if points.device.type != "cuda":
        raise RuntimeError(f"{_OP}(): no kernel for points on {points.device}; use backend='torch'")
    out = register.warp_points_op(points.cpu(), params.cpu(), None if theta is None else theta.cpu(), kind)
    return out.to(points.device)
