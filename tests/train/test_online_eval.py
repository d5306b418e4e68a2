"""cwarp-train --eval-every: the online kNN (and linear) probe, its rows, and that it leaves training unchanged."""
import json
import os
import signal
import sys
import types

import pytest
import torch
from torch import nn

from cwarp.data import EXPRESSIONS, TensorFaces
from cwarp.train import config as C
from cwarp.train import monitor as MON
from cwarp.train import loop as T
from cwarp.models import build_backbone

import tiny_runs


def tiny_args(out, *extra):
    return tiny_runs.tiny_args(out, "--eval-size", "40", "--eval-bank", "24", *extra)


def run(argv, **kw):
    cfg, explicit = C.parse_command_line(argv)
    return T.train(cfg, explicit, **kw)


def read_log(out):
    with open(os.path.join(out, "log.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return [r for r in rows if "loss" in r], [r for r in rows if "knn_acc" in r]


@pytest.mark.slow
def test_eval_rows_every_n_steps_and_at_the_last_and_training_unchanged(tmp_path):
    plain, watched = tmp_path / "plain", tmp_path / "watched"
    run(tiny_args(plain))
    res = run(tiny_args(watched, "--eval-every", "4", "--eval-linear"))
    train_a, evals_a = read_log(plain)
    train_b, evals_b = read_log(watched)
    assert evals_a == [] and [r["step"] for r in evals_b] == [4, 6]       # 6 steps: every 4th and the last
    for r in evals_b:
        assert 0 <= r["knn_acc"] <= 1 and 0 <= r["linear_acc"] <= 1 and r["eval_seconds"] > 0
        assert r["eval_bank"] == 24 and r["eval_size"] == 40 and r["epoch"] == r["step"] / 3
    assert res["eval_seconds"] >= sum(r["eval_seconds"] for r in evals_b)
    drop = lambda rows: [{k: v for k, v in r.items() if k != "images_per_s"} for r in rows]  # noqa: E731
    assert drop(train_b) == drop(train_a)
    a = torch.load(plain / "checkpoint.pt", weights_only=True)
    b = torch.load(watched / "checkpoint.pt", weights_only=True)
    assert {k for k in a["config"] if a["config"][k] != b["config"][k]} == {"out", "eval_every", "eval_linear"}
    for part in ("model", "backbone"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"]) and torch.equal(a["rng"]["augment"], b["rng"]["augment"])
    assert a["rng"]["python"] == b["rng"]["python"]
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_evaluate_restores_mode_batchnorm_and_rng():
    cfg = C.validate(C.RunConfig().replace(out="x", image_size=16, eval_every=1, eval_bank=32, eval_size=16))
    cfg = cfg.replace(mean=[0.5] * 3, std=[0.25] * 3)
    images = torch.randint(0, 256, (32, 3, 16, 16), dtype=torch.uint8)
    labels = torch.arange(32) % 7
    held = TensorFaces(images[:16], labels[:16], EXPRESSIONS)
    ev = MON.OnlineEvaluator(cfg, TensorFaces(images, labels, EXPRESSIONS), held, torch.device("cpu"))
    torch.manual_seed(0)
    backbone = build_backbone("convnet-small", 3, 16).train()
    backbone.register_forward_hook(lambda module, inputs, output: torch.rand(1).sum() and None)   # it draws
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    rng = torch.get_rng_state()
    row = ev.evaluate(backbone, 7)
    assert row["step"] == 7 and row["eval_bank"] == 32 and row["eval_size"] == 16
    assert backbone.training and torch.equal(torch.get_rng_state(), rng)
    for k, v in backbone.state_dict().items():
        assert torch.equal(v, before[k]), k                   # BatchNorm's running stats included


class _MeanColour(nn.Module):
    """Features: each channel's mean, which is all the images below carry."""
    in_channels = 3

    def forward(self, x):
        return x.mean((2, 3))


def test_knn_scores_separable_features_perfectly_and_shuffled_labels_poorly():
    g = torch.Generator().manual_seed(0)
    palette = torch.rand(7, 3, generator=g) * 255
    labels = torch.arange(140) % 7
    images = (palette[labels][:, :, None, None] + torch.rand(140, 3, 16, 16, generator=g) * 4).to(torch.uint8)
    cfg = C.validate(C.RunConfig().replace(out="x", image_size=16, eval_every=1, eval_bank=70, eval_size=70,
                                           eval_knn_k=5))
    bank = TensorFaces(images[:70], labels[:70], EXPRESSIONS)
    held = TensorFaces(images[70:], labels[70:], EXPRESSIONS)
    ev = MON.OnlineEvaluator(cfg, bank, held, torch.device("cpu"))
    assert ev.evaluate(_MeanColour(), 1)["knn_acc"] == 1.0
    shuffled = TensorFaces(images[70:], labels[70:][torch.randperm(70, generator=g)], EXPRESSIONS)
    ev = MON.OnlineEvaluator(cfg, bank, shuffled, torch.device("cpu"))
    assert ev.evaluate(_MeanColour(), 1)["knn_acc"] < 0.5


def test_bank_is_a_fixed_subset_and_heldout_is_the_validation_split():
    assert torch.equal(MON.bank_indices(100, 10, 3), MON.bank_indices(100, 10, 3))
    assert MON.bank_indices(100, 10, 3).tolist() != MON.bank_indices(100, 10, 4).tolist()
    assert MON.bank_indices(5, 10, 0).tolist() == [0, 1, 2, 3, 4]
    cfg = C.RunConfig().replace(image_size=16, eval_size=12, eval_bank=5)
    held = MON.heldout_split(cfg)
    assert len(held) == 12 and held.split == "val"
    images, labels = torch.randint(0, 256, (9, 3, 16, 16), dtype=torch.uint8), torch.arange(9) % 7
    bank, held = MON.evaluation_sets(cfg, 9, lambda idx: (images[idx], labels[idx]), EXPRESSIONS)
    assert torch.equal(bank.images, images[MON.bank_indices(9, 5, 0)]) and held.split == "val"
    with pytest.raises(ValueError, match="different classes|differ from the bank's"):
        MON.OnlineEvaluator(cfg, bank, TensorFaces(images, labels, ("a", "b", "c", "d", "e", "f", "g")), "cpu")


@pytest.mark.slow
def test_interrupted_on_a_due_step_makes_the_evaluation_up_on_resume(tmp_path):
    out = tmp_path / "cut"

    def interrupt(step, loss):
        if step == 4:
            os.kill(os.getpid(), signal.SIGINT)

    assert run(tiny_args(out, "--eval-every", "2"), step_hook=interrupt)["status"] == "interrupted"
    assert [r["step"] for r in read_log(out)[1]] == [2]       # the stop skipped step 4's evaluation
    assert run(tiny_args(out, "--resume"))["status"] == "done"
    assert [r["step"] for r in read_log(out)[1]] == [2, 4, 6]
    # A resume may turn the monitor on or change it.
    assert C.RESUME_MUTABLE >= {"eval_every", "eval_size", "eval_bank", "eval_knn_k", "eval_knn_temperature",
                                "eval_linear"}


@pytest.mark.slow
def test_tensorboard_and_progress_line(tmp_path, monkeypatch, capsys):
    scalars = []

    class Writer:
        def __init__(self, path):
            pass

        def add_scalar(self, tag, value, step):
            scalars.append((tag, step))

        def close(self):
            pass

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=Writer))
    run(tiny_args(tmp_path / "tb", "--eval-every", "3", "--tensorboard", "--progress", "true"))
    assert ("eval/knn_acc", 3) in scalars and ("eval/knn_acc", 6) in scalars
    err = capsys.readouterr().err
    assert "step 3: online kNN accuracy" in err and "on 40 held-out images" in err


@pytest.mark.slow
def test_rafdb_without_held_out_images_is_one_error_line(tmp_path):
    from console_scripts import assert_one_error_line, run_script

    from cwarp.data import SyntheticFaces

    basic = tmp_path / "basic"
    SyntheticFaces(9, 16, split="train").export_rafdb(str(basic))
    common = ["--format", "rafdb", "--data", basic, "--image-size", "16", "--batch-size", "4", "--epochs", "1",
              "--eval-every", "1", "--progress", "false"]
    line = assert_one_error_line(run_script("cwarp-train", "--out", tmp_path / "a", *common), "cwarp-train")
    assert "--eval-every: rafdb has no validation split" in line and "--num-train" in line
    assert not (tmp_path / "a" / "checkpoint.pt").exists()
    done = run_script("cwarp-train", "--out", tmp_path / "b", *common, "--num-train", "6", "--eval-size", "3")
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr, done.stderr         # torchvision's per-image deprecation stays silent
    _, evals = read_log(tmp_path / "b")
    assert [r["eval_size"] for r in evals] == [3]
