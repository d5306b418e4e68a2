"""cwarp.warp_points: the inverse of local_warp's sampling map for points.

Parity of the C++ kernel with the PyTorch solver (the backend is an axis),
round trips through the sampling map and through a warped image, the rule
for a folded map (the pre-image nearest theta^-1 s), NaN handling, float64
gradcheck of the implicit derivative, opcheck, torch.compile, determinism,
and bad input."""
from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

import cwarp
from cwarp import reference
from cwarp.ops.warp_points.reference import warp_displacement

BACKENDS = ["cpp", "torch"]
f64 = torch.float64


def _problem(gen, batch=4, points=12, warps=4, dtype=f64, with_theta=True):
    prm = cwarp.sample_local_warps(batch, warps, generator=gen, dtype=dtype)
    pts = (torch.rand(batch, points, 2, generator=gen) * 1.6 - 0.8).to(dtype)
    theta = None
    if with_theta:
        ang = (torch.rand(batch, generator=gen) - 0.5) * 0.5
        scale = 0.9 + 0.2 * torch.rand(batch, generator=gen)
        shift = (torch.rand(batch, 2, generator=gen) - 0.5) * 0.2
        rot = torch.stack([torch.stack([ang.cos(), -ang.sin()], -1), torch.stack([ang.sin(), ang.cos()], -1)], -2)
        theta = torch.cat([rot * scale[:, None, None], shift[..., None]], -1).to(dtype)
    return pts, prm, theta


def _roundtrip_error(points, params, theta, kind, mapped):
    back = reference.sampling_map(mapped, params, theta, kind=kind)
    return (back - points.to(f64)).abs().max().item()


@pytest.mark.parametrize("kind", ["translate", "gaussian"])
@pytest.mark.parametrize("with_theta", [False, True])
def test_cpp_matches_reference(gen, kind, with_theta):
    pts, prm, theta = _problem(gen, batch=6, points=16, with_theta=with_theta)
    got = cwarp.warp_points(pts, prm, theta, kind=kind, backend="cpp")
    want = reference.warp_points(pts, prm, theta, kind=kind)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["translate", "gaussian"])
def test_roundtrip_through_sampling_map(gen, backend, kind):
    """The sampling map takes the mapped point back to the source point, far
    inside the 1e-4-of-the-image-size the contract promises."""
    pts, prm, theta = _problem(gen, batch=4, points=24)
    mapped = cwarp.warp_points(pts, prm, theta, kind=kind, backend=backend)
    assert torch.isfinite(mapped).all()
    assert _roundtrip_error(pts, prm, theta, kind, mapped) < 1e-12
    assert (mapped - pts).abs().max() > 0.01      # the warps did move the points


def test_roundtrip_through_warped_image(gen):
    """Sampling local_warp's output at the mapped point gives back the source
    value there. The image is affine in x and y, which bilinear sampling
    reproduces exactly, so what remains is the interpolation of the warped
    output between its pixels (second order in the pixel size: here at most
    a tenth of a pixel's worth of the image's slope)."""
    size = 256
    pts, prm, theta = _problem(gen, batch=3, points=20)
    pts = pts * 0.7
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, size, dtype=f64), torch.linspace(-1, 1, size, dtype=f64),
                            indexing="ij")
    image = (0.3 * xs - 0.5 * ys + 0.1).expand(3, 1, size, size).contiguous()
    warped = cwarp.local_warp(image, prm, theta, align_corners=True)
    mapped = cwarp.warp_points(pts, prm, theta)
    source_value = F.grid_sample(image, pts[:, :, None], align_corners=True)[:, 0, :, 0]
    warped_value = F.grid_sample(warped, mapped[:, :, None], align_corners=True)[:, 0, :, 0]
    torch.testing.assert_close(warped_value, source_value, rtol=0, atol=0.1 * 0.6 * 2 / size)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, f64])
def test_dtypes_and_layouts(gen, dtype):
    pts, prm, theta = _problem(gen, batch=3, points=10, dtype=f64)
    want = cwarp.warp_points(pts, prm, theta)
    low = pts.to(dtype)
    got = cwarp.warp_points(low, prm.to(dtype), theta.to(dtype))
    assert got.dtype == dtype and got.shape == pts.shape
    # Solved in float64 from the rounded inputs, rounded once at the end.
    exact = cwarp.warp_points(low.to(f64), prm.to(dtype).to(f64), theta.to(dtype).to(f64))
    torch.testing.assert_close(got, exact.to(dtype), rtol=0, atol=0)
    # Strided points (a transposed view) give the same answer.
    strided = pts.transpose(0, 1).contiguous().transpose(0, 1)
    assert not strided.is_contiguous()
    torch.testing.assert_close(cwarp.warp_points(strided, prm, theta), want, rtol=0, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_shapes_and_no_warps(gen, backend):
    pts, prm, theta = _problem(gen, batch=2, points=5)
    assert cwarp.warp_points(pts[:, :0], prm, theta, backend=backend).shape == (2, 0, 2)
    assert cwarp.warp_points(pts[:0], prm[:0], theta[:0], backend=backend).shape == (0, 5, 2)
    # No warps: the inverse affine alone.
    got = cwarp.warp_points(pts, prm[:, :0], theta, backend=backend)
    a, t = theta[:, :, :2], theta[:, :, 2]
    want = torch.linalg.solve(a[:, None], (pts - t[:, None]).unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-14)
    torch.testing.assert_close(cwarp.warp_points(pts, prm[:, :0], backend=backend), pts, rtol=0, atol=0)


def _line_roots(q, d, c, r, kind="translate", n=200001):
    """Every root t in [0, 1] of t = w(q + t d) for one warp, by a dense scan
    and bisection (independent of the solver)."""
    t = torch.linspace(0, 1, n, dtype=f64)
    x = q + t[:, None] * d
    params = torch.cat([c, torch.tensor([r], dtype=f64), d])[None, None]
    w = warp_displacement(x[None], params, kind)[0][0] @ d / (d @ d)
    g = t - w
    idx = ((g[:-1] < 0) != (g[1:] < 0)).nonzero().flatten()
    return ([0.0] if g[0] == 0 else []) + [(t[i] + t[i + 1]).item() / 2 for i in idx]


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_fold_returns_nearest_preimage(backend):
    """A translate warp with |d| < 0.6 r folds near the rim d points into:
    some source points have three pre-images on the line through them along
    d. warp_points returns the one nearest the point (smallest t)."""
    c = torch.tensor([0.0, 0.0], dtype=f64)
    r, d = 0.3, torch.tensor([0.1, 0.0], dtype=f64)
    params = torch.cat([c, torch.tensor([r], dtype=f64), d])[None, None]
    xs = torch.linspace(-0.34, -0.2, 57, dtype=f64)
    folded = 0
    for x in xs.tolist():
        q = torch.tensor([x, 0.05], dtype=f64)
        roots = _line_roots(q, d, c, r)
        got = cwarp.warp_points(q[None, None], params, backend=backend)[0, 0]
        want = q + roots[0] * d
        assert abs(got[1].item() - q[1].item()) < 1e-12
        assert abs(got[0].item() - want[0].item()) < 2e-5, (x, roots, got)
        folded += len(roots) == 3
    assert folded >= 5   # the scan did cross the fold


def test_overlapping_warps_each_point_solved(gen):
    """Overlapping warps (every centre in a small region, large displacements)
    fold in two dimensions; every point still gets an exact pre-image."""
    batch, k = 16, 6
    prm = cwarp.sample_local_warps(batch, k, radius=(0.3, 0.5), magnitude=(0.15, 0.3),
                                   centers=torch.zeros(1, 2), center_jitter=0.1, generator=gen, dtype=f64)
    pts = (torch.rand(batch, 64, 2, generator=gen, dtype=f64) - 0.5)
    for kind in ("translate", "gaussian"):
        mapped = cwarp.warp_points(pts, prm, kind=kind)
        assert torch.isfinite(mapped).all(), kind
        assert _roundtrip_error(pts, prm, None, kind, mapped) < 1e-12


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_in_nan_out(gen, backend):
    pts, prm, theta = _problem(gen, batch=2, points=6)
    pts = pts.clone()
    pts[0, 2, 0] = float("nan")
    pts[1, 3, 1] = float("inf")
    got = cwarp.warp_points(pts, prm, theta, backend=backend)
    assert torch.isnan(got[0, 2]).all() and torch.isnan(got[1, 3]).all()
    keep = torch.ones(2, 6, dtype=torch.bool)
    keep[0, 2] = keep[1, 3] = False
    clean = cwarp.warp_points(torch.nan_to_num(pts, nan=0.0, posinf=0.0), prm, theta, backend=backend)
    torch.testing.assert_close(got[keep], clean[keep], rtol=0, atol=0)
    # A singular theta has no inverse: its image's points are NaN.
    singular = theta.clone()
    singular[1, :, :2] = torch.tensor([[1.0, 2.0], [0.5, 1.0]], dtype=f64)
    got = cwarp.warp_points(clean.new_zeros(2, 6, 2), prm, singular, backend=backend)
    assert torch.isnan(got[1]).all() and torch.isfinite(got[0]).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_point_leaves_other_gradients_finite(gen, backend):
    pts, prm, theta = _problem(gen, batch=2, points=6)
    pts = pts.clone()
    pts[0, 1] = float("nan")
    prm.requires_grad_(True)
    theta.requires_grad_(True)
    out = cwarp.warp_points(pts, prm, theta, backend=backend)
    torch.nan_to_num(out, nan=0.0).sum().backward()
    assert torch.isfinite(prm.grad).all() and torch.isfinite(theta.grad).all()
    assert prm.grad.abs().sum() > 0


# Finite differences through the PyTorch solver's iterations are what is slow.
@pytest.mark.parametrize("backend", ["cpp", pytest.param("torch", marks=pytest.mark.slow)])
@pytest.mark.parametrize("kind", ["translate", "gaussian"])
def test_gradcheck(gen, backend, kind):
    pts, prm, theta = _problem(gen, batch=2, points=4, warps=3)
    # Points near the warps, so that every input's derivative is exercised.
    pts = (prm[:, :, :2].repeat(1, 2, 1)[:, :4] + 0.05).detach()
    inputs = (pts.requires_grad_(), prm.requires_grad_(), theta.requires_grad_())

    def fn(p, w, t):
        return cwarp.warp_points(p, w, t, kind=kind, backend=backend)

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_gradient_matches_reference(gen):
    pts, prm, theta = _problem(gen, batch=3, points=8)
    grads = []
    for backend in BACKENDS:
        leaves = [t.clone().requires_grad_() for t in (pts, prm, theta)]
        out = cwarp.warp_points(*leaves, backend=backend)
        out.backward(torch.ones_like(out))
        grads.append([t.grad for t in leaves])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_opcheck(gen):
    pts, prm, theta = _problem(gen, batch=2, points=5, dtype=torch.float32)
    for th in (theta, None):
        torch.library.opcheck(torch.ops.cwarp.warp_points.default, (pts, prm, th, "translate"))
        torch.library.opcheck(torch.ops.cwarp.warp_points.default,
                              (pts.requires_grad_(), prm.requires_grad_(), th, "gaussian"),
                              test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"))
        pts, prm = pts.detach(), prm.detach()


def test_compile_fullgraph(gen):
    pts, prm, theta = _problem(gen, batch=2, points=5, dtype=torch.float32)

    def fn(p, w, t):
        return cwarp.warp_points(p, w, t) * 2

    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(pts, prm, theta), fn(pts, prm, theta), rtol=0, atol=0)


def test_deterministic_across_threads(gen, restore_threads):
    pts, prm, theta = _problem(gen, batch=8, points=64)
    torch.set_num_threads(1)
    one = cwarp.warp_points(pts, prm, theta)
    torch.set_num_threads(2)
    two = cwarp.warp_points(pts, prm, theta)
    assert torch.equal(one, two)
    assert torch.equal(cwarp.warp_points(pts, prm, theta), two)


PUB = re.escape("cwarp.warp_points():")


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_input(gen, backend):
    pts, prm, theta = _problem(gen, batch=2, points=3, dtype=torch.float32)
    cases = [
        (pts[0], prm, None, ValueError, r"expected points of shape \(B, P, 2\), got \[3, 2\]"),
        (pts[..., :1], prm, None, ValueError, r"expected points of shape \(B, P, 2\), got \[2, 3, 1\]"),
        (pts.to(torch.int32), prm, None, TypeError, r"expected points of a floating dtype"),
        (pts, prm[:1], None, ValueError, r"expected params of shape \(B, K, 5\) with B = 2, got \[1, 4, 5\]"),
        (pts, prm.to(torch.int64), None, TypeError, r"expected params of a floating dtype, got torch.int64"),
        (pts, prm.to("meta"), None, RuntimeError, r"expected params on the points' device cpu, got meta"),
        (pts, prm, theta[:1], ValueError, r"expected theta of shape \(B, 2, 3\) with B = 2, got \[1, 2, 3\]"),
        (pts, prm, theta.to("meta"), RuntimeError, r"expected theta on the points' device cpu, got meta"),
        ([[0.0, 0.0]], prm, None, TypeError, r"expected points to be a Tensor, got list"),
    ]
    for p, w, t, exc, msg in cases:
        with pytest.raises(exc, match=PUB + " " + msg):
            cwarp.warp_points(p, w, t, backend=backend)
    with pytest.raises(ValueError, match=PUB + r" unknown kind 'elastic'"):
        cwarp.warp_points(pts, prm, kind="elastic", backend=backend)


def test_bad_backend_and_device(gen):
    pts, prm, theta = _problem(gen, batch=2, points=3, dtype=torch.float32)
    with pytest.raises(ValueError, match=PUB + r" unknown backend 'triton'; expected one of 'auto', 'cpp', 'torch'"):
        cwarp.warp_points(pts, prm, backend="triton")
    for backend in ("auto", "cpp"):
        with pytest.raises(RuntimeError, match=PUB + r" no kernel for points on meta; use backend='torch'"):
            cwarp.warp_points(pts.to("meta"), prm.to("meta"), backend=backend)


def test_registered_op_checks_in_cpp(gen):
    pts, prm, _ = _problem(gen, batch=2, points=3, dtype=torch.float32)
    with pytest.raises(ValueError, match=re.escape("cwarp::warp_points():") + r" expected points of shape"):
        torch.ops.cwarp.warp_points(pts[0], prm, None, "translate")
    with pytest.raises(ValueError, match=re.escape("cwarp::warp_points():") + r" unknown kind 'x'"):
        torch.ops.cwarp.warp_points(pts, prm, None, "x")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_cuda(gen, backend):
    pts, prm, theta = _problem(gen, batch=3, points=8)
    leaves = [t.cuda().requires_grad_() for t in (pts, prm, theta)]
    got = cwarp.warp_points(*leaves, backend=backend)
    assert got.device.type == "cuda"
    torch.testing.assert_close(got.cpu(), cwarp.warp_points(pts, prm, theta), rtol=0, atol=1e-12)
    got.sum().backward()
    assert all(t.grad is not None and t.grad.device.type == "cuda" for t in leaves)
