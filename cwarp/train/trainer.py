"""cwarp-train: BYOL pretraining with ContraWarping negatives (SPEC.md §5).

    cwarp-train --data PATH --format synthetic --method contrawarp --out runs/cw

``--method contrawarp``: BYOL positives from two global views plus InfoNCE
over N locally warped negatives of the second view (scored against the first
view's prediction, ``--nce-on p1``), through the fused
``cwarp.contrastive_loss``. ``--method byol``: the same pipeline with no
negatives (the baseline). ``--method supervised``: the same backbone, views,
optimizer and budget trained with the labels, the reference that shows what
the budget allows at all. Views are rendered by ``cwarp.ContraWarpAugment`` on
the training device from explicit, seeded generators; ``--resume`` continues
bit-for-bit on the CPU. Under torchrun, several processes train with
DistributedDataParallel.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import sys
import time
from contextlib import nullcontext
from typing import Any, Callable, Dict, Optional, Sequence

import torch
from torch import nn

from cwarp.train import checkpoint as ckpt
from cwarp.train import distributed as cdist
from cwarp.train.byol import BYOL, cosine_momentum
from cwarp.train.optim import OPTIMIZERS, WarmupCosine, build_optimizer
from cwarp.train.supervised import SupervisedReference

__all__ = ["main", "build_parser", "config_from_args", "Trainer", "train", "ConfigError", "TrainingDiverged",
           "DEFAULTS", "METHODS", "FORMATS"]

METHODS = ("contrawarp", "byol", "supervised")
FORMATS = ("synthetic", "rafdb", "fer2013", "imagefolder")
NEGATIVE_NETWORKS = ("target", "online")
# Which predictions the warped negatives (copies of view 2) score against: only
# p1 -> z2, whose positive they differ from by the local warps alone (the
# default), or both (also p2 -> z1: for p2 they share the anchor's own global
# view, so it beats them without seeing any warp - measured to cost about 4
# linear-probe points, see the README).
NCE_PREDICTIONS = ("p1", "both")
PRECISIONS = ("auto", "fp32", "bf16")

# The default recipe (see the README section "Pretraining recipe, and what to expect").
DEFAULTS: Dict[str, Any] = dict(
    data=None, format="synthetic", method="contrawarp", out=None, arch="resnet18", image_size=64,
    epochs=20, batch_size=128, seed=0, device="cpu", resume=False, precision="auto",
    # data
    num_train=None, data_seed=0, workers=0,
    # optimisation
    optimizer="adamw", lr=2e-3, weight_decay=1e-4, momentum=0.9, warmup_epochs=2.0, final_lr_ratio=0.0,
    # BYOL
    base_momentum=0.99, proj_dim=128, hidden_dim=1024, head_bn=True, sync_bn=False,
    # ContraWarping
    num_negatives=2, warps_per_negative=4, warp_magnitude=[0.05, 0.15], warp_radius=[0.15, 0.35],
    tau=0.2, byol_weight=1.0, nce_weight=1.0, in_batch=False, negatives_through="online", nce_on="p1",
    # global views (ContraWarpAugment); jitter_strength scales its colour jitter
    crop_scale=[0.5, 1.0], rotation=10.0, jitter_strength=1.0, grayscale_p=0.2,
    # bookkeeping
    log_every=10, save_every=0, progress=True, tensorboard=False,
)

# Fields whose default changed: a checkpoint without them ran with these values.
FORMER_DEFAULTS: Dict[str, Any] = {"nce_on": "both", "negatives_through": "target"}

# Fields a resumed run may change; every other field must match the checkpoint.
RESUME_MUTABLE = {"device", "precision", "resume", "workers", "log_every", "save_every", "progress", "tensorboard",
                  "out", "data"}


class ConfigError(ValueError):
    """A bad command-line or config value; the message names the option."""


class TrainingDiverged(FloatingPointError):
    """The loss went NaN or Inf."""


def _pair(text: str):
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two numbers 'MIN,MAX', got {text!r}") from None
    return [lo, hi]


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def build_parser(suppress_defaults: bool = False) -> argparse.ArgumentParser:
    """The cwarp-train parser. With suppress_defaults, only options given on the
    command line appear in the namespace (used to detect resume conflicts)."""
    p = argparse.ArgumentParser(
        prog="cwarp-train", description="BYOL pretraining with ContraWarping negatives.",
        argument_default=argparse.SUPPRESS if suppress_defaults else None)
    d = (lambda k: argparse.SUPPRESS) if suppress_defaults else (lambda k: DEFAULTS[k])
    a = p.add_argument
    a("--data", default=d("data"), help="data path (synthetic: a cache folder, or omit)")
    a("--format", choices=FORMATS, default=d("format"))
    a("--method", choices=METHODS, default=d("method"))
    a("--out", required=not suppress_defaults, default=d("out"), help="run folder")
    a("--arch", default=d("arch"), help="backbone (cwarp.train.models.ARCHS)")
    a("--image-size", type=int, default=d("image_size"))
    a("--epochs", type=int, default=d("epochs"))
    a("--batch-size", type=int, default=d("batch_size"), help="global batch size (all processes)")
    a("--seed", type=int, default=d("seed"))
    a("--device", choices=("cpu", "cuda"), default=d("device"))
    a("--resume", action="store_true", default=d("resume"))
    a("--precision", choices=PRECISIONS, default=d("precision"),
      help="autocast dtype of the networks; auto: bf16 on CUDA, fp32 on the CPU (bf16 there is "
           "opt-in: faster on CPUs with native bf16, see the README)")
    g = p.add_argument_group("data")
    g.add_argument("--num-train", type=int, default=d("num_train"),
                   help="training images (synthetic: how many faces to render; else a seeded subset)")
    g.add_argument("--data-seed", type=int, default=d("data_seed"), help="seed of the data set (not of training)")
    g.add_argument("--workers", type=int, default=d("workers"), help="CPU threads (0: torch's default)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default=d("optimizer"))
    g.add_argument("--lr", type=float, default=d("lr"))
    g.add_argument("--weight-decay", type=float, default=d("weight_decay"))
    g.add_argument("--momentum", type=float, default=d("momentum"), help="SGD/LARS momentum")
    g.add_argument("--warmup-epochs", type=float, default=d("warmup_epochs"))
    g.add_argument("--final-lr-ratio", type=float, default=d("final_lr_ratio"))
    g = p.add_argument_group("BYOL")
    g.add_argument("--base-momentum", type=float, default=d("base_momentum"), help="EMA momentum at step 0")
    g.add_argument("--proj-dim", type=int, default=d("proj_dim"))
    g.add_argument("--hidden-dim", type=int, default=d("hidden_dim"))
    g.add_argument("--head-bn", type=_bool, default=d("head_bn"), help="BatchNorm in projector/predictor")
    g.add_argument("--sync-bn", action="store_true", default=d("sync_bn"), help="SyncBatchNorm (CUDA)")
    g = p.add_argument_group("ContraWarping")
    g.add_argument("--num-negatives", type=int, default=d("num_negatives"))
    g.add_argument("--warps-per-negative", type=int, default=d("warps_per_negative"))
    g.add_argument("--warp-magnitude", type=_pair, default=d("warp_magnitude"), metavar="MIN,MAX",
                   help="displacement |d| of each local warp, in view units (2 = the view's width); a translate "
                        "warp moves content by at most m (r^2 / (r^2 + m^2))^2 <= 0.325 r, so beyond r / sqrt(3) "
                        "a larger m moves it less: raise --warp-radius for larger warps")
    g.add_argument("--warp-radius", type=_pair, default=d("warp_radius"), metavar="MIN,MAX",
                   help="radius r of each local warp, in view units")
    g.add_argument("--tau", type=float, default=d("tau"))
    g.add_argument("--byol-weight", type=float, default=d("byol_weight"))
    g.add_argument("--nce-weight", type=float, default=d("nce_weight"))
    g.add_argument("--in-batch", action="store_true", default=d("in_batch"),
                   help="also use the other images' positives as negatives (gathered over ranks)")
    g.add_argument("--negatives-through", choices=NEGATIVE_NETWORKS, default=d("negatives_through"),
                   help="which network embeds the warped negatives: the EMA target (no gradient) or the "
                        "online backbone+projector (with gradient; the InfoNCE's positive is then the online "
                        "projection of the other view too, so that only the warps tell them apart)")
    g.add_argument("--nce-on", choices=NCE_PREDICTIONS, default=d("nce_on"),
                   help="which predictions meet the warped negatives (copies of view 2): p1 alone, whose "
                        "positive (view 2's target) they differ from by the local warps only, or both halves of "
                        "the symmetric loss (p2 beats copies of its own view without seeing a warp)")
    g = p.add_argument_group("global views")
    g.add_argument("--crop-scale", type=_pair, default=d("crop_scale"), metavar="MIN,MAX",
                   help="random resized crop: fraction of the image area")
    g.add_argument("--rotation", type=float, default=d("rotation"), metavar="DEG",
                   help="random rotation in [-DEG, DEG] degrees")
    g.add_argument("--jitter-strength", type=float, default=d("jitter_strength"), metavar="S",
                   help="colour jitter: brightness/contrast S*0.4, saturation S*0.2, hue S*0.1 (0: none)")
    g.add_argument("--grayscale-p", type=float, default=d("grayscale_p"), help="probability of a grayscale view")
    g = p.add_argument_group("bookkeeping")
    g.add_argument("--log-every", type=int, default=d("log_every"))
    g.add_argument("--save-every", type=int, default=d("save_every"), help="also checkpoint every K steps")
    g.add_argument("--progress", type=_bool, default=d("progress"))
    g.add_argument("--tensorboard", action="store_true", default=d("tensorboard"))
    return p


def config_from_args(argv: Optional[Sequence[str]] = None):
    """(config dict, set of fields given explicitly on the command line)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    cfg = vars(build_parser().parse_args(argv))
    explicit = set(vars(build_parser(suppress_defaults=True).parse_args(argv)))
    return cfg, explicit


def validate_config(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Check every value; return the effective config (method-specific fields resolved)."""
    def need(cond, option, msg):
        if not cond:
            raise ConfigError(f"--{option.replace('_', '-')}: {msg}, got {cfg[option]!r}")

    from cwarp.train.models import ARCHS
    need(cfg["method"] in METHODS, "method", f"expected one of {METHODS}")
    need(cfg["format"] in FORMATS, "format", f"expected one of {FORMATS}")
    need(cfg["precision"] in PRECISIONS, "precision", f"expected one of {PRECISIONS}")
    need(cfg["negatives_through"] in NEGATIVE_NETWORKS, "negatives_through", f"expected one of {NEGATIVE_NETWORKS}")
    need(cfg["nce_on"] in NCE_PREDICTIONS, "nce_on", f"expected one of {NCE_PREDICTIONS}")
    need(cfg["arch"] in ARCHS, "arch", f"expected one of {tuple(ARCHS)}")
    need(cfg["image_size"] >= 16, "image_size", "expected >= 16")
    need(cfg["epochs"] >= 1, "epochs", "expected >= 1")
    need(cfg["batch_size"] >= 2, "batch_size", "expected >= 2 (BatchNorm needs two samples)")
    need(cfg["num_train"] is None or cfg["num_train"] >= 1, "num_train", "expected >= 1")
    need(cfg["workers"] >= 0, "workers", "expected >= 0")
    need(math.isfinite(cfg["lr"]) and cfg["lr"] > 0, "lr", "expected a finite number > 0")
    need(math.isfinite(cfg["weight_decay"]) and cfg["weight_decay"] >= 0, "weight_decay", "expected >= 0")
    need(0 <= cfg["momentum"] < 1, "momentum", "expected in [0, 1)")
    need(cfg["warmup_epochs"] >= 0, "warmup_epochs", "expected >= 0")
    need(0 <= cfg["final_lr_ratio"] <= 1, "final_lr_ratio", "expected in [0, 1]")
    need(0 <= cfg["base_momentum"] <= 1, "base_momentum", "expected in [0, 1]")
    need(cfg["proj_dim"] >= 1, "proj_dim", "expected >= 1")
    need(cfg["hidden_dim"] >= 1, "hidden_dim", "expected >= 1")
    need(cfg["num_negatives"] >= 0, "num_negatives", "expected >= 0")
    need(cfg["warps_per_negative"] >= 1, "warps_per_negative", "expected >= 1")
    for k in ("warp_magnitude", "warp_radius", "crop_scale"):
        lo, hi = cfg[k]
        need(0 <= lo <= hi, k, "expected MIN,MAX with 0 <= MIN <= MAX")
    need(cfg["crop_scale"][1] <= 1, "crop_scale", "expected MAX <= 1")
    need(0 <= cfg["rotation"] <= 180, "rotation", "expected degrees in [0, 180]")
    need(0 <= cfg["jitter_strength"] <= 5, "jitter_strength", "expected in [0, 5] (hue S*0.1 must stay <= 0.5)")
    need(0 <= cfg["grayscale_p"] <= 1, "grayscale_p", "expected a probability in [0, 1]")
    need(math.isfinite(cfg["tau"]) and cfg["tau"] > 0, "tau", "expected > 0")
    need(cfg["byol_weight"] >= 0, "byol_weight", "expected >= 0")
    need(cfg["nce_weight"] >= 0, "nce_weight", "expected >= 0")
    need(cfg["log_every"] >= 1, "log_every", "expected >= 1")
    need(cfg["save_every"] >= 0, "save_every", "expected >= 0")
    if cfg["out"] is None:
        raise ConfigError("--out: a run folder is required")
    if cfg["device"] == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device: cuda was asked for but torch.cuda.is_available() is False")
    if cfg["sync_bn"] and cfg["device"] != "cuda":
        raise ConfigError("--sync-bn: PyTorch's SyncBatchNorm runs on CUDA only; drop it or use --device cuda")
    cfg = dict(cfg)
    if cfg["method"] == "supervised":
        # Cross-entropy on view 1: no negatives, no BYOL or InfoNCE terms.
        if cfg["in_batch"]:
            raise ConfigError("--in-batch: --method supervised has no contrastive loss to take in-batch keys")
        if cfg["negatives_through"] != DEFAULTS["negatives_through"]:
            raise ConfigError("--negatives-through: --method supervised has no warped negatives, got "
                              f"{cfg['negatives_through']!r}")
        cfg["num_negatives"] = 0
        return cfg
    if cfg["method"] == "byol":
        # The baseline: the same pipeline with no warped negatives.
        cfg["num_negatives"] = 0
    elif cfg["num_negatives"] == 0:
        raise ConfigError("--num-negatives: --method contrawarp needs at least one warped negative, got 0 "
                          "(use --method byol for the baseline)")
    if cfg["num_negatives"] == 0 and not cfg["in_batch"]:
        cfg["nce_weight"] = 0.0  # InfoNCE with the positive alone is identically 0
    if cfg["byol_weight"] == 0 and cfg["nce_weight"] == 0:
        raise ConfigError("--byol-weight/--nce-weight: the loss would be 0; give one of them a weight > 0")
    return cfg


def autocast_dtype(precision: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype of the networks, or None for plain fp32.

    "auto" is bf16 on CUDA and fp32 on the CPU. "bf16" on a CPU with native
    bf16 (AVX512-BF16 or AMX) runs convnet-small steps 2.2x faster (48 px,
    measured), but it is opt-in: over the demo's budget (3 seeds) its
    features probed worse than fp32's (BYOL 14.1 vs 16.4 %, see the README).
    The loss always runs in fp32.
    """
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def _rng_state(aug_gen: torch.Generator) -> Dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "augment": aug_gen.get_state(),
             "python": repr(random.getstate())}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Dict[str, Any], aug_gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    aug_gen.set_state(state["augment"])
    import ast
    random.setstate(ast.literal_eval(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def build_augment(cfg: Dict[str, Any], num_negatives: Optional[int] = None):
    """The ContraWarpAugment of a run's config (SPEC.md §4)."""
    import cwarp

    s = cfg["jitter_strength"]
    return cwarp.ContraWarpAugment(
        size=cfg["image_size"], crop_scale=tuple(cfg["crop_scale"]), rotation=cfg["rotation"],
        brightness=0.4 * s, contrast=0.4 * s, saturation=0.2 * s, hue=0.1 * s, grayscale_p=cfg["grayscale_p"],
        num_negatives=cfg["num_negatives"] if num_negatives is None else num_negatives,
        warps_per_negative=cfg["warps_per_negative"], warp_radius=tuple(cfg["warp_radius"]),
        warp_magnitude=tuple(cfg["warp_magnitude"]))


class Trainer:
    """Everything one process needs for training; ``train()`` drives it.

    Split into ``make_views`` (augmentation) and ``train_step`` (forward,
    loss, backward, optimizer, EMA) so benchmarks can time the two apart.
    """

    def __init__(self, cfg: Dict[str, Any], info: cdist.DistInfo, device: torch.device,
                 in_channels: int, steps_per_epoch: int, num_classes: Optional[int] = None):
        import cwarp
        from cwarp.train.models import build_backbone

        self.cfg, self.info, self.device = cfg, info, device
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = cfg["epochs"] * steps_per_epoch
        # Same initial weights on every rank (DDP also broadcasts rank 0's).
        torch.manual_seed(cfg["seed"])
        backbone = build_backbone(cfg["arch"], in_channels, cfg["image_size"])
        self.supervised = cfg["method"] == "supervised"
        if self.supervised:
            if num_classes is None:
                raise ValueError("Trainer: --method supervised needs num_classes")
            model = SupervisedReference(backbone, num_classes)
        else:
            model = BYOL(backbone, proj_dim=cfg["proj_dim"], hidden_dim=cfg["hidden_dim"],
                         head_batch_norm=cfg["head_bn"])
        if cfg["sync_bn"]:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = model.to(device)
        # channels_last only on CUDA. On the CPU it would run convnet-small 1.5x
        # faster, but torch 2.14's fp32 CPU backward of the whole backbone in
        # channels_last at 16 px (a 2x2 last map) is off from float64 by 0.7 %
        # of the gradient's norm where the contiguous one is off by 1e-6
        # (measured; fine at 32 px, and each layer alone agrees).
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.ddp = None
        if info.enabled:
            self.ddp = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)
        self.optimizer = build_optimizer(cfg["optimizer"], model.online_parameters(), lr=cfg["lr"],
                                         weight_decay=cfg["weight_decay"], momentum=cfg["momentum"])
        self.schedule = WarmupCosine(self.optimizer, self.total_steps,
                                     round(cfg["warmup_epochs"] * steps_per_epoch), cfg["final_lr_ratio"])
        self.augment = build_augment(cfg).to(device)
        # The probe normalizes its inputs with the checkpoint config's mean/std.
        cfg["mean"], cfg["std"] = list(self.augment.mean), list(self.augment.std)
        # Augmentation randomness: one explicit CPU generator per rank (the
        # sampler draws on the generator's device, so runs agree across devices).
        self.aug_gen = torch.Generator().manual_seed(cfg["seed"] * 1_000_003 + 7919 * info.rank + 1)
        self.step = 0
        # The last step's loss inputs, detached: the log computes their parts (loss_terms) only when it writes.
        self.last_loss_inputs: Optional[tuple] = None
        self.amp_dtype = autocast_dtype(cfg["precision"], device)
        self.autocast = (torch.autocast(device.type, dtype=self.amp_dtype) if self.amp_dtype is not None
                         else nullcontext())

    # -- one step ---------------------------------------------------------------
    def make_views(self, images: torch.Tensor, landmarks: Optional[torch.Tensor]):
        images = images.to(self.device, non_blocking=True)
        if landmarks is not None:
            landmarks = landmarks.to(self.device, non_blocking=True)
        views = self.augment(images, landmarks=landmarks, generator=self.aug_gen)
        pos1, pos2, neg = views.pos1, views.pos2, views.negatives
        if self.device.type == "cuda":
            pos1 = pos1.contiguous(memory_format=torch.channels_last)
            pos2 = pos2.contiguous(memory_format=torch.channels_last)
        return pos1, pos2, (neg if neg is not None and neg.shape[1] > 0 else None)

    def loss(self, p1, p2, z1, z2, zneg, z1_online=None, z2_online=None) -> torch.Tensor:
        """The training loss of one step's embeddings (BYOL.forward's Embeddings).

        byol_weight * mean BYOL term of both halves + nce_weight * half the
        InfoNCE of p1 (and of p2 with --nce-on both). The InfoNCE scores a
        prediction against the other view's target and the negatives; with
        --negatives-through online, against the other view's online
        projection (z1_online, z2_online) and the online negatives instead.
        """
        import cwarp

        cfg = self.cfg
        online = z2_online is not None
        if zneg is not None and online != (cfg["negatives_through"] == "online"):
            raise ValueError(f"Trainer.loss: --negatives-through {cfg['negatives_through']} "
                             f"{'needs' if not online else 'takes no'} z1_online / z2_online")
        if cfg["in_batch"] and self.info.enabled:
            # In-batch negatives span the global batch: gather every rank's rows
            # (predictions with their gradients) and compute the global loss.
            p1, p2 = cdist.gather_with_grad(p1), cdist.gather_with_grad(p2)
            z1, z2 = cdist.gather_with_grad(z1), cdist.gather_with_grad(z2)
            zneg = cdist.gather_with_grad(zneg) if zneg is not None else None
            if online:
                z1_online, z2_online = cdist.gather_with_grad(z1_online), cdist.gather_with_grad(z2_online)
        kw = dict(tau=cfg["tau"], byol_weight=cfg["byol_weight"], nce_weight=cfg["nce_weight"],
                  in_batch=cfg["in_batch"])
        # Symmetric BYOL: each view predicts the other's target. The warped
        # negatives share view 2's crop and colours and differ from it only by
        # local (expression-like) deformations: hard negatives for p1, whose
        # positive is view 2's embedding. For p2 they are copies of its own
        # view, so --nce-on p1 (the default) leaves them out of that half.
        p1, p2, z1, z2 = p1.float(), p2.float(), z1.float(), z2.float()
        zneg = zneg.float() if zneg is not None else None
        zneg2 = zneg if cfg["nce_on"] == "both" else None
        if not online:
            loss = 0.5 * (cwarp.contrastive_loss(p1, z2, zneg, **kw) + cwarp.contrastive_loss(p2, z1, zneg2, **kw))
            nce_pos = z2
        else:
            # The same sum, with the BYOL term against the target and the
            # InfoNCE against online embeddings: two calls of the fused loss.
            z1_online, z2_online = z1_online.float(), z2_online.float()
            byol = dict(kw, nce_weight=0.0, in_batch=False)  # no InfoNCE here: no keys needed
            nce = dict(kw, byol_weight=0.0)
            loss = 0.5 * (cwarp.contrastive_loss(p1, z2, None, **byol) + cwarp.contrastive_loss(p2, z1, None, **byol)
                          + cwarp.contrastive_loss(p1, z2_online, zneg, **nce)
                          + cwarp.contrastive_loss(p2, z1_online, zneg2, **nce))
            nce_pos = z2_online
        self.last_loss_inputs = tuple(t.detach() if t is not None else None
                                      for t in (p1, p2, z1, z2, zneg, loss, nce_pos))
        return loss

    def last_terms(self) -> Dict[str, torch.Tensor]:
        """loss_terms of the last step (empty before the first)."""
        return self.loss_terms(*self.last_loss_inputs) if self.last_loss_inputs is not None else {}

    @torch.no_grad()
    def loss_terms(self, p1, p2, z1, z2, zneg, loss, nce_pos=None) -> Dict[str, torch.Tensor]:
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

        cfg = self.cfg
        n1, n2 = F.normalize(p1, dim=-1), F.normalize(p2, dim=-1)
        t1, t2 = F.normalize(z1, dim=-1), F.normalize(z2, dim=-1)
        s12, s21 = (n1 * t2).sum(-1), (n2 * t1).sum(-1)
        terms = {"byol_term": (2 - s12 - s21).mean()}
        if cfg["nce_weight"] > 0:
            terms["nce_term"] = (loss - cfg["byol_weight"] * terms["byol_term"]) / cfg["nce_weight"]
        if zneg is not None:
            terms["warp_acc"] = warp_accuracy(p1, z2 if nce_pos is None else nce_pos, zneg)
        return terms

    def train_step(self, pos1, pos2, neg, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """One optimisation step; returns the (detached) loss tensor, no host sync.

        ``labels`` (B,) are used by --method supervised only, which trains on
        view 1 alone."""
        net = self.ddp if self.ddp is not None else self.model
        net.train()
        if self.supervised:
            if labels is None:
                raise ValueError("Trainer.train_step: --method supervised needs labels")
            with self.autocast:
                logits = net(pos1)
            loss = nn.functional.cross_entropy(logits.float(), labels.to(logits.device))
        else:
            with self.autocast:
                emb = net(pos1, pos2, neg, online_negatives=self.cfg["negatives_through"] == "online")
            loss = self.loss(*emb)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.schedule.step()
        if not self.supervised:
            self.model.update_target(cosine_momentum(self.step, self.total_steps, self.cfg["base_momentum"]))
        self.step += 1
        return loss.detach()

    # -- state ------------------------------------------------------------------
    def state_dict(self, epoch: int, step_in_epoch: int) -> Dict[str, Any]:
        m = self.model
        if self.cfg["sync_bn"]:
            # The probe rebuilds a plain backbone; SyncBatchNorm's state_dict keys match BatchNorm's.
            pass
        return {
            "config": dict(self.cfg),
            "backbone": m.backbone.state_dict(),
            "model": m.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "epoch": epoch, "step_in_epoch": step_in_epoch, "step": self.step,
            "rng": _rng_state(self.aug_gen),
            "world_size": self.info.world_size,
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.step = int(state["step"])
        _set_rng_state(state["rng"], self.aug_gen)


class _StopFlag:
    """First Ctrl-C (SIGINT) or SIGTERM asks for a clean stop after the current
    step; a second Ctrl-C aborts at once (the last checkpoint stays)."""

    def __init__(self):
        self.requested = False
        self._old = {}

    def __enter__(self):
        import threading
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


@torch.no_grad()
def warp_accuracy(p: torch.Tensor, z_pos: torch.Tensor, z_neg: torch.Tensor) -> torch.Tensor:
    """How often p's cosine with its positive z_pos (B, D) beats its cosine with
    every negative z_neg (B, N, D), as a 0-d tensor (1 / (1 + N) is chance)."""
    import torch.nn.functional as F

    n = F.normalize(p, dim=-1)
    s_pos = (n * F.normalize(z_pos, dim=-1)).sum(-1)
    s_neg = torch.einsum("bd,bnd->bn", n, F.normalize(z_neg, dim=-1))
    return (s_pos[:, None] > s_neg).all(1).float().mean()


def saved_config(saved: Dict[str, Any]) -> Dict[str, Any]:
    """A checkpoint's config with every field: one from before a field existed
    ran with that field's default of the time."""
    return {**DEFAULTS, **FORMER_DEFAULTS, **saved}


def load_data(cfg):
    """(dataset, images, labels, landmarks) of a run config's training split."""
    from cwarp.data import build_dataset

    ds = build_dataset(cfg["format"], cfg["data"], "train", cfg["image_size"], num_samples=cfg["num_train"],
                       seed=cfg["data_seed"])
    images, labels, landmarks = ds.tensors()
    return ds, images, labels, landmarks


def _truncate_log(path: str, max_step: int) -> None:
    """Drop log rows written after the checkpoint we resume from (a crash
    between two checkpoints would otherwise log those steps twice)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        rows = [line for line in f if line.strip() and json.loads(line).get("step", 0) <= max_step]
    with open(path, "w") as f:
        f.writelines(rows)


def train(cfg: Dict[str, Any], explicit: Optional[set] = None,
          step_hook: Optional[Callable[[int, float], None]] = None) -> Dict[str, Any]:
    """Run (or resume) one training job. Returns a summary dict.

    ``step_hook(step, loss_value)`` is called on rank 0 after each logged step
    (tests use it to interrupt a run).
    """
    explicit = set(cfg) if explicit is None else explicit
    out = cfg["out"]
    ckpt_path = os.path.join(out, "checkpoint.pt")
    state = None
    if cfg["resume"]:
        if not os.path.exists(ckpt_path):
            raise ckpt.CheckpointError(f"--resume: no checkpoint at {ckpt_path}; start without --resume")
        state = ckpt.load_checkpoint(ckpt_path)
        # Fields the checkpoint predates count with the value it ran with, so an
        # explicit flag that disagrees is a conflict, not silently ignored.
        saved = saved_config(state["config"])
        conflicts = ckpt.config_conflicts(saved, cfg, [k for k in explicit if k not in RESUME_MUTABLE])
        if conflicts:
            k, (old, new) = next(iter(sorted(conflicts.items())))
            names = ", ".join(f"--{f.replace('_', '-')}" for f in sorted(conflicts))
            raise ConfigError(f"--resume: the checkpoint's config conflicts with the command line on {names} "
                              f"(e.g. {k}: checkpoint has {old!r}, command line has {new!r})")
        merged = dict(saved)
        merged.update({k: cfg[k] for k in RESUME_MUTABLE if k in explicit and k in cfg})
        merged["resume"] = True
        cfg = merged
    else:
        cfg = validate_config(cfg)
        if os.path.exists(ckpt_path):
            raise ConfigError(f"--out: {out} already holds a checkpoint; pass --resume to continue it "
                              f"or choose another --out")

    if cfg["workers"]:
        torch.set_num_threads(cfg["workers"])
    device = torch.device(cfg["device"])
    info = cdist.init_from_env(device.type)
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    main_rank = info.rank == 0

    ds, images, labels, landmarks = load_data(cfg)
    cfg["in_channels"] = int(ds.channels)
    n = len(images)
    if info.world_size > 1 and cfg["batch_size"] % info.world_size:
        raise ConfigError(f"--batch-size: {cfg['batch_size']} is not divisible by the {info.world_size} processes")
    local_batch = cfg["batch_size"] // info.world_size
    if n < cfg["batch_size"]:
        raise ConfigError(f"--batch-size: the training set has {n} images, fewer than one batch of "
                          f"{cfg['batch_size']}; lower --batch-size or add data")
    from torch.utils.data.distributed import DistributedSampler

    sampler = DistributedSampler(range(n), num_replicas=info.world_size, rank=info.rank, shuffle=True,
                                 seed=cfg["seed"], drop_last=True)
    steps_per_epoch = len(sampler) // local_batch
    trainer = Trainer(cfg, info, device, cfg["in_channels"], steps_per_epoch, num_classes=len(ds.classes))

    start_epoch, start_step_in_epoch = 0, 0
    log_path = os.path.join(out, "log.jsonl")
    if state is not None:
        if state.get("world_size", 1) != info.world_size:
            raise ConfigError(f"--resume: the checkpoint was written by {state.get('world_size', 1)} processes, "
                              f"this run has {info.world_size}; an exact resume needs the same number")
        trainer.load_state_dict(state)
        start_epoch, start_step_in_epoch = int(state["epoch"]), int(state["step_in_epoch"])
        if main_rank:
            _truncate_log(log_path, trainer.step)
    del state
    if main_rank:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2, sort_keys=True)
    writer = None
    if cfg["tensorboard"] and main_rank:
        try:
            from torch.utils.tensorboard import SummaryWriter
            writer = SummaryWriter(os.path.join(out, "tb"))
        except ImportError:
            print("cwarp-train: --tensorboard ignored: the tensorboard package is not installed", file=sys.stderr)

    def save(epoch, step_in_epoch):
        if main_rank:
            ckpt.save_checkpoint(ckpt_path, trainer.state_dict(epoch, step_in_epoch))
        cdist.barrier()

    result = {"status": "running", "out": out}
    bad = torch.zeros((), dtype=torch.bool, device=device)   # any non-finite loss since the last check
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    loss_count = 0
    last_good_step = trainer.step

    def check_finite():
        nonlocal bad
        flag = bad.clone()
        if info.enabled:
            flag = flag.to(torch.int32)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        if bool(flag.item()):
            raise TrainingDiverged(
                f"cwarp-train: the loss became NaN or Inf between steps {last_good_step} and {trainer.step}; "
                f"training stopped. The last good checkpoint ({ckpt_path}, step {last_good_step}) was kept. "
                f"Try a lower --lr, a longer --warmup-epochs, or --optimizer adamw.")

    progress = None
    t_last, imgs_since = time.perf_counter(), 0
    interrupted = False
    with _StopFlag() as stop:
        try:
            for epoch in range(start_epoch, cfg["epochs"]):
                sampler.set_epoch(epoch)
                order = torch.tensor(list(sampler), dtype=torch.long)
                first = start_step_in_epoch if epoch == start_epoch else 0
                if main_rank and cfg["progress"]:
                    from tqdm import tqdm
                    progress = tqdm(total=steps_per_epoch, initial=first, desc=f"epoch {epoch + 1}/{cfg['epochs']}",
                                    unit="step", dynamic_ncols=True, leave=False)
                for s in range(first, steps_per_epoch):
                    idx = order[s * local_batch:(s + 1) * local_batch]
                    lm = landmarks[idx] if landmarks is not None else None
                    pos1, pos2, neg = trainer.make_views(images[idx], lm)
                    loss = trainer.train_step(pos1, pos2, neg, labels[idx])
                    bad |= ~torch.isfinite(loss)
                    loss_sum += loss
                    loss_count += 1
                    imgs_since += cfg["batch_size"]
                    if progress is not None:
                        progress.update(1)
                    at_log = trainer.step % cfg["log_every"] == 0 or s == steps_per_epoch - 1
                    stop_now = stop.requested
                    if info.enabled:
                        f = torch.tensor([int(stop_now)], device=device)
                        torch.distributed.all_reduce(f, op=torch.distributed.ReduceOp.MAX)
                        stop_now = bool(f.item())
                    if at_log or stop_now:
                        check_finite()
                        now = time.perf_counter()
                        ips = imgs_since / max(now - t_last, 1e-9)
                        row = {"step": trainer.step, "epoch": epoch + (s + 1) / steps_per_epoch,
                               "loss": float(loss.item()), "loss_avg": float((loss_sum / loss_count).item()),
                               "lr": trainer.schedule.get_lr(), "images_per_s": ips}
                        if not trainer.supervised:
                            row["momentum"] = cosine_momentum(trainer.step, trainer.total_steps, cfg["base_momentum"])
                            row.update({k: float(v) for k, v in trainer.last_terms().items()})
                        loss_sum.zero_()
                        loss_count = 0
                        t_last, imgs_since = now, 0
                        if main_rank:
                            with open(log_path, "a") as f:
                                f.write(json.dumps(row) + "\n")
                            if progress is not None:
                                progress.set_postfix(loss=f"{row['loss']:.4f}", img_s=f"{ips:.0f}")
                            if writer is not None:
                                for k in ("loss", "lr", "momentum", "images_per_s", "byol_term", "nce_term",
                                          "warp_acc"):
                                    if k in row:
                                        writer.add_scalar(f"train/{k}", row[k], trainer.step)
                            if step_hook is not None:
                                step_hook(trainer.step, row["loss"])
                        # The hook may have sent a signal; look again.
                        stop_now = stop_now or stop.requested
                    done_epoch = s == steps_per_epoch - 1
                    if stop_now:
                        check_finite()
                        nxt = (epoch + 1, 0) if done_epoch else (epoch, s + 1)
                        save(*nxt)
                        interrupted = True
                        break
                    if done_epoch or (cfg["save_every"] and trainer.step % cfg["save_every"] == 0):
                        check_finite()
                        save(*((epoch + 1, 0) if done_epoch else (epoch, s + 1)))
                        last_good_step = trainer.step
                if progress is not None:
                    progress.close()
                    progress = None
                if interrupted:
                    break
        finally:
            if progress is not None:
                progress.close()
            if writer is not None:
                writer.close()
    result.update(status="interrupted" if interrupted else "done", step=trainer.step,
                  total_steps=trainer.total_steps, checkpoint=ckpt_path, config=cfg)
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console entry point: 0 when done, 130 when stopped by Ctrl-C (resumable),
    2 on a bad config or checkpoint, 3 when the loss diverged."""
    try:
        cfg, explicit = config_from_args(argv)
    except SystemExit as e:  # argparse already printed the message
        return int(e.code or 0)
    try:
        result = train(cfg, explicit)
    except (ConfigError, ckpt.CheckpointError) as e:
        print(f"cwarp-train: error: {e}", file=sys.stderr)
        return 2
    except TrainingDiverged as e:
        print(str(e), file=sys.stderr)
        return 3
    finally:
        cdist.cleanup()
    if result["status"] == "interrupted":
        print(f"cwarp-train: interrupted at step {result['step']}/{result['total_steps']}; checkpoint saved to "
              f"{result['checkpoint']}. Continue with the same command plus --resume.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())


def compact_arch() -> str:
    """The CPU-friendly backbone of cwarp.train.models.ARCHS (the first that is not a torchvision ResNet)."""
    from cwarp.train.models import ARCHS

    for a in ARCHS:
        if not a.startswith("resnet"):
            return a
    return "resnet18"
