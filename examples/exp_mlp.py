"""The `mlp` experiment from Python: 784-256-256-10 and deeper / wider variants, SGD vs GRAPES vs the layer-mean
control, learning rate tuned per optimizer, several seeds; then "does GRAPES help more as networks grow?".

    python examples/exp_mlp.py            # quick size (needs `imc-grapes data fetch mnist fashion-mnist`)
    python examples/exp_mlp.py --tiny     # synthetic data, seconds

Same as `imc-grapes experiment mlp --quick` (minutes on 2 CPU cores: docs/results.md has the times), with
the report in runs/examples/exp_mlp/; the progress (each group and run as it starts) goes to stderr, the summary
to stdout.
"""
import argparse
import sys

from imc_grapes.experiments import ExperimentOptions, run_experiment
from imc_grapes.report import mean_pm_std
from imc_grapes.suggest import SuggestingArgumentParser


def progress(line: str) -> None:
    """Where the experiment's progress goes (each group and each run as it starts, each epoch's accuracy): stderr,
    so that stdout holds the summary alone."""
    print(line, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    """Run the example; ``argv``: its command-line arguments (default: ``sys.argv[1:]``)."""
    parser = SuggestingArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="synthetic data, tiny networks")
    args = parser.parse_args(argv)

    options = ExperimentOptions(size="tiny" if args.tiny else "quick", optimizers=("sgd", "grapes", "layer-mean"))
    result = run_experiment("mlp", options, "runs/examples/exp_mlp", log=progress)

    # paired GRAPES − SGD difference (same seeds) per network, smallest network first
    groups = sorted(result["groups"], key=lambda g: g["size"])
    for g in groups:
        c = next(c for c in result["comparisons"] if c["group"] == g["key"] and (c["a"], c["b"]) == ("grapes", "sgd"))
        d = c["final_acc"]
        print(f"{g['labels']['dataset']:>13} {g['labels']['network']:<26} GRAPES − SGD: "
              f"{mean_pm_std(d['mean'], d['std'], d['n'], sign=True)} points ({d['positive']}/{d['n']} seeds higher)")
    print("report: runs/examples/exp_mlp/report.md")


if __name__ == "__main__":
    main()
