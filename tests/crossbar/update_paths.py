"""Force one of the CPU update's ways to draw and count pulses (test helper).

``crossbar._sparse_update.cpu_pulse_counts`` chooses per call between sparse and dense counting
(``_sparse_is_cheaper``), drawing the pulse positions geometrically (``_geometric_is_cheaper``) and drawing the
errors' slots first (``_errors_first_pays``). Tests that must reach one particular path replace the three choices.
"""
from __future__ import annotations

from typing import Callable

import pytest

import crossbar._sparse_update as su

#: the (count, draw) pairs the CPU update can take
CPU_PATHS = (("sparse", "errors-first"), ("sparse", "dense"), ("sparse", "geometric"),
             ("dense", "errors-first"), ("dense", "compact"))


def force_cpu_path(mp: pytest.MonkeyPatch, count: str, draw: str,
                   on_errors_first: Callable[[object], None] | None = None) -> None:
    """Make every ``cpu_pulse_counts`` call count ``"sparse"`` or ``"dense"`` and draw ``"errors-first"``,
    ``"geometric"`` or otherwise densely (``"dense"`` / ``"compact"``, whichever the count takes);
    ``on_errors_first(plan)`` is called with each plan the errors-first choice is asked about."""
    if count not in ("sparse", "dense"):
        raise ValueError(f"count must be 'sparse' or 'dense', got {count!r}")

    def errors_first(plan: object, dense_count: bool, fires: object = None) -> bool:
        if on_errors_first is not None:
            on_errors_first(plan)
        return draw == "errors-first"

    mp.setattr(su, "_sparse_is_cheaper", lambda plan, n, subset=None: count == "sparse")
    mp.setattr(su, "_geometric_is_cheaper", lambda plan, p_x, p_d: draw == "geometric")
    mp.setattr(su, "_errors_first_pays", errors_first)
