"""cwarp's CUDA kernels, run on the CPU under the CUDA emulation
(scripts/cuda_emulation), against the float64 oracles of cwarp.reference.

The library the harness builds holds the real csrc/ops/*/*_cuda.cu kernels
and host launchers, registered as torch.ops.cwarp_cuda_emu.<op> for CPU
tensors (the emulated device memory is host memory). The tests cover what a
CPU kernel cannot stand in for: the CUDA kernels' indexing and tails (output
sizes that are not a multiple of the block, a batch beyond the grid's y
limit, the 64-bit index instantiations), their block and warp reductions,
atomics and deterministic mode (bitwise equal under every thread and block
order the emulator can run), and the dtype dispatch. What the emulation
cannot check (timing, the memory model, the GPU's fast-math precision) is
listed in docs/architecture.md.

Compiling the library takes minutes on a slow machine (cached in
build/cuda_emulation afterwards); every test here is marked slow.
"""
from __future__ import annotations

import itertools

import pytest
import torch

import cwarp
from cwarp import reference
from parity import (TOL, assert_close_verbose, deterministic_algorithms, poisoned_warp_inputs, random_image, random_images,
                    random_params, random_theta)

pytestmark = pytest.mark.slow

KINDS = ("translate", "gaussian")
PADDINGS = ("zeros", "border", "reflection")
ALL = [True, True, True]


class Emulated:
    def __init__(self, harness):
        self.harness = harness
        self.ops, self.emu = harness.build()

    def stats(self) -> dict:
        return self.harness.stats(self.emu)

    def launched(self) -> list[str]:
        return list(self.emu.launches())


@pytest.fixture(scope="module")
def built(load_script):
    harness = load_script("scripts/cuda_emulation/harness.py")
    ok, why = harness.cxx20_support()
    if not ok:
        pytest.skip(f"the CUDA emulation needs a C++20 compiler: {why}")
    return Emulated(harness)


@pytest.fixture
def cuda(built):
    """The emulated kernels, forward order and 32-bit indexing, counters cleared;
    after the test, every launch must have been followed by a launch check."""
    built.emu.configure("forward", 0, False)
    built.emu.reset()
    yield built
    unchecked = built.stats()["unchecked_launches"]
    built.emu.configure("forward", 0, False)
    assert unchecked == 0, f"{unchecked} launches without C10_CUDA_KERNEL_LAUNCH_CHECK: {built.launched()}"


needs_cpp = pytest.mark.skipif(not cwarp._extension.available(), reason="cwarp._C is not built")

# The C++ type a dtype dispatches to, as the emulator's launch log names kernels.
CPP = {torch.float32: "float", torch.float64: "double", torch.bfloat16: "c10::BFloat16", torch.float16: "c10::Half",
       torch.uint8: "unsigned char"}
LW = "cwarp::cuda::"


def kernels(cuda) -> list[str]:
    """The kernels launched since the last reset, in order."""
    return [line.split(" grid=")[0] for line in cuda.launched()]


# ---------------------------------------------------------------------------
# local_warp: forward
# ---------------------------------------------------------------------------

def warp(cuda, image, params, theta, out_size, kind="translate", padding="zeros", align=False):
    return cuda.ops.local_warp(image, params, theta, out_size[0], out_size[1], kind, padding, align)


def backward(cuda, grad_out, image, params, theta, kind="translate", padding="zeros", align=False, mask=ALL):
    return cuda.ops.local_warp_backward(grad_out, image, params, theta, kind, padding, align, mask)


@pytest.mark.parametrize("dtype,kind,padding,align,with_theta", list(itertools.product(
    [torch.float32, torch.float64, torch.bfloat16, torch.float16], KINDS, PADDINGS, [False, True], [False, True])))
def test_forward_parity(cuda, dtype, kind, padding, align, with_theta, gen):
    # 60 x 70 output pixels: neither a multiple of the forward's tile nor of the backward's block.
    B, C, H, W, out_size = 2, 3, 23, 29, (60, 70)
    image = random_image((B, C, H, W), gen, dtype)
    params = random_params(B, 4, gen, torch.float32)
    theta = random_theta(B, gen, torch.float32) if with_theta else None
    out = warp(cuda, image, params, theta, out_size, kind, padding, align)
    ref = reference.local_warp(image, params, theta, out_size=out_size, kind=kind, padding_mode=padding,
                               align_corners=align)
    assert out.dtype == dtype and out.shape == (B, C, *out_size)
    atol, rtol = TOL[dtype]
    assert_close_verbose(out, ref, atol * float(image.max() - image.min()), rtol, what=f"{dtype} {kind} {padding}")
    # Tiles of 32 x 16 pixels: 3 columns and 4 rows of them, both with a tail.
    assert cuda.launched() == [f"{LW}local_warp_forward_kernel<{CPP[dtype]}, int> grid=(3,4,2) block=(16,16,1) "
                               "shared=0"]


@pytest.mark.parametrize("shape,K", [
    ((2, 3, 9, 11, (9, 11)), 0),
    ((1, 1, 1, 1, (1, 1)), 1),
    ((2, 2, 7, 5, (1, 1)), 6),
    ((2, 2, 6, 5, (13, 11)), 16),
    ((3, 1, 1, 8, (4, 1)), 2),
    ((1, 2, 40, 3, (257, 1)), 3),  # one row past a tile, one pixel past a backward block
    ((1, 2, 9, 10, (17, 33)), 40),  # two passes over the warps; a tile column of one pixel
])
def test_forward_shapes(cuda, shape, K, gen):
    B, C, H, W, out_size = shape
    image = random_image((B, C, H, W), gen, torch.float64)
    params = random_params(B, K, gen, torch.float64)
    theta = random_theta(B, gen, torch.float64)
    for kind, padding in itertools.product(KINDS, PADDINGS):
        out = warp(cuda, image, params, theta, out_size, kind, padding)
        ref = reference.local_warp(image, params, theta, out_size=out_size, kind=kind, padding_mode=padding)
        assert_close_verbose(out, ref, *TOL[torch.float64], what=f"{shape} K={K} {kind} {padding}")


def test_forward_batch_beyond_the_grid(cuda, gen):
    # blockIdx.z strides over images: 65535 of them per pass, so images 65535
    # and up are the second pass of the loop over b.
    B = 65535 + 3
    image = random_image((B, 1, 2, 3), gen, torch.float64)
    params = random_params(B, 1, gen, torch.float64)
    out = warp(cuda, image, params, None, (1, 2))
    ref = reference.local_warp(image, params, None, out_size=(1, 2), padding_mode="zeros")
    assert_close_verbose(out, ref, *TOL[torch.float64], what="B = 65538")
    assert cuda.launched() == [f"{LW}local_warp_forward_kernel<double, int> grid=(1,1,65535) block=(16,16,1) "
                               "shared=0"]


@pytest.mark.parametrize("deterministic", [False, True])
def test_empty_shapes_launch_nothing_invalid(cuda, deterministic, gen):
    # A grid with a zero dimension is an invalid launch on the GPU (the
    # emulator's error too): empty inputs must return before launching.
    with deterministic_algorithms(deterministic):
        for B, C, K in [(0, 3, 2), (2, 0, 2), (2, 3, 0)]:
            image = random_image((B, C, 5, 6), gen, torch.float64)
            params = random_params(B, K, gen, torch.float64)
            theta = random_theta(B, gen, torch.float64)
            out = warp(cuda, image, params, theta, (4, 7))
            assert out.shape == (B, C, 4, 7)
            gi, gp, gt = backward(cuda, torch.ones_like(out), image, params, theta)
            assert gi.shape == image.shape and gp.shape == params.shape and gt.shape == theta.shape
            if B * C == 0:
                assert not gi.any() and not gp.any() and not gt.any()
    assert cuda.ops.contrastive_loss_forward(torch.zeros(0, 8), torch.zeros(0, 8), None, 0.2, True)[0].shape == (0,)


@pytest.mark.parametrize("layout", ["channels_last", "strided_slice", "expanded_batch"])
def test_forward_layouts(cuda, layout, gen):
    B, C, H, W, out_size = 3, 3, 24, 30, (17, 23)
    if layout == "channels_last":
        image = random_image((B, C, H, W), gen).contiguous(memory_format=torch.channels_last)
    elif layout == "strided_slice":
        image = random_image((B, 2 * C, 2 * H + 3, 3 * W), gen)[:, ::2, 3::2, 1::3]
    else:
        image = random_image((1, C, H, W), gen).expand(B, -1, -1, -1)
    params, theta = random_params(B, 3, gen), random_theta(B, gen)
    for kind, padding in itertools.product(KINDS, PADDINGS):
        out = warp(cuda, image, params, theta, out_size, kind, padding)
        ref = reference.local_warp(image, params, theta, out_size=out_size, kind=kind, padding_mode=padding)
        assert_close_verbose(out, ref, *TOL[torch.float32], what=f"{layout} {kind} {padding}")
        # Strides change the addressing only, not one bit of the result.
        assert torch.equal(out, warp(cuda, image.contiguous(), params, theta, out_size, kind, padding))
    if layout == "channels_last":
        assert out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
def test_forward_vector_and_scalar_stores_agree(cuda, dtype, gen):
    # An even output width in NCHW takes the forward's two-pixel vector
    # store; a channels_last output stores pixel by pixel: the same bits.
    image = random_image((2, 3, 19, 23), gen)
    if dtype == torch.uint8:
        image = (image * 255).round().to(torch.uint8)
    params, theta = random_params(2, 3, gen), random_theta(2, gen)
    for kind, padding in itertools.product(KINDS, PADDINGS):
        dense = warp(cuda, image, params, theta, (21, 34), kind, padding)
        cl = warp(cuda, image.contiguous(memory_format=torch.channels_last), params, theta, (21, 34), kind, padding)
        assert dense.is_contiguous() and cl.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(dense, cl), f"{dtype} {kind} {padding}"


@pytest.mark.parametrize("kind,padding,channels_last", list(itertools.product(KINDS, PADDINGS, [False, True])))
def test_forward_uint8_is_the_float32_path_rounded(cuda, kind, padding, channels_last, gen):
    image = torch.randint(0, 256, (2, 3, 19, 23), dtype=torch.uint8, generator=gen)
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    params, theta = random_params(2, 4, gen), random_theta(2, gen)
    out = warp(cuda, image, params, theta, (21, 22), kind, padding)
    as_float = warp(cuda, image.float(), params, theta, (21, 22), kind, padding)
    assert out.dtype == torch.uint8
    # Rounded half to even (torch.round), as the kernel stores a uint8 sample.
    assert torch.equal(out, as_float.round().clamp(0, 255).to(torch.uint8))
    ref = reference.local_warp(image.float(), params, theta, out_size=(21, 22), kind=kind, padding_mode=padding)
    assert_close_verbose(as_float, ref, TOL[torch.float32][0] * 255, TOL[torch.float32][1], what="uint8 as float")


def test_int64_indexing_path(cuda, gen):
    # The 64-bit instantiations run only for tensors beyond 2^31 elements; the
    # emulator's force_int64 sends these small ones down that path.
    image = random_image((2, 3, 20, 24), gen)
    params, theta = random_params(2, 3, gen), random_theta(2, gen)
    grad_out = random_image((2, 3, 45, 50), gen) - 0.5
    outs, grads = {}, {}
    for force in (False, True):
        cuda.emu.configure("forward", 0, force)
        cuda.emu.reset()
        outs[force] = warp(cuda, image, params, theta, (45, 50), "gaussian", "reflection")
        grads[force] = backward(cuda, grad_out, image, params, theta, "gaussian", "reflection")
        index_t = "long" if force else "int"
        assert kernels(cuda) == [f"{LW}local_warp_forward_kernel<float, {index_t}>",
                                 f"{LW}local_warp_backward_kernel<float, {index_t}>"]
    # Same math, other index type: the forward's bits do not change.
    assert torch.equal(outs[False], outs[True])
    want = input_grads_reference(image, params, theta, grad_out, (45, 50), "gaussian", "reflection", False)
    for name, a, b, e in zip(NAMES, grads[False], grads[True], want):
        scale = float(e.abs().max())
        assert_close_verbose(b, a, 1e-5 * scale, 1e-5, what=f"int64 vs int32 grad {name}")
        assert_close_verbose(b, e, 2e-3 * scale, 2e-3, what=f"int64 grad {name}")
    image8 = torch.randint(0, 256, (2, 3, 20, 24), dtype=torch.uint8, generator=gen)
    cuda.emu.configure("forward", 0, True)
    assert torch.equal(warp(cuda, image8, params, theta, (45, 50)), warp(cuda, image8.float(), params, theta,
                                                                          (45, 50)).round().to(torch.uint8))
    # augment_views' 64-bit instantiation: the same bits as its 32-bit one.
    views = {}
    for force in (False, True):
        cuda.emu.configure("forward", 0, force)
        cuda.emu.reset()
        views[force] = cuda.ops.augment_views(image8, theta[:, None].expand(2, 3, 2, 3).contiguous(),
                                              params[:, None].expand(2, 3, 3, 5).contiguous(),
                                              torch.tensor([1.2, 0.8, 1.1, 0.05, 0.0]).expand(2, 3, 5).contiguous(),
                                              torch.zeros(3), torch.ones(3), 21, "translate", "border",
                                              torch.float32)
        assert kernels(cuda) == [f"{LW}augment::augment_views_kernel<unsigned char, float, "
                                 f"{'long' if force else 'int'}>"]
    assert torch.equal(views[False], views[True])


# ---------------------------------------------------------------------------
# local_warp: backward
# ---------------------------------------------------------------------------

NAMES = ("image", "params", "theta")
# The emulator's (order, seed) settings the order-sensitive tests run under.
ORDERS = [("forward", 0), ("reverse", 0), ("random", 1), ("random", 2)]


@pytest.mark.parametrize("deterministic", [False, True])
def test_backward_grad_out_layouts(cuda, deterministic, gen):
    # Autograd hands the backward whatever grad_out it has: an expanded scalar
    # (stride 0) after .sum(), a channels_last or transposed tensor.
    B, C, out_size = 2, 3, (21, 19)
    image = random_image((B, C, 15, 17), gen, torch.float64)
    params, theta = random_params(B, 3, gen, torch.float64), random_theta(B, gen, torch.float64)
    dense = random_image((B, C, *out_size), gen, torch.float64)
    layouts = {
        "expanded": (torch.tensor(0.7, dtype=torch.float64).expand(B, C, *out_size), torch.full((B, C, *out_size), 0.7,
                                                                                             dtype=torch.float64)),
        "channels_last": (dense.contiguous(memory_format=torch.channels_last), dense),
        "transposed": (dense.transpose(2, 3).contiguous().transpose(2, 3), dense),
    }
    with deterministic_algorithms(deterministic):
        for name, (grad_out, same_values) in layouts.items():
            got = backward(cuda, grad_out, image, params, theta, "gaussian", "reflection")
            want = backward(cuda, same_values, image, params, theta, "gaussian", "reflection")
            for which, a, b in zip(NAMES, got, want):
                assert_close_verbose(a, b, *TOL[torch.float64], what=f"{name} grad_out: grad {which}")


def test_nonfinite_grad_out(cuda, gen):
    # The default mode scatters inf like the oracle; deterministic mode cannot
    # hold inf in fixed point and makes the whole image gradient NaN instead
    # (local_warp_cuda.cu's fixed_point_to_float_kernel), so that it shows.
    image = random_image((1, 2, 9, 10), gen, torch.float64)
    params, theta = random_params(1, 2, gen, torch.float64), random_theta(1, gen, torch.float64)
    grad_out = random_image((1, 2, 8, 8), gen, torch.float64)
    grad_out[0, 1, 3, 4] = float("inf")
    gi = backward(cuda, grad_out, image, params, theta, mask=[True, False, False])[0]
    want = input_grads_reference(image, params, theta, grad_out, (8, 8), "translate", "zeros", False)[0]
    assert_close_verbose(gi, want, *TOL[torch.float64], what="grad image, inf in grad_out")
    assert bool(torch.isinf(gi).any())
    with deterministic_algorithms():
        gi = backward(cuda, grad_out, image, params, theta, mask=[True, False, False])[0]
    assert bool(torch.isnan(gi).all())


def input_grads_reference(image, params, theta, grad_out, out_size, kind, padding, align):
    """The float64 oracle's gradients of (image, params, theta) for grad_out."""
    xs = [None if t is None else t.detach().double().requires_grad_() for t in (image, params, theta)]
    out = reference.local_warp(*xs, out_size=out_size, kind=kind, padding_mode=padding, align_corners=align)
    out.backward(grad_out.double())
    return [None if x is None else x.grad for x in xs]


@pytest.mark.parametrize("kind,padding,align,with_theta,deterministic", list(itertools.product(
    KINDS, PADDINGS, [False, True], [False, True], [False, True])))
def test_backward_parity_float64(cuda, kind, padding, align, with_theta, deterministic, gen):
    B, C, H, W, out_size, K = 2, 3, 20, 24, (60, 70), 3
    image = random_image((B, C, H, W), gen, torch.float64)
    params = random_params(B, K, gen, torch.float64, radius=(0.4, 0.9), magnitude=(0.1, 0.3))
    theta = random_theta(B, gen, torch.float64) if with_theta else None
    grad_out = torch.randn(B, C, *out_size, dtype=torch.float64, generator=gen)
    with deterministic_algorithms(deterministic):
        got = backward(cuda, grad_out, image, params, theta, kind, padding, align)
    want = input_grads_reference(image, params, theta, grad_out, out_size, kind, padding, align)
    for name, a, e in zip(NAMES, got, want):
        if e is None:
            assert a.numel() == 0, f"grad {name} without theta"
            continue
        # The deterministic image gradient sums in 64-bit fixed point,
        # resolving 2^-46 of Ho Wo max|grad_out|.
        tol = TOL[torch.float32] if deterministic and name == "image" else TOL[torch.float64]
        assert_close_verbose(a, e, *tol, what=f"grad {name}")
    s = cuda.stats()
    assert s["block_barriers"] > 0 and s["warp_collectives"] > 0 and s["atomics"] > 0
    if deterministic:
        assert kernels(cuda) == [f"{LW}fixed_point_scale_kernel", f"{LW}local_warp_backward_kernel<double, int>",
                                 f"{LW}fixed_point_to_float_kernel<double>"] + \
            [f"{LW}reduce_partials_kernel"] * (2 if with_theta else 1)
    else:
        assert kernels(cuda) == [f"{LW}local_warp_backward_kernel<double, int>"]


# The image gradient's shared-memory tile (local_warp_cuda.cu's
# ImageGradTile): tile_words() 64-bit words, so 1,024 double sums in either
# mode. With align_corners, no theta, warps that displace nothing and one
# block per image (at most 1,024 output pixels), a block's samples reach
# both corners of the image, so its footprint is the whole H x W image.
# With only the image gradient asked for, a block's barriers per image are
# then two (the footprint's reduction) plus three per pass over the channels
# through the tile, and just the two when the footprint does not fit.
@pytest.mark.parametrize("H,W,C,passes", [(16, 16, 3, 1), (20, 24, 3, 2), (32, 32, 2, 2), (40, 40, 3, None)])
@pytest.mark.parametrize("deterministic", [False, True])
def test_backward_image_grad_tile_passes(cuda, H, W, C, passes, deterministic, gen):
    B, out_size = 2, (27, 31)
    image = random_image((B, C, H, W), gen, torch.float64)
    params = random_params(B, 2, gen, torch.float64, magnitude=(0.0, 0.0))
    grad_out = torch.randn(B, C, *out_size, dtype=torch.float64, generator=gen)
    with deterministic_algorithms(deterministic):
        got = backward(cuda, grad_out, image, params, None, "gaussian", "border", True, mask=[True, False, False])[0]
    want = input_grads_reference(image, params, None, grad_out, out_size, "gaussian", "border", True)[0]
    tol = TOL[torch.float32] if deterministic else TOL[torch.float64]
    assert_close_verbose(got, want, *tol, what=f"grad image, {H}x{W}x{C}")
    per_image = 2 + 3 * (passes or 0)
    assert cuda.stats()["block_barriers"] == B * per_image, f"expected {per_image} barriers per image"


@pytest.mark.parametrize("K", [5, 6, 12])
@pytest.mark.parametrize("deterministic", [False, True])
def test_backward_reduction_flushes(cuda, K, deterministic, gen):
    # 6 theta components and 5 per warp: K = 5 fills the 32 reduction slots
    # but one, K = 6 flushes twice, K = 12 three times. Under each order of
    # the warps, since a flush's shared slots are rewritten by the next one.
    B, C, H, W, out_size = 2, 2, 16, 18, (33, 41)
    image = random_image((B, C, H, W), gen, torch.float64)
    params = random_params(B, K, gen, torch.float64, radius=(0.4, 0.9))
    theta = random_theta(B, gen, torch.float64)
    grad_out = torch.randn(B, C, *out_size, dtype=torch.float64, generator=gen)
    for kind, (order, seed) in itertools.product(KINDS, ORDERS[:3]):
        cuda.emu.configure(order, seed, False)
        with deterministic_algorithms(deterministic):
            got = backward(cuda, grad_out, image, params, theta, kind, "border")
        want = input_grads_reference(image, params, theta, grad_out, out_size, kind, "border", False)
        for name, a, e in zip(NAMES, got, want):
            tol = TOL[torch.float32] if deterministic and name == "image" else TOL[torch.float64]
            assert_close_verbose(a, e, *tol, what=f"K={K} {kind} {order} grad {name}")


@pytest.mark.parametrize("dtype,kind,padding,channels_last", [
    *itertools.product([torch.float32], KINDS, PADDINGS, [False, True]),
    *itertools.product([torch.bfloat16, torch.float16], KINDS, ["border"], [False, True]),
])
def test_backward_low_precision(cuda, dtype, kind, padding, channels_last, gen):
    B, C, H, W, out_size = 3, 3, 32, 40, (29, 37)
    image = random_image((B, C, H, W), gen, dtype)
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    params, theta = random_params(B, 4, gen), random_theta(B, gen)
    grad_out = (random_image((B, C, *out_size), gen) - 0.5).to(dtype)
    got = backward(cuda, grad_out, image, params, theta, kind, padding)
    assert got[0].dtype == dtype and got[1].dtype == params.dtype and got[2].dtype == theta.dtype
    want = input_grads_reference(image, params, theta, grad_out, out_size, kind, padding, False)
    # Coordinate gradients sum d(sample)/d(pixel coordinate) over the whole
    # image; float32 coordinates move samples across pixel edges now and then,
    # so the budget is relative to the gradient's size (as in tests/ops).
    tol = 2e-3 if dtype == torch.float32 else (1e-2 if dtype == torch.bfloat16 else 2e-3)
    for name, a, e in zip(NAMES, got, want):
        scale = float(e.abs().max())
        assert_close_verbose(a.double(), e, tol * scale, tol, what=f"{dtype} grad {name}")


def test_backward_output_mask(cuda, gen):
    image = random_image((2, 3, 12, 10), gen, torch.float64)
    params, theta = random_params(2, 3, gen, torch.float64), random_theta(2, gen, torch.float64)
    grad_out = random_image((2, 3, 9, 11), gen, torch.float64)
    full = backward(cuda, grad_out, image, params, theta, "gaussian", "border")
    for mask in itertools.product([False, True], repeat=3):
        got = backward(cuda, grad_out, image, params, theta, "gaussian", "border", mask=list(mask))
        for name, wanted, a, f in zip(NAMES, mask, got, full):
            if wanted:
                assert_close_verbose(a, f, *TOL[torch.float64], what=f"{mask} grad {name}")
            else:
                assert a.numel() == 0, f"{mask}: grad {name} computed though not asked for"
    gi, gp, gt = backward(cuda, grad_out, image, params[:, :0], None, mask=ALL)
    assert gp.shape == (2, 0, 5) and gt.numel() == 0 and gi.shape == image.shape


@pytest.mark.parametrize("kind,padding,dtype", list(itertools.product(
    KINDS, ["zeros", "reflection"], [torch.float32, torch.bfloat16])))
def test_deterministic_mode_is_bitwise_under_every_order(cuda, kind, padding, dtype, gen):
    # A strong zoom-in: many output pixels scatter into the same input pixels.
    # The emulator runs the blocks and the threads of each block in several
    # orders: float atomics then sum in other orders (so the default mode's
    # image gradient changes, which shows the orders do reorder the sums),
    # while deterministic mode must give the same bits every time.
    B, S = 4, 64
    image = random_image((B, 3, 16, 16), gen, dtype)
    params = random_params(B, 3, gen, dtype)
    theta = torch.tensor([[0.2, 0.0, 0.0], [0.0, 0.2, 0.0]], dtype=dtype).repeat(B, 1, 1)
    grad_out = (random_image((B, 3, S, S), gen) - 0.5).to(dtype)
    runs = {}
    for deterministic in (False, True):
        with deterministic_algorithms(deterministic):
            for order, seed in ORDERS:
                cuda.emu.configure(order, seed, False)
                runs[deterministic, order, seed] = backward(cuda, grad_out, image, params, theta, kind, padding)
    first = runs[True, "forward", 0]
    for order, seed in ORDERS[1:]:
        for name, a, b in zip(NAMES, first, runs[True, order, seed]):
            assert torch.equal(a, b), f"deterministic grad {name} changed under order {order} {seed}"
    if dtype == torch.float32:
        assert any(not torch.equal(runs[False, "forward", 0][0], runs[False, o, s][0]) for o, s in ORDERS[1:]), \
            "the orders did not change the float atomics' sums: the test above would prove nothing"
    want = input_grads_reference(image, params, theta, grad_out, (S, S), kind, padding, False)
    tol = 1e-2 if dtype == torch.bfloat16 else 1e-3
    for name, a, e in zip(NAMES, first, want):
        scale = float(e.abs().max())
        assert_close_verbose(a.double(), e, tol * scale + 1e-6, 1e-2, what=f"deterministic grad {name}")


# ---------------------------------------------------------------------------
# local_warp: non-finite parameters, against the C++ CPU kernels (whose
# contract tests/ops/test_local_warp.py checks against the oracle)
# ---------------------------------------------------------------------------

@needs_cpp
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("bad,where,kind,padding", list(itertools.product(
    [float("nan"), float("inf"), -1e30], ["cx", "r", "dx", "theta0", "theta2"], KINDS, PADDINGS)))
def test_nonfinite_parameters_as_the_cpu_kernel(cuda, bad, where, kind, padding, gen):
    out = (10, 12)
    image, params, theta = poisoned_warp_inputs(where, bad, gen)
    args = (image, params, theta, *out, kind, padding, False)
    got, want = cuda.ops.local_warp(*args), torch.ops.cwarp.local_warp(*args)
    # Reflecting a coordinate of 1e29 leaves no meaningful bits (the contract
    # of tests/ops/test_local_warp.py): there, image 1's samples are only
    # held to be convex combinations of its pixels, and its gradients unchecked.
    meaningless = bad == -1e30 and padding == "reflection"
    checked = slice(0, 1) if meaningless else slice(None)
    assert_close_verbose(got[checked], want[checked], *TOL[torch.float64], what=f"forward {where}={bad}")
    if meaningless:
        assert bool(((got[1] >= image[1].min()) & (got[1] <= image[1].max())).all())
    grad_out = torch.randn(got.shape, dtype=torch.float64, generator=gen)
    bargs = (grad_out, image, params, theta, kind, padding, False, ALL)
    for name, a, e in zip(NAMES, cuda.ops.local_warp_backward(*bargs), torch.ops.cwarp.local_warp_backward(*bargs)):
        a, e = a[checked], e[checked]
        scale = float(e[torch.isfinite(e)].abs().max()) if bool(torch.isfinite(e).any()) else 1.0
        assert_close_verbose(a, e, 1e-9 * scale, 1e-9, what=f"grad {name} {where}={bad}")


# ---------------------------------------------------------------------------
# contrastive_loss
# ---------------------------------------------------------------------------

def loss_inputs(B, N, D, dtype, gen, contiguous=True):
    p = torch.randn(B, D, generator=gen, dtype=torch.float64)
    z = p + 0.8 * torch.randn(B, D, generator=gen, dtype=torch.float64)
    zn = z[:, None] + 0.5 * torch.randn(B, N, D, generator=gen, dtype=torch.float64) if N else None
    if not contiguous:
        p = p.t().contiguous().t()
        zn = None if zn is None else zn.transpose(0, 1).contiguous().transpose(0, 1)
    return [None if t is None else t.to(dtype) for t in (p, z, zn)]


def per_row_reference(p, z, zn, tau, in_batch):
    """(nce, s_pos) per row from the oracle, in float64 (s_pos through the BYOL term 2 - 2 s_pos)."""
    kw = dict(tau=tau, in_batch=in_batch, reduction="none")
    nce = reference.contrastive_loss(p, z, zn, nce_weight=1.0, byol_weight=0.0, **kw)
    byol = reference.contrastive_loss(p, z, zn, nce_weight=0.0, byol_weight=1.0, **kw)
    return nce, 1 - byol / 2


LOSS_TOL = {torch.float64: (1e-10, 1e-10), torch.float32: (2e-5, 2e-5), torch.bfloat16: (1e-2, 1.6e-2)}


@pytest.mark.parametrize("dtype,in_batch,N,BD", list(itertools.product(
    [torch.float32, torch.float64, torch.bfloat16], [False, True], [0, 5], [(1, 16), (7, 33), (37, 100), (3, 0)])))
def test_contrastive_loss_parity(cuda, dtype, in_batch, N, BD, gen):
    # N = 5 keys plus the positive over 4 warps: warps take a second key.
    B, D = BD
    tau = 0.2
    p, z, zn = loss_inputs(B, N, D, dtype, gen, contiguous=B != 7)
    fwd = cuda.ops.contrastive_loss_forward(p, z, zn, tau, in_batch)
    nce, s_pos, inv_p, inv_z, inv_n, lse = fwd
    xs = [None if t is None else t.detach().double().requires_grad_() for t in (p, z, zn)]
    want_nce, want_s = per_row_reference(*xs, tau, in_batch)
    atol, rtol = LOSS_TOL[dtype]
    assert_close_verbose(nce, want_nce, atol, rtol, what=f"{dtype} nce")
    assert_close_verbose(s_pos, want_s, atol, rtol, what=f"{dtype} s_pos")
    assert_close_verbose(inv_p, 1 / xs[0].detach().norm(dim=1).clamp_min(1e-12), atol, rtol, what="inv_p")
    assert_close_verbose(lse, want_nce + want_s / tau, atol, rtol, what="lse")
    # Backward for upstream gradients of both per-row outputs.
    g_nce = torch.linspace(0.5, 1.5, B, dtype=torch.float64)
    g_s = torch.linspace(-0.3, 0.4, B, dtype=torch.float64)
    got = cuda.ops.contrastive_loss_backward(g_nce.to(nce.dtype), g_s.to(nce.dtype), p, z, zn, inv_p, inv_z, inv_n,
                                             lse, tau, in_batch, ALL)
    wanted = [x for x in xs if x is not None]
    want = torch.autograd.grad((g_nce * want_nce + g_s * want_s).sum(), wanted, allow_unused=True)
    for name, a, e in zip(("p", "z_pos", "z_neg"), got, want):
        assert a.dtype == dtype
        # Gradients scale with 1 / (tau |x|): compared relative to their size.
        scale = max(1.0, float(e.abs().max())) if e.numel() else 1.0
        assert_close_verbose(a, e, atol * scale, rtol, what=f"{dtype} grad {name}")
    if N == 0:
        assert got[2].numel() == 0
    # Every thread owns what it writes (no atomics): the same bits under every order.
    for order, seed in ORDERS[1:]:
        cuda.emu.configure(order, seed, False)
        again = cuda.ops.contrastive_loss_forward(p, z, zn, tau, in_batch)
        again_grads = cuda.ops.contrastive_loss_backward(g_nce.to(nce.dtype), g_s.to(nce.dtype), p, z, zn,
                                                         *again[2:], tau, in_batch, ALL)
        for a, b in zip((*fwd, *got), (*again, *again_grads)):
            assert torch.equal(a, b), f"the loss changed under order {order} {seed}"
    T = "double" if dtype == torch.float64 else "float"
    anon = "cwarp::cuda::(anonymous namespace)::"
    launched = set(kernels(cuda))
    expected = {f"{anon}forward_rows_kernel<{CPP[dtype]}, {T}>", f"{anon}backward_logit_grads_kernel<{CPP[dtype]}, {T}>"}
    if D:
        expected.add(f"{anon}backward_rows_kernel<{CPP[dtype]}, {T}>")
    if in_batch:
        expected.add(f"{anon}forward_in_batch_kernel<{CPP[dtype]}, {T}>")
        if D:
            expected |= {f"{anon}backward_in_batch_kernel<{by_row}, {CPP[dtype]}, {T}>" for by_row in ("true", "false")}
            expected.add(f"{anon}finish_kernel<{CPP[dtype]}, {T}>")
    assert launched == expected


def test_contrastive_loss_backward_beyond_the_grid(cuda, gen):
    # The element kernels stride over B * D with at most 65535 blocks of 256
    # threads: 16384 x 1025 elements leave 16640 for the loop's second pass.
    B, D = 16384, 1025
    p, z, _ = loss_inputs(B, 0, D, torch.float32, gen)
    fwd = cuda.ops.contrastive_loss_forward(p, z, None, 0.2, False)
    g = torch.rand(B, generator=gen)
    gp, gz, _ = cuda.ops.contrastive_loss_backward(g, -g, p, z, None, *fwd[2:], 0.2, False, ALL)
    assert "grid=(65535,1,1)" in [line for line in cuda.launched() if "backward_rows_kernel" in line][0]
    xs = [p.double().requires_grad_(), z.double().requires_grad_()]
    nce, s_pos = per_row_reference(*xs, None, 0.2, False)
    want = torch.autograd.grad((g.double() * nce - g.double() * s_pos).sum(), xs)
    for name, a, e in zip(("p", "z_pos"), (gp, gz), want):
        assert_close_verbose(a, e, 2e-5 * float(e.abs().max()), 2e-5, what=f"grad {name}")


def test_contrastive_loss_output_mask(cuda, gen):
    p, z, zn = loss_inputs(6, 3, 40, torch.float64, gen)
    fwd = cuda.ops.contrastive_loss_forward(p, z, zn, 0.3, True)
    g = torch.rand(6, dtype=torch.float64, generator=gen)
    args = (g, -g, p, z, zn, *fwd[2:], 0.3, True)
    full = cuda.ops.contrastive_loss_backward(*args, ALL)
    for mask in itertools.product([False, True], repeat=3):
        got = cuda.ops.contrastive_loss_backward(*args, list(mask))
        for name, wanted, a, f in zip(("p", "z_pos", "z_neg"), mask, got, full):
            if wanted:
                assert_close_verbose(a, f, 1e-12, 1e-12, what=f"{mask} grad {name}")
            else:
                assert a.numel() == 0, f"{mask}: grad {name} computed though not asked for"


# ---------------------------------------------------------------------------
# augment_views
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("C,src_dtype,channels_last,kind,padding,out_dtype", [
    *itertools.product([1, 3], [torch.uint8, torch.float32], [False, True], KINDS, ["border"], [torch.float32]),
    *itertools.product([3], [torch.uint8], [False], ["translate"], ["zeros", "reflection"],
                       [torch.float32, torch.bfloat16]),
])
def test_augment_views_parity(cuda, C, src_dtype, channels_last, kind, padding, out_dtype):
    from cwarp.nn.augment import ContraWarpAugment
    from cwarp.ops.augment_views import reference as augment_reference
    aug = ContraWarpAugment(size=19, num_negatives=2, warps_per_negative=3, kind=kind, jitter_p=0.7,
                            grayscale_p=0.5, warp_magnitude=(0.1, 0.3), padding_mode=padding, out_dtype=out_dtype,
                            backend="torch")
    x = random_images(B=3, C=C, H=20, W=24, dtype=src_dtype, channels_last=channels_last)
    params = aug.sample_params(x, generator=torch.Generator().manual_seed(1))
    mean, std = aug._norm_stats(C, x.device)
    args = (x, params.theta.float(), params.warps.float(), params.color.float(), mean, std, aug.size, kind, padding)
    out = cuda.ops.augment_views(*args, out_dtype)
    # 3 x 4 views of 19 x 19 = 4332 pixels: 16 full blocks and a tail.
    assert out.shape == (3, 4, C, 19, 19) and out.dtype == out_dtype
    assert kernels(cuda) == [f"{LW}augment::augment_views_kernel<{CPP[src_dtype]}, {CPP[out_dtype]}, int>"]
    expected = augment_reference.render(*args, out_dtype=torch.float32)
    std_min = float(std.min())
    atol = (2e-4 if out_dtype == torch.float32 else 1e-2) / std_min
    assert_close_verbose(out.float(), expected, atol, 0.0, what=f"C={C} {src_dtype} {kind} {padding}")
