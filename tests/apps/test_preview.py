"""cwarp-preview: the figure (panels, warp arrows, landmarks) and the CLI's exit statuses, in process."""
import pytest
import torch

import cwarp
from cwarp.apps import preview

from console_scripts import assert_one_error_line_in_process, in_process

needs_cpp = pytest.mark.skipif(not cwarp.backends()["cpp"], reason="cwarp._C was not built")


def run_cli(argv, capsys):
    """(exit status, stdout, stderr) of cwarp-preview's main in this process."""
    return in_process(preview.main, argv, capsys)


def assert_error(argv, capsys, pattern):
    assert_one_error_line_in_process(preview.main, "cwarp-preview", argv, capsys, pattern)


def write_images(tmp_path, sizes):
    from PIL import Image

    paths = []
    for i, (w, h) in enumerate(sizes):
        arr = torch.randint(0, 256, (h, w, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(i))
        path = tmp_path / f"face{i}.png"
        Image.fromarray(arr.numpy()).save(path)
        paths.append(str(path))
    return paths


def arrows(ax):
    return [t for t in ax.texts if getattr(t, "arrow_patch", None) is not None]


@needs_cpp
@pytest.mark.parametrize("n_images, negatives", [(2, 2), (1, 0)])
def test_synthetic_preview_writes_png_with_all_panels(tmp_path, capsys, n_images, negatives):
    from PIL import Image

    out = tmp_path / "views.png"
    status, stdout, _ = run_cli(["--synthetic", str(n_images), "--negatives", str(negatives), "--size", "32",
                                 "--out", str(out)], capsys)
    assert status == 0
    assert stdout.splitlines()[-1] == f"cwarp-preview: wrote {out}"
    with Image.open(out) as im:
        w, h = im.size
    # One PANEL_INCHES x PANEL_INCHES cell per panel, at DPI.
    cell = preview.PANEL_INCHES * preview.DPI
    assert (round(w / cell), round(h / cell)) == (3 + negatives, n_images)


@needs_cpp
def test_figure_draws_warp_arrows_on_negatives_only(tmp_path):
    paths = write_images(tmp_path, [(40, 30), (24, 36)])
    aug = cwarp.ContraWarpAugment(size=16, num_negatives=3, warps_per_negative=2)
    fig = preview.make_figure(preview.load_images(paths), aug, seed=0)
    assert len(fig.axes) == 2 * 6
    per_panel = [len(arrows(ax)) for ax in fig.axes]
    # 2 images x (source, pos1, pos2, 3 negatives): 2 arrows on each negative, none elsewhere.
    assert per_panel == [0, 0, 0, 2, 2, 2] * 2


@needs_cpp
def test_figure_draws_landmarks_where_the_views_put_them(tmp_path):
    images, landmarks = preview.synthetic_images(2, size=32, seed=1)
    aug = cwarp.ContraWarpAugment(size=24, num_negatives=1, warps_per_negative=1)
    out = tmp_path / "demo_views.png"
    fig = preview.make_figure(images, aug, str(out), landmarks=landmarks, generator=torch.Generator().manual_seed(3),
                              row_labels=["a", "b"])
    assert out.stat().st_size > 0
    views = aug(images, landmarks=landmarks, generator=torch.Generator().manual_seed(3))
    for row in range(2):
        source, pos1 = fig.axes[4 * row], fig.axes[4 * row + 1]
        assert source.get_ylabel() == "ab"[row]
        dots = [line for line in source.lines if line.get_color() == "lime"]
        assert len(dots) == 1 and len(dots[0].get_xdata()) == landmarks.shape[1]
        # Source dots at the landmarks' pixel centres.
        expected = (landmarks[row] + 1) * 16 - 0.5
        assert torch.allclose(torch.tensor(dots[0].get_xdata()), expected[:, 0], atol=1e-4)
        # On pos1, a landmark sits where pos1's affine maps it: theta @ (p, 1) = s.
        view_dots = [line for line in pos1.lines if line.get_color() == "lime"][0]
        p = (torch.stack([torch.tensor(view_dots.get_xdata()), torch.tensor(view_dots.get_ydata())], 1).float()
             + 0.5) / 12 - 1
        theta = views.params.theta[row, 0]
        assert torch.allclose(p @ theta[:, :2].T + theta[:, 2], landmarks[row], atol=1e-4)


@needs_cpp
def test_preview_of_image_files(tmp_path, capsys):
    paths = write_images(tmp_path, [(40, 30), (24, 36)])
    out = tmp_path / "sub" / "files.png"
    status, stdout, err = run_cli(paths + ["--out", str(out), "--size", "16"], capsys)
    assert status == 0, err
    assert "2 image file(s)" in stdout and stdout.splitlines()[-1] == f"cwarp-preview: wrote {out}"
    assert out.stat().st_size > 0


def test_bad_inputs_are_one_line(tmp_path, capsys):
    out = ["--out", str(tmp_path / "v.png")]
    assert_error([str(tmp_path / "missing.jpg"), *out], capsys, "image .*missing.jpg does not exist")
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    assert_error([str(junk), *out], capsys, "image .*junk.png cannot be read")
    assert_error(["--size", "0", *out], capsys, "argument --size: expected an integer >= 1, got 0")
    assert_error(["--size", "big", *out], capsys, "argument --size: expected an integer, got 'big'")
    assert_error(["--size", "4096", *out], capsys, "--size must be at most 1024, got 4096")
    assert_error(["--synthetic", "0", *out], capsys, "argument --synthetic: expected an integer >= 1")
    assert_error([str(junk), "--synthetic", "2", *out], capsys, "give IMAGE files or --synthetic N, not both")
    assert_error(["--out", str(tmp_path / "v.txt")], capsys, "expected a file name ending in one of .png")
    assert_error(["--kind", "twirl", *out], capsys, "argument --kind: invalid choice: 'twirl'")
    assert_error([], capsys, "the following arguments are required: --out")
    assert not (tmp_path / "v.png").exists()


def test_help_lists_every_option_with_its_default(capsys):
    status, out, _ = run_cli(["--help"], capsys)
    assert status == 0
    # Each option's help text: tests/test_console_scripts.py.
    actions = [a for a in preview.build_parser()._actions if a.dest != "help"]
    assert len(actions) == 8
    flat = " ".join(out.split())  # help lines wrap with the terminal width
    assert "{translate,gaussian}" in flat and "(default: 112)" in flat and "(default: 0)" in flat
