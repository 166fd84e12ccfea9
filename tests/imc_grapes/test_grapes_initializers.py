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


@pytest.mark.parametrize("shape", [(0,), (3, 0), (0, 3), (2, 0, 3)])
def test_he_uniform_of_an_empty_tensor_warns_and_returns_as_torch_kaiming_uniform(shape: tuple[int, ...]) -> None:
    """``fan_in = 0`` (shapes ``(0,)``, ``(3, 0)``) was a ``ZeroDivisionError``; an empty tensor is now left as it is
    with the warning ``torch.nn.init.kaiming_uniform_`` gives, and the generator does not advance (its next draw is
    a fresh generator's first)."""
    from imc_grapes.grapes import he_uniform_

    t, g = torch.empty(shape), make_generator(4)
    with pytest.warns(UserWarning, match="^Initializing zero-element tensors is a no-op$"):
        torch.nn.init.kaiming_uniform_(torch.empty(shape), mode="fan_in", nonlinearity="relu")
    with pytest.warns(UserWarning, match="^Initializing zero-element tensors is a no-op$"):
        assert he_uniform_(t, g) is t
    assert torch.equal(torch.rand(3, generator=g), torch.rand(3, generator=make_generator(4)))


@pytest.mark.parametrize("generator", ["x", 3, np.random.default_rng(0)])
def test_initializers_refuse_a_generator_that_is_no_cpu_torch_generator(generator: object) -> None:
    """``he_uniform_(t, generator='x')`` (or a numpy generator) got torch's TypeError from inside ``uniform_``. Both
    initializers now refuse it naming ``<fn>.generator`` and what it takes, leaving ``t`` as it was; a non-tensor
    ``tensor`` (an AttributeError) is refused naming ``<fn>.tensor``."""
    from imc_grapes.grapes import he_uniform_, uniform_

    t = torch.zeros(2, 3)
    valid = r"must be a CPU torch.Generator or None \(the draws are made on the CPU, then copied\), got "
    with pytest.raises(ValueError, match=rf"^he_uniform_\.generator {valid}{re.escape(repr(generator))}$"):
        he_uniform_(t, generator)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=rf"^uniform_\.generator {valid}{re.escape(repr(generator))}$"):
        uniform_(t, 0.5, generator)  # type: ignore[arg-type]
    assert torch.equal(t, torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"^he_uniform_\.tensor must be a torch\.Tensor, got list$"):
        he_uniform_([1.0, 2.0])  # type: ignore[arg-type]


def test_he_uniform_bound_is_sqrt_6_over_fan_in() -> None:
    """``fan_in = 3·2 = 6`` for a ``[4, 3, 2]`` weight: the bound is 1, so the numbers are ``-1 + 2u`` of the
    generator's float64 draws ``u``; a 1-D tensor of 6 takes ``fan_in = 6`` too."""
    from imc_grapes.grapes import he_uniform_

    u = torch.rand(24, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    got = he_uniform_(torch.empty(4, 3, 2, dtype=torch.float64), make_generator(9))
    torch.testing.assert_close(got, (-1.0 + 2.0 * u).reshape(4, 3, 2), rtol=0, atol=1e-15)
    got1 = he_uniform_(torch.empty(6, dtype=torch.float64), make_generator(9))
    torch.testing.assert_close(got1, -1.0 + 2.0 * u[:6], rtol=0, atol=1e-15)


def test_layer_init_draws_the_weight_then_the_bias_within_one_over_sqrt_fan_in() -> None:
    """A ``[4, 3, 2]`` weight (``fan_in = 6``, He bound 1) takes the generator's first 24 float64 draws ``u`` as
    ``-1 + 2u``; its ``[4]`` bias the next 4 as ``(-1 + 2u) / √6`` (bound ``1/√fan_in``); no bias draws nothing."""
    from imc_grapes.grapes.initializers import _he_uniform_layer_

    u = torch.rand(28, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    w, b = torch.empty(4, 3, 2, dtype=torch.float64), torch.empty(4, dtype=torch.float64)
    _he_uniform_layer_(w, b, make_generator(5))
    torch.testing.assert_close(w, (-1.0 + 2.0 * u[:24]).reshape(4, 3, 2), rtol=0, atol=1e-15)
    torch.testing.assert_close(b, (-1.0 + 2.0 * u[24:]) / 6 ** 0.5, rtol=0, atol=1e-15)
    g = make_generator(5)
    _he_uniform_layer_(torch.empty(4, 3, 2, dtype=torch.float64), None, g)
    torch.testing.assert_close(torch.rand(4, generator=g, dtype=torch.float64), u[24:], rtol=0, atol=0)
