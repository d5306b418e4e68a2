"""Checkpoints: atomic writes, validated loads, and the backbone a checkpoint holds.

A checkpoint is one ``torch.save`` dict. Every checkpoint written by
``save_checkpoint`` also holds ``"checksum"``, a SHA-256 of the rest of its
contents (``payload_checksum``), which ``load_checkpoint`` verifies: a
damaged file is refused in one line instead of loading wrong weights.
Checkpoints written before the checksum existed have none and load
unverified, as they always did. The probe relies on two keys:
``"config"`` (the run's flat config, ``RunConfig.to_flat()``, with at least
arch, image_size and in_channels) and ``"backbone"`` (the state_dict of the online
backbone built by ``cwarp.models.build_backbone``). The trainer adds what an
exact resume needs: model (online + target), optimizer, schedule, epoch/step,
RNG states. ``load_checkpoint`` is the one loader of cwarp-train, cwarp-probe
and the benchmarks; ``backbone_from_checkpoint`` the one way to get a
checkpoint's trained backbone back.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import signal
import tempfile
import threading
from typing import Any, Dict, Mapping, Optional, Tuple

import torch
from torch import Tensor, nn

from cwarp.models.backbones import build_backbone

__all__ = ["save_checkpoint", "load_checkpoint", "backbone_from_config", "backbone_from_checkpoint",
           "payload_checksum", "REQUIRED_KEYS", "REQUIRED_CONFIG_KEYS", "CHECKSUM_KEY", "TEMPORARY_PATTERN",
           "CheckpointError", "CheckpointNotFoundError"]

REQUIRED_KEYS = ("config", "backbone")
# What the probe needs to rebuild the backbone.
REQUIRED_CONFIG_KEYS = ("arch", "image_size", "in_channels")
# The key of the checksum save_checkpoint adds, and the names of its temporary files.
CHECKSUM_KEY = "checksum"
TEMPORARY_PREFIX, TEMPORARY_SUFFIX = ".checkpoint-", ".tmp"
TEMPORARY_PATTERN = f"{TEMPORARY_PREFIX}*{TEMPORARY_SUFFIX}"


class CheckpointError(RuntimeError):
    """A checkpoint that is unreadable or not a cwarp checkpoint; the message names the file."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No checkpoint at the given path."""


def save_checkpoint(path: str, state: Mapping[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically, with its checksum added.

    The dict goes to a temporary file in the same folder (same file system, so
    the rename is atomic), is flushed to disk, then replaces ``path`` with
    os.replace: a crash or Ctrl-C at any moment leaves either the old or the
    new checkpoint, never a truncated one (a kill can leave the temporary
    file, ``TEMPORARY_PATTERN``, behind). A write that fails (a full disk, no
    permission) raises OSError naming ``path`` and the system's reason, after
    removing the temporary file.
    """
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise ValueError(f"save_checkpoint: state lacks the required keys {missing}")
    payload = {k: v for k, v in state.items() if k != CHECKSUM_KEY}
    payload[CHECKSUM_KEY] = payload_checksum(payload)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=TEMPORARY_PREFIX, suffix=TEMPORARY_SUFFIX, dir=folder)
    except OSError as err:
        raise OSError(err.errno, err.strerror, path) from err
    try:
        # A Ctrl-C that arrives while the file is written is held back until
        # the new checkpoint is in place, then handled as usual.
        with _interrupts_held():
            with os.fdopen(fd, "wb") as f:
                writer = _WriteErrorRecorder(f)
                try:
                    torch.save(payload, writer)
                except RuntimeError as err:
                    # torch.save's zip writer turns a failed write into an
                    # unrelated RuntimeError ("unexpected pos"): raise the
                    # write's own OSError instead.
                    if writer.error is None:
                        raise
                    raise writer.error from err
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
    except OSError as err:
        _remove_quietly(tmp)
        raise OSError(err.errno, err.strerror, path) from err
    except BaseException:
        # Includes KeyboardInterrupt: never leave the temporary file behind.
        _remove_quietly(tmp)
        raise


class _WriteErrorRecorder:
    """A file for torch.save that remembers the OSError of a failed write."""

    def __init__(self, f):
        self._f = f
        self.error: Optional[OSError] = None

    def write(self, data) -> int:
        try:
            return self._f.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self._f.flush()


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)


def payload_checksum(state: Mapping[str, Any]) -> str:
    """"sha256:<hex>" of a checkpoint's contents (without its checksum): every
    tensor's dtype, shape and bytes and every other value's type and repr, in
    a fixed order (mapping keys sorted), so that the same contents give the
    same checksum after a save and a load."""
    digest = hashlib.sha256()
    _feed(digest, {k: v for k, v in state.items() if k != CHECKSUM_KEY})
    return "sha256:" + digest.hexdigest()


def _feed(digest, value: Any) -> None:
    if isinstance(value, Tensor):
        t = value.detach().cpu().contiguous()
        digest.update(f"T{t.dtype}{tuple(t.shape)}:".encode())
        if t.numel():
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, Mapping):
        digest.update(b"{")
        for key in sorted(value, key=repr):
            _feed(digest, key)
            _feed(digest, value[key])
        digest.update(b"}")
    elif isinstance(value, (list, tuple)):
        digest.update(b"[" if isinstance(value, list) else b"(")
        for item in value:
            _feed(digest, item)
        digest.update(b"]")
    else:
        digest.update(f"{type(value).__name__}:{value!r};".encode())


@contextlib.contextmanager
def _interrupts_held():
    """Hold SIGINT / SIGTERM in this block and hand them to their handlers after it.

    A Python signal handler always runs in the main thread, whichever thread
    the signal reached (torch's worker threads included), so a handler that
    only notes the signal holds it everywhere; masking the main thread alone
    would not. Outside the main thread handlers cannot be changed: no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending = []
    held = (signal.SIGINT, signal.SIGTERM)
    old = {sig: signal.signal(sig, lambda signum, frame: pending.append(signum)) for sig in held}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        for sig in pending:  # in order: a second Ctrl-C still means "quit at once"
            handler = old[sig]
            if callable(handler):
                handler(sig, None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(sig)


def load_checkpoint(path: str, *, trust: bool = False, map_location="cpu") -> Dict[str, Any]:
    """Load and validate a checkpoint written by save_checkpoint (``path`` may be its run folder).

    It is read with ``torch.load(weights_only=True)`` unless ``trust``, since
    unpickling an untrusted file can run arbitrary code. Raises
    CheckpointNotFoundError or CheckpointError, one line naming the file and
    what is wrong with it.
    """
    if os.path.isdir(path):
        path = os.path.join(path, "checkpoint.pt")
    if not os.path.isfile(path):
        raise CheckpointNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=not trust)
    except pickle.UnpicklingError as err:
        reason = _unpickler_reason(str(err))
        if not trust and "Unsupported global" in reason:
            raise CheckpointError(f"checkpoint {path} holds Python objects that torch.load(weights_only=True) "
                                  f"refuses ({reason}); if you trust the file, pass --trust-checkpoint") from err
        raise CheckpointError(f"checkpoint {path} is corrupt or not a torch.save file: {reason}") from err
    except Exception as err:  # noqa: BLE001  (torch.load raises many types for a damaged zip or pickle)
        raise CheckpointError(f"checkpoint {path} is corrupt or not a torch.save file: "
                              f"{type(err).__name__}: {' '.join(str(err).split())}") from err
    _check_contents(path, state)
    _check_checksum(path, state)
    return state


def _check_checksum(path: str, state: Dict[str, Any]) -> None:
    """Refuse a checkpoint whose contents do not match its checksum (one written before checksums has none)."""
    stored = state.get(CHECKSUM_KEY)
    if stored is None:
        return
    if not isinstance(stored, str) or payload_checksum(state) != stored:
        raise CheckpointError(f"checkpoint {path} is damaged: its contents do not match the checksum saved with "
                              f"them; restore it from a copy or start the run again")


def _check_contents(path: str, state: Any) -> None:
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not the dict cwarp-train writes")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {missing}; cwarp-train checkpoints hold 'config' and "
                              f"'backbone'")
    cfg = state["config"]
    if not isinstance(cfg, dict) or any(k not in cfg for k in REQUIRED_CONFIG_KEYS):
        have = sorted(cfg) if isinstance(cfg, dict) else type(cfg).__name__
        raise CheckpointError(f"checkpoint {path}: its config must hold {list(REQUIRED_CONFIG_KEYS)}, it has {have}")
    if not isinstance(state["backbone"], dict):
        raise CheckpointError(f"checkpoint {path}: 'backbone' is a {type(state['backbone']).__name__}, "
                              f"not a state_dict")


def _unpickler_reason(message: str) -> str:
    # torch.load wraps the unpickler's one-line reason in paragraphs of advice.
    marker = "WeightsUnpickler error:"
    if marker in message:
        message = message.split(marker, 1)[1].split("Check the documentation", 1)[0]
    return " ".join(message.split())


def _strip_wrappers(state: Dict[str, Tensor]) -> Dict[str, Tensor]:
    # DistributedDataParallel and torch.compile prefix every key; the weights are the same.
    for prefix in ("module.", "_orig_mod."):
        while state and all(key.startswith(prefix) for key in state):
            state = {key[len(prefix):]: value for key, value in state.items()}
    return state


def _mismatch(model: nn.Module, state: Dict[str, Tensor]) -> str:
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)]
    parts = []
    for name, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if items:
            more = f" and {len(items) - 3} more" if len(items) > 3 else ""
            parts.append(f"{len(items)} {name} ({', '.join(items[:3])}{more})")
    return "; ".join(parts)


def backbone_from_config(config: Mapping[str, Any]) -> nn.Module:
    """An untrained backbone of a run's flat config (its arch, in_channels and image_size)."""
    return build_backbone(config["arch"], int(config["in_channels"]), int(config["image_size"]))


def backbone_from_checkpoint(path: str, *, arch: Optional[str] = None, trust: bool = False
                             ) -> Tuple[nn.Module, dict]:
    """The checkpoint's backbone with its weights loaded, and its config."""
    checkpoint = load_checkpoint(path, trust=trust)
    config = checkpoint["config"]
    if arch is not None and arch != config["arch"]:
        raise ValueError(f"checkpoint {path} was trained with arch {config['arch']!r}, but --arch {arch!r} was given")
    try:
        backbone = backbone_from_config(config)
    except ValueError as err:
        raise CheckpointError(f"checkpoint {path}: its config cannot build a backbone: {err}") from err
    state = _strip_wrappers(dict(checkpoint["backbone"]))
    problem = _mismatch(backbone, state)
    if problem:
        raise CheckpointError(f"checkpoint {path}: its backbone weights do not fit arch {config['arch']!r} "
                           f"(from its config): {problem}")
    backbone.load_state_dict(state)
    return backbone, config
