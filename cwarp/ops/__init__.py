"""The kernels: one package per op, each with the same layers.

    cwarp/ops/<op>/api.py             the public function: checks, then one dispatch
    cwarp/ops/<op>/register.py        fake (meta) kernels and autograd of the C++ ops
    cwarp/ops/<op>/reference.py       the plain-PyTorch oracle
    cwarp/ops/<op>/triton_kernels.py  the Triton kernels, registered with triton_op

Backend choice lives in ``_dispatch``, argument checks in ``_checks``, the
Triton mirror of csrc/warp_math.h in ``triton_math``. Importing this package
registers the fakes and autograd of the compiled ops.
"""
from cwarp.ops.augment_views import augment_views
from cwarp.ops.contrastive_loss import contrastive_loss
from cwarp.ops.local_warp import FACE_LANDMARKS_5, local_warp, local_warp_grid, sample_local_warps
from cwarp.ops.warp_points import warp_points

__all__ = ["local_warp", "local_warp_grid", "sample_local_warps", "FACE_LANDMARKS_5", "contrastive_loss",
           "augment_views", "warp_points"]
