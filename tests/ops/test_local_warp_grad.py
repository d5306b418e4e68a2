"""Gradients of cwarp.local_warp (backend="cpp", CPU): float64 gradcheck for
image, params and theta; gradients nobody asked for; parity of the gradients
with the float64 oracle; torch.compile; bitwise determinism."""
from __future__ import annotations

import itertools

import pytest
import torch

import cwarp
from cwarp import reference
from parity import assert_close_verbose, random_image, random_params, random_theta

KINDS = ("translate", "gaussian")
PADDINGS = ("zeros", "border", "reflection")


def _inputs(gen, B=2, C=2, H=5, W=6, K=2, dtype=torch.float64):
    image = random_image((B, C, H, W), gen, dtype)
    # Large radii so the discs cover many pixels; random affines so that no
    # sample lands exactly on a pixel or a border, where bilinear sampling has
    # a kink and finite differences disagree with any one-sided derivative.
    params = random_params(B, K, gen, dtype, radius=(0.6, 1.0), magnitude=(0.1, 0.3))
    theta = random_theta(B, gen, dtype)
    return image, params, theta


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("align", [False, True])
def test_gradcheck_all_inputs(kind, padding, align, gen):
    image, params, theta = (t.requires_grad_() for t in _inputs(gen))
    fn = lambda i, p, t: cwarp.local_warp(i, p, t, out_size=(4, 7), kind=kind, padding_mode=padding,
                                          align_corners=align, backend="cpp")
    assert torch.autograd.gradcheck(fn, (image, params, theta), eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("which", ["image", "params", "theta"])
@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck_one_input(which, kind, gen):
    image, params, theta = _inputs(gen, K=3)
    args = {"image": image, "params": params, "theta": theta}
    args[which].requires_grad_()
    fn = lambda x: cwarp.local_warp(**{**args, which: x}, out_size=(6, 5), kind=kind, padding_mode="zeros")
    assert torch.autograd.gradcheck(fn, (args[which],), eps=1e-6, atol=1e-5, rtol=1e-4)


def test_gradcheck_without_theta(gen):
    image, params, _ = (t.requires_grad_() for t in _inputs(gen, K=3))
    for kind in KINDS:
        fn = lambda i, p: cwarp.local_warp(i, p, kind=kind, padding_mode="reflection")
        assert torch.autograd.gradcheck(fn, (image, params), eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("wanted", [("image",), ("params",), ("theta",), ("image", "theta"), ("params", "theta")])
def test_only_requested_gradients(wanted, gen):
    image, params, theta = _inputs(gen, B=3, C=3, H=12, W=10, K=3)
    ref_in = [t.clone().requires_grad_() for t in (image, params, theta)]
    named = dict(zip(("image", "params", "theta"), (image, params, theta)))
    for name in wanted:
        named[name].requires_grad_()
    grad_out = random_image((3, 3, 9, 11), gen, torch.float64)
    out = cwarp.local_warp(image, params, theta, out_size=(9, 11), kind="gaussian", padding_mode="border")
    out.backward(grad_out)
    ref = reference.local_warp(*ref_in, out_size=(9, 11), kind="gaussian", padding_mode="border")
    ref.backward(grad_out)
    for (name, t), r in zip(named.items(), ref_in):
        if name in wanted:
            assert_close_verbose(t.grad, r.grad, 1e-9, 1e-7, what=f"grad {name}")
        else:
            assert t.grad is None, f"{name}.grad was computed though nobody asked for it"


def test_backward_op_leaves_unrequested_outputs_empty(gen):
    image, params, theta = _inputs(gen)
    grad_out = random_image((2, 2, 5, 6), gen, torch.float64)
    gi, gp, gt = torch.ops.cwarp.local_warp_backward(grad_out, image, params, theta, "translate", "zeros", False,
                                                     [True, False, False])
    assert gi.shape == image.shape and gp.numel() == 0 and gt.numel() == 0
    gi, gp, gt = torch.ops.cwarp.local_warp_backward(grad_out, image, params, None, "translate", "zeros", False,
                                                     [False, True, True])
    assert gi.numel() == 0 and gp.shape == params.shape and gt.numel() == 0


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("channels_last", [False, True])
def test_gradient_parity_float32(kind, padding, channels_last, gen):
    B, C, H, W = 3, 3, 32, 40
    image = random_image((B, C, H, W), gen, torch.float32)
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    params = random_params(B, 4, gen, torch.float32)
    theta = random_theta(B, gen, torch.float32)
    grad_out = random_image((B, C, 29, 37), gen, torch.float32) - 0.5
    ours = [t.clone().requires_grad_() for t in (image, params, theta)]
    out = cwarp.local_warp(*ours, out_size=(29, 37), kind=kind, padding_mode=padding)
    out.backward(grad_out)
    oracle = [t.double().requires_grad_() for t in (image, params, theta)]
    ref = reference.local_warp(*oracle, out_size=(29, 37), kind=kind, padding_mode=padding)
    ref.backward(grad_out.double())
    for name, a, e in zip(("image", "params", "theta"), ours, oracle):
        assert a.grad.dtype == torch.float32
        # Coordinate gradients sum d(sample)/d(pixel coordinate) over the whole
        # image; float32 coordinates move samples across pixel edges now and
        # then, so the budget is relative to the gradient's size.
        scale = float(e.grad.abs().max())
        assert_close_verbose(a.grad, e.grad, 2e-3 * scale, 2e-3, what=f"grad {name}")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gradient_half_types(dtype, gen):
    image, params, theta = _inputs(gen, B=2, C=3, H=16, W=14, K=3, dtype=torch.float32)
    ours = [image.to(dtype).requires_grad_(), params.requires_grad_(), theta.requires_grad_()]
    out = cwarp.local_warp(*ours, kind="gaussian", padding_mode="border")
    assert out.dtype == dtype
    out.float().sum().backward()
    oracle = [ours[0].detach().double().requires_grad_(), params.detach().double().requires_grad_(),
              theta.detach().double().requires_grad_()]
    reference.local_warp(*oracle, kind="gaussian", padding_mode="border").sum().backward()
    assert ours[0].grad.dtype == dtype
    tol = 1e-2 if dtype == torch.bfloat16 else 2e-3
    for name, a, e in zip(("image", "params", "theta"), ours, oracle):
        scale = float(e.grad.abs().max())
        assert_close_verbose(a.grad.float(), e.grad, tol * scale, tol, what=f"{dtype} grad {name}")


# ---------------------------------------------------------------------------
# torch.compile
# ---------------------------------------------------------------------------


def test_torch_compile_fullgraph_forward_backward(gen):
    torch._dynamo.reset()

    def f(image, params, theta):
        out = cwarp.local_warp(image, params, theta, out_size=(9, 10), kind="gaussian", padding_mode="reflection")
        return (out * out).sum(), out

    image, params, theta = _inputs(gen, B=2, C=3, H=8, W=11, K=2, dtype=torch.float32)
    eager_in = [t.clone().requires_grad_() for t in (image, params, theta)]
    comp_in = [t.clone().requires_grad_() for t in (image, params, theta)]
    loss_e, out_e = f(*eager_in)
    loss_e.backward()
    compiled = torch.compile(f, fullgraph=True)
    loss_c, out_c = compiled(*comp_in)
    loss_c.backward()
    assert_close_verbose(out_c, out_e, 1e-6, 1e-6, what="compiled forward")
    for name, a, e in zip(("image", "params", "theta"), comp_in, eager_in):
        assert_close_verbose(a.grad, e.grad, 1e-5, 1e-5, what=f"compiled grad {name}")


def test_torch_compile_fullgraph_op_directly(gen):
    # The registered op alone (fake + autograd), without the Python layer's checks.
    torch._dynamo.reset()

    def f(image, params, theta):
        return torch.ops.cwarp.local_warp(image, params, theta, 9, 10, "translate", "zeros", True)

    image, params, theta = _inputs(gen, B=2, C=3, H=8, W=11, K=2, dtype=torch.float32)
    eager_in = [t.clone().requires_grad_() for t in (image, params, theta)]
    comp_in = [t.clone().requires_grad_() for t in (image, params, theta)]
    out_e = f(*eager_in)
    out_e.sum().backward()
    out_c = torch.compile(f, fullgraph=True)(*comp_in)
    out_c.sum().backward()
    assert_close_verbose(out_c, out_e, 1e-6, 1e-6, what="compiled forward")
    for name, a, e in zip(("image", "params", "theta"), comp_in, eager_in):
        assert_close_verbose(a.grad, e.grad, 1e-5, 1e-5, what=f"compiled grad {name}")


# ---------------------------------------------------------------------------
# Determinism
# ---------------------------------------------------------------------------


def _grads(image, params, theta, grad_out, kind, padding):
    ins = [t.clone().requires_grad_() for t in (image, params, theta)]
    cwarp.local_warp(*ins, out_size=grad_out.shape[-2:], kind=kind, padding_mode=padding).backward(grad_out)
    return [t.grad for t in ins]


@pytest.mark.parametrize("kind,padding", list(itertools.product(KINDS, ("zeros", "reflection"))))
def test_backward_bitwise_deterministic(kind, padding, gen, restore_threads):
    # Downscaling makes many outputs scatter into the same input pixel, the
    # case where atomics would make the sums order-dependent.
    image = random_image((6, 3, 40, 44), gen, torch.float32)
    params, theta = random_params(6, 5, gen), random_theta(6, gen)
    grad_out = random_image((6, 3, 23, 19), gen, torch.float32)
    first = _grads(image, params, theta, grad_out, kind, padding)
    again = _grads(image, params, theta, grad_out, kind, padding)
    torch.set_num_threads(1)
    one = _grads(image, params, theta, grad_out, kind, padding)
    torch.set_num_threads(2)
    two = _grads(image, params, theta, grad_out, kind, padding)
    for a, b, c, d in zip(first, again, one, two):
        assert torch.equal(a, b) and torch.equal(c, d) and torch.equal(a, c)
