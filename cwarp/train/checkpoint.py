"""Checkpoints: atomic writes, validated loads, config conflict detection.

A checkpoint is one ``torch.save`` dict. The probe relies on two keys:
``"config"`` (the run's full config, with at least arch, image_size,
in_channels and format) and ``"backbone"`` (the state_dict of the online
backbone built by ``cwarp.train.models.build_backbone``). The trainer adds what an
exact resume needs: model (online + target), optimizer, schedule, epoch/step,
RNG states.
"""
from __future__ import annotations

import os
import tempfile
from typing import Any, Dict, Iterable, Mapping

import torch

__all__ = ["save_checkpoint", "load_checkpoint", "config_conflicts", "REQUIRED_KEYS", "REQUIRED_CONFIG_KEYS",
           "CheckpointError"]

REQUIRED_KEYS = ("config", "backbone")
REQUIRED_CONFIG_KEYS = ("arch", "image_size", "in_channels", "format")


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable or not a cwarp checkpoint."""


def save_checkpoint(path: str, state: Mapping[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically.

    The dict goes to a temporary file in the same folder (same file system, so
    the rename is atomic), is flushed to disk, then replaces ``path`` with
    os.replace: a crash or Ctrl-C at any moment leaves either the old or the
    new checkpoint, never a truncated one.
    """
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise ValueError(f"save_checkpoint: state lacks the required keys {missing}")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".checkpoint-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(dict(state), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        # Includes KeyboardInterrupt: never leave the temporary file behind.
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_checkpoint(path: str, map_location="cpu") -> Dict[str, Any]:
    """Load and validate a checkpoint written by save_checkpoint.

    Raises CheckpointError naming the file and what is wrong with it.
    """
    if os.path.isdir(path):
        path = os.path.join(path, "checkpoint.pt")
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        # Our checkpoints hold only tensors and plain containers.
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001  (re-raised with the file's name)
        raise CheckpointError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from e
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a cwarp checkpoint (a {type(state).__name__}, expected a dict)")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{path} is not a cwarp checkpoint: missing {missing}")
    cfg = state["config"]
    missing = [k for k in REQUIRED_CONFIG_KEYS if not isinstance(cfg, dict) or k not in cfg]
    if missing:
        raise CheckpointError(f"{path}: its config lacks {missing}")
    return state


def config_conflicts(saved: Mapping[str, Any], requested: Mapping[str, Any],
                     keys: Iterable[str]) -> Dict[str, tuple]:
    """{field: (saved value, requested value)} for each of ``keys`` where they differ.

    Values are compared after a JSON-ish normalisation (tuples as lists), since
    the saved config went through a round trip.
    """
    def norm(v):
        if isinstance(v, (tuple, list)):
            return [norm(x) for x in v]
        return v

    out = {}
    for k in keys:
        if k in requested and k in saved and norm(saved[k]) != norm(requested[k]):
            out[k] = (saved[k], requested[k])
    return out
