"""benchmarks/gpu_check.py: its verdicts, its gate, and a dry run of every
section on the CPU (tiny shapes) through the shell entry point, as CI can."""
import json
import math
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def gpu_check(load_script):
    return load_script("benchmarks/gpu_check.py")


def test_verdicts(gpu_check):
    assert gpu_check.verdict(3.0, 3.0) == "PASS"
    assert gpu_check.verdict(2.99, 3.0) == "FAIL"
    assert gpu_check.verdict(None, 3.0) == "FAIL"
    assert gpu_check.verdict(math.nan, 3.0) == "FAIL"
    assert gpu_check.verdict(0, 0, higher_is_better=False) == "PASS"
    assert gpu_check.verdict(1, 0, higher_is_better=False) == "FAIL"


def _drive(gpu_check, tmp_path, statuses, figures=()):
    rec = gpu_check.Record(str(tmp_path / "gpu_check.json"))
    rec.start(dry_run=True)

    def run(name, limit):
        assert limit > 0
        for section, value, target in figures:
            if section == name:
                rec.figure(name, "a figure", value, target=target)
        return statuses.get(name, "ok")

    code = gpu_check.drive(rec, gpu_check.SECTIONS, 1e9, run)
    return code, rec.load()


def test_a_failed_parity_gate_skips_the_timings(gpu_check, tmp_path):
    code, data = _drive(gpu_check, tmp_path, {"parity": "FAIL"})
    status = {s["name"]: s["status"] for s in data["sections"]}
    assert code == 1 and data["verdict"] == "FAIL"
    assert [s["name"] for s in data["sections"]] == [n for n, _ in gpu_check.SECTIONS]
    assert all(status[n] == "skipped" for n in gpu_check.TIMING_SECTIONS)
    assert status["tests"] == "ok" and status["parity"] == "FAIL"


def test_a_missed_target_fails_the_run_and_a_met_one_passes(gpu_check, tmp_path):
    code, data = _drive(gpu_check, tmp_path / "miss", {}, [("warp", 2.0, 3.0)])
    assert code == 1 and data["missed"] == ["warp: a figure"]
    code, data = _drive(gpu_check, tmp_path / "met", {}, [("warp", 3.5, 3.0)])
    assert code == 0 and data["verdict"] == "PASS" and data["missed"] == []


def test_a_section_that_times_out_fails_the_run(gpu_check, tmp_path):
    code, data = _drive(gpu_check, tmp_path, {"loss": "timeout"})
    assert code == 1 and data["not_ok_sections"] == ["loss"]


@pytest.mark.slow
def test_dry_run_walks_every_section_on_the_cpu(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([os.path.join(ROOT, "benchmarks", "gpu_check.sh"), "--dry-run", "--out", str(tmp_path)],
                          cwd=ROOT, env=dict(env, PYTHON=__import__("sys").executable), capture_output=True,
                          text=True, timeout=900)
    record = tmp_path / "gpu_check.json"
    assert record.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(record.read_text())
    sections = {s["name"]: s for s in data["sections"]}
    assert list(sections) == ["environment", "build", "parity", "warp", "loss", "augment", "tests"]
    assert data["dry_run"] is True
    # Every backend agrees with the reference, so the timings ran ...
    parity = sections["parity"]
    assert parity["status"] == "ok", proc.stdout[-3000:]
    assert len(parity["figures"]) >= 10 and all(f["verdict"] == "PASS" for f in parity["figures"])
    assert all(sections[n]["status"] == "ok" for n in ("environment", "build", "warp", "loss", "augment", "tests")), \
        proc.stdout[-3000:] + proc.stderr[-3000:]
    # ... and the CPU misses the GPU's bandwidth target: the run says FAIL and exits 1.
    bandwidth = [f for f in sections["warp"]["figures"] if "bandwidth" in f["name"]]
    assert bandwidth and all(f["verdict"] == "FAIL" and f["target"] == 0.70 for f in bandwidth)
    assert data["verdict"] == "FAIL" and proc.returncode == 1
    assert any("bandwidth" in m for m in data["missed"])
