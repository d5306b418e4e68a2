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


@pytest.fixture(scope="module")
def hwc_uint8():
    """uint8 RGB 224x224 as numpy HWC arrays, the albumentations contenders' input (uint8_throughput.py)."""
    np = pytest.importorskip("numpy")
    return np.random.default_rng(0).integers(0, 256, (B, 224, 224, C), dtype=np.uint8)


@pytest.fixture
def one_thread():
    """The uint8 cases compare with albumentations per core, as uint8_throughput.py does."""
    cv2 = pytest.importorskip("cv2")
    n, m = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    yield
    torch.set_num_threads(n)
    cv2.setNumThreads(m)


def test_bench_fwd_uint8_channels_last(benchmark, hwc_uint8, one_thread):
    image = torch.from_numpy(hwc_uint8).permute(0, 3, 1, 2)  # channels_last view, no copy
    params = cwarp.sample_local_warps(B, K, generator=torch.Generator().manual_seed(0))
    out = benchmark(cwarp.local_warp, image, params, backend="cpp")
    assert out.dtype == torch.uint8 and out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("transform", ["GridDistortion", "ElasticTransform"])
def test_bench_albumentations_uint8(benchmark, hwc_uint8, transform, one_thread):
    A = pytest.importorskip("albumentations")
    t = getattr(A, transform)(p=1.0)
    t.set_random_seed(0)
    out = benchmark(lambda: [t(image=im)["image"] for im in hwc_uint8])
    assert out[0].shape == hwc_uint8[0].shape
