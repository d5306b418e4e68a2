"""Where and how cwarp's Triton kernels run, for every op in one place.

The interpreter (TRITON_INTERPRET=1) is chosen by @triton.jit when a function
is decorated: for triton.language's own helpers (tl.cdiv, the combine
functions of tl.sum) that is when triton is first imported. So the variable
must be set before triton is first imported in the process; on CPU tensors
the kernels only run interpreted, and a half-interpreted setup (variable set
after `import triton`) is refused with a clear error instead of failing
inside a kernel.
"""
from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl

__all__ = ["INTERPRETED", "HALF_INTERPRETED", "require_runnable", "launch_device", "launcher", "register_op"]

# Whether the kernels were built as interpreted functions (decided by
# @triton.jit at import time from TRITON_INTERPRET).
INTERPRETED: bool = bool(triton.knobs.runtime.interpret)


def _is_interpreted(fn) -> bool:
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(fn, InterpretedFunction)


# TRITON_INTERPRET=1 set after triton itself was imported: our kernels are
# interpreted but tl.cdiv / tl.sum's helpers are not, and cannot run.
HALF_INTERPRETED: bool = INTERPRETED and not _is_interpreted(tl.cdiv)


def require_runnable(op: str, device: torch.device) -> None:
    """Raise, naming op, unless a Triton kernel can run on tensors on device."""
    if HALF_INTERPRETED:
        raise RuntimeError(
            f"{op}(): TRITON_INTERPRET=1 was set after triton was imported, so only part of Triton runs "
            "interpreted; set it before the first `import triton` of the process (e.g. in the "
            "environment or at the top of conftest.py)")
    if device.type == "cpu" and not INTERPRETED:
        raise RuntimeError(
            f"{op}(): the Triton backend runs CPU tensors only under the Triton interpreter; set "
            "TRITON_INTERPRET=1 before triton is first imported, move the tensors to CUDA, or use backend='cpp'")
    if device.type not in ("cpu", "cuda"):
        raise RuntimeError(f"{op}(): the Triton backend supports CUDA tensors (and CPU tensors under "
                           f"TRITON_INTERPRET=1), got device {device}")


def launch_device(device: torch.device):
    """The context of a launch on tensors of `device`. Triton launches on the
    current CUDA device, not on its arguments' one: with several GPUs the
    tensors' device must be made current for the launch. Nothing to do on the
    CPU (the interpreter)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


# On the GPU the ops are triton_ops: under torch.compile, Inductor sees the
# kernels themselves (functional decomposition through wrap_triton). Under
# the interpreter that decomposition cannot work: wrap_triton hands back the
# interpreted kernel as it is, and Inductor then launches it on fake tensors
# ("Attempted to access the data pointer on an invalid python storage"). So
# there the ops are plain custom ops, opaque to Inductor, with the same
# schema, fakes and autograd; torch.compile(fullgraph=True) traces them
# without graph breaks either way.
register_op = torch.library.custom_op if INTERPRETED else torch.library.triton_op


def launcher(kernel):
    """What an op launches `kernel[grid](...)` through: torch.library.wrap_triton
    on the GPU (a triton_op's kernels must go through it for Inductor to see
    them), the interpreted kernel itself under the interpreter, where the ops
    are plain custom ops (and older torch's wrap_triton cannot take an
    interpreted kernel in eager mode)."""
    return kernel if INTERPRETED else torch.library.wrap_triton(kernel)
