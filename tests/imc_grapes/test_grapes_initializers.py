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
