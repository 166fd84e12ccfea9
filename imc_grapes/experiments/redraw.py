"""``imc-grapes experiment --redraw``: an experiment report's figures drawn again from its ``results.json`` alone
(no training, and no ``groups/`` folder needed: a report copied elsewhere can be redrawn), with the current
plotting code. ``results.json``, ``results.csv``, ``summary.csv`` and ``report.md`` are left as they are.

The summary rows and paired comparisons give accuracy.png and gain.png; the groups' final runs that
:func:`~.report.figure_runs` keeps give curves.png and, for forgetting, matrix.png and forgetting.png. A report
written before the runs were kept there has no such runs: those figures are not drawn, and
:func:`redraw_experiment_report` says which and why.
"""
from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..compare import number_problem
from ..config import ConfigError, is_int, is_number
from ..io import (experiment_part, experiment_report_of, read_report_json, restore_nonfinite, run_status_problem,
                  superseded_report_note)
from ..train import tail_evals_error
from .definitions import EXPERIMENTS
from .groups import TRAINERS
from .report import FORGETTING_KEYS, GROUPS, FigureGroup, draw_figures

__all__ = ["Redrawn", "StoredCell", "StoredRun", "figure_groups", "part_of_report_problem",
           "redraw_experiment_report"]


@dataclass(frozen=True)
class StoredRun:
    """A final run as an experiment's ``results.json`` keeps it: ``status``, ``history`` (one row per evaluation,
    ``epoch`` and ``test_acc`` as a fraction; empty unless completed) and ``extra`` (``{"forgetting": {matrix,
    avg_acc, forgetting, bwt}}`` for a forgetting run), what the figures read of a
    :class:`~imc_grapes.train.RunResult`."""

    status: str
    history: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StoredCell:
    """One optimizer's final runs in a group, as the figures read a :class:`~imc_grapes.compare.Cell`."""

    optimizer: str
    lr: float
    runs: list[StoredRun]


@dataclass(frozen=True)
class Redrawn:
    """What :func:`redraw_experiment_report` did: the figures it wrote (file names, in the report's order) and,
    per figure it could not draw, why (empty when it drew them all)."""

    files: list[str]
    missing: dict[str, str]


def _forgetting_problem(fg: dict[str, Any]) -> str | None:
    """What in a completed forgetting run's metrics ``fg`` (``matrix``, ``avg_acc``, ``forgetting``, ``bwt``, NaN
    and ±Inf restored) is not as :func:`~.report.figure_runs` stores them and matrix.png and forgetting.png read
    them — an accuracy matrix of T rows of T numbers (NaN allowed: a task not trained yet), the others numbers or
    null (one task: no forgetting) — the first such field; None when they are as written."""
    matrix = fg.get("matrix")
    if not (isinstance(matrix, list) and matrix and all(isinstance(row, list) and len(row) == len(matrix)
                                                         for row in matrix)):
        return ("matrix must be a square accuracy matrix (one list per task, each with one accuracy per task "
                "trained)")
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            problem = number_problem(value, f"matrix[{i}][{j}]")
            if problem:
                return problem
    return next((p for k in FORGETTING_KEYS[1:] if k in fg and (p := number_problem(fg[k], k, optional=True))),
                None)


def _stored_run(run: Any, where: str, source: str = "results.json") -> StoredRun:
    """The run ``run`` stored at ``where`` (``groups[i].runs[j]``) of the file ``source``.

    Raises:
        ConfigError: it is not a mapping with optimizer and status (one of
            :data:`~imc_grapes.io.RUN_STATUSES`: another would leave the run silently out of the curves), or,
            completed, has no ``epoch`` and
            ``test_acc`` lists of one length whose entries are numbers (NaN allowed; the error names the run and
            the entry, not a TypeError of the curves), or its forgetting metrics are not as stored
            (:func:`_forgetting_problem`: not a square matrix of numbers, not a float() error of the matrix)."""
    if not (isinstance(run, dict) and isinstance(run.get("optimizer"), str) and isinstance(run.get("status"), str)):
        raise ConfigError(f"{source}: {where} must be a mapping with optimizer and status")
    if (problem := run_status_problem(run["status"])) is not None:
        raise ConfigError(f"{source}: {where}: {problem}")
    if run["status"] != "completed":
        return StoredRun(run["status"])
    epochs, accs = restore_nonfinite(run.get("epoch")), restore_nonfinite(run.get("test_acc"))
    if not (isinstance(epochs, list) and isinstance(accs, list) and len(epochs) == len(accs)):
        raise ConfigError(f"{source}: {where} is completed but has no 'epoch' and 'test_acc' lists of one "
                          "length")
    for key, values in (("epoch", epochs), ("test_acc", accs)):
        problem = next((p for k, v in enumerate(values) if (p := number_problem(v, f"{key}[{k}]"))), None)
        if problem:
            raise ConfigError(f"{source}: {where} ({run['optimizer']}, seed {run.get('seed')}): {problem}")
    history = [{"epoch": e, "test_acc": a} for e, a in zip(epochs, accs)]
    fg = {k: restore_nonfinite(run[k]) for k in FORGETTING_KEYS if k in run}
    problem = _forgetting_problem(fg) if fg else None
    if problem:
        raise ConfigError(f"{source}: {where} ({run['optimizer']}, seed {run.get('seed')}): {problem}")
    return StoredRun("completed", history, {"forgetting": fg} if fg else {})


def figure_groups(result: dict[str, Any], source: str = "results.json") -> list[FigureGroup] | None:
    """The groups of an experiment report's ``results.json`` contents ``result`` with their cells rebuilt from
    the stored runs (:func:`~.report.figure_runs`): per group its summary's optimizers in order, each with its lr
    and its runs. None when a group has no ``runs`` (a report written before they were kept). ``source``: the
    file, as the errors name it.

    Raises:
        ConfigError: ``result`` has no ``groups`` list of mappings with a ``key`` and a ``summary`` list, a
            group's ``trainer`` (where present) is not one of :data:`~.groups.TRAINERS`, a group's summary row has
            no optimizer or number lr, or a stored run is malformed (:func:`_stored_run`), names an optimizer its
            group's summary has not, or has an accuracy matrix of another size than the other runs of its
            optimizer.
    """
    groups = result.get("groups") if isinstance(result, dict) else None
    if not (isinstance(groups, list) and all(isinstance(g, dict) and isinstance(g.get("key"), str)
                                             and isinstance(g.get("summary"), list) for g in groups)):
        raise ConfigError(f"{source}: 'groups' must be a list of groups with a key and a summary (an "
                          "`imc-grapes experiment` report's results.json)")
    bad = next((i for i, g in enumerate(groups) if g.get("trainer", "standard") not in TRAINERS), None)
    if bad is not None:     # not a forgetting group's matrix figures silently left out (or named missing)
        raise ConfigError(f"{source}: groups[{bad}].trainer must be one of {', '.join(TRAINERS)}, got "
                          f"{groups[bad]['trainer']!r}")
    if any("runs" not in g for g in groups):
        return None
    out = []
    for i, g in enumerate(groups):
        bad = next((k for k, r in enumerate(g["summary"]) if not (isinstance(r, dict) and isinstance(
            r.get("optimizer"), str) and is_number(r.get("lr")))), None)
        if bad is not None:     # not a KeyError or float()'s ValueError naming no file
            raise ConfigError(f"{source}: groups[{i}].summary[{bad}] must be a mapping with an optimizer and a "
                              f"number lr, got {g['summary'][bad]!r}")
        cells = {r["optimizer"]: StoredCell(r["optimizer"], float(r["lr"]), []) for r in g["summary"]}
        if not isinstance(g["runs"], list):
            raise ConfigError(f"{source}: groups[{i}].runs must be a list of runs")
        for j, run in enumerate(g["runs"]):
            stored = _stored_run(run, f"groups[{i}].runs[{j}]", source)
            if run["optimizer"] not in cells:
                raise ConfigError(f"{source}: groups[{i}].runs[{j}] names optimizer {run['optimizer']!r}, "
                                  f"which groups[{i}].summary has not (valid: {', '.join(cells)})")
            cells[run["optimizer"]].runs.append(stored)
        for c in cells.values():        # matrix.png averages a cell's matrices entry by entry
            sizes = sorted({len(r.extra["forgetting"]["matrix"]) for r in c.runs if r.extra.get("forgetting")})
            if len(sizes) > 1:
                raise ConfigError(f"{source}: groups[{i}].runs: the accuracy matrices of {c.optimizer}'s runs must "
                                  f"have one size (one row per task), got sizes {sizes}")
        out.append(FigureGroup(g["key"], str(g.get("trainer", "standard")), list(cells.values())))
    return out


#: the numbers of an experiment's summary row that accuracy.png reads (a number, NaN allowed, or null: no
#: completed run), and its counts (integers ≥ 0, where the row has them)
_SUMMARY_NUMBERS = ("final_test_acc_mean", "final_test_acc_std")
_SUMMARY_COUNTS = ("runs", "completed")


def _summary_rows(rows: list[Any], source: str = "results.json", keys: Sequence[str] | None = None
                  ) -> list[dict[str, Any]]:
    """The rows of an experiment report's ``summary`` (in the file ``source``; ``keys``: its groups' keys, None:
    not checked) as accuracy.png reads them, their
    :data:`_SUMMARY_NUMBERS` with NaN and ±Inf restored (:func:`~imc_grapes.io.restore_nonfinite`).

    Raises:
        ConfigError: there is no row (nothing to draw, not a ZeroDivisionError of the bars), or a row is not a
            mapping with a ``group`` and an ``optimizer`` name, its :data:`_SUMMARY_NUMBERS` numbers or null and its
            :data:`_SUMMARY_COUNTS` (where present) integers ≥ 0 (the error names the file, the row and the field),
            or it names a group not in ``keys`` (it would be silently left out of the figure).
    """
    if not rows:
        raise ConfigError(f"{source}: 'summary' is empty: the report has no row to draw (an `imc-grapes experiment` "
                          "report's results.json has one per group and optimizer)")
    out = []
    for i, row in enumerate(rows):
        if not (isinstance(row, dict) and isinstance(row.get("group"), str) and isinstance(row.get("optimizer"), str)):
            raise ConfigError(f"{source}: summary[{i}] must be a mapping with a group and an optimizer, got {row!r}")
        if keys is not None and row["group"] not in keys:
            raise ConfigError(f"{source}: summary[{i}] names group {row['group']!r}, which 'groups' has not (valid: "
                              f"{', '.join(keys)})")
        where = f"summary[{i}] ({row['group']}, {row['optimizer']})"
        for key in _SUMMARY_NUMBERS:
            problem = (f"{key} is missing" if key not in row
                       else number_problem(row[key], key, optional=True))
            if problem:
                raise ConfigError(f"{source}: {where}: {problem}")
        bad = next((k for k in _SUMMARY_COUNTS if k in row and not (is_int(row[k]) and row[k] >= 0)), None)
        if bad is not None:
            raise ConfigError(f"{source}: {where}: {bad} must be an integer ≥ 0, got {row[bad]!r}")
        out.append({**row, **{k: restore_nonfinite(row[k]) for k in _SUMMARY_NUMBERS}})
    return out


def _comparison_rows(comps: list[Any], source: str = "results.json", keys: Sequence[str] | None = None
                     ) -> list[dict[str, Any]]:
    """The paired comparisons of an experiment report (its ``comparisons``, in the file ``source``; ``keys``: its
    groups' keys, None: not checked) as gain.png reads them, the numbers of their ``final_acc`` with NaN and ±Inf
    restored.

    Raises:
        ConfigError: one is not a mapping with ``group``, ``a`` and ``b`` names and a ``final_acc`` that is null
            (no common seed) or a mapping with a number ``mean``, a number or null ``std`` and (where present) an
            integer ``n`` ≥ 1 (the error names the file, the comparison and the field), or it names a group not in
            ``keys`` (it would be silently left out of the figure).
    """
    out = []
    for i, c in enumerate(comps):
        if not (isinstance(c, dict) and all(isinstance(c.get(k), str) for k in ("group", "a", "b"))):
            raise ConfigError(f"{source}: comparisons[{i}] must be a mapping with a group, a and b, got {c!r}")
        if keys is not None and c["group"] not in keys:
            raise ConfigError(f"{source}: comparisons[{i}] names group {c['group']!r}, which 'groups' has not "
                              f"(valid: {', '.join(keys)})")
        fa = c.get("final_acc")
        if fa is None:
            out.append(c)
            continue
        where = f"comparisons[{i}] ({c['a']} vs {c['b']}, {c['group']})"
        if not isinstance(fa, dict):
            raise ConfigError(f"{source}: {where}: final_acc must be a mapping (mean, std, n) or null, got {fa!r}")
        problem = (number_problem(fa.get("mean"), "final_acc.mean")
                   or number_problem(fa.get("std"), "final_acc.std", optional=True)
                   or (f"final_acc.n must be an integer ≥ 1, got {fa['n']!r}"
                       if "n" in fa and not (is_int(fa["n"]) and fa["n"] >= 1) else None))
        if problem:
            raise ConfigError(f"{source}: {where}: {problem}")
        out.append({**c, "final_acc": {**fa, **{k: restore_nonfinite(fa.get(k)) for k in ("mean", "std")}}})
    return out


def part_of_report_problem(out_dir: str | Path) -> str | None:
    """Why ``out_dir`` is not an experiment report to redraw although it is part of one
    (:func:`~imc_grapes.io.experiment_part`): its ``groups/`` folder, or one group's folder (in ``groups/``, or
    copied elsewhere), whose ``results.json`` is a group's compare-style report, not the experiment's. The message
    names the report folder (:func:`~imc_grapes.io.experiment_report_of`: ``groups/``'s parent, two levels above a
    group's folder) and, for a group, the command that redraws the group's own figures; None for any other folder.
    Reads only."""
    part = experiment_part(out_dir)
    if part is None:
        return None
    report = experiment_report_of(out_dir)
    if part == "the groups":
        return (f"{out_dir} is the groups/ folder of an `imc-grapes experiment` report (its groups' runs and "
                f"reports), not the report: give its report folder, {report}")
    own = f"or redraw this group's own figures with `imc-grapes compare --redraw --out {shlex.quote(str(out_dir))}`"
    if report is None:      # a finished group copied out of its report
        return (f"{out_dir} holds one group's folder of an `imc-grapes experiment` report (its results.json is the "
                f"group's compare-style report, not the experiment's): give the experiment's report folder (the one "
                f"that holds results.json beside groups/), {own}")
    return (f"{out_dir} is one group's folder of an `imc-grapes experiment` report (its results.json is the group's "
            f"compare-style report, not the experiment's): give its report folder, {report} (two levels up), {own}")


def redraw_experiment_report(out_dir: str | Path, name: str | None = None) -> Redrawn:
    """Draw the figures of the experiment report in ``out_dir`` again from its ``results.json`` alone
    (:func:`~.report.draw_figures`: the stored summary, comparisons and runs; the accuracy axis as the stored
    options' ``tail_evals`` says). Nothing else in the folder is written. A report without the groups' runs (written
    before they were kept) gets accuracy.png and gain.png only; the others are named in :attr:`Redrawn.missing`.

    Args:
        out_dir: the report folder. name: the experiment it must hold (None: any).

    Raises:
        NotADirectoryError: ``out_dir``, or a folder above it, is a file.
        FileNotFoundError: ``out_dir`` has no ``results.json`` (with a ``groups/`` folder: the message says that an
            experiment began there and did not finish, :func:`~imc_grapes.io.unfinished_job_note`).
        ValueError: it is not valid JSON.
        ConfigError: ``out_dir`` is the ``groups/`` folder of an experiment report or one group's folder
            (:func:`part_of_report_problem`: the message names the report folder), or its results.json is not an
            experiment report's (:func:`figure_groups`; its ``experiment`` no name, its ``options`` no mapping),
            or one of experiment ``name``, its
            summary is empty or a value a figure reads is not a number (:func:`_summary_rows`,
            :func:`_comparison_rows`, ``options.tail_evals``: the error names the file and the field), or a
            later experiment job began in ``out_dir`` and did not finish, so its groups/ may be newer than the
            report (:func:`~imc_grapes.io.superseded_report_note`).
    """
    import matplotlib

    matplotlib.use("Agg")
    out = Path(out_dir)
    problem = part_of_report_problem(out_dir)
    if problem:     # not "'groups' must be a list" of a group's results.json, nor "no such file" in groups/
        raise ConfigError(problem)
    result = read_report_json(out, "experiment", runs=GROUPS)   # no results.json beside groups/: unfinished
    source = str(out / "results.json")
    note = superseded_report_note(out, result, "experiment", runs=GROUPS)
    if note:        # not figures of the earlier job's results drawn as if they were the groups' beside them
        raise ConfigError(f"{source}: {note}")
    groups = figure_groups(result, source)
    if not (isinstance(result.get("summary"), list) and isinstance(result.get("comparisons", []), list)):
        raise ConfigError(f"{source}: 'summary' and 'comparisons' must be lists (an `imc-grapes experiment` "
                          "report's results.json)")
    if not isinstance(result.get("experiment"), str):     # every experiment report names its experiment
        raise ConfigError(f"{source}: 'experiment' must be the name of the experiment the report is of (a string, "
                          f"e.g. {', '.join(EXPERIMENTS)}), got {result.get('experiment')!r}")
    if name is not None and result["experiment"] != name:
        raise ConfigError(f"{source}: the report is of experiment {result['experiment']!r}, not {name!r}")
    keys = [g["key"] for g in result["groups"]]
    rows = _summary_rows(result["summary"], source, keys)
    comps = _comparison_rows(result.get("comparisons", []), source, keys)
    options = result.get("options", {})
    if not isinstance(options, dict):       # not the figures silently drawn at tail_evals 1
        raise ConfigError(f"{source}: 'options' must be a mapping (the options the experiment ran with), got "
                          f"{options!r}")
    tail = options.get("tail_evals", 1)
    if (problem := tail_evals_error(tail, "options.tail_evals")) is not None:
        raise ConfigError(f"{source}: {problem}")
    files = draw_figures(rows, comps, keys, groups, out, tail)
    missing: dict[str, str] = {}
    if groups is None:
        old = [g["key"] for g in result["groups"] if "runs" not in g]
        why = (f"results.json keeps no runs for group(s) {', '.join(old)} (groups[].runs: it was written before "
               "they were kept); run the experiment again with the same options to record them (it resumes the "
               "finished runs of its groups/ folder where that is kept)")
        figures = ["curves.png"]
        if any(g.get("trainer") == "permuted" for g in result["groups"]):
            figures += ["matrix.png", "forgetting.png"]
        missing = dict.fromkeys(figures, why)
    return Redrawn(files, missing)
