"""Forward parity of cwarp.local_warp (backend="cpp", CPU) with the float64 oracle
cwarp.reference.local_warp, over shapes, warps, paddings, dtypes and layouts;
plus edge cases, non-finite parameters, opcheck and determinism."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

import cwarp
from cwarp import reference
from parity import TOL, assert_close_verbose, random_image, random_params, random_theta

KINDS = ("translate", "gaussian")
PADDINGS = ("zeros", "border", "reflection")

# (B, C, H, W, out_size): odd sizes, 1x1 in/outputs, upscale, downscale.
SHAPES = [
    (2, 3, 9, 11, None),
    (1, 1, 1, 1, None),
    (2, 2, 7, 5, (1, 1)),
    (2, 2, 6, 5, (13, 11)),
    (2, 3, 17, 19, (5, 7)),
    (3, 1, 1, 8, (4, 1)),
]


def _run_both(image, params, theta, out_size, kind, padding, align, backend="cpp"):
    out = cwarp.local_warp(image, params, theta, out_size=out_size, kind=kind, padding_mode=padding,
                           align_corners=align, backend=backend)
    ref = reference.local_warp(image, params, theta, out_size=out_size, kind=kind, padding_mode=padding,
                               align_corners=align)
    return out, ref


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("K", [0, 1, 16])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("align", [False, True])
@pytest.mark.parametrize("with_theta", [False, True])
def test_parity_float64(shape, K, kind, padding, align, with_theta, gen):
    B, C, H, W, out_size = shape
    image = random_image((B, C, H, W), gen, torch.float64)
    params = random_params(B, K, gen, torch.float64)
    theta = random_theta(B, gen, torch.float64) if with_theta else None
    out, ref = _run_both(image, params, theta, out_size, kind, padding, align)
    ho, wo = out_size if out_size is not None else (H, W)
    assert out.shape == (B, C, ho, wo) and out.dtype == torch.float64
    assert_close_verbose(out, ref, *TOL[torch.float64], what="cpp vs reference")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("align", [False, True])
@pytest.mark.parametrize("with_theta", [False, True])
def test_parity_dtypes(dtype, kind, padding, align, with_theta, gen):
    # Half types: the oracle runs on the same half input (float64 inside, cast
    # back), so only the kernel's float32 opmath and final rounding differ.
    image = random_image((3, 3, 21, 26), gen, dtype)
    params = random_params(3, 4, gen, torch.float32)
    theta = random_theta(3, gen, torch.float32) if with_theta else None
    out, ref = _run_both(image, params, theta, (19, 30), kind, padding, align)
    assert out.dtype == dtype and ref.dtype == dtype
    atol, rtol = TOL[dtype]
    value_range = float(image.max() - image.min())
    assert_close_verbose(out, ref, atol * value_range, rtol, what=f"{dtype}")


@pytest.mark.parametrize("layout", ["channels_last", "strided_slice", "transposed_hw", "expanded_batch",
                                    "channels_last_sliced"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_parity_layouts(layout, dtype, gen):
    B, C = 4, 3
    base = random_image((B, C, 24, 30), gen, dtype)
    if layout == "channels_last":
        image = base.contiguous(memory_format=torch.channels_last)
    elif layout == "strided_slice":
        image = random_image((B, 2 * C, 40, 50), gen, dtype)[:, ::2, 3:37:2, 1::3]
    elif layout == "transposed_hw":
        image = base.transpose(2, 3)
    elif layout == "expanded_batch":
        image = base[:1].expand(B, -1, -1, -1)
    else:
        image = base.contiguous(memory_format=torch.channels_last)[:, :, 1::2, ::3]
    assert not image.is_contiguous() or layout == "channels_last"
    params = random_params(B, 3, gen, torch.float32)
    theta = random_theta(B, gen, torch.float32)
    for padding, kind in itertools.product(PADDINGS, KINDS):
        out, ref = _run_both(image, params, theta, (17, 23), kind, padding, False)
        assert_close_verbose(out, ref, *TOL[dtype], what=f"{layout} {padding} {kind}")
        dense = cwarp.local_warp(image.contiguous(), params, theta, out_size=(17, 23), kind=kind,
                                 padding_mode=padding)
        # Strides change the addressing only, not one bit of the result.
        assert torch.equal(out, dense), f"{layout} {padding} {kind}: differs from the contiguous input"
    if layout == "channels_last":
        assert out.is_contiguous(memory_format=torch.channels_last), "output should keep channels_last"


@pytest.mark.parametrize("width", [1, 3, 4, 5, 8, 13, 112])
@pytest.mark.parametrize("padding", PADDINGS)
def test_pair_load_path_matches_scalar_path(width, padding, gen):
    # float32 NCHW takes four pixels at a time with pair loads (and falls back
    # pixel by pixel where a corner leaves the image); channels_last is scalar.
    # Zooming out puts many pixels at the image's edge, and widths that are
    # not multiples of 4 leave a scalar tail: the two paths must agree bitwise.
    B, C = 3, 3
    image = random_image((B, C, 11, width), gen, torch.float32)
    params = random_params(B, 4, gen, torch.float32)
    theta = torch.tensor([[1.3, 0.1, 0.05], [-0.1, 1.2, -0.1]]).expand(B, 2, 3)
    out_size = (9, width + 2)
    nchw = cwarp.local_warp(image, params, theta, out_size=out_size, padding_mode=padding)
    cl = cwarp.local_warp(image.contiguous(memory_format=torch.channels_last), params, theta,
                          out_size=out_size, padding_mode=padding)
    assert torch.equal(nchw, cl.contiguous())
    ref = reference.local_warp(image, params, theta, out_size=out_size, padding_mode=padding)
    assert_close_verbose(nchw, ref, *TOL[torch.float32], what=f"width {width} {padding}")
    # The backward's scatter keeps shared corners in registers between
    # neighbouring pixels; every element still gets its additions in pixel
    # order, so both layouts give the same bits, and the reference's values.
    grad_out = torch.randn(nchw.shape, generator=gen)
    grads = []
    for x in (image, image.contiguous(memory_format=torch.channels_last)):
        x = x.detach().requires_grad_()
        cwarp.local_warp(x, params, theta, out_size=out_size, padding_mode=padding).backward(grad_out)
        grads.append(x.grad.contiguous())
    assert torch.equal(grads[0], grads[1])
    x = image.double().requires_grad_()
    reference.local_warp(x, params.double(), theta.double(), out_size=out_size,
                         padding_mode=padding).backward(grad_out.double())
    # Each gradient element sums several float32 products whose weights come
    # from float32 coordinates: a budget relative to the gradient's size.
    scale = float(x.grad.abs().max())
    assert_close_verbose(grads[0], x.grad.float(), 1e-4 * scale, 1e-4, what=f"grad width {width} {padding}")


@pytest.mark.parametrize("img_dtype,prm_dtype", [(torch.float32, torch.float64), (torch.float64, torch.float32),
                                                 (torch.float16, torch.float32), (torch.bfloat16, torch.float64),
                                                 (torch.float32, torch.bfloat16)])
def test_params_theta_other_dtype(img_dtype, prm_dtype, gen):
    image = random_image((2, 3, 15, 13), gen, img_dtype)
    params = random_params(2, 3, gen, prm_dtype)
    theta = random_theta(2, gen, prm_dtype)
    for padding in PADDINGS:
        out, ref = _run_both(image, params, theta, None, "translate", padding, False)
        assert out.dtype == img_dtype
        assert_close_verbose(out, ref, *TOL[img_dtype], what=f"params {prm_dtype}")


def test_backend_torch_is_the_reference(gen):
    image = random_image((2, 3, 10, 12), gen, torch.float32).transpose(2, 3)
    params, theta = random_params(2, 2, gen), random_theta(2, gen)
    for kind, padding in itertools.product(KINDS, PADDINGS):
        out, ref = _run_both(image, params, theta, (7, 9), kind, padding, True, backend="torch")
        assert torch.equal(out, ref)


def test_warp_moves_content_by_d():
    # Spec: content near c moves by about +d. A bright dot at the centre with a
    # translate warp of d = (0.1, 0) must move right, not left.
    H = W = 41
    image = torch.zeros(1, 1, H, W, dtype=torch.float64)
    image[0, 0, 20, 20] = 1.0
    params = torch.tensor([[[0.0, 0.0, 0.6, 0.1, 0.0]]], dtype=torch.float64)
    out = cwarp.local_warp(image, params, align_corners=True)
    cols = torch.arange(W, dtype=torch.float64)
    centroid = float((out[0, 0].sum(0) * cols).sum() / out[0, 0].sum())
    assert 21.0 < centroid < 23.0, centroid  # moved by ~ d * (W - 1) / 2 = 2 pixels


def test_matches_grid_sample_of_local_warp_grid(gen):
    image = random_image((2, 3, 16, 18), gen, torch.float64)
    params, theta = random_params(2, 5, gen, torch.float64), random_theta(2, gen, torch.float64)
    grid = cwarp.local_warp_grid(params, (11, 13), theta, kind="gaussian", align_corners=True)
    expected = F.grid_sample(image, grid, padding_mode="reflection", align_corners=True)
    out = cwarp.local_warp(image, params, theta, out_size=(11, 13), kind="gaussian", padding_mode="reflection",
                           align_corners=True)
    assert_close_verbose(out, expected, *TOL[torch.float64])


# ---------------------------------------------------------------------------
# Edge cases
# ---------------------------------------------------------------------------


def test_empty_batch_forward_and_backward():
    image = torch.rand(0, 3, 5, 6, requires_grad=True)
    params = torch.rand(0, 2, 5, requires_grad=True)
    theta = torch.rand(0, 2, 3, requires_grad=True)
    out = cwarp.local_warp(image, params, theta, out_size=(4, 7))
    assert out.shape == (0, 3, 4, 7)
    out.sum().backward()
    assert image.grad.shape == image.shape and params.grad.shape == params.shape
    assert theta.grad.shape == theta.shape


def test_zero_channels_forward_and_backward(gen):
    image = torch.rand(2, 0, 5, 6, requires_grad=True)
    params = random_params(2, 2, gen).requires_grad_()
    out = cwarp.local_warp(image, params, out_size=(3, 4))
    assert out.shape == (2, 0, 3, 4)
    out.sum().backward()
    assert image.grad.shape == image.shape
    assert torch.equal(params.grad, torch.zeros_like(params))


@pytest.mark.parametrize("hw", [(0, 5), (5, 0), (0, 0)])
def test_empty_spatial_dims_raise(hw):
    image = torch.rand(2, 3, *hw)
    params = torch.rand(2, 1, 5)
    with pytest.raises(ValueError, match=r"cwarp\.local_warp\(\): expected image with non-empty spatial dims"):
        cwarp.local_warp(image, params, out_size=(4, 4))
    with pytest.raises(ValueError, match=r"cwarp::local_warp\(\): expected image with non-empty spatial dims"):
        torch.ops.cwarp.local_warp(image, params, None, 4, 4, "translate", "border", False)


# ---------------------------------------------------------------------------
# Non-finite and huge parameters
#
# What the oracle does here is not a sane contract: ATen's CPU grid_sample maps
# a NaN or infinite coordinate to NaN under padding "zeros", and to the
# first pixel (the coordinate clamped to 0) under "border" and "reflection";
# for huge finite coordinates its reflection parity overflows an int. The
# kernel instead follows ATen's scalar / CUDA `safe_downgrade_to_int_range`
# (csrc/warp_math.h safe_coord): a NaN coordinate, and an infinite one except
# under border (which clamps it to the edge), contributes nothing, so such a
# pixel is exactly 0. The tests check that contract, pixel by pixel, against
# the oracle's float64 grid:
#   finite grid, |s| <= 1e6        -> equal to the oracle's value
#   NaN in s                       -> 0
#   +-inf in s                     -> border: the edge value (oracle on the
#                                     clamped grid); zeros, reflection: 0
#   |s| > 1e6 finite               -> zeros, border: oracle on the clamped grid;
#                                     reflection: reflecting 1e29 has no
#                                     meaningful bits, so only "a convex
#                                     combination of pixels" is checked.
# Output sizes are even so that no base coordinate is 0: theta = inf times a
# q of 0 (or of rounding noise) would make the expected value depend on the
# sign of noise.
# ---------------------------------------------------------------------------


def _expected_for_any_grid(image, grid, padding, align):
    nan_px = torch.isnan(grid).any(-1)
    inf_px = torch.isinf(grid).any(-1) & ~nan_px
    huge_px = (grid.abs() > 1e6).any(-1) & ~nan_px & ~inf_px
    zero_px = nan_px | (inf_px if padding != "border" else torch.zeros_like(inf_px))
    unchecked = huge_px if padding == "reflection" else torch.zeros_like(huge_px)
    g = torch.nan_to_num(grid, nan=0.0).clamp(-10.0, 10.0)
    exp = F.grid_sample(image, g, padding_mode=padding, align_corners=align)
    exp = exp.masked_fill(zero_px[:, None], 0.0)
    return exp, unchecked


BAD_VALUES = [float("nan"), float("inf"), float("-inf"), 1e30, -1e30]


@pytest.mark.parametrize("bad", BAD_VALUES, ids=str)
@pytest.mark.parametrize("where", ["cx", "cy", "r", "dx", "dy", *(f"theta{i}" for i in range(6))])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("padding", PADDINGS)
def test_nonfinite_params_and_theta(bad, where, kind, padding, gen):
    B, C, H, W, out = 2, 3, 9, 11, (10, 12)
    image = random_image((B, C, H, W), gen, torch.float64)
    params = random_params(B, 3, gen, torch.float64)
    theta = random_theta(B, gen, torch.float64)
    if where.startswith("theta"):
        theta.view(B, 6)[1, int(where[-1])] = bad
    else:
        params[1, 1, "cx cy r dx dy".split().index(where)] = bad
    out_t = cwarp.local_warp(image, params, theta, out_size=out, kind=kind, padding_mode=padding)
    assert out_t.shape == (B, C, *out)
    assert torch.isfinite(out_t).all(), "non-finite parameters must give a defined (finite) output"
    grid = reference.local_warp_grid(params, out, theta, kind=kind)
    expected, unchecked = _expected_for_any_grid(image, grid, padding, False)
    checked = ~unchecked[:, None].expand_as(out_t)
    assert_close_verbose(out_t[checked], expected[checked], *TOL[torch.float64], what=f"{where}={bad}")
    # Where the value is meaningless, it is still a convex combination of pixels.
    lo = image.amin(dim=(2, 3), keepdim=True).expand_as(out_t)
    hi = image.amax(dim=(2, 3), keepdim=True).expand_as(out_t)
    assert bool(((out_t >= lo) & (out_t <= hi))[~checked].all())
    # The untouched image is unaffected.
    ref0 = reference.local_warp(image[:1], params[:1], theta[:1], out_size=out, kind=kind, padding_mode=padding)
    assert_close_verbose(out_t[:1], ref0, *TOL[torch.float64], what="image 0")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("bad", BAD_VALUES, ids=str)
def test_nonfinite_params_low_precision_defined(dtype, bad, gen):
    image = random_image((2, 3, 9, 11), gen, dtype)
    params = random_params(2, 3, gen, torch.float32)
    theta = random_theta(2, gen, torch.float32)
    params[1, 0, 3] = bad
    theta[1, 0, 0] = bad
    for padding, kind in itertools.product(PADDINGS, KINDS):
        out = cwarp.local_warp(image, params, theta, kind=kind, padding_mode=padding)
        assert out.shape == image.shape and out.dtype == dtype
        assert torch.isfinite(out).all()


# ---------------------------------------------------------------------------
# opcheck, determinism
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("with_theta", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_opcheck_local_warp(requires_grad, with_theta, channels_last, gen):
    image = random_image((2, 3, 8, 9), gen, torch.float64)
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    params = random_params(2, 2, gen, torch.float64)
    theta = random_theta(2, gen, torch.float64) if with_theta else None
    for t in (image, params, theta):
        if t is not None:
            t.requires_grad_(requires_grad)
    torch.library.opcheck(torch.ops.cwarp.local_warp.default,
                          (image, params, theta, 7, 10, "gaussian", "reflection", False))


@pytest.mark.parametrize("mask", [[True, True, True], [True, False, False], [False, True, True]])
def test_opcheck_local_warp_backward(mask, gen):
    image = random_image((2, 3, 8, 9), gen, torch.float64)
    params, theta = random_params(2, 2, gen, torch.float64), random_theta(2, gen, torch.float64)
    grad_out = random_image((2, 3, 7, 10), gen, torch.float64)
    torch.library.opcheck(torch.ops.cwarp.local_warp_backward.default,
                          (grad_out, image, params, theta, "translate", "zeros", True, mask))


def test_forward_bitwise_equal_across_threads(gen, restore_threads):
    image = random_image((5, 3, 40, 37), gen, torch.float32)
    params, theta = random_params(5, 6, gen), random_theta(5, gen)
    outs = []
    for n in (1, 2):
        torch.set_num_threads(n)
        outs.append(cwarp.local_warp(image, params, theta, out_size=(33, 45), kind="gaussian"))
    assert torch.equal(outs[0], outs[1])
