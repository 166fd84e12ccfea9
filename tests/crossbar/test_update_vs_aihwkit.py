"""The pulsed update (crossbar/update.py + devices/) against aihwkit's C++ simulator (``AnalogTile.update``).

For fixed x, d, lr and identical device parameters, the weight change of every device is drawn many times
from both simulators (a fresh update on the same starting weights each repetition) and the distributions
are compared per device: the difference of the means in units of its standard error (z), and the mean
per-device variance.

aihwkit's update RNG is seeded from the clock (not settable from Python), so these tests are statistical.
The z values of one tile are strongly correlated (all devices of a row share that row's pulse train), so
"within 3 standard errors" is checked in aggregate. Thresholds, calibrated on ~2,700 repeated comparisons
of the configurations below against aihwkit (null maxima: 12.5 % of the devices beyond 3 SE -- one row of
a single-sample update --, max |z| 4.7, mean z^2 2.6, pooled variance ratio off by 11 % at 800 and 5 % at
2,000 repetitions): at most 20 % of the devices beyond 3 standard errors, none beyond 5.5, mean z^2 < 3,
pooled per-device variances within 20 %. ``test_comparison_detects_a_wrong_update`` checks that these
thresholds still reject a 10 % error in the learning rate.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from crossbar import CrossbarConfig, TileArray, to_aihwkit_rpu_config
from crossbar.update import UpdateParameters, pulse_counts
from devices import ConstantStepDevice, PulsedDevice, SoftBoundsDevice, to_aihwkit

from .retry import retry_once

pytest.importorskip("aihwkit")

from aihwkit.simulator.configs import SingleRPUConfig  # noqa: E402  (needs aihwkit)
from aihwkit.simulator.parameters.training import UpdateParameters as AihwkitUpdateParameters  # noqa: E402
from aihwkit.simulator.tiles import AnalogTile  # noqa: E402

ROWS, COLS, BATCH = 8, 8, 4


# ---------------------------------------------------------------------------------------------- helpers


def aihwkit_deltas(
    device: PulsedDevice, x: torch.Tensor, d: torch.Tensor, lr: float, cfg: UpdateParameters, reps: int,
    new_devices_each_rep: bool = False, w_start: float = 0.0,
) -> torch.Tensor:
    """Weight changes ``[reps, rows, cols]`` of ``reps`` independent ``tile.update(x, d)`` from ``W = w_start``.

    x: [batch, cols], d: [batch, rows]. With ``new_devices_each_rep`` every repetition uses a new tile (a new
    device-to-device draw, seeded ``1 .. reps``)."""
    rows, cols = d.shape[1], x.shape[1]
    w0 = torch.full((rows, cols), w_start)
    out = torch.empty(reps, rows, cols, dtype=torch.float64)
    tile = None
    for k in range(reps):
        if tile is None or new_devices_each_rep:
            dev = dataclasses.replace(to_aihwkit(device), construction_seed=k + 1)
            tile = AnalogTile(rows, cols, SingleRPUConfig(device=dev, update=cfg.to_aihwkit()))
            tile.set_learning_rate(lr)
        tile.set_weights(w0)
        tile.update(x, d)
        out[k] = tile.get_weights()[0].double() - w0.double()
    return out


def our_deltas(
    device: PulsedDevice, x: torch.Tensor, d: torch.Tensor, lr: float, cfg: UpdateParameters, reps: int,
    seed: int, new_devices_each_rep: bool = False, trim_slots: bool = False, w_start: float = 0.0,
) -> torch.Tensor:
    """The same with this project's engine: ``reps`` replicated tiles in ONE vectorized call.

    Tiles draw independent pulse trains, so the column blocks of a ``1 x reps`` tile grid are independent
    repetitions. The device response is the real ``device.apply_pulses``."""
    g = torch.Generator().manual_seed(seed)
    rows, cols = d.shape[1], x.shape[1]
    xs = x[:, None, :].repeat(1, reps, 1)  # [batch, C=reps, cols]
    ds = d[:, None, :]  # [batch, R=1, rows]
    n_up, n_down, _ = pulse_counts(xs, ds, lr, device.granularity, cfg, g, trim_slots)  # [1, reps, rows, cols]
    if new_devices_each_rep:
        params = device.sample((1, reps, rows, cols), generator=g)
    else:
        one = device.sample((1, 1, rows, cols), generator=g)
        shape = (1, reps, rows, cols)
        params = dataclasses.replace(
            one, dw_up=one.dw_up.expand(shape), dw_down=one.dw_down.expand(shape),
            w_min=one.w_min.expand(shape), w_max=one.w_max.expand(shape),
            extra={k: v.expand(shape) for k, v in one.extra.items()},
        )
    w0 = torch.full((1, reps, rows, cols), w_start)
    w1 = device.apply_pulses(w0, n_up, n_down, params, g)
    return (w1 - w0)[0].double()


def compare(ours: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    """Per-device z of the mean difference, and the ratio of the mean per-device variances."""
    m_o, m_r = ours.mean(0), ref.mean(0)
    v_o, v_r = ours.var(0), ref.var(0)
    se = (v_o / ours.shape[0] + v_r / ref.shape[0]).sqrt()
    deterministic = se == 0
    # devices without any spread in both (e.g. always 31 pulses) must agree exactly
    assert torch.allclose(m_o[deterministic], m_r[deterministic], rtol=1e-5, atol=1e-9)
    z = torch.where(deterministic, torch.zeros_like(se), (m_o - m_r) / se.clamp_min(1e-300))
    return {
        "max_z": z.abs().max().item(),
        "frac_3se": (z.abs() > 3).double().mean().item(),
        "mean_z2": z.square().mean().item(),
        "var_ratio": (v_o.mean() / v_r.mean()).item() if v_r.mean() > 0 else 1.0,
    }


def assert_same_distribution(ours: torch.Tensor, ref: torch.Tensor) -> None:
    s = compare(ours, ref)
    assert s["frac_3se"] <= 0.20, s
    assert s["max_z"] < 5.5, s
    assert s["mean_z2"] < 3.0, s
    assert abs(s["var_ratio"] - 1) < 0.2, s


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(BATCH, COLS, generator=g) * 2 - 1
    d = (torch.rand(BATCH, ROWS, generator=g) * 2 - 1) * 0.5
    return x, d


NO_SPREAD = dict(dw_min=0.001, dw_min_dtod=0.0, dw_min_std=0.0, up_down=0.0, up_down_dtod=0.0,
                 w_min=-1.0, w_max=1.0, w_min_dtod=0.0, w_max_dtod=0.0)


# ---------------------------------------------------------------------------------------------- parameters


def test_update_parameters_match_aihwkit() -> None:
    assert UpdateParameters.from_aihwkit(AihwkitUpdateParameters()) == UpdateParameters()
    ours = UpdateParameters(desired_bl=15, fixed_bl=False, update_bl_management=False, um_grad_scale=0.5,
                            pulse_type="stochastic", res=0.1, sto_round=True)
    theirs = ours.to_aihwkit()
    assert theirs.desired_bl == 15 and theirs.um_grad_scale == 0.5 and theirs.pulse_type.name == "STOCHASTIC"
    assert UpdateParameters.from_aihwkit(theirs) == ours
    assert UpdateParameters(res=8).to_aihwkit().res == 0.125       # a number of steps goes over as the bin width
    from aihwkit.simulator.parameters.enums import PulseType

    with pytest.raises(ValueError, match="UpdateParameters.pulse_type"):
        UpdateParameters.from_aihwkit(AihwkitUpdateParameters(pulse_type=PulseType.MEAN_COUNT))


# ---------------------------------------------------------------------------------------------- constant step


@pytest.mark.parametrize(
    "lr, factor, trim", [(0.05, 1.0, False), (0.05, 2.0, False), (0.005, 1.0, False), (0.005, 2.0, False),
                         (0.2, 1.0, False), (0.005, 1.0, True)]
)
@retry_once
def test_constant_step_without_spread(lr: float, factor: float, trim: bool) -> None:
    """Per-device distributions of the weight change agree, unsaturated and saturated (batch 4, 8x8)."""
    device = ConstantStepDevice(**NO_SPREAD)
    x, d = _inputs()
    cfg = UpdateParameters()
    ref = aihwkit_deltas(device, x, factor * d, lr, cfg, reps=1000)
    ours = our_deltas(device, x, factor * d, lr, cfg, reps=1000, seed=1, trim_slots=trim)
    assert_same_distribution(ours, ref)


@pytest.mark.parametrize(
    "cfg",
    [
        UpdateParameters(update_bl_management=False, update_management=True),
        UpdateParameters(update_bl_management=False, update_management=False),
        UpdateParameters(um_grad_scale=0.5),
        UpdateParameters(desired_bl=5),
        UpdateParameters(fixed_bl=False, update_bl_management=False, update_management=False),
        UpdateParameters(res=7),
        UpdateParameters(res=0.1, sto_round=True),
        UpdateParameters(res=0.25, sto_round=True, update_bl_management=False),
        UpdateParameters(pulse_type="stochastic"),
        UpdateParameters(pulse_type="stochastic", update_bl_management=False, update_management=False),
    ],
    ids=["um_only", "no_management", "um_grad_scale", "short_bl", "free_bl", "res_in_steps", "res_sto_round",
         "res_sto_round_um_only", "pulse_type_stochastic", "pulse_type_stochastic_no_management"],
)
@retry_once
def test_constant_step_other_update_parameters(cfg: UpdateParameters) -> None:
    device = ConstantStepDevice(**NO_SPREAD)
    x, d = _inputs(3)
    lr = 0.05
    ref = aihwkit_deltas(device, x, d, lr, cfg, reps=600)
    ours = our_deltas(device, x, d, lr, cfg, reps=600, seed=2)
    assert_same_distribution(ours, ref)


@pytest.mark.parametrize("desired_bl", [10, 30])
def test_free_bl_pulse_count_is_aihwkit_float32_ceiling(desired_bl: int) -> None:
    """fixed_bl=False, no management, lr 0.3, dw_min 0.01 (deterministic: x = d = 1 fire in every slot, so one update
    moves W by exactly -BL dw_min). aihwkit computes in float32: 0.01f * 30 < 0.3f and 0.3f / 0.01f = 30.000002, so
    BL = 31 for desired_bl 10 and 30 (float64 arithmetic would give 30)."""
    f32 = np.float32
    want_bl = int(np.ceil(f32(0.3) / f32(0.01)))
    assert want_bl == 31 and f32(0.01) * f32(desired_bl) < f32(0.3)
    device = ConstantStepDevice(**{**NO_SPREAD, "dw_min": 0.01})
    cfg = UpdateParameters(desired_bl=desired_bl, fixed_bl=False, update_bl_management=False, update_management=False)
    x, d = torch.ones(1, 1), torch.ones(1, 1)
    ref = aihwkit_deltas(device, x, d, 0.3, cfg, reps=1)
    ours = our_deltas(device, x, d, 0.3, cfg, reps=1, seed=0)
    assert ref.item() == pytest.approx(-want_bl * 0.01, abs=1e-6)
    assert ours.item() == pytest.approx(ref.item(), abs=1e-6)


@retry_once
def test_saturation_matches_aihwkit() -> None:
    """Doubling d gives ~1.25x the weight change at lr 0.05 (pulse budget exhausted) but 2x at lr 0.005.

    Errors near their maximum (|d| in [0.4, 0.5]), one sample, max|x| = 1: at lr 0.05 k = 25 (unsaturated),
    2d gives k = 50 > 31, so the change of the devices at max |d| grows only 31/25 = 1.24x (less capped ones
    up to 1.55x); at lr 0.005 k = 2.5 -> 5, exactly 2x."""
    device = ConstantStepDevice(**NO_SPREAD)
    g = torch.Generator().manual_seed(4)
    x = torch.rand(1, COLS, generator=g) * 2 - 1
    x[0, 0] = 1.0
    d = (0.4 + 0.1 * torch.rand(1, ROWS, generator=g)) * torch.where(torch.rand(1, ROWS, generator=g) < 0.5, -1, 1)
    d[0, 0] = 0.5
    cfg = UpdateParameters()
    size = {}
    for lr in (0.05, 0.005):
        for factor in (1.0, 2.0):
            ref = aihwkit_deltas(device, x, factor * d, lr, cfg, reps=2000)
            ours = our_deltas(device, x, factor * d, lr, cfg, reps=2000, seed=5)
            assert_same_distribution(ours, ref)
            size[(lr, factor, "ref")] = ref.mean(0).abs().sum().item()
            size[(lr, factor, "ours")] = ours.mean(0).abs().sum().item()
    for who in ("ref", "ours"):
        big = size[(0.05, 2.0, who)] / size[(0.05, 1.0, who)]
        small = size[(0.005, 2.0, who)] / size[(0.005, 1.0, who)]
        assert 1.2 < big < 1.4, (who, big)
        assert small == pytest.approx(2.0, abs=0.06), (who, small)
    assert size[(0.05, 2.0, "ours")] / size[(0.05, 2.0, "ref")] == pytest.approx(1.0, abs=0.02)


@retry_once
def test_constant_step_cycle_to_cycle_noise() -> None:
    """dw_min_std = 0.3: per-pulse multiplicative noise on top of the count statistics."""
    device = ConstantStepDevice(**{**NO_SPREAD, "dw_min_std": 0.3})
    x, d = _inputs(5)
    cfg = UpdateParameters()
    ref = aihwkit_deltas(device, x, d, 0.05, cfg, reps=1000)
    ours = our_deltas(device, x, d, 0.05, cfg, reps=1000, seed=3)
    assert_same_distribution(ours, ref)


@retry_once
def test_constant_step_device_to_device_spread() -> None:
    """Spread on (step, asymmetry, bounds; a new device draw every repetition): distributions agree."""
    device = ConstantStepDevice(dw_min=0.001, dw_min_dtod=0.3, dw_min_std=0.3, up_down=0.1, up_down_dtod=0.05,
                                w_min=-1.0, w_max=1.0, w_min_dtod=0.1, w_max_dtod=0.1)
    x, d = _inputs(6)
    cfg = UpdateParameters()
    ref = aihwkit_deltas(device, x, d, 0.05, cfg, reps=600, new_devices_each_rep=True)
    ours = our_deltas(device, x, d, 0.05, cfg, reps=600, seed=4, new_devices_each_rep=True)
    assert_same_distribution(ours, ref)


def test_comparison_detects_a_wrong_update() -> None:
    """Power check of the comparison itself: a 10 % larger learning rate on our side is rejected."""
    device = ConstantStepDevice(**NO_SPREAD)
    x, d = _inputs()
    cfg = UpdateParameters()
    ref = aihwkit_deltas(device, x, d, 0.05, cfg, reps=1000)
    ours = our_deltas(device, x, d, 0.055, cfg, reps=1000, seed=1)
    s = compare(ours, ref)
    assert s["frac_3se"] > 0.20 or s["max_z"] >= 5.5 or s["mean_z2"] >= 3.0, s
    assert math.isfinite(s["var_ratio"])


def test_comparison_detects_nearest_rounding_of_probabilities() -> None:
    """Power check of the ``res`` / ``sto_round`` cases above: with a bin width of 0.25 (update management only, so
    the probabilities are not all 1), nearest rounding of the firing probabilities on our side against aihwkit's
    stochastic rounding is rejected (nearest rounding moves every probability to a multiple of 0.25: a biased mean
    change, e.g. ``p = 0.1`` fires never instead of in 10 % of the slots)."""
    device = ConstantStepDevice(**NO_SPREAD)
    x, d = _inputs(3)
    theirs = UpdateParameters(res=0.25, sto_round=True, update_bl_management=False)
    ref = aihwkit_deltas(device, x, d, 0.05, theirs, reps=600)
    ours = our_deltas(device, x, d, 0.05, dataclasses.replace(theirs, sto_round=False), reps=600, seed=2)
    s = compare(ours, ref)
    assert s["frac_3se"] > 0.20 or s["max_z"] >= 5.5 or s["mean_z2"] >= 3.0, s


# ---------------------------------------------------------------------------------------------- soft bounds
# One sample: every device gets pulses of one sign only, so applying the counts at once is exact and the
# distributions must agree strictly. With several samples of mixed signs, aihwkit applies them in order while
# we sum the counts first; for a state-dependent device that is a small systematic difference (measured with
# 20,000 repetitions, lr 0.05, batch 4, 8x8: 0.6-1.2 % of the largest mean change, up to 3 % of an element's
# own mean; at lr 0.2 about 2 %, up to 10 % where ups and downs nearly cancel). It is tested with that bound.


@pytest.mark.parametrize("w_start", [0.0, 0.5, -0.4])
@retry_once
def test_soft_bounds_without_spread(w_start: float) -> None:
    """State-dependent steps (up ``dw (1 - w / w_max)``, down ``dw (1 - w / w_min)``) from several states."""
    device = SoftBoundsDevice(**NO_SPREAD)
    x, d = _inputs(7)
    x, d = x[:1], d[:1]
    cfg = UpdateParameters()
    ref = aihwkit_deltas(device, x, d, 0.05, cfg, reps=1000, w_start=w_start)
    ours = our_deltas(device, x, d, 0.05, cfg, reps=1000, seed=6, w_start=w_start)
    assert_same_distribution(ours, ref)


@retry_once
def test_soft_bounds_with_noise_and_spread() -> None:
    device = SoftBoundsDevice(dw_min=0.001, dw_min_dtod=0.3, dw_min_std=0.3, up_down=0.0, up_down_dtod=0.05,
                              w_min=-1.0, w_max=1.0, w_min_dtod=0.1, w_max_dtod=0.1)
    x, d = _inputs(8)
    x, d = x[:1], d[:1]
    cfg = UpdateParameters()
    ref = aihwkit_deltas(device, x, d, 0.05, cfg, reps=600, new_devices_each_rep=True, w_start=0.2)
    ours = our_deltas(device, x, d, 0.05, cfg, reps=600, seed=7, new_devices_each_rep=True, w_start=0.2)
    assert_same_distribution(ours, ref)


@pytest.mark.parametrize("w_start", [0.0, -0.4])
@retry_once
def test_soft_bounds_batch_summation_bias_is_small(w_start: float) -> None:
    """Batch 4 (mixed signs per device): means within 4 SE + 3 % of the largest mean change, variances 20 %."""
    device = SoftBoundsDevice(**NO_SPREAD)
    x, d = _inputs(7)
    cfg = UpdateParameters()
    ref = aihwkit_deltas(device, x, d, 0.05, cfg, reps=1000, w_start=w_start)
    ours = our_deltas(device, x, d, 0.05, cfg, reps=1000, seed=8, w_start=w_start)
    se = (ours.var(0) / ours.shape[0] + ref.var(0) / ref.shape[0]).sqrt()
    bound = 4 * se + 0.03 * ref.mean(0).abs().max()
    assert torch.all((ours.mean(0) - ref.mean(0)).abs() <= bound)
    assert abs(compare(ours, ref)["var_ratio"] - 1) < 0.2


# ---------------------------------------------------------------------------------------------- write noise


def test_write_noise_matches_aihwkit() -> None:
    """``write_noise_std`` (soft bounds, 100 x 100, no spread, no cycle-to-cycle noise), ours and aihwkit's tile.

    Programming: the hidden state is the programmed weight and the apparent (read) one is it plus Gaussian noise
    of std ``write_noise_std·dw_min = 3·0.01 = 0.03``, in both. An update of 5 up pulses on the first 50 columns
    (BL 5 without management, lr 1: every probability saturates at 1): those devices move to
    ``1 - (1 - w0)·0.99**5`` (``w += 0.01·(1 - w)`` per pulse) and their apparent states are redrawn around it
    (std 0.03, independent of the previous draw); the other 50 columns keep their apparent states exactly. The
    forward MVM (perfect periphery) reads the apparent states. aihwkit's draws are not seedable: std bounds are 5
    standard errors (``0.03/sqrt(2n)``) plus 1 %, the correlation bound 5/sqrt(n)."""
    n = 100
    dev = SoftBoundsDevice(dw_min=0.01, dw_min_dtod=0.0, dw_min_std=0.0, up_down_dtod=0.0, w_min=-1.0, w_max=1.0,
                           w_min_dtod=0.0, w_max_dtod=0.0, write_noise_std=3.0)
    cfg = CrossbarConfig.perfect(device=dev, tile_rows=n, tile_cols=n,
                                 update=UpdateParameters(desired_bl=5, update_bl_management=False,
                                                         update_management=False))
    w0 = torch.rand(n, n, generator=torch.Generator().manual_seed(0)) * 0.4 - 0.2
    ours = TileArray(n, n, cfg, seed=0)
    ours.program(w0)
    rpu = to_aihwkit_rpu_config(cfg)
    theirs = rpu.tile_class(n, n, rpu)
    theirs.set_weights(w0)
    theirs.set_learning_rate(1.0)

    def hidden_of_theirs() -> torch.Tensor:
        return theirs.get_hidden_parameters()["persistent_weights"]

    def check_noise(noise: torch.Tensor, who: str) -> None:
        bound = 5 * 0.03 / math.sqrt(2 * noise.numel()) + 0.01 * 0.03
        assert abs(noise.std().item() - 0.03) < bound, (who, noise.std().item())
        assert abs(noise.mean().item()) < 5 * 0.03 / math.sqrt(noise.numel()), (who, noise.mean().item())

    apparent0 = {"ours": ours.read(), "aihwkit": theirs.get_weights()[0]}
    hidden0 = {"ours": ours.read(hidden=True), "aihwkit": hidden_of_theirs()}
    for who in ("ours", "aihwkit"):
        assert torch.equal(hidden0[who], w0), who
        check_noise(apparent0[who] - w0, who)

    x = torch.zeros(1, n)
    x[0, : n // 2] = 1.0
    d = -torch.ones(1, n)                                            # d < 0, x > 0: up pulses
    ours.update(x, d, 1.0)
    theirs.update(x, d)
    apparent1 = {"ours": ours.read(), "aihwkit": theirs.get_weights()[0]}
    hidden1 = {"ours": ours.read(hidden=True), "aihwkit": hidden_of_theirs()}
    want = 1 - (1 - w0.double()) * 0.99**5
    touched = slice(0, n // 2)
    for who in ("ours", "aihwkit"):
        torch.testing.assert_close(hidden1[who][:, touched].double(), want[:, touched], rtol=0, atol=1e-6)
        assert torch.equal(hidden1[who][:, n // 2:], w0[:, n // 2:]), who
        assert torch.equal(apparent1[who][:, n // 2:], apparent0[who][:, n // 2:]), who
        redrawn = (apparent1[who] - hidden1[who])[:, touched]
        check_noise(redrawn, who)
        before = (apparent0[who] - w0)[:, touched]
        corr = torch.corrcoef(torch.stack([redrawn.flatten(), before.flatten()]))[0, 1].item()
        assert abs(corr) < 5 / math.sqrt(redrawn.numel()), (who, corr)

    xf = torch.randn(20, n, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(ours.forward(xf), xf @ apparent1["ours"].T, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(theirs.forward(xf), xf @ apparent1["aihwkit"].T, rtol=1e-5, atol=1e-5)


def test_pulse_type_none_programs_and_updates_as_aihwkit() -> None:
    """With ``pulse_type="none"`` aihwkit builds the tile without the device, and so does ours in effect: programming
    2.0 on a soft-bounds device (bounds 0.6, no spread) reads 2.0 in both (no clipping), a device with write noise
    reads the programmed weights exactly (no noise drawn), and the exact, unbounded update ``x = d = 1``, lr 0.1
    moves every weight by -0.1 in both (2.0 -> 1.9, 0.3 -> 0.2)."""
    w = torch.tensor([[2.0, 0.3], [-2.0, 0.3]])
    for extra in ({}, {"write_noise_std": 0.5}):
        dev = SoftBoundsDevice(**{**NO_SPREAD, "w_min": -0.6, "w_max": 0.6, **extra})
        cfg = CrossbarConfig.perfect(device=dev, update=UpdateParameters(pulse_type="none"), tile_rows=2,
                                     tile_cols=2)
        ours = TileArray(2, 2, cfg, seed=0)
        ours.program(w)
        rpu = to_aihwkit_rpu_config(cfg)
        theirs = rpu.tile_class(2, 2, rpu)
        theirs.set_weights(w)
        theirs.set_learning_rate(0.1)
        assert torch.equal(theirs.get_weights()[0], w) and torch.equal(ours.read(), w)
        assert torch.equal(ours.forward(torch.eye(2)), w.T)        # the MVMs see the programmed weights
        ones = torch.ones(1, 2)
        ours.update(ones, ones, 0.1)
        theirs.update(ones, ones)
        expected = torch.tensor([[1.9, 0.2], [-2.1, 0.2]])
        torch.testing.assert_close(theirs.get_weights()[0], expected)
        torch.testing.assert_close(ours.read(), expected)
