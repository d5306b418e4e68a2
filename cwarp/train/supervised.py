"""The supervised reference of ``cwarp-train --method supervised``.

The same backbone, views, optimizer, schedule and step budget as a BYOL run,
trained with the labels (cross-entropy of a linear classifier on view 1). Its
frozen features, probed like the self-supervised ones, show what the budget
allows at all: a self-supervised method cannot be expected to beat it.
"""
from __future__ import annotations

from torch import Tensor, nn

__all__ = ["SupervisedReference"]


class SupervisedReference(nn.Module):
    """``backbone`` followed by a linear classifier; ``forward(images)`` gives logits.

    It names its parts like BYOL (``backbone``, ``online_parameters()``), so
    the trainer's checkpoints and the probe read both the same way.
    """

    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"SupervisedReference: expected num_classes to be an int >= 2, got {num_classes!r}")
        self.backbone = backbone
        self.classifier = nn.Linear(int(backbone.feature_dim), num_classes)

    def online_parameters(self):
        """Parameters the optimizer updates: all of them (there is no target network)."""
        yield from self.named_parameters()

    def forward(self, images: Tensor) -> Tensor:
        return self.classifier(self.backbone(images))
