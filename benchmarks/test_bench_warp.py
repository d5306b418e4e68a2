"""pytest-benchmark cases of cwarp.local_warp (small; the floors live in
warp_throughput.py). Run with `pytest benchmarks --benchmark-only`."""
from __future__ import annotations

import pytest
import torch

import cwarp
from cwarp import reference

B, C, S, K = 8, 3, 64, 4


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(B, C, S, S, generator=g)
    params = cwarp.sample_local_warps(B, K, generator=g)
    grad_out = torch.rand(B, C, S, S, generator=g)
    return image, params, grad_out


def _fwd(backend):
    if backend == "cpp":
        return lambda x, p: cwarp.local_warp(x, p, padding_mode="border", backend="cpp")
    return lambda x, p: reference.local_warp(x, p, padding_mode="border", compute_dtype=None)


@pytest.mark.parametrize("backend", ["cpp", "reference"])
def test_bench_fwd(benchmark, inputs, backend):
    image, params, _ = inputs
    fn = _fwd(backend)
    out = benchmark(fn, image, params)
    assert out.shape == image.shape


@pytest.mark.parametrize("backend", ["cpp", "reference"])
def test_bench_fwd_bwd(benchmark, inputs, backend):
    image, params, grad_out = inputs
    fn = _fwd(backend)
    x = image.clone().requires_grad_()

    def step():
        return torch.autograd.grad(fn(x, params), x, grad_out)[0]

    grad = benchmark(step)
    assert grad.shape == image.shape


def test_bench_fwd_channels_last(benchmark, inputs):
    image, params, _ = inputs
    cl = image.contiguous(memory_format=torch.channels_last)
    out = benchmark(_fwd("cpp"), cl, params)
    assert out.is_contiguous(memory_format=torch.channels_last)
