"""Several seeds of a small analog MLP trained together in one batched pass (the crossbar engine's replicas).

    python examples/replica_seeds.py              # 6 seeds, MNIST subset (needs `imc-grapes data fetch mnist`)
    python examples/replica_seeds.py --synthetic  # synthetic data, seconds

Every seed is a replica: one forward, backward and pulsed update per layer serve all of them, each with its own
initial weights, batch order, device-to-device spread and noise. A replica gives the same numbers whether it is
trained with the others or alone — shown at the end for one seed (the sat/* ratios, float32 sums whose
order depends on the number of torch threads, to a relative 1e-5). In a sweep: `imc-grapes sweep SPEC --replicas R`.
"""
import argparse
import math
import statistics
import time

import torch

from imc_grapes import TrainConfig, load_dataset, train_replicas
from imc_grapes.backends import AnalogSettings
from imc_grapes.report import mean_pm_std
from imc_grapes.suggest import SuggestingArgumentParser

SAT_TOL = 1e-5   # relative: the sat/* ratios are float32 sums whose order depends on the number of torch threads


def differing(a: list, b: list) -> list:
    """The metrics (all but the times) that differ between two histories: exactly, but for the sat/* ratios
    (realised / intended weight change), compared to SAT_TOL."""
    if len(a) != len(b):
        return ["number of evaluations"]
    out = []
    for row_a, row_b in zip(a, b):
        for k in sorted((set(row_a) | set(row_b)) - {"time_s", "elapsed_s"}):
            x, y = row_a.get(k), row_b.get(k)
            same = (math.isclose(x, y, rel_tol=SAT_TOL) if k.startswith("sat/") and isinstance(x, float)
                    and isinstance(y, float) else x == y)
            if not same and k not in out:
                out.append(k)
    return out


def main(argv: list[str] | None = None) -> None:
    """Run the example; ``argv``: its command-line arguments (default: ``sys.argv[1:]``)."""
    parser = SuggestingArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--synthetic", action="store_true", help="use the small synthetic data set")
    parser.add_argument("--seeds", type=int, default=6, help="number of seeds (replicas), ≥ 1 (default 6)")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds must be at least 1, got {args.seeds}")

    dataset = "synthetic" if args.synthetic else "mnist"
    base = TrainConfig(dataset=dataset, hidden=(64,), backend="crossbar", optimizer="grapes", lr=0.1, batch_size=32,
                       epochs=1, train_subset=256 if args.synthetic else 3000, test_subset=500,
                       analog=AnalogSettings(preset="EcRam"))
    configs = [base.replace(seed=s) for s in range(args.seeds)]
    data = load_dataset(dataset, None, torch.device("cpu"), 0) if dataset != "synthetic" else None

    t0 = time.perf_counter()
    runs = train_replicas(configs, dataset=data, log=lambda s: None)
    seconds = time.perf_counter() - t0
    print(f"{len(runs)} GRAPES runs on an EcRam crossbar, trained together in {seconds:.1f} s")
    for run in runs:
        print(f"  seed {run.config.seed}: test accuracy {100 * run.history[-1]['test_acc']:.2f} % ({run.status})")
    accs = [r.history[-1]["test_acc"] for r in runs]
    std = statistics.stdev(accs) if len(accs) > 1 else None     # one seed: no seed-to-seed spread, shown as —
    print(f"  mean ± std over seeds: {mean_pm_std(statistics.fmean(accs), std, len(accs))} %")

    alone = train_replicas(configs[-1:], dataset=data, log=lambda s: None)[0]
    diff = differing(alone.history, runs[-1].history)
    print(f"seed {configs[-1].seed} trained alone: test accuracy {100 * alone.history[-1]['test_acc']:.2f} % "
          + ("(the same metrics as its replica; the sat/* ratios, float32 sums that may differ in the last bit with "
             f"several threads, compared to a relative {SAT_TOL:g})" if not diff else
             f"(DIFFERENT metrics from its replica: {', '.join(diff)})"))


if __name__ == "__main__":
    main()
