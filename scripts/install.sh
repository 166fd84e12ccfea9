#!/usr/bin/env bash
# Install imc-grapes into ./.venv (created if missing) and check the installation.
#   bash scripts/install.sh          # runtime dependencies
#   bash scripts/install.sh --dev    # + the dev extras: pytest, hypothesis, ray, mypy
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
pip_opts=()
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  # First install: torch with its CUDA libraries takes ~8 GB in .venv, plus ~3 GB of downloads in pip's cache.
  free_gb=$(df -Pk . | awk 'NR==2 {print int($4 / 1048576)}')
  if (( free_gb < 16 )); then
    echo "== only ${free_gb} GB free here: installing without pip's download cache (needs ~8 GB; ~11 GB with it)"
    pip_opts+=(--no-cache-dir)
    if (( free_gb < 9 )); then
      echo "WARNING: ${free_gb} GB free in $(pwd) is probably too little for torch's ~8 GB; if pip fails with" \
           "'No space left on device', free some space (or set TMPDIR to a larger disk) and run this again" >&2
    fi
  fi
fi
echo "== installing imc-grapes${extras} (first time: ~4 GB of torch/CUDA wheels from PyPI, a few minutes)"
.venv/bin/python -m pip install --disable-pip-version-check -q "${pip_opts[@]}" -e ".${extras}"
echo "== checking the installation"
OPENBLAS_NUM_THREADS=1 .venv/bin/imc-grapes doctor
