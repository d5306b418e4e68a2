"""The GPU check of cwarp: what a first run on a GPU machine must measure, in one shot.

    python3 benchmarks/gpu_check.py [--out DIR] [--budget-s 480] [--dry-run]
    benchmarks/gpu_check.sh [same options]

Written for a machine lent for minutes, once: an H200 with 16 cores, no
network, torch and Triton preinstalled (the build uses that torch: no pip, no
build isolation, sm_90 only, MAX_JOBS=16). Sections run in this order, each
in its own process under its own time limit, and stop when the budget is
spent:

  environment   nvidia-smi, torch / Triton / cwarp versions, cwarp.backends()
  build         setup.py build_ext --inplace with FORCE_CUDA=1 (when cwarp._C
                lacks CUDA), then scripts/check_cuda_kernels.py --arch 90 (the
                registers / occupancy budget table)
  parity        every backend (cpp, triton) of every op against the reference
                on CUDA, forward and backward. The gate: a miss skips the
                timing sections, whose figures would mean nothing
  warp          local_warp at B=256, 3x224x224, K=4, float32 and bfloat16:
                forward >= 70 % of HBM bandwidth (bytes of the dtype: one read
                of the image, one write of the output), >= 3x the eager
                reference, >= 1.5x torch.compile(reference) (float32 only: one
                compile); backward >= 2x grid_sample's backward
  loss          benchmarks/loss_throughput.py --device cuda (>= 5x eager at
                B=1024, D=256, N=8)
  augment       benchmarks/augment_throughput.py --device cuda (>= 50,000
                views/s at S=112)
  tests         a subset of the suite's CUDA tests (TEST_SELECTION), a per-test
                timeout

Every figure and verdict goes to DIR/gpu_check.json ($OUT when set, else
results/) the moment it is measured, so a run cut off still leaves its first
sections. Exit status: 0 when every section ran and every target was met, 1
otherwise, 2 on bad usage.

--dry-run walks the same sections on the CPU with tiny shapes (Triton under
its interpreter, no build, no nvidia-smi) to check the script, its JSON and
its verdicts; the targets stay those of the GPU, so its verdict is FAIL.
The test suite runs it (tests/benchmarks/test_gpu_check_script.py).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HBM_BYTES_PER_S = {"H200": 4.8e12, "H100": 3.35e12, "A100": 2.0e12}
DEFAULT_HBM = 4.8e12

# (name, time limit in seconds on the GPU). The limits add up to more than
# the default budget: a section gets min(its limit, what is left).
SECTIONS = [("environment", 30), ("build", 240), ("parity", 150), ("warp", 150), ("loss", 90),
            ("augment", 60), ("tests", 150)]
# The CUDA tests run last, a subset that fits: parity over dtypes and shapes,
# determinism, empty and non-finite input.
TEST_SELECTION = "matches_reference or deterministic or empty or nan"
TIMING_SECTIONS = {"warp", "loss", "augment"}


# ---------------------------------------------------------------------------
# The record: one JSON file, rewritten after every figure.
# ---------------------------------------------------------------------------

def verdict(measured: Optional[float], target: float, higher_is_better: bool = True) -> str:
    """PASS when measured meets target; FAIL otherwise, a missing figure included."""
    if measured is None or measured != measured:  # None or NaN
        return "FAIL"
    return "PASS" if (measured >= target if higher_is_better else measured <= target) else "FAIL"


class Record:
    def __init__(self, path: str):
        self.path = path

    def load(self) -> dict:
        with open(self.path) as f:
            return json.load(f)

    def save(self, data: dict) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, self.path)

    def start(self, dry_run: bool) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self.save({"started": time.strftime("%Y-%m-%d %H:%M:%S"), "dry_run": dry_run, "sections": [],
                   "verdict": None})

    def section(self, name: str, **fields) -> None:
        data = self.load()
        entry = next((s for s in data["sections"] if s["name"] == name), None)
        if entry is None:
            entry = {"name": name, "status": "running", "figures": []}
            data["sections"].append(entry)
        entry.update(fields)
        self.save(data)

    def figure(self, section: str, name: str, value=None, *, unit: str = "", target: Optional[float] = None,
               higher_is_better: bool = True, note: str = "") -> Optional[str]:
        """Record one figure (and its verdict when it has a target); prints it too."""
        result = None if target is None else verdict(value, target, higher_is_better)
        data = self.load()
        entry = next(s for s in data["sections"] if s["name"] == section)
        entry["figures"].append({"name": name, "value": value, "unit": unit, "target": target,
                                 "higher_is_better": higher_is_better, "verdict": result, "note": note})
        self.save(data)
        shown = value if not isinstance(value, float) else f"{value:.4g}"
        goal = "" if target is None else f" (target {'>=' if higher_is_better else '<='} {target:g}): {result}"
        print(f"  {name}: {shown} {unit}{goal}{'  ' + note if note else ''}", flush=True)
        return result


# ---------------------------------------------------------------------------
# The sections (each runs in its own process: --section NAME).
# ---------------------------------------------------------------------------

def _setup(dry_run: bool):
    sys.path[:0] = [ROOT, os.path.join(ROOT, "benchmarks")]
    import torch

    return torch, torch.device("cpu" if dry_run else "cuda")


def section_environment(rec: Record, dry_run: bool) -> bool:
    if not dry_run:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem",
                              "--format=csv,noheader"], capture_output=True, text=True)
        rec.figure("environment", "nvidia-smi", smi.stdout.strip() or smi.stderr.strip())
    torch, device = _setup(dry_run)
    import triton

    rec.figure("environment", "python", sys.version.split()[0])
    rec.figure("environment", "torch", f"{torch.__version__} (CUDA {torch.version.cuda})")
    rec.figure("environment", "triton", triton.__version__)
    rec.figure("environment", "device", torch.cuda.get_device_name() if device.type == "cuda" else "cpu")
    rec.figure("environment", "cpu cores", os.cpu_count())
    return True


def section_build(rec: Record, dry_run: bool) -> bool:
    env = dict(os.environ, FORCE_CUDA="1", TORCH_CUDA_ARCH_LIST=os.environ.get("TORCH_CUDA_ARCH_LIST", "9.0"),
               MAX_JOBS=os.environ.get("MAX_JOBS", str(os.cpu_count() or 16)))
    if dry_run:
        rec.figure("build", "build", "not run (dry run)")
        return True
    has_cuda = subprocess.run([sys.executable, "-c", "import sys, cwarp._extension as e; "
                               "sys.exit(0 if e.with_cuda() else 1)"], cwd=ROOT, capture_output=True).returncode == 0
    if not has_cuda:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "setup.py", "--quiet", "build_ext", "--inplace"], cwd=ROOT, env=env,
                              capture_output=True, text=True)
        print(proc.stdout[-3000:] + proc.stderr[-3000:], flush=True)
        rec.figure("build", "build seconds", round(time.perf_counter() - t0, 1))
        rec.figure("build", "build exit status", proc.returncode, target=0, higher_is_better=False,
                   note=proc.stderr.strip()[-500:] if proc.returncode else "")
        if proc.returncode != 0:
            return False
    proc = subprocess.run([sys.executable, "scripts/check_cuda_kernels.py", "--arch", "90"], cwd=ROOT,
                          capture_output=True, text=True)
    print(proc.stdout + proc.stderr, flush=True)
    rec.figure("build", "check_cuda_kernels (spills, launch bounds, occupancy budgets)",
               proc.returncode, target=0, higher_is_better=False, note=proc.stderr.strip()[-500:])
    return proc.returncode == 0


def _max_rel_err(actual, expected) -> float:
    """max |actual - expected| relative to the expected tensor's scale, 1 + max |expected|."""
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    return float((a - e).abs().max() / (1.0 + e.abs().max()))


def _view_inputs(torch, g, B: int):
    """A uint8 batch and the arguments of augment_views for V=3 views of it:
    mild affines, two warps per view, a colour jitter."""
    V, K, size = 3, 2, 32
    src = torch.randint(0, 256, (B, 3, 48, 48), generator=g, dtype=torch.uint8)
    theta = (torch.eye(2, 3).repeat(B, V, 1, 1) * 0.9 + 0.05 * torch.randn(B, V, 2, 3, generator=g))
    warps = torch.cat([torch.rand(B, V, K, 2, generator=g) - 0.5, torch.full((B, V, K, 1), 0.4),
                       0.1 * torch.randn(B, V, K, 2, generator=g)], dim=-1)
    color = torch.stack([1 + 0.2 * torch.randn(B, V, generator=g), 1 + 0.2 * torch.randn(B, V, generator=g),
                         1 + 0.2 * torch.randn(B, V, generator=g), 0.05 * torch.randn(B, V, generator=g),
                         (torch.rand(B, V, generator=g) < 0.2).float()], dim=-1)
    from cwarp._constants import IMAGENET_MEAN, IMAGENET_STD

    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    return src, (theta, warps, color, mean, std, size)


@contextlib.contextmanager
def _deterministic(torch, enabled: bool):
    """torch.use_deterministic_algorithms(enabled) inside the block, the former setting after it."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(enabled)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


def section_parity(rec: Record, dry_run: bool) -> bool:
    torch, device = _setup(dry_run)
    import cwarp
    from cwarp import reference

    backends = ["triton"] + (["cpp"] if (dry_run or cwarp._extension.with_cuda()) else [])
    tolerance = {torch.float32: 1e-4, torch.bfloat16: 2e-2}
    ok = True
    g = torch.Generator().manual_seed(0)
    B, S, K = (2, 16, 2) if dry_run else (8, 64, 4)
    image64 = torch.rand(B, 3, S, S, generator=g, dtype=torch.float64)
    params64 = cwarp.sample_local_warps(B, K, generator=g).double()
    theta64 = torch.eye(2, 3, dtype=torch.float64).repeat(B, 1, 1) * 0.9
    # The last case: twice the warps (the backward's block reduction then
    # flushes more than once) in deterministic mode, run twice: it must also
    # repeat bit for bit.
    many = cwarp.sample_local_warps(B, 2 * K, generator=g).double()
    cases = [(dtype, kind, params64, False) for dtype in (torch.float32, torch.bfloat16)
             for kind in ("translate", "gaussian")] + [(torch.float32, "translate", many, True)]
    for dtype, kind, params, deterministic in cases:
        inputs = [t.to(device, dtype).requires_grad_() for t in (image64, params.to(dtype).double(), theta64)]
        exp_in = [t.detach().double().requires_grad_() for t in inputs]
        expected = reference.local_warp(*exp_in, kind=kind)
        grad_out = torch.randn(expected.shape, generator=g, dtype=torch.float64).to(device)
        exp_grads = torch.autograd.grad(expected, exp_in, grad_out)
        for backend in backends:
            def run():
                out = cwarp.local_warp(*inputs, kind=kind, backend=backend)
                return (out, *torch.autograd.grad(out, inputs, grad_out.to(dtype)))

            with _deterministic(torch, deterministic):
                results = run()
                repeat = run() if deterministic else results
            out, grads = results[0], results[1:]
            err = max(_max_rel_err(out, expected), *(_max_rel_err(a, e) for a, e in zip(grads, exp_grads)))
            name = f"local_warp {backend} {str(dtype)[6:]} {kind} K={params.shape[1]}" + \
                (" deterministic" if deterministic else "") + " (fwd, bwd)"
            ok &= rec.figure("parity", name, err, unit="max rel err", target=tolerance[dtype],
                             higher_is_better=False) == "PASS"
            if deterministic:
                same = all(torch.equal(a, b) for a, b in zip(results, repeat))
                ok &= rec.figure("parity", name.replace("(fwd, bwd)", "repeats bitwise"), int(same), target=1) \
                    == "PASS"
    Bl, D, N = (8, 32, 3) if dry_run else (64, 256, 8)
    for in_batch in (False, True):
        p, z, zn = (torch.randn(shape, generator=g, dtype=torch.float64)
                    for shape in ((Bl, D), (Bl, D), (Bl, N, D)))
        exp_in = [t.clone().requires_grad_() for t in (p, z, zn)]
        expected = reference.contrastive_loss(*exp_in, in_batch=in_batch)
        exp_grads = torch.autograd.grad(expected, exp_in)
        for backend in backends:
            inputs = [t.to(device, torch.float32).requires_grad_() for t in (p, z, zn)]
            loss = cwarp.contrastive_loss(*inputs, in_batch=in_batch, backend=backend)
            grads = torch.autograd.grad(loss, inputs)
            err = max(_max_rel_err(loss, expected), *(_max_rel_err(a, e) for a, e in zip(grads, exp_grads)))
            name = f"contrastive_loss {backend} float32 {'in-batch' if in_batch else 'negatives'} (fwd, bwd)"
            ok &= rec.figure("parity", name, err, unit="max rel err", target=1e-4,
                             higher_is_better=False) == "PASS"
    from cwarp.ops import augment_views

    src, args = _view_inputs(torch, g, 2 if dry_run else 16)
    expected = reference.augment_views(src, *args)
    for backend in backends:
        out = augment_views(src.to(device), *(a.to(device) if torch.is_tensor(a) else a for a in args),
                            backend=backend)
        err = _max_rel_err(out, expected)
        ok &= rec.figure("parity", f"augment_views {backend} uint8 -> float32", err, unit="max rel err",
                         target=1e-4, higher_is_better=False) == "PASS"
    return ok


def section_warp(rec: Record, dry_run: bool) -> bool:
    torch, device = _setup(dry_run)
    import torch.nn.functional as F

    import cwarp
    from common import time_fn
    from cwarp import reference

    B, C, H, W, K = (2, 3, 16, 16, 4) if dry_run else (256, 3, 224, 224, 4)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    peak = next((v for k, v in HBM_BYTES_PER_S.items() if k in name), DEFAULT_HBM)
    backends = ["triton"] + (["cpp"] if (dry_run or cwarp._extension.with_cuda()) else [])
    timer = lambda fn: time_fn(fn, device, 0.05).p50_ms  # noqa: E731
    kw = dict(kind="translate", padding_mode="border", align_corners=False)
    for dtype in (torch.float32, torch.bfloat16):
        tag = str(dtype)[6:]
        g = torch.Generator().manual_seed(0)
        image = torch.rand(B, C, H, W, generator=g).to(device, dtype)
        params = cwarp.sample_local_warps(B, K, generator=g).to(device, dtype)
        theta = (torch.eye(2, 3).repeat(B, 1, 1) * 0.9).to(device, dtype)
        t_eager = timer(lambda: reference.local_warp(image, params, theta, compute_dtype=None, **kw))
        rec.figure("warp", f"{tag} eager reference fwd", t_eager, unit="ms")
        t_comp = None
        if dtype == torch.float32 and not dry_run:
            compiled = torch.compile(lambda i, p, t: reference.local_warp(i, p, t, compute_dtype=None, **kw))
            t_comp = timer(lambda: compiled(image, params, theta))
            rec.figure("warp", f"{tag} torch.compile(reference) fwd", t_comp, unit="ms")
        grid = reference.local_warp_grid(params, (H, W), theta, compute_dtype=None).requires_grad_()
        img_req = image.detach().clone().requires_grad_()
        gs_out = F.grid_sample(img_req, grid, mode="bilinear", padding_mode="border", align_corners=False)
        grad_out = torch.randn_like(gs_out)
        t_gs = timer(lambda: torch.autograd.grad(gs_out, (img_req, grid), grad_out, retain_graph=True))
        rec.figure("warp", f"{tag} grid_sample backward", t_gs, unit="ms")
        bytes_moved = 2 * image.numel() * image.element_size()
        for backend in backends:
            t_fwd = timer(lambda: cwarp.local_warp(image, params, theta, backend=backend, **kw))
            op = (torch.ops.cwarp.local_warp_backward if backend == "cpp"
                  else torch.ops.cwarp.local_warp_backward_triton)
            t_bwd = timer(lambda: op(grad_out, image, params, theta, kw["kind"], kw["padding_mode"], False,
                                     [True, True, True]))
            rec.figure("warp", f"{tag} {backend} fwd", t_fwd, unit="ms", note=f"{B / t_fwd * 1e3:,.0f} images/s")
            rec.figure("warp", f"{tag} {backend} bwd", t_bwd, unit="ms")
            rec.figure("warp", f"{tag} {backend} fwd bandwidth / HBM peak", bytes_moved / (t_fwd * 1e-3) / peak,
                       target=0.70, note=f"peak {peak / 1e12:.2f} TB/s")
            rec.figure("warp", f"{tag} {backend} fwd speedup over eager", t_eager / t_fwd, unit="x", target=3.0)
            if t_comp is not None:
                rec.figure("warp", f"{tag} {backend} fwd speedup over torch.compile(reference)", t_comp / t_fwd,
                           unit="x", target=1.5)
            rec.figure("warp", f"{tag} {backend} bwd speedup over grid_sample backward", t_gs / t_bwd, unit="x",
                       target=2.0)
    return True


def _benchmark_script(rec: Record, section: str, argv: List[str], out_dir: str) -> bool:
    """Runs a benchmark script, then files its floors (from its JSON) under section."""
    path = os.path.join(out_dir, f"{section}_throughput.json")
    proc = subprocess.run([sys.executable, *argv, "--json", path], cwd=ROOT, capture_output=True, text=True)
    print(proc.stdout[-4000:] + proc.stderr[-2000:], flush=True)
    floors = json.load(open(path)).get("floors", []) if os.path.exists(path) else []
    for c in floors:  # every floor is a least speed, but the loss's peak-memory ratios (a most)
        rec.figure(section, c["check"], c["measured"], target=c["floor"],
                   higher_is_better="peak memory" not in c["check"])
    rec.figure(section, "exit status", proc.returncode, target=0, higher_is_better=False)
    return proc.returncode == 0


def section_loss(rec: Record, dry_run: bool, out_dir: str) -> bool:
    argv = ["benchmarks/loss_throughput.py", "--no-compile"]
    argv += ["--device", "cpu", "--quick"] if dry_run else ["--device", "cuda"]
    return _benchmark_script(rec, "loss", argv, out_dir)


def section_augment(rec: Record, dry_run: bool, out_dir: str) -> bool:
    argv = ["benchmarks/augment_throughput.py"]
    argv += (["--device", "cpu", "--batch", "2", "--src", "32", "--size", "16", "--min-run-time", "0.05",
              "--skip", "pil", "kornia", "torchvision"] if dry_run
             else ["--device", "cuda", "--batch", "256", "--skip", "pil", "kornia"])
    return _benchmark_script(rec, "augment", argv, out_dir)


def section_tests(rec: Record, dry_run: bool) -> bool:
    argv = [sys.executable, "-m", "pytest", "-q", "-rs", "-m", "cuda", "-k", TEST_SELECTION, "--timeout", "60",
            "--maxfail", "25", "-p", "no:cacheprovider", "tests/ops", "tests/nn"]
    if dry_run:  # collected, not run: there is no GPU
        argv.append("--collect-only")
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    print(proc.stdout[-4000:] + proc.stderr[-2000:], flush=True)
    lines = [line for line in proc.stdout.strip().splitlines() if line.strip()]
    rec.figure("tests", "pytest summary", lines[-1] if lines else proc.stderr.strip()[-300:])
    rec.figure("tests", "pytest exit status", proc.returncode, target=0, higher_is_better=False)
    return proc.returncode == 0


def run_section(name: str, rec: Record, dry_run: bool, out_dir: str) -> bool:
    table: Dict[str, Callable[[], bool]] = {
        "environment": lambda: section_environment(rec, dry_run),
        "build": lambda: section_build(rec, dry_run),
        "parity": lambda: section_parity(rec, dry_run),
        "warp": lambda: section_warp(rec, dry_run),
        "loss": lambda: section_loss(rec, dry_run, out_dir),
        "augment": lambda: section_augment(rec, dry_run, out_dir),
        "tests": lambda: section_tests(rec, dry_run),
    }
    return table[name]()


# ---------------------------------------------------------------------------
# The driver: sections in order, each in a child process with a time limit.
# ---------------------------------------------------------------------------

def _child(name: str, out_dir: str, dry_run: bool, limit: float) -> str:
    """Runs one section in a child process; its status ("ok", "FAIL", "timeout", "error")."""
    argv = [sys.executable, os.path.abspath(__file__), "--section", name, "--out", out_dir]
    if dry_run:
        argv.append("--dry-run")
    try:
        proc = subprocess.run(argv, cwd=ROOT, timeout=limit)
    except subprocess.TimeoutExpired:
        return "timeout"
    return {0: "ok", 1: "FAIL"}.get(proc.returncode, "error")


def drive(rec: Record, sections, budget_s: float, run: Callable[[str, float], str]) -> int:
    """Runs the sections in order through run(name, limit) -> status; the overall exit status."""
    t_start = time.perf_counter()
    gate_failed = False
    for name, limit in sections:
        left = budget_s - (time.perf_counter() - t_start)
        if name in TIMING_SECTIONS and gate_failed:
            rec.section(name, status="skipped", reason="parity failed: timings of wrong results mean nothing")
            continue
        if left < 10:
            rec.section(name, status="skipped", reason="out of time")
            continue
        print(f"\n=== {name} ({time.strftime('%H:%M:%S')}, limit {min(limit, left):.0f} s) ===", flush=True)
        rec.section(name, status="running", started=time.strftime("%H:%M:%S"))
        t0 = time.perf_counter()
        status = run(name, min(limit, left))
        rec.section(name, status=status, seconds=round(time.perf_counter() - t0, 1))
        if name == "parity" and status != "ok":
            gate_failed = True
    data = rec.load()
    bad = [s["name"] for s in data["sections"] if s["status"] != "ok"]
    missed = [f"{s['name']}: {f['name']}" for s in data["sections"] for f in s["figures"] if f["verdict"] == "FAIL"]
    data["verdict"] = "PASS" if not bad and not missed else "FAIL"
    data["not_ok_sections"], data["missed"] = bad, missed
    rec.save(data)
    print(f"\n=== summary ===\n{data['verdict']}: sections not ok: {bad or 'none'}; missed: {missed or 'none'}")
    print(f"results in {rec.path}")
    return 0 if data["verdict"] == "PASS" else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=None, help="folder of gpu_check.json (default: $OUT, else results/)")
    ap.add_argument("--budget-s", type=float, default=480.0, help="stop starting sections after this (480)")
    ap.add_argument("--dry-run", action="store_true", help="the sections on the CPU, tiny shapes")
    ap.add_argument("--section", choices=[n for n, _ in SECTIONS], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.budget_s <= 0:
        ap.error(f"--budget-s must be > 0, got {args.budget_s}")
    out_dir = os.path.abspath(args.out or os.environ.get("OUT") or os.path.join(ROOT, "results"))
    rec = Record(os.path.join(out_dir, "gpu_check.json"))
    if args.dry_run:
        # The Triton kernels run on CPU tensors only under the interpreter, chosen at import.
        os.environ["TRITON_INTERPRET"] = "1"
    if args.section:
        return 0 if run_section(args.section, rec, args.dry_run, out_dir) else 1
    rec.start(args.dry_run)
    return drive(rec, SECTIONS, args.budget_s, lambda name, limit: _child(name, out_dir, args.dry_run, limit))


if __name__ == "__main__":
    sys.exit(main())
