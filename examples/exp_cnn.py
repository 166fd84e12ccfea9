"""The `cnn` experiment from Python: a small conv net with GRAPES per output channel, digital and on analog
crossbar tiles (the conv layers become analog conv layers).

    python examples/exp_cnn.py             # quick size, digital and crossbar (needs MNIST in the data cache)
    python examples/exp_cnn.py --tiny      # synthetic data, seconds
"""
import argparse

from devices import PRESETS
from imc_grapes.experiments import ExperimentOptions, run_experiment
from imc_grapes.suggest import SuggestingArgumentParser


def main(argv: list[str] | None = None) -> None:
    """Run the example; ``argv``: its command-line arguments (default: ``sys.argv[1:]``)."""
    parser = SuggestingArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="synthetic data, tiny networks")
    parser.add_argument("--preset", default="ReRamSB", choices=list(PRESETS), metavar="P",
                        help=f"device preset of the analog runs: {', '.join(PRESETS)} (default %(default)s)")
    args = parser.parse_args(argv)

    options = ExperimentOptions(size="tiny" if args.tiny else "quick", backends=("digital", "crossbar"),
                                preset=args.preset, datasets=None if args.tiny else ("mnist",))
    result = run_experiment("cnn", options, "runs/examples/exp_cnn", log=lambda s: None)
    for line in result["findings"]:
        print("*", line)
    print("report: runs/examples/exp_cnn/report.md")


if __name__ == "__main__":
    main()
