"""benchmarks/transforms_throughput.py at tiny shapes: every contender runs, in both cases, into the JSON."""
import json


def test_every_contender_is_timed_per_image_and_per_batch(load_script, tmp_path, capsys, restore_threads):
    script = load_script("benchmarks/transforms_throughput.py")
    out = tmp_path / "bench.json"
    assert script.main(["--batch", "2", "--src", "40", "--size", "32", "--min-run-time", "0.01", "--rounds", "1",
                        "--threads", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    contenders = {"v2 pipeline", "v2 + RandomLocalWarp (uint8)", "v2 + RandomLocalWarp (float32)", "ContraWarpViews",
                   "RandomLocalWarp alone (uint8)"}
    for case, items in (("per image 3x40x40 -> 32", 1), ("per batch B=2 3x40x40 -> 32", 2)):
        got = [r for r in rows if r["case"] == case]
        assert {r["contender"] for r in got} == contenders
        assert all(r["timing"] is not None and r["items"] == items and r["items_per_s"] > 0 for r in got), got
    assert "ContraWarpViews" in capsys.readouterr().out
