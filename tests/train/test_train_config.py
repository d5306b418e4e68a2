"""cwarp.train.config: the dataclasses, the parser built from them, config files, validation and migration."""
import argparse
import dataclasses
import json

import pytest

from cwarp.train import config as C

# Every flag cwarp-train had before the config became dataclasses: none may change name.
FLAGS = ("--data --format --method --out --arch --image-size --epochs --batch-size --seed --device --resume "
         "--precision --num-train --data-seed --workers --optimizer --lr --weight-decay --momentum --warmup-epochs "
         "--final-lr-ratio --base-momentum --proj-dim --hidden-dim --head-bn --sync-bn --num-negatives "
         "--warps-per-negative --warp-magnitude --warp-radius --tau --byol-weight --nce-weight --in-batch "
         "--negatives-through --nce-on --crop-scale --rotation --jitter-strength --grayscale-p --log-every "
         "--save-every --progress --tensorboard").split()


def test_every_flag_kept_with_help_and_choices():
    parser = C.build_parser()
    actions = {a.option_strings[0]: a for a in parser._actions if a.option_strings}
    for flag in FLAGS + ["--config", "--skip-corrupt"]:
        assert flag in actions, flag
        assert actions[flag].help, flag
    arch = actions["--arch"]
    assert [arch.type(name) for name in ("auto", *C.ARCHS, "timm:resnet10t")] == ["auto", *C.ARCHS, "timm:resnet10t"]
    for bad in ("vit", "timm:", "resnet"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected one of auto, resnet18, .* or timm:NAME"):
            arch.type(bad)
    assert tuple(actions["--format"].choices) == C.FORMATS
    assert tuple(actions["--method"].choices) == C.METHODS


def test_online_evaluation_flags_round_trip_through_the_saved_config(tmp_path):
    actions = {a.option_strings[0]: a for a in C.build_parser()._actions if a.option_strings}
    for flag in ("--eval-every", "--eval-size", "--eval-bank", "--eval-knn-k", "--eval-knn-temperature",
                 "--eval-linear"):
        assert flag in actions and actions[flag].help, flag
    from cwarp._constants import KNN_K, KNN_TEMPERATURE
    from cwarp.eval import probe

    ev = C.RunConfig().evaluation
    assert ev.eval_every == 0 and (ev.eval_knn_k, ev.eval_knn_temperature) == (KNN_K, KNN_TEMPERATURE)
    assert probe.KNN_K is KNN_K and probe.KNN_TEMPERATURE is KNN_TEMPERATURE     # one copy, cwarp-probe's
    cfg, explicit = C.parse_command_line(["--out", str(tmp_path / "r"), "--eval-every", "7", "--eval-linear",
                                          "--eval-knn-k", "5", "--eval-bank", "300"])
    assert explicit >= {"eval_every", "eval_linear", "eval_knn_k", "eval_bank"}
    cfg = C.validate(cfg)
    json_path, toml_path = C.write_config_files(cfg, str(tmp_path / "r"))
    assert "[evaluation]\neval_every = 7\n" in open(toml_path).read()
    for path in (json_path, toml_path):
        loaded = C.validate(C.parse_command_line(["--config", path])[0])
        assert loaded.evaluation == cfg.evaluation == C.EvalConfig(7, 1000, 300, 5, 0.07, True), path
    # A checkpoint from before the online evaluation loads with it off.
    old = {k: v for k, v in cfg.to_flat().items() if not k.startswith("eval_")}
    assert C.migrate(old).evaluation.eval_every == 0


def test_one_copy_of_the_names():
    from cwarp.data.build import FORMATS
    from cwarp import models
    from cwarp.train import methods, optim

    assert C.FORMATS is FORMATS
    assert models.ARCHS is C.ARCHS and optim.OPTIMIZERS is C.OPTIMIZERS
    assert tuple(methods.METHOD_CLASSES) == C.METHODS
    from cwarp.ops._checks import KINDS
    assert C.WARP_KINDS == KINDS


def test_groups_are_frozen_and_flat_round_trips():
    cfg = C.RunConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.optimisation.lr = 1.0
    flat = cfg.to_flat()
    assert flat["lr"] == 2e-3 and flat["warp_radius"] == [0.4, 0.6] and flat["config_version"] == C.CONFIG_VERSION
    assert C.RunConfig.from_flat(flat) == cfg
    changed = cfg.replace(lr=0.5, warp_radius=[0.2, 0.4])
    assert changed.optimisation.lr == 0.5 and changed.negatives.warp_radius == (0.2, 0.4)
    with pytest.raises(C.ConfigError, match="unknown config key"):
        C.RunConfig.from_flat({"learning_rate": 1})


def test_validate_resolves_arch_and_method_fields():
    cfg = C.validate(C.RunConfig().replace(out="x"))
    assert cfg.arch == "convnet-small"                      # --arch auto on the CPU
    assert C.resolve_arch("auto", "cuda") == "resnet18" and C.resolve_arch("resnet50", "cpu") == "resnet50"
    byol = C.validate(cfg.replace(method="byol"))
    assert byol.negatives.num_negatives == 0 and byol.negatives.nce_weight == 0.0
    with pytest.raises(C.ConfigError, match="--out: a run folder is required"):
        C.validate(C.RunConfig())
    with pytest.raises(C.ConfigError, match=r"--num-train: expected int, got 2.5"):
        C.validate(cfg.replace(num_train=2.5))


def test_config_file_with_sections_and_flags_on_top(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('method = "byol"\nout = "runs/a"\n[optimisation]\nlr = 0.01\nepochs = 3\n'
                    '[negatives]\nwarp-radius = [0.2, 0.4]\n')
    cfg, explicit = C.parse_command_line(["--config", str(path), "--epochs", "5"])
    assert cfg.method == "byol" and cfg.out == "runs/a" and cfg.optimisation.lr == 0.01
    assert cfg.optimisation.epochs == 5                     # the flag wins
    assert cfg.negatives.warp_radius == (0.2, 0.4)
    assert explicit == {"method", "out", "lr", "epochs", "warp_radius"}


def test_saved_run_config_loads_back(tmp_path):
    cfg = C.validate(C.RunConfig().replace(out=str(tmp_path / "r"), lr=0.03, in_batch=True))
    cfg = cfg.replace(in_channels=3, mean=[0.5, 0.5, 0.5], std=[0.2, 0.2, 0.2])
    json_path, toml_path = C.write_config_files(cfg, str(tmp_path / "r"))
    for path in (json_path, toml_path):
        loaded, _ = C.parse_command_line(["--config", path])
        assert C.validate(loaded) == C.validate(cfg.replace(in_channels=None, mean=None, std=None)), path
    assert json.load(open(json_path))["in_channels"] == 3      # the probe's keys stay in config.json


def test_yaml_config(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("lr: 0.01\nout: runs/y\n")
    try:
        import yaml  # noqa: F401
    except ImportError:
        with pytest.raises(C.ConfigError, match="needs PyYAML"):
            C.parse_command_line(["--config", str(path)])
        return
    cfg, _ = C.parse_command_line(["--config", str(path)])
    assert cfg.optimisation.lr == 0.01


@pytest.mark.parametrize("text, match", [
    ("[1, 2]", "expected a table"), ("{", "not valid JSON"), ('{"lr": 1, "speed": 2}', "unknown setting")])
def test_bad_json_config(tmp_path, text, match):
    path = tmp_path / "c.json"
    path.write_text(text)
    with pytest.raises(C.ConfigError, match=match):
        C.load_config_file(str(path))


def test_migrate_an_old_checkpoint_config():
    old = {k: v for k, v in C.DEFAULTS.items() if k not in ("nce_on", "negatives_through", "skip_corrupt")}
    old.update(arch="resnet18", in_channels=3)
    cfg = C.migrate(old)                                    # no config_version: version 1
    assert cfg.negatives.nce_on == "both" and cfg.negatives.negatives_through == "target"
    assert cfg.arch == "resnet18" and cfg.data.in_channels == 3 and cfg.data.skip_corrupt is False
    assert C.migrate(cfg.to_flat()) == cfg                  # today's version is read as it is
    with pytest.raises(C.ConfigError, match="newer than this cwarp"):
        C.migrate(dict(cfg.to_flat(), config_version=C.CONFIG_VERSION + 1))


def test_a_version_3_config_ran_without_the_fields_added_in_4(tmp_path, monkeypatch):
    v3 = {k: v for k, v in C.RunConfig().replace(out="x").to_flat().items() if k not in C.ADDED_IN_4}
    v3["config_version"] = 3
    # A version-3 run had local warps on the landmarks, negatives with gradient for every anchor, the layout of
    # its device and no compilation: migrate takes ADDED_IN_4's values for them, not today's defaults.
    cfg = C.migrate(v3)
    assert (cfg.negatives.warp_centers, cfg.negatives.negative_kind) == ("landmarks", "local")
    assert cfg.negatives.detach_negatives is False and cfg.negatives.negative_anchors == 1.0
    assert cfg.memory_format == "auto" and cfg.compile is False
    monkeypatch.setitem(C.ADDED_IN_4, "negative_anchors", 0.5)     # as if version 3 had run with half
    assert C.migrate(v3).negatives.negative_anchors == 0.5
    assert C.migrate(dict(v3, config_version=4)).negatives.negative_anchors == 1.0   # version 4: today's default
    path = tmp_path / "config.json"
    path.write_text(json.dumps(dict(v3, in_channels=3)))
    assert C.load_config_file(str(path))["negative_anchors"] == 0.5
    assert set(C.ADDED_IN_4) <= set(C.DEFAULTS)


def test_run_differences_ignore_what_a_resume_may_change():
    a = C.validate(C.RunConfig().replace(out="a"))
    assert C.run_differences(a, a.replace(out="b", device="cpu", log_every=3, in_channels=3)) == {}
    assert C.run_differences(a, a.replace(lr=0.1)) == {"lr": (a.optimisation.lr, 0.1)}


def test_each_method_gets_its_own_defaults_and_explicit_values_win(tmp_path):
    def views(argv):
        v = C.parse_command_line(["--out", "x"] + argv)[0].views
        return v.crop_scale, v.rotation, v.jitter_strength

    mild, strong = ((0.8, 1.0), 5.0, 0.5), ((0.5, 1.0), 10.0, 1.0)
    assert views([]) == views(["--method", "contrawarp"]) == mild
    assert views(["--method", "supervised"]) == ((1.0, 1.0), 0.0, 0.0)
    assert views(["--method", "byol"]) == strong
    assert views(["--method", "byol", "--rotation", "3"]) == ((0.5, 1.0), 3.0, 1.0)
    # The method may come from a config file; its values and the flags still win over the method's defaults.
    path = tmp_path / "byol.toml"
    path.write_text('method = "byol"\n[views]\njitter_strength = 0.7\n')
    assert views(["--config", str(path)]) == ((0.5, 1.0), 10.0, 0.7)
    assert views(["--config", str(path), "--crop-scale", "0.9,1"]) == ((0.9, 1.0), 10.0, 0.7)
    for method, changes in C.METHOD_DEFAULTS.items():
        assert set(changes) <= set(C.DEFAULTS), method
        assert C.defaults_for(method) == {**C.DEFAULTS, **changes}


def test_help_names_the_defaults_that_differ_by_method():
    text = " ".join(C.build_parser().format_help().split())
    assert "(--method byol: 0.5,1; --method supervised: 1,1; otherwise the default below)" in text


def test_a_version_1_config_without_the_view_fields_ran_with_the_former_views():
    old = {k: v for k, v in C.DEFAULTS.items()
           if k not in ("crop_scale", "rotation", "jitter_strength", "warp_radius", "warp_magnitude")}
    cfg = C.migrate(old)
    assert cfg.views.crop_scale == (0.5, 1.0) and cfg.views.rotation == 10.0 and cfg.views.jitter_strength == 1.0
    assert cfg.negatives.warp_radius == (0.15, 0.35) and cfg.negatives.warp_magnitude == (0.05, 0.15)


def test_config_differences():
    saved = {"lr": 0.1, "warp_magnitude": [0.05, 0.15], "epochs": 10}
    req = {"lr": 0.2, "warp_magnitude": (0.05, 0.15), "epochs": 10}
    assert C.config_differences(saved, req, ["lr", "warp_magnitude", "epochs"]) == {"lr": (0.1, 0.2)}
    assert C.config_differences(saved, req, ["epochs"]) == {}
