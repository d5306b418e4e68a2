"""What each ``cwarp-train --method`` trains: its model, its loss, its per-step extras.

The trainer owns the loop, checkpoints and logging; a method owns

- ``build_model(backbone, num_classes)``: the network around the backbone;
- ``step_loss(net, pos1, pos2, neg, labels, autocast)``: forward and loss of one step,
  both under ``autocast`` (the losses' own autocast policy runs them in float32);
- ``after_step(model, step, total_steps)``: e.g. BYOL's EMA update;
- ``log_fields(step, total_steps)``: what it adds to a log.jsonl row.

``METHOD_CLASSES`` maps each name of ``cwarp.train.config.METHODS`` to its class.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import Tensor, nn

from cwarp.train import distributed as cdist
from cwarp.train.byol import BYOL, cosine_momentum
from cwarp.train.config import RunConfig
from cwarp.train.supervised import SupervisedReference

__all__ = ["Method", "BYOLMethod", "ContraWarping", "Supervised", "METHOD_CLASSES", "build_method",
           "warp_accuracy", "negative_anchor_count"]


class Method:
    """The interface the trainer drives."""

    name = ""

    def __init__(self, cfg: RunConfig, info: cdist.DistInfo):
        self.cfg, self.info = cfg, info

    def build_model(self, backbone: nn.Module, num_classes: Optional[int]) -> nn.Module:
        raise NotImplementedError

    def step_loss(self, net: nn.Module, pos1: Tensor, pos2: Tensor, neg: Optional[Tensor],
                  labels: Optional[Tensor], autocast) -> Tensor:
        raise NotImplementedError

    def after_step(self, model: nn.Module, step: int, total_steps: int) -> None:
        """Called after each optimizer step with the number of steps taken before it."""

    def log_fields(self, step: int, total_steps: int) -> Dict[str, float]:
        return {}


class Supervised(Method):
    """Cross-entropy of view 1 against the labels: the reference that shows what the budget allows."""

    name = "supervised"

    def build_model(self, backbone, num_classes):
        if num_classes is None:
            raise ValueError("Trainer: --method supervised needs num_classes")
        return SupervisedReference(backbone, num_classes)

    def step_loss(self, net, pos1, pos2, neg, labels, autocast):
        if labels is None:
            raise ValueError("Trainer.train_step: --method supervised needs labels")
        with autocast:
            return nn.functional.cross_entropy(net(pos1), labels.to(pos1.device))


class BYOLMethod(Method):
    """Symmetric BYOL plus the InfoNCE over warped negatives (none for the baseline)."""

    name = "byol"

    def __init__(self, cfg: RunConfig, info: cdist.DistInfo):
        super().__init__(cfg, info)
        # The last step's loss inputs, detached: the log computes their parts (loss_terms) only when it writes.
        self.last_loss_inputs: Optional[tuple] = None

    def build_model(self, backbone, num_classes):
        b = self.cfg.byol
        return BYOL(backbone, proj_dim=b.proj_dim, hidden_dim=b.hidden_dim, head_batch_norm=b.head_bn)

    def step_loss(self, net, pos1, pos2, neg, labels, autocast):
        n = self.cfg.negatives
        if neg is not None and n.negative_anchors < 1:
            neg = neg[:negative_anchor_count(pos1.shape[0], n.negative_anchors)]
        with autocast:
            emb = net(pos1, pos2, neg, online_negatives=n.negatives_through == "online",
                      detach_negatives=n.detach_negatives)
            return self.loss(*emb)

    def after_step(self, model, step, total_steps):
        model.update_target(cosine_momentum(step, total_steps, self.cfg.byol.base_momentum))

    def log_fields(self, step, total_steps):
        row = {"momentum": cosine_momentum(step, total_steps, self.cfg.byol.base_momentum)}
        row.update({k: float(v) for k, v in self.last_terms().items()})
        return row

    def _gather(self, *tensors):
        # In-batch negatives span the global batch: every rank's rows, with their gradients.
        return tuple(cdist.gather_with_grad(t) if t is not None else None for t in tensors)

    def loss(self, p1, p2, z1, z2, zneg, z1_online=None, z2_online=None) -> Tensor:
        """The training loss of one step's embeddings (BYOL.forward's Embeddings).

        byol_weight * mean BYOL term of both halves + nce_weight * half the
        InfoNCE of p1 (and of p2 with --nce-on both). The InfoNCE scores a
        prediction against the other view's target and the negatives; with
        --negatives-through online, against the other view's online
        projection (z1_online, z2_online) and the online negatives instead.
        """
        import cwarp

        n = self.cfg.negatives
        online = z2_online is not None
        if zneg is not None and online != (n.negatives_through == "online"):
            raise ValueError(f"Trainer.loss: --negatives-through {n.negatives_through} "
                             f"{'needs' if not online else 'takes no'} z1_online / z2_online")
        if n.in_batch and self.info.enabled:
            p1, p2, z1, z2, zneg, z1_online, z2_online = self._gather(p1, p2, z1, z2, zneg, z1_online, z2_online)
        kw = dict(tau=n.tau, byol_weight=n.byol_weight, nce_weight=n.nce_weight, in_batch=n.in_batch)
        # Symmetric BYOL: each view predicts the other's target. The warped
        # negatives share view 2's crop and colours and differ from it only by
        # local (expression-like) deformations: hard negatives for p1, whose
        # positive is view 2's embedding. For p2 they are copies of its own
        # view, so --nce-on p1 (the default) leaves them out of that half.
        zneg2 = zneg if n.nce_on == "both" else None
        h = zneg.shape[0] if zneg is not None else p1.shape[0]   # the anchors that have negatives
        if not online and h == p1.shape[0]:
            loss = 0.5 * (cwarp.contrastive_loss(p1, z2, zneg, **kw) + cwarp.contrastive_loss(p2, z1, zneg2, **kw))
            nce_pos = z2
        else:
            # The same sum, with the BYOL term over every anchor against the
            # target and the InfoNCE over the anchors with negatives (against
            # online embeddings with --negatives-through online): two calls of
            # the fused loss each.
            key1, key2 = (z1_online, z2_online) if online else (z1, z2)
            byol = dict(kw, nce_weight=0.0, in_batch=False)  # no InfoNCE here: no keys needed
            nce = dict(kw, byol_weight=0.0)
            loss = 0.5 * (cwarp.contrastive_loss(p1, z2, None, **byol) + cwarp.contrastive_loss(p2, z1, None, **byol)
                          + cwarp.contrastive_loss(p1[:h], key2[:h], zneg, **nce)
                          + cwarp.contrastive_loss(p2[:h], key1[:h], zneg2, **nce))
            nce_pos = key2
        self.last_loss_inputs = tuple(t.detach() if t is not None else None
                                      for t in (p1, p2, z1, z2, zneg, loss, nce_pos))
        return loss

    def last_terms(self) -> Dict[str, Tensor]:
        """loss_terms of the last step (empty before the first)."""
        return self.loss_terms(*self.last_loss_inputs) if self.last_loss_inputs is not None else {}

    @torch.no_grad()
    def loss_terms(self, p1, p2, z1, z2, zneg, loss, nce_pos=None) -> Dict[str, Tensor]:
        """The loss's parts, for the log (tensors: no host sync here).

        byol_term: the BYOL term, mean of 2 - 2 cos(p, z) over both halves.
        nce_term: the InfoNCE term (the loss less the weighted BYOL term).
        warp_acc: how often p1's cosine with view 2's embedding (nce_pos: the
        target's, or the online one with --negatives-through online) beats its
        cosine with every warped copy of view 2 (1 / (1 + N) is chance):
        whether the network that embeds the negatives tells the warps apart.
        (p2 against the same copies is left out: they share p2's own view, so
        beating them needs no warp.)
        """
        import torch.nn.functional as F

        # In float32 whatever dtype autocast gave the embeddings: these are
        # read as measurements, the loss itself is float32 by its own policy.
        p1, p2, z1, z2, zneg, nce_pos = (None if t is None else t.float() for t in (p1, p2, z1, z2, zneg, nce_pos))
        n = self.cfg.negatives
        n1, n2 = F.normalize(p1, dim=-1), F.normalize(p2, dim=-1)
        t1, t2 = F.normalize(z1, dim=-1), F.normalize(z2, dim=-1)
        s12, s21 = (n1 * t2).sum(-1), (n2 * t1).sum(-1)
        terms = {"byol_term": (2 - s12 - s21).mean()}
        if n.nce_weight > 0:
            terms["nce_term"] = (loss - n.byol_weight * terms["byol_term"]) / n.nce_weight
        if zneg is not None:
            h = zneg.shape[0]
            terms["warp_acc"] = warp_accuracy(p1[:h], (z2 if nce_pos is None else nce_pos)[:h], zneg)
        return terms


class ContraWarping(BYOLMethod):
    """BYOL whose InfoNCE scores p1 against view 2 and its locally warped copies (the config's negatives)."""

    name = "contrawarp"


METHOD_CLASSES = {cls.name: cls for cls in (ContraWarping, BYOLMethod, Supervised)}


def build_method(cfg: RunConfig, info: cdist.DistInfo) -> Method:
    """The Method of cfg.method."""
    if cfg.method not in METHOD_CLASSES:
        raise ValueError(f"--method: expected one of {tuple(METHOD_CLASSES)}, got {cfg.method!r}")
    return METHOD_CLASSES[cfg.method](cfg, info)


def negative_anchor_count(batch: int, fraction: float) -> int:
    """How many of a batch's anchors get warped negatives under --negative-anchors (at least one)."""
    return max(1, min(batch, round(fraction * batch)))


@torch.no_grad()
def warp_accuracy(p: Tensor, z_pos: Tensor, z_neg: Tensor) -> Tensor:
    """How often p's cosine with its positive z_pos (B, D) beats its cosine with
    every negative z_neg (B, N, D), as a 0-d tensor (1 / (1 + N) is chance)."""
    import torch.nn.functional as F

    n = F.normalize(p, dim=-1)
    s_pos = (n * F.normalize(z_pos, dim=-1)).sum(-1)
    s_neg = torch.einsum("bd,bnd->bn", n, F.normalize(z_neg, dim=-1))
    return (s_pos[:, None] > s_neg).all(1).float().mean()
