"""cwarp-train on streamed data (folder, list, webdataset) as a user runs it: the installed script, data the
tests write, bad files in worker processes, --max-steps, an exact resume after SIGKILL mid-epoch."""
import json
import signal
import subprocess
import time

import numpy as np
import pytest
import torch
from PIL import Image

from console_scripts import TIMEOUT, assert_one_error_line, run_script, script_path

from cwarp.data.export import write_folder, write_shards

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")


def tiny(out, *extra, batch=4):
    return ["--out", str(out), "--image-size", "16", "--batch-size", str(batch), "--epochs", "1",
            "--hidden-dim", "32", "--proj-dim", "16", "--num-negatives", "1", "--warps-per-negative", "1",
            "--log-every", "1", "--progress", "false", "--workers", "2", *extra]


def run(args):
    return run_script("cwarp-train", *args)


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """24 synthetic faces as JPEGs (a folder and a list file naming them) and as 4 webdataset shards."""
    root = tmp_path_factory.mktemp("faces")
    write_folder(str(root / "folder"), 24, size=20, list_file=True)
    write_shards(str(root / "shards"), 24, size=20, shard_size=6)
    return root


@pytest.mark.parametrize("fmt", ["folder", "list", "webdataset"])
def test_pretrains_on_each_streamed_format(tmp_path, faces, fmt):
    data = {"folder": faces / "folder", "list": faces / "folder" / "faces.txt",
            "webdataset": faces / "shards" / "faces-{000000..000003}.tar"}[fmt]
    out = tmp_path / "run"
    proc = run(tiny(out, "--format", fmt, "--data", data, "--max-steps", "3"))
    assert proc.returncode == 0, proc.stderr
    assert "stopped at --max-steps, step 3/" in proc.stdout
    rows = [json.loads(line) for line in open(out / "log.jsonl")]
    assert [r["step"] for r in rows] == [1, 2, 3]
    saved = json.load(open(out / "config.json"))
    assert saved["workers"] == 2 and saved["threads"] == 0 and saved["max_steps"] == 3
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["step"] == 3 and state["data"]["kind"] == ("shards" if fmt == "webdataset" else "files")


def test_supervised_needs_labels(tmp_path, faces):
    proc = run(tiny(tmp_path / "run", "--format", "folder", "--data", faces / "folder", "--method", "supervised"))
    assert "supervised trains on labels and --format folder has none" in assert_one_error_line(proc, "cwarp-train")
    assert not (tmp_path / "run").exists()


def _bad_files(folder):
    """Images a user's folder may hold: unreadable ones, and ones in modes that must be converted."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)
    good = folder / "good.jpg"
    Image.fromarray(pixels).save(good)
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes(good.read_bytes()[:200])
    (folder / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    Image.fromarray(pixels).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(pixels).convert("L").save(folder / "grey.png")
    Image.fromarray(pixels).convert("RGBA").save(folder / "rgba.png")
    Image.fromarray((pixels[..., 0].astype(np.uint16) * 257)).save(folder / "grey16.png")
    Image.fromarray(pixels[..., 0].astype(np.float32)).save(folder / "float.tif")    # refused: no fixed range
    return {"zero.jpg", "truncated.jpg", "garbage.png", "float.tif"}


@pytest.mark.slow
def test_bad_files_stop_the_run_in_one_line_or_are_skipped_once_an_epoch(tmp_path, faces):
    data = tmp_path / "data"
    write_folder(str(data), 16, size=20)
    bad = _bad_files(data / "000")      # 9 more files: 25 images
    args = tiny(tmp_path / "run", "--format", "folder", "--data", data, "--save-every", "1")
    proc = run(args)
    line = assert_one_error_line(proc, "cwarp-train")
    assert any(name in line for name in bad) and "--skip-corrupt" in line and "Traceback" not in proc.stderr
    if (tmp_path / "run" / "checkpoint.pt").exists():       # what was saved before the bad batch is kept
        torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    proc = run(tiny(tmp_path / "skip", "--format", "folder", "--data", data, "--skip-corrupt", "--epochs", "2"))
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("cwarp-train: warning:")]
    # 25 images, batches of 4: 6 steps an epoch read 24 of them; of the 4 unreadable ones, those read counted.
    assert [w.split(": skipped")[0] for w in warnings] == ["cwarp-train: warning: epoch 1",
                                                          "cwarp-train: warning: epoch 2"], proc.stderr
    assert all(any(f"skipped {k} unreadable image(s)" in w for k in (3, 4)) for w in warnings)
    assert proc.stderr.count("\n") == len(warnings) and "Traceback" not in proc.stderr


def _weights(path):
    return torch.load(path, weights_only=True)["model"]


def _kill_mid_epoch(args, out, at_step):
    """Start a run, SIGKILL it once its log holds step ``at_step`` (a checkpoint is written every 2 steps)."""
    proc = subprocess.Popen([script_path("cwarp-train"), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    log = out / "log.jsonl"
    deadline = time.time() + TIMEOUT
    while True:
        rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        if rows and rows[-1]["step"] >= at_step:
            break
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=TIMEOUT)
    return torch.load(out / "checkpoint.pt", weights_only=True)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["folder", "webdataset"])
def test_sigkill_mid_epoch_then_resume_is_bitwise_the_uninterrupted_run(tmp_path, faces, fmt):
    data = faces / "folder" if fmt == "folder" else faces / "shards" / "faces-{000000..000003}.tar"
    common = ["--format", fmt, "--data", data, "--epochs", "2", "--save-every", "2"]
    whole = tmp_path / "whole"
    assert run(tiny(whole, *common, batch=2)).returncode == 0
    out = tmp_path / "killed"
    state = _kill_mid_epoch(tiny(out, *common, batch=2), out, at_step=5)
    assert state["step_in_epoch"] > 0, "the kill should land mid-epoch"
    resumed = run(["--out", out, "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    a, b = _weights(whole / "checkpoint.pt"), _weights(out / "checkpoint.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(line) for line in open(out / "log.jsonl")]
    assert [r["step"] for r in rows] == list(range(1, len(rows) + 1))


def test_a_config_from_before_version_3_keeps_its_threads(tmp_path):
    from cwarp.train import config as C

    old = dict(C.RunConfig().to_flat(), config_version=2)
    old.pop("threads"), old.pop("max_steps"), old.pop("decode_device")
    old["workers"] = 3                                  # version 2: CPU threads
    cfg = C.migrate(old)
    assert cfg.data.threads == 3 and cfg.data.workers is None
    path = tmp_path / "config.json"
    path.write_text(json.dumps(old))
    loaded, _ = C.parse_command_line(["--config", str(path)])
    assert loaded.data.threads == 3 and loaded.data.workers is None


@pytest.mark.parametrize("extra, match", [
    (["--workers", "-1"], "--workers: expected >= 0"),
    (["--threads", "-2"], "--threads: expected >= 0"),
    (["--max-steps", "-1"], "--max-steps: expected >= 0"),
    (["--decode-device", "cuda"], "--decode-device: cuda decodes on the training GPU; it needs --device cuda"),
])
def test_bad_data_flags(tmp_path, extra, match):
    assert match in assert_one_error_line(run(tiny(tmp_path / "run", *extra)), "cwarp-train")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="nvJPEG needs a CUDA device")
def test_decode_device_cuda_matches_the_cpu_decode(faces):
    from cwarp.data import build_dataset
    from cwarp.train import config as C
    from cwarp.train.distributed import DistInfo
    from cwarp.train.feeds import make_feed
    from cwarp.train.training_data import TrainingData

    cfg = C.validate(C.parse_command_line(["--out", "x", "--format", "folder", "--data", str(faces / "folder"),
                                           "--image-size", "16", "--device", "cuda", "--decode-device", "cuda",
                                           "--workers", "1", "--batch-size", "8"])[0])
    ds = build_dataset("folder", str(faces / "folder"), "train", 16)
    feed = make_feed(TrainingData(ds, None, None, None), cfg, DistInfo(), torch.device("cuda"), 8)
    images, _, _ = next(feed.epoch(0, 0))
    assert images.is_cuda and images.dtype == torch.uint8
    order = list(feed.sampler)[:8]
    cpu = ds.read_batch(order)["images"]
    assert (images.cpu().int() - cpu.int()).abs().max() <= 3     # nvJPEG's IDCT and the GPU resize round apart
