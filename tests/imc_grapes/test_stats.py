"""imc_grapes.stats: the mean ± sample std over runs that the summary tables share, with its NaN policy."""
from __future__ import annotations

import math

import pytest

import imc_grapes.compare as compare_mod
from imc_grapes.stats import mean_std


def test_mean_std_propagates_a_nan_only_when_asked():
    """Hand values: the accuracy policy (``nan_propagates``): a NaN or ±Inf makes mean and std NaN, None and
    non-numbers are still left out (not measured); the diagnostics' default leaves the NaN out."""
    for v in (math.nan, math.inf, -math.inf):
        m, s = mean_std([0.5, v, 0.7], nan_propagates=True)
        assert math.isnan(m) and math.isnan(s)
        m, s = mean_std([v], nan_propagates=True)          # one run, broken: no std of 0 beside a NaN mean
        assert math.isnan(m) and math.isnan(s)
    m, s = mean_std([0.5, None, "nan", True, 0.7], nan_propagates=True)
    assert m == pytest.approx(0.6) and s == pytest.approx(0.1 * math.sqrt(2))
    assert mean_std([None], nan_propagates=True) == (None, None) and mean_std([], nan_propagates=True) == (None, None)
    assert mean_std([0.5, math.nan, 0.7]) == (pytest.approx(0.6), pytest.approx(0.1 * math.sqrt(2)))
    assert mean_std([0.25], nan_propagates=True) == (0.25, 0.0)


def test_compare_keeps_exporting_the_shared_statistic():
    """compare's callers (and the experiments' report before) import ``mean_std`` from compare: the same function."""
    assert compare_mod.mean_std is mean_std
