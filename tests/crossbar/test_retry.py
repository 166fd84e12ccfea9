"""The retry of the statistical aihwkit comparisons (tests/crossbar/retry.py) reports each first-draw failure."""
from __future__ import annotations

import pytest

from tests.crossbar.retry import RetriedComparison, retry_once


def test_a_first_failure_is_retried_once_and_reported_as_a_warning() -> None:
    calls: list[int] = []

    @retry_once
    def comparison() -> str:
        calls.append(1)
        assert len(calls) > 1, "aihwkit's mean off by 5 standard errors"
        return "passed"

    with pytest.warns(RetriedComparison, match="comparison: first aihwkit draw failed.*off by 5 standard errors"):
        assert comparison() == "passed"
    assert len(calls) == 2


def test_a_second_failure_fails_the_test() -> None:
    @retry_once
    def comparison() -> None:
        raise AssertionError("still off")

    with pytest.warns(RetriedComparison), pytest.raises(AssertionError, match="still off"):
        comparison()
