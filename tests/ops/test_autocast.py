"""The ops under torch.autocast (docs/api.md §6, Autocast), one body per backend,
the reference included: contrastive_loss computes and returns float32;
local_warp and augment_views run as outside autocast (the image's dtype,
out_dtype), bit for bit. The same through the registered ops and through
torch.compile."""
from __future__ import annotations

import pytest
import torch

import cwarp
from cwarp import reference
from parity import (BACKENDS, TOL, assert_close_verbose, backends, random_image, random_images, random_params,
                    random_theta, registered_op)

ALL = ("cpp", "triton", "torch", "cuda-cpp", "cuda-triton")
# The autocast dtype of a CUDA run is bfloat16 too: the policy does not depend on it.
AMP = torch.bfloat16


def autocast(be):
    return torch.autocast(be.device, dtype=AMP)


def embeddings(be, B=6, N=3, D=16, seed=0):
    """(p, z_pos, z_neg) in float32, as a network's float32 math would give them."""
    g = torch.Generator().manual_seed(seed)
    p = torch.randn(B, D, generator=g)
    z = p + 0.8 * torch.randn(B, D, generator=g)
    zn = z[:, None] + 0.5 * torch.randn(B, N, D, generator=g)
    return be.put(p, z, zn)


# ---------------------------------------------------------------------------
# contrastive_loss: float32
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("in_batch", [False, True])
@pytest.mark.parametrize("mixed", [False, True], ids=["bf16", "bf16-and-fp32"])
@pytest.mark.parametrize("be", backends(*ALL))
def test_contrastive_loss_runs_in_float32(be, mixed, in_batch):
    p, z, zn = embeddings(be)
    # What autocast's matmuls hand the loss: bfloat16 embeddings (with
    # `mixed`, a target computed outside the autocast region in float32).
    ins = [p.to(AMP), z if mixed else z.to(AMP), zn.to(AMP)]
    leaves = [t.detach().requires_grad_() for t in ins]
    kw = dict(tau=0.2, byol_weight=0.3, in_batch=in_batch, backend=be.name)
    with autocast(be):
        loss = cwarp.contrastive_loss(*leaves, **kw)
    assert loss.dtype == torch.float32
    # The policy is a cast to float32, then the float32 loss.
    fp32 = [t.detach().float().requires_grad_() for t in ins]
    want = cwarp.contrastive_loss(*fp32, **kw)
    torch.testing.assert_close(loss, want, rtol=0, atol=0)
    grads = torch.autograd.grad(loss, leaves)
    for g, leaf, e in zip(grads, leaves, torch.autograd.grad(want, fp32)):
        assert g.dtype == leaf.dtype
        torch.testing.assert_close(g, e.to(leaf.dtype), rtol=0, atol=0)
    # Within bfloat16's rounding of the embeddings of the float64 loss of the unrounded ones.
    exp = reference.contrastive_loss(p.double(), z.double(), zn.double(), tau=0.2, byol_weight=0.3,
                                     in_batch=in_batch)
    assert_close_verbose(loss, exp, *TOL[torch.bfloat16], what=f"{be} loss under autocast")


@pytest.mark.parametrize("be", backends("cpp", "triton", "cuda-cpp", "cuda-triton"))
def test_contrastive_op_casts_to_float32(be):
    p, z, zn = embeddings(be)
    op = registered_op(be, "contrastive_loss_forward")
    with autocast(be):
        out = op(p.to(AMP), z, zn.to(AMP), 0.2, True)
    assert all(t.dtype == torch.float32 for t in out)
    for got, want in zip(out, op(p.to(AMP).float(), z, zn.to(AMP).float(), 0.2, True)):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_contrastive_loss_float64_stays_float64():
    p, z, zn = (t.double() for t in embeddings(BACKENDS["torch"]))
    with torch.autocast("cpu", dtype=AMP):
        loss = cwarp.contrastive_loss(p, z, zn)
    assert loss.dtype == torch.float64
    torch.testing.assert_close(loss, cwarp.contrastive_loss(p, z, zn), rtol=0, atol=0)


# ---------------------------------------------------------------------------
# local_warp: the image's dtype, as outside autocast
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.uint8])
@pytest.mark.parametrize("be", backends(*ALL))
def test_local_warp_keeps_the_image_dtype(be, dtype, gen):
    image = random_image((2, 3, 12, 14), gen)
    params, theta = random_params(2, 3, gen), random_theta(2, gen)
    image = (image * 255).round().to(dtype) if dtype == torch.uint8 else image.to(dtype)
    image, params, theta = be.put(image, params, theta)
    grad = dtype.is_floating_point
    ins = [t.detach().requires_grad_(grad) for t in (image, params, theta)]
    with autocast(be):
        out = cwarp.local_warp(*ins, out_size=(10, 11), backend=be.name)
    assert out.dtype == dtype
    plain = [t.detach().requires_grad_(grad) for t in (image, params, theta)]
    want = cwarp.local_warp(*plain, out_size=(10, 11), backend=be.name)
    torch.testing.assert_close(out, want, rtol=0, atol=0)
    if grad:
        grad_out = torch.rand(out.shape, generator=gen).to(device=out.device, dtype=dtype)
        for g, leaf, e in zip(torch.autograd.grad(out, ins, grad_out), ins,
                              torch.autograd.grad(want, plain, grad_out)):
            assert g.dtype == leaf.dtype
            torch.testing.assert_close(g, e, rtol=0, atol=0)
    if dtype == torch.bfloat16:
        # Within bfloat16's rounding of the float64 warp of the same bfloat16 image.
        exp = reference.local_warp(image.double(), params.double(), theta.double(), out_size=(10, 11))
        assert_close_verbose(out, exp, *TOL[torch.bfloat16], what=f"{be} local_warp under autocast")


@pytest.mark.parametrize("be", backends("cpp", "triton", "cuda-cpp", "cuda-triton"))
def test_local_warp_op_keeps_the_image_dtype(be, gen):
    image = be.put(random_image((2, 3, 12, 14), gen, AMP))
    params, theta = be.put(random_params(2, 3, gen), random_theta(2, gen))
    op = registered_op(be, "local_warp")
    args = (image, params, theta, 9, 13, "gaussian", "reflection", True)
    with autocast(be):
        out = op(*args)
    assert out.dtype == AMP
    torch.testing.assert_close(out, op(*args), rtol=0, atol=0)


# ---------------------------------------------------------------------------
# augment_views: out_dtype, as outside autocast
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("be", backends(*ALL))
def test_augment_views_unchanged(be, out_dtype):
    # Small: the Triton interpreter runs each program in numpy.
    aug = cwarp.ContraWarpAugment(6, num_negatives=1, out_dtype=out_dtype, backend=be.name)
    images = be.put(random_images(B=1, H=9, W=10))
    landmarks = be.put(torch.tensor([[-0.3, -0.2], [0.3, -0.2], [0.0, 0.1]]))
    with autocast(be):
        views = aug(images, landmarks, generator=torch.Generator().manual_seed(3))
        lm = views.landmarks
    plain = aug(images, landmarks, generator=torch.Generator().manual_seed(3))
    assert views.all.dtype == out_dtype
    torch.testing.assert_close(views.all, plain.all, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(lm, plain.landmarks, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("be", backends("cpp", "triton", "cuda-cpp", "cuda-triton"))
def test_augment_views_op_unchanged(be):
    aug = cwarp.ContraWarpAugment(6, num_negatives=1)
    images = random_images(B=1, H=9, W=10, dtype=torch.float32)
    prm = aug.sample_params(images, None, torch.Generator().manual_seed(4))
    mean, std = torch.tensor(aug.mean), torch.tensor(aug.std)
    args = (*be.put(images, prm.theta, prm.warps, prm.color, mean, std), 6, "translate", "border", torch.bfloat16)
    op = registered_op(be, "augment_views")
    with autocast(be):
        out = op(*args)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, op(*args), rtol=0, atol=0)


# ---------------------------------------------------------------------------
# torch.compile
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("be", backends("cpp", "cuda-cpp", "cuda-triton"))
def test_torch_compile_fullgraph_under_autocast(be, gen):
    torch._dynamo.reset()
    image = be.put(random_image((2, 3, 12, 12), gen))
    params = be.put(random_params(2, 2, gen))
    p, z, zn = embeddings(be)
    head = torch.nn.Linear(16, 16).to(be.device)

    def step(image, params, p, z, zn):
        with autocast(be):
            q = head(p)                                  # bfloat16, as autocast's matmuls give
            return q, cwarp.local_warp(image, params, backend=be.name), cwarp.contrastive_loss(
                q, z, zn, in_batch=True, backend=be.name)

    compiled = torch.compile(step, fullgraph=True, backend="inductor" if be.name == "triton" else "aot_eager")
    q, warped, loss = compiled(image, params, p, z, zn)
    e_q, e_warped, e_loss = step(image, params, p, z, zn)
    assert (q.dtype, warped.dtype, loss.dtype) == (AMP, torch.float32, torch.float32)
    torch.testing.assert_close(warped, e_warped)
    torch.testing.assert_close(loss, e_loss)
