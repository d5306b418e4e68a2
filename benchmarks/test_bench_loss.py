"""pytest-benchmark cases for cwarp.contrastive_loss (small shapes; the floors
are measured by benchmarks/loss_throughput.py, not here).

    python -m pytest benchmarks/test_bench_loss.py --benchmark-only
"""
from __future__ import annotations

import functools

import pytest
import torch

import cwarp
from cwarp import _extension, reference

pytest.importorskip("pytest_benchmark")

HAS_CPP = _extension.available() and hasattr(torch.ops.cwarp, "contrastive_loss_forward")

CASES = {
    "B=256 D=256 N=8": (256, 256, 8, False),
    "B=1024 D=128 in_batch": (1024, 128, 0, True),
}
CONTENDERS = {
    "cwarp cpp": functools.partial(cwarp.contrastive_loss, backend="cpp"),
    "reference (eager)": reference.contrastive_loss,
}


@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("contender", list(CONTENDERS))
def test_bench_contrastive_loss(benchmark, contender, case, mode):
    if contender == "cwarp cpp" and not HAS_CPP:
        pytest.skip("cwarp._C (the compiled extension) is not built")
    B, D, N, in_batch = CASES[case]
    g = torch.Generator().manual_seed(0)
    ins = [torch.randn(B, D, generator=g), torch.randn(B, D, generator=g)]
    if N:
        ins.append(torch.randn(B, N, D, generator=g))
    zn = ins[2] if N else None
    fn = CONTENDERS[contender]
    benchmark.group = f"contrastive_loss {mode} {case}"
    if mode == "fwd":
        with torch.no_grad():
            out = benchmark(lambda: fn(ins[0], ins[1], zn, in_batch=in_batch))
        assert torch.isfinite(out)
    else:
        for t in ins:
            t.requires_grad_()
        grads = benchmark(lambda: torch.autograd.grad(fn(ins[0], ins[1], zn, in_batch=in_batch), ins))
        assert all(torch.isfinite(gr).all() for gr in grads)
