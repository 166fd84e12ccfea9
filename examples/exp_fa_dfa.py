"""The `fa-dfa` experiment from Python: feedback alignment and direct feedback alignment, with and without GRAPES.

    python examples/exp_fa_dfa.py          # quick size (needs MNIST / Fashion-MNIST in the data cache)
    python examples/exp_fa_dfa.py --tiny   # synthetic data, seconds

FA uses M = 2F/max F unclipped; DFA scales each synapse by P^{l+1}_i · P^l_j from outgoing column sums
(grapes.md §3). A single run is one TrainConfig: `TrainConfig(rule="dfa", optimizer="grapes")`.
Same as `imc-grapes experiment fa-dfa --quick` (minutes on 2 CPU cores: docs/results.md has the times), with the
report in runs/examples/exp_fa_dfa/; the progress (each group and run as it starts) goes to stderr, the summary to
stdout.
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

    result = run_experiment("fa-dfa", ExperimentOptions(size="tiny" if args.tiny else "quick"),
                            "runs/examples/exp_fa_dfa", log=progress)
    for row in result["summary"]:
        acc = ("no completed run" if row["final_test_acc_mean"] is None else
               f"{mean_pm_std(row['final_test_acc_mean'], row['final_test_acc_std'], row['completed'])} %")
        print(f"{row['dataset']:>13} {row['rule']:>3} {row['optimizer']:<10} lr {row['lr']:<6g} test acc {acc}")
    print("report: runs/examples/exp_fa_dfa/report.md")


if __name__ == "__main__":
    main()
