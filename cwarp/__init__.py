"""cwarp: fused local warping and contrastive losses for ContraWarping.

The public API, and nothing else. The ops load with torch: when torch is
already imported, ``import cwarp`` loads the compiled kernels (cwarp._C, which
registers torch.ops.cwarp.*) at once; otherwise they load on first use of any
public name (or with ``import cwarp.ops``), so that the console scripts answer
``--help`` without importing torch. ``cwarp.backends()`` says what can run here.
"""
import importlib
import sys
from typing import TYPE_CHECKING, Dict, Union

from cwarp._version import __version__

# Public name -> the module that defines it, imported on first use.
_PUBLIC = {
    "local_warp": "cwarp.ops", "local_warp_grid": "cwarp.ops", "warp_points": "cwarp.ops", "sample_local_warps": "cwarp.ops",
    "FACE_LANDMARKS_5": "cwarp.ops", "contrastive_loss": "cwarp.ops",
    "ContraWarpingLoss": "cwarp.nn", "ContraWarpAugment": "cwarp.nn",
}
_SUBPACKAGES = ("ops", "nn", "transforms", "reference", "data", "train", "eval", "apps")

if TYPE_CHECKING:
    from cwarp.nn import ContraWarpAugment, ContraWarpingLoss
    from cwarp.ops import (FACE_LANDMARKS_5, contrastive_loss, local_warp, local_warp_grid, sample_local_warps,
                           warp_points)


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
    elif name in _SUBPACKAGES:
        value = importlib.import_module(f"cwarp.{name}")
    else:
        raise AttributeError(f"module 'cwarp' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))


def _load_ops() -> None:
    for name in _PUBLIC:
        __getattr__(name)


def backends(explain: bool = False) -> Dict[str, Union[bool, str]]:
    """Which backends can run here: {"cpp": bool, "cuda": bool, "triton": bool}.

    "cpp": the compiled CPU kernels loaded; "cuda": their CUDA kernels were
    built and a CUDA device is visible; "triton": the triton package is
    installed and a CUDA device is visible, or TRITON_INTERPRET=1 runs the
    kernels on the CPU. With ``explain=True`` each value is "available" or
    the reason it is not.
    """
    from cwarp import _extension

    status = _extension.backend_status()
    return status if explain else {name: state == "available" for name, state in status.items()}


if "torch" in sys.modules:
    _load_ops()


__all__ = ["local_warp", "local_warp_grid", "warp_points", "sample_local_warps", "FACE_LANDMARKS_5", "contrastive_loss",
           "ContraWarpingLoss", "ContraWarpAugment", "backends", "__version__"]
