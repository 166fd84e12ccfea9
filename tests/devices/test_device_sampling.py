"""Device-to-device sampling: determinism, statistics against the configured spreads, shapes, DeviceParams I/O."""

from __future__ import annotations

import math
import re

import pytest
import torch

import devices as dv

N = 200_000  # devices for the statistics (each check: 4 standard errors)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _check_mean(x: torch.Tensor, expected: float) -> None:
    se = x.std().item() / math.sqrt(x.numel())
    assert abs(x.mean().item() - expected) <= 4 * se + 1e-12, (x.mean().item(), expected, se)


def _check_std(x: torch.Tensor, expected: float) -> None:
    # SE of a Gaussian sample std ≈ std / sqrt(2N)
    se = expected / math.sqrt(2 * x.numel())
    assert abs(x.std().item() - expected) <= 4 * se + 1e-12, (x.std().item(), expected, se)


ALL = [
    dv.ConstantStepDevice(), dv.LinearStepDevice(gamma_up=0.3), dv.SoftBoundsDevice(), dv.ExpStepDevice(),
    dv.PowStepDevice(), dv.IdealDevice(),
]


@pytest.mark.parametrize("dev", ALL, ids=lambda d: type(d).__name__)
def test_seeded_determinism(dev):
    a = dev.sample((3, 4, 5), _gen(7))
    b = dev.sample((3, 4, 5), _gen(7))
    c = dev.sample((3, 4, 5), _gen(8))
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k])
    if not isinstance(dev, dv.IdealDevice):
        assert not torch.equal(a.dw_up, c.dw_up)


@pytest.mark.parametrize("dev", ALL, ids=lambda d: type(d).__name__)
@pytest.mark.parametrize("shape", [(), (5,), (2, 3, 4), (2, 1, 3, 2)])
def test_any_shape_and_dtype(dev, shape):
    p = dev.sample(shape, _gen(), dtype=torch.float64)
    for v in p.state_dict().values():
        assert v.shape == torch.Size(shape) and v.dtype == torch.float64
    assert bool((p.dw_up > 0).all()) and bool((p.dw_down > 0).all())
    assert bool((p.w_min <= 0).all()) and bool((p.w_max >= 0).all())


def test_shared_spread_statistics():
    dw, dtod, ud, ud_dtod = 0.01, 0.2, 0.1, 0.05
    dev = dv.ConstantStepDevice(dw_min=dw, dw_min_dtod=dtod, up_down=ud, up_down_dtod=ud_dtod,
                                w_max=0.8, w_max_dtod=0.1, w_min=-0.5, w_min_dtod=0.2)
    p = dev.sample((N,), _gen(1), dtype=torch.float64)
    # aihwkit: dw_up = dw (gain + r), dw_down = dw (gain - up_down - r); gain ~ 1 + dtod ξ, r ~ ud_dtod ξ
    _check_mean(p.dw_up, dw * 1.0)
    _check_mean(p.dw_down, dw * (1.0 - ud))
    sd = dw * math.hypot(dtod, ud_dtod)
    _check_std(p.dw_up, sd)
    _check_std(p.dw_down, sd)
    corr = torch.corrcoef(torch.stack([p.dw_up, p.dw_down]))[0, 1].item()
    expected_corr = (dtod**2 - ud_dtod**2) / (dtod**2 + ud_dtod**2)
    assert abs(corr - expected_corr) < 0.01
    _check_mean(p.w_max, 0.8)
    _check_std(p.w_max, 0.08)
    _check_mean(p.w_min, -0.5)
    _check_std(p.w_min, 0.1)


def test_negative_up_down_weakens_up_steps():
    dev = dv.ConstantStepDevice(dw_min=1.0, dw_min_dtod=0.0, up_down=-0.25, up_down_dtod=0.0)
    p = dev.sample((10,), _gen())
    assert torch.allclose(p.dw_up, torch.full((10,), 0.75))
    assert torch.allclose(p.dw_down, torch.full((10,), 1.0))


def test_log_normal_gain():
    dev = dv.ConstantStepDevice(dw_min=0.01, dw_min_dtod=0.5, dw_min_dtod_log_normal=True, up_down_dtod=0.0)
    p = dev.sample((N,), _gen(2), dtype=torch.float64)
    lg = torch.log(p.dw_up / 0.01)
    _check_mean(lg, 0.0)
    _check_std(lg, 0.5)
    assert torch.equal(p.dw_up, p.dw_down)


def test_zero_spread_gives_exact_values():
    dev = dv.LinearStepDevice(dw_min=0.003, dw_min_dtod=0.0, up_down=0.2, up_down_dtod=0.0, w_min=-0.4,
                              w_max=0.7, w_min_dtod=0.0, w_max_dtod=0.0, gamma_up=0.5, gamma_down=0.25,
                              gamma_up_dtod=0.0, gamma_down_dtod=0.0)
    p = dev.sample((4, 5), _gen(), dtype=torch.float64)
    assert torch.all(p.dw_up == 0.003)
    assert torch.allclose(p.dw_down, torch.full((4, 5), 0.003 * 0.8, dtype=torch.float64), rtol=1e-15)
    assert torch.all(p.w_min == -0.4) and torch.all(p.w_max == 0.7)
    assert torch.allclose(p.extra["slope_up"], torch.full((4, 5), -0.5 * 0.003 / 0.7, dtype=torch.float64))
    assert torch.allclose(p.extra["slope_down"], torch.full((4, 5), -0.25 * 0.0024 / -0.4, dtype=torch.float64))


def test_bounds_consistency_enforced():
    # huge bound spread: aihwkit swaps then takes |.|, so w_min <= 0 <= w_max always
    dev = dv.ConstantStepDevice(w_min_dtod=3.0, w_max_dtod=3.0)
    p = dev.sample((50_000,), _gen(3))
    assert bool((p.w_min <= 0).all()) and bool((p.w_max >= 0).all())


def test_linear_step_gamma_statistics():
    g_up, g_dtod = 0.4, 0.05
    dev = dv.LinearStepDevice(gamma_up=g_up, gamma_up_dtod=g_dtod, gamma_down=0.2, gamma_down_dtod=0.0, w_max=0.6)
    p = dev.sample((N,), _gen(4), dtype=torch.float64)
    gam = -p.extra["slope_up"] * 0.6 / p.dw_up          # mean_bound_reference: slope = -γ dw / mean w_max
    _check_mean(gam, g_up)
    _check_std(gam, g_dtod)
    gam_d = -p.extra["slope_down"] * dev.w_min / p.dw_down
    assert torch.allclose(gam_d, torch.full_like(gam_d, 0.2))


def test_linear_step_device_bound_reference():
    dev = dv.LinearStepDevice(gamma_up=0.5, gamma_up_dtod=0.0, gamma_down=0.5, gamma_down_dtod=0.0,
                              mean_bound_reference=False)
    p = dev.sample((1000,), _gen(5), dtype=torch.float64)
    assert torch.allclose(p.extra["slope_up"], -0.5 * p.dw_up / p.w_max)
    assert torch.allclose(p.extra["slope_down"], -0.5 * p.dw_down / p.w_min)


def test_soft_bounds_slopes_use_device_bounds():
    p = dv.SoftBoundsDevice().sample((1000,), _gen(6), dtype=torch.float64)
    assert torch.allclose(p.extra["slope_up"], -p.dw_up / p.w_max)
    assert torch.allclose(p.extra["slope_down"], -p.dw_down / p.w_min)


def test_pow_step_gamma_statistics():
    dev = dv.PowStepDevice(pow_gamma=2.0, pow_gamma_dtod=0.1, pow_up_down=0.2, pow_up_down_dtod=0.05)
    p = dev.sample((N,), _gen(7), dtype=torch.float64)
    _check_mean(p.extra["gamma_up"], 2.0)
    _check_mean(p.extra["gamma_down"], 2.0 * 0.8)
    _check_std(p.extra["gamma_up"], 2.0 * math.hypot(0.1, 0.05))


def test_params_to_and_state_dict_round_trip():
    p = dv.LinearStepDevice().sample((2, 3), _gen())
    q = p.to(dtype=torch.float64)
    assert q.dw_up.dtype == torch.float64 and q.extra["slope_up"].dtype == torch.float64
    sd = p.state_dict()
    assert set(sd) == {"dw_up", "dw_down", "w_min", "w_max", "extra.slope_up", "extra.slope_down"}
    r = dv.DeviceParams.from_state_dict(sd)
    for k, v in r.state_dict().items():
        assert torch.equal(v, sd[k])
    with pytest.raises(ValueError, match="unknown key 'bogus'"):
        dv.DeviceParams.from_state_dict({**sd, "bogus": sd["dw_up"]})
    with pytest.raises(ValueError, match="missing keys"):
        dv.DeviceParams.from_state_dict({"dw_up": sd["dw_up"]})


def test_granularity_and_states():
    assert dv.ConstantStepDevice(dw_min=0.002).granularity == 0.002
    assert dv.PowStepDevice(dw_min=0.004, pow_gamma=2.0).granularity == pytest.approx(0.001)
    assert dv.ConstantStepDevice(dw_min=0.002, w_min=-1, w_max=1).num_states == pytest.approx(1000)
    # ExpStep: aihwkit's formula, the down step at w = 0 (z = b): dw·(1 − A_down·exp(−γ_down·b))
    e = dv.ExpStepDevice()
    assert e.granularity == pytest.approx(0.001 * (1 - 0.36833 * math.exp(-12.78785 * 0.2425)))


# A spread within float32's range can still overflow when multiplied out: |xi| > 3.4 for 1e38, exp(30·xi) beyond
# 3.4e38 for xi > 2.96, 3e38·(1 + 0.3·xi) for xi > 0.45. With 512² devices each case has hundreds of such draws.
OVERFLOWING = [
    (dv.ConstantStepDevice(dw_min_dtod=1e38), "dw_up, dw_down", "dw_min_dtod = 1e+38"),
    (dv.ConstantStepDevice(up_down_dtod=1e38), "dw_up, dw_down", "up_down_dtod = 1e+38"),
    (dv.ConstantStepDevice(dw_min_dtod=30.0, dw_min_dtod_log_normal=True), "dw_up, dw_down",
     "dw_min_dtod = 30.0, ConstantStepDevice.up_down_dtod = 0.01, ConstantStepDevice.dw_min_dtod_log_normal = True"),
    (dv.ConstantStepDevice(w_max_dtod=1e38), "w_min, w_max", "w_max_dtod = 1e+38"),
    (dv.SoftBoundsDevice(w_max=3e38), "w_max", "w_max = 3e+38"),
    (dv.ExpStepDevice(dw_min_dtod=1e38), "dw_up, dw_down", "dw_min_dtod = 1e+38"),
    (dv.LinearStepDevice(gamma_up_dtod=1e38), "extra.slope_up", "gamma_up_dtod = 1e+38"),
    (dv.PowStepDevice(pow_gamma_dtod=1e38), "extra.gamma_up, extra.gamma_down", "pow_gamma_dtod = 1e+38"),
    (dv.EcRamPresetDevice(gamma_down_dtod=1e38), "extra.slope_down", "gamma_down_dtod = 1e+38"),
]


@pytest.mark.parametrize("dev,keys,named", OVERFLOWING, ids=[f"{type(d).__name__}-{n.split(' =')[0]}"
                                                             + ("-log_normal" if "log_normal" in n else "")
                                                             for d, _, n in OVERFLOWING])
def test_a_spread_overflowing_float32_is_rejected_naming_its_fields(dev, keys, named):
    """Sampled inf steps/bounds/slopes/exponents gave inf/NaN device states at the first update; now sampling raises,
    naming the non-finite parameters and the fields (with their values) they come from."""
    c = type(dev).__name__
    pattern = (rf"^{c}: sampling the device-to-device spread gave non-finite {keys} in torch\.float32 \(largest "
               rf"3\.403e\+38\) from .*{c}\.{re.escape(named)}.*: the spread is too large for torch\.float32\. "
               rf"Realistic device-to-device spreads \(\*_dtod\) are 0 to 1")
    with pytest.raises(ValueError, match=pattern):
        dev.sample((512, 512), _gen(11))
    # float64 holds these products: the check reads the sampled values, not the fields
    p = dev.sample((512, 512), _gen(11), dtype=torch.float64)
    assert all(bool(torch.isfinite(v).all()) for v in p.state_dict().values())


def test_the_overflow_message_names_only_the_fields_of_the_non_finite_parameters():
    with pytest.raises(ValueError) as err:
        dv.ConstantStepDevice(dw_min_dtod=1e38).sample((512, 512), _gen(11))
    msg = str(err.value)
    assert "ConstantStepDevice.dw_min = 0.001, ConstantStepDevice.dw_min_dtod = 1e+38, " \
           "ConstantStepDevice.up_down_dtod = 0.01: " in msg
    assert "w_max_dtod" not in msg and "dw_min_dtod_log_normal" not in msg       # the bounds are finite


def test_an_infinite_slope_at_a_zero_bound_is_not_an_overflow():
    """A soft-bounds slope is a step divided by a bound: at a bound of (almost) 0 — a one-sided device — it is
    infinite by design, and the update keeps the device within its bounds (test_bounds_always_respected, whose
    hypothesis search found this case): sampling accepts it, while an overflowing step or bound is refused."""
    dev = dv.SoftBoundsDevice(dw_min=0.25, dw_min_dtod=0.0, up_down_dtod=0.0, w_min=-1.401298464324817e-45,
                              w_max=1.0, w_min_dtod=0.0, w_max_dtod=0.0)
    p = dev.sample((64,), _gen(0))
    assert torch.isinf(p.extra["slope_down"]).all() and torch.isfinite(p.extra["slope_up"]).all()
    assert all(bool(torch.isfinite(getattr(p, k)).all()) for k in ("dw_up", "dw_down", "w_min", "w_max"))
