"""The CUDA kernels of cwarp.local_warp (csrc/ops/local_warp/local_warp_cuda.cu), and the
parity of every backend on CUDA tensors. Each test is skipped on its own,
with a reason, when there is no GPU or the extension lacks its CUDA kernels.
"""
import pytest
import torch

import cwarp
from cwarp import reference

HAS_GPU = torch.cuda.is_available()
gpu = pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA device")
cuda_ext = pytest.mark.skipif(not cwarp._extension.with_cuda(),
                              reason="cwarp._C was built without CUDA kernels (FORCE_CUDA=1 builds them)")
pytestmark = pytest.mark.cuda

KINDS = ("translate", "gaussian")
PADDINGS = ("zeros", "border", "reflection")
TOL = {torch.float64: (1e-10, 1e-10), torch.float32: (3e-5, 3e-5), torch.float16: (3e-3, 5e-3),
       torch.bfloat16: (3e-2, 2e-2)}


def assert_close(actual, expected, dtype, what=""):
    atol, rtol = TOL[dtype]
    a, e = actual.double(), expected.double()
    if not torch.allclose(a, e, atol=atol, rtol=rtol, equal_nan=True):
        diff = (a - e).abs()
        idx = torch.nonzero(diff > atol + rtol * e.abs())[:5].tolist()
        raise AssertionError(f"{what}: max |diff| {diff.max().item():.3e} (atol {atol}, rtol {rtol}); "
                             f"first mismatches at {idx}")


def make_inputs(dtype=torch.float32, B=3, C=3, H=20, W=24, K=3, with_theta=True, seed=0, device="cuda"):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(B, C, H, W, generator=g, dtype=torch.float64)
    params = cwarp.sample_local_warps(B, K, radius=(0.3, 0.6), magnitude=(0.1, 0.3), generator=g,
                                      dtype=torch.float64)
    theta = None
    if with_theta:
        theta = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64).repeat(B, 1, 1)
        theta = theta * 1.25 + 0.1 * torch.randn(B, 2, 3, generator=g, dtype=torch.float64)
    to = lambda t: None if t is None else t.to(device, dtype)  # noqa: E731
    return to(image), to(params), to(theta)


def grads(fn, inputs, grad_out):
    xs = [None if x is None else x.detach().clone().requires_grad_() for x in inputs]
    fn(*xs).backward(grad_out)
    return [None if x is None else x.grad for x in xs]


@cuda_ext
@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("padding_mode", PADDINGS)
@pytest.mark.parametrize("kind", KINDS)
def test_forward_matches_reference(kind, padding_mode, align_corners, dtype):
    image, params, theta = make_inputs(dtype)
    kw = dict(out_size=(17, 29), kind=kind, padding_mode=padding_mode, align_corners=align_corners)
    out = cwarp.local_warp(image, params, theta, backend="cpp", **kw)
    assert out.device.type == "cuda" and out.dtype == dtype and out.shape == (3, 3, 17, 29)
    assert_close(out, reference.local_warp(image, params, theta, **kw), dtype, f"{kind}/{padding_mode}")


@cuda_ext
@gpu
def test_forward_layouts():
    image, params, theta = make_inputs(torch.float32)
    cl = image.contiguous(memory_format=torch.channels_last)
    out = cwarp.local_warp(cl, params, theta, backend="cpp")
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert_close(out, reference.local_warp(image, params, theta), torch.float32, "channels_last")
    strided = torch.randn(3, 3, 20, 48, device="cuda")[..., ::2]
    assert_close(cwarp.local_warp(strided, params, backend="cpp"), reference.local_warp(strided, params),
                 torch.float32, "strided")


@cuda_ext
@gpu
def test_empty_inputs():
    image, params, theta = make_inputs(torch.float32)
    assert cwarp.local_warp(image[:0], params[:0], theta[:0], backend="cpp").shape == (0, 3, 20, 24)
    out = cwarp.local_warp(image[:, :0], params, theta, backend="cpp")
    assert out.shape == (3, 0, 20, 24)
    p = params.clone().requires_grad_()
    cwarp.local_warp(image, p[:, :0], theta, backend="cpp").sum().backward()
    assert p.grad.abs().sum() == 0


@cuda_ext
@gpu
@pytest.mark.parametrize("deterministic", [False, True])
@pytest.mark.parametrize("kind,padding_mode,align_corners", [
    ("translate", "zeros", False), ("translate", "reflection", True), ("gaussian", "border", False),
    ("gaussian", "reflection", False),
])
def test_backward_matches_reference(kind, padding_mode, align_corners, deterministic):
    image, params, theta = make_inputs(torch.float64)
    kw = dict(out_size=(17, 29), kind=kind, padding_mode=padding_mode, align_corners=align_corners)
    grad_out = torch.randn(3, 3, 17, 29, dtype=torch.float64, device="cuda")
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(deterministic)
    try:
        got = grads(lambda i, p, t: cwarp.local_warp(i, p, t, backend="cpp", **kw), (image, params, theta),
                    grad_out)
    finally:
        torch.use_deterministic_algorithms(prev)
    want = grads(lambda i, p, t: reference.local_warp(i, p, t, **kw), (image, params, theta), grad_out)
    # The fixed-point image gradient resolves 2^-46 of Ho Wo max|grad_out|.
    for name, a, b in zip(("image", "params", "theta"), got, want):
        assert_close(a, b, torch.float64 if not deterministic else torch.float32, f"grad {name}")


@cuda_ext
@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_deterministic_backward_is_bitwise_reproducible(dtype):
    # A strong zoom-in: many output pixels scatter into the same input pixels,
    # so float atomics would sum in a varying order.
    image, params, _ = make_inputs(dtype, B=4, H=16, W=16)
    theta = torch.tensor([[0.2, 0.0, 0.0], [0.0, 0.2, 0.0]], device="cuda", dtype=dtype).repeat(4, 1, 1)
    grad_out = torch.randn(4, 3, 128, 128, device="cuda", dtype=dtype)
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        runs = [grads(lambda i, p, t: cwarp.local_warp(i, p, t, out_size=(128, 128), backend="cpp"),
                      (image, params, theta), grad_out) for _ in range(3)]
    finally:
        torch.use_deterministic_algorithms(prev)
    for r in runs[1:]:
        for name, a, b in zip(("image", "params", "theta"), runs[0], r):
            assert torch.equal(a, b), f"deterministic grad {name} changed between runs"
    want = grads(lambda i, p, t: reference.local_warp(i, p, t, out_size=(128, 128)), (image, params, theta),
                 grad_out)
    for name, a, b in zip(("image", "params", "theta"), runs[0], want):
        # Sums over 16k pixels in float32 (the reference) vs fixed point: relative tolerance.
        torch.testing.assert_close(a.double(), b.double(), atol=1e-3 * b.double().abs().max().item() + 1e-6,
                                   rtol=1e-2, msg=f"deterministic grad {name}")


@cuda_ext
@gpu
def test_gradcheck_float64():
    image, params, theta = make_inputs(torch.float64, B=2, C=2, H=5, W=6, K=2)
    fn = lambda i, p, t: cwarp.local_warp(i, p, t, out_size=(4, 5), padding_mode="reflection",  # noqa: E731
                                          backend="cpp")
    inputs = tuple(x.clone().requires_grad_() for x in (image, params, theta))
    assert torch.autograd.gradcheck(fn, inputs, atol=1e-6, rtol=1e-5)


@cuda_ext
@gpu
def test_opcheck_cuda():
    image, params, theta = make_inputs(torch.float32, B=2, C=2, H=5, W=6, K=2)
    torch.library.opcheck(torch.ops.cwarp.local_warp.default,
                          (image, params, theta, 4, 5, "translate", "border", False))
    image.requires_grad_()
    torch.library.opcheck(torch.ops.cwarp.local_warp.default,
                          (image, params, theta, 4, 5, "gaussian", "zeros", True))


@cuda_ext
@gpu
def test_torch_compile_fullgraph_cuda():
    image, params, theta = make_inputs(torch.float32)
    fn = lambda i, p, t: torch.ops.cwarp.local_warp(i, p, t, 16, 16, "translate", "border", False)  # noqa: E731
    p = params.clone().requires_grad_()
    out = torch.compile(fn, fullgraph=True)(image, p, theta)
    out.square().sum().backward()
    p2 = params.clone().requires_grad_()
    fn(image, p2, theta).square().sum().backward()
    assert_close(p.grad, p2.grad, torch.float32, "compiled grad params")


@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_backend_agrees_on_cuda(dtype):
    # cpp (CUDA kernels), triton (compiled), the reference, and the C++ CPU
    # kernel on the same data moved to the CPU.
    image, params, theta = make_inputs(dtype)
    grad_out = torch.randn(3, 3, 20, 24, device="cuda", dtype=dtype)
    ref_out = reference.local_warp(image, params, theta)
    ref_g = grads(lambda i, p, t: reference.local_warp(i, p, t), (image, params, theta), grad_out)
    backends = ["triton"] + (["cpp"] if cwarp._extension.with_cuda() else [])
    for backend in backends:
        out = cwarp.local_warp(image, params, theta, backend=backend)
        assert_close(out, ref_out, dtype, f"{backend} forward")
        g = grads(lambda i, p, t: cwarp.local_warp(i, p, t, backend=backend), (image, params, theta), grad_out)
        for name, a, b in zip(("image", "params", "theta"), g, ref_g):
            torch.testing.assert_close(a.double(), b.double(), atol=5e-2 if dtype == torch.bfloat16 else 1e-4,
                                       rtol=5e-2 if dtype == torch.bfloat16 else 1e-4, msg=f"{backend} grad {name}")
    if cwarp._extension.available():
        cpu = cwarp.local_warp(image.cpu(), params.cpu(), theta.cpu(), backend="cpp")
        assert_close(cpu, ref_out.cpu(), dtype, "cpp CPU forward")


@gpu
def test_auto_picks_a_compiled_cuda_backend():
    image, params, theta = make_inputs(torch.float32)
    out = cwarp.local_warp(image, params, theta)  # backend="auto"
    expected_backend = "cpp" if cwarp._extension.with_cuda() else "triton"
    torch.testing.assert_close(out, cwarp.local_warp(image, params, theta, backend=expected_backend),
                               atol=0, rtol=0)


@cuda_ext
@gpu
def test_side_stream_and_current_device():
    image, params, theta = make_inputs(torch.float32)
    want = cwarp.local_warp(image, params, theta, backend="cpp")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        out = cwarp.local_warp(image, params, theta, backend="cpp")
    torch.cuda.current_stream().wait_stream(stream)
    torch.testing.assert_close(out, want, atol=0, rtol=0)


@cuda_ext
@gpu
def test_more_than_2_pow_31_elements():
    # 64-bit base offsets: b * stride_b passes 2^31 (fp16, 2 x 4.3 GB).
    free, _ = torch.cuda.mem_get_info()
    if free < 16 * 2**30:
        pytest.skip(f"needs 16 GiB of free GPU memory, {free / 2**30:.1f} GiB free")
    B, C, H, W = 8200, 4, 256, 256  # 2.15e9 elements
    image = torch.empty(B, C, H, W, device="cuda", dtype=torch.float16)
    image[-2:].normal_()
    params = cwarp.sample_local_warps(B, 2, generator=torch.Generator().manual_seed(0)).cuda()
    out = cwarp.local_warp(image, params, backend="cpp")
    want = reference.local_warp(image[-2:], params[-2:])
    assert_close(out[-2:], want, torch.float16, "last images of a > 2^31 element batch")
