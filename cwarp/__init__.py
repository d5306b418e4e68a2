"""cwarp: fused local warping and contrastive losses for ContraWarping.

The public API, and nothing else. Importing cwarp loads the compiled kernels
(cwarp._C) when they were built; ``cwarp.backends()`` says what can run here.
"""
from cwarp import _extension  # noqa: F401  (loads cwarp._C)
from cwarp._version import __version__
from cwarp.nn import ContraWarpAugment, ContraWarpingLoss
from cwarp.ops import FACE_LANDMARKS_5, contrastive_loss, local_warp, local_warp_grid, sample_local_warps


def backends() -> dict:
    """Which compiled backends this installation has."""
    try:
        import triton  # noqa: F401
        has_triton = True
    except ImportError:
        has_triton = False
    return {"cpp": _extension.available(), "cuda": _extension.with_cuda(), "triton": has_triton}


__all__ = ["local_warp", "local_warp_grid", "sample_local_warps", "FACE_LANDMARKS_5", "contrastive_loss",
           "ContraWarpingLoss", "ContraWarpAugment", "backends", "__version__"]
