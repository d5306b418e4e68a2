"""Builds cwarp._C, the compiled kernels, with torch.utils.cpp_extension + ninja.

Environment switches:
  FORCE_CUDA=1           build the CUDA kernels even when no GPU is visible
                         (CI and GPU-less build boxes); needs nvcc and a CUDA torch.
  CWARP_NO_CUDA=1        never build the CUDA kernels.
  TORCH_CUDA_ARCH_LIST   CUDA architectures (default "8.0;9.0" when forced).
  CWARP_NATIVE=1         add -march=native (opt-in: the wheel then only runs on
                         machines like the build machine).
  CWARP_DEBUG=1          -O0 -g, for debuggers and sanitizers.
  MAX_JOBS               parallel compile jobs (ninja).
  CWARP_SKIP_EXT=1       install the Python package without compiling (the
                         Makefile's editable install uses it, then builds the
                         extension in place with ninja, incrementally).
"""
from __future__ import annotations

import glob
import os
import shutil
import sys

from setuptools import setup

import torch


def _find_cuda_home() -> None:
    """Point CUDA_HOME at a real toolkit before cpp_extension looks for one.

    cpp_extension guesses CUDA_HOME from `which nvcc`; a wrapper script such
    as /usr/local/bin/nvcc (exec .../cuda-13.0/bin/nvcc) makes that guess
    /usr/local, where libcudart is not, and the link fails. Prefer the first
    candidate that holds both nvcc and libcudart.
    """
    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH"):
        return
    candidates = []
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    candidates += ["/usr/local/cuda"] + sorted(glob.glob("/usr/local/cuda-*"), reverse=True)
    for root in candidates:
        has_nvcc = os.path.exists(os.path.join(root, "bin", "nvcc"))
        has_cudart = any(glob.glob(os.path.join(root, lib, "libcudart.so*")) for lib in ("lib64", "lib"))
        if has_nvcc and has_cudart:
            os.environ["CUDA_HOME"] = root
            return


_find_cuda_home()
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension  # noqa: E402

ROOT = os.path.dirname(os.path.abspath(__file__))


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def _want_cuda() -> bool:
    if _flag("CWARP_NO_CUDA"):
        return False
    if torch.version.cuda is None:
        if _flag("FORCE_CUDA"):
            sys.exit("setup.py: FORCE_CUDA=1 but this torch has no CUDA support "
                     f"(torch {torch.__version__}); install a CUDA build of torch.")
        return False
    if CUDA_HOME is None:
        if _flag("FORCE_CUDA"):
            sys.exit("setup.py: FORCE_CUDA=1 but nvcc was not found; set CUDA_HOME.")
        return False
    return torch.cuda.is_available() or _flag("FORCE_CUDA")


def _pip_cuda_include_dirs() -> list[str]:
    """Headers of the pip nvidia-* wheels (cusparse.h, cublas_v2.h, ...).

    torch's CUDA headers include them, and a toolkit installed without those
    libraries (as here: nvcc alone) lacks them. The wheels put them under
    site-packages/nvidia/cu13/include (CUDA 13) or nvidia/<lib>/include (12).
    """
    site = os.path.dirname(os.path.dirname(torch.__file__))
    nvidia = os.path.join(site, "nvidia")
    dirs = sorted(glob.glob(os.path.join(nvidia, "cu*", "include")))
    dirs += sorted(glob.glob(os.path.join(nvidia, "*", "include")))
    return [d for d in dict.fromkeys(dirs) if os.path.isdir(d)]


def _extension():
    with_cuda = _want_cuda()
    debug = _flag("CWARP_DEBUG")
    opt = ["-O0", "-g"] if debug else ["-O3"]
    cxx = opt + [
        "-fopenmp",
        # Lets the compiler if-convert the branch-free warp math into vector
        # selects; changes no result, only assumes FP traps are not observed.
        "-fno-trapping-math",
        "-fvisibility=hidden",
    ]
    if _flag("CWARP_NATIVE"):
        cxx.append("-march=native")
    sources = ["csrc/registration.cpp"] + sorted(glob.glob("csrc/ops/*/*_cpu.cpp"))
    define_macros = []
    include_dirs = [os.path.join(ROOT, "csrc")]
    extra = {"cxx": cxx}
    ext_cls = CppExtension
    if with_cuda:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
        sources += sorted(glob.glob("csrc/ops/*/*_cuda.cu"))
        define_macros.append(("CWARP_WITH_CUDA", None))
        include_dirs += _pip_cuda_include_dirs()
        extra["nvcc"] = opt + ["--expt-relaxed-constexpr", "-lineinfo",
                               "-Xptxas=-warn-spills"]
        ext_cls = CUDAExtension
    print(f"setup.py: building cwarp._C with CUDA={'yes' if with_cuda else 'no'}"
          + (f" (arch {os.environ['TORCH_CUDA_ARCH_LIST']})" if with_cuda else ""), flush=True)
    return ext_cls(
        "cwarp._C",
        sources,
        include_dirs=include_dirs,
        define_macros=define_macros,
        extra_compile_args=extra,
        extra_link_args=["-fopenmp"],
        py_limited_api=True,
    )


setup(
    ext_modules=[] if _flag("CWARP_SKIP_EXT") else [_extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    options={"bdist_wheel": {"py_limited_api": "cp311"}},
)
