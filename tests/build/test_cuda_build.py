"""What a CUDA build of cwarp._C contains (needs no GPU): SASS of every cwarp
kernel for sm_80 and sm_90, and no register spills (scripts/check_cuda_kernels.py)."""
import importlib.util
import os

import pytest

import cwarp

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_spec = importlib.util.spec_from_file_location("check_cuda_kernels",
                                               os.path.join(ROOT, "scripts", "check_cuda_kernels.py"))
check_cuda_kernels = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_cuda_kernels)

needs_cuda_build = pytest.mark.skipif(not cwarp._extension.with_cuda(),
                                      reason="cwarp._C was built without CUDA (build with FORCE_CUDA=1)")
needs_cuobjdump = pytest.mark.skipif(check_cuda_kernels.find_cuobjdump() is None,
                                     reason="cuobjdump not found (it ships with triton and the CUDA toolkit)")


@needs_cuda_build
@needs_cuobjdump
def test_extension_holds_the_kernels_without_spills():
    usage = check_cuda_kernels.resource_usage(check_cuda_kernels.find_cuobjdump(),
                                              check_cuda_kernels.default_so())
    problems = check_cuda_kernels.check(usage, [80, 90])
    assert not problems, "\n".join(problems)


def test_checker_flags_missing_kernels_and_spills():
    # The checker itself, on a synthetic resource table: it must be able to fail.
    ok = {"REG": 40, "STACK": 0, "SHARED": 0, "LOCAL": 0}
    good = {arch: {f"_ZN5cwarp4cuda{len(k)}{k}Ev": dict(ok) for k in check_cuda_kernels.REQUIRED_KERNELS}
            for arch in (80, 90)}
    assert check_cuda_kernels.check(good, [80, 90]) == []
    assert any("no SASS for sm_90" in p for p in check_cuda_kernels.check({80: good[80]}, [80, 90]))
    spilled = {a: {f: dict(r) for f, r in funcs.items()} for a, funcs in good.items()}
    name = next(iter(spilled[90]))
    spilled[90][name]["LOCAL"] = 24
    assert any("register spills" in p for p in check_cuda_kernels.check(spilled, [80, 90]))
    missing = {a: {f: r for f, r in funcs.items() if "backward" not in f} for a, funcs in good.items()}
    assert any("local_warp_backward_kernel missing" in p for p in check_cuda_kernels.check(missing, [80]))


def test_checker_holds_hot_kernels_to_their_occupancy_budget():
    ok = {"REG": 40, "STACK": 0, "SHARED": 0, "LOCAL": 0}
    names = {k: f"_ZN5cwarp4cuda{len(k)}{k}IfiEEvv" for k in check_cuda_kernels.REQUIRED_KERNELS}
    usage = {90: {m: dict(ok) for m in names.values()}}
    pretty = {m: f"cwarp::cuda::{k}<float, int>" for k, m in names.items()}
    # The loss's per-row kernels run blocks of 128 threads, the rest 256.
    row_kernels = ("forward_rows_kernel", "backward_logit_grads_kernel")
    threads = {90: {m: 128 if k in row_kernels else 256 for k, m in names.items()}}
    assert check_cuda_kernels.check(usage, [90], threads=threads, pretty=pretty) == []
    # The same per-row kernel in blocks of 256 fits half as many blocks: below its budget.
    rows = names["forward_rows_kernel"]
    wide = {90: dict(threads[90], **{rows: 256})}
    problems = check_cuda_kernels.check(usage, [90], threads=wide, pretty=pretty)
    assert len(problems) == 1 and "forward_rows_kernel<float, int>: 6 resident blocks per SM" in problems[0]
    # The forward at 92 registers: 2 blocks of 256 threads per SM, below its budget.
    fwd = names["local_warp_forward_kernel"]
    heavy = {90: dict(usage[90], **{fwd: dict(ok, REG=92)})}
    problems = check_cuda_kernels.check(heavy, [90], threads=threads, pretty=pretty)
    assert len(problems) == 1 and "local_warp_forward_kernel<float, int>: 2 resident blocks per SM" in problems[0]
    # The double instantiation is held to its own budget.
    budget = check_cuda_kernels.BUDGETS["local_warp_forward_kernel"]
    regs_fp64 = 65536 // (256 * budget.min_blocks_fp64)
    as_fp64 = dict(pretty, **{fwd: "cwarp::cuda::local_warp_forward_kernel<double, int>"})
    fits = {90: dict(usage[90], **{fwd: dict(ok, REG=regs_fp64)})}
    assert check_cuda_kernels.check(fits, [90], threads=threads, pretty=as_fp64) == []
    # The 64-bit-offset instantiation is held to its own budget, one block below the 32-bit one's.
    regs_int64 = 65536 // (256 * budget.min_blocks_int64) // 8 * 8   # registers are allocated 8 at a time
    as_int64 = dict(pretty, **{fwd: "cwarp::cuda::local_warp_forward_kernel<float, long>"})
    fits = {90: dict(usage[90], **{fwd: dict(ok, REG=regs_int64)})}
    assert check_cuda_kernels.check(fits, [90], threads=threads, pretty=as_int64) == []
    problems = check_cuda_kernels.check(fits, [90], threads=threads, pretty=pretty)
    assert len(problems) == 1 and "local_warp_forward_kernel<float, int>" in problems[0]
    # A kernel without __launch_bounds__ has no known block size: reported.
    no_bounds = {90: {m: n for m, n in threads[90].items() if m != fwd}}
    problems = check_cuda_kernels.check(usage, [90], threads=no_bounds, pretty=pretty)
    assert len(problems) == 1 and "declares no __launch_bounds__" in problems[0]


@needs_cuda_build
@needs_cuobjdump
def test_every_kernel_declares_its_block_size_and_meets_its_budget():
    tool, so = check_cuda_kernels.find_cuobjdump(), check_cuda_kernels.default_so()
    usage = check_cuda_kernels.resource_usage(tool, so)
    threads = check_cuda_kernels.launch_threads(tool, so)
    pretty = check_cuda_kernels.demangle(sorted({f for funcs in usage.values() for f in funcs if "cwarp" in f}))
    assert threads.get(90), "no EIATTR_MAX_THREADS read from the sm_90 cubin"
    problems = check_cuda_kernels.check(usage, [80, 90], threads=threads, pretty=pretty)
    assert not problems, "\n".join(problems)
