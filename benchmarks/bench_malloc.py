"""Training-step time with glibc's default malloc vs the tuned thresholds of ``imc_grapes.runtime`` (a script).

Each row trains the suite's 784-256-256-10 MLP (``build_network``, crossbar backend, batch 64, SGD, random
batches with random labels, as ``bench_suite.py``'s ``grapes`` section) for ``--steps`` steps from a fresh
start: the many-pulses phase, where every device takes the closed-form update, the regime the setting is for.
Every (preset, setting) runs in a fresh process (malloc settings are per process), the settings alternating,
``--repeats`` times; printed: median ms per step of each, and default / tuned. Numbers are identical either way
(only where the memory comes from differs)::

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_malloc.py [--presets ReRamSB,Capacitor] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ("default", "tuned")

sys.path.insert(0, str(ROOT))

from imc_grapes.suggest import SuggestingArgumentParser  # noqa: E402


def child(preset: str, steps: int, threads: int) -> None:
    """One row in this process: print the median step time (ms) and the malloc mode as JSON."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import torch

    import bench_suite as bs
    from imc_grapes.runtime import tune_malloc

    mode = tune_malloc()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    step = bs.build_step(bs.Case("grapes", "sgd", 64, preset=preset), torch.device("cpu"))
    step()                                                         # first call: lazy initialisations
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(1e3 * (time.perf_counter() - start))
    print(json.dumps({"median_ms": statistics.median(times), "malloc": mode}))


def build_parser() -> argparse.ArgumentParser:
    """The script's command-line options, parsed by :func:`main` (a function of its own so that
    tests/test_docs_commands.py can check the documented command lines without running anything)."""
    ap = SuggestingArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", default="ReRamSB,Capacitor,EcRam", help="comma-separated device presets")
    ap.add_argument("--steps", type=int, default=30, help="timed steps per run, from a fresh start")
    ap.add_argument("--repeats", type=int, default=2, help="runs per (preset, setting), alternating")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return ap


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.child is not None:
        child(args.child, args.steps, args.threads)
        return {}
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    rows = []
    print(f"bench_malloc: {args.steps} steps from a fresh start per run, {args.repeats} runs per setting, "
          f"{args.threads} thread(s)")
    print(f"{'preset':10s} {'default ms':>11s} {'tuned ms':>9s} {'default/tuned':>14s}")
    for preset in args.presets.split(","):
        runs: dict[str, list[float]] = {s: [] for s in SETTINGS}
        for _ in range(args.repeats):
            for setting in SETTINGS:
                cmd = [sys.executable, str(Path(__file__).resolve()), "--child", preset, "--steps", str(args.steps),
                       "--threads", str(args.threads)]
                out = subprocess.run(cmd, env={**env, "IMC_GRAPES_MALLOC": setting}, capture_output=True,
                                     text=True, check=True)
                res = json.loads(out.stdout.strip().splitlines()[-1])
                if not res["malloc"].startswith(setting):
                    raise SystemExit(f"{preset}: asked for malloc {setting}, the run had {res['malloc']}")
                runs[setting].append(res["median_ms"])
        d, t = statistics.median(runs["default"]), statistics.median(runs["tuned"])
        rows.append({"preset": preset, "default_ms": d, "tuned_ms": t, "default_over_tuned": d / t, "runs": runs})
        print(f"{preset:10s} {d:11.2f} {t:9.2f} {d / t:14.2f}", flush=True)
    result = {"steps": args.steps, "repeats": args.repeats, "threads": args.threads, "rows": rows}
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
