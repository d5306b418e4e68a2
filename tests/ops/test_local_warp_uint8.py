"""cwarp.local_warp on uint8 images, every backend: uint8 in, uint8 out,
rounded half to even as torchvision's resampling does (docs/api.md §2).

The oracle is the float64 reference, rounded. The kernels sample in float32,
so a result may differ from it by 1, and only where the float64 value lies
within TIE_EPS of a rounding tie (k + 0.5): `assert_uint8_matches` checks
exactly that, and exact equality everywhere else. Also: the uint8 path gives
the bytes of the float32 path rounded, torchvision v2's own uint8 affine and
elastic resampling, layouts (channels_last without a copy), opcheck,
torch.compile, and the refusal of gradients through a uint8 output."""
from __future__ import annotations

import re

import pytest
import torch

import cwarp
from cwarp import reference
from parity import (TRITON_OPCHECK, backend_grid, backends, grid, op_name, random_params, random_theta,
                    registered_op)

KINDS = ("translate", "gaussian")
PADDINGS = ("zeros", "border", "reflection")
# |float32 kernel - float64 oracle| on the 0..255 scale: float32 coordinates
# are off by about 1e-6 of the image, the sample by that times the local
# slope (<= 255 per pixel). For the <= 64 px images here that stays below
# 0.005; the budget leaves a factor of four.
TIE_EPS = 0.02

# (B, C, H, W, out_size): odd sizes, 1x1, upscale, downscale, 3 and 4 channels.
SHAPES = [
    (2, 3, 9, 11, None),
    (1, 1, 1, 1, None),
    (2, 4, 6, 5, (13, 11)),
    (2, 3, 17, 19, (5, 7)),
    (3, 3, 1, 8, (4, 1)),
]
SMALL_SHAPE = (1, 3, 6, 8, (5, 7))


def random_bytes(shape, gen) -> torch.Tensor:
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=gen)


def exact(image, params, theta, **kw) -> torch.Tensor:
    """The float64 oracle before rounding."""
    return reference.local_warp(image.double(), params.double(), None if theta is None else theta.double(),
                                compute_dtype=torch.float64, **kw)


def assert_uint8_matches(out: torch.Tensor, exact64: torch.Tensor, what: str = "") -> None:
    """out == round-half-even(exact64) clamped, except within TIE_EPS of a tie, where it may be off by 1."""
    assert out.dtype == torch.uint8, f"{what}: dtype {out.dtype}"
    assert out.shape == exact64.shape, f"{what}: shape {list(out.shape)} != {list(exact64.shape)}"
    e = exact64.cpu()
    want = e.round().clamp(0, 255)
    got = out.cpu().double()
    near_tie = (e - e.floor() - 0.5).abs() < TIE_EPS
    diff = (got - want).abs()
    bad = (diff > 0) & ~near_tie | (diff > 1)
    if bool(bad.any()):
        idx = bad.nonzero()[:5].tolist()
        lines = [f"{what}: {int(bad.sum())} / {out.numel()} bytes differ from the rounded float64 oracle "
                 f"away from a tie (or by more than 1); first {len(idx)}:"]
        lines += [f"  at {i}: got {int(got[tuple(i)])}, float64 {e[tuple(i)].item():.6f}" for i in idx]
        raise AssertionError("\n".join(lines))


def run(be, image, params, theta, **kw):
    out = cwarp.local_warp(*be.put(image, params, theta), backend=be.name, **kw)
    assert out.device.type == be.device and out.dtype == torch.uint8
    return out


# ---------------------------------------------------------------------------
# Parity with the float64 oracle
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(*backend_grid(
    "shape,K,kind,padding,align,with_theta",
    full=grid(SHAPES, [0, 1, 4], KINDS, PADDINGS, [False, True], [False, True]),
    small=grid([SMALL_SHAPE], [2], ["translate"], PADDINGS, [False, True], [True])))
def test_uint8_parity(be, shape, K, kind, padding, align, with_theta, gen):
    B, C, H, W, out_size = shape
    image = random_bytes((B, C, H, W), gen)
    params = random_params(B, K, gen, torch.float32)
    theta = random_theta(B, gen, torch.float32) if with_theta else None
    kw = dict(out_size=out_size, kind=kind, padding_mode=padding, align_corners=align)
    out = run(be, image, params, theta, **kw)
    ho, wo = out_size if out_size is not None else (H, W)
    assert out.shape == (B, C, ho, wo)
    assert_uint8_matches(out, exact(image, params, theta, **kw), what=f"{be} {shape} K={K}")


@pytest.mark.parametrize("be", backends("cpp", "triton", "cuda-cpp", "cuda-triton", "torch"))
def test_rounds_half_to_even(be):
    # Pixels 0 and 2k + 1 sampled half way: the float value is k + 0.5
    # exactly, which goes to the even neighbour (half away from zero would
    # give 1, 1, 2, 2, 3, 3). theta shifts x by 1/8 of the width-8 image's
    # [-1, 1], half a pixel; the last sample is clamped onto pixel 7 (border).
    image = torch.tensor([[[[0, 1, 0, 3, 0, 5, 0, 255]]]], dtype=torch.uint8)
    theta = torch.tensor([[[1.0, 0.0, 0.125], [0.0, 1.0, 0.0]]])
    out = run(be, image, torch.zeros(1, 0, 5), theta, padding_mode="border")
    assert out[0, 0, 0].cpu().tolist() == [0, 0, 2, 2, 2, 2, 128, 255]


@pytest.mark.parametrize(*backend_grid(
    "layout,kind,padding", full=grid(["nchw", "channels_last", "strided", "from_numpy_hwc"], KINDS, PADDINGS),
    small=[("channels_last", "translate", "border"), ("from_numpy_hwc", "gaussian", "zeros")]))
def test_uint8_is_the_float32_path_rounded(be, layout, kind, padding, gen):
    # Both paths load the same values and run the same float32 math (the
    # channels_last and NCHW vector paths included), so rounding the float
    # output must give the uint8 output's bytes exactly.
    B, C, H, W = (1, 3, 7, 9) if be.name == "triton" else (3, 3, 23, 29)
    if layout == "strided":
        image = random_bytes((B, C, 2 * H, 3 * W), gen)[:, :, ::2, ::3]
    elif layout == "from_numpy_hwc":
        image = torch.from_numpy(random_bytes((B, H, W, C), gen).numpy()).permute(0, 3, 1, 2)
    else:
        image = random_bytes((B, C, H, W), gen)
        if layout == "channels_last":
            image = image.contiguous(memory_format=torch.channels_last)
    params, theta = random_params(B, 4, gen), random_theta(B, gen)
    kw = dict(out_size=(H + 2, W - 1), kind=kind, padding_mode=padding)
    out = run(be, image, params, theta, **kw)
    assert_uint8_matches(out, exact(image, params, theta, **kw), what=f"{be} {layout}")
    as_float = cwarp.local_warp(*be.put(image.float(), params, theta), backend=be.name, **kw)
    assert torch.equal(out, as_float.round().clamp(0, 255).to(torch.uint8)), f"{be} {layout}"
    dense = run(be, image.contiguous(), params, theta, **kw)
    assert torch.equal(out, dense), f"{be} {layout}: differs from the contiguous input"
    if layout in ("channels_last", "from_numpy_hwc"):
        assert out.is_contiguous(memory_format=torch.channels_last), "output should keep channels_last"


@pytest.mark.parametrize(*backend_grid("width,padding", full=grid([1, 2, 3, 4, 5, 8, 13, 112], PADDINGS),
                                       names=("cpp",)))
def test_vector_paths_match_scalar_path(be, width, padding, gen):
    # NCHW planes take four pixels at a time, channels_last RGB one or two
    # pixels per vector; pixels at the image's edge and a row's tail go
    # pixel by pixel. Zooming out puts many pixels at the edge: every path
    # must give the float32 path's values, rounded.
    B, C = 3, 3
    image = random_bytes((B, C, 11, width), gen)
    params = random_params(B, 4, gen, torch.float32)
    theta = torch.tensor([[1.3, 0.1, 0.05], [-0.1, 1.2, -0.1]]).expand(B, 2, 3)
    kw = dict(out_size=(9, width + 2), padding_mode=padding, backend=be.name)
    want = cwarp.local_warp(image.float(), params, theta, **kw).round().clamp(0, 255).to(torch.uint8)
    for layout, x in (("nchw", image), ("channels_last", image.contiguous(memory_format=torch.channels_last)),
                      ("one plane", image[:, 1:2])):
        out = cwarp.local_warp(x, params, theta, **kw)
        expected = want[:, 1:2] if layout == "one plane" else want
        assert torch.equal(out, expected), f"width {width} {padding} {layout}"


@pytest.mark.parametrize("be", backends("cpp"))
def test_channels_last_uint8_is_not_copied(be, gen):
    # What torch.from_numpy(hwc).permute(2, 0, 1) gives is sampled in place:
    # the call allocates its uint8 output and nothing of image size besides.
    from torch.profiler import ProfilerActivity, profile
    hwc = random_bytes((4, 48, 64, 3), gen).numpy()
    image = torch.from_numpy(hwc).permute(0, 3, 1, 2)
    params = random_params(4, 4, gen)
    cwarp.local_warp(image, params, backend=be.name)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = cwarp.local_warp(image, params, backend=be.name)
    allocated = sum(e.self_cpu_memory_usage for e in prof.events() if e.self_cpu_memory_usage > 0)
    assert out.is_contiguous(memory_format=torch.channels_last)
    # The output, plus the params in the compute type (a few hundred bytes).
    assert allocated < out.numel() + 4096, f"allocated {allocated} B for a {out.numel()} B output"


# ---------------------------------------------------------------------------
# torchvision v2's uint8 resampling
# ---------------------------------------------------------------------------


def _tv_theta(matrix, h, w):
    """torchvision's inverse affine (pixel units about the centre) as local_warp's normalized theta."""
    m = matrix
    return torch.tensor([[[m[0], m[1] * h / w, 2 * m[2] / w], [m[3] * w / h, m[4], 2 * m[5] / h]]],
                        dtype=torch.float64)


@pytest.mark.parametrize("scale,translate", [(2.0, [0, 0]), (2.0, [3, -2]), (0.5, [1, 2]), (1.0, [-5, 4])])
@pytest.mark.parametrize("be", backends())
def test_affine_equals_torchvision_v2(be, scale, translate, gen):
    # K = 0 with theta is an affine warp: torchvision.transforms.v2.functional.affine
    # (bilinear, no fill: zeros outside) of a uint8 image. Power-of-two sizes
    # and dyadic scales make both grids exact, so both sample the same float
    # values (ties included: a 2x zoom puts samples at quarter pixels) and
    # must round them alike, bit for bit.
    tvf = pytest.importorskip("torchvision.transforms.v2.functional")
    from torchvision.transforms.v2.functional._geometry import _get_inverse_affine_matrix
    H = W = 16
    image = random_bytes((1, 3, H, W), gen)
    want = tvf.affine(image, angle=0.0, translate=translate, scale=scale, shear=[0.0, 0.0],
                      interpolation=tvf.InterpolationMode.BILINEAR)
    theta = _tv_theta(_get_inverse_affine_matrix([0.0, 0.0], 0.0, [float(t) for t in translate], scale,
                                                  [0.0, 0.0]), H, W).float()
    out = run(be, image, torch.zeros(1, 0, 5), theta, padding_mode="zeros", align_corners=False)
    assert torch.equal(out.cpu(), want)
    if scale == 2.0:
        e = exact(image, torch.zeros(1, 0, 5), theta, padding_mode="zeros")
        assert bool(((e - e.floor()) == 0.5).any()), "the case should hold exact ties"


@pytest.mark.parametrize("be", backends())
def test_local_warp_matches_torchvision_v2_elastic(be, gen):
    # A local warp is an elastic displacement field: torchvision's
    # elastic_image samples the identity grid plus a displacement (normalized
    # units) and rounds like an affine. Its grid is summed in float32 in its
    # own order, so the bytes agree up to the near-tie budget.
    tvf = pytest.importorskip("torchvision.transforms.v2.functional")
    B, H, W = 2, 24, 20
    image = random_bytes((B, 3, H, W), gen)
    params = random_params(B, 4, gen, torch.float32)
    field = cwarp.local_warp_grid(params.double(), (H, W)) - reference.base_grid((H, W), False)
    for b in range(B):
        want = tvf.elastic_image(image[b], field[b:b + 1].float(), interpolation=tvf.InterpolationMode.BILINEAR)
        out = run(be, image[b:b + 1], params[b:b + 1], None, padding_mode="zeros")
        e = exact(image[b:b + 1], params[b:b + 1], None, padding_mode="zeros")
        assert_uint8_matches(want[None], e, what="torchvision elastic vs float64")
        assert_uint8_matches(out, e, what=f"{be} vs float64")
        assert int((out.cpu().int() - want.int()).abs().max()) <= 1


# ---------------------------------------------------------------------------
# Forward only: gradients through a uint8 output are refused
# ---------------------------------------------------------------------------


def _grad_inputs(gen, device="cpu"):
    image = random_bytes((2, 3, 6, 7), gen).to(device)
    return image, random_params(2, 2, gen).to(device), random_theta(2, gen).to(device)


@pytest.mark.parametrize("which", ["params", "theta"])
@pytest.mark.parametrize("be", backends("cpp", "triton", "cuda-cpp", "cuda-triton", "torch"))
def test_public_refuses_grad_with_uint8(be, which, gen):
    image, params, theta = _grad_inputs(gen, be.device)
    {"params": params, "theta": theta}[which].requires_grad_()
    msg = (rf"cwarp\.local_warp\(\): expected {which} not to require grad with a uint8 image .*"
           rf"got {which} with requires_grad=True")
    with pytest.raises(RuntimeError, match=msg):
        cwarp.local_warp(image, params, theta, backend=be.name)
    with torch.no_grad():  # no gradient asked for: nothing to refuse
        out = cwarp.local_warp(image, params, theta, backend=be.name)
    assert out.dtype == torch.uint8 and not out.requires_grad


@pytest.mark.parametrize("which", ["params", "theta"])
@pytest.mark.parametrize("be", backends())
def test_op_refuses_grad_with_uint8(be, which, gen):
    # The registered op called directly, past the public function's check.
    image, params, theta = _grad_inputs(gen, be.device)
    {"params": params, "theta": theta}[which].requires_grad_()
    msg = re.escape(op_name(be, "local_warp") + "()") + rf": expected {which} not to require grad with a uint8 image"
    with pytest.raises(RuntimeError, match=msg):
        registered_op(be, "local_warp")(image, params, theta, 5, 6, "translate", "border", False)


@pytest.mark.parametrize("be", backends())
def test_backward_op_refuses_uint8(be, gen):
    image, params, theta = _grad_inputs(gen, be.device)
    grad_out = torch.rand(2, 3, 6, 7, device=be.device)
    msg = re.escape(op_name(be, "local_warp_backward") + "()") + r": expected image of a floating dtype"
    with pytest.raises(TypeError, match=msg):
        registered_op(be, "local_warp_backward")(grad_out, image, params, theta, "translate", "border", False,
                                                 [False, True, True])


# ---------------------------------------------------------------------------
# Fake kernels, opcheck, torch.compile
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("be", backends("cpp", "triton"))
def test_fake_returns_uint8(be, channels_last):
    image = torch.empty(2, 3, 6, 7, dtype=torch.uint8, device="meta")
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    out = registered_op(be, "local_warp")(image, torch.empty(2, 4, 5, device="meta"), None, 5, 9, "translate",
                                          "border", False)
    assert out.dtype == torch.uint8 and out.shape == (2, 3, 5, 9) and out.device.type == "meta"
    assert out.is_contiguous(memory_format=torch.channels_last) == channels_last


@pytest.mark.parametrize(*backend_grid("with_theta,channels_last", full=grid([False, True], [False, True]),
                                       small=[(True, True)]))
def test_opcheck_uint8(be, with_theta, channels_last, gen):
    B, C, H, W, K = (1, 3, 4, 5, 1) if be.name == "triton" else (2, 3, 8, 9, 2)
    image = random_bytes((B, C, H, W), gen)
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    params = random_params(B, K, gen, torch.float64)
    theta = random_theta(B, gen, torch.float64) if with_theta else None
    kw = {"test_utils": TRITON_OPCHECK} if be.name == "triton" else {}
    torch.library.opcheck(registered_op(be, "local_warp").default,
                          (*be.put(image, params, theta), 7, 10, "gaussian", "reflection", False), **kw)


@pytest.mark.parametrize(*backend_grid("entry", full=["public", "op"], small=["op"]))
def test_torch_compile_fullgraph_uint8(be, entry, gen):
    torch._dynamo.reset()
    if entry == "public":
        def f(image, params, theta):
            return cwarp.local_warp(image, params, theta, out_size=(9, 10), kind="gaussian",
                                    padding_mode="reflection", backend=be.name)
    else:
        op = registered_op(be, "local_warp")

        def f(image, params, theta):
            return op(image, params, theta, 9, 10, "translate", "zeros", True)

    image = random_bytes((2, 3, 8, 11), gen).contiguous(memory_format=torch.channels_last)
    inputs = be.put(image, random_params(2, 2, gen), random_theta(2, gen))
    eager = f(*inputs)
    compiled = torch.compile(f, fullgraph=True)(*inputs)
    assert compiled.dtype == torch.uint8
    assert torch.equal(compiled, eager)
