"""cwarp::augment_views, the fused view renderer: one call renders V views of a batch.

The low-level functional form under ``cwarp.ContraWarpAugment`` (which samples
the parameters): per output pixel the affine (crop, resize, rotation, flip)
composed with the local warps, a bilinear sample of the uint8 or float32
source, colour jitter, grayscale and normalization.
"""
from __future__ import annotations

import torch

from cwarp.ops import _autocast, _checks
from cwarp.ops._dispatch import resolve_backend
from cwarp.ops.augment_views import reference, register

__all__ = ["augment_views"]

_OP = "cwarp.augment_views"


def augment_views(src: torch.Tensor, theta: torch.Tensor, warps: torch.Tensor, color: torch.Tensor,
                  mean: torch.Tensor, std: torch.Tensor, size: int, kind: str = "translate",
                  padding_mode: str = "border", out_dtype: torch.dtype = torch.float32, *,
                  backend: str = "auto") -> torch.Tensor:
    """Render views (B, V, C, size, size) of ``src`` (B, C, H, W), uint8 or float32 in [0, 1].

    Args:
        theta: (B, V, 2, 3) output position -> source position, per view.
        warps: (B, V, K, 5) local warps (cx, cy, r, dx, dy) in view coordinates.
        color: (B, V, 5) brightness, contrast, saturation, hue shift, grayscale flag.
        mean, std: (C,) normalization.
        backend: "auto", "cpp", "triton" or "torch" (the reference).

    Under ``torch.autocast`` it runs as outside it (docs/api.md, "Autocast").
    """
    if _autocast.enabled(src):
        src, theta, warps, color, mean, std = _autocast.cast(_autocast.POLICY["augment_views"], src, theta, warps,
                                                             color, mean, std)
        with _autocast.disabled(src.device.type):
            return augment_views(src, theta, warps, color, mean, std, size, kind, padding_mode, out_dtype,
                                 backend=backend)
    args = (src, theta, warps, color, mean, std, size, kind, padding_mode, out_dtype)
    backend = resolve_backend(_OP, backend, src.device)
    if backend == "torch":
        _checks.check_augment_views_inputs(register.OP, src, theta, warps, color, mean, std, size, out_dtype)
        return reference.render(*args)
    if backend == "triton":
        from cwarp.ops.augment_views import triton_kernels  # imports triton only when asked for
        return triton_kernels.augment_views(*args)
    return register.augment_views_op(*args)
