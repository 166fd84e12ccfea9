"""Contract of the seeded initializers (``imc_grapes.grapes.initializers``): the seeds ``make_generator`` takes, and
refusals naming the argument and its valid range."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from imc_grapes.grapes import make_generator


@pytest.mark.parametrize("value", [True, 2.5, "3", 2 ** 64, -2 ** 63 - 1])
def test_make_generator_refuses_a_seed_that_is_no_integer_in_range(value: object) -> None:
    """``int()`` turned ``True``, ``2.5`` and ``"3"`` into other seeds than the one written; ``2^64`` failed inside
    torch. Each is now refused naming ``make_generator.seed`` and the range."""
    with pytest.raises(ValueError, match=rf"^make_generator.seed must be an integer in \[-2\^63, 2\^64\) \(what "
                                         rf"torch.manual_seed takes\), got {re.escape(repr(value))}$"):
        make_generator(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed, same_as", [(-1, 2 ** 64 - 1), (np.int64(11), 11), (0, 0)])
def test_make_generator_seeds_as_torch_manual_seed(seed: int, same_as: int) -> None:
    """The generator draws what ``torch.Generator().manual_seed(same_as)`` draws (torch maps a negative seed ``s`` to
    ``s + 2^64``; a numpy integer is its Python value)."""
    expected = torch.rand(5, generator=torch.Generator().manual_seed(same_as))
    torch.testing.assert_close(torch.rand(5, generator=make_generator(seed)), expected, rtol=0, atol=0)


@pytest.mark.parametrize("bound", [-1.0, float("nan"), float("inf"), "0.5", True])
def test_uniform_refuses_a_bound_that_is_no_finite_number_at_least_zero(bound: object) -> None:
    """A negative bound failed in torch ("uniform_ expects to return a [from, to) range"), NaN filled NaNs; each is
    refused naming ``uniform_.bound`` and the range."""
    from imc_grapes.grapes import uniform_

    t = torch.zeros(3)
    with pytest.raises(ValueError, match=r"^uniform_.bound must be a finite number >= 0"):
        uniform_(t, bound)  # type: ignore[arg-type]
    assert torch.equal(t, torch.zeros(3))                               # left as it was


def test_uniform_with_bound_zero_fills_zeros_and_draws_from_the_generator() -> None:
    """``U(-b, b)`` from the generator's float64 draws: ``-b + 2b·u`` for torch's ``U(0, 1)`` draws ``u``."""
    from imc_grapes.grapes import uniform_

    assert torch.equal(uniform_(torch.ones(4), 0.0, make_generator(0)), torch.zeros(4))
    u = torch.rand(4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    got = uniform_(torch.empty(4, dtype=torch.float64), 0.5, make_generator(3))
    torch.testing.assert_close(got, -0.5 + u, rtol=0, atol=1e-15)
