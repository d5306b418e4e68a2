"""cwarp.ContraWarpingLoss, the module over cwarp.contrastive_loss (whose
backends are tested in tests/ops/test_contrastive_loss.py): its forward per
backend, its argument checks, and torch.compile with Inductor."""
from __future__ import annotations

import pytest
import torch

import cwarp
from cwarp import reference
from parity import assert_close_verbose, backends


def _inputs(B=5, N=2, D=8, device="cpu"):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(*shape, generator=g).to(device) for shape in ((B, D), (B, D), (B, N, D))]


@pytest.mark.parametrize("be", backends())
def test_module_form(be):
    p, z, zn = _inputs(device=be.device)
    mod = cwarp.ContraWarpingLoss(tau=0.5, byol_weight=0.1, in_batch=True, backend=be.name)
    assert "tau=0.5" in repr(mod)
    exp = reference.contrastive_loss(p.double(), z.double(), zn.double(), tau=0.5, byol_weight=0.1, in_batch=True)
    assert_close_verbose(mod(p, z, zn), exp, 2e-5, 2e-5, what=f"{be} module")


def test_module_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"ContraWarpingLoss\(\): expected tau > 0"):
        cwarp.ContraWarpingLoss(tau=0)
    with pytest.raises(ValueError, match=r"ContraWarpingLoss\(\): unknown reduction"):
        cwarp.ContraWarpingLoss(reduction="max")


@pytest.mark.slow
@pytest.mark.parametrize("be", backends("cpp"))
def test_torch_compile_inductor(be):
    torch._dynamo.reset()
    p, z, zn = _inputs(8, 3, 16)
    loss = cwarp.ContraWarpingLoss(tau=0.2, in_batch=True, backend=be.name)
    out = torch.compile(loss, fullgraph=True)(p, z, zn)
    torch.testing.assert_close(out, loss(p, z, zn))
