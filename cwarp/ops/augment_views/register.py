"""Python glue of cwarp::augment_views: argument checks and the fake kernel.

The schema lives in csrc/registration.cpp and the CPU / CUDA kernels next to
their sources. The op renders data, not something to differentiate, so it
has a fake (for torch.compile) and no autograd. The checks here repeat the
messages of csrc/checks.h (check_augment_views_inputs), so a user sees the
same text from every backend and under torch.compile.
"""
from __future__ import annotations

import torch

from cwarp import _extension
from cwarp.ops import _autocast, _checks

__all__ = ["augment_views_op", "augment_views_fake", "check_augment_views_args"]

OP = "cwarp::augment_views"
def check_augment_views_args(op, src, theta, warps, color, mean, std, size, kind, padding_mode, out_dtype) -> None:
    """Every argument of an augment_views op (C++ or Triton), with csrc/checks.h's messages."""
    _checks.check_augment_views_inputs(op, src, theta, warps, color, mean, std, size, out_dtype)
    _checks.check_choice(op, "kind", kind, _checks.KINDS)
    _checks.check_choice(op, "padding_mode", padding_mode, _checks.PADDING_MODES)


def augment_views_fake(op: str):
    """The fake kernel of an augment_views op: checks, then the (B, V, C, size, size) result."""
    def fake(src, theta, warps, color, mean, std, size, kind, padding_mode, out_dtype):
        check_augment_views_args(op, src, theta, warps, color, mean, std, size, kind, padding_mode, out_dtype)
        return src.new_empty((src.shape[0], theta.shape[1], src.shape[1], size, size), dtype=out_dtype)
    return fake


def augment_views_op(src, theta, warps, color, mean, std, size: int, kind: str, padding_mode: str,
                     out_dtype: torch.dtype) -> torch.Tensor:
    """torch.ops.cwarp.augment_views (C++ CPU / CUDA kernels)."""
    _extension.require("cwarp.ContraWarpAugment", src.device)
    return torch.ops.cwarp.augment_views(src, theta, warps, color, mean, std, size, kind, padding_mode, out_dtype)


if _extension.available():
    torch.library.register_fake(OP)(augment_views_fake(OP))
    _autocast.register(OP, _autocast.POLICY["augment_views"])
