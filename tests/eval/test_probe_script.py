"""The installed cwarp-probe script, run as a user runs it: exit statuses, output lines, files written.

What every console script shares (help, Ctrl-C, unknown flags): tests/test_console_scripts.py."""
import json

import pytest
from console_scripts import assert_one_error_line as assert_one_error_line_of
from console_scripts import run_script

# Every test here runs the installed script in a fresh interpreter that imports torch.
pytestmark = pytest.mark.slow

TINY = ["--format", "synthetic", "--num-train", "42", "--num-test", "21", "--image-size", "16", "--no-progress"]


def probe(*args):
    return run_script("cwarp-probe", *args)


def assert_one_error_line(done, pattern):
    assert_one_error_line_of(done, "cwarp-probe", pattern)


@pytest.mark.parametrize("source", [["--raw-pixels"], ["--random-init", "--arch", "convnet-small"]])
def test_success_writes_json_and_png_and_says_where(tmp_path, source):
    out = tmp_path / "results" / "probe.json"
    done = probe(*source, *TINY, "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    png = tmp_path / "results" / "probe_confusion.png"
    assert done.stdout.splitlines()[-1] == f"cwarp-probe: wrote {out} and {png}"
    result = json.loads(out.read_text())
    assert result["n_train"] == 42 and result["n_test"] == 21
    assert all(0.0 <= result[key] <= 1.0 for key in ("linear_acc", "knn_acc", "map_at_r"))
    assert png.stat().st_size > 1000


def test_missing_checkpoint(tmp_path):
    done = probe("--checkpoint", str(tmp_path / "none.pt"), *TINY, "--out", str(tmp_path / "x.json"))
    assert_one_error_line(done, f"checkpoint {tmp_path / 'none.pt'} does not exist")
    assert not (tmp_path / "x.json").exists()


def test_corrupt_checkpoint(tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"PK\x03\x04 half a zip file")
    done = probe("--checkpoint", str(corrupt), *TINY, "--out", str(tmp_path / "x.json"))
    assert_one_error_line(done, f"checkpoint {corrupt} is corrupt or not a torch.save file")
    assert not (tmp_path / "x.json").exists()


def test_missing_data_folder(tmp_path):
    done = probe("--raw-pixels", "--format", "rafdb", "--data", str(tmp_path / "basic"), "--out",
                 str(tmp_path / "x.json"))
    assert_one_error_line(done, f"--data {tmp_path / 'basic'} does not exist")


@pytest.mark.parametrize("args, pattern", [
    (["--raw-pixels", "--format", "synthetic", "--out", "x.json", "--epochs", "3"], "unrecognized arguments: --epochs"),
    (["--raw-pixels", "--format", "celeba", "--out", "x.json"], "argument --format: invalid choice: 'celeba'"),
    (["--raw-pixels", "--format", "synthetic"], "the following arguments are required: --out"),
])
def test_bad_arguments(args, pattern):
    assert_one_error_line(probe(*args), pattern)
