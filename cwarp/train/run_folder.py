"""The run folder (--out): which checkpoint a run continues and the log rows it keeps.

A run folder holds ``checkpoint.pt`` (the last complete state), ``config.json``
and ``config.toml`` (its settings) and ``log.jsonl`` (one row per logged
step). ``resume_state`` decides what a command line continues; the loop
(``cwarp.train.loop``) writes the files.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional, Set, Tuple

from cwarp.models import checkpoint as ckpt
from cwarp.train.config import AUTO_ARCH, RESUME_MUTABLE, ConfigError, RunConfig, config_differences, migrate, validate

__all__ = ["resume_state", "truncate_log", "CHECKPOINT_NAME", "LOG_NAME"]

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "log.jsonl"


def truncate_log(path: str, max_step: int) -> None:
    """Drop log rows written after the checkpoint we resume from (a crash
    between two checkpoints would otherwise log those steps twice)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        rows = [line for line in f if line.strip() and json.loads(line).get("step", 0) <= max_step]
    with open(path, "w") as f:
        f.writelines(rows)


def resume_state(cfg: RunConfig, explicit: Set[str]) -> Tuple[RunConfig, Optional[Dict[str, Any]]]:
    """(the config to run, the checkpoint to resume or None).

    Without --resume: cfg validated, and --out must not hold a checkpoint.
    With --resume: the checkpoint's config (migrated), with the explicitly
    given RESUME_MUTABLE fields changed; any other explicit field that
    disagrees with the checkpoint is a ConfigError.
    """
    out = cfg.out
    if out is None:
        raise ConfigError("--out: a run folder is required (on the command line or in --config)")
    ckpt_path = os.path.join(out, CHECKPOINT_NAME)
    if not cfg.bookkeeping.resume:
        cfg = validate(cfg)
        if os.path.exists(ckpt_path):
            raise ConfigError(f"--out: {out} already holds a checkpoint; pass --resume to continue it "
                              f"or choose another --out")
        return cfg, None
    if not os.path.exists(ckpt_path):
        raise ConfigError(f"--resume: no checkpoint at {ckpt_path}; start without --resume")
    state = ckpt.load_checkpoint(ckpt_path)
    # Fields the checkpoint predates count with the value it ran with, so an
    # explicit flag that disagrees is a conflict, not silently ignored.
    try:
        saved = migrate(state["config"])
    except ConfigError as e:
        raise ConfigError(f"--resume: checkpoint {ckpt_path}: {e}") from None
    requested, saved_flat = cfg.to_flat(), saved.to_flat()
    # --arch auto asks for no particular backbone: the checkpoint keeps its own.
    keys = sorted(k for k in explicit if k not in RESUME_MUTABLE and not (k == "arch" and cfg.arch == AUTO_ARCH))
    conflicts = config_differences(saved_flat, requested, keys)
    if conflicts:
        k, (old, new) = next(iter(sorted(conflicts.items())))
        names = ", ".join(f"--{f.replace('_', '-')}" for f in sorted(conflicts))
        raise ConfigError(f"--resume: the checkpoint's config conflicts with the command line on {names} "
                          f"(e.g. {k}: checkpoint has {old!r}, command line has {new!r})")
    changes = {k: requested[k] for k in RESUME_MUTABLE if k in explicit}
    return saved.replace(**{**changes, "resume": True}), state
