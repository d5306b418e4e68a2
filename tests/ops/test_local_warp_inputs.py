"""Bad input to cwarp.local_warp and to the registered ops behind each backend
(cwarp::local_warp, cwarp::local_warp_triton and their backward ops): each
raises a clear exception naming the op and the argument; none crashes. Also
which backend "auto" picks, and the Triton backend's refusal of CPU tensors
outside the interpreter."""
from __future__ import annotations

import re

import pytest
import torch

import cwarp
from cwarp.ops import _dispatch
from parity import backends, op_name, registered_op

PUB = r"cwarp\.local_warp\(\)"


def op(be, backward=False):
    return registered_op(be, "local_warp_backward" if backward else "local_warp")


def prefix(be, backward=False):
    """The op's name as its messages start, escaped."""
    return re.escape(op_name(be, "local_warp_backward" if backward else "local_warp") + "()")


def _good(device="cpu"):
    return torch.rand(2, 3, 6, 7, device=device), torch.rand(2, 4, 5, device=device), torch.rand(2, 2, 3, device=device)


# (name, image, params, theta, exception, message after the op name), on device.
def _cases(device):
    img, prm, th = _good(device)
    dev = str(img.device)
    return [
        ("image_3d", img[0], prm, None, ValueError, r"expected image of shape \(B, C, H, W\), got \[3, 6, 7\]"),
        ("image_5d", img[None], prm, None, ValueError, r"expected image of shape \(B, C, H, W\)"),
        ("image_int", (img * 255).to(torch.int32), prm, None, TypeError,
         r"expected image of dtype uint8 or a floating dtype \(float16, bfloat16, float32, float64\), got "
         r"(Int|torch\.int32)"),
        ("image_int8", (img * 127).to(torch.int8), prm, None, TypeError, r"expected image of dtype uint8 or a floating"),
        ("image_bool", img > 0.5, prm, None, TypeError, r"expected image of dtype uint8 or a floating dtype"),
        ("params_batch", img, prm[:1], None, ValueError, r"expected params of shape \(B, K, 5\) with B = 2, got \[1, 4, 5\]"),
        ("params_last_dim", img, prm[..., :4], None, ValueError, r"expected params of shape \(B, K, 5\).*\[2, 4, 4\]"),
        ("params_2d", img, prm[:, 0], None, ValueError, r"expected params of shape \(B, K, 5\)"),
        ("params_int", img, prm.to(torch.int32), None, TypeError, r"expected params of a floating dtype"),
        ("theta_batch", img, prm, th[:1], ValueError, r"expected theta of shape \(B, 2, 3\) with B = 2, got \[1, 2, 3\]"),
        ("theta_3x3", img, prm, torch.rand(2, 3, 3, device=device), ValueError, r"expected theta of shape \(B, 2, 3\)"),
        ("theta_2d", img, prm, th.view(2, 6), ValueError, r"expected theta of shape \(B, 2, 3\)"),
        ("theta_int", img, prm, th.to(torch.int64), TypeError, r"expected theta of a floating dtype"),
        ("params_meta", img, prm.to("meta"), None, RuntimeError, rf"expected params on the image's device {dev}, got meta"),
        ("theta_meta", img, prm, th.to("meta"), RuntimeError, rf"expected theta on the image's device {dev}, got meta"),
    ]


CASE_NAMES = [c[0] for c in _cases("cpu")]


def case(be, name):
    return next(c for c in _cases(be.device) if c[0] == name)


@pytest.mark.parametrize("name", CASE_NAMES)
@pytest.mark.parametrize("be", backends())
def test_public_bad_tensors(be, name):
    _, image, params, theta, exc, msg = case(be, name)
    with pytest.raises(exc, match=PUB + ": " + msg):
        cwarp.local_warp(image, params, theta, backend=be.name)


@pytest.mark.parametrize("name", CASE_NAMES)
@pytest.mark.parametrize("be", backends())
def test_op_bad_tensors(be, name):
    _, image, params, theta, exc, msg = case(be, name)
    with pytest.raises(exc, match=prefix(be) + ": " + msg):
        op(be)(image, params, theta, 5, 5, "translate", "border", False)


@pytest.mark.parametrize("name", [n for n in CASE_NAMES if "meta" not in n])
@pytest.mark.parametrize("be", backends("cpp", "triton"))
def test_fake_bad_tensors(be, name):
    # On meta tensors the fake kernel runs: same messages as the kernels' checks.
    _, image, params, theta, exc, msg = case(be, name)
    to_meta = lambda t: None if t is None else t.to("meta")  # noqa: E731
    with pytest.raises(exc, match=prefix(be) + ": " + msg):
        op(be)(to_meta(image), to_meta(params), to_meta(theta), 5, 5, "translate", "border", False)


@pytest.mark.parametrize("be", backends("cpp", "triton"))
@pytest.mark.parametrize("hw", [(0, 5), (5, 0), (0, 0)])
def test_empty_spatial_dims_raise(hw, be):
    image = torch.rand(2, 3, *hw)
    params = torch.rand(2, 1, 5)
    with pytest.raises(ValueError, match=PUB + r": expected image with non-empty spatial dims"):
        cwarp.local_warp(image, params, out_size=(4, 4), backend=be.name)
    with pytest.raises(ValueError, match=prefix(be) + r": expected image with non-empty spatial dims"):
        op(be)(image, params, None, 4, 4, "translate", "border", False)


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
@pytest.mark.parametrize("be", backends())
def test_public_bad_options(be, kwargs, exc, msg):
    image, params, theta = _good(be.device)
    with pytest.raises(exc, match=PUB + ": " + msg):
        cwarp.local_warp(image, params, theta, **{"backend": be.name, **kwargs})


@pytest.mark.parametrize("args,exc,msg", [
    ((5, 5, "rotate", "border"), ValueError, r"unknown kind 'rotate'"),
    ((5, 5, "translate", "wrap"), ValueError, r"unknown padding_mode 'wrap'"),
    ((0, 5, "translate", "border"), ValueError, r"expected out_size of two positive ints, got \(0, 5\)"),
    ((5, -2, "translate", "border"), ValueError, r"expected out_size of two positive ints, got \(5, -2\)"),
])
@pytest.mark.parametrize("be", backends())
def test_op_bad_options(be, args, exc, msg):
    image, params, theta = _good(be.device)
    with pytest.raises(exc, match=prefix(be) + ": " + msg):
        op(be)(image, params, theta, *args, False)


def test_public_not_a_tensor():
    image, params, _ = _good()
    with pytest.raises(TypeError, match=PUB + r": expected params to be a Tensor, got list"):
        cwarp.local_warp(image, params.tolist())


@pytest.mark.parametrize("bad", ["grad_shape", "grad_dtype", "grad_device", "kind", "params"])
@pytest.mark.parametrize("be", backends())
def test_backward_op_bad_input(be, bad):
    image, params, theta = _good(be.device)
    grad_out = torch.rand(2, 3, 5, 5, device=be.device)
    kind = "translate"
    msg = {
        "grad_shape": (ValueError, r"expected grad_out of shape \(B, C, Ho, Wo\) with B, C = 2, 3, got \[2, 1, 5, 5\]"),
        # The C++ kernels spell dtypes as ATen does, the Triton op (Python) as torch does.
        "grad_dtype": (TypeError, r"expected grad_out of the image's dtype (Float|torch\.float32), "
                                  r"got (Double|torch\.float64)"),
        "grad_device": (RuntimeError, rf"expected grad_out on the image's device {image.device}, got meta"),
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
    with pytest.raises(msg[0], match=prefix(be, backward=True) + ": " + msg[1]):
        op(be, backward=True)(grad_out, image, params, theta, kind, "border", False, [True, True, True])


@pytest.mark.parametrize("be", backends("cpp", "triton"))
def test_backward_fake_checks_grad_out_dtype(be):
    # Under torch.compile the fake must reject what the kernel rejects.
    image, params, theta = _good("meta")
    grad_out = torch.empty(2, 3, 5, 5, dtype=torch.float64, device="meta")
    with pytest.raises(TypeError, match=prefix(be, backward=True) + r": expected grad_out of the image's dtype"):
        op(be, backward=True)(grad_out, image, params, theta, "translate", "border", False, [True, True, True])


@pytest.mark.parametrize("be", backends("cuda-cpp", "cuda-triton"))
def test_cpu_cuda_mismatch(be):
    image, params, _ = _good()
    with pytest.raises(RuntimeError, match=PUB + r": expected params on the image's device cpu, got cuda"):
        cwarp.local_warp(image, params.cuda(), backend=be.name)


# ---------------------------------------------------------------------------
# Dispatch
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("be", backends("triton"))
def test_cpu_tensor_without_interpreter_raises(be, monkeypatch):
    from cwarp.ops import _triton_runtime
    image, params, theta = _good()
    monkeypatch.setattr(_triton_runtime, "INTERPRETED", False)
    with pytest.raises(RuntimeError, match=r"runs CPU tensors only under the Triton interpreter.*TRITON_INTERPRET=1"):
        cwarp.local_warp(image, params, theta, backend="triton")


def test_auto_backend_dispatch(monkeypatch):
    op = "cwarp.local_warp"
    assert _dispatch.resolve_backend(op, "auto", torch.device("cpu")) == "cpp"
    assert _dispatch.resolve_backend(op, "triton", torch.device("cpu")) == "triton"
    monkeypatch.setattr(cwarp._extension, "with_cuda", lambda: True)
    assert _dispatch.resolve_backend(op, "auto", torch.device("cuda")) == "cpp"
    monkeypatch.setattr(cwarp._extension, "with_cuda", lambda: False)
    assert _dispatch.resolve_backend(op, "auto", torch.device("cuda")) == "triton"
    # The in-batch loss: Triton on CUDA when it is installed, else the CUDA kernel.
    monkeypatch.setattr(cwarp._extension, "with_cuda", lambda: True)
    monkeypatch.setattr(cwarp._extension, "triton_installed", lambda: True)
    assert _dispatch.resolve_backend(op, "auto", torch.device("cuda"), prefer_triton_on_cuda=True) == "triton"
    assert _dispatch.resolve_backend(op, "auto", torch.device("cpu"), prefer_triton_on_cuda=True) == "cpp"
    assert _dispatch.resolve_backend(op, "cpp", torch.device("cuda"), prefer_triton_on_cuda=True) == "cpp"
    monkeypatch.setattr(cwarp._extension, "triton_installed", lambda: False)
    assert _dispatch.resolve_backend(op, "auto", torch.device("cuda"), prefer_triton_on_cuda=True) == "cpp"
    with pytest.raises(ValueError, match=r"cwarp\.local_warp\(\): unknown backend 'cuda'"):
        _dispatch.resolve_backend(op, "cuda", torch.device("cpu"))
