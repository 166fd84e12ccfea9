"""Mean and sample standard deviation over runs (seeds), with the reports' NaN policy: the one statistic that the
summary tables (:func:`imc_grapes.report.summarise`, :func:`imc_grapes.compare.summarise_cells`, the experiments'
report) share. A module of its own, importing nothing of the package's reporting, so that each report imports it
without an import cycle (compare imports report)."""
from __future__ import annotations

import math
import statistics
from collections.abc import Iterable

from devices.base import is_number

__all__ = ["mean_std"]


def mean_std(values: Iterable[object], *, nan_propagates: bool = False) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n − 1) of the finite numbers in ``values``; the std is 0.0 for one
    value, and both are None for none. None and non-numbers (a bool, a ``"nan"`` string not restored by
    :func:`~imc_grapes.io.restore_nonfinite`) are never values: "not measured".

    NaN / ±Inf policy: by default they are left out too, for the optional per-run diagnostics (cost per step,
    saturation, GRAPES's share of the operations, curve means, forgetting), where a run without a finite value has
    no measurement to add. With ``nan_propagates`` a NaN or ±Inf among them makes both NaN, for a cell's
    *accuracy* means over its completed runs: a completed run whose accuracy is NaN (its network broke) is a result
    of the method, and a mean of the other runs would cover fewer runs than the row's ``completed`` count says —
    the policy of :func:`~imc_grapes.report.summarise`, :func:`~imc_grapes.compare.summarise_cells` and
    :func:`~imc_grapes.train.tail_accuracy`."""
    vals = [float(v) for v in values if is_number(v)]  # type: ignore[arg-type]
    if nan_propagates and any(not math.isfinite(v) for v in vals):
        return math.nan, math.nan
    vals = [v for v in vals if math.isfinite(v)]
    if not vals:
        return None, None
    return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0
