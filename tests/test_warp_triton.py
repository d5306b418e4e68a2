"""The Triton backend of cwarp.local_warp against the reference (SPEC.md §2).

Without a GPU the kernels run on CPU tensors under the Triton interpreter,
which is how CI tests them; with a GPU they run compiled, on CUDA tensors.
@triton.jit picks the interpreter when a function is decorated, and
triton.language's own helpers are decorated when triton is first imported,
so TRITON_INTERPRET must be set before the process first imports triton:
this module sets it (only when no GPU is visible) before importing triton.
That holds when no test module collected earlier imports triton at import
time; a conftest.py that sets it first makes it hold for any order.

The interpreter runs each Triton program in numpy, so the shapes are tiny
(1-2 images, 5x7 outputs) and gradcheck runs in fast mode.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

triton = pytest.importorskip("triton", reason="the Triton backend needs the triton package")

import cwarp  # noqa: E402
from cwarp import reference  # noqa: E402
from cwarp.ops.local_warp import api as cwarp_warp  # noqa: E402
from cwarp.ops.local_warp import triton_kernels as tw  # noqa: E402

if tw._HALF_INTERPRETED:
    DEVICE = None
elif tw.INTERPRETED:
    DEVICE = "cpu"
elif torch.cuda.is_available():
    DEVICE = "cuda"
else:
    DEVICE = None

pytestmark = [
    pytest.mark.triton,
    pytest.mark.skipif(DEVICE is None, reason="no GPU, and triton was imported before TRITON_INTERPRET=1 "
                                              "was set (set it in conftest.py): the Triton kernels cannot run"),
]

KINDS = ("translate", "gaussian")
PADDINGS = ("zeros", "border", "reflection")
# Tolerances against the float64 oracle, by dtype.
TOL = {torch.float64: (1e-10, 1e-10), torch.float32: (2e-5, 2e-5), torch.float16: (2e-3, 5e-3),
       torch.bfloat16: (2e-2, 2e-2)}


def assert_close(actual, expected, dtype, what=""):
    atol, rtol = TOL[dtype]
    if not torch.allclose(actual.double(), expected.double(), atol=atol, rtol=rtol, equal_nan=True):
        diff = (actual.double() - expected.double()).abs()
        idx = torch.nonzero(diff > atol + rtol * expected.double().abs())[:5].tolist()
        raise AssertionError(f"{what}: max |diff| {diff.max().item():.3e} (atol {atol}, rtol {rtol}); "
                             f"first mismatches at {idx}")


def make_inputs(dtype=torch.float64, B=2, C=2, H=6, W=8, K=2, with_theta=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(B, C, H, W, generator=g, dtype=torch.float64)
    # Centres near the middle, radii large enough that every warp covers pixels,
    # displacements big enough to move content by about a pixel.
    c = (torch.rand(B, K, 2, generator=g, dtype=torch.float64) - 0.5) * 0.8
    r = 0.5 + 0.3 * torch.rand(B, K, 1, generator=g, dtype=torch.float64)
    d = (torch.rand(B, K, 2, generator=g, dtype=torch.float64) - 0.5) * 0.5
    params = torch.cat([c, r, d], dim=-1)
    theta = None
    if with_theta:
        theta = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64).repeat(B, 1, 1)
        # A zoom out past the border, so that every padding mode matters.
        theta = theta * 1.3 + 0.1 * torch.randn(B, 2, 3, generator=g, dtype=torch.float64)
    to = lambda t: None if t is None else t.to(DEVICE, dtype)  # noqa: E731
    return to(image), to(params), to(theta)


def run_both(image, params, theta, **kw):
    out = cwarp.local_warp(image, params, theta, backend="triton", **kw)
    ref = reference.local_warp(image, params, theta, **kw)
    return out, ref


# ---------------------------------------------------------------------------
# Forward
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("padding_mode", PADDINGS)
@pytest.mark.parametrize("kind", KINDS)
def test_forward_matches_reference(kind, padding_mode, align_corners):
    image, params, theta = make_inputs()
    out, ref = run_both(image, params, theta, out_size=(5, 7), kind=kind, padding_mode=padding_mode,
                        align_corners=align_corners)
    assert out.shape == (2, 2, 5, 7) and out.dtype == image.dtype
    assert_close(out, ref, torch.float64, f"{kind}/{padding_mode}/{align_corners}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_forward_dtypes(dtype):
    image, params, theta = make_inputs(dtype, B=1)
    out = cwarp.local_warp(image, params, theta, out_size=(5, 7), padding_mode="zeros", backend="triton")
    ref = reference.local_warp(image, params, theta, out_size=(5, 7), padding_mode="zeros")
    assert out.dtype == dtype
    assert_close(out, ref, dtype, str(dtype))


def test_forward_layouts_no_theta_and_default_size():
    # channels_last in, channels_last out; a strided (sliced) image; no theta;
    # out_size defaulting to the input's.
    image, params, _ = make_inputs(torch.float32, B=1, C=3, H=5, W=7)
    cl = image.contiguous(memory_format=torch.channels_last)
    out = cwarp.local_warp(cl, params, backend="triton")
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert_close(out, reference.local_warp(image, params), torch.float32, "channels_last")
    wide = torch.randn(1, 3, 5, 14, device=DEVICE)
    sliced = wide[:, :, :, ::2]
    out = cwarp.local_warp(sliced, params, kind="gaussian", backend="triton")
    assert_close(out, reference.local_warp(sliced, params, kind="gaussian"), torch.float32, "strided")


def test_forward_edge_cases():
    image, params, theta = make_inputs(torch.float32, B=1, K=0)
    # K = 0: a pure affine resample.
    out = cwarp.local_warp(image, params, theta, out_size=(1, 3), backend="triton")
    assert_close(out, reference.local_warp(image, params, theta, out_size=(1, 3)), torch.float32, "K=0")
    # Empty batch: an empty result, no launch.
    empty = cwarp.local_warp(image[:0], params[:0], backend="triton")
    assert empty.shape == (0, 2, 6, 8)


@pytest.mark.skipif(not cwarp._extension.available(), reason="needs the compiled extension cwarp._C")
def test_non_finite_params_like_the_cpp_kernel():
    # NaN / Inf positions go through safe_coord in both backends (same math).
    image, params, theta = make_inputs(torch.float32, B=2, K=1)
    params[0, 0, 0] = float("nan")
    params[1, 0, 3] = float("inf")
    for padding_mode in ("zeros", "reflection"):
        out = cwarp.local_warp(image, params, theta, padding_mode=padding_mode, backend="triton")
        want = cwarp.local_warp(image, params, theta, padding_mode=padding_mode, backend="cpp")
        torch.testing.assert_close(out, want, equal_nan=True, atol=1e-6, rtol=1e-6)


# ---------------------------------------------------------------------------
# Backward
# ---------------------------------------------------------------------------

def grads(fn, inputs, grad_out):
    xs = [None if x is None else x.detach().clone().requires_grad_() for x in inputs]
    fn(*xs).backward(grad_out)
    return [None if x is None else x.grad for x in xs]


@pytest.mark.parametrize("kind,padding_mode,align_corners", [
    ("translate", "zeros", False), ("translate", "border", True), ("translate", "reflection", False),
    ("gaussian", "zeros", True), ("gaussian", "border", False), ("gaussian", "reflection", True),
])
def test_backward_matches_reference(kind, padding_mode, align_corners):
    image, params, theta = make_inputs()
    kw = dict(out_size=(5, 7), kind=kind, padding_mode=padding_mode, align_corners=align_corners)
    grad_out = torch.randn(2, 2, 5, 7, dtype=torch.float64, device=DEVICE)
    got = grads(lambda i, p, t: cwarp.local_warp(i, p, t, backend="triton", **kw), (image, params, theta), grad_out)
    want = grads(lambda i, p, t: reference.local_warp(i, p, t, **kw), (image, params, theta), grad_out)
    for name, a, b in zip(("image", "params", "theta"), got, want):
        assert_close(a, b, torch.float64, f"grad {name}")


def test_backward_float32_and_partial_masks():
    image, params, theta = make_inputs(torch.float32, B=1)
    grad_out = torch.randn(1, 2, 5, 7, device=DEVICE)
    # Only params require grad: image and theta get none.
    p = params.clone().requires_grad_()
    cwarp.local_warp(image, p, theta, out_size=(5, 7), backend="triton").backward(grad_out)
    want = grads(lambda i, q, t: reference.local_warp(i, q, t, out_size=(5, 7)), (image, params, theta), grad_out)
    assert_close(p.grad, want[1], torch.float32, "grad params")
    # The backward op leaves the gradients nobody asked for empty.
    gi, gp, gt = torch.ops.cwarp.local_warp_backward_triton(grad_out, image, params, theta, "translate", "border",
                                                            False, [True, False, False])
    assert gp.numel() == 0 and gt.numel() == 0
    assert_close(gi, want[0], torch.float32, "grad image")


def test_backward_deterministic_is_bitwise_reproducible():
    image, params, theta = make_inputs(torch.float32, B=1)
    grad_out = torch.randn(1, 2, 5, 7, device=DEVICE)
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        g1 = grads(lambda i, p, t: cwarp.local_warp(i, p, t, out_size=(5, 7), backend="triton"),
                   (image, params, theta), grad_out)
        g2 = grads(lambda i, p, t: cwarp.local_warp(i, p, t, out_size=(5, 7), backend="triton"),
                   (image, params, theta), grad_out)
    finally:
        torch.use_deterministic_algorithms(prev)
    want = grads(lambda i, p, t: reference.local_warp(i, p, t, out_size=(5, 7)), (image, params, theta), grad_out)
    for name, a, b, w in zip(("image", "params", "theta"), g1, g2, want):
        assert torch.equal(a, b), f"grad {name} differs between two deterministic runs"
        assert_close(a, w, torch.float32, f"deterministic grad {name}")


def test_gradcheck_float64():
    image, params, theta = make_inputs(torch.float64, B=1, C=1, H=3, W=4, K=1)
    fn = lambda i, p, t: cwarp.local_warp(i, p, t, out_size=(2, 3), padding_mode="reflection",  # noqa: E731
                                          backend="triton")
    inputs = tuple(x.clone().requires_grad_() for x in (image, params, theta))
    assert torch.autograd.gradcheck(fn, inputs, fast_mode=True, atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------------------
# Registration: opcheck, torch.compile
# ---------------------------------------------------------------------------

def test_opcheck():
    image, params, theta = make_inputs(torch.float32, B=1, C=1, H=4, W=5, K=1)
    args = (image, params, theta, 3, 4, "translate", "border", False)
    torch.library.opcheck(torch.ops.cwarp.local_warp_triton.default, args,
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))
    grad_out = torch.randn(1, 1, 3, 4, device=DEVICE)
    torch.library.opcheck(torch.ops.cwarp.local_warp_backward_triton.default,
                          (grad_out, image, params, theta, "gaussian", "zeros", True, [True, True, True]),
                          test_utils=("test_schema", "test_faketensor"))


def test_torch_compile_fullgraph():
    # The op itself: cwarp.local_warp's Python argument checks (torch._check
    # with f-string closures) are not traceable by Dynamo in this torch.
    image, params, theta = make_inputs(torch.float32, B=1, C=1, H=4, W=5, K=1)
    fn = lambda i, p, t: torch.ops.cwarp.local_warp_triton(i, p, t, 3, 4, "translate", "border",  # noqa: E731
                                                           False)
    p = params.clone().requires_grad_()
    out = torch.compile(fn, fullgraph=True)(image, p, theta)
    out.sum().backward()
    p_eager = params.clone().requires_grad_()
    fn(image, p_eager, theta).sum().backward()
    assert_close(out, fn(image, params, theta), torch.float32, "compiled forward")
    assert_close(p.grad, p_eager.grad, torch.float32, "compiled grad params")


# ---------------------------------------------------------------------------
# Errors and dispatch
# ---------------------------------------------------------------------------

def test_bad_inputs_raise_with_messages():
    image, params, theta = make_inputs(torch.float32, B=1)
    with pytest.raises(ValueError, match=r"local_warp_triton\(\): expected params of shape \(B, K, 5\)"):
        torch.ops.cwarp.local_warp_triton(image, params[..., :4], theta, 5, 7, "translate", "border", False)
    with pytest.raises(ValueError, match=r"unknown padding_mode 'wrap'"):
        torch.ops.cwarp.local_warp_triton(image, params, theta, 5, 7, "translate", "wrap", False)
    with pytest.raises(TypeError, match=r"expected image of a floating dtype"):
        torch.ops.cwarp.local_warp_triton(image.to(torch.int32), params, theta, 5, 7, "translate", "border", False)


def test_cpu_tensor_without_interpreter_raises(monkeypatch):
    image, params, theta = make_inputs(torch.float32, B=1)
    monkeypatch.setattr(tw, "INTERPRETED", False)
    with pytest.raises(RuntimeError, match=r"runs CPU tensors only under the Triton interpreter.*TRITON_INTERPRET=1"):
        cwarp.local_warp(image.cpu(), params.cpu(), theta.cpu(), backend="triton")


def test_auto_backend_dispatch(monkeypatch):
    assert cwarp_warp._resolve_backend("auto", torch.device("cpu")) == "cpp"
    assert cwarp_warp._resolve_backend("triton", torch.device("cpu")) == "triton"
    monkeypatch.setattr(cwarp._extension, "with_cuda", lambda: True)
    assert cwarp_warp._resolve_backend("auto", torch.device("cuda")) == "cpp"
    monkeypatch.setattr(cwarp._extension, "with_cuda", lambda: False)
    assert cwarp_warp._resolve_backend("auto", torch.device("cuda")) == "triton"
