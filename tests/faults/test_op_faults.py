"""Issue 31, "Ops": what the ops do with input at the edge of their domain, the same in every backend.

- Non-finite sampling positions (an Inf displacement, a NaN or -Inf radius,
  a NaN or Inf in theta): every backend gives what the reference gives
  (docs/api.md, "Out-of-range and non-finite coordinates": a NaN position
  samples NaN and adds nothing to any gradient, an infinite one reads far
  outside under zeros padding and the edge under border, and has no fold
  under reflection), forward and backward, for each padding mode and warp
  kind; uint8 images store 0 there; the fused view renderer agrees too.
- A warp of radius 0 moves nothing, of either kind, in every backend (the
  Gaussian formula is 0 / 0 at its centre).
- contrastive_loss: the documented range edge (squared row norms within the
  compute type), and float64 beyond it.
- ContraWarpAugment: NaN mean, a replay with another num_negatives, a
  generator that is not one, meta tensors: one clear error each.
- warp_points: a documented limit on K, and the reference's memory bounded.
"""
from __future__ import annotations

import itertools

import pytest
import torch

import cwarp
from cwarp import reference
from cwarp.ops.local_warp.reference import nan_samples
from cwarp.ops.warp_points.reference import MAX_WARPS
from parity import (TOL, assert_close_verbose, backend_grid, input_grads, poisoned_warp_inputs, random_image,
                    random_params, random_theta)

KINDS = ("translate", "gaussian")
PADDINGS = ("zeros", "border", "reflection")
NAN, INF = float("nan"), float("inf")

# (where, value): the cases, then NaN / Inf / 1e30 in every parameter.
BAD = [("theta0", NAN), ("dx", INF), ("r", NAN), ("r", -INF), ("theta2", INF)]
BAD_EVERYWHERE = [(where, value) for where in ("cx", "cy", "r", "dx", "dy", *(f"theta{i}" for i in range(6)))
                  for value in (NAN, INF, -INF, 1e30, -1e30)]


def _huge_reflection(params, theta, out, kind, padding):
    """Pixels whose position is finite but beyond 1e6: reflecting 1e29 has no meaningful bits, so there the
    backends need only give a convex combination of pixels (B, Ho, Wo)."""
    grid_ = reference.local_warp_grid(params, out, theta, kind=kind)
    huge = (grid_.abs() > 1e6).any(-1) & torch.isfinite(grid_).all(-1)
    return huge if padding == "reflection" else torch.zeros_like(huge)


# The interpreter evaluates NaN and Inf coordinates in numpy, which warns about them.
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize(*backend_grid(
    "where,value,kind,padding", full=[(*bad, kind, padding) for bad in BAD_EVERYWHERE
                                      for kind, padding in itertools.product(KINDS, PADDINGS)],
    small=[(*bad, "translate", padding) for bad in BAD for padding in PADDINGS]))
def test_nonfinite_positions_sample_as_the_reference_does(be, where, value, kind, padding, gen):
    image, params, theta = poisoned_warp_inputs(where, value, gen)
    out = (10, 12)   # even: no base coordinate is 0, so theta = inf never meets a q of exactly 0
    got = cwarp.local_warp(*be.put(image, params, theta), out_size=out, kind=kind, padding_mode=padding,
                           backend=be.name).cpu()
    want = reference.local_warp(image, params, theta, out_size=out, kind=kind, padding_mode=padding)
    loose = _huge_reflection(params, theta, out, kind, padding)[:, None].expand_as(got)
    assert_close_verbose(got[~loose], want[~loose], *TOL[torch.float64], what=f"{where}={value}")
    lo, hi = image.amin(dim=(2, 3), keepdim=True).expand_as(got), image.amax(dim=(2, 3), keepdim=True).expand_as(got)
    assert bool(((got >= lo) & (got <= hi))[loose].all())
    assert torch.isfinite(got[0]).all(), "the clean image is untouched"


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize(*backend_grid(
    "where,value,kind,padding", full=[(*bad, kind, padding) for bad in BAD
                                      for kind, padding in itertools.product(KINDS, PADDINGS)],
    small=[("theta0", NAN, "gaussian", "zeros"), ("dx", INF, "translate", "border")]))
def test_nonfinite_positions_have_the_references_gradients(be, where, value, kind, padding, gen):
    image, params, theta = poisoned_warp_inputs(where, value, gen)
    grad_out = random_image((2, 3, 10, 12), gen, torch.float64)

    def fn(backend):
        return lambda i, p, t: cwarp.local_warp(i, p, t, out_size=(10, 12), kind=kind, padding_mode=padding,
                                                backend=backend)

    got = input_grads(fn(be.name), be.put(image, params, theta), be.put(grad_out))
    want = input_grads(fn("torch"), (image, params, theta), grad_out)
    for name, g, w in zip(("image", "params", "theta"), got, want):
        assert_close_verbose(g.cpu(), w, 1e-8, 1e-6, what=f"d {name}, {where}={value}")
    assert torch.isfinite(got[0].cpu()).all(), "a NaN sample adds nothing to the image's gradient"


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize(*backend_grid(
    "dtype,where,value", full=[(dtype, *bad) for dtype in (torch.float32, torch.bfloat16, torch.float16) for bad in BAD],
    names=("cpp", "cuda-cpp")))
def test_nonfinite_positions_low_precision(be, dtype, where, value, gen):
    image, params, theta = poisoned_warp_inputs(where, value, gen, dtype)
    for padding, kind in itertools.product(PADDINGS, KINDS):
        got = cwarp.local_warp(*be.put(image, params.float(), theta.float()), kind=kind, padding_mode=padding,
                               backend=be.name).cpu()
        grid_ = reference.local_warp_grid(params, image.shape[-2:], theta, kind=kind)
        nan_at = nan_samples(grid_, image.shape[-2:], padding, False)[:, None].expand_as(got)
        assert torch.equal(torch.isnan(got), nan_at), f"{kind}, {padding}: NaN exactly at the NaN positions"
        assert torch.isfinite(got[~nan_at]).all()


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize(*backend_grid("padding", full=PADDINGS, small=["border"]))
def test_nonfinite_positions_store_zero_in_uint8(be, padding, gen):
    image = (random_image((2, 3, 9, 11), gen) * 255).round().to(torch.uint8)
    params, theta = random_params(2, 2, gen), random_theta(2, gen)
    theta[1, 0, 0] = NAN
    got = cwarp.local_warp(*be.put(image, params, theta), padding_mode=padding, backend=be.name).cpu()
    want = reference.local_warp(image, params, theta, padding_mode=padding)
    assert torch.equal(got[1], torch.zeros_like(got[1]))
    assert torch.equal(want[1], got[1])
    assert (got[0].int() - want[0].int()).abs().max() <= 1


@pytest.mark.filterwarnings("ignore:divide by zero encountered:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize(*backend_grid("kind", full=KINDS, small=["gaussian"]))
def test_a_zero_radius_moves_nothing(be, kind, gen):
    """r = 0 with the centre on a pixel centre (where the Gaussian formula is 0 / 0, and whether a pixel sits
    exactly there is a matter of rounding): no warp at all, in every backend, with the reference's gradients."""
    image = random_image((1, 2, 7, 9), gen, torch.float64)
    params = torch.tensor([[[0.0, 0.0, 0.0, 0.1, -0.2], [0.3, -0.2, 0.4, 0.05, 0.1]]], dtype=torch.float64)
    got = cwarp.local_warp(*be.put(image, params), kind=kind, backend=be.name).cpu()
    still = cwarp.local_warp(*be.put(image, params[:, 1:]), kind=kind, backend=be.name).cpu()
    assert_close_verbose(got, still, *TOL[torch.float64], what=f"{kind}: r = 0 moves nothing")
    assert_close_verbose(got, reference.local_warp(image, params, kind=kind), *TOL[torch.float64], what=kind)
    grad_out = random_image(got.shape, gen, torch.float64)
    fn = lambda backend: lambda i, p: cwarp.local_warp(i, p, kind=kind, backend=backend)  # noqa: E731
    got_g = input_grads(fn(be.name), be.put(image, params), be.put(grad_out))
    want_g = input_grads(fn("torch"), (image, params), grad_out)
    assert torch.equal(want_g[1][0, 0], torch.zeros(5, dtype=torch.float64))
    for name, g, w in zip(("image", "params"), got_g, want_g):
        assert_close_verbose(g.cpu(), w, 1e-8, 1e-6, what=f"d {name}")


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize(*backend_grid("padding", full=PADDINGS, small=["zeros"]))
def test_augment_views_nan_positions_agree(be, padding, gen):
    from cwarp.ops.augment_views.api import augment_views

    src = (random_image((2, 3, 10, 12), gen) * 255).round().to(torch.uint8)
    theta = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).expand(2, 2, 2, 3).clone()
    theta[1, 1, 0, 0] = NAN
    warps = torch.zeros(2, 2, 1, 5)
    warps[..., 2] = 1.0
    color = torch.tensor([1.0, 1.2, 0.8, 0.05, 0.0]).expand(2, 2, 5).contiguous()
    mean, std = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.2, 0.25, 0.3])
    args = (src, theta, warps, color, mean, std, 8, "translate", padding)
    got = augment_views(*be.put(*args[:6]), *args[6:], backend=be.name).cpu()
    want = augment_views(*args, backend="torch")
    assert torch.isnan(got[1, 1]).all() and torch.isfinite(got[:, 0]).all() and torch.isfinite(got[0]).all()
    assert_close_verbose(got, want, 2e-4 / 0.2, 0.0, what=f"augment_views, {padding}")


# ---------------------------------------------------------------------------
# contrastive_loss: the range edge
# ---------------------------------------------------------------------------

def _rows(gen, scale_p=1.0, scale_z=1.0, dtype=torch.float32):
    p, z, zn = (torch.randn(s, generator=gen, dtype=torch.float64) for s in ((6, 8), (6, 8), (6, 3, 8)))
    p[0] *= scale_p
    z[1] *= scale_z
    zn[2, 1] *= scale_p
    return p.to(dtype), z.to(dtype), zn.to(dtype)


# Squared norms up to 1e37 (norms ~3e18, inside float32's 3.4e38) and rows below eps (divided by eps).
@pytest.mark.parametrize(*backend_grid("scale_p,scale_z,in_batch", full=[
    (*scales, in_batch) for scales in ((1e18, 1.0), (1.0, 1e18), (1e18, 1e-30), (1e-30, 1.0))
    for in_batch in (False, True)], small=[(1e18, 1e-30, True)]))
def test_contrastive_loss_at_the_range_edge(be, scale_p, scale_z, in_batch, gen):
    p, z, zn = _rows(gen, scale_p, scale_z)
    for neg in (zn, None):
        got = cwarp.contrastive_loss(*be.put(p, z), None if neg is None else be.put(neg), in_batch=in_batch,
                                     reduction="none", backend=be.name).cpu()
        want = reference.contrastive_loss(p, z, neg, in_batch=in_batch, reduction="none",
                                          compute_dtype=torch.float64)
        assert torch.isfinite(got).all()
        assert_close_verbose(got, want.float(), 1e-4, 1e-4, what=f"rows x {scale_p:g} / {scale_z:g}")


@pytest.mark.parametrize(*backend_grid("in_batch", full=[False, True], small=[True]))
def test_contrastive_loss_float64_beyond_the_float32_range(be, in_batch, gen):
    p, z, zn = _rows(gen, 1e38, 1e30, torch.float64)
    got = cwarp.contrastive_loss(*be.put(p, z, zn), in_batch=in_batch, reduction="none", backend=be.name).cpu()
    want = reference.contrastive_loss(p, z, zn, in_batch=in_batch, reduction="none")
    assert_close_verbose(got, want, 1e-9, 1e-9, what="float64 rows of norm 1e38")


# ---------------------------------------------------------------------------
# ContraWarpAugment: clear errors
# ---------------------------------------------------------------------------

def _images(device="cpu"):
    return torch.zeros(2, 3, 12, 12, dtype=torch.uint8, device=device)


def test_augment_refuses_a_nan_mean():
    with pytest.raises(ValueError, match=r"ContraWarpAugment\(\): expected finite mean values, got \[nan"):
        cwarp.ContraWarpAugment(size=8, mean=(NAN, 0.4, 0.4))


def test_augment_refuses_params_of_another_num_negatives(gen):
    params = cwarp.ContraWarpAugment(size=8, num_negatives=2)(_images(), generator=gen).params
    one = cwarp.ContraWarpAugment(size=8, num_negatives=1)
    for replay in (lambda: one(_images(), params=params), lambda: one.render(_images(), params)):
        with pytest.raises(ValueError, match=r"expected params.theta of shape \(B, V, 2, 3\) with B = 2 and "
                                             r"V = 2 \+ num_negatives = 3, got \[2, 4, 2, 3\]"):
            replay()


@pytest.mark.parametrize("call", [
    lambda aug: aug(_images(), generator=123),
    lambda aug: aug.sample_params(_images(), generator=123),
    lambda aug: cwarp.sample_local_warps(2, 2, generator=123),
])
def test_a_generator_that_is_not_one_is_refused(call):
    with pytest.raises(TypeError, match=r"expected generator to be a torch.Generator or None, got int"):
        call(cwarp.ContraWarpAugment(size=8))


@pytest.mark.parametrize("call, name", [
    (lambda aug: aug(_images("meta")), "images"),
    (lambda aug: aug(torch.zeros(2, 3, 12, 12, device="meta")), "images"),
    (lambda aug: aug(_images(), landmarks=torch.zeros(5, 2, device="meta")), "landmarks"),
    (lambda aug: aug.render(_images(), cwarp.nn.augment.AugmentParams(
        torch.zeros(2, 4, 2, 3, device="meta"), torch.zeros(2, 4, 1, 5), torch.zeros(2, 4, 5))), "params.theta"),
    (lambda aug: cwarp.sample_local_warps(2, 2, centers=torch.zeros(5, 2, device="meta")), "centers"),
])
def test_meta_tensors_are_refused(call, name):
    with pytest.raises(RuntimeError, match=rf"expected {name} with values \(on a CPU or CUDA device\), got a "
                                           r"meta tensor"):
        call(cwarp.ContraWarpAugment(size=8))


# ---------------------------------------------------------------------------
# warp_points: bounded work
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["cpp", "torch"])
def test_warp_points_refuses_more_warps_than_its_limit(backend, gen):
    limit = MAX_WARPS
    params = random_params(1, limit + 1, gen, torch.float64)
    with pytest.raises(ValueError, match=rf"cwarp.warp_points\(\): expected at most {limit} warps per image "
                                         rf"\(params of shape \(B, K, 5\) with K <= {limit}\), got K = {limit + 1}"):
        cwarp.warp_points(torch.zeros(1, 2, 2, dtype=torch.float64), params, backend=backend)


def test_warp_points_reference_holds_a_bounded_number_of_triples(monkeypatch, gen):
    """The reference's memory is its (position, warp) temporaries: at K = MAX_WARPS on five landmarks none holds
    more than 2^21 of them (one scan of all candidates at once held 5 M here, and over 20 GB at K = 1000), and
    it still solves as the C++ kernel does."""
    from cwarp.ops.warp_points import reference as R

    largest = 0
    real = R.warp_displacement

    def spy(p, params, kind, jacobian=True):
        nonlocal largest
        largest = max(largest, p[..., 0].numel() * params.shape[1])
        return real(p, params, kind, jacobian)

    monkeypatch.setattr(R, "warp_displacement", spy)
    params = random_params(1, MAX_WARPS, gen, torch.float64)
    points = cwarp.FACE_LANDMARKS_5.to(torch.float64)[None]
    got = cwarp.warp_points(points, params, backend="torch")
    assert largest <= 1 << 21, f"a step held {largest} (position, warp) pairs"
    assert_close_verbose(got, cwarp.warp_points(points, params, backend="cpp"), 1e-9, 1e-9, what="torch vs cpp")
