"""The `cnn` experiment from Python: a small conv net with GRAPES per output channel, digital and on analog
crossbar tiles (the conv layers become analog conv layers).

    python examples/exp_cnn.py             # quick size, digital and crossbar (needs MNIST in the data cache)
    python examples/exp_cnn.py --tiny      # synthetic data, seconds

Same as `imc-grapes experiment cnn --quick --backend digital crossbar --datasets mnist` (--preset P:
`--device-preset P`; minutes on 2 CPU cores, docs/results.md has the times), with the report in
runs/examples/exp_cnn/; the progress (each group and run as it starts) goes to stderr, the findings to stdout.
"""
import argparse
import sys

from devices import PRESETS
from imc_grapes.experiments import ExperimentOptions, run_experiment
from imc_grapes.suggest import SuggestingArgumentParser


def progress(line: str) -> None:
    """Where the experiment's progress goes (each group and each run as it starts, each epoch's accuracy): stderr,
    so that stdout holds the summary alone."""
    print(line, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    """Run the example; ``argv``: its command-line arguments (default: ``sys.argv[1:]``)."""
    parser = SuggestingArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="synthetic data, tiny networks")
    parser.add_argument("--preset", default="ReRamSB", choices=list(PRESETS), metavar="P",
                        help=f"device preset of the analog runs: {', '.join(PRESETS)} (default %(default)s)")
    args = parser.parse_args(argv)

    options = ExperimentOptions(size="tiny" if args.tiny else "quick", backends=("digital", "crossbar"),
                                preset=args.preset, datasets=None if args.tiny else ("mnist",))
    result = run_experiment("cnn", options, "runs/examples/exp_cnn", log=progress)
    for line in result["findings"]:
        print("*", line)
    print("report: runs/examples/exp_cnn/report.md")


if __name__ == "__main__":
    main()
