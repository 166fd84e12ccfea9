"""The CPU fast path of the pulsed update (crossbar/_sparse_update.py) against the dense reference.

Exactness: on the same drawn trains, the pair-by-pair count equals the two-matmul count of ``pulse_counts``
number for number. Distribution: the trains drawn as positions (geometric gaps + thinning) fire every line
independently with its own probability (per-line frequencies and per-device coincidence means within stated
standard errors), and a TileArray update through the sparse path moves the weights like the dense one.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import crossbar._sparse_update as su
from crossbar._reduce import SILENT_SHARE
from crossbar import CrossbarConfig, TileArray
from crossbar.update import UpdateParameters, _dense_counts, _draw_dense_trains, _plan_trains, update_scales
from devices import ConstantStepDevice, IdealDevice

from .update_paths import CPU_PATHS, force_cpu_path

DW = 0.001


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _line_probabilities(plan) -> tuple[torch.Tensor, torch.Tensor]:
    """Per line and slot firing probabilities [R, C, B, S, line] of a plan (live slots only), flat."""
    slot = torch.arange(plan.n_slots)
    live = (slot < plan.bl[..., None])[..., None]                          # [R, C, B, S, 1]
    p_x = (plan.b[..., None] * plan.x_abs[None]).clamp(0, 1)[:, :, :, None, :] * live
    p_d = (plan.a[..., None] * plan.d_abs[:, None]).clamp(0, 1)[:, :, :, None, :] * live
    return p_x.reshape(-1).double(), p_d.reshape(-1).double()


@settings(max_examples=60, deadline=None)
@given(batch=st.integers(1, 6), n_r=st.integers(1, 3), n_c=st.integers(1, 3), rows=st.integers(1, 9),
       cols=st.integers(1, 9), lr=st.sampled_from([0.05, -0.3, 0.0, 1.0, 0.002]),
       desired_bl=st.sampled_from([1, 5, 31]), bl_management=st.booleans(), trim=st.booleans(),
       seed=st.integers(0, 2**31 - 1))
def test_pair_count_equals_matmul_count_on_the_same_trains(batch, n_r, n_c, rows, cols, lr, desired_bl,
                                                          bl_management, trim, seed) -> None:
    g = _gen(seed)
    x = torch.randn(batch, n_c, cols, generator=g) * (torch.rand(batch, n_c, cols, generator=g) < 0.7)
    d = torch.randn(batch, n_r, rows, generator=g) * (torch.rand(batch, n_r, rows, generator=g) < 0.7)
    cfg = UpdateParameters(desired_bl=desired_bl, update_bl_management=bl_management)
    plan = _plan_trains(x, d, lr, 0.01, cfg, g, trim_slots=trim)
    trains = _draw_dense_trains(plan, g)
    n_up, n_down, total = _dense_counts(trains)
    fired_x, fired_d = (f.to(torch.int64) for f in trains.fired())
    n_pairs = int((fired_x * fired_d).sum())
    x_pos = trains.x_bits.view(-1).nonzero().squeeze(1)
    d_pos = trains.d_bits.view(-1).nonzero().squeeze(1)
    index, up, down = su._sparse_counts(plan, x_pos, d_pos, fired_x, fired_d, n_pairs)
    dense_up = torch.zeros(n_up.numel()).index_put_((index,), up)
    dense_down = torch.zeros(n_down.numel()).index_put_((index,), down)
    assert torch.equal(dense_up, n_up.reshape(-1)) and torch.equal(dense_down, n_down.reshape(-1))
    assert n_pairs == int(total) == int((n_up + n_down).sum())
    assert bool(((up + down) > 0).all()) and bool((index[1:] > index[:-1]).all())
    # positions -> bits is the inverse of bits -> positions
    back = su._bits_from_positions(plan, x_pos, d_pos)
    assert torch.equal(back.x_bits, trains.x_bits) and torch.equal(back.d_bits, trains.d_bits)


REPLICAS = 250
"""Copies of the 3 column blocks: every tile draws its own trains, so replicated tiles are independent draws."""


def _small_probability_plan(seed: int = 1):
    """A 2 x (3 x REPLICAS)-tile plan with small firing probabilities, 4 slots, a silent sample (BL = 0 in
    every tile) and a zero input block (BL = 0 in its tiles)."""
    g = _gen(seed)
    x = torch.randn(16, 3, 5, generator=g)
    d = torch.randn(16, 2, 7, generator=g) * 0.01
    d[3] = 0.0
    x[5, 1] = 0.0
    cfg = UpdateParameters(desired_bl=4, update_bl_management=False)  # 4 slots, p <= 0.07
    return _plan_trains(x.repeat(1, REPLICAS, 1), d, 0.0002, DW, cfg, g, trim_slots=True)


def _per_replica(t: torch.Tensor, n_r: int) -> torch.Tensor:
    """[R, REPLICAS * 3, ...] (flat) -> [REPLICAS, R, 3, ...]."""
    t = t.view(n_r, REPLICAS, 3, -1)
    return t.transpose(0, 1)


def test_trains_drawn_as_positions_fire_each_line_with_its_probability() -> None:
    plan = _small_probability_plan()
    p_bars = su._max_probabilities(plan)
    assert p_bars is not None and max(p_bars) < 0.1
    p_x, p_d = _line_probabilities(plan)
    assert p_x.max().item() <= p_bars[0] and p_d.max().item() <= p_bars[1]
    draws = 12
    reps = draws * REPLICAS
    g = _gen(2)
    hits_x = torch.zeros_like(p_x)
    hits_d = torch.zeros_like(p_d)
    for _ in range(draws):  # repetitions of a random experiment, not a loop over lines or pulses
        x_pos, d_pos = su._draw_sparse_trains(plan, *p_bars, g)
        assert bool((x_pos[1:] > x_pos[:-1]).all()) and int(x_pos.max()) < p_x.numel()
        hits_x[x_pos] += 1
        hits_d[d_pos] += 1
    n_r = plan.shape[0]
    for hits, p in ((hits_x, p_x), (hits_d, p_d)):
        assert hits[p == 0].sum() == 0                               # silent slots and zero inputs never fire
        hits = _per_replica(hits, n_r).sum(0).reshape(-1)            # counts over all replicas and draws
        p = _per_replica(p, n_r)[0].reshape(-1)                      # the same probabilities in every replica
        # lines expecting >= 10 hits: chi-square per degree of freedom within 5 of its standard deviations
        # of 1, no gross outlier, mean deviation ~ 0; rarer lines pooled
        var = reps * p * (1 - p)
        often = reps * p >= 10
        n = often.sum().item()
        z = (hits[often] - reps * p[often]) / var[often].sqrt()
        assert abs(z.square().mean().item() - 1) < 5 * math.sqrt(2 / n)
        assert z.abs().max() < 6.5 and abs(z.mean().item()) < 4 / math.sqrt(n)
        rare = (p > 0) & ~often
        assert abs(hits[rare].sum() - reps * p[rare].sum()) < 4 * var[rare].sum().sqrt()


def test_trains_drawn_as_positions_give_independent_coincidences() -> None:
    """E[n_up + n_down] of every device = sum over samples and live slots of p_x p_d (independent lines)."""
    plan = _small_probability_plan(seed=3)
    p_bars = su._max_probabilities(plan)
    n_r, n_c, batch, n_slots, cols, rows = plan.shape
    p_x, p_d = _line_probabilities(plan)
    p_x = p_x.view(n_r, n_c, batch * n_slots, cols)
    p_d = p_d.view(n_r, n_c, batch * n_slots, rows)
    want = _per_replica(torch.einsum("rcki,rckj->rcij", p_d, p_x), n_r)[0]   # [R, 3, rows * cols]
    draws = 12
    g = _gen(4)
    samples = []
    for _ in range(draws):
        trains = su._bits_from_positions(plan, *su._draw_sparse_trains(plan, *p_bars, g))
        n = torch.einsum("rcki,rckj->rcij", trains.d_bits.view(n_r, n_c, -1, rows),
                         trains.x_bits.view(n_r, n_c, -1, cols)).double()
        samples.append(_per_replica(n, n_r))
    samples = torch.cat(samples)                                     # [draws * REPLICAS, R, 3, rows * cols]
    reps = samples.shape[0]
    se = samples.std(0) / math.sqrt(reps)
    z = (samples.mean(0) - want) / (se + 1e-12)
    assert z.abs().max() < 5.0 and abs(z.square().mean().item() - 1) < 0.35   # 210 devices


def test_positions_are_extended_when_the_margin_runs_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no margin the first chunk of candidates stops short: the draw continues, same distribution."""
    monkeypatch.setattr(su, "_MARGIN_SIGMAS", 0.0)
    monkeypatch.setattr(su, "_MARGIN_EXTRA", 1)
    n_pos, p = 2000, 0.05
    prob = torch.full((n_pos,), 0.03, dtype=torch.float64)
    prob[::7] = 0.0
    reps = 2000
    g = _gen(5)
    hits = torch.zeros(n_pos, dtype=torch.float64)
    for _ in range(reps):
        pos = su._bernoulli_positions(n_pos, p, lambda c: prob[c], g, torch.device("cpu"))
        assert bool((pos[1:] > pos[:-1]).all()) and (pos.numel() == 0 or int(pos[-1]) < n_pos)
        hits[pos] += 1
    assert hits[::7].sum() == 0
    live = prob > 0
    rate = hits[live].sum() / (reps * live.sum())
    assert abs(rate.item() - 0.03) < 4 * math.sqrt(0.03 * 0.97 / (reps * live.sum().item()))
    # no position is favoured: the hits of the first and the second half agree (chunk boundaries)
    half = n_pos // 2
    a, b = hits[:half][live[:half]].mean(), hits[half:][live[half:]].mean()
    assert abs(a - b).item() < 4 * math.sqrt(2 * reps * 0.03 / (live.sum().item() / 2))


@pytest.mark.parametrize("path", ["sparse", "dense-int8", "dense-float"])
def test_cpu_counts_match_pulse_counts_on_average(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both algorithms of cpu_pulse_counts (the dense one with either count kernel, whatever this CPU chose):
    E[n_down - n_up] dw_min = lr sum_b d x^T (unsaturated), 4 SE."""
    monkeypatch.setattr(su, "_sparse_is_cheaper", lambda plan, n, subset=None: path == "sparse")
    monkeypatch.setattr(su, "_INT8_MM", path == "dense-int8" and su._int8_matmul_works())
    rng = np.random.default_rng(7)
    batch, n_r, n_c, rows, cols = 3, 2, 2, 3, 4
    x_np = rng.uniform(-1, 1, (batch, n_c, cols))
    d_np = rng.uniform(-0.03, 0.03, (batch, n_r, rows))
    lr, reps = 0.02, 2000
    x = torch.tensor(x_np, dtype=torch.float32).repeat(1, reps, 1)   # independent replicated tiles
    d = torch.tensor(d_np, dtype=torch.float32)
    counts = su.cpu_pulse_counts(x, d, lr, DW, UpdateParameters(), _gen(8))
    assert (counts.touched is not None) == (path == "sparse")
    if path.startswith("dense"):                   # the int8 kernel's counts are int32, the float one's float
        assert (counts.n_up.dtype == torch.int32) == su._INT8_MM
    shape = (n_r, n_c * reps, rows, cols)
    if counts.touched is None:
        n_up, n_down = counts.n_up, counts.n_down
    else:
        n_up = torch.zeros(math.prod(shape)).index_put_((counts.touched,), counts.n_up).view(shape)
        n_down = torch.zeros(math.prod(shape)).index_put_((counts.touched,), counts.n_down).view(shape)
    assert int(counts.total) == int((n_up + n_down).sum())
    net = (n_down - n_up).double().view(n_r, reps, n_c, rows, cols).transpose(0, 1)
    want = lr / DW * np.einsum("bri,bcj->rcij", d_np, x_np)
    mean = net.mean(0).numpy()
    se = net.std(0).numpy() / math.sqrt(reps)
    assert np.all(np.abs(mean - want) <= 4 * se + 1e-9)


def test_scalar_and_tensor_learning_rates_give_identical_scales() -> None:
    """The host-scalar fast path of the update management rounds exactly like the 0-d tensor path."""
    g = _gen(9)
    x = torch.randn(5, 3, 7, generator=g) * 2
    d = torch.randn(5, 2, 6, generator=g) * 0.3
    x[0, 1] = 0
    d[1, 0] = 0
    for cfg in (UpdateParameters(), UpdateParameters(update_bl_management=False), UpdateParameters(um_grad_scale=0.7),
                UpdateParameters(update_management=False, update_bl_management=False)):
        for lr in (0.0123456789, 0.2, -0.05):
            for dtype in (torch.float32, torch.float64):
                a = update_scales(x.to(dtype), d.to(dtype), lr, DW, cfg)
                b = update_scales(x.to(dtype), d.to(dtype), torch.tensor(lr, dtype=dtype), DW, cfg)
                assert all(torch.equal(u, v) for u, v in zip(a, b))


def _tile(device=None, seed: int = 0, **cfg_kw) -> TileArray:
    cfg = CrossbarConfig.perfect(device=device or ConstantStepDevice(), tile_rows=32, tile_cols=32, **cfg_kw)
    return TileArray(64, 96, cfg, seed=seed)


@pytest.mark.parametrize("path", ["sparse", "dense"])
def test_tile_update_moves_weights_like_the_float_update(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """IdealDevice (steps exactly dw_min): the mean weight change of either path is -lr d x^T (4 SE)."""
    monkeypatch.setattr(su, "_sparse_is_cheaper", lambda plan, n, subset=None: path == "sparse")
    arr = _tile(IdealDevice(dw_min=DW))
    g = _gen(10)
    x = torch.rand(4, 96, generator=g) * 0.5 + 0.25
    d = (torch.rand(4, 64, generator=g) * 0.02 + 0.01) * torch.sign(torch.randn(1, 64, generator=g))
    lr, reps = 0.01, 300
    total = torch.zeros(64, 96, dtype=torch.float64)
    square = torch.zeros_like(total)
    for _ in range(reps):
        arr.program(torch.zeros(64, 96))
        arr.update(x, d, lr)
        dw = arr.read().double()
        total += dw
        square += dw * dw
    mean = total / reps
    se = torch.sqrt((square / reps - mean**2).clamp_min(0) / reps)
    z = (mean + lr * (d.T @ x).double()) / se                        # 6144 devices, each ~ N(0, 1)
    assert z.abs().max() < 5.5 and abs(z.square().mean().item() - 1) < 0.1


def test_sparse_update_keeps_untouched_devices_and_respects_bounds() -> None:
    arr = _tile(ConstantStepDevice(w_max_dtod=0.0, w_min_dtod=0.0, w_min=-0.05, w_max=0.05), seed=1)
    w0 = torch.rand(64, 96, generator=_gen(11)) * 0.08 - 0.04
    w0[::3] = 0.0                                                     # exact zeros (and their sign) are kept
    arr.program(w0)
    x = torch.zeros(2, 96)
    x[:, :10] = torch.rand(2, 10, generator=_gen(12)) + 0.5          # only the first 10 inputs are active
    d = torch.randn(2, 64, generator=_gen(13)) * 5.0                  # large: many pulses, some saturate
    before = arr.read()
    arr.update(x, d, 0.05)
    after = arr.read()
    assert torch.equal(after[:, 10:], before[:, 10:])                 # bit-exact, zeros included
    assert not torch.equal(after[:, :10], before[:, :10])
    assert bool((after >= -0.05).all()) and bool((after <= 0.05).all())


def test_packed_parameters_follow_load_state_dict_and_in_place_changes() -> None:
    """The packed parameter cache of the sparse path is rebuilt when the dp_* buffers change."""
    a = _tile(seed=2)
    b = _tile(seed=3)
    x = torch.rand(3, 96, generator=_gen(14))
    d = torch.randn(3, 64, generator=_gen(15)) * 0.01
    b.update(x, d, 0.01)                                              # builds b's cache from b's parameters
    b.load_state_dict(a.state_dict())
    a.update(x, d, 0.01)
    b.update(x, d, 0.01)
    assert torch.equal(a.weight_tiles, b.weight_tiles)
    b.dp_w_max.fill_(1e-4)                                            # in place: new upper bounds
    b.dp_w_min.fill_(-1e-4)
    b.update(x, d * 100, 0.05)
    assert float(b.weight_tiles.abs().max()) <= 1e-4


def test_write_noise_redraws_only_updated_devices_on_the_sparse_path() -> None:
    arr = _tile(ConstantStepDevice(write_noise_std=3.0), seed=4)
    arr.program(torch.zeros(64, 96))
    apparent = arr.apparent_tiles.clone()
    hidden = arr.weight_tiles.clone()
    x = torch.zeros(2, 96)
    x[:, 40:50] = 1.0
    d = torch.randn(2, 64, generator=_gen(16)) * 0.01
    arr.update(x, d, 0.01)
    changed = arr.weight_tiles != hidden
    assert changed.any()
    assert torch.equal(arr.apparent_tiles[~changed], apparent[~changed])
    assert bool((arr.apparent_tiles[changed] != arr.weight_tiles[changed]).all())


def test_nan_errors_stop_the_cpu_update_with_a_clear_message():
    """A diverged run's NaN errors must not crash deep in the train drawing (they once raised torch.arange's
    'upper bound and lower bound inconsistent'): a FloatingPointError names the cause; the states are untouched."""
    from crossbar import CrossbarConfig, TileArray
    from devices import get_preset

    arr = TileArray(20, 30, CrossbarConfig(device=get_preset("PCM"), tile_rows=16, tile_cols=16), seed=0)
    before = arr.read()
    d = torch.randn(8, 20) * 0.1
    d[3, 4] = float("nan")
    with pytest.raises(FloatingPointError, match="contain NaN .*lower the learning rate"):
        arr.update(torch.randn(8, 30), d, 0.1)
    assert torch.equal(arr.read(), before)



@pytest.mark.parametrize("count,draw", CPU_PATHS)
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan], ids=["inf", "-inf", "nan"])
@pytest.mark.parametrize("operand", ["x", "d"])
def test_an_inf_input_or_error_stops_the_cpu_update_as_a_nan_does(operand: str, value: float, count: str, draw: str,
                                                                  monkeypatch) -> None:
    """An Inf (either sign) in one input or one error of a sample, on every way the CPU update can draw and count:
    the FloatingPointError of a NaN ('NaN or Inf'), before anything is drawn; the states are untouched. Before, an
    Inf silenced that sample's update without a word."""
    from devices import get_preset

    force_cpu_path(monkeypatch, count, draw)
    arr = TileArray(20, 30, CrossbarConfig(device=get_preset("PCM"), tile_rows=16, tile_cols=16), seed=0)
    g = _gen(17)
    x, d = torch.randn(8, 30, generator=g), torch.randn(8, 20, generator=g) * 0.1
    (x if operand == "x" else d)[3, 4] = value
    _assert_the_update_raises_and_changes_nothing(arr, x, d, 0.1)


def _assert_the_update_raises_and_changes_nothing(arr: TileArray, x: torch.Tensor, d: torch.Tensor, lr: float) -> None:
    """``arr.update(x, d, lr)`` raises the diverged-training FloatingPointError and leaves the states (hidden and
    apparent) and the pulse counter as they were."""
    before, apparent = arr.read(hidden=True), arr.read()
    with pytest.raises(FloatingPointError, match="contain NaN or Inf .*lower the learning rate"):
        arr.update(x, d, lr)
    assert torch.equal(arr.read(hidden=True), before) and torch.equal(arr.read(), apparent)
    assert int(arr.counter_pulses) == 0


@pytest.mark.parametrize("case", ["tensor-lr", "float64", "silent-samples"])
@pytest.mark.parametrize("value", [math.inf, -math.inf], ids=["inf", "-inf"])
@pytest.mark.parametrize("operand", ["x", "d"])
def test_cpu_pulse_counts_raise_for_an_inf_as_for_a_nan(operand: str, value: float, case: str) -> None:
    """``cpu_pulse_counts`` itself, beyond the float32 / float-lr tile update: a 0-d tensor learning rate (the tensor
    scales), float64 data (numpy's float64 scales) and a batch where most errors are zero (the silent samples left
    out first): an Inf raises exactly as a NaN does."""
    g = _gen(18)
    dtype = torch.float64 if case == "float64" else torch.float32
    x = torch.randn(8, 2, 16, generator=g, dtype=dtype)            # [batch, C, cols]
    d = torch.randn(8, 2, 16, generator=g, dtype=dtype) * 0.1      # [batch, R, rows]
    if case == "silent-samples":
        d[:6] = 0.0                                                 # 6 of 8 samples silent: left out of the plan
    lr = torch.tensor(0.1) if case == "tensor-lr" else 0.1
    for v in (math.nan, value):
        bad_x, bad_d = x.clone(), d.clone()
        (bad_x if operand == "x" else bad_d)[7, 1, 5] = v
        with pytest.raises(FloatingPointError, match="contain NaN or Inf"):
            su.cpu_pulse_counts(bad_x, bad_d, lr, DW, UpdateParameters(), _gen(1))
    assert int(su.cpu_pulse_counts(x, d, lr, DW, UpdateParameters(), _gen(1)).total) > 0

MANAGEMENT = {
    "bl": UpdateParameters(desired_bl=15),
    "um": UpdateParameters(desired_bl=15, update_bl_management=False),
    "none": UpdateParameters(desired_bl=15, update_bl_management=False, update_management=False),
    "none-free-bl": UpdateParameters(desired_bl=15, update_bl_management=False, update_management=False,
                                     fixed_bl=False),
    "um-res": UpdateParameters(desired_bl=15, update_bl_management=False, res=0.05),
}
"""Every BL / update management configuration (and a discretized and a learning-rate-driven length)."""


@pytest.mark.parametrize("management", list(MANAGEMENT))
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan], ids=["inf", "-inf", "nan"])
@pytest.mark.parametrize("operand", ["x", "d"])
def test_a_nan_or_inf_stops_the_cpu_update_in_every_management_configuration(operand: str, value: float,
                                                                            management: str) -> None:
    """Without BL management (update management on or off) a NaN line once never fired and an Inf line fired in
    every slot, silently: the CPU tile update now raises the FloatingPointError of the BL-managed update in every
    configuration (lr 0.2 > dw_min · desired_bl: the free-BL case takes its learning-rate-driven length); the states
    and the pulse counter are untouched."""
    from devices import get_preset

    arr = TileArray(20, 30, CrossbarConfig(device=get_preset("PCM"), tile_rows=16, tile_cols=16,
                                           update=MANAGEMENT[management]), seed=0)
    g = _gen(19)
    x, d = torch.randn(8, 30, generator=g), torch.randn(8, 20, generator=g) * 0.1
    arr.update(x.clone(), d.clone(), 0.2)                  # finite values: no error
    assert int(arr.counter_pulses) > 0
    arr = TileArray(20, 30, CrossbarConfig(device=get_preset("PCM"), tile_rows=16, tile_cols=16,
                                           update=MANAGEMENT[management]), seed=0)
    (x if operand == "x" else d)[5, 17] = value
    _assert_the_update_raises_and_changes_nothing(arr, x, d, 0.2)


@pytest.mark.parametrize("management", ["um", "none", "um-res"])
@pytest.mark.parametrize("case", ["tensor-lr", "float64", "silent-samples", "per-row-block"])
@pytest.mark.parametrize("operand", ["x", "d"])
def test_cpu_pulse_counts_raise_for_a_nan_or_inf_without_bl_management(operand: str, case: str,
                                                                       management: str) -> None:
    """``cpu_pulse_counts`` itself without BL management: a 0-d tensor learning rate, float64 data, a batch whose
    errors are mostly zero (the silent samples left out first) and inputs per row block ``[batch, R, C, cols]``: a
    NaN, an Inf or a -Inf raises; the finite values count pulses."""
    g = _gen(20)
    dtype = torch.float64 if case == "float64" else torch.float32
    x_shape = (8, 2, 2, 16) if case == "per-row-block" else (8, 2, 16)
    x = torch.randn(*x_shape, generator=g, dtype=dtype)
    d = torch.randn(8, 2, 16, generator=g, dtype=dtype) * 0.1      # [batch, R, rows]
    if case == "silent-samples":
        d[:6] = 0.0
    lr = torch.tensor(0.1) if case == "tensor-lr" else 0.1
    cfg = MANAGEMENT[management]
    for v in (math.nan, math.inf, -math.inf):
        bad_x, bad_d = x.clone(), d.clone()
        if operand == "x":
            bad_x[(7, 1, 0, 5) if case == "per-row-block" else (7, 1, 5)] = v
        else:
            bad_d[7, 1, 5] = v
        with pytest.raises(FloatingPointError, match="contain NaN or Inf"):
            su.cpu_pulse_counts(bad_x, bad_d, lr, DW, cfg, _gen(1))
    assert int(su.cpu_pulse_counts(x, d, lr, DW, cfg, _gen(1)).total) > 0


@pytest.mark.parametrize("management", list(MANAGEMENT))
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan], ids=["inf", "-inf", "nan"])
@pytest.mark.parametrize("operand", ["x", "d"])
def test_a_nan_or_inf_facing_a_zero_block_or_a_zero_lr_is_harmless(operand: str, value: float, management: str,
                                                                    monkeypatch) -> None:
    """No error where the bad value cannot reach a device: its sample's other operand is all zero in that block (no
    coincidence), or ``lr = 0``. The counts are then exactly those with the bad value replaced by 0 (one CPU path
    forced: the choice of path depends on the values, the counts of a path on its draws only)."""
    force_cpu_path(monkeypatch, "dense", "compact")
    g = _gen(21)
    x = torch.randn(4, 2, 6, generator=g)                           # [batch, C, cols]
    d = torch.randn(4, 2, 5, generator=g) * 0.1                     # [batch, R, rows]
    cfg = MANAGEMENT[management]
    if operand == "x":
        d[2] = 0.0                                                  # sample 2: no error in any row block
        bad_x, bad_d, clean_x, clean_d = x.clone(), d, x.clone(), d
        bad_x[2, 1, 3], clean_x[2, 1, 3] = value, 0.0
    else:
        x[2, :] = 0.0                                               # sample 2: no input in any column block
        bad_x, bad_d, clean_x, clean_d = x, d.clone(), x, d.clone()
        bad_d[2, 0, 4], clean_d[2, 0, 4] = value, 0.0
    got = su.cpu_pulse_counts(bad_x, bad_d, 0.2, DW, cfg, _gen(2))
    want = su.cpu_pulse_counts(clean_x, clean_d, 0.2, DW, cfg, _gen(2))
    assert got.touched is None and want.touched is None and int(want.total) > 0
    for u, v in zip(got[1:], want[1:]):
        assert torch.equal(u, v)
    zero_lr = su.cpu_pulse_counts(bad_x, bad_d, 0.0, DW, cfg, _gen(2))   # lr = 0: no pulse, no error
    assert int(zero_lr.total) == 0


def test_a_nan_learning_rate_tensor_is_rejected_on_the_cpu() -> None:
    """A 0-d tensor learning rate holding a NaN or an Inf (a plain number is rejected by the argument check) names
    the learning rate, in every configuration (it once raised the inputs' NaN message with BL management, an
    OverflowError with the free BL, and nothing otherwise)."""
    x, d = torch.randn(3, 1, 4, generator=_gen(22)), torch.randn(3, 1, 5, generator=_gen(23))
    for cfg in MANAGEMENT.values():
        for v in (math.nan, math.inf):
            with pytest.raises(ValueError, match="lr must be finite"):
                su.cpu_pulse_counts(x, d, torch.tensor(v), DW, cfg, _gen(1))


@settings(max_examples=40, deadline=None)
@given(n_r=st.integers(1, 3), n_c=st.integers(1, 3), batch=st.integers(1, 7), seed=st.integers(0, 2**16))
def test_pair_layout_packs_each_samples_live_slots_in_turn(n_r: int, n_c: int, batch: int, seed: int) -> None:
    """The compact trains' layout against a loop written from its definition: tile t = r·C + c gets K pairs, BL[t, b]
    pairs of each sample b in turn, then silent padding pairs that take the tile's last sample; each pair reads row
    t·batch + b of a per-tile array, c·batch + b of a per-column-block one (inputs), r·batch + b of a per-row-block
    one (errors)."""
    tiles = n_r * n_c
    bl = np.random.default_rng(seed).integers(0, 4, size=(tiles, batch))
    k, runs = su._pair_layout(bl)
    assert k == bl.sum(axis=1).max()
    tables = su._pair_tables(n_r, n_c, batch)
    want: dict[str, list] = {"rows": [], "x_rows": [], "d_rows": [], "live": []}
    for t in range(tiles):
        r, c = divmod(t, n_c)
        samples = [b for b in range(batch) for _ in range(bl[t, b])]
        pad = k - len(samples)
        samples += [batch - 1] * pad
        want["rows"] += [t * batch + b for b in samples]
        want["x_rows"] += [c * batch + b for b in samples]
        want["d_rows"] += [r * batch + b for b in samples]
        want["live"] += [True] * (k - pad) + [False] * pad
    for name, values in want.items():
        got = np.repeat(getattr(tables, name), runs)
        assert got.dtype == (np.bool_ if name == "live" else np.int64) and got.tolist() == values, name


def _counts_per_replica(counts, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense ``(n_up, n_down)`` of a :class:`CpuCounts` of the given ``[R, C, rows, cols]`` shape (float64)."""
    if counts.touched is None:
        return counts.n_up.double().view(shape), counts.n_down.double().view(shape)
    n = math.prod(shape)
    return (torch.zeros(n, dtype=torch.float64).index_put_((counts.touched,), counts.n_up.double()).view(shape),
            torch.zeros(n, dtype=torch.float64).index_put_((counts.touched,), counts.n_down.double()).view(shape))


@pytest.mark.parametrize("per_row_block", [False, True])
@pytest.mark.parametrize("count, draw", CPU_PATHS)
def test_every_cpu_path_gives_each_device_its_expected_pulses(count: str, draw: str, per_row_block: bool,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Every way cpu_pulse_counts draws and counts (errors first, where the inputs are drawn only in the slots with a
    fired error; dense; as positions; the compact trains), on a 2 x 2 grid with sparse errors, inputs per column block
    or per row block, and (but as positions, which need small probabilities) trains of up to 5 slots: over 1,500
    independent replicated tiles every device's mean ``n_up`` and ``n_down`` equal ``Σ_b BL_b · p_x · q_d`` over the
    pairs of opposite / equal signs (4 standard errors; exactly 0 where an error is 0), the probabilities and
    lengths taken from the plan."""
    calls: list[object] = []
    force_cpu_path(monkeypatch, count, draw, on_errors_first=calls.append)
    rng = np.random.default_rng(11)
    batch, n_r, n_c, rows, cols, reps = 5, 2, 2, 4, 3, 1500
    lr = 0.004 if draw == "geometric" else 0.1
    x_np = rng.uniform(-1, 1, (batch, n_r, n_c, cols) if per_row_block else (batch, n_c, cols))
    d_np = rng.uniform(-0.05, 0.05, (batch, n_r, rows)) * (rng.random((batch, n_r, rows)) < 0.35)
    d_np[0, 0] = 0.0                                                      # an empty sample (BL = 0) on a row block
    cfg = UpdateParameters(desired_bl=5)
    x = torch.tensor(x_np, dtype=torch.float32)
    d = torch.tensor(d_np, dtype=torch.float32)
    counts = su.cpu_pulse_counts(x.repeat(*(1,) * (x.dim() - 2), reps, 1), d, lr, DW, cfg, _gen(3))
    assert (counts.touched is not None) == (count == "sparse") and (bool(calls) or draw == "geometric")
    shape = (n_r, n_c * reps, rows, cols)
    n_up, n_down = _counts_per_replica(counts, shape)
    assert int(counts.total) == int((n_up + n_down).sum())
    plan = _plan_trains(x, d, lr, DW, cfg, _gen(0), trim_slots=True)     # one replica's probabilities and lengths
    bl = plan.bl.double().numpy()                                         # [R, C, batch]
    assert (bl == 0).any() and (bl.max() > 1 or draw == "geometric")      # empty samples; several slots
    p_x = (plan.b[..., None] * plan.x_per_tile(plan.x_abs)).clamp(0, 1).double().numpy()   # [R, C, batch, cols]
    q_d = (plan.a[..., None] * plan.d_abs[:, None]).clamp(0, 1).double().numpy()          # [R, C, batch, rows]
    live = bl > 0
    assert draw != "geometric" or max(p_x[live].max(), q_d[live].max()) <= su._GEOMETRIC_MAX_P
    x_sign = np.sign(x_np).transpose(1, 2, 0, 3) if per_row_block else np.sign(x_np).transpose(1, 0, 2)[None]
    d_sign = np.sign(d_np).transpose(1, 0, 2)[:, None, :, :, None]                     # [R, 1, batch, rows, 1]
    equal = d_sign == x_sign[:, :, :, None, :]                                          # [R, C, batch, rows, cols]
    pairs = bl[..., None, None] * q_d[..., :, None] * p_x[..., None, :]                # [R, C, batch, rows, cols]
    want_up = (pairs * ~equal).sum(axis=2)
    want_down = (pairs * equal).sum(axis=2)
    for got, want in ((n_up, want_up), (n_down, want_down)):
        per = got.view(n_r, reps, n_c, rows, cols).transpose(0, 1)
        mean, se = per.mean(0).numpy(), per.std(0).numpy() / math.sqrt(reps)
        assert np.all(np.abs(mean - want) <= 4 * se + 1e-12)
        assert np.all(mean[want == 0] == 0)
    assert (want_up > 0.01).any() and (want_down > 0.01).any()


def test_errors_first_is_taken_for_sparse_errors_over_many_slots() -> None:
    """The choice, from the plan alone: a CNN's first layer (9 inputs, 16 mostly-zero errors, 50k one-slot
    samples) draws its errors first; the same samples with dense errors, or sparse errors over few samples, keep
    the usual order. With trains of several slots (a larger lr, most samples using one) the dense count's compact
    draw, which leaves out the slots beyond each sample's BL, keeps the usual order, while the sparse count (whose
    draw has every slot anyway) draws errors first."""
    g = _gen(5)
    n, rows, cols = 50_000, 16, 9
    x = torch.rand(n, 1, cols, generator=g)
    d = torch.randn(n, 1, rows, generator=g) * 0.01
    sparse = d * (torch.rand(n, 1, rows, generator=g) < 0.1)

    def plan(dd: torch.Tensor, lr: float = 0.02):
        return _plan_trains(x[: dd.shape[0]], dd, lr, DW, UpdateParameters(), g, trim_slots=True)
    assert plan(sparse).n_slots == 1
    assert su._errors_first_pays(plan(sparse), dense_count=True)
    assert not su._errors_first_pays(plan(d), dense_count=True)
    assert not su._errors_first_pays(plan(sparse[:500]), dense_count=True)
    longer = plan(sparse, lr=0.05)
    assert longer.n_slots > 1 and (longer.bl == 1).float().mean() > 0.5
    assert not su._errors_first_pays(longer, dense_count=True)
    assert su._errors_first_pays(longer, dense_count=False)
    # a CNN's second layer (144 inputs, 32 sparse errors): the choice weighs the sparse count (the expected
    # pairs) and errors first, which share one sum over the error lines' probabilities
    x2 = torch.rand(12_544, 1, 144, generator=g)
    d2 = torch.randn(12_544, 1, 32, generator=g) * 0.01 * (torch.rand(12_544, 1, 32, generator=g) < 0.2)
    calls, real = [], su._error_fires

    def counted(p):
        calls.append(1)
        return real(p)
    su._error_fires = counted
    try:
        su.cpu_pulse_counts(x2, d2, 0.02, DW, UpdateParameters(), g)
    finally:
        su._error_fires = real
    assert len(calls) == 1


@settings(max_examples=60, deadline=None)
@given(batch=st.integers(1, 12), n_r=st.integers(1, 3), n_c=st.integers(1, 3), rows=st.integers(1, 12),
       cols=st.integers(1, 12), per_row_block=st.booleans(), x_density=st.sampled_from([0.0, 0.3, 1.0]),
       d_density=st.sampled_from([0.0, 0.2, 1.0]), lr=st.sampled_from([0.05, -0.3, 1.0, 40.0]),
       desired_bl=st.sampled_from([1, 5, 31]), res=st.sampled_from([0.0, 0.05]), sparse=st.booleans(),
       dtype=st.sampled_from([torch.float32, torch.float64]), seed=st.integers(0, 2**31 - 1))
def test_errors_first_counts_are_consistent_for_any_plan(batch, n_r, n_c, rows, cols, per_row_block, x_density,
                                                        d_density, lr, desired_bl, res, sparse, dtype, seed) -> None:
    """Errors first forced on any plan — empty inputs or errors (no slot at all), discretized probabilities, inputs
    per row block, both counts: non-negative integer counts whose sum is ``total``, increasing device indices, and
    no pulse without both an input and an error."""
    g = _gen(seed)
    x = torch.randn((batch, n_r, n_c, cols) if per_row_block else (batch, n_c, cols), generator=g, dtype=dtype)
    x = x * (torch.rand(x.shape, generator=g, dtype=dtype) < x_density)
    d = 0.05 * torch.randn(batch, n_r, rows, generator=g, dtype=dtype)
    d = d * (torch.rand(d.shape, generator=g, dtype=dtype) < d_density)
    with pytest.MonkeyPatch.context() as mp:
        force_cpu_path(mp, "sparse" if sparse else "dense", "errors-first")
        counts = su.cpu_pulse_counts(x, d, lr, 0.01, UpdateParameters(desired_bl=desired_bl, res=res), g)
    up, down = counts.n_up.double(), counts.n_down.double()
    assert bool((up >= 0).all()) and bool((down >= 0).all())
    assert torch.equal(up, up.round()) and torch.equal(down, down.round())
    assert int(counts.total) == int((up + down).sum())
    if counts.touched is None:
        assert up.shape == (n_r, n_c, rows, cols)
    else:
        assert counts.touched.numel() == up.numel() and bool((counts.touched[1:] > counts.touched[:-1]).all())
    if x_density == 0.0 or d_density == 0.0:
        assert int(counts.total) == 0


@settings(max_examples=40, deadline=None)
@given(batch=st.integers(2, 40), n_r=st.integers(1, 3), n_c=st.integers(1, 3), rows=st.integers(1, 9),
       cols=st.integers(1, 9), per_row_block=st.booleans(), silent=st.floats(0.0, 1.0),
       lr=st.sampled_from([0.05, -0.3, 2.0]), desired_bl=st.sampled_from([1, 5, 31]),
       path=st.sampled_from(["model", "sparse-dense", "sparse-errors-first", "dense-errors-first", "dense-compact"]),
       seed=st.integers(0, 2**31 - 1))
def test_samples_without_errors_are_left_out_exactly(batch, n_r, n_c, rows, cols, per_row_block, silent, lr,
                                                     desired_bl, path, seed) -> None:
    """The CPU counts leave out the samples whose errors are all zero (when they are at least ``SILENT_SHARE`` of
    the batch): the counts are those of the other samples alone, number for number, from the same generator state,
    on every draw-and-count path (the paths that draw only live slots keep their random stream whatever the
    samples' number; the others see the smaller batch either way). Their trains are 0 slots long, so leaving them
    out changes no expected pulse: ``test_every_cpu_path_gives_each_device_its_expected_pulses``."""
    g = _gen(seed)
    x = torch.randn((batch, n_r, n_c, cols) if per_row_block else (batch, n_c, cols), generator=g)
    d = 0.05 * torch.randn(batch, n_r, rows, generator=g)
    quiet = torch.rand(batch, generator=g) < silent
    d[quiet] = 0.0
    cfg = UpdateParameters(desired_bl=desired_bl)
    with pytest.MonkeyPatch.context() as mp:
        if path != "model":
            count, draw = path.split("-", 1)
            force_cpu_path(mp, count, draw)
        got = su.cpu_pulse_counts(x, d, lr, DW, cfg, _gen(seed + 1))
        live = (~quiet).nonzero().squeeze(1)
        dropped = batch - live.numel() >= SILENT_SHARE * batch
        want = su.cpu_pulse_counts(x[live] if dropped else x, d[live] if dropped else d, lr, DW, cfg, _gen(seed + 1))
    assert int(got.total) == int(want.total)
    assert torch.equal(got.n_up, want.n_up) and torch.equal(got.n_down, want.n_down)
    assert (got.touched is None) == (want.touched is None)
    if got.touched is not None:
        assert torch.equal(got.touched, want.touched)
    if bool(quiet.all()):
        assert int(got.total) == 0


def test_a_sample_with_errors_in_one_row_block_only_is_kept() -> None:
    """A zero error maximum in one row block does not make a sample silent: with every sample's errors zero in
    row block 0 but not in row block 1, the counts are those of the full batch (pulses in row block 1 only), while
    with the first 4 of 16 samples zero in both blocks they are those of the other 12 alone."""
    g = _gen(5)
    x = torch.rand(16, 2, 4, generator=g) + 0.1                   # [batch, C, cols]
    d = 0.05 * (torch.rand(16, 2, 3, generator=g) + 0.1)          # [batch, R, rows]
    d[:, 0] = 0.0
    cfg = UpdateParameters(desired_bl=5)
    got = su.cpu_pulse_counts(x, d, 0.5, DW, cfg, _gen(9))
    up, down = (c if got.touched is None else torch.zeros(2 * 2 * 3 * 4).index_put_((got.touched,), c.float())
                for c in (got.n_up, got.n_down))
    up, down = up.reshape(2, 2, 3, 4), down.reshape(2, 2, 3, 4)
    assert int(up[0].sum() + down[0].sum()) == 0 and int(up[1].sum() + down[1].sum()) == int(got.total) > 0
    d[:4] = 0.0
    got = su.cpu_pulse_counts(x, d, 0.5, DW, cfg, _gen(9))
    want = su.cpu_pulse_counts(x[4:], d[4:], 0.5, DW, cfg, _gen(9))
    assert int(got.total) == int(want.total) > 0
    assert torch.equal(got.n_up, want.n_up) and torch.equal(got.n_down, want.n_down)


def test_the_error_fires_are_summed_once_and_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """``_lazy_error_fires``: no sum before the first call, one sum however often it is called, and its value is
    ``Σ_i a·|d_i|`` per (tile, sample), computed here by hand from the plan's scales and errors."""
    g = _gen(3)
    x, d = torch.rand(6, 2, 4, generator=g), 0.05 * torch.rand(6, 1, 3, generator=g)
    plan = _plan_trains(x, d, 0.5, DW, UpdateParameters(desired_bl=5), _gen(4), trim_slots=True)
    calls = []
    real = su._error_fires
    monkeypatch.setattr(su, "_error_fires", lambda p: calls.append(p) or real(p))
    fires = su._lazy_error_fires(plan)
    assert calls == []
    first = fires()
    assert fires() is first and len(calls) == 1
    want = plan.a * d.abs().sum(dim=-1).t()[:, None]              # [R, C, batch]: a · Σ_i |d_i|
    assert torch.allclose(first, want, rtol=1e-6, atol=0.0)
