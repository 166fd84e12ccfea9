#!/usr/bin/env bash
# GPU check of the project on a CUDA machine (no network needed; aihwkit optional: its rows are skipped when its
# C++ extension cannot load, e.g. next to another torch). Runs from the repository root without installing:
#   bash benchmarks/run_gpu.sh [OUT_DIR]
# 1. crossbar engine on CUDA: sync-free hot paths, determinism, CPU/GPU agreement (check_crossbar_cuda.py)
# 2. a digital GRAPES + analog crossbar training smoke test on CUDA (imc-grapes train on synthetic data)
# 3. step-time benchmark on CUDA (bench_crossbar.py --device cuda)
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-/tmp/imc-grapes-gpu}}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" OPENBLAS_NUM_THREADS=1
PY="${PYTHON:-python3}"
rc=0
echo "== environment"; "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
echo "== 1. engine checks on CUDA"
timeout 240 "$PY" benchmarks/check_crossbar_cuda.py --out "$out/check.json" || rc=1
echo "== 2. training smoke test on CUDA (digital GRAPES, crossbar backend)"
for backend in digital crossbar; do
  timeout 240 "$PY" -m imc_grapes train --dataset synthetic --backend "$backend" --optimizer sgd grapes \
    --hidden 64 --epochs 1 --device cuda --no-progress --out "$out/train-$backend" | tail -5 || rc=1
done
echo "== 3. benchmark on CUDA"
aih=""; "$PY" -c "import aihwkit.simulator.rpu_base" 2>/dev/null || aih="--skip-aihwkit"
timeout 300 "$PY" benchmarks/bench_crossbar.py --device cuda $aih --out "$out/bench.json" || rc=1
exit $rc
