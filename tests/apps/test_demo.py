"""The demo end to end at a toy budget: every representation probed, summary and plots written."""
import json

import pytest

from cwarp.apps import demo

# The whole demo at a toy size: several trainings and probes.
pytestmark = pytest.mark.slow


def test_demo_runs_every_method_and_writes_summary_and_plots(tmp_path, capsys):
    out = tmp_path / "demo"
    assert demo.main(["--skip-benchmark", "--supervised", "--epochs", "1", "--num-train", "256", "--probe-test",
                      "128", "--image-size", "16", "--arch", "convnet-small", "--out", str(out)]) == 0
    summary = json.load(open(out / "summary.json"))
    names = set(demo.DEMO_METHODS) | {"supervised", "random_init", "raw_pixels"}
    assert set(summary["linear_acc"]) == names
    assert all(0.0 <= a <= 1.0 for a in summary["linear_acc"].values())
    assert summary["n_test"]["contrawarp"] == 128 and summary["autocast"] == "fp32"
    for plot in ("loss_curves.png", "accuracy.png", "views.png"):
        assert (out / plot).stat().st_size > 0 and plot in summary["plots"]
    assert not (out / "learning_curves.png").exists()
    gap = summary["contrawarp_minus_byol"]
    assert gap["points"] == pytest.approx(100 * (summary["linear_acc"]["contrawarp"] - summary["linear_acc"]["byol"]))
    assert gap["ci95"][0] <= gap["points"] <= gap["ci95"][1] and 0 <= gap["mcnemar_p"] <= 1
    # 256 faces in batches of 32: 8 steps, one epoch, so one online evaluation, at the last step.
    assert set(summary["online_knn"]) == names - {"random_init", "raw_pixels"}
    for method, points in summary["online_knn"].items():
        assert [step for step, _ in points] == [8] and 0.0 <= points[0][1] <= 1.0, method
        assert summary["timings"][f"online_eval_{method}_s"] > 0
    printed = capsys.readouterr().out
    assert "supervised" in printed and "ContraWarping - BYOL = " in printed and "one seed" in printed
