"""Timing, tables and JSON records shared by the benchmark scripts.

CPU timings use torch.utils.benchmark (blocked_autorange, p20/p50/p80 of
the measured blocks); GPU timings use triton.testing.do_bench, or
do_bench_cudagraph where the host's launches would dominate. Every script
prints one table with one row per (case, contender) and can write the same
rows as JSON together with the machine, torch and cwarp versions.
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
from typing import Callable, Dict, List, Optional

import torch
import torch.utils.benchmark as tbench


@dataclasses.dataclass
class Timing:
    p50_ms: float
    p20_ms: float
    p80_ms: float


@dataclasses.dataclass
class Row:
    case: str                    # e.g. "fwd B=64 3x112x112 K=4"
    contender: str               # e.g. "cwarp cpp", "reference (eager)"
    dtype: str
    timing: Optional[Timing]     # None when the contender could not run (see note)
    items: int                   # images (or rows) processed per call
    note: str = ""
    peak_mem_mb: Optional[float] = None
    speedup: Optional[float] = None  # baseline p50 / this p50, filled by add_speedups

    @property
    def items_per_s(self) -> Optional[float]:
        return None if self.timing is None else self.items / (self.timing.p50_ms / 1e3)


def quantile_ms(times_s, f: float) -> float:
    """The f-quantile (lower element, no interpolation) of sorted times in seconds, in ms."""
    return times_s[min(len(times_s) - 1, int(f * len(times_s)))] * 1e3


def time_cpu(fn: Callable[[], object], min_run_time: float = 1.0) -> Timing:
    fn()  # warm-up: first-call allocations, lazy init, compilation
    # Timer runs its statement on ONE thread unless told otherwise; the floors
    # are stated for torch.get_num_threads() threads (cv2 uses as many).
    timer = tbench.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    m = timer.blocked_autorange(min_run_time=min_run_time)
    times = sorted(m.times)
    return Timing(p50_ms=m.median * 1e3, p20_ms=quantile_ms(times, 0.2), p80_ms=quantile_ms(times, 0.8))


def time_gpu(fn: Callable[[], object], rep_ms: int = 200) -> Timing:
    import triton.testing

    p50, p20, p80 = triton.testing.do_bench(fn, quantiles=[0.5, 0.2, 0.8], rep=rep_ms)
    return Timing(p50_ms=p50, p20_ms=p20, p80_ms=p80)


def time_gpu_graph(fn: Callable[[], object], rep_ms: int = 200) -> Timing:
    """fn's calls captured in one CUDA graph and replayed
    (triton.testing.do_bench_cudagraph): the GPU's time without the host's
    launches, for calls whose kernels are shorter than launching them."""
    import triton.testing

    p50, p20, p80 = triton.testing.do_bench_cudagraph(fn, rep=rep_ms, quantiles=[0.5, 0.2, 0.8])
    return Timing(p50_ms=p50, p20_ms=p20, p80_ms=p80)


def time_fn(fn: Callable[[], object], device: torch.device, min_run_time: float = 1.0,
            cuda_graph: bool = False) -> Timing:
    """CPU: torch.utils.benchmark; CUDA: do_bench, or do_bench_cudagraph when cuda_graph."""
    if torch.device(device).type != "cuda":
        return time_cpu(fn, min_run_time)
    return time_gpu_graph(fn) if cuda_graph else time_gpu(fn)


def time_interleaved(fns: Dict[str, Callable[[], object]], device: torch.device, min_run_time: float = 1.0,
                     rounds: int = 3) -> Dict[str, object]:
    """Time several contenders in `rounds` interleaved passes; keep each one's
    pass with the lowest p50.

    On a shared, noisy machine a burst of outside load then slows one pass of
    one contender instead of skewing the ratio between contenders. A
    contender that raises maps to its exception (reported, not hidden).
    """
    best: Dict[str, object] = {}
    for _ in range(rounds):
        for name, fn in fns.items():
            if isinstance(best.get(name), Exception):
                continue
            try:
                t = time_fn(fn, device, min_run_time)
            except Exception as exc:  # noqa: BLE001 - reported in the table
                best[name] = exc
                continue
            old = best.get(name)
            if old is None or t.p50_ms < old.p50_ms:
                best[name] = t
    return best


def add_speedups(rows: List[Row], baseline: str) -> None:
    """Fill Row.speedup = baseline's p50 / row's p50 within each (case, dtype)."""
    base: Dict[tuple, float] = {}
    for r in rows:
        if r.contender == baseline and r.timing is not None:
            base[(r.case, r.dtype)] = r.timing.p50_ms
    for r in rows:
        b = base.get((r.case, r.dtype))
        if b is not None and r.timing is not None:
            r.speedup = b / r.timing.p50_ms


def format_table(rows: List[Row], unit: str = "images/s") -> str:
    head = ["case", "contender", "dtype", "p50 ms", "p20 ms", "p80 ms", unit, "speedup", "peak MB", "note"]
    body = []
    for r in rows:
        t = r.timing
        body.append([
            r.case, r.contender, r.dtype,
            f"{t.p50_ms:.3f}" if t else "-", f"{t.p20_ms:.3f}" if t else "-", f"{t.p80_ms:.3f}" if t else "-",
            f"{r.items_per_s:,.0f}" if t else "-",
            f"{r.speedup:.2f}x" if r.speedup is not None else "-",
            f"{r.peak_mem_mb:.1f}" if r.peak_mem_mb is not None else "-",
            r.note,
        ])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(b) for b in body])


def environment() -> dict:
    import cwarp

    info = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "cwarp": cwarp.__version__,
        "cwarp_backends": cwarp.backends(),
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def write_record(path: str, record: dict) -> None:
    """Write ``record`` as JSON with the environment() of this run beside it."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"environment": environment(), **record}, f, indent=2)


def write_json(path: str, rows: List[Row], extra: Optional[dict] = None) -> None:
    record = dict(extra or {})
    record["rows"] = []
    for r in rows:
        d = dataclasses.asdict(r)
        d["items_per_s"] = r.items_per_s
        record["rows"].append(d)
    write_record(path, record)
