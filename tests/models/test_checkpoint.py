"""Atomic checkpoint writes, validated loads and config conflict detection."""
import os

import pytest
import torch

from cwarp.models import checkpoint as C


def _state(v=1.0):
    cfg = {"arch": "resnet18", "image_size": 64, "in_channels": 3, "format": "synthetic", "lr": 0.1}
    return {"config": cfg, "backbone": {"w": torch.full((2,), v)}}


def test_save_then_load_roundtrip(tmp_path):
    p = tmp_path / "checkpoint.pt"
    C.save_checkpoint(str(p), _state(3.0))
    s = C.load_checkpoint(str(p))
    assert torch.equal(s["backbone"]["w"], torch.full((2,), 3.0))
    assert C.load_checkpoint(str(tmp_path))["config"]["lr"] == 0.1   # a run folder works too
    assert os.listdir(tmp_path) == ["checkpoint.pt"]                  # no temporary left over


def test_failed_write_keeps_old_checkpoint(tmp_path, monkeypatch):
    p = tmp_path / "checkpoint.pt"
    C.save_checkpoint(str(p), _state(1.0))

    def crash(obj, f, *a, **k):
        f.write(b"partial garbage")
        raise KeyboardInterrupt          # Ctrl-C in the middle of torch.save

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        C.save_checkpoint(str(p), _state(2.0))
    monkeypatch.undo()
    assert torch.equal(C.load_checkpoint(str(p))["backbone"]["w"], torch.full((2,), 1.0))
    assert os.listdir(tmp_path) == ["checkpoint.pt"]


def test_save_requires_contract_keys(tmp_path):
    with pytest.raises(ValueError, match="required keys"):
        C.save_checkpoint(str(tmp_path / "c.pt"), {"config": {}})


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(C.CheckpointNotFoundError, match="missing.pt does not exist"):
        C.load_checkpoint(str(tmp_path / "missing.pt"))
    assert issubclass(C.CheckpointNotFoundError, FileNotFoundError)
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(C.CheckpointError, match="garbage.pt is corrupt or not a torch.save file"):
        C.load_checkpoint(str(bad))
    lst = tmp_path / "list.pt"
    torch.save([1, 2], lst)
    with pytest.raises(C.CheckpointError, match="holds a list, not the dict cwarp-train writes"):
        C.load_checkpoint(str(lst))
    nobb = tmp_path / "nobb.pt"
    torch.save({"config": {}}, nobb)
    with pytest.raises(C.CheckpointError, match=r"lacks \['backbone'\]"):
        C.load_checkpoint(str(nobb))
    nocfg = tmp_path / "nocfg.pt"
    torch.save({"config": {"arch": "resnet18"}, "backbone": {}}, nocfg)
    with pytest.raises(C.CheckpointError, match="its config must hold"):
        C.load_checkpoint(str(nocfg))
    for err in (C.CheckpointError("x"), C.CheckpointNotFoundError("x")):
        assert "\n" not in str(err)


def test_python_objects_load_only_when_trusted(tmp_path):
    import argparse

    path = tmp_path / "objects.pt"
    state = _state()
    state["args"] = argparse.Namespace(lr=0.1)       # what older training scripts pickled
    torch.save(state, path)
    with pytest.raises(C.CheckpointError, match="refuses .*pass --trust-checkpoint") as e:
        C.load_checkpoint(str(path))
    assert "\n" not in str(e.value)
    assert C.load_checkpoint(str(path), trust=True)["args"].lr == 0.1


def test_interrupts_during_a_write_are_held_then_handled_in_order(tmp_path):
    # A Ctrl-C (from any thread of the process) while the checkpoint is being
    # written reaches its handler only once the new file is in place.
    import signal
    import threading

    seen = []
    before = signal.signal(signal.SIGINT, lambda signum, frame: seen.append(("handler", signum)))
    path = str(tmp_path / "checkpoint.pt")
    real_save = torch.save

    def save_while_interrupted(obj, f):
        for _ in range(2):  # one from the main thread, one from another thread
            signal.raise_signal(signal.SIGINT)
        other = threading.Thread(target=signal.raise_signal, args=(signal.SIGINT,))
        other.start()
        other.join()
        seen.append(("written", os.path.exists(path)))
        real_save(obj, f)

    try:
        torch.save = save_while_interrupted
        C.save_checkpoint(path, _state(2.0))
    finally:
        torch.save = real_save
        signal.signal(signal.SIGINT, before)
    assert seen == [("written", False)] + [("handler", signal.SIGINT)] * 3
    assert torch.equal(C.load_checkpoint(path)["backbone"]["w"], torch.full((2,), 2.0))


def test_a_held_ctrl_c_still_raises_keyboard_interrupt_after_the_write(tmp_path):
    import signal

    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    path = str(tmp_path / "checkpoint.pt")
    real_save = torch.save

    def save_while_interrupted(obj, f):
        signal.raise_signal(signal.SIGINT)
        real_save(obj, f)

    try:
        torch.save = save_while_interrupted
        with pytest.raises(KeyboardInterrupt):
            C.save_checkpoint(path, _state())
    finally:
        torch.save = real_save
        signal.signal(signal.SIGINT, before)
    assert os.path.exists(path)  # written and in place before the interrupt was raised
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
