"""Backend choice for every op, in one place.

``backend="auto"`` picks the compiled kernel for the tensors' device: the C++
extension on the CPU; on CUDA the extension when it was built with its CUDA
kernels, else Triton (both are fused kernels, so this is a choice between two
compiled paths, never a silent fallback to the reference). An explicit
backend is returned as is; whether it can run is decided where it is called,
which raises with the reason.

One call takes Triton on CUDA even with the CUDA kernels built: the
in-batch contrastive loss, whose CUDA sweep over the batch is serial while
Triton's is tiled (``prefer_triton_on_cuda``; ``benchmarks/gpu_check.py``
times both). Without Triton installed it runs on the CUDA kernel.
"""
from __future__ import annotations

import torch

from cwarp import _extension
from cwarp.ops import _checks

__all__ = ["resolve_backend"]


def resolve_backend(op: str, backend: str, device: torch.device, *, prefer_triton_on_cuda: bool = False) -> str:
    """The backend ``op`` runs on for tensors on ``device``: "cpp", "triton" or "torch".

    ``prefer_triton_on_cuda``: "auto" picks Triton on CUDA whenever the
    triton package is installed, for calls its kernel handles better.
    """
    _checks.check_choice(op, "backend", backend, _checks.BACKENDS)
    if backend != "auto":
        return backend
    if device.type == "cuda":
        if prefer_triton_on_cuda and _extension.triton_installed():
            return "triton"
        return "cpp" if _extension.with_cuda() else "triton"
    return "cpp"
