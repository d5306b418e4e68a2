"""Argument checks shared by the public functions and the fake kernels.

The messages are the ones csrc/checks.h raises, so a user sees the same text
whichever backend runs and under torch.compile. torch._check_value /
torch._check_type raise ValueError / TypeError and accept symbolic sizes.
"""
from __future__ import annotations

from typing import Optional

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
KINDS = ("translate", "gaussian")
PADDING_MODES = ("zeros", "border", "reflection")
BACKENDS = ("auto", "cpp", "triton", "torch")


def _shape(t: torch.Tensor) -> str:
    return str(list(t.shape))


def check_choice(op: str, name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{op}(): unknown {name} {value!r}; expected one of {', '.join(map(repr, choices))}")


def check_local_warp_inputs(op: str, image: torch.Tensor, params: torch.Tensor,
                            theta: Optional[torch.Tensor]) -> None:
    for name, t in (("image", image), ("params", params), ("theta", theta)):
        if t is not None and not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}(): expected {name} to be a Tensor, got {type(t).__name__}")
    torch._check_value(image.dim() == 4,
                       lambda: f"{op}(): expected image of shape (B, C, H, W), got {_shape(image)}")
    torch._check_type(image.dtype in FLOAT_DTYPES,
                      lambda: f"{op}(): expected image of a floating dtype (float16, bfloat16, float32, "
                              f"float64), got {image.dtype}")
    torch._check_value(image.shape[2] > 0 and image.shape[3] > 0,
                       lambda: f"{op}(): expected image with non-empty spatial dims, got {_shape(image)}")
    torch._check_value(params.dim() == 3 and params.shape[-1] == 5 and params.shape[0] == image.shape[0],
                       lambda: f"{op}(): expected params of shape (B, K, 5) with B = {image.shape[0]}, "
                               f"got {_shape(params)}")
    torch._check_type(params.dtype in FLOAT_DTYPES,
                      lambda: f"{op}(): expected params of a floating dtype, got {params.dtype}")
    torch._check(params.device == image.device,
                 lambda: f"{op}(): expected params on the image's device {image.device}, got {params.device}")
    if theta is not None:
        torch._check_value(theta.dim() == 3 and theta.shape[0] == image.shape[0] and theta.shape[1] == 2
                           and theta.shape[2] == 3,
                           lambda: f"{op}(): expected theta of shape (B, 2, 3) with B = {image.shape[0]}, "
                                   f"got {_shape(theta)}")
        torch._check_type(theta.dtype in FLOAT_DTYPES,
                          lambda: f"{op}(): expected theta of a floating dtype, got {theta.dtype}")
        torch._check(theta.device == image.device,
                     lambda: f"{op}(): expected theta on the image's device {image.device}, got {theta.device}")


def check_out_size(op: str, out_h, out_w) -> None:
    torch._check_value(out_h > 0 and out_w > 0,
                       lambda: f"{op}(): expected out_size of two positive ints, got ({out_h}, {out_w})")


def normalize_out_size(op: str, image: torch.Tensor, out_size) -> tuple:
    if out_size is None:
        return int(image.shape[2]), int(image.shape[3])
    if isinstance(out_size, int):
        out_size = (out_size, out_size)
    try:
        out_h, out_w = out_size
    except (TypeError, ValueError):
        raise ValueError(f"{op}(): expected out_size of two positive ints, got {out_size!r}") from None
    if not all(isinstance(v, (int, torch.SymInt)) and not isinstance(v, bool) for v in (out_h, out_w)):
        raise TypeError(f"{op}(): expected out_size of two positive ints, got {out_size!r}")
    check_out_size(op, out_h, out_w)
    return out_h, out_w
