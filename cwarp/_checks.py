"""Argument checks shared by the public functions and the fake kernels.

The messages are the ones csrc/checks.h raises, so a user sees the same text
whichever backend runs and under torch.compile. Two flavours of the same
check: the public functions raise with a plain `if` (which Dynamo traces
without graph breaks, and whose message closure runs only on failure), and
the fake kernels (``symbolic=True``) use torch._check_value / _check_type /
_check, which also accept unbacked symbolic sizes.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
KINDS = ("translate", "gaussian")
PADDING_MODES = ("zeros", "border", "reflection")
BACKENDS = ("auto", "cpp", "triton", "torch")


def _shape(t: torch.Tensor) -> str:
    return str(list(t.shape))


_SYMBOLIC = {ValueError: torch._check_value, TypeError: torch._check_type, RuntimeError: torch._check}


def require(cond, exc: type, message: Callable[[], str], symbolic: bool = False) -> None:
    """Raise exc(message()) unless cond."""
    if symbolic:
        _SYMBOLIC[exc](cond, message)
    elif not cond:
        raise exc(message())


def check_choice(op: str, name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{op}(): unknown {name} {value!r}; expected one of {', '.join(map(repr, choices))}")


def check_local_warp_inputs(op: str, image: torch.Tensor, params: torch.Tensor,
                            theta: Optional[torch.Tensor], symbolic: bool = False) -> None:
    for name, t in (("image", image), ("params", params), ("theta", theta)):
        if t is not None and not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}(): expected {name} to be a Tensor, got {type(t).__name__}")
    req = lambda cond, exc, msg: require(cond, exc, msg, symbolic)  # noqa: E731
    req(image.dim() == 4, ValueError,
        lambda: f"{op}(): expected image of shape (B, C, H, W), got {_shape(image)}")
    req(image.dtype in FLOAT_DTYPES, TypeError,
        lambda: f"{op}(): expected image of a floating dtype (float16, bfloat16, float32, "
                f"float64), got {image.dtype}")
    req(image.shape[2] > 0 and image.shape[3] > 0, ValueError,
        lambda: f"{op}(): expected image with non-empty spatial dims, got {_shape(image)}")
    req(params.dim() == 3 and params.shape[-1] == 5 and params.shape[0] == image.shape[0], ValueError,
        lambda: f"{op}(): expected params of shape (B, K, 5) with B = {image.shape[0]}, got {_shape(params)}")
    req(params.dtype in FLOAT_DTYPES, TypeError,
        lambda: f"{op}(): expected params of a floating dtype, got {params.dtype}")
    req(params.device == image.device, RuntimeError,
        lambda: f"{op}(): expected params on the image's device {image.device}, got {params.device}")
    if theta is not None:
        req(theta.dim() == 3 and theta.shape[0] == image.shape[0] and theta.shape[1] == 2
            and theta.shape[2] == 3, ValueError,
            lambda: f"{op}(): expected theta of shape (B, 2, 3) with B = {image.shape[0]}, got {_shape(theta)}")
        req(theta.dtype in FLOAT_DTYPES, TypeError,
            lambda: f"{op}(): expected theta of a floating dtype, got {theta.dtype}")
        req(theta.device == image.device, RuntimeError,
            lambda: f"{op}(): expected theta on the image's device {image.device}, got {theta.device}")


def check_local_warp_grad_out(op: str, grad_out: torch.Tensor, image: torch.Tensor,
                              symbolic: bool = False) -> None:
    require(grad_out.dim() == 4 and grad_out.shape[0] == image.shape[0] and grad_out.shape[1] == image.shape[1],
            ValueError, lambda: f"{op}(): expected grad_out of shape (B, C, Ho, Wo) with B, C = "
                                f"{image.shape[0]}, {image.shape[1]}, got {_shape(grad_out)}", symbolic)
    require(grad_out.device == image.device, RuntimeError,
            lambda: f"{op}(): expected grad_out on the image's device {image.device}, got {grad_out.device}",
            symbolic)
    require(grad_out.dtype == image.dtype, TypeError,
            lambda: f"{op}(): expected grad_out of the image's dtype {image.dtype}, got {grad_out.dtype}",
            symbolic)


def check_out_size(op: str, out_h, out_w, symbolic: bool = False) -> None:
    require(out_h > 0 and out_w > 0, ValueError,
            lambda: f"{op}(): expected out_size of two positive ints, got ({out_h}, {out_w})", symbolic)


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
