"""The oracle of cwarp::augment_views: torchvision v2 functional ops plus
``cwarp.reference.local_warp``, applied view by view with the same parameters.

Written for clarity, not speed (it loops over every (image, view) pair). What
each step is, and the tolerance the parity tests allow the fused kernels
against it (float32 output):

================  =============================================  =========
step              oracle                                         atol
================  =============================================  =========
geometry          reference.local_warp (grid_sample), float64    1e-5
value range       clamp to [0, 1]                                exact
brightness        TF.adjust_brightness                           1e-5
contrast          blend with contrast_mean(), see below          1e-5
saturation        TF.adjust_saturation                           1e-5
hue               TF.adjust_hue (RGB -> HSV -> RGB in float32)   1e-4
grayscale         TF.rgb_to_grayscale(num_output_channels=C)     1e-5
normalize         TF.normalize                                   1e-5 x 1/std
================  =============================================  =========

The tolerances compound; the tests use atol 2e-4 / std on the normalized
output (float32), and 1e-2 / std for bfloat16 output. Hue is the loosest:
near a sector boundary of HSV a rounding difference in h flips the sector,
which moves a value by up to one float32 ulp of 6 h.

Contrast: torchvision's adjust_contrast blends with the mean gray value of
the image it is given, i.e. of the already cropped, warped and
brightness-adjusted view. The fused kernel cannot know that mean before it
renders the view, so it uses ``clamp(brightness * mean_gray)`` where
``mean_gray`` is the mean gray value of the whole *source* image (one cheap
pre-pass, ``source_mean_gray``). The oracle here uses that same value, so the
parity tests check the arithmetic; the difference from torchvision's
statistics is a documented modelling choice (cwarp/nn/augment.py).
"""
from __future__ import annotations

import torch
import torchvision.transforms.v2.functional as TF

from cwarp._constants import GRAY_WEIGHTS
from cwarp.ops.local_warp import reference

__all__ = ["render", "source_mean_gray"]


def source_mean_gray(src: torch.Tensor) -> torch.Tensor:
    """(B,) mean gray value in [0, 1] scale of each source image (uint8 or float).

    Gray is linear in the channels, so the mean gray is the luma-weighted sum
    of the channel means. The kernels compute the same value in their
    pre-pass (float / int32 row sums, double totals); this oracle in float64.
    """
    B, C, H, W = src.shape
    means = src.sum(dim=(2, 3), dtype=torch.float64) / float(H * W)  # (B, C)
    if C == 3:
        w = torch.tensor(GRAY_WEIGHTS, dtype=torch.float64, device=src.device)
        means = means @ w
    else:
        means = means[:, 0]
    if src.dtype == torch.uint8:
        means = means * (1.0 / 255.0)
    return means.float().contiguous()


def _to_unit_float(src: torch.Tensor) -> torch.Tensor:
    if src.dtype == torch.uint8:
        return src.to(torch.float64) / 255.0
    return src.to(torch.float64)


def render(src: torch.Tensor, theta: torch.Tensor, warps: torch.Tensor, color: torch.Tensor,
           mean: torch.Tensor, std: torch.Tensor, size: int, kind: str = "translate",
           padding_mode: str = "border", out_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, V, C, size, size): what cwarp::augment_views computes, step by step."""
    B, C = src.shape[:2]
    mean_gray = source_mean_gray(src)
    V = theta.shape[1]
    img = _to_unit_float(src)
    out = torch.empty(B, V, C, size, size, dtype=torch.float32, device=src.device)
    for v in range(V):
        # Geometry in float64 (the local_warp oracle), then float32 for the
        # colour ops, as torchvision runs them on a float32 image.
        geo = reference.local_warp(img, warps[:, v].double(), theta[:, v].double(), out_size=(size, size),
                                   kind=kind, padding_mode=padding_mode, align_corners=False)
        geo = geo.float().clamp(0.0, 1.0)
        for b in range(B):
            x = geo[b]
            fb, fc, fs, hue, gray = (float(t) for t in color[b, v])
            x = TF.adjust_brightness(x, fb)
            m = min(max(float(mean_gray[b]) * fb, 0.0), 1.0)
            x = (x * fc + m * (1.0 - fc)).clamp(0.0, 1.0)
            x = TF.adjust_saturation(x, fs)
            if hue != 0.0:
                x = TF.adjust_hue(x, hue)
            if gray != 0.0:
                x = TF.rgb_to_grayscale(x, num_output_channels=C)
            out[b, v] = TF.normalize(x, mean.tolist(), std.tolist())
    return out.to(out_dtype)
