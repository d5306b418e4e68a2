"""BYOL networks: online backbone + projector + predictor, and an EMA target.

The target is an exponential moving average of the online backbone and
projector (Grill et al., 2020), with the momentum following a cosine schedule
from ``base_momentum`` (0.99) to 1 over training, so the target freezes as the
online network converges.
"""
from __future__ import annotations

import copy
import math
from typing import NamedTuple, Optional

import torch
from torch import Tensor, nn

from cwarp.train.batch_stats import BatchStats

__all__ = ["mlp", "BYOL", "Embeddings", "cosine_momentum"]


def mlp(in_dim: int, hidden_dim: int, out_dim: int, *, batch_norm: bool = True) -> nn.Sequential:
    """Linear - BN - ReLU - Linear, BYOL's projector and predictor shape.

    BN in the heads keeps BYOL from collapsing early in short runs; it can be
    turned off to study that.
    """
    layers = [nn.Linear(in_dim, hidden_dim, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(hidden_dim))
    layers += [nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim)]
    return nn.Sequential(*layers)


def cosine_momentum(step: int, total_steps: int, base: float) -> float:
    """EMA momentum at ``step``: base at 0, rising along a cosine to 1 at total_steps."""
    if total_steps <= 0:
        return 1.0
    t = min(max(step, 0), total_steps) / total_steps
    return 1.0 - (1.0 - base) * (math.cos(math.pi * t) + 1.0) / 2.0


class Embeddings(NamedTuple):
    """What BYOL.forward returns.

    p1, p2: online predictions of the two views. z1, z2: target projections
    (no gradient). zneg (B, N, D): projections of the warped negatives, by the
    target, or by the online network (with gradient) for ``online_negatives``.
    z1_online, z2_online: the online projections of the views, with gradient,
    for ``online_negatives`` only (else None): the InfoNCE's positives there,
    so that its positive and negatives come from the same network.
    """
    p1: Tensor
    p2: Tensor
    z1: Tensor
    z2: Tensor
    zneg: Optional[Tensor]
    z1_online: Optional[Tensor] = None
    z2_online: Optional[Tensor] = None


class BYOL(nn.Module):
    """Online (backbone, projector, predictor) and target (backbone, projector) networks.

    ``forward(pos1, pos2, negatives)`` returns the online predictions of both
    views and the target projections of both views and of the negatives
    (``Embeddings``), i.e. everything ``cwarp.contrastive_loss`` needs. The target runs under
    ``torch.no_grad`` and its parameters never require grad, so
    DistributedDataParallel reduces the online gradients only.
    """

    def __init__(self, backbone: nn.Module, *, proj_dim: int = 128, hidden_dim: int = 1024,
                 head_batch_norm: bool = True):
        super().__init__()
        feat = int(backbone.feature_dim)
        self.backbone = backbone
        self.projector = mlp(feat, hidden_dim, proj_dim, batch_norm=head_batch_norm)
        self.predictor = mlp(proj_dim, hidden_dim, proj_dim, batch_norm=head_batch_norm)
        self.target_backbone = copy.deepcopy(backbone)
        self.target_projector = copy.deepcopy(self.projector)
        for p in self._target_params():
            p.requires_grad_(False)

    def _target_params(self):
        yield from self.target_backbone.parameters()
        yield from self.target_projector.parameters()

    def online_parameters(self):
        """Parameters the optimizer updates (everything but the target)."""
        for name, p in self.named_parameters():
            if not name.startswith("target_"):
                yield name, p

    def forward(self, pos1: Tensor, pos2: Tensor, negatives: Optional[Tensor] = None, *,
                online_negatives: bool = False, detach_negatives: bool = False) -> Embeddings:
        """Embeddings of the views and negatives. With ``online_negatives`` the
        negatives go through the online backbone and projector, with gradient,
        instead of the target: the loss then pushes the online network's own
        embedding of a warped face away, a direct signal to become sensitive to
        local warps (through the target that signal only arrives via the EMA).
        Their positives are then the online projections of the views
        (z1_online, z2_online), not the target's: scored against the target's
        view and the online network's copies, the InfoNCE could be lowered by
        telling the two networks apart, without looking at any warp.

        ``negatives`` (H, N, C, S, S) belong to the first H <= B anchors.
        ``detach_negatives`` (with ``online_negatives``) embeds them without
        gradient, in a second call whose BatchNorm layers use the views'
        batch statistics (cwarp.train.batch_stats), so that they differ from
        view 2 by the warps alone; the views keep their gradient."""
        B = pos1.shape[0]
        n = negatives.shape[1] if negatives is not None else 0
        h = negatives.shape[0] if n else 0
        online_negatives = online_negatives and n > 0
        joint = online_negatives and not detach_negatives
        zneg = z1_online = z2_online = None
        # The views in one backbone call: BN sees the whole batch once, as in
        # the reference BYOL implementation, and the conv runs on one big batch.
        online = [pos1, pos2] + ([negatives.flatten(0, 1)] if joint else [])
        if online_negatives and not joint:
            with BatchStats(self.backbone) as bb_stats, BatchStats(self.projector) as proj_stats:
                z_online = self.projector(self.backbone(torch.cat(online)))
            with torch.no_grad():
                zneg = proj_stats.apply(self.projector, bb_stats.apply(self.backbone, negatives.flatten(0, 1)))
            zneg = zneg.view(h, n, -1)
        else:
            z_online = self.projector(self.backbone(torch.cat(online)))
        p1, p2 = self.predictor(z_online[:2 * B]).split(B)
        if online_negatives:
            z1_online, z2_online = z_online[:B], z_online[B:2 * B]
            if joint:
                zneg = z_online[2 * B:].view(h, n, -1)
        with torch.no_grad():
            views = [pos1, pos2] + ([negatives.flatten(0, 1)] if n and not online_negatives else [])
            z = self.target_projector(self.target_backbone(torch.cat(views)))
            z1, z2 = z[:B], z[B:2 * B]
            if n and not online_negatives:
                zneg = z[2 * B:].view(h, n, -1)
        return Embeddings(p1, p2, z1, z2, zneg, z1_online, z2_online)

    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        """target <- m * target + (1 - m) * online, parameters and BN buffers alike."""
        pairs = ((self.target_backbone, self.backbone), (self.target_projector, self.projector))
        for tgt, src in pairs:
            t_params = [p for p in tgt.parameters()]
            s_params = [p.detach() for p in src.parameters()]
            torch._foreach_lerp_(t_params, s_params, 1.0 - momentum)
            for tb, sb in zip(tgt.buffers(), src.buffers()):
                # Running statistics follow the online network directly (as in
                # the reference implementation); counters are copied.
                tb.copy_(sb)
