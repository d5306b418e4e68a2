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
