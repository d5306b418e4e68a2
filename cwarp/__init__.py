"""cwarp: fused local warping and contrastive losses for ContraWarping.

The public names of SPEC.md, and nothing else. Importing cwarp loads the
compiled kernels (cwarp._C) when they were built; see cwarp.backends() for
what is available.
"""
from cwarp import _extension, ops  # noqa: F401  (registers fakes and autograd)
from cwarp.sampling import FACE_LANDMARKS_5, sample_local_warps
from cwarp.warp import local_warp, local_warp_grid
from cwarp.augment import ContraWarpAugment
from cwarp.loss import ContraWarpingLoss, contrastive_loss

__version__ = "0.1.0"


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
