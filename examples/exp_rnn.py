"""Sequential (row-by-row) MNIST with an LSTM, SGD vs GRAPES, from the library API.

    python examples/exp_rnn.py             # MNIST subset (needs `imc-grapes data fetch mnist`)
    python examples/exp_rnn.py --tiny      # synthetic data, seconds

GRAPES gets one factor per row of the LSTM's input-to-hidden matrix W (row sums of |W|) and scales the error of
the input branch at every time step; the recurrent weights are trained by plain BPTT (imc_grapes/recurrent.py).
The whole experiment (lr grid, seeds, layer-mean control, report): `imc-grapes experiment rnn --quick`.
Under a minute on 2 CPU cores at the default size; the progress (each run as it starts, its epoch's accuracy) goes
to stderr, the accuracies to stdout.
"""
import argparse
import sys

from imc_grapes import TrainConfig, load_dataset
from imc_grapes.experiments import train_custom
from imc_grapes.suggest import SuggestingArgumentParser


def progress(line: str) -> None:
    """Where the progress goes (each run as it starts, its epoch's loss and accuracy): stderr, so that stdout
    holds the accuracies alone."""
    print(line, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    """Run the example; ``argv``: its command-line arguments (default: ``sys.argv[1:]``)."""
    parser = SuggestingArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="synthetic data, a tiny LSTM")
    args = parser.parse_args(argv)

    dataset = "synthetic" if args.tiny else "mnist"
    data = load_dataset(dataset)
    base = TrainConfig(dataset=dataset, lr=0.3, batch_size=64, epochs=1, seed=0,
                       train_subset=512 if args.tiny else 6000, test_subset=256 if args.tiny else 2000,
                       extra={"model": {"kind": "lstm", "hidden": [8 if args.tiny else 64]}})
    for optimizer in ("sgd", "grapes"):
        progress(f"== {optimizer} lr={base.lr:g} seed={base.seed}")
        run = train_custom(base.replace(optimizer=optimizer), f"runs/examples/exp_rnn/{optimizer}", dataset=data,
                           progress=False, log=progress)
        acc = run.final_test_acc
        print(f"{optimizer:<7} " + (f"test accuracy {100 * acc:.2f} %" if acc is not None else f"no test accuracy "
                                    f"({run.status})"))


if __name__ == "__main__":
    main()
