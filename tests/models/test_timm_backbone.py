"""--arch timm:NAME: timm models as backbones (pooled features), in checkpoints, the trainer and the probe.

The models are timm's own "test_*" configurations and a half-width
MobileNetV3: a few hundred thousand parameters, built untrained (no download).
"""
import os
import subprocess
import sys

import pytest
import torch

from console_scripts import TIMEOUT, assert_one_error_line, run_script
from cwarp.models import backbone_from_checkpoint, build_backbone, convert_sync_batchnorm, save_checkpoint
from cwarp.models.timm_backbone import TimmBackbone, check_timm_arch
from cwarp.train import config as C

# Every test here imports timm (seconds), builds timm models, or starts an interpreter or a script.
pytestmark = pytest.mark.slow


@pytest.fixture
def timm():
    return pytest.importorskip("timm")


@pytest.fixture
def no_timm(tmp_path):
    """A PYTHONPATH entry whose ``timm`` package fails to import, as where timm is not installed."""
    fake = tmp_path / "fake" / "timm"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'timm'\", name='timm')\n")
    return str(tmp_path / "fake")


# name, in_channels, image_size: a CNN and a ViT (fixed input size) at FER2013's 1 x 48 and 3 x 64, and a model
# whose pooled output (head_hidden_size) is wider than its last stage (num_features).
CASES = [("test_resnet", 3, 64), ("test_resnet", 1, 48), ("test_vit", 3, 64), ("test_vit", 1, 48),
         ("mobilenetv3_small_050", 1, 48)]


@pytest.mark.parametrize("name, in_channels, image_size", CASES)
def test_backbone_gives_the_pooled_features(timm, name, in_channels, image_size):
    torch.manual_seed(0)
    model = build_backbone(f"timm:{name}", in_channels, image_size)
    assert isinstance(model, TimmBackbone) and model.training
    assert (model.arch, model.in_channels, model.image_size) == (f"timm:{name}", in_channels, image_size)
    # The same model as timm builds it without a classifier: same weights from the same seed, same output.
    torch.manual_seed(0)
    sized = {"img_size": image_size} if name == "test_vit" else {}
    reference = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_channels, **sized).eval()
    model.eval()
    x = torch.randn(3, in_channels, image_size, image_size)
    with torch.no_grad():
        out, expected = model(x), reference(x)
    assert out.shape == (3, model.feature_dim) and torch.isfinite(out).all()
    assert model.feature_dim == getattr(reference, "head_hidden_size", reference.num_features)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    # A checkpoint's backbone weights are timm's state_dict under "net.".
    assert model.state_dict().keys() == {f"net.{k}" for k in reference.state_dict()}


def test_building_draws_the_seeded_weights_and_leaves_batchnorm_statistics(timm):
    torch.manual_seed(3)
    first = build_backbone("timm:test_resnet", 3, 32)
    torch.manual_seed(3)
    second = build_backbone("timm:test_resnet", 3, 32)
    for (key, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), key
    # The build's probing forward runs in eval mode: the running statistics are still their initial values.
    bn = next(m for m in first.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean)) and int(bn.num_batches_tracked) == 0


def test_a_size_the_model_cannot_take_is_one_clear_error(timm):
    # A ViT's patches must tile the image: 40 is not a multiple of test_vit's 16.
    with pytest.raises(ValueError, match=r"^the timm model test_vit for 3-channel 40 x 40 images fails on such an "
                                         r"input \(AssertionError: .*16.*\); choose another --image-size or model$"):
        build_backbone("timm:test_vit", 3, 40)


def test_unknown_names_and_forms(timm):
    with pytest.raises(ValueError, match=r"has no model 'not_a_model' .*timm.list_models"):
        build_backbone("timm:not_a_model", 3, 64)
    with pytest.raises(ValueError, match=r"Invalid pretrained tag \(typo\) for test_resnet.*timm.list_models"):
        check_timm_arch("timm:test_resnet.typo")
    assert check_timm_arch("timm:test_resnet.r160_in1k") == "test_resnet.r160_in1k"    # a tag picks no weights
    with pytest.raises(ValueError, match="expected timm:NAME"):
        check_timm_arch("timm:")
    with pytest.raises(ValueError, match="unknown arch 'vit'; choose one of .* or timm:NAME"):
        build_backbone("vit", 3, 64)


def test_checkpoint_rebuilds_the_timm_backbone(timm, tmp_path):
    torch.manual_seed(1)
    model = build_backbone("timm:test_vit", 1, 48)
    config = {"arch": "timm:test_vit", "image_size": 48, "in_channels": 1}
    save_checkpoint(str(tmp_path / "checkpoint.pt"), {"config": config, "backbone": model.state_dict()})
    loaded, saved = backbone_from_checkpoint(str(tmp_path / "checkpoint.pt"))
    assert saved["arch"] == "timm:test_vit" and isinstance(loaded, TimmBackbone) and loaded.feature_dim == 64
    for (key, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), key
    with pytest.raises(ValueError, match="trained with arch 'timm:test_vit', but --arch 'timm:test_resnet'"):
        backbone_from_checkpoint(str(tmp_path / "checkpoint.pt"), arch="timm:test_resnet")


def test_sync_batchnorm_keeps_timms_fused_activation(timm):
    net = convert_sync_batchnorm(build_backbone("timm:test_efficientnet", 3, 32), "timm:test_efficientnet")
    kinds = {type(m).__name__ for m in net.modules()}
    assert "SyncBatchNormAct" in kinds and "BatchNormAct2d" not in kinds and "BatchNorm2d" not in kinds
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) and type(m) is torch.nn.SyncBatchNorm
                   for m in net.modules())   # no bare SyncBatchNorm that lost its activation


def test_config_accepts_timm_names_and_rejects_unknown_ones(timm, tmp_path):
    cfg = C.validate(C.parse_command_line(["--out", str(tmp_path), "--arch", "timm:test_resnet"])[0])
    assert cfg.arch == "timm:test_resnet"
    with pytest.raises(C.ConfigError, match=r"^--arch: timm .* has no model 'resnet_typo' .*timm.list_models"):
        C.validate(C.parse_command_line(["--out", str(tmp_path), "--arch", "timm:resnet_typo"])[0])
    # A config file's arch goes through the same check.
    path = tmp_path / "run.toml"
    path.write_text('arch = "vit"\n')
    with pytest.raises(C.ConfigError, match=r"^--arch: expected one of auto, .* or timm:NAME \(a timm model\), "
                                            r"got 'vit'"):
        C.validate(C.parse_command_line(["--out", str(tmp_path), "--config", str(path)])[0])


def test_parsing_a_timm_arch_imports_neither_timm_nor_torch():
    code = ("import sys; from cwarp.train import config as C; C.build_parser().format_help(); "
            "C.parse_command_line(['--out', 'x', '--arch', 'timm:test_resnet']); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('timm', 'torch')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_trainer_and_probe_run_a_timm_backbone(timm, tmp_path):
    """cwarp-train on 1-channel images (FER2013's) with a timm backbone, then cwarp-probe on its checkpoint."""
    out = tmp_path / "run"
    fer = tmp_path / "fer.csv"
    rows = ["emotion,pixels,Usage"] + [f"{i % 7},{' '.join(str((i * 13 + j) % 256) for j in range(48 * 48))},"
                                       f"{'Training' if i < 16 else 'PublicTest'}" for i in range(24)]
    fer.write_text("\n".join(rows) + "\n")
    done = run_script("cwarp-train", "--out", out, "--format", "fer2013", "--data", fer, "--arch", "timm:test_resnet",
                      "--image-size", "48", "--batch-size", "8", "--epochs", "1", "--hidden-dim", "32",
                      "--proj-dim", "16", "--num-negatives", "1", "--warps-per-negative", "1", "--progress", "false")
    assert done.returncode == 0, done.stderr
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["config"]["arch"] == "timm:test_resnet" and state["config"]["in_channels"] == 1
    probe = run_script("cwarp-probe", "--checkpoint", out / "checkpoint.pt", "--format", "synthetic",
                       "--num-train", "70", "--num-test", "35", "--no-progress", "--out", tmp_path / "probe.json")
    assert probe.returncode == 0, probe.stderr
    assert "[timm:test_resnet]" in probe.stdout


def test_probe_random_init_takes_a_timm_arch(timm, tmp_path):
    done = run_script("cwarp-probe", "--random-init", "--arch", "timm:test_vit", "--format", "synthetic",
                      "--num-train", "70", "--num-test", "35", "--image-size", "32", "--no-progress",
                      "--out", tmp_path / "probe.json")
    assert done.returncode == 0, done.stderr
    assert "[random timm:test_vit]" in done.stdout
    bad = run_script("cwarp-probe", "--random-init", "--arch", "timm:nope_model", "--format", "synthetic",
                     "--num-train", "70", "--num-test", "35", "--out", tmp_path / "bad.json")
    assert_one_error_line(bad, "cwarp-probe", "has no model 'nope_model'")


def test_without_timm_a_timm_arch_is_one_line_saying_to_install_it(no_timm, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([no_timm, os.environ.get("PYTHONPATH", "")])}
    common = ["--format", "synthetic", "--num-train", "8", "--batch-size", "4", "--epochs", "1", "--progress", "false"]
    train = subprocess.run([os.path.join(os.path.dirname(sys.executable), "cwarp-train"), "--out",
                            str(tmp_path / "run"), "--arch", "timm:test_resnet", *common],
                           capture_output=True, text=True, timeout=TIMEOUT, env=env)
    assert_one_error_line(train, "cwarp-train", "the timm package is not installed: pip install 'cwarp[timm]'")
    assert not (tmp_path / "run").exists()
    probe = subprocess.run([os.path.join(os.path.dirname(sys.executable), "cwarp-probe"), "--random-init",
                            "--arch", "timm:test_resnet", "--format", "synthetic", "--num-train", "8", "--num-test",
                            "8", "--out", str(tmp_path / "p.json")], capture_output=True, text=True,
                           timeout=TIMEOUT, env=env)
    assert_one_error_line(probe, "cwarp-probe", "pip install 'cwarp[timm]'")
