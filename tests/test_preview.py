"""cwarp-preview writes a PNG with one panel per (image, view)."""
import pytest
import torch

import cwarp
from cwarp.apps import preview

needs_cpp = pytest.mark.skipif(not cwarp.backends()["cpp"], reason="cwarp._C was not built")


@needs_cpp
@pytest.mark.parametrize("n_images, negatives", [(2, 2), (1, 0)])
def test_synthetic_preview_writes_png_with_all_panels(tmp_path, capsys, n_images, negatives):
    from PIL import Image

    out = tmp_path / "views.png"
    assert preview.main(["--synthetic", str(n_images), "--negatives", str(negatives), "--size", "32",
                         "--out", str(out)]) == 0
    panels = n_images * (3 + negatives)
    assert f"wrote {panels} panels" in capsys.readouterr().out
    with Image.open(out) as im:
        w, h = im.size
    # One PANEL_INCHES x PANEL_INCHES cell per panel, at DPI.
    cell = preview.PANEL_INCHES * preview.DPI
    assert (round(w / cell), round(h / cell)) == (3 + negatives, n_images)


@needs_cpp
def test_preview_of_image_files(tmp_path):
    from PIL import Image

    paths = []
    for i, size in enumerate([(40, 30), (24, 36)]):
        arr = torch.randint(0, 256, (size[1], size[0], 3), dtype=torch.uint8).numpy()
        p = tmp_path / f"face{i}.png"
        Image.fromarray(arr).save(p)
        paths.append(str(p))
    aug = cwarp.ContraWarpAugment(size=16, num_negatives=3)
    fig, panels = preview.make_figure(preview.load_images(paths), aug, [None, None],
                                      generator=torch.Generator().manual_seed(0))
    assert panels == len(fig.axes) == 2 * 6
    # Warp arrows are drawn on the negatives only: 2 images x 3 negatives x 2 warps.
    arrows = sum(len(ax.texts) for ax in fig.axes)
    assert arrows == 2 * 3 * 2
    out = tmp_path / "files.png"
    assert preview.main(paths + ["--out", str(out), "--size", "16"]) == 0
    assert out.stat().st_size > 0
