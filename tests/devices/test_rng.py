"""devices.rng: the counter-based generator (moments, KS test, replica-chunk identity, determinism) and the
dispatch helpers (a torch.Generator gives exactly torch's own numbers)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from devices.rng import CounterRNG, IndexedDraws, derived_uniforms, normal_, rand, randn


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


# ---------------------------------------------------------------- partial draws (windows, runs, positions)
@settings(max_examples=40, deadline=None)
@given(e=st.integers(1, 4), lead=st.integers(1, 3), dims=st.lists(st.integers(1, 6), min_size=1, max_size=3),
       data=st.data(), f64=st.booleans(), kind=st.sampled_from(["uniform", "normal"]))
def test_window_equals_slice_of_full_draw(e: int, lead: int, dims: list[int], data, f64: bool, kind: str) -> None:
    """A window (first n entries along a non-leading dim) has exactly the full draw's numbers there, advances the
    counter as the full draw, and is still replica-major (replica r's window = its E=1 window)."""
    shape = (e * lead, *dims)
    dim = data.draw(st.integers(1, len(shape) - 1))
    n = data.draw(st.integers(0, shape[dim]))
    dtype = torch.float64 if f64 else torch.float32
    seeds = list(range(100, 100 + e))
    full_gen, win_gen = CounterRNG(seeds), CounterRNG(seeds)
    full_gen.uniform((e * 2,)), win_gen.uniform((e * 2,))                  # a non-zero counter
    full = getattr(full_gen, kind)(shape, dtype)
    win = getattr(win_gen, kind)(shape, dtype, window=(dim, n))
    assert win.shape == full.narrow(dim, 0, n).shape and win.dtype == dtype
    assert torch.equal(win, full.narrow(dim, 0, n))
    assert win_gen.counter == full_gen.counter
    alone = CounterRNG([seeds[-1]])
    alone.uniform((2,))
    per_replica = (lead, *dims)
    assert torch.equal(win[(e - 1) * lead:], getattr(alone, kind)(per_replica, dtype, window=(dim, n)))


def test_window_arguments_are_checked() -> None:
    g = CounterRNG([1, 2])
    with pytest.raises(ValueError, match="non-leading"):
        g.uniform((4, 3), window=(0, 1))
    with pytest.raises(ValueError, match="window size"):
        g.uniform((4, 3), window=(1, 4))
    # a torch generator: the slice of torch's own full draw, same stream afterwards
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    w = rand((2, 5, 4), g1, window=(1, 2))
    full = torch.rand((2, 5, 4), generator=g2)
    assert torch.equal(w, full[:, :2]) and w.is_contiguous()
    assert torch.equal(torch.rand(3, generator=g1), torch.rand(3, generator=g2))


@settings(max_examples=25, deadline=None)
@given(e=st.integers(1, 4), rows=st.integers(1, 12), length=st.integers(1, 9), data=st.data())
def test_runs_and_positions_equal_the_full_draw(e: int, rows: int, length: int, data) -> None:
    """uniform_runs (rows of the last dim), at(index) and at(block) give the full draw's numbers at those places
    and advance the counter as the full draw (hand-built index expectations)."""
    shape = (e * rows, length)
    seeds = list(range(7, 7 + e))
    ref = CounterRNG(seeds)
    u_full, z_full = ref.uniform(shape), ref.normal(shape, torch.float64)
    starts = data.draw(st.lists(st.integers(0, e * rows - 1), min_size=1, max_size=10))
    idx = data.draw(st.lists(st.integers(0, e * rows * length - 1), min_size=1, max_size=20))
    g = CounterRNG(seeds)
    runs = g.uniform_runs(shape, torch.tensor(starts) * length, length)
    assert torch.equal(runs, u_full[starts])
    z = randn((len(idx),), g.at(shape, torch.tensor(idx)), dtype=torch.float64)
    assert torch.equal(z, z_full.reshape(-1)[idx])
    assert g.counter == ref.counter
    r0 = data.draw(st.integers(0, e - 1))
    s = data.draw(st.integers(0, rows * length - 1))
    g2 = CounterRNG(seeds)
    blk = rand(((e - r0) * (rows * length - s),), g2.at(shape, (r0, e, s, rows * length)))
    assert torch.equal(blk, u_full.reshape(e, -1)[r0:, s:].reshape(-1))


def test_indexed_draws_are_one_shot_and_settle_once() -> None:
    g = CounterRNG([1, 2])
    d = g.at((4, 3), torch.tensor([0, 5, 11]))
    with pytest.raises(ValueError, match="one draw of shape"):
        d.uniform((2,))                                                      # wrong size
    d.uniform((3,))
    assert g.counter == 6
    with pytest.raises(ValueError, match="after the draw"):
        d.uniform((3,))
    parts = [g.at((4, 3), torch.tensor([1]), advance=False), g.at((4, 3), torch.tensor([2]), advance=False)]
    parts[0].uniform((1,))
    assert g.counter == 6                                                    # blocks do not advance
    with pytest.raises(ValueError, match="some blocks"):
        IndexedDraws.settle(parts)
    parts[1].uniform((1,))
    IndexedDraws.settle(parts)
    assert g.counter == 12
    IndexedDraws.settle([g.at((4, 3), torch.tensor([1]), advance=False)])  # nothing drawn: no advance
    assert g.counter == 12


@pytest.mark.parametrize("dtype,bits", [(torch.float32, 23), (torch.float64, 52), (torch.float16, 10),
                                        (torch.bfloat16, 7)])
def test_uniforms_lie_on_a_symmetric_grid_inside_the_unit_interval(dtype: torch.dtype, bits: int) -> None:
    """u = (2v + 1)·2^-(bits+1) exactly: odd multiples of half a grid step, so 1 - u is on the grid and u < 1
    (the top value 1 - 2^-(bits+1) is representable; a 1.0 would give an infinite normal)."""
    u = CounterRNG([42, 43]).uniform((2, 50_000), dtype).double()
    k = u * 2.0 ** (bits + 1)
    assert torch.equal(k, k.round()) and bool((k.remainder(2) == 1).all())
    assert float(u.max()) <= 1 - 2.0 ** -(bits + 1) and float(u.min()) >= 2.0 ** -(bits + 1)
    top = torch.tensor([1 - 2.0 ** -(bits + 1)], dtype=dtype)
    assert float(top) < 1.0


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-6), (torch.float64, 1e-13)])
def test_normals_are_the_normal_quantile_of_the_uniforms(dtype: torch.dtype, tol: float) -> None:
    """normal(...) = Φ⁻¹(uniform(...)) (scipy's ndtri in float64 as the reference), to a few ulp."""
    u = CounterRNG([5]).uniform((100_000,), dtype)
    z = CounterRNG([5]).normal((100_000,), dtype)
    ref = stats.norm.ppf(u.double().numpy())
    err = np.abs(z.double().numpy() - ref) / np.maximum(np.abs(ref), 1.0)
    assert err.max() < tol and np.isfinite(z.numpy()).all()


@pytest.mark.parametrize("dtype,levels", [(torch.float16, 1 << 10), (torch.bfloat16, 1 << 7)])
def test_narrow_uniforms_never_round_to_one_and_are_uniform_on_their_grid(dtype: torch.dtype, levels: int) -> None:
    """float16 / bfloat16 uniforms were float32 ones cast down: the top values rounded to 1.0 (267 and 2030 of
    2^20 draws), so an event of probability 1 (``u < p`` with ``p = 1``) failed to fire. Now each of the dtype's
    ``levels`` grid values is equally likely (chi-square, 2^20 draws) and every ``u < 1``."""
    u = CounterRNG([1]).uniform((1 << 20,), dtype)
    assert bool((u < 1.0).all()) and bool((u > 0.0).all())
    counts = torch.bincount((u.double() * levels).floor().long(), minlength=levels).double()
    assert counts.numel() == levels
    expected = u.numel() / levels
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < stats.chi2.ppf(1 - 1e-6, levels - 1)
    assert abs(float(u.double().mean()) - 0.5) < 6 * (1 / 12 / u.numel()) ** 0.5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_windowed_draws_are_the_enlarged_draws_first_block(dtype) -> None:
    """``WindowedDraws(g, dim, k)``: every draw of ``shape`` (uniform, normal) is the slice ``[:shape[dim]]`` along
    ``dim`` of the parent's draw with ``k·shape[dim]`` entries there, and the counter ends where those draws leave it;
    per replica (E = 3) as for E = 1; a window of its own or too few dimensions is refused."""
    from devices.rng import WindowedDraws
    for seeds in ([5], [5, 6, 7]):
        e = len(seeds)
        full, part = CounterRNG(seeds), CounterRNG(seeds)
        full.counter = part.counter = 17
        w = WindowedDraws(part, 2, 5)
        u_full = full.uniform((2 * e, 3, 20, 6), dtype)
        z_full = full.normal((2 * e, 3, 5, 4), dtype)
        u = w.uniform((2 * e, 3, 4, 6), dtype)
        z = randn((2 * e, 3, 1, 4), w, dtype=dtype)
        assert torch.equal(u, u_full[:, :, :4]) and torch.equal(z, z_full[:, :, :1])
        assert part.counter == full.counter == 17 + 2 * 3 * 20 * 6 + 2 * 3 * 5 * 4
        if e == 3:                                   # replica 1 alone gets the middle third
            alone = WindowedDraws(CounterRNG([6]), 2, 5)
            alone.counter = 17
            assert torch.equal(alone.uniform((2, 3, 4, 6), dtype), u[2:4])
    with pytest.raises(ValueError, match="window"):
        w.uniform((3, 3, 4, 6), window=(2, 1))
    with pytest.raises(ValueError, match="dimensions"):
        w.uniform((3, 4))
    with pytest.raises(ValueError, match="factor"):
        WindowedDraws(part, 2, 0)


@pytest.mark.parametrize("seeds, field", [(True, r"seeds"), ([1, True], r"seeds\[1\]"), ([2.5], r"seeds\[0\]"),
                                          (["3"], r"seeds\[0\]"), ([2 ** 63], r"seeds\[0\]"),
                                          ([-2 ** 63 - 1], r"seeds\[0\]"), (torch.tensor([1.5]), r"seeds"),
                                          (torch.tensor([True]), r"seeds"), ("3", r"seeds"), (None, r"seeds")])
def test_counter_rng_refuses_a_seed_that_is_no_int64_integer(seeds: object, field: str) -> None:
    """``torch.as_tensor`` took ``True`` as seed 1 and ``2.5`` as seed 2 (another stream than the one written) and
    overflowed with "Overflow when unpacking long long" beyond int64; each is now a ValueError naming the seed and
    the int64 range (narrower than torch.manual_seed's [-2^63, 2^64): the streams' keys are int64)."""
    with pytest.raises(ValueError, match=rf"^CounterRNG\.{field} must be (an integer|integers|a sequence of integers) "
                                         r"in \[-2\^63, 2\^63\) \(int64"):
        CounterRNG(seeds)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^CounterRNG\.seeds must hold at least one seed"):
        CounterRNG([])


def test_counter_rng_takes_every_int64_seed_and_integer_tensors_alike() -> None:
    """The ends of the int64 range are valid seeds; an int64 / int32 tensor, numpy integers and one plain integer
    give the streams of the same seeds written as a list of ints."""
    edge = CounterRNG([-2 ** 63, 2 ** 63 - 1])
    assert edge.seeds == [-2 ** 63, 2 ** 63 - 1]
    ref = CounterRNG([5, 6]).uniform((2, 8), torch.float64)
    for seeds in (torch.tensor([5, 6]), torch.tensor([5, 6], dtype=torch.int32), [np.int64(5), np.int32(6)]):
        g = CounterRNG(seeds)  # type: ignore[arg-type]
        assert g.seeds == [5, 6]
        assert torch.equal(g.uniform((2, 8), torch.float64), ref)
    assert torch.equal(CounterRNG(5).uniform((4,), torch.float64), CounterRNG([5]).uniform((4,), torch.float64))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_derived_uniforms_are_uniform_independent_of_their_key_and_elementwise(dtype: torch.dtype) -> None:
    """:func:`derived_uniforms` of normal keys and nearby salts (a device's end point and state): in (0, 1),
    Kolmogorov–Smirnov against U(0, 1) (p > 1e-4), uncorrelated with the key, with each other and with the salt
    (|r| < 5/sqrt(n)), the joint (key quartile, uniform quartile) table a chi-square fit (p > 1e-4); a subset of
    the elements gets the full tensor's numbers there, and the generator-free draws are reproducible."""
    n = 200_000
    g = torch.Generator().manual_seed(5)
    key = torch.randn(n, generator=g, dtype=dtype)
    salt = (1.0 + 1e-3 * torch.arange(n, dtype=torch.float64) % 7).to(dtype)          # few distinct states
    u, v = derived_uniforms(key, salt, 2, torch.float64)
    assert float(u.min()) > 0.0 and float(u.max()) < 1.0
    for x in (u, v):
        assert stats.kstest(x.numpy(), "uniform").pvalue > 1e-4
    bound = 5 / n ** 0.5
    for a, b in ((u, key), (v, key), (u, v), (u, salt.double())):
        assert abs(float(np.corrcoef(a.numpy(), b.double().numpy())[0, 1])) < bound
    cuts = torch.quantile(key.double(), torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
    q = torch.bucketize(key.double(), cuts)
    table = torch.zeros(4, 4).index_put_((q, (u * 4).long()), torch.ones(n), accumulate=True)
    assert stats.chi2_contingency(table.numpy()).pvalue > 1e-4
    idx = torch.tensor([3, 17, 99_999, 5])
    sub = derived_uniforms(key[idx], salt[idx], 2, torch.float64)
    assert torch.equal(sub[0], u[idx]) and torch.equal(sub[1], v[idx])
    again = derived_uniforms(key, salt, 2, torch.float64)
    assert torch.equal(again[0], u) and torch.equal(again[1], v)
    f32 = derived_uniforms(key, salt, 1, torch.float32)[0]
    assert f32.dtype == torch.float32 and float(f32.min()) > 0.0 and float(f32.max()) < 1.0


def _splitmix_reference(key_bits: int, salt_bits: int, j: int, top: int) -> float:
    """The derived uniform ``j`` of one element in Python integers (SplitMix64's finalizer, modulo 2^64): the
    documented formula, written out independently of both implementations."""
    mask = (1 << 64) - 1
    gamma, m1, m2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
    z = (key_bits * gamma + 0x5851F42D4C957F2D + salt_bits * m2 + (j + 1) * gamma) & mask
    z = ((z ^ (z >> 30)) * m1) & mask
    z = ((z ^ (z >> 27)) * m2) & mask
    z ^= z >> 31                               # changes bits 0..32 only: no effect on the top 23 of float32
    return ((z >> (64 - top)) + 0.5) * 2.0 ** -top


@pytest.mark.parametrize("key_dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_derived_uniforms_numpy_and_torch_paths_give_the_same_bits(key_dtype: torch.dtype, dtype: torch.dtype) -> None:
    """The CPU's numpy uint64 path and the torch int64 path (GPUs, and CPUs inside ``no_host_reads``) give the same
    numbers bit for bit, also for keys NaN, ±inf, ±0 and subnormal, and both match the formula in Python integers."""
    from devices.host import no_host_reads

    g = torch.Generator().manual_seed(11)
    key = torch.randn(4000, generator=g, dtype=torch.float64).to(key_dtype)
    salt = torch.randn(4000, generator=g, dtype=torch.float64).to(key_dtype)
    key[:6] = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1e-310]).to(key_dtype)
    fast = derived_uniforms(key, salt, 3, dtype)
    with no_host_reads():
        plain = derived_uniforms(key, salt, 3, dtype)
    for a, b in zip(fast, plain):
        assert a.dtype == b.dtype == dtype and torch.equal(a, b)
    wide = key_dtype == torch.float64

    def bits(t: torch.Tensor, i: int) -> int:
        return int((t.view(torch.int64) if wide else t.float().view(torch.int32).to(torch.int64))[i])
    if dtype in (torch.float32, torch.float64):
        top = 52 if dtype == torch.float64 else 23
        for i in (0, 3, 4, 10, 3999):
            for j in range(3):
                assert float(fast[j][i]) == _splitmix_reference(bits(key, i), bits(salt, i), j, top)
