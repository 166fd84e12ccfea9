"""Plot helpers shared by the reports (runs, compare, compare-summary, sweeps, experiments): titles wrapped to
the figure.

A long title (a long sweep name, many swept axes, a deep MLP's layer list, a narrow bar chart) is wider than its
figure, and matplotlib cuts it at the figure's edges. :func:`fit_title` wraps it at the number of characters that
fit (:func:`title_chars`), between words where it can.
"""
from __future__ import annotations

import textwrap
from typing import Any, Literal

__all__ = ["TITLE_EM_WIDTH", "TITLE_WIDTH_SHARE", "TitleSize", "fit_title", "title_chars", "wrap_title"]

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
