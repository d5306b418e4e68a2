"""Gradients of cwarp.local_warp, one body per check run for every backend:
float64 gradcheck of image, params and theta; gradients nobody asked for;
parity of the gradients with the float64 oracle; torch.compile; bitwise
determinism (torch.use_deterministic_algorithms)."""
from __future__ import annotations

import itertools

import pytest
import torch

import cwarp
from cwarp import reference
from parity import (TOL, assert_close_verbose, backend_grid, backends, deterministic_algorithms, gradcheck, grid,
                    input_grads, random_image, random_params, random_theta, registered_op)

KINDS = ("translate", "gaussian")
PADDINGS = ("zeros", "border", "reflection")
NAMES = ("image", "params", "theta")


def _inputs(be, gen, B=2, C=2, H=5, W=6, K=2, dtype=torch.float64):
    image = random_image((B, C, H, W), gen, dtype)
    # Large radii so the discs cover many pixels; random affines so that no
    # sample lands exactly on a pixel or a border, where bilinear sampling has
    # a kink and finite differences disagree with any one-sided derivative.
    params = random_params(B, K, gen, dtype, radius=(0.6, 1.0), magnitude=(0.1, 0.3))
    theta = random_theta(B, gen, dtype)
    return be.put(image, params, theta)


def _gradcheck_inputs(be, gen, K):
    """Inputs for gradcheck: tiny under Triton (the interpreter runs each program in numpy)."""
    if be.name == "triton":
        return _inputs(be, gen, B=1, C=1, H=3, W=4, K=1)
    return _inputs(be, gen, K=K)


@pytest.mark.parametrize(*backend_grid("kind,padding,align", full=grid(KINDS, PADDINGS, [False, True]),
                                       small=[("translate", "reflection", False)]))
def test_gradcheck_all_inputs(be, kind, padding, align, gen):
    image, params, theta = (t.requires_grad_() for t in _gradcheck_inputs(be, gen, K=2))
    fn = lambda i, p, t: cwarp.local_warp(i, p, t, out_size=(4, 7), kind=kind, padding_mode=padding,  # noqa: E731
                                          align_corners=align, backend=be.name)
    assert gradcheck(be, fn, (image, params, theta), eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(*backend_grid("which,kind", full=grid(NAMES, KINDS), names=("cpp", "cuda-cpp")))
def test_gradcheck_one_input(be, which, kind, gen):
    image, params, theta = _inputs(be, gen, K=3)
    args = {"image": image, "params": params, "theta": theta}
    args[which].requires_grad_()
    def fn(x):
        return cwarp.local_warp(**{**args, which: x}, out_size=(6, 5), kind=kind, padding_mode="zeros",
                                backend=be.name)

    assert gradcheck(be, fn, (args[which],), eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("be", backends())
def test_gradcheck_without_theta(be, gen):
    image, params, _ = (t.requires_grad_() for t in _gradcheck_inputs(be, gen, K=3))
    for kind in KINDS:
        fn = lambda i, p: cwarp.local_warp(i, p, kind=kind, padding_mode="reflection", backend=be.name)  # noqa: E731
        assert gradcheck(be, fn, (image, params), eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(*backend_grid(
    "wanted", full=[("image",), ("params",), ("theta",), ("image", "theta"), ("params", "theta")],
    small=[("params",), ("image", "theta")]))
def test_only_requested_gradients(be, wanted, gen):
    B, C, H, W = (1, 2, 6, 8) if be.name == "triton" else (3, 3, 12, 10)
    image, params, theta = _inputs(be, gen, B=B, C=C, H=H, W=W, K=3)
    ref_in = [t.clone().requires_grad_() for t in (image, params, theta)]
    named = dict(zip(NAMES, (image, params, theta)))
    for name in wanted:
        named[name].requires_grad_()
    grad_out = be.put(random_image((B, C, 9, 11), gen, torch.float64))
    out = cwarp.local_warp(image, params, theta, out_size=(9, 11), kind="gaussian", padding_mode="border",
                           backend=be.name)
    out.backward(grad_out)
    ref = reference.local_warp(*ref_in, out_size=(9, 11), kind="gaussian", padding_mode="border")
    ref.backward(grad_out)
    for (name, t), r in zip(named.items(), ref_in):
        if name in wanted:
            assert_close_verbose(t.grad, r.grad, 1e-9, 1e-7, what=f"grad {name}")
        else:
            assert t.grad is None, f"{name}.grad was computed though nobody asked for it"


@pytest.mark.parametrize("be", backends())
def test_backward_op_leaves_unrequested_outputs_empty(be, gen):
    image, params, theta = _inputs(be, gen)
    grad_out = be.put(random_image((2, 2, 5, 6), gen, torch.float64))
    op = registered_op(be, "local_warp_backward")
    gi, gp, gt = op(grad_out, image, params, theta, "translate", "zeros", False, [True, False, False])
    assert gi.shape == image.shape and gp.numel() == 0 and gt.numel() == 0
    gi, gp, gt = op(grad_out, image, params, None, "translate", "zeros", False, [False, True, True])
    assert gi.numel() == 0 and gp.shape == params.shape and gt.numel() == 0


@pytest.mark.parametrize(*backend_grid(
    "kind,padding,align,deterministic", full=grid(KINDS, PADDINGS, [False, True], [False, True]),
    small=[("translate", "zeros", False, False), ("translate", "border", True, False),
           ("translate", "reflection", False, False), ("gaussian", "zeros", True, False),
           ("gaussian", "border", False, False), ("gaussian", "reflection", True, False)]))
def test_gradient_parity_float64(be, kind, padding, align, deterministic, gen):
    B, C, H, W, out_size, K = (2, 2, 6, 8, (5, 7), 2) if be.name == "triton" else (3, 3, 20, 24, (17, 29), 3)
    image, params, theta = _inputs(be, gen, B=B, C=C, H=H, W=W, K=K)
    kw = dict(out_size=out_size, kind=kind, padding_mode=padding, align_corners=align)
    grad_out = be.put(torch.randn(B, C, *out_size, dtype=torch.float64, generator=gen))
    with deterministic_algorithms(deterministic):
        got = input_grads(lambda i, p, t: cwarp.local_warp(i, p, t, backend=be.name, **kw), (image, params, theta),
                          grad_out)
    want = input_grads(lambda i, p, t: reference.local_warp(i, p, t, **kw), (image, params, theta), grad_out)
    # The deterministic image gradient of the CUDA and Triton kernels sums in
    # 64-bit fixed point, resolving 2^-46 of Ho Wo max|grad_out|.
    fixed_point = deterministic and (be.device == "cuda" or be.name == "triton")
    tol = TOL[torch.float32] if fixed_point else TOL[torch.float64]
    for name, a, b in zip(NAMES, got, want):
        assert_close_verbose(a, b, *tol, what=f"{be} grad {name}")


@pytest.mark.parametrize(*backend_grid("kind,padding,channels_last", full=grid(KINDS, PADDINGS, [False, True]),
                                       small=[("translate", "border", False)]))
def test_gradient_parity_float32(be, kind, padding, channels_last, gen):
    B, C, H, W, out_size = (1, 2, 6, 8, (5, 7)) if be.name == "triton" else (3, 3, 32, 40, (29, 37))
    image = random_image((B, C, H, W), gen, torch.float32)
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    params = random_params(B, 4, gen, torch.float32)
    theta = random_theta(B, gen, torch.float32)
    grad_out = random_image((B, C, *out_size), gen, torch.float32) - 0.5
    ours = [t.clone().requires_grad_() for t in be.put(image, params, theta)]
    out = cwarp.local_warp(*ours, out_size=out_size, kind=kind, padding_mode=padding, backend=be.name)
    out.backward(be.put(grad_out))
    oracle = [t.double().requires_grad_() for t in (image, params, theta)]
    ref = reference.local_warp(*oracle, out_size=out_size, kind=kind, padding_mode=padding)
    ref.backward(grad_out.double())
    for name, a, e in zip(NAMES, ours, oracle):
        assert a.grad.dtype == torch.float32
        # Coordinate gradients sum d(sample)/d(pixel coordinate) over the whole
        # image; float32 coordinates move samples across pixel edges now and
        # then, so the budget is relative to the gradient's size.
        scale = float(e.grad.abs().max())
        assert_close_verbose(a.grad, e.grad, 2e-3 * scale, 2e-3, what=f"{be} grad {name}")


@pytest.mark.parametrize(*backend_grid("dtype", full=[torch.float16, torch.bfloat16]))
def test_gradient_half_types(be, dtype, gen):
    B, C, H, W = (1, 2, 6, 8) if be.name == "triton" else (2, 3, 16, 14)
    image, params, theta = _inputs(be, gen, B=B, C=C, H=H, W=W, K=3, dtype=torch.float32)
    ours = [image.to(dtype).requires_grad_(), params.requires_grad_(), theta.requires_grad_()]
    out = cwarp.local_warp(*ours, kind="gaussian", padding_mode="border", backend=be.name)
    assert out.dtype == dtype
    out.float().sum().backward()
    oracle = [t.detach().double().requires_grad_() for t in ours]
    reference.local_warp(*oracle, kind="gaussian", padding_mode="border").sum().backward()
    assert ours[0].grad.dtype == dtype
    tol = 1e-2 if dtype == torch.bfloat16 else 2e-3
    for name, a, e in zip(NAMES, ours, oracle):
        scale = float(e.grad.abs().max())
        assert_close_verbose(a.grad.float(), e.grad, tol * scale, tol, what=f"{be} {dtype} grad {name}")


# ---------------------------------------------------------------------------
# torch.compile
# ---------------------------------------------------------------------------


def _forward(be, entry):
    """The public function or the registered op alone (fake + autograd, without the Python layer's checks)."""
    if entry == "public":
        return lambda i, p, t: cwarp.local_warp(i, p, t, out_size=(9, 10), kind="gaussian",
                                                padding_mode="reflection", backend=be.name)
    op = registered_op(be, "local_warp")
    return lambda i, p, t: op(i, p, t, 9, 10, "translate", "zeros", True)


@pytest.mark.parametrize(*backend_grid("entry", full=["public", "op"], small=["op"]))
def test_torch_compile_fullgraph_forward_backward(be, entry, gen):
    torch._dynamo.reset()
    forward = _forward(be, entry)

    def f(image, params, theta):
        out = forward(image, params, theta)
        return (out * out).sum(), out

    image, params, theta = _inputs(be, gen, B=2, C=3, H=8, W=11, K=2, dtype=torch.float32)
    eager_in = [t.clone().requires_grad_() for t in (image, params, theta)]
    comp_in = [t.clone().requires_grad_() for t in (image, params, theta)]
    loss_e, out_e = f(*eager_in)
    loss_e.backward()
    loss_c, out_c = torch.compile(f, fullgraph=True)(*comp_in)
    loss_c.backward()
    assert_close_verbose(out_c, out_e, 1e-6, 1e-6, what="compiled forward")
    for name, a, e in zip(NAMES, comp_in, eager_in):
        assert_close_verbose(a.grad, e.grad, 1e-5, 1e-5, what=f"compiled grad {name}")


# ---------------------------------------------------------------------------
# Determinism
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(*backend_grid(
    "kind,padding,dtype", full=grid(KINDS, ("zeros", "reflection"), [torch.float32, torch.bfloat16]),
    small=[("translate", "border", torch.float32)]))
def test_backward_bitwise_deterministic(be, kind, padding, dtype, gen, restore_threads):
    # A strong zoom-in: many output pixels scatter into the same input pixels,
    # the case where float atomics would make the sums order-dependent.
    B, S = (1, 8) if be.name == "triton" else (4, 64)
    image = random_image((B, 3, 16, 16), gen, dtype)
    params = random_params(B, 3, gen, dtype)
    theta = torch.tensor([[0.2, 0.0, 0.0], [0.0, 0.2, 0.0]], dtype=dtype).repeat(B, 1, 1)
    grad_out = random_image((B, 3, S, S), gen, dtype) - 0.5
    inputs, grad_out = be.put(image, params, theta), be.put(grad_out)
    fn = lambda i, p, t: cwarp.local_warp(i, p, t, out_size=(S, S), kind=kind, padding_mode=padding,  # noqa: E731
                                          backend=be.name)
    with deterministic_algorithms():
        runs = [input_grads(fn, inputs, grad_out) for _ in range(2)]
        if be.name == "cpp" and be.device == "cpu":
            for n in (1, 2):
                torch.set_num_threads(n)
                runs.append(input_grads(fn, inputs, grad_out))
    for other in runs[1:]:
        for name, a, b in zip(NAMES, runs[0], other):
            assert torch.equal(a, b), f"deterministic grad {name} changed between runs"
    want = input_grads(lambda i, p, t: reference.local_warp(i.double(), p.double(), t.double(), out_size=(S, S),
                                                            kind=kind, padding_mode=padding),
                       inputs, grad_out.double())
    tol = 1e-2 if dtype == torch.bfloat16 else 1e-3
    for name, a, e in zip(NAMES, runs[0], want):
        # Sums over thousands of pixels in float32: a budget relative to the gradient's size.
        scale = float(e.abs().max())
        assert_close_verbose(a.float(), e, tol * scale + 1e-6, 1e-2, what=f"{be} deterministic grad {name}")
