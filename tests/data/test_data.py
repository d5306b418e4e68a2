"""The rafdb, fer2013 and imagefolder loaders on small fixtures in each layout, and build_dataset's errors."""
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from cwarp.data import EXPRESSIONS, CorruptImageError, build_dataset

# pytest resets warning filters per test; cwarp.data silences this one at import.
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")


def _face(seed, size=100, mode="RGB"):
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 200, size, dtype=np.float32)
    base = ramp[None, :, None] + ramp[:, None, None] * 0.2 + rng.integers(0, 40, (1, 1, 3))
    array = np.clip(base + rng.normal(0, 3, (size, size, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(array)
    return image.convert(mode) if mode != "RGB" else image


def make_rafdb(root, train=(5, 4, 1, 7, 2), test=(3, 6), extra_lines=()):
    """RAF-DB's basic/ layout with the given RAF-DB labels (1..7); returns the basic/ folder."""
    basic = root / "basic"
    (basic / "EmoLabel").mkdir(parents=True)
    (basic / "Image" / "aligned").mkdir(parents=True)
    lines = []
    for split, labels, width in (("train", train, 5), ("test", test, 4)):
        for i, label in enumerate(labels, start=1):
            name = f"{split}_{i:0{width}d}"
            _face(hash(name) % 1000).save(basic / "Image" / "aligned" / f"{name}_aligned.jpg", quality=90)
            lines.append(f"{name}.jpg {label}")
    lines += list(extra_lines)
    (basic / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    return basic


def make_fer(path, rows):
    """rows: (emotion, usage) pairs, or (emotion, usage, pixel text)."""
    lines = ["emotion,pixels,Usage"]
    for i, row in enumerate(rows):
        pixels = row[2] if len(row) > 2 else " ".join(str((i * 7 + j) % 256) for j in range(48 * 48))
        lines.append(f"{row[0]},{pixels},{row[1]}")
    path.write_text("\n".join(lines) + "\n")
    return path


def make_folder(root, layout):
    """layout: {split: {class: [(name, mode), ...]}}"""
    for split, classes in layout.items():
        for cls, files in classes.items():
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i, (name, mode) in enumerate(files):
                _face(i, 40, mode).save(folder / name)
    return root


# ---------------------------------------------------------------- rafdb

def test_rafdb_reads_the_basic_layout(tmp_path):
    basic = make_rafdb(tmp_path)
    train = build_dataset("rafdb", str(basic), "train", 32)
    test = build_dataset("rafdb", str(basic), "test", 32)
    assert len(train) == 5 and len(test) == 2
    assert train.classes == EXPRESSIONS and train.channels == 3
    assert train.labels.tolist() == [4, 3, 0, 6, 1]  # RAF-DB 1..7 -> 0..6
    image, label = train[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 32, 32) and label == 4
    images, labels, landmarks = train.tensors()
    assert images.shape == (5, 3, 32, 32) and labels.dtype == torch.int64 and landmarks is None
    # the archive's top folder works too
    assert len(build_dataset("rafdb", str(tmp_path), "test", 32)) == 2


def test_rafdb_decoding_matches_pil(tmp_path):
    basic = make_rafdb(tmp_path)
    ds = build_dataset("rafdb", str(basic), "train", 100)
    path = basic / "Image" / "aligned" / "train_00001_aligned.jpg"
    reference = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)
    assert (ds[0][0].int() - reference.int()).abs().max() <= 2  # libjpeg IDCT variants differ by a level or two


def test_rafdb_lazy_equals_cached_and_batches(tmp_path):
    basic = make_rafdb(tmp_path)
    cached = build_dataset("rafdb", str(basic), "train", 24, cache=True)
    lazy = build_dataset("rafdb", str(basic), "train", 24, cache=False)
    assert torch.equal(cached.tensors()[0], lazy.tensors()[0])
    images, labels = next(iter(DataLoader(lazy, batch_size=4)))
    assert images.shape == (4, 3, 24, 24) and labels.tolist() == [4, 3, 0, 6]


@pytest.mark.parametrize("line, message", [
    ("train_00099.jpg", "line 9: expected"),
    ("train_00099.jpg 8", "line 9: label '8' .*not an integer in 1..7"),
    ("train_00099.jpg five", "line 9: label 'five'"),
    ("img_00099.jpg 3", "line 9: image name 'img_00099.jpg'"),
    ("train_00001.jpg 3", "line 9: train_00001.jpg is listed twice"),
])
def test_rafdb_malformed_line_names_its_number(tmp_path, line, message):
    basic = make_rafdb(tmp_path, extra_lines=("", line))  # 7 good lines, a blank one, then line 9
    with pytest.raises(ValueError, match=message):
        build_dataset("rafdb", str(basic), "train", 32)


def test_rafdb_missing_image(tmp_path):
    basic = make_rafdb(tmp_path)
    os.remove(basic / "Image" / "aligned" / "train_00002_aligned.jpg")
    with pytest.raises(FileNotFoundError, match="train_00002_aligned.jpg"):
        build_dataset("rafdb", str(basic), "train", 32)
    with pytest.warns(UserWarning, match="skipped 1 of 5"):
        ds = build_dataset("rafdb", str(basic), "train", 32, skip_corrupt=True)
    assert ds.labels.tolist() == [4, 0, 6, 1]


@pytest.mark.parametrize("payload", [b"not a jpeg at all" * 4, "truncated"])
def test_rafdb_corrupt_image(tmp_path, payload):
    basic = make_rafdb(tmp_path)
    path = basic / "Image" / "aligned" / "train_00003_aligned.jpg"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if payload == "truncated" else payload)
    with pytest.raises(CorruptImageError, match="train_00003_aligned.jpg"):
        build_dataset("rafdb", str(basic), "train", 32)
    lazy = build_dataset("rafdb", str(basic), "train", 32, cache=False)
    with pytest.raises(RuntimeError, match="train_00003_aligned.jpg"):
        lazy[2]
    with pytest.warns(UserWarning, match="skipped 1 of 5 .*train_00003_aligned.jpg"):
        ds = build_dataset("rafdb", str(basic), "train", 32, skip_corrupt=True, cache=False)
    assert len(ds) == 4 and ds.labels.tolist() == [4, 3, 6, 1]


def test_rafdb_empty_split_and_missing_layout(tmp_path):
    basic = make_rafdb(tmp_path, test=())
    with pytest.raises(ValueError, match="test split is empty"):
        build_dataset("rafdb", str(basic), "test", 32)
    with pytest.raises(FileNotFoundError, match="list_patition_label.txt"):
        build_dataset("rafdb", str(tmp_path / "basic" / "Image"), "train", 32)


# ---------------------------------------------------------------- fer2013

def test_fer2013_splits_labels_and_pixels(tmp_path):
    rows = [(3, "Training"), (0, "Training"), (5, "PublicTest"), (6, "PrivateTest"), (2, "PrivateTest")]
    csv = make_fer(tmp_path / "fer2013.csv", rows)
    train = build_dataset("fer2013", str(csv), "train", 48)
    test = build_dataset("fer2013", str(tmp_path), "test", 48)  # the folder works too
    assert train.channels == 1 and train.classes == EXPRESSIONS
    assert [train.classes[i] for i in train.labels] == ["happiness", "anger"]
    assert [test.classes[i] for i in test.labels] == ["neutral", "fear"]
    expected = torch.tensor([(0 * 7 + j) % 256 for j in range(48 * 48)], dtype=torch.uint8).view(1, 48, 48)
    assert torch.equal(train[0][0], expected)
    assert build_dataset("fer2013", str(csv), "train", 64).tensors()[0].shape == (2, 1, 64, 64)
    val = build_dataset("fer2013", str(csv), "val", 48)          # PublicTest: the validation split
    assert [val.classes[i] for i in val.labels] == ["surprise"]


@pytest.mark.parametrize("row, message", [
    ((9, "Training"), "line 3.*emotion '9'"),
    ((1, "Validation"), "line 3.*Usage 'Validation'"),
    ((1, "Training", "1 2 3"), "line 3.*2304 integers"),
    ((1, "Training", " ".join(["300"] * 2304)), "line 3.*0..255"),
    ((1, "Training", " ".join(["x"] * 2304)), "line 3"),
])
def test_fer2013_malformed_row_names_its_line(tmp_path, row, message):
    csv = make_fer(tmp_path / "fer2013.csv", [(0, "Training"), row, (1, "PrivateTest")])
    with pytest.raises(ValueError, match=message):
        build_dataset("fer2013", str(csv), "train", 48)


def test_fer2013_bad_header_and_empty_split(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("emotion,pixels\n0,1 2 3\n")
    with pytest.raises(ValueError, match="lacks column"):
        build_dataset("fer2013", str(bad), "train", 48)
    csv = make_fer(tmp_path / "fer2013.csv", [(0, "Training"), (1, "PublicTest")])
    with pytest.raises(ValueError, match="test split is empty.*PrivateTest"):
        build_dataset("fer2013", str(csv), "test", 48)


# ---------------------------------------------------------------- imagefolder

def test_imagefolder_classes_and_modes(tmp_path):
    for split, cls, name, mode in [("train", "happy", "a.png", "RGB"), ("train", "happy", "b.jpg", "RGB"),
                                   ("train", "sad", "c.png", "L"), ("train", "sad", "d.bmp", "RGB"),
                                   ("test", "angry", "e.png", "RGBA"), ("test", "sad", "f.jpeg", "RGB")]:
        (tmp_path / split / cls).mkdir(parents=True, exist_ok=True)
        _face(len(name), 40, mode).save(tmp_path / split / cls / name)
    (tmp_path / "test" / "sad" / "notes.txt").write_text("not an image")
    train = build_dataset("imagefolder", str(tmp_path), "train", 16)
    test = build_dataset("imagefolder", str(tmp_path), "test", 16)
    assert train.classes == test.classes == ("angry", "happy", "sad")
    assert train.labels.tolist() == [1, 1, 2, 2] and test.labels.tolist() == [0, 2]
    images = train.tensors()[0]
    assert images.shape == (4, 3, 16, 16)
    grey = images[2]
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])


def test_imagefolder_errors(tmp_path):
    make_folder(tmp_path / "a", {"train": {"x": [("1.png", "RGB")]}})
    with pytest.raises(FileNotFoundError, match="test does not exist"):
        build_dataset("imagefolder", str(tmp_path / "a"), "test", 16)
    (tmp_path / "b" / "train" / "x").mkdir(parents=True)
    with pytest.raises(ValueError, match="train split is empty"):
        build_dataset("imagefolder", str(tmp_path / "b"), "train", 16)


# ---------------------------------------------------------------- build_dataset

def test_build_dataset_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown format 'affectnet'.*synthetic, synthetic-hard, rafdb, fer2013, imagefolder, folder, list, webdataset"):
        build_dataset("affectnet", str(tmp_path), "train", 32)
    with pytest.raises(FileNotFoundError, match="nowhere does not exist"):
        build_dataset("rafdb", str(tmp_path / "nowhere"), "train", 32)
    with pytest.raises(FileNotFoundError, match="nowhere does not exist"):
        build_dataset("fer2013", str(tmp_path / "nowhere"), "train", 32)
    with pytest.raises(ValueError, match="needs a data path"):
        build_dataset("imagefolder", None, "train", 32)
    with pytest.raises(ValueError, match="unknown split 'valid'"):
        build_dataset("synthetic", None, "valid", 32)
    with pytest.raises(ValueError, match="image_size 4 is too small"):
        build_dataset("synthetic", None, "train", 4)
    with pytest.raises(ValueError, match="num_samples"):
        build_dataset("synthetic", None, "train", 32, num_samples=0)


def test_num_samples_takes_a_seeded_subset(tmp_path):
    basic = make_rafdb(tmp_path)
    a = build_dataset("rafdb", str(basic), "train", 16, num_samples=3, seed=1)
    b = build_dataset("rafdb", str(basic), "train", 16, num_samples=3, seed=1)
    assert len(a) == 3 and torch.equal(a.tensors()[0], b.tensors()[0])
    assert len(build_dataset("rafdb", str(basic), "train", 16, num_samples=50)) == 5


# ---------------------------------------------------------------- held-out images

def test_synthetic_val_split_shares_no_face_with_train_or_test():
    val = build_dataset("synthetic", None, "val", 16, num_samples=300)
    assert len(val) == 300 and set(val.labels.tolist()) == set(range(len(EXPRESSIONS)))
    flat = {split: build_dataset("synthetic", None, split, 16, num_samples=300).tensors()[0].flatten(1)
            for split in ("train", "test")}
    for split, images in flat.items():
        same = (val.tensors()[0].flatten(1)[:, None] == images[None]).all(-1)
        assert not same.any(), split


def test_rafdb_has_no_val_split_and_imagefolder_reads_val(tmp_path):
    with pytest.raises(ValueError, match="RAF-DB has no validation split"):
        build_dataset("rafdb", str(make_rafdb(tmp_path)), "val", 16)
    root = make_folder(tmp_path / "f", {"train": {"a": [("0.png", "RGB")], "b": [("0.png", "RGB")]},
                                        "val": {"b": [("1.png", "RGB")]}})
    val = build_dataset("imagefolder", str(root), "val", 16)
    assert val.classes == ("a", "b") and val.labels.tolist() == [1]


@pytest.mark.parametrize("fmt", ["rafdb", "imagefolder"])
def test_outside_subset_draws_only_images_the_training_subset_leaves_out(tmp_path, fmt):
    if fmt == "rafdb":
        root = make_rafdb(tmp_path, train=(1, 2, 3, 4, 5, 6, 7, 1, 2, 3))
    else:
        root = make_folder(tmp_path / "f", {"train": {c: [(f"{i}.png", "RGB") for i in range(5)] for c in "ab"}})
    train = build_dataset(fmt, str(root), "train", 16, num_samples=6, seed=3)
    held = build_dataset(fmt, str(root), "train", 16, num_samples=3, seed=3, outside_subset=6)
    assert len(held) == 3 and not set(held.paths) & set(train.paths)
    rest = build_dataset(fmt, str(root), "train", 16, seed=3, outside_subset=6)
    assert sorted(set(rest.paths) | set(train.paths)) == sorted(build_dataset(fmt, str(root), "train", 16).paths)
    with pytest.raises(ValueError, match="leaves none out"):
        build_dataset(fmt, str(root), "train", 16, seed=3, outside_subset=10)
    with pytest.raises(ValueError, match="outside_subset is for rafdb and imagefolder"):
        build_dataset("synthetic", None, "train", 16, outside_subset=6)
