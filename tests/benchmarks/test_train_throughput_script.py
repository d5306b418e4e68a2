"""benchmarks/train_throughput.py: the contenders, the floor verdicts and a toy run of one contender process."""
import json

import pytest


@pytest.fixture(scope="module")
def script(load_script):
    return load_script("benchmarks/train_throughput.py")


def _fake(times):
    def run(args, method, flags):
        t = times[(method, flags == [])]
        return {"times_s": [t, t, t], "first_step_s": 2 * t, "peak_rss_mb": 100.0, "negatives": "N=2x4 online",
                "dtype": "float32"}
    return run


@pytest.mark.parametrize("cw_new, byol_new, code", [(3.0, 1.0, 0), (3.0, 2.0, 1), (4.0, 1.0, 1)])
def test_floor_verdicts_and_exit_status(script, monkeypatch, tmp_path, capsys, cw_new, byol_new, code):
    times = {("contrawarp", False): 10.0, ("contrawarp", True): cw_new, ("byol", False): 5.0, ("byol", True): byol_new}
    monkeypatch.setattr(script, "_run_contender", _fake(times))
    out = tmp_path / "t.json"
    assert script.main(["--rounds", "1", "--json", str(out)]) == code
    record = json.loads(out.read_text())
    assert record["speedups"] == {"contrawarp": pytest.approx(10 / cw_new), "byol": pytest.approx(5 / byol_new)}
    assert record["former_flags"] == script.FORMER
    text = capsys.readouterr().out
    assert ("MISSES the 3x floor" in text) == (code == 1)


def test_levers_each_against_the_default_step(script, monkeypatch, tmp_path, capsys):
    seen = []

    def run(args, method, flags):
        seen.append((method, tuple(flags)))
        t = 4.0 if flags else 8.0
        return {"times_s": [t, t, t], "first_step_s": 30.0 if "--compile" in flags else t, "peak_rss_mb": 1.0,
                "negatives": "", "dtype": "float32", "cpu_s_per_step": t / 2}

    monkeypatch.setattr(script, "_run_contender", run)
    out = tmp_path / "levers.json"
    assert script.main(["--levers", "--rounds", "1", "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    byol = {name for name, (_, methods) in script.LEVERS.items() if "byol" in methods}
    assert len(seen) == len(script.LEVERS) + len(byol)
    assert ("byol", ("--detach-negatives", "true")) not in seen     # no negatives to detach
    assert record["levers"]["contrawarp: torch.compile"] == {"step_s": 4.0, "first_step_s": 30.0,
                                                             "cpu_s_per_step": 2.0, "cpu_speedup": 2.0}
    speedups = {r["contender"]: r["speedup"] for r in record["rows"] if r["case"].startswith("contrawarp")}
    assert speedups["cwarp-train default"] == 1.0 and speedups["stride-2 stem"] == 2.0
    assert "no floor" in capsys.readouterr().out
    for flags, _ in script.LEVERS.values():
        from cwarp.train.config import config_from_argv
        config_from_argv(["--out", "x"] + flags)                   # every lever is a valid cwarp-train option


def test_supervised_is_timed_at_its_default_step_and_only_with_levers(script, monkeypatch, tmp_path, capsys):
    seen = []

    def run(args, method, flags):
        seen.append((method, tuple(flags)))
        return {"times_s": [1.0] * 3, "first_step_s": 1.0, "peak_rss_mb": 1.0, "negatives": "", "dtype": "float32",
                "cpu_s_per_step": 0.5}

    monkeypatch.setattr(script, "_run_contender", run)
    assert script.main(["--levers", "--methods", "supervised", "--rounds", "1"]) == 0
    assert seen == [("supervised", ())]
    with pytest.raises(SystemExit) as e:
        script.main(["--methods", "contrawarp", "supervised"])
    assert e.value.code == 2 and "--methods supervised: only with --levers" in capsys.readouterr().err


def test_the_former_step_is_the_former_defaults_and_the_system_malloc(script):
    from cwarp.train.config import config_from_argv

    cfg = config_from_argv(["--out", "x"] + script.FORMER)
    assert cfg.reuse_freed_memory is False and cfg.negatives.num_negatives == 2
    assert cfg.negatives.warp_radius == (0.15, 0.35) and cfg.views.crop_scale == (0.5, 1.0)
    assert script.CONTENDERS["cwarp-train default"] == []


@pytest.mark.slow
def test_one_contender_process_times_real_steps(script):
    import argparse

    args = argparse.Namespace(arch="convnet-small", image_size=16, batch_size=4, steps=2, device="cpu")
    r = script._run_contender(args, "contrawarp", ["--hidden-dim", "32", "--proj-dim", "16"])
    assert len(r["times_s"]) == 2 and all(t > 0 for t in r["times_s"]) and r["cpu_s_per_step"] > 0
    assert r["dtype"] == "float32" and r["peak_rss_mb"] > 0 and r["negatives"].startswith("N=")


def test_bad_counts_are_refused(script, capsys):
    with pytest.raises(SystemExit) as e:
        script.main(["--steps", "0"])
    assert e.value.code == 2 and "--steps: expected >= 1" in capsys.readouterr().err
