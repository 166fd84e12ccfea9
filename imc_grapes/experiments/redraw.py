"""``imc-grapes experiment --redraw``: an experiment report's figures drawn again from its ``results.json`` alone
(no training, and no ``groups/`` folder needed: a report copied elsewhere can be redrawn), with the current
plotting code. ``results.json``, ``results.csv``, ``summary.csv`` and ``report.md`` are left as they are.

The summary rows and paired comparisons give accuracy.png and gain.png; the groups' final runs that
:func:`~.report.figure_runs` keeps give curves.png and, for forgetting, matrix.png and forgetting.png. A report
written before the runs were kept there has no such runs: those figures are not drawn, and
:func:`redraw_experiment_report` says which and why.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ConfigError, is_number
from ..io import read_report_json, restore_nonfinite, superseded_report_note
from .report import FORGETTING_KEYS, GROUPS, FigureGroup, draw_figures

__all__ = ["Redrawn", "StoredCell", "StoredRun", "figure_groups", "redraw_experiment_report"]


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


def _stored_run(run: Any, where: str, source: str = "results.json") -> StoredRun:
    """The run ``run`` stored at ``where`` (``groups[i].runs[j]``) of the file ``source``.

    Raises:
        ConfigError: it is not a mapping with optimizer and status, or, completed, has no ``epoch`` and
            ``test_acc`` lists of one length whose entries are numbers (NaN allowed; the error names the run and
            the entry, not a TypeError of the curves)."""
    if not (isinstance(run, dict) and isinstance(run.get("optimizer"), str) and isinstance(run.get("status"), str)):
        raise ConfigError(f"{source}: {where} must be a mapping with optimizer and status")
    if run["status"] != "completed":
        return StoredRun(run["status"])
    epochs, accs = run.get("epoch"), restore_nonfinite(run.get("test_acc"))
    if not (isinstance(epochs, list) and isinstance(accs, list) and len(epochs) == len(accs)):
        raise ConfigError(f"{source}: {where} is completed but has no 'epoch' and 'test_acc' lists of one "
                          "length")
    for key, values in (("epoch", epochs), ("test_acc", accs)):
        bad = next((k for k, v in enumerate(values) if not is_number(v)), None)
        if bad is not None:
            raise ConfigError(f"{source}: {where} ({run['optimizer']}, seed {run.get('seed')}): {key}[{bad}] must be "
                              f"a number (NaN allowed), got {values[bad]!r}")
    history = [{"epoch": e, "test_acc": a} for e, a in zip(epochs, accs)]
    fg = {k: restore_nonfinite(run[k]) for k in FORGETTING_KEYS if k in run}
    return StoredRun("completed", history, {"forgetting": fg} if fg else {})


def figure_groups(result: dict[str, Any], source: str = "results.json") -> list[FigureGroup] | None:
    """The groups of an experiment report's ``results.json`` contents ``result`` with their cells rebuilt from
    the stored runs (:func:`~.report.figure_runs`): per group its summary's optimizers in order, each with its lr
    and its runs. None when a group has no ``runs`` (a report written before they were kept). ``source``: the
    file, as the errors name it.

    Raises:
        ConfigError: ``result`` has no ``groups`` list of mappings with a ``key`` and a ``summary`` list, or a
            stored run is malformed or names an optimizer its group's summary has not.
    """
    groups = result.get("groups") if isinstance(result, dict) else None
    if not (isinstance(groups, list) and all(isinstance(g, dict) and isinstance(g.get("key"), str)
                                             and isinstance(g.get("summary"), list) for g in groups)):
        raise ConfigError(f"{source}: 'groups' must be a list of groups with a key and a summary (an "
                          "`imc-grapes experiment` report's results.json)")
    if any("runs" not in g for g in groups):
        return None
    out = []
    for i, g in enumerate(groups):
        cells = {r["optimizer"]: StoredCell(r["optimizer"], float(r["lr"]), []) for r in g["summary"]}
        if not isinstance(g["runs"], list):
            raise ConfigError(f"{source}: groups[{i}].runs must be a list of runs")
        for j, run in enumerate(g["runs"]):
            stored = _stored_run(run, f"groups[{i}].runs[{j}]", source)
            if run["optimizer"] not in cells:
                raise ConfigError(f"{source}: groups[{i}].runs[{j}] names optimizer {run['optimizer']!r}, "
                                  f"which groups[{i}].summary has not (valid: {', '.join(cells)})")
            cells[run["optimizer"]].runs.append(stored)
        out.append(FigureGroup(g["key"], str(g.get("trainer", "standard")), list(cells.values())))
    return out


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
        ConfigError: it is not an experiment report's, or one of experiment ``name`` (:func:`figure_groups`), or a
            later experiment job began in ``out_dir`` and did not finish, so its groups/ may be newer than the
            report (:func:`~imc_grapes.io.superseded_report_note`).
    """
    import matplotlib

    matplotlib.use("Agg")
    out = Path(out_dir)
    result = read_report_json(out, "experiment", runs=GROUPS)   # no results.json beside groups/: unfinished
    source = str(out / "results.json")
    note = superseded_report_note(out, result, "experiment", runs=GROUPS)
    if note:        # not figures of the earlier job's results drawn as if they were the groups' beside them
        raise ConfigError(f"{source}: {note}")
    groups = figure_groups(result, source)
    if not (isinstance(result.get("summary"), list) and isinstance(result.get("comparisons", []), list)):
        raise ConfigError(f"{source}: 'summary' and 'comparisons' must be lists (an `imc-grapes experiment` "
                          "report's results.json)")
    if name is not None and result.get("experiment") != name:
        raise ConfigError(f"{source}: the report is of experiment {result.get('experiment')!r}, not {name!r}")
    options = result.get("options") if isinstance(result.get("options"), dict) else {}
    tail = int(options.get("tail_evals", 1))
    keys = [g["key"] for g in result["groups"]]
    files = draw_figures(result["summary"], result.get("comparisons", []), keys, groups, out, tail)
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
