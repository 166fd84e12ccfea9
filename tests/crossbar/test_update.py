"""Tests of the pulsed update (crossbar/update.py) against hand-computed expectations.

Expected values come from the pulse-train model written out by hand: a device at (i, j) receives, per
sample, Binomial(BL, p_i q_j) coincidences, so without capping E[n_down - n_up] = lr d_i x_j / dw_min
(aihwkit's scaling makes BL * A * B = lr / dw_min), and with the budget exceeded (k > BL) the largest
input fires in every slot and the error probabilities are capped at 1.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from crossbar import CrossbarConfig, TileArray
from crossbar.update import (
    UpdateParameters,
    ideal_delta,
    pulse_counts,
    pulse_probabilities,
    update_scales,
)
from devices import ConstantStepDevice

DW = 0.001


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _replicate(x: torch.Tensor, reps: int) -> torch.Tensor:
    """x: [batch, C, cols] -> [batch, reps*C, cols]: every tile column block repeated ``reps`` times.

    Every tile draws its own independent trains, so replicated tiles are independent repetitions."""
    return x.repeat(1, reps, 1)


def _per_rep(n: torch.Tensor, reps: int) -> torch.Tensor:
    """[R, reps*C, rows, cols] -> [reps, R, C, rows, cols] (inverse of the column replication)."""
    n_r, rc, rows, cols = n.shape
    return n.reshape(n_r, reps, rc // reps, rows, cols).permute(1, 0, 2, 3, 4)


# ---------------------------------------------------------------------------------------------- config


def test_defaults_are_aihwkit_defaults() -> None:
    cfg = UpdateParameters()
    assert cfg.desired_bl == 31
    assert cfg.fixed_bl and cfg.update_bl_management and cfg.update_management
    assert cfg.um_grad_scale == 1.0
    assert cfg.pulse_type == "stochastic_compressed"
    assert cfg.res == 0.0 and not cfg.sto_round


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"desired_bl": 0}, "UpdateParameters.desired_bl"),
        ({"desired_bl": 3.5}, "UpdateParameters.desired_bl"),
        ({"um_grad_scale": 0.0}, "UpdateParameters.um_grad_scale"),
        ({"pulse_type": "deterministic_implicit"}, "UpdateParameters.pulse_type"),
        ({"res": -0.1}, "UpdateParameters.res"),
        ({"fixed_bl": 1}, "UpdateParameters.fixed_bl"),
    ],
)
def test_invalid_config_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        UpdateParameters(**kwargs)


def test_invalid_inputs_raise() -> None:
    cfg = UpdateParameters()
    x, d = torch.ones(2, 1, 3), torch.ones(2, 1, 4)
    with pytest.raises(ValueError, match="x: \\[batch, C, cols\\]"):
        pulse_counts(torch.ones(2, 3), d, 0.1, DW, cfg, _gen())
    with pytest.raises(ValueError, match="same batch size"):
        pulse_counts(x, torch.ones(3, 1, 4), 0.1, DW, cfg, _gen())
    with pytest.raises(ValueError, match="dw_min"):
        pulse_counts(x, d, 0.1, 0.0, cfg, _gen())
    with pytest.raises(ValueError, match="ideal_delta"):
        pulse_counts(x, d, 0.1, DW, UpdateParameters(pulse_type="none"), _gen())


def test_a_tensor_lr_must_be_one_element_on_the_update_device() -> None:
    """A tensor ``lr`` on another device than the update's tensors would be copied over at every update (from the
    CPU to a GPU: a host synchronisation each time), a multi-element one would broadcast into the scales: both
    are refused, naming ``lr`` and the device, by ``pulse_counts`` and by the tiles' update."""
    x, d = torch.ones(2, 1, 3), torch.ones(2, 1, 4)
    msg = r"lr must be a number or a one-element tensor on the update's device \(cpu\)"
    tile = TileArray(4, 3, CrossbarConfig(), seed=0)
    for lr in (torch.tensor(0.1, device="meta"), torch.tensor([0.1, 0.2])):
        with pytest.raises(ValueError, match=msg):
            pulse_counts(x, d, lr, DW, UpdateParameters(), _gen())
        with pytest.raises(ValueError, match=msg):
            tile.update(torch.ones(2, 3), torch.ones(2, 4), lr)
    pulse_counts(x, d, torch.tensor([0.1]), DW, UpdateParameters(), _gen())   # one element, any shape: accepted


# ---------------------------------------------------------------------------------------------- BL management


def test_bl_management_hand_computed() -> None:
    """k = lr max|x| max|d| / dw_min; BL = min(ceil(k), 31); A, B balance the two largest values."""
    cfg = UpdateParameters()
    x = torch.tensor([[[1.0, -0.5]]])  # max |x| = 1
    d = torch.tensor([[[0.5, 0.25, -0.1]]])  # max |d| = 0.5
    # lr = 0.049 -> k = 24.5 -> BL = 25; both largest values fire with sqrt(k / BL)
    bl, a, b = update_scales(x, d, 0.049, DW, cfg)
    assert bl.shape == (1, 1, 1) and bl.dtype == torch.int64
    assert bl.item() == 25
    assert a.item() * 0.5 == pytest.approx(math.sqrt(24.5 / 25), rel=1e-5)
    assert b.item() * 1.0 == pytest.approx(math.sqrt(24.5 / 25), rel=1e-5)
    assert a.item() * b.item() * 25 == pytest.approx(0.049 / DW, rel=1e-5)  # BL A B = lr / dw_min
    # lr = 0.0001 -> k = 0.05 -> BL = 1
    bl, a, b = update_scales(x, d, 0.0001, DW, cfg)
    assert bl.item() == 1
    assert a.item() * 0.5 == pytest.approx(math.sqrt(0.05), rel=1e-5)
    # lr = 0.101 -> k = 50.5 > 31 -> BL = 31, largest x fires always, largest d would need 50.5 / 31
    bl, a, b = update_scales(x, d, 0.101, DW, cfg)
    assert bl.item() == 31
    assert b.item() * 1.0 == pytest.approx(1.0, rel=1e-5)
    assert a.item() * 0.5 == pytest.approx(50.5 / 31, rel=1e-5)
    p_x, p_d, _ = pulse_probabilities(x, d, 0.101, DW, cfg)
    torch.testing.assert_close(p_x[0, 0, 0], torch.tensor([1.0, 0.5]))
    torch.testing.assert_close(p_d[0, 0, 0], torch.tensor([1.0, 0.25 * 50.5 / 15.5, 0.1 * 50.5 / 15.5]))


def test_um_grad_scale_and_non_managed_modes() -> None:
    x = torch.tensor([[[0.8, 0.2]]])
    d = torch.tensor([[[0.4]]])
    # um_grad_scale = 0.5: k = lr * 0.8 * (0.5 * 0.4) / dw = 0.0505 * 160 = 8.08 -> BL 9
    bl, a, b = update_scales(x, d, 0.0505, DW, UpdateParameters(um_grad_scale=0.5))
    assert bl.item() == 9
    # d fires with A * 0.4 = sqrt(lr/(dw BL)) * sqrt(0.8 / 0.2) * 0.4
    assert a.item() * 0.4 == pytest.approx(math.sqrt(50.5 / 9) * 2 * 0.4, rel=1e-5)
    assert b.item() * 0.8 == pytest.approx(math.sqrt(50.5 / 9) * math.sqrt(0.2 / 0.8) * 0.8, rel=1e-5)
    # no management at all, fixed BL: BL = 31, A = B = sqrt(lr / (dw 31))
    off = UpdateParameters(update_bl_management=False, update_management=False)
    bl, a, b = update_scales(x, d, 0.0505, DW, off)
    assert bl.item() == 31
    assert a.item() == pytest.approx(math.sqrt(50.5 / 31), rel=1e-5)
    assert b.item() == pytest.approx(a.item(), rel=1e-6)
    # update management only: BL stays 31, A and B rebalanced by sqrt(max|x| / max|d|)
    um = UpdateParameters(update_bl_management=False, update_management=True)
    bl, a, b = update_scales(x, d, 0.0505, DW, um)
    assert bl.item() == 31
    assert a.item() == pytest.approx(math.sqrt(50.5 / 31) * math.sqrt(0.8 / 0.4), rel=1e-5)
    assert b.item() == pytest.approx(math.sqrt(50.5 / 31) * math.sqrt(0.4 / 0.8), rel=1e-5)
    # not fixed, no management, lr > dw * 31: A = B = 1, BL = ceil(lr / dw) = ceil(50.5) = 51
    free = UpdateParameters(fixed_bl=False, update_bl_management=False, update_management=False)
    bl, a, b = update_scales(x, d, 0.0505, DW, free)
    assert bl.item() == 51 and a.item() == 1.0 and b.item() == 1.0
    assert free.max_bl(0.0505, DW) == 51


FREE_BL = UpdateParameters(desired_bl=10, fixed_bl=False, update_bl_management=False, update_management=False)
"""lr 0.3 > dw_min 0.01 * 10 slots: the learning rate sets BL."""


def test_a_free_bl_beyond_the_train_length_limit_is_refused() -> None:
    """``ceil(lr / dw_min)`` slots had no limit: lr 100 with dw_min 1e-8 asked for trains of 1e10 slots per line and
    sample (hundreds of GB) and the process was killed; beyond desired_bl's 2^31 - 1 it is refused, naming both
    values. The limit itself is accepted (a train length, not an allocation: the batch decides the memory)."""
    with pytest.raises(ValueError, match=r"^UpdateParameters: without fixed_bl and update_bl_management the train "
                                         r"length is ceil\(\|lr\|/dw_min\), which must be at most 2147483647 .*got "
                                         r"lr = 100\.0, dw_min = 1e-08 \(1e\+10 slots\)"):
        FREE_BL.max_bl(100.0, 1e-8)
    with pytest.raises(ValueError, match="must be at most 2147483647"):
        update_scales(torch.ones(1, 1, 1), torch.ones(1, 1, 1), -100.0, 1e-8, FREE_BL)
    assert FREE_BL.free_bl(2.0 ** 30, 1.0) == 2 ** 30


@pytest.mark.parametrize("lr", [0.3, torch.tensor(0.3), torch.tensor(0.3, dtype=torch.float64)])
def test_free_bl_is_the_float32_ceiling_as_in_aihwkit(lr) -> None:
    """Without fixed BL and management, ``BL = ceil(lr / dw_min)`` in float32 as aihwkit's ``calculateBlAB`` (float
    tiles): ``0.3f / 0.01f = 30.000002`` gives 31 slots where float64 gives 30; A = B = 1."""
    f32 = np.float32
    want = int(np.ceil(f32(0.3) / f32(0.01)))
    assert want == 31 and math.ceil(0.3 / 0.01) == 30
    assert FREE_BL.max_bl(lr, 0.01) == FREE_BL.free_bl(lr, 0.01) == want
    one = torch.ones(1, 1, 1)
    bl, a, b = update_scales(one, one, lr, 0.01, FREE_BL)
    assert (bl.item(), a.item(), b.item()) == (want, 1.0, 1.0)
    bl, a, b = update_scales(one, one, lr, 0.01, dataclasses.replace(FREE_BL, update_management=True))
    assert bl.item() == want and a.item() * b.item() == pytest.approx(1.0, rel=1e-6)   # UM rebalances A, B only
    # x = d = 1 fire in every slot: exactly BL coincidences, all moving the weight down
    for trim in (False, True):
        n_up, n_down, total = pulse_counts(one, one, lr, 0.01, FREE_BL, _gen(), trim_slots=trim)
        assert (n_up.item(), n_down.item(), total.item()) == (0, want, want)


def test_free_bl_branch_and_dtype_follow_aihwkit() -> None:
    """desired_bl = 30: the branch is taken since ``0.01f * 30 < 0.3f`` (in float64 ``0.01 * 30 == 0.3``: not).
    A float64 tile computes in float64 as aihwkit's double tiles do, whose ``ceilf`` takes the quotient rounded to
    float32: ``f32(0.3 / 0.01) = 30``."""
    f32 = np.float32
    cfg30 = dataclasses.replace(FREE_BL, desired_bl=30)
    assert f32(0.01) * f32(30) < f32(0.3) and not 0.01 * 30 < 0.3
    one = torch.ones(1, 1, 1)
    bl, a, b = update_scales(one, one, 0.3, 0.01, cfg30)
    assert (bl.item(), a.item(), b.item()) == (31, 1.0, 1.0)
    assert cfg30.free_bl(0.3, 0.01, torch.float64) is None and cfg30.max_bl(0.3, 0.01, torch.float64) == 30
    bl, a, b = update_scales(one.double(), one.double(), 0.3, 0.01, cfg30)   # BL 30, A = sqrt(0.3 / (0.01 * 30))
    assert (bl.item(), a.item()) == (30, math.sqrt(0.3 / (0.01 * 30)))
    assert int(np.ceil(f32(0.3 / 0.01))) == 30
    assert update_scales(one.double(), one.double(), 0.3, 0.01, FREE_BL)[0].item() == 30
    # a quotient just above an integer in float64 but not in float32 (ceilf): 0.7 / 0.001 = 699.9999999999999
    assert FREE_BL.max_bl(0.7, 0.001, torch.float64) == int(np.ceil(f32(0.7 / 0.001))) == 700


def test_free_bl_tile_update_moves_the_weight_by_the_float32_count() -> None:
    """A 1x1 tile (constant step 0.01, no noise), x = d = 1, lr = 0.3: one update moves W by -31 dw_min."""
    dev = ConstantStepDevice(dw_min=0.01, dw_min_dtod=0.0, dw_min_std=0.0, up_down=0.0, up_down_dtod=0.0,
                             w_min=-1.0, w_max=1.0, w_min_dtod=0.0, w_max_dtod=0.0)
    tile = TileArray(1, 1, CrossbarConfig.perfect(device=dev, update=FREE_BL), seed=0)
    tile.program(torch.zeros(1, 1))
    tile.update(torch.ones(1, 1), torch.ones(1, 1), 0.3)
    want = -float(np.ceil(np.float32(0.3) / np.float32(0.01))) * 0.01
    assert tile.read().item() == pytest.approx(want, abs=1e-6)
    assert int(tile.counters["pulses"]) == 31


def test_per_tile_and_per_sample_management() -> None:
    """Each (sample, tile) gets its own BL from its own max|x| and max|d|."""
    cfg = UpdateParameters()
    # C = 2 column blocks: x scale 1 and 0.1; R = 2 row blocks: d scale 0.3 and 0.03; 2 samples
    x = torch.tensor([[[1.0, 0.5], [0.1, -0.05]], [[0.5, 0.1], [0.0, 0.0]]])
    d = torch.tensor([[[0.3, -0.3], [0.03, 0.01]], [[0.3, 0.1], [0.03, 0.0]]])
    lr = 0.0505
    bl, _, _ = update_scales(x, d, lr, DW, cfg)
    assert bl.shape == (2, 2, 2)

    def expected(xm: float, dm: float) -> int:
        if xm == 0 or dm == 0:
            return 0
        return min(math.ceil(lr * xm * dm / DW), 31)

    xmax = [[1.0, 0.1], [0.5, 0.0]]
    dmax = [[0.3, 0.03], [0.3, 0.03]]
    want = [[[expected(xmax[b][c], dmax[b][r]) for c in range(2)] for r in range(2)] for b in range(2)]
    assert bl.tolist() == want
    assert want[0] == [[16, 2], [2, 1]]  # hand check: 15.15 -> 16, 1.515 -> 2, 1.515 -> 2, 0.1515 -> 1


# ---------------------------------------------------------------------------------------------- statistics


@pytest.mark.parametrize("trim_slots", [False, True])
def test_expected_counts_match_lr_d_x_unsaturated(trim_slots: bool) -> None:
    """E[n_down - n_up] dw_min = lr sum_b d x^T and E[n_up + n_down] dw_min = lr sum_b |d| |x|^T (4 SE)."""
    rng = np.random.default_rng(1)
    batch, n_r, n_c, rows, cols = 3, 2, 2, 3, 4
    x_np = rng.uniform(-1, 1, (batch, n_c, cols))
    d_np = rng.uniform(-0.3, 0.3, (batch, n_r, rows))
    lr = 0.08  # k <= 0.08 * 1 * 0.3 / 0.001 = 24 < 31: nothing is capped
    reps = 3000
    x = _replicate(torch.tensor(x_np, dtype=torch.float32), reps)
    d = torch.tensor(d_np, dtype=torch.float32)
    n_up, n_down, total = pulse_counts(x, d, lr, DW, UpdateParameters(), _gen(3), trim_slots=trim_slots)
    net = _per_rep(n_down - n_up, reps).double()  # [reps, R, C, rows, cols]
    tot = _per_rep(n_up + n_down, reps).double()
    want_net = lr / DW * np.einsum("bri,bcj->rcij", d_np, x_np)
    want_tot = lr / DW * np.einsum("bri,bcj->rcij", np.abs(d_np), np.abs(x_np))
    for sample, want in ((net, want_net), (tot, want_tot)):
        mean = sample.mean(0).numpy()
        se = sample.std(0).numpy() / math.sqrt(reps)
        assert np.all(np.abs(mean - want) <= 4 * se + 1e-9), np.max(np.abs(mean - want) / (se + 1e-12))
    assert total.item() == pytest.approx((n_up + n_down).sum().item())


def test_single_pair_count_is_binomial() -> None:
    """One device, one sample: count ~ Binomial(BL, p q) with hand-computed BL, p, q."""
    # x = 0.6, d = 1, lr = 0.1 -> k = 60 > 31 -> BL = 31, p = 1 (largest x), q = min(1, 60/31) = 1:
    # the device gets a pulse in every slot.
    x = torch.full((1, 1, 1), 0.6)
    d = torch.full((1, 1, 1), 1.0)
    n_up, n_down, _ = pulse_counts(x, d, 0.1, DW, UpdateParameters(), _gen())
    assert n_up.item() == 0 and n_down.item() == 31
    # two inputs: x = (0.6, 0.3): the second fires with p = 0.5 -> Binomial(31, 0.5) per replica
    reps = 4000
    x = _replicate(torch.tensor([[[0.6, 0.3]]]), reps)
    n_up, n_down, _ = pulse_counts(x, d, 0.1, DW, UpdateParameters(), _gen(5))
    c = n_down[0, :, 0, 1].double()
    assert torch.all(n_up == 0)
    assert torch.all(n_down[0, :, 0, 0] == 31)
    assert abs(c.mean().item() - 15.5) < 4 * math.sqrt(7.75 / reps)
    assert abs(c.var().item() - 7.75) < 4 * 7.75 * math.sqrt(2 / reps)  # var of a variance ~ 2 sigma^4 / n
    # and the same with d negative: all pulses go up
    n_up, n_down, _ = pulse_counts(x, -d, 0.1, DW, UpdateParameters(), _gen(5))
    assert torch.all(n_down == 0) and torch.all(n_up[0, :, 0, 0] == 31)


@pytest.mark.parametrize("trim_slots", [False, True])
def test_saturation_of_the_pulse_budget(trim_slots: bool) -> None:
    """Doubling d: 31/25 = 1.24x the change at lr 0.05 (budget exceeded), exactly 2x at lr 0.005.

    |d_i| = 0.5 for all i, max|x| = 1, dw = 0.001.
    lr 0.05:  d -> k = 25: E|count_ij| = 25 |x_j|;  2d -> k = 50 > 31: BL = 31, p_i = 1, q_j = |x_j|: 31 |x_j|.
    lr 0.005: d -> k = 2.5: 2.5 |x_j|;              2d -> k = 5: 5 |x_j|.
    """
    reps = 2000
    x0 = torch.tensor([[[1.0, -0.8, 0.5, 0.2]]])
    d0 = torch.tensor([[[0.5, -0.5, 0.5]]])
    xa = x0.abs()[0, 0].double()
    cfg = UpdateParameters()
    results = {}
    for lr, factor, slope in ((0.05, 1, 25.0), (0.05, 2, 31.0), (0.005, 1, 2.5), (0.005, 2, 5.0)):
        n_up, n_down, _ = pulse_counts(_replicate(x0, reps), factor * d0, lr, DW, cfg, _gen(11), trim_slots)
        mag = _per_rep(n_up + n_down, reps)[:, 0, 0].double()  # batch 1: one sign per device
        mean, se = mag.mean(0), mag.std(0) / math.sqrt(reps)
        want = slope * xa[None, :].expand(3, 4)
        assert torch.all((mean - want).abs() <= 4 * se + 1e-9), (lr, factor, mean, want)
        results[(lr, factor)] = mean.sum().item()
    big = results[(0.05, 2)] / results[(0.05, 1)]
    small = results[(0.005, 2)] / results[(0.005, 1)]
    assert big == pytest.approx(31 / 25, abs=0.03)
    assert small == pytest.approx(2.0, abs=0.05)


def test_counts_are_bounded_by_the_train_length() -> None:
    """n_up + n_down <= sum over samples of that tile's BL (<= desired_bl * batch)."""
    g = _gen(2)
    x = torch.randn(5, 3, 6, generator=g) * 10
    d = torch.randn(5, 2, 4, generator=g) * 10
    cfg = UpdateParameters(desired_bl=7)
    n_up, n_down, _ = pulse_counts(x, d, 1.0, DW, cfg, g)  # heavily saturated
    bl, _, _ = update_scales(x, d, 1.0, DW, cfg)
    assert torch.all(bl == 7)
    per_tile = bl.sum(0).to(n_up.dtype)[:, :, None, None]  # [R, C, 1, 1]
    assert torch.all(n_up + n_down <= per_tile)
    assert (n_up + n_down).max().item() >= 7  # saturated: many devices get a full train at least once


def test_zero_lr_zero_x_zero_d_give_no_pulses() -> None:
    g = _gen(0)
    x = torch.randn(4, 2, 3, generator=g)
    d = torch.randn(4, 2, 5, generator=g)
    cfg = UpdateParameters()
    for xx, dd, lr in ((x, d, 0.0), (torch.zeros_like(x), d, 0.1), (x, torch.zeros_like(d), 0.1)):
        for trim in (False, True):  # trimmed: zero slots
            n_up, n_down, total = pulse_counts(xx, dd, lr, DW, cfg, g, trim_slots=trim)
            assert n_up.shape == (2, 2, 5, 3)
            assert torch.all(n_up == 0) and torch.all(n_down == 0) and total.item() == 0
    # a zero tile column block only silences its own tiles
    x2 = x.clone()
    x2[:, 1] = 0
    n_up, n_down, _ = pulse_counts(x2, d, 0.1, DW, cfg, g)
    assert torch.all(n_up[:, 1] == 0) and torch.all(n_down[:, 1] == 0)
    assert (n_up[:, 0] + n_down[:, 0]).sum() > 0


def test_determinism_and_negative_lr() -> None:
    g = _gen(7)
    x = torch.randn(3, 2, 4, generator=g)
    d = torch.randn(3, 1, 5, generator=g) * 0.1
    cfg = UpdateParameters()
    a = pulse_counts(x, d, 0.05, DW, cfg, _gen(42))
    b = pulse_counts(x, d, 0.05, DW, cfg, _gen(42))
    c = pulse_counts(x, d, 0.05, DW, cfg, _gen(43))
    for u, v in zip(a, b):
        assert torch.equal(u, v)
    assert not torch.equal(a[0], c[0]) or not torch.equal(a[1], c[1])
    # lr as a 0-d tensor gives the same pulses; negative lr swaps up and down (same draws)
    t = pulse_counts(x, d, torch.tensor(0.05), DW, cfg, _gen(42))
    trimmed = [pulse_counts(x, d, 0.05, DW, cfg, _gen(42), trim_slots=True) for _ in range(2)]
    assert all(torch.equal(u, v) for u, v in zip(*trimmed))
    assert torch.equal(t[0], a[0]) and torch.equal(t[1], a[1])
    n = pulse_counts(x, d, -0.05, DW, cfg, _gen(42))
    assert torch.equal(n[0], a[1]) and torch.equal(n[1], a[0])


def test_shapes_and_dtypes() -> None:
    g = _gen(0)
    x = torch.randn(2, 3, 5, generator=g)
    d = torch.randn(2, 4, 6, generator=g)
    n_up, n_down, total = pulse_counts(x, d, 0.1, DW, UpdateParameters(), g)
    assert n_up.shape == n_down.shape == (4, 3, 6, 5)
    assert n_up.dtype == torch.float32 and total.shape == ()
    n_up, _, _ = pulse_counts(x.double(), d.double(), 0.1, DW, UpdateParameters(), g)
    assert n_up.dtype == torch.float64
    n_up, _, _ = pulse_counts(x.half(), d.half(), 0.1, DW, UpdateParameters(), g)
    assert n_up.dtype == torch.float32  # counts stay exact integers
    assert ideal_delta(x, d, 0.1).shape == (4, 3, 6, 5)


def test_ideal_delta_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 2, 4))
    d = rng.normal(size=(3, 2, 5))
    got = ideal_delta(torch.tensor(x), torch.tensor(d), 0.3).numpy()
    want = np.zeros((2, 2, 5, 4))
    for r in range(2):
        for c in range(2):
            for b in range(3):
                want[r, c] -= 0.3 * np.outer(d[b, r], x[b, c])
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_probability_resolution() -> None:
    x = torch.tensor([[[1.0, 0.61, 0.37, 0.1]]])
    d = torch.tensor([[[0.5, 0.2]]])
    p_x, p_d, _ = pulse_probabilities(x, d, 0.0155, DW, UpdateParameters(res=0.25))  # k = 7.75 -> BL 8
    # probabilities before rounding: sqrt(7.75/8) * (1, .61, .37, .1) = (.984, .600, .364, .098)
    torch.testing.assert_close(p_x[0, 0, 0], torch.tensor([1.0, 0.5, 0.25, 0.0]))
    torch.testing.assert_close(p_d[0, 0, 0], torch.tensor([1.0, 0.5]))  # (.984, .394)
    _, p_d4, _ = pulse_probabilities(x, d, 0.0155, DW, UpdateParameters(res=4))  # 4 steps = bin 0.25
    torch.testing.assert_close(p_d4, p_d)
    # stochastic rounding is unbiased: mean over many draws ~ unrounded value
    xs = _replicate(x, 4000)
    p_sr, _, _ = pulse_probabilities(xs, d, 0.0155, DW, UpdateParameters(res=0.25, sto_round=True), _gen(1))
    mean = p_sr[0, 0].mean(0)
    exact = math.sqrt(7.75 / 8) * torch.tensor([1.0, 0.61, 0.37, 0.1])
    assert torch.all((mean - exact.clamp(max=1)).abs() < 0.02)


# ---------------------------------------------------------------------------------------------- invariants


@settings(max_examples=30, deadline=None)
@given(
    batch=st.integers(1, 3),
    n_r=st.integers(1, 2),
    n_c=st.integers(1, 2),
    rows=st.integers(1, 4),
    cols=st.integers(1, 4),
    lr=st.floats(-0.5, 0.5),
    scale=st.floats(1e-3, 10.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_invariants(batch, n_r, n_c, rows, cols, lr, scale, seed) -> None:
    """Counts are non-negative integers, bounded by the trains, and single-sample signs follow -lr d x."""
    g = _gen(seed)
    x = torch.randn(batch, n_c, cols, generator=g) * scale
    d = torch.randn(batch, n_r, rows, generator=g)
    cfg = UpdateParameters()
    n_up, n_down, total = pulse_counts(x, d, lr, DW, cfg, g)
    for n in (n_up, n_down):
        assert torch.all(n >= 0) and torch.equal(n, n.round())
    bl, _, _ = update_scales(x, d, lr, DW, cfg)
    assert torch.all(bl >= 0) and torch.all(bl <= 31)
    assert torch.all(n_up + n_down <= bl.sum(0).to(n_up.dtype)[:, :, None, None])
    assert total.item() == (n_up + n_down).sum().item()
    p_x, p_d, _ = pulse_probabilities(x, d, lr, DW, cfg)
    assert torch.all((p_x >= 0) & (p_x <= 1)) and torch.all((p_d >= 0) & (p_d <= 1))
    if batch == 1:  # one update cycle: a device only moves in the direction of -lr d x
        direction = -lr * torch.einsum("bri,bcj->rcij", d, x)
        assert torch.all(n_up[direction <= 0] == 0)
        assert torch.all(n_down[direction >= 0] == 0)


def _reference_scales(x_max: float, d_max: float, lr: float, dw: float, cfg: UpdateParameters):
    """Scalar transcription of aihwkit's calculateBlAB + performUpdateManagement (float64, as aihwkit's double
    tiles; its ``ceilf`` rounds the quotient to float32): (BL, A, B)."""
    lr = abs(lr)
    if lr == 0:
        return 0, 0.0, 0.0
    if cfg.fixed_bl or cfg.update_bl_management:
        bl, a = cfg.desired_bl, math.sqrt(lr / (dw * cfg.desired_bl))
    elif dw * cfg.desired_bl < lr:
        bl, a = max(math.ceil(np.float32(lr / dw)), 1), 1.0
    else:
        bl, a = cfg.desired_bl, math.sqrt(lr / (dw * cfg.desired_bl))
    b = a
    if not (cfg.update_management or cfg.update_bl_management):
        return bl, a, b
    if x_max == 0 or d_max == 0:
        return 0, 1.0, 1.0
    x_val, d_val = x_max, cfg.um_grad_scale * d_max
    k = lr * x_val * d_val / dw
    if cfg.update_bl_management:
        bl = min(math.ceil(k), cfg.desired_bl)
        a = b = math.sqrt(lr / (dw * bl))
    if k > cfg.desired_bl:
        d_val *= cfg.desired_bl / k
    return bl, a * math.sqrt(x_val / d_val), b * math.sqrt(d_val / x_val)


@settings(max_examples=60, deadline=None)
@given(
    x_max=st.sampled_from([0.0, 1e-3, 0.3, 1.0, 7.0]),
    d_max=st.sampled_from([0.0, 1e-4, 0.01, 0.2, 3.0]),
    lr=st.sampled_from([0.0, 1e-4, 0.003, 0.05, 0.7, -0.05]),
    ubl=st.booleans(),
    um=st.booleans(),
    fixed=st.booleans(),
    desired_bl=st.sampled_from([1, 5, 31]),
    ugs=st.sampled_from([0.5, 1.0]),
)
def test_update_scales_match_scalar_reference(x_max, d_max, lr, ubl, um, fixed, desired_bl, ugs) -> None:
    """Every mode of BL / update management agrees with a scalar transcription of aihwkit's C++ logic."""
    cfg = UpdateParameters(desired_bl=desired_bl, fixed_bl=fixed, update_bl_management=ubl,
                           update_management=um, um_grad_scale=ugs)
    x = torch.tensor([[[x_max, -0.5 * x_max]]], dtype=torch.float64)
    d = torch.tensor([[[0.1 * d_max, -d_max]]], dtype=torch.float64)
    bl, a, b = update_scales(x, d, lr, DW, cfg)
    want_bl, want_a, want_b = _reference_scales(x_max, d_max, lr, DW, cfg)
    assert bl.item() == want_bl
    if want_bl > 0:  # scales are irrelevant when nothing fires
        assert a.item() == pytest.approx(want_a, rel=1e-9)
        assert b.item() == pytest.approx(want_b, rel=1e-9)


@pytest.mark.parametrize("lr", [0.05, -0.05, torch.tensor(-0.05)])
def test_train_plan_lays_lines_out_per_tile_block_contiguously(lr) -> None:
    """|x|, |d| and the signs of a multi-tile plan: the values of the inputs permuted to [C, batch, cols] and
    [R, batch, rows] (error signs times sign(lr)), stored contiguously (the sparse CPU path flattens them)."""
    from crossbar.update import _plan_trains

    g = _gen(3)
    x = torch.randn(5, 3, 7, generator=g)           # [batch, C, cols]
    d = torch.randn(5, 2, 4, generator=g)           # [batch, R, rows]
    x[1, 2, 3] = 0.0
    plan = _plan_trains(x, d, lr, DW, UpdateParameters(), g, trim_slots=True)
    sign_lr = float(torch.as_tensor(lr).sign())
    for got, want in ((plan.x_abs, x.abs().permute(1, 0, 2)), (plan.d_abs, d.abs().permute(1, 0, 2)),
                      (plan.x_sign, x.sign().permute(1, 0, 2)), (plan.d_sign, sign_lr * d.sign().permute(1, 0, 2))):
        assert got.is_contiguous() and torch.equal(got, want)
    bl, a, b = update_scales(x, d, lr, DW, UpdateParameters())
    assert torch.equal(plan.bl, bl.permute(1, 2, 0)) and torch.equal(plan.a, a.permute(1, 2, 0))
    assert torch.equal(plan.b, b.permute(1, 2, 0))


# ---------------------------------------------------------------- NaN and Inf in the inputs or errors (a diverged run)
_BAD = {"x": (1, 0, 2), "d": (1, 1, 3)}
"""Where the tests put a NaN or an Inf: input line 2 of column block 0, or error line 3 of row block 1, of sample 1."""


def _with(t: torch.Tensor, at: tuple[int, int, int], value: float) -> torch.Tensor:
    out = t.clone()
    out[at] = value
    return out


def _affected(operand: str, shape: tuple[int, int, int]) -> torch.Tensor:
    """``[batch, R, C]`` mask of the (sample, tile) pairs that see the bad value of :data:`_BAD`."""
    mask = torch.zeros(shape, dtype=torch.bool)
    if operand == "x":
        mask[1, :, 0] = True            # sample 1, column block 0: every row block
    else:
        mask[1, 1, :] = True            # sample 1, row block 1: every column block
    return mask


@pytest.mark.parametrize("path", ["cpu", "sync-free"])
@pytest.mark.parametrize("management", ["bl", "um"])
@pytest.mark.parametrize("lr", [0.1, torch.tensor(0.1)], ids=["float-lr", "tensor-lr"])
@pytest.mark.parametrize("value", [math.inf, -math.inf], ids=["inf", "-inf"])
@pytest.mark.parametrize("operand", ["x", "d"])
def test_an_inf_input_or_error_gives_the_scales_of_a_nan(operand: str, value: float, lr, management: str,
                                                         path: str) -> None:
    """An Inf (either sign) in x or d is taken as a NaN: the scales of the (sample, tile) pairs it reaches are NaN
    and their BL is the one cast from NaN (negative on the CPU, where the tile update raises), exactly as with a NaN
    there; every other pair keeps the bits it has without the bad value. Before, an Inf gave BL = desired_bl with
    scales Inf and 0 (Inf in x) or NaN (in d): no pulse fired and nothing noticed it. Also on the sync-free (GPU)
    path, without a host read."""
    import contextlib

    from devices import no_host_reads

    cfg = UpdateParameters(desired_bl=15) if management == "bl" else UpdateParameters(desired_bl=15,
                                                                                      update_bl_management=False)
    g = _gen(5)
    x = torch.randn(3, 2, 4, generator=g)           # [batch, C, cols]
    d = torch.randn(3, 2, 5, generator=g) * 0.1     # [batch, R, rows]
    guard = no_host_reads if path == "sync-free" else contextlib.nullcontext
    bad = (lambda v: (_with(x, _BAD["x"], v), d)) if operand == "x" else (lambda v: (x, _with(d, _BAD["d"], v)))
    with guard():
        bl_f, a_f, b_f = update_scales(x, d, lr, DW, cfg)
        bl_i, a_i, b_i = update_scales(*bad(value), lr, DW, cfg)
        bl_n, a_n, b_n = update_scales(*bad(math.nan), lr, DW, cfg)
    hit = _affected(operand, tuple(bl_f.shape))
    assert torch.equal(bl_i, bl_n)
    assert a_i[hit].isnan().all() and b_i[hit].isnan().all() and a_n[hit].isnan().all() and b_n[hit].isnan().all()
    if management == "bl":
        assert (bl_i[hit] < 0).all()                # cast from NaN (CPU)
    else:
        assert (bl_i[hit] == 15).all()              # BL is fixed without BL management
    for got, want in ((bl_i, bl_f), (a_i, a_f), (b_i, b_f)):
        assert torch.equal(got[~hit], want[~hit])
    assert torch.isfinite(a_f).all() and (bl_f > 0).all()


@pytest.mark.parametrize("trim_slots", [False, True])
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan], ids=["inf", "-inf", "nan"])
@pytest.mark.parametrize("operand", ["x", "d"])
def test_pulse_counts_silence_a_nan_or_inf_as_a_zero_block(operand: str, value: float, trim_slots: bool) -> None:
    """``pulse_counts`` (no error raised, as aihwkit's update): a NaN or an Inf in a sample's input (error) block gives
    exactly the counts of that sample with the whole block zero (the same draws; that sample's trains are silent in
    the tiles of the block, the other pairs count as usual)."""
    g = _gen(6)
    x = torch.randn(4, 2, 6, generator=g)
    d = torch.randn(4, 2, 5, generator=g) * 0.1
    at = _BAD[operand]
    zeroed_x, zeroed_d = x.clone(), d.clone()
    (zeroed_x if operand == "x" else zeroed_d)[at[0], at[1]] = 0.0
    bad_x, bad_d = (_with(x, at, value), d) if operand == "x" else (x, _with(d, at, value))
    cfg = UpdateParameters(desired_bl=15)
    got = pulse_counts(bad_x, bad_d, 0.2, DW, cfg, _gen(7), trim_slots=trim_slots)
    want = pulse_counts(zeroed_x, zeroed_d, 0.2, DW, cfg, _gen(7), trim_slots=trim_slots)
    for u, v in zip(got, want):
        assert torch.equal(u, v)
    assert float(want[2]) > 0


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan], ids=["inf", "-inf", "nan"])
def test_pulse_counts_with_a_bad_value_in_every_sample_trim_to_no_slot(value: float) -> None:
    """Every sample with a NaN or Inf input: every BL is cast from NaN, and ``trim_slots`` allocates no slot (it once
    allocated a negative number of slots: a RuntimeError deep in the random draw); no pulse, as untrimmed."""
    g = _gen(8)
    x = torch.randn(3, 1, 4, generator=g)
    x[:, 0, 1] = value
    d = torch.randn(3, 2, 5, generator=g) * 0.1
    for trim in (False, True):
        n_up, n_down, total = pulse_counts(x, d, 0.2, DW, UpdateParameters(), _gen(9), trim_slots=trim)
        assert n_up.shape == n_down.shape == (2, 1, 5, 4)
        assert not n_up.any() and not n_down.any() and float(total) == 0


def test_ideal_delta_checks_its_learning_rate_as_the_pulsed_update_does() -> None:
    """The exact update (``pulse_type="none"``) once wrote ``-nan * ...`` or ``-inf * ...`` into the weights without a
    word, and a two-element ``lr`` failed inside the einsum's broadcast: the learning rate is now refused as the
    pulsed update refuses it (a non-finite number; a tensor of more than one element or, on the CPU, not finite),
    naming the exact update. A one-element tensor gives the hand-computed change, ``-lr · d xᵀ``; on the sync-free
    path its value is not read."""
    from devices import no_host_reads

    x = torch.tensor([[[1.0, 2.0]]])                  # [batch 1, C 1, cols 2]
    d = torch.tensor([[[3.0]]])                       # [batch 1, R 1, rows 1]
    for lr in (math.nan, math.inf, -math.inf, torch.tensor(math.nan), torch.tensor(math.inf)):
        with pytest.raises(ValueError, match="^exact update: lr must be finite"):
            ideal_delta(x, d, lr)
    with pytest.raises(ValueError, match=r"^exact update: lr must be a number or a one-element tensor .* \(2,\)"):
        ideal_delta(x, d, torch.tensor([0.1, 0.2]))
    want = torch.tensor([[[[-1.5, -3.0]]]])           # -0.5 · 3 · [1, 2]
    assert torch.equal(ideal_delta(x, d, torch.tensor(0.5)), want)
    assert torch.equal(ideal_delta(x, d, -0.5), -want)   # a negative lr flips the direction, as in the pulsed update
    with no_host_reads():
        sync_free = ideal_delta(x, d, torch.tensor(0.5))
        ideal_delta(x, d, torch.tensor(math.nan))     # sync-free: a tensor's value is left to the loss check
    assert torch.equal(sync_free, want)


@pytest.mark.parametrize("path", ["cpu", "sync-free"])
@pytest.mark.parametrize("lr", [0.01, torch.tensor(0.01)], ids=["float-lr", "tensor-lr"])
@pytest.mark.parametrize("management", ["bl", "um"])
@pytest.mark.parametrize("case", ["subnormal-d", "subnormal-x", "ratio-beyond-float32"])
def test_update_management_of_a_subnormal_or_far_apart_maximum(case: str, management: str, lr, path: str) -> None:
    """A subnormal ``max|d|`` (1e-40) made ``x_max / d_max`` infinite in float32: ``a = inf``, so the error lines'
    probabilities were ``inf·0 = NaN`` (no error) and 1 (any error), and a subnormal ``d_max / x_max`` lost ``b``'s
    digits. The probabilities are now those of update management computed in float64 (numpy, from the float32
    inputs): both maxima fire with ``sqrt(lr·x_max·d_max / (dw_min·BL))`` and every line in proportion to its
    magnitude, no NaN; the pulse counts are finite and, with these expected counts (< 1e-18 per device), zero."""
    import contextlib

    from devices import no_host_reads

    x32, d32 = {"subnormal-d": ([1.0, 0.5, 0.0], [1e-40, 0.0, -5e-41]),
                "subnormal-x": ([1e-40, 0.0, 3e-41], [1.0, 0.0, -0.5]),
                "ratio-beyond-float32": ([1e10, 0.0, 1.0], [1e-30, 0.0, 5e-31])}[case]
    x, d = torch.tensor([[x32]]), torch.tensor([[d32]])           # [batch 1, C 1, cols 3], [batch 1, R 1, rows 3]
    cfg = UpdateParameters(update_bl_management=management == "bl")
    guard = no_host_reads if path == "sync-free" else contextlib.nullcontext
    with guard():
        p_x, p_d, bl = pulse_probabilities(x, d, lr, DW, cfg)
        n_up, n_down, total = pulse_counts(x, d, lr, DW, cfg, _gen(0))
    xs, ds = x.double().abs().numpy().ravel(), d.double().abs().numpy().ravel()
    # k = lr·x·d/dw_min is far below 1: BL management picks 1 slot, else the train is desired_bl = 31 slots long
    want_bl = 1 if management == "bl" else 31
    peak = np.sqrt(0.01 * xs.max() * ds.max() / (DW * want_bl))
    assert bl.tolist() == [[[want_bl]]]
    np.testing.assert_allclose(p_x.double().numpy().ravel(), peak * xs / xs.max(), rtol=1e-6, atol=0)
    np.testing.assert_allclose(p_d.double().numpy().ravel(), peak * ds / ds.max(), rtol=1e-6, atol=0)
    assert float(total) == 0 and not n_up.any() and not n_down.any()
