"""A *group* is one compare job inside an experiment: one model, data set and hardware, the optimizers
(SGD, GRAPES, the layer-mean control, ...) each with its learning rate tuned over a grid on a validation split,
then run with several seeds. :func:`run_group` runs it with any trainer (``imc_grapes.train.train`` for the MLP
and CNN, the experiments' own for recurrent, spiking and continual-learning runs) and writes the same report
folder as ``imc-grapes compare`` (``results.json``, ``results.csv``, ``curves.png``, ``accuracy.png``,
``report.md``, ``runs/``), reusing :mod:`imc_grapes.compare`'s summary, table and plots.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..compare import (Cell, CompareSpec, epochs_to_target, findings, format_table, plot_report, summarise_cells,
                       tune_and_run, tuning_record)
from ..compare import run_one as compare_run_one
from ..data import Dataset, DatasetCache, recorded_data_root
from ..io import write_bytes_atomic, write_csv_atomic, write_json_atomic
from ..report import nan_accuracy_note
from ..suggest import did_you_mean
from ..train import RunResult, tail_accuracy, train
from .forgetting import train_permuted
from .trainers import Trainer, train_custom

__all__ = ["TRAINERS", "Group", "GroupResult", "run_group", "run_one", "run_row"]

#: trainer name -> function with ``imc_grapes.train.train``'s signature
TRAINERS: dict[str, Trainer] = {"standard": train, "custom": train_custom, "permuted": train_permuted}
_EXTRA_KEYS = ("costs", "inference", "forgetting")
#: statuses of a finished run (not redone by ``resume``)
FINISHED = ("completed", "diverged", "failed")


@dataclass(frozen=True)
class Group:
    """One compare job of an experiment.

    Attributes:
        key: folder name under ``<experiment>/groups/`` (e.g. ``mnist-mlp256x2-digital``).
        labels: what distinguishes the group, shown as table columns (e.g. ``{"dataset": "mnist",
            "network": "784-256-256-10", "hardware": "digital"}``).
        spec: the compare spec (one ``hardware`` entry; the lr grid, seeds and validation holdout).
        trainer: a key of :data:`TRAINERS`.
        size: a number that orders groups by network size (e.g. the number of weights), or None.
    """

    key: str
    labels: Mapping[str, Any]
    spec: CompareSpec
    trainer: str = "standard"
    size: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", dict(self.labels))
        if self.trainer not in TRAINERS:
            raise ValueError(f"Group.trainer must be one of {', '.join(TRAINERS)}, got {self.trainer!r}"
                             f"{did_you_mean(self.trainer, TRAINERS)}")
        if len(self.spec.hardware) != 1:
            raise ValueError(f"Group.spec.hardware must name exactly one hardware, got {list(self.spec.hardware)}")
        if not self.key or "/" in self.key:
            raise ValueError(f"Group.key must be a non-empty folder name without '/', got {self.key!r}")

    @property
    def hardware(self) -> str:
        return self.spec.hardware[0]

    @property
    def tune_score(self) -> str:
        """How the tuning runs are scored (``spec.tune_score``, one of :data:`~imc_grapes.compare.TUNE_SCORES`)."""
        return self.spec.tune_score

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "labels": dict(self.labels), "trainer": self.trainer, "tune_score": self.tune_score,
                "size": self.size, "spec": self.spec.to_dict()}


@dataclass
class GroupResult:
    """The cells (one per optimizer) of a finished group and their summary rows (``compare.summarise_cells``)."""

    group: Group
    cells: list[Cell]
    rows: list[dict[str, Any]]
    out_dir: Path
    files: list[str] = field(default_factory=list)


def run_one(cfg: Any, run_dir: Path, dataset: Dataset, trainer: Trainer, progress: bool | None, resume: bool,
            log: Callable[[str], None]) -> RunResult:
    """Train ``cfg`` with ``trainer`` into ``run_dir``, or load it when a finished run with the same config is
    there (``resume``): :func:`imc_grapes.compare.run_one` with the experiments' policy.

    A diverging run (NaN/Inf loss, or an evaluation with a NaN/Inf loss or accuracy) is returned with status
    ``diverged``; a run that raised any other error (e.g. a simulator bug hit by a collapsed network) with status
    ``failed`` and the error as its message. Both
    keep their history so far and are recorded in the run's ``results.json`` (and count as finished for
    ``resume``: rerun with ``resume=False`` to redo them); the experiment goes on.
    """
    return compare_run_one(cfg, run_dir, dataset, progress, resume, log, trainer=trainer, finished=FINISHED,
                           extra_keys=_EXTRA_KEYS, record_failures=True)


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.2f}"


def run_group(group: Group, out_dir: str | Path, dataset: Dataset | DatasetCache, *, progress: bool | None = False,
              resume: bool = True, command: str | None = None, log: Callable[[str], None] = print) -> GroupResult:
    """Run every cell of ``group`` (tuning then seeds) and write its report folder into ``out_dir``. ``dataset``:
    the data set of every run, or a :class:`~imc_grapes.data.DatasetCache` that gives each run its own (a
    synthetic set generated from the run's seed, as ``train`` generates it)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec, hw, trainer = group.spec, group.hardware, TRAINERS[group.trainer]
    def run(cfg: Any, folder: Path) -> RunResult:
        data = dataset.for_config(cfg) if isinstance(dataset, DatasetCache) else dataset
        return run_one(cfg, folder, data, trainer, progress, resume, log)

    cells = [tune_and_run(spec, hw, opt, run, out / "runs" / "tune", out / "runs", f"{group.key}: {opt}", log)
             for opt in spec.optimizers]
    rows = summarise_cells(cells, spec.target_acc, spec.tail_evals)
    result = GroupResult(group, cells, rows, out)
    result.files = write_group_report(result, command)
    return result


def run_row(g: Group, c: Cell, r: RunResult, **columns: Any) -> dict[str, Any]:
    """One run's row of a per-run ``results.csv`` (the group's and the experiment's): who it is, its status, its
    final test accuracy — from its history whatever its status — and with ``tail_evals`` > 1 the mean of its last
    evaluations, then ``columns``, its wall time and folder."""
    last = r.history[-1] if r.history else {}
    return {"group": g.key, **g.labels, "optimizer": c.optimizer, "backend": r.config.backend, "lr": c.lr,
            "seed": r.config.seed, "status": r.status, "final_test_acc": last.get("test_acc"),
            **({"tail_test_acc": tail_accuracy(r.history, g.spec.tail_evals)} if g.spec.tail_evals > 1 else {}),
            **columns, "wall_time_s": r.wall_time_s, "run_dir": str(r.run_dir)}


def write_group_report(res: GroupResult, command: str | None = None) -> list[str]:
    """``results.json``, ``results.csv``, ``curves.png``, ``accuracy.png`` and ``report.md`` of one group."""
    g, out = res.group, res.out_dir
    write_json_atomic(out / "results.json", {
        "command": command, "group": g.to_dict(),
        # the spec keeps data_root as given (a relative one names another folder once the report moves)
        "data_root_resolved": recorded_data_root(g.spec.base.dataset, g.spec.base.data_root), "summary": res.rows,
        "tuning": [tuning_record(c, g.tune_score) for c in res.cells],
        "runs": [{"hardware": c.hardware, "optimizer": c.optimizer, "run_dir": str(r.run_dir), **r.to_dict()}
                 for c in res.cells for r in c.runs]})
    csv_rows = [run_row(g, c, r, final_train_loss=(r.history[-1] if r.history else {}).get("train_loss"),
                        epochs_to_target=epochs_to_target(r, g.spec.target_acc))
                for c in res.cells for r in c.runs]
    write_csv_atomic(out / "results.csv", csv_rows)
    files = plot_report(res.cells, res.rows, out)
    b = g.spec.base
    lines = [f"# {g.key}", ""]
    if command:
        lines += ["Command:", "", "```", command, "```", ""]
    lines += ["* " + ", ".join(f"{k}: {v}" for k, v in g.labels.items()),
              f"* data: {b.dataset} (train subset: {b.train_subset or 'all'}, test subset: {b.test_subset or 'all'}); "
              f"{b.batching()}, {b.epochs} epoch(s), base optimizer {b.base_optimizer}"
              + (f" (momentum {b.momentum})" if b.momentum else ""),
              f"* seeds: {list(g.spec.seeds)}; learning rate tuned per optimizer over {list(g.spec.lr_grid)} on "
              f"the last {g.spec.val_holdout} training samples (score: {g.tune_score} validation accuracy)"
              if len(g.spec.lr_grid) > 1 else f"* seeds: {list(g.spec.seeds)}; one learning rate {g.spec.lr_grid[0]:g}",
              *([f"* a run's accuracy (table, tuning score): the mean of its last {g.spec.tail_evals} evaluations"]
                if g.spec.tail_evals > 1 else []),
              "", format_table(res.rows, g.spec.target_acc, markdown=True), ""]
    found = findings(res.rows, res.cells)
    if found:
        lines += [f"* {f}" for f in found] + [""]
    tuned = [c for c in res.cells if c.tuning]
    if tuned:
        lines += ["| optimizer | " + " | ".join(f"val. acc % @ lr {lr:g}" for lr in g.spec.lr_grid) + " | chosen |",
                  "|---|" + "---|" * (len(g.spec.lr_grid) + 1)]
        for c in tuned:
            vals = [_pct(c.tuning.get(lr)) for lr in g.spec.lr_grid]
            lines.append(f"| {c.optimizer} | " + " | ".join(vals) + f" | {c.lr:g} |")
        lines.append("")
        note = nan_accuracy_note(a for c in tuned for a in c.tuning.values())
        if note:
            lines += [note, ""]
    lines += [f"![{f}]({f})\n" for f in files]
    write_bytes_atomic(out / "report.md", "\n".join(lines).encode())
    return ["results.json", "results.csv", "report.md", *files]
