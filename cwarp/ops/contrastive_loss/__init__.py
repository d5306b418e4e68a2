"""cwarp.contrastive_loss: InfoNCE with warped hard negatives plus BYOL, fused (docs/api.md)."""
from cwarp.ops.contrastive_loss import register  # noqa: F401  (fakes and autograd of the C++ ops)
from cwarp.ops.contrastive_loss.api import contrastive_loss

__all__ = ["contrastive_loss"]
