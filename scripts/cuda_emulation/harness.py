"""Build cwarp's CUDA kernels (csrc/ops/*/*_cuda.cu) for the CPU and load them.

The CUDA emulation runs the project's actual .cu sources, compiled by g++
against cuda_on_cpu.h (CUDA's execution model on fibers) and the stub headers
in include/ instead of CUDA. g++ cannot parse what is CUDA-only syntax, so
each .cu is copied with five textual rewrites, every one keeping the line
numbers of the original (errors and the emulator's messages name the real
file and line):

- `kernel<<<grid, block, smem, stream>>>(args)` becomes
  `::cuda_emu::launch("kernel", grid, block, smem, stream)(kernel, args)`
  (so a launch must name one function: a kernel template gets its template
  arguments written out, as cwarp's launches do);
- `extern __shared__ T name[];` becomes a pointer to the block's dynamic
  shared memory;
- `__shared__ T a[N], b;` becomes `static T a[N], b; ::cuda_emu::shared_declared(a, b);`,
  which fills the variables with 0xFF bytes once per block;
- `namespace {` becomes a namespace named after the file (and a
  using-directive for it), so that its kernels have names the launch log can
  show (`(anonymous namespace)::kernel<float, float>`);
- `TORCH_LIBRARY_IMPL(cwarp, CUDA, m)` becomes `TORCH_LIBRARY_IMPL(cwarp_cuda_emu, CPU, m)`,
  and csrc/registration.cpp's `TORCH_LIBRARY(cwarp, m)` becomes
  `TORCH_LIBRARY(cwarp_cuda_emu, m)`: the same schemas in a library of their
  own, whose kernels take CPU tensors (the emulated device memory is host memory).

The rewrites work on the text with comments and string literals blanked out,
so nothing inside a comment is touched.

    ops, emu = harness.build()            # torch.ops.cwarp_cuda_emu, torch.ops.cuda_emu
    emu.configure("reverse", 0, False)    # fiber/block order, seed, force 64-bit indexing
    out = ops.local_warp(image, params, None, 32, 32, "translate", "zeros", False)

Run as a script it builds and prints the build time and the library's path.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
LIBRARY = "cwarp_cuda_emu"
STAT_NAMES = ("launches", "blocks", "threads", "block_barriers", "warp_collectives", "atomics",
              "unchecked_launches")
DEFAULT_BUILD_DIR = os.path.join(ROOT, "build", "cuda_emulation")


# ---------------------------------------------------------------------------
# Text helpers
# ---------------------------------------------------------------------------

def code_mask(src: str) -> str:
    """`src` with the contents of comments and string / character literals
    replaced by spaces (newlines kept), so offsets and lines stay the same."""
    out = list(src)
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
        elif src.startswith("/*", i):
            j = src.find("*/", i + 2)
            j = n if j < 0 else j + 2
        elif c == 'R' and src.startswith('R"', i) and (i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_")):
            m = re.match(r'R"([^(\s]*)\(', src[i:])
            if not m:
                i += 1
                continue
            close = ")" + m.group(1) + '"'
            j = src.find(close, i + m.end())
            j = n if j < 0 else j + len(close)
        elif c in "\"'":
            j = i + 1
            while j < n and src[j] != c:
                j += 2 if src[j] == "\\" else 1
            j = min(j + 1, n)
        else:
            i += 1
            continue
        for k in range(i, j):
            if out[k] != "\n":
                out[k] = " "
        i = j
    return "".join(out)


_CLOSE = {")": "(", "]": "[", "}": "{", ">": "<"}


def _statement_end(mask: str, start: int) -> int:
    """Index of the `;` that ends the declaration starting at `start` (outside brackets)."""
    depth = 0
    for i in range(start, len(mask)):
        c = mask[i]
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == ";" and depth == 0:
            return i
    raise ValueError(f"no ';' ends the declaration at offset {start}")


def _split_top_level(text: str) -> list[str]:
    """`text` split at the commas outside (), [], {} and, outside brackets, <>."""
    parts, depth, angle, cur = [], 0, 0, []
    for c in text:
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == "<" and depth == 0:
            angle += 1
        elif c == ">" and depth == 0 and angle > 0:
            angle -= 1
        elif c == "," and depth == 0 and angle == 0:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(c)
    parts.append("".join(cur))
    return parts


def _declared_name(declarator: str) -> str:
    """The variable a declarator declares: the last identifier before any '[' or '='."""
    head = re.split(r"[\[=]", declarator, maxsplit=1)[0]
    m = re.search(r"([A-Za-z_]\w*)\s*$", head)
    if not m:
        raise ValueError(f"cannot find the variable in __shared__ declarator {declarator.strip()!r}")
    return m.group(1)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _apply(src: str, edits: list[tuple[int, int, str]]) -> str:
    """Replace src[a:b] by s for each (a, b, s), the edits not overlapping."""
    out, last = [], 0
    for a, b, s in sorted(edits):
        if a < last:
            raise ValueError("overlapping rewrites")
        out.append(src[last:a])
        out.append(s)
        last = b
    out.append(src[last:])
    return "".join(out)


# ---------------------------------------------------------------------------
# The rewrites
# ---------------------------------------------------------------------------

def _kernel_start(mask: str, end: int) -> int:
    """Start of the kernel expression that ends just before `end` (the '<<<'):
    a possibly qualified name with an optional template argument list."""
    i = end
    while i > 0 and mask[i - 1].isspace():
        i -= 1
    if i > 0 and mask[i - 1] == ">":
        depth = 0
        while i > 0:
            i -= 1
            c = mask[i]
            if c == ">":
                depth += 1
            elif c == "<":
                depth -= 1
                if depth == 0:
                    break
        else:
            raise ValueError("unbalanced template arguments before '<<<'")
        while i > 0 and mask[i - 1].isspace():
            i -= 1
    while i > 0 and (mask[i - 1].isalnum() or mask[i - 1] in "_:"):
        i -= 1
    return i


def rewrite_launches(src: str) -> tuple[str, int]:
    """Every `kernel<<<config>>>(args)` as a cuda_emu::launch call; returns the
    new text and the number of launches rewritten."""
    mask = code_mask(src)
    edits = []
    for m in re.finditer(r"<<<", mask):
        if edits and m.start() < edits[-1][1]:
            continue
        start = _kernel_start(mask, m.start())
        kernel = src[start:m.start()].strip()
        if not kernel or not re.match(r"[A-Za-z_:]", kernel):
            raise ValueError(f"no kernel name before '<<<' at line {src.count(chr(10), 0, m.start()) + 1}")
        close = mask.find(">>>", m.end())
        if close < 0:
            raise ValueError(f"'<<<' without '>>>' at line {src.count(chr(10), 0, m.start()) + 1}")
        config = src[m.end():close]
        paren = close + 3
        while paren < len(mask) and mask[paren].isspace():
            paren += 1
        if paren >= len(mask) or mask[paren] != "(":
            raise ValueError(f"no '(' after '>>>' at line {src.count(chr(10), 0, close) + 1}")
        after = paren + 1
        while after < len(mask) and mask[after].isspace():
            after += 1
        no_args = after < len(mask) and mask[after] == ")"
        name = _one_line(kernel)
        text = (f'::cuda_emu::launch("{name}", {config})({name}'
                + ("" if no_args else ", ")
                + "\n" * kernel.count("\n"))
        edits.append((start, paren + 1, text))
    return _apply(src, edits), len(edits)


_EXTERN_SHARED = re.compile(
    r"\bextern\s+__shared__\s+(?P<decl>[^;\[]*?)\b(?P<name>[A-Za-z_]\w*)\s*\[\s*\]\s*;")


def rewrite_shared(src: str) -> tuple[str, int]:
    """extern __shared__ arrays as pointers to the dynamic shared memory, and
    static __shared__ declarations as statics refilled at each block; returns
    the new text and the number of declarations rewritten."""
    mask = code_mask(src)
    edits = []
    for m in _EXTERN_SHARED.finditer(mask):
        decl = re.sub(r"__align__\s*\(\s*\d+\s*\)|alignas\s*\(\s*\d+\s*\)", "", src[m.start("decl"):m.end("decl")])
        decl = _one_line(decl)
        name = m.group("name")
        text = (f"{decl}* const {name} = reinterpret_cast<{decl}*>(::cuda_emu::dynamic_shared_memory());"
                + "\n" * src.count("\n", m.start(), m.end()))
        edits.append((m.start(), m.end(), text))
    taken = [(a, b) for a, b, _ in edits]
    for m in re.finditer(r"\b__shared__\b", mask):
        if any(a <= m.start() < b for a, b in taken):
            continue
        end = _statement_end(mask, m.end())
        names = [_declared_name(d) for d in _split_top_level(mask[m.end():end])]
        before = mask[:m.start()].rstrip()
        keyword = "" if re.search(r"\bstatic$", before) else "static"
        edits.append((m.start(), m.end(), keyword))
        edits.append((end + 1, end + 1, f" ::cuda_emu::shared_declared({', '.join(names)});"))
    n_decls = len(taken) + (len(edits) - len(taken)) // 2
    return _apply(src, edits), n_decls


ANON_PREFIX = "cuda_emu_anonymous_"


def rewrite_anonymous_namespaces(src: str, tag: str) -> tuple[str, int]:
    """Each `namespace {` as a namespace named after the file, with a
    using-directive for it: the same lookups, but its kernels get exported
    names, so that the emulator's launch log can name them."""
    name = ANON_PREFIX + re.sub(r"\W", "_", tag)
    mask = code_mask(src)
    edits = [(m.start(), m.end(), f"namespace {name} {{}} using namespace {name}; namespace {name} {{")
             for m in re.finditer(r"\bnamespace\s*\{", mask) if "\n" not in m.group(0)]
    return _apply(src, edits), len(edits)


_IMPL = re.compile(r"\bTORCH_LIBRARY_IMPL\s*\(\s*cwarp\s*,\s*CUDA\s*,")
_DEF = re.compile(r"\bTORCH_LIBRARY\s*\(\s*cwarp\s*,")


def rewrite_registration(src: str) -> tuple[str, int]:
    """cwarp's CUDA kernel registrations (and schemas) moved to the CPU key of
    the cwarp_cuda_emu library; returns the new text and the number of blocks."""
    mask = code_mask(src)
    edits = [(m.start(), m.end(), f"TORCH_LIBRARY_IMPL({LIBRARY}, CPU,") for m in _IMPL.finditer(mask)]
    edits += [(m.start(), m.end(), f"TORCH_LIBRARY({LIBRARY},") for m in _DEF.finditer(mask)]
    return _apply(src, edits), len(edits)


def emulated_source(path: str, registers: bool = True) -> str:
    """The text g++ compiles for the .cu (or registration.cpp) at `path`;
    `registers`: the file holds one cwarp library block to move."""
    with open(path, encoding="utf-8") as f:
        src = f.read()
    if registers:
        src, n_reg = rewrite_registration(src)
        if n_reg != 1:
            raise ValueError(f"{path}: expected one TORCH_LIBRARY(cwarp, ...) or TORCH_LIBRARY_IMPL(cwarp, CUDA, "
                             f"...) block, found {n_reg}")
    if path.endswith((".cu", ".cuh")):
        src, n_launch = rewrite_launches(src)
        if n_launch == 0 and path.endswith(".cu"):
            raise ValueError(f"{path}: no kernel launch (<<<...>>>) found")
        src, _ = rewrite_shared(src)
        src, _ = rewrite_anonymous_namespaces(src, os.path.basename(path))
    return f'#line 1 "{path}"\n' + src


# ---------------------------------------------------------------------------
# Build and load
# ---------------------------------------------------------------------------

def cuda_sources(root: str | None = None) -> list[str]:
    ops = os.path.join(root or source_root(), "csrc", "ops")
    found = []
    for op in sorted(os.listdir(ops)):
        folder = os.path.join(ops, op)
        if os.path.isdir(folder):
            found += [os.path.join(folder, f) for f in sorted(os.listdir(folder)) if f.endswith("_cuda.cu")]
    return found


def cuda_headers(root: str | None = None) -> list[str]:
    """The CUDA headers (.cuh) beside the .cu files."""
    found = []
    for folder in sorted({os.path.dirname(p) for p in cuda_sources(root)}):
        found += [os.path.join(folder, f) for f in sorted(os.listdir(folder)) if f.endswith(".cuh")]
    return found


def cxx20_support(cxx: str | None = None) -> tuple[bool, str]:
    """Whether the C++ compiler builds the emulator's C++20 needs (<source_location>)."""
    import subprocess
    import tempfile
    cxx = cxx or os.environ.get("CXX", "c++")
    code = "#include <source_location>\nint main() { return std::source_location::current().line() == 0; }\n"
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "probe.cpp")
        with open(path, "w") as f:
            f.write(code)
        try:
            r = subprocess.run([cxx, "-std=c++20", path, "-o", os.path.join(d, "probe")],
                               capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as e:
            return False, f"{cxx} did not run: {e}"
        if r.returncode != 0:
            return False, f"{cxx} -std=c++20 cannot compile <source_location>: {r.stderr.strip()[-300:]}"
    return True, ""


def _write_if_changed(path: str, text: str) -> None:
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                return  # keep the timestamp: ninja rebuilds only what changed
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _compile_flags(opt: str) -> list[str]:
    include = os.path.join(HERE, "include")
    return [opt, "-include", os.path.join(include, "cuda_runtime.h"), "-fno-strict-aliasing", "-Wno-unknown-pragmas"]


def compile_program(cu_path: str, exe_path: str, opt: str = "-O1", cxx: str | None = None) -> None:
    """Compile a torch-free .cu program (a main() and its kernels) for the
    emulator into `exe_path`: the emulator's own tests."""
    import subprocess
    cxx = cxx or os.environ.get("CXX", "c++")
    gen = exe_path + "_emulated.cpp"
    _write_if_changed(gen, emulated_source(os.path.abspath(cu_path), registers=False))
    cmd = [cxx, "-std=c++20", *_compile_flags(opt), "-I", os.path.join(HERE, "include"), "-rdynamic", gen,
           os.path.join(HERE, "fiber_switch.cpp"), "-o", exe_path]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"compiling {cu_path} for the CUDA emulation failed:\n{' '.join(cmd)}\n{r.stderr}")


def source_root() -> str:
    """Whose csrc/ to build: this checkout's, or $CWARP_CUDA_EMU_ROOT's (another
    checkout, e.g. a branch's worktree, whose kernels this one's tests then check)."""
    return os.path.abspath(os.environ.get("CWARP_CUDA_EMU_ROOT") or ROOT)


def build(root: str | None = None, build_dir: str | None = None, verbose: bool = False, opt: str = "-O1"):
    """Compile csrc/registration.cpp and every csrc/ops/*/*_cuda.cu of `root`
    (source_root() by default) for the CPU, load the library, and return
    (torch.ops.cwarp_cuda_emu, torch.ops.cuda_emu)."""
    import hashlib

    import torch
    from torch.utils import cpp_extension

    root = os.path.abspath(root or source_root())
    if build_dir is None:
        build_dir = DEFAULT_BUILD_DIR
        if root != ROOT:
            build_dir = os.path.join(build_dir, "root-" + hashlib.sha1(root.encode()).hexdigest()[:10])
    gen = os.path.join(build_dir, "src")
    os.makedirs(gen, exist_ok=True)
    csrc = os.path.join(root, "csrc")
    sources = []
    for path in [os.path.join(csrc, "registration.cpp")] + cuda_sources(root):
        out = os.path.join(gen, os.path.splitext(os.path.basename(path))[0] + "_emulated.cpp")
        _write_if_changed(out, emulated_source(path))
        sources.append(out)
    # A .cu's own CUDA headers, rewritten beside it: its quoted #include finds
    # them there before the original folder.
    for path in cuda_headers(root):
        _write_if_changed(os.path.join(gen, os.path.basename(path)), emulated_source(path, registers=False))
    sources += [os.path.join(HERE, "fiber_switch.cpp"), os.path.join(HERE, "emu_ops.cpp")]
    op_dirs = sorted({os.path.dirname(p) for p in cuda_sources(root)})
    # torch runs `ninja` from PATH: the one installed beside this interpreter
    # (the venv's bin folder is not on PATH when the venv is not activated).
    bin_dir = os.path.dirname(sys.executable)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    cpp_extension.load(
        name=LIBRARY,
        sources=sources,
        extra_include_paths=[os.path.join(HERE, "include"), csrc] + op_dirs,
        # Default visibility: the launch log names kernels by their exported
        # symbols (a template on a hidden type such as c10::BFloat16 would be hidden).
        extra_cflags=_compile_flags(opt),
        build_directory=build_dir,
        is_python_module=False,
        verbose=verbose,
    )
    return getattr(torch.ops, LIBRARY), torch.ops.cuda_emu


def stats(emu) -> dict[str, int]:
    """The emulator's counters since its last reset, by name."""
    return dict(zip(STAT_NAMES, emu.stats()))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="harness.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--build-dir", default=None, help="default: build/cuda_emulation")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    ok, why = cxx20_support()
    if not ok:
        print(f"harness.py: error: {why}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    build(build_dir=args.build_dir, verbose=args.verbose)
    print(f"built and loaded torch.ops.{LIBRARY} from {source_root()} in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
