"""The config files under configs/: each parses and validates as cwarp-train reads it (no run)."""
import pathlib

import pytest
import torch

from cwarp.train import config as C

CONFIGS = sorted((pathlib.Path(__file__).resolve().parents[2] / "configs").glob("*.toml"))


def test_there_are_config_files():
    assert [path.name for path in CONFIGS] == ["paper_resnet18_224.toml"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.name)
def test_config_file_parses_and_validates(path):
    cfg, explicit = C.parse_command_line(["--config", str(path), "--out", "runs/x"])
    assert "NOT YET RUN ON A GPU" in path.read_text()
    if cfg.device == "cuda" and not torch.cuda.is_available():
        # Validation asks torch for CUDA (and SyncBatchNorm for it); everything else is checked on the CPU.
        with pytest.raises(C.ConfigError, match="--device: cuda was asked for"):
            C.validate(cfg)
        cfg = cfg.replace(device="cpu", sync_bn=False)
    valid = C.validate(cfg)
    # Every setting the file names is one it keeps (none is overridden by a method's rules).
    flat = valid.to_flat()
    assert all(flat[k] == v for k, v in cfg.to_flat().items() if k in explicit and k not in ("device", "sync_bn"))


def test_the_papers_setting():
    cfg, _ = C.parse_command_line(["--config", str(CONFIGS[0]), "--out", "runs/x"])
    assert (cfg.method, cfg.arch, cfg.image_size, cfg.device) == ("contrawarp", "resnet18", 224, "cuda")
    assert cfg.byol.sync_bn and cfg.optimisation.batch_size % 8 == 0     # 8 GPUs of a node share it
