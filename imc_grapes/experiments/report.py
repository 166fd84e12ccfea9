"""The report folder of a named experiment: the groups' summaries side by side, paired differences between
optimizers, plots, and (for ``forgetting``) the accuracy matrices.

Files (next to ``groups/<key>/``, each group's own compare-style folder):

* ``results.json`` — experiment, options (``data_root`` as given) and the absolute data folder it named
  (``data_root_resolved``, None when every group uses the synthetic set), command, machine, every group's spec,
  summary and final runs (:func:`figure_runs`: what the figures draw, so that ``imc-grapes experiment --redraw``
  draws them from this file alone, :mod:`.redraw`), the paired comparisons, findings (and the forgetting metrics);
* ``results.csv`` — one row per final run (all groups); ``summary.csv`` — one row per group × optimizer;
* ``accuracy.png`` (final test accuracy per group and optimizer, mean ± std, bars from 0 %), ``gain.png`` (paired
  difference to SGD per group), ``curves.png`` (learning curves per group), for ``forgetting`` also ``matrix.png``
  (with a 0–100 % colour bar) and ``forgetting.png``; each optimizer in its colour of every report, error bars
  only over two or more completed seeds (a title says "one seed" otherwise);
* ``report.md`` embedding all of it.

``groups/job.json`` names the last job begun in the folder (:func:`~imc_grapes.io.start_job`, written before its
first run), and ``results.json`` the job that wrote it (``job``): when they differ, a later job was interrupted and
the report is older than its groups (:func:`~imc_grapes.io.superseded_report_note`), which ``--redraw`` refuses,
saying to run the same command again (it resumes the finished runs).

A *paired difference* compares two optimizers run with the same seeds (same initial weights and data order):
``d_s = acc(opt, s) − acc(sgd, s)``, reported as mean ± std over seeds with the number of seeds where it is
positive. With three seeds, "3/3" is the most that a seed count can say; it is not a significance test.
"""
from __future__ import annotations

import math
import os
import platform
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..backends.settings import format_device_overrides
from ..compare import Cell, mean_pm_std, paired_by_seed
from ..data import recorded_data_root
from ..io import EXPERIMENT_GROUPS, write_bytes_atomic, write_csv_atomic, write_figure_atomic, write_json_atomic
from ..plotting import error_bars, fit_title, optimizer_color
from ..report import draw_cell_curves, nan_accuracy_note
from ..stats import mean_std
from ..train import RunResult, tail_accuracy
from ..versions import versions
from .groups import GroupResult, run_row

__all__ = ["GROUPS", "FigureGroup", "draw_figures", "figure_runs", "machine_info", "paired",
           "write_experiment_report"]

#: the subfolder of an experiment's report folder that holds its groups' folders (``groups/<key>/``, its runs) and
#: ``job.json``, the marker of the last job begun there (:func:`~imc_grapes.io.start_job`)
GROUPS = EXPERIMENT_GROUPS

#: the per-run metrics of a forgetting run (``extra["forgetting"]``) that the figures use
FORGETTING_KEYS = ("matrix", "avg_acc", "forgetting", "bwt")


@dataclass(frozen=True)
class FigureGroup:
    """What the curves and matrix figures draw of one group: its ``key``, its ``trainer`` (``permuted``: a
    forgetting group, evaluated per task) and its ``cells`` in the summary's order, each an object with
    ``optimizer``, ``lr`` and ``runs`` (each with ``status``, ``history`` and ``extra``): a
    :class:`~imc_grapes.compare.Cell` of the group's runs, or one rebuilt from ``results.json``
    (:func:`~.redraw.figure_groups`)."""

    key: str
    trainer: str
    cells: Sequence[Any]


def figure_runs(cells: Sequence[Cell]) -> list[dict[str, Any]]:
    """The final runs of a group's ``cells`` as ``results.json`` keeps them for the figures: per run its
    ``optimizer``, ``seed`` and ``status``; for a completed run also its evaluations' ``epoch`` and ``test_acc``
    (two lists, one entry per evaluation, accuracy a fraction) and for a forgetting run its accuracy matrix
    (``matrix[i][j]``: accuracy on task ``i`` after training task ``j``, fractions) with ``avg_acc``,
    ``forgetting`` and ``bwt``. Runs that did not complete are listed (the curves' legend counts them) without
    their partial history."""
    out = []
    for c in cells:
        for r in c.runs:
            row: dict[str, Any] = {"optimizer": c.optimizer, "seed": r.config.seed, "status": r.status}
            if r.status == "completed":
                row["epoch"] = [h["epoch"] for h in r.history]
                row["test_acc"] = [h["test_acc"] for h in r.history]
                fg = r.extra.get("forgetting") or {}
                row.update({k: fg[k] for k in FORGETTING_KEYS if k in fg})
            out.append(row)
    return out


def machine_info() -> dict[str, Any]:
    """CPU model, logical cores, and the software versions (``imc_grapes.versions.versions``)."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu or None, "logical_cores": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS"), "torch_threads": torch.get_num_threads(),
            **versions()}


def _tail(k: int) -> Callable[[RunResult], float | None]:
    """A completed run's accuracy as its group reports it: the mean of its last ``k`` evaluations."""
    return lambda r: tail_accuracy(r.history, k) if r.status == "completed" else None


_final = _tail(1)


def _curve_mean(r: RunResult) -> float | None:
    return statistics.fmean(h["test_acc"] for h in r.history) if r.status == "completed" and r.history else None


def _forget(r: RunResult, key: str) -> float | None:
    v = (r.extra.get("forgetting") or {}).get(key)
    return float(v) if isinstance(v, (int, float)) and r.status == "completed" else None


def paired(a: Cell, b: Cell, metric: Any = _final) -> dict[str, Any] | None:
    """Paired difference ``metric(a) − metric(b)`` over the seeds both cells ran
    (:func:`~imc_grapes.compare.paired_by_seed`), or None without a common finished seed."""
    return paired_by_seed({r.config.seed: metric(r) for r in a.runs}, {r.config.seed: metric(r) for r in b.runs})


def _pct(v: float | None, digits: int = 2) -> str:
    return "—" if v is None else f"{100 * v:.{digits}f}"


def _diff_text(p: dict[str, Any] | None) -> str:
    """A paired difference (:func:`~imc_grapes.compare.paired_by_seed`) in points: ``mean ± std (positive/n)``,
    the std ``—`` for one seed."""
    if p is None:
        return "—"
    return f"{mean_pm_std(p['mean'], p['std'], p['n'], sign=True)} ({p['positive']}/{p['n']})"


def _summary_rows(results: Sequence[GroupResult]) -> list[dict[str, Any]]:
    rows = []
    for res in results:
        by_opt = {c.optimizer: c for c in res.cells}
        for c, row in zip(res.cells, res.rows):
            curve_m, curve_s = mean_std([_curve_mean(r) for r in c.runs])
            out: dict[str, Any] = {
                "group": res.group.key, **res.group.labels, "optimizer": c.optimizer, "lr": c.lr,
                "runs": row["runs"], "completed": row.get("completed", row["runs"]), "diverged": row["diverged"],
                "failed": row.get("failed", 0),
                "final_test_acc_mean": row["final_test_acc_mean"], "final_test_acc_std": row["final_test_acc_std"],
                "curve_mean_acc_mean": curve_m, "curve_mean_acc_std": curve_s,
                "epochs_to_target_mean": row["epochs_to_target_mean"], "reached_target": row["reached_target"],
                "target_acc": res.group.spec.target_acc, "saturation_mean": row["saturation_mean"],
                "cost_overhead_vs_sgd": row["cost_overhead_vs_sgd"],
            }
            for ref in ("sgd", "layer-mean"):
                if ref in by_opt and ref != c.optimizer:
                    p = paired(c, by_opt[ref], _tail(res.group.spec.tail_evals))
                    out[f"diff_vs_{ref}_mean"] = p["mean"] if p else None
                    out[f"diff_vs_{ref}_std"] = p["std"] if p else None
                    out[f"diff_vs_{ref}_positive"] = f"{p['positive']}/{p['n']}" if p else None
                    out[f"diff_vs_{ref}_n"] = p["n"] if p else None
            if any(r.extra.get("forgetting") for r in c.runs):
                for key in ("avg_acc", "forgetting", "bwt"):
                    m, s = mean_std([_forget(r, key) for r in c.runs])
                    out[f"{key}_mean"], out[f"{key}_std"] = m, s
            rows.append(out)
    return rows


def _comparisons(results: Sequence[GroupResult]) -> list[dict[str, Any]]:
    """Paired differences per group: every optimizer vs SGD and GRAPES vs layer-mean (final and curve-mean
    accuracy; forgetting metrics where present)."""
    out = []
    for res in results:
        by_opt = {c.optimizer: c for c in res.cells}
        pairs = [(o, "sgd") for o in by_opt if o != "sgd" and "sgd" in by_opt]
        if "grapes" in by_opt and "layer-mean" in by_opt:
            pairs.append(("grapes", "layer-mean"))
        for a, b in pairs:
            entry: dict[str, Any] = {"group": res.group.key, "a": a, "b": b,
                                     "final_acc": paired(by_opt[a], by_opt[b], _tail(res.group.spec.tail_evals)),
                                     "curve_mean_acc": paired(by_opt[a], by_opt[b], _curve_mean)}
            if any(r.extra.get("forgetting") for r in by_opt[a].runs):
                for key in ("avg_acc", "forgetting", "bwt"):
                    entry[key] = paired(by_opt[a], by_opt[b], lambda r, k=key: _forget(r, k))
            out.append(entry)
    return out


def _findings(results: Sequence[GroupResult], comps: Sequence[dict[str, Any]]) -> list[str]:
    """Plain statements computed from the paired differences (no judgement beyond the numbers; for forgetting,
    where lower is better, a positive difference is called more forgetting, i.e. worse)."""
    lines = []
    for c in comps:
        if c["b"] == "sgd" and c["a"] != "grapes":
            continue
        f = c["final_acc"]
        if f is None:
            continue
        what = "GRAPES vs SGD" if c["b"] == "sgd" else "GRAPES vs the layer-mean control"
        ties = f["n"] - f["positive"] - f["negative"]
        agree = (f"higher on all {f['n']} seed(s)" if f["positive"] == f["n"] else
                 f"lower on all {f['n']} seed(s)" if f["negative"] == f["n"] else
                 f"higher on {f['positive']}, lower on {f['negative']}" + (f", equal on {ties}" if ties else "")
                 + f" of {f['n']} seeds")
        text = f"`{c['group']}`: {what}: final accuracy {_diff_text(f)} points, {agree}"
        cm = c["curve_mean_acc"]
        if cm is not None:
            text += f"; mean accuracy over the learning curve {100 * cm['mean']:+.2f} points"
        if c.get("forgetting") is not None:
            d = c["forgetting"]["mean"]
            other = "SGD" if c["b"] == "sgd" else "the layer-mean control"
            text += f"; forgetting {100 * d:+.2f} points" + (   # lower forgetting is better
                f" (more forgetting than {other}: worse)" if d > 0 else
                f" (less forgetting than {other}: better)" if d < 0 else f" (the same forgetting as {other})")
        lines.append(text + ".")
    return lines


def _acc_label(tail: int) -> str:
    return "final test accuracy" if tail == 1 else f"test accuracy (mean of the last {tail} evaluations)"


def _seeds_text(n: int) -> str:
    """What a figure's error bars are over: ``one seed`` (no error bar) or ``mean ± std over n seeds``."""
    return "one seed" if n <= 1 else f"mean ± std over {n} seeds"


def group_tick_label(key: str) -> str:
    """A group's key (:func:`~imc_grapes.experiments.definitions.group_key`, ``<dataset>-<variant>-<backend>[-...]``)
    on three lines for a figure's x axis: the data set, the network variant, the hardware
    (``fashion-mnist-dfa-mlp256x2-digital`` -> ``fashion-mnist / dfa-mlp256x2 / digital``,
    ``mnist-mlp256x2-crossbar-EcRam`` -> ``mnist / mlp256x2 / crossbar-EcRam``). Data sets and variants have hyphens
    of their own, so the key is split at the known data set names and backends; a key of another shape keeps its
    first two hyphens as line breaks."""
    from ..config import BACKENDS
    from ..data.registry import DATASET_NAMES

    dataset = next((d for d in sorted(DATASET_NAMES, key=len, reverse=True) if key.startswith(f"{d}-")), None)
    if dataset is None:
        return key.replace("-", "\n", 2)
    parts = key[len(dataset) + 1:].split("-")
    # the first part after the variant's first that is a backend: device overrides after it may hold any text
    backend = next((i for i, part in enumerate(parts) if i > 0 and part in BACKENDS), None)
    if backend is None:
        return f"{dataset}\n{'-'.join(parts)}"
    return f"{dataset}\n{'-'.join(parts[:backend])}\n{'-'.join(parts[backend:])}"


def _plot_accuracy(rows: Sequence[dict[str, Any]], out: Path, tail: int = 1) -> None:
    """accuracy.png: each group's accuracy per optimizer (the optimizer's colour), bars from 0 % (a bar's height
    is the accuracy), ± the std over the completed seeds where there are two or more; a cell without a completed
    run is marked, not left out in silence."""
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys(r["group"] for r in rows))
    opts = list(dict.fromkeys(r["optimizer"] for r in rows))
    width = 0.8 / len(opts)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(groups) * max(1, len(opts)) / 2 + 2), 4.5))
    top = 100.0
    for k, opt in enumerate(opts):
        xs, ms, ss = [], [], []
        for i, g in enumerate(groups):
            r = next((r for r in rows if r["group"] == g and r["optimizer"] == opt), None)
            if r is None:
                continue
            x = i + (k - (len(opts) - 1) / 2) * width
            if r["final_test_acc_mean"] is None:
                ax.text(x, 1, "no completed run", rotation=90, ha="center", va="bottom", fontsize=7, color="0.4")
                continue
            xs.append(x)
            ms.append(100 * r["final_test_acc_mean"])
            ss.append(100 * (r["final_test_acc_std"] or 0) if _completed_runs(r) >= 2 else None)
        if xs:
            ax.bar(xs, ms, width, color=optimizer_color(opt, k), label=opt)
            error_bars(ax, xs, ms, ss)
            top = max(top, max(m + (sd or 0) for m, sd in zip(ms, ss)) + 2)
    ax.set_xticks(range(len(groups)), [group_tick_label(g) for g in groups], fontsize=7)
    ax.set_ylim(0.0, top)
    n_seeds = max((int(r.get("runs", 1)) for r in rows), default=1)
    ax.set(ylabel=f"{_acc_label(tail)} (%)",
           title=fit_title(fig, f"{_acc_label(tail).capitalize()}, {_seeds_text(n_seeds)}"))
    _finish_bars(fig, ax, out / "accuracy.png")


def _finish_bars(fig: Any, ax: Any, path: Path) -> None:
    """Finish a bar chart of optimizers (y grid, a legend where a bar has a label), write it to ``path`` (PNG,
    120 dpi) and close it."""
    import matplotlib.pyplot as plt

    ax.grid(axis="y", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    write_figure_atomic(path, fig, dpi=120)
    plt.close(fig)


def _completed_runs(row: dict[str, Any]) -> int:
    """The completed runs behind a summary row's accuracy (all its runs when the row does not count them)."""
    return int(row.get("completed", row.get("runs", 1)))


def _plot_gain(comps: Sequence[dict[str, Any]], keys: Sequence[str], out: Path, tail: int = 1) -> None:
    """gain.png: the paired differences between optimizers per group (``keys``, in order), ± their std over the
    seeds both completed where there are two or more."""
    import matplotlib.pyplot as plt

    groups = list(keys)
    pairs = list(dict.fromkeys((c["a"], c["b"]) for c in comps))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(groups) + 3), 4.5))
    width = 0.8 / max(1, len(pairs))
    most = 1
    for k, (a, b) in enumerate(pairs):
        xs, ms, ss = [], [], []
        for i, g in enumerate(groups):
            c = next((c for c in comps if c["group"] == g and c["a"] == a and c["b"] == b), None)
            if c is None or c["final_acc"] is None:
                continue
            xs.append(i + (k - (len(pairs) - 1) / 2) * width)
            ms.append(100 * c["final_acc"]["mean"])
            n = int(c["final_acc"].get("n", 2))
            most = max(most, n)
            ss.append(100 * c["final_acc"]["std"] if n >= 2 else None)
        if xs:
            # a pair of optimizers: a colour no single optimizer has (blue is SGD's, orange GRAPES's, elsewhere)
            ax.bar(xs, ms, width, color=optimizer_color(None, k), label=f"{a} − {b}")
            error_bars(ax, xs, ms, ss)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(range(len(groups)), [group_tick_label(g) for g in groups], fontsize=7)
    what = "mean ± std" if most >= 2 else "one seed"
    ax.set(ylabel=f"paired difference in {_acc_label(tail)} (points)",
           title=fit_title(fig, f"Difference to the reference optimizer (same seeds), {what}"))
    _finish_bars(fig, ax, out / "gain.png")


def _plot_curves(results: Sequence[FigureGroup], out: Path) -> None:
    """curves.png: one panel per group, each cell's accuracy curve (:func:`~imc_grapes.report.draw_cell_curves`)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    n = len(results)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows + 0.4), squeeze=False)
    for ax, res in zip(axes.flat, results):
        forgetting = res.trainer == "permuted"
        draw_cell_curves(ax, res.cells, xlabel="tasks trained" if forgetting else "epoch",
                         ylabel="mean acc. over tasks so far (%)" if forgetting else "test accuracy (%)")
        if forgetting:          # a count of tasks: no tick at 1.25 tasks
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(title=fit_title(fig, res.key, columns=cols))
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(fit_title(fig, "Test accuracy, mean ± std over completed runs (n per line)", "figure.titlesize"))
    fig.tight_layout()
    write_figure_atomic(out / "curves.png", fig, dpi=110)
    plt.close(fig)


def _mean_matrix(c: Any) -> list[list[float]] | None:
    """The mean accuracy matrix of a cell's completed forgetting runs, or None without one."""
    mats = [r.extra["forgetting"]["matrix"] for r in c.runs if r.status == "completed" and r.extra.get("forgetting")]
    if not mats:
        return None
    t = len(mats[0])
    return [[statistics.fmean(float(m[i][j]) for m in mats) for j in range(t)] for i in range(t)]


def _matrix_runs(c: Any) -> int:
    """The runs a cell's mean accuracy matrix is over (:func:`_mean_matrix`)."""
    return sum(1 for r in c.runs if r.status == "completed" and r.extra.get("forgetting"))


def trained_entries(matrix: Any) -> Any:
    """The accuracy matrix ``R[i, j]`` (accuracy on task ``i`` after training task ``j``) as a float numpy
    array with NaN where task ``i`` had not been trained yet (``i > j``): what the matrix plot shows."""
    import numpy as np

    m = np.array(matrix, dtype=float)
    return np.where(np.tril(np.ones_like(m, dtype=bool), -1), np.nan, m)


#: a matrix entry (%) at or above this is drawn on viridis's light green/yellow, and gets black text (white below)
MATRIX_LIGHT_FROM = 60.0


def _plot_matrices(results: Sequence[FigureGroup], out: Path) -> None:
    """matrix.png (each cell's mean accuracy matrix, at most three panels a row, one 0–100 % colour bar) and
    forgetting.png (average accuracy and forgetting per cell, the optimizer's colour, ± std over two or more
    completed runs)."""
    import matplotlib.pyplot as plt
    import numpy as np

    cells = [(res.key, c) for res in results for c in res.cells if _mean_matrix(c) is not None]
    if not cells:
        return
    cols = min(3, len(cells))
    nrows = math.ceil(len(cells) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.6 * cols + 1.0, 3.9 * nrows + 0.4), squeeze=False,
                             layout="constrained")
    im = None
    for ax, (key, c) in zip(axes.flat, cells):
        m = np.array(_mean_matrix(c)) * 100
        t = m.shape[0]
        shown = trained_entries(m)
        im = ax.imshow(shown, vmin=0, vmax=100, cmap="viridis")
        for i in range(t):
            for j in range(t):
                if not np.isnan(shown[i, j]):
                    ax.text(j, i, f"{m[i, j]:.0f}", ha="center", va="center", fontsize=7,
                            color="black" if m[i, j] >= MATRIX_LIGHT_FROM else "white")
        ax.set(xticks=range(t), yticks=range(t), xlabel="after training task", ylabel="accuracy on task",
               title=fit_title(fig, f"{c.optimizer} (lr {c.lr:g}, n={_matrix_runs(c)})\n{key}", columns=cols))
        ax.title.set_fontsize(8)
    for ax in list(axes.flat)[len(cells):]:
        ax.axis("off")
    assert im is not None                                  # cells is not empty: one image per panel drawn
    fig.colorbar(im, ax=axes.ravel().tolist(), label="test accuracy on the task (%)", shrink=0.8)
    fig.suptitle(fit_title(fig, "Accuracy on each task after training each task, mean over completed runs",
                           "figure.titlesize"))
    write_figure_atomic(out / "matrix.png", fig, dpi=120)
    plt.close(fig)

    rows = [(key, c, {k: mean_std([_forget(r, k) for r in c.runs]) for k in ("avg_acc", "forgetting")})
            for key, c in cells]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.3))
    colors = [optimizer_color(c.optimizer, i) for i, (_, c, _) in enumerate(rows)]
    titles = ("average accuracy after the last task (%)", "forgetting (points, lower is better)")
    ylabels = ("average accuracy over tasks (%)", "forgetting (points)")
    for ax, k, title, ylabel in zip(axes, ("avg_acc", "forgetting"), titles, ylabels):
        ms = [100 * (v[k][0] or 0) for _, _, v in rows]
        ss = [100 * (v[k][1] or 0) if _matrix_runs(c) >= 2 else None for _, c, v in rows]
        ax.bar(range(len(rows)), ms, color=colors)
        error_bars(ax, range(len(rows)), ms, ss)
        ax.set_xticks(range(len(rows)), [f"{c.optimizer}\n{key.rsplit('-', 1)[-1]}" for key, c, _ in rows],
                      fontsize=8)
        ax.set(title=fit_title(fig, title, columns=2), ylabel=ylabel)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylim(0.0, 100.0)
    axes[1].axhline(0, color="k", lw=0.8)
    n_seeds = max((len(c.runs) for _, c, _ in rows), default=1)
    fig.suptitle(fit_title(fig, f"Permuted tasks: {_seeds_text(n_seeds)} (completed runs)", "figure.titlesize"))
    fig.tight_layout()
    write_figure_atomic(out / "forgetting.png", fig, dpi=120)
    plt.close(fig)


def _table(rows: Sequence[dict[str, Any]], label_keys: Sequence[str]) -> str:
    """The results table, one row per group × optimizer. Forgetting rows (``avg_acc_mean``) get the forgetting
    metrics and no "epochs to target" column: their evaluation points are tasks, not epochs. An accuracy that is
    NaN reads ``nan``, and a paragraph below the table (:data:`~imc_grapes.report.NAN_ACCURACY_NOTE`) says why."""
    forgetting = any("avg_acc_mean" in r for r in rows)
    head = [*label_keys, "optimizer", "lr", "test acc % (mean ± std)", "curve-mean acc %",
            *([] if forgetting else ["epochs to target"]), "Δ vs SGD (points, seeds > 0)", "Δ vs layer-mean"]
    if forgetting:
        head += ["avg acc %", "forgetting (points)", "BWT (points)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        bad = [f"{r[k]}/{r['runs']} {k}" for k in ("diverged", "failed") if r.get(k)]
        acc = ("no completed run" if r["final_test_acc_mean"] is None else
               mean_pm_std(r["final_test_acc_mean"], r["final_test_acc_std"], r.get("completed", r["runs"]))) + (
                   f" ({', '.join(bad)})" if bad else "")
        ett = (f"{r['epochs_to_target_mean']:.2f}" if r["epochs_to_target_mean"] is not None
               else "—" if r["final_test_acc_mean"] is None      # no completed run: not "(0/0 reached ...)"
               else f"({r['reached_target']} reached {100 * r['target_acc']:g}%)")
        d = []
        for ref in ("sgd", "layer-mean"):
            m = r.get(f"diff_vs_{ref}_mean")
            d.append("—" if m is None else f"{mean_pm_std(m, r[f'diff_vs_{ref}_std'], r[f'diff_vs_{ref}_n'], True)} "
                                           f"({r[f'diff_vs_{ref}_positive']})")
        cells = [str(r.get(k, "")) for k in label_keys] + [r["optimizer"], f"{r['lr']:g}", acc,
                                                           _pct(r["curve_mean_acc_mean"]),
                                                           *([] if forgetting else [ett]), *d]
        if forgetting:
            cells += [f"{_pct(r.get(f'{k}_mean'))} ± {_pct(r.get(f'{k}_std'))}"
                      for k in ("avg_acc", "forgetting", "bwt")]
        lines.append("| " + " | ".join(cells) + " |")
    note = nan_accuracy_note(r.get(k) for r in rows for k in ("final_test_acc_mean", "curve_mean_acc_mean",
                                                              "avg_acc_mean", "forgetting_mean", "bwt_mean"))
    return "\n".join(lines + (["", note] if note else []))       # a paragraph of its own, not a row of the table


def draw_figures(rows: Sequence[dict[str, Any]], comps: Sequence[dict[str, Any]], keys: Sequence[str],
                 groups: Sequence[FigureGroup] | None, out: Path, tail: int = 1) -> list[str]:
    """Draw the report's figures into ``out`` (see the module docstring) from the summary ``rows``, the paired
    comparisons ``comps``, the group ``keys`` and the groups' runs ``groups``; return the file names written, in
    the report's order. accuracy.png always; gain.png with comparisons; curves.png, and with forgetting runs
    matrix.png and forgetting.png, only with ``groups`` (None: the runs are not known)."""
    _plot_accuracy(rows, out, tail)
    files = ["accuracy.png"]
    if comps:
        _plot_gain(comps, keys, out, tail)
        files.append("gain.png")
    if groups is None:
        return files
    _plot_curves(groups, out)
    files.append("curves.png")
    if any(r.extra.get("forgetting") for g in groups for c in g.cells for r in c.runs):
        _plot_matrices(groups, out)
        files += ["matrix.png", "forgetting.png"]
    return files


def _data_root_resolved(results: Sequence[GroupResult]) -> str | None:
    """The absolute folder the groups' real data sets are read from (:func:`~imc_grapes.data.recorded_data_root`
    of their ``data_root``, as given in the options), or None when every group uses the synthetic set. The groups
    share the options' ``data_root``; should they differ, the first group's with a real data set."""
    folders = (recorded_data_root(b.dataset, b.data_root) for b in (res.group.spec.base for res in results))
    return next((f for f in folders if f is not None), None)


def write_experiment_report(experiment: Any, options: Any, results: Sequence[GroupResult], out_dir: str | Path,
                            command: str | None = None, wall_time_s: float | None = None, *,
                            job: str | None = None) -> dict[str, Any]:
    """Write the experiment's report folder (see the module docstring); return the contents of results.json.
    ``job``: the id of the job that ran the groups (:func:`~imc_grapes.io.start_job`), recorded as ``job``."""
    import matplotlib

    matplotlib.use("Agg")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = _summary_rows(results)
    comps = _comparisons(results)
    found = _findings(results, comps)
    machine = machine_info()
    title, notes = experiment.texts_for(options)        # one planning of the groups for both
    data = {
        "experiment": experiment.name, "title": title, "claim": experiment.claim,
        "notes": notes, "size": options.size, "options": options.to_dict(),
        "data_root_resolved": _data_root_resolved(results), "command": command,
        "job": job,         # the id in groups/job.json: this report is of the last job begun in the folder
        "machine": machine, "wall_time_s": wall_time_s,
        "groups": [{**res.group.to_dict(), "folder": str(res.out_dir), "summary": res.rows,
                    "runs": figure_runs(res.cells)} for res in results],
        "summary": rows, "comparisons": comps, "findings": found,
    }
    write_json_atomic(out / "results.json", data)
    write_csv_atomic(out / "summary.csv", rows)
    run_rows = []
    for res in results:
        for c in res.cells:
            for r in c.runs:
                fg = r.extra.get("forgetting") or {}
                run_rows.append(run_row(res.group, c, r, curve_mean_acc=_curve_mean(r), avg_acc=fg.get("avg_acc"),
                                        forgetting=fg.get("forgetting"), bwt=fg.get("bwt")))
    write_csv_atomic(out / "results.csv", run_rows)
    figure_groups = [FigureGroup(res.group.key, res.group.trainer, res.cells) for res in results]
    files = draw_figures(rows, comps, [res.group.key for res in results], figure_groups, out, options.tail_evals)
    train_s = sum(r.wall_time_s for res in results for c in res.cells for r in c.runs)
    label_keys = list(dict.fromkeys(k for res in results for k in res.group.labels))
    lines = [f"# Experiment `{experiment.name}` ({options.size}): {title}", "",
             f"Paper's claim tested: *{experiment.claim}*.", ""]
    if command:
        lines += ["Command:", "", "```", command, "```", ""]
    lines += [f"* machine: {machine['cpu']}, {machine['usable_cores']} usable core(s), torch {machine['torch']}, "
              f"torch threads {machine['torch_threads']}, OPENBLAS_NUM_THREADS={machine['openblas_threads']}"
              + (f"; wall time of this invocation {wall_time_s / 60:.1f} min (runs resumed from an earlier "
                 f"invocation not counted); training time of the final runs {train_s / 60:.1f} min"
                 if wall_time_s is not None else ""),
              f"* optimizers: {', '.join(options.optimizers)}; backends: {', '.join(options.backends)}"
              + (f" (device preset {options.preset}"
                 + (f", device fields {format_device_overrides(options.device_overrides)}"
                    if options.device_overrides else "") + ")"
                 if any(b != 'digital' for b in options.backends) else ""),
              "* each group: learning rate tuned per optimizer on a validation split (never the test set), then "
              "the same seeds for every optimizer; Δ columns are paired differences over the seeds both "
              "optimizers completed (mean ± std, and on how many of them the difference is positive). Every std is "
              "the sample standard deviation over the seeds (n − 1), shown as — when it rests on a single seed."]
    if options.tail_evals > 1:
        lines.append(f"* a run's accuracy (tables, Δ, plots, the lr-tuning score): the mean of its last "
                     f"{options.tail_evals} evaluations")
    if notes:
        lines.append(f"* {notes}")
    lines += ["", "## Results", "", _table(rows, label_keys), ""]
    if found:
        lines += ["## What the numbers say", ""] + [f"* {f}" for f in found] + [""]
    lines += ["## Groups", ""]
    for res in results:
        b = res.group.spec.base
        lines.append(f"* [`{res.group.key}`](groups/{res.group.key}/report.md): train subset "
                     f"{b.train_subset or 'all'}, test subset {b.test_subset or 'all'}, {b.epochs} epoch(s), "
                     f"{b.batching()}, seeds {list(res.group.spec.seeds)}, lr grid {list(res.group.spec.lr_grid)}")
    lines.append("")
    lines += [f"![{f}]({f})\n" for f in files]
    write_bytes_atomic(out / "report.md", "\n".join(lines).encode())
    return data
