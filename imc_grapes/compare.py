"""The compare job: one model trained under {ideal digital, analog hardware} × {SGD, GRAPES, layer-mean control},
with the same seeds (same init, same data order) for every cell, an optional learning-rate grid tuned per
cell on a validation split (never on the test set), and a report folder.

The report folder holds:

* ``results.json`` — the spec, the absolute data folder (``data_root_resolved``), the chosen learning rates with
  the validation scores that chose them, one entry per run (config, history, costs, inference accuracies) and the
  summary table;
* ``results.csv`` — one row per final run: its results, then the settings it was run with
  (:func:`csv_config_columns`);
* ``curves.png`` (test accuracy vs epoch, mean ± std over each cell's completed runs; the analog panel names its
  backend and device preset), ``accuracy.png`` (final accuracy, mean ± std over the seeds, bars from 0 %, analog
  bars hatched, ideal digital ones plain, a legend below saying so; no error bar on a cell with one completed run),
  ``inference.png`` (accuracy after programming noise and drift, analog cells: mean over the completed runs, band
  ± their std), ``report.md`` embedding them; each optimizer in its colour of every report
  (:func:`~imc_grapes.plotting.optimizer_color`);
* ``runs/…`` — each run's own folder (``metrics.csv``, ``results.json``). A finished run is not redone when the
  job is started again with the same spec (``resume``), so an interrupted job continues where it stopped.
  ``runs/job.json`` names the last job begun in the folder (:func:`~imc_grapes.io.start_job`), and
  ``results.json`` the job that wrote it (``job``): when they differ, a later job was interrupted and the
  report is older than its runs (:func:`~imc_grapes.io.superseded_report_note`), which ``--redraw`` and
  ``compare-summary`` refuse, saying to run the same command again.
"""
from __future__ import annotations

import dataclasses
import math
import statistics
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devices.base import FLOAT32_RANGE, fits_float32, is_finite_number

from .backends.optim import ADAPTIVE_BASE_OPTIMIZERS, MOMENTUM_BASE_OPTIMIZERS
from .backends.settings import format_device_overrides
from .config import (OPTIMIZERS, SEED_RANGE, ConfigError, TrainConfig, as_run_on, as_saved, check_distinct,
                     check_seeds_apart, compared_as_run, config_differences, is_int, is_number, seed_in_range,
                     with_later_fields)
from .data import Dataset, DatasetCache, recorded_data_root
from .inference_eval import time_label
from .interrupts import raise_if_stop_requested
from .io import (experiment_part, experiment_report_of, folder_command, read_json, read_report_json,
                 restore_nonfinite, run_status_problem, start_job, superseded_report_note, write_bytes_atomic,
                 write_csv_atomic, write_figure_atomic, write_json_atomic)
from .plotting import accuracy_ylim, error_bars, fit_title, optimizer_color
from .report import NAN_ACCURACY_SHORT, draw_cell_curves, mean_pm_std, nan_accuracy_note
from .stats import mean_std
from .suggest import did_you_mean
from .train import DivergenceError, RunResult, best_accuracy, tail_accuracy, tail_evals_error, train

HARDWARE = ("digital", "analog")
#: how a tuning run is scored: its ``final`` evaluation (the quantity the final runs report, on the test set) or
#: its ``best`` evaluation point (early-stopping-like; rewards a single peak, which on noisy devices is itself noise)
TUNE_SCORES: tuple[str, ...] = ("final", "best")


@dataclass(frozen=True)
class CompareSpec:
    """What the compare job runs.

    Attributes:
        base: the shared training config (data set, model, epochs, batch size, analog settings, ...); its
            optimizer, backend, lr and seed are set per run.
        optimizers: learning methods compared (``sgd``, ``grapes``, ``grapes-local``, ``layer-mean``).
        hardware: ``digital`` (ideal float weights) and/or ``analog`` (the ``analog_backend`` simulator with
            ``base.analog``'s device preset and periphery).
        analog_backend: ``crossbar`` (this project's engine) or ``aihwkit``.
        lr_grid: learning rates tried per (hardware, optimizer) cell; with one value there is no tuning. The lr
            with the highest score is chosen; on a tie, the one listed first in ``lr_grid``.
        tune_seeds: seeds of the tuning runs, one or more distinct integers in :data:`~imc_grapes.config.SEED_RANGE`
            (also without an lr grid to tune); an lr's score is the mean over them (an lr for which any of them
            diverged or failed is not chosen).
        tune_score: what a tuning run scores, one of :data:`TUNE_SCORES` (default ``final``).
        tail_evals: a run's accuracy (the ``final`` tuning score and the reported test accuracy) is the mean of its
            last ``tail_evals`` evaluations (default 1: the final one). On noisy devices, where one evaluation moves
            by several points from the next, a few evaluations average that noise out.
        val_holdout: training samples held out as the validation split for tuning.
        seeds: seeds of the final runs, one or more distinct integers in :data:`~imc_grapes.config.SEED_RANGE`
            (each cell uses the same seeds: same init and data order).
        target_acc: accuracy (fraction) for the "epochs to target" column.
    """

    base: TrainConfig = field(default_factory=TrainConfig)
    optimizers: tuple[str, ...] = ("sgd", "grapes", "layer-mean")
    hardware: tuple[str, ...] = HARDWARE
    analog_backend: str = "crossbar"
    lr_grid: tuple[float, ...] = (0.1,)
    tune_seeds: tuple[int, ...] = (0,)
    tune_score: str = "final"
    tail_evals: int = 1
    val_holdout: int = 5000
    seeds: tuple[int, ...] = (0,)
    target_acc: float = 0.9

    def __post_init__(self) -> None:
        for name in ("optimizers", "hardware", "lr_grid", "seeds", "tune_seeds"):
            v = getattr(self, name)
            if isinstance(v, (str, bytes)) or not isinstance(v, Iterable):
                raise ConfigError(f"{name} must be a list, got {v!r}")
            object.__setattr__(self, name, tuple(v))
        if not isinstance(self.base, TrainConfig):
            raise ConfigError(f"base must be a TrainConfig, got {self.base!r}")
        bad = [o for o in self.optimizers if not isinstance(o, str) or o not in OPTIMIZERS]
        if not self.optimizers or bad:
            raise ConfigError(f"optimizers must be one or more of {', '.join(OPTIMIZERS)}, got {list(self.optimizers)}")
        check_distinct("optimizers", self.optimizers)
        bad = [h for h in self.hardware if h not in HARDWARE]
        if not self.hardware or bad:
            raise ConfigError(f"hardware must be one or more of {', '.join(HARDWARE)}, got {list(self.hardware)}")
        check_distinct("hardware", self.hardware)
        if self.analog_backend not in ("crossbar", "aihwkit"):
            raise ConfigError(f"analog_backend must be crossbar or aihwkit, got {self.analog_backend!r}")
        if not self.lr_grid or any(not (is_finite_number(lr) and lr > 0 and fits_float32(lr))
                                   for lr in self.lr_grid):
            raise ConfigError(f"lr_grid must be one or more learning rates > 0, each {FLOAT32_RANGE}, "
                              f"got {list(self.lr_grid)}")
        check_distinct("lr_grid", self.lr_grid)
        if len({f"{lr:g}" for lr in self.lr_grid}) < len(self.lr_grid):    # they name the tuning runs' folders
            raise ConfigError(f"lr_grid values must differ in their first 6 significant digits, got "
                              f"{list(self.lr_grid)}")
        if not self.seeds or not all(is_int(s) for s in self.seeds):
            raise ConfigError(f"seeds must name one or more seeds (integers), got {list(self.seeds)}")
        check_distinct("seeds", self.seeds)
        if (not self.tune_seeds or not all(is_int(s) for s in self.tune_seeds)
                or len(set(self.tune_seeds)) != len(self.tune_seeds)):
            raise ConfigError(f"tune_seeds must name one or more distinct seeds, got {list(self.tune_seeds)}")
        for name in ("seeds", "tune_seeds"):     # checked here, not only by the run that first uses such a seed
            seeds = getattr(self, name)
            if not all(seed_in_range(s) for s in seeds):
                raise ConfigError(f"{name} must be integers in {SEED_RANGE}, got {list(seeds)}")
            check_seeds_apart(name, seeds)
        if self.tune_score not in TUNE_SCORES:
            raise ConfigError(f"tune_score must be one of {', '.join(TUNE_SCORES)}, got {self.tune_score!r}"
                              f"{did_you_mean(self.tune_score, TUNE_SCORES)}")
        if (msg := tail_evals_error(self.tail_evals, cfg=self.base)) is not None:
            raise ConfigError(msg)
        if not (is_number(self.target_acc) and 0 < self.target_acc <= 1):
            raise ConfigError(f"target_acc must be a number in (0, 1], got {self.target_acc!r}")
        if not (is_int(self.val_holdout) and self.val_holdout >= 0):
            raise ConfigError(f"val_holdout must be an integer ≥ 0, got {self.val_holdout!r}")
        if self.val_holdout < 1 and len(self.lr_grid) > 1:
            raise ConfigError(f"val_holdout must be ≥ 1 when an lr grid is tuned, got {self.val_holdout}")
        for hardware in self.hardware:      # a cell the base cannot make: rejected now, not after the others ran
            for optimizer in self.optimizers:
                self.cell_config(hardware, optimizer, self.lr_grid[0], self.seeds[0])

    def backend_of(self, hardware: str) -> str:
        return "digital" if hardware == "digital" else self.analog_backend

    def cell_config(self, hardware: str, optimizer: str, lr: float, seed: int, tuning: bool = False) -> TrainConfig:
        return self.base.replace(optimizer=optimizer, backend=self.backend_of(hardware), lr=lr, seed=seed,
                                 val_holdout=self.val_holdout if tuning else 0,
                                 inference_times=() if (tuning or hardware == "digital") else self.base.inference_times)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "base"}
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
        d["base"] = self.base.to_dict()
        return d


@dataclass
class Cell:
    """The final runs of one (hardware, optimizer) cell."""

    hardware: str
    optimizer: str
    lr: float
    runs: list[RunResult]
    tuning_by_seed: dict[float, dict[int, float | None]] = field(default_factory=dict)  # lr -> tune seed -> score

    @property
    def tuning(self) -> dict[float, float | None]:
        """lr -> its score (:func:`lr_scores` of :attr:`tuning_by_seed`)."""
        return lr_scores(self.tuning_by_seed)


def lr_scores(by_seed: dict[float, dict[int, float | None]]) -> dict[float, float | None]:
    """lr -> its tuning score: the mean over its tune seeds' scores, ``None`` if any of its runs did not complete."""
    return {lr: None if any(a is None for a in by.values()) else statistics.fmean(by.values())  # type: ignore
            for lr, by in by_seed.items()}


def _saved_history(saved: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``history`` of a run's saved ``results.json``, its NaN/Inf values floats again (the file holds them as
    strings: :func:`~imc_grapes.io.restore_nonfinite`), as the run had them when it was trained."""
    return restore_nonfinite(saved.get("history", []))  # type: ignore[no-any-return]


def number_problem(value: Any, key: str, optional: bool = False) -> str | None:
    """What is wrong with ``value``, stored at ``key`` of a ``results.json`` (NaN and ±Inf as the strings of
    :func:`~imc_grapes.io.restore_nonfinite`), where a reader needs a number (NaN and ±Inf allowed; with
    ``optional`` also null), e.g. ``history[0].test_acc must be a number (NaN allowed), got 'x'``; None when it is
    one. The one check of a stored number that :func:`history_problem` and ``experiment --redraw`` make."""
    if (optional and value is None) or is_number(restore_nonfinite(value)):
        return None
    return f"{key} must be a number (NaN allowed){' or null' if optional else ''}, got {value!r}"


def history_problem(history: Any, keys: Sequence[str] = ("epoch", "test_acc")) -> str | None:
    """What in a run's stored ``history`` (as a ``results.json`` holds it: NaN and ±Inf as the strings of
    :func:`~imc_grapes.io.restore_nonfinite`) is not as :func:`~imc_grapes.train.train` writes it and a reader of
    its ``keys`` needs it — a list of mappings, one per evaluation, each with a number (NaN or ±Inf allowed) at
    every one of ``keys`` (the figures read ``epoch`` and ``test_acc``; compare-summary ``test_acc``) — e.g.
    ``history[0].test_acc must be a number (NaN allowed), got 'x'``; None when it is as written. A hand-edited
    value would otherwise be a TypeError of a figure or an accuracy silently left out."""
    if not (isinstance(history, list) and all(isinstance(h, dict) for h in history)):
        return f"history must be a list of mappings (one per evaluation), got {history!r}"
    for j, row in enumerate(history):
        for key in keys:
            problem = number_problem(row.get(key), f"history[{j}].{key}")
            if problem:
                return problem
    return None


def saved_versions(saved: dict[str, Any]) -> dict[str, Any]:
    """The versions (:func:`~imc_grapes.versions.versions`) a run's saved ``results.json`` records: those of the
    code that trained it, not of the process reading it; ``{}`` when it recorded none (or not as a mapping)."""
    v = saved.get("versions")
    return dict(v) if isinstance(v, dict) else {}


def configs_as_run(saved: dict[str, Any], config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A saved run's config (``saved``: its ``results.json``; ``{}`` without one) and ``config`` (a run about to be
    trained, :meth:`TrainConfig.to_dict`), each with its device as the run used it
    (:func:`~imc_grapes.config.as_run_on`): the saved one by the ``cuda_available`` its versions record, the new one
    by this machine's — for :func:`~imc_grapes.config.config_differences` (resume, and ``imc-grapes train``'s
    check of a run in its way)."""
    import torch

    saved_config = saved["config"] if isinstance(saved.get("config"), dict) else {}
    return (as_run_on(saved_config, saved_versions(saved).get("cuda_available")),
            as_run_on(config, torch.cuda.is_available()))


def differences_shown(fields: Sequence[str], given: tuple[dict[str, Any], dict[str, Any]],
                      ran: tuple[dict[str, Any], dict[str, Any]], pattern: str, most: int | None = None) -> str:
    """``fields`` (where a saved run's config and a new one differ, :func:`~imc_grapes.config.config_differences`)
    with both values, for a message: each ``pattern`` (e.g. ``"{key}: {saved} -> {new}"``) filled in with the field
    and its saved and new value, joined by ``", "``; only the first ``most`` of them, then ``", ..."``, when
    ``most`` is given. ``given``: the (saved, new) configs as written; ``ran``: the same as :func:`configs_as_run`
    gives them. A value is its repr, followed by the device the run used in brackets where that differs
    (``'auto' (cpu)``, ``'cuda' (cuda:0)``), cut to 60 characters (``...``).

    A field whose value is a dict on both sides (``analog``) is shown by the entries in which it differs, each by
    its dotted path (``analog.adc_bits: 9 -> 7``, ``analog.device_overrides: {} -> {'dw_min': 0.008}``): those that
    differ both as written and as runs (:func:`~imc_grapes.config.compared_as_run`: not an entry a digital run
    ignores, nor an override at the preset's own value). Where no entry does (a digital run against an analog one
    with the same analog settings written) the field is left out, as ``backend`` is the difference, unless nothing
    else would be shown: then it is shown whole, as any other value. A field a saved config lacks (added to the
    config since) is shown at the value that run used (:func:`~imc_grapes.config.with_later_fields`), not as
    ``None``."""
    given = (with_later_fields(given[0]), with_later_fields(given[1]))

    def cut(r: str) -> str:
        return r if len(r) <= 60 else r[:57] + "..."

    def shown(side: int, key: str) -> str:
        v, used = given[side].get(key), ran[side].get(key)
        return cut(repr(v) if v == used else f"{v!r} ({used})")     # auto, and the device it resolved to

    compared = (compared_as_run(ran[0]), compared_as_run(ran[1]))
    entries: list[tuple[str, str, str]] = []
    for k in fields:
        saved, new, saved_run, new_run = given[0].get(k), given[1].get(k), compared[0].get(k), compared[1].get(k)
        if not (isinstance(saved, dict) and isinstance(new, dict) and isinstance(saved_run, dict)
                and isinstance(new_run, dict)):
            entries.append((k, shown(0, k), shown(1, k)))
            continue
        saved_written, new_written = as_saved(saved), as_saved(new)
        inner = sorted(n for n in {*saved, *new, *saved_run, *new_run}
                       if saved_run.get(n) != new_run.get(n) and saved_written.get(n) != new_written.get(n))
        entries += [(f"{k}.{n}", cut(repr(saved.get(n))), cut(repr(new.get(n)))) for n in inner]
    if not entries:
        entries = [(k, shown(0, k), shown(1, k)) for k in fields]
    listed = entries if most is None else entries[:most]
    return (", ".join(pattern.format(key=k, saved=a, new=b) for k, a, b in listed)
            + (", ..." if len(listed) < len(entries) else ""))


def finished_run(cfg: Any, run_dir: Path, statuses: Sequence[str], extra_keys: Sequence[str],
                 log: Callable[[str], None]) -> RunResult | None:
    """The run saved in ``run_dir/results.json`` when it has one of ``statuses`` and the same config as ``cfg``
    (with the ``extra_keys`` entries of its results), else None (resume: such a run is not trained again). A
    finished run of another config (the same folder given other options) is logged as replaced, with the fields
    that differ and their saved and new values (:func:`differences_shown`: ``epochs: 1 -> 2``). The device counts
    as the run used it (:func:`~imc_grapes.config.device_run_on`, as ``imc-grapes train`` compares a saved run):
    ``auto`` against a saved ``cpu`` run on a machine without CUDA is the same run, against a saved ``cuda`` one
    another."""
    saved_path = run_dir / "results.json"
    if not saved_path.exists():
        return None
    try:
        saved = read_json(saved_path)
    except (OSError, ValueError) as exc:    # e.g. damaged by hand or by a tool: not a finished run
        log(f"   note: {exc}; the run is trained again")
        return None
    if not isinstance(saved, dict) or saved.get("status") not in statuses:
        return None
    config = cfg.to_dict()
    ran = configs_as_run(saved, config)
    differences = config_differences(*ran)
    if differences:     # e.g. the same --out with other options: the run of the same name is trained again
        given = (saved["config"] if isinstance(saved.get("config"), dict) else {}, config)
        shown = differences_shown(differences, given, ran, "{key}: {saved} -> {new}")
        log(f"   note: {run_dir} holds a {saved['status']} run of another configuration ({shown}); it is trained "
            "again and replaced")
        return None
    log(f"   (resumed: {run_dir} is finished)")
    extra = {k: restore_nonfinite(saved[k]) for k in extra_keys if k in saved}
    return RunResult(cfg, _saved_history(saved), saved["status"], saved.get("message", ""), run_dir,
                     saved.get("wall_time_s", 0.0), saved.get("eval_split", "test"), extra,
                     saved.get("train_samples"), saved.get("eval_samples"), saved.get("data_root_resolved"),
                     saved_versions(saved))


def run_one(cfg: TrainConfig, run_dir: Path, dataset: Dataset, progress: bool | None, resume: bool,
            log: Callable[[str], None], trainer: Callable[..., RunResult] | None = None,
            finished: Sequence[str] = ("completed", "diverged"), extra_keys: Sequence[str] = ("costs", "inference"),
            record_failures: bool = False) -> RunResult:
    """Train ``cfg`` with ``trainer`` (``trainer(cfg, run_dir, dataset=, progress=, log=)``; default
    :func:`~imc_grapes.train.train`) into ``run_dir``, or
    load it when a run with a status in ``finished`` and the same config is there (``resume``).

    A diverging run (NaN/Inf loss or evaluated output) is returned with status ``diverged`` and its history so far. With
    ``record_failures`` a run that raised any other error is returned (and recorded in its ``results.json``) with
    status ``failed`` and the error as its message, so that the caller goes on; without, the error propagates.

    A digital run is trained and recorded with :meth:`~imc_grapes.config.TrainConfig.normalised` (the analog
    settings it ignores at their defaults), and one finished under other analog settings is reused.

    It starts at a safe point of :mod:`imc_grapes.interrupts`: a stop (SIGTERM, Ctrl-C) whose exception Python
    swallowed since the previous run is raised before this one is trained or loaded.
    """
    raise_if_stop_requested()
    cfg = cfg.normalised()
    saved_path = run_dir / "results.json"
    done = finished_run(cfg, run_dir, finished, extra_keys, log) if resume else None
    if done is not None:
        return done
    try:
        return (trainer or train)(cfg, run_dir, dataset=dataset, progress=progress, log=log)
    except DivergenceError as exc:
        saved = read_json(saved_path)
        log(f"   diverged: {exc}")
        return RunResult(cfg, _saved_history(saved), "diverged", str(exc), run_dir, saved.get("wall_time_s", 0.0),
                         train_samples=saved.get("train_samples"), eval_samples=saved.get("eval_samples"),
                         data_root_resolved=saved.get("data_root_resolved"), versions=saved_versions(saved))
    except Exception as exc:
        if not record_failures:
            raise
        message = f"{type(exc).__name__}: {exc}"
        log(f"   FAILED: {message}")
        saved = read_json(saved_path) if saved_path.exists() else {"config": cfg.to_dict(), "history": []}
        saved.update(status="failed", message=message, traceback=traceback.format_exc())
        write_json_atomic(saved_path, saved)
        return RunResult(cfg, _saved_history(saved), "failed", message, run_dir, saved.get("wall_time_s", 0.0),
                         versions=saved_versions(saved) if "versions" in saved else None)


def tune_score(run: RunResult, how: str, tail: int = 1) -> float | None:
    """A tuning run's score: the mean of its last ``tail`` evaluations (``how="final"``,
    :func:`~imc_grapes.train.tail_accuracy`; NaN when one of them is NaN) or its best evaluation (``"best"``,
    :func:`~imc_grapes.train.best_accuracy`: a NaN evaluation is never the best, whatever its place in the
    history; NaN when the run has no finite evaluation); None unless it completed. A NaN score is never the chosen
    lr's (:func:`tune_and_run`)."""
    if how not in TUNE_SCORES:
        raise ValueError(f"tune_score: how must be one of {', '.join(TUNE_SCORES)}, got {how!r}"
                         f"{did_you_mean(how, TUNE_SCORES)}")
    if run.status != "completed" or not run.history:
        return None
    if how == "final":
        return tail_accuracy(run.history, tail)
    best = best_accuracy(run.history)
    return math.nan if best is None else best


def tune_and_run(spec: CompareSpec, hw: str, opt: str, run: Callable[[TrainConfig, Path], RunResult],
                 tune_root: Path, final_root: Path, label: str, log: Callable[[str], None]) -> Cell:
    """One cell: tune the lr of ``opt`` on ``hw`` over ``spec.lr_grid`` on the validation split (one run per
    seed of ``spec.tune_seeds``, in ``tune_root/<opt>/lr<lr>``, or ``lr<lr>_seed<seed>`` with several tune seeds;
    each scored by :func:`tune_score` ``spec.tune_score``, an lr by :func:`lr_scores`; of lrs with equal scores the
    one listed first in ``spec.lr_grid`` is chosen, an lr scored None or NaN never; the smallest lr when no lr has a
    score), then train every seed of
    ``spec.seeds`` at the best lr (``final_root/<opt>/lr<lr>_seed<seed>``). ``run(cfg, folder)`` trains (or
    resumes) one run; ``label`` names the cell in the log."""
    by_seed: dict[float, dict[int, float | None]] = {}
    if len(spec.lr_grid) > 1:
        several = len(spec.tune_seeds) > 1
        for lr in spec.lr_grid:
            by_seed[lr] = {}
            for seed in spec.tune_seeds:
                cfg = spec.cell_config(hw, opt, lr, seed, tuning=True)
                log(f"== tune {label} lr={lr:g}" + (f" seed={seed}" if several else "") + " (validation split)")
                folder = tune_root / opt / (f"lr{lr:g}_seed{seed}" if several else f"lr{lr:g}")
                by_seed[lr][seed] = tune_score(run(cfg, folder), spec.tune_score, spec.tail_evals)
        # a NaN score (no finite validation accuracy) is never chosen: max over NaNs depends on their order
        valid = {lr: a for lr, a in lr_scores(by_seed).items() if a is not None and not math.isnan(a)}
        if not valid:
            log(f"!! every lr diverged, failed or had no finite validation accuracy for {label}; using the smallest")
        lr_best = max(valid, key=lambda k: valid[k]) if valid else min(spec.lr_grid)   # max: first of a tie
    else:
        lr_best = spec.lr_grid[0]
    runs = []
    for seed in spec.seeds:
        cfg = spec.cell_config(hw, opt, lr_best, seed)
        log(f"== {label} lr={lr_best:g} seed={seed}")
        runs.append(run(cfg, final_root / opt / f"lr{lr_best:g}_seed{seed}"))
    return Cell(hw, opt, lr_best, runs, by_seed)


def tuning_record(cell: Cell, score: str) -> dict[str, Any]:
    """What ``results.json`` records of a cell's tuning: the chosen lr, how runs were scored, each lr's score
    (mean over the tune seeds) and every tuning run's own score."""
    return {"hardware": cell.hardware, "optimizer": cell.optimizer, "chosen_lr": cell.lr, "tune_score": score,
            "validation_acc_by_lr": {f"{k:g}": v for k, v in cell.tuning.items()},
            "validation_acc_by_lr_and_seed": {f"{k:g}": {str(s): a for s, a in v.items()}
                                              for k, v in cell.tuning_by_seed.items()}}


def epochs_to_target(run: RunResult, target: float) -> float | None:
    """The first evaluation point (in epochs) at which the run's test accuracy reached ``target``."""
    return next((h["epoch"] for h in run.history if h["test_acc"] >= target), None)


def paired_by_seed(a: dict[int, float | None], b: dict[int, float | None]) -> dict[str, Any] | None:
    """Paired difference ``a[seed] − b[seed]`` over the seeds with a finite value in both (a seed missing from
    either, or None / NaN / ±Inf there, is left out): ``{"mean", "std", "n", "positive", "negative"}`` (n: the
    seeds used; std with n − 1, 0 for one seed; how many seeds have a difference > 0 / < 0), or None without a
    common seed.

    NaN policy: left out, unlike the accuracy means (:func:`~imc_grapes.stats.mean_std` with ``nan_propagates``,
    :func:`~imc_grapes.report.summarise`): a difference needs a number on both sides, and the result carries
    ``n``, the seeds it rests on, which every caller prints next to it (``positive/n``, ``diff_vs_<ref>_n``), so a
    left-out seed is visible, not hidden."""
    diffs = []
    for seed, x in a.items():
        y = b.get(seed)
        if is_finite_number(x) and is_finite_number(y):
            diffs.append(float(x) - float(y))  # type: ignore[arg-type]
    if not diffs:
        return None
    return {"mean": statistics.fmean(diffs), "std": statistics.stdev(diffs) if len(diffs) > 1 else 0.0,
            "n": len(diffs), "positive": sum(d > 0 for d in diffs), "negative": sum(d < 0 for d in diffs)}


def _per_step_cost(run: RunResult) -> float | None:
    costs = run.extra.get("costs") or {}
    value = costs.get("energy_pj_per_step")
    return float(value) if isinstance(value, (int, float)) else None


def _grapes_ops_share(run: RunResult) -> float | None:
    """GRAPES's own digital operations as a fraction of all operations of a training step."""
    costs = run.extra.get("costs") or {}
    total, own = costs.get("ops_per_step"), costs.get("grapes_ops_per_step")
    return float(own) / float(total) if is_finite_number(total) and total and is_finite_number(own) \
        else None


def _saturation(run: RunResult) -> float | None:
    vals = [v for h in run.history for k, v in h.items() if k.startswith("sat/") and is_finite_number(v)]
    return statistics.fmean(vals) if vals else None


def summarise_cells(cells: Sequence[Cell], target: float, tail: int = 1) -> list[dict[str, Any]]:
    """One row per cell: accuracies (mean ± std over seeds of each run's
    :func:`~imc_grapes.train.tail_accuracy` over its last ``tail`` evaluations), epochs to target, saturation, cost
    ratio to SGD — over the cell's *completed* runs (a diverged or failed run's last evaluation is not a result of
    the method; ``completed``, ``diverged`` and ``failed`` count the runs). A completed run whose accuracy (or
    inference accuracy at a time) is NaN makes that mean and std NaN, as in :func:`~imc_grapes.report.summarise`
    (:func:`~imc_grapes.stats.mean_std`'s ``nan_propagates``: the mean would otherwise cover fewer runs than
    ``completed``); the diagnostics (saturation, cost, GRAPES's share) leave such a run out. Where runs were
    evaluated after programming noise and drift, per time ``t`` (seconds, as the runs' ``inference`` keys):
    ``inference_acc@t`` the mean accuracy (a fraction), ``inference_acc_std@t`` its sample std (n − 1; 0 for one
    run) and ``inference_n@t`` the completed runs with an accuracy at ``t`` that both rest on (None / 0 without
    one)."""
    sgd_cost = {c.hardware: mean_std([_per_step_cost(r) for r in c.runs])[0] for c in cells if c.optimizer == "sgd"}
    rows = []
    for c in cells:
        done = [r for r in c.runs if r.history and r.status == "completed"]
        acc_m, acc_s = mean_std([tail_accuracy(r.history, tail) for r in done], nan_propagates=True)
        ett = [epochs_to_target(r, target) for r in done]
        reached = [e for e in ett if e is not None]
        cost, _ = mean_std([_per_step_cost(r) for r in c.runs])
        base = sgd_cost.get(c.hardware)
        row: dict[str, Any] = {
            "hardware": c.hardware, "optimizer": c.optimizer, "lr": c.lr, "runs": len(c.runs),
            "completed": len(done), "diverged": sum(r.status == "diverged" for r in c.runs),
            "failed": sum(r.status == "failed" for r in c.runs),
            "final_test_acc_mean": acc_m, "final_test_acc_std": acc_s, "tail_evals": tail,
            "epochs_to_target_mean": statistics.fmean(reached) if len(reached) == len(done) and done else None,
            "reached_target": f"{len(reached)}/{len(done)}",
            "saturation_mean": mean_std([_saturation(r) for r in done])[0],
            "cost_per_step": cost,
            "cost_overhead_vs_sgd": cost / base if cost is not None and base else None,
            "grapes_ops_share": mean_std([_grapes_ops_share(r) for r in done])[0],
        }
        times = sorted({t for r in done for t in (r.extra.get("inference") or {})}, key=float)
        for t in times:         # the mean (as before), and the spread over the seeds and their number
            accs = [(r.extra.get("inference") or {}).get(t) for r in done]
            m, s = mean_std(accs, nan_propagates=True)
            row[f"inference_acc@{t}"] = m
            row[f"inference_acc_std@{t}"] = s
            row[f"inference_n@{t}"] = sum(is_number(a) for a in accs)
        rows.append(row)
    return rows


def _fmt(v: float | None, pct: bool = False, digits: int = 2) -> str:
    if v is None:
        return "—"
    return f"{100 * v:.{digits}f}" if pct else f"{v:.{digits}f}"


def accuracy_text(mean: float | None, std: float | None, completed: int, runs: int, diverged: int = 0,
                  failed: int = 0) -> str:
    """A cell's accuracy as the tables show it (a fraction ``mean`` ± ``std`` over its ``completed`` runs, in %:
    :func:`mean_pm_std`), with how many of its ``runs`` diverged or failed (``(1/3 diverged)``); without a mean,
    ``diverged`` when every run diverged, else ``no completed run``."""
    if mean is None:
        return "diverged" if runs and diverged == runs else "no completed run"
    stopped = [f"{n}/{runs} {k}" for k, n in (("diverged", diverged), ("failed", failed)) if n]
    return mean_pm_std(mean, std, completed) + (f" ({', '.join(stopped)})" if stopped else "")


def format_table(rows: Sequence[dict[str, Any]], target: float, markdown: bool = False) -> str:
    """The summary as a plain-text (or Markdown) table. An accuracy that is NaN reads ``nan``, and a line below the
    table (:data:`~imc_grapes.report.NAN_ACCURACY_NOTE`; in Markdown after a blank line, a paragraph of its own,
    not a row of the table) says why."""
    inf_cols = sorted({k for r in rows for k in r if k.startswith("inference_acc@")},
                      key=lambda k: float(k.split("@")[1]))
    tail = max((int(r.get("tail_evals", 1)) for r in rows), default=1)
    acc_head = "test acc % (mean ± std)" if tail == 1 else f"test acc % (last {tail} evals, mean ± std)"
    head = (["hardware", "optimizer", "lr", acc_head, f"epochs to {100 * target:g}%",
             "saturation", "energy ×SGD", "GRAPES ops %"]
            + [f"acc % @{time_label(float(k.split('@')[1]))}" for k in inf_cols])
    body = []
    for r in rows:
        acc = accuracy_text(r["final_test_acc_mean"], r["final_test_acc_std"], _completed(r), r["runs"],
                            r.get("diverged") or 0, r.get("failed") or 0)
        ett = (_fmt(r["epochs_to_target_mean"]) if r["epochs_to_target_mean"] is not None
               else "—" if r["final_test_acc_mean"] is None else f"({r['reached_target']})")   # not "(0/0)"
        body.append([r["hardware"], r["optimizer"], f"{r['lr']:g}", acc, ett, _fmt(r["saturation_mean"]),
                     _fmt(r["cost_overhead_vs_sgd"], digits=3), _fmt(r.get("grapes_ops_share"), True, 3)]
                    + [_fmt(r.get(k), True) for k in inf_cols])
    note = nan_accuracy_note(_shown_accuracies(rows, inf_cols))
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(b) + " |" for b in body]
        return "\n".join(lines + (["", note] if note else []))
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*head), "-" * (sum(widths) + 2 * (len(widths) - 1))] + [fmt.format(*b) for b in body]
                     + ([note] if note else []))


def _shown_accuracies(rows: Sequence[dict[str, Any]], inf_cols: Sequence[str]) -> list[Any]:
    """The accuracies :func:`format_table` shows as numbers: each row's final accuracy (a row without one shows
    ``diverged`` or ``no completed run``) and its inference accuracies at ``inf_cols``."""
    return [a for r in rows for a in (r["final_test_acc_mean"], *(r.get(k) for k in inf_cols))]


def column_notes(rows: Sequence[dict[str, Any]], target: float) -> str:
    """What the table's "epochs to target" column and (when there are any) its ``acc % @t`` columns mean, for the
    report's legend below the table."""
    note = (f"*epochs to {100 * target:g}%*: the first evaluation point (in epochs) at which a run's test accuracy "
            f"reached {100 * target:g} %, the mean over the cell's completed runs; (k/n) when only k of its n "
            "completed runs reached it (no mean is shown then).")
    if any(k.startswith("inference_acc@") for r in rows for k in r):
        note += (" *acc % @t*: test accuracy of the trained analog network after its weights are programmed onto "
                 "PCM-like devices and read a time t later (programming noise, conductance drift and read noise, "
                 "with global drift compensation; `imc_grapes/inference_eval.py`), the mean over the cell's "
                 "completed runs.")
    return note


def _time_axis(ax: Any, times_s: Sequence[float]) -> None:
    """A log time axis for the inference times (s); symmetric-log (linear up to the smallest positive time, or
    1 s) when a time is 0, which a log axis cannot show."""
    if min(times_s) > 0:
        ax.set_xscale("log")
    else:
        ax.set_xscale("symlog", linthresh=min((t for t in times_s if t > 0), default=1.0))


def _legend_or_note(ax: Any, note: str, outside: bool = False) -> None:
    """A legend for the axes' labelled lines, or, when nothing was drawn (matplotlib warns about a legend without
    entries), ``note`` in the middle of the empty axes. With ``outside`` the legend stands right of the axes, where
    it cannot cover a data point (inside, matplotlib's ``best`` place still covers one when every place does)."""
    if ax.get_legend_handles_labels()[0]:
        if outside:
            ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
        else:
            ax.legend()
    else:
        ax.text(0.5, 0.5, note, ha="center", va="center", transform=ax.transAxes, color="0.4")


def _hardware_title(hw: str, cells: Sequence[Cell]) -> str:
    """A curves panel's title: the hardware, and for analog hardware its backend and device preset (from the
    cell's runs' config), so that the panel says which device it shows."""
    cfg = next((r.config for c in cells if c.hardware == hw for r in c.runs), None)
    if hw == "digital" or cfg is None or cfg.backend == "digital":
        return hw
    return f"{hw}: {cfg.backend} {cfg.analog.preset}"


def _data_text(cells: Sequence[Cell], analog: bool = False) -> str:
    """`` · data set · model`` of the cells' runs (the analog ones' device preset too, with ``analog``), for a
    figure's title; empty without a run."""
    cfg = next((r.config for c in cells for r in c.runs if not analog or r.config.backend != "digital"), None)
    if cfg is None:
        return ""
    model = f"{cfg.model} {list(cfg.hidden)}" if cfg.model == "mlp" else cfg.model
    preset = f" · {cfg.backend} {cfg.analog.preset}" if analog and cfg.backend != "digital" else ""
    return f" · {cfg.dataset} · {model}{preset}"


def _plotted_runs(row: dict[str, Any]) -> int:
    """The completed runs behind a summary row's accuracy bar (:func:`_completed`; 1 for a row without counts)."""
    return _completed(row) if "runs" in row else 1


def _inference_spread(row: dict[str, Any], columns: Sequence[str]) -> tuple[Any, list[int | None]]:
    """The band of a summary row's inference accuracies at ``columns`` (``inference_acc@t``): the std over its
    runs (``inference_acc_std@t``) in points, NaN (no band) where fewer than 2 runs have an accuracy
    (``inference_n@t``) or the row has no std (a ``results.json`` written before it was recorded); and those
    numbers of runs (None where not recorded)."""
    import numpy as np

    sds, ns = [], []
    for k in columns:
        t = k.split("@", 1)[1]
        sd, n = row.get(f"inference_acc_std@{t}"), row.get(f"inference_n@{t}")
        ns.append(int(n) if is_finite_number(n) else None)
        spread = float(sd) if is_finite_number(sd) else None
        sds.append(100 * spread if spread is not None and ns[-1] is not None and ns[-1] >= 2 else np.nan)
    return np.array(sds, dtype=float), ns


def _inference_n_text(row: dict[str, Any], ns: Sequence[int | None]) -> str:
    """How many runs an inference.png line rests on: ``n=3``; ``n=2–3`` when it differs from time to time (a run
    without a finite accuracy at one of them); the row's completed runs where the numbers were not recorded."""
    known = [n for n in ns if n]
    if not known:
        return f"n={_plotted_runs(row)}"
    return f"n={known[0]}" if min(known) == max(known) else f"n={min(known)}–{max(known)}"


#: why an inference accuracy is NaN, as inference.png says it (:data:`~imc_grapes.report.NAN_ACCURACY_NOTE`):
#: weights that were not finite (:func:`~imc_grapes.inference_eval.accuracy_after_drift` evaluates nothing then), or
#: outputs that were not (:func:`~imc_grapes.train.evaluate`), e.g. finite weights whose outputs overflow float32
NAN_INFERENCE_TEXT = NAN_ACCURACY_SHORT

#: the hatching of an analog cell's bar in accuracy.png (an ideal digital cell's bar is plain)
ANALOG_HATCH = "//"


def _hardware_legend(ax: Any, hardware: Sequence[str], cells: Sequence[Cell]) -> None:
    """A legend of the kinds of bar among ``hardware`` (the bars' cells' hardware, in order): a plain grey box
    "ideal digital", a hatched one (:data:`ANALOG_HATCH`) named by :func:`_hardware_title` (``analog: crossbar
    EcRam``), below the axes, where it covers no bar; none without a bar."""
    from matplotlib.patches import Patch

    kinds = list(dict.fromkeys(hardware))
    handles = [Patch(facecolor="0.55", edgecolor="white", hatch="" if hw == "digital" else ANALOG_HATCH,
                     label="ideal digital" if hw == "digital" else _hardware_title(hw, cells)) for hw in kinds]
    if handles:
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=min(2, len(handles)),
                  fontsize=8, frameon=False, handlelength=2.5, handleheight=1.6)


def plot_report(cells: Sequence[Cell], rows: Sequence[dict[str, Any]], out: Path) -> list[str]:
    """Write curves.png, accuracy.png and (if any) inference.png into ``out``; return the file names. Without
    inference results an inference.png already in ``out`` (an earlier job's) is removed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    files = []
    hws = list(dict.fromkeys(c.hardware for c in cells))
    fig, axes = plt.subplots(1, len(hws), figsize=(5.5 * len(hws), 4), squeeze=False, sharey=True)
    drawn = 0
    for ax, hw in zip(axes[0], hws):
        drawn += draw_cell_curves(ax, [c for c in cells if c.hardware == hw], widen=False)
        ax.set(title=fit_title(fig, _hardware_title(hw, cells), columns=len(hws)))
        ax.grid(alpha=0.3)
        _legend_or_note(ax, "no completed run")
    if drawn:
        accuracy_ylim(axes[0, 0])             # the panels share their y axis: widened once, over all of them
    fig.suptitle(fit_title(fig, f"Test accuracy, mean ± std over completed runs{_data_text(cells)}",
                           "figure.titlesize"))
    fig.tight_layout()
    write_figure_atomic(out / "curves.png", fig, dpi=120)
    plt.close(fig)
    files.append("curves.png")

    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(rows), 4))
    labels = [f"{r['hardware']}\n{r['optimizer']}" for r in rows]
    shown = [i for i, r in enumerate(rows) if r["final_test_acc_mean"] is not None]   # a cell without a completed
    means = [100 * rows[i]["final_test_acc_mean"] for i in shown]                     # run gets no bar (not a 0)
    # a std over fewer than 2 completed runs is no spread (its stored 0 would draw a zero-width bar): no error bar
    stds = [100 * (rows[i]["final_test_acc_std"] or 0) if _plotted_runs(rows[i]) >= 2 else None for i in shown]
    colors = [optimizer_color(rows[i]["optimizer"], i) for i in shown]    # as in curves.png and the other reports
    # the colour is the optimizer's; the hatching tells analog bars from ideal digital ones (not only the labels)
    hatches = [ANALOG_HATCH if rows[i]["hardware"] != "digital" else "" for i in shown]
    ax.bar(shown, means, color=colors, hatch=hatches, edgecolor="white")
    error_bars(ax, shown, means, stds, capsize=4)
    ax.set_xticks(range(len(rows)), labels, fontsize=8)
    top = max((m + (s or 0) for m, s in zip(means, stds)), default=0)
    ax.set_ylim(0, max(100, top + 6))      # a bar's height is its accuracy (from 0); room above 100 % for a label
    n_seeds = max((int(r.get("runs", 1)) for r in rows), default=1)
    for i, m, s in zip(shown, means, stds):            # two decimals, as the table
        one = "\n(1 run)" if s is None and n_seeds > 1 else ""
        ax.text(i, m + (s or 0) + 0.3, f"{m:.2f}{one}", ha="center", va="bottom", fontsize=8)
    for i in sorted(set(range(len(rows))) - set(shown)):
        ax.text(i, 1, "no completed\nrun", ha="center", va="bottom", fontsize=7, color="0.4")
    what = "one seed" if n_seeds == 1 else f"mean ± std over {n_seeds} seeds"
    ax.set(ylabel="final test accuracy (%)", title=fit_title(fig, f"Final test accuracy ({what})"))
    ax.grid(axis="y", alpha=0.3)
    _hardware_legend(ax, [rows[i]["hardware"] for i in shown], cells)
    fig.tight_layout()
    write_figure_atomic(out / "accuracy.png", fig, dpi=120)
    plt.close(fig)
    files.append("accuracy.png")

    inf_cols = sorted({k for r in rows for k in r if k.startswith("inference_acc@")},
                      key=lambda k: float(k.split("@")[1]))
    if inf_cols:
        fig, ax = plt.subplots(figsize=(8, 4))
        ts = [float(k.split("@")[1]) for k in inf_cols]
        drawn, caption = 0, False       # caption: a cell has a NaN accuracy (a point it has no value at)
        for r in rows:
            ys = np.array([100 * r[k] if r.get(k) is not None else np.nan for k in inf_cols], dtype=float)
            nan_at = [time_label(t) for t, k in zip(ts, inf_cols) if is_number(r.get(k)) and math.isnan(r[k])]
            caption = caption or bool(nan_at)
            if np.isnan(ys).all():
                if nan_at:      # evaluated, without a finite accuracy at any time: said, not left out in silence
                    ax.plot([], [], color=optimizer_color(r["optimizer"], drawn), linestyle="none", marker="x",
                            label=f"{r['hardware']} {r['optimizer']}: nan at every time")
                continue
            color = optimizer_color(r["optimizer"], drawn)
            sd, ns = _inference_spread(r, inf_cols)
            gap = f"; nan at {', '.join(nan_at)}" if nan_at else ""     # a gap in the line: said why in the caption
            ax.plot(ts, ys, marker="o", color=color, linestyle="--" if r["hardware"] == "digital" else "-",
                    label=f"{r['hardware']} {r['optimizer']} ({_inference_n_text(r, ns)}{gap})")
            ax.fill_between(ts, ys - sd, ys + sd, color=color, alpha=0.2)     # NaN (no spread) leaves a gap
            drawn += 1
        _time_axis(ax, ts)
        ax.set(xlabel="time after programming (s)", ylabel="test accuracy (%)",
               title=fit_title(fig, f"Accuracy after programming noise and drift{_data_text(cells, True)}, "
                                    "mean ± std over completed runs"))
        ax.grid(alpha=0.3)
        if drawn:
            accuracy_ylim(ax)
        _legend_or_note(ax, f"no finite accuracy\n(no completed run, or {NAN_INFERENCE_TEXT})", outside=True)
        if caption:     # a line with a gap, or a cell without any point: why, under the axes (the legend says where)
            fig.text(0.01, 0.01, f"nan: {NAN_INFERENCE_TEXT} at that time, so no accuracy; a mean over runs is nan "
                                 "when one of its runs' is", fontsize=7, color="0.3", ha="left", va="bottom")
        fig.tight_layout(rect=(0.0, 0.04, 1.0, 1.0) if caption else None)
        write_figure_atomic(out / "inference.png", fig, dpi=120)
        plt.close(fig)
        files.append("inference.png")
    else:   # an earlier job in this folder drew one (e.g. with --inference-times): it would not match this report
        (out / "inference.png").unlink(missing_ok=True)
    return files


def report_spec(result: Any) -> dict[str, Any] | None:
    """The spec (:meth:`CompareSpec.to_dict`) that a compare-style report's ``results.json`` contents ``result``
    were run with: a compare report's ``spec``, or the ``group.spec`` of one group's folder of an ``imc-grapes
    experiment`` report (which holds the same ``summary``, ``tuning`` and ``runs`` as a compare report, its spec
    under ``group``); None when ``result`` has neither mapping."""
    if not isinstance(result, dict):
        return None
    if isinstance(result.get("spec"), dict):
        return result["spec"]
    group = result.get("group")
    return group["spec"] if isinstance(group, dict) and isinstance(group.get("spec"), dict) else None


def _stored_run_problem(run: dict[str, Any]) -> str | None:
    """What in a compare report's stored run ``run`` (beside its history and config, checked elsewhere) is not as
    a compare job writes it and ``--redraw`` reads it: ``status`` one of :data:`~imc_grapes.io.RUN_STATUSES`,
    ``inference`` (where present) a mapping of times to accuracies (numbers, NaN allowed, or null), ``costs`` a
    mapping, ``run_dir`` a string or null — the first such field, as a message naming it; None when all are."""
    problem = run_status_problem(run.get("status", "completed"))
    if problem:
        return problem
    inference = run.get("inference", {})
    if not isinstance(inference, dict):
        return f"inference must be a mapping of times (s) to accuracies, got {inference!r}"
    problem = next((p for t, a in inference.items() if (p := number_problem(a, f"inference.{t}", optional=True))),
                   None)
    if problem:
        return problem
    if not isinstance(run.get("costs", {}), dict):
        return f"costs must be a mapping, got {run['costs']!r}"
    if not (run.get("run_dir") is None or isinstance(run["run_dir"], str)):
        return f"run_dir must be a path (a string) or null, got {run['run_dir']!r}"
    return None


def _tuning_problem(tuning: list[Any]) -> str | None:
    """What in a compare report's ``tuning`` records is not as a compare job writes them: each a mapping (with
    hardware, optimizer and chosen_lr) whose ``chosen_lr`` is a number or null — the first such record and field,
    as a message; None when all are."""
    for i, t in enumerate(tuning):
        if not isinstance(t, dict):
            return f"tuning[{i}] must be a mapping with hardware, optimizer and chosen_lr, got {t!r}"
        problem = number_problem(t.get("chosen_lr"), "chosen_lr", optional=True)
        if problem:
            return f"tuning[{i}]: {problem}"
    return None


def cells_from_results(result: dict[str, Any], source: str = "results.json") -> list[Cell]:
    """The cells of a compare report's ``results.json`` contents ``result``: its ``runs`` grouped by (hardware,
    optimizer) in their order, each run rebuilt from what the file stored (config, history with its NaN/Inf
    restored, status, message, wall time, ``costs`` and ``inference``, versions), each cell's lr the chosen one of
    its ``tuning`` record (else its runs' lr). No run is trained or read from ``runs/``. ``source``: the file, as
    the errors name it.

    Raises:
        ConfigError: ``result`` has no ``runs`` list, its ``tuning`` is no list of records as a job writes them
            (:func:`_tuning_problem`), or a run is not a mapping with ``hardware`` and ``optimizer`` (names) and a
            ``config`` that :meth:`~imc_grapes.config.TrainConfig.from_dict` accepts, or its ``history``
            (:func:`history_problem`) or another field it reads (:func:`_stored_run_problem`) is not as a compare
            job writes it (the error names the run and the field).
    """
    runs = result.get("runs") if isinstance(result, dict) else None
    if not isinstance(runs, list):
        raise ConfigError(f"{source}: 'runs' must be a list of runs (a compare report's results.json)")
    tuning = result.get("tuning")
    tuning = [] if tuning is None else tuning       # a report without tuning records; not {} or "" read as none
    if not isinstance(tuning, list):
        raise ConfigError(f"{source}: 'tuning' must be a list of the cells' tuning records, got {tuning!r}")
    if (problem := _tuning_problem(tuning)) is not None:     # not a record silently left out (the runs' lr drawn)
        raise ConfigError(f"{source}: {problem}")
    chosen = {(t.get("hardware"), t.get("optimizer")): t.get("chosen_lr") for t in tuning}
    cells: dict[tuple[str, str], Cell] = {}
    for i, run in enumerate(runs):
        if not (isinstance(run, dict) and isinstance(run.get("hardware"), str)
                and isinstance(run.get("optimizer"), str) and isinstance(run.get("config"), dict)):
            raise ConfigError(f"{source}: runs[{i}] must be a mapping with hardware, optimizer and config (the "
                              "first two names, the last a mapping)")
        try:
            cfg = TrainConfig.from_dict(run["config"])
        except ConfigError as exc:     # not TrainConfig's message alone, naming neither the file nor the run
            raise ConfigError(f"{source}: runs[{i}] ({run['hardware']}/{run['optimizer']}): config: {exc}") from None
        problem = history_problem(run.get("history", [])) or _stored_run_problem(run)
        if problem:     # not a TypeError of a figure, nor a run left out of every mean
            raise ConfigError(f"{source}: runs[{i}] ({run['hardware']}/{run['optimizer']}, seed {cfg.seed}): "
                              f"{problem}")
        rr = RunResult(cfg, _saved_history(run), run.get("status", "completed"), run.get("message", ""),
                       Path(run["run_dir"]) if run.get("run_dir") else None, run.get("wall_time_s", 0.0),
                       run.get("eval_split", "test"),
                       {k: restore_nonfinite(run[k]) for k in ("costs", "inference") if k in run},
                       run.get("train_samples"), run.get("eval_samples"), run.get("data_root_resolved"),
                       saved_versions(run))
        key = (run["hardware"], run["optimizer"])
        lr = chosen.get(key)
        cell_lr = float(lr) if is_finite_number(lr) else cfg.lr
        cells.setdefault(key, Cell(key[0], key[1], cell_lr, [])).runs.append(rr)
    return list(cells.values())


def _refuse_other_report(out: Path) -> None:
    """Refuse (``ConfigError``) to redraw, as a compare report, a folder that holds another command's output
    (:func:`~imc_grapes.io.folder_command`), naming the command that redraws it: an experiment's report folder
    (``experiment --redraw``) or its ``groups/`` folder (a group in it, or the report above it); one group's folder
    is a compare-style report and is let through. Folders of no command go on to the usual checks."""
    part = experiment_part(out)
    if part == "the groups":
        report = experiment_report_of(out)
        above = (f", or the whole report with `imc-grapes experiment --redraw --out {report}`"
                 if report is not None else "")
        raise ConfigError(f"{out} is the groups/ folder of an `imc-grapes experiment` report, no compare report: "
                          f"redraw one group with `imc-grapes compare --redraw --out {out / '<group>'}`{above}")
    owner = folder_command(out) if part is None else None
    if owner == "experiment":
        raise ConfigError(f"{out} holds an `imc-grapes experiment` report, no compare report: redraw it with "
                          f"`imc-grapes experiment --redraw --out {out}`, or one of its groups with `imc-grapes "
                          f"compare --redraw --out {out / 'groups' / '<group>'}`")
    if owner not in (None, "compare"):
        raise ConfigError(f"{out} holds the output of `imc-grapes {owner}`, no compare report: give the folder of "
                          "an `imc-grapes compare` report (the one that holds its results.json)")


def redraw_report(out_dir: str | Path) -> list[str]:
    """Draw the figures of the compare report in ``out_dir`` again (curves.png, accuracy.png, inference.png: see
    :func:`plot_report`) from its ``results.json`` alone, with the current plotting code and without training:
    the cells from :func:`cells_from_results`, the rows recomputed from them (:func:`summarise_cells`, with the
    spec's ``target_acc`` and ``tail_evals``), so that rows written before a field existed (e.g. the spread of the
    inference accuracies) are drawn with it. ``results.json``, ``results.csv`` and ``report.md`` are left as they
    are. Returns the file names written. One group's folder of an ``imc-grapes experiment`` report holds a compare
    report of that group (its spec under ``group``, :func:`report_spec`): its figures are redrawn as the experiment
    drew them.

    Raises:
        NotADirectoryError: ``out_dir``, or a folder above it, is a file.
        FileNotFoundError: ``out_dir`` has no ``results.json``.
        ConfigError: it is not a compare report's (:func:`cells_from_results`), or it has no run, or a later job
            began in ``out_dir`` and did not finish, so its runs/ may be newer than the report
            (:func:`~imc_grapes.io.superseded_report_note`).
    """
    out = Path(out_dir)
    _refuse_other_report(out)
    result = read_report_json(out, "compare")
    note = superseded_report_note(out, result, "compare")
    if note:        # not figures of the earlier job's results drawn as if they were the runs' beside them
        raise ConfigError(f"{out / 'results.json'}: {note}")
    cells = cells_from_results(result, str(out / "results.json"))
    if not cells:       # not matplotlib's "Number of columns must be a positive integer, not 0"
        raise ConfigError(f"{out / 'results.json'}: its 'runs' list is empty: the report has no run to draw")
    target, tail = _redraw_settings(result, str(out / "results.json"))
    rows = summarise_cells(cells, target, tail)
    return plot_report(cells, rows, out)


def _redraw_settings(result: dict[str, Any], source: str = "results.json") -> tuple[float, int]:
    """The ``target_acc`` and ``tail_evals`` of the spec of a compare-style report's ``results.json`` contents
    ``result`` (:func:`report_spec`: an experiment group's under ``group``, its tail_evals as the group's figures
    were drawn), 0.9 and 1 where it has none (a report written before they existed). ``source``: the file.

    Raises:
        ConfigError: ``spec`` is there but no mapping, or ``target_acc`` is no number in (0, 1] or ``tail_evals``
            no integer ≥ 1 (:func:`~imc_grapes.train.tail_evals_error`): not figures silently drawn with the
            defaults, nor a float()/int() error naming no file or field.
    """
    spec = report_spec(result)
    if spec is None and "spec" in result:
        raise ConfigError(f"{source}: 'spec' must be a mapping (the settings the compare job ran with), got "
                          f"{result['spec']!r}")
    where = "spec" if isinstance(result.get("spec"), dict) else "group.spec"
    spec = spec or {}
    target, tail = spec.get("target_acc", 0.9), spec.get("tail_evals", 1)
    if not (is_number(target) and 0 < target <= 1):      # CompareSpec's check
        raise ConfigError(f"{source}: {where}.target_acc must be a number in (0, 1], got {target!r}")
    if (problem := tail_evals_error(tail, f"{where}.tail_evals")) is not None:
        raise ConfigError(f"{source}: {problem}")
    return float(target), tail


def csv_config_columns(spec: CompareSpec, hardware: str, cfg: TrainConfig) -> dict[str, Any]:
    """The settings a ``results.csv`` row was run with, so that a row read on its own (or pooled with the rows of
    other jobs) names its experiment: data set, subsets, model, training rule and base optimizer, epochs, batch
    size, the analog device preset and backend (empty on digital hardware, which has none), and the job's lr grid,
    tuning seeds and score and number of final seeds. Lists are written as JSON (``[256, 256]``)."""
    import json

    analog = hardware != "digital"
    return {"dataset": cfg.dataset, "train_subset": cfg.train_subset, "test_subset": cfg.test_subset,
            "model": cfg.model, "hidden": json.dumps(list(cfg.hidden)), "activation": cfg.activation,
            "dropout": cfg.dropout, "rule": cfg.rule, "base_optimizer": cfg.base_optimizer,
            "momentum": cfg.momentum, "weight_decay": cfg.weight_decay, "epochs": cfg.epochs,
            "batch_size": cfg.batch_size, "drop_last": cfg.drop_last,
            "analog_backend": spec.analog_backend if analog else None,
            "device_preset": cfg.analog.preset if analog else None,
            "lr_grid": json.dumps(list(spec.lr_grid)), "tune_seeds": json.dumps(list(spec.tune_seeds)),
            "tune_score": spec.tune_score, "tail_evals": spec.tail_evals, "n_seeds": len(spec.seeds)}


def run_compare(spec: CompareSpec, out_dir: str | Path, *, progress: bool | None = True, resume: bool = True,
                command: str | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the whole comparison and write the report folder; return the contents of results.json. ``progress``:
    progress bars per run (None: only when stderr is a terminal, :func:`~imc_grapes.train.progress_bar_disabled`)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    datasets = DatasetCache()   # each run's own (a synthetic set is generated from the run's seed, as train does)
    datasets.for_config(spec.base)  # a missing data set: an error before any run, with the folder untouched
    # before the first run: an earlier job's results.json stays, but reads as older than runs/ until this job ends
    job = start_job(out, command)

    def run(cfg: TrainConfig, folder: Path) -> RunResult:
        return run_one(cfg, folder, datasets.for_config(cfg), progress, resume, log)

    cells = [tune_and_run(spec, hw, opt, run, out / "runs" / "tune" / hw, out / "runs" / hw, f"{hw}/{opt}", log)
             for hw in spec.hardware for opt in spec.optimizers]
    rows = summarise_cells(cells, spec.target_acc, spec.tail_evals)
    result = {
        "command": command,
        "job": job,         # the id of runs/job.json: this report is of the last job begun in the folder
        "spec": spec.to_dict(),
        # spec.base.data_root is kept as given (a relative one is ambiguous once the report moves)
        "data_root_resolved": recorded_data_root(spec.base.dataset, spec.base.data_root),
        "summary": rows,
        "tuning": [tuning_record(c, spec.tune_score) for c in cells],
        "runs": [{"hardware": c.hardware, "optimizer": c.optimizer, "run_dir": str(r.run_dir), **r.to_dict()}
                 for c in cells for r in c.runs],
    }
    write_json_atomic(out / "results.json", result)
    csv_rows = []
    for c in cells:
        for r in c.runs:
            last = r.history[-1] if r.history else {}
            csv_rows.append({"hardware": c.hardware, "optimizer": c.optimizer, "backend": r.config.backend,
                             "lr": c.lr, "seed": r.config.seed, "status": r.status,
                             "final_test_acc": last.get("test_acc"), "final_train_loss": last.get("train_loss"),
                             "epochs_to_target": epochs_to_target(r, spec.target_acc), "saturation": _saturation(r),
                             "cost_per_step": _per_step_cost(r), "wall_time_s": r.wall_time_s,
                             **{f"inference_acc@{t}": a for t, a in (r.extra.get("inference") or {}).items()},
                             "run_dir": str(r.run_dir)})
    columns = list(dict.fromkeys(k for row in csv_rows for k in row))     # the run's own columns first
    config_rows = [csv_config_columns(spec, c.hardware, r.config) for c in cells for r in c.runs]
    columns += [k for k in dict.fromkeys(k for row in config_rows for k in row) if k not in columns]
    write_csv_atomic(out / "results.csv", [{**row, **cfg} for row, cfg in zip(csv_rows, config_rows)], columns)
    files = plot_report(cells, rows, out)
    table = format_table(rows, spec.target_acc)
    write_bytes_atomic(out / "report.md", render_markdown(spec, rows, cells, files, command).encode())
    log("\n" + table)
    log(f"\nreport: {out / 'report.md'} (results.json, results.csv, {', '.join(files)})")
    return result


def _completed(row: dict[str, Any]) -> int:
    """The completed runs behind a summary row's accuracy (rows saved before that count existed: all its runs)."""
    return int(row.get("completed", row["runs"]))


def _completed_accuracies(cell: Cell, tail: int) -> dict[int, float | None]:
    """seed -> the accuracy of the cell's completed run of that seed (:func:`~imc_grapes.train.tail_accuracy`)."""
    return {r.config.seed: tail_accuracy(r.history, tail) for r in cell.runs if r.status == "completed" and r.history}


def _other_seeds_note(a: Cell | None, b: Cell | None, names: tuple[str, str], tail: int) -> str:
    """When cells ``a`` and ``b`` completed different seeds (one diverged or failed where the other did not), their
    means are over different seeds: a note with the paired difference ``a − b`` over the seeds both completed
    (:func:`paired_by_seed`, in points); "" when they completed the same seeds (or a cell is not given)."""
    if a is None or b is None:
        return ""
    acc_a, acc_b = _completed_accuracies(a, tail), _completed_accuracies(b, tail)
    if set(acc_a) == set(acc_b):
        return ""
    text = (f" [the means are over different seeds: {names[0]} completed {len(acc_a)}, {names[1]} {len(acc_b)} of "
            f"{len(a.runs)}")
    p = paired_by_seed(acc_a, acc_b)
    if p is None:
        return text + "; no seed completed in both]"
    return (text + f"; paired over the {p['n']} seed(s) both completed: "
            f"{mean_pm_std(p['mean'], p['std'], p['n'], sign=True)} points, {names[0]} higher on {p['positive']} of "
            f"{p['n']}]")


def findings(rows: Sequence[dict[str, Any]], cells: Sequence[Cell] = ()) -> list[str]:
    """Plain-language statements computed from the summary rows (no judgement beyond the numbers): GRAPES vs
    SGD and vs the layer-mean control per hardware, relative to the seed-to-seed spread, and saturation.

    A difference ``Δ`` of two cells' mean accuracies counts as clear only when ``|Δ|`` exceeds twice their combined
    seed spread ``√(std₁² + std₂²)`` (sample standard deviations over the seeds); the statements print that
    threshold, ``2·√(std₁² + std₂²)``, in points. With the rows' ``cells``, a statement about two cells that
    completed different seeds (a run of one diverged or failed) says so and gives the paired difference over the
    seeds both completed (:func:`paired_by_seed`)."""
    out = []
    by = {(r["hardware"], r["optimizer"]): r for r in rows}
    cell_by = {(c.hardware, c.optimizer): c for c in cells}
    for hw in dict.fromkeys(r["hardware"] for r in rows):
        sgd, gr, lm = by.get((hw, "sgd")), by.get((hw, "grapes")), by.get((hw, "layer-mean"))
        if not sgd or not gr or sgd["final_test_acc_mean"] is None or gr["final_test_acc_mean"] is None:
            continue
        broken = [name for name, r in (("GRAPES", gr), ("SGD", sgd)) if math.isnan(r["final_test_acc_mean"])]
        if broken:   # a completed run without a finite accuracy (summarise_cells): no difference to judge
            out.append(f"**{hw}**: GRAPES vs SGD not compared: a completed run of {' and of '.join(broken)} has no "
                       "finite accuracy (its mean is NaN).")
            continue
        diff = 100 * (gr["final_test_acc_mean"] - sgd["final_test_acc_mean"])
        n = min(_completed(sgd), _completed(gr))
        spread = 100 * math.hypot(sgd["final_test_acc_std"] or 0.0, gr["final_test_acc_std"] or 0.0)
        if n < 2:
            verdict = "a single seed, so no seed-to-seed spread is available to judge it"
        elif abs(diff) > 2 * spread:
            verdict = f"more than twice the combined seed spread: |Δ| > {2 * spread:.2f} points"
        else:
            verdict = f"within twice the combined seed spread, |Δ| ≤ {2 * spread:.2f} points: not a clear difference"
        tail = int(gr.get("tail_evals", 1))
        text = (f"**{hw}**: GRAPES {'+' if diff >= 0 else ''}{diff:.2f} points vs SGD ({verdict})"
                + _other_seeds_note(cell_by.get((hw, "grapes")), cell_by.get((hw, "sgd")), ("GRAPES", "SGD"), tail))
        if lm and lm["final_test_acc_mean"] is not None and math.isnan(lm["final_test_acc_mean"]):
            text += ("; vs the layer-mean control: not compared (a completed run of it has no finite accuracy, its "
                     "mean is NaN)")
        elif lm and lm["final_test_acc_mean"] is not None:
            d_lm = 100 * (gr["final_test_acc_mean"] - lm["final_test_acc_mean"])
            spread_lm = 100 * math.hypot(lm["final_test_acc_std"] or 0.0, gr["final_test_acc_std"] or 0.0)
            text += f"; vs the layer-mean control {'+' if d_lm >= 0 else ''}{d_lm:.2f} points"
            if min(n, _completed(lm)) < 2:
                text += " (single seed: not judged)"
            elif abs(d_lm) <= 2 * spread_lm:
                text += (f" (within twice the combined seed spread, |Δ| ≤ {2 * spread_lm:.2f} points: the per-neuron "
                         "factors add nothing clear beyond a uniform per-layer boost of the same mean)")
            elif d_lm > 0:
                text += " — the per-neuron modulation adds to what a uniform per-layer boost of the same mean gives"
            else:
                text += (" — a uniform per-layer boost of the same mean does better, so the gain over SGD is not "
                         "explained by the per-neuron factors")
            text += _other_seeds_note(cell_by.get((hw, "grapes")), cell_by.get((hw, "layer-mean")),
                                      ("GRAPES", "the layer-mean control"), tail)
        if gr.get("saturation_mean") is not None and sgd.get("saturation_mean") is not None:
            text += (f". Realised/intended weight change: SGD {sgd['saturation_mean']:.2f}, GRAPES "
                     f"{gr['saturation_mean']:.2f}")
            if gr["saturation_mean"] < 0.95:
                text += " (the pulse budget clips part of the modulated updates)"
        out.append(text + ".")
    return out


def _base_optimizer_text(cfg: TrainConfig, analog: bool) -> str:
    """The base optimizer of a report's header with its momentum (where it takes one) and weight decay:
    ``sgd (momentum 0.9, weight decay 0) for the digital parameters``; with ``analog`` hardware in the report, that
    the analog weights take the backend's own pulsed steps."""
    momentum = f"momentum {cfg.momentum:g}, " if cfg.base_optimizer in MOMENTUM_BASE_OPTIMIZERS else ""
    pulsed = " (the analog weights take the backend's pulsed SGD steps)" if analog else ""
    return f"{cfg.base_optimizer} ({momentum}weight decay {cfg.weight_decay:g}) for the digital parameters{pulsed}"


def render_markdown(spec: CompareSpec, rows: Sequence[dict[str, Any]], cells: Sequence[Cell],
                    files: Sequence[str], command: str | None) -> str:
    b = spec.base
    lines = ["# imc-grapes compare report", ""]
    if command:
        lines += ["Command:", "", "```", command, "```", ""]
    arch = f"{b.model} {list(b.hidden)}" if b.model == "mlp" else b.model
    dropout = f", dropout {b.dropout:g}" if b.dropout > 0 else ""
    lines += [
        f"* data: {b.dataset} (train subset: {b.train_subset or 'all'}, test subset: {b.test_subset or 'all'}); "
        f"model: {arch}, {b.activation}{dropout}, rule {b.rule}; {b.batching()}, {b.epochs} epoch(s)",
        f"* seeds: {list(spec.seeds)} (every cell uses the same seeds: same initial weights and data order)",
        f"* base optimizer: {_base_optimizer_text(b, 'analog' in spec.hardware)}",
    ]
    divided = [o for o in spec.optimizers if o in ("grapes-local", "layer-mean")]
    if b.base_optimizer in ADAPTIVE_BASE_OPTIMIZERS and divided and "digital" in spec.hardware:
        sgd = ("the `sgd` row, no modulation under the same base optimizer" if "sgd" in spec.optimizers else
               "what `sgd` (no modulation under the same base optimizer; not run in this report) would give")
        lines.append(f"* caveat: {b.base_optimizer} divides each weight's step by a running scale of its own "
                     "gradient, which divides out slowly changing factors (grapes-local: one per row; layer-mean: "
                     f"one per layer, also on the layers below): the digital rows of {' and '.join(divided)} barely "
                     f"differ from {sgd} (README \"From Python\"); propagated GRAPES' per-neuron factors mix as they "
                     "flow down and are not divided out")
    if "analog" in spec.hardware:
        changed = format_device_overrides(b.analog.device_overrides)
        lines.append(f"* analog hardware: backend `{spec.analog_backend}`, device preset `{b.analog.preset}`"
                     f"{f' with {changed}' if changed else ''}, "
                     f"DAC {b.analog.dac_bits} bits, ADC {b.analog.adc_bits} bits, output noise {b.analog.out_noise}, "
                     f"GRAPES importance `{b.analog.importance}` (refreshed every {b.analog.importance_every} "
                     "batch(es))")
    if len(spec.lr_grid) > 1:
        how = ("its best validation accuracy at any evaluation point" if spec.tune_score == "best" else
               "its final validation accuracy" if spec.tail_evals == 1 else
               f"its mean validation accuracy over its last {spec.tail_evals} evaluations")
        lines.append(f"* learning rate tuned per cell over {list(spec.lr_grid)} on a validation split (the last "
                     f"{spec.val_holdout} training samples; tuning seed(s) {list(spec.tune_seeds)}): each tuning run "
                     f"scored by {how}, the lr with the highest mean score chosen (of equal scores, the one listed "
                     "first); the test set was not used to choose")
    else:
        lines.append(f"* one learning rate for every cell: {spec.lr_grid[0]:g} (no tuning: a GRAPES gain may be an "
                     "lr effect; pass an lr grid for a fair comparison)")
    if spec.tail_evals > 1:
        lines.append(f"* a run's test accuracy: the mean of its last {spec.tail_evals} evaluations (they move by "
                     "several points from one to the next on a noisy device)")
    lines += ["", "## Results", "", format_table(rows, spec.target_acc, markdown=True), "",
              "*mean ± std*: over the cell's completed runs (one per seed), std the sample standard deviation "
              "(n − 1), shown as — for a single completed run; a cell with diverged or failed runs says how many. "
              "*saturation*: realised / intended weight change of the pulsed updates, the projection "
              "⟨ΔW_real, ΔW_int⟩ / ‖ΔW_int‖² (1 = the intended change reached the devices on average; below 1 the "
              "bounds or the pulse grid cut it; above 1 the devices moved further along it, e.g. by pulse noise); "
              "*energy ×SGD*: estimated energy per training step relative to SGD on the same hardware (GRAPES adds "
              "its importance reads — with `exact` importance, a digital Σ|w| over every weight — its own "
              "operations and the pulses of its larger updates: `results.json` `costs` itemizes them); "
              "*GRAPES ops %*: GRAPES's own "
              "digital operations (max, modulation, error scaling; with `array` importance the tiles' partial "
              "sums) as a share of all operations of a step; the `exact` importance's Σ|w| additions are in the "
              "total but not in the share (`costs` `importance_digital_adds`). Energies use the documented "
              "per-operation table (`imc_grapes/backends/costs.py`); they are order-of-magnitude estimates. "
              + column_notes(rows, spec.target_acc), ""]
    found = findings(rows, cells)
    if found:
        lines += (["## What the numbers say", ""] + [f"* {f}" for f in found]
                  + ["", "(Combined seed spread: √(std₁² + std₂²) of the two cells' accuracies over the seeds; a "
                     "difference counts as clear only beyond twice it.)", ""])
    tuned = [c for c in cells if c.tuning]
    if tuned:
        score = (f"validation accuracy % over the last {spec.tail_evals} evaluations"
                 if spec.tune_score == "final" and spec.tail_evals > 1 else f"{spec.tune_score} validation accuracy %")
        lines += [f"## Learning-rate tuning ({score}"
                  + (f", mean over tuning seeds {list(spec.tune_seeds)}" if len(spec.tune_seeds) > 1 else "") + ")", "",
                  "| hardware | optimizer | " + " | ".join(f"lr {lr:g}" for lr in spec.lr_grid) + " | chosen |",
                  "|---|---|" + "---|" * (len(spec.lr_grid) + 1)]
        for c in tuned:
            vals = [_fmt(c.tuning.get(lr), True) for lr in spec.lr_grid]
            lines.append(f"| {c.hardware} | {c.optimizer} | " + " | ".join(vals) + f" | {c.lr:g} |")
        lines.append("")
        note = nan_accuracy_note(a for c in tuned for a in c.tuning.values())
        if note:
            lines += [note, ""]
    for f in files:
        lines += [f"![{f}]({f})", ""]
    return "\n".join(lines)
