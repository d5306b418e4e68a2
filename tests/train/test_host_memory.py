"""cwarp.train.host_memory: freed host memory kept for reuse, and cwarp-train's switch for it."""
import json
import subprocess
import sys

import pytest

from cwarp.train import config as C
from cwarp.train.host_memory import keep_freed_memory, malloc_is_glibc

glibc_only = pytest.mark.skipif(not malloc_is_glibc(), reason="the setting exists for glibc's malloc only")

# Page faults of allocating, filling and freeing a 64 MiB buffer three times,
# with glibc's default behaviour and after keep_freed_memory(True).
_FAULTS = """
import json, resource, torch
from cwarp.train.host_memory import keep_freed_memory

def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        x = torch.ones(64 << 20, dtype=torch.uint8)
        del x
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

default = faults()
took = keep_freed_memory(True)
faults()            # the first round grows the heap once
kept = faults()
keep_freed_memory(False)
print(json.dumps({"default": default, "kept": kept, "took": took}))
"""


@glibc_only
def test_a_freed_buffer_is_reused_without_faulting_its_pages_in_again():
    out = subprocess.run([sys.executable, "-c", _FAULTS], capture_output=True, text=True, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    pages = (64 << 20) // 4096
    assert r["took"] is True
    assert r["default"] >= 3 * pages          # glibc maps and unmaps the buffer every time
    assert r["kept"] <= pages                 # the heap's pages are reused (at most one round faults them in)


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
    from cwarp.train import trainer as T

    calls = []
    monkeypatch.setattr(T, "keep_freed_memory", calls.append)
    monkeypatch.setattr(T, "load_data", lambda cfg: (_ for _ in ()).throw(RuntimeError("stop here")))
    cfg = C.config_from_argv(["--out", str(tmp_path / "run"), "--reuse-freed-memory", "false"])
    with pytest.raises(RuntimeError, match="stop here"):
        T.train(cfg)
    assert calls == [False]


@glibc_only
def test_training_is_bitwise_the_same_with_and_without_it(tmp_path):
    import torch

    from cwarp.train.checkpoint import load_checkpoint

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
