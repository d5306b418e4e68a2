"""What the ops do under ``torch.autocast``, for every op in one place (docs/api.md §6, "Autocast").

As torchvision's ops (csrc/ops/autocast/): the op's floating inputs are
cast as its policy says, then the op runs with autocast off, so nothing
inside it (a kernel's host code, the reference's einsum or grid_sample) is
cast again. Two policies:

- ``FLOAT32`` (contrastive_loss): float16 / bfloat16 / float32 inputs are
  cast to float32 (float64 stays float64, as for autocast's own float32
  ops); the op computes and returns float32, as torch's losses do under
  autocast. Its inputs then need not share a dtype.
- ``KEEP`` (local_warp, augment_views): nothing is cast; the op runs as it
  does outside autocast and its result keeps the image's dtype
  (augment_views': out_dtype). A warp is a resampling, not a matmul: a lower
  precision would only round the image.

Two ways in, one policy: ``register`` gives a torch.ops.cwarp op its
AutocastCPU / AutocastCUDA kernels, for callers of the op itself; the public
functions (whose reference backend is no op) call ``enabled``, ``cast`` and
``disabled`` before they dispatch.
"""
from __future__ import annotations

from typing import Optional

import torch

__all__ = ["FLOAT32", "KEEP", "POLICY", "enabled", "cast", "disabled", "register"]

FLOAT32: Optional[torch.dtype] = torch.float32
KEEP: Optional[torch.dtype] = None
# Each op's policy, by its name in every layer (its public function, its C++
# op and its Triton twin); docs/api.md §6 has the same table.
POLICY = {"contrastive_loss": FLOAT32, "local_warp": KEEP, "augment_views": KEEP}

# Device types whose autocast the ops register a kernel for, with the dispatch key.
_KEYS = {"cpu": "AutocastCPU", "cuda": "AutocastCUDA"}
_LIB = torch.library.Library("cwarp", "FRAGMENT")


def enabled(t) -> bool:
    """Whether autocast is on for the device type of tensor t (False for
    anything else, which the op's own checks then refuse)."""
    return (isinstance(t, torch.Tensor) and t.device.type in _KEYS
            and torch.is_autocast_enabled(t.device.type))


def _cast_one(t, dtype: Optional[torch.dtype]):
    if dtype is None or not isinstance(t, torch.Tensor):
        return t
    if t.is_floating_point() and t.dtype != torch.float64:
        return t.to(dtype)
    return t


def cast(policy: Optional[torch.dtype], *tensors) -> tuple:
    """The tensors as ``policy`` feeds them to an op (None and non-floating tensors unchanged)."""
    return tuple(_cast_one(t, policy) for t in tensors)


def disabled(device_type: str) -> torch.autocast:
    """Autocast off for device_type, for the op's own work."""
    return torch.autocast(device_type, enabled=False)


def register(qualname: str, policy: Optional[torch.dtype]) -> None:
    """The AutocastCPU / AutocastCUDA kernels of the op ``qualname`` ("cwarp::name"): its
    inputs cast by ``policy`` (a value of POLICY), then the op run with autocast off."""
    name = qualname.split("::")[1]
    op = getattr(torch.ops.cwarp, name).default
    for device_type, key in _KEYS.items():
        def kernel(*args, _device_type=device_type):
            args = cast(policy, *args)
            with disabled(_device_type):
                return op(*args)
        _LIB.impl(name, kernel, key)
