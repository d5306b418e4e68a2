#!/usr/bin/env bash
# The GPU check of cwarp in one shot (see benchmarks/gpu_check.py for the
# sections, the targets and the JSON it writes as it goes):
#
#   benchmarks/gpu_check.sh [--out DIR] [--budget-s 480] [--dry-run]
#
# Uses the machine's python3 (or $PYTHON) and the torch installed there.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" benchmarks/gpu_check.py "$@"
