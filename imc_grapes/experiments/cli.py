"""``imc-grapes experiment NAME``: the paper's experiments by name (a thin layer over :func:`run_experiment`).

Hooked into the main command by :func:`add_experiment_parser` and :func:`run_experiment_command`.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..runtime import DEFAULT_THREADS

if TYPE_CHECKING:
    from .options import ExperimentOptions

EPILOG = """examples:
  imc-grapes experiment list                                   # the experiments and what each tests
  imc-grapes experiment mlp --quick                            # minutes on 2 CPU cores, digital
  imc-grapes experiment mlp --quick --backend digital crossbar --device-preset EcRam
  imc-grapes experiment mlp --quick --backend crossbar --device-preset GokmenVlasov --device-param dw_min=0.032
  imc-grapes experiment forgetting --quick --seeds 0 1 2 3 4
  imc-grapes experiment snn --tiny                             # synthetic data, seconds: a smoke test
  imc-grapes experiment --redraw --out reports/experiments/forgetting-quick   # figures again from results.json
Sizes: --tiny (synthetic data), --quick (subsets; 5 seeds digital, 3 analog), default full (whole data sets,
5 seeds: hours).
Each experiment writes <out>/{report.md,results.json,results.csv,summary.csv,*.png} and groups/<key>/ (one
compare-style folder per data set × network × hardware); a second run with the same options resumes.
--redraw draws the figures of the report in --out (or NAME's default folder) again from its results.json alone;
it refuses one that a later run in the folder, begun (groups/job.json) and not finished, left older than its
groups/: run that command again to finish it (it resumes the finished runs). A group's folder (groups/<key>, a
compare-style report of one group) is no experiment report: `imc-grapes compare --redraw --out` redraws its figures.
Exit codes: 0 ok (diverged runs are results, shown in the table), 2 invalid arguments or missing data (with
--redraw: a folder without an experiment report, or one whose results.json lacks what a figure needs),
130 interrupted (Ctrl-C), 143 terminated (SIGTERM): the run in progress records status interrupted and is redone
by the next run with the same options."""


def add_experiment_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``experiment`` command to the ``imc-grapes`` sub-commands; return its parser."""
    from devices import PRESETS

    from ..cli import _device_param
    from ..config import BACKENDS, OPTIMIZER_MEANINGS, describe_choices
    from .definitions import EXPERIMENTS

    p = subparsers.add_parser(
        "experiment", help="the paper's experiments by name (mlp, fa-dfa, cnn, rnn, snn, forgetting), with reports",
        description="Run one of the paper's experiments: every group (data set × network variant × hardware) "
                    "compares the optimizers with the learning rate tuned per optimizer on a validation split and "
                    "several seeds, and the experiment writes a report folder (tables, plots, paired differences).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", metavar="NAME", choices=[*EXPERIMENTS, "list"], nargs="?", default=None,
                   help=f"{' | '.join(EXPERIMENTS)} | list (optional only with --redraw --out DIR)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="size", action="store_const", const="quick",
                      help="small sizes: minutes on 2 CPU cores (digital)")
    size.add_argument("--tiny", dest="size", action="store_const", const="tiny",
                      help="synthetic data, tiny networks: an end-to-end check in seconds")
    size.add_argument("--full", dest="size", action="store_const", const="full",
                      help="whole data sets, 5 seeds (the default)")
    p.set_defaults(size="full")
    p.add_argument("--backend", nargs="+", default=["digital"], metavar="B",
                   help=f"one or more of {', '.join(BACKENDS)}; each gets its own groups (default: digital)")
    p.add_argument("--device-preset", default="ReRamSB", metavar="P",
                   help=f"device preset of the analog backends: {', '.join(PRESETS)} (default %(default)s)")
    p.add_argument("--device-param", type=_device_param, action="append", default=None, metavar="NAME=VALUE",
                   help="replace one field of --device-preset's device model in the analog groups (repeatable), "
                        "with aihwkit's names, e.g. --device-param dw_min=0.008 --device-param up_down=0.2; VALUE is "
                        "a number (read as a float) or true/false; checked by the preset, as train's and compare's. "
                        "The analog groups then get their own folders (...-crossbar-ReRamSB-dw_min=0.008); only with "
                        "an analog backend")
    p.add_argument("--optimizers", nargs="+", default=["sgd", "grapes", "layer-mean"], metavar="NAME",
                   help=f"methods compared: {describe_choices(OPTIMIZER_MEANINGS)} (default: sgd grapes layer-mean)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, metavar="S",
                   help="seeds of the final runs, distinct integers (default: per size)")
    p.add_argument("--lr", type=float, nargs="+", default=None, metavar="LR",
                   help="learning-rate grid tuned per optimizer, for every group, each > 0 (default: per experiment)")
    p.add_argument("--datasets", nargs="+", default=None, metavar="D",
                   help="data sets instead of the experiment's (mnist, fashion-mnist, synthetic)")
    p.add_argument("--epochs", type=int, default=None, metavar="N",
                   help="epochs per run (per task for forgetting), ≥ 1 (default: per size and experiment)")
    p.add_argument("--drop-last", action=argparse.BooleanOptionalAction, default=True,
                   help="drop each epoch's partial last batch (default: dropped; --no-drop-last keeps it, as "
                        "earlier versions did)")
    p.add_argument("--tail-evals", type=int, default=1, metavar="K",
                   help="a run's accuracy (reported, compared, and the lr-tuning score) is the mean of its last K "
                        "evaluations, for noisy devices: from 1 to the evaluations of a run (default 1: the final "
                        "one; not for forgetting)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default %(default)s)")
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS, metavar="T",
                   help="torch CPU threads, 1 to 4 per CPU core (default %(default)s: the engine's tensors are small; "
                        "more threads gain little alone and slow a run several-fold on a shared machine)")
    p.add_argument("--data-root", default=None, help="data cache folder (default $IMC_GRAPES_DATA or "
                                                     "${XDG_CACHE_HOME:-~/.cache}/imc-grapes/data)")
    p.add_argument("--out", default=None, help="report folder (default reports/experiments/NAME-SIZE)")
    p.add_argument("--no-resume", action="store_true", help="redo runs even if their finished results exist")
    p.add_argument("--redraw", action="store_true",
                   help="train nothing: draw the figures of the report in --out (default: NAME's folder) again from "
                        "its results.json alone, with the current plotting code (the groups/ folder is not needed; "
                        "the other options are ignored; results.json, results.csv, summary.csv and report.md are "
                        "left as they are)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars per epoch on stderr (default: only when stderr is a terminal, so that a log "
                        "file gets none; --progress: always; --no-progress: never)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the report location")
    return p


def _list() -> int:
    from .definitions import EXPERIMENTS

    for e in EXPERIMENTS.values():
        print(f"{e.name:<11} {e.title}\n{'':<11} claim: {e.claim}")
    return 0


def experiment_options(args: argparse.Namespace) -> ExperimentOptions:
    """The options of ``imc-grapes experiment`` (parsed ``args``), validated (ConfigError or ValueError naming the
    field); :func:`~.definitions.plan_experiment` turns them into the experiment's groups. As train and compare
    refuse an analog option typed with no analog run, a ``--device-preset`` or ``--device-param`` typed (even at
    its default value) with only the digital backend is a ConfigError naming it (the library's
    :class:`~.options.ExperimentOptions` refuses a value other than the default, which it cannot tell from one
    typed)."""
    from ..cli import _reject_unused_analog, _typed, device_overrides_from
    from .options import ExperimentOptions

    if set(args.backend) == {"digital"}:
        _reject_unused_analog(args, "--backend is digital only (add crossbar or aihwkit to --backend, e.g. --backend "
                                    "digital crossbar)", _typed(args, ["device_preset", "device_param"]))
    overrides = device_overrides_from(args.device_param, args.device_preset)
    return ExperimentOptions(size=args.size, backends=tuple(args.backend), preset=args.device_preset,
                             device_overrides=overrides,
                             optimizers=tuple(args.optimizers), seeds=tuple(args.seeds) if args.seeds else None,
                             lr_grid=tuple(args.lr) if args.lr else None,
                             datasets=tuple(args.datasets) if args.datasets else None, epochs=args.epochs,
                             drop_last=args.drop_last, tail_evals=args.tail_evals, device=args.device,
                             data_root=args.data_root)


def run_experiment_command(args: argparse.Namespace) -> int:
    """Carry out ``imc-grapes experiment`` (parsed by :func:`add_experiment_parser`); return the exit code."""
    from ..cli import options_named
    from ..config import ConfigError
    from ..data import DatasetError
    from ..io import folder_error, other_command_folder, writable_folder
    from ..runtime import set_torch_threads
    from ..suggest import typed_options
    from .runner import default_out_dir, run_experiment

    if args.name == "list":
        ignored = list(typed_options(args).values())
        if ignored:     # e.g. `experiment list --quick`: listed as if the options were not there
            this, it = ("this option", "it") if len(ignored) == 1 else ("these options", "them")
            print(f"imc-grapes experiment: error: {', '.join(ignored)}: `experiment list` only names the experiments, "
                  f"so {this} would change nothing: drop {it}", file=sys.stderr)
            return 2
        return _list()
    if args.redraw:
        return _redraw(args)
    if args.name is None:
        print("imc-grapes experiment: error: NAME is required (imc-grapes experiment list names them); only "
              "--redraw --out DIR goes without it", file=sys.stderr)
        return 2
    try:
        with options_named(args):     # a config's error names the option that set the field
            opts = experiment_options(args)
            from .definitions import plan_experiment

            for g in plan_experiment(args.name, opts):
                g.spec.base.resolved_device()
        set_torch_threads(args.threads)
    except (ConfigError, ValueError) as exc:
        print(f"imc-grapes experiment: error: {exc}", file=sys.stderr)
        return 2
    argv = sys.argv[1:]
    command = "imc-grapes " + " ".join(shlex.quote(a) for a in argv) if argv[:1] == ["experiment"] else None
    out = args.out or default_out_dir(args.name, opts)
    option = "--out" if args.out else "the report folder"
    # e.g. a compare report, whose results.json it would replace
    theirs = other_command_folder(out, "experiment", "--out")
    if theirs is not None:
        print(f"imc-grapes experiment: error: {option}: {theirs}", file=sys.stderr)
        return 2
    try:
        writable_folder(out)    # before any run: a bad folder is reported now, not after the first group
    except OSError as exc:
        print(f"imc-grapes experiment: error: {folder_error(option, out, exc)}", file=sys.stderr)
        return 2
    try:
        run_experiment(args.name, opts, out, progress=args.progress, resume=not args.no_resume, command=command,
                       log=(lambda s: None) if args.quiet else print)
    except DatasetError as exc:
        print(f"imc-grapes experiment: error: {exc}", file=sys.stderr)
        return 2
    if args.quiet:
        print(f"report: {out}/report.md")
    return 0


def _redraw(args: argparse.Namespace) -> int:
    """``imc-grapes experiment [NAME] --redraw``: the figures of the report in ``--out`` (default: NAME's default
    folder at the chosen size) drawn again from its results.json (:func:`~.redraw.redraw_experiment_report`).
    2 with a message when the folder holds no experiment report (or one of another experiment than NAME), or when
    its results.json lacks what a figure needs (the other figures are drawn first)."""
    from ..config import ConfigError
    from .options import ExperimentOptions
    from .redraw import redraw_experiment_report
    from .runner import default_out_dir

    if args.out is None and args.name is None:
        print("imc-grapes experiment: error: --redraw needs --out DIR (the report folder) or NAME", file=sys.stderr)
        return 2
    out = args.out or str(default_out_dir(args.name, ExperimentOptions(size=args.size)))
    try:
        done = redraw_experiment_report(out, args.name)
    except (OSError, ValueError, ConfigError) as exc:       # no results.json, not JSON, not an experiment report
        print(f"imc-grapes experiment: error: --redraw: {exc}", file=sys.stderr)
        return 2
    if done.files:
        print(f"redrawn from {Path(out) / 'results.json'}: {', '.join(str(Path(out) / f) for f in done.files)}")
    for figure, why in done.missing.items():
        print(f"imc-grapes experiment: error: --redraw: {figure} not drawn: {why}", file=sys.stderr)
    return 2 if done.missing else 0
