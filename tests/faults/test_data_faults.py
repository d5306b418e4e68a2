"""Data that used to load silently wrong (issue 31): 16-bit PNGs, symbolic-link loops, links out of the split.

Each case failed on the code before the fix: a white 16-bit pixel came out
black at exactly --image-size and the run stopped with a message naming no
file at any other size; ``ln -s . loop`` inside a class folder turned 20
training images into 420.
"""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from cwarp.data import build_dataset
from cwarp.data.decode import decode_file
from console_scripts import run_script

cv2 = pytest.importorskip("cv2")

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")


def _png16(path, rgb16):
    """A 16-bit RGB PNG of the given (H, W, 3) uint16 pixels (cv2 writes 16-bit colour; PIL cannot)."""
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb16[..., ::-1]))


def test_16_bit_rgb_png_keeps_its_high_byte_at_the_target_size(tmp_path):
    pixels = np.empty((16, 16, 3), np.uint16)
    pixels[:8] = (0xFF00, 0x00FF, 0x8080)
    pixels[8:] = 0xFFFF                          # white
    _png16(tmp_path / "a.png", pixels)
    image = decode_file(str(tmp_path / "a.png"), 3, 16)
    assert image.dtype == torch.uint8
    assert image[:, 0, 0].tolist() == [0xFF, 0x00, 0x80]
    assert image[:, 15, 15].tolist() == [255, 255, 255]


def test_16_bit_png_resizes_and_its_values_follow_the_8_bit_image(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 65536, (40, 40, 3), dtype=np.uint16)
    _png16(tmp_path / "a.png", pixels)
    Image.fromarray((pixels >> 8).astype(np.uint8)).save(tmp_path / "b.png")
    assert torch.equal(decode_file(str(tmp_path / "a.png"), 3, 16), decode_file(str(tmp_path / "b.png"), 3, 16))


def test_16_bit_grey_png_and_tiff(tmp_path):
    grey = np.array([[0, 255, 0x8080, 65535]] * 4, np.uint16)
    for name in ("g.png", "g.tif"):
        Image.fromarray(grey).save(tmp_path / name)      # PIL mode I;16
        image = decode_file(str(tmp_path / name), 3, 4)
        assert image[0, 0].tolist() == [0, 0, 0x80, 255], name
        assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])


@pytest.mark.parametrize("mode", ["I", "F"])
def test_images_without_a_fixed_range_are_refused_by_name(tmp_path, mode):
    array = np.full((8, 8), 7, np.int32) if mode == "I" else np.full((8, 8), 0.5, np.float32)
    Image.fromarray(array).save(tmp_path / "x.tif")
    with pytest.raises(RuntimeError, match=rf"x\.tif: its samples are 32-bit .*PIL mode {mode}"):
        decode_file(str(tmp_path / "x.tif"), 3, 8)


@pytest.mark.slow
def test_16_bit_png_in_an_imagefolder_run(tmp_path):
    """The reported case end to end: a 16-bit PNG at a size other than --image-size trains, at it loads right."""
    for split in ("train", "test"):
        for cls in ("a", "b"):
            folder = tmp_path / "d" / split / cls
            folder.mkdir(parents=True)
            for i in range(4):
                _png16(folder / f"{i}.png", np.full((20, 20, 3), 0xFFFF, np.uint16))
    ds = build_dataset("imagefolder", str(tmp_path / "d"), "train", 20)
    assert ds.tensors()[0].min() == 255
    proc = run_script("cwarp-train", "--format", "imagefolder", "--data", tmp_path / "d", "--out", tmp_path / "run",
                      "--image-size", "16", "--batch-size", "4", "--epochs", "1", "--hidden-dim", "32",
                      "--proj-dim", "16", "--num-negatives", "1", "--warps-per-negative", "1", "--progress", "false")
    assert proc.returncode == 0, proc.stderr


def _faces(folder, n, size=12):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(n)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")


def test_a_directory_link_loop_is_followed_once(tmp_path):
    root = tmp_path / "D"
    for split in ("train", "test"):
        for cls in ("anger", "joy"):
            _faces(root / split / cls, 10 if split == "train" else 2)
    os.symlink(".", root / "train" / "anger" / "loop")
    os.symlink("..", root / "train" / "joy" / "up")          # a loop through the parent: joy -> train -> joy
    ds = build_dataset("imagefolder", str(root), "train", 8, cache=False)
    assert len(ds) == 20
    assert ds.labels.bincount().tolist() == [10, 10]
    folder = build_dataset("folder", str(root / "train"), "train", 8)
    assert len(folder) == 20


def test_a_link_out_of_the_split_is_used_and_warned_about(tmp_path):
    root = tmp_path / "D"
    _faces(root / "train" / "anger", 3)
    _faces(root / "test" / "anger", 2)
    os.symlink(root / "test" / "anger", root / "train" / "anger" / "peek")
    with pytest.warns(UserWarning, match=r"1 symbolic link\(s\) under .*train lead outside it .*peek"):
        ds = build_dataset("imagefolder", str(root), "train", 8, cache=False)
    assert len(ds) == 5
    with pytest.warns(UserWarning, match="lead outside it"):
        build_dataset("folder", str(root / "train"), "train", 8)


def test_the_same_file_under_two_names_is_listed_once(tmp_path):
    _faces(tmp_path / "f", 3)
    os.symlink(tmp_path / "f" / "00.png", tmp_path / "f" / "zz.png")
    assert len(build_dataset("folder", str(tmp_path / "f"), "train", 8)) == 3
