"""Python glue of cwarp::augment_views: argument checks and the fake kernel.

The schema lives in csrc/registration.cpp and the CPU / CUDA kernels next to
their sources. The op renders data, not something to differentiate, so it
has a fake (for torch.compile) and no autograd. The checks here repeat the
messages of csrc/checks.h (check_augment_views_inputs), so a user sees the
same text from every backend and under torch.compile.
"""
from __future__ import annotations

import torch

from cwarp import _checks, _extension

__all__ = ["augment_views_op", "check_augment_views_inputs", "SRC_DTYPES", "OUT_DTYPES"]

OP = "cwarp::augment_views"
SRC_DTYPES = (torch.uint8, torch.float32)
OUT_DTYPES = (torch.float32, torch.bfloat16)


def check_augment_views_inputs(op: str, src, theta, warps, color, mean, std, size, out_dtype) -> None:
    torch._check_value(src.dim() == 4, lambda: f"{op}(): expected src of shape (B, C, H, W), got {list(src.shape)}")
    torch._check_type(src.dtype in SRC_DTYPES, lambda: f"{op}(): expected src of dtype uint8 or float32, got {src.dtype}")
    torch._check_value(src.shape[1] in (1, 3),
                       lambda: f"{op}(): expected src with C = 1 or 3 channels, got {list(src.shape)}")
    torch._check_value(src.shape[2] > 0 and src.shape[3] > 0,
                       lambda: f"{op}(): expected src with non-empty spatial dims, got {list(src.shape)}")
    torch._check_value(size > 0, lambda: f"{op}(): expected size > 0, got {size}")
    torch._check_type(out_dtype in OUT_DTYPES,
                      lambda: f"{op}(): expected out_dtype float32 or bfloat16, got {out_dtype}")
    B, C = src.shape[0], src.shape[1]
    torch._check_value(theta.dim() == 4 and theta.shape[0] == B and theta.shape[2] == 2 and theta.shape[3] == 3,
                       lambda: f"{op}(): expected theta of shape (B, V, 2, 3) with B = {B}, got {list(theta.shape)}")
    V = theta.shape[1]
    torch._check_value(warps.dim() == 4 and warps.shape[0] == B and warps.shape[1] == V and warps.shape[3] == 5,
                       lambda: f"{op}(): expected warps of shape (B, V, K, 5) with B, V = {B}, {V}, "
                               f"got {list(warps.shape)}")
    torch._check_value(color.dim() == 3 and color.shape[0] == B and color.shape[1] == V and color.shape[2] == 5,
                       lambda: f"{op}(): expected color of shape (B, V, 5) with B, V = {B}, {V}, "
                               f"got {list(color.shape)}")
    torch._check_value(mean.dim() == 1 and mean.shape[0] == C and std.dim() == 1 and std.shape[0] == C,
                       lambda: f"{op}(): expected mean and std of shape (C,) with C = {C}, got "
                               f"{list(mean.shape)} and {list(std.shape)}")
    for name, t in (("theta", theta), ("warps", warps), ("color", color), ("mean", mean), ("std", std)):
        torch._check_type(t.dtype == torch.float32, lambda: f"{op}(): expected {name} of dtype float32, got {t.dtype}")
        torch._check(t.device == src.device,
                     lambda: f"{op}(): expected {name} on src's device {src.device}, got {t.device}")


def _augment_views_fake(src, theta, warps, color, mean, std, size, kind, padding_mode, out_dtype):
    check_augment_views_inputs(OP, src, theta, warps, color, mean, std, size, out_dtype)
    _checks.check_choice(OP, "kind", kind, _checks.KINDS)
    _checks.check_choice(OP, "padding_mode", padding_mode, _checks.PADDING_MODES)
    return src.new_empty((src.shape[0], theta.shape[1], src.shape[1], size, size), dtype=out_dtype)


def augment_views_op(src, theta, warps, color, mean, std, size: int, kind: str, padding_mode: str,
                     out_dtype: torch.dtype) -> torch.Tensor:
    """torch.ops.cwarp.augment_views (C++ CPU / CUDA kernels)."""
    _extension.require("cwarp.ContraWarpAugment", src.device)
    return torch.ops.cwarp.augment_views(src, theta, warps, color, mean, std, size, kind, padding_mode, out_dtype)


if _extension.available():
    torch.library.register_fake("cwarp::augment_views")(_augment_views_fake)
