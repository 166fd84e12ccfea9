#!/usr/bin/env bash
# Install imc-grapes into ./.venv (created if missing) and check the installation.
#   bash scripts/install.sh          # runtime dependencies
#   bash scripts/install.sh --dev    # + pytest, hypothesis
# torch is pinned to 2.10.0: the aihwkit 1.1.0 wheel's C++ tiles only work with it (docs/install.md).
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
[[ "${1:-}" == "--dev" ]] && extras="[dev]"
PYTHON="${PYTHON:-python3}"
if [[ ! -x .venv/bin/python ]]; then
  echo "== creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
echo "== installing imc-grapes${extras} (first time: ~4 GB of torch/CUDA wheels from PyPI, a few minutes)"
.venv/bin/python -m pip install --disable-pip-version-check -q -e ".${extras}"
echo "== checking the installation"
OPENBLAS_NUM_THREADS=1 .venv/bin/imc-grapes doctor
