"""cwarp.ops._triton_runtime: every Triton launch runs with its tensors' device
made current (Triton launches on the current CUDA device, whatever its
arguments' device), a no-op on the CPU; under the interpreter the kernels are
launched as they are, not through torch.library.wrap_triton."""
from __future__ import annotations

import contextlib

import pytest
import torch

pytest.importorskip("triton")

from cwarp.ops import _triton_runtime  # noqa: E402


def test_launch_device_is_the_tensors_cuda_device():
    guard = _triton_runtime.launch_device(torch.device("cuda", 1))
    assert isinstance(guard, torch.cuda.device) and guard.idx == 1
    assert isinstance(_triton_runtime.launch_device(torch.device("cpu")), contextlib.nullcontext)


@pytest.mark.triton
@pytest.mark.skipif(not _triton_runtime.INTERPRETED, reason="the Triton kernels run on CPU tensors interpreted only")
def test_every_launch_goes_through_launch_device(monkeypatch):
    import cwarp

    seen = []

    def record(device):
        seen.append(device)
        return contextlib.nullcontext()

    monkeypatch.setattr(_triton_runtime, "launch_device", record)
    g = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, 8, 8, generator=g, requires_grad=True)
    params = cwarp.sample_local_warps(2, 2, generator=g)
    cwarp.local_warp(image, params, backend="triton").sum().backward()
    assert len(seen) == 2  # forward, backward
    p, z = (torch.randn(4, 8, generator=g, requires_grad=True) for _ in range(2))
    cwarp.contrastive_loss(p, z, in_batch=True, backend="triton").backward()
    assert len(seen) == 2 + 2  # forward; backward (its row and in-batch column passes under one device guard)
    aug = cwarp.ContraWarpAugment(8, num_negatives=1, backend="triton")
    aug(torch.randint(0, 256, (2, 3, 12, 12), dtype=torch.uint8), generator=g)
    assert len(seen) == 2 + 2 + 1
    assert all(d == torch.device("cpu") for d in seen)


def test_launcher_is_wrap_triton_on_the_gpu_and_the_kernel_interpreted():
    from cwarp.ops.local_warp import triton_kernels

    kernel = triton_kernels._local_warp_fwd_kernel
    if _triton_runtime.INTERPRETED:
        assert _triton_runtime.launcher(kernel) is kernel
    else:
        assert _triton_runtime.launcher(kernel) is not kernel  # the tracing wrapper of wrap_triton


def test_no_nested_assignment_targets_in_triton_code():
    # Triton 3.6 (the GPU machine's) computes a kernel's cache key with a
    # dependency scan that fails on `(a, b), c = ...`: unpack level by level.
    import ast
    import pathlib

    root = pathlib.Path(_triton_runtime.__file__).parent
    nested = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            targets = node.targets if isinstance(node, ast.Assign) else []
            for target in targets:
                if isinstance(target, ast.Tuple) and any(isinstance(e, ast.Tuple) for e in target.elts):
                    nested.append(f"{path.relative_to(root)}:{node.lineno}")
    assert not nested, f"nested assignment targets: {nested}"
