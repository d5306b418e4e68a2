"""The installed cwarp-train script as a user meets it: its runs, files, one-line errors, the checkpoint a Ctrl-C saves.

What every console script shares (help, Ctrl-C, unknown flags): tests/test_console_scripts.py."""
import json

import pytest
import torch
from console_scripts import assert_one_error_line, interrupted, run_script
from cwarp.models import save_checkpoint
from tiny_runs import tiny_script_args as tiny

# Every test here runs the installed script in a fresh interpreter that imports torch.
pytestmark = pytest.mark.slow


def run(args):
    return run_script("cwarp-train", *args)


def one_error_line(proc):
    return assert_one_error_line(proc, "cwarp-train")


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


def test_ctrl_c_saves_a_resumable_checkpoint(tmp_path):
    out = tmp_path / "run"
    log = out / "log.jsonl"
    status, _, stderr = interrupted("cwarp-train", tiny(out, "--epochs", "200"),
                                    busy=lambda: log.exists() and log.read_text().strip() != "")
    assert status == 130, stderr
    assert "stopping after this step" in stderr and "interrupted at step" in stderr and "--resume" in stderr
    assert "Traceback" not in stderr
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert 1 <= state["step"] < 400 and {"optimizer", "rng", "model"} <= set(state)
    assert state["epoch"] * 2 + state["step_in_epoch"] == state["step"]      # 2 steps per epoch
