"""Loads the compiled kernels (cwarp._C) and says clearly when they are missing.

Importing cwarp never fails because the extension is absent: the reference
backend still works. Asking for a compiled backend without the extension
raises, naming what is missing and how to build it. Nothing falls back
silently.
"""
from __future__ import annotations

from typing import Optional

import torch

_IMPORT_ERROR: Optional[BaseException] = None
try:
    from cwarp import _C  # noqa: F401  (loading it registers torch.ops.cwarp.*)
except ImportError as exc:  # pragma: no cover - exercised only on broken installs
    _C = None
    _IMPORT_ERROR = exc

_HOW_TO_BUILD = ("build it with `pip install .` (or `pip install --no-build-isolation -e .`) "
                 "from the cwarp source tree")


def available() -> bool:
    """True when cwarp._C loaded."""
    return _C is not None


def with_cuda() -> bool:
    """True when cwarp._C was compiled with its CUDA kernels."""
    return _C is not None and bool(getattr(_C, "WITH_CUDA", False))


def require(op: str, device: torch.device) -> None:
    """Raise unless the compiled kernels for `device` exist."""
    if _C is None:
        raise RuntimeError(f"{op}: the compiled extension cwarp._C is not available "
                           f"({_IMPORT_ERROR}); {_HOW_TO_BUILD}, or pass backend='torch' "
                           "for the reference implementation")
    if device.type == "cuda" and not with_cuda():
        raise RuntimeError(f"{op}: cwarp._C was built without CUDA kernels; rebuild on a machine "
                           "with nvcc (FORCE_CUDA=1 builds them without a visible GPU), or pass "
                           "backend='triton'")
    if device.type not in ("cpu", "cuda"):
        raise RuntimeError(f"{op}: no compiled kernel for device type '{device.type}'; "
                           "pass backend='torch' for the reference implementation")
