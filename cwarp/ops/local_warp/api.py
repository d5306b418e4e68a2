"""Public local-warp functions: argument checks and backend dispatch."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

from cwarp.ops import _autocast, _checks
from cwarp.ops._dispatch import resolve_backend
from cwarp.ops.local_warp import register
from cwarp.ops.local_warp import reference

__all__ = ["local_warp", "local_warp_grid"]

_OP = "cwarp.local_warp"


def local_warp(image: torch.Tensor, params: torch.Tensor, theta: Optional[torch.Tensor] = None, *,
               out_size: Optional[Union[int, Sequence[int]]] = None, kind: str = "translate",
               padding_mode: str = "border", align_corners: bool = False,
               backend: str = "auto") -> torch.Tensor:
    """Batched random local warping with bilinear sampling (docs/api.md §2).

    For each output position p (the base grid of ``F.affine_grid``)::

        q = p - sum_k w_k(p) d_k        s = theta[b] @ [q, 1]
        out[b, :, i, j] = grid_sample(image[b], s)   (bilinear)

    Args:
        image: (B, C, H, W) float16 / bfloat16 / float32 / float64 or uint8, any strides.
            A uint8 image gives a uint8 result (sampled in float, rounded half to even,
            as torchvision's resampling; forward only).
        params: (B, K, 5) rows (cx, cy, r, dx, dy) in normalized units; K may be 0.
        theta: optional (B, 2, 3) affine applied after the warp, as in F.affine_grid.
        out_size: (Ho, Wo) of the output; default (H, W).
        kind: "translate" (Gustafsson's local translation) or "gaussian".
        padding_mode: "zeros", "border" or "reflection", as in F.grid_sample.
        align_corners: as in F.grid_sample.
        backend: "auto", "cpp", "triton" or "torch" (the reference).

    Differentiable with respect to image, params and theta for floating
    images; with a uint8 image, params and theta requiring grad raise.
    Under ``torch.autocast`` it runs as outside it: the result keeps the
    image's dtype (docs/api.md, "Autocast").
    """
    if _autocast.enabled(image):
        image, params, theta = _autocast.cast(_autocast.POLICY["local_warp"], image, params, theta)
        with _autocast.disabled(image.device.type):
            return local_warp(image, params, theta, out_size=out_size, kind=kind, padding_mode=padding_mode,
                              align_corners=align_corners, backend=backend)
    _checks.check_local_warp_inputs(_OP, image, params, theta)
    _checks.check_uint8_not_differentiated(_OP, image, params, theta)
    out_h, out_w = _checks.normalize_out_size(_OP, image, out_size)
    _checks.check_choice(_OP, "kind", kind, _checks.KINDS)
    _checks.check_choice(_OP, "padding_mode", padding_mode, _checks.PADDING_MODES)
    align_corners = bool(align_corners)
    backend = resolve_backend(_OP, backend, image.device)
    if backend == "torch":
        return reference.local_warp(image, params, theta, out_size=(out_h, out_w), kind=kind,
                                    padding_mode=padding_mode, align_corners=align_corners)
    if backend == "triton":
        try:
            from cwarp.ops.local_warp import triton_kernels as triton_warp  # imports triton only when asked for
        except ImportError as exc:
            raise RuntimeError(f"{_OP}(): backend='triton' needs the triton package ({exc})") from exc
        # Raises for CPU tensors unless the kernels run under TRITON_INTERPRET=1.
        return triton_warp.local_warp(image, params, theta, out_h, out_w, kind, padding_mode, align_corners)
    return register.local_warp_op(image, params, theta, out_h, out_w, kind, padding_mode, align_corners)


def local_warp_grid(params: torch.Tensor, out_size: Sequence[int], theta: Optional[torch.Tensor] = None, *,
                    kind: str = "translate", align_corners: bool = False) -> torch.Tensor:
    """The sampling grid s (B, Ho, Wo, 2) that ``local_warp`` samples at.

    ``F.grid_sample(image, local_warp_grid(params, out_size, theta), ...)`` equals
    ``local_warp(image, params, theta, out_size=out_size, ...)``. Computed in
    float64 and returned in ``params.dtype``; differentiable.
    """
    op = "cwarp.local_warp_grid"
    if not isinstance(params, torch.Tensor) or params.dim() != 3 or params.shape[-1] != 5:
        shape = list(params.shape) if isinstance(params, torch.Tensor) else type(params).__name__
        raise ValueError(f"{op}(): expected params of shape (B, K, 5), got {shape}")
    if params.dtype not in _checks.FLOAT_DTYPES:
        raise TypeError(f"{op}(): expected params of a floating dtype, got {params.dtype}")
    if theta is not None and (theta.dim() != 3 or tuple(theta.shape) != (params.shape[0], 2, 3)):
        raise ValueError(f"{op}(): expected theta of shape (B, 2, 3) with B = {params.shape[0]}, "
                         f"got {list(theta.shape)}")
    if theta is not None and theta.device != params.device:
        raise RuntimeError(f"{op}(): expected theta on the params' device {params.device}, got {theta.device}")
    if isinstance(out_size, int):
        out_size = (out_size, out_size)
    out_h, out_w = out_size
    _checks.check_out_size(op, out_h, out_w)
    _checks.check_choice(op, "kind", kind, _checks.KINDS)
    grid = reference.local_warp_grid(params, (out_h, out_w), theta, kind=kind, align_corners=bool(align_corners))
    return grid.to(params.dtype)
