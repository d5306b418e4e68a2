#!/usr/bin/env bash
# The GPU check of cwarp: one prepared script for a session that has a GPU.
#
#   benchmarks/gpu_check.sh [RESULT_FILE]
#
# Writes everything it prints to RESULT_FILE (default: $OUT/gpu_check.txt when
# $OUT is set, else results/gpu_check.txt), section by section, and ends with
# a summary of the sections that failed. Run it from the repository root with
# the venv's python first on PATH (or PYTHON=/path/to/python).
#
# Sections: environment; build (FORCE_CUDA, only when cwarp._C lacks CUDA);
# cuobjdump check; GPU tests; parity of every backend on CUDA; the throughput
# benchmark (benchmarks/warp_throughput.py --device cuda, when present); the
# local_warp targets (a self-contained timing section with the ratios).
#
# To add a section (loss, augmentation, ...): append a `section NAME` line and
# `run COMMAND...` lines (or a `pysection NAME <<'EOF' ... EOF` block) before
# the "summary" at the end. A command that exits non-zero marks its section failed.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
RESULT=${1:-${OUT:+$OUT/gpu_check.txt}}
RESULT=${RESULT:-results/gpu_check.txt}
mkdir -p "$(dirname "$RESULT")"
: >"$RESULT"
CURRENT=""
FAILED=()

log() { echo "$@" | tee -a "$RESULT"; }
section() {
  CURRENT="$1"
  log ""
  log "=== $1 ($(date +%H:%M:%S)) ==="
}
run() {
  "$@" 2>&1 | tee -a "$RESULT"
  local rc=${PIPESTATUS[0]}
  if [ "$rc" -ne 0 ]; then
    log "[exit $rc] $*"
    FAILED+=("$CURRENT")
  fi
  return 0
}
# pysection NAME: runs the python program on stdin as its own section.
pysection() {
  section "$1"
  local script
  script=$(mktemp)
  cat >"$script"
  run "$PY" "$script"
  rm -f "$script"
}

section "environment"
run nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem --format=csv
run "$PY" -c "import torch, triton, cwarp; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'triton', triton.__version__, 'gpu', torch.cuda.get_device_name()); print('cwarp backends', cwarp.backends())"

if ! "$PY" -c "import sys, cwarp; sys.exit(0 if cwarp._extension.with_cuda() else 1)" 2>/dev/null; then
  section "build (cwarp._C without CUDA: building it)"
  run env FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-8.0;9.0}" MAX_JOBS="${MAX_JOBS:-16}" \
    "$PY" setup.py build_ext --inplace
fi

section "cuobjdump: kernels for sm_80 / sm_90, no spills"
run "$PY" scripts/check_cuda_kernels.py

section "GPU tests"
run "$PY" -m pytest -q -rs -m cuda tests/ops tests/nn
run "$PY" -m pytest -q -rs tests/build

section "throughput benchmark (benchmarks/warp_throughput.py --device cuda)"
if [ -f benchmarks/warp_throughput.py ]; then
  run "$PY" benchmarks/warp_throughput.py --device cuda --json "$(dirname "$RESULT")/warp_throughput_cuda.json"
else
  log "benchmarks/warp_throughput.py not present: section skipped"
fi

pysection "local_warp targets (B=256, 3x224x224)" <<'EOF'
# Forward: >= 70% of HBM bandwidth, >= 3x the eager reference, >= 1.5x
# torch.compile(reference). Backward: >= 2x grid_sample's backward.
import sys

import torch
import torch.nn.functional as F

sys.path[:0] = [".", "benchmarks"]  # the tree being checked, and benchmarks/common.py
import cwarp
from cwarp import reference
from common import time_gpu

HBM_BYTES_PER_S = {"H200": 4.8e12, "H100": 3.35e12, "A100": 2.0e12}
name = torch.cuda.get_device_name()
peak = next((v for k, v in HBM_BYTES_PER_S.items() if k in name), 4.8e12)
B, C, H, W, K = 256, 3, 224, 224, 4
backends = ["triton"] + (["cpp"] if cwarp._extension.with_cuda() else [])
failures = []


def verdict(ok):
    if not ok:
        failures.append(1)
    return "PASS" if ok else "FAIL"


for dtype in (torch.float32, torch.bfloat16):
    g = torch.Generator().manual_seed(0)
    image = torch.rand(B, C, H, W, generator=g).to("cuda", dtype)
    params = cwarp.sample_local_warps(B, K, generator=g).to("cuda", dtype)
    theta = (torch.eye(2, 3).repeat(B, 1, 1) * 0.9).to("cuda", dtype)
    kw = dict(kind="translate", padding_mode="border", align_corners=False)
    eager = lambda: reference.local_warp(image, params, theta, compute_dtype=None, **kw)
    compiled_ref = torch.compile(lambda i, p, t: reference.local_warp(i, p, t, compute_dtype=None, **kw))
    t_eager = time_gpu(eager).p50_ms
    t_comp = time_gpu(lambda: compiled_ref(image, params, theta)).p50_ms
    bytes_moved = 2 * image.numel() * image.element_size()  # one read of the image, one write of the output

    # grid_sample's own backward (image and grid gradients), the baseline.
    grid = reference.local_warp_grid(params, (H, W), theta, compute_dtype=None).requires_grad_()
    img_req = image.detach().clone().requires_grad_()
    gs_out = F.grid_sample(img_req, grid, mode="bilinear", padding_mode="border", align_corners=False)
    grad_out = torch.randn_like(gs_out)
    t_gs_bwd = time_gpu(lambda: torch.autograd.grad(gs_out, (img_req, grid), grad_out, retain_graph=True)).p50_ms
    print(f"\n{dtype}: eager reference {t_eager:.3f} ms, compiled reference {t_comp:.3f} ms, "
          f"grid_sample backward {t_gs_bwd:.3f} ms")

    for backend in backends:
        fwd = lambda: cwarp.local_warp(image, params, theta, backend=backend, **kw)
        out = fwd()
        err = (out.float() - eager().float()).abs().max().item()
        t_fwd = time_gpu(fwd).p50_ms
        if backend == "cpp":
            bwd_op = lambda: torch.ops.cwarp.local_warp_backward(grad_out, image, params, theta, kw["kind"],
                                                                 kw["padding_mode"], False, [True, True, True])
        else:
            bwd_op = lambda: torch.ops.cwarp.local_warp_backward_triton(grad_out, image, params, theta, kw["kind"],
                                                                        kw["padding_mode"], False,
                                                                        [True, True, True])
        t_bwd = time_gpu(bwd_op).p50_ms
        prev = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(True)
        try:
            t_bwd_det = time_gpu(bwd_op).p50_ms
        finally:
            torch.use_deterministic_algorithms(prev)
        bw = bytes_moved / (t_fwd * 1e-3)
        print(f"  {backend:6s} fwd {t_fwd:.3f} ms ({B / t_fwd * 1e3:,.0f} img/s), max|err| vs eager {err:.2e}; "
              f"bwd {t_bwd:.3f} ms, deterministic bwd {t_bwd_det:.3f} ms")
        print(f"    fwd bandwidth {bw / 1e12:.2f} TB/s = {bw / peak:.1%} of {peak / 1e12:.1f} TB/s "
              f"(target >= 70%): {verdict(bw / peak >= 0.70)}")
        print(f"    fwd vs eager reference {t_eager / t_fwd:.2f}x (target >= 3x): {verdict(t_eager / t_fwd >= 3)}")
        print(f"    fwd vs compiled reference {t_comp / t_fwd:.2f}x (target >= 1.5x): "
              f"{verdict(t_comp / t_fwd >= 1.5)}")
        print(f"    bwd vs grid_sample backward {t_gs_bwd / t_bwd:.2f}x (target >= 2x): "
              f"{verdict(t_gs_bwd / t_bwd >= 2)}")
print(f"\n{len(failures)} target(s) missed")
sys.exit(1 if failures else 0)
EOF

# --- sections of the other ops ---

section "contrastive loss (benchmarks/loss_throughput.py --device cuda; target: >= 5x eager at B=1024 D=256 N=8)"
run "$PY" benchmarks/loss_throughput.py --device cuda --json "$(dirname "$RESULT")/loss_throughput_cuda.json"

section "augmentation (benchmarks/augment_throughput.py --device cuda; target: >= 50,000 views/s at S=112)"
run "$PY" benchmarks/augment_throughput.py --device cuda --batch 256 --skip pil \
  --json "$(dirname "$RESULT")/augment_throughput_cuda.json"

section "summary"
if [ ${#FAILED[@]} -eq 0 ]; then
  log "all sections passed; results in $RESULT"
  exit 0
fi
log "failed sections: $(printf '%s; ' "${FAILED[@]}")"
log "results in $RESULT"
exit 1
