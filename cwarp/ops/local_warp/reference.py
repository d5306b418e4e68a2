"""Plain-PyTorch oracles: the semantics every compiled backend is tested against.

These functions are written for clarity and exactness, not speed. They are
also the baseline the benchmarks compare to ("eager reference"), so they stay
a faithful picture of what a user would write without cwarp: build the
sampling grid with tensor ops, then call ``F.grid_sample``.

By default the warp field is computed and sampled in float64 and the result
is cast back to the input dtype: that is the oracle. A uint8 image's result
is rounded half to even (torch.round, as torchvision's resampling does),
clamped to [0, 255] and cast back. ``compute_dtype=None`` computes in the
input's own dtype (float32 for uint8) instead, which is what a user would
write and what the benchmarks time as "eager reference". The loop over the K
warps accumulates into one (B, Ho, Wo) field, so no (B, K, Ho, Wo)
temporary is ever built.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

__all__ = ["local_warp", "local_warp_grid", "base_grid"]


def base_grid(out_size: Sequence[int], align_corners: bool, *, device=None,
              dtype=torch.float64) -> torch.Tensor:
    """(Ho, Wo, 2) positions p of the output pixels, as ``F.affine_grid`` lays them."""
    ho, wo = int(out_size[0]), int(out_size[1])
    if align_corners and min(ho, wo) == 1:
        # affine_grid warns about unit sizes with align_corners=True (its layout
        # changed in torch 1.3); lay them out as it does now: linspace(-1, 1),
        # a lone pixel at 0.
        def axis(n):
            return torch.linspace(-1.0, 1.0, n, dtype=dtype, device=device) if n > 1 else \
                torch.zeros(n, dtype=dtype, device=device)
        y, x = torch.meshgrid(axis(ho), axis(wo), indexing="ij")
        return torch.stack([x, y], dim=-1)
    eye = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], dtype=dtype, device=device)
    return F.affine_grid(eye, [1, 1, ho, wo], align_corners=align_corners)[0]


def local_warp_grid(params: torch.Tensor, out_size: Sequence[int],
                    theta: Optional[torch.Tensor] = None, *, kind: str = "translate",
                    align_corners: bool = False,
                    compute_dtype: Optional[torch.dtype] = torch.float64) -> torch.Tensor:
    """The sampling grid s (B, Ho, Wo, 2) of ``local_warp``, in ``compute_dtype``
    (``params.dtype`` when None)."""
    if kind not in ("translate", "gaussian"):
        raise ValueError(f"cwarp.reference.local_warp_grid(): unknown kind {kind!r}; "
                         "expected 'translate' or 'gaussian'")
    dtype = params.dtype if compute_dtype is None else compute_dtype
    prm = params.to(dtype)
    batch = prm.shape[0]
    p = base_grid(out_size, align_corners, device=params.device, dtype=dtype)  # (Ho, Wo, 2)
    q = p.expand(batch, *p.shape).clone()                                  # (B, Ho, Wo, 2)
    for k in range(prm.shape[1]):
        c = prm[:, k, None, None, 0:2]                                     # (B, 1, 1, 2)
        r = prm[:, k, None, None, 2]
        d = prm[:, k, None, None, 3:5]
        rho2 = ((p - c) ** 2).sum(-1)                                      # (B, Ho, Wo)
        r2 = r * r
        if kind == "translate":
            m2 = (d * d).sum(-1)
            u = r2 - rho2
            # Outside the disc (u <= 0) the weight is 0; a NaN u is not
            # outside, so a NaN radius or centre makes NaN positions. The
            # inner where keeps 0/0 out of the unselected branch, whose NaN
            # would otherwise leak into the gradient.
            outside = u <= 0
            w = torch.where(outside, 0.0, (u / torch.where(outside, 1.0, u + m2)) ** 2)
        else:
            # Radius 0 weighs 0 everywhere (no 0 / 0 at the centre); the inner
            # where keeps that NaN out of the gradient too.
            flat = r2 == 0
            w = torch.where(flat, 0.0, torch.exp(-rho2 / (2 * torch.where(flat, 1.0, r2))))
        q = q - w[..., None] * d
    if theta is None:
        return q
    th = theta.to(dtype)
    # s = A q + t, as F.affine_grid applies theta to the base grid.
    return torch.einsum("bhwj,bij->bhwi", q, th[:, :, :2]) + th[:, None, None, :, 2]


def nan_samples(grid: torch.Tensor, in_size: Sequence[int], padding_mode: str,
                align_corners: bool) -> torch.Tensor:
    """(B, Ho, Wo): where the padded sample position is NaN, and so the sample
    (docs/api.md, "Out-of-range and non-finite coordinates"): a NaN coordinate
    or, under reflection, an infinite one (it has no fold). Judged on the
    pixel coordinate x * scale, where an infinity times a zero scale (a
    one-pixel axis with align_corners) is NaN too, as in the kernels."""
    h, w = int(in_size[0]), int(in_size[1])
    sizes = grid.new_tensor([w, h])
    x = grid * ((sizes - 1) / 2 if align_corners else sizes / 2)
    bad = ~torch.isfinite(x) if padding_mode == "reflection" else torch.isnan(x)
    return bad.any(-1)


def local_warp(image: torch.Tensor, params: torch.Tensor, theta: Optional[torch.Tensor] = None,
               *, out_size: Optional[Sequence[int]] = None, kind: str = "translate",
               padding_mode: str = "border", align_corners: bool = False,
               compute_dtype: Optional[torch.dtype] = torch.float64) -> torch.Tensor:
    """``F.grid_sample(image, local_warp_grid(...))``, computed in ``compute_dtype``
    (the image's dtype when None, float32 for a uint8 image)."""
    if out_size is None:
        out_size = image.shape[-2:]
    if compute_dtype is not None:
        dtype = compute_dtype
    else:
        dtype = torch.float32 if image.dtype == torch.uint8 else image.dtype
    grid = local_warp_grid(params, out_size, theta, kind=kind, align_corners=align_corners,
                           compute_dtype=dtype)
    # F.grid_sample is not the contract at non-finite positions (its CPU and
    # CUDA kernels disagree there, and its CPU border backward crashes on
    # NaN): a NaN position is given a finite stand-in and its sample set to
    # NaN afterwards (zero gradient through it), and an infinity (far outside
    # with zeros, the edge with border) a far finite one.
    nan_at = nan_samples(grid, image.shape[-2:], padding_mode, align_corners)
    grid = torch.where(torch.isinf(grid), torch.sign(grid) * _FAR, grid).masked_fill(nan_at[..., None], 0.0)
    out = F.grid_sample(image.to(dtype), grid, mode="bilinear",
                        padding_mode=padding_mode, align_corners=align_corners)
    out = out.masked_fill(nan_at[:, None], float("nan"))
    if image.dtype == torch.uint8:
        # As the kernels' round_to_uint8 stores it: a NaN sample becomes 0.
        out = out.round().clamp(0, 255).nan_to_num(nan=0.0)
    return out.to(image.dtype)


# A normalized coordinate whose four corners are outside any image (3 maps
# past the far edge for every size but a one-pixel align_corners axis, which
# maps every finite coordinate to its pixel).
_FAR = 3.0
