"""Checks what a CUDA build of cwarp._C contains, without a GPU.

For every required architecture (default sm_80 and sm_90) the fat binary of
the extension must hold SASS for cwarp's CUDA kernels, and `cuobjdump
-res-usage` must show no local memory (LOCAL:0: no register spills, no
local arrays) and no stack frame (STACK:0) for any of them.

    python scripts/check_cuda_kernels.py [--so PATH] [--arch 80 --arch 90] [--cuobjdump PATH]

Exits 1 with the offending kernels listed, 0 when all is well. cuobjdump is
looked up in $CUOBJDUMP, beside triton's bundled ptxas
(site-packages/triton/backends/nvidia/bin), in $CUDA_HOME/bin, then on PATH.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from typing import Dict, List, Optional

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
    "backward_rows_kernel",
    "forward_in_batch_kernel",
    "backward_in_batch_p_kernel",
    "backward_in_batch_z_kernel",
    # view rendering (csrc/ops/augment_views/augment_views_cuda.cu)
    "augment_views_kernel",
)

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
    import cwarp._C

    return cwarp._C.__file__


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


def check(usage: Dict[int, Dict[str, Dict[str, int]]], archs: List[int],
          kernels=REQUIRED_KERNELS) -> List[str]:
    """Problems found (empty when all is well)."""
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
    return problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--so", default=None, help="the extension (default: cwarp._C as imported)")
    ap.add_argument("--arch", type=int, action="append", help="required sm_XX (repeatable; default 80, 90)")
    ap.add_argument("--cuobjdump", default=None)
    args = ap.parse_args(argv)
    tool = find_cuobjdump(args.cuobjdump)
    if tool is None:
        print("check_cuda_kernels: cuobjdump not found (set CUOBJDUMP)", file=sys.stderr)
        return 2
    so = args.so or default_so()
    usage = resource_usage(tool, so)
    archs = args.arch or [80, 90]
    for arch in sorted(usage):
        for f, res in sorted(usage[arch].items()):
            if "cwarp" in f:
                print(f"sm_{arch}  REG:{res['REG']:3d} STACK:{res['STACK']} LOCAL:{res['LOCAL']} "
                      f"SHARED:{res['SHARED']:5d}  {f}")
    problems = check(usage, archs)
    for p in problems:
        print("FAIL:", p, file=sys.stderr)
    print(f"check_cuda_kernels: {so}: " + ("OK" if not problems else f"{len(problems)} problem(s)"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
