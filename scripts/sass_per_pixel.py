"""SASS instructions per output pixel of the CUDA local_warp kernels, read
from the compiled code (no GPU needed).

It compiles one .cu file (default csrc/ops/local_warp/local_warp_cuda.cu of
--root) to a cubin for one architecture with nvcc (setup.py's device flags),
disassembles it with nvdisasm, and counts, for the <float, int> (float data,
32-bit offsets) instantiation of each local_warp kernel:

  static       the kernel's own instructions (its slow-path subroutines, NOPs
               and trailing self-branch left out), and that over P, the output
               pixels one thread handles per pass (the source's kFwdPixels and
               kBwdPixelsPerThread): code size, not what runs;
  warp loop    the innermost loop with an exp (MUFU.EX2) in it: the per-warp
               loop, which evaluates one weight, hence one exp, per warp and
               pixel. Its shortest and longest run through one iteration
               (forward branches taken or not, a CALL to a slow path counted
               as one instruction), over the exps in it: instructions per warp
               and pixel, from a pixel outside a translate warp's disc
               (shortest) to one inside it (longest);
  channel loop the innermost loop with a global store: the per-channel loop;
               its shortest run over the output values it stores;
  estimate     the shortest run from the kernel's entry to the warp loop, from
               there to the channel loop and from there to the last EXIT
               ("the rest of a pass", each loop bypassed), over P, plus K
               times the warp loop's and C times the channel loop's shortest
               per-pixel figures (K=4, C=3 unless given).

Static counts: no latency, memory traffic, divergence or occupancy; they say
how many instructions the code issues per pixel, not how long that takes.
Memory and time stay bounded: nvdisasm's output is read line by line, only
the two counted kernels are kept, and each run search is one pass over a
loop or a stretch of straight code (which, back edges left out, is acyclic).
It also prints scripts/check_cuda_kernels.py's registers / occupancy table
for the local_warp kernels of the cubin.

    python scripts/sass_per_pixel.py [--root DIR] [--arch 90] [--K 4] [--C 3] [--json OUT]
                                     [--keep DIR | --cubin FILE]

nvcc takes one to two minutes; --keep keeps the cubin, --cubin counts one
compiled before (from --root's source).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, Iterator, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from check_cuda_kernels import (demangle, find_cuobjdump, format_table, launch_threads, resource_usage,  # noqa: E402
                                table)

SOURCE = os.path.join("csrc", "ops", "local_warp", "local_warp_cuda.cu")
KERNELS = ("local_warp_forward_kernel", "local_warp_backward_kernel")
# The instantiation counted: float data, 32-bit offsets.
INSTANCE = "<float, int>"

_INSN = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
_SECTION = re.compile(r"^\s*\.section\s+\.text\.([^,\s]+)")
_TARGET = re.compile(r"`\(([^)]+)\)")
_LABEL = re.compile(r"^\s*([.$][\w.$]*):\s*$")


def find_nvdisasm(cuobjdump: Optional[str]) -> Optional[str]:
    """nvdisasm beside cuobjdump (triton bundles both), in $CUDA_HOME/bin, or on PATH."""
    for folder in [os.path.dirname(cuobjdump) if cuobjdump else None,
                   os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin")]:
        if folder and os.path.isfile(os.path.join(folder, "nvdisasm")):
            return os.path.join(folder, "nvdisasm")
    return shutil.which("nvdisasm")


def nvcc_command(root: str, source: str, arch: int, cubin: str) -> List[str]:
    """nvcc -cubin for `source` with setup.py's device flags and torch's headers."""
    from torch.utils import cpp_extension
    cuda_home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    site = os.path.dirname(os.path.dirname(cpp_extension.__file__))
    includes = [os.path.join(root, "csrc"), os.path.dirname(os.path.join(root, source)),
                os.path.join(site, "include"), os.path.join(site, "include", "torch", "csrc", "api", "include"),
                os.path.join(cuda_home, "include")]
    includes += sorted(glob.glob(os.path.join(os.path.dirname(site), "nvidia", "*", "include")))
    return [os.path.join(cuda_home, "bin", "nvcc"), "-cubin", f"-arch=sm_{arch}", "-O3", "-std=c++20",
            "-lineinfo", "-DCWARP_WITH_CUDA", *cpp_extension.COMMON_NVCC_FLAGS,
            *[f"-I{d}" for d in includes if os.path.isdir(d)], os.path.join(root, source), "-o", cubin]


def disassembly(nvdisasm: str, cubin: str) -> Iterator[str]:
    """The cubin's SASS, line by line (never all in memory)."""
    proc = subprocess.Popen([nvdisasm, "-c", cubin], stdout=subprocess.PIPE, text=True)
    try:
        yield from proc.stdout
    finally:
        proc.stdout.close()
        if proc.wait() != 0:
            raise RuntimeError(f"nvdisasm failed on {cubin}")


def kernels_of(lines: Iterator[str], wanted) -> Iterator[Tuple[str, List[Insn]]]:
    """(mangled name, instructions) per kernel whose mangled name `wanted`
    accepts; the others are skipped as they are read."""
    name, insns, labels = None, [], {}

    def done():
        for ins in insns:  # label targets -> instruction indices
            if ins.target is not None:
                ins.target = labels.get(ins.target)
        return name, insns

    for line in lines:
        m = _SECTION.match(line)
        if m:
            if name is not None:
                yield done()
            name = m.group(1) if wanted(m.group(1)) else None
            insns, labels = [], {}
            continue
        if name is None:
            continue
        m = _LABEL.match(line)
        if m:
            labels[m.group(1)] = len(insns)
            continue
        m = _INSN.match(line)
        if m:
            ins = Insn(int(m.group(1), 16), m.group(2))
            if ins.op != "NOP":  # padding: left out here, so that labels index the kept ones
                insns.append(ins)
    if name is not None:
        yield done()


class Insn:
    """One SASS instruction: address, text, mnemonic, guard, branch or call target."""

    def __init__(self, addr: int, text: str):
        self.addr, self.text = addr, text
        self.op = re.sub(r"^@!?U?P[0-7T]\s+", "", text).split()[0]
        self.predicated = text.startswith("@")
        m = _TARGET.search(text)
        self.target = m.group(1) if m and (self.op.startswith("BRA") or self.op.startswith("CALL")) else None
        self.call = self.op.startswith("CALL")


def main_body(insns: List[Insn]) -> List[Insn]:
    """The kernel's own code: up to its first subroutine (the slow paths its
    CALLs reach, placed after the last EXIT) or its trailing self-branch."""
    starts = [i.target for i in insns if i.call and isinstance(i.target, int)]
    end = min(starts) if starts else len(insns)
    body = insns[:end]
    return [i for k, i in enumerate(body) if i.target != k or i.call]  # the self-branch after the last EXIT


def innermost_loops(body: List[Insn]) -> List[Tuple[int, int]]:
    """(head, closing branch) index pairs of the innermost loops: backward
    branches whose range holds no other backward branch's."""
    loops = {(i.target, k) for k, i in enumerate(body)
             if i.op.startswith("BRA") and not i.call and isinstance(i.target, int) and i.target <= k}
    return sorted((s, e) for s, e in loops if not any(s <= s2 and e2 <= e and (s2, e2) != (s, e) for s2, e2 in loops))


def runs(body: List[Insn], start: int, stop: int):
    """Shortest and longest run from instruction `start` to instruction `stop`
    taking forward branches only (a loop's back edge is not followed: each
    loop on the way runs at most once), a CALL counted as one instruction
    (its slow path not entered). Returns (shortest, longest), each a list of
    indices, [] when `stop` is unreachable. The code between them is a DAG,
    so this is one pass in address order."""
    n = stop - start + 1
    if n <= 0:
        return [], []
    INF = float("inf")
    best = [(INF, None)] * n   # (length, predecessor) of the shortest run to each
    worst = [(-INF, None)] * n
    best[0] = worst[0] = (1, None)
    for k in range(n - 1):
        if best[k][0] == INF:
            continue
        ins = body[start + k]
        if ins.op == "EXIT" and not ins.predicated:
            continue
        succ = []
        if ins.op.startswith("BRA") and isinstance(ins.target, int) and start + k < ins.target <= stop:
            succ.append(ins.target - start)
        unconditional = ins.op.startswith("BRA") and not ins.predicated and \
            not ins.text.split(None, 1)[1].split("`")[0].strip()
        if not unconditional:
            succ.append(k + 1)
        for t in succ:
            if best[k][0] + 1 < best[t][0]:
                best[t] = (best[k][0] + 1, k)
            if worst[k][0] + 1 > worst[t][0]:
                worst[t] = (worst[k][0] + 1, k)

    def path(table):
        if table[n - 1][0] in (INF, -INF):
            return []
        out, k = [], n - 1
        while k is not None:
            out.append(start + k)
            k = table[k][1]
        return out[::-1]
    return path(best), path(worst)


def stored_pixels(ins: Insn) -> int:
    """Float output pixels one global store writes (STG.E: 1, STG.E.64: 2, STG.E.128: 4)."""
    m = re.search(r"STG\S*\.(64|128)\b", ins.op)
    return int(m.group(1)) // 32 if m else 1


def count(insns: List[Insn], K: int, C: int, P: int) -> dict:
    """The kernel's static count, its warp loop and channel loop (each: the
    shortest and longest run through one iteration, per warp or channel and
    pixel), and the per-pixel estimate for K warps and C channels."""
    body = main_body(insns)
    out = {"static": len(body), "warp_loop": None, "channel_loop": None, "exp_loops": []}
    loops = {}
    for head, close in innermost_loops(body):
        short, long = runs(body, head, close)
        if not short:
            continue
        stores = [k for k in short if body[k].op.startswith("STG")]
        # The warp loop computes both kinds' weights (the kind is a run-time
        # argument): one exp, hence one MUFU.EX2, per warp and pixel.
        # Every loop with exps is listed (the backward has the field's and
        # the parameter gradient's); the first is the warp loop.
        updates = sum(1 for i in body[head:close + 1] if i.op.startswith("MUFU.EX2"))
        if updates:
            out["exp_loops"].append({"instructions": close - head + 1, "per_iteration": updates,
                                     "shortest": len(short) / updates, "longest": len(long) / updates})
        if updates and out["warp_loop"] is None:
            out["warp_loop"] = out["exp_loops"][-1]
            loops["warp"] = (head, close)
        elif stores and out["channel_loop"] is None:
            px = sum(stored_pixels(body[k]) for k in stores)
            out["channel_loop"] = {"instructions": close - head + 1, "per_iteration": px,
                                   "shortest": len(short) / px, "longest": len(long) / px}
            loops["channel"] = (head, close)
    exits = [k for k, i in enumerate(body) if i.op == "EXIT" and not i.predicated]
    if "warp" in loops and "channel" in loops and exits:
        # The rest of a pass: entry -> warp loop, warp loop -> channel loop,
        # channel loop -> the last EXIT, shortest runs.
        (wh, wc), (ch, cc) = loops["warp"], loops["channel"]
        fixed = sum(len(runs(body, a, b)[0]) for a, b in [(0, wh), (wc, ch), (cc, exits[-1])])
        out["fixed"] = fixed
        out["estimate"] = {"K": K, "C": C, "per_pixel": fixed / P + K * out["warp_loop"]["shortest"]
                           + C * out["channel_loop"]["shortest"]}
    return out


def pixels_per_thread(source: str) -> Dict[str, int]:
    """Output pixels one thread handles per pass, read from the source's
    constants: kFwdPixels (1 where absent: one pixel per thread) and
    kBwdPixelsPerThread (the 32-bit instantiation's)."""
    with open(source, encoding="utf-8") as f:
        text = f.read()
    fwd = re.search(r"constexpr int kFwdPixels = (\d+);", text)
    bwd = re.search(r"constexpr int kBwdPixelsPerThread = (\d+);", text)
    return {"local_warp_forward_kernel": int(fwd.group(1)) if fwd else 1,
            "local_warp_backward_kernel": int(bwd.group(1)) if bwd else 1}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="sass_per_pixel.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=ROOT, help="checkout whose source to compile (default: this one)")
    p.add_argument("--source", default=SOURCE)
    p.add_argument("--arch", type=int, default=90)
    p.add_argument("--K", type=int, default=4, help="warps per image for the estimate")
    p.add_argument("--C", type=int, default=3, help="channels for the estimate")
    p.add_argument("--keep", default=None, help="folder to keep the cubin in")
    p.add_argument("--cubin", default=None, help="count this cubin (compiled from --root's source) instead")
    p.add_argument("--json", default=None, help="write the figures here")
    args = p.parse_args(argv)

    cuobjdump = find_cuobjdump(None)
    nvdisasm = find_nvdisasm(cuobjdump)
    if nvdisasm is None:
        print("sass_per_pixel.py: error: nvdisasm not found (triton's bundled bin, $CUDA_HOME/bin or PATH)",
              file=sys.stderr)
        return 2
    pixels = pixels_per_thread(os.path.join(os.path.abspath(args.root), args.source))

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or tmp
        os.makedirs(folder, exist_ok=True)
        cubin = args.cubin or os.path.join(folder, f"local_warp_sm{args.arch}.cubin")
        if not args.cubin:
            cmd = nvcc_command(os.path.abspath(args.root), args.source, args.arch, cubin)
            t0 = time.perf_counter()
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
            if r.returncode != 0:
                print(f"sass_per_pixel.py: error: nvcc failed:\n{' '.join(cmd)}\n{r.stderr[-3000:]}", file=sys.stderr)
                return 1
            print(f"compiled {args.source} of {args.root} for sm_{args.arch} in {time.perf_counter() - t0:.0f} s")
        usage = resource_usage(cuobjdump, cubin, args.arch) if cuobjdump else {}
        threads = launch_threads(cuobjdump, cubin, args.arch) if cuobjdump else {}
        # Only the <float, int> instantiations are kept (IfiE in the mangled name).
        found = list(kernels_of(disassembly(nvdisasm, cubin), lambda n: any(k + "IfiE" in n for k in KERNELS)))
    pretty = demangle([n for n, _ in found])
    results = []
    for name, insns in found:
        full = pretty.get(name, name)
        if INSTANCE not in full:
            continue
        kernel = next(k for k in KERNELS if k in name)
        c = count(insns, args.K, args.C, pixels[kernel])
        c.update(kernel=kernel, pixels=pixels[kernel], static_per_pixel=c["static"] / pixels[kernel])
        results.append(c)
    if not results:
        print(f"sass_per_pixel.py: error: no {INSTANCE} instantiation of {KERNELS} in the cubin", file=sys.stderr)
        return 1
    for c in sorted(results, key=lambda c: c["kernel"], reverse=True):
        print(f"\n{c['kernel']}{INSTANCE}, sm_{args.arch}, {c['pixels']} pixel(s) per thread pass")
        print(f"  static: {c['static']} instructions, {c['static_per_pixel']:.0f} per pixel")
        w = c["warp_loop"]
        if w:
            print(f"  warp loop: {w['instructions']} instructions, {w['per_iteration']} (warp, pixel) pair(s) an "
                  f"iteration: {w['shortest']:.1f} (shortest run) to {w['longest']:.1f} (longest) per warp and pixel")
        for x in c["exp_loops"][1:]:
            print(f"  another loop with exps: {x['instructions']} instructions, {x['per_iteration']} exp(s) an "
                  f"iteration: {x['shortest']:.1f} (shortest run) to {x['longest']:.1f} (longest) per exp")
        ch = c["channel_loop"]
        if ch:
            print(f"  channel loop: {ch['instructions']} instructions, {ch['per_iteration']} (channel, pixel) value(s) "
                  f"an iteration: {ch['shortest']:.1f} (shortest run) to {ch['longest']:.1f} per channel and pixel")
        if "estimate" in c:
            e = c["estimate"]
            print(f"  rest of a pass (shortest): {c['fixed']} instructions; estimate for K={e['K']}, C={e['C']}: "
                  f"{c['fixed']} / {c['pixels']} + K * warp + C * channel = {e['per_pixel']:.0f} per pixel")
    rows = []
    if usage:
        local = {a: {f: r for f, r in funcs.items() if any(k in f for k in KERNELS)} for a, funcs in usage.items()}
        rows = table(local, threads, demangle(sorted({f for funcs in local.values() for f in funcs})))
        print("\nresources and occupancy (scripts/check_cuda_kernels.py's table, this cubin):")
        print(format_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"arch": args.arch, "root": os.path.abspath(args.root), "kernels": results,
                       "resources": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
