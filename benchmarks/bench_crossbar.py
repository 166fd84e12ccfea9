"""Quick step-time benchmark of the crossbar engine: the MLP section of ``bench_suite.py`` (a script, not a test).

Median time of one training step (forward + backward + update) of a bias-free 784-256-256-10 ReLU MLP at
batch 64 with plain torch, this engine (pulsed ConstantStep, 256x256 tiles), aihwkit's C++ tiles with the
same config (``crossbar.to_aihwkit_rpu_config``), and the hardware-aware-training pair (this engine with a
float update vs aihwkit ``TorchInferenceRPUConfig``); prints the ratios to torch and to aihwkit. Everything
lives in ``benchmarks/bench_suite.py``; this is ``bench_suite.py --only mlp --no-memory`` with its flags
passed through (e.g. ``--device cuda``, ``--skip-aihwkit``, ``--steps 50``, ``--out results.json``).

Usage::

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_crossbar.py [--device cuda] [--out results.json]

The full suite (CNN, layer-size / batch / tile scaling, GRAPES overhead, peak memory, replicas):
``benchmarks/bench_suite.py``; results and how to read them: ``docs/performance.md``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_suite  # noqa: E402


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the suite's MLP section; ``argv`` as ``bench_suite.py``'s (``--only``/``--no-memory`` preset)."""
    args = list(sys.argv[1:] if argv is None else argv)
    return bench_suite.main(["--only", "mlp", "--no-memory", *args])


if __name__ == "__main__":
    main()
