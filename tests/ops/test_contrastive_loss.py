"""cwarp.contrastive_loss: parity with the reference, gradients, custom-op
registration, torch.compile, bad input, edge cases (SPEC.md §3)."""
from __future__ import annotations

import os

# The Triton kernels run on CPU tensors under the interpreter; it must be set
# before triton is imported.
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import torch

import cwarp
from cwarp import _extension, reference

HAS_CPP = _extension.available() and hasattr(torch.ops.cwarp, "contrastive_loss_forward")
needs_cpp = pytest.mark.skipif(not HAS_CPP, reason="cwarp._C (the compiled extension) is not built")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
needs_cuda_ext = pytest.mark.skipif(not (torch.cuda.is_available() and _extension.with_cuda()),
                                    reason="needs a CUDA device and cwarp._C built with CUDA")
try:
    import triton  # noqa: F401
    HAS_TRITON = True
except ImportError:
    HAS_TRITON = False
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")

# Per-dtype tolerances against the float64 oracle. Half types compute in
# float32; their error is the rounding of the result (and of each gradient
# element) to the dtype.
TOL = {
    torch.float64: dict(rtol=1e-10, atol=1e-10),
    torch.float32: dict(rtol=2e-5, atol=2e-5),
    torch.bfloat16: dict(rtol=1.6e-2, atol=1e-2),
    torch.float16: dict(rtol=2e-3, atol=2e-3),
}


def assert_close_verbose(actual: torch.Tensor, expected: torch.Tensor, rtol: float, atol: float, what: str = ""):
    """torch.testing.assert_close, but printing the first mismatching elements (Liger style)."""
    actual, expected = actual.detach().double().cpu(), expected.detach().double().cpu()
    bad = ~torch.isclose(actual, expected, rtol=rtol, atol=atol, equal_nan=True)
    if bad.any():
        idx = bad.nonzero()[:5].tolist()
        lines = [f"  at {i}: got {actual[tuple(i)].item():.6g}, expected {expected[tuple(i)].item():.6g}" for i in idx]
        raise AssertionError(f"{what}: {int(bad.sum())} of {bad.numel()} elements differ "
                             f"(rtol={rtol}, atol={atol})\n" + "\n".join(lines))


def make_inputs(B, N, D, dtype=torch.float32, device="cpu", seed=0, neg=True, contiguous=True):
    g = torch.Generator().manual_seed(seed)
    p = torch.randn(B, D, generator=g, dtype=torch.float64)
    z = p + 0.8 * torch.randn(B, D, generator=g, dtype=torch.float64)  # positives correlate with p
    zn = z[:, None] + 0.5 * torch.randn(B, N, D, generator=g, dtype=torch.float64) if neg else None
    if not contiguous:
        # Same values, other strides: transposed storage for p, a strided slice for z_neg.
        p = p.t().contiguous().t()
        z = torch.cat([z, z], dim=1)[:, ::2] if D > 0 else z
        if zn is not None:
            zn = zn.transpose(0, 1).contiguous().transpose(0, 1)
    out = [t.to(device=device, dtype=dtype) if t is not None else None for t in (p, z, zn)]
    return out


def backends():
    out = []
    if HAS_CPP:
        out.append("cpp")
    if HAS_TRITON:
        out.append(pytest.param("triton", marks=pytest.mark.triton))
    return out


def check_against_reference(backend, B, N, D, dtype, in_batch, neg=True, reduction="mean", tau=0.2,
                            byol_weight=0.3, nce_weight=1.0, contiguous=True, device="cpu"):
    p, z, zn = make_inputs(B, N, D, dtype, device, neg=neg, contiguous=contiguous)
    ins = [t.detach().requires_grad_() for t in (p, z, zn) if t is not None]
    ins_ref = [t.detach().double().requires_grad_() for t in ins]
    kw = dict(tau=tau, byol_weight=byol_weight, nce_weight=nce_weight, in_batch=in_batch, reduction=reduction)
    out = cwarp.contrastive_loss(*ins, **kw, backend=backend)
    exp = reference.contrastive_loss(*ins_ref, **kw)
    assert out.dtype == dtype
    tol = TOL[dtype]
    assert_close_verbose(out, exp, what="loss", **tol)
    grad_out = torch.linspace(0.5, 1.5, out.numel(), dtype=torch.float64).reshape(out.shape)
    grads = torch.autograd.grad(out, ins, grad_out.to(device=device, dtype=dtype))
    grads_ref = torch.autograd.grad(exp, ins_ref, grad_out.to(device))
    for name, g, e in zip(("p", "z_pos", "z_neg"), grads, grads_ref):
        assert g.dtype == dtype and g.shape == e.shape
        # Gradients scale with 1 / (tau * |x|): compare relative to their size.
        scale = max(1.0, float(e.abs().max()))
        assert_close_verbose(g, e, rtol=tol["rtol"], atol=tol["atol"] * scale, what=f"grad {name}")


# ---------------------------------------------------------------------------
# Parity with the reference
# ---------------------------------------------------------------------------


@needs_cpp
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("in_batch", [False, True])
@pytest.mark.parametrize("neg", [True, False])
def test_cpp_matches_reference(dtype, in_batch, neg):
    check_against_reference("cpp", 12, 5, 33, dtype, in_batch, neg=neg)


@needs_cpp
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("contiguous", [True, False])
def test_cpp_reductions_and_strides(reduction, contiguous):
    check_against_reference("cpp", 9, 3, 16, torch.float32, True, reduction=reduction, contiguous=contiguous)


@needs_cpp
@pytest.mark.parametrize("B", [63, 64, 65, 300])
def test_cpp_in_batch_tile_boundaries(B):
    # Tiles are 64 rows x 256 columns: cover partial tiles and the diagonal
    # falling at every position of a tile.
    check_against_reference("cpp", B, 2, 24, torch.float32, True, tau=0.1)


@needs_cpp
@pytest.mark.parametrize("in_batch", [False, True])
def test_cpp_small_tau_is_stable(in_batch):
    # Logits up to 1/tau = 100: exp would overflow float32 without the running max.
    check_against_reference("cpp", 16, 4, 8, torch.float32, in_batch, tau=0.01)


@needs_cpp
def test_cpp_weights():
    check_against_reference("cpp", 8, 2, 8, torch.float32, False, byol_weight=0.0, nce_weight=2.5)
    check_against_reference("cpp", 8, 2, 8, torch.float32, True, byol_weight=1.0, nce_weight=0.0)


@needs_cpp
def test_pure_byol_without_negatives():
    # z_neg None and in_batch False: the logits are just [s_pos], nce = 0.
    p, z, _ = make_inputs(6, 0, 10, torch.float64, neg=False)
    nce = cwarp.contrastive_loss(p, z, reduction="none")
    assert torch.equal(nce, torch.zeros(6, dtype=torch.float64))
    byol = cwarp.contrastive_loss(p, z, byol_weight=1.0, nce_weight=0.0)
    cos = torch.nn.functional.cosine_similarity(p, z, dim=1)
    torch.testing.assert_close(byol, (2 - 2 * cos).mean())


@needs_triton
@pytest.mark.triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("in_batch", [False, True])
def test_triton_matches_reference(dtype, in_batch):
    check_against_reference("triton", 7, 3, 10, dtype, in_batch)


@needs_triton
@pytest.mark.triton
@pytest.mark.parametrize("B,N,D,dtype,block_k", [
    (37, 2, 100, torch.float32, 16),  # three in-batch tiles, the last one partial
    (5, 1, 600, torch.float64, 1),    # BLOCK_D 1024: one row per tile
])
def test_triton_in_batch_tiles(B, N, D, dtype, block_k):
    from cwarp.ops.contrastive_loss.triton_kernels import _blocks

    assert _blocks(D, dtype)[1] == block_k
    check_against_reference("triton", B, N, D, dtype, True)


@needs_triton
@pytest.mark.triton
def test_triton_no_negatives_and_strides():
    check_against_reference("triton", 6, 0, 12, torch.float32, True, neg=False, contiguous=False, reduction="none")
    check_against_reference("triton", 6, 2, 12, torch.float32, False, tau=0.02)


@pytest.mark.parametrize("backend", backends())
def test_module_form(backend):
    p, z, zn = make_inputs(5, 2, 8, torch.float32)
    mod = cwarp.ContraWarpingLoss(tau=0.5, byol_weight=0.1, in_batch=True, backend=backend)
    assert "tau=0.5" in repr(mod)
    exp = reference.contrastive_loss(p.double(), z.double(), zn.double(), tau=0.5, byol_weight=0.1, in_batch=True)
    assert_close_verbose(mod(p, z, zn), exp, what="module", **TOL[torch.float32])


# ---------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------


@needs_cpp
@pytest.mark.parametrize("in_batch", [False, True])
@pytest.mark.parametrize("neg", [True, False])
def test_cpp_gradcheck(in_batch, neg):
    p, z, zn = make_inputs(5, 3, 6, torch.float64, neg=neg)
    ins = [t.requires_grad_() for t in (p, z, zn) if t is not None]

    def fn(*args):
        return cwarp.contrastive_loss(*args, tau=0.3, byol_weight=0.7, in_batch=in_batch, reduction="none")

    assert torch.autograd.gradcheck(fn, ins)


@needs_cpp
@pytest.mark.parametrize("in_batch", [False, True])
def test_cpp_zero_row_gradients_match_reference(in_batch):
    # A row clamped by the eps has a different Jacobian (no projection term, as
    # F.normalize's clamp_min passes no gradient). gradcheck cannot test it:
    # its finite differences leave the clamped regime. Compare with autograd
    # through the reference instead.
    p, z, zn = make_inputs(4, 2, 5, torch.float64)
    z[1] = 0
    zn[2, 1] = 0
    p[3] = 0
    ins = [t.requires_grad_() for t in (p, z, zn)]
    kw = dict(in_batch=in_batch, byol_weight=1.0, reduction="sum")
    got = torch.autograd.grad(cwarp.contrastive_loss(*ins, **kw), ins)
    exp = torch.autograd.grad(reference.contrastive_loss(*ins, **kw), ins)
    for g, e in zip(got, exp):
        torch.testing.assert_close(g, e)


@needs_triton
@pytest.mark.triton
def test_triton_gradcheck():
    p, z, zn = make_inputs(4, 2, 5, torch.float64)
    ins = [t.requires_grad_() for t in (p, z, zn)]
    fn = lambda *a: cwarp.contrastive_loss(*a, in_batch=True, byol_weight=0.5, backend="triton")  # noqa: E731
    assert torch.autograd.gradcheck(fn, ins)


@needs_cpp
@pytest.mark.parametrize("in_batch", [False, True])
def test_cpp_only_needed_gradients(in_batch):
    p, z, zn = make_inputs(8, 3, 8, torch.float64)
    p.requires_grad_()
    out = cwarp.contrastive_loss(p, z, zn, in_batch=in_batch)
    (gp,) = torch.autograd.grad(out, [p])
    pr = p.detach().requires_grad_()
    (ep,) = torch.autograd.grad(reference.contrastive_loss(pr, z, zn, in_batch=in_batch), [pr])
    torch.testing.assert_close(gp, ep)
    # The backward op returns empty tensors for what output_mask leaves out.
    fwd = torch.ops.cwarp.contrastive_loss_forward(p.detach(), z, zn, 0.2, in_batch)
    g = torch.ops.cwarp.contrastive_loss_backward(torch.ones(8, dtype=torch.float64), torch.zeros(8, dtype=torch.float64),
                                                  p.detach(), z, zn, *fwd[2:], 0.2, in_batch, [False, True, False])
    assert g[0].numel() == 0 and g[1].shape == z.shape and g[2].numel() == 0


@needs_cpp
def test_cpp_deterministic_across_threads():
    p, z, zn = make_inputs(200, 3, 32, torch.float32)
    ins = [t.requires_grad_() for t in (p, z, zn)]
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            out = cwarp.contrastive_loss(*ins, in_batch=True, reduction="sum")
            results.append((out.detach(),) + torch.autograd.grad(out, ins))
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


# ---------------------------------------------------------------------------
# Custom-op registration and torch.compile
# ---------------------------------------------------------------------------


@needs_cpp
@pytest.mark.parametrize("in_batch", [False, True])
@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("neg", [True, False])
def test_opcheck_forward(in_batch, requires_grad, neg):
    p, z, zn = make_inputs(6, 2, 8, torch.float64, neg=neg)
    for t in (p, z, zn):
        if t is not None:
            t.requires_grad_(requires_grad)
    torch.library.opcheck(torch.ops.cwarp.contrastive_loss_forward.default, (p, z, zn, 0.2, in_batch))


@needs_cpp
@pytest.mark.parametrize("in_batch", [False, True])
def test_opcheck_backward(in_batch):
    p, z, zn = make_inputs(6, 2, 8, torch.float32)
    fwd = torch.ops.cwarp.contrastive_loss_forward(p, z, zn, 0.2, in_batch)
    args = (torch.rand(6), torch.rand(6), p, z, zn, *fwd[2:], 0.2, in_batch, [True, True, True])
    torch.library.opcheck(torch.ops.cwarp.contrastive_loss_backward.default, args)


# Under TRITON_INTERPRET=1, torch.library.wrap_triton returns the interpreted
# kernel unwrapped (torch/_library/triton.py: InterpretedFunction lacks the JIT
# metadata its tracing wrapper needs), so fake-tensor tracing of a triton_op
# launches the kernel on fake tensors. Eager runs work on the CPU; the fake
# path (opcheck's test_faketensor, torch.compile) is tested on CUDA only.
INTERPRETED_TRACING = "torch.compile / fake tracing of triton_op needs compiled Triton (a CUDA device)"


@needs_triton
@pytest.mark.triton
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[needs_cuda, pytest.mark.cuda])])
def test_opcheck_triton(device):
    from cwarp.ops.contrastive_loss import triton_kernels as tc  # noqa: F401  (registers the ops)
    p, z, zn = make_inputs(4, 2, 8, torch.float32, device=device)
    p.requires_grad_()
    utils = ("test_schema", "test_autograd_registration")
    if device == "cuda":
        utils += ("test_faketensor",)
    torch.library.opcheck(torch.ops.cwarp.contrastive_loss_triton_forward.default, (p, z, zn, 0.2, True),
                          test_utils=utils)


@needs_triton
@needs_cuda
@pytest.mark.triton
@pytest.mark.cuda
def test_triton_torch_compile_fullgraph():
    torch._dynamo.reset()
    p, z, zn = make_inputs(5, 2, 8, torch.float32, device="cuda")
    ins = [t.requires_grad_() for t in (p, z, zn)]
    fn = lambda a, b, c: cwarp.contrastive_loss(a, b, c, in_batch=True, backend="triton")  # noqa: E731
    out = torch.compile(fn, fullgraph=True)(*ins)
    exp = reference.contrastive_loss(*(t.detach().double() for t in ins), in_batch=True)
    assert_close_verbose(out, exp, what="compiled triton", **TOL[torch.float32])
    torch.autograd.grad(out, ins)


@needs_cpp
@pytest.mark.parametrize("in_batch", [False, True])
def test_torch_compile_fullgraph(in_batch):
    torch._dynamo.reset()
    p, z, zn = make_inputs(8, 3, 16, torch.float32)
    ins = [t.requires_grad_() for t in (p, z, zn)]

    def fn(a, b, c):
        return cwarp.contrastive_loss(a, b, c, tau=0.1, byol_weight=0.5, in_batch=in_batch)

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    out = compiled(*ins)
    exp = fn(*ins)
    torch.testing.assert_close(out, exp)
    for g, e in zip(torch.autograd.grad(out, ins), torch.autograd.grad(exp, ins)):
        torch.testing.assert_close(g, e)


@needs_cpp
def test_torch_compile_inductor():
    torch._dynamo.reset()
    p, z, zn = make_inputs(8, 3, 16, torch.float32)
    loss = cwarp.ContraWarpingLoss(tau=0.2, in_batch=True)
    out = torch.compile(loss, fullgraph=True)(p, z, zn)
    torch.testing.assert_close(out, loss(p, z, zn))


# ---------------------------------------------------------------------------
# Bad input and edge cases
# ---------------------------------------------------------------------------


BAD_CASES = [
    ("z_pos_B", lambda p, z, n: (p, z[:3], n, {}), ValueError, r"expected z_pos of shape \(B, D\)"),
    ("z_pos_D", lambda p, z, n: (p, z[:, :4], n, {}), ValueError, r"expected z_pos of shape \(B, D\)"),
    ("z_neg_D", lambda p, z, n: (p, z, n[..., :4], {}), ValueError, r"expected z_neg of shape \(B, N, D\)"),
    ("z_neg_B", lambda p, z, n: (p, z, n[:2], {}), ValueError, r"expected z_neg of shape \(B, N, D\)"),
    ("z_neg_rank", lambda p, z, n: (p, z, n[:, 0], {}), ValueError, r"expected z_neg of rank 3"),
    ("p_rank", lambda p, z, n: (p[None], z, n, {}), ValueError, r"expected p of shape \(B, D\)"),
    ("tau_zero", lambda p, z, n: (p, z, n, {"tau": 0.0}), ValueError, r"expected tau > 0 and finite, got 0"),
    ("tau_neg", lambda p, z, n: (p, z, n, {"tau": -1.0}), ValueError, r"expected tau > 0 and finite"),
    ("tau_inf", lambda p, z, n: (p, z, n, {"tau": float("inf")}), ValueError, r"expected tau > 0 and finite"),
    ("tau_nan", lambda p, z, n: (p, z, n, {"tau": float("nan")}), ValueError, r"expected tau > 0 and finite"),
    ("reduction", lambda p, z, n: (p, z, n, {"reduction": "avg"}), ValueError, r"unknown reduction 'avg'"),
    ("backend", lambda p, z, n: (p, z, n, {"backend": "cuda"}), ValueError, r"unknown backend 'cuda'"),
    ("dtype", lambda p, z, n: (p, z.double(), n, {}), TypeError, r"expected z_pos of p's dtype"),
    ("int", lambda p, z, n: (p.long(), z.long(), None, {}), TypeError, r"expected p of a floating dtype"),
    ("device", lambda p, z, n: (p, z.to("meta"), n, {}), RuntimeError, r"expected z_pos on p's device cpu"),
    ("device_neg", lambda p, z, n: (p, z, n.to("meta"), {}), RuntimeError, r"expected z_neg on p's device cpu"),
]


@pytest.mark.parametrize("name,make,exc,match", BAD_CASES, ids=[c[0] for c in BAD_CASES])
@pytest.mark.parametrize("backend", ["auto", "torch"] if not HAS_CPP else ["cpp"])
def test_bad_input(name, make, exc, match, backend):
    p, z, n = make_inputs(5, 2, 8, torch.float32)
    p2, z2, n2, kw = make(p, z, n)
    with pytest.raises(exc, match=r"cwarp\.contrastive_loss\(\): " + match):
        cwarp.contrastive_loss(p2, z2, n2, **{"backend": backend, **kw})


@needs_cpp
@pytest.mark.parametrize("name,make,exc,match", [c for c in BAD_CASES if c[0] not in ("reduction", "backend")],
                         ids=[c[0] for c in BAD_CASES if c[0] not in ("reduction", "backend")])
def test_bad_input_reaches_the_op(name, make, exc, match):
    # The C++ op checks on its own (its messages match the Python ones).
    p, z, n = make_inputs(5, 2, 8, torch.float32)
    p2, z2, n2, kw = make(p, z, n)
    if p2.device != z2.device or (n2 is not None and n2.device != p2.device):
        exc = (RuntimeError, NotImplementedError)  # the dispatcher may refuse mixed devices first
        match = ""
    with pytest.raises(exc, match=match):
        torch.ops.cwarp.contrastive_loss_forward(p2, z2, n2, kw.get("tau", 0.2), False)


def test_empty_batch():
    p, z, zn = make_inputs(0, 2, 8, torch.float32)
    backend = "cpp" if HAS_CPP else "torch"
    with pytest.raises(ValueError, match=r"cwarp\.contrastive_loss\(\): the mean of an empty batch"):
        cwarp.contrastive_loss(p, z, zn, backend=backend)
    assert cwarp.contrastive_loss(p, z, zn, reduction="sum", backend=backend).item() == 0.0
    assert cwarp.contrastive_loss(p, z, zn, reduction="none", in_batch=True, backend=backend).shape == (0,)


def test_module_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"ContraWarpingLoss\(\): expected tau > 0"):
        cwarp.ContraWarpingLoss(tau=0)
    with pytest.raises(ValueError, match=r"ContraWarpingLoss\(\): unknown reduction"):
        cwarp.ContraWarpingLoss(reduction="max")


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("in_batch", [False, True])
def test_zero_rows_are_finite(backend, in_batch):
    p, z, zn = make_inputs(4, 2, 6, torch.float32)
    p[0] = 0
    z[1] = 0
    zn[2, 0] = 0
    ins = [t.requires_grad_() for t in (p, z, zn)]
    out = cwarp.contrastive_loss(*ins, in_batch=in_batch, byol_weight=1.0, reduction="none", backend=backend)
    assert torch.isfinite(out).all()
    for g in torch.autograd.grad(out.sum(), ins):
        assert torch.isfinite(g).all()
    exp = reference.contrastive_loss(*(t.detach().double() for t in ins), in_batch=in_batch, byol_weight=1.0,
                                     reduction="none")
    assert_close_verbose(out, exp, what="zero rows", **TOL[torch.float32])


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("in_batch", [False, True])
def test_nan_in_nan_out(backend, in_batch):
    p, z, zn = make_inputs(4, 2, 6, torch.float32)
    p[1, 3] = float("nan")
    zn[2, 1, 0] = float("nan")
    ins = [t.requires_grad_() for t in (p, z, zn)]
    out = cwarp.contrastive_loss(*ins, in_batch=in_batch, reduction="none", backend=backend)
    exp = reference.contrastive_loss(*(t.detach() for t in ins), in_batch=in_batch, reduction="none")
    # NaN exactly where the reference has NaN (rows 1 and 2; every row in-batch, since p_1 meets every z).
    assert torch.equal(torch.isnan(out), torch.isnan(exp))
    assert torch.isnan(out[1]) and torch.isnan(out[2])
    grads = torch.autograd.grad(out.sum(), ins)  # must not crash
    assert torch.isnan(grads[0][1]).all()


# ---------------------------------------------------------------------------
# CUDA (skipped one by one without a device)
# ---------------------------------------------------------------------------


@needs_cuda_ext
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("in_batch", [False, True])
def test_cuda_cpp_matches_reference(dtype, in_batch):
    check_against_reference("cpp", 70, 5, 40, dtype, in_batch, device="cuda")


@needs_cuda_ext
@pytest.mark.cuda
def test_cuda_cpp_gradcheck():
    p, z, zn = make_inputs(5, 3, 6, torch.float64, device="cuda")
    ins = [t.requires_grad_() for t in (p, z, zn)]
    assert torch.autograd.gradcheck(lambda *a: cwarp.contrastive_loss(*a, in_batch=True, byol_weight=0.5), ins)


@needs_cuda
@needs_triton
@pytest.mark.cuda
@pytest.mark.parametrize("in_batch", [False, True])
def test_cuda_triton_matches_reference(in_batch):
    check_against_reference("triton", 70, 5, 40, torch.float32, in_batch, device="cuda")


@needs_cuda
@pytest.mark.cuda
def test_cuda_wrong_device_combination():
    p, z, zn = make_inputs(4, 2, 8, torch.float32)
    with pytest.raises(RuntimeError, match=r"expected z_pos on p's device cuda"):
        cwarp.contrastive_loss(p.cuda(), z, zn.cuda())
