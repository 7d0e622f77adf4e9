#!/usr/bin/env bash
# Set up a virtual environment in .venv with ssamba and its test dependencies.
# Safe to re-run. Installs the CPU build of PyTorch first where no torch is present,
# so that pip does not pull a multi-GB CUDA build; set SSAMBA_TORCH to pick another
# torch requirement (e.g. SSAMBA_TORCH="torch==2.13.0").
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }; }
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    echo "[setup] installing ${SSAMBA_TORCH:-torch==2.13.0} (CPU build)"
    pip install "${SSAMBA_TORCH:-torch==2.13.0}"
fi
echo "[setup] installing ssamba (editable) with test extras"
pip install -e ".[test]"
.venv/bin/python -c "import torch, ssamba; print(f'[setup] ready: ssamba {ssamba.__version__}, torch {torch.__version__}')"
