"""The installed cwarp-preview script, run as a user runs it: exit statuses, output lines, the figure written.

What every console script shares (help, Ctrl-C, unknown flags): tests/test_console_scripts.py."""
import pytest
from console_scripts import assert_one_error_line as assert_one_error_line_of
from console_scripts import run_script

# Every test here runs the installed script in a fresh interpreter that imports torch.
pytestmark = pytest.mark.slow


def preview(*args):
    return run_script("cwarp-preview", *args)


def assert_one_error_line(done, pattern):
    assert_one_error_line_of(done, "cwarp-preview", pattern)


def test_success_writes_the_figure_and_says_where(tmp_path):
    from PIL import Image

    out = tmp_path / "figures" / "views.png"
    done = preview("--synthetic", "2", "--size", "24", "--negatives", "1", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.splitlines()[-1] == f"cwarp-preview: wrote {out}"
    with Image.open(out) as image:
        assert image.size == (4 * 160, 2 * 160)  # 4 panels a row, 2 rows, 1.6 inches at 100 dpi


def test_bad_inputs(tmp_path):
    out = ["--out", str(tmp_path / "v.png")]
    assert_one_error_line(preview(str(tmp_path / "face.jpg"), *out), f"image {tmp_path / 'face.jpg'} does not exist")
    junk = tmp_path / "junk.png"
    junk.write_text("not an image")
    assert_one_error_line(preview(str(junk), *out), f"image {junk} cannot be read")
    assert_one_error_line(preview("--size", "-3", *out), "argument --size: expected an integer >= 1, got -3")
    assert_one_error_line(preview("--size", "5000", *out), "--size must be at most 1024, got 5000")
    assert not (tmp_path / "v.png").exists()
