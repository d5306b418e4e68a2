"""The GPU check of cwarp: what a first run on a GPU machine must measure, in one shot.

    python3 benchmarks/gpu_check.py [--out DIR] [--budget-s 480] [--sections A,B] [--limit NAME=S] [--dry-run]
    benchmarks/gpu_check.sh [same options]

Written for a machine lent for minutes, once: an H100 or H200, 16 cores, no
network, its own Python, torch and Triton (the build uses that torch: no
pip, no build isolation, sm_90 only). Each section runs in its own process,
in its own process group, under its own time limit; at the limit the whole
group (compilers, pytest, benchmark scripts) is killed and the next section
starts. No section starts once the budget is spent. The time plan, limits
in seconds (the estimates are readings of the code, not measurements):

  section        limit  estimate  what
  build          300    90-150    in the background from the start: setup.py
                                  build_ext against the installed torch with
                                  FORCE_CUDA=1 and MAX_JOBS = cores - 2 (ninja
                                  from the interpreter's bin directory), when
                                  cwarp._C lacks CUDA; then
                                  scripts/check_cuda_kernels.py --arch 90 (the
                                  registers / occupancy table)
  environment     45    10        nvidia-smi, Python / torch / Triton / nvcc /
                                  ninja versions, cwarp.backends()
  parity-triton  210    60-150    the Triton kernels against the reference
                                  (benchmarks/gpu_parity.py; needs no build, so
                                  its cold compiles, about 70 with the
                                  autotuning configs, run while the build does)
  parity-cpp      60    20        waits for the build; the CUDA kernels against
                                  the reference
  warp           150    60-90     local_warp at B=256, 3x224x224, K=4, float32
                                  and bfloat16: forward >= 70 % of HBM bandwidth
                                  (one read of the image, one write of the
                                  output, bytes of the dtype), >= 3x the eager
                                  reference, >= 1.5x torch.compile(reference)
                                  (float32; timed last); backward >= 2x
                                  grid_sample's backward
  loss            75    30-45     benchmarks/loss_throughput.py --device cuda
                                  --cuda-graphs (>= 5x eager at B=1024, D=256,
                                  N=8, launches out of the timing)
  augment         60    20-30     benchmarks/augment_throughput.py --device
                                  cuda (>= 50,000 views/s at S=112)
  tests          120    60-120    the suite's CUDA tests (TEST_SELECTION), a
                                  per-test timeout when pytest-timeout is there

The estimates add up to 5 to 8 minutes (the build overlapping the first
three sections); the budget (480 s) caps the whole at 8 minutes and a few
seconds of clean-up, inside one 10-minute call.

Parity: every case is its own try; a miss or an exception is recorded as a
FAIL and the later sections still run (their figures are then read with the
miss in mind). Every figure and verdict goes to DIR/gpu_check.json ($OUT
when set, else results/) the moment it is measured, so a run cut off still
leaves what it measured; each section's output goes to DIR/NAME.log as it
comes, and its last lines to the terminal when it ends. Exit status: 0 when every section ran and every
target was met, 1 otherwise, 2 on bad usage.

--dry-run walks the same sections on the CPU with tiny shapes (Triton under
its interpreter, no build, no nvidia-smi) to check the script, its JSON and
its verdicts; the targets stay those of the GPU, so its verdict is FAIL.
Under --dry-run, CWARP_GPU_CHECK_HANG=NAME[,NAME] makes those sections start
a grandchild and then hang, to check that the limit ends them, grandchild
included, and that the later sections still run. The test suite runs both
(tests/benchmarks/test_gpu_check_script.py).
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HBM_BYTES_PER_S = {"H200": 4.8e12, "H100": 3.35e12, "A100": 2.0e12}
DEFAULT_HBM = 4.8e12
HANG_ENV = "CWARP_GPU_CHECK_HANG"
# A section is not started with less than this left of the budget.
MIN_SECTION_S = 10.0
# Seconds between SIGTERM and SIGKILL to a section's process group.
KILL_GRACE_S = 3.0


class Section(NamedTuple):
    name: str
    limit_s: float
    background: bool = False    # started, then joined by the first section that needs it
    needs: Tuple[str, ...] = ()  # sections that must have ended first (waited for, up to their limit)


SECTIONS = (
    Section("build", 300, background=True),
    Section("environment", 45),
    Section("parity-triton", 210),
    Section("parity-cpp", 60, needs=("build",)),
    Section("warp", 150, needs=("build",)),
    Section("loss", 75, needs=("build",)),
    Section("augment", 60, needs=("build",)),
    Section("tests", 120, needs=("build",)),
)
# The CUDA tests run last, a subset that fits: parity over dtypes and shapes,
# determinism, empty and non-finite input.
TEST_SELECTION = "matches_reference or deterministic or empty or nan"


# ---------------------------------------------------------------------------
# The record: one JSON file, rewritten after every figure (under a lock: the
# build writes from the background while another section runs).
# ---------------------------------------------------------------------------

def verdict(measured: Optional[float], target: float, higher_is_better: bool = True) -> str:
    """PASS when measured meets target; FAIL otherwise, a missing figure included."""
    if measured is None or measured != measured:  # None or NaN
        return "FAIL"
    return "PASS" if (measured >= target if higher_is_better else measured <= target) else "FAIL"


class Record:
    def __init__(self, path: str):
        self.path = path

    @contextlib.contextmanager
    def _locked(self):
        with open(self.path + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def load(self) -> dict:
        with open(self.path) as f:
            return json.load(f)

    def save(self, data: dict) -> None:
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, self.path)

    def update(self, change: Callable[[dict], None]) -> None:
        """Load, change, save, with no other writer in between."""
        with self._locked():
            data = self.load()
            change(data)
            self.save(data)

    def start(self, dry_run: bool, plan: Dict[str, float], budget_s: float) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        with self._locked():
            self.save({"started": time.strftime("%Y-%m-%d %H:%M:%S"), "dry_run": dry_run, "budget_s": budget_s,
                       "plan_limits_s": plan, "sections": [], "verdict": None})

    @staticmethod
    def _entry(data: dict, name: str) -> dict:
        entry = next((s for s in data["sections"] if s["name"] == name), None)
        if entry is None:
            entry = {"name": name, "status": "running", "figures": []}
            data["sections"].append(entry)
        return entry

    def section(self, name: str, **fields) -> None:
        self.update(lambda data: self._entry(data, name).update(fields))

    def figure(self, section: str, name: str, value=None, *, unit: str = "", target: Optional[float] = None,
               higher_is_better: bool = True, note: str = "") -> Optional[str]:
        """Record one figure (and its verdict when it has a target); prints it too."""
        result = None if target is None else verdict(value, target, higher_is_better)
        self.update(lambda data: self._entry(data, section)["figures"].append(
            {"name": name, "value": value, "unit": unit, "target": target, "higher_is_better": higher_is_better,
             "verdict": result, "note": note}))
        shown = value if not isinstance(value, float) else f"{value:.4g}"
        goal = "" if target is None else f" (target {'>=' if higher_is_better else '<='} {target:g}): {result}"
        print(f"  {name}: {shown} {unit}{goal}{'  ' + note if note else ''}", flush=True)
        return result


def _failure(exc: BaseException) -> str:
    return f"failed: {type(exc).__name__}: {str(exc).strip()[:400]}"


# ---------------------------------------------------------------------------
# The sections (each runs in its own process: --section NAME).
# ---------------------------------------------------------------------------

def _setup(dry_run: bool):
    sys.path[:0] = [ROOT, os.path.join(ROOT, "benchmarks")]
    import torch

    return torch, torch.device("cpu" if dry_run else "cuda")


def _tool_version(argv: List[str]) -> str:
    """The last line of `argv` (a --version call), or why there is none."""
    if shutil.which(argv[0]) is None:
        return "not on PATH"
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return _failure(exc)
    lines = (proc.stdout or proc.stderr).strip().splitlines()
    return f"{lines[-1] if lines else '?'} ({shutil.which(argv[0])})"


def ninja_figure(rec: Record, section: str) -> None:
    version = _tool_version(["ninja", "--version"])
    rec.figure(section, "ninja", version,
               note="torch.utils.cpp_extension compiles one file at a time without it" if "PATH" in version else "")


def section_environment(rec: Record, dry_run: bool) -> bool:
    if not dry_run:
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
            rec.figure("environment", "nvidia-smi", smi.stdout.strip() or smi.stderr.strip())
        except (OSError, subprocess.TimeoutExpired) as exc:
            rec.figure("environment", "nvidia-smi", _failure(exc))
    torch, device = _setup(dry_run)
    import importlib.util

    import triton

    import cwarp

    rec.figure("environment", "python", f"{sys.version.split()[0]} ({sys.executable})")
    rec.figure("environment", "torch", f"{torch.__version__} (CUDA {torch.version.cuda})")
    rec.figure("environment", "triton", triton.__version__)
    rec.figure("environment", "device", torch.cuda.get_device_name() if device.type == "cuda" else "cpu")
    rec.figure("environment", "cpu cores", os.cpu_count())
    ninja_figure(rec, "environment")
    rec.figure("environment", "nvcc", _tool_version(["nvcc", "--version"]))
    found = ["installed" if importlib.util.find_spec(m) else "absent" for m in ("pytest", "pytest_timeout")]
    rec.figure("environment", "pytest, pytest-timeout", ", ".join(found))
    rec.figure("environment", "cwarp backends (before the build)", json.dumps(cwarp.backends()))
    return True


def _build_jobs() -> str:
    """Leaves two cores to the Triton compiles of the parity section that runs beside the build."""
    return os.environ.get("MAX_JOBS", str(max(1, (os.cpu_count() or 16) - 2)))


def section_build(rec: Record, dry_run: bool) -> bool:
    ninja_figure(rec, "build")
    if dry_run:
        rec.figure("build", "build", "not run (dry run)")
        return True
    env = dict(os.environ, FORCE_CUDA="1", TORCH_CUDA_ARCH_LIST=os.environ.get("TORCH_CUDA_ARCH_LIST", "9.0"),
               MAX_JOBS=_build_jobs())
    has_cuda = subprocess.run([sys.executable, "-c", "import sys, cwarp._extension as e; "
                               "sys.exit(0 if e.with_cuda() else 1)"], cwd=ROOT, capture_output=True).returncode == 0
    if has_cuda:
        rec.figure("build", "build", "not needed: cwarp._C has its CUDA kernels")
    else:
        # Built beside the tree, then moved in by rename: a process that has
        # the former cwarp._C mapped keeps its file.
        lib = os.path.join(ROOT, "build", "gpu_check_lib")
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "setup.py", "--quiet", "build_ext", "--build-lib", lib], cwd=ROOT,
                              env=env)
        rec.figure("build", "build seconds", round(time.perf_counter() - t0, 1), unit="s",
                   note=f"MAX_JOBS={env['MAX_JOBS']}, TORCH_CUDA_ARCH_LIST={env['TORCH_CUDA_ARCH_LIST']}")
        built = [f for f in os.listdir(os.path.join(lib, "cwarp")) if f.startswith("_C")] \
            if os.path.isdir(os.path.join(lib, "cwarp")) else []
        for name in built:
            os.replace(os.path.join(lib, "cwarp", name), os.path.join(ROOT, "cwarp", name))
        ok = proc.returncode == 0 and bool(built)
        rec.figure("build", "build exit status", proc.returncode if built else None, target=0,
                   higher_is_better=False, note="" if built else f"no cwarp/_C*.so in {lib}/cwarp")
        if not ok:
            return False
    proc = subprocess.run([sys.executable, "scripts/check_cuda_kernels.py", "--arch", "90"], cwd=ROOT)
    rec.figure("build", "check_cuda_kernels (spills, launch bounds, occupancy budgets)",
               proc.returncode, target=0, higher_is_better=False)
    return proc.returncode == 0


def section_parity(rec: Record, dry_run: bool, backend: str) -> bool:
    """Every op on `backend` against the float64 reference (benchmarks/gpu_parity.py), one try per case."""
    torch, device = _setup(dry_run)
    import cwarp
    import gpu_parity as gate

    section = f"parity-{backend}"
    results = []

    def case(label: str, dtype, run: Callable[[], Dict[str, float]]) -> None:
        try:
            figures = run()
        except Exception as exc:  # noqa: BLE001 - one case's failure is recorded, the others still run
            results.append(rec.figure(section, label, None, target=0, higher_is_better=False, note=_failure(exc)))
            return
        for fig, value in figures.items():
            if fig == "repeats bitwise":
                results.append(rec.figure(section, f"{label}: {fig}", int(value), target=1))
            else:
                results.append(rec.figure(section, f"{label}: {fig}", value, unit="rel err",
                                          target=gate.tolerance(fig, dtype), higher_is_better=False))

    fn = gate.backend_fn(backend)
    for wc in gate.warp_cases(dry_run):
        case(f"local_warp {backend} {wc.name}", wc.dtype,
             lambda wc=wc: gate.check_warp(fn, wc, gate.warp_inputs(wc, 0, device)))
    loss = lambda *a, **kw: cwarp.contrastive_loss(*a, backend=backend, **kw)  # noqa: E731
    for in_batch in (False, True):
        case(f"contrastive_loss {backend} float32 {'in-batch' if in_batch else 'negatives'}", torch.float32,
             lambda in_batch=in_batch: gate.check_loss(loss, gate.loss_inputs(in_batch, 0, device, dry_run)))
    case(f"augment_views {backend} uint8 -> float32", torch.float32,
         lambda: gate.check_views(backend, device, 0, dry_run))
    return all(r == "PASS" for r in results)


def section_warp(rec: Record, dry_run: bool) -> bool:
    """The local_warp targets; every contender its own try, torch.compile last."""
    torch, device = _setup(dry_run)
    import torch.nn.functional as F

    import cwarp
    from common import time_fn
    from cwarp import reference

    B, C, H, W, K = (2, 3, 16, 16, 4) if dry_run else (256, 3, 224, 224, 4)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    peak = next((v for k, v in HBM_BYTES_PER_S.items() if k in name), DEFAULT_HBM)
    kw = dict(kind="translate", padding_mode="border", align_corners=False)

    def timed(label: str, fn: Callable[[], object], note: Callable[[float], str] = lambda t: "") -> Optional[float]:
        try:
            t = time_fn(fn, device, 0.05).p50_ms
        except Exception as exc:  # noqa: BLE001 - this contender fails; the others are still timed
            rec.figure("warp", label, None, unit="ms", note=_failure(exc))
            return None
        rec.figure("warp", label, t, unit="ms", note=note(t))
        return t

    def ratio(label: str, num: Optional[float], den: Optional[float], target: float, unit: str = "x",
              note: str = "") -> None:
        value = None if num is None or den is None else num / den
        rec.figure("warp", label, value, unit=unit, target=target, note=note)

    forward_ms: Dict[Tuple[str, str], Optional[float]] = {}
    inputs = {}
    for dtype in (torch.float32, torch.bfloat16):
        tag = str(dtype)[6:]
        g = torch.Generator().manual_seed(0)
        image = torch.rand(B, C, H, W, generator=g).to(device, dtype)
        params = cwarp.sample_local_warps(B, K, generator=g).to(device, dtype)
        theta = (torch.eye(2, 3).repeat(B, 1, 1) * 0.9).to(device, dtype)
        inputs[dtype] = (image, params, theta)
        t_eager = timed(f"{tag} eager reference fwd",
                        lambda: reference.local_warp(image, params, theta, compute_dtype=None, **kw))
        grad_out = torch.randn(B, C, H, W, generator=g).to(device, dtype)
        try:
            grid = reference.local_warp_grid(params, (H, W), theta, compute_dtype=None).requires_grad_()
            img_req = image.detach().clone().requires_grad_()
            gs_out = F.grid_sample(img_req, grid, mode="bilinear", padding_mode="border", align_corners=False)
            t_gs = timed(f"{tag} grid_sample backward",
                         lambda: torch.autograd.grad(gs_out, (img_req, grid), grad_out, retain_graph=True))
        except Exception as exc:  # noqa: BLE001
            rec.figure("warp", f"{tag} grid_sample backward", None, unit="ms", note=_failure(exc))
            t_gs = None
        bytes_moved = 2 * image.numel() * image.element_size()
        for backend in ("cpp", "triton"):
            t_fwd = timed(f"{tag} {backend} fwd", lambda: cwarp.local_warp(image, params, theta, backend=backend, **kw),
                          note=lambda t: f"{B / t * 1e3:,.0f} images/s")
            forward_ms[tag, backend] = t_fwd

            def backward(backend=backend):
                op = (torch.ops.cwarp.local_warp_backward if backend == "cpp"
                      else torch.ops.cwarp.local_warp_backward_triton)
                return op(grad_out, image, params, theta, kw["kind"], kw["padding_mode"], False, [True, True, True])

            t_bwd = timed(f"{tag} {backend} bwd", backward)
            ratio(f"{tag} {backend} fwd bandwidth / HBM peak", None if t_fwd is None else bytes_moved / (t_fwd * 1e-3),
                  peak, 0.70, unit="", note=f"peak {peak / 1e12:.2f} TB/s")
            ratio(f"{tag} {backend} fwd speedup over eager", t_eager, t_fwd, 3.0)
            ratio(f"{tag} {backend} bwd speedup over grid_sample backward", t_gs, t_bwd, 2.0)
    # torch.compile last: its compile is the slowest and the likeliest to fail.
    image, params, theta = inputs[torch.float32]
    if dry_run:
        rec.figure("warp", "float32 torch.compile(reference) fwd", "not run (dry run)")
        return True
    try:
        compiled = torch.compile(lambda i, p, t: reference.local_warp(i, p, t, compute_dtype=None, **kw))
        t_comp = timed("float32 torch.compile(reference) fwd", lambda: compiled(image, params, theta))
    except Exception as exc:  # noqa: BLE001
        rec.figure("warp", "float32 torch.compile(reference) fwd", None, unit="ms", note=_failure(exc))
        t_comp = None
    for backend in ("cpp", "triton"):
        ratio(f"float32 {backend} fwd speedup over torch.compile(reference)", t_comp,
              forward_ms["float32", backend], 1.5)
    return True


def _benchmark_script(rec: Record, section: str, argv: List[str], out_dir: str) -> bool:
    """Runs a benchmark script (its output into this section's log as it
    comes), then files its floors (from its JSON) under section."""
    path = os.path.join(out_dir, f"{section}_throughput.json")
    proc = subprocess.run([sys.executable, *argv, "--json", path], cwd=ROOT)
    floors = json.load(open(path)).get("floors", []) if os.path.exists(path) else []
    for c in floors:  # every floor is a least speed, but the loss's peak-memory ratios (a most)
        rec.figure(section, c["check"], c["measured"], target=c["floor"],
                   higher_is_better="peak memory" not in c["check"])
    rec.figure(section, "exit status", proc.returncode, target=0, higher_is_better=False)
    return proc.returncode == 0


def section_loss(rec: Record, dry_run: bool, out_dir: str) -> bool:
    argv = ["benchmarks/loss_throughput.py", "--no-compile"]
    argv += ["--device", "cpu", "--quick"] if dry_run else ["--device", "cuda", "--cuda-graphs"]
    return _benchmark_script(rec, "loss", argv, out_dir)


def section_augment(rec: Record, dry_run: bool, out_dir: str) -> bool:
    argv = ["benchmarks/augment_throughput.py"]
    argv += (["--device", "cpu", "--batch", "2", "--src", "32", "--size", "16", "--min-run-time", "0.05",
              "--skip", "pil", "kornia", "torchvision"] if dry_run
             else ["--device", "cuda", "--batch", "256", "--skip", "pil", "kornia", "torchvision"])
    return _benchmark_script(rec, "augment", argv, out_dir)


def section_tests(rec: Record, dry_run: bool) -> bool:
    import importlib.util

    if importlib.util.find_spec("pytest") is None:
        rec.figure("tests", "pytest installed", 0, target=1, note=f"no pytest for {sys.executable}")
        return False
    # -v: one line per test as it ends, so a run cut off by the limit still says how far it got.
    argv = [sys.executable, "-m", "pytest", "-v", "-rfEs", "-m", "cuda", "-k", TEST_SELECTION, "--maxfail", "25",
            "-p", "no:cacheprovider", "tests/ops", "tests/nn"]
    if importlib.util.find_spec("pytest_timeout") is not None:
        argv[3:3] = ["--timeout", "60"]
    else:
        rec.figure("tests", "per-test timeout", "none: pytest-timeout is not installed (the section's limit holds)")
    if dry_run:  # collected, not run: there is no GPU
        argv.append("--collect-only")
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    last = "no output"
    for line in proc.stdout:  # passed on as it comes: a run cut off still leaves its lines in the log
        print(line, end="", flush=True)
        last = line.strip() or last
    proc.wait()
    rec.figure("tests", "pytest summary", last)
    rec.figure("tests", "pytest exit status", proc.returncode, target=0, higher_is_better=False)
    return proc.returncode == 0


def _simulated_hang(rec: Record, name: str) -> None:
    """Starts a grandchild that outlives nothing but its process group, records its pid, and hangs."""
    grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    rec.figure(name, "simulated hang: grandchild pid", grandchild.pid)
    time.sleep(3600)


def run_section(name: str, rec: Record, dry_run: bool, out_dir: str) -> bool:
    if dry_run and name in os.environ.get(HANG_ENV, "").split(","):
        _simulated_hang(rec, name)
    table: Dict[str, Callable[[], bool]] = {
        "environment": lambda: section_environment(rec, dry_run),
        "build": lambda: section_build(rec, dry_run),
        "parity-triton": lambda: section_parity(rec, dry_run, "triton"),
        "parity-cpp": lambda: section_parity(rec, dry_run, "cpp"),
        "warp": lambda: section_warp(rec, dry_run),
        "loss": lambda: section_loss(rec, dry_run, out_dir),
        "augment": lambda: section_augment(rec, dry_run, out_dir),
        "tests": lambda: section_tests(rec, dry_run),
    }
    return table[name]()


# ---------------------------------------------------------------------------
# The driver: sections in order, each a child process in its own process
# group with a time limit.
# ---------------------------------------------------------------------------

def kill_group(pgid: int) -> None:
    """SIGTERM to every process of the group, SIGKILL to what is left after KILL_GRACE_S."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + KILL_GRACE_S
        while sig == signal.SIGTERM and time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


class ChildSection:
    """One section in a child process that leads its own process group
    (start_new_session), so that a timeout ends everything it started. Its
    output, and its children's, goes to DIR/NAME.log as it comes; the last
    lines are printed when it ends."""

    TAIL_LINES = 40

    def __init__(self, name: str, out_dir: str, dry_run: bool):
        argv = [sys.executable, os.path.abspath(__file__), "--section", name, "--out", out_dir]
        if dry_run:
            argv.append("--dry-run")
        self.log_path = os.path.join(out_dir, f"{name}.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(argv, cwd=ROOT, start_new_session=True, stdout=self.log,
                                     stderr=subprocess.STDOUT)

    def wait(self, timeout: float) -> str:
        """The section's status ("ok", "FAIL", "timeout", "error") once it ends or its time is up."""
        try:
            code = self.proc.wait(timeout=max(timeout, 0.0))
            status = {0: "ok", 1: "FAIL"}.get(code, "error")
        except subprocess.TimeoutExpired:
            status = "timeout"
        self.kill()  # what the section left running, or the section itself
        with open(self.log_path, errors="replace") as f:
            tail = f.readlines()[-self.TAIL_LINES:]
        print(f"--- the last {len(tail)} lines of {self.log_path} ---\n" + "".join(tail), end="", flush=True)
        return status

    def kill(self) -> None:
        kill_group(self.proc.pid)
        self.proc.wait()
        self.log.close()


def drive(rec: Record, sections, budget_s: float, launch: Callable[[str, float], object],
          clock: Callable[[], float] = time.perf_counter) -> int:
    """Runs the sections in order; launch(name, limit) starts one and returns
    a handle with wait(timeout) -> status and kill(). A section gets its
    limit or what is left of the budget, whichever is less; none starts with
    less than MIN_SECTION_S left. The exit status."""
    t_start = clock()
    running: Dict[str, tuple] = {}  # name -> (handle, deadline, start)

    def finish(name: str) -> None:
        handle, deadline, t0 = running[name]
        status = handle.wait(deadline - clock())
        del running[name]
        seconds = round(clock() - t0, 1)
        rec.section(name, status=status, seconds=seconds)
        print(f"=== {name}: {status} after {seconds:.0f} s ===", flush=True)

    try:
        for sec in sections:
            for dep in sec.needs:
                if dep in running:
                    print(f"\n=== {sec.name} waits for {dep} ({time.strftime('%H:%M:%S')}) ===", flush=True)
                    finish(dep)
            left = budget_s - (clock() - t_start)
            if left < MIN_SECTION_S:
                rec.section(sec.name, status="skipped", reason="out of time")
                continue
            limit = min(sec.limit_s, left)
            print(f"\n=== {sec.name} ({time.strftime('%H:%M:%S')}, limit {limit:.0f} s"
                  f"{', in the background' if sec.background else ''}) ===", flush=True)
            rec.section(sec.name, status="running", started=time.strftime("%H:%M:%S"), limit_s=round(limit))
            t0 = clock()
            running[sec.name] = (launch(sec.name, limit), t0 + limit, t0)
            if not sec.background:
                finish(sec.name)
        for name in list(running):
            finish(name)
    finally:  # interrupted (SIGTERM, Ctrl-C): no section outlives the driver
        for handle, _, _ in running.values():
            handle.kill()
    data = rec.load()
    bad = [s["name"] for s in data["sections"] if s["status"] != "ok"]
    missed = [f"{s['name']}: {f['name']}" for s in data["sections"] for f in s["figures"] if f["verdict"] == "FAIL"]
    verdict_ = "PASS" if not bad and not missed else "FAIL"
    rec.update(lambda d: d.update(verdict=verdict_, not_ok_sections=bad, missed=missed,
                                  seconds=round(clock() - t_start, 1)))
    print(f"\n=== summary ===\n{verdict_}: sections not ok: {bad or 'none'}; missed: {missed or 'none'}")
    print(f"results in {rec.path}")
    return 0 if verdict_ == "PASS" else 1


def interpreter_scripts_on_path() -> None:
    """Puts the running interpreter's script directories (where pip puts
    ninja) first on PATH: torch's extension builder looks for ninja there
    and compiles one file at a time without it."""
    dirs = [os.path.dirname(sys.executable), sysconfig.get_path("scripts")]
    path = os.environ.get("PATH", "").split(os.pathsep)
    os.environ["PATH"] = os.pathsep.join(list(dict.fromkeys([d for d in dirs if d] + path)))


def _interrupted(signum, frame):
    raise SystemExit(128 + signum)


def main(argv=None) -> int:
    names = [s.name for s in SECTIONS]
    ap = argparse.ArgumentParser(prog="gpu_check.py", description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=None, help="folder of gpu_check.json (default: $OUT, else results/)")
    ap.add_argument("--budget-s", type=float, default=480.0, help="start no section after this (480)")
    ap.add_argument("--sections", default=None, help=f"a comma-separated subset of {','.join(names)} (all)")
    ap.add_argument("--limit", action="append", default=[], metavar="NAME=SECONDS",
                    help="another time limit for a section (repeatable)")
    ap.add_argument("--dry-run", action="store_true", help="the sections on the CPU, tiny shapes")
    ap.add_argument("--section", choices=names, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.budget_s <= 0:
        ap.error(f"--budget-s must be > 0, got {args.budget_s}")
    chosen = names if args.sections is None else [n.strip() for n in args.sections.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in names]
    if unknown or not chosen:
        ap.error(f"--sections: expected names among {','.join(names)}, got {args.sections!r}")
    limits = {}
    for item in args.limit:
        name, _, seconds = item.partition("=")
        try:
            limits[name] = float(seconds)
        except ValueError:
            limits[name] = -1.0
        if name not in names or not limits[name] > 0:
            ap.error(f"--limit: expected NAME=SECONDS with NAME among {','.join(names)} and SECONDS > 0, got {item!r}")
    out_dir = os.path.abspath(args.out or os.environ.get("OUT") or os.path.join(ROOT, "results"))
    rec = Record(os.path.join(out_dir, "gpu_check.json"))
    interpreter_scripts_on_path()
    if args.dry_run:
        # The Triton kernels run on CPU tensors only under the interpreter, chosen at import.
        os.environ["TRITON_INTERPRET"] = "1"
    if args.section:
        t0 = time.perf_counter()
        ok = run_section(args.section, rec, args.dry_run, out_dir)
        # A background section is joined later than it ends: its own time.
        rec.section(args.section, ran_s=round(time.perf_counter() - t0, 1))
        return 0 if ok else 1
    sections = [s._replace(limit_s=limits.get(s.name, s.limit_s)) for s in SECTIONS if s.name in chosen]
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, _interrupted)
    rec.start(args.dry_run, {s.name: s.limit_s for s in sections}, args.budget_s)

    return drive(rec, sections, args.budget_s, lambda name, limit: ChildSection(name, out_dir, args.dry_run))


if __name__ == "__main__":
    sys.exit(main())
