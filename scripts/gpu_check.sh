#!/usr/bin/env bash
# The prepared GPU check (scripts/gpu_check.py): run once on a machine with a CUDA GPU,
# from the repository root, with the package importable (scripts/setup.sh, or
# PYTHONPATH=src beside an installed torch with CUDA).
#   bash scripts/gpu_check.sh OUT_DIR [BUDGET_SECONDS (default 480)] [QUICK_SUITE_DIR]
# Writes OUT_DIR/gpu_check.log (everything printed) beside the CSVs and summary.json.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:?usage: bash scripts/gpu_check.sh OUT_DIR [BUDGET_SECONDS] [QUICK_SUITE_DIR]}"
budget="${2:-480}"
mkdir -p "$out"
python="${PYTHON:-python3}"
[ -x .venv/bin/python ] && python=.venv/bin/python
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
"$python" scripts/gpu_check.py --out "$out" --budget "$budget" ${3:+--suite "$3"} 2>&1 | tee "$out/gpu_check.log"
