"""The standard error of the difference of two shares of devices (e.g. the share left on a bound), for the tests
that compare the count-based update with aihwkit's tile or the per-pulse reference."""

from __future__ import annotations

import math


def share_difference_se(a: float, b: float, n: int) -> float:
    """Standard error of ``a − b`` for two independent shares ``a`` and ``b`` of ``n`` devices each, under the
    hypothesis that both have the same probability: estimated by the *pooled* share ``(a + b) / 2`` (the two-
    proportion test), never by one side alone, which under-estimates it when that side saw very few events (0.9999
    of 10,000: one device off the bound). A floor of one device in ``n`` keeps it above zero when both shares are
    0 or 1."""
    if n <= 0:
        raise ValueError(f"n must be a positive number of devices, got {n}")
    pooled = 0.5 * (a + b)
    return math.sqrt(2 * max(pooled * (1 - pooled), 1 / n) / n)
