"""The run folder (--out): who may write it, what a command line continues, and every write into it.

A run folder holds ``checkpoint.pt`` (the last complete state), ``config.json``
and ``config.toml`` (its settings), ``log.jsonl`` (one row per logged step)
and ``.lock``. ``RunFolder`` takes an exclusive lock on ``.lock`` for the
whole run (a second run on the same folder stops with the first one's pid),
clears what a killed run left (unfinished checkpoint files; the log of a run
that never reached its first checkpoint) and writes every file, turning a
failed write into one ``OutputError`` that names the file and the system's
reason. ``resume_state`` decides what a command line continues; the loop
(``cwarp.train.loop``) decides when to write.
"""
from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
from typing import Any, Dict, List, Optional, Set, Tuple

from cwarp.models import checkpoint as ckpt
from cwarp.train.config import (AUTO_ARCH, RESUME_MUTABLE, ConfigError, RunConfig, config_differences, migrate,
                                replace_text, validate, write_config_files)

__all__ = ["RunFolder", "OutputError", "resume_state", "read_log", "truncate_log", "CHECKPOINT_NAME",
           "LOG_NAME", "LOCK_NAME", "RESUME_KEYS"]

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "log.jsonl"
LOCK_NAME = ".lock"
# What cwarp-train's checkpoints hold besides config and backbone: an exact resume needs each.
RESUME_KEYS = ("model", "optimizer", "schedule", "epoch", "step_in_epoch", "step", "rng")


class OutputError(Exception):
    """A file of the run folder could not be written (a full disk, no permission); the message names it."""


def _output_error(err: OSError, path: Optional[str] = None) -> OutputError:
    where = err.filename or path or "the run folder"
    code = errno.errorcode.get(err.errno, "") if err.errno is not None else ""
    reason = err.strerror or str(err)
    return OutputError(f"cannot write {where}: {reason}{f' ({code})' if code else ''}")


@contextlib.contextmanager
def _writing(path: str):
    """Any OSError in the block becomes an OutputError naming ``path``."""
    try:
        yield
    except OSError as err:
        raise _output_error(err, path) from err


def read_log(path: str) -> Tuple[List[Dict[str, Any]], int]:
    """(the rows of a log.jsonl, the number of lines that are not JSON): a run
    killed in the middle of a write leaves its last line cut short."""
    if not os.path.exists(path):
        return [], 0
    rows, bad = [], 0
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            if isinstance(row, dict):
                rows.append(row)
            else:
                bad += 1
    return rows, bad


def truncate_log(path: str, max_step: int) -> int:
    """Drop log rows written after the checkpoint we resume from (a crash
    between two checkpoints would otherwise log those steps twice) and any
    line cut short by a kill; returns how many lines were cut short."""
    if not os.path.exists(path):
        return 0
    rows, bad = read_log(path)
    kept = [r for r in rows if r.get("step", 0) <= max_step]
    replace_text(path, "".join(json.dumps(r) + "\n" for r in kept))
    return bad


class RunFolder:
    """--out of one run: locked for the run's lifetime, written only through this object.

    ``RunFolder(out).claim(create)`` takes the lock (creating the folder when
    ``create``); use it as a context manager, which releases the lock. Only
    the process that writes (rank 0) claims the folder.
    """

    def __init__(self, out: str):
        self.out = out
        self.checkpoint_path = os.path.join(out, CHECKPOINT_NAME)
        self.log_path = os.path.join(out, LOG_NAME)
        self.lock_path = os.path.join(out, LOCK_NAME)
        self._lock_fd: Optional[int] = None
        if os.path.exists(out) and not os.path.isdir(out):
            raise ConfigError(f"--out: {out} is a file, not a folder; choose another --out")

    # ---------------------------------------------------------------- the lock

    def claim(self, create: bool) -> "RunFolder":
        """Lock the folder for this process, or raise ConfigError naming the pid that holds it.

        Without ``create`` a missing folder is left alone (and not locked):
        --resume then reports the missing checkpoint."""
        if not os.path.isdir(self.out):
            if not create:
                return self
            with _writing(self.out):
                os.makedirs(self.out, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # no flock on this platform: runs are not guarded
            return self
        with _writing(self.lock_path):
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise ConfigError(f"--out: {self.out} is in use by another cwarp-train run (pid {holder}); wait for "
                                  f"it to finish or choose another --out") from None
            raise _output_error(err, self.lock_path) from err
        try:
            with _writing(self.lock_path):
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._lock_fd = fd
        return self

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)   # closing the descriptor releases the flock
            self._lock_fd = None

    def __enter__(self) -> "RunFolder":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    # ------------------------------------------------- what a killed run left

    def remove_stale_temporaries(self) -> int:
        """Delete the unfinished checkpoint files a killed run left (no other run writes here: we hold the lock)."""
        removed = 0
        for path in glob.glob(os.path.join(glob.escape(self.out), ckpt.TEMPORARY_PATTERN)):
            with contextlib.suppress(FileNotFoundError):
                with _writing(path):
                    os.remove(path)
                removed += 1
        return removed

    def start_log(self) -> None:
        """A run with no checkpoint starts its log anew (a run killed before its first checkpoint left rows)."""
        if os.path.exists(self.log_path):
            with _writing(self.log_path):
                os.remove(self.log_path)

    def truncate_log(self, max_step: int) -> int:
        """truncate_log of this folder's log; returns the lines cut short by a kill."""
        with _writing(self.log_path):
            return truncate_log(self.log_path, max_step)

    # ------------------------------------------------------------- the writes

    def write_config(self, cfg: RunConfig) -> None:
        with _writing(self.out):   # each file's own OSError names it
            write_config_files(cfg, self.out)

    def append_log(self, row: Dict[str, Any]) -> None:
        with _writing(self.log_path):
            with open(self.log_path, "a") as f:
                f.write(json.dumps(row) + "\n")

    def save_checkpoint(self, state: Dict[str, Any]) -> None:
        with _writing(self.checkpoint_path):
            ckpt.save_checkpoint(self.checkpoint_path, state)


def _check_resumable(path: str, state: Dict[str, Any]) -> None:
    missing = [k for k in RESUME_KEYS if k not in state]
    if missing:
        raise ckpt.CheckpointError(f"--resume: checkpoint {path} lacks {missing}, which an exact resume needs; it "
                                   f"was not written by cwarp-train (cwarp-probe can still read its backbone)")
    for key in ("epoch", "step_in_epoch", "step"):
        value = state[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ckpt.CheckpointError(f"--resume: checkpoint {path}: expected {key!r} to be an int >= 0, "
                                       f"got {value!r}")


def resume_state(cfg: RunConfig, explicit: Set[str]) -> Tuple[RunConfig, Optional[Dict[str, Any]]]:
    """(the config to run, the checkpoint to resume or None).

    Without --resume: cfg validated, and --out must not hold a checkpoint.
    With --resume: the checkpoint's config (migrated), with the explicitly
    given RESUME_MUTABLE fields changed and the result validated as a fresh
    run's config is; any other explicit field that disagrees with the
    checkpoint is a ConfigError.
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
    _check_resumable(ckpt_path, state)
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
    return validate(saved.replace(**{**changes, "resume": True})), state
