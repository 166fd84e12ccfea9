"""Eager vs compiled device-model closed forms (``devices.fusion``), per function: a script, not a test.

For each preset, ``pulse_moments`` of ``--devices`` devices (states in range, mixed pulse counts 0..39 on 40 % of
the devices per direction, as in a busy update) is timed eagerly and with ``torch.compile``; the compile time of
the first compiled call is printed separately, and the ratio is between medians of the same run. The training-step
effect is the ``fusion`` section of ``bench_suite.py``.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_fusion.py [--presets ReRamSB,ReRamES] [--devices 200704]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from devices import get_preset, set_compile  # noqa: E402
from imc_grapes.runtime import tune_malloc  # noqa: E402
from imc_grapes.suggest import SuggestingArgumentParser  # noqa: E402


def _median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def build_parser() -> argparse.ArgumentParser:
    """The script's command-line options, parsed by :func:`main` (a function of its own so that
    tests/test_docs_commands.py can check the documented command lines without running anything)."""
    ap = SuggestingArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", default="ReRamSB,EcRam,ReRamES", help="comma-separated device presets")
    ap.add_argument("--devices", type=int, default=200704, help="devices per call (784x256 = 200704)")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    return ap


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"bench_fusion: torch {torch.__version__}, {args.devices} devices, {args.threads} thread(s), "
          f"malloc {tune_malloc()}")
    print(f"{'preset':10s} {'eager ms':>9s} {'compiled ms':>12s} {'x faster':>9s} {'compile s':>10s}")
    for name in args.presets.split(","):
        dev = get_preset(name)
        g = torch.Generator().manual_seed(0)
        n = args.devices
        p = dev.sample((n,), generator=g)
        w = dev.clip(torch.rand(n, generator=g) * 1.2 - 0.6, p)
        n_up = (torch.rand(n, generator=g) < 0.4) * torch.randint(0, 40, (n,), generator=g).float()
        n_down = (torch.rand(n, generator=g) < 0.4) * torch.randint(0, 40, (n,), generator=g).float()

        def call() -> None:
            dev.pulse_moments(w, n_up, n_down, p)
        try:
            set_compile("off")
            eager = _median_ms(call, args.repeats)
            set_compile("on")
            start = time.perf_counter()
            call()
            compile_s = time.perf_counter() - start
            comp = _median_ms(call, args.repeats)
        finally:
            set_compile("off")
        print(f"{name:10s} {eager:9.2f} {comp:12.2f} {eager / comp:9.1f} {compile_s:10.1f}")


if __name__ == "__main__":
    main()
