"""The modules built on the ops: ContraWarping's views and its loss."""
from cwarp.nn.augment import AugmentParams, ContraWarpAugment, Views
from cwarp.nn.loss import ContraWarpingLoss

__all__ = ["ContraWarpAugment", "AugmentParams", "Views", "ContraWarpingLoss"]
