"""Compiles cwarp's Triton kernels for NVIDIA GPUs, without a GPU.

The CPU test suite runs the Triton kernels under the interpreter, which runs
their Python, not their compiled form: a kernel that the interpreter accepts
can still fail to compile (a construct the compiler does not support, a type
mismatch the interpreter's numpy promotes away) or spill registers. This
script runs the real host wrappers of cwarp.ops.*.triton_kernels (argument order, dtypes,
constexprs exactly as they launch), but with `wrap_triton` replaced by a
recorder that compiles each launch for the requested architectures - through
ptx and ptxas to a cubin, for every autotuning config - instead of running
it. `cuobjdump -res-usage` then reads each cubin's registers and local
memory.

    python scripts/check_triton_kernels.py [--arch 80 --arch 90] [--quick] [--json PATH]

--quick compiles the first autotuning config only and fewer cases (the
test suite's mode). Exits 1, with the cases listed, if a launch does not
compile, if a kernel with a fixed launch config uses local memory
(register spills), or if every autotuning config of a launch does (a
config that spills beside one that does not is only noted: the autotuner
times both), or if a hot kernel's occupancy on sm_90 (resident blocks per
SM from its registers, shared memory and num_warps, scripts/sm_occupancy.py)
falls below its budget in BUDGETS (for an autotuned launch: its best config
that does not spill); 0 when all is well. Needs triton (its ptxas and cuobjdump) but
no GPU and no CUDA driver; TRITON_INTERPRET must be unset, since it makes
@triton.jit hand out interpreted functions.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from typing import Any, Dict, List, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

sys.path.insert(0, os.path.join(ROOT, "scripts"))
from sm_occupancy import blocks_per_sm  # noqa: E402

_spec = importlib.util.spec_from_file_location("check_cuda_kernels", os.path.join(ROOT, "scripts",
                                                                                  "check_cuda_kernels.py"))
check_cuda_kernels = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_cuda_kernels)


def _triton_type(value) -> str:
    """The signature type Triton gives a launch argument."""
    import torch

    if isinstance(value, torch.Tensor):
        names = {torch.float32: "fp32", torch.float64: "fp64", torch.bfloat16: "bf16", torch.float16: "fp16",
                 torch.uint8: "u8", torch.int64: "i64", torch.int32: "i32"}
        return "*" + names[value.dtype]
    if isinstance(value, bool):
        return "i1"
    if isinstance(value, int):
        return "i32" if -2**31 <= value < 2**31 else "i64"
    if isinstance(value, float):
        return "fp32"
    raise TypeError(f"check_triton_kernels: no Triton type for a launch argument of type {type(value).__name__}")


class Recorder:
    """Stands in for torch.library.wrap_triton: `wrap(kernel)[grid](*args, **kw)`
    compiles the launch for every arch (and autotuning config) instead of running it."""

    def __init__(self, archs: List[int], all_configs: bool, cuobjdump: str, workdir: str):
        self.archs, self.all_configs, self.cuobjdump, self.workdir = archs, all_configs, cuobjdump, workdir
        self.rows: List[Dict[str, Any]] = []
        self.case = ""
        self._seen = set()

    def __call__(self, kernel):
        recorder = self

        class _Launcher:
            def __getitem__(self, grid):
                return lambda *args, **kwargs: recorder.compile(kernel, args, kwargs)

        return _Launcher()

    def compile(self, kernel, args, kwargs) -> None:
        import triton
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource

        from triton.runtime.autotuner import Autotuner

        tuned = isinstance(kernel, Autotuner)
        fn = kernel.fn if tuned else kernel  # an Autotuner wraps the JITFunction
        configs = list(kernel.configs) if tuned else [None]
        if not self.all_configs:
            configs = configs[:1]
        names = fn.arg_names
        constexpr = {p.name for p in fn.params if p.is_constexpr}
        kwargs = dict(kwargs)
        launch = {k: kwargs.pop(k) for k in ("num_warps", "num_stages") if k in kwargs}
        bound = dict(zip(names, args))
        bound.update(kwargs)
        for config in configs:
            values = dict(bound)
            options = dict(launch)
            if config is not None:
                values.update(config.kwargs)
                options = {"num_warps": config.num_warps, "num_stages": config.num_stages}
            missing = [n for n in names if n not in values]
            if missing:
                raise TypeError(f"check_triton_kernels: {fn.__name__} launched without {missing}")
            signature = {n: "constexpr" if n in constexpr else _triton_type(values[n]) for n in names}
            consts = {n: values[n] for n in names if n in constexpr}
            key = (fn.__name__, tuple(sorted(signature.items())), repr(sorted(consts.items())),
                   tuple(sorted(options.items())))
            if key in self._seen:
                continue
            self._seen.add(key)
            variant = ", ".join(f"{k}={v}" for k, v in consts.items())
            pointers = " ".join(f"{n}:{t[1:]}" for n, t in signature.items() if t.startswith("*"))
            for arch in self.archs:
                row = {"case": self.case, "kernel": fn.__name__, "arch": arch, "constexprs": variant,
                       "pointers": pointers, "options": options, "autotuned": tuned}
                t0 = time.perf_counter()
                try:
                    compiled = triton.compile(ASTSource(fn, signature, consts),
                                              target=GPUTarget("cuda", arch, 32), options=options)
                    row.update(self._usage(compiled.asm["cubin"], arch))
                    row["dynamic_shared"] = int(compiled.metadata.shared)
                    row["threads"] = 32 * int(compiled.metadata.num_warps)
                    row["blocks"] = blocks_per_sm(arch, row["REG"], row["threads"],
                                                  row["SHARED"] + row["dynamic_shared"]).blocks
                    row["ok"] = True
                except Exception as e:  # reported, not raised: every failing case is listed
                    row.update(ok=False, error=f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:300]}")
                row["seconds"] = round(time.perf_counter() - t0, 2)
                self.rows.append(row)

    def _usage(self, cubin: bytes, arch: int) -> Dict[str, int]:
        """REG / STACK / SHARED / LOCAL of the one function in a cubin."""
        path = os.path.join(self.workdir, f"k{len(self.rows)}.cubin")
        with open(path, "wb") as f:
            f.write(cubin)
        funcs = check_cuda_kernels.resource_usage(self.cuobjdump, path, arch=arch).get(arch, {})
        if len(funcs) != 1:
            raise RuntimeError(f"cuobjdump -res-usage of the sm_{arch} cubin: expected one function, "
                               f"got {sorted(funcs)}")
        return next(iter(funcs.values()))


def cases(quick: bool) -> List[tuple]:
    """(name, callable) pairs that call the Triton host wrappers on small CPU tensors."""
    import torch

    from cwarp.ops.augment_views import triton_kernels as TA
    from cwarp.ops.contrastive_loss import triton_kernels as TC
    from cwarp.ops.local_warp import triton_kernels as TW

    g = torch.Generator().manual_seed(0)

    def warp_case(dtype, kind, padding, align, with_theta, deterministic=False, mask=(True, True, True)):
        def run():
            img = torch.rand(2, 3, 9, 11, generator=g).to(dtype)
            prm = torch.rand(2, 2, 5, generator=g).to(dtype)
            th = torch.eye(2, 3).expand(2, 2, 3).to(dtype).contiguous() if with_theta else None
            TW.local_warp_forward(img, prm, th, 7, 8, kind, padding, align)
            grad_out = torch.rand(2, 3, 7, 8, generator=g).to(dtype)
            was = torch.are_deterministic_algorithms_enabled()
            torch.use_deterministic_algorithms(deterministic)
            try:
                TW.local_warp_backward(grad_out, img, prm, th, kind, padding, align, list(mask))
            finally:
                torch.use_deterministic_algorithms(was)
        return run

    def warp_uint8_case(kind, padding):
        def run():  # forward only: a uint8 image has no backward
            img = torch.randint(0, 256, (2, 3, 9, 11), generator=g, dtype=torch.uint8)
            TW.local_warp_forward(img, torch.rand(2, 2, 5, generator=g), None, 7, 8, kind, padding, False)
        return run

    def loss_case(dtype, with_neg, in_batch, dim=128):
        def run():
            p, z = (torch.randn(4, dim, generator=g).to(dtype) for _ in range(2))
            zn = torch.randn(4, 3, dim, generator=g).to(dtype) if with_neg else None
            nce, s_pos, inv_p, inv_z, inv_n, lse = TC.contrastive_loss_forward(p, z, zn, 0.2, in_batch)
            TC.contrastive_loss_backward(torch.ones_like(nce), torch.ones_like(s_pos), p, z, zn, inv_p, inv_z,
                                         inv_n, lse, 0.2, in_batch, [True, True, True])
        return run

    def augment_case(channels, src_dtype, out_dtype, kind):
        def run():
            src = (torch.randint(0, 256, (2, channels, 12, 12), generator=g, dtype=torch.uint8)
                   if src_dtype == torch.uint8 else torch.rand(2, channels, 12, 12, generator=g).to(src_dtype))
            theta = torch.eye(2, 3).expand(2, 3, 2, 3).contiguous()
            warps = torch.rand(2, 3, 2, 5, generator=g)
            color = torch.rand(2, 3, 5, generator=g)
            mean, std = torch.full((channels,), 0.5), torch.full((channels,), 0.25)
            TA.augment_views_forward(src, theta, warps, color, mean, std, 8, kind, "zeros", out_dtype)
        return run

    f32, f64, bf16 = torch.float32, torch.float64, torch.bfloat16
    out = [
        ("warp fp32 translate zeros", warp_case(f32, "translate", "zeros", False, True)),
        ("warp fp64 gaussian reflection align", warp_case(f64, "gaussian", "reflection", True, False)),
        ("warp bf16 translate border deterministic", warp_case(bf16, "translate", "border", False, True, True)),
        ("warp uint8 translate border forward", warp_uint8_case("translate", "border")),
        ("loss fp32 D=128 negatives", loss_case(f32, True, False)),
        ("loss fp32 D=128 in-batch", loss_case(f32, False, True)),
        ("augment rgb uint8 -> fp32", augment_case(3, torch.uint8, f32, "translate")),
    ]
    if not quick:
        out += [
            ("warp fp32 gaussian border align no-theta", warp_case(f32, "gaussian", "border", True, False)),
            ("warp fp32 translate reflection image-grad-only",
             warp_case(f32, "translate", "reflection", False, True, mask=(True, False, False))),
            ("warp fp16 gaussian zeros", warp_case(torch.float16, "gaussian", "zeros", False, True)),
            ("loss bf16 D=128 negatives", loss_case(bf16, True, False)),
            ("augment gray fp32 -> bf16 gaussian", augment_case(1, f32, bf16, "gaussian")),
        ]
        out += [(f"loss {name} D={dim} negatives in-batch", loss_case(dtype, True, True, dim))
                for dim in (16, 64, 128, 256, 1024, 2048) for name, dtype in (("fp32", f32), ("fp64", f64))]
    return out


def run(archs: List[int], quick: bool) -> List[Dict[str, Any]]:
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise RuntimeError("check_triton_kernels: unset TRITON_INTERPRET (it makes @triton.jit hand out "
                           "interpreted functions, which cannot be compiled)")
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    import torch

    from cwarp.ops import _triton_runtime as TR

    tool = check_cuda_kernels.find_cuobjdump()
    if tool is None:
        raise RuntimeError("check_triton_kernels: cuobjdump not found (it ships with triton; or set CUOBJDUMP)")
    with tempfile.TemporaryDirectory() as workdir:
        recorder = Recorder(archs, not quick, tool, workdir)
        # The host wrappers refuse CPU tensors outside the interpreter (they
        # could not run there); here nothing runs, every launch is compiled.
        saved = (torch.library.wrap_triton, TR.require_runnable)
        torch.library.wrap_triton = recorder  # what _triton_runtime.launcher hands each launch to
        TR.require_runnable = lambda op, device: None
        try:
            for name, call in cases(quick):
                recorder.case = name
                call()
        finally:
            torch.library.wrap_triton, TR.require_runnable = saved
    return recorder.rows


def _spills(r: Dict[str, Any]) -> bool:
    return bool(r["LOCAL"] or r["STACK"])


# Least resident blocks per SM on sm_90 (BUDGET_ARCH) of the hot kernels,
# for the float launches and for the float64 ones (twice the registers).
BUDGET_ARCH = 90
BUDGETS = {
    "_local_warp_fwd_kernel": (4, 2),
    "_local_warp_bwd_kernel": (2, 1),
    "_augment_views_kernel": (4, 2),
    "_contrastive_loss_fwd_kernel": (4, 2),
    "_contrastive_loss_bwd_kernel": (2, 1),
}


def _budget(r: Dict[str, Any]):
    """The budget (least blocks per SM) that applies to a compiled row, or None."""
    if r["arch"] != BUDGET_ARCH or r["kernel"] not in BUDGETS:
        return None
    fp32, fp64 = BUDGETS[r["kernel"]]
    return fp64 if "fp64" in r.get("pointers", "") else fp32


def findings(rows: List[Dict[str, Any]]) -> Tuple[List[str], List[str]]:
    """(problems, notes). Problems: a launch that does not compile; a kernel
    with a fixed launch config that uses local memory (register spills); an
    autotuned launch whose every config spills; a hot kernel below its
    occupancy budget (an autotuned launch: its best config that does not
    spill); a required kernel never launched. Notes: autotuning configs that
    spill while another config of the same launch does not (the autotuner
    times them all and keeps the fastest)."""
    problems, notes = [], []
    tuned: Dict[tuple, List[Dict[str, Any]]] = {}
    for r in rows:
        where = f"sm_{r['arch']} {r['kernel']} [{r['case']}; {r['constexprs']}; {r['options']}]"
        if not r["ok"]:
            problems.append(f"{where}: does not compile: {r['error']}")
        elif r["autotuned"]:
            tuned.setdefault((r["arch"], r["kernel"], r["case"]), []).append(r)
        elif _spills(r):
            problems.append(f"{where}: uses local memory / stack (LOCAL:{r['LOCAL']} STACK:{r['STACK']}, "
                            f"REG:{r['REG']}): register spills")
        elif _budget(r) is not None and r["blocks"] < _budget(r):
            problems.append(f"{where}: {r['blocks']} resident blocks per SM (REG:{r['REG']}, {r['threads']} "
                            f"threads), budget >= {_budget(r)}")
    for (arch, kernel, case), group in tuned.items():
        spilled = [r for r in group if _spills(r)]
        configs = "; ".join(f"{r['constexprs'].rsplit(', ', 1)[-1]} {r['options']} STACK:{r['STACK']} REG:{r['REG']}"
                            for r in spilled)
        if spilled and len(spilled) == len(group):
            problems.append(f"sm_{arch} {kernel} [{case}]: every autotuning config spills ({configs})")
            continue
        clean = [r for r in group if not _spills(r)]
        best = max(clean, key=lambda r: r["blocks"])
        if _budget(best) is not None and best["blocks"] < _budget(best):
            problems.append(f"sm_{arch} {kernel} [{case}]: at most {best['blocks']} resident blocks per SM "
                            f"over its autotuning configs that do not spill (REG:{best['REG']}, "
                            f"{best['threads']} threads), budget >= {_budget(best)}")
        elif spilled:
            notes.append(f"sm_{arch} {kernel} [{case}]: {len(spilled)} of {len(group)} autotuning configs "
                         f"spill ({configs})")
    compiled = {r["kernel"] for r in rows}
    for k in REQUIRED_KERNELS:
        if k not in compiled:
            problems.append(f"kernel {k} was never launched by the cases")
    return problems, notes


REQUIRED_KERNELS = ("_local_warp_fwd_kernel", "_local_warp_bwd_kernel", "_contrastive_loss_fwd_kernel",
                    "_contrastive_loss_bwd_kernel", "_augment_views_kernel")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", type=int, action="append", help="sm_XX to compile for (repeatable; default 80, 90)")
    ap.add_argument("--quick", action="store_true", help="first autotuning config and fewer cases")
    ap.add_argument("--json", default=None, help="write every compiled variant's resources here")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    try:
        rows = run(args.arch or [80, 90], args.quick)
    except RuntimeError as e:
        print(e, file=sys.stderr)
        return 2
    print(f"{'arch':5s} {'REG':>3s} {'LOCAL':>5s} {'SHARED':>6s} {'threads':>7s} {'blocks/SM':>9s} "
          f"{'budget':>6s}  kernel, case: constexprs")
    for r in rows:
        if r["ok"]:
            budget = _budget(r)
            res = (f"{r['REG']:3d} {r['LOCAL']:5d} {r['SHARED'] + r['dynamic_shared']:6d} {r['threads']:7d} "
                   f"{r['blocks']:9d} {'' if budget is None else '>=' + str(budget):>6s}")
        else:
            res = f"{'FAILED':>42s}"
        print(f"sm_{r['arch']:<2d} {res}  {r['kernel']}, {r['case']}: {r['constexprs']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    found, notes = findings(rows)
    for n in notes:
        print("note:", n)
    for p in found:
        print("FAIL:", p, file=sys.stderr)
    print(f"check_triton_kernels: {len(rows)} compilations in {time.perf_counter() - t0:.0f} s: "
          + ("OK" if not found else f"{len(found)} problem(s)"))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
