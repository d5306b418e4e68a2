"""Shared parity helpers: per-dtype tolerances and a comparison that shows where it failed.

`assert_close_verbose` follows Liger-Kernel's assert_verbose_allclose: on failure
it prints how many elements mismatch and the first few (index, actual,
expected, |diff|), which is what one needs to debug a kernel.
"""
from __future__ import annotations

import math

import torch

# (atol, rtol) for values in [0, 1] (the tests' images); half types are
# compared with the oracle evaluated on the *same* half input, so the budget
# covers the final rounding to the half type plus float32 opmath.
TOL = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (3e-5, 1e-5),
    torch.bfloat16: (1e-2, 1e-2),
    torch.float16: (2e-3, 2e-3),
}


def assert_close_verbose(actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float,
                         max_print: int = 5, what: str = "") -> None:
    """Elementwise |actual - expected| <= atol + rtol * |expected|; NaN matches NaN only."""
    assert actual.shape == expected.shape, f"{what}: shape {list(actual.shape)} != {list(expected.shape)}"
    a = actual.detach().to(torch.float64).cpu()
    e = expected.detach().to(torch.float64).cpu()
    both_nan = torch.isnan(a) & torch.isnan(e)
    same_inf = torch.isinf(a) & torch.isinf(e) & (a == e)
    close = ((a - e).abs() <= atol + rtol * e.abs()) | both_nan | same_inf
    if bool(close.all()):
        return
    bad = (~close).nonzero()
    lines = [f"{what}: {bad.shape[0]} / {a.numel()} elements mismatch (atol={atol:g}, rtol={rtol:g}); "
             f"max |diff| = {(a - e).abs()[~close].max().item():.3e}; first {min(max_print, bad.shape[0])}:"]
    for idx in bad[:max_print].tolist():
        i = tuple(idx)
        lines.append(f"  at {list(i)}: actual {a[i].item():.9g}, expected {e[i].item():.9g}, "
                     f"|diff| {abs(a[i].item() - e[i].item()):.3e}")
    msg = "\n".join(lines)
    print(msg)
    raise AssertionError(msg)


# ---- random inputs shared by the tests and benchmarks ----

def random_image(shape, gen, dtype=torch.float32) -> torch.Tensor:
    return torch.rand(shape, generator=gen, dtype=torch.float64).to(dtype)


def random_params(batch, k, gen, dtype=torch.float32, radius=(0.2, 0.6), magnitude=(0.05, 0.25)) -> torch.Tensor:
    """Warps whose discs overlap the image (centres in [-0.6, 0.6]^2)."""
    c = (torch.rand(batch, k, 2, generator=gen, dtype=torch.float64) * 1.2 - 0.6)
    r = radius[0] + (radius[1] - radius[0]) * torch.rand(batch, k, 1, generator=gen, dtype=torch.float64)
    m = magnitude[0] + (magnitude[1] - magnitude[0]) * torch.rand(batch, k, 1, generator=gen, dtype=torch.float64)
    phi = 2 * math.pi * torch.rand(batch, k, 1, generator=gen, dtype=torch.float64)
    return torch.cat([c, r, m * torch.cos(phi), m * torch.sin(phi)], dim=-1).to(dtype)


def random_theta(batch, gen, dtype=torch.float32) -> torch.Tensor:
    """Random affines: rotation, anisotropic scale (zoom-in crops and zoom-outs),
    translation, and a horizontal flip for odd images."""
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(batch, generator=gen, dtype=torch.float64)
    ang, sx, sy, tx, ty = u(-0.6, 0.6), u(0.5, 1.4), u(0.5, 1.4), u(-0.3, 0.3), u(-0.3, 0.3)
    flip = torch.ones(batch, dtype=torch.float64)
    flip[1::2] = -1.0
    cos, sin = torch.cos(ang), torch.sin(ang)
    theta = torch.stack([
        torch.stack([sx * cos * flip, -sy * sin, tx], -1),
        torch.stack([sx * sin * flip, sy * cos, ty], -1),
    ], dim=1)
    return theta.to(dtype)
