"""benchmarks/uint8_throughput.py at a toy size: the rows, the JSON, the floor
verdicts, and what happens without albumentations."""
import json
import sys

import pytest


@pytest.fixture(scope="module")
def script(load_script):
    return load_script("benchmarks/uint8_throughput.py")


@pytest.fixture
def threads_restored(restore_threads):
    cv2 = pytest.importorskip("cv2")
    n = cv2.getNumThreads()
    yield
    cv2.setNumThreads(n)


def _row(script, name, ms, items=64):
    return script.common.Row("224x224x3", name, "uint8", script.common.Timing(ms, ms, ms), items)


def test_floor_report_verdicts(script):
    rows = [_row(script, script.CWARP_U8, 20.0), _row(script, script.ELASTIC, 30.0, items=2),
            _row(script, script.GRID, 29.0)]
    lines, met = script.floor_report(rows)
    # cwarp 3200 images/s: 48x ElasticTransform's 66.7, 1.45x GridDistortion's 2207.
    assert not met
    assert any("ElasticTransform: 48.00x (floor >= 10x) met" in line for line in lines)
    assert any("GridDistortion: 1.45x (floor >= 1.5x) NOT met" in line for line in lines)
    lines, met = script.floor_report(rows[:2])
    assert not met and any("GridDistortion: not measured" in line for line in lines)


@pytest.mark.slow
def test_toy_run_writes_rows(script, tmp_path, capsys, threads_restored):
    pytest.importorskip("albumentations")
    out = tmp_path / "u8.json"
    rc = script.main(["--batch", "4", "--size", "32", "--min-run-time", "0.01", "--rounds", "1", "--json", str(out)])
    record = json.loads(out.read_text())
    names = [r["contender"] for r in record["rows"]]
    assert names == [script.CWARP_U8, script.CWARP_U8_NCHW, script.CWARP_FLOAT, script.ELASTIC, script.GRID,
                     script.PIECEWISE]
    assert all(r["items_per_s"] > 0 for r in record["rows"])
    assert record["albumentations"] is True and len(record["floors"]) == 3
    assert rc == (0 if record["floors_met"] else 1)
    assert "speedup" in capsys.readouterr().out


def test_without_albumentations_says_so_and_fails(script, tmp_path, capsys, monkeypatch, threads_restored):
    monkeypatch.setitem(sys.modules, "albumentations", None)  # import albumentations raises ImportError
    rc = script.main(["--batch", "2", "--size", "16", "--min-run-time", "0.01", "--rounds", "1"])
    printed = capsys.readouterr().out
    assert rc == 1
    assert "albumentations is not installed (pip install albumentations): only cwarp was timed" in printed
    assert "not measured" in printed
