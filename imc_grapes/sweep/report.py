"""Sweep reports: ``summary.csv`` (one row per point) and plots of accuracy against the swept parameters.

Written into the sweep folder:

* ``summary.csv`` — point id, folder (the name of its folder in ``points/``: its id, or the earlier id whose
  folder holds its result; empty for a pending point), status (``running`` for a point in progress while a sweep
  process runs in the folder, ``half-finished`` for one left by a killed run), ``failure`` (why a failed point
  failed: ``diverged`` or ``crashed``), failure reason, the swept parameters, final metrics (with ``[sweep]
  tail_evals = K > 1`` also ``tail_test_acc``, the mean of the last K evaluations, which the plots then show),
  ``epochs_run`` (the epochs trained at the point's last evaluation: less than the config's ``epochs`` for a
  point that failed early), wall time, then every other config field (top-level names, ``analog.*``,
  ``device.*``; ``epochs`` is the number asked for);
* ``plots/acc_vs_<axis>.png`` — final test accuracy against each swept parameter (mean ± std over seeds and
  the other swept axes), one line per optimizer (and per backend when the analog points ran on several: a
  ``backend = ["crossbar", "aihwkit"]`` axis; so too the heat maps' panels and the other plots); the
  ideal-digital accuracy of each optimizer as a dashed reference when the sweep has digital points next to
  analog ones (``reference = true`` or a ``backend`` axis): per value of the axis when the digital points ran at
  each value (``lr``, a model axis: each analog point against the digital run at its own value), a horizontal line
  when the axis is hardware that digital weights do not have (``device.*``, ``analog.*``); groups whose every run
  failed are marked at 0 by how, ✕ "all runs failed: diverged", + "all runs failed: crashed" (X: both kinds);
  every legend entry says how many runs its means rest on and which points they leave out (failed: diverged /
  failed: crashed, as the table's notes say; running: in progress while a sweep process holds the folder's lock,
  as in the table; not run yet; finished without a finite accuracy);
* ``plots/heatmap_<a>__<b>.png`` — mean final test accuracy over each pair of swept parameters, one panel per
  optimizer; ``n=k/N`` under a mean of only k of the cell's N runs; a cell without a mean reads ``failed:
  diverged`` / ``failed: crashed`` (both kinds: ``failed: diverged, crashed``), ``no finite acc``, ``running`` (a
  point of it in progress) or ``—`` (not run yet); a cell that no point has (a sampled design) is left blank;
* ``plots/accuracy.png`` — per optimizer, when nothing but optimizer/seed/backend is swept;
* ``plots/diagnostics_vs_<axis>.png`` — for each numeric swept parameter, when points recorded per-layer
  diagnostics (``final_M_mean/<layer>``, ``final_M_err/<layer>``, ``final_M_corr/<layer>``, ``final_sat/<layer>``):
  one panel per diagnostic, one line per optimizer and layer (mean ± std over seeds and the other swept axes).

Series that coincide (same x values, means within :data:`~imc_grapes.plotting.OVERLAP_SHARE` of the panel's y span)
are drawn a little left and right of their values (:func:`~imc_grapes.plotting.dodged_x`), equal horizontal
references with alternating dashes (:func:`~imc_grapes.plotting.interleaved_dashes`): none hides another.

Means and stds (sample std, n − 1; 0 for one run) are :func:`~imc_grapes.stats.mean_std`'s. NaN policy: a point
whose accuracy (or diagnostic) is NaN, ±Inf or missing is left out of the mean of its group, unlike the accuracy
means of ``compare`` (``nan_propagates``), because every mean here says what it leaves out and why: the legends
(``1 without a finite acc``), the heat maps' ``n=k/N``, the printed table's ``(n=k of N)`` and its notes naming the
seeds left out, so a mean over fewer points never passes for one over all of them.
"""
from __future__ import annotations

import functools
import itertools
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from devices.base import is_finite_number, is_number

from ..io import write_csv_atomic, write_figure_atomic
from ..plotting import (dodged_x, fit_title, interleaved_dashes, optimizer_color, overlap_groups,
                        overlap_tolerance)
from ..stats import mean_std
from .runner import SweepStatus, resolve_out, sweep_status
from .spec import Point, SweepSpec, _fmt_value, _plain, repeated_points_note
from .store import DIAGNOSTICS, DONE, FAILED, FAILURES, PARTIAL, PENDING, SweepStore

METRIC = "final_test_acc"
#: a point's accuracy over its last ``[sweep] tail_evals`` evaluations (present when that is > 1)
TAIL_METRIC = "tail_test_acc"
METRIC_COLUMNS = ("final_test_acc", "best_test_acc", "final_test_loss", "final_train_acc", "final_train_loss",
                  "epochs_run", "wall_time_s")
#: axes that are not plotted on an x axis: they split lines (optimizer), are averaged over (seed) or pick the
#: reference line (backend)
GROUP_AXES = ("optimizer", "seed", "backend")
MAX_HEATMAPS = 6
#: the names of the plots a report writes into ``plots/``: one of an earlier report that this one does not write
#: again (an axis or a diagnostic the spec no longer has) is removed, so that ``plots/`` shows this report only
PLOT_PATTERNS = ("acc_vs_*.png", "heatmap_*__*.png", "accuracy.png", "diagnostics_vs_*.png")
#: what the report calls a half-finished point while a sweep process holds the folder's lock: it is being run now
RUNNING = "running"


def _config_columns(cfg: dict[str, Any]) -> dict[str, Any]:
    """A config dict flattened with sweep-path names (``lr``, ``analog.adc_bits``, ``device.dw_min``)."""
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        if k == "analog":
            for ak, av in v.items():
                if ak == "device_overrides":
                    out.update({f"device.{dk}": dv for dk, dv in av.items()})
                else:
                    out[f"analog.{ak}"] = av
        else:
            out[k] = v
    return out


def _cell(v: Any) -> Any:
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(_plain(v))
    return v


def summary_rows(spec: SweepSpec, out_dir: str | os.PathLike[str] | None = None,
                 points: Sequence[Point] | None = None, status: SweepStatus | None = None) -> list[dict[str, Any]]:
    """One row per point of ``spec``: id, folder (the name of its folder in ``points/``: its id, or for a point
    read in the folder of the id an earlier version gave it, that id:
    :attr:`~imc_grapes.sweep.runner.PointStatus.folder`; empty for a pending point, which has none), status (a
    half-finished point is ``running`` while a sweep process holds the folder's lock), failure (``diverged`` /
    ``crashed`` for a failed point, else empty), reason, swept params, metrics (a done point's), ``epochs_run`` (the
    epochs trained at the point's last evaluation, a failed point's too), wall time, the final per-layer
    diagnostics of the points that have them (``final_M_mean/<layer>``, ``final_M_corr/…``, ``final_M_err/…``,
    ``final_sat/…``; empty elsewhere), config fields (``epochs``: the epochs asked for, as in compare's
    ``results.csv``). ``status``: :func:`~imc_grapes.sweep.runner.sweep_status` of these points there, when the
    caller has read it already (:func:`write_report`), else read here."""
    status = status if status is not None else sweep_status(spec, out_dir, points)
    diagnostics = sorted({k for ps in status.points for k in ps.metrics if "/" in k})
    store = SweepStore(status.out_dir)
    store.find_legacy([ps.point for ps in status.points])     # a point's run.json in the folder of an earlier id
    covered = set()
    for ax in spec.axes:
        covered.add(ax.name)
        covered.add(f"analog.{ax.path.field}" if ax.path.section == "analog" else
                    f"device.{ax.path.field}" if ax.path.section == "device" else ax.path.field)
    rows = []
    for ps in status.points:
        p = ps.point
        state = RUNNING if ps.state == PARTIAL and status.running else ps.state
        # the folder of its files: its id, or the earlier id whose folder it is read in (none while pending)
        folder = ps.folder or (p.id if ps.state != PENDING else "")
        row: dict[str, Any] = {"point": p.id, "folder": folder, "status": state, "failure": ps.failure,
                               "reason": ps.reason, "reference": p.reference}
        row.update({k: _cell(v) for k, v in p.params.items()})
        row.update({k: ps.metrics.get(k) for k in METRIC_COLUMNS if k not in ("epochs_run", "wall_time_s")})
        # how far the point got, a failed one too; the config column ``epochs`` (or the axis) says what was asked
        row["epochs_run"] = ps.epochs_run
        if spec.tail_evals > 1:
            row[TAIL_METRIC] = ps.metrics.get(TAIL_METRIC)
        row["wall_time_s"] = store.read_run_info(p.id).get("wall_time_s") if ps.state in (DONE, FAILED) else None
        row.update({k: ps.metrics.get(k) for k in diagnostics})
        row.update({k: _cell(v) for k, v in _config_columns(p.config.to_dict()).items() if k not in covered})
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------- plots


def _key(v: Any) -> str:
    return json.dumps(_plain(v), sort_keys=True)


def _ordered_values(values: Sequence[Any]) -> list[Any]:
    uniq: dict[str, Any] = {}
    for v in values:
        uniq.setdefault(_key(v), v)
    vals = list(uniq.values())
    return sorted(vals) if vals and all(is_number(v) for v in vals) else vals


def _acc(ps: Any) -> float | None:
    """A finished point's accuracy: the mean of its last evaluations where the spec asks for it
    (:data:`TAIL_METRIC`), else its final one."""
    v: Any = ps.metrics.get(TAIL_METRIC, ps.metrics.get(METRIC)) if ps.state == DONE else None
    return float(v) if is_finite_number(v) else None


def _failed_text(failure: str) -> str:
    """How a failed point is named in the notes and legends: ``failed: diverged`` / ``failed: crashed`` by its
    ``failure``, plain ``failed`` when that is not known."""
    return f"failed: {failure}" if failure else "failed"


def _failed_kinds(group: Sequence[Any]) -> str:
    """How the failed points of ``group`` are named where one mark stands for them (a heat-map cell without a mean,
    the ✕ of a group whose every run failed): :func:`_failed_text` of the kinds among them, in :data:`FAILURES`
    order (``failed: diverged``, ``failed: crashed``, ``failed: diverged, crashed``), plain ``failed`` when no kind
    is known."""
    kinds = [ps.failure for ps in group if ps.state == FAILED and ps.failure]
    return _failed_text(", ".join(dict.fromkeys([k for k in FAILURES if k in kinds] + kinds)))


#: the marker at 0 of a group whose every run failed, by :func:`_failed_kinds` (any other text: ``X``)
FAILED_MARKERS = {_failed_text(k): m for k, m in zip(FAILURES, ("x", "+"))}


def _left_out(group: Sequence[Any], value: Callable[[Any], float | None] = _acc, what: str = "acc",
              running: bool = False) -> str:
    """Which points of ``group`` (:class:`~imc_grapes.sweep.runner.PointStatus`) a mean of their ``value`` leaves
    out, counted by why (``"1 failed: diverged, 1 failed: crashed, 1 running, 2 not run yet, 1 without a finite
    acc"``; "" when none): failed points by their ``failure`` (diverged, crashed; plain ``failed`` when not known,
    as the table's notes name them), points in progress (half-finished while a sweep process holds the folder's
    lock: ``running``, as the printed table and ``summary.csv`` call them), points not run yet (pending, or
    half-finished when no sweep runs: left by a killed run), and done points without a finite ``value`` (NaN, or
    the metric missing)."""
    no_value = f"without a finite {what}"
    reasons = [_why_left_out(ps, running, no_value) for ps in group if ps.state != DONE or value(ps) is None]
    # failed first (the known kinds, then any other), then running, not run yet, without a finite value
    order = [*(_failed_text(k) for k in FAILURES), *(r for r in reasons if r.startswith("failed")), RUNNING,
             "not run yet", no_value]
    return ", ".join(f"{reasons.count(why)} {why}" for why in dict.fromkeys(order) if reasons.count(why))


def _why_left_out(ps: Any, running: bool, no_value: str) -> str:
    """Why a point is left out of a mean (the notes' and legends' words): ``failed: diverged`` / ``failed: crashed``
    (:func:`_failed_text`), ``running`` (half-finished while a sweep process holds the folder's lock), ``not run yet``
    (pending, or half-finished when no sweep runs: left by a killed run), else ``no_value`` (a done point without a
    finite value)."""
    if ps.state == FAILED:
        return _failed_text(ps.failure)
    if ps.state == PARTIAL and running:
        return RUNNING
    return "not run yet" if ps.state in (PENDING, PARTIAL) else no_value


def _n_text(ns: Sequence[int]) -> str:
    """``n=3``, or ``n=1–3`` when the means of a line (a bar series) rest on different numbers of runs."""
    return f"n={ns[0]}" if min(ns) == max(ns) else f"n={min(ns)}–{max(ns)}"


def _with_left_out(text: str, left: str) -> str:
    """``text`` and, when ``left`` (:func:`_left_out`) is not empty, ``; left out: <left>``."""
    return f"{text}; left out: {left}" if left else text


def _acc_label(spec: SweepSpec) -> str:
    return ("final test accuracy" if spec.tail_evals == 1 else
            f"test accuracy, mean of the last {spec.tail_evals} evaluations")


def _split(status_points: Sequence[Any]) -> tuple[list[Any], list[Any]]:
    """(main points, digital reference points): the reference only when digital and analog points coexist."""
    digital = [ps for ps in status_points if ps.point.config.backend == "digital"]
    analog = [ps for ps in status_points if ps.point.config.backend != "digital"]
    return (analog, digital) if digital and analog else (list(status_points), [])


def _optimizers(pts: Sequence[Any]) -> list[str]:
    return list(dict.fromkeys(ps.point.config.optimizer for ps in pts))


def _backends(pts: Sequence[Any]) -> list[str]:
    """The backends of ``pts``: points of different backends (a ``backend = ["crossbar", "aihwkit"]`` axis) are
    drawn apart, never averaged together."""
    return list(dict.fromkeys(ps.point.config.backend for ps in pts))


def _series_name(opt: str, backend: str, backends: Sequence[str]) -> str:
    """A line's (a panel's) name: the optimizer, and its backend when the plot shows more than one."""
    return opt if len(backends) <= 1 else f"{opt}, {backend}"


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt: Any, fig: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``fig`` as a PNG at ``path`` (creating its folder) and close it."""
    path = write_figure_atomic(path, fig, dpi=120)
    plt.close(fig)
    return path


#: a numeric axis whose positive values span this factor or more is drawn on a log scale (:func:`_x_scale`)
LOG_AXIS_SPAN = 10.0
#: at most this many values get a tick each on a log axis; more keep matplotlib's ticks at the powers of ten
MAX_VALUE_TICKS = 8


def _x_scale(ax: Any, values: Sequence[float]) -> str:
    """Set and return the x scale of a numeric sweep axis: ``log`` for values > 0 whose largest is
    :data:`LOG_AXIS_SPAN` (10) times their smallest or more, ``symlog`` (linear up to the smallest positive value)
    for such values with 0 among them, else ``linear``; no negative value is ever on a log axis. On a log axis
    each value (up to :data:`MAX_VALUE_TICKS`) gets a tick labelled with it and no other tick is labelled: a log
    axis's default labels are the powers of ten, and on one that spans a decade or two they name the minor ticks
    too, which crowd."""
    import matplotlib.ticker as ticker

    positive = [float(v) for v in values if v > 0]
    if not positive or min(values) < 0 or max(positive) / min(positive) < LOG_AXIS_SPAN:
        return "linear"
    scale = "log" if len(positive) == len(values) else "symlog"
    if scale == "log":
        ax.set_xscale("log")
    else:
        ax.set_xscale("symlog", linthresh=min(positive))
    ticks = sorted({float(v) for v in values})
    if len(ticks) <= MAX_VALUE_TICKS:
        ax.set_xticks(ticks, [_fmt_value(v) for v in ticks])
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    return scale


def reference_groups(ref: Sequence[Any], optimizer: str, axis: str) -> dict[str | None, list[float]]:
    """The finished digital reference points of ``optimizer`` grouped by their value of ``axis``: ``_key(value)``
    -> their accuracies; the key is None for points that have no value of ``axis`` (a hardware axis, which a digital
    point does not have: one reference for every value)."""
    out: dict[str | None, list[float]] = {}
    for ps in ref:
        a = _acc(ps)
        if ps.point.config.optimizer == optimizer and a is not None:
            v = ps.point.params.get(axis)
            out.setdefault(None if v is None else _key(v), []).append(a)
    return out


#: a legend of more entries than this stands below its axes (constrained layout), where it covers no data
LEGEND_INSIDE_MAX = 3


def _legend_below(ax: Any, fontsize: float) -> None:
    """The legend of ``ax`` (none without labelled artists): inside, at matplotlib's best place, up to
    :data:`LEGEND_INSIDE_MAX` entries; below the axes beyond that, where a long legend (one entry per optimizer,
    backend, reference and layer) cannot cover a point or an error bar; the figure grows by its height."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    if len(handles) <= LEGEND_INSIDE_MAX:
        ax.legend(fontsize=fontsize)
        return
    fig = ax.get_figure()
    fig.set_figheight(fig.get_figheight() + 0.2 * len(handles) * fontsize / 8)
    # 40 pt below the axes: under the tick labels and the x label (borderaxespad is in units of the font size)
    ax.legend(fontsize=fontsize, loc="upper center", bbox_to_anchor=(0.5, 0.0), borderaxespad=40 / fontsize)


def plot_axis(spec: SweepSpec, status_points: Sequence[Any], axis: str, path: str | os.PathLike[str],
              others: Sequence[str] = (), running: bool = False) -> Path:
    """Final test accuracy (%) vs ``axis``: mean ± std per optimizer (and backend, when the analog points ran on
    several), digital references
    (:func:`reference_groups`: per value of ``axis``, or one horizontal line for a hardware axis); write a PNG.
    ``running``: a sweep process holds the folder's lock, so the legends count half-finished points as running
    (:func:`_left_out`)."""
    plt = _plt()
    main, ref = _split(status_points)
    main = [ps for ps in main if ps.point.params.get(axis) is not None]
    values = _ordered_values([ps.point.params[axis] for ps in main])
    numeric = all(is_number(v) for v in values)
    xs = {_key(v): (float(v) if numeric else float(i)) for i, v in enumerate(values)}
    fig, ax = plt.subplots(figsize=(6.4, 4.4), layout="constrained")
    if numeric:
        _x_scale(ax, values)            # before the lines: overlapping ones are dodged on the axis's scale
    else:
        ax.set_xticks(list(xs.values()), [_fmt_value(v) for v in values])
    failed_labels: set[str] = set()                  # one legend entry per kind of ✕
    backends = _backends(main)
    # what is drawn, in legend order, collected first so that equal series can be told apart: (x, y) series drawn
    # by ``draw(x, y, *args, **kwargs)``, and horizontal references drawn by ``draw(linestyle=…)``
    series: list[tuple[list[float], list[float], Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = []
    levels: list[tuple[float, Callable[..., Any]]] = []
    for i, opt in enumerate(_optimizers(main + ref)):
        color = optimizer_color(opt, i)       # SGD blue, GRAPES orange, as in every report
        for b, backend in enumerate(backends):        # one line per optimizer and (analog) backend
            pts = [ps for ps in main if ps.point.config.optimizer == opt and ps.point.config.backend == backend]
            line_x, line_m, line_s, line_n = [], [], [], []
            fail_x: dict[str, list[float]] = {}      # the ✕ of the groups whose every run failed, by their kinds
            for v in values:
                group = [ps for ps in pts if _key(ps.point.params[axis]) == _key(v)]
                accs = [a for a in (_acc(ps) for ps in group) if a is not None]
                m, s = mean_std(accs)
                if m is not None and s is not None:
                    line_x.append(xs[_key(v)])
                    line_m.append(100 * m)
                    line_s.append(100 * s)
                    line_n.append(accs)
                elif any(ps.state == FAILED for ps in group):     # pending points (not run yet) are not drawn
                    fail_x.setdefault(_failed_kinds(group), []).append(xs[_key(v)])
            if line_x:
                n = _with_left_out(f"{_n_text([len(g) for g in line_n])} per point", _left_out(pts, running=running))
                series.append((line_x, line_m, ax.errorbar, (), dict(
                    yerr=line_s, marker="os^Dv"[b % 5], linestyle=("-", ":", "-.")[b % 3], capsize=3, color=color,
                    label=f"{_series_name(opt, backend, backends)} ({n})")))
            for kinds, kx in fail_x.items():
                label = f"all runs {kinds}"
                series.append((kx, [0.0] * len(kx), ax.plot, (FAILED_MARKERS.get(kinds, "X"),), dict(
                    color=color, markersize=9, label="_nolegend_" if label in failed_labels else label)))
                failed_labels.add(label)
        by_value = reference_groups(ref, opt, axis)
        ref_left = _left_out([ps for ps in ref if ps.point.config.optimizer == opt], running=running)
        m, s = mean_std(by_value.get(None, []))
        if m is not None and s is not None:           # the axis is hardware: one digital reference for all values
            n = _with_left_out(f"n={len(by_value[None])}", ref_left)
            levels.append((100 * m, functools.partial(
                ax.axhline, 100 * m, color=color, linewidth=1.2, label=f"{opt}, ideal digital (no {axis}; {n})")))
            if s > 0:
                ax.axhspan(100 * (m - s), 100 * (m + s), color=color, alpha=0.08)
        else:                                         # each value against the digital runs at that value
            rx, rm, rs, ns = [], [], [], []
            for v in values:
                ref_m, ref_s = mean_std(by_value.get(_key(v), []))
                if ref_m is not None and ref_s is not None:
                    rx.append(xs[_key(v)])
                    rm.append(100 * ref_m)
                    rs.append(100 * ref_s)
                    ns.append(len(by_value[_key(v)]))
            if rx:
                n = _with_left_out(f"{_n_text(ns)} per point", ref_left)
                series.append((rx, rm, ax.plot, (), dict(
                    linestyle="--", marker="s", ms=3, linewidth=1.2, color=color,
                    label=f"{opt}, ideal digital at the same {axis} ({n})")))
                ax.fill_between(rx, [m - s for m, s in zip(rm, rs)], [m + s for m, s in zip(rm, rs)], color=color,
                                alpha=0.08)
    # equal series (two optimizers' equal references, equal lines) would hide each other: an (x, y) series is
    # shifted sideways by a fraction of the spacing of the x values, equal horizontal lines take turns in dashes
    tol = overlap_tolerance([y for _, ys, _, _, _ in series for y in ys] + [y for y, _ in levels])
    groups = overlap_groups([(sx, sy) for sx, sy, _, _, _ in series], tol)
    for (sx, sy, draw, args, kwargs), (k, g) in zip(series, groups):
        draw(dodged_x(ax, sx, k, g, list(xs.values())), sy, *args, **kwargs)
    for (_, draw), (k, g) in zip(levels, overlap_groups([((), (y,)) for y, _ in levels], tol)):
        draw(linestyle="--" if g == 1 else interleaved_dashes(k, g))
    over = "seeds" + (" and " + ", ".join(others) if others else "")
    ax.set(xlabel=axis, ylabel=f"{_acc_label(spec)} (%)",
           title=fit_title(fig, f"{spec.name}: accuracy vs {axis}\n(mean ± std over {over})"))
    ax.grid(alpha=0.3)
    _legend_below(ax, 8)
    return _save(plt, fig, path)


def plot_heatmap(spec: SweepSpec, status_points: Sequence[Any], ax_x: str, ax_y: str,
                 path: str | os.PathLike[str], running: bool = False) -> Path:
    """Mean final test accuracy (%) over the grid of two swept parameters, one panel per optimizer (and backend, when
    the points ran on several). ``running``: a sweep process holds the folder's lock, so a cell without a mean whose
    points are in progress reads "running" (:func:`_heatmap_note`)."""
    plt = _plt()
    import numpy as np

    main, _ = _split(status_points)
    main = [ps for ps in main if ps.point.params.get(ax_x) is not None and ps.point.params.get(ax_y) is not None]
    xv = _ordered_values([ps.point.params[ax_x] for ps in main])
    yv = _ordered_values([ps.point.params[ax_y] for ps in main])
    backends = _backends(main)
    panels = [(opt, b) for opt in _optimizers(main) for b in backends
              if any(ps.point.config.optimizer == opt and ps.point.config.backend == b for ps in main)]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(1.6 + 4.2 * max(1, len(panels)), 4.2), squeeze=False,
                             layout="constrained")
    grids, notes = [], []
    for opt, backend in panels:
        grid = np.full((len(yv), len(xv)), np.nan)
        note = np.full((len(yv), len(xv)), "—", dtype=object)   # a cell's text under its mean, or instead of one
        for (i, y), (j, x) in itertools.product(enumerate(yv), enumerate(xv)):
            group = [ps for ps in main if ps.point.config.optimizer == opt and ps.point.config.backend == backend
                     and _key(ps.point.params[ax_x]) == _key(x) and _key(ps.point.params[ax_y]) == _key(y)]
            accs = [a for a in (_acc(ps) for ps in group) if a is not None]
            note[i, j] = _heatmap_note(group, len(accs), running)
            m = mean_std(accs)[0]
            if m is not None:
                grid[i, j] = 100 * m
        grids.append(grid)
        notes.append(note)
    finite = [g[np.isfinite(g)] for g in grids]
    vals = np.concatenate(finite) if finite else np.array([])
    vmin, vmax = (float(vals.min()), float(vals.max())) if vals.size else (0.0, 100.0)
    if vmax - vmin < 0.1:                    # (nearly) one value everywhere: a readable 1-point colour range around it
        vmin, vmax = (vmin + vmax) / 2 - 0.5, (vmin + vmax) / 2 + 0.5
    cmap = plt.get_cmap("viridis").with_extremes(bad="lightgrey")
    im = None
    for k, ((opt, backend), grid, note) in enumerate(zip(panels, grids, notes)):
        ax = axes[0, k]
        im = ax.imshow(np.ma.masked_invalid(grid), origin="lower", aspect="auto", cmap=cmap, vmin=vmin,
                       vmax=vmax)
        for i, j in itertools.product(range(len(yv)), range(len(xv))):
            if np.isfinite(grid[i, j]):
                txt = f"{grid[i, j]:.1f}" + (f"\n{note[i, j]}" if note[i, j] else "")
                color = "white" if grid[i, j] < (vmin + vmax) / 2 else "black"
            elif note[i, j] == NO_POINT:        # a pair of values no point of the sweep has: left blank
                continue
            else:
                txt, color = note[i, j], "firebrick" if note[i, j] not in ("—", RUNNING) else "black"
            ax.text(j, i, txt, ha="center", va="center", fontsize=8, color=color)
        ax.set_xticks(range(len(xv)), [_fmt_value(v) for v in xv], rotation=45 if len(xv) > 5 else 0)
        ax.set_yticks(range(len(yv)), [_fmt_value(v) for v in yv])
        ax.set(xlabel=ax_x, ylabel=ax_y, title=_series_name(opt, backend, backends))
    if im is not None:
        fig.colorbar(im, ax=axes.ravel().tolist(), label=f"{_acc_label(spec)} (%)")
    cells = [str(t) for note in notes for t in note.flat]
    keys = (["— = not run yet"] if "—" in cells else []) + (["blank = no point of the sweep has these values"]
                                                              if NO_POINT in cells else []) + (
        ["n=k/N: the mean of k of the cell's N runs"] if any(t.startswith("n=") for t in cells) else [])
    fig.suptitle(fit_title(fig, f"{spec.name}: mean {_acc_label(spec)} (%) over seeds and other axes"
                                + (f" ({'; '.join(keys)})" if keys else ""), "figure.titlesize"))
    return _save(plt, fig, path)


#: the note of a heat-map cell that no point of the sweep has (a random design draws few of the pairs of values the
#: grid crosses): the cell is left blank, not marked "—" (not run yet: it never will)
NO_POINT = "no point"


def _heatmap_note(group: Sequence[Any], n: int, running: bool = False) -> str:
    """A heat-map cell's note on the ``n`` accuracies its mean rests on: ``n=k/N`` under a mean of fewer than the
    cell's ``N`` points ("" under a mean of them all); without a mean, "failed: diverged" / "failed: crashed" /
    "failed: diverged, crashed" (a point failed: :func:`_failed_kinds`, the kind on a second line), "no finite acc"
    (points finished without a finite accuracy), "running" (a point is in progress: half-finished while a sweep
    process holds the folder's lock, ``running``), "—" (nothing has run yet) or :data:`NO_POINT` (the cell has no
    point: a pair of values that the sweep's random draws did not give)."""
    if not group:
        return NO_POINT
    if n:
        return f"n={n}/{len(group)}" if n < len(group) else ""
    if any(ps.state == FAILED for ps in group):
        return _failed_kinds(group).replace(": ", ":\n", 1)    # the kind on a line of its own (narrow cells)
    if any(ps.state == DONE for ps in group):
        return "no finite acc"
    return RUNNING if running and any(ps.state == PARTIAL for ps in group) else "—"


#: the hatching of each kind of bar in :func:`plot_optimizers` (analog or per backend, then ideal digital)
BAR_HATCHES = ("", "//", "..", "xx")


def plot_optimizers(spec: SweepSpec, status_points: Sequence[Any], path: str | os.PathLike[str],
                    running: bool = False) -> Path:
    """Bar chart of final test accuracy per optimizer (mean ± std), analog (per backend, when the points ran on
    several) and digital side by side. ``running``: as in :func:`plot_axis`."""
    plt = _plt()
    main, ref = _split(status_points)
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    opts = _optimizers(main + ref)
    backends = _backends(main)
    bars = ([(main, "analog" if ref else "all")] if len(backends) <= 1 else
            [([ps for ps in main if ps.point.config.backend == b], b) for b in backends])
    bars += [(ref, "ideal digital")] if ref else []
    step = 0.8 / len(bars)
    for offset, (pts, label) in enumerate(bars):
        ms, ss, xs, ns, colors = [], [], [], [], []
        for i, opt in enumerate(opts):
            accs = [a for a in (_acc(ps) for ps in pts if ps.point.config.optimizer == opt) if a is not None]
            m, s = mean_std(accs)
            if m is not None and s is not None:
                ms.append(100 * m)
                ss.append(100 * s)
                xs.append(i + step * offset)
                ns.append(len(accs))
                colors.append(optimizer_color(opt, i))
        if xs:   # the colour is the optimizer's (as in every report), the hatching the kind of bar
            n = _with_left_out(f"{_n_text(ns)} per bar", _left_out(pts, running=running))
            ax.bar(xs, ms, yerr=ss, width=min(0.38, 0.95 * step), capsize=3, color=colors, edgecolor="white",
                   hatch=BAR_HATCHES[offset % len(BAR_HATCHES)], label=f"{label} ({n})")
    ax.set_xticks([i + step * (len(bars) - 1) / 2 for i in range(len(opts))], opts)
    ax.set(ylabel=f"{_acc_label(spec)} (%)",
           title=fit_title(fig, f"{spec.name}: accuracy per optimizer (mean ± std over seeds)"))
    legend = ax.legend(fontsize=8)
    for patch in legend.get_patches():      # the legend tells the kinds apart by hatching, not by an optimizer's
        patch.set_facecolor("0.55")         # colour
    fig.tight_layout()
    return _save(plt, fig, path)


def _finite_metric(ps: Any, key: str) -> float | None:
    """The point's metric ``key`` when it is a finite number, else None (missing, NaN, ±Inf, or its ``"nan"``
    string as ``point.json`` stores it)."""
    v = ps.metrics.get(key)
    return float(v) if is_finite_number(v) else None


#: the markers and line styles of a diagnostic's layers (the colour is the optimizer's)
LAYER_MARKERS = ("o", "s", "^", "D", "v", "P")
LAYER_DASHES = ("-", "--", ":", "-.")


def plot_diagnostics(spec: SweepSpec, status_points: Sequence[Any], axis: str,
                     path: str | os.PathLike[str]) -> Path | None:
    """The final per-layer diagnostics (:data:`~imc_grapes.sweep.store.DIAGNOSTICS`) of the finished points against
    the numeric ``axis``: one panel per diagnostic, one line per optimizer and layer, mean ± std over seeds and the
    other swept axes (the optimizer's colour, one marker and line style per layer); ``None`` (nothing written) when
    no point recorded any. Only finished points are drawn: the
    legends count the finished points without a finite value (:func:`_left_out`)."""
    main = [ps for ps in _split(status_points)[0]
            if ps.state == DONE and is_number(ps.point.params.get(axis))]
    kinds = [k for k in DIAGNOSTICS if any(key.startswith(f"final_{k}/") for ps in main for key in ps.metrics)]
    if not kinds:
        return None
    plt = _plt()
    values = _ordered_values([ps.point.params[axis] for ps in main])
    backends = _backends(main)
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.6 * len(kinds), 4.0), squeeze=False, layout="constrained")
    layers = sorted({key.split("/", 1)[1] for ps in main for key in ps.metrics
                     if any(key.startswith(f"final_{k}/") for k in kinds)})
    for ax, kind in zip(axes[0], kinds):
        keys = sorted({key for ps in main for key in ps.metrics if key.startswith(f"final_{kind}/")})
        _x_scale(ax, values)          # before the lines: they are dodged on the axis's scale
        series: list[tuple[list[float], list[float], list[float], dict[str, Any]]] = []
        for (i, opt), (b, backend) in itertools.product(enumerate(_optimizers(main)), enumerate(backends)):
            line = [ps for ps in main if ps.point.config.optimizer == opt and ps.point.config.backend == backend]
            for key in keys:
                layer = layers.index(key.split("/", 1)[1])  # colour: the optimizer; marker and dashes: the layer
                xs, ms, ss, ns = [], [], [], []
                for v in values:
                    ys = [y for y in (_finite_metric(ps, key) for ps in line
                                      if _key(ps.point.params[axis]) == _key(v)) if y is not None]
                    m, sd = mean_std(ys)
                    if m is not None and sd is not None:
                        xs.append(float(v))
                        ms.append(m)
                        ss.append(sd)
                        ns.append(len(ys))
                if xs:
                    left = _left_out(line, functools.partial(_finite_metric, key=key), "value")
                    n = _with_left_out(f"{_n_text(ns)} per point", left)
                    series.append((xs, ms, ss, dict(
                        marker=LAYER_MARKERS[layer % len(LAYER_MARKERS)], color=optimizer_color(opt, i),
                        linestyle=LAYER_DASHES[(layer + b) % len(LAYER_DASHES)],
                        label=f"{_series_name(opt, backend, backends)}, {key.split('/', 1)[1]} ({n})")))
        # equal series (e.g. SGD's and the layer-mean control's last layer, which GRAPES does not modulate) would
        # hide each other: each is shifted sideways by a fraction of the spacing of the x values
        tol = overlap_tolerance([m for _, ms, _, _ in series for m in ms])
        groups = overlap_groups([(xs, ms) for xs, ms, _, _ in series], tol)
        for (xs, ms, ss, style), (k, g) in zip(series, groups):
            ax.errorbar(dodged_x(ax, xs, k, g, values), ms, yerr=ss, capsize=3, alpha=0.9, **style)
        ax.set(xlabel=axis, ylabel=DIAGNOSTICS[kind], title=DIAGNOSTICS[kind])
        ax.grid(alpha=0.3)
        _legend_below(ax, 7)
    fig.suptitle(fit_title(fig, f"{spec.name}: diagnostics at the end of training vs {axis} (mean ± std over seeds)",
                           "figure.titlesize"))
    return _save(plt, fig, path)


def plot_axes(spec: SweepSpec) -> list[str]:
    """The swept axes that get an x axis (not optimizer/seed/backend)."""
    return [ax.name for ax in spec.axes if ax.name not in GROUP_AXES]


class NothingToReportError(ValueError):
    """:func:`write_report` on a sweep folder where no point of the sweep has finished (done or failed): the report
    would be a summary of pending points, in a folder it might create. The message (:func:`nothing_to_report`) names
    the folder and why (it does not exist, holds no sweep, or no point of this spec has finished there)."""


def nothing_to_report(status: SweepStatus, option: str = "out_dir", spec_arg: str | None = None) -> str | None:
    """Why no report may be written into the sweep folder ``status.out_dir`` (``status``:
    :func:`~imc_grapes.sweep.runner.sweep_status` of the sweep's points there): no point of this sweep has finished
    (done or failed) there, so the report would be a summary of pending points, in a folder that it might create.
    The folder does not exist (a mistyped folder, or a sweep not run yet), holds no sweep (an empty folder, or files
    of no command) or holds one where no point of this spec has finished (a sweep stopped before its first point,
    also one stopped before it wrote plan.json, whose lock file alone is there:
    :meth:`~imc_grapes.sweep.store.SweepStore.has_lock_file`; one of another spec, or one whose first points are
    running now). None when a point has finished (the report
    covers what is finished), or when the folder's place holds no folder (a file, a dangling link: the command line
    gives the folder error before; a write fails with an ``OSError``). Reads only.

    The one check of :func:`write_report` (which raises :class:`NothingToReportError` with it) and of
    ``imc-grapes sweep --report`` (which calls it first, to create nothing). ``option``: what set the folder, named
    first in the message (``out_dir``, a Python caller's argument; the command line's ``--out``, ``[sweep] out`` or
    ``the sweep folder``); ``spec_arg``: the command line's spec as typed, for the commands the message suggests
    (``imc-grapes sweep SPEC``, and ``--out`` to give another folder); without it, a Python caller's message names
    ``out_dir``, :func:`~imc_grapes.sweep.runner.run_sweep` and :func:`~imc_grapes.sweep.runner.sweep_status`."""
    from ..io import folder_command

    out = status.out_dir
    where, run = ("--out", f"imc-grapes sweep {spec_arg}") if spec_arg is not None else ("out_dir", "run_sweep")
    show = f"imc-grapes sweep {spec_arg} --status" if spec_arg is not None else "sweep_status"
    never_ran = (f"so no point of this sweep has run there and there is nothing to report: give the folder the sweep "
                 f"ran in ({where}), or run it first ({run})")
    if not status.folder_exists:
        return f"{option}: {out} does not exist, {never_ran}"
    if not out.is_dir() or status.count(DONE, FAILED):
        return None
    if status.running:      # its lock is held: a sweep, also one that has not written its plan.json yet
        return (f"{option}: no point of this sweep has finished in {out} yet, so there is nothing to report: a sweep "
                f"process is running there now; report when a point has finished ({show} shows where it stands)")
    # the command line refuses another command's folder before this; a lock file left alone (a sweep killed before
    # it wrote plan.json) is a sweep stopped before its first point
    if folder_command(out) != "sweep" and not SweepStore(out).has_lock_file():
        return f"{option}: {out} holds no sweep, {never_ran}"
    return (f"{option}: no point of this sweep has finished in {out}, so there is nothing to report: give the folder "
            f"the sweep ran in ({where}), or run it ({run}; it resumes there)")


def write_report(spec: SweepSpec, out_dir: str | os.PathLike[str] | None = None,
                 points: Sequence[Point] | None = None) -> list[Path]:
    """Write ``summary.csv`` and the plots (see the module docstring) into the sweep folder; return the paths.
    Plots an earlier report wrote (:data:`PLOT_PATTERNS`) that this one does not write again are removed (e.g.
    after an axis was taken out of the spec: they would show points this spec no longer has); other files in
    ``plots/`` are left alone.

    Raises:
        NothingToReportError: no point of this sweep has finished in the folder (:func:`nothing_to_report`: it
            does not exist, holds no sweep, or none of this spec's points is done or failed there); nothing is
            written or created.
        OSError: a file could not be written (a full disk, the folder's permissions, a file in its place).
    """
    out = resolve_out(spec, out_dir)
    points = list(points) if points is not None else spec.points()
    status = sweep_status(spec, out, points)     # read once: the check, the rows and the plots see one state
    if (nothing := nothing_to_report(status)) is not None:
        raise NothingToReportError(nothing)
    rows = summary_rows(spec, out, points, status)
    paths = [write_csv_atomic(out / "summary.csv", rows)]
    paths += _write_plots(spec, out, status)
    written = {p.name for p in paths}
    for pattern in PLOT_PATTERNS:
        for stale in (out / "plots").glob(pattern):
            if stale.name not in written and stale.is_file():
                stale.unlink()
    return paths


def _write_plots(spec: SweepSpec, out: Path, status: SweepStatus) -> list[Path]:
    """The plots of :func:`write_report` (``status``: the points' :func:`~imc_grapes.sweep.runner.sweep_status`
    there); none before any point has a finite accuracy."""
    paths: list[Path] = []
    status_points, running = status.points, status.running
    if not any(_acc(ps) is not None for ps in status_points):
        return paths  # nothing finished yet: no plots
    axes = plot_axes(spec)
    for name in axes:
        others = [a for a in axes if a != name]
        paths.append(plot_axis(spec, status_points, name, out / "plots" / f"acc_vs_{name}.png", others,
                               running=running))
    points = [ps.point for ps in status_points]
    multi = [a for a in axes if len(_ordered_values([p.params[a] for p in points if p.params.get(a) is not None])) > 1]
    for a, b in list(itertools.combinations(multi, 2))[:MAX_HEATMAPS]:
        paths.append(plot_heatmap(spec, status_points, a, b, out / "plots" / f"heatmap_{a}__{b}.png",
                                   running=running))
    if not axes:
        paths.append(plot_optimizers(spec, status_points, out / "plots" / "accuracy.png", running=running))
    for name in axes:
        diag = plot_diagnostics(spec, status_points, name, out / "plots" / f"diagnostics_vs_{name}.png")
        if diag is not None:
            paths.append(diag)
    return paths


def _summary_cell(point: Point, column: str) -> str:
    """``point``'s entry in the printed table's ``column``: its backend (where the points ran, also for a digital
    twin of a backend axis), else its value of that swept parameter (``n/a`` where it has none)."""
    if column == "backend":
        return point.config.backend
    value = point.params.get(column)
    return _fmt_value(value) if value is not None else "n/a"


#: most cells whose mean leaves out seeds that the printed summary lists one by one
MAX_NOTED_CELLS = 20


def _acc_cell(accs: Sequence[float], group: Sequence[Any]) -> str:
    """The table's accuracy of a cell (``group``: its points, which differ only in the seed), in %: ``mean ± std``
    (sample std, n − 1; the mean alone for one run), ``(n=k of N)`` after it when it rests on fewer than the cell's
    N points; ``—`` without a finite accuracy (``(k done, no finite accuracy)`` when points finished without one)."""
    m, s = mean_std(accs)
    if m is None or s is None:
        k = sum(ps.state == DONE for ps in group)
        return f"— ({k} done, no finite accuracy)" if k else "—"
    text = f"{100 * m:.2f}" if len(accs) == 1 else f"{100 * m:.2f} ± {100 * s:.2f}"
    return text + (f" (n={len(accs)} of {len(group)})" if len(accs) < len(group) else "")


def _seeds_note(label: str, group: Sequence[Any], running: bool = False) -> str:
    """``label: mean over seed(s) 1, 2; left out: seed 0 (failed: diverged), seed 3 (not run yet)``: which seeds of
    a cell (``group``) its mean covers and why the others are missing (a failed one's ``failure``: diverged or
    crashed; a half-finished one is ``running`` when ``running``, a sweep process holding the folder's lock)."""
    used = [ps for ps in group if _acc(ps) is not None]
    left = [ps for ps in group if _acc(ps) is None]
    return (f"  {label}: mean over seed(s) {', '.join(str(ps.point.config.seed) for ps in used)}; left out: "
            + ", ".join(f"seed {ps.point.config.seed} ({_why_left_out(ps, running, 'no finite accuracy')})"
                        for ps in left))


def format_summary(spec: SweepSpec, out_dir: str | os.PathLike[str] | None = None,
                   points: Sequence[Point] | None = None) -> str:
    """A text table: one line per combination of the swept values except the seed, accuracy mean ± std over the
    seeds (:func:`_acc_cell`), then notes: how the std is taken, and each cell whose mean leaves out some of its
    seeds (failed, not run yet, or without a finite accuracy: :func:`_seeds_note`), so that cells whose means are
    over different seeds say so, and the points that repeat another point's run
    (:func:`~imc_grapes.sweep.spec.repeated_points_note`, as ``--dry-run`` and ``--status`` say).

    Columns: the swept parameters, ``backend`` (once: in the axes' place when it is swept), runs (finished: done or
    failed), failed, running (the half-finished points while a sweep process holds the folder's lock: being run
    now; only then, and when there are such points), pending (not run yet, or half-finished when no sweep is
    running: left by a killed run; only when the sweep has such points), accuracy.
    """
    status = sweep_status(spec, out_dir, points)
    names = [ax.name for ax in spec.axes if ax.name != "seed"]
    columns = names if "backend" in names else names + ["backend"]
    groups: dict[str, list[Any]] = {}
    for ps in status.points:
        key = _key([ps.point.params.get(n) for n in names] + [ps.point.config.backend])
        groups.setdefault(key, []).append(ps)
    # a half-finished point is being run now when a sweep process holds the lock, else it was left by a killed run
    waiting = (PENDING,) if status.running else (PENDING, PARTIAL)
    running = status.running and status.count(PARTIAL) > 0
    pending = status.count(*waiting) > 0
    head = columns + ["runs", "failed"] + (["running"] if running else []) + (["pending"] if pending else []) + [
        "test acc (%)" if spec.tail_evals == 1 else f"test acc, last {spec.tail_evals} evals (%)"]
    table = [head]
    notes = []
    ordered = sorted(groups.values(), key=lambda pts: pts[0].point.config.backend == "digital")  # reference last
    for pts in ordered:
        accs = [a for a in (_acc(ps) for ps in pts) if a is not None]
        cells = [_summary_cell(pts[0].point, n) for n in columns]
        counts = [sum(ps.state in (DONE, FAILED) for ps in pts), sum(ps.state == FAILED for ps in pts)]
        counts += [sum(ps.state == PARTIAL for ps in pts)] if running else []
        counts += [sum(ps.state in waiting for ps in pts)] if pending else []
        table.append(cells + [str(c) for c in counts] + [_acc_cell(accs, pts)])
        if 0 < len(accs) < len(pts):
            notes.append(_seeds_note(" ".join(f"{c}={v}" for c, v in zip(columns, cells)), pts, status.running))
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += ["", "mean ± std over the seeds of a cell: sample std (n − 1); one run: the mean alone"]
    if notes:
        lines.append(f"{len(notes)} cell(s) average only some of their seeds (n=k of N): compare cells over the "
                     "same seeds")
        lines += notes[:MAX_NOTED_CELLS]
        if len(notes) > MAX_NOTED_CELLS:
            lines.append(f"  ... and {len(notes) - MAX_NOTED_CELLS} more")
    if status.repeated:
        lines.append(f"note: {repeated_points_note(status.repeated, len(status.points))}")
    return "\n".join(lines)


__all__ = ["NothingToReportError", "format_summary", "nothing_to_report", "plot_axis", "plot_heatmap",
           "plot_optimizers", "reference_groups", "summary_rows", "write_report"]
