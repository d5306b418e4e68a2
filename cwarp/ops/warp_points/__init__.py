"""cwarp.warp_points: where source points land in local_warp's output (docs/api.md)."""
from cwarp.ops.warp_points import register  # noqa: F401  (fake and autograd of the C++ op)
from cwarp.ops.warp_points.api import warp_points

__all__ = ["warp_points"]
