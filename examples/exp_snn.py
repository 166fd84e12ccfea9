"""A spiking network of Spiking Neural Units on rate-coded MNIST, trained with BPTT, with and without GRAPES.

    python examples/exp_snn.py             # MNIST subset (needs `imc-grapes data fetch mnist`)
    python examples/exp_snn.py --tiny      # synthetic data, seconds

SNU: s_t = ReLU(W x_t + l ⊙ s_{t-1} ⊙ (1 − y_{t-1})), y_t = step(s_t + b) with a surrogate gradient
(imc_grapes/snu.py). A plain torch loop, to show that GRAPES is just hooks on the model.
The whole experiment: `imc-grapes experiment snn --quick`.
Under a minute on 2 CPU cores at the default size; the progress (each run as it starts) goes to stderr, the
accuracies to stdout.
"""
import argparse
import sys

import torch
import torch.nn.functional as F

from imc_grapes import attach_grapes, evaluate, load_dataset
from imc_grapes.data import BatchLoader
from imc_grapes.snu import SpikingClassifier
from imc_grapes.suggest import SuggestingArgumentParser


def progress(line: str) -> None:
    """Where the progress goes (each run as it starts, with its batches and time steps): stderr, so that stdout
    holds the accuracies alone."""
    print(line, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    """Run the example; ``argv``: its command-line arguments (default: ``sys.argv[1:]``)."""
    parser = SuggestingArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="synthetic data, a tiny network")
    args = parser.parse_args(argv)

    data = load_dataset("synthetic" if args.tiny else "mnist")
    train, test = data.train.subset(512 if args.tiny else 6000), data.test.subset(256 if args.tiny else 2000)
    for use_grapes in (False, True):
        model = SpikingClassifier(784, (32 if args.tiny else 256,), 10, steps=8 if args.tiny else 16, encoding="rate",
                                  seed=0)
        handle = attach_grapes(model, "propagated") if use_grapes else None  # M per unit from the rows of W
        opt = torch.optim.SGD(model.parameters(), lr=0.3)
        loader = BatchLoader(train, 64, seed=0)
        progress(f"== {'GRAPES' if use_grapes else 'SGD'}: lr=0.3 seed=0, {len(loader)} batches of 64, "
                 f"{model.steps} time steps")
        for x, y in loader:
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        print(f"{'GRAPES' if use_grapes else 'SGD':<7} test accuracy {100 * evaluate(model, test)[1]:.2f} %")


if __name__ == "__main__":
    main()
