"""Shared test helpers for the op tests (tests/ops/) and the modules over them.

- per-dtype tolerances (TOL) and `assert_close_verbose`, which follows
  Liger-Kernel's assert_verbose_allclose: on failure it prints how many
  elements mismatch and the first few (index, actual, expected, |diff|);
- random inputs (images, warps, affines, source images for the augmentation);
- the backend axis: `backends()` and `backend_grid()` parametrize one test
  body over cpp / triton on CPU and both on CUDA, `registered_op` finds the
  op behind a backend, plus gradcheck, determinism and opcheck helpers.
"""
from __future__ import annotations

import contextlib
import importlib.util
import itertools
import math
import os
from dataclasses import dataclass

import pytest
import torch

# (atol, rtol) for values in [0, 1] (the tests' images); half types are
# compared with the oracle evaluated on the *same* half input, so the budget
# covers the final rounding to the half type plus float32 opmath.
TOL = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (3e-5, 1e-5),
    torch.bfloat16: (1e-2, 1e-2),
    torch.float16: (2e-3, 2e-3),
}


def assert_close_verbose(actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float,
                         max_print: int = 5, what: str = "") -> None:
    """Elementwise |actual - expected| <= atol + rtol * |expected|; NaN matches NaN only."""
    assert actual.shape == expected.shape, f"{what}: shape {list(actual.shape)} != {list(expected.shape)}"
    a = actual.detach().to(torch.float64).cpu()
    e = expected.detach().to(torch.float64).cpu()
    both_nan = torch.isnan(a) & torch.isnan(e)
    same_inf = torch.isinf(a) & torch.isinf(e) & (a == e)
    close = ((a - e).abs() <= atol + rtol * e.abs()) | both_nan | same_inf
    if bool(close.all()):
        return
    bad = (~close).nonzero()
    lines = [f"{what}: {bad.shape[0]} / {a.numel()} elements mismatch (atol={atol:g}, rtol={rtol:g}); "
             f"max |diff| = {(a - e).abs()[~close].max().item():.3e}; first {min(max_print, bad.shape[0])}:"]
    for idx in bad[:max_print].tolist():
        i = tuple(idx)
        lines.append(f"  at {list(i)}: actual {a[i].item():.9g}, expected {e[i].item():.9g}, "
                     f"|diff| {abs(a[i].item() - e[i].item()):.3e}")
    msg = "\n".join(lines)
    print(msg)
    raise AssertionError(msg)


# ---- random inputs shared by the tests and benchmarks ----

def random_image(shape, gen, dtype=torch.float32) -> torch.Tensor:
    return torch.rand(shape, generator=gen, dtype=torch.float64).to(dtype)


def random_params(batch, k, gen, dtype=torch.float32, radius=(0.2, 0.6), magnitude=(0.05, 0.25)) -> torch.Tensor:
    """Warps whose discs overlap the image (centres in [-0.6, 0.6]^2)."""
    c = (torch.rand(batch, k, 2, generator=gen, dtype=torch.float64) * 1.2 - 0.6)
    r = radius[0] + (radius[1] - radius[0]) * torch.rand(batch, k, 1, generator=gen, dtype=torch.float64)
    m = magnitude[0] + (magnitude[1] - magnitude[0]) * torch.rand(batch, k, 1, generator=gen, dtype=torch.float64)
    phi = 2 * math.pi * torch.rand(batch, k, 1, generator=gen, dtype=torch.float64)
    return torch.cat([c, r, m * torch.cos(phi), m * torch.sin(phi)], dim=-1).to(dtype)


def random_theta(batch, gen, dtype=torch.float32) -> torch.Tensor:
    """Random affines: rotation, anisotropic scale (zoom-in crops and zoom-outs),
    translation, and a horizontal flip for odd images."""
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(batch, generator=gen, dtype=torch.float64)
    ang, sx, sy, tx, ty = u(-0.6, 0.6), u(0.5, 1.4), u(0.5, 1.4), u(-0.3, 0.3), u(-0.3, 0.3)
    flip = torch.ones(batch, dtype=torch.float64)
    flip[1::2] = -1.0
    cos, sin = torch.cos(ang), torch.sin(ang)
    theta = torch.stack([
        torch.stack([sx * cos * flip, -sy * sin, tx], -1),
        torch.stack([sx * sin * flip, sy * cos, ty], -1),
    ], dim=1)
    return theta.to(dtype)


def poisoned_warp_inputs(where, value, gen, dtype=torch.float64):
    """(image, params, theta) of a batch of 2 whose image 1 gets `value` in one parameter
    (`where`: "cx", "cy", "r", "dx", "dy" of its second warp, or "thetaN", entry N of its
    affine); image 0 stays clean."""
    B, C, H, W = 2, 3, 9, 11
    image = random_image((B, C, H, W), gen, dtype)
    params = random_params(B, 3, gen, torch.float64)
    theta = random_theta(B, gen, torch.float64)
    if where.startswith("theta"):
        theta.view(B, 6)[1, int(where[-1])] = value
    else:
        params[1, 1, "cx cy r dx dy".split().index(where)] = value
    return image, params, theta


# ---- the backend axis: one test body, run for every backend ----
#
# As torchvision's test_ops runs one body per device, cwarp's op tests run one
# body per backend: "cpp" (the C++ kernels) and "triton" on CPU tensors (the
# Triton kernels under TRITON_INTERPRET=1, which conftest.py sets when there
# is no GPU), and both on CUDA tensors. Each CUDA param is marked `cuda` and
# skipped on its own where there is no GPU, never the whole module.


@dataclass(frozen=True)
class Backend:
    name: str    # the backend= argument: "cpp", "triton" or "torch"
    device: str  # where the tensors live: "cpu" or "cuda"

    @property
    def interpreted(self) -> bool:
        """Triton on CPU tensors: every program runs in numpy, so shapes stay tiny."""
        return self.name == "triton" and self.device == "cpu"

    def put(self, *tensors):
        """The tensors moved to this backend's device (None stays None)."""
        moved = tuple(None if t is None else t.to(self.device) for t in tensors)
        return moved[0] if len(moved) == 1 else moved

    def __str__(self) -> str:
        return self.name if self.device == "cpu" else f"{self.device}-{self.name}"


_HAS_TRITON = importlib.util.find_spec("triton") is not None
_HAS_GPU = torch.cuda.is_available()


def _marks(backend: Backend) -> list:
    from cwarp import _extension
    marks = []
    if backend.name == "triton":
        marks += [pytest.mark.triton, pytest.mark.skipif(not _HAS_TRITON, reason="triton is not installed")]
        if backend.device == "cpu":
            # The interpreter runs every program in numpy: slow, so the quick tier leaves it out.
            marks.append(pytest.mark.slow)
            marks.append(pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                                            reason="Triton runs CPU tensors only under TRITON_INTERPRET=1, which "
                                                   "conftest.py sets where there is no GPU"))
    if backend.device == "cuda":
        marks += [pytest.mark.cuda, pytest.mark.skipif(not _HAS_GPU, reason="needs a CUDA device")]
        if backend.name == "cpp":
            marks.append(pytest.mark.skipif(not _extension.with_cuda(), reason="cwarp._C was built without its "
                                                                               "CUDA kernels (FORCE_CUDA=1)"))
    elif backend.name == "cpp":
        marks.append(pytest.mark.skipif(not _extension.available(), reason="cwarp._C is not built"))
    return marks


BACKENDS = {str(b): b for b in (Backend("cpp", "cpu"), Backend("triton", "cpu"), Backend("cpp", "cuda"),
                                 Backend("triton", "cuda"), Backend("torch", "cpu"))}
COMPILED = ("cpp", "triton", "cuda-cpp", "cuda-triton")


def backends(*names: str) -> list:
    """pytest params of the named backends (the four compiled ones by default), ids as the names."""
    return [pytest.param(BACKENDS[n], marks=_marks(BACKENDS[n]), id=n) for n in (names or COMPILED)]


def _id(value) -> str:
    if isinstance(value, torch.dtype):
        return str(value).replace("torch.", "")
    if isinstance(value, (tuple, list)):
        return "x".join(_id(v) for v in value)
    return str(value)


def backend_grid(argnames: str, full, small=None, names=COMPILED):
    """parametrize("be,<argnames>", rows) arguments: every backend in `names`
    with each row of `full`, the Triton ones with the rows of `small` instead
    when given (the interpreter runs each program in numpy; on CUDA each new
    shape and flag set autotunes). Rows are tuples of the argnames' values,
    or the values themselves for a single argname."""
    params = []
    single = "," not in argnames
    for n in names:
        rows = full if small is None or BACKENDS[n].name != "triton" else small
        for row in rows:
            row = (row,) if single else tuple(row)
            params.append(pytest.param(BACKENDS[n], *row, marks=_marks(BACKENDS[n]),
                                       id="-".join([n] + [_id(v) for v in row])))
    return "be," + argnames, params


def grid(*axes) -> list:
    """The rows of the product of the axes."""
    return list(itertools.product(*axes))


@contextlib.contextmanager
def deterministic_algorithms(on: bool = True):
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(on)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev)


def input_grads(fn, inputs, grad_out):
    """The gradients of fn(*inputs) (fresh leaves, None stays None) for grad_out."""
    xs = [None if x is None else x.detach().clone().requires_grad_() for x in inputs]
    fn(*xs).backward(grad_out)
    return [None if x is None else x.grad for x in xs]


def gradcheck(be: Backend, fn, inputs, **tol) -> bool:
    """torch.autograd.gradcheck; in fast mode (one random direction) under the interpreter."""
    return torch.autograd.gradcheck(fn, inputs, fast_mode=be.interpreted, **tol)


# opcheck's tests for a Triton op: the aot_dispatch ones trace the kernel's
# launch, which the interpreter cannot do on fake tensors.
TRITON_OPCHECK = ("test_schema", "test_faketensor", "test_autograd_registration")


# Each C++ op and its Triton twin (same schema and messages), with the module
# whose import registers the twin.
TRITON_OPS = {
    "local_warp": ("local_warp_triton", "cwarp.ops.local_warp.triton_kernels"),
    "local_warp_backward": ("local_warp_backward_triton", "cwarp.ops.local_warp.triton_kernels"),
    "contrastive_loss_forward": ("contrastive_loss_triton_forward", "cwarp.ops.contrastive_loss.triton_kernels"),
    "contrastive_loss_backward": ("contrastive_loss_triton_backward", "cwarp.ops.contrastive_loss.triton_kernels"),
    "augment_views": ("augment_views_triton", "cwarp.ops.augment_views.triton_kernels"),
}


def op_name(be: Backend, op: str) -> str:
    """The qualified name of the op behind backend be, as its messages spell it: cwarp::<op>."""
    return "cwarp::" + (TRITON_OPS[op][0] if be.name == "triton" else op)


def registered_op(be: Backend, op: str):
    """torch.ops.cwarp.<op> or its Triton twin, for backend be."""
    if be.name == "triton":
        importlib.import_module(TRITON_OPS[op][1])
    return getattr(torch.ops.cwarp, op_name(be, op).split("::")[1])


def random_images(B=3, C=3, H=20, W=24, dtype=torch.uint8, channels_last=False, seed=0) -> torch.Tensor:
    """Source images for the augmentation: uint8 in [0, 255] or floating in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.uint8:
        x = torch.randint(0, 256, (B, C, H, W), dtype=torch.uint8, generator=g)
    else:
        x = torch.rand(B, C, H, W, generator=g).to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x
