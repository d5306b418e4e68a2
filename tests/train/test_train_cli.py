"""The installed cwarp-train script as a user meets it: exit statuses, one-line errors, files, Ctrl-C."""
import json
import signal
import subprocess
import time

import pytest
import torch
from console_scripts import TIMEOUT, assert_one_error_line, run_script, script_path, timed_help, torch_modules_after_import
from cwarp.models import save_checkpoint



def tiny(out, *extra):
    # --arch is left to auto: convnet-small on the CPU.
    return ["--out", str(out), "--image-size", "16", "--num-train", "8", "--batch-size", "4", "--epochs", "1",
            "--hidden-dim", "32", "--proj-dim", "16", "--num-negatives", "1", "--warps-per-negative", "1",
            "--log-every", "1", "--progress", "false", *extra]


def run(args):
    return run_script("cwarp-train", *args)


def one_error_line(proc):
    return assert_one_error_line(proc, "cwarp-train")


def test_help_is_quick_and_shows_choices_and_defaults():
    proc, elapsed = timed_help("cwarp-train")
    assert proc.returncode == 0
    assert elapsed < 3.0, f"cwarp-train --help took {elapsed:.1f} s"
    out = " ".join(proc.stdout.split())
    assert "convnet-small" in out and "auto: convnet-small on the CPU, resnet18 on CUDA" in out
    assert "(default: contrawarp)" in out and "--config FILE" in out and "--skip-corrupt" in out


def test_parsing_imports_no_torch():
    assert torch_modules_after_import("cwarp.train", "cwarp.train.cli", "cwarp.train.config") == []


def test_tiny_run_then_resume_of_a_finished_run(tmp_path):
    out = tmp_path / "run"
    proc = run(tiny(out))
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("cwarp-train: done") and str(out / "checkpoint.pt") in last
    for name in ("checkpoint.pt", "config.json", "config.toml", "log.jsonl"):
        assert (out / name).stat().st_size > 0
    assert json.load(open(out / "config.json"))["arch"] == "convnet-small"     # --arch auto on the CPU
    again = run(["--out", out, "--resume"])
    assert again.returncode == 0, again.stderr
    assert "already complete" in again.stdout.strip().splitlines()[-1]


def test_missing_data_folder(tmp_path):
    proc = run(tiny(tmp_path / "run", "--format", "imagefolder", "--data", tmp_path / "nowhere"))
    assert "nowhere does not exist" in one_error_line(proc)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def _image_folder(root, corrupt: bool):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("happy", "sad"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    if corrupt:
        (root / "train" / "sad" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")


def test_corrupt_image_stops_or_is_skipped(tmp_path):
    data = tmp_path / "faces"
    _image_folder(data, corrupt=True)
    args = tiny(tmp_path / "run", "--format", "imagefolder", "--data", data)
    line = one_error_line(run(args))
    assert "broken.png" in line and "--skip-corrupt" in line
    proc = run(args + ["--skip-corrupt"])
    assert proc.returncode == 0, proc.stderr
    assert "cwarp-train: warning:" in proc.stderr and "skipped 1" in proc.stderr
    assert (tmp_path / "run" / "checkpoint.pt").exists()


@pytest.mark.parametrize("text, match", [
    ("lr = [", "not valid TOML"),
    ("learning_rate = 0.1", "unknown setting"),
    ("lr = \"fast\"", "--lr: expected float"),
    ("[negatives]\ntau = 0", "--tau: expected > 0"),
])
def test_bad_config_file(tmp_path, text, match):
    path = tmp_path / "run.toml"
    path.write_text(text + "\n")
    assert match in one_error_line(run(tiny(tmp_path / "run", "--config", path)))


@pytest.mark.parametrize("extra, match", [
    (["--lr", "fast"], "--lr"), (["--lr", "-1"], "--lr"), (["--arch", "vgg"], "--arch"),
    (["--config", "missing.toml"], "missing.toml"),
])
def test_bad_flag_values(tmp_path, extra, match):
    assert match in one_error_line(run(tiny(tmp_path / "run", *extra)))


@pytest.mark.parametrize("extra, match", [
    (["--eval-every", "-1"], "--eval-every: expected >= 0 (0: no online evaluation), got -1"),
    (["--eval-every", "2", "--eval-size", "0"], "--eval-size: expected >= 1, got 0"),
    (["--eval-bank", "10", "--eval-knn-k", "11"], "--eval-knn-k: expected in [1, --eval-bank = 10], got 11"),
    (["--eval-knn-temperature", "0"], "--eval-knn-temperature: expected a finite number > 0, got 0.0"),
    (["--eval-every", "2.5"], "--eval-every"),
])
def test_bad_online_evaluation_values(tmp_path, extra, match):
    assert match in one_error_line(run(tiny(tmp_path / "run", *extra)))
    assert not (tmp_path / "run").exists()


def test_bad_or_incompatible_checkpoint_on_resume(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"garbage")
    assert "is corrupt or not a torch.save file" in one_error_line(run(tiny(out, "--resume")))
    good = tmp_path / "good"
    assert run(tiny(good, "--epochs", "2")).returncode == 0
    state = torch.load(good / "checkpoint.pt", weights_only=True)
    state["epoch"], state["step_in_epoch"] = 1, 0       # pretend it stopped half-way
    state["model"] = {k: v for i, (k, v) in enumerate(state["model"].items()) if i}
    save_checkpoint(str(good / "checkpoint.pt"), state)     # a whole checkpoint, of another model
    assert "does not fit this run's model" in one_error_line(run(tiny(good, "--epochs", "2", "--resume")))


def _start_long_run(out):
    proc = subprocess.Popen([script_path("cwarp-train"), *map(str, tiny(out, "--epochs", "200"))], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    log = out / "log.jsonl"
    deadline = time.time() + TIMEOUT
    while not (log.exists() and log.read_text().strip()):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.2)
    return proc


def test_ctrl_c_saves_a_resumable_checkpoint(tmp_path):
    out = tmp_path / "run"
    proc = _start_long_run(out)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 130, stderr
    assert "stopping after this step" in stderr and "interrupted at step" in stderr and "--resume" in stderr
    assert "Traceback" not in stderr
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert 1 <= state["step"] < 400 and {"optimizer", "rng", "model"} <= set(state)
    assert state["epoch"] * 2 + state["step_in_epoch"] == state["step"]      # 2 steps per epoch


def test_second_ctrl_c_quits_at_once(tmp_path):
    proc = _start_long_run(tmp_path / "run")
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
