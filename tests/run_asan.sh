#!/usr/bin/env bash
# Run the CPU tests of cwarp under AddressSanitizer.
#
# Builds a separate copy of the extension (the worktree's own build is left
# alone) with CWARP_DEBUG=1 (-O0 -g) and -fsanitize=address, then runs pytest
# with libasan preloaded into the (uninstrumented) Python interpreter.
# Leak detection is off: CPython and torch keep allocations alive at exit by
# design, which would drown real reports.
#
#   tests/run_asan.sh [pytest args...]      (default: tests -q -x)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"
PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"  # absolute: the build runs in a copy
WORK="${CWARP_ASAN_DIR:-${TMPDIR:-/tmp}/cwarp-asan-$(id -un)}"
mkdir -p "$WORK"
# A copy of the sources (tracked and untracked, not ignored): no build outputs.
rm -rf "$WORK/src"
mkdir -p "$WORK/src"
(cd "$ROOT" && git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t "$WORK/src")
cd "$WORK/src"
# torch's ninja build passes CFLAGS / LDFLAGS from the environment through to
# the compile and link lines (distutils' customize_compiler).
CWARP_DEBUG=1 CWARP_NO_CUDA=1 MAX_JOBS="${MAX_JOBS:-1}" \
  CFLAGS="-fsanitize=address -fno-omit-frame-pointer" LDFLAGS="-fsanitize=address" \
  "$PY" setup.py -q build_ext --inplace
nm -D cwarp/_C*.so | grep -q __asan_ || { echo "run_asan.sh: the build is not instrumented" >&2; exit 1; }
# libstdc++ is preloaded with libasan: otherwise ASAN's __cxa_throw interceptor
# finds no real __cxa_throw (libstdc++ arrives later, via dlopen) and every C++
# exception (a TORCH_CHECK) aborts the process without a message.
LIBASAN="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libstdc++.so.6)"
# torch.compile tests are left out by default: inductor compiles and loads
# its own C++ under the preloaded runtime, slowly, and exercises no cwarp code
# that the other tests do not.
if [ "$#" -eq 0 ]; then set -- tests -q -p no:cacheprovider -k "not compile"; fi
export LD_PRELOAD="$LIBASAN"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:symbolize=1:allocator_may_return_null=1"
exec "$PY" -m pytest "$@"
