"""pytest-benchmark cases for cwarp.warp_points (the cases of
benchmarks/warp_points_throughput.py at a smaller batch).

    python -m pytest benchmarks/test_bench_warp_points.py --benchmark-only
"""
from __future__ import annotations

import pytest
import torch

import cwarp
from cwarp import _extension

pytest.importorskip("pytest_benchmark")

HAS_CPP = _extension.available() and hasattr(torch.ops.cwarp, "warp_points")


@pytest.mark.parametrize("kind", ["translate", "gaussian"])
@pytest.mark.parametrize("backend", ["cpp", "torch"])
def test_bench_warp_points(benchmark, backend, kind):
    if backend == "cpp" and not HAS_CPP:
        pytest.skip("cwarp._C (the compiled extension) is not built")
    n = 16 * 6
    params = cwarp.sample_local_warps(n, 4, centers=cwarp.FACE_LANDMARKS_5, generator=torch.Generator().manual_seed(0))
    points = cwarp.FACE_LANDMARKS_5.expand(n, 5, 2).contiguous()
    out = benchmark(cwarp.warp_points, points, params, kind=kind, backend=backend)
    assert out.shape == points.shape and torch.isfinite(out).all()
