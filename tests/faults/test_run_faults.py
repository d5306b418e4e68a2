"""Issue 31, "Runs and checkpoints": the installed cwarp-train (and cwarp-probe) under faults, as subprocesses.

One run per folder (an flock on RUN/.lock), what a killed run leaves cleared
at the next start, a damaged checkpoint refused, a full disk or an unwritable
--out reported in one line with exit 4 and the previous checkpoint kept,
flags on --resume validated as on a fresh run, SIGTERM during start-up
handled as Ctrl-C. docs/api.md, section 5, "What each failure gives", lists
these cases.

How faults are made, without needing root where possible: a kill's
leftovers (log rows, a torn last line, a .checkpoint-*.tmp) are written into
the folder by the test; a full disk is RLIMIT_FSIZE in the child (the
system's EFBIG, "File too large", with SIGXFSZ ignored, as a shell's ulimit
-f does) and, where this process may mount one, a real one (a small tmpfs:
ENOSPC); an unwritable --out is a read-only tmpfs, or a folder without
write permission when not running as root.
"""
from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import time
import zipfile

import pytest
import torch

from console_scripts import TIMEOUT, _wait_until_mapped, assert_one_error_line, run_script, script_path
from cwarp.models import checkpoint as ckpt
from tiny_runs import tiny_script_args

PROG = "cwarp-train"


def tiny(out, *extra):
    """tiny_script_args for two epochs (4 steps; a later --epochs wins)."""
    return tiny_script_args(out, "--epochs", "2", *extra)


def run(args, **popen):
    if not popen:
        return run_script(PROG, *args)
    return subprocess.run([script_path(PROG), *map(str, args)], capture_output=True, text=True, timeout=TIMEOUT,
                          **popen)


def log_steps(out):
    return [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished two-epoch run (4 steps, checkpoint at step 4); tests work on copies."""
    out = tmp_path_factory.mktemp("finished") / "run"
    done = run(tiny(out))
    assert done.returncode == 0, done.stderr
    return out


def copy_run(finished, tmp_path, name="run"):
    out = tmp_path / name
    shutil.copytree(finished, out)
    return out


def rewrite_checkpoint(out, **changes):
    """The checkpoint with keys changed (None deletes), saved as cwarp-train saves it (with its checksum)."""
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    for key, value in changes.items():
        if value is None:
            del state[key]
        else:
            state[key] = value
    ckpt.save_checkpoint(str(out / "checkpoint.pt"), state)


def halfway(out):
    """Pretend the run stopped after its first epoch (step 2 of 4)."""
    rewrite_checkpoint(out, epoch=1, step_in_epoch=0, step=2)


# ---------------------------------------------------------------------------
# One run per folder
# ---------------------------------------------------------------------------

@pytest.mark.slow
def test_a_second_run_on_the_same_out_exits_2_naming_the_first_ones_pid(tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen([script_path(PROG), *tiny(out, "--epochs", "200", "--seed", "1")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + TIMEOUT
        while not ((out / "log.jsonl").exists() and (out / "log.jsonl").read_text().strip()):
            assert first.poll() is None and time.time() < deadline, first.communicate()
            time.sleep(0.2)
        config = (out / "config.json").read_text()
        for extra in ((), ("--resume",)):
            line = assert_one_error_line(run(tiny(out, "--seed", "2", *extra)), PROG)
            assert f"{out} is in use by another cwarp-train run (pid {first.pid})" in line
        assert (out / "config.json").read_text() == config, "the second run wrote nothing"
    finally:
        first.send_signal(signal.SIGINT)
        _, stderr = first.communicate(timeout=TIMEOUT)
    assert first.returncode == 130, stderr
    assert json.loads((out / "config.json").read_text())["seed"] == 1
    steps = log_steps(out)
    assert steps == list(range(1, len(steps) + 1)), "one run's log, in order"


# ---------------------------------------------------------------------------
# What a killed run leaves
# ---------------------------------------------------------------------------

@pytest.mark.slow
def test_a_restart_after_a_kill_before_the_first_checkpoint_starts_anew(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "log.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in range(1, 6)))
    stale = out / ".checkpoint-k1ll3d.tmp"
    stale.write_bytes(b"\0" * 4096)            # a kill in the middle of a checkpoint write
    done = run(tiny(out))
    assert done.returncode == 0, done.stderr
    assert log_steps(out) == [1, 2, 3, 4]
    assert not stale.exists()


@pytest.mark.slow
def test_resume_truncates_the_log_to_the_checkpoint_and_drops_a_torn_line(finished, tmp_path):
    out = copy_run(finished, tmp_path)
    halfway(out)
    with open(out / "log.jsonl", "a") as f:
        f.write('{"step": 5, "loss": 0.2, "lo')     # a kill in the middle of a log write
    done = run(tiny(out, "--resume"))
    assert done.returncode == 0, done.stderr
    assert "dropped a line cut short" in done.stderr
    assert log_steps(out) == [1, 2, 3, 4]


# ---------------------------------------------------------------------------
# Damaged and incomplete checkpoints
# ---------------------------------------------------------------------------

def flip_tensor_bytes(path, count=20):
    """Flip `count` bytes in the middle of the checkpoint's largest tensor record (stored, not compressed):
    torch.load still reads the file; only the values change."""
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
        assert info.compress_type == zipfile.ZIP_STORED
    with open(path, "r+b") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = (int.from_bytes(f.read(2), "little") for _ in range(2))
        start = info.header_offset + 30 + name_len + extra_len + info.file_size // 2
        f.seek(start)
        data = bytearray(f.read(count))
        f.seek(start)
        f.write(bytes(b ^ 0xFF for b in data))


@pytest.mark.slow
def test_a_damaged_checkpoint_is_refused_in_one_line(finished, tmp_path):
    out = copy_run(finished, tmp_path)
    halfway(out)
    flip_tensor_bytes(out / "checkpoint.pt")
    before = (out / "checkpoint.pt").read_bytes()
    line = assert_one_error_line(run(tiny(out, "--resume")), PROG)
    assert f"checkpoint {out / 'checkpoint.pt'} is damaged" in line
    probe = run_script("cwarp-probe", "--checkpoint", out / "checkpoint.pt", "--format", "synthetic",
                       "--num-train", "8", "--num-test", "8", "--out", tmp_path / "probe.json")
    assert "is damaged" in assert_one_error_line(probe, "cwarp-probe")
    assert (out / "checkpoint.pt").read_bytes() == before


@pytest.mark.slow
def test_a_checkpoint_without_epoch_is_refused_in_one_line(finished, tmp_path):
    out = copy_run(finished, tmp_path)
    rewrite_checkpoint(out, epoch=None)
    line = assert_one_error_line(run(tiny(out, "--resume")), PROG)
    assert f"checkpoint {out / 'checkpoint.pt'} lacks ['epoch'], which an exact resume needs" in line


# ---------------------------------------------------------------------------
# Flags and paths
# ---------------------------------------------------------------------------

RESUME_FLAGS = [
    (["--log-every", "0"], "--log-every: expected >= 1, got 0"),
    (["--workers", "-3"], "--workers: expected >= 0 (0: decode in the training process), got -3"),
    (["--threads", "-3"], "--threads: expected >= 0 (0: torch's default), got -3"),
    (["--eval-knn-k", "0"], "--eval-knn-k: expected in [1, --eval-bank = 2000], got 0"),
    (["--save-every", "-1"], "--save-every: expected >= 0, got -1"),
    (["--eval-every", "-1"], "--eval-every: expected >= 0 (0: no online evaluation), got -1"),
]
if not torch.cuda.is_available():
    RESUME_FLAGS.append((["--device", "cuda"], "--device: cuda was asked for but torch.cuda.is_available() is "
                                               "False"))


@pytest.mark.slow
@pytest.mark.parametrize("flags, message", RESUME_FLAGS, ids=[" ".join(f) for f, _ in RESUME_FLAGS])
def test_flags_on_resume_are_validated_as_on_a_fresh_run(finished, tmp_path, flags, message):
    out = copy_run(finished, tmp_path)
    halfway(out)
    files = lambda: {p.name: p.read_bytes() for p in out.iterdir() if p.name != ".lock"}  # noqa: E731
    before = files()
    assert message in assert_one_error_line(run(tiny(out, "--resume", *flags)), PROG)
    assert files() == before


def test_an_out_that_is_a_file_is_refused_in_one_line(tmp_path):
    out = tmp_path / "run"
    out.write_text("not a folder")
    for extra in ((), ("--resume",)):
        assert f"--out: {out} is a file, not a folder" in assert_one_error_line(run(tiny(out, *extra)), PROG)
    assert out.read_text() == "not a folder"


# ---------------------------------------------------------------------------
# A full disk, an unwritable folder
# ---------------------------------------------------------------------------

def _file_size_limit(nbytes):
    """preexec_fn: files this child writes cannot grow past nbytes (EFBIG, SIGXFSZ ignored as ulimit -f)."""
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return limit


def assert_output_error(done, *parts):
    """Exit 4, one line `cwarp-train: error: ...` holding every part."""
    assert done.returncode == 4, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{PROG}: error: cannot write "), done.stderr
    for part in parts:
        assert part in lines[0], lines[0]


def test_a_fresh_run_that_cannot_write_stops_in_one_line_and_leaves_no_empty_config(tmp_path):
    out = tmp_path / "run"
    done = run(tiny(out), preexec_fn=_file_size_limit(64))
    assert_output_error(done, str(out / "config.json"), "File too large (EFBIG)")
    assert sorted(p.name for p in out.iterdir()) == [".lock"], "no config.json, empty or not; no temporary"


@pytest.mark.slow
def test_a_checkpoint_that_cannot_be_written_keeps_the_previous_one(finished, tmp_path):
    out = copy_run(finished, tmp_path)
    halfway(out)
    before = (out / "checkpoint.pt").read_bytes()
    done = run(tiny(out, "--resume"), preexec_fn=_file_size_limit(len(before) // 2))
    assert_output_error(done, str(out / "checkpoint.pt"), "File too large (EFBIG)",
                        "the checkpoint of step 2 is kept")
    assert (out / "checkpoint.pt").read_bytes() == before
    assert not list(out.glob(".checkpoint-*.tmp"))
    assert ckpt.load_checkpoint(str(out))["step"] == 2


@contextlib.contextmanager
def tmpfs(folder, *options):
    """A tmpfs mounted on `folder` (skips the test where this process may not mount one)."""
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@pytest.mark.slow
def test_a_full_disk_stops_in_one_line_and_keeps_the_previous_checkpoint(finished, tmp_path):
    prepared = copy_run(finished, tmp_path)
    halfway(prepared)
    size = (prepared / "checkpoint.pt").stat().st_size
    with tmpfs(tmp_path / "disk", f"size={size + (256 << 10)}") as disk:   # room for one checkpoint, not two
        out = copy_run(prepared, disk)
        before = (out / "checkpoint.pt").read_bytes()
        assert_output_error(run(tiny(out, "--resume")), str(out / "checkpoint.pt"),
                            "No space left on device (ENOSPC)", "the checkpoint of step 2 is kept")
        assert (out / "checkpoint.pt").read_bytes() == before
        assert not list(out.glob(".checkpoint-*.tmp"))
        # A fresh run on the full disk: no empty config.json.
        with open(disk / "filler", "wb") as f:
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * (64 << 10))
                    f.flush()
        fresh = disk / "fresh"
        assert_output_error(run(tiny(fresh)), "No space left on device (ENOSPC)")
        assert not (fresh / "config.json").exists()


def test_an_unwritable_out_stops_in_one_line(tmp_path):
    if os.geteuid() == 0:
        context = tmpfs(tmp_path / "ro", "ro", "size=1m")   # root writes through permissions
    else:
        (tmp_path / "ro").mkdir(mode=0o500)
        context = contextlib.nullcontext(tmp_path / "ro")
    with context as folder:
        out = folder / "run"
        done = run(tiny(out))
        assert done.returncode == 4, done.stderr
        assert_output_error(done, str(out))
        assert not out.exists()


# ---------------------------------------------------------------------------
# SIGTERM while starting
# ---------------------------------------------------------------------------

def test_sigterm_during_start_up_stops_as_ctrl_c_does(tmp_path):
    process = subprocess.Popen([script_path(PROG), *tiny(tmp_path / "run", "--epochs", "200")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_until_mapped(process, "libtorch", timeout=TIMEOUT)   # main() runs: it is importing torch
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 130, (process.returncode, stderr)
    assert "cwarp-train: stopped at once" in stderr and "Traceback" not in stderr
