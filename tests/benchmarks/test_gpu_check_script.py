"""benchmarks/gpu_check.py: its verdicts, its gate, and a dry run of every
section on the CPU (tiny shapes) through the shell entry point, as CI can."""
import json
import math
import os
import subprocess
import sys

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


class _Handle:
    """A section that has already ended with `status` (wait) and logs what the driver did."""

    def __init__(self, name, status, events):
        self.name, self.status, self.events = name, status, events

    def wait(self, timeout):
        self.events.append(("wait", self.name))
        return self.status

    def kill(self):
        self.events.append(("kill", self.name))


def _drive(gpu_check, tmp_path, statuses, figures=(), events=None):
    rec = gpu_check.Record(str(tmp_path / "gpu_check.json"))
    rec.start(dry_run=True, plan={}, budget_s=1e9)
    events = [] if events is None else events

    def launch(name, limit):
        assert limit > 0
        events.append(("start", name))
        for section, value, target in figures:
            if section == name:
                rec.figure(name, "a figure", value, target=target)
        return _Handle(name, statuses.get(name, "ok"), events)

    code = gpu_check.drive(rec, gpu_check.SECTIONS, 1e9, launch)
    return code, rec.load()


def test_a_parity_miss_fails_the_run_and_the_timings_still_run(gpu_check, tmp_path):
    code, data = _drive(gpu_check, tmp_path, {"parity-cpp": "FAIL"})
    status = {s["name"]: s["status"] for s in data["sections"]}
    assert code == 1 and data["verdict"] == "FAIL" and data["not_ok_sections"] == ["parity-cpp"]
    assert sorted(status) == sorted(s.name for s in gpu_check.SECTIONS)
    assert all(status[n] == "ok" for n in ("warp", "loss", "augment", "tests"))


def test_the_build_runs_beside_the_triton_parity_and_is_joined_before_the_cpp_sections(gpu_check, tmp_path):
    events = []
    _drive(gpu_check, tmp_path, {}, events=events)
    started = [n for e, n in events if e == "start"]
    assert started[0] == "build"
    # build is started, triton parity runs to its end, then the build is waited for, then parity-cpp starts.
    assert events.index(("wait", "parity-triton")) < events.index(("wait", "build")) \
        < events.index(("start", "parity-cpp"))
    needs_build = [s.name for s in gpu_check.SECTIONS if "build" in s.needs]
    assert "parity-triton" not in needs_build and "environment" not in needs_build
    assert {"parity-cpp", "warp", "loss", "augment", "tests"} <= set(needs_build)


def test_a_missed_target_fails_the_run_and_a_met_one_passes(gpu_check, tmp_path):
    code, data = _drive(gpu_check, tmp_path / "miss", {}, [("warp", 2.0, 3.0)])
    assert code == 1 and data["missed"] == ["warp: a figure"]
    code, data = _drive(gpu_check, tmp_path / "met", {}, [("warp", 3.5, 3.0)])
    assert code == 0 and data["verdict"] == "PASS" and data["missed"] == []


def test_a_section_that_times_out_fails_the_run(gpu_check, tmp_path):
    code, data = _drive(gpu_check, tmp_path, {"loss": "timeout"})
    assert code == 1 and data["not_ok_sections"] == ["loss"]


def test_sections_that_all_hang_end_within_the_budget(gpu_check, tmp_path):
    """Every section (the background build included) runs out its limit: the
    driver gives each at most what is left of the budget, skips the rest, and
    the whole ends at the budget."""
    now = [0.0]

    class Hang:
        def __init__(self, limit):
            self.end = now[0] + limit

        def wait(self, timeout):
            now[0] = max(now[0], min(self.end, now[0] + timeout))
            return "timeout"

        def kill(self):
            pass

    rec = gpu_check.Record(str(tmp_path / "gpu_check.json"))
    rec.start(dry_run=True, plan={}, budget_s=480)
    code = gpu_check.drive(rec, gpu_check.SECTIONS, 480.0, lambda name, limit: Hang(limit), clock=lambda: now[0])
    data = rec.load()
    assert code == 1 and now[0] <= 480.0
    status = {s["name"]: s["status"] for s in data["sections"]}
    assert status["build"] == "timeout" and status["environment"] == "timeout"
    assert "skipped" in status.values() and all(v in ("timeout", "skipped") for v in status.values())
    assert all(s["limit_s"] <= 480 for s in data["sections"] if s["status"] == "timeout")


def _alive(pid):
    """True while the process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow
def test_a_hanging_section_is_killed_with_its_children_and_the_later_sections_run(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHON=sys.executable, CWARP_GPU_CHECK_HANG="build,environment")
    proc = subprocess.run([os.path.join(ROOT, "benchmarks", "gpu_check.sh"), "--dry-run", "--out", str(tmp_path),
                           "--sections", "build,environment,augment", "--limit", "build=8",
                           "--limit", "environment=8"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    data = json.loads((tmp_path / "gpu_check.json").read_text())
    sections = {s["name"]: s for s in data["sections"]}
    assert list(sections) == ["build", "environment", "augment"], proc.stdout[-3000:]
    # The hanging background build and the hanging environment ran out their limits ...
    assert sections["build"]["status"] == "timeout" and sections["environment"]["status"] == "timeout"
    assert sections["environment"]["seconds"] < 8 + 2 * 5
    # ... and took their grandchildren with them; the section after them still ran.
    pids = [f["value"] for n in ("build", "environment") for f in sections[n]["figures"]
            if f["name"] == "simulated hang: grandchild pid"]
    assert len(pids) == 2 and not any(_alive(p) for p in pids)
    assert sections["augment"]["status"] == "ok", proc.stdout[-3000:] + proc.stderr[-3000:]
    assert data["verdict"] == "FAIL" and proc.returncode == 1
    assert data["not_ok_sections"] == ["build", "environment"]


@pytest.mark.parametrize("argv,message", [
    (["--sections", "warp,nope"], "--sections: expected names among build,"),
    (["--limit", "warp"], "--limit: expected NAME=SECONDS"), (["--limit", "warp=-1"], "got 'warp=-1'"),
    (["--limit", "nope=5"], "got 'nope=5'"), (["--budget-s", "0"], "--budget-s must be > 0")])
def test_bad_usage_exits_2(gpu_check, argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        gpu_check.main(["--dry-run", *argv])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "gpu_check.py: error: " in err and message in err


@pytest.mark.slow
def test_dry_run_walks_every_section_on_the_cpu(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHON=sys.executable)
    env.pop("CWARP_GPU_CHECK_HANG", None)
    proc = subprocess.run([os.path.join(ROOT, "benchmarks", "gpu_check.sh"), "--dry-run", "--out", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    record = tmp_path / "gpu_check.json"
    assert record.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(record.read_text())
    sections = {s["name"]: s for s in data["sections"]}
    assert list(sections) == ["build", "environment", "parity-triton", "parity-cpp", "warp", "loss", "augment",
                              "tests"]
    assert data["dry_run"] is True and data["plan_limits_s"]["build"] == 300
    # Every backend agrees with the reference ...
    for name in ("parity-triton", "parity-cpp"):
        parity = sections[name]
        assert parity["status"] == "ok", proc.stdout[-3000:]
        assert len(parity["figures"]) >= 25 and all(f["verdict"] == "PASS" for f in parity["figures"])
        assert any("-> 12x14" in f["name"] for f in parity["figures"])
        assert any("repeats bitwise" in f["name"] for f in parity["figures"])
    assert all(sections[n]["status"] == "ok" for n in ("environment", "build", "warp", "loss", "augment", "tests")), \
        proc.stdout[-3000:] + proc.stderr[-3000:]
    assert any(f["name"] == "ninja" for f in sections["environment"]["figures"])
    # ... and the CPU misses the GPU's bandwidth target: the run says FAIL and exits 1.
    bandwidth = [f for f in sections["warp"]["figures"] if "bandwidth" in f["name"]]
    assert len(bandwidth) == 4 and all(f["verdict"] == "FAIL" and f["target"] == 0.70 for f in bandwidth)
    assert data["verdict"] == "FAIL" and proc.returncode == 1
    assert any("bandwidth" in m for m in data["missed"])
