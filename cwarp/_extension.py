"""Loads the compiled kernels (cwarp._C) and says clearly when they are missing.

Importing cwarp never fails because the extension is absent: the reference
backend still works. Asking for a compiled backend without the extension
raises, naming what is missing and how to build it. Nothing falls back
silently.
"""
from __future__ import annotations

import importlib.util
import os
import sys
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


def _load_error() -> str:
    """Why cwarp._C did not load, in words. An undefined symbol of torch's
    C++ API means the extension was built against another torch: torch does
    not keep that API stable across minor releases."""
    text = str(_IMPORT_ERROR)
    if "undefined symbol" in text:
        text += (f"; it was built against another torch than the running {torch.__version__}, and must be "
                 "built against the torch it runs with (`pip install --no-build-isolation .` builds against "
                 "the installed one)")
    return text


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
                           f"({_load_error()}); {_HOW_TO_BUILD}, or pass backend='torch' "
                           "for the reference implementation")
    if device.type == "cuda" and not with_cuda():
        raise RuntimeError(f"{op}: cwarp._C was built without CUDA kernels; rebuild on a machine "
                           "with nvcc (FORCE_CUDA=1 builds them without a visible GPU), or pass "
                           "backend='triton'")
    if device.type not in ("cpu", "cuda"):
        raise RuntimeError(f"{op}: no compiled kernel for device type '{device.type}'; "
                           "pass backend='torch' for the reference implementation")


def backend_status() -> dict:
    """{"cpp", "cuda", "triton"} -> "available", or the reason that backend cannot run here."""
    return {"cpp": _cpp_status(), "cuda": _cuda_status(), "triton": _triton_status()}


def _cpp_status() -> str:
    if _C is None:
        return f"the compiled extension cwarp._C did not load ({_load_error()}); {_HOW_TO_BUILD}"
    return "available"


def _cuda_status() -> str:
    if _C is None:
        return _cpp_status()
    if not with_cuda():
        return "cwarp._C was built without its CUDA kernels (no nvcc at build time; FORCE_CUDA=1 builds them)"
    if not torch.cuda.is_available():
        return "no CUDA device is visible (torch.cuda.is_available() is False)"
    return "available"


# Looked up once: the backend resolver asks on every call, also while
# torch.compile traces it.
_TRITON_INSTALLED = importlib.util.find_spec("triton") is not None


def triton_installed() -> bool:
    """True when the triton package can be imported (whether it can run here is _triton_status's question)."""
    return _TRITON_INSTALLED


def _triton_status() -> str:
    if not triton_installed():
        return "the triton package is not installed"
    if torch.cuda.is_available():
        return "available"
    if not _triton_interpreter_requested():
        return ("no CUDA device is visible, and Triton runs CPU tensors only under its interpreter "
                "(set TRITON_INTERPRET=1 before triton is first imported)")
    if "triton" in sys.modules and not _triton_interpreting():
        return "TRITON_INTERPRET=1 was set after triton was imported; set it before the first `import triton`"
    return "available"


def _triton_interpreter_requested() -> bool:
    # The values Triton's own environment switch accepts as true.
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "on", "yes", "y")


def _triton_interpreting() -> bool:
    # @triton.jit decided at triton's import whether its own helpers are interpreted.
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(tl.cdiv, InterpretedFunction)
