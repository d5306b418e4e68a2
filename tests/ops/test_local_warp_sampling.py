"""cwarp.sample_local_warps: shape, ranges, reproducibility, landmark centring, bad arguments."""
from __future__ import annotations

import math

import pytest
import torch

import cwarp
from cwarp.ops.local_warp.sampling import FACE_REGION


def _sample(seed=0, **kw):
    return cwarp.sample_local_warps(kw.pop("B", 64), kw.pop("K", 8), generator=torch.Generator().manual_seed(seed),
                                    **kw)


def test_shape_and_ranges():
    p = _sample(B=500, K=6, radius=(0.1, 0.3), magnitude=(0.02, 0.2))
    assert p.shape == (500, 6, 5) and p.dtype == torch.float32
    cx, cy, r, dx, dy = p.unbind(-1)
    x0, x1, y0, y1 = FACE_REGION
    assert bool(((cx >= x0) & (cx <= x1) & (cy >= y0) & (cy <= y1)).all())
    assert bool(((r >= 0.1) & (r <= 0.3)).all())
    m = torch.hypot(dx, dy)
    assert bool(((m >= 0.02 - 1e-6) & (m <= 0.2 + 1e-6)).all())
    # Spread over the whole ranges, directions all around the circle.
    assert float(cx.min()) < x0 + 0.05 and float(cx.max()) > x1 - 0.05
    assert float(r.min()) < 0.11 and float(r.max()) > 0.29
    angle = torch.atan2(dy, dx)
    counts = torch.histc(angle, bins=8, min=-math.pi, max=math.pi)
    assert bool((counts > 0.5 * counts.mean()).all()), counts


def test_empty():
    assert _sample(B=0, K=3).shape == (0, 3, 5)
    assert _sample(B=4, K=0).shape == (4, 0, 5)


def test_reproducible_from_generator():
    assert torch.equal(_sample(7), _sample(7))
    assert not torch.equal(_sample(7), _sample(8))


def test_device_and_dtype_cast():
    a = _sample(3)
    assert torch.equal(_sample(3, device="cpu"), a)
    b = _sample(3, dtype=torch.float64)
    assert b.dtype == torch.float64 and torch.equal(b, a.double())
    assert torch.equal(_sample(3, dtype=torch.bfloat16), a.to(torch.bfloat16))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_same_values_on_cuda():
    assert torch.equal(_sample(5, device="cuda").cpu(), _sample(5))


def test_centres_on_landmarks_L2():
    jitter = 0.02
    lm = cwarp.FACE_LANDMARKS_5
    p = _sample(B=300, K=4, centers=lm, center_jitter=jitter)
    c = p[..., :2]
    dist = (c[:, :, None, :] - lm[None, None]).norm(dim=-1)   # (B, K, L)
    assert float(dist.min(-1).values.max()) < 6 * jitter
    # Every landmark is used.
    assert set(dist.argmin(-1).flatten().tolist()) == set(range(lm.shape[0]))
    exact = _sample(B=50, K=3, centers=lm, center_jitter=0.0)[..., :2]
    assert bool((exact[:, :, None, :] == lm[None, None]).all(-1).any(-1).all())


def test_centres_on_landmarks_BL2():
    B, L, jitter = 40, 3, 0.01
    g = torch.Generator().manual_seed(0)
    lm = torch.rand(B, L, 2, generator=g) * 1.6 - 0.8
    p = _sample(B=B, K=5, centers=lm, center_jitter=jitter)
    own = (p[:, :, None, :2] - lm[:, None]).norm(dim=-1).min(-1).values    # to its own image's landmarks
    assert float(own.max()) < 6 * jitter
    # Not the landmarks of another image.
    other = (p[:, :, None, :2] - lm.roll(1, 0)[:, None]).norm(dim=-1).min(-1).values
    assert float(other.median()) > 10 * jitter


def test_centres_default_device_follows_centers():
    assert _sample(centers=cwarp.FACE_LANDMARKS_5.double(), dtype=torch.float64).device.type == "cpu"


@pytest.mark.parametrize("kwargs,exc,msg", [
    ({"B": -1}, ValueError, r"expected batch_size to be an int >= 0, got -1"),
    ({"B": 2.0}, ValueError, r"expected batch_size to be an int >= 0"),
    ({"K": True}, ValueError, r"expected num_warps to be an int >= 0"),
    ({"radius": (0.3, 0.1)}, ValueError, r"expected radius as \(min, max\) with 0 <= min <= max"),
    ({"radius": "ab"}, ValueError, r"expected radius as \(min, max\)"),
    ({"magnitude": (-0.1, 0.1)}, ValueError, r"expected magnitude as \(min, max\) with 0 <= min <= max"),
    ({"magnitude": (0.0, float("inf"))}, ValueError, r"expected magnitude as \(min, max\)"),
    ({"center_jitter": -0.1}, ValueError, r"expected center_jitter >= 0"),
    ({"dtype": torch.int32}, TypeError, r"expected a floating dtype, got torch.int32"),
    ({"centers": [[0.0, 0.0]]}, TypeError, r"expected centers to be a Tensor, got list"),
    ({"centers": torch.zeros(5, 3)}, ValueError, r"expected centers of shape \(L, 2\) or \(B, L, 2\) with B = 64"),
    ({"centers": torch.zeros(3, 5, 2)}, ValueError, r"expected centers of shape \(L, 2\) or \(B, L, 2\) with B = 64, got \[3, 5, 2\]"),
    ({"centers": torch.zeros(0, 2)}, ValueError, r"expected at least one centre"),
])
def test_bad_arguments(kwargs, exc, msg):
    with pytest.raises(exc, match=r"cwarp\.sample_local_warps\(\): " + msg):
        _sample(**kwargs)
