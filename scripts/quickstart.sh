#!/usr/bin/env bash
# Quick start, command 1: install, fetch MNIST, run the main job on its small default
# (MNIST, 784-256-256-10, SGD vs GRAPES, 1 epoch each). Extra arguments go to `imc-grapes train`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/imc-grapes data fetch mnist
export OPENBLAS_NUM_THREADS=1
.venv/bin/imc-grapes train --dataset mnist --optimizer sgd grapes --epochs 1 --evals-per-epoch 5 --out runs/quickstart "$@"
