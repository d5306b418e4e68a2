"""benchmarks/data_throughput.py: the loader and the step comparison run end to end on tiny sizes, write their
JSON, and exit 1 exactly when a floor is missed."""
import json

import pytest

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")


@pytest.fixture(scope="module")
def script(load_script):
    return load_script("benchmarks/data_throughput.py")


TINY = ["--num", "24", "--source-size", "40", "--sizes", "16", "--batch", "8", "--rounds", "1",
        "--min-run-time", "0.01"]


@pytest.mark.parametrize("floor, code", [(0.0, 0), (1e9, 1)])
def test_loader_rows_json_and_floor_verdict(script, monkeypatch, tmp_path, capsys, floor, code):
    monkeypatch.setattr(script, "LOADER_FLOOR", floor)
    out = tmp_path / "loader.json"
    assert script.main(TINY + ["--workers", "0", "--json", str(out)]) == code
    record = json.loads(out.read_text())
    contenders = {r["contender"] for r in record["rows"]}
    assert contenders == {script.TORCHVISION, script.CWARP}
    cwarp = next(r for r in record["rows"] if r["contender"] == script.CWARP)
    assert cwarp["items"] == 24 and cwarp["speedup"] > 0 and cwarp["timing"]["p50_ms"] > 0
    # Same tensors: same shape and dtype (checked in the script), values a few levels apart at most on average.
    assert record["agreement"]["16px"]["mean_abs_diff"] < 4
    assert ("MISSES the" in capsys.readouterr().out) == (code == 1)


@pytest.mark.parametrize("floor, code", [(1e9, 0), (0.0, 1)])
def test_step_comparison_runs_both_feeds(script, monkeypatch, tmp_path, capsys, floor, code):
    monkeypatch.setattr(script, "STEP_FLOOR", floor)
    out = tmp_path / "step.json"
    argv = ["--step", "--image-size", "16", "--batch-size", "8", "--steps", "2", "--rounds", "1", "--threads", "1",
            "--loader-workers", "1", "--json", str(out)]
    assert script.main(argv) == code
    record = json.loads(out.read_text())
    assert {r["contender"] for r in record["rows"]} == {"in memory", "streamed"} and record["ratio"] > 0
    assert "streamed step / in-memory step" in capsys.readouterr().out


def test_bad_counts_are_refused(script, capsys):
    with pytest.raises(SystemExit) as e:
        script.main(["--num", "0"])
    assert e.value.code == 2 and "--num: expected >= 1" in capsys.readouterr().err
