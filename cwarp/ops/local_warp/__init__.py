"""cwarp.local_warp: batched local warps with bilinear sampling (docs/api.md)."""
from cwarp.ops.local_warp import register  # noqa: F401  (fakes and autograd of the C++ ops)
from cwarp.ops.local_warp.api import local_warp, local_warp_grid
from cwarp.ops.local_warp.sampling import FACE_LANDMARKS_5, sample_local_warps

__all__ = ["local_warp", "local_warp_grid", "sample_local_warps", "FACE_LANDMARKS_5"]
