"""benchmarks/loss_throughput.py's floor verdicts, from made-up rows (no GPU needed)."""
import pytest
import torch


@pytest.fixture(scope="module")
def script(load_script):
    return load_script("benchmarks/loss_throughput.py")


def _row(script, case, contender, ms):
    from common import Row, Timing

    return Row(case, contender, "float32", Timing(ms, ms, ms), 1024)


def _cuda_rows(script, triton_ms):
    rows = [_row(script, "fwd+bwd B=1024 D=256 N=8", "cwarp cpp", 0.1),
            _row(script, "fwd+bwd B=1024 D=256 N=8", script.BASELINE, 0.6)]
    for mode in ("fwd", "fwd+bwd"):
        case = f"{mode} B=8192 D=128 N=0 in_batch"
        rows += [_row(script, case, "cwarp cpp", 4.0), _row(script, case, "cwarp triton", triton_ms)]
    return rows


def test_cuda_floors_hold_the_in_batch_routing_to_its_measurement(script):
    checks = script.check_floors(_cuda_rows(script, triton_ms=1.0), torch.device("cuda"))
    assert [c["ok"] for c in checks] == [True, True, True]
    assert checks[0]["measured"] == 6.0 and checks[1]["measured"] == 4.0
    # Triton slower than the CUDA kernel: auto's in-batch choice is wrong, and the floor says so.
    checks = script.check_floors(_cuda_rows(script, triton_ms=5.0), torch.device("cuda"))
    assert [c["ok"] for c in checks] == [True, False, False]
    assert "Triton (auto's choice)" in checks[1]["check"]


def test_a_floor_whose_contender_failed_is_missed_and_one_not_run_is_absent(script):
    from common import Row

    rows = _cuda_rows(script, triton_ms=1.0)
    rows[0] = Row(rows[0].case, "cwarp cpp", "float32", None, 1024, note="failed: RuntimeError: capture")
    checks = script.check_floors(rows, torch.device("cuda"))
    assert checks[0]["measured"] is None and checks[0]["ok"] is False
    # Only the in-batch cases were run: the B=1024 floor is not checked at all.
    checks = script.check_floors(rows[2:], torch.device("cuda"))
    assert [c["check"] for c in checks if "B=1024" in c["check"]] == []
