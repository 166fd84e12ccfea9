#!/usr/bin/env bash
# Quick start, command 1: install, fetch MNIST, run the main job on its small default:
# `imc-grapes compare` — 784-256-256-10 on an MNIST subset, ideal digital vs a soft-bounds ReRAM crossbar,
# SGD vs GRAPES vs the layer-mean control; report in reports/quickstart/. Extra arguments go to compare.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/imc-grapes data fetch mnist
export OPENBLAS_NUM_THREADS=1
.venv/bin/imc-grapes compare --out reports/quickstart "$@"
