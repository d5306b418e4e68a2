"""The unlabelled formats (folder, list) and webdataset shards on data the tests write, and the export script."""
import json
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from cwarp.data import FORMATS, build_dataset
from cwarp.data.export import landmarks_in_pixels, write_folder, write_shards
from cwarp.data.synthetic import SyntheticFaces

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")


def _save(path, seed=0, size=12, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).convert(mode).save(path)


def test_formats_name_the_streamed_ones():
    assert FORMATS[-3:] == ("folder", "list", "webdataset")


# ---------------------------------------------------------------- folder

def test_folder_any_depth_no_hidden_stable_order(tmp_path):
    for rel in ["b/2.png", "a/x/y/3.jpg", "a/1.png", "0.bmp", ".hidden.png", ".cache/4.png", "a/notes.txt"]:
        if rel.endswith(".txt"):
            (tmp_path / rel).write_text("no image")
        else:
            _save(tmp_path / rel)
    ds = build_dataset("folder", str(tmp_path), "train", 8)
    assert [os.path.relpath(p, tmp_path) for p in ds.paths] == ["0.bmp", "a/1.png", "a/x/y/3.jpg", "b/2.png"]
    assert not ds.has_labels and ds.classes == () and ds.labels.tolist() == [-1] * 4
    image, label = ds[1]
    assert image.shape == (3, 8, 8) and image.dtype == torch.uint8 and label == -1
    again = build_dataset("folder", str(tmp_path), "train", 8)
    assert list(again.paths) == list(ds.paths)


def test_folder_subset_and_errors(tmp_path):
    for i in range(6):
        _save(tmp_path / "f" / f"{i}.png", i)
    sub = build_dataset("folder", str(tmp_path / "f"), "train", 8, num_samples=3, seed=1)
    assert len(sub) == 3 and list(sub.paths) == sorted(sub.paths)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="folder: no image files"):
        build_dataset("folder", str(tmp_path / "empty"), "train", 8)
    with pytest.raises(FileNotFoundError, match="nowhere does not exist"):
        build_dataset("folder", str(tmp_path / "nowhere"), "train", 8)
    with pytest.raises(ValueError, match="no test split"):
        build_dataset("folder", str(tmp_path / "f"), "test", 8)


# ---------------------------------------------------------------- list

def test_list_relative_paths_landmarks_and_spaces(tmp_path):
    _save(tmp_path / "crops" / "a.png", 1, size=20)
    _save(tmp_path / "crops" / "b c.png", 2, size=10)
    _save(tmp_path / "elsewhere.png", 3)
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "faces.txt").write_text(
        "# comment\n\n../crops/a.png 4 5 15 5 9.5 10 5 15 15 15\n"
        f"../crops/b c.png\n{tmp_path / 'elsewhere.png'}\n")
    ds = build_dataset("list", str(tmp_path / "lists" / "faces.txt"), "train", 8)
    assert len(ds) == 3 and not ds.has_labels
    assert ds.pixel_landmarks.shape == (3, 5, 2) and torch.isnan(ds.pixel_landmarks[1:]).all()
    batch = ds.read_batch([0, 1])
    assert batch["error"] is None and batch["images"].shape == (2, 3, 8, 8)
    # 20 x 20 image: pixel x -> 2 (x + 0.5) / 20 - 1
    expected = (torch.tensor([[4, 5], [15, 5], [9.5, 10], [5, 15], [15, 15]]) + 0.5) / 10 - 1
    torch.testing.assert_close(batch["landmarks"][0], expected)
    import cwarp
    assert torch.equal(batch["landmarks"][1], cwarp.FACE_LANDMARKS_5)      # none given: the canonical ones


@pytest.mark.parametrize("line, message", [
    ("a.png 1 2 3", r"line 2: expected an image path, optionally followed by 10 numbers .*got 3"),
    ("a.png 1 2 3 4 5 6 7 8 9 nan", r"line 2: expected 5 landmarks as 10 finite numbers"),
    ("missing.png", r"line 2: image file .*missing.png does not exist"),
])
def test_list_bad_lines_name_file_and_line(tmp_path, line, message):
    _save(tmp_path / "a.png")
    (tmp_path / "l.txt").write_text(f"a.png\n{line}\n")
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        build_dataset("list", str(tmp_path / "l.txt"), "train", 8)


def test_list_landmarks_off_the_image_are_refused_or_skipped(tmp_path):
    _save(tmp_path / "a.png", size=10)
    _save(tmp_path / "b.png", size=10)
    (tmp_path / "l.txt").write_text("a.png 1 1 2 2 3 3 4 4 9.6 5\nb.png\n")
    ds = build_dataset("list", str(tmp_path / "l.txt"), "train", 8)
    batch = ds.read_batch([0, 1])
    assert batch["error"] is not None and "a.png: point 5 (9.6, 5) lies outside the 10 x 10 image" in batch["error"]
    assert "\n" not in batch["error"]
    skipping = build_dataset("list", str(tmp_path / "l.txt"), "train", 8, skip_corrupt=True)
    batch = skipping.read_batch([0, 1])
    assert batch["error"] is None and len(batch["skipped"]) == 1 and "a.png" in batch["skipped"][0]
    assert torch.equal(batch["images"][0], batch["images"][1])        # its place taken by the readable one


def test_list_missing_files_skipped_with_one_warning(tmp_path):
    _save(tmp_path / "a.png")
    (tmp_path / "l.txt").write_text("a.png\nb.png\nc.png\n")
    with pytest.warns(UserWarning, match=r"skipped 2 of 3 listed images that do not exist \(first: .*b.png\)"):
        ds = build_dataset("list", str(tmp_path / "l.txt"), "train", 8, skip_corrupt=True)
    assert len(ds) == 1


# ---------------------------------------------------------------- webdataset

@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    summary = write_shards(str(root), 45, size=16, shard_size=10)
    return root, summary


def test_shards_written_as_webdataset_names_them(shards):
    root, summary = shards
    assert summary["shards"] == 5 and summary["path"].endswith("faces-{000000..000004}.tar")
    with tarfile.open(root / "faces-000000.tar") as tar:
        names = tar.getnames()
    assert sorted(names[:3]) == ["00000000.cls", "00000000.jpg", "00000000.json"]


def test_shards_index_labels_and_landmarks(shards):
    root, summary = shards
    ds = build_dataset("webdataset", summary["path"], "train", 16)
    assert ds.sizes == [10, 10, 10, 10, 5] and len(ds) == 45
    assert ds.has_labels and ds.has_landmarks and len(ds.classes) == 7
    assert build_dataset("webdataset", str(root), "train", 16).urls == ds.urls      # a folder of .tar
    plan = ds.plan(world=1, workers=0, batch=4)
    ds.set_epoch(plan, seed=0, epoch=0, rank=0, consumed=[0], first_worker=0)
    batches = list(ds)
    assert len(batches) == plan.steps_per_epoch == 11        # 45 samples, one worker: the last 1 dropped
    faces = SyntheticFaces(45, 16, seed=0)
    for b in batches:
        assert b["error"] is None and b["images"].shape == (4, 3, 16, 16)
    images = torch.cat([b["images"] for b in batches]).float()
    # Each decoded image is its face (JPEG at quality 90: a few levels off; other faces: tens of levels).
    distance = (images[:, None] - faces.images[None].float()).abs().mean((2, 3, 4))
    which = distance.argmin(1)
    assert distance.min(1).values.max() < 16 and len(set(which.tolist())) == 44
    # Labels and landmarks travel with their image.
    assert torch.equal(torch.cat([b["labels"] for b in batches]), faces.labels[which])
    torch.testing.assert_close(torch.cat([b["landmarks"] for b in batches]), faces.landmarks[which], atol=0.01,
                               rtol=0)


def test_shard_plan_splits_by_rank_then_worker_and_states_the_remainder():
    from cwarp.data.shards import ShardPlan

    plan = ShardPlan.make([10, 10, 10, 10, 5], world=2, workers=2, batch=4)
    # Rank 0 reads shards 0, 2, 4 (its worker 0: 0 and 4), rank 1 shards 1 and 3.
    assert plan.shards == (((0, 4), (2,)), ((1,), (3,)))
    # Each worker drops its partial batch; rank 0 could make 5 batches, rank 1 makes 4: both run 4.
    assert plan.batches == ((3, 2), (2, 2)) and plan.steps_per_epoch == 4


@pytest.mark.parametrize("cut", ["in a header", "in an image"])
def test_truncated_shard_is_named_or_left_out(tmp_path, cut):
    write_shards(str(tmp_path), 20, size=16, shard_size=10)
    path = tmp_path / "faces-000001.tar"
    with tarfile.open(path) as tar:
        members = tar.getmembers()
    end = members[6].offset + 100 if cut == "in a header" else members[6].offset_data + 5
    path.write_bytes(path.read_bytes()[:end])
    pattern = str(tmp_path / "faces-{000000..000001}.tar")
    with pytest.raises(ValueError, match=r"faces-000001.tar is (truncated|not a readable tar file)"):
        build_dataset("webdataset", pattern, "train", 16)
    with pytest.warns(UserWarning, match=r"left out 1 of 2 shards .*faces-000001.tar"):
        ds = build_dataset("webdataset", pattern, "train", 16, skip_corrupt=True)
    assert ds.sizes == [10]
    with pytest.raises(FileNotFoundError, match=r"1 of the 3 shards .* do not exist"):
        build_dataset("webdataset", str(tmp_path / "faces-{000000..000002}.tar"), "train", 16)


def test_bad_samples_in_a_shard(tmp_path):
    import webdataset as wds

    good = tmp_path / "g.jpg"
    _save(good, size=16)
    with wds.TarWriter(str(tmp_path / "s.tar")) as w:
        for i in range(4):
            w.write({"__key__": f"{i:03d}", "jpg": good.read_bytes(), "cls": b"2"})
        w.write({"__key__": "004", "jpg": b"not a jpeg", "cls": b"3"})
        w.write({"__key__": "005", "jpg": good.read_bytes(), "cls": b"9"})
    for skip in (False, True):
        ds = build_dataset("webdataset", str(tmp_path / "s.tar"), "train", 16, skip_corrupt=skip)
        ds.set_epoch(ds.plan(1, 1, 6), 0, 0, 0, [0], 0)
        (batch,) = list(ds)
        if not skip:
            assert batch["error"] is not None and "s.tar:00" in batch["error"] and "\n" not in batch["error"]
        else:
            assert batch["error"] is None and len(batch["skipped"]) == 2
            assert "not a label 0..6" in " ".join(batch["skipped"]) and batch["labels"].tolist().count(2) == 6


# ---------------------------------------------------------------- the export script

def test_export_folder_with_list_reads_back(tmp_path):
    summary = write_folder(str(tmp_path / "f"), 12, size=16, list_file=True)
    assert summary["images"] == 12
    folder = build_dataset("folder", str(tmp_path / "f"), "train", 16)
    listed = build_dataset("list", str(tmp_path / "f" / "faces.txt"), "train", 16)
    assert list(folder.paths) == list(listed.paths)
    faces = SyntheticFaces(12, 16, seed=0)
    torch.testing.assert_close(listed.pixel_landmarks, landmarks_in_pixels(faces.landmarks, 16), atol=0.01, rtol=0)
    b = listed.read_batch(list(range(12)))
    torch.testing.assert_close(b["landmarks"], faces.landmarks, atol=0.01, rtol=0)
    assert (b["images"].int() - faces.images.int()).abs().float().mean() < 16     # JPEG at quality 90, 16 px


def test_export_script_exit_statuses(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "cwarp.data.export", *map(str, args)], capture_output=True,
                              text=True, timeout=300)

    done = run(tmp_path / "s", "--count", "3", "--size", "16", "--shards", "--shard-size", "2")
    assert done.returncode == 0 and "wrote 3 faces" in done.stdout, done.stderr
    assert sorted(os.listdir(tmp_path / "s")) == ["faces-000000.tar", "faces-000001.tar"]
    bad = run(tmp_path / "t", "--count", "3", "--size", "4")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--size: expected >= 8" in bad.stderr
    bad = run(tmp_path / "t", "--count", "3", "--shards", "--list")
    assert bad.returncode == 2 and "--list" in bad.stderr
