"""Random local-warp parameters, sampled outside the kernels.

Kernels are pure functions of their inputs; randomness lives here, as small
(B, K, 5) tensors drawn from an explicit torch.Generator.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

from cwarp._constants import DEFAULT_WARP_MAGNITUDE, DEFAULT_WARP_RADIUS
from cwarp.ops._checks import check_generator, check_has_data, check_range

__all__ = ["FACE_LANDMARKS_5", "sample_local_warps", "draw_local_warps", "FACE_REGION", "DEFAULT_CENTER_JITTER"]

# Canonical 5 landmarks of an aligned face crop (the usual 112 x 112 ArcFace
# template), normalized like grid_sample coordinates (x right, y down, [-1, 1]):
# left eye, right eye, nose tip, left mouth corner, right mouth corner
# (left / right as seen in the image).
FACE_LANDMARKS_5 = torch.tensor([
    [-0.3162, -0.0768],
    [0.3131, -0.0803],
    [0.0004, 0.2810],
    [-0.2580, 0.6494],
    [0.2638, 0.6465],
])

# (x_min, x_max, y_min, y_max) of the central face region where centres fall
# when no landmarks are given: the eyes-to-mouth box of FACE_LANDMARKS_5,
# slightly enlarged.
FACE_REGION = (-0.45, 0.45, -0.3, 0.75)

# Standard deviation of a warp centre around the landmark it is drawn at.
DEFAULT_CENTER_JITTER = 0.05


def sample_local_warps(batch_size: int, num_warps: int, *, radius=DEFAULT_WARP_RADIUS,
                       magnitude=DEFAULT_WARP_MAGNITUDE, centers: Optional[torch.Tensor] = None,
                       center_jitter: float = DEFAULT_CENTER_JITTER, generator: Optional[torch.Generator] = None, device=None,
                       dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Draw (batch_size, num_warps, 5) local-warp rows (cx, cy, r, dx, dy).

    Directions are uniform on the circle; radius and magnitude uniform in their
    ranges. Centres are uniform over FACE_REGION, or, when ``centers`` (L, 2)
    or (B, L, 2) is given, each warp sits at a random one of those points plus
    N(0, center_jitter^2) jitter.

    Sampling happens on the generator's device (the CPU by default) in float32
    and the result is then moved to ``device``: the same generator state gives
    the same parameters on every device.
    """
    op = "cwarp.sample_local_warps"
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 0:
        raise ValueError(f"{op}(): expected batch_size to be an int >= 0, got {batch_size!r}")
    if not isinstance(num_warps, int) or isinstance(num_warps, bool) or num_warps < 0:
        raise ValueError(f"{op}(): expected num_warps to be an int >= 0, got {num_warps!r}")
    radius = check_range(f"{op}()", "radius", radius, low=0.0, scalar="pair")
    magnitude = check_range(f"{op}()", "magnitude", magnitude, low=0.0, scalar="pair")
    if not math.isfinite(float(center_jitter)) or center_jitter < 0:
        raise ValueError(f"{op}(): expected center_jitter >= 0, got {center_jitter!r}")
    if dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise TypeError(f"{op}(): expected a floating dtype, got {dtype}")
    check_generator(op, generator)
    if centers is not None:
        if not isinstance(centers, torch.Tensor):
            raise TypeError(f"{op}(): expected centers to be a Tensor, got {type(centers).__name__}")
        if not (centers.dim() == 2 and centers.shape[-1] == 2) and \
                not (centers.dim() == 3 and centers.shape[0] == batch_size and centers.shape[-1] == 2):
            raise ValueError(f"{op}(): expected centers of shape (L, 2) or (B, L, 2) with B = {batch_size}, "
                             f"got {list(centers.shape)}")
        if centers.shape[-2] == 0:
            raise ValueError(f"{op}(): expected at least one centre, got centers of shape {list(centers.shape)}")
        check_has_data(op, "centers", centers)
    return draw_local_warps(batch_size, num_warps, radius, magnitude, centers, float(center_jitter), generator,
                            device, dtype)


def draw_local_warps(B: int, K: int, radius: Tuple[float, float], magnitude: Tuple[float, float],
                     centers: Optional[torch.Tensor], center_jitter: float, generator: Optional[torch.Generator],
                     device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """sample_local_warps without its argument checks, for callers that checked them where they entered
    (ContraWarpAugment's and the transforms' constructors): the same draws from the same generator."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    if device is None:
        device = centers.device if isinstance(centers, torch.Tensor) else gen_device
    f32 = dict(device=gen_device, dtype=torch.float32)

    if centers is None:
        x0, x1, y0, y1 = FACE_REGION
        u = torch.rand(B, K, 2, generator=generator, **f32)
        c = torch.stack([x0 + (x1 - x0) * u[..., 0], y0 + (y1 - y0) * u[..., 1]], dim=-1)
    else:
        pts = (centers.unsqueeze(0).expand(B, -1, -1) if centers.dim() == 2 else centers).to(**f32)
        L = pts.shape[1]
        idx = torch.randint(0, L, (B, K), generator=generator, device=gen_device)
        c = torch.gather(pts, 1, idx[..., None].expand(B, K, 2))
        c = c + center_jitter * torch.randn(B, K, 2, generator=generator, **f32)
    r_lo, r_hi = radius
    m_lo, m_hi = magnitude
    r = r_lo + (r_hi - r_lo) * torch.rand(B, K, generator=generator, **f32)
    m = m_lo + (m_hi - m_lo) * torch.rand(B, K, generator=generator, **f32)
    phi = (2 * math.pi) * torch.rand(B, K, generator=generator, **f32)
    out = torch.stack([c[..., 0], c[..., 1], r, m * torch.cos(phi), m * torch.sin(phi)], dim=-1)
    return out.to(device=device, dtype=dtype)
