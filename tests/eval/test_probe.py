"""cwarp-probe: the metrics on known inputs, the CLI end to end in process, and its errors."""
import json

import pytest
import torch

import cwarp.eval.probe as probe
from cwarp.data import TensorFaces
from cwarp.models import build_backbone
from cwarp.eval.cli import main
from cwarp.eval.probe import evaluate_features, extract_features, map_at_r

from console_scripts import assert_one_error_line_in_process, in_process

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")

SMALL = ["--format", "synthetic", "--image-size", "24", "--num-train", "140", "--num-test", "70", "--no-progress"]


@pytest.fixture(autouse=True)
def one_thread():
    # These workloads are tiny; intra-op threads only fight other processes for a shared machine's cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def blobs(n_per_class, dim, num_classes, seed, spread=0.3):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(99)) * 3
    y = torch.arange(num_classes).repeat_interleave(n_per_class)
    return centres[y] + spread * torch.randn(len(y), dim, generator=g), y


# ---------------------------------------------------------------- metrics

def test_separable_features_score_perfectly():
    train_x, train_y = blobs(30, 16, 4, seed=0)
    test_x, test_y = blobs(10, 16, 4, seed=1)
    result = evaluate_features(train_x, train_y, test_x, test_y, 4, class_names=["a", "b", "c", "d"])
    assert result["linear_acc"] == result["knn_acc"] == 1.0
    assert result["map_at_r"] == pytest.approx(1.0)
    assert result["per_class_acc"] == {"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0}
    assert (result["n_train"], result["n_test"], result["feature_dim"]) == (120, 40, 16)
    assert result["confusion"] == [[10 if i == j else 0 for j in range(4)] for i in range(4)]
    assert result["predictions"] == test_y.tolist()


def test_predictions_agree_with_the_accuracy_and_the_confusion():
    train_x, train_y = blobs(30, 16, 4, seed=0, spread=12.0)
    test_x, test_y = blobs(10, 16, 4, seed=1, spread=12.0)
    result = evaluate_features(train_x, train_y, test_x, test_y, 4)
    pred = torch.tensor(result["predictions"])
    assert pred.shape == test_y.shape and 0.25 < result["linear_acc"] < 1.0
    assert (pred == test_y).float().mean().item() == result["linear_acc"]
    for i in range(4):
        for j in range(4):
            assert result["confusion"][i][j] == int(((test_y == i) & (pred == j)).sum())


def test_absent_test_class_has_no_accuracy():
    train_x, train_y = blobs(20, 8, 3, seed=0)
    test_x, test_y = blobs(5, 8, 3, seed=1)
    keep = test_y != 2
    result = evaluate_features(train_x, train_y, test_x[keep], test_y[keep], 3)
    assert result["per_class_acc"]["2"] is None


def test_map_at_r_by_hand():
    # Two train images per class; query 0 (class 0) ranks them: class 0, class 1, class 0, class 1.
    train_x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.5], [0.5, 0.9]])
    train_y = torch.tensor([0, 1, 0, 1])
    query = torch.tensor([[1.0, 0.05]])
    # R = 2: ranks 1 and 2 are class 0 (sim 1.0, 0.88) - AP@R = (1/1 + 2/2) / 2 = 1
    assert map_at_r(train_x, train_y, query, torch.tensor([0]), 2) == pytest.approx(1.0)
    # For a class-1 query at the same place the top-2 are both class 0: AP@R = 0
    assert map_at_r(train_x, train_y, query, torch.tensor([1]), 2) == pytest.approx(0.0)
    mid = torch.tensor([[0.7, 0.72]])  # ranks: [0.5,0.9] (1), [0.9,0.5] (0), ... -> class 1 query: 1/1 / 2
    assert map_at_r(train_x, train_y, mid, torch.tensor([1]), 2) == pytest.approx(0.5)


def test_row_space_fit_equals_direct_fit(monkeypatch):
    # More features than rows: the probe fits in the span of the rows; same predictions as the full fit.
    train_x, train_y = blobs(12, 300, 5, seed=0, spread=4.0)
    test_x, test_y = blobs(8, 300, 5, seed=1, spread=4.0)
    fast = evaluate_features(train_x, train_y, test_x, test_y, 5)
    monkeypatch.setattr(probe, "ROW_SPACE_MAX_ROWS", 0)
    slow = evaluate_features(train_x, train_y, test_x, test_y, 5)
    assert fast["confusion"] == slow["confusion"] and fast["weight_decay"] == slow["weight_decay"]


def test_weight_decay_never_looks_at_test_labels():
    train_x, train_y = blobs(25, 12, 3, seed=0, spread=3.0)
    test_x, test_y = blobs(25, 12, 3, seed=1, spread=3.0)
    a = evaluate_features(train_x, train_y, test_x, test_y, 3)
    b = evaluate_features(train_x, train_y, test_x, test_y[torch.randperm(len(test_y))], 3)
    assert a["weight_decay"] == b["weight_decay"] and a["val_acc"] == b["val_acc"]


def test_evaluate_features_rejects_bad_input():
    x, y = blobs(5, 4, 2, seed=0)
    with pytest.raises(ValueError, match="the test split is empty"):
        evaluate_features(x, y, x[:0], y[:0], 2)
    with pytest.raises(ValueError, match="train features have 4 dimensions, test features 3"):
        evaluate_features(x, y, x[:, :3], y, 2)
    with pytest.raises(ValueError, match="labels must lie in 0..1"):
        evaluate_features(x, y + 1, x, y, 2)


def test_extract_features_batches_and_adapts_channels():
    torch.manual_seed(0)
    grey = TensorFaces(torch.randint(0, 256, (10, 1, 24, 24), dtype=torch.uint8), torch.zeros(10), ("x",))
    model = build_backbone("convnet-small", 3, 24)
    model.train()
    one = extract_features(model, grey, 1, "cpu", progress=False)
    many = extract_features(model, grey, 7, "cpu", progress=False)
    assert one.shape == (10, 256) and torch.allclose(one, many, atol=1e-5)
    assert model.training  # its mode is restored


def test_extract_features_fits_a_runs_three_value_statistics_to_a_grey_backbone():
    # A run on grey images (FER2013) saves ContraWarpAugment's 3-value mean/std, which it averages for one channel.
    torch.manual_seed(0)
    grey = TensorFaces(torch.randint(0, 256, (6, 1, 24, 24), dtype=torch.uint8), torch.zeros(6), ("x",))
    model = build_backbone("convnet-small", 1, 24)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    features = extract_features(model, grey, 4, "cpu", mean=mean, std=std, progress=False)
    averaged = extract_features(model, grey, 4, "cpu", mean=(0.4,), std=(0.25,), progress=False)
    assert features.shape == (6, 256)
    torch.testing.assert_close(features, averaged)


# ---------------------------------------------------------------- CLI

def run_cli(argv, capsys):
    """(exit status, stdout, stderr) of cwarp-probe's main in this process."""
    return in_process(main, argv, capsys)


def assert_error(argv, capsys, pattern):
    assert_one_error_line_in_process(main, "cwarp-probe", argv, capsys, pattern)


def test_raw_pixels_cli_writes_json_and_png(tmp_path, capsys):
    out = tmp_path / "res" / "raw.json"
    status, stdout, _ = run_cli(["--raw-pixels", "--out", str(out), *SMALL], capsys)
    assert status == 0
    written = json.loads(out.read_text())
    for key in ("linear_acc", "knn_acc", "map_at_r", "per_class_acc", "n_train", "n_test"):
        assert key in written
    assert f"linear {written['linear_acc']:.4f}" in stdout
    assert stdout.splitlines()[-1] == f"cwarp-probe: wrote {out} and {tmp_path / 'res' / 'raw_confusion.png'}"
    assert written["n_train"] == 140 and written["n_test"] == 70 and written["mode"] == "raw_pixels"
    assert set(written["per_class_acc"]) == {"surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral"}
    assert (tmp_path / "res" / "raw_confusion.png").stat().st_size > 1000


@pytest.mark.slow
def test_random_init_and_checkpoint_cli(tmp_path, capsys):
    assert run_cli(["--random-init", "--arch", "convnet-small", "--out", str(tmp_path / "r.json"), *SMALL],
                   capsys)[0] == 0
    random_result = json.loads((tmp_path / "r.json").read_text())
    assert random_result["mode"] == "random_init" and random_result["feature_dim"] == 256

    torch.manual_seed(1)
    backbone = build_backbone("convnet-small", 3, 24)
    config = {"arch": "convnet-small", "image_size": 24, "in_channels": 3, "format": "synthetic"}
    # as saved from a DistributedDataParallel module
    state = {f"module.{k}": v for k, v in backbone.state_dict().items()}
    torch.save({"config": config, "backbone": state, "step": 3}, tmp_path / "checkpoint.pt")
    assert run_cli(["--checkpoint", str(tmp_path / "checkpoint.pt"), "--out", str(tmp_path / "c.json"),
                    *[a for a in SMALL if a not in ("--image-size", "24")]], capsys)[0] == 0
    result = json.loads((tmp_path / "c.json").read_text())
    assert result["mode"] == "checkpoint" and result["arch"] == "convnet-small" and result["image_size"] == 24
    assert 0.0 <= result["linear_acc"] <= 1.0


class Opaque:
    pass


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_checkpoint_errors(tmp_path, capsys):
    out = str(tmp_path / "x.json")
    args = ["--out", out, *SMALL]
    assert_error(["--checkpoint", str(tmp_path / "nothing.pt"), *args], capsys,
                 "checkpoint .*nothing.pt does not exist")

    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x80\x04 this is not a checkpoint" * 10)
    assert_error(["--checkpoint", str(corrupt), *args], capsys,
                 "corrupt.pt is corrupt or not a torch.save file: Unsupported operand")
    torch.save({"config": {}, "backbone": {}}, tmp_path / "cut.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "cut.pt").read_bytes()[:100])
    assert_error(["--checkpoint", str(tmp_path / "cut.pt"), *args], capsys, "cut.pt is corrupt or not a torch.save file")

    config = {"arch": "resnet18-small", "image_size": 24, "in_channels": 3, "format": "synthetic"}
    other = build_backbone("convnet-small", 3, 24).state_dict()
    torch.save({"config": config, "backbone": other}, tmp_path / "other.pt")
    assert_error(["--checkpoint", str(tmp_path / "other.pt"), *args], capsys,
                 "other.pt: its backbone weights do not fit arch 'resnet18-small'")
    assert_error(["--checkpoint", str(tmp_path / "other.pt"), "--arch", "resnet18", *args], capsys,
                 "trained with arch 'resnet18-small', but --arch 'resnet18' was given")

    torch.save({"config": config}, tmp_path / "nobackbone.pt")
    assert_error(["--checkpoint", str(tmp_path / "nobackbone.pt"), *args], capsys, "nobackbone.pt lacks \\['backbone'\\]")

    small = dict(config, arch="convnet-small", image_size=8)
    torch.save({"config": small, "backbone": other}, tmp_path / "tiny.pt")
    assert_error(["--checkpoint", str(tmp_path / "tiny.pt"), *args], capsys,
                 "tiny.pt: its config cannot build a backbone: image_size 8 is too small")

    good = dict(config, arch="convnet-small")
    torch.save({"config": good, "backbone": other, "extra": Opaque()}, tmp_path / "pickled.pt")
    assert_error(["--checkpoint", str(tmp_path / "pickled.pt"), *args], capsys,
                 "pickled.pt holds Python objects.*Opaque.*--trust-checkpoint")
    assert run_cli(["--checkpoint", str(tmp_path / "pickled.pt"), "--trust-checkpoint", *args], capsys)[0] == 0
    assert json.loads((tmp_path / "x.json").read_text())["mode"] == "checkpoint"


def test_data_and_model_errors(tmp_path, capsys):
    out = ["--out", str(tmp_path / "x.json"), "--no-progress"]
    assert_error(["--raw-pixels", "--format", "rafdb", "--data", str(tmp_path / "missing"), *out], capsys,
                 "--data .*missing does not exist")
    assert_error(["--raw-pixels", "--format", "rafdb", *out], capsys, "--format rafdb needs --data PATH")
    (tmp_path / "empty" / "train" / "happy").mkdir(parents=True)
    (tmp_path / "empty" / "test" / "happy").mkdir(parents=True)
    assert_error(["--raw-pixels", "--format", "imagefolder", "--data", str(tmp_path / "empty"), *out], capsys,
                 "train split is empty")
    assert_error(["--random-init", "--format", "synthetic", "--image-size", "12", "--num-train", "20",
                  "--num-test", "10", *out], capsys, "image_size 12 is too small for resnet18")
    assert_error(["--raw-pixels", "--format", "synthetic", "--out", str(tmp_path)], capsys,
                 "--out .* is a folder")


@pytest.mark.parametrize("argv, pattern", [
    (["--raw-pixels", "--format", "affectnet"], "argument --format: invalid choice: 'affectnet'"),
    (["--raw-pixels", "--random-init", "--format", "synthetic"], "not allowed with argument"),
    (["--format", "synthetic"], "one of the arguments --checkpoint --random-init --raw-pixels is required"),
    (["--raw-pixels", "--format", "synthetic", "--batch-size", "0"], "--batch-size: expected an integer >= 1"),
    (["--raw-pixels", "--format", "synthetic", "--seed", "-1"], "--seed: expected an integer >= 0"),
    (["--raw-pixels", "--format", "synthetic", "--num-train", "many"], "--num-train: expected an integer"),
    (["--raw-pixels", "--format", "synthetic", "--bogus"], "unrecognized arguments: --bogus"),
])
def test_argument_errors_are_one_line(tmp_path, capsys, argv, pattern):
    assert_error([*argv, "--out", str(tmp_path / "x.json")], capsys, pattern)
    assert not (tmp_path / "x.json").exists()


def test_help_lists_every_option_with_its_default(capsys):
    from cwarp.eval.cli import build_parser

    status, out, _ = run_cli(["--help"], capsys)
    assert status == 0
    # Each option's help text: tests/test_console_scripts.py.
    options = [a for a in build_parser()._actions if a.option_strings and a.dest != "help"]
    assert len(options) == 17
    flat = " ".join(out.split())  # help lines wrap with the terminal width
    assert "{synthetic,synthetic-hard,rafdb,fer2013,imagefolder}" in flat
    assert "(default: 256)" in flat and "(default: 0)" in flat


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for a machine without CUDA")
def test_cuda_device_without_cuda(tmp_path, capsys):
    assert_error(["--random-init", "--device", "cuda", "--out", str(tmp_path / "x.json"), *SMALL], capsys,
                 "--device cuda was asked for but CUDA is not available")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_features_match_cpu():
    torch.manual_seed(0)
    faces = TensorFaces(torch.randint(0, 256, (6, 3, 24, 24), dtype=torch.uint8), torch.zeros(6), ("x",))
    model = build_backbone("convnet-small", 3, 24)
    cpu = extract_features(model, faces, 4, "cpu", progress=False)
    gpu = extract_features(model, faces, 4, "cuda", progress=False)
    assert gpu.device.type == "cpu" and torch.allclose(cpu, gpu, atol=1e-3, rtol=1e-3)
