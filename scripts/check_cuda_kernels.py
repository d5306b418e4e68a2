"""Checks what a CUDA build of cwarp._C contains, without a GPU.

For every required architecture (default sm_80 and sm_90) the fat binary of
the extension must hold SASS for cwarp's CUDA kernels, and `cuobjdump
-res-usage` must show no local memory (LOCAL:0: no register spills, no
local arrays) and no stack frame (STACK:0) for any of them. Every kernel
declares its block size with `__launch_bounds__` (read back from the cubin's
EIATTR_MAX_THREADS), and the hot kernels have an occupancy budget: the
resident blocks per SM on sm_90 that their registers and shared memory
allow (scripts/sm_occupancy.py) must reach BUDGETS. The table of every
kernel's resources and occupancy is printed.

    python scripts/check_cuda_kernels.py [--so PATH] [--arch 80 --arch 90] [--cuobjdump PATH]

Exits 1 with the offending kernels listed, 0 when all is well. cuobjdump is
looked up in $CUOBJDUMP, beside triton's bundled ptxas
(site-packages/triton/backends/nvidia/bin), in $CUDA_HOME/bin, then on PATH;
c++filt (binutils) names the template instantiations.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from typing import Dict, List, NamedTuple, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sm_occupancy import blocks_per_sm  # noqa: E402

# Every CUDA kernel of cwarp._C, op by op.
REQUIRED_KERNELS = (
    # local_warp (csrc/ops/local_warp/local_warp_cuda.cu)
    "local_warp_forward_kernel",
    "local_warp_backward_kernel",
    "reduce_partials_kernel",
    "fixed_point_scale_kernel",
    "fixed_point_to_float_kernel",
    # contrastive loss (csrc/ops/contrastive_loss/contrastive_loss_cuda.cu)
    "contrastive_loss_cuda_cu",
    "forward_rows_kernel",
    "backward_logit_grads_kernel",
    "backward_rows_kernel",
    "finish_kernel",
    "forward_in_batch_kernel",
    "backward_in_batch_kernel",
    # view rendering (csrc/ops/augment_views/augment_views_cuda.cu)
    "augment_views_kernel",
)


class Budget(NamedTuple):
    """Least resident blocks per SM on sm_90 (BUDGET_ARCH) for the
    instantiations that compute in float (float, half, bfloat16 data) and for
    those in double; ``min_blocks_int64``, where given, for the float ones
    with 64-bit offsets (tensors of 2^31 elements or more), whose offsets take
    register pairs."""
    min_blocks: int
    min_blocks_fp64: int
    min_blocks_int64: Optional[int] = None


BUDGET_ARCH = 90
# The kernels whose run time scales with the data. The rest (reductions of a
# few hundred values, scalar set-up) only must not spill.
BUDGETS = {
    "local_warp_forward_kernel": Budget(4, 2, 3),
    "local_warp_backward_kernel": Budget(3, 1),
    "augment_views_kernel": Budget(4, 2),
    "forward_rows_kernel": Budget(12, 8),
    "backward_logit_grads_kernel": Budget(12, 8),
    "backward_rows_kernel": Budget(6, 4),
    "forward_in_batch_kernel": Budget(5, 4),
    "backward_in_batch_kernel": Budget(5, 4),
}

_ARCH = re.compile(r"^arch = sm_(\d+)")
_FUNC = re.compile(r"^\s*Function (\S+?):?\s*$")
_RES = re.compile(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)")


def find_cuobjdump(explicit: Optional[str] = None) -> Optional[str]:
    candidates = [explicit, os.environ.get("CUOBJDUMP")]
    # Located without importing triton: importing it would fix its settings
    # (TRITON_INTERPRET) before a test module could choose them.
    spec = importlib.util.find_spec("triton")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidates.append(os.path.join(location, "backends", "nvidia", "bin", "cuobjdump"))
    for home in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if home:
            candidates.append(os.path.join(home, "bin", "cuobjdump"))
    candidates.append(shutil.which("cuobjdump"))
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return None


def default_so() -> str:
    # The extension of this source tree: run as a script, sys.path[0] is
    # scripts/, and an installed cwarp would be found instead.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in sys.path:
        sys.path.insert(0, root)
    # Located, not loaded: loading the extension needs torch's libraries first.
    spec = importlib.util.find_spec("cwarp._C")
    if spec is None or not spec.origin:
        raise FileNotFoundError(f"check_cuda_kernels: cwarp._C is not built in {root} (make build)")
    return spec.origin


def resource_usage(cuobjdump: str, so: str, arch: Optional[int] = None) -> Dict[int, Dict[str, Dict[str, int]]]:
    """{arch: {mangled kernel name: {"REG", "STACK", "SHARED", "LOCAL"}}} of the SASS in `so`.

    A fat binary names each architecture ("arch = sm_XX"); a bare cubin does
    not, and its functions are filed under `arch`."""
    proc = subprocess.run([cuobjdump, "-res-usage", so], capture_output=True, text=True)
    if proc.returncode != 0 and (not proc.stderr.strip() or "does not contain device code" in proc.stderr):
        return {}  # no device code at all (a build without CUDA): every arch is reported missing
    if proc.returncode != 0:
        raise RuntimeError(f"{cuobjdump} -res-usage {so} failed ({proc.returncode}): {proc.stderr.strip()}")
    text = proc.stdout
    usage: Dict[int, Dict[str, Dict[str, int]]] = {}
    func = None
    for line in text.splitlines():
        m = _ARCH.match(line.strip())
        if m:
            arch = int(m.group(1))
            usage.setdefault(arch, {})
            continue
        m = _FUNC.match(line)
        if m:
            func = m.group(1)
            continue
        m = _RES.search(line)
        if m and arch is not None and func is not None:
            usage.setdefault(arch, {})[func] = dict(zip(("REG", "STACK", "SHARED", "LOCAL"), map(int, m.groups())))
            func = None
    return usage


_INFO = re.compile(r"^\s*\.nv\.info\.(\S+)\s*$")
_MAX_THREADS = re.compile(r"^\s*Attribute:\s*EIATTR_MAX_THREADS\b")
_VALUE = re.compile(r"^\s*Value:\s*((?:0x[0-9a-fA-F]+\s*)+)$")


def launch_threads(cuobjdump: str, so: str, arch: Optional[int] = None) -> Dict[int, Dict[str, int]]:
    """{arch: {mangled kernel name: threads per block}} from the EIATTR_MAX_THREADS
    attribute that `__launch_bounds__` leaves in each kernel's .nv.info section.
    A kernel without launch bounds is absent."""
    proc = subprocess.run([cuobjdump, "-elf", so], capture_output=True, text=True)
    if proc.returncode != 0:
        return {}
    threads: Dict[int, Dict[str, int]] = {}
    func, want_value = None, False
    for line in proc.stdout.splitlines():
        m = _ARCH.match(line.strip())
        if m:
            arch = int(m.group(1))
            continue
        m = _INFO.match(line)
        if m:
            func, want_value = m.group(1), False
            continue
        if func is not None and _MAX_THREADS.match(line):
            want_value = True
            continue
        m = _VALUE.match(line)
        if want_value and m and arch is not None:
            x, y, z = (int(v, 16) for v in m.group(1).split())
            threads.setdefault(arch, {})[func] = x * y * z
            want_value = False
    return threads


def demangle(names: List[str]) -> Dict[str, str]:
    """{mangled: "ns::kernel<args>"} through c++filt, without the parameter list."""
    tool = shutil.which("c++filt")
    if tool is None:
        raise RuntimeError("check_cuda_kernels: c++filt (binutils) not found: it names the kernels' "
                           "template instantiations")
    out = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True, check=True).stdout
    pretty = {}
    for mangled, full in zip(names, out.splitlines()):
        full = full.strip().replace("(anonymous namespace)::", "")
        if full.startswith("void "):
            full = full[len("void "):]
        depth, cut = 0, len(full)
        for i, ch in enumerate(full):  # the parameter list: the first "(" outside template brackets
            depth += ch == "<"
            depth -= ch == ">"
            if ch == "(" and depth == 0:
                cut = i
                break
        pretty[mangled] = full[:cut]
    return pretty


def _budget_of(func: str, pretty: str) -> Optional[int]:
    """The least blocks per SM a mangled cwarp kernel must reach on BUDGET_ARCH, or None."""
    name = next((k for k in BUDGETS if k in func), None)
    if name is None:
        return None
    budget = BUDGETS[name]
    args = pretty.split("<", 1)[1] if "<" in pretty else ""
    if "double" in args:
        return budget.min_blocks_fp64
    if budget.min_blocks_int64 is not None and re.search(r"\b(long|int64_t)\b", args):
        return budget.min_blocks_int64
    return budget.min_blocks


def table(usage: Dict[int, Dict[str, Dict[str, int]]], threads: Dict[int, Dict[str, int]],
          pretty: Dict[str, str]) -> List[Dict[str, object]]:
    """One row per cwarp kernel and arch: resources, block size, occupancy, budget."""
    rows = []
    for arch in sorted(usage):
        for func, res in sorted(usage[arch].items(), key=lambda kv: pretty.get(kv[0], kv[0])):
            if "cwarp" not in func:
                continue
            n = threads.get(arch, {}).get(func)
            occ = blocks_per_sm(arch, res["REG"], n, res["SHARED"]) if n else None
            need = _budget_of(func, pretty.get(func, func)) if arch == BUDGET_ARCH else None
            rows.append({"arch": arch, "kernel": pretty.get(func, func), "mangled": func, **res, "threads": n,
                         "blocks": occ.blocks if occ else None, "occupancy": occ.fraction if occ else None,
                         "limiter": occ.limiter if occ else None, "budget": need})
    return rows


def check(usage: Dict[int, Dict[str, Dict[str, int]]], archs: List[int],
          kernels=REQUIRED_KERNELS, threads: Optional[Dict[int, Dict[str, int]]] = None,
          pretty: Optional[Dict[str, str]] = None) -> List[str]:
    """Problems found (empty when all is well). Without `threads` (the block
    sizes) only presence and spills are checked."""
    problems = []
    for arch in archs:
        funcs = usage.get(arch)
        if not funcs:
            problems.append(f"no SASS for sm_{arch} (archs present: {sorted(usage)})")
            continue
        for k in kernels:
            if not any(k in f for f in funcs):
                problems.append(f"sm_{arch}: kernel {k} missing")
        for f, res in funcs.items():
            if "cwarp" in f and (res["LOCAL"] or res["STACK"]):
                problems.append(f"sm_{arch}: {f} uses local memory / stack (LOCAL:{res['LOCAL']} "
                                f"STACK:{res['STACK']}, REG:{res['REG']}): register spills")
    if threads is None:
        return problems
    pretty = pretty or {}
    for row in table({a: usage[a] for a in archs if a in usage}, threads, pretty):
        where = f"sm_{row['arch']}: {row['kernel']}"
        if row["threads"] is None:
            problems.append(f"{where} declares no __launch_bounds__: its block size, hence its occupancy, "
                            f"is unknown")
        elif row["budget"] is not None and row["blocks"] < row["budget"]:
            problems.append(f"{where}: {row['blocks']} resident blocks per SM (REG:{row['REG']}, "
                            f"{row['threads']} threads, limited by {row['limiter']}), budget >= {row['budget']}")
    return problems


def format_table(rows: List[Dict[str, object]]) -> str:
    lines = [f"{'arch':5s} {'REG':>3s} {'LOCAL':>5s} {'STACK':>5s} {'SHARED':>6s} {'threads':>7s} {'blocks/SM':>9s} "
             f"{'occupancy':>9s} {'budget':>6s}  kernel"]
    for r in rows:
        blocks = "-" if r["blocks"] is None else str(r["blocks"])
        occ = "-" if r["occupancy"] is None else f"{r['occupancy']:.0%}"
        budget = "" if r["budget"] is None else f">={r['budget']}"
        status = "" if r["budget"] is None or r["blocks"] is None else (" ok" if r["blocks"] >= r["budget"]
                                                                         else " BELOW")
        lines.append(f"sm_{r['arch']:<2d} {r['REG']:3d} {r['LOCAL']:5d} {r['STACK']:5d} {r['SHARED']:6d} "
                     f"{r['threads'] if r['threads'] else '-':>7} {blocks:>9s} {occ:>9s} {budget:>6s}  "
                     f"{r['kernel']}{status}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--so", default=None, help="the extension (default: cwarp._C as imported)")
    ap.add_argument("--arch", type=int, action="append", help="required sm_XX (repeatable; default 80, 90)")
    ap.add_argument("--cuobjdump", default=None, help="the cuobjdump to use (default: looked up, see above)")
    args = ap.parse_args(argv)
    tool = find_cuobjdump(args.cuobjdump)
    if tool is None:
        print("check_cuda_kernels: cuobjdump not found (set CUOBJDUMP)", file=sys.stderr)
        return 2
    so = args.so or default_so()
    usage = resource_usage(tool, so)
    threads = launch_threads(tool, so)
    try:
        pretty = demangle(sorted({f for funcs in usage.values() for f in funcs if "cwarp" in f}))
    except RuntimeError as e:
        print(e, file=sys.stderr)
        return 2
    archs = args.arch or [80, 90]
    print(format_table(table(usage, threads, pretty)))
    problems = check(usage, archs, threads=threads, pretty=pretty)
    for p in problems:
        print("FAIL:", p, file=sys.stderr)
    print(f"check_cuda_kernels: {so}: " + ("OK" if not problems else f"{len(problems)} problem(s)"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
