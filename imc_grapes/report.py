"""Summaries of several runs: a table (mean ± std over seeds), CSV/JSON files and learning-curve plots."""
from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .io import write_csv_atomic, write_figure_atomic, write_json_atomic
from .plotting import (accuracy_ylim, fit_title, interleaved_dashes, optimizer_color, overlap_groups,
                       overlap_tolerance, plain_log_labels, progress_xlim)
from .stats import mean_std
from .train import RunResult, best_accuracy


#: the line under a table (or a log line) that shows an accuracy as ``nan``: why it has no number. An accuracy is NaN
#: when the model's outputs (logits) are NaN or ±Inf (:func:`~imc_grapes.train.evaluate`; after drift, also finite
#: weights whose outputs overflow float32) or its weights are (:func:`~imc_grapes.inference_eval.accuracy_after_drift`
#: evaluates nothing then); a mean over runs is NaN when one of its runs' accuracies is
#: (:func:`~imc_grapes.stats.mean_std`'s ``nan_propagates``)
NAN_ACCURACY_NOTE = ("nan: the model's outputs (logits) or weights were not finite (NaN/Inf) at that evaluation, so "
                     "it has no accuracy (e.g. outputs beyond the float32 range after drift); a mean over runs is nan "
                     "when one of its runs' is")

#: :data:`NAN_ACCURACY_NOTE`'s short form, where a line or a figure has room for a few words only (inference.png's
#: note, the sweep's per-point log line)
NAN_ACCURACY_SHORT = "weights or outputs not finite (NaN/Inf)"


def nan_accuracy_note(accuracies: Iterable[object]) -> str | None:
    """:data:`NAN_ACCURACY_NOTE` when one of ``accuracies`` (the accuracies a table or log line shows, None for
    none) is NaN, which it shows as ``nan``; None when none is."""
    return NAN_ACCURACY_NOTE if any(isinstance(a, float) and math.isnan(a) for a in accuracies) else None


def mean_pm_std(mean: float, std: float | None, n: int, sign: bool = False) -> str:
    """``mean ± std`` of fractions, in % (points), 2 decimals (``+`` on a positive mean with ``sign``); the std
    as ``—`` when it rests on fewer than 2 values (``n``): a single seed has no seed-to-seed spread (its stored
    std is 0)."""
    text = f"{100 * mean:+.2f}" if sign else f"{100 * mean:.2f}"
    return text + (f" ± {100 * (std or 0.0):.2f}" if n >= 2 else " ± —")


def seed_band(values: Any) -> tuple[Any, Any]:
    """Mean and sample standard deviation (ddof = 1, as the tables' mean ± std) over the seeds, axis 0 of a numpy
    array ``[seeds, points]``; a zero spread for one seed."""
    mean = values.mean(0)
    return mean, values.std(0, ddof=1) if len(values) > 1 else 0 * mean


def cell_label(optimizer: str, lr: float, done: int, runs: int) -> str:
    """A legend entry for a (hardware, optimizer) cell's curve: its optimizer, lr and the runs its mean is over
    (``n=3``; ``n=2 of 3`` when the others did not complete; ``no completed run`` when none did)."""
    if not done:
        return f"{optimizer} (lr {lr:g}): no completed run of {runs}"
    return f"{optimizer} (lr {lr:g}, n={done}" + (f" of {runs}" if done < runs else "") + ")"


def draw_cell_curves(ax: Any, cells: Sequence[Any], xlabel: str = "epoch", ylabel: str = "test accuracy (%)",
                     widen: bool = True) -> int:
    """Draw on ``ax`` each cell's (an object with ``optimizer``, ``lr`` and ``runs``, a list of
    :class:`~imc_grapes.train.RunResult`) test accuracy (%) against its evaluations' ``epoch``: the mean over its
    completed runs (a diverged run's shorter curve would cut the others' to its length) and a band of ± their
    sample std (:func:`seed_band`), in the optimizer's colour (:func:`~imc_grapes.plotting.optimizer_color`),
    labelled by :func:`cell_label`; a cell without a completed run gets a legend entry that says so and no line.
    Sets the axis labels, an x axis from 0 (:func:`~imc_grapes.plotting.progress_xlim`: whole-number ticks for
    whole-number x) and, with ``widen``, widens a narrow accuracy range
    (:func:`~imc_grapes.plotting.accuracy_ylim`; panels that share their y axis widen it once all are drawn).
    Curves that would hide each other (equal, within :func:`~imc_grapes.plotting.overlap_tolerance`, at the same
    epochs: :func:`~imc_grapes.plotting.overlap_groups`) are drawn with dashes that take turns
    (:func:`~imc_grapes.plotting.interleaved_dashes`), so that each one's colour shows; the others are solid.
    Returns the number of cells drawn with a line."""
    import numpy as np

    entries: list[tuple[Any, ...]] = []     # per cell, in order: (x, mean, std, colour, label), or (colour, label)
    for k, c in enumerate(cells):
        runs = [r for r in c.runs if _completed(r)]
        color = optimizer_color(c.optimizer, k)
        if not runs:
            if c.runs:
                entries.append((color, cell_label(c.optimizer, c.lr, 0, len(c.runs))))
            continue
        n = min(len(r.history) for r in runs)
        x = np.array([h["epoch"] for h in runs[0].history[:n]], dtype=float)
        mean, std = seed_band(np.array([[100 * h["test_acc"] for h in r.history[:n]] for r in runs]))
        entries.append((x, mean, std, color, cell_label(c.optimizer, c.lr, len(runs), len(c.runs))))
    curves = [e for e in entries if len(e) == 5]
    styles = iter(_curve_styles(curves))
    for e in entries:       # in the cells' order (the legend's)
        if len(e) == 5:
            _draw_curve(ax, *e, next(styles), ms=3)
        else:               # a cell without a completed run: a legend entry that says so, no line
            ax.plot([], [], color=e[0], linestyle="none", marker="x", label=e[1])
    drawn = len(curves)
    xs = [float(v) for x, *_ in curves for v in x]
    ax.set(xlabel=xlabel, ylabel=ylabel)
    if drawn:
        progress_xlim(ax, xs)           # from 0; a lone evaluation is not a dot on an axis of 0.96–1.04
    if drawn and widen:
        accuracy_ylim(ax)
    return drawn


def _curve_styles(curves: Sequence[tuple[Any, ...]], log: bool = False) -> list[Any]:
    """The matplotlib ``linestyle`` of each ``(x, mean, ...)`` curve drawn on one axes: curves that would hide
    each other (:func:`~imc_grapes.plotting.overlap_groups`: the same x, means within
    :func:`~imc_grapes.plotting.overlap_tolerance` of all the means; compared in log10 with ``log``, a log y axis)
    take turns in dashes (:func:`~imc_grapes.plotting.interleaved_dashes`), the others are solid (``"-"``)."""
    import numpy as np

    def shown(y: Any) -> list[float]:   # the y values as the axis places them (a non-positive one: nowhere, NaN)
        y = np.asarray(y, dtype=float)
        return list(np.where(y > 0, np.log10(np.where(y > 0, y, 1.0)), np.nan) if log else y)

    tol = overlap_tolerance([v for c in curves for v in shown(c[1])])
    groups = overlap_groups([(list(c[0]), shown(c[1])) for c in curves], tol)
    return ["-" if g == 1 else interleaved_dashes(k, g) for k, g in groups]


def _draw_curve(ax: Any, x: Any, mean: Any, std: Any, color: str, label: str, linestyle: Any,
                ms: float | None = None) -> None:
    """One curve on ``ax``: ``mean`` against ``x`` (numpy arrays of one length) as a line with markers, and a band
    of ``mean ± std``."""
    style = {} if ms is None else {"ms": ms}
    ax.plot(x, mean, marker="o", color=color, label=label, linestyle=linestyle, **style)
    ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.2)


def _completed(r: RunResult) -> bool:
    """Whether ``r`` ran to its end (a diverged run's last row is not a final result)."""
    return r.status == "completed" and bool(r.history)


def summarise(results: Sequence[RunResult], key: str = "optimizer") -> list[dict[str, Any]]:
    """One row per value of config field ``key``: final/best test accuracy and final train loss (mean, std over the
    completed runs; a diverged run's partial history is left out; a run's best: :func:`_best`, NaN-aware), the runs
    and how many diverged; where runs were
    evaluated after programming noise and drift (``TrainConfig.inference_times``, analog runs), the mean accuracy
    at each time over the completed runs, as ``inference_acc@<seconds>`` (a fraction; None without a completed
    run), with its sample std ``inference_acc_std@<seconds>`` (0 for one finite run) and the runs it rests on
    ``inference_n@<seconds>``, as compare's summary.

    NaN policy: a completed run's NaN (its final or inference accuracy: its network broke) makes the group's mean
    and std NaN, as in compare's summary (:func:`~imc_grapes.compare.summarise_cells`; both take them from
    :func:`~imc_grapes.stats.mean_std` with ``nan_propagates``): it is a result of the method, and a mean of the
    other runs would cover fewer runs than the row says. Only None (not measured) is left out."""
    groups: dict[Any, list[RunResult]] = {}
    for r in results:
        groups.setdefault(getattr(r.config, key), []).append(r)
    rows = []
    for value, runs in groups.items():
        done = [r for r in runs if _completed(r)]
        final_mean, final_std = mean_std([r.history[-1]["test_acc"] for r in done], nan_propagates=True)
        rows.append({
            key: value,
            "runs": len(runs),
            "diverged": sum(r.status == "diverged" for r in runs),
            "final_test_acc_mean": final_mean,
            "final_test_acc_std": final_std,
            "best_test_acc_mean": mean_std([_best(r) for r in done], nan_propagates=True)[0],
            "final_train_loss_mean": statistics.fmean(r.history[-1]["train_loss"] for r in done) if done else None,
            "wall_time_s_mean": statistics.fmean(r.wall_time_s for r in runs),
        })
    times = sorted({t for r in results for t in _inference(r)}, key=float)
    for row, runs in zip(rows, groups.values()):
        done = [r for r in runs if _completed(r)]
        for t in times:
            accs = [_inference(r)[t] for r in done if t in _inference(r)]
            row[f"inference_acc@{t}"], row[f"inference_acc_std@{t}"] = mean_std(accs, nan_propagates=True)
            row[f"inference_n@{t}"] = len(accs)
    return rows


def _best(r: RunResult) -> float:
    """A run's best test accuracy (:func:`~imc_grapes.train.best_accuracy`: a NaN evaluation never wins, wherever
    it stands); NaN when the run has no finite one, which makes its group's ``best_test_acc_mean`` NaN as a NaN final
    accuracy makes ``final_test_acc_mean`` NaN (a mean over the other runs would cover fewer runs than it says)."""
    best = best_accuracy(r.history)
    return math.nan if best is None else best


def _inference(r: RunResult) -> dict[str, float]:
    """A run's accuracy after programming noise and drift, ``{time_key: accuracy}`` (empty: not evaluated)."""
    return r.extra.get("inference") or {}


def format_table(rows: Sequence[dict[str, Any]], key: str = "optimizer") -> str:
    """A plain-text table of :func:`summarise` rows; a group with diverged runs shows ``completed/runs`` and its
    means are over the completed ones (a note below the table says so). Rows with ``inference_acc@<seconds>``
    get one column per time, the mean accuracy (%) after programming noise and drift (``@1h``, ``@1y``). An
    accuracy that is NaN reads ``nan``, and a last line (:data:`NAN_ACCURACY_NOTE`) says why."""
    from .inference_eval import time_label

    inf = sorted({k for r in rows for k in r if k.startswith("inference_acc@")}, key=lambda k: float(k.split("@")[1]))
    heads = [f"@{time_label(float(k.split('@')[1]))} (%)" for k in inf]
    widths = [max(8, len(h)) for h in heads]
    lines = [f"{key:<14} {'runs':>5}  {'final test acc (%)':>20}  {'best (%)':>9}  {'train loss':>10}  {'time (s)':>8}"
             + "".join(f"  {h:>{w}}" for h, w in zip(heads, widths)),
             "-" * (75 + sum(w + 2 for w in widths))]
    for r in rows:
        diverged = r.get("diverged", 0)
        runs = f"{r['runs'] - diverged}/{r['runs']}" if diverged else str(r["runs"])
        if r["final_test_acc_mean"] is None:
            lines.append(f"{str(r[key]):<14} {runs:>5}  {'diverged' if diverged else 'no result':>20}")
            continue
        acc = mean_pm_std(r["final_test_acc_mean"], r["final_test_acc_std"], r["runs"] - diverged)
        cells = "".join(f"  {'—' if r.get(k) is None else format(100 * r[k], '.2f'):>{w}}" for k, w in zip(inf, widths))
        lines.append(f"{str(r[key]):<14} {runs:>5}  {acc:>20}  {100 * r['best_test_acc_mean']:>9.2f}  "
                     f"{r['final_train_loss_mean']:>10.4f}  {r['wall_time_s_mean']:>8.1f}" + cells)
    if any(r.get("diverged", 0) for r in rows):
        lines.append("runs k/n: k of n runs completed, the others diverged; the means are over the completed ones")
    if inf:
        lines.append("@t: mean test accuracy after PCM-like programming noise, drift and read noise, read a time t "
                     "after programming (global drift compensation; imc_grapes/inference_eval.py)")
    shown = [r.get(k) for r in rows if r["final_test_acc_mean"] is not None
             for k in ("final_test_acc_mean", "best_test_acc_mean", *inf)]
    note = nan_accuracy_note(shown)
    if note:
        lines.append(note)
    return "\n".join(lines)


def plot_curves(results: Sequence[RunResult], path: str | Path, key: str = "optimizer") -> Path:
    """Test accuracy and train loss vs epoch, one line per value of ``key`` (mean over the completed runs, band =
    ±std; a value none of whose runs completed is named in the legend), in the optimizers' colours
    (:func:`~imc_grapes.plotting.optimizer_color`); the epoch axes start at 0
    (:func:`~imc_grapes.plotting.progress_xlim`), and a loss axis of less than a decade has plain-number labels
    (:func:`~imc_grapes.plotting.plain_log_labels`). Lines that would hide each other on a panel (equal curves,
    e.g. two optimizers that coincide) take turns in dashes (:func:`~imc_grapes.plotting.interleaved_dashes`); the
    others are solid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 4))
    groups: dict[Any, list[RunResult]] = {}
    for r in results:
        if _completed(r):       # a diverged run's shorter curve would cut the others' to its length
            groups.setdefault(getattr(r.config, key), []).append(r)
    shown: list[float] = []             # every epoch drawn
    curves: dict[str, list[tuple[Any, Any, Any, str, str]]] = {"test_acc": [], "train_loss": []}
    for k, (value, runs) in enumerate(groups.items()):
        n = min(len(r.history) for r in runs)
        epochs = np.array([h["epoch"] for h in runs[0].history[:n]], dtype=float)
        shown += list(epochs)
        color = optimizer_color(value if key == "optimizer" else None, k)   # SGD blue, GRAPES orange, as elsewhere
        for metric, scale in (("test_acc", 100.0), ("train_loss", 1.0)):
            vals = np.array([[h[metric] * scale for h in r.history[:n]] for r in runs])
            mean, std = seed_band(vals)
            curves[metric].append((epochs, mean, std, color, f"{value} (n={len(runs)})"))
    for ax, metric in ((ax_acc, "test_acc"), (ax_loss, "train_loss")):
        for curve, style in zip(curves[metric], _curve_styles(curves[metric], log=metric == "train_loss")):
            _draw_curve(ax, *curve, style)
    ax_acc.set(xlabel="epoch", ylabel="test accuracy (%)", title="Test accuracy (mean ± std over runs)")
    ax_loss.set(xlabel="epoch", ylabel="train loss (cross-entropy, nats)",
                title="Training loss (mean ± std over runs)",
                yscale="log" if groups else "linear")     # a log axis without data warns
    if groups:
        accuracy_ylim(ax_acc)
        for ax in (ax_acc, ax_loss):    # from 0; one evaluation per run is not a dot on an axis of 0.96–1.04
            progress_xlim(ax, shown)
        plain_log_labels(ax_loss.yaxis)     # less than a decade of loss: 0.9, 1, 2, not 9×10⁻¹, 10⁰, 2×10⁰
        every = list(dict.fromkeys(getattr(r.config, key) for r in results))
        for k, value in enumerate(every):
            if value not in groups:       # every run of it diverged: said in the legend, not left out in silence
                stopped = sum(getattr(r.config, key) == value for r in results)
                for ax in (ax_acc, ax_loss):
                    ax.plot([], [], color=optimizer_color(value if key == "optimizer" else None, len(groups) + k),
                            linestyle="none", marker="x", label=f"{value}: no completed run of {stopped}")
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
        if groups:
            ax.legend()
        else:   # every run diverged: an empty plot that says so (no legend warning)
            ax.text(0.5, 0.5, "no completed run\n(every run diverged)", ha="center",
                    va="center", transform=ax.transAxes, color="0.4")
    first = results[0].config
    model = f"{first.model} {list(first.hidden)}" if first.model == "mlp" else first.model
    hardware = "digital" if first.backend == "digital" else f"{first.backend} {first.analog.preset}"
    fig.suptitle(fit_title(fig, f"{first.dataset} · {model} · rule {first.rule} · base {first.base_optimizer}"
                                f" · {hardware}", "figure.titlesize"))
    fig.tight_layout()
    path = write_figure_atomic(path, fig, dpi=120)
    plt.close(fig)
    return path


def write_summary(results: Sequence[RunResult], out_dir: str | Path, key: str = "optimizer") -> list[dict[str, Any]]:
    """Write ``summary.csv``, ``summary.json`` (rows + every run's config and final metrics) and
    ``curves.png`` into ``out_dir``; return the summary rows."""
    out = Path(out_dir)
    rows = summarise(results, key)
    write_csv_atomic(out / "summary.csv", rows)
    write_json_atomic(out / "summary.json", {
        "group_by": key, "summary": rows,
        "runs": [{"run_dir": str(r.run_dir) if r.run_dir else None, "status": r.status, "message": r.message,
                  "final": r.history[-1] if r.history else None, "config": r.config.to_dict()} for r in results],
    })
    plot_curves(results, out / "curves.png", key)
    return rows
