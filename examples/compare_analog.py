"""The compare job from Python: digital vs a soft-bounds ReRAM crossbar, SGD vs GRAPES vs layer-mean.

    python examples/compare_analog.py             # MNIST subset (needs `imc-grapes data fetch mnist`)
    python examples/compare_analog.py --synthetic # no data needed, seconds

The same as `imc-grapes compare --epochs 1 --test-subset 1000 --importance array --out runs/examples/compare_analog`
(with `--dataset synthetic --train-subset 2000` for --synthetic): 1 epoch, GRAPES's importance read from the
array; the table is printed and the report lands in runs/examples/compare_analog/report.md.
"""
import argparse

from imc_grapes import TrainConfig
from imc_grapes.backends import AnalogSettings
from imc_grapes.compare import CompareSpec, run_compare
from imc_grapes.suggest import SuggestingArgumentParser


def main(argv: list[str] | None = None) -> None:
    """Run the example; ``argv``: its command-line arguments (default: ``sys.argv[1:]``)."""
    parser = SuggestingArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--synthetic", action="store_true", help="use the small synthetic data set")
    args = parser.parse_args(argv)

    base = TrainConfig(dataset="synthetic" if args.synthetic else "mnist", hidden=(256, 256), epochs=1,
                       train_subset=2000 if args.synthetic else 6000, test_subset=1000, evals_per_epoch=4,
                       inference_times=(1.0, 3600.0, 86400.0, 365 * 86400.0),
                       analog=AnalogSettings(preset="ReRamSB", adc_bits=9, dac_bits=7, importance="array"))
    spec = CompareSpec(base=base, optimizers=("sgd", "grapes", "layer-mean"), hardware=("digital", "analog"),
                       analog_backend="crossbar", lr_grid=(0.1,), seeds=(0,))
    run_compare(spec, "runs/examples/compare_analog")


if __name__ == "__main__":
    main()
