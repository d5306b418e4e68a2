"""Backend choice for every op, in one place.

``backend="auto"`` picks the compiled kernel for the tensors' device: the C++
extension on the CPU; on CUDA the extension when it was built with its CUDA
kernels, else Triton (both are fused kernels, so this is a choice between two
compiled paths, never a silent fallback to the reference). An explicit
backend is returned as is; whether it can run is decided where it is called,
which raises with the reason.
"""
from __future__ import annotations

import torch

from cwarp import _extension
from cwarp.ops import _checks

__all__ = ["resolve_backend"]


def resolve_backend(op: str, backend: str, device: torch.device) -> str:
    """The backend ``op`` runs on for tensors on ``device``: "cpp", "triton" or "torch"."""
    _checks.check_choice(op, "backend", backend, _checks.BACKENDS)
    if backend != "auto":
        return backend
    if device.type == "cuda":
        return "cpp" if _extension.with_cuda() else "triton"
    return "cpp"
