"""The CUDA emulation itself (scripts/cuda_emulation): the kernels of
tests/build/cuda_emulator_cases.cu, compiled with g++ against the emulator, must
give CUDA's results where the code is correct (reductions over 3-D grids with
partial warps, grid-stride loops, shuffles at every width, votes, atomics,
PTX's saturating conversions, dynamic shared memory) and the emulator's error
where CUDA leaves the behaviour undefined (divergent barriers, shuffles with
exited lanes, deadlocks, bad launch configurations). Also the launch
rewrite of scripts/cuda_emulation/harness.py on its own."""
from __future__ import annotations

import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CASES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cuda_emulator_cases.cu")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def harness(load_script):
    return load_script("scripts/cuda_emulation/harness.py")


@pytest.fixture(scope="module")
def cases(harness, tmp_path_factory):
    ok, why = harness.cxx20_support()
    if not ok:
        pytest.skip(f"the CUDA emulation needs a C++20 compiler: {why}")
    exe = str(tmp_path_factory.mktemp("cuda_emulator") / "cases")
    harness.compile_program(CASES, exe)

    def run(name: str, order: str = "forward") -> tuple[int, str]:
        r = subprocess.run([exe, name, order], capture_output=True, text=True, timeout=120)
        return r.returncode, r.stdout + r.stderr

    return run


def ints(text: str) -> list[list[int]]:
    return [[int(v) for v in line.split()] for line in text.strip().splitlines()]


@pytest.mark.parametrize("order", ["forward", "reverse", "random"])
def test_block_reduction_over_3d_grids_and_partial_warps(cases, order):
    rc, out = cases("grid_sum", order)
    assert rc == 0, out
    want = float(sum(i % 97 for i in range(5000)))
    assert [float(v) for v in out.split()] == [want] * 6


def test_grid_stride_loop_visits_every_element_once(cases):
    rc, out = cases("grid_stride")
    assert rc == 0 and out.strip() == "100003 of 100003", out


def test_thread_orders_expose_a_missing_barrier(cases):
    # Thread t reads s[t + 1]: with the barrier every order gives t + 2; without
    # it the result depends on the order, and unwritten shared memory reads -1.
    correct = [t + 2 for t in range(63)] + [1]
    for order in ("forward", "reverse", "random"):
        rc, out = cases("no_race", order)
        assert rc == 0 and ints(out) == [correct], (order, out)
    racy = {order: ints(cases("race", order)[1])[0] for order in ("forward", "reverse", "random")}
    assert racy["forward"] == [-1] * 63 + [1]
    assert racy["reverse"] == correct[:63] + [-1]
    assert racy["random"] != correct


def test_exited_threads_leave_the_barrier(cases):
    rc, out = cases("early_exit")
    assert rc == 0, out
    assert ints(out) == [[sum(range(40))] * 40 + [-7, -7]]


@pytest.mark.parametrize("case,message", [
    ("divergent_barrier", r"__syncthreads at cuda_emulator_cases.cu:\d+ \(thread \(16, 0, 0\)\) and at "
                          r"cuda_emulator_cases.cu:\d+ in the same barrier phase"),
    ("shuffle_after_exit", r"__shfl_xor_sync at cuda_emulator_cases.cu:\d+ \(mask 0xffffffff\): lane 16 of warp 1 "
                           r"exited without joining it"),
    ("deadlock", r"deadlock: every live thread waits; thread \(0, 0, 0\) in __syncwarp at cuda_emulator_cases.cu"),
    ("dynamic_shared_over_48k", r"dynamic shared memory of 65536 bytes exceeds the limit of 49152"),
    ("grid_truncated", r"grid size 4294967301 does not fit dim3's unsigned int \(CUDA would truncate it to 5\)"),
    ("block_too_large", r"invalid configuration argument: the block exceeds 1024 threads"),
])
def test_undefined_behaviour_is_an_error(cases, case, message):
    import re
    rc, out = cases(case)
    assert rc == 3, out
    assert re.search(r"EMULATION ERROR: cuda emulation: .*" + message, out), out


def _shuffle_source(kind: str, lane: int, arg: int, width: int) -> int:
    """The lane whose value a shuffle returns, from the CUDA Programming Guide's
    description of each variant; the caller's own lane where none is read."""
    base = lane - lane % width
    if kind == "idx":
        return base + arg % width
    if kind == "up":
        return lane if lane - base < arg else lane - arg
    if kind == "down":
        return lane if lane - base + arg >= width else lane + arg
    src = lane ^ arg  # xor: earlier groups may be read, later ones give the caller's own value
    return lane if src >= base + width else src


@pytest.mark.parametrize("width", [32, 16, 8, 2])
def test_shuffles_votes_match_the_programming_guide(cases, width):
    rc, out = cases(f"shuffles{width}")
    assert rc == 0, out
    rows = ints(out)
    lanes = range(32)
    value = lambda lane: 100 + lane  # noqa: E731
    assert rows[0] == [value(_shuffle_source("idx", l, 5, width)) for l in lanes]
    assert rows[1] == [value(_shuffle_source("idx", l, l + 3, width)) for l in lanes]
    assert rows[2] == [value(_shuffle_source("up", l, 3, width)) for l in lanes]
    assert rows[3] == [value(_shuffle_source("down", l, 3, width)) for l in lanes]
    assert rows[4] == [value(_shuffle_source("xor", l, 5, width)) for l in lanes]
    assert rows[5] == [value(_shuffle_source("xor", l, 20, width)) for l in lanes]
    ballot = sum(1 << l for l in lanes if l % 3 == 0)
    assert rows[6] == [ballot - (1 << 32) if ballot >= 1 << 31 else ballot] * 32
    assert rows[7] == [1] * 32  # any(lane == 7) and not all(lane < 31)
    assert rows[8] == [2 * (l ^ 1) + 1 for l in lanes]  # a double moves whole


def test_unwritten_shared_memory_reads_nan_in_every_block(cases):
    rc, out = cases("unwritten_shared")
    assert rc == 0 and out.strip() == "64 NaN of 64", out


def test_atomics(cases):
    rc, out = cases("atomics", "random")
    assert rc == 0, out
    f, u, wrap, mx, want = out.split()
    assert float(f) == 5000.0 and int(u) == 30000 and int(wrap) == 10000 % 10 and int(mx) == int(want)


def test_conversions_saturate_as_ptx(cases):
    rc, out = cases("conversions")
    assert rc == 0, out
    assert ints(out) == [[0, 2, 4, -2, 2**31 - 1, -1, 0, 0, -2**63, -2**31, 0, 10]]


def test_dynamic_shared_memory(cases):
    assert cases("dynamic_shared") == (0, "127 0\n")
    assert cases("dynamic_shared_opt_in") == (0, "127\n")


def test_kernels_without_arguments_and_nested_template_arguments(cases):
    assert cases("templates") == (0, "42\n")


# ---------------------------------------------------------------------------
# The harness's rewrites on their own
# ---------------------------------------------------------------------------


def test_launch_rewrite_keeps_lines_and_skips_comments(harness):
    src = ("// kernel<<<1, 2>>>(x) in a comment\n"
           "  ns::k<float, std::pair<int, int>><<<grid,\n"
           "      block, 0, stream>>>(a,\n"
           "                           b);\n"
           "  empty<<<1, 1>>>( );\n"
           '  const char* s = "x<<<1, 1>>>(y)";\n')
    out, n = harness.rewrite_launches(src)
    assert n == 2
    assert out.count("\n") == src.count("\n")
    assert out.splitlines()[0] == src.splitlines()[0]
    assert out.splitlines()[5] == src.splitlines()[5]
    assert ('::cuda_emu::launch("ns::k<float, std::pair<int, int>>", grid,\n      block, 0, stream)'
            '(ns::k<float, std::pair<int, int>>, a,\n') in out
    assert '::cuda_emu::launch("empty", 1, 1)(empty );' in out


def test_shared_rewrite(harness):
    src = ("  __shared__ T a[N * 2], b[M], c;\n"
           "  extern __shared__ __align__(16) unsigned char raw[];\n"
           "  // __shared__ in a comment;\n"
           "  static __shared__ float d[4];\n")
    out, n = harness.rewrite_shared(src)
    assert n == 3
    lines = out.splitlines()
    assert lines[0] == "  static T a[N * 2], b[M], c; ::cuda_emu::shared_declared(a, b, c);"
    assert lines[1] == ("  unsigned char* const raw = reinterpret_cast<unsigned char*>"
                        "(::cuda_emu::dynamic_shared_memory());")
    assert lines[2] == src.splitlines()[2]
    assert lines[3] == "  static  float d[4]; ::cuda_emu::shared_declared(d);"


def test_anonymous_namespace_rewrite(harness):
    src = "namespace cwarp {\nnamespace {\nvoid k() {}\n}  // namespace\n// namespace {\n}\n"
    out, n = harness.rewrite_anonymous_namespaces(src, "x_cuda.cu")
    assert n == 1
    assert out.splitlines()[1] == ("namespace cuda_emu_anonymous_x_cuda_cu {} using namespace "
                                   "cuda_emu_anonymous_x_cuda_cu; namespace cuda_emu_anonymous_x_cuda_cu {")
    assert out.splitlines()[4] == "// namespace {"


def test_registration_rewrite(harness):
    src = "TORCH_LIBRARY_IMPL(cwarp, CUDA, m) {\n}\n// TORCH_LIBRARY(cwarp, m)\nTORCH_LIBRARY( cwarp , m) {}\n"
    out, n = harness.rewrite_registration(src)
    assert n == 2
    assert out == ("TORCH_LIBRARY_IMPL(cwarp_cuda_emu, CPU, m) {\n}\n// TORCH_LIBRARY(cwarp, m)\n"
                   "TORCH_LIBRARY(cwarp_cuda_emu, m) {}\n")


def test_every_cuda_source_is_rewritten(harness):
    for path in harness.cuda_sources():
        src = harness.emulated_source(path)
        assert "<<<" not in harness.code_mask(src), path
        assert "TORCH_LIBRARY_IMPL(cwarp_cuda_emu, CPU," in src, path
        with open(path) as f:
            assert src.count("\n") == f.read().count("\n") + 1, f"{path}: the rewrite moved lines"
