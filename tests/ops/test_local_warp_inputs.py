"""Bad input to cwarp.local_warp and torch.ops.cwarp.local_warp: each raises a
clear exception naming the op and the argument; none crashes."""
from __future__ import annotations

import pytest
import torch

import cwarp

PUB = r"cwarp\.local_warp\(\)"
OP = r"cwarp::local_warp\(\)"


def _good():
    return torch.rand(2, 3, 6, 7), torch.rand(2, 4, 5), torch.rand(2, 2, 3)


# (name, image, params, theta, exception, message after the op name)
def _cases():
    img, prm, th = _good()
    return [
        ("image_3d", img[0], prm, None, ValueError, r"expected image of shape \(B, C, H, W\), got \[3, 6, 7\]"),
        ("image_5d", img[None], prm, None, ValueError, r"expected image of shape \(B, C, H, W\)"),
        ("image_int", (img * 255).to(torch.uint8), prm, None, TypeError, r"expected image of a floating dtype"),
        ("image_bool", img > 0.5, prm, None, TypeError, r"expected image of a floating dtype"),
        ("params_batch", img, prm[:1], None, ValueError, r"expected params of shape \(B, K, 5\) with B = 2, got \[1, 4, 5\]"),
        ("params_last_dim", img, torch.rand(2, 4, 4), None, ValueError, r"expected params of shape \(B, K, 5\).*\[2, 4, 4\]"),
        ("params_2d", img, torch.rand(2, 5), None, ValueError, r"expected params of shape \(B, K, 5\)"),
        ("params_int", img, prm.to(torch.int32), None, TypeError, r"expected params of a floating dtype"),
        ("theta_batch", img, prm, th[:1], ValueError, r"expected theta of shape \(B, 2, 3\) with B = 2, got \[1, 2, 3\]"),
        ("theta_3x3", img, prm, torch.rand(2, 3, 3), ValueError, r"expected theta of shape \(B, 2, 3\)"),
        ("theta_2d", img, prm, torch.rand(2, 6), ValueError, r"expected theta of shape \(B, 2, 3\)"),
        ("theta_int", img, prm, th.to(torch.int64), TypeError, r"expected theta of a floating dtype"),
        ("params_meta", img, prm.to("meta"), None, RuntimeError, r"expected params on the image's device cpu, got meta"),
        ("theta_meta", img, prm, th.to("meta"), RuntimeError, r"expected theta on the image's device cpu, got meta"),
    ]


CASES = _cases()


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_public_bad_tensors(case):
    _, image, params, theta, exc, msg = case
    with pytest.raises(exc, match=PUB + ": " + msg):
        cwarp.local_warp(image, params, theta)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_op_bad_tensors(case):
    _, image, params, theta, exc, msg = case
    with pytest.raises(exc, match=OP + ": " + msg):
        torch.ops.cwarp.local_warp(image, params, theta, 5, 5, "translate", "border", False)


@pytest.mark.parametrize("case", [c for c in CASES if "meta" not in c[0]], ids=lambda c: c[0])
def test_fake_bad_tensors(case):
    # On meta tensors the fake kernel runs: same messages as the C++ checks.
    _, image, params, theta, exc, msg = case
    to_meta = lambda t: None if t is None else t.to("meta")
    with pytest.raises(exc, match=OP + ": " + msg):
        torch.ops.cwarp.local_warp(to_meta(image), to_meta(params), to_meta(theta), 5, 5, "translate", "border",
                                   False)


@pytest.mark.parametrize("kwargs,exc,msg", [
    ({"kind": "rotate"}, ValueError, r"unknown kind 'rotate'"),
    ({"padding_mode": "wrap"}, ValueError, r"unknown padding_mode 'wrap'"),
    ({"backend": "cuda"}, ValueError, r"unknown backend 'cuda'"),
    ({"out_size": (0, 4)}, ValueError, r"expected out_size of two positive ints, got \(0, 4\)"),
    ({"out_size": (4, -1)}, ValueError, r"expected out_size of two positive ints, got \(4, -1\)"),
    ({"out_size": 0}, ValueError, r"expected out_size of two positive ints"),
    ({"out_size": (3,)}, ValueError, r"expected out_size of two positive ints"),
    ({"out_size": (3.5, 4)}, TypeError, r"expected out_size of two positive ints"),
])
def test_public_bad_options(kwargs, exc, msg):
    image, params, theta = _good()
    with pytest.raises(exc, match=PUB + ": " + msg):
        cwarp.local_warp(image, params, theta, **kwargs)


@pytest.mark.parametrize("args,exc,msg", [
    ((5, 5, "rotate", "border"), ValueError, r"unknown kind 'rotate'"),
    ((5, 5, "translate", "wrap"), ValueError, r"unknown padding_mode 'wrap'"),
    ((0, 5, "translate", "border"), ValueError, r"expected out_size of two positive ints, got \(0, 5\)"),
    ((5, -2, "translate", "border"), ValueError, r"expected out_size of two positive ints, got \(5, -2\)"),
])
def test_op_bad_options(args, exc, msg):
    image, params, theta = _good()
    with pytest.raises(exc, match=OP + ": " + msg):
        torch.ops.cwarp.local_warp(image, params, theta, *args, False)


def test_public_not_a_tensor():
    image, params, _ = _good()
    with pytest.raises(TypeError, match=PUB + r": expected params to be a Tensor, got list"):
        cwarp.local_warp(image, params.tolist())


@pytest.mark.parametrize("bad", ["grad_shape", "grad_dtype", "grad_device", "kind", "params"])
def test_backward_op_bad_input(bad):
    image, params, theta = _good()
    grad_out = torch.rand(2, 3, 5, 5)
    kind = "translate"
    msg = {
        "grad_shape": (ValueError, r"expected grad_out of shape \(B, C, Ho, Wo\) with B, C = 2, 3, got \[2, 1, 5, 5\]"),
        "grad_dtype": (TypeError, r"expected grad_out of the image's dtype Float, got Double"),
        "grad_device": (RuntimeError, r"expected grad_out on the image's device cpu, got meta"),
        "kind": (ValueError, r"unknown kind 'x'"),
        "params": (ValueError, r"expected params of shape \(B, K, 5\)"),
    }[bad]
    if bad == "grad_shape":
        grad_out = grad_out[:, :1]
    elif bad == "grad_dtype":
        grad_out = grad_out.double()
    elif bad == "grad_device":
        grad_out = grad_out.to("meta")
    elif bad == "kind":
        kind = "x"
    else:
        params = params[..., :4]
    with pytest.raises(msg[0], match=r"cwarp::local_warp_backward\(\): " + msg[1]):
        torch.ops.cwarp.local_warp_backward(grad_out, image, params, theta, kind, "border", False,
                                            [True, True, True])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device for a cpu/cuda mismatch")
def test_cpu_cuda_mismatch():
    image, params, _ = _good()
    with pytest.raises(RuntimeError, match=PUB + r": expected params on the image's device cpu, got cuda"):
        cwarp.local_warp(image, params.cuda())


def test_backward_fake_checks_grad_out_dtype():
    # Under torch.compile the fake must reject what the C++ kernel rejects.
    image, params, theta = (t.to("meta") for t in _good())
    grad_out = torch.empty(2, 3, 5, 5, dtype=torch.float64, device="meta")
    with pytest.raises(TypeError, match=r"cwarp::local_warp_backward\(\): expected grad_out of the image's dtype"):
        torch.ops.cwarp.local_warp_backward(grad_out, image, params, theta, "translate", "border", False,
                                            [True, True, True])
