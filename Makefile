# Two commands do everything on a fresh machine with Python 3 and a compiler:
#   make test   set up .venv, build cwarp, run the whole test suite
#   make demo   set up .venv, build cwarp, run the main job
#   make test-quick   the tests not marked slow, to run while editing
# Set FORCE_CUDA=1 (and TORCH_CUDA_ARCH_LIST) to build the CUDA kernels without a GPU.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEPS_STAMP := $(VENV)/.cwarp-deps
INSTALL_STAMP := $(VENV)/.cwarp-editable
PYTEST_ARGS ?=

.PHONY: all venv build test test-quick demo bench cmake-build check-vexp check-cuda check-cuda-emulated check-triton sdist-check compat-check clean

all: build

$(DEPS_STAMP): requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

# Editable install of the Python package and its console scripts (cwarp-train,
# cwarp-probe, cwarp-preview); the extension is built in place below, so
# rebuilds are incremental (ninja) instead of starting over in a temp dir.
$(INSTALL_STAMP): $(DEPS_STAMP) pyproject.toml setup.py
	CWARP_SKIP_EXT=1 $(PY) -m pip install --quiet --no-build-isolation --no-deps -e .
	touch $@

venv: $(INSTALL_STAMP)

build: $(INSTALL_STAMP)
	$(PY) setup.py --quiet build_ext --inplace

test: build
	$(PY) -m pytest $(PYTEST_ARGS)

# The tier to run while editing: everything but the tests marked slow (the
# Triton interpreter, training runs, the scripts' subprocesses, the benchmark
# scripts' toy runs).
test-quick: build
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

demo: build
	$(PY) -m cwarp.apps.demo

bench: build
	$(PY) benchmarks/warp_throughput.py

# The second build (CMake), checked by loading it and running its op.
cmake-build: $(DEPS_STAMP)
	CUDA_HOME=$${CUDA_HOME:-/usr/local/cuda} cmake -S . -B cmake-build -G Ninja \
	  -DPython3_EXECUTABLE=$(abspath $(PY)) $(if $(filter 1,$(FORCE_CUDA)),-DCWARP_WITH_CUDA=ON,)
	cmake --build cmake-build
	$(PY) scripts/cmake_smoke.py cmake-build/_C*.so

# csrc/vec_exp.h's exp against the correctly rounded one, every float in [-104, 89] (about a minute).
check-vexp: $(DEPS_STAMP)
	mkdir -p build
	$(CXX) -O2 -std=c++17 -I"$$($(PY) -c 'import torch.utils.cpp_extension as c; print(c.include_paths()[0])')" \
	  scripts/check_vexp.cpp -o build/check_vexp
	build/check_vexp

# The CUDA kernels of a FORCE_CUDA build: SASS for sm_80 and sm_90, no spills,
# launch bounds on every kernel, the hot kernels' occupancy on sm_90 within budget;
# prints the table of every kernel's registers and resident blocks per SM.
check-cuda: build
	$(PY) scripts/check_cuda_kernels.py --arch 80 --arch 90

# The CUDA kernels run on the CPU under the CUDA emulation (scripts/cuda_emulation):
# parity with the reference, deterministic mode under every thread and block order,
# and the emulator's own tests. No GPU, no nvcc; the first build takes minutes.
check-cuda-emulated: build
	$(PY) -m pytest tests/build/test_cuda_emulator.py tests/build/test_cuda_emulated.py -q $(PYTEST_ARGS)

# Every Triton kernel compiled (not run: no GPU needed) for sm_80 and sm_90, every
# autotuning config, registers, spills and occupancy read from the cubins (about
# two minutes cold), with the same budgets.
check-triton: $(INSTALL_STAMP)
	env -u TRITON_INTERPRET $(PY) scripts/check_triton_kernels.py --arch 80 --arch 90

# The sdist holds everything a build needs: make it, install it into a fresh
# venv (torch from the same index, the CPU kernels compiled against it), then
# import the installed cwarp from outside the source tree and run one op.
SDIST_DIR := dist/sdist-check
SDIST_VENV := $(SDIST_DIR)/venv
SDIST_PY := $(abspath $(SDIST_VENV))/bin/python
sdist-check: $(DEPS_STAMP)
	rm -rf $(SDIST_DIR)
	$(PY) -m build --sdist --no-isolation --outdir $(SDIST_DIR) .
	$(PYTHON) -m venv $(SDIST_VENV)
	$(SDIST_PY) -m pip install --quiet --upgrade pip
	$(SDIST_PY) -m pip install --quiet "torch==$$($(PY) -c 'import torch; print(torch.__version__.split("+")[0])')" \
	  "setuptools>=77" wheel ninja
	CWARP_NO_CUDA=1 $(SDIST_PY) -m pip install --quiet --no-build-isolation $(SDIST_DIR)/cwarp-*.tar.gz
	cd $(SDIST_DIR) && $(SDIST_PY) -c "$$SDIST_SMOKE"
	rm -rf $(SDIST_VENV)   # a full torch install: kept only when the check fails, for a look

define SDIST_SMOKE
import torch, cwarp, cwarp.reference
assert "site-packages" in cwarp.__file__, f"imported {cwarp.__file__}, not the installed sdist"
assert cwarp.backends()["cpp"], "the sdist build has no compiled kernels"
x = torch.rand(2, 3, 16, 16)
p = cwarp.sample_local_warps(2, 3, generator=torch.Generator().manual_seed(0))
torch.testing.assert_close(cwarp.local_warp(x, p), cwarp.reference.local_warp(x, p), atol=1e-5, rtol=1e-5)
print(f"sdist-check: cwarp {cwarp.__version__} from {cwarp.__file__}: local_warp matches the reference")
endef
export SDIST_SMOKE

# The oldest torch pyproject.toml declares: cwarp built against torch 2.11
# (the GPU machine's) in a venv of its own, and the suite's quick tier run
# there. It works on a copy of the working tree (COMPAT_SRC), so the
# in-place build for .venv's torch is left alone: an extension runs only
# with the torch it was built against. With FORCE_CUDA=1 the CUDA kernels
# are compiled against 2.11's CUDA build as well (PyPI's torch 2.11 wheel
# for Linux is that build; COMPAT_TORCH_INDEX=https://download.pytorch.org/whl/cpu
# takes the much smaller CPU wheel instead, which cannot build them).
# numpy < 2.4: Triton 3.6's interpreter, which runs the Triton kernels on
# the CPU (the quick tier too runs a few), breaks under numpy 2.4
# (docs/experiments.md §15); the GPU machine compiles them instead.
COMPAT_VENV := .venv-compat
COMPAT_PY := $(abspath $(COMPAT_VENV))/bin/python
COMPAT_SRC := build/compat-src
COMPAT_TORCH := torch==2.11.0 torchvision==0.26.0
COMPAT_PINS := triton==3.6.0 "numpy<2.4"
COMPAT_TORCH_INDEX ?=
COMPAT_PYTEST_ARGS ?= -q -m "not slow"
COMPAT_STAMP := $(COMPAT_VENV)/.cwarp-deps

$(COMPAT_STAMP): requirements-dev.txt Makefile
	test -x $(COMPAT_PY) || $(PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_PY) -m pip install --quiet --upgrade pip
	$(COMPAT_PY) -m pip install --quiet $(if $(COMPAT_TORCH_INDEX),--index-url $(COMPAT_TORCH_INDEX)) $(COMPAT_TORCH)
	sed -e '/^torch==/d' -e '/^torchvision==/d' requirements-dev.txt > $(COMPAT_VENV)/requirements.txt
	$(COMPAT_PY) -m pip install --quiet -r $(COMPAT_VENV)/requirements.txt $(COMPAT_TORCH) $(COMPAT_PINS)
	touch $@

compat-check: $(COMPAT_STAMP)
	mkdir -p $(COMPAT_SRC)
	find $(COMPAT_SRC) -mindepth 1 -maxdepth 1 ! -name build -exec rm -rf {} +
	git ls-files -z --cached --others --exclude-standard | tar --null --ignore-failed-read -T - -cf - | tar -xf - -C $(COMPAT_SRC)
	cd $(COMPAT_SRC) && CWARP_SKIP_EXT=1 $(COMPAT_PY) -m pip install --quiet --no-build-isolation --no-deps -e .
	cd $(COMPAT_SRC) && $(COMPAT_PY) setup.py --quiet build_ext --inplace
	cd $(COMPAT_SRC) && $(COMPAT_PY) -c "import torch, cwarp; print(f'compat-check: torch {torch.__version__}, cwarp._C {cwarp.backends()}')"
	cd $(COMPAT_SRC) && $(COMPAT_PY) -m pytest $(COMPAT_PYTEST_ARGS)

clean:
	rm -rf build cmake-build cwarp/_C*.so $(SDIST_DIR)
