"""pytest-benchmark cases of benchmarks/augment_throughput.py, small shapes.

    python -m pytest benchmarks/test_bench_augment.py --benchmark-only
"""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import augment_throughput as at  # noqa: E402

import cwarp  # noqa: E402

B, SRC, S, N, K = 8, 64, 56, 2, 2
needs_cpp = pytest.mark.skipif(not cwarp.backends()["cpp"], reason="cwarp._C was not built")


@pytest.fixture(scope="module")
def images():
    return at.make_images(B, SRC, "cpu")


@needs_cpp
@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_bench_cwarp(benchmark, images, out_dtype):
    out = benchmark(at.cwarp_fn(images, S, N, K, out_dtype))
    assert out.shape == (B, 2 + N, 3, S, S) and out.dtype == out_dtype


def test_bench_torchvision_per_sample(benchmark, images):
    out = benchmark(at.torchvision_fn(images, S, N, K))
    assert len(out) == B and out[0][2].shape == (N, 3, S, S)


def test_bench_kornia(benchmark, images):
    pytest.importorskip("kornia")
    p1, p2, negs = benchmark(at.kornia_fn(images, S, N, K))
    assert negs.shape == (B * N, 3, S, S)
