"""Throughput and peak memory of cwarp.contrastive_loss against the reference.

    python benchmarks/loss_throughput.py                    # CPU, 2 threads, float32
    python benchmarks/loss_throughput.py --device cuda --cuda-graphs   # GPU floor cases
    python benchmarks/loss_throughput.py --quick --json out.json

Contenders: the fused op ("cwarp cpp"; plus "cwarp triton" on CUDA), the
eager reference (cwarp.reference.contrastive_loss: normalize, einsum, cat,
logsumexp) and torch.compile(reference). For in-batch cases also lightly's
NTXentLoss when it is installed (the row says "not installed" otherwise).
Modes: forward ("fwd") and forward + backward ("fwd+bwd", autograd.grad with
respect to every input). Rows are B rows of the batch ("rows/s").

Timing: torch.utils.benchmark on the CPU; triton.testing.do_bench on CUDA,
or with --cuda-graphs do_bench_cudagraph: each contender's calls replayed
from one CUDA graph, so that the GPU's time is measured rather than the
host's launches (at B=1024 one call's kernels take microseconds). The CUDA
floors are stated for --cuda-graphs.

Peak memory ("peak MB") is the peak of extra bytes live during one call
above what was live before it:
  - CUDA: torch.cuda.max_memory_allocated() after reset_peak_memory_stats().
  - CPU: torch has no CPU peak counter, so the call runs once under
    torch.profiler(profile_memory=True); every allocation and free the
    profiler records (the Allocation events of its event tree, CPU device)
    is replayed in time order and the running sum of live bytes gives the
    peak. Inputs and their existing storage are not counted.

Floors (the issue's acceptance figures; checked at the end, printed and put
in the JSON under "floors"):
  CPU (2 threads, float32): fwd+bwd >= 3x the eager reference at B=256,
  D=256, N=8; in-batch at B=8192, D=128: peak extra memory <= 1/8 of the
  reference's and fwd+bwd no slower than the reference.
  CUDA: fwd+bwd >= 5x the eager reference at B=1024, D=256, N=8; in-batch
  at B=8192, D=128: Triton no slower than the CUDA kernel (backend="auto"
  picks Triton there).
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
from typing import Callable, List, Optional

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cwarp  # noqa: E402
from cwarp import reference  # noqa: E402
from common import Row, add_speedups, format_table, time_fn, write_json  # noqa: E402

BASELINE = "reference (eager)"


# ---------------------------------------------------------------------------
# Peak memory
# ---------------------------------------------------------------------------


def peak_cpu_bytes(fn: Callable[[], object]) -> int:
    """Peak live bytes allocated during fn(), by replaying the profiler's allocation events."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
        del out
    events = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        e = stack.pop()
        stack.extend(e.children)
        if e.typed[0] == _EventType.Allocation and e.typed[1].device.type == "cpu":
            events.append((e.start_time_ns, e.typed[1].alloc_size))
    events.sort(key=lambda x: x[0])
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


def peak_cuda_bytes(fn: Callable[[], object]) -> int:
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    del out
    return peak


def peak_bytes(fn: Callable[[], object], device: torch.device) -> int:
    return peak_cuda_bytes(fn) if device.type == "cuda" else peak_cpu_bytes(fn)


# ---------------------------------------------------------------------------
# Contenders
# ---------------------------------------------------------------------------


def lightly_ntxent(tau: float) -> Optional[Callable]:
    """lightly's NTXentLoss(p, z_pos) (in-batch negatives only), or None when not installed."""
    try:
        from lightly.loss import NTXentLoss
    except ImportError:
        return None
    return NTXentLoss(temperature=tau)


def contenders(device: torch.device, in_batch: bool, n_neg: int, tau: float, compile_ref: bool):
    kw = dict(tau=tau, in_batch=in_batch)
    out = [("cwarp cpp", functools.partial(cwarp.contrastive_loss, backend="cpp", **kw), "")]
    if device.type == "cuda":
        out.append(("cwarp triton", functools.partial(cwarp.contrastive_loss, backend="triton", **kw), ""))
    out.append((BASELINE, functools.partial(reference.contrastive_loss, **kw), ""))
    if compile_ref:
        out.append(("reference (torch.compile)", torch.compile(functools.partial(reference.contrastive_loss, **kw)),
                    ""))
    if in_batch:
        ntx = lightly_ntxent(tau)
        if ntx is None:
            out.append(("lightly NTXentLoss", None, "not installed"))
        elif n_neg == 0:
            out.append(("lightly NTXentLoss", lambda p, z, zn: ntx(p, z), "2B-row NT-Xent: not the same loss"))
        else:
            out.append(("lightly NTXentLoss", None, "no hard negatives: skipped"))
    return out


def run_case(B: int, D: int, N: int, in_batch: bool, dtype: torch.dtype, device: torch.device, tau: float,
             modes: List[str], compile_ref: bool, min_run_time: float, cuda_graph: bool = False) -> List[Row]:
    g = torch.Generator().manual_seed(0)
    p = torch.randn(B, D, generator=g).to(device=device, dtype=dtype)
    z = (p.float().cpu() + torch.randn(B, D, generator=g)).to(device=device, dtype=dtype)
    zn = torch.randn(B, N, D, generator=g).to(device=device, dtype=dtype) if N > 0 else None
    inputs = [t.requires_grad_() for t in (p, z, zn) if t is not None]
    case_base = f"B={B} D={D} N={N}" + (" in_batch" if in_batch else "")
    rows = []
    for mode in modes:
        # Fresh contenders (and a fresh torch.compile) per mode: grad mode is
        # part of Dynamo's guards, and sharing one compiled function across
        # modes and shapes runs into its recompile limit (then eager runs).
        torch._dynamo.reset()
        for name, fn, note in contenders(device, in_batch, N, tau, compile_ref):
            case = f"{mode} {case_base}"
            if fn is None:
                rows.append(Row(case, name, str(dtype).replace("torch.", ""), None, B, note=note))
                continue

            if mode == "fwd":
                def call(fn=fn):
                    with torch.no_grad():
                        return fn(p, z, zn)
            else:
                def call(fn=fn):
                    loss = fn(p, z, zn)
                    return torch.autograd.grad(loss, inputs)
            try:
                call()  # warm-up (and compilation for torch.compile)
                if cuda_graph and device.type == "cuda":
                    # Launches included, for the note: what a caller without graphs sees.
                    note = f"{note}; " if note else ""
                    note += f"do_bench p50 {time_fn(call, device).p50_ms:.4f} ms"
                timing = time_fn(call, device, min_run_time=min_run_time, cuda_graph=cuda_graph)
                peak = peak_bytes(call, device) / 2**20
            except Exception as exc:  # a contender that cannot run is reported, not hidden
                rows.append(Row(case, name, str(dtype).replace("torch.", ""), None, B,
                                note=f"{note + '; ' if note else ''}failed: {type(exc).__name__}: {str(exc)[:80]}"))
                continue
            rows.append(Row(case, name, str(dtype).replace("torch.", ""), timing, B, note=note, peak_mem_mb=peak))
    return rows


# ---------------------------------------------------------------------------
# Floors
# ---------------------------------------------------------------------------


def _find(rows: List[Row], case: str, contender: str) -> Optional[Row]:
    for r in rows:
        if r.case == case and r.contender == contender and r.timing is not None:
            return r
    return None


def check_floors(rows: List[Row], device: torch.device) -> List[dict]:
    checks = []

    def speed(case: str, floor: float, label: str):
        if not any(r.case == case for r in rows):  # not a case of this run
            return
        fused, ref = _find(rows, case, "cwarp cpp"), _find(rows, case, BASELINE)
        if fused is None or ref is None:  # run, but a contender failed: the floor is missed
            checks.append(dict(check=label, measured=None, floor=floor, ok=False))
            return
        ratio = ref.timing.p50_ms / fused.timing.p50_ms
        checks.append(dict(check=label, measured=round(ratio, 3), floor=floor, ok=ratio >= floor))

    if device.type == "cuda":
        speed("fwd+bwd B=1024 D=256 N=8", 5.0, "CUDA fwd+bwd speedup over eager at B=1024 D=256 N=8")
        # backend="auto" runs in-batch losses on Triton on CUDA: it must be the faster of the two kernels.
        for mode in ("fwd", "fwd+bwd"):
            c = f"{mode} B=8192 D=128 N=0 in_batch"
            cuda_kernel, triton_kernel = _find(rows, c, "cwarp cpp"), _find(rows, c, "cwarp triton")
            if cuda_kernel is not None and triton_kernel is not None:
                ratio = cuda_kernel.timing.p50_ms / triton_kernel.timing.p50_ms
                checks.append(dict(check=f"CUDA in-batch {mode} at B=8192 D=128: Triton (auto's choice) "
                                         "speedup over the CUDA kernel", measured=round(ratio, 3), floor=1.0,
                                   ok=ratio >= 1.0))
    else:
        speed("fwd+bwd B=256 D=256 N=8", 3.0, "CPU fwd+bwd speedup over eager at B=256 D=256 N=8")
        case = "fwd+bwd B=8192 D=128 N=0 in_batch"
        speed(case, 1.0, "CPU in-batch fwd+bwd speedup over eager at B=8192 D=128 (no slower)")
        speed("fwd B=8192 D=128 N=0 in_batch", 1.0, "CPU in-batch fwd speedup over eager at B=8192 D=128 (no slower)")
        for mode in ("fwd", "fwd+bwd"):
            c = f"{mode} B=8192 D=128 N=0 in_batch"
            fused, ref = _find(rows, c, "cwarp cpp"), _find(rows, c, BASELINE)
            if fused is not None and ref is not None and fused.peak_mem_mb and ref.peak_mem_mb:
                ratio = fused.peak_mem_mb / ref.peak_mem_mb
                checks.append(dict(check=f"CPU in-batch {mode} peak memory / reference's at B=8192 D=128",
                                   measured=round(ratio, 4), floor=0.125, ok=ratio <= 0.125))
    return checks


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads); default 2")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16", "float64"])
    ap.add_argument("--tau", type=float, default=0.2)
    ap.add_argument("--quick", action="store_true", help="small shapes, short timing (smoke test)")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile(reference) contender")
    ap.add_argument("--cuda-graphs", action="store_true",
                    help="on CUDA, time each contender's calls replayed from one CUDA graph (do_bench_cudagraph)")
    ap.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("loss_throughput.py: --device cuda but no CUDA device is available", file=sys.stderr)
        return 2
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    if args.quick:
        cases = [(64, 64, 4, False), (512, 64, 0, True)]
    elif device.type == "cuda":
        cases = [(1024, 256, 8, False), (1024, 256, 8, True), (8192, 128, 0, True)]
    else:
        cases = [(256, 256, 8, False), (256, 256, 8, True), (8192, 128, 0, True)]
    min_run_time = 0.2 if args.quick else 1.0
    rows: List[Row] = []
    for B, D, N, in_batch in cases:
        rows += run_case(B, D, N, in_batch, dtype, device, args.tau, ["fwd", "fwd+bwd"], not args.no_compile,
                         min_run_time, cuda_graph=args.cuda_graphs)
    add_speedups(rows, BASELINE)
    timer = ("torch.utils.benchmark" if device.type == "cpu"
             else "do_bench_cudagraph" if args.cuda_graphs else "do_bench")
    print(f"cwarp.contrastive_loss on {device} ({args.dtype}, tau={args.tau}, {timer}"
          + (f", {torch.get_num_threads()} threads" if device.type == "cpu" else "") + ")")
    print(format_table(rows, unit="rows/s"))
    floors = check_floors(rows, device)
    if floors:
        print("\nfloors:")
        for c in floors:
            print(f"  [{'ok' if c['ok'] else 'MISSED'}] {c['check']}: measured {c['measured']}, floor {c['floor']}")
    if args.json:
        write_json(args.json, rows, extra={"floors": floors, "device": str(device), "dtype": args.dtype, "timer": timer,
                                           "peak_memory_method": "cuda max_memory_allocated" if device.type == "cuda"
                                           else "torch.profiler allocation events replayed in time order"})
        print(f"wrote {args.json}")
    if any(not c["ok"] for c in floors):
        print("loss_throughput.py: a floor was missed (exit 1)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
