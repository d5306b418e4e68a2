"""Argument checks shared by the public functions and the fake kernels.

The messages are the ones csrc/checks.h raises, so a user sees the same text
whichever backend runs and under torch.compile. Two flavours of the same
check: the public functions raise with a plain `if` (which Dynamo traces
without graph breaks, and whose message closure runs only on failure), and
the fake kernels (``symbolic=True``) use torch._check_value / _check_type /
_check, which also accept unbacked symbolic sizes.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Tuple

import torch

from cwarp._constants import WARP_KINDS, WARP_POINTS_MAX_WARPS

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
KINDS = WARP_KINDS
PADDING_MODES = ("zeros", "border", "reflection")
BACKENDS = ("auto", "cpp", "triton", "torch")
REDUCTIONS = ("mean", "sum", "none")
SRC_DTYPES = (torch.uint8, torch.float32)
OUT_DTYPES = (torch.float32, torch.bfloat16)


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


def _bound(value: float) -> str:
    return f"{value:g}"


def check_range(where: str, name: Optional[str], value, *, low: float = -math.inf, high: float = math.inf,
                low_open: bool = False, scalar: str = "point") -> Tuple[float, float]:
    """``value`` as a (min, max) pair of finite floats with low <= min <= max <= high (low < min with low_open).

    The one range check of the package: the public functions, the modules'
    constructors and cwarp-train's config check their (min, max) arguments
    here, where the user's value enters. A single number stands for the pair
    that ``scalar`` makes of it: "point" (v, v), "symmetric" (-|v|, |v|),
    "jitter" (max(0, 1 - v), 1 + v) for v >= 0; with "pair" a number is
    refused. Raises ValueError "WHERE: expected NAME ..., got VALUE" (the
    name is left out when None: a command-line flag as ``where`` names it).
    """
    what = f"{name} as " if name else ""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if number and scalar != "pair":
        v = float(value)
        if scalar == "jitter" and not v >= 0:
            raise ValueError(f"{where}: expected {name or 'a number'} >= 0, got {value!r}")
        lo, hi = {"point": (v, v), "symmetric": (-abs(v), abs(v)), "jitter": (max(0.0, 1.0 - v), 1.0 + v)}[scalar]
    else:
        try:
            lo, hi = (float(x) for x in value)
            if any(isinstance(x, bool) for x in value):
                raise TypeError
        except (TypeError, ValueError):
            form = "(min, max)" if scalar == "pair" else "a number or (min, max)"
            raise ValueError(f"{where}: expected {what}{form}, got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{where}: expected {what}(min, max) of finite numbers, got {value!r}")
    if lo > hi or lo < low or (low_open and lo == low) or hi > high:
        rule = "min <= max"
        if low > -math.inf:
            rule = f"{_bound(low)} {'<' if low_open else '<='} {rule}"
        if high < math.inf:
            rule = f"{rule} <= {_bound(high)}"
        raise ValueError(f"{where}: expected {what}(min, max) with {rule}, got {value!r}")
    return lo, hi


def check_generator(op: str, generator) -> Optional[torch.Generator]:
    """``generator`` itself when it is a torch.Generator or None, else TypeError naming it."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"{op}(): expected generator to be a torch.Generator or None, got {type(generator).__name__}")
    return generator


def check_has_data(op: str, name: str, t) -> None:
    """A meta tensor has shapes but no values: refuse it where values are read (RuntimeError)."""
    if isinstance(t, torch.Tensor) and t.device.type == "meta":
        raise RuntimeError(f"{op}(): expected {name} with values (on a CPU or CUDA device), got a meta tensor")


def check_local_warp_inputs(op: str, image: torch.Tensor, params: torch.Tensor,
                            theta: Optional[torch.Tensor], symbolic: bool = False,
                            allow_uint8: bool = True) -> None:
    """allow_uint8: a uint8 image is accepted (the forward ops), not by the backward ops."""
    for name, t in (("image", image), ("params", params), ("theta", theta)):
        if t is not None and not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}(): expected {name} to be a Tensor, got {type(t).__name__}")
    req = lambda cond, exc, msg: require(cond, exc, msg, symbolic)  # noqa: E731
    req(image.dim() == 4, ValueError,
        lambda: f"{op}(): expected image of shape (B, C, H, W), got {_shape(image)}")
    if allow_uint8:
        req(image.dtype in FLOAT_DTYPES or image.dtype == torch.uint8, TypeError,
            lambda: f"{op}(): expected image of dtype uint8 or a floating dtype (float16, bfloat16, float32, "
                    f"float64), got {image.dtype}")
    else:
        req(image.dtype in FLOAT_DTYPES, TypeError,
            lambda: f"{op}(): expected image of a floating dtype (float16, bfloat16, float32, "
                    f"float64), got {image.dtype}")
    req(image.shape[2] > 0 and image.shape[3] > 0, ValueError,
        lambda: f"{op}(): expected image with non-empty spatial dims, got {_shape(image)}")
    check_warp_params(op, params, theta, image.shape[0], image.device, "the image's", symbolic)


def check_warp_params(op: str, params: torch.Tensor, theta: Optional[torch.Tensor], batch, device,
                      owner: str, symbolic: bool = False) -> None:
    """params (B, K, 5) and theta (B, 2, 3) or None, floating, on ``device``
    (``owner`` names whose device it is in the messages)."""
    req = lambda cond, exc, msg: require(cond, exc, msg, symbolic)  # noqa: E731
    req(params.dim() == 3 and params.shape[-1] == 5 and params.shape[0] == batch, ValueError,
        lambda: f"{op}(): expected params of shape (B, K, 5) with B = {batch}, got {_shape(params)}")
    req(params.dtype in FLOAT_DTYPES, TypeError,
        lambda: f"{op}(): expected params of a floating dtype, got {params.dtype}")
    req(params.device == device, RuntimeError,
        lambda: f"{op}(): expected params on {owner} device {device}, got {params.device}")
    if theta is not None:
        req(theta.dim() == 3 and theta.shape[0] == batch and theta.shape[1] == 2 and theta.shape[2] == 3,
            ValueError, lambda: f"{op}(): expected theta of shape (B, 2, 3) with B = {batch}, got {_shape(theta)}")
        req(theta.dtype in FLOAT_DTYPES, TypeError,
            lambda: f"{op}(): expected theta of a floating dtype, got {theta.dtype}")
        req(theta.device == device, RuntimeError,
            lambda: f"{op}(): expected theta on {owner} device {device}, got {theta.device}")


def check_uint8_not_differentiated(op: str, image: torch.Tensor, params: torch.Tensor,
                                   theta: Optional[torch.Tensor], needs_grad=None) -> None:
    """A uint8 output has no gradient: with a uint8 image, params and theta
    must not ask for one (rather than silently getting none). needs_grad is
    (params, theta) as autograd sees them (ctx.needs_input_grad); by default
    their requires_grad under grad mode."""
    if image.dtype != torch.uint8:
        return
    if needs_grad is None:
        on = torch.is_grad_enabled()
        needs_grad = (on and params.requires_grad, on and theta is not None and theta.requires_grad)
    for name, needs in zip(("params", "theta"), needs_grad):
        if needs:
            raise RuntimeError(f"{op}(): expected {name} not to require grad with a uint8 image (the uint8 "
                               f"output is not differentiable; detach {name} or use a floating image), "
                               f"got {name} with requires_grad=True")


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


def opmath(dtype: torch.dtype) -> torch.dtype:
    """The type the kernels compute in: float64 for float64, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_contrastive_inputs(op: str, p: torch.Tensor, z_pos: torch.Tensor, z_neg: Optional[torch.Tensor],
                             tau) -> None:
    """The checks of csrc/checks.h's check_contrastive_inputs, with the same messages."""
    for name, t in (("p", p), ("z_pos", z_pos), ("z_neg", z_neg)):
        if t is not None and not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}(): expected {name} to be a Tensor, got {type(t).__name__}")
    if z_pos is None:
        raise TypeError(f"{op}(): expected z_pos to be a Tensor, got NoneType")
    require(p.dim() == 2, ValueError, lambda: f"{op}(): expected p of shape (B, D), got {_shape(p)}")
    require(p.dtype in FLOAT_DTYPES, TypeError,
             lambda: f"{op}(): expected p of a floating dtype (float16, bfloat16, float32, float64), got {p.dtype}")
    require(z_pos.dim() == 2 and z_pos.shape[0] == p.shape[0] and z_pos.shape[1] == p.shape[1], ValueError,
             lambda: f"{op}(): expected z_pos of shape (B, D) = {_shape(p)}, got {_shape(z_pos)}")
    require(z_pos.dtype == p.dtype, TypeError,
             lambda: f"{op}(): expected z_pos of p's dtype {p.dtype}, got {z_pos.dtype}")
    require(z_pos.device == p.device, RuntimeError,
             lambda: f"{op}(): expected z_pos on p's device {p.device}, got {z_pos.device}")
    if z_neg is not None:
        require(z_neg.dim() == 3, ValueError,
                 lambda: f"{op}(): expected z_neg of rank 3, shape (B, N, D), got {_shape(z_neg)}")
        require(z_neg.shape[0] == p.shape[0] and z_neg.shape[2] == p.shape[1], ValueError,
                 lambda: f"{op}(): expected z_neg of shape (B, N, D) with B, D = {p.shape[0]}, {p.shape[1]}, "
                         f"got {_shape(z_neg)}")
        require(z_neg.dtype == p.dtype, TypeError,
                 lambda: f"{op}(): expected z_neg of p's dtype {p.dtype}, got {z_neg.dtype}")
        require(z_neg.device == p.device, RuntimeError,
                 lambda: f"{op}(): expected z_neg on p's device {p.device}, got {z_neg.device}")
    if isinstance(tau, bool) or not isinstance(tau, (int, float)):
        raise TypeError(f"{op}(): expected tau to be a float, got {type(tau).__name__}")
    require(math.isfinite(tau) and tau > 0, ValueError, lambda: f"{op}(): expected tau > 0 and finite, got {tau}")


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


def check_warp_points_inputs(op: str, points: torch.Tensor, params: torch.Tensor,
                             theta: Optional[torch.Tensor], symbolic: bool = False) -> None:
    """The checks of csrc/checks.h's check_warp_points_inputs, with the same messages."""
    for name, t in (("points", points), ("params", params), ("theta", theta)):
        if (t is not None or name != "theta") and not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}(): expected {name} to be a Tensor, got {type(t).__name__}")
    req = lambda cond, exc, msg: require(cond, exc, msg, symbolic)  # noqa: E731
    req(points.dim() == 3 and points.shape[-1] == 2, ValueError,
        lambda: f"{op}(): expected points of shape (B, P, 2), got {_shape(points)}")
    req(points.dtype in FLOAT_DTYPES, TypeError,
        lambda: f"{op}(): expected points of a floating dtype (float16, bfloat16, float32, float64), "
                f"got {points.dtype}")
    check_warp_params(op, params, theta, points.shape[0], points.device, "the points'", symbolic)
    req(params.shape[1] <= WARP_POINTS_MAX_WARPS, ValueError,
        lambda: f"{op}(): expected at most {WARP_POINTS_MAX_WARPS} warps per image (params of shape (B, K, 5) "
                f"with K <= {WARP_POINTS_MAX_WARPS}), got K = {params.shape[1]}")
