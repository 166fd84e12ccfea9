"""Plot helpers shared by the reports (runs, compare, compare-summary, sweeps, experiments): titles wrapped to
the figure, one colour per optimizer in every figure, and accuracy axes that do not magnify noise.

A long title (a long sweep name, many swept axes, a deep MLP's layer list, a narrow bar chart) is wider than its
figure, and matplotlib cuts it at the figure's edges. :func:`fit_title` wraps it at the number of characters that
fit (:func:`title_chars`), between words where it can.
"""
from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any, Literal

__all__ = ["DODGE_SHARE", "MIN_ACC_SPAN", "OPTIMIZER_COLORS", "OVERLAP_SHARE", "TITLE_EM_WIDTH", "TITLE_WIDTH_SHARE",
           "TitleSize", "accuracy_ylim", "dodged_x", "error_bars", "fit_title", "interleaved_dashes",
           "optimizer_color", "overlap_groups", "overlap_tolerance", "plain_log_labels", "progress_xlim", "title_chars",
           "wrap_title"]

#: a title font's mean glyph width in ems, on the wide side (DejaVu Sans, matplotlib's default, averages about 0.55
#: on text such as sweep titles)
TITLE_EM_WIDTH = 0.6
#: share of the figure's width a title may fill (an axes title is centred on its axes, not on the figure)
TITLE_WIDTH_SHARE = 0.85

TitleSize = Literal["axes.titlesize", "figure.titlesize"]
"""The rc setting of a title's font size: an axes title or a figure's suptitle."""


def title_chars(fig: Any, rc_size: TitleSize, columns: int = 1) -> int:
    """Characters that fit on one title line of ``fig``: :data:`TITLE_WIDTH_SHARE` of its width (inches × 72 pt)
    divided by ``columns`` (an axes title in a row of ``columns`` equal panels; ≥ 1), over the mean glyph width
    (:data:`TITLE_EM_WIDTH` × the font size in pt of the rc setting ``rc_size``, e.g. ``"axes.titlesize"``);
    at least 20.

    Raises:
        ValueError: ``columns`` < 1.
    """
    from matplotlib import rcParams
    from matplotlib.font_manager import FontProperties

    if columns < 1:
        raise ValueError(f"title_chars: columns must be >= 1, got {columns}")
    points = FontProperties(size=rcParams[rc_size]).get_size_in_points()
    return max(20, int(TITLE_WIDTH_SHARE * 72 * fig.get_figwidth() / (columns * TITLE_EM_WIDTH * points)))


def wrap_title(text: str, width: int) -> str:
    """``text`` with each of its lines wrapped at ``width`` characters (between words where it can; a longer word
    is split): a long title stays inside the figure instead of being cut."""
    return "\n".join(textwrap.fill(line, width) if line.strip() else line for line in text.split("\n"))


def fit_title(fig: Any, text: str, rc_size: TitleSize = "axes.titlesize", columns: int = 1) -> str:
    """``text`` wrapped to fit one title line of ``fig`` (:func:`wrap_title` at :func:`title_chars`)."""
    return wrap_title(text, title_chars(fig, rc_size, columns))


#: the colour of each optimizer (``TrainConfig.optimizer``) in every report's figures, so that SGD is the same blue
#: and GRAPES the same orange in a run summary, compare's curves and bars, an experiment's and a sweep's plots
OPTIMIZER_COLORS: dict[str, str] = {"sgd": "tab:blue", "grapes": "tab:orange", "layer-mean": "tab:green",
                                    "grapes-local": "tab:red"}
#: colours for other names (a run summary grouped by another field), in order, after those of the optimizers
_OTHER_COLORS = ("tab:purple", "tab:brown", "tab:pink", "tab:gray", "tab:olive", "tab:cyan")


def optimizer_color(name: object, index: int = 0) -> str:
    """The colour of optimizer ``name`` (:data:`OPTIMIZER_COLORS`); any other name gets the ``index``-th (≥ 0,
    wrapping) of the colours no optimizer has."""
    color = OPTIMIZER_COLORS.get(name) if isinstance(name, str) else None
    return color or _OTHER_COLORS[index % len(_OTHER_COLORS)]


def error_bars(ax: Any, xs: Sequence[float], ms: Sequence[float], ss: Sequence[float | None],
               capsize: float = 3) -> None:
    """Black error bars of ± ``ss`` (caps ``capsize`` points wide) at the bars ``xs`` of heights ``ms`` (all three
    of one length); a None std (a value over fewer than two runs, which has no spread: its stored 0 drew a zero-width
    bar) gets none."""
    shown = [(x, m, sd) for x, m, sd in zip(xs, ms, ss) if sd is not None]
    if shown:
        ax.errorbar([x for x, _, _ in shown], [m for _, m, _ in shown], yerr=[sd for _, _, sd in shown], fmt="none",
                    ecolor="black", capsize=capsize)


#: the narrowest y range (accuracy points) of an accuracy plot: matplotlib zooms onto its data, and curves that
#: all lie within 0.3 points (training stuck at chance, 9.7–10.0 %) then look like a race between optimizers
MIN_ACC_SPAN = 10.0


def accuracy_ylim(ax: Any) -> tuple[float, float]:
    """Widen the y range of ``ax``, an accuracy (%) axis already drawn, to at least :data:`MIN_ACC_SPAN` points
    around its middle, kept inside 0–100 % where the data allow; a wider range is left as drawn. Without data the
    range is the whole 0–100 %. Returns the range (points)."""
    if not ax.has_data():
        ax.set_ylim(0.0, 100.0)
        return 0.0, 100.0
    lo, hi = ax.get_ylim()
    if hi - lo < MIN_ACC_SPAN:
        mid = (lo + hi) / 2
        lo, hi = mid - MIN_ACC_SPAN / 2, mid + MIN_ACC_SPAN / 2
        shift = max(0.0, -lo) - max(0.0, hi - 100.0)     # the span (10 points) fits inside 0–100: one of them
        lo, hi = lo + shift, hi + shift
        ax.set_ylim(lo, hi)
    return lo, hi


#: two series overlap when, at the same x values, their y values differ by at most this share of the y span of
#: everything drawn on the axes (:func:`overlap_tolerance`): the later one would hide the earlier one
OVERLAP_SHARE = 0.005
#: the horizontal step between overlapping series (:func:`dodged_x`): this share of the smallest gap between
#: neighbouring x values, measured on the axis's scale (in log10 on a log axis)
DODGE_SHARE = 0.08
#: the most a group of overlapping series is spread over, as a share of that gap (a large group takes smaller steps)
DODGE_MAX_SPREAD = 0.4


def overlap_tolerance(ys: Sequence[float]) -> float:
    """How far apart two y values may be and still hide each other: :data:`OVERLAP_SHARE` of the span of ``ys``
    (every y value drawn on the axes; NaN left out); 0 (only equal values overlap) when they span nothing."""
    finite = [float(y) for y in ys if y == y]
    return OVERLAP_SHARE * (max(finite) - min(finite)) if finite else 0.0


def overlap_groups(series: Sequence[tuple[Sequence[float], Sequence[float]]], tol: float) -> list[tuple[int, int]]:
    """For each series (its x values and y values, of equal length), ``(k, g)``: it is the ``k``-th (from 0) of
    ``g`` series that overlap, i.e. have the same x values and y values within ``tol`` (≥ 0) of the group's first
    series at every x; ``(0, 1)`` for a series that overlaps none. Groups are formed in order, each series joining
    the first earlier group it overlaps."""
    firsts: list[int] = []                     # the first series of each group
    member: list[tuple[int, int]] = []         # (group, position in it)
    sizes: list[int] = []
    for i, (xs, ys) in enumerate(series):
        for g, j in enumerate(firsts):
            xj, yj = series[j]
            if list(map(float, xs)) == list(map(float, xj)) and all(abs(float(a) - float(b)) <= tol
                                                                   for a, b in zip(ys, yj)):
                member.append((g, sizes[g]))
                sizes[g] += 1
                break
        else:
            firsts.append(i)
            member.append((len(sizes), 0))
            sizes.append(1)
    return [(k, sizes[g]) for g, k in member]


def dodged_x(ax: Any, xs: Sequence[float], k: int, g: int, values: Sequence[float]) -> list[float]:
    """``xs`` moved sideways for the ``k``-th of ``g`` overlapping series (:func:`overlap_groups`) on ``ax``, whose
    x scale is already set: by ``(k − (g − 1)/2)`` steps of :data:`DODGE_SHARE` (smaller when the group would
    spread over more than :data:`DODGE_MAX_SPREAD`) of the smallest gap between neighbouring ``values`` (all the x
    values of the axes), measured on the axis's scale — in log10 on a log axis, so that each point keeps the same
    distance from its tick wherever it lies; with a single value the gap is its own size (1 at 0). The group is
    centred on the true x; ``xs`` unchanged for a series that overlaps none (``g`` = 1)."""
    if g <= 1:
        return [float(x) for x in xs]
    scale = ax.xaxis.get_transform()                       # data -> the axis's scale (identity, log10, symlog)
    ticks = sorted(set(float(v) for v in scale.transform([[float(v)] for v in values])[:, 0]))
    gaps = [b - a for a, b in zip(ticks, ticks[1:]) if b > a]
    gap = min(gaps) if gaps else (abs(ticks[0]) or 1.0) if ticks else 1.0
    step = gap * min(DODGE_SHARE, DODGE_MAX_SPREAD / (g - 1))
    shift = (k - (g - 1) / 2) * step
    scaled = scale.transform([[float(x)] for x in xs])[:, 0] + shift
    return [float(x) for x in scale.inverted().transform([[x] for x in scaled])[:, 0]]


def interleaved_dashes(k: int, g: int, dash: float = 4.0) -> tuple[float, tuple[float, float]]:
    """A dash pattern (a matplotlib ``linestyle``, in points scaled by the line width) for the ``k``-th of ``g``
    lines drawn on the same place (e.g. equal horizontal references, which no sideways shift can separate): dashes
    of ``dash`` points, the ``g`` lines' dashes taking turns, so that every line's colour shows along it."""
    return (k * dash, (dash, dash * (g - 1)))


def plain_log_labels(axis: Any) -> bool:
    """On a log ``axis`` (``ax.yaxis`` or ``ax.xaxis``, its data already drawn) whose range spans less than a decade,
    label the ticks with plain numbers (``0.9``, ``2``; ``:g`` format) instead of matplotlib's ``2×10⁰``; which
    ticks get a label stays matplotlib's choice (``LogFormatter``: the minor ticks too on a narrow range). Returns
    whether it did (False on a linear axis or a range of a decade or more)."""
    import matplotlib.ticker as ticker

    if axis.get_scale() != "log":
        return False
    lo, hi = sorted(axis.get_view_interval())
    if not (lo > 0 and hi / lo < 10.0):
        return False

    class PlainLogFormatter(ticker.LogFormatter):
        """matplotlib's choice of labelled ticks, each labelled by its plain value."""

        def __call__(self, x: float, pos: int | None = None) -> str:
            return f"{x:g}" if super().__call__(x, pos) else ""

    axis.set_major_formatter(PlainLogFormatter(labelOnlyBase=False))
    axis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False))
    return True


def progress_xlim(ax: Any, xs: Sequence[float]) -> tuple[float, float]:
    """An x axis of training progress (epochs, tasks trained; ``xs``: every x drawn, ≥ 0) from 0 to 5 % past the
    last point — half as far again past a lone point, so that one evaluation per run is a point at its epoch on an
    axis from 0, not a dot in the middle of 0.96–1.04 — with ticks on whole numbers when every x is one. Without
    a point (or only at 0) the axis spans 0–1. Returns the range."""
    import matplotlib.ticker as ticker

    values = [float(x) for x in xs if x == x]
    hi = max(values, default=0.0)
    right = hi * (1.05 if len(set(values)) > 1 else 1.5) if hi > 0 else 1.0
    ax.set_xlim(0.0, right)
    if values and all(v.is_integer() for v in values):
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    return 0.0, right
