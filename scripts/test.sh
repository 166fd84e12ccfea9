#!/usr/bin/env bash
# Quick start, command 2: install with the dev extras, fetch the real data sets, run the whole test suite.
# Extra arguments go to pytest (e.g. -m "not slow" leaves out the slow end-to-end tests: the benchmark scripts,
# the examples, mypy, the compiled device models; CI runs them all).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --dev
# Tests on the real data sets need them; on a machine where no fetch route works, they skip with a message
# unless IMC_GRAPES_REQUIRE_DATA=1 (CI sets it) turns that into a failure.
.venv/bin/imc-grapes data fetch mnist fashion-mnist || echo "WARNING: could not fetch the real data sets"
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"  # small tensors: one thread per process is fastest
exec .venv/bin/python -m pytest -q "$@"
