"""cwarp.train.host_memory: freed host memory kept for reuse, and cwarp-train's switch for it."""
import json
import subprocess
import sys

import pytest

from cwarp.train import config as C
from cwarp.train.host_memory import keep_freed_memory, malloc_is_glibc

glibc_only = pytest.mark.skipif(not malloc_is_glibc(), reason="the setting exists for glibc's malloc only")

# Where glibc puts a 64 MiB buffer and what it keeps of it once freed
# (mallinfo2: hblkhd = bytes in mmapped blocks, fordblks = free bytes held in
# the heap), with glibc's default behaviour and after keep_freed_memory(True).
# Page faults are what the setting saves, but whether a given round reuses
# the freed pages depends on how the heap happens to be fragmented, so the
# test asks malloc where the memory went instead.
_WHERE = """
import ctypes, json, torch
from cwarp.train.host_memory import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2

def where():
    x = torch.ones(64 << 20, dtype=torch.uint8)
    mapped = libc.mallinfo2().hblkhd
    del x
    return {"mapped_while_live": mapped, "held_after_free": libc.mallinfo2().fordblks}

default = where()
took = keep_freed_memory(True)
kept = where()
keep_freed_memory(False)
print(json.dumps({"default": default, "kept": kept, "took": took}))
"""


def _has_mallinfo2() -> bool:
    import ctypes

    return malloc_is_glibc() and hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2")


@pytest.mark.slow
@glibc_only
@pytest.mark.skipif(not _has_mallinfo2(), reason="mallinfo2 needs glibc 2.33 or later")
def test_a_freed_buffer_stays_in_the_heap_instead_of_going_back_to_the_os():
    out = subprocess.run([sys.executable, "-c", _WHERE], capture_output=True, text=True, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    size = 64 << 20
    assert r["took"] is True
    # By default the buffer is its own mapping, unmapped when freed.
    assert r["default"]["mapped_while_live"] >= size
    assert r["default"]["held_after_free"] < size
    # With the setting it comes from the heap, and the heap keeps it once freed.
    assert r["kept"]["mapped_while_live"] < size
    assert r["kept"]["held_after_free"] >= size


def test_elsewhere_it_reports_that_nothing_changed(monkeypatch):
    from cwarp.train import host_memory

    monkeypatch.setattr(host_memory, "_libc", lambda: None)
    assert host_memory.keep_freed_memory(True) is False
    assert host_memory.malloc_is_glibc() is False


def test_cwarp_train_keeps_freed_memory_by_default_and_a_resume_may_change_it():
    assert C.DEFAULTS["reuse_freed_memory"] is True
    cfg = C.config_from_argv(["--out", "x", "--reuse-freed-memory", "false"])
    assert cfg.reuse_freed_memory is False
    assert "reuse_freed_memory" in C.RESUME_MUTABLE
    with pytest.raises(SystemExit):
        C.config_from_argv(["--out", "x", "--reuse-freed-memory", "maybe"])


@glibc_only
def test_train_applies_the_setting(monkeypatch, tmp_path):
    from cwarp.train import loop as T

    calls = []
    monkeypatch.setattr(T, "keep_freed_memory", calls.append)
    monkeypatch.setattr(T, "load_data", lambda cfg: (_ for _ in ()).throw(RuntimeError("stop here")))
    cfg = C.config_from_argv(["--out", str(tmp_path / "run"), "--reuse-freed-memory", "false"])
    with pytest.raises(RuntimeError, match="stop here"):
        T.train(cfg)
    assert calls == [False]


@pytest.mark.slow
@glibc_only
def test_training_is_bitwise_the_same_with_and_without_it(tmp_path):
    import torch

    from cwarp.models import load_checkpoint

    def run(flag):
        out = tmp_path / flag
        subprocess.run([sys.executable, "-m", "cwarp.train", "--out", str(out), "--format", "synthetic",
                        "--arch", "convnet-small", "--image-size", "16", "--num-train", "16", "--batch-size", "8",
                        "--epochs", "2", "--hidden-dim", "64", "--proj-dim", "32", "--progress", "false",
                        "--reuse-freed-memory", flag], check=True, capture_output=True)
        return load_checkpoint(str(out))["model"]

    kept, released = run("true"), run("false")
    assert kept.keys() == released.keys()
    assert all(torch.equal(kept[k], released[k]) for k in kept)
