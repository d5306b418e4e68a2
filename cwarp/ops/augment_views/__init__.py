"""cwarp.ops.augment_views: the fused uint8 -> views renderer under ContraWarpAugment (docs/api.md)."""
from cwarp.ops.augment_views import register  # noqa: F401  (the fake of the C++ op)
from cwarp.ops.augment_views.api import augment_views

__all__ = ["augment_views"]
