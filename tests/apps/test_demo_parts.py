"""The demo's parts on tiny runs: reuse of finished runs, resume after Ctrl-C, --fresh, plots, what it prints."""
import json
import os
import signal

import pytest

from cwarp.apps import demo
from cwarp.train import loop as T
from cwarp.train.config import parse_command_line

TINY = {"image_size": 16, "arch": "convnet-small", "num_train": 8, "epochs": 2, "batch_size": 4}


def argv(out, **over):
    return demo.demo_config("byol", str(out), overrides=dict(TINY, **over)) + [
        "--hidden-dim", "32", "--proj-dim", "16", "--log-every", "1", "--progress", "false"]


def steps(out):
    """The training steps logged (the online evaluation's rows are left out)."""
    with open(os.path.join(out, "log.jsonl")) as f:
        return [row["step"] for row in map(json.loads, f) if "loss" in row]


@pytest.mark.slow
def test_finished_matching_run_is_reused_and_a_changed_one_retrained(tmp_path, capsys):
    out = tmp_path / "byol"
    first = demo.pretrain(argv(out))
    assert first["status"] == "done" and not first.get("already_complete") and steps(out) == [1, 2, 3, 4]
    again = demo.pretrain(argv(out))
    assert again["already_complete"] and steps(out) == [1, 2, 3, 4]
    changed = demo.pretrain(argv(out, lr=0.01))
    assert not changed.get("already_complete") and changed["config"].optimisation.lr == 0.01
    assert "its settings differ (lr" in capsys.readouterr().out
    fresh = demo.pretrain(argv(out, lr=0.01), fresh=True)
    assert not fresh.get("already_complete") and steps(out) == [1, 2, 3, 4]


@pytest.mark.slow
def test_a_run_stopped_half_way_resumes(tmp_path):
    out = tmp_path / "byol"

    def interrupt(step, loss):
        if step == 1:
            os.kill(os.getpid(), signal.SIGINT)

    cfg, explicit = parse_command_line(argv(out))
    assert T.train(cfg, explicit, step_hook=interrupt)["status"] == "interrupted"
    res = demo.pretrain(argv(out))
    assert res["status"] == "done" and not res.get("already_complete")
    assert steps(out) == [1, 2, 3, 4]


def test_loss_plot_marks_a_single_logged_step(tmp_path, monkeypatch):
    import matplotlib.axes

    run = tmp_path / "run"
    run.mkdir()
    (run / "log.jsonl").write_text(json.dumps({"step": 1, "loss_avg": 2.0}) + "\n")
    lines = []
    real_plot = matplotlib.axes.Axes.plot

    def spy(self, *args, **kwargs):
        lines.extend(real_plot(self, *args, **kwargs))
        return lines

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", spy)
    path = demo._loss_plot(str(tmp_path / "loss.png"), {"byol": str(run)})
    assert os.path.getsize(path) > 0
    assert len(lines) == 1 and lines[0].get_marker() not in (None, "", "None", " ")


def test_loss_plot_shows_contrawarp_warp_accuracy_against_its_chance(tmp_path, monkeypatch):
    import matplotlib.axes

    runs = {}
    for name, extra in (("contrawarp", {"warp_acc": 0.5}), ("byol", {})):
        run = tmp_path / name
        run.mkdir()
        (run / "config.json").write_text(json.dumps({"num_negatives": 2 if extra else 0}))
        (run / "log.jsonl").write_text("".join(json.dumps({"step": s, "loss_avg": 1.0, **extra}) + "\n"
                                               for s in (5, 10)))
        runs[name] = str(run)
    plotted, hlines = [], []
    real_plot, real_axhline = matplotlib.axes.Axes.plot, matplotlib.axes.Axes.axhline
    monkeypatch.setattr(matplotlib.axes.Axes, "plot",
                        lambda self, *a, **k: plotted.append((self.get_ylabel(), a)) or real_plot(self, *a, **k))
    monkeypatch.setattr(matplotlib.axes.Axes, "axhline",
                        lambda self, y, *a, **k: hlines.append(y) or real_axhline(self, y, *a, **k))
    demo._loss_plot(str(tmp_path / "loss.png"), runs)
    warp = [a for _, a in plotted if list(a[1]) == [50.0, 50.0]]
    assert len(plotted) == 3 and len(warp) == 1 and hlines == [pytest.approx(100 / 3)]


@pytest.mark.slow
def test_demo_runs_evaluate_once_per_epoch_and_the_loss_plot_leaves_the_evaluations_out(tmp_path, monkeypatch):
    import matplotlib.axes

    assert demo.demo_config("byol", "x")[demo.demo_config("byol", "x").index("--eval-every") + 1] == "48"
    out = tmp_path / "byol"
    demo.pretrain(argv(out, eval_size=14, eval_bank=20))     # 8 faces, batches of 4: 2 steps an epoch
    curve = demo.online_knn(str(out))
    assert [step for step, _ in curve] == [2, 4] and all(0.0 <= acc <= 1.0 for _, acc in curve)
    lines = []
    real_plot = matplotlib.axes.Axes.plot
    monkeypatch.setattr(matplotlib.axes.Axes, "plot", lambda self, *a, **k: lines.append(a) or real_plot(self, *a, **k))
    demo._loss_plot(str(tmp_path / "loss.png"), {"byol": str(out)})      # the evaluation rows have no loss
    assert list(lines[0][0]) == [1, 2, 3, 4] and len(lines) == 1


def test_benchmark_summary_sentence():
    rows = [{"case": "fwd B=64 3x112x112 K=4", "contender": "reference (eager)", "speedup": 1.0},
            {"case": "fwd B=64 3x112x112 K=4", "contender": "cwarp cpp", "speedup": 6.25},
            {"case": "fwd+bwd B=64 3x112x112 K=4", "contender": "cwarp cpp", "speedup": 3.0}]
    text = demo._speedup_sentence(rows)
    assert text.startswith("cwarp warps images 6.2x faster than the eager PyTorch pipeline")
    assert "3.0x with the backward pass" in text and "NOT met" not in text


def _result(correct, n=1400):
    labels = [i % 7 for i in range(n)]
    return {"linear_acc": correct / n, "n_test": n, "labels": labels,
            "predictions": [y if i < correct else (y + 1) % 7 for i, y in enumerate(labels)]}


def test_table_gap_and_meaning():
    results = {name: _result(correct) for name, correct in
               (("contrawarp", 224), ("byol", 210), ("supervised", 420), ("random_init", 210), ("raw_pixels", 196))}
    table = demo._table(results).splitlines()
    assert table[0].split() == ["representation", "linear", "acc", "95", "%", "interval", "vs", "BYOL", "vs",
                                "random", "init"]
    cw = next(line for line in table if line.startswith("contrawarp")).split()
    assert cw[:2] == ["contrawarp", "16.0%"] and cw[3:] == ["+1.0", "+1.0"]
    lo, hi = (float(x) for x in cw[2].split("-"))
    assert lo < 16.0 < hi and hi - lo == pytest.approx(3.8, abs=0.3)     # about two binomial errors either way
    gap = demo.gap_to_byol(results)
    # Faces 210..223: only ContraWarping right; none only BYOL.
    assert gap["points"] == pytest.approx(1.0) and (gap["only_contrawarp"], gap["only_byol"]) == (14, 0)
    assert gap["mcnemar_p"] == pytest.approx(2 * 0.5 ** 14) and gap["ci95"][0] > 0
    line = demo._gap_line(gap, 1400)
    assert line.startswith("ContraWarping - BYOL = +1.0 points") and "excludes 0" in line
    tie = demo.gap_to_byol({"contrawarp": _result(210), "byol": _result(210)})
    assert "includes 0" in demo._gap_line(tie, 1400) and tie["mcnemar_p"] == 1.0
    meaning = demo._meaning(results, demo.DEMO_RECIPE, 336)
    assert meaning.startswith("This is one seed after 336 steps") and "seed to seed" in meaning
    assert meaning.count(". ") == 0 and "\n" not in meaning                 # one line
    assert demo.gap_to_byol({"contrawarp": _result(210)}) is None


def test_the_demo_pretrains_two_methods_and_the_reference_on_request(monkeypatch, tmp_path):
    trained = []

    def fake_pretrain(argv, fresh=False):
        trained.append(argv[argv.index("--method") + 1])
        return {"status": "done", "out": argv[argv.index("--out") + 1]}

    monkeypatch.setattr(demo, "pretrain", fake_pretrain)
    for flags, expected in (([], ["contrawarp", "byol"]), (["--supervised"], ["contrawarp", "byol", "supervised"])):
        trained.clear()
        args = demo._parser().parse_args(["--out", str(tmp_path)] + flags)
        assert list(demo._pretrain_all(args, {}, demo.DEMO_RECIPE)) == expected == trained


@pytest.mark.slow
def test_views_figure_is_previews(tmp_path, monkeypatch):
    from cwarp.apps import preview

    out = tmp_path / "run"
    demo.pretrain(argv(out, epochs=1))
    calls = []
    real = preview.make_figure
    monkeypatch.setattr(preview, "make_figure", lambda *a, **k: calls.append(k) or real(*a, **k))
    path = demo.save_views(str(tmp_path / "views.png"), str(out), faces=2, num_negatives=2)
    assert os.path.getsize(path) > 0 and len(calls) == 1 and calls[0]["landmarks"] is not None
    assert not hasattr(demo, "save_views_preview")


@pytest.mark.parametrize("flag", ["--fresh", "--skip-benchmark"])
def test_demo_flags_exist(flag):
    assert flag in demo._parser().format_help()


@pytest.mark.slow
def test_the_demo_times_cwarp_against_the_eager_reference_only(monkeypatch):
    import subprocess

    calls = []
    real_run = subprocess.run

    def spy(cmd, **kwargs):
        calls.append(cmd)
        return real_run(cmd, **kwargs)

    monkeypatch.setattr(subprocess, "run", spy)
    sentence = demo.run_benchmark()
    assert sentence.startswith("cwarp warps images ") and "faster than the eager PyTorch pipeline" in sentence
    assert "with the backward pass" in sentence
    cmd = calls[0]
    assert cmd[cmd.index("--contenders") + 1:cmd.index("--json")] == [demo.CWARP_CPP, demo.EAGER_REFERENCE]
