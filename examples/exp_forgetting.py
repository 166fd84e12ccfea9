"""Catastrophic forgetting on permuted MNIST: 5 tasks, 784-256-256-10 bias-free, SGD lr 0.001 momentum 0.9,
batch 64, 1 epoch per task; the accuracy matrix and the forgetting metrics for SGD and GRAPES.

    python examples/exp_forgetting.py          # MNIST subset per task (needs `imc-grapes data fetch mnist`)
    python examples/exp_forgetting.py --tiny   # synthetic data, seconds

The whole experiment (lr grid, seeds, layer-mean control, report): `imc-grapes experiment forgetting --quick`.
Under a minute on 2 CPU cores at the default size; the progress (each run as it starts, its accuracies after each
task) goes to stderr, the matrices and metrics to stdout.
"""
import argparse
import sys

from imc_grapes import TrainConfig, load_dataset
from imc_grapes.experiments import train_permuted
from imc_grapes.suggest import SuggestingArgumentParser


def progress(line: str) -> None:
    """Where the progress goes (each run as it starts, its accuracies after each task): stderr, so that stdout
    holds the matrices and metrics alone."""
    print(line, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    """Run the example; ``argv``: its command-line arguments (default: ``sys.argv[1:]``)."""
    parser = SuggestingArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="synthetic data, a tiny network")
    args = parser.parse_args(argv)

    dataset = "synthetic" if args.tiny else "mnist"
    data = load_dataset(dataset)
    base = TrainConfig(dataset=dataset, hidden=(16, 16) if args.tiny else (256, 256), lr=0.001, momentum=0.9,
                       batch_size=64, epochs=1, train_subset=512 if args.tiny else 20000, test_subset=2000,
                       extra={"tasks": 5, "permutation_seed": 0})
    for optimizer in ("sgd", "grapes"):
        progress(f"== {optimizer} lr={base.lr:g} seed={base.seed}")
        run = train_permuted(base.replace(optimizer=optimizer), f"runs/examples/exp_forgetting/{optimizer}",
                             dataset=data, progress=False, log=progress)
        f = run.extra["forgetting"]
        print(f"{optimizer}: accuracy on task i (rows) after training task j (columns), %")
        for i, row in enumerate(f["matrix"]):
            print("   " + " ".join("   ." if j < i else f"{100 * a:4.0f}" for j, a in enumerate(row)))
        print(f"   average accuracy {100 * f['avg_acc']:.2f} %, forgetting {100 * f['forgetting']:.2f} points, "
              f"BWT {100 * f['bwt']:+.2f} points")


if __name__ == "__main__":
    main()
