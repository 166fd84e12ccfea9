"""Train 784-256-256-10 on MNIST with SGD and with GRAPES, same init and data order, from the library API.

    python examples/train_mnist_grapes.py            # needs `imc-grapes data fetch mnist` first
    python examples/train_mnist_grapes.py --synthetic  # no data needed

The same as `imc-grapes train --optimizer sgd grapes`, in a few lines of Python; each run's metrics.csv and
results.json land in runs/examples/train_mnist_grapes/<optimizer>/.
"""
import argparse

from imc_grapes import TrainConfig, train
from imc_grapes.report import format_table, summarise
from imc_grapes.suggest import SuggestingArgumentParser


def main(argv: list[str] | None = None) -> None:
    """Run the example; ``argv``: its command-line arguments (default: ``sys.argv[1:]``)."""
    parser = SuggestingArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--synthetic", action="store_true", help="use the small synthetic data set")
    parser.add_argument("--epochs", type=int, default=1, help="training epochs of each run, ≥ 1 (default 1)")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"--epochs must be at least 1, got {args.epochs}")

    base = TrainConfig(dataset="synthetic" if args.synthetic else "mnist", hidden=(256, 256), lr=0.1,
                       batch_size=64, epochs=args.epochs, seed=0)
    results = [train(base.replace(optimizer=opt), out_dir=f"runs/examples/train_mnist_grapes/{opt}")
               for opt in ("sgd", "grapes")]
    print(format_table(summarise(results)))


if __name__ == "__main__":
    main()
