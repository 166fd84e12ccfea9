"""devices.rng: the counter-based generator (moments, KS test, replica-chunk identity, determinism) and the
dispatch helpers (a torch.Generator gives exactly torch's own numbers)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from devices.rng import CounterRNG, normal_, rand, randn


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_uniform_moments_range_and_ks(dtype: torch.dtype) -> None:
    g = CounterRNG([12345])
    u = g.uniform((200_000,), dtype)
    assert u.dtype == dtype
    assert float(u.min()) > 0.0 and float(u.max()) < 1.0                 # open interval (ndtri-safe)
    n = u.numel()
    # mean 1/2 (SE = sqrt(1/12 / n) = 6.5e-4), variance 1/12 (SE of the variance ~ 1.9e-4): 5-SE bounds
    assert abs(float(u.mean()) - 0.5) < 5 * (1 / 12 / n) ** 0.5
    assert abs(float(u.var()) - 1 / 12) < 5 * (1 / 180 / n) ** 0.5
    assert stats.kstest(u[:20_000].double().numpy(), "uniform").pvalue > 1e-3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_normal_moments_and_ks(dtype: torch.dtype) -> None:
    z = CounterRNG([7, 8]).normal((2, 100_000), dtype)
    assert z.dtype == dtype and torch.isfinite(z).all()
    for row in z:                                                          # each replica stream alone
        n = row.numel()
        assert abs(float(row.mean())) < 5 / n ** 0.5                       # SE 1/sqrt(n)
        assert abs(float(row.var()) - 1.0) < 5 * (2 / n) ** 0.5            # SE of the variance sqrt(2/n)
        assert stats.kstest(row[:20_000].double().numpy(), "norm").pvalue > 1e-3
    # the two streams are uncorrelated (|r| < 5 / sqrt(n))
    r = np.corrcoef(z[0].double().numpy(), z[1].double().numpy())[0, 1]
    assert abs(r) < 5 / z.shape[1] ** 0.5


def test_neighbouring_seeds_and_positions_are_uncorrelated() -> None:
    u = CounterRNG(list(range(64))).uniform((64, 4096), torch.float64)
    c = np.corrcoef(u.numpy())                                              # 64 x 64 stream correlations
    off = c[~np.eye(64, dtype=bool)]
    assert np.abs(off).max() < 6 / 4096 ** 0.5
    lag1 = np.corrcoef(u[0, :-1].numpy(), u[0, 1:].numpy())[0, 1]           # consecutive positions
    assert abs(lag1) < 5 / 4096 ** 0.5


@settings(max_examples=25, deadline=None)
@given(seeds=st.lists(st.integers(-2**62, 2**62), min_size=1, max_size=6),
       sizes=st.lists(st.integers(1, 40), min_size=1, max_size=4))
def test_replica_chunks_equal_separate_streams(seeds: list[int], sizes: list[int]) -> None:
    """A draw of E streams in the replica-major layout gives replica r exactly what CounterRNG([seed_r]) gives,
    draw after draw (uniform and normal interleaved)."""
    e = len(seeds)
    together = CounterRNG(seeds)
    alone = [CounterRNG([s]) for s in seeds]
    for k, n in enumerate(sizes):
        kind = "uniform" if k % 2 == 0 else "normal"
        both = getattr(together, kind)((e * 2, n), torch.float64)         # [E*2, n]: replica r owns rows 2r, 2r+1
        for r, g in enumerate(alone):
            assert torch.equal(both[2 * r: 2 * r + 2], getattr(g, kind)((2, n), torch.float64))
    assert together.counter == alone[0].counter == 2 * sum(sizes)


def test_deterministic_and_state_round_trip() -> None:
    a, b = CounterRNG([3, 4]), CounterRNG([3, 4])
    assert torch.equal(a.normal((4, 10)), b.normal((4, 10)))
    state = a.get_state()
    first = a.uniform((2, 5))
    a.set_state(state)
    assert torch.equal(a.uniform((2, 5)), first)
    assert not torch.equal(CounterRNG([5]).uniform((10,)), CounterRNG([6]).uniform((10,)))
    with pytest.raises(ValueError, match="multiple of the replicas"):
        CounterRNG([1, 2, 3]).uniform((4,))
    with pytest.raises(ValueError, match="differ from this generator"):
        CounterRNG([9]).set_state(state)


def test_torch_generator_dispatch_is_torch_itself() -> None:
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(rand((3, 4), g1, dtype=torch.float64), torch.rand((3, 4), generator=g2, dtype=torch.float64))
    assert torch.equal(randn((7,), g1), torch.randn((7,), generator=g2))
    t1, t2 = torch.empty(6), torch.empty(6)
    assert torch.equal(normal_(t1, 1.0, 0.5, g1), t2.normal_(1.0, 0.5, generator=g2))
    c = CounterRNG([1])
    t = normal_(torch.empty(5, dtype=torch.float64), 2.0, 3.0, c)
    assert torch.equal(t, 2.0 + 3.0 * CounterRNG([1]).normal((5,), torch.float64))
