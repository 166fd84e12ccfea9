#!/usr/bin/env bash
# GPU check of the project on a CUDA machine, < 8 min in total (about 5-6 min; each step has its own cap; no network
# needed; aihwkit optional: its rows are skipped when its C++ extension cannot load, e.g. next to another torch).
# Runs from the repository root without installing:
#   bash benchmarks/run_gpu.sh [OUT_DIR]
# 1. crossbar engine on CUDA: sync-free hot paths, determinism, CPU/GPU agreement (check_crossbar_cuda.py)  <= 100 s
# 1b. the device models on CUDA: no host read in their hot paths, CUDA moments = CPU moments (gpu_smoke.py)   <= 60 s
# 2. a GRAPES training smoke test on CUDA, digital and crossbar backends (imc-grapes train, synthetic)    <= 2 x 60 s
# 2b. CUDA-graph training against eager training: equal learning curves and costs, and the speed-up
#    (check_graph_training_cuda.py)                                                                          <= 90 s
# 3. the benchmark suite on CUDA (bench_suite.py --device cuda: MLP at batch 64/256/1024, CNN, scaling,
#    GRAPES overhead, peak memory, replicas if present, and last eager vs compiled (Triton) device models),
#    with the CUDA targets                                                                                   <= 240 s
#    (the suite rewrites its JSON after every section, so a timeout keeps what was measured)
# When aihwkit cannot load here, the ">= 50x aihwkit-CPU" target uses the aihwkit C++ time of the CPU run
# committed in benchmarks/results_cpu.json (marked "cross-run" in the output).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-/tmp/imc-grapes-gpu}}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" OPENBLAS_NUM_THREADS=1
PY="${PYTHON:-python3}"
rc=0
start=$SECONDS
echo "== environment"; "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
echo "== 1. engine checks on CUDA"
timeout 100 "$PY" benchmarks/check_crossbar_cuda.py --out "$out/check.json" || rc=1
echo "== 1b. device models on CUDA"
timeout 60 "$PY" tests/devices/gpu_smoke.py || rc=1
echo "== 2. training smoke test on CUDA (GRAPES; digital and crossbar backends)"
for backend in digital crossbar; do
  timeout 60 "$PY" -m imc_grapes train --dataset synthetic --backend "$backend" --optimizer sgd grapes \
    --hidden 64 --epochs 1 --device cuda --no-progress --out "$out/train-$backend" | tail -5 || rc=1
done
echo "== 2b. CUDA-graph training vs eager training (equal numbers, speed-up)"
timeout 90 "$PY" benchmarks/check_graph_training_cuda.py --out "$out/graph_training.json" || rc=1
echo "== 3. benchmark suite on CUDA"
aih=""; "$PY" -c "import aihwkit.simulator.rpu_base" 2>/dev/null || aih="--skip-aihwkit"
ref=""; [ -f benchmarks/results_cpu.json ] && ref="--aihwkit-ref benchmarks/results_cpu.json"
timeout 240 "$PY" benchmarks/bench_suite.py --device cuda $aih $ref --replicas-timeout 60 \
  --out "$out/bench.json" || rc=1
echo "== done in $((SECONDS - start)) s (rc $rc); results in $out"
exit $rc
