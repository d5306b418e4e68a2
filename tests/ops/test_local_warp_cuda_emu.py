"""The CUDA local_warp without a GPU: csrc/ops/local_warp/local_warp_cuda.cuh (its
host code and kernels) compiled for the CPU with tests/cuda_emu/cuda_emu.h,
which runs each CUDA thread of a block as a fiber and checks its barriers,
against the C++ CPU op: forward and backward, every dtype and layout, 32- and
64-bit offsets, sizes that are not multiples of a tile, more warps than one
pass of shared memory holds, grids that stride over rows and images, and the
deterministic mode bitwise repeatable.

The emulation compiles the kernels with the host compiler, so the arithmetic
is the host's (no FMA contraction without -march): results are compared with
the tolerances the parity tests hold CUDA to, never bitwise with the CPU op.
Slow (a build of about a minute, then fibers): marked slow."""
from __future__ import annotations

import os

import pytest
import torch

import cwarp
from parity import TOL, assert_close_verbose, deterministic_algorithms, random_image, random_params, random_theta

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    from torch.utils.cpp_extension import load

    build = os.environ.get("CWARP_EMU_BUILD_DIR") or str(tmp_path_factory.mktemp("cuda_emu"))
    os.makedirs(build, exist_ok=True)
    return load(name="cwarp_local_warp_emu", sources=[os.path.join(ROOT, "tests", "cuda_emu", "local_warp_emu.cpp")],
                extra_include_paths=[os.path.join(ROOT, "csrc"), os.path.join(ROOT, "tests", "cuda_emu")],
                extra_cflags=["-O1"], build_directory=build, verbose=False)


def cpu_forward(image, params, theta, out_size, kind, padding, align):
    return torch.ops.cwarp.local_warp(image, params, theta, *out_size, kind, padding, align)


def cpu_backward(grad_out, image, params, theta, kind, padding, align, mask):
    return torch.ops.cwarp.local_warp_backward(grad_out, image, params, theta, kind, padding, align, mask)


def inputs(gen, B, C, H, W, K, dtype, with_theta, channels_last=False):
    image = random_image((B, C, H, W), gen, torch.float64 if dtype == torch.uint8 else dtype)
    if dtype == torch.uint8:
        image = (image * 255).round().to(torch.uint8)
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    pdtype = torch.float64 if dtype == torch.float64 else torch.float32
    params = random_params(B, K, gen, pdtype)
    theta = random_theta(B, gen, pdtype) if with_theta else None
    return image, params, theta


def tolerance(dtype, value_range=1.0):
    if dtype == torch.uint8:
        return 1.0, 0.0  # a sample that lands on .5 may round either way
    atol, rtol = TOL[dtype]
    return atol * value_range, rtol


# (B, C, H, W, out_size, K): tails in x and y, a 1-pixel image, upscaling, no warps,
# more warps than one shared-memory pass (32) holds.
FORWARD_CASES = [
    (2, 3, 20, 24, (23, 37), 4),
    (1, 1, 1, 1, (3, 2), 2),
    (3, 2, 9, 7, (17, 70), 0),
    (1, 3, 12, 10, (5, 33), 40),
]


@pytest.mark.parametrize("case", FORWARD_CASES, ids=lambda c: "x".join(map(str, c[:4])) + f"-K{c[5]}")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.uint8])
def test_forward_matches_cpu(emu, gen, case, dtype):
    B, C, H, W, out_size, K = case
    for kind, padding, align, with_theta, cl in [("translate", "zeros", False, True, False),
                                                  ("gaussian", "reflection", True, False, True),
                                                  ("translate", "border", True, True, True)]:
        image, params, theta = inputs(gen, B, C, H, W, K, dtype, with_theta, cl)
        want = cpu_forward(image, params, theta, out_size, kind, padding, align)
        got = emu.forward(image, params, theta, *out_size, kind, padding, align)
        assert got.dtype == dtype and got.shape == want.shape
        assert got.is_contiguous(memory_format=torch.channels_last) == want.is_contiguous(
            memory_format=torch.channels_last)
        assert_close_verbose(got, want, *tolerance(dtype), what=f"forward {case} {dtype} {kind} {padding}")


def test_forward_64bit_offsets_and_strided_grid(emu, gen):
    # The int64 instantiation, and grids capped at 2 in y and z so that blocks
    # stride over rows of tiles and over images.
    image, params, theta = inputs(gen, 5, 3, 21, 19, 3, torch.float32, True)
    want = cpu_forward(image, params, theta, (40, 45), "translate", "zeros", False)
    for int32 in (True, False):
        got = emu.forward(image, params, theta, 40, 45, "translate", "zeros", False, int32, 2)
        assert_close_verbose(got, want, *TOL[torch.float32], what=f"forward int32={int32}")


def test_forward_empty_batch(emu, gen):
    image, params, theta = inputs(gen, 0, 3, 8, 8, 2, torch.float32, True)
    got = emu.forward(image, params, theta, 5, 6, "translate", "zeros", False)
    assert got.shape == (0, 3, 5, 6)


BACKWARD_CASES = [
    (2, 3, 20, 24, (23, 70), 4),
    (1, 2, 9, 7, (17, 5), 0),
    (1, 1, 12, 10, (9, 33), 40),
]


@pytest.mark.parametrize("case", BACKWARD_CASES, ids=lambda c: "x".join(map(str, c[:4])) + f"-K{c[5]}")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_backward_matches_cpu(emu, gen, case, dtype):
    B, C, H, W, out_size, K = case
    for kind, padding, align, with_theta, cl in [("translate", "zeros", False, True, False),
                                                  ("gaussian", "border", True, True, True)]:
        image, params, theta = inputs(gen, B, C, H, W, K, dtype, with_theta, cl)
        grad_out = torch.randn(B, C, *out_size, generator=gen, dtype=torch.float64).to(dtype)
        mask = [True, True, with_theta]
        want = cpu_backward(grad_out, image, params, theta, kind, padding, align, mask)
        got = emu.backward(grad_out, image, params, theta, kind, padding, align, mask)
        check_grads(got, want, dtype, f"backward {case} {dtype} {kind}", with_theta)


def check_grads(got, want, dtype, what, with_theta):
    # The image gradient sums up to (Ho / H) * (Wo / W) terms per pixel, the
    # parameter and theta gradients a whole image's: tolerances scaled to the
    # sums' size. A gradient not asked for is empty in both.
    atol, rtol = TOL[dtype] if dtype != torch.bfloat16 else TOL[torch.float32]
    sum_rtol = 1e-3 if dtype != torch.float64 else 1e-8
    for name, g, w, a, r in (("grad_image", got[0], want[0], 10 * atol, rtol),
                             ("grad_params", got[1], want[1], 1e3 * atol, sum_rtol),
                             ("grad_theta", got[2], want[2], 1e3 * atol, sum_rtol)):
        assert g.dtype == w.dtype and g.shape == w.shape, f"{what} {name}"
        if w.numel() == 0 or (name == "grad_theta" and not with_theta):
            continue
        assert_close_verbose(g, w, a * (float(w.abs().max()) + 1.0), r, what=f"{what} {name}")


@pytest.mark.parametrize("int32", [True, False])
def test_backward_deterministic_bitwise_and_strided(emu, gen, int32):
    image, params, theta = inputs(gen, 3, 2, 14, 17, 3, torch.float32, True)
    grad_out = torch.randn(3, 2, 19, 40, generator=gen)
    mask = [True, True, True]
    want = cpu_backward(grad_out, image, params, theta, "translate", "zeros", False, mask)
    with deterministic_algorithms():
        first = emu.backward(grad_out, image, params, theta, "translate", "zeros", False, mask, int32, 2)
        again = emu.backward(grad_out, image, params, theta, "translate", "zeros", False, mask, int32, 2)
    for a, b in zip(first, again):
        assert torch.equal(a, b)
    check_grads(first, want, torch.float32, f"deterministic int32={int32}", True)
    free = emu.backward(grad_out, image, params, theta, "translate", "zeros", False, mask, int32, 2)
    check_grads(free, want, torch.float32, f"atomics int32={int32}", True)


def test_backward_output_mask_and_empty(emu, gen):
    image, params, theta = inputs(gen, 2, 3, 10, 12, 2, torch.float64, True)
    grad_out = torch.randn(2, 3, 7, 9, generator=gen, dtype=torch.float64)
    for mask in ([True, False, False], [False, True, False], [False, False, True]):
        want = cpu_backward(grad_out, image, params, theta, "gaussian", "zeros", True, mask)
        got = emu.backward(grad_out, image, params, theta, "gaussian", "zeros", True, mask)
        for g, w in zip(got, want):
            assert g.shape == w.shape
        check_grads(got, want, torch.float64, f"mask {mask}", True)
    image, params, theta = inputs(gen, 0, 3, 10, 12, 2, torch.float32, True)
    got = emu.backward(torch.zeros(0, 3, 7, 9), image, params, theta, "translate", "zeros", False,
                       [True, True, True])
    assert got[0].shape == image.shape and got[1].shape == params.shape


def test_emulator_catches_divergent_barriers(emu):
    # The emulator itself must fail where a GPU would hang or be undefined.
    with pytest.raises(RuntimeError, match="barrier|deadlock"):
        emu.divergent_barrier()
