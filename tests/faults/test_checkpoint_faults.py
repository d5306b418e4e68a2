"""Issue 31: checkpoint files under faults, in process (cwarp.models.checkpoint, cwarp.train.run_folder).

A checksum saved with every checkpoint and checked by every load, old
checkpoints without one still loading; a write that fails (a full disk)
raising the system's OSError naming the checkpoint, with the previous
checkpoint intact and no temporary left; the run folder's lock and log
helpers. The subprocess runs of the same cases are in test_run_faults.py.
"""
from __future__ import annotations

import errno
import json
import os

import pytest
import torch

from cwarp.models import checkpoint as C
from cwarp.train.config import ConfigError
from cwarp.train.run_folder import OutputError, RunFolder, read_log, truncate_log


def _state(value=1.0):
    return {"config": {"arch": "convnet-small", "image_size": 16, "in_channels": 3, "lr": 0.1},
            "backbone": {"w": torch.full((64,), value), "n": torch.tensor(3)},
            "optimizer": {"state": {0: {"momentum_buffer": torch.ones(4)}}, "param_groups": [{"lr": 0.1}]},
            "epoch": 1, "step": 7, "rng": torch.arange(8, dtype=torch.uint8)}


def test_a_checkpoint_carries_its_checksum_and_loads_as_saved(tmp_path):
    path = str(tmp_path / "checkpoint.pt")
    C.save_checkpoint(path, _state())
    state = C.load_checkpoint(path)
    assert state[C.CHECKSUM_KEY] == C.payload_checksum(state) and state[C.CHECKSUM_KEY].startswith("sha256:")
    assert torch.equal(state["backbone"]["w"], torch.full((64,), 1.0))
    assert C.payload_checksum(_state(1.0)) != C.payload_checksum(_state(1.0 + 2 ** -20))


def _tamper(path, change):
    """Rewrite the checkpoint with torch.save after `change` (its stored checksum kept): a damaged file."""
    state = torch.load(path, weights_only=True)
    change(state)
    torch.save(state, path)


@pytest.mark.parametrize("change", [
    lambda s: s["backbone"]["w"].__setitem__(3, 1.5),          # a flipped value
    lambda s: s.__setitem__("step", 8),                         # a flipped integer in the pickle
    lambda s: s["config"].__setitem__("lr", 0.2),
    lambda s: s.__setitem__(C.CHECKSUM_KEY, 12345),             # not a checksum at all
], ids=["tensor", "step", "config", "not-a-string"])
def test_a_damaged_checkpoint_is_refused_in_one_line(tmp_path, change):
    path = str(tmp_path / "checkpoint.pt")
    C.save_checkpoint(path, _state())
    _tamper(path, change)
    with pytest.raises(C.CheckpointError, match=r"checkpoint .*checkpoint.pt is damaged: its contents do not match "
                                                r"the checksum saved with them") as err:
        C.load_checkpoint(path)
    assert "\n" not in str(err.value)


def test_a_checkpoint_from_before_checksums_loads_unverified(tmp_path):
    path = str(tmp_path / "old.pt")
    torch.save(_state(), path)          # what save_checkpoint wrote before it added "checksum"
    state = C.load_checkpoint(path)
    assert C.CHECKSUM_KEY not in state and state["step"] == 7


class _FullDisk:
    """A file that takes `room` bytes, then fails as a full disk does."""

    def __init__(self, f, room):
        self.f, self.room = f, room

    def write(self, data):
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.f.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()

    def __getattr__(self, name):
        return getattr(self.f, name)


@pytest.mark.parametrize("room", [0, 64, 1024])
def test_a_full_disk_raises_the_os_error_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch, room):
    path = tmp_path / "checkpoint.pt"
    C.save_checkpoint(str(path), _state(1.0))
    before = path.read_bytes()
    real_fdopen = os.fdopen
    monkeypatch.setattr(C.os, "fdopen", lambda fd, *a, **k: _FullDisk(real_fdopen(fd, *a, **k), room))
    with pytest.raises(OSError) as err:
        C.save_checkpoint(str(path), _state(2.0))
    monkeypatch.undo()
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["checkpoint.pt"]


def test_the_run_folder_turns_a_failed_write_into_one_line(tmp_path, monkeypatch):
    folder = RunFolder(str(tmp_path / "run")).claim(create=True)
    real_fdopen = os.fdopen
    monkeypatch.setattr(C.os, "fdopen", lambda fd, *a, **k: _FullDisk(real_fdopen(fd, *a, **k), 0))
    with pytest.raises(OutputError, match=r"cannot write .*run/checkpoint.pt: No space left on device \(ENOSPC\)$"):
        folder.save_checkpoint(_state())
    folder.release()


def test_the_lock_names_its_holder(tmp_path):
    out = str(tmp_path / "run")
    with RunFolder(out).claim(create=True):
        with pytest.raises(ConfigError, match=rf"--out: {out} is in use by another cwarp-train run "
                                              rf"\(pid {os.getpid()}\)"):
            RunFolder(out).claim(create=False)
    RunFolder(out).claim(create=False).release()    # released with its holder


def test_truncate_log_keeps_whole_rows_up_to_the_step(tmp_path):
    path = tmp_path / "log.jsonl"
    rows = [{"step": s, "loss": 1.0 / s} for s in range(1, 6)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 6, "lo')
    assert read_log(str(path)) == (rows, 1)
    assert truncate_log(str(path), 3) == 1
    assert read_log(str(path)) == (rows[:3], 0)
