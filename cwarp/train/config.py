"""cwarp-train's settings: frozen dataclasses, one validation, the parser, config files.

A run's config is a ``RunConfig`` of seven groups (data, optimisation, BYOL,
negatives, views, bookkeeping, evaluation) plus the method, backbone, seed, device and
precision. Every field carries its command-line help, so ``build_parser``
derives the whole ``cwarp-train`` parser from the dataclasses, and
``validate`` is the one place that checks values. Checkpoints and
``RUN_DIR/config.json`` hold the flat form (``RunConfig.to_flat``: one key per
field, which the probe reads); ``migrate`` turns any saved flat config, old
ones included, back into a RunConfig.

This module imports neither torch nor torchvision, so that ``cwarp-train
--help`` stays fast.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Set, Tuple

from cwarp._cli import arch_expected, arch_type, is_arch
from cwarp._constants import (ARCHS, FORMATS, KNN_K, KNN_TEMPERATURE, LABELLED_FORMATS, NEGATIVE_KINDS,
                              SYNTHETIC_FORMATS, TIMM_PREFIX, UNLABELLED_FORMATS, WARP_CENTERS,
                              WARP_KINDS)

__all__ = ["RunConfig", "DataConfig", "OptimConfig", "ByolConfig", "NegativesConfig", "ViewsConfig",
           "BookkeepingConfig", "EvalConfig", "ConfigError", "METHODS", "FORMATS", "ARCHS", "PRECISIONS", "OPTIMIZERS",
           "NEGATIVE_NETWORKS", "NCE_PREDICTIONS", "WARP_KINDS", "WARP_CENTERS", "NEGATIVE_KINDS", "MEMORY_FORMATS",
           "EVAL_FORMATS", "DEFAULTS", "METHOD_DEFAULTS", "defaults_for", "FORMER_DEFAULTS", "RESUME_MUTABLE",
           "CONFIG_VERSION", "DECODE_DEVICES", "default_workers",
           "build_parser", "parse_command_line", "config_from_argv", "load_config_file", "validate", "migrate",
           "run_differences", "config_differences", "compact_arch", "resolve_arch", "write_config_files"]

METHODS = ("contrawarp", "byol", "supervised")
OPTIMIZERS = ("lars", "sgd", "adamw")
DEVICES = ("cpu", "cuda")
# Where streamed JPEGs are decoded: in the DataLoader workers (libjpeg-turbo) or on the training GPU (nvJPEG).
DECODE_DEVICES = ("cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")
NEGATIVE_NETWORKS = ("target", "online")
# Which predictions the warped negatives (copies of view 2) score against: only
# p1 -> z2, whose positive they differ from by the local warps alone, or both
# (also p2 -> z1, where they share the anchor's own global view, so p2 beats
# them without seeing any warp).
NCE_PREDICTIONS = ("p1", "both")
MEMORY_FORMATS = ("auto", "contiguous", "channels_last")
AUTO_ARCH = "auto"
# What --eval-format reads: the formats with labels.
EVAL_FORMATS = LABELLED_FORMATS
# The version of the flat config written into checkpoints and config.json.
# 3: "workers" became DataLoader worker processes; the CPU threads it meant before are "threads".
# 4: the fields of ADDED_IN_4 (controls and cheaper steps).
CONFIG_VERSION = 4


class ConfigError(ValueError):
    """A bad command-line, config-file or checkpoint-config value; the message names the option."""


def _opt(default, help: str, **flag) -> Any:
    """A config field with its command-line help and argparse settings (type, choices, metavar, action)."""
    if isinstance(default, (list, tuple)):
        return field(default=tuple(default), metadata=dict(help=help, **flag))
    return field(default=default, metadata=dict(help=help, **flag))


def parse_pair(text: str) -> Tuple[float, float]:
    """argparse type: 'MIN,MAX' as two floats (their rules are checked by validate)."""
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two numbers 'MIN,MAX', got {text!r}") from None
    return (lo, hi)


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _kind(annotation: str) -> str:
    """The value kind of a field's (string) annotation: pair, bool, int, float or str."""
    for kind, word in (("pair", "Tuple"), ("bool", "bool"), ("int", "int"), ("float", "float")):
        if word in annotation:
            return kind
    return "str"


PAIR = dict(type=parse_pair, metavar="MIN,MAX")


@dataclass(frozen=True)
class DataConfig:
    data: Optional[str] = _opt(None, "data path (synthetic: a cache folder, or omit)")
    format: str = _opt("synthetic", "data set format", choices=FORMATS)
    image_size: int = _opt(64, "side of the square training views, in pixels", type=int)
    num_train: Optional[int] = _opt(None, "training images (synthetic: how many faces to render; else a seeded "
                                          "subset; default: all)", type=int)
    data_seed: int = _opt(0, "seed of the data set (not of training)", type=int)
    threads: int = _opt(0, "CPU threads of each training process (0: torch's default)", type=int)
    workers: Optional[int] = _opt(None, "DataLoader worker processes that decode streamed images (folder, list, "
                                        "webdataset, and labelled sets too large for memory); 0: decode in the "
                                        "training process; default: one per CPU core of this process's share of "
                                        "the machine, at most 8", type=int, metavar="N")
    decode_device: str = _opt("cpu", "where streamed JPEGs are decoded: cpu (libjpeg-turbo, in the workers) or cuda "
                                     "(nvJPEG on the training GPU; needs --device cuda)", choices=DECODE_DEVICES)
    skip_corrupt: bool = _opt(False, "skip unreadable images with one warning instead of stopping",
                              action="store_true")
    # Set by the trainer from the data set; saved for the probe.
    in_channels: Optional[int] = field(default=None, metadata=dict(derived=True))


@dataclass(frozen=True)
class OptimConfig:
    epochs: int = _opt(20, "passes over the training set", type=int)
    batch_size: int = _opt(128, "global batch size (all processes)", type=int)
    optimizer: str = _opt("adamw", "optimizer", choices=OPTIMIZERS)
    lr: float = _opt(2e-3, "peak learning rate", type=float)
    weight_decay: float = _opt(1e-4, "weight decay", type=float)
    momentum: float = _opt(0.9, "SGD/LARS momentum", type=float)
    warmup_epochs: float = _opt(2.0, "linear warm-up of the learning rate, in epochs", type=float)
    final_lr_ratio: float = _opt(0.0, "final learning rate of the cosine schedule, as a fraction of --lr", type=float)


@dataclass(frozen=True)
class ByolConfig:
    base_momentum: float = _opt(0.99, "EMA momentum of the target network at step 0 (rises to 1)", type=float)
    proj_dim: int = _opt(128, "projector output size", type=int)
    hidden_dim: int = _opt(1024, "hidden size of the projector and predictor", type=int)
    head_bn: bool = _opt(True, "BatchNorm in the projector and predictor (true/false)", type=_bool)
    sync_bn: bool = _opt(False, "SyncBatchNorm across processes (CUDA only)", action="store_true")


@dataclass(frozen=True)
class NegativesConfig:
    num_negatives: int = _opt(2, "warped negatives per image (contrawarp)", type=int)
    warps_per_negative: int = _opt(4, "local warps in each negative", type=int)
    warp_magnitude: Tuple[float, float] = _opt(
        (0.15, 0.3), "displacement |d| of each local warp, in view units (2 = the view's width); a translate warp "
                      "moves content by at most m (r^2 / (r^2 + m^2))^2 <= 0.325 r, so beyond r / sqrt(3) a larger "
                      "m moves it less: raise --warp-radius for larger warps", **PAIR)
    warp_radius: Tuple[float, float] = _opt((0.4, 0.6), "radius r of each local warp, in view units", **PAIR)
    warp_kind: str = _opt("translate", "the local warp's weight (docs/api.md): translate moves content inside a disc "
                                       "and folds at its trailing rim unless |d| >~ 0.6 r; gaussian moves content by "
                                       "up to |d| with a smooth fall-off and does not fold below |d| = 1.65 r",
                          choices=WARP_KINDS)
    tau: float = _opt(0.2, "InfoNCE temperature", type=float)
    byol_weight: float = _opt(1.0, "weight of the BYOL term", type=float)
    nce_weight: float = _opt(1.0, "weight of the InfoNCE term", type=float)
    in_batch: bool = _opt(False, "also use the other images' positives as negatives (gathered over ranks)",
                          action="store_true")
    negatives_through: str = _opt(
        "online", "which network embeds the warped negatives: the EMA target (no gradient) or the online "
                  "backbone+projector (with gradient; the InfoNCE's positive is then the online projection of the "
                  "other view too, so that only the warps tell them apart)", choices=NEGATIVE_NETWORKS)
    nce_on: str = _opt(
        "p1", "which predictions meet the warped negatives (copies of view 2): p1 alone, whose positive (view 2's "
              "target) they differ from by the local warps only, or both halves of the symmetric loss (p2 beats "
              "copies of its own view without seeing a warp)", choices=NCE_PREDICTIONS)
    warp_centers: str = _opt(
        "landmarks", "where the local warps sit: on the face's landmarks (the data set's, else the canonical five), "
                     "or uniform over the whole view (a control: warps away from where the expression is)",
        choices=WARP_CENTERS)
    negative_kind: str = _opt(
        "local", "how a negative differs from view 2: local warps, or one global similarity transform (rotation "
                 "within 10 degrees, scale within 10 %%, a shift of --warp-magnitude; a control: a change of the "
                 "whole view instead of the face's local geometry)", choices=NEGATIVE_KINDS)
    detach_negatives: bool = _opt(
        False, "with --negatives-through online: embed the negatives without gradient (their BatchNorm layers "
               "normalize with the views' batch statistics, so that only the warps tell them from view 2); the "
               "anchor and its positive keep theirs: a cheaper step (true/false)", type=_bool)
    negative_anchors: float = _opt(
        1.0, "fraction of each batch's anchors that get warped negatives (the first of the shuffled batch); the "
             "BYOL term keeps every anchor: a cheaper step", type=float)


@dataclass(frozen=True)
class ViewsConfig:
    crop_scale: Tuple[float, float] = _opt((0.8, 1.0), "random resized crop: fraction of the image area", **PAIR)
    rotation: float = _opt(5.0, "random rotation in [-DEG, DEG] degrees", type=float, metavar="DEG")
    jitter_strength: float = _opt(0.5, "colour jitter: brightness/contrast S*0.4, saturation S*0.2, hue S*0.1 "
                                       "(0: none)", type=float, metavar="S")
    grayscale_p: float = _opt(0.2, "probability of a grayscale view", type=float)
    # Set by the trainer from ContraWarpAugment; the probe normalizes with them.
    mean: Optional[Tuple[float, ...]] = field(default=None, metadata=dict(derived=True))
    std: Optional[Tuple[float, ...]] = field(default=None, metadata=dict(derived=True))


@dataclass(frozen=True)
class BookkeepingConfig:
    out: Optional[str] = _opt(None, "run folder (required; here or in --config)")
    resume: bool = _opt(False, "continue the checkpoint in --out exactly where it stopped", action="store_true")
    log_every: int = _opt(10, "write a log.jsonl row every K steps", type=int)
    save_every: int = _opt(0, "also checkpoint every K steps (0: at the end of each epoch only)", type=int)
    max_steps: int = _opt(0, "stop after step N with a checkpoint, exit 0 (0: run every epoch); the schedule still "
                             "spans --epochs, so --resume with a larger N (or 0) continues the same run",
                          type=int, metavar="N")
    progress: bool = _opt(True, "show a progress bar (true/false)", type=_bool)
    tensorboard: bool = _opt(False, "also log to RUN/tb for TensorBoard", action="store_true")


@dataclass(frozen=True)
class EvalConfig:
    """The online evaluation (cwarp.train.monitor): watching a run learn, without changing what it trains.

    Default sizes: 1,000 held-out images put a kNN accuracy's binomial
    standard error near one point; a 2,000-image bank gives each of 7
    classes about 300 candidates, well above k = 20. The k and temperature
    are cwarp-probe's, so the online figure tracks the final probe's kNN.
    """
    eval_every: int = _opt(0, "every N steps and at the last one, score the online backbone by kNN on held-out "
                              "labelled images and log knn_acc (0: never)", type=int, metavar="N")
    eval_size: int = _opt(1000, "held-out images scored: the validation split (synthetic, fer2013 PublicTest, "
                                "imagefolder val/), else training-split images outside --num-train (with "
                                "--eval-data: outside the bank); never the test split", type=int, metavar="N")
    eval_bank: int = _opt(2000, "training images (a fixed subset drawn with --data-seed; with --eval-data, of its "
                                "train split) whose features the held-out ones are matched against", type=int,
                          metavar="N")
    eval_knn_k: int = _opt(KNN_K, "neighbours that vote", type=int, metavar="K")
    eval_knn_temperature: float = _opt(KNN_TEMPERATURE, "each neighbour's vote is exp(cosine similarity / T)",
                                       type=float, metavar="T")
    eval_linear: bool = _opt(False, "also fit cwarp-probe's linear probe on the bank and log linear_acc (slower)",
                             action="store_true")
    eval_data: Optional[str] = _opt(None, "evaluate on this labelled set instead of the training set (e.g. RAF-DB "
                                          "while pretraining on unlabelled faces): its train split gives the bank, "
                                          "its validation split the held-out images (without one: train images "
                                          "outside the bank); its test split is never read; needs --eval-format",
                                    metavar="PATH")
    eval_format: Optional[str] = _opt(None, "format of --eval-data (synthetic needs no --eval-data)",
                                      choices=EVAL_FORMATS)


GROUPS = {"data": DataConfig, "optimisation": OptimConfig, "BYOL": ByolConfig, "negatives": NegativesConfig,
          "views": ViewsConfig, "bookkeeping": BookkeepingConfig, "evaluation": EvalConfig}


@dataclass(frozen=True)
class RunConfig:
    method: str = _opt("contrawarp", "what to train: contrawarp (BYOL + warped negatives), byol (no negatives) "
                                     "or supervised (the labels, same backbone and budget)", choices=METHODS)
    arch: str = _opt(AUTO_ARCH, f"backbone: {', '.join((AUTO_ARCH,) + ARCHS)} or {TIMM_PREFIX}NAME; auto: "
                                f"convnet-small on the CPU, resnet18 on CUDA; {TIMM_PREFIX}NAME: timm's model NAME, "
                                f"untrained, its pooled features (pip install 'cwarp[timm]'; names: python -c "
                                f"\"import timm; print(timm.list_models())\")",
                     type=arch_type((AUTO_ARCH,) + ARCHS), metavar="ARCH")
    seed: int = _opt(0, "seed of the weights, the sampler and the views", type=int)
    device: str = _opt("cpu", "training device", choices=DEVICES)
    precision: str = _opt("auto", "autocast dtype of the networks; auto: bf16 on CUDA, fp32 on the CPU (bf16 "
                                  "there is opt-in)", choices=PRECISIONS)
    memory_format: str = _opt("auto", "layout of the networks' weights and inputs; auto: channels_last on CUDA, "
                                      "contiguous on the CPU", choices=MEMORY_FORMATS)
    compile: bool = _opt(False, "torch.compile the backbones (online and target) before the first step "
                                "(true/false)", type=_bool)
    reuse_freed_memory: bool = _opt(True, "keep host memory freed by a step for the next one instead of returning "
                                          "it to the OS, which makes every CPU step fault its buffers in anew "
                                          "(glibc's malloc; elsewhere no effect) (true/false)", type=_bool)
    data: DataConfig = field(default_factory=DataConfig)
    optimisation: OptimConfig = field(default_factory=OptimConfig)
    byol: ByolConfig = field(default_factory=ByolConfig)
    negatives: NegativesConfig = field(default_factory=NegativesConfig)
    views: ViewsConfig = field(default_factory=ViewsConfig)
    bookkeeping: BookkeepingConfig = field(default_factory=BookkeepingConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)

    def to_flat(self) -> Dict[str, Any]:
        """One key per field (lists for pairs), with config_version: what checkpoints and config.json hold."""
        flat = {f.name: getattr(self, f.name) for f in _TOP_FIELDS}
        for attr, _ in _GROUP_ATTRS:
            group = getattr(self, attr)
            flat.update({f.name: getattr(group, f.name) for f in dataclasses.fields(group)})
        flat = {k: list(v) if isinstance(v, tuple) else v for k, v in flat.items()}
        flat["config_version"] = CONFIG_VERSION
        return flat

    @classmethod
    def from_flat(cls, flat: Mapping[str, Any]) -> "RunConfig":
        """The RunConfig of a flat dict of known fields (missing ones take their defaults)."""
        unknown = sorted(set(flat) - set(FIELD_GROUP) - {"config_version"})
        if unknown:
            raise ConfigError(f"unknown config key(s) {unknown}; known keys are the cwarp-train options "
                              f"with '_' for '-'")
        norm = {k: tuple(v) if isinstance(v, list) else v for k, v in flat.items() if k != "config_version"}
        groups = {attr: klass(**{f.name: norm[f.name] for f in dataclasses.fields(klass) if f.name in norm})
                  for attr, klass in _GROUP_ATTRS}
        return cls(**{f.name: norm[f.name] for f in _TOP_FIELDS if f.name in norm}, **groups)

    def replace(self, **changes) -> "RunConfig":
        """A copy with the given flat fields changed (e.g. ``cfg.replace(lr=0.1, num_negatives=0)``)."""
        return RunConfig.from_flat({**self.to_flat(), **changes})

    # Shortcuts for the fields read everywhere.
    @property
    def out(self) -> Optional[str]:
        return self.bookkeeping.out

    @property
    def image_size(self) -> int:
        return self.data.image_size


# (RunConfig attribute, group class), in GROUPS' order.
_GROUP_ATTRS = [("data", DataConfig), ("optimisation", OptimConfig), ("byol", ByolConfig),
                ("negatives", NegativesConfig), ("views", ViewsConfig), ("bookkeeping", BookkeepingConfig),
                ("evaluation", EvalConfig)]
_TOP_FIELDS = [f for f in dataclasses.fields(RunConfig) if f.name not in dict(_GROUP_ATTRS)]
# flat field name -> group attribute ("" for the top level)
FIELD_GROUP: Dict[str, str] = {f.name: "" for f in _TOP_FIELDS}
FIELD_GROUP.update({f.name: attr for attr, klass in _GROUP_ATTRS for f in dataclasses.fields(klass)})
FIELD_KIND: Dict[str, str] = {f.name: _kind(str(f.type)) for f in _TOP_FIELDS}
FIELD_KIND.update({f.name: _kind(str(f.type)) for _, klass in _GROUP_ATTRS for f in dataclasses.fields(klass)})
DERIVED = {f.name for _, klass in _GROUP_ATTRS for f in dataclasses.fields(klass) if f.metadata.get("derived")}

# The default recipe, flat: ContraWarping's.
DEFAULTS: Dict[str, Any] = {k: v for k, v in RunConfig().to_flat().items() if k != "config_version"}

# Where another method's recipe differs from DEFAULTS: each method gets the
# global views it learns best from (docs/experiments.md, "The recipe at the
# demo's budget"). BYOL keeps the strong views: with mild ones its two views
# agree on identity alone. The labels learn best from the faces as they are,
# flipped at most.
METHOD_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "contrawarp": {},
    "byol": {"crop_scale": (0.5, 1.0), "rotation": 10.0, "jitter_strength": 1.0},
    "supervised": {"crop_scale": (1.0, 1.0), "rotation": 0.0, "jitter_strength": 0.0, "grayscale_p": 0.0},
}


def defaults_for(method: str) -> Dict[str, Any]:
    """The flat defaults of one method's recipe: DEFAULTS with its METHOD_DEFAULTS."""
    return {**DEFAULTS, **METHOD_DEFAULTS.get(method, {})}


# Fields whose default changed: a saved config without them ran with these values.
FORMER_DEFAULTS: Dict[str, Any] = {"nce_on": "both", "negatives_through": "target", "crop_scale": (0.5, 1.0),
                                   "rotation": 10.0, "jitter_strength": 1.0, "warp_radius": (0.15, 0.35),
                                   "warp_magnitude": (0.05, 0.15)}

# Fields added in config_version 4, with the value every run before them had: a saved config of an
# earlier version ran with these, whatever today's defaults are.
ADDED_IN_4: Dict[str, Any] = {"warp_centers": "landmarks", "negative_kind": "local", "detach_negatives": False,
                              "negative_anchors": 1.0, "memory_format": "auto", "compile": False}

# Fields a resumed run may change; every other field must match the checkpoint.
RESUME_MUTABLE = {"device", "precision", "reuse_freed_memory", "resume", "threads", "workers", "decode_device",
                  "log_every", "save_every", "max_steps", "progress", "tensorboard", "out", "data", "skip_corrupt",
                  *(f.name for f in dataclasses.fields(EvalConfig))}


def compact_arch() -> str:
    """The CPU-friendly backbone: what --arch auto picks on the CPU."""
    return "convnet-small"


def default_workers() -> int:
    """--workers' default: one loader process per CPU core of this process's share of the machine (the cores
    it may run on, divided among torchrun's processes on this node), at least 1, at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, min(8, cores // local))


def resolve_arch(arch: str, device: str) -> str:
    """--arch auto is convnet-small on the CPU and resnet18 on CUDA; other values stay."""
    if arch != AUTO_ARCH:
        return arch
    return "resnet18" if device == "cuda" else compact_arch()


# ------------------------------------------------------------------ the parser

HELP = """BYOL pretraining with ContraWarping negatives: writes RUN/checkpoint.pt, RUN/config.json, RUN/config.toml
(which --config loads) and RUN/log.jsonl.

    cwarp-train --format synthetic --method contrawarp --out runs/cw
    cwarp-train --config runs/cw/config.toml --out runs/cw2 --lr 0.001
    cwarp-train --out runs/cw --resume

Exit status: 0 done (or stopped at --max-steps), 2 bad input, 3 the loss diverged, 4 the run folder could not be
written (a full disk, no permission: one line names the file; the last checkpoint is kept), 130 stopped by Ctrl-C
or SIGTERM (the first one saves a checkpoint that --resume continues; a second Ctrl-C quits at once).
"""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _text(value: Any) -> str:
    """A default as the command line writes it: tuples comma-separated, floats
    as short as they stay exact (0.8,1 rather than 0.8,1.0)."""
    if isinstance(value, tuple):
        return ",".join(_text(x) for x in value)
    if isinstance(value, float):
        short = f"{value:g}"
        return short if float(short) == value else repr(value)
    return str(value)


def _add_field(group, f: dataclasses.Field, suppress: bool) -> None:
    meta = dict(f.metadata)
    kw = {k: meta[k] for k in ("type", "choices", "metavar", "action") if k in meta}
    default = _text(f.default) if isinstance(f.default, tuple) else f.default
    others = [f"--method {m}: {_text(d[f.name])}" for m, d in METHOD_DEFAULTS.items() if f.name in d]
    help_text = meta["help"] + (f" ({'; '.join(others)}; otherwise the default below)" if others else "")
    group.add_argument(_flag(f.name), dest=f.name, help=help_text,
                       default=argparse.SUPPRESS if suppress else default, **kw)


def build_parser(suppress_defaults: bool = False) -> argparse.ArgumentParser:
    """The cwarp-train parser, built from the dataclasses' fields. With
    suppress_defaults, only options given on the command line appear in the
    namespace (which is how explicit values are told from defaults)."""
    from cwarp._cli import Parser

    p = Parser("cwarp-train", HELP)
    p.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS if suppress_defaults else None,
                   help="load settings from a TOML or YAML file, or a run's saved config.json/config.toml; "
                        "options given on the command line override it")
    for f in _TOP_FIELDS:
        _add_field(p, f, suppress_defaults)
    for title, klass in GROUPS.items():
        g = p.add_argument_group(title)
        for f in dataclasses.fields(klass):
            if not f.metadata.get("derived"):
                _add_field(g, f, suppress_defaults)
    return p


def _pairs_to_tuples(values: Dict[str, Any]) -> Dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def parse_command_line(argv: Optional[Sequence[str]] = None) -> Tuple[RunConfig, Set[str]]:
    """(the RunConfig of argv and its --config file, unvalidated; the fields set explicitly).

    Defaults < the config file < flags. argparse errors exit with status 2
    (SystemExit); a bad config file raises ConfigError.
    """
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    build_parser().parse_args(argv)   # --help (defaults shown) and argparse's own errors
    given = vars(build_parser(suppress_defaults=True).parse_args(argv))
    path = given.pop("config", None)
    from_file = load_config_file(path) if path else {}
    method = given.get("method", from_file.get("method", DEFAULTS["method"]))
    flat = {**defaults_for(method), **from_file, **_pairs_to_tuples(given)}
    return RunConfig.from_flat(flat), set(from_file) | set(given)


def config_from_argv(argv: Sequence[str]) -> RunConfig:
    """The validated RunConfig of cwarp-train arguments (for scripts that build a Trainer themselves)."""
    return validate(parse_command_line(argv)[0])


# ---------------------------------------------------------------- config files

def _read_mapping(path: str) -> Dict[str, Any]:
    ext = os.path.splitext(path)[1].lower()
    with open(path, "rb") as f:
        raw = f.read()
    if ext == ".json":
        return json.loads(raw.decode("utf-8"))
    if ext in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ConfigError(f"--config {path}: reading YAML needs PyYAML, which is not installed; "
                              f"use a .toml file") from None
        return yaml.safe_load(raw.decode("utf-8")) or {}
    if ext == ".toml":
        import tomllib
        return tomllib.loads(raw.decode("utf-8"))
    raise ConfigError(f"--config {path}: expected a .toml, .yaml, .yml or .json file")


def _flatten_sections(path: str, mapping: Mapping[str, Any]) -> Dict[str, Any]:
    """Top-level keys and [group] sections (any of GROUPS' names) into one flat dict."""
    sections = {name.lower(): name for name in GROUPS}
    flat: Dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, dict) and key.lower() in sections:
            for k, v in value.items():
                flat[k.replace("-", "_")] = v
        else:
            flat[key.replace("-", "_")] = value
    return flat


def load_config_file(path: str) -> Dict[str, Any]:
    """The flat settings of a TOML/YAML/JSON config file (keys as the options, '_' or '-'; fields may sit in
    [data], [optimisation], [BYOL], [negatives], [views], [bookkeeping] and [evaluation] sections).

    A run's saved config.json / config.toml loads too: what the trainer derived
    (in_channels, mean, std) and ``resume`` are left out, and one from an older
    version is migrated. Raises ConfigError naming the file.
    """
    try:
        mapping = _read_mapping(path)
    except OSError as e:
        raise ConfigError(f"--config {path}: cannot read it: {e.strerror or e}") from None
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001  (each parser raises its own error type)
        raise ConfigError(f"--config {path}: not valid {os.path.splitext(path)[1][1:].upper()}: "
                          f"{' '.join(str(e).split())}") from None
    if not isinstance(mapping, dict):
        raise ConfigError(f"--config {path}: expected a table of settings, got a {type(mapping).__name__}")
    flat = _flatten_sections(path, mapping)
    if "in_channels" in flat or "config_version" in flat:   # a run's saved config
        flat = _upgrade(flat)
    flat = {k: v for k, v in flat.items() if k not in DERIVED and k not in ("resume", "config_version")}
    unknown = sorted(set(flat) - set(FIELD_GROUP))
    if unknown:
        raise ConfigError(f"--config {path}: unknown setting(s) {unknown}; settings are the cwarp-train options "
                          f"(e.g. lr, num_negatives)")
    return _pairs_to_tuples(flat)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v))


def replace_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: a
    failed write (a full disk) leaves the old file or none, never a cut one,
    and raises OSError naming ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}-", suffix=".tmp", dir=folder)
    except OSError as err:
        raise OSError(err.errno, err.strerror, path) from err
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(err, OSError):
            raise OSError(err.errno, err.strerror, path) from err
        raise


def write_config_files(cfg: "RunConfig", folder: str) -> Tuple[str, str]:
    """RUN/config.json (flat, with what the trainer derived) and RUN/config.toml
    (the settings by group, for --config), each written whole or not at all
    (replace_text); returns both paths."""
    os.makedirs(folder, exist_ok=True)
    json_path, toml_path = os.path.join(folder, "config.json"), os.path.join(folder, "config.toml")
    replace_text(json_path, json.dumps(cfg.to_flat(), indent=2, sort_keys=True))
    lines = ["# cwarp-train settings of this run; load with: cwarp-train --config config.toml",
             f"config_version = {CONFIG_VERSION}"]
    lines += [f"{f.name} = {_toml_value(getattr(cfg, f.name))}" for f in _TOP_FIELDS]
    for (attr, klass), title in zip(_GROUP_ATTRS, GROUPS):
        group = getattr(cfg, attr)
        lines.append(f"\n[{title}]")
        lines += [f"{f.name} = {_toml_value(getattr(group, f.name))}" for f in dataclasses.fields(klass)
                  if getattr(group, f.name) is not None and f.name != "resume"]
    replace_text(toml_path, "\n".join(lines) + "\n")
    return json_path, toml_path


# ------------------------------------------------------------------ validation

def _kind_ok(kind: str, value: Any) -> bool:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "pair":
        return isinstance(value, (list, tuple)) and len(value) == 2 and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in value)
    return {"bool": isinstance(value, bool), "int": number and isinstance(value, int), "float": number,
            "str": isinstance(value, str)}[kind]


def _check_types(flat: Mapping[str, Any]) -> None:
    """Config files give any JSON/TOML/YAML value: each must have its field's type."""
    for name, value in flat.items():
        if name in DERIVED or value is None:
            continue
        kind = FIELD_KIND[name]
        if not _kind_ok(kind, value):
            raise ConfigError(f"{_flag(name)}: expected {'MIN,MAX' if kind == 'pair' else kind}, got {value!r}")


def _value_checks(c: Dict[str, Any]) -> Iterable[Tuple[bool, str, str]]:
    """(ok, field, what was expected) for every rule on one field."""
    yield c["method"] in METHODS, "method", f"expected one of {METHODS}"
    yield c["format"] in FORMATS, "format", f"expected one of {FORMATS}"
    yield c["precision"] in PRECISIONS, "precision", f"expected one of {PRECISIONS}"
    yield c["device"] in DEVICES, "device", f"expected one of {DEVICES}"
    yield c["optimizer"] in OPTIMIZERS, "optimizer", f"expected one of {OPTIMIZERS}"
    yield c["negatives_through"] in NEGATIVE_NETWORKS, "negatives_through", f"expected one of {NEGATIVE_NETWORKS}"
    yield c["nce_on"] in NCE_PREDICTIONS, "nce_on", f"expected one of {NCE_PREDICTIONS}"
    yield c["warp_kind"] in WARP_KINDS, "warp_kind", f"expected one of {WARP_KINDS}"
    yield c["warp_centers"] in WARP_CENTERS, "warp_centers", f"expected one of {WARP_CENTERS}"
    yield c["negative_kind"] in NEGATIVE_KINDS, "negative_kind", f"expected one of {NEGATIVE_KINDS}"
    yield c["memory_format"] in MEMORY_FORMATS, "memory_format", f"expected one of {MEMORY_FORMATS}"
    yield (math.isfinite(c["negative_anchors"]) and 0 < c["negative_anchors"] <= 1, "negative_anchors",
           "expected a fraction in (0, 1]")
    yield is_arch(c["arch"], (AUTO_ARCH,) + ARCHS), "arch", arch_expected((AUTO_ARCH,) + ARCHS)
    yield c["image_size"] >= 16, "image_size", "expected >= 16"
    yield c["epochs"] >= 1, "epochs", "expected >= 1"
    yield c["batch_size"] >= 2, "batch_size", "expected >= 2 (BatchNorm needs two samples)"
    yield c["num_train"] is None or c["num_train"] >= 1, "num_train", "expected >= 1"
    yield c["threads"] >= 0, "threads", "expected >= 0 (0: torch's default)"
    yield c["workers"] is None or c["workers"] >= 0, "workers", "expected >= 0 (0: decode in the training process)"
    yield c["decode_device"] in DECODE_DEVICES, "decode_device", f"expected one of {DECODE_DEVICES}"
    yield c["max_steps"] >= 0, "max_steps", "expected >= 0 (0: no limit)"
    yield math.isfinite(c["lr"]) and c["lr"] > 0, "lr", "expected a finite number > 0"
    yield math.isfinite(c["weight_decay"]) and c["weight_decay"] >= 0, "weight_decay", "expected >= 0"
    yield 0 <= c["momentum"] < 1, "momentum", "expected in [0, 1)"
    yield c["warmup_epochs"] >= 0, "warmup_epochs", "expected >= 0"
    yield 0 <= c["final_lr_ratio"] <= 1, "final_lr_ratio", "expected in [0, 1]"
    yield 0 <= c["base_momentum"] <= 1, "base_momentum", "expected in [0, 1]"
    yield c["proj_dim"] >= 1, "proj_dim", "expected >= 1"
    yield c["hidden_dim"] >= 1, "hidden_dim", "expected >= 1"
    yield c["num_negatives"] >= 0, "num_negatives", "expected >= 0"
    yield c["warps_per_negative"] >= 1, "warps_per_negative", "expected >= 1"
    yield 0 <= c["rotation"] <= 180, "rotation", "expected degrees in [0, 180]"
    yield 0 <= c["jitter_strength"] <= 5, "jitter_strength", "expected in [0, 5] (hue S*0.1 must stay <= 0.5)"
    yield 0 <= c["grayscale_p"] <= 1, "grayscale_p", "expected a probability in [0, 1]"
    yield math.isfinite(c["tau"]) and c["tau"] > 0, "tau", "expected > 0"
    yield c["byol_weight"] >= 0, "byol_weight", "expected >= 0"
    yield c["nce_weight"] >= 0, "nce_weight", "expected >= 0"
    yield c["log_every"] >= 1, "log_every", "expected >= 1"
    yield c["save_every"] >= 0, "save_every", "expected >= 0"
    yield c["eval_every"] >= 0, "eval_every", "expected >= 0 (0: no online evaluation)"
    yield c["eval_size"] >= 1, "eval_size", "expected >= 1"
    yield c["eval_bank"] >= 1, "eval_bank", "expected >= 1"
    yield 1 <= c["eval_knn_k"] <= c["eval_bank"], "eval_knn_k", f"expected in [1, --eval-bank = {c['eval_bank']}]"
    yield (math.isfinite(c["eval_knn_temperature"]) and c["eval_knn_temperature"] > 0, "eval_knn_temperature",
           "expected a finite number > 0")
    yield c["eval_format"] is None or c["eval_format"] in EVAL_FORMATS, "eval_format", \
        f"expected one of {EVAL_FORMATS}"


# The (min, max) fields and their bounds, checked by cwarp.ops._checks.check_range, the check that
# ContraWarpAugment applies to the same values.
RANGE_RULES: Dict[str, Dict[str, Any]] = {
    "warp_magnitude": dict(low=0.0),
    "warp_radius": dict(low=0.0, low_open=True),
    "crop_scale": dict(low=0.0, high=1.0),
}


def _check_ranges(c: Mapping[str, Any]) -> None:
    from cwarp.ops._checks import check_range

    for name, bounds in RANGE_RULES.items():
        try:
            check_range(_flag(name), None, c[name], scalar="pair", **bounds)
        except ValueError as err:
            raise ConfigError(str(err)) from None


def _resolve_method(c: Dict[str, Any]) -> None:
    """Method-specific rules and the fields each method fixes (in place)."""
    if c["method"] == "supervised":
        # Cross-entropy on view 1: no negatives, no BYOL or InfoNCE terms.
        if c["in_batch"]:
            raise ConfigError("--in-batch: --method supervised has no contrastive loss to take in-batch keys")
        if c["negatives_through"] != DEFAULTS["negatives_through"]:
            raise ConfigError(f"--negatives-through: --method supervised has no warped negatives, got "
                              f"{c['negatives_through']!r}")
        c["num_negatives"] = 0
        return
    if c["method"] == "byol":
        c["num_negatives"] = 0   # the baseline: the same pipeline with no warped negatives
    elif c["num_negatives"] == 0:
        raise ConfigError("--num-negatives: --method contrawarp needs at least one warped negative, got 0 "
                          "(use --method byol for the baseline)")
    if c["detach_negatives"] and c["negatives_through"] != "online":
        raise ConfigError("--detach-negatives: only with --negatives-through online (the target embeds them "
                          "without gradient already)")
    if c["negative_anchors"] < 1 and c["in_batch"]:
        raise ConfigError(f"--negative-anchors: --in-batch takes every anchor's positive as a key; drop one of "
                          f"them, got --negative-anchors {c['negative_anchors']!r}")
    if c["num_negatives"] == 0 and not c["in_batch"]:
        c["nce_weight"] = 0.0   # InfoNCE with the positive alone is identically 0
    if c["byol_weight"] == 0 and c["nce_weight"] == 0:
        raise ConfigError("--byol-weight/--nce-weight: the loss would be 0; give one of them a weight > 0")


def _check_evaluation_set(c: Mapping[str, Any]) -> None:
    """--eval-data and --eval-format name a labelled set apart from the training set, or are both unset."""
    fmt, path = c["eval_format"], c["eval_data"]
    if fmt is None:
        if path is not None:
            raise ConfigError(f"--eval-data: give its format with --eval-format (one of {', '.join(EVAL_FORMATS)})")
        if c["eval_every"] and c["format"] in UNLABELLED_FORMATS:
            raise ConfigError(f"--eval-every: --format {c['format']} has no labels to score; score a labelled set "
                              f"with --eval-data PATH --eval-format FORMAT, or pass --eval-every 0")
        return
    if path is None and fmt not in SYNTHETIC_FORMATS:
        raise ConfigError(f"--eval-format: {fmt} needs --eval-data PATH")
    same_path = (path is None and c["data"] is None) or (
        path is not None and c["data"] is not None and os.path.realpath(path) == os.path.realpath(c["data"]))
    if fmt == c["format"] and same_path:
        raise ConfigError(f"--eval-data: {path if path is not None else 'synthetic'} is the training set itself; "
                          f"leave --eval-data and --eval-format out to score its own held-out images")


def validate(cfg: RunConfig) -> RunConfig:
    """Check every value once; return the effective config (arch resolved, method-specific fields fixed).

    Raises ConfigError naming the option, what it expects and what it got.
    """
    c = cfg.to_flat()
    del c["config_version"]
    _check_types(c)
    for ok, name, expected in _value_checks(c):
        if not ok:
            raise ConfigError(f"{_flag(name)}: {expected}, got {c[name]!r}")
    _check_ranges(c)
    if c["out"] is None:
        raise ConfigError("--out: a run folder is required (on the command line or in --config)")
    _check_evaluation_set(c)
    if c["method"] == "supervised" and c["format"] in UNLABELLED_FORMATS:
        raise ConfigError(f"--method: supervised trains on labels and --format {c['format']} has none; use a "
                          f"labelled format ({', '.join(LABELLED_FORMATS)}) or webdataset shards with a .cls per "
                          f"sample")
    if c["decode_device"] == "cuda" and c["device"] != "cuda":
        raise ConfigError("--decode-device: cuda decodes on the training GPU; it needs --device cuda")
    if c["sync_bn"] and c["device"] != "cuda":
        raise ConfigError("--sync-bn: PyTorch's SyncBatchNorm runs on CUDA only; drop it or use --device cuda")
    if c["device"] == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise ConfigError("--device: cuda was asked for but torch.cuda.is_available() is False")
    c["arch"] = resolve_arch(c["arch"], c["device"])
    if c["arch"].startswith(TIMM_PREFIX):
        from cwarp.models.timm_backbone import check_timm_arch
        try:
            check_timm_arch(c["arch"])
        except ValueError as err:
            raise ConfigError(f"--arch: {err}") from None
    _resolve_method(c)
    return RunConfig.from_flat(c)


def config_differences(saved: Mapping[str, Any], wanted: Mapping[str, Any],
                       keys: Iterable[str]) -> Dict[str, Tuple[Any, Any]]:
    """{field: (saved value, wanted value)} for each of ``keys`` that both flat configs hold and that differs.

    Pairs compare as lists, since a saved config went through a JSON round trip.
    """
    def norm(v):
        return [norm(x) for x in v] if isinstance(v, (tuple, list)) else v

    return {k: (saved[k], wanted[k]) for k in keys if k in saved and k in wanted and norm(saved[k]) != norm(wanted[k])}


def run_differences(saved: RunConfig, wanted: RunConfig) -> Dict[str, Tuple[Any, Any]]:
    """{field: (saved value, wanted value)} for each setting that changes what a run computes
    (the RESUME_MUTABLE fields and what the trainer derives are left out)."""
    keys = [k for k in DEFAULTS if k not in RESUME_MUTABLE and k not in DERIVED]
    return config_differences(saved.to_flat(), wanted.to_flat(), keys)


def migrate(saved: Mapping[str, Any]) -> RunConfig:
    """The RunConfig of a checkpoint's (or config.json's) flat config, of any version.

    A config from before config_version 2 lacks the fields added since: those
    ran with the value they had then (FORMER_DEFAULTS where the default has
    changed, else today's default). Before version 3, ``workers`` meant CPU
    threads: it becomes ``threads``. Before version 4, the fields of
    ADDED_IN_4 ran with the values given there.
    """
    if not isinstance(saved, Mapping):
        raise ConfigError(f"a saved config must be a dict, got a {type(saved).__name__}")
    version = saved.get("config_version", 1)
    if version > CONFIG_VERSION:
        raise ConfigError(f"the saved config has config_version {version}, newer than this cwarp's "
                          f"{CONFIG_VERSION}; upgrade cwarp to read it")
    return RunConfig.from_flat(_upgrade(saved))


def _upgrade(saved: Mapping[str, Any]) -> Dict[str, Any]:
    """A saved flat config of an older version in today's field names (values it ran with kept)."""
    version = saved.get("config_version", 1)
    flat = dict(saved)
    if version < 2:
        flat = {**FORMER_DEFAULTS, **flat}
    if version < 3 and "workers" in flat:
        flat["threads"] = flat.pop("workers")   # the CPU threads; the loader's worker processes are new
    if version < 4:
        flat = {**ADDED_IN_4, **flat}
    return flat
