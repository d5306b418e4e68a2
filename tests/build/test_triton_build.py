"""cwarp's Triton kernels compile for sm_90 without spills (needs no GPU):
scripts/check_triton_kernels.py, run in a subprocess because the test
process runs Triton interpreted (TRITON_INTERPRET=1, see conftest.py)."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "scripts", "check_triton_kernels.py")
_spec = importlib.util.spec_from_file_location("check_triton_kernels", SCRIPT)
check_triton_kernels = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_triton_kernels)

needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
needs_cuobjdump = pytest.mark.skipif(check_triton_kernels.check_cuda_kernels.find_cuobjdump() is None,
                                     reason="cuobjdump not found (it ships with triton)")


def _compiled_env():
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    env["OMP_NUM_THREADS"] = "1"
    return env


@needs_triton
@needs_cuobjdump
def test_every_kernel_compiles_for_sm90_without_spills(tmp_path):
    out = tmp_path / "kernels.json"
    proc = subprocess.run([sys.executable, SCRIPT, "--arch", "90", "--quick", "--json", str(out)],
                          cwd=ROOT, env=_compiled_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert {r["kernel"] for r in rows} == set(check_triton_kernels.REQUIRED_KERNELS)
    assert all(r["ok"] and r["arch"] == 90 and r["REG"] > 0 for r in rows)
    # The default projection size, in-batch, both passes of the backward (the
    # column pass's tiles are the ones that used to spill).
    for by_row in (True, False):
        assert any(r["kernel"] == "_contrastive_loss_bwd_kernel" and "D=128" in r["case"]
                   and f"BY_ROW={by_row}" in r["constexprs"] for r in rows)


@needs_triton
@needs_cuobjdump
def test_recorder_reports_a_kernel_that_does_not_compile(tmp_path):
    # A kernel the compiler rejects (a 2-D block whose size is not a power of
    # two) is listed as a failure, not raised, and the next launch still compiles.
    code = f"""
import json, sys, tempfile
sys.path.insert(0, {ROOT!r})
import importlib.util, torch, triton, triton.language as tl
spec = importlib.util.spec_from_file_location("ctk", {SCRIPT!r})
ctk = importlib.util.module_from_spec(spec); spec.loader.exec_module(ctk)

@triton.jit
def broken(x_ptr, n, BLOCK: tl.constexpr):
    tl.store(x_ptr + tl.arange(0, BLOCK), tl.zeros([BLOCK], tl.float32))

with tempfile.TemporaryDirectory() as d:
    rec = ctk.Recorder([90], False, ctk.check_cuda_kernels.find_cuobjdump(), d)
    x = torch.zeros(8)
    rec(broken)[(1,)](x, 8, BLOCK=6)
    rec(broken)[(1,)](x, 8, BLOCK=8, num_warps=2)
print(json.dumps(rec.rows))
"""
    (tmp_path / "broken_kernel.py").write_text(code)  # @triton.jit needs its source in a file
    proc = subprocess.run([sys.executable, str(tmp_path / "broken_kernel.py")], env=_compiled_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    bad, good = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not bad["ok"] and "power of 2" in bad["error"] and bad["constexprs"] == "BLOCK=6"
    assert good["ok"] and good["options"] == {"num_warps": 2} and good["LOCAL"] == 0
    problems, _ = check_triton_kernels.findings([bad, good])
    assert any("broken" in p and "does not compile" in p for p in problems)


def _row(kernel, case, spill, autotuned, block=128, blocks=8):
    return {"case": case, "kernel": kernel, "arch": 90, "constexprs": f"KIND=0, BLOCK={block}",
            "pointers": "x:fp32", "options": {"num_warps": 4}, "autotuned": autotuned, "ok": True, "REG": 64,
            "STACK": 8 if spill else 0, "LOCAL": 0, "SHARED": 0, "dynamic_shared": 0, "threads": 128,
            "blocks": blocks}


def test_findings_rules():
    # The rules themselves, on synthetic rows: each kind of problem is caught.
    everything = [_row(k, "c", False, "warp" in k) for k in check_triton_kernels.REQUIRED_KERNELS]
    assert check_triton_kernels.findings(everything) == ([], [])
    # A fixed-config kernel that spills fails.
    spilled = everything + [_row("_augment_views_kernel", "c2", True, False)]
    problems, _ = check_triton_kernels.findings(spilled)
    assert len(problems) == 1 and "register spills" in problems[0]
    # An autotuned launch: one spilling config beside a clean one is a note ...
    mixed = everything + [_row("_local_warp_fwd_kernel", "c3", True, True, 512),
                          _row("_local_warp_fwd_kernel", "c3", False, True, 256)]
    problems, notes = check_triton_kernels.findings(mixed)
    assert problems == [] and len(notes) == 1 and "1 of 2 autotuning configs spill" in notes[0]
    # ... but a launch whose every config spills fails.
    problems, _ = check_triton_kernels.findings(everything + [_row("_local_warp_fwd_kernel", "c4", True, True)])
    assert len(problems) == 1 and "every autotuning config spills" in problems[0]
    # A required kernel that no case launched fails.
    problems, _ = check_triton_kernels.findings(everything[1:])
    assert any("never launched" in p for p in problems)


def test_findings_hold_hot_kernels_to_their_occupancy_budget():
    everything = [_row(k, "c", False, "warp" in k) for k in check_triton_kernels.REQUIRED_KERNELS]
    fwd_budget, fwd_budget_fp64 = check_triton_kernels.BUDGETS["_local_warp_fwd_kernel"]
    # A fixed-config hot kernel below its budget fails; at the budget it passes.
    low = _row("_augment_views_kernel", "c2", False, False, blocks=check_triton_kernels.BUDGETS[
        "_augment_views_kernel"][0] - 1)
    problems, _ = check_triton_kernels.findings(everything + [low])
    assert len(problems) == 1 and "resident blocks per SM" in problems[0] and "budget" in problems[0]
    # An autotuned launch passes when its best clean config meets the budget ...
    ok = [_row("_local_warp_fwd_kernel", "c3", False, True, 512, blocks=fwd_budget - 1),
          _row("_local_warp_fwd_kernel", "c3", False, True, 256, blocks=fwd_budget)]
    assert check_triton_kernels.findings(everything + ok) == ([], [])
    # ... and fails when only a spilling config does.
    bad = [_row("_local_warp_fwd_kernel", "c4", False, True, 512, blocks=fwd_budget - 1),
           _row("_local_warp_fwd_kernel", "c4", True, True, 256, blocks=fwd_budget)]
    problems, _ = check_triton_kernels.findings(everything + bad)
    assert len(problems) == 1 and "over its autotuning configs that do not spill" in problems[0]
    # float64 launches have their own (lower) budget; other archs have none.
    fp64 = dict(_row("_local_warp_fwd_kernel", "c5", False, False, blocks=fwd_budget_fp64), pointers="x:fp64")
    sm80 = dict(_row("_local_warp_fwd_kernel", "c6", False, False, blocks=1), arch=80)
    assert check_triton_kernels.findings(everything + [fp64, sm80]) == ([], [])
