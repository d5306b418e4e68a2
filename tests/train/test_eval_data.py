"""cwarp-train --eval-data / --eval-format: the online evaluation on a labelled set apart from the training set."""
import json
import os

import pytest
import torch

from console_scripts import assert_one_error_line, run_script
from cwarp.data import SyntheticFaces
from cwarp.train import config as C
from cwarp.train import loop as T
from cwarp.train import monitor as MON

# pytest resets warning filters per test; cwarp.data silences this one at import.
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")


def rafdb(root, train, test=0, seed=0):
    """A RAF-DB basic/ folder of SyntheticFaces (train and test splits); returns its path."""
    SyntheticFaces(train, 24, seed, split="train").export_rafdb(str(root))
    if test:
        SyntheticFaces(test, 24, seed, split="test").export_rafdb(str(root))
    return root


def fer2013(path, train, val):
    rows = ["emotion,pixels,Usage"] + [
        f"{i % 7},{' '.join(str((i * 29 + j * (1 + i % 5)) % 256) for j in range(48 * 48))},"
        f"{'Training' if i < train else 'PublicTest'}" for i in range(train + val)]
    path.write_text("\n".join(rows) + "\n")
    return path


def read_evaluations(out):
    with open(os.path.join(out, "log.jsonl")) as f:
        return [row for row in map(json.loads, f) if "knn_acc" in row]


def parse(*argv):
    return C.validate(C.parse_command_line(["--out", "x", *map(str, argv)])[0])


def test_the_options_are_checked_together(tmp_path):
    with pytest.raises(C.ConfigError, match=r"^--eval-data: give its format with --eval-format \(one of synthetic, "):
        parse("--eval-data", tmp_path)
    with pytest.raises(C.ConfigError, match=r"^--eval-format: rafdb needs --eval-data PATH$"):
        parse("--eval-format", "rafdb")
    with pytest.raises(C.ConfigError, match=r"^--eval-data: .* is the training set itself; leave --eval-data"):
        parse("--format", "rafdb", "--data", tmp_path / "basic", "--eval-format", "rafdb",
              "--eval-data", f"{tmp_path}/./basic/")
    with pytest.raises(C.ConfigError, match="synthetic is the training set itself"):
        parse("--eval-format", "synthetic")
    # The training set's format with another folder, and synthetic faces while training on RAF-DB, are fine.
    cfg = parse("--format", "rafdb", "--data", tmp_path / "a", "--eval-format", "rafdb", "--eval-data", tmp_path / "b")
    assert (cfg.evaluation.eval_format, cfg.evaluation.eval_data) == ("rafdb", str(tmp_path / "b"))
    assert parse("--format", "rafdb", "--data", tmp_path, "--eval-format", "synthetic").evaluation.eval_data is None
    with pytest.raises(SystemExit):    # argparse's choices: the labelled formats
        C.parse_command_line(["--out", "x", "--eval-format", "webdataset"])
    for text, message in (('eval_format = "cifar"', r"^--eval-format: expected one of"),
                          ("eval_data = 3", r"^--eval-data: expected str, got 3")):
        path = tmp_path / "bad.toml"
        path.write_text(f"[evaluation]\n{text}\n")
        with pytest.raises(C.ConfigError, match=message):
            C.validate(C.parse_command_line(["--out", "x", "--config", str(path)])[0])


def test_the_options_round_trip_through_the_saved_config_and_may_change_on_resume(tmp_path):
    cfg = parse("--eval-every", "5", "--eval-format", "rafdb", "--eval-data", tmp_path / "basic")
    _, toml_path = C.write_config_files(cfg, str(tmp_path / "run"))
    assert f'eval_data = "{tmp_path / "basic"}"\neval_format = "rafdb"\n' in open(toml_path).read()
    assert C.validate(C.parse_command_line(["--config", toml_path])[0]).evaluation == cfg.evaluation
    assert C.RESUME_MUTABLE >= {"eval_data", "eval_format"}
    # A config saved before these options loads with the training set's own held-out images.
    old = {k: v for k, v in cfg.to_flat().items() if k not in ("eval_data", "eval_format")}
    assert C.migrate(old).evaluation.eval_format is None


def test_rafdb_bank_and_held_out_images_are_disjoint_train_images_and_its_test_split_is_never_read(tmp_path):
    basic = rafdb(tmp_path / "basic", train=30, test=6)
    for name in os.listdir(basic / "Image" / "aligned"):
        if name.startswith("test_"):
            os.remove(basic / "Image" / "aligned" / name)     # reading the test split would now fail
    cfg = parse("--image-size", "16", "--eval-format", "rafdb", "--eval-data", basic, "--eval-bank", "12",
                "--eval-size", "8", "--eval-knn-k", "5")
    bank, held = MON.separate_evaluation_sets(cfg)
    assert (len(bank), len(held)) == (12, 8) and bank.image_size == held.image_size == 16
    bank_paths, held_paths = list(bank.paths), list(held.paths)
    assert all(os.path.basename(p).startswith("train_") for p in bank_paths + held_paths)
    assert not set(bank_paths) & set(held_paths)
    labels = {f"train_{i + 1:05d}_aligned.jpg": int(y) for i, y in enumerate(SyntheticFaces(30, 24).labels)}
    for part, paths in ((bank, bank_paths), (held, held_paths)):
        assert [labels[os.path.basename(p)] for p in paths] == part.labels.tolist()
    with pytest.raises(ValueError, match=r"^the evaluation set \(--eval-format rafdb --eval-data .*\): .*leaves none "
                                         r"out; rafdb has no validation split here.*lower --eval-bank"):
        MON.separate_evaluation_sets(cfg.replace(eval_bank=30))


def test_an_image_folder_holds_out_its_val_split(tmp_path):
    from PIL import Image

    for split, count in (("train", 6), ("val", 4), ("test", 3)):
        for cls in ("happy", "sad"):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            for i in range(count):
                if split == "test":
                    (folder / f"{i}.png").write_bytes(b"not an image: reading the test split would fail")
                else:
                    Image.new("RGB", (20, 20), (40 * i, 100 if cls == "happy" else 10, 0)).save(folder / f"{i}.png")
    cfg = parse("--image-size", "16", "--eval-format", "imagefolder", "--eval-data", tmp_path, "--eval-bank", "10",
                "--eval-size", "100", "--eval-knn-k", "3")
    bank, held = MON.separate_evaluation_sets(cfg)
    assert len(bank) == 10 and all(f"{os.sep}train{os.sep}" in p for p in bank.paths)
    assert len(held) == 8 and all(f"{os.sep}val{os.sep}" in p for p in held.paths)
    assert bank.classes == held.classes == ("happy", "sad")


@pytest.mark.slow
@pytest.mark.parametrize("train_format, eval_format", [("synthetic", "rafdb"), ("rafdb", "fer2013")])
def test_a_pretraining_is_scored_on_the_separate_set(tmp_path, train_format, eval_format):
    """RGB faces scored on RAF-DB, and RAF-DB (no validation split, all of it trained on) scored on grey FER2013."""
    train = {"synthetic": [], "rafdb": ["--data", rafdb(tmp_path / "train", train=24)]}[train_format]
    held = {"rafdb": rafdb(tmp_path / "eval", train=30, seed=1), "fer2013": fer2013(tmp_path / "fer.csv", 20, 9)}
    out = tmp_path / "run"
    argv = ["--out", out, "--format", train_format, *train, "--arch", C.compact_arch(), "--image-size", "16",
            "--num-train", "24", "--batch-size", "8", "--epochs", "2", "--progress", "false", "--hidden-dim", "32",
            "--proj-dim", "16", "--num-negatives", "1", "--warps-per-negative", "1", "--eval-every", "3",
            "--eval-format", eval_format, "--eval-data", held[eval_format], "--eval-bank", "14", "--eval-size", "7",
            "--eval-knn-k", "5"]
    cfg, explicit = C.parse_command_line(list(map(str, argv)))
    assert T.train(cfg, explicit)["status"] == "done"
    rows = read_evaluations(out)
    assert [r["step"] for r in rows] == [3, 6]
    assert all(r["eval_bank"] == 14 and r["eval_size"] == 7 and 0 <= r["knn_acc"] <= 1 for r in rows)


@pytest.mark.slow
def test_an_unreadable_evaluation_set_is_one_error_line_before_the_first_step(tmp_path):
    done = run_script("cwarp-train", "--out", tmp_path / "run", "--image-size", "16", "--num-train", "8",
                      "--batch-size", "4", "--epochs", "1", "--progress", "false", "--eval-every", "1",
                      "--eval-format", "rafdb", "--eval-data", tmp_path / "nowhere")
    line = assert_one_error_line(done, "cwarp-train", "--eval-every: the evaluation set (--eval-format rafdb")
    assert "nowhere does not exist" in line
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
