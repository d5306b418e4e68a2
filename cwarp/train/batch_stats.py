"""Run a network on a second batch with the BatchNorm statistics of the first.

``--detach-negatives`` embeds the warped negatives without gradient, in a
call of their own. In training mode that call's BatchNorm layers would
normalize the negatives with the negatives' own batch statistics, which
differ from the views' by a shift that every negative shares: the InfoNCE
could tell the negatives from view 2 by that shift without seeing a warp.
``BatchStats`` records each BatchNorm layer's batch mean and (biased)
variance while the views go through, and ``apply`` runs the negatives with
exactly those statistics (the layers in eval mode, the recorded statistics
in place of the running ones), so a negative and view 2 are normalized alike
and differ by the warps alone. The running statistics are not touched by the
second call.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["BatchStats"]


class BatchStats:
    """``with BatchStats(module) as stats: module(views)``, then ``stats.apply(module, other)``."""

    def __init__(self, module: nn.Module):
        self._layers: List[Tuple[str, _BatchNorm]] = [(name, m) for name, m in module.named_modules()
                                                      if isinstance(m, _BatchNorm)]
        self._stats: Dict[str, Tensor] = {}
        self._hooks: list = []

    def __enter__(self) -> "BatchStats":
        for name, layer in self._layers:
            self._hooks.append(layer.register_forward_pre_hook(self._recorder(name)))
        return self

    def __exit__(self, *exc) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()

    def _recorder(self, name: str):
        prefix = f"{name}." if name else ""

        def record(layer: _BatchNorm, inputs) -> None:
            x = inputs[0].detach()
            dims = [d for d in range(x.dim()) if d != 1]
            var, mean = torch.var_mean(x, dim=dims, unbiased=False)
            self._stats[prefix + "running_mean"] = mean
            self._stats[prefix + "running_var"] = var

        return record

    def apply(self, module: nn.Module, x: Tensor) -> Tensor:
        """module(x) with every BatchNorm layer normalizing by the recorded statistics (no update of its own)."""
        if len(self._stats) != 2 * len(self._layers):
            raise RuntimeError("BatchStats.apply: the module has not run inside this BatchStats yet")
        modes = [(m, m.training) for m in module.modules()]
        module.eval()
        try:
            return functional_call(module, self._stats, (x,), strict=False)
        finally:
            for m, training in modes:
                m.training = training
