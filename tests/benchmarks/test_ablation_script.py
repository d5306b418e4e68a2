"""benchmarks/ablation.py: the arms, the paired statistics, bad values refused up front, and a toy run that a
second call reuses."""
import json
import os

import pytest


@pytest.fixture(scope="module")
def script(load_script):
    return load_script("benchmarks/ablation.py")


@pytest.fixture
def no_pretraining(script, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a pretraining started before the arguments were checked")

    monkeypatch.setattr(script.protocol, "pretrain_runs", refuse)


def test_train_flags_pass_only_what_was_given(script):
    import argparse

    args = argparse.Namespace(arch=None, precision="auto", warmup_epochs=1.0, crop_scale="0.8,1", rotation=None,
                              jitter_strength=0.5, grayscale_p=None)
    assert script.train_flags(args) == ["--precision", "auto", "--warmup-epochs", "1.0", "--crop-scale", "0.8,1",
                                        "--jitter-strength", "0.5"]
    args.arch = "convnet-small-s2"
    assert script.train_flags(args)[:2] == ["--arch", "convnet-small-s2"]


@pytest.mark.parametrize("extra, match", [
    (["--rotation", "-5"], "--rotation"),
    (["--jitter-strength", "9"], "--jitter-strength"),
    (["--warmup-epochs", "-1"], "--warmup-epochs"),
    (["--num-train", "5"], "--num-train"),
    (["--epochs", "0"], "--epochs"),
    (["--wallclock-epochs", "0"], "--wallclock-epochs"),
    (["--warp-sizes", "0.4,0.6"], "--warp-sizes: expected RMIN,RMAX:MMIN,MMAX"),
    (["--warp-sizes", "0.6,0.4:0.1,0.2"], "--warp-radius"),
    (["--negatives", "0"], "--num-negatives"),
    (["--image-size", "8"], "--image-size"),
    (["--arch", "vgg"], "--arch"),
    (["--arms", "byol"], "--arms: the comparisons are against contrawarp"),
    (["--arms", "contrawarp", "swav"], "invalid choice"),
])
def test_bad_values_are_refused_before_any_pretraining(script, no_pretraining, capsys, extra, match):
    with pytest.raises(SystemExit) as e:
        script.main(extra)
    assert e.value.code == 2
    assert match in capsys.readouterr().err


def test_every_arm_and_the_default_sweeps_pass_the_checks(script, no_pretraining):
    with pytest.raises(AssertionError, match="a pretraining started"):
        script.main(["--seeds", "3", "--controls", "--arms", "contrawarp", "byol", "byol_wallclock", "supervised"])


def test_default_seeds_are_fresh_and_paired(script):
    assert len(script.FRESH_SEEDS) >= 8 and not set(script.FRESH_SEEDS) & {0, 1, 2}
    assert script.protocol.TEST_DATA_SEED not in (script.protocol.PRETRAIN_DATA_SEED,
                                                  script.protocol.VALIDATION_DATA_SEED)


def test_arm_jobs_budgets_and_flags(script):
    args = script._parser().parse_args(["--seeds", "3", "--controls", "--arms", "contrawarp", "byol_wallclock",
                                        "byol_searched", "byol_searched_wallclock", "supervised",
                                        "--wallclock-epochs", "12", "--supervised-epochs", "30"])
    args.arms = list(dict.fromkeys(args.arms + list(script.CONTROLS)))
    jobs = script.arm_jobs(args, {}, [])
    from cwarp.train.config import config_from_argv

    cfg = {arm: config_from_argv(argv) for (arm, _), (_, argv) in jobs.items()}
    assert cfg["contrawarp"].optimisation.epochs == 7 and cfg["byol_wallclock"].optimisation.epochs == 12
    assert cfg["byol_searched"].optimisation.epochs == 7 and cfg["byol_searched_wallclock"].optimisation.epochs == 12
    searched = config_from_argv(["--method", "byol", "--out", "x"] + script.select_recipe.SEARCHED_BYOL)
    for arm in ("byol_searched", "byol_searched_wallclock"):
        assert cfg[arm].method == "byol" and cfg[arm].views == searched.views
    assert cfg["byol_wallclock"].views != searched.views
    assert cfg["supervised"].optimisation.epochs == 30 and cfg["supervised"].method == "supervised"
    assert cfg["uniform_centres"].negatives.warp_centers == "uniform"
    assert cfg["affine_negatives"].negatives.negative_kind == "affine"
    assert cfg["infonce_only"].negatives.byol_weight == 0.0
    assert cfg["target_negatives"].negatives.negatives_through == "target"
    assert all(c.seed == 3 for c in cfg.values())


def _probe(acc_correct, n=100):
    labels = [i % 7 for i in range(n)]
    preds = [y if i < acc_correct else (y + 1) % 7 for i, y in enumerate(labels)]
    return {"linear_acc": acc_correct / n, "balanced_acc": acc_correct / n, "labels": labels, "predictions": preds}


def test_gap_report_pairs_seeds_and_faces(script):
    per_seed = {3: {"contrawarp": _probe(40), "byol": _probe(30)}, 4: {"contrawarp": _probe(35), "byol": _probe(36)},
                5: {"contrawarp": _probe(50), "byol": _probe(20)}}
    r = script.gap_report("contrawarp", "byol", per_seed, "test")
    assert r["gaps"] == pytest.approx([10.0, -1.0, 30.0]) and r["ahead"] == 2
    assert r["mean"] == pytest.approx(13.0) and r["ci95"][0] < 13.0 < r["ci95"][1]
    assert r["df"] == 2 and 0 < r["t_p"] < 1 and r["wilcoxon_method"] == "exact"
    # Seed 3: faces 30..39 only ContraWarping gets right; none only BYOL.
    assert r["mcnemar"][3][:2] == (10, 0) and r["mcnemar"][3][2] == pytest.approx(2 * 0.5 ** 10)
    text = "\n".join(script.format_gap("contrawarp", "byol", r, "test"))
    assert "95 % bootstrap CI" in text and "Wilcoxon" in text and "McNemar" in text
    per_seed[4]["byol"]["labels"] = per_seed[4]["byol"]["labels"][::-1]
    with pytest.raises(ValueError, match="different test faces"):
        script.gap_report("contrawarp", "byol", per_seed, "test")


def test_toy_ablation_runs_then_reuses_its_runs_and_probes(script, tmp_path, monkeypatch, capsys):
    from cwarp.apps import demo

    monkeypatch.setattr(demo, "DEMO_RECIPE", dict(image_size=16, arch="convnet-small", num_train=64, epochs=1,
                                                  batch_size=32, warmup_epochs=0, probe_test=64, eval_bank=32,
                                                  eval_size=32))
    p = script.protocol
    monkeypatch.setattr(p, "VALIDATION", p.Split("val", p.VALIDATION_DATA_SEED, 64, 48))
    monkeypatch.setattr(p, "TEST", p.Split("test", p.TEST_DATA_SEED, 64, 56))
    out, record_path = tmp_path / "abl", tmp_path / "abl.json"
    argv = ["--seeds", "3", "4", "--arms", "contrawarp", "byol", "--no-sweep", "--out", str(out),
            "--json", str(record_path)]
    assert script.main(argv) == 0
    record = json.loads(record_path.read_text())
    assert record["test_data_seed"] == p.TEST_DATA_SEED and set(record["splits"]) == {"val", "test"}
    test = record["splits"]["test"]
    assert test["split"]["test"] == 56 and set(test["accuracy"]["3"]) == {"contrawarp", "byol", "random_init",
                                                                          "raw_pixels"}
    gap = test["gaps_vs_contrawarp"]["byol"]
    assert gap["seeds"] == [3, 4] and len(gap["gaps"]) == 2 and set(gap["mcnemar"]) == {"3", "4"}
    assert all(r["seconds"] > 0 for r in record["runs"].values())
    run = out / "synthetic" / "contrawarp" / "seed3"
    stamps = {name: os.stat(run / name).st_mtime_ns for name in ("checkpoint.pt", "timing.json", "probe_test.json")}
    assert "contrawarp - byol (test)" in capsys.readouterr().out
    assert script.main(argv) == 0                   # everything cached: no pretraining, no probe again
    assert stamps == {name: os.stat(run / name).st_mtime_ns for name in stamps}
    assert json.loads(record_path.read_text())["splits"]["test"]["accuracy"] == test["accuracy"]


@pytest.mark.slow
def test_side_by_side_pretrainings_finish_each_run(script, tmp_path):
    jobs = [script.job(m, m, 0, {"num_train": 64, "epochs": 1, "image_size": 16, "arch": "convnet-small",
                                 "batch_size": 32},
                       str(tmp_path)) for m in ("byol", "supervised")]
    jobs = [(out, argv + ["--hidden-dim", "32", "--proj-dim", "16", "--eval-every", "0"]) for out, argv in jobs]
    script.protocol.pretrain_runs(jobs, parallel=2)
    for out, _ in jobs:
        assert os.path.exists(os.path.join(out, "checkpoint.pt"))


def test_a_stopped_run_stops_the_runs_after_it(script, monkeypatch):
    calls = []

    def fake(argv, threads):
        calls.append(argv)
        return {"status": "interrupted" if len(calls) == 1 else "done", "out": argv[0]}

    monkeypatch.setattr(script.protocol, "_timed_pretrain", fake)
    with pytest.raises(SystemExit) as stop:
        script.protocol.pretrain_runs([("a", ["a"]), ("b", ["b"])], parallel=1, threads=1)
    assert stop.value.code == 130 and calls == [["a"]]     # Ctrl-C during a: b never starts
