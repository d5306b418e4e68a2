"""cwarp.contrastive_loss, one body per check run for every backend (cpp and
triton on CPU, both on CUDA): parity with the float64 oracle, gradients,
custom-op registration, torch.compile, bad input, edge cases (docs/api.md).
The module form, cwarp.ContraWarpingLoss, is tested in tests/nn/."""
from __future__ import annotations

import re

import pytest
import torch

import cwarp
from cwarp import reference
from parity import (TRITON_OPCHECK, assert_close_verbose, backend_grid, backends, gradcheck, grid, op_name,
                    registered_op)

# Per-dtype tolerances against the float64 oracle. Half types compute in
# float32; their error is the rounding of the result (and of each gradient
# element) to the dtype.
TOL = {
    torch.float64: dict(rtol=1e-10, atol=1e-10),
    torch.float32: dict(rtol=2e-5, atol=2e-5),
    torch.bfloat16: dict(rtol=1.6e-2, atol=1e-2),
    torch.float16: dict(rtol=2e-3, atol=2e-3),
}
FLOATS = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


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
    return [t.to(device=device, dtype=dtype) if t is not None else None for t in (p, z, zn)]


def check_against_reference(be, B, N, D, dtype, in_batch, neg=True, reduction="mean", tau=0.2,
                            byol_weight=0.3, nce_weight=1.0, contiguous=True):
    p, z, zn = make_inputs(B, N, D, dtype, be.device, neg=neg, contiguous=contiguous)
    ins = [t.detach().requires_grad_() for t in (p, z, zn) if t is not None]
    ins_ref = [t.detach().double().requires_grad_() for t in ins]
    kw = dict(tau=tau, byol_weight=byol_weight, nce_weight=nce_weight, in_batch=in_batch, reduction=reduction)
    out = cwarp.contrastive_loss(*ins, **kw, backend=be.name)
    exp = reference.contrastive_loss(*ins_ref, **kw)
    assert out.dtype == dtype and out.device.type == be.device
    tol = TOL[dtype]
    assert_close_verbose(out, exp, what=f"{be} loss", **tol)
    grad_out = torch.linspace(0.5, 1.5, out.numel(), dtype=torch.float64).reshape(out.shape).to(be.device)
    grads = torch.autograd.grad(out, ins, grad_out.to(dtype))
    grads_ref = torch.autograd.grad(exp, ins_ref, grad_out)
    for name, g, e in zip(("p", "z_pos", "z_neg"), grads, grads_ref):
        assert g.dtype == dtype and g.shape == e.shape
        # Gradients scale with 1 / (tau * |x|): compare relative to their size.
        scale = max(1.0, float(e.abs().max()))
        assert_close_verbose(g, e, rtol=tol["rtol"], atol=tol["atol"] * scale, what=f"{be} grad {name}")


# ---------------------------------------------------------------------------
# Parity with the reference
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(*backend_grid("dtype,in_batch,neg", full=grid(FLOATS, [False, True], [True, False]),
                                       small=grid(FLOATS[:3], [False, True], [True])))
def test_matches_reference(be, dtype, in_batch, neg):
    # CUDA: more rows than one block of the kernels' in-batch tiles.
    B, N, D = (7, 3, 10) if be.interpreted else (70, 5, 40) if be.device == "cuda" else (12, 5, 33)
    check_against_reference(be, B, N, D, dtype, in_batch, neg=neg)


@pytest.mark.parametrize(*backend_grid("reduction,contiguous", full=grid(["mean", "sum", "none"], [True, False]),
                                       small=[("none", False)]))
def test_reductions_and_strides(be, reduction, contiguous):
    check_against_reference(be, 9, 3, 16, torch.float32, True, reduction=reduction, contiguous=contiguous)


@pytest.mark.parametrize("be", backends())
def test_no_negatives_strided(be):
    check_against_reference(be, 6, 0, 12, torch.float32, True, neg=False, contiguous=False, reduction="none")


@pytest.mark.parametrize(*backend_grid("B", full=[63, 64, 65, 300], names=("cpp", "cuda-cpp")))
def test_in_batch_tile_boundaries(be, B):
    # Tiles are 64 rows x 256 columns: cover partial tiles and the diagonal
    # falling at every position of a tile.
    check_against_reference(be, B, 2, 24, torch.float32, True, tau=0.1)


@pytest.mark.parametrize(*backend_grid("B,N,D,dtype,block_k", full=[
    (37, 2, 100, torch.float32, 16),  # three in-batch tiles, the last one partial
    (5, 1, 600, torch.float64, 1),    # BLOCK_D 1024: one row per tile
], names=("triton", "cuda-triton")))
def test_triton_in_batch_tiles(be, B, N, D, dtype, block_k):
    from cwarp.ops.contrastive_loss.triton_kernels import _blocks

    assert _blocks(D, dtype)[1] == block_k
    check_against_reference(be, B, N, D, dtype, True)


@pytest.mark.parametrize("be", backends())
@pytest.mark.parametrize("in_batch", [False, True])
def test_small_tau_is_stable(be, in_batch):
    # Logits up to 1/tau = 100: exp would overflow float32 without the running max.
    check_against_reference(be, 16, 4, 8, torch.float32, in_batch, tau=0.01)


@pytest.mark.parametrize("be", backends())
def test_weights(be):
    check_against_reference(be, 8, 2, 8, torch.float32, False, byol_weight=0.0, nce_weight=2.5)
    check_against_reference(be, 8, 2, 8, torch.float32, True, byol_weight=1.0, nce_weight=0.0)


@pytest.mark.parametrize("be", backends())
def test_pure_byol_without_negatives(be):
    # z_neg None and in_batch False: the logits are just [s_pos], nce = 0.
    p, z, _ = make_inputs(6, 0, 10, torch.float64, be.device, neg=False)
    nce = cwarp.contrastive_loss(p, z, reduction="none", backend=be.name)
    assert torch.equal(nce, torch.zeros(6, dtype=torch.float64, device=be.device))
    byol = cwarp.contrastive_loss(p, z, byol_weight=1.0, nce_weight=0.0, backend=be.name)
    cos = torch.nn.functional.cosine_similarity(p, z, dim=1)
    torch.testing.assert_close(byol, (2 - 2 * cos).mean())


# ---------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(*backend_grid("in_batch,neg", full=grid([False, True], [True, False]),
                                       small=[(True, True)]))
def test_gradcheck(be, in_batch, neg):
    p, z, zn = make_inputs(4, 2, 5, torch.float64, be.device, neg=neg) if be.name == "triton" else \
        make_inputs(5, 3, 6, torch.float64, be.device, neg=neg)
    ins = [t.requires_grad_() for t in (p, z, zn) if t is not None]

    def fn(*args):
        return cwarp.contrastive_loss(*args, tau=0.3, byol_weight=0.7, in_batch=in_batch, reduction="none",
                                      backend=be.name)

    assert gradcheck(be, fn, ins)


@pytest.mark.parametrize("be", backends())
@pytest.mark.parametrize("in_batch", [False, True])
def test_zero_row_gradients_match_reference(be, in_batch):
    # A row clamped by the eps has a different Jacobian (no projection term, as
    # F.normalize's clamp_min passes no gradient). gradcheck cannot test it:
    # its finite differences leave the clamped regime. Compare with autograd
    # through the reference instead.
    p, z, zn = make_inputs(4, 2, 5, torch.float64, be.device)
    z[1] = 0
    zn[2, 1] = 0
    p[3] = 0
    ins = [t.requires_grad_() for t in (p, z, zn)]
    kw = dict(in_batch=in_batch, byol_weight=1.0, reduction="sum")
    got = torch.autograd.grad(cwarp.contrastive_loss(*ins, **kw, backend=be.name), ins)
    exp = torch.autograd.grad(reference.contrastive_loss(*ins, **kw), ins)
    for g, e in zip(got, exp):
        torch.testing.assert_close(g, e)


@pytest.mark.parametrize("be", backends())
@pytest.mark.parametrize("in_batch", [False, True])
def test_only_needed_gradients(be, in_batch):
    p, z, zn = make_inputs(8, 3, 8, torch.float64, be.device)
    p.requires_grad_()
    out = cwarp.contrastive_loss(p, z, zn, in_batch=in_batch, backend=be.name)
    (gp,) = torch.autograd.grad(out, [p])
    pr = p.detach().requires_grad_()
    (ep,) = torch.autograd.grad(reference.contrastive_loss(pr, z, zn, in_batch=in_batch), [pr])
    torch.testing.assert_close(gp, ep)
    # The backward op returns empty tensors for what output_mask leaves out.
    fwd = registered_op(be, "contrastive_loss_forward")(p.detach(), z, zn, 0.2, in_batch)
    rows = torch.ones(8, dtype=torch.float64, device=be.device)
    g = registered_op(be, "contrastive_loss_backward")(rows, 0 * rows, p.detach(), z, zn, *fwd[2:], 0.2, in_batch,
                                                        [False, True, False])
    assert g[0].numel() == 0 and g[1].shape == z.shape and g[2].numel() == 0


@pytest.mark.parametrize("be", backends("cpp"))
def test_deterministic_across_threads(be, restore_threads):
    p, z, zn = make_inputs(200, 3, 32, torch.float32)
    ins = [t.requires_grad_() for t in (p, z, zn)]
    results = []
    for n in (1, 2, 3):
        torch.set_num_threads(n)
        out = cwarp.contrastive_loss(*ins, in_batch=True, reduction="sum", backend=be.name)
        results.append((out.detach(),) + torch.autograd.grad(out, ins))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


# ---------------------------------------------------------------------------
# Custom-op registration and torch.compile
# ---------------------------------------------------------------------------

# Under TRITON_INTERPRET=1, torch.library.wrap_triton returns the interpreted
# kernel unwrapped (torch/_library/triton.py: InterpretedFunction lacks the JIT
# metadata its tracing wrapper needs), so fake-tensor tracing of a triton_op
# launches the kernel on fake tensors. Eager runs work on the CPU; the fake
# path (opcheck's test_faketensor, torch.compile) is tested on CUDA only.


def _opcheck_utils(be):
    if be.interpreted:
        return {"test_utils": tuple(u for u in TRITON_OPCHECK if u != "test_faketensor")}
    return {"test_utils": TRITON_OPCHECK} if be.name == "triton" else {}


@pytest.mark.parametrize(*backend_grid(
    "in_batch,requires_grad,neg", full=grid([False, True], [False, True], [True, False]), small=[(True, True, True)]))
def test_opcheck_forward(be, in_batch, requires_grad, neg):
    p, z, zn = make_inputs(6, 2, 8, torch.float64, be.device, neg=neg)
    for t in (p, z, zn):
        if t is not None:
            t.requires_grad_(requires_grad)
    torch.library.opcheck(registered_op(be, "contrastive_loss_forward").default, (p, z, zn, 0.2, in_batch),
                          **_opcheck_utils(be))


@pytest.mark.parametrize(*backend_grid("in_batch", full=[False, True], names=("cpp", "cuda-cpp")))
def test_opcheck_backward(be, in_batch):
    p, z, zn = make_inputs(6, 2, 8, torch.float32, be.device)
    fwd = torch.ops.cwarp.contrastive_loss_forward(p, z, zn, 0.2, in_batch)
    rows = lambda: torch.rand(6, device=be.device)  # noqa: E731
    args = (rows(), rows(), p, z, zn, *fwd[2:], 0.2, in_batch, [True, True, True])
    torch.library.opcheck(torch.ops.cwarp.contrastive_loss_backward.default, args)


@pytest.mark.parametrize(*backend_grid("in_batch", full=[False, True], small=[True],
                                       names=("cpp", "cuda-cpp", "cuda-triton")))
def test_torch_compile_fullgraph(be, in_batch):
    torch._dynamo.reset()
    p, z, zn = make_inputs(8, 3, 16, torch.float32, be.device)
    ins = [t.requires_grad_() for t in (p, z, zn)]

    def fn(a, b, c):
        return cwarp.contrastive_loss(a, b, c, tau=0.1, byol_weight=0.5, in_batch=in_batch, backend=be.name)

    # Triton: Inductor sees the kernels themselves (triton_op).
    compiled = torch.compile(fn, fullgraph=True, backend="inductor" if be.name == "triton" else "aot_eager")
    out = compiled(*ins)
    exp = reference.contrastive_loss(*(t.detach().double() for t in ins), tau=0.1, byol_weight=0.5,
                                     in_batch=in_batch)
    assert_close_verbose(out, exp, what="compiled", **TOL[torch.float32])
    for g, e in zip(torch.autograd.grad(out, ins), torch.autograd.grad(fn(*ins), ins)):
        torch.testing.assert_close(g, e)


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
    ("device", lambda p, z, n: (p, z.to("meta"), n, {}), RuntimeError, r"expected z_pos on p's device {dev}, got meta"),
    ("device_neg", lambda p, z, n: (p, z, n.to("meta"), {}), RuntimeError,
     r"expected z_neg on p's device {dev}, got meta"),
]
OP_CASES = [c for c in BAD_CASES if c[0] not in ("reduction", "backend")]


@pytest.mark.parametrize("name,make,exc,match", BAD_CASES, ids=[c[0] for c in BAD_CASES])
@pytest.mark.parametrize("be", backends())
def test_bad_input(be, name, make, exc, match):
    p, z, n = make_inputs(5, 2, 8, torch.float32, be.device)
    p2, z2, n2, kw = make(p, z, n)
    with pytest.raises(exc, match=r"cwarp\.contrastive_loss\(\): " + match.format(dev=p.device)):
        cwarp.contrastive_loss(p2, z2, n2, **{"backend": be.name, **kw})


@pytest.mark.parametrize("name,make,exc,match", OP_CASES, ids=[c[0] for c in OP_CASES])
@pytest.mark.parametrize("be", backends())
def test_bad_input_reaches_the_op(be, name, make, exc, match):
    # The ops check on their own, with the public function's messages; a
    # tensor on the meta device sends the call to the fake, which checks too.
    p, z, n = make_inputs(5, 2, 8, torch.float32, be.device)
    p2, z2, n2, kw = make(p, z, n)
    if name == "dtype" and be.name == "triton":
        match += r" torch\.float32, got torch\.float64"  # the Triton op spells dtypes as torch does
    elif name == "dtype":
        match += r" Float, got Double"  # the C++ op, as ATen does
    op = registered_op(be, "contrastive_loss_forward")
    with pytest.raises(exc, match=re.escape(op_name(be, "contrastive_loss_forward")) + r"\(\): "
                       + match.format(dev=p.device)):
        op(p2, z2, n2, kw.get("tau", 0.2), False)


@pytest.mark.parametrize("be", backends())
def test_empty_batch(be):
    p, z, zn = make_inputs(0, 2, 8, torch.float32, be.device)
    with pytest.raises(ValueError, match=r"cwarp\.contrastive_loss\(\): the mean of an empty batch"):
        cwarp.contrastive_loss(p, z, zn, backend=be.name)
    assert cwarp.contrastive_loss(p, z, zn, reduction="sum", backend=be.name).item() == 0.0
    assert cwarp.contrastive_loss(p, z, zn, reduction="none", in_batch=True, backend=be.name).shape == (0,)


@pytest.mark.parametrize("be", backends())
@pytest.mark.parametrize("in_batch", [False, True])
def test_zero_rows_are_finite(be, in_batch):
    p, z, zn = make_inputs(4, 2, 6, torch.float32, be.device)
    p[0] = 0
    z[1] = 0
    zn[2, 0] = 0
    ins = [t.requires_grad_() for t in (p, z, zn)]
    out = cwarp.contrastive_loss(*ins, in_batch=in_batch, byol_weight=1.0, reduction="none", backend=be.name)
    assert torch.isfinite(out).all()
    for g in torch.autograd.grad(out.sum(), ins):
        assert torch.isfinite(g).all()
    exp = reference.contrastive_loss(*(t.detach().double() for t in ins), in_batch=in_batch, byol_weight=1.0,
                                     reduction="none")
    assert_close_verbose(out, exp, what="zero rows", **TOL[torch.float32])


# The interpreter evaluates the NaN rows in numpy, which warns about them.
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("be", backends())
@pytest.mark.parametrize("in_batch", [False, True])
def test_nan_in_nan_out(be, in_batch):
    p, z, zn = make_inputs(4, 2, 6, torch.float32, be.device)
    p[1, 3] = float("nan")
    zn[2, 1, 0] = float("nan")
    ins = [t.requires_grad_() for t in (p, z, zn)]
    out = cwarp.contrastive_loss(*ins, in_batch=in_batch, reduction="none", backend=be.name)
    exp = reference.contrastive_loss(*(t.detach() for t in ins), in_batch=in_batch, reduction="none")
    # NaN exactly where the reference has NaN (rows 1 and 2; every row in-batch, since p_1 meets every z).
    assert torch.equal(torch.isnan(out), torch.isnan(exp))
    assert torch.isnan(out[1]) and torch.isnan(out[2])
    grads = torch.autograd.grad(out.sum(), ins)  # must not crash
    assert torch.isnan(grads[0][1]).all()


@pytest.mark.parametrize("be", backends("cuda-cpp", "cuda-triton"))
def test_wrong_device_combination(be):
    p, z, zn = make_inputs(4, 2, 8, torch.float32)
    with pytest.raises(RuntimeError, match=r"expected z_pos on p's device cuda"):
        cwarp.contrastive_loss(p.cuda(), z, zn.cuda(), backend=be.name)


@pytest.mark.parametrize(*backend_grid("in_batch", full=[False, True], small=[True]))
def test_float64_keeps_the_temperature_exact(be, in_batch):
    # 1 / 0.3 is not a float32: a temperature rounded to float32 on its way
    # into a kernel puts float64 results ~1e-8 off, far outside its tolerance.
    check_against_reference(be, 6, 3, 8, torch.float64, in_batch, tau=0.3)
