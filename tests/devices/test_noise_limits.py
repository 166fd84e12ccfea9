"""Noise fields whose draws overflowed float32 although every field was within its range.

* ``dw_min_std`` (relative cycle-to-cycle noise): ``dw_min_std = 1e38`` drew ``N(0, 1e38)`` = ±inf for ``|ξ| > 3.4``
  in the constant-step update, times 0 for the devices without pulses: NaN states; its square (the variance factor of
  the count-based moments) overflowed beyond 1.8e19, and ``inf·0`` = NaN variances sent every device *without*
  pulses to a bound (linear step, soft bounds). Now at most ``DW_MIN_STD_MAX = 1e19``, refused above.
* ``write_noise_std·dw_min``: apparent states ``w + write_noise_std·dw_min·ξ`` were ±inf; now refused when the tiles
  are sampled, with the largest value the sampled bounds allow.
* constant-step steps beyond ~1e19 weight units (bounds up to float32's range are valid): ``n·dw²`` overflowed and
  ``ξ·inf·rsqrt(inf)`` = NaN for every pulsed device; the variance now saturates at the largest float.
"""

from __future__ import annotations

import contextlib
import math
import re

import pytest
import torch

import devices as dv
from devices import no_host_reads
from devices.base import DW_MIN_STD_MAX, FLOAT32_MAX, NORMAL_DRAW_MAX

MODELS = [dv.ConstantStepDevice, dv.LinearStepDevice, dv.SoftBoundsDevice, dv.ExpStepDevice, dv.PowStepDevice]
NOISY = [c for c in (*MODELS, *dv.PRESETS.values()) if not issubclass(c, dv.IdealDevice)]   # Ideal: 0 only


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("cls", NOISY, ids=lambda c: c.__name__)
@pytest.mark.parametrize("value", [1e38, math.nextafter(1e19, math.inf), 2e19])
def test_dw_min_std_beyond_its_limit_is_refused_naming_the_range(cls, value):
    c = cls.__name__
    with pytest.raises(ValueError, match=rf"^{c}\.dw_min_std must be >= 0 and at most 1e\+19 \(its square, the factor "
                                         rf"of the cycle-to-cycle variance, must be finite in float32; a relative "
                                         rf"noise of 1e\+19 is no device: .*\), got {re.escape(repr(value))}$"):
        cls(dw_min_std=value)
    assert cls(dw_min_std=1e19).dw_min_std == 1e19                    # the limit itself is valid


def test_the_dw_min_std_limit_is_where_its_square_fits_float32():
    # 1e19² = 1e38 is finite in float32; the square of anything beyond sqrt(3.4e38) = 1.84e19 is not
    assert DW_MIN_STD_MAX == 1e19
    assert torch.isfinite(torch.tensor(DW_MIN_STD_MAX ** 2, dtype=torch.float32))
    assert torch.isinf(torch.tensor(1.85e19 ** 2, dtype=torch.float32))
    assert DW_MIN_STD_MAX * NORMAL_DRAW_MAX < FLOAT32_MAX               # and every draw N(0, dw_min_std) is finite


def test_normal_draws_stay_within_normal_draw_max():
    """The bound of :data:`NORMAL_DRAW_MAX`: each generator's smallest uniform gives its largest ``|ξ|`` (Box–Muller:
    ``sqrt(−2·ln u_min)``; inverse CDF: ``|Φ⁻¹(u_min)|``), all below 9; and torch's and the counter generator's
    largest draws of many stay below their formula's bound."""
    box_muller = {bits: math.sqrt(-2.0 * math.log(2.0 ** -bits)) for bits in (24, 33, 53, 54)}
    assert box_muller[24] == pytest.approx(5.768, abs=1e-3) and box_muller[54] == pytest.approx(8.652, abs=1e-3)
    quantile = {bits: -float(torch.special.ndtri(torch.tensor(2.0 ** -bits, dtype=torch.float64)))
                for bits in (24, 53)}
    assert quantile[24] == pytest.approx(5.295, abs=1e-3) and quantile[53] == pytest.approx(8.21, abs=1e-2)
    assert max(*box_muller.values(), *quantile.values()) < NORMAL_DRAW_MAX
    # 2^24 float32 draws on the CPU (Box–Muller on 24-bit uniforms): the tail reaches 5.3 and never passes 5.77
    xi = torch.randn(1 << 24, generator=_gen(0))
    assert 5.0 < float(xi.abs().max()) <= box_muller[24] + 1e-5
    xi = torch.randn(1 << 22, generator=_gen(1), dtype=torch.float64)
    assert float(xi.abs().max()) <= box_muller[53] + 1e-9
    xi = dv.rng.CounterRNG([3]).normal((1 << 22,))
    assert float(xi.abs().max()) <= quantile[24] + 1e-4


def _counts(shape: tuple[int, ...], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Up/down counts with about half the devices without pulses (a sparse update's pattern)."""
    g = _gen(seed)
    n_up = (torch.rand(shape, generator=g) < 0.3).float() * torch.randint(1, 20, shape, generator=g)
    n_down = (torch.rand(shape, generator=g) < 0.3).float() * torch.randint(1, 20, shape, generator=g)
    return n_up, n_down


def _pulsed(dev, w, n_up, n_down, p, path: str) -> torch.Tensor:
    """``dev.apply_pulses`` of the counts on ``path``: ``sync-free`` under :func:`no_host_reads`; ``dense`` and
    ``sparse`` differ by the caller's array size."""
    with no_host_reads() if path == "sync-free" else contextlib.nullcontext():
        return dev.apply_pulses(w, n_up, n_down, p, _gen(3))


@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("path", ["dense", "sync-free", "sparse"])
def test_the_largest_dw_min_std_keeps_idle_devices_and_finite_states(cls, path):
    """At ``dw_min_std = 1e19`` every pulsed device's noise is astronomically large (it lands on or near a bound),
    while the devices without pulses keep their state exactly, on every update path (before: NaN states or idle
    devices sent to a bound, for values within float32 above 1.8e19)."""
    dev = cls(dw_min_std=DW_MIN_STD_MAX)
    shape = (60, 60) if path == "dense" else (128, 128)            # < 4096 devices: the CPU computes them all
    p = dev.sample(shape, _gen(0))
    w = dev.clip(torch.rand(shape, generator=_gen(1)) * 0.4 - 0.2, p)
    n_up, n_down = _counts(shape, 2)
    new = _pulsed(dev, w, n_up, n_down, p, path)
    idle = (n_up + n_down) == 0
    assert 0.3 * idle.numel() < int(idle.sum()) < 0.7 * idle.numel()
    assert torch.isfinite(new).all()
    assert torch.equal(new[idle], w[idle])
    assert ((new >= p.w_min) & (new <= p.w_max)).all()
    moved = (new - w)[~idle].abs()
    assert float(moved.median()) > 0.1 * float((p.w_max - p.w_min).min())    # huge noise: far across the range


BIG_STEPS = dict(dw_min=1e20, w_min=-1e38, w_max=1e38, dw_min_dtod=0.0, up_down_dtod=0.0, w_min_dtod=0.0,
                 w_max_dtod=0.0)
"""Valid fields (bounds within float32), steps of 1e20: ``n·dw²`` overflows float32 for every pulsed device."""


@pytest.mark.parametrize("dw_min_std", [0.3, 0.0])
@pytest.mark.parametrize("path", ["dense", "sync-free", "sparse"])
def test_constant_steps_whose_squares_overflow_give_finite_states(dw_min_std, path):
    """Every pulsed device was NaN (``ξ·inf·rsqrt(inf)``, or ``0·inf`` without noise); now the variance saturates at
    the largest float. Without noise the state is the exact sum of the steps."""
    dev = dv.ConstantStepDevice(dw_min_std=dw_min_std, **BIG_STEPS)
    shape = (60, 60) if path == "dense" else (128, 128)
    p = dev.sample(shape, _gen(0))
    w = torch.zeros(shape)
    n_up, n_down = _counts(shape, 2)
    new = _pulsed(dev, w, n_up, n_down, p, path)
    assert torch.isfinite(new).all()
    idle = (n_up + n_down) == 0
    assert torch.equal(new[idle], w[idle])
    if dw_min_std == 0:
        step = torch.tensor(1e20, dtype=torch.float32)
        assert torch.equal(new, n_up * step - n_down * step)


def test_write_noise_that_overflows_the_apparent_states_is_refused_when_sampled():
    """``write_noise_std·dw_min = 3e38``: the apparent states ``w + 3e38·ξ`` were ±inf for ``|ξ| > 1.13``. The limit
    is ``(3.4028e38 − largest |bound|)/(9·dw_min)`` = 3.781e37 here (bounds about 1), shown rounded down."""
    dev = dv.ConstantStepDevice(dw_min=1.0, write_noise_std=3e38)
    with pytest.raises(ValueError, match=r"^ConstantStepDevice\.write_noise_std must be at most 3\.779e\+37 with "
                                         r"ConstantStepDevice\.dw_min = 1\.0 and the sampled bounds "
                                         r"\(largest \|bound\| [0-9.]+\), got 3e\+38: the apparent states .* "
                                         r"must be finite in torch\.float32"):
        dev.sample((64, 64), _gen(0))
    # float64 holds them: the check reads the dtype of the sampled parameters
    p = dev.sample((64, 64), _gen(0), dtype=torch.float64)
    assert torch.isfinite(dev.write_noise(torch.zeros(64, 64, dtype=torch.float64), p, _gen(1))).all()


def test_write_noise_just_inside_its_limit_gives_finite_apparent_states():
    dev = dv.ConstantStepDevice(dw_min=1.0, write_noise_std=3.7e37)
    p = dev.sample((64, 64), _gen(0))
    w = p.w_max.clone()                                                # the largest states, the worst case
    for seed in range(8):
        apparent = dev.write_noise(w, p, _gen(seed))
        assert torch.isfinite(apparent).all() and float(apparent.abs().max()) > 1e37


HUGE_BOUNDS = dict(w_min=-1.7e38, w_max=1.7e38, dw_min_dtod=0.0, up_down_dtod=0.0, w_min_dtod=0.0, w_max_dtod=0.0)
"""Bounds of 1.7e38 without spread: the largest step is (3.4028e38 − 1.7e38)/2^31 = 7.929e28, shown 7.925e28."""


@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.__name__)
def test_a_step_whose_pulses_overflow_is_refused_naming_the_limit(cls):
    """``dw_min = 1e37`` (valid before: at most ``w_max − w_min``) gave NaN constant-step states once a device got
    about 34 pulses of each sign in one update (``n_up·dw_up = n_down·dw_down = inf``, ``inf − inf``). The limit:
    ``(3.4028e38 − 1.7e38)/2^31·(1 − 5e-4) = 7.9254e28``, shown rounded down to 7.925e28, is accepted."""
    c = cls.__name__
    for value in (1e37, 7.926e28):
        with pytest.raises(ValueError, match=rf"^{c}\.dw_min must be at most 7\.925e\+28 = \(3\.403e\+38 - "
                                             rf"largest \|bound\| 1\.7e\+38\)/2\^31 rounded down \(a device's pulses "
                                             rf"of one update, up to 2\^31 per direction, times the step, plus its "
                                             rf"state, must be finite in float32: .*\), got {re.escape(repr(value))}$"):
            cls(dw_min=value, **HUGE_BOUNDS)
    assert cls(dw_min=7.925e28, **HUGE_BOUNDS).dw_min == 7.925e28
    # bounds up to 1e30: (3.4028e38 − 1e30)/2^31 = 1.5846e29, shown 1.584e29 (the default bounds are ±0.6)
    assert dv.base.dw_min_max(0.6) == dv.base.dw_min_max(1.0) == 1.584e29
    with pytest.raises(ValueError, match=rf"^{c}\.dw_min must be at most 1\.584e\+29 = .*got 1\.585e\+29$"):
        cls(dw_min=1.585e29, w_min=-1e30, w_max=1e30)


@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("dw_min_std", [0.0, 0.3])
def test_the_largest_step_keeps_the_states_of_2_31_pulses_finite(cls, dw_min_std):
    """The worst case at the limit: states on a bound, 2^31 pulses (int32's 2^31 − 1, rounded up in float32) of one
    or both signs: the mean ``1.7e38 + 2^31·7.925e28 = 3.4019e38`` is still a float32 (largest 3.4028e38), so every
    state ends finite and within its bounds (before: NaN for both signs)."""
    dev = cls(dw_min=7.925e28, dw_min_std=dw_min_std, **HUGE_BOUNDS)
    assert 1.7e38 + 2.0 ** 31 * 7.925e28 < FLOAT32_MAX
    shape = (4, 4)
    p = dev.sample(shape, _gen(0))
    w = torch.where(torch.arange(16).reshape(shape) % 2 == 0, p.w_max, p.w_min)
    many = torch.full(shape, 2.0 ** 31)
    for n_up, n_down in ((many, many), (many, torch.zeros(shape)), (torch.zeros(shape), many)):
        new = dev.apply_pulses(w, n_up, n_down, p, _gen(1))
        assert torch.isfinite(new).all() and ((new >= p.w_min) & (new <= p.w_max)).all()
    if cls is dv.ConstantStepDevice and dw_min_std == 0:
        # up: w_max stays (clipped), w_min ends at 2^31·7.925e28 − 1.7e38 = 1.87e35; down mirrored
        up = dev.apply_pulses(w, many, torch.zeros(shape), p, _gen(1))
        down = dev.apply_pulses(w, torch.zeros(shape), many, p, _gen(1))
        far = 2.0 ** 31 * 7.925e28 - 1.7e38
        assert far == pytest.approx(1.87e35, rel=1e-2)
        assert torch.equal(up.view(-1)[0::2], p.w_max.view(-1)[0::2])
        assert torch.equal(down.view(-1)[1::2], p.w_min.view(-1)[1::2])
        assert up.view(-1)[1::2].tolist() == pytest.approx([far] * 8, rel=1e-3)
        assert down.view(-1)[0::2].tolist() == pytest.approx([-far] * 8, rel=1e-3)


def test_a_spread_whose_sampled_steps_overflow_is_refused_when_sampled():
    """``dw_min_dtod = 1e34``: every field is valid and every sampled step finite (up to ~5e31), but 2^31 pulses of
    such a step are not (limit 1.584e29 for bounds about 1): refused when the tiles are sampled, naming the step's
    fields; in float64 the same steps are valid (the check reads the sampled parameters' dtype)."""
    dev = dv.ConstantStepDevice(dw_min=1e-3, dw_min_dtod=1e34)
    with pytest.raises(ValueError, match=r"^ConstantStepDevice: the sampled steps reach [0-9.]+e\+3[12] from "
                                         r"ConstantStepDevice\.dw_min = 0\.001, ConstantStepDevice\.dw_min_dtod = "
                                         r"1e\+34, ConstantStepDevice\.up_down_dtod = 0\.01; a step must be at most "
                                         r"1\.584e\+29 with the sampled bounds \(largest \|bound\| [0-9.]+\): .* must "
                                         r"be finite in torch\.float32"):
        dev.sample((64, 64), _gen(0))
    p = dev.sample((64, 64), _gen(0), dtype=torch.float64)
    assert float(torch.maximum(p.dw_up, p.dw_down).max()) > 1e31
    # 1e-3·(1 + 1e31·ξ) reaches about 6e28 (|ξ| < 5.8): within the limit, accepted
    dv.ConstantStepDevice(dw_min=1e-3, dw_min_dtod=1e31).sample((64, 64), _gen(0))



@pytest.mark.parametrize("cls", NOISY, ids=lambda c: c.__name__)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_states_of_realistic_steps_are_sampled(cls, dtype):
    """float16's largest value is 65504, so 2^31 pulses of any step overflow it: checked in float16, every device
    with a step was refused when sampled in half precision (the default ConstantStepDevice: "a step must be at most
    3.049e-05"), as it was not before the pulse-count limit. The limit is float32's (the check runs in float32 for
    narrower dtypes): the half-precision states of every model and preset are sampled, finite, in their dtype."""
    p = cls().sample((8, 8), _gen(0), dtype=dtype)
    for name, t in p.state_dict().items():
        assert t.dtype == dtype and bool(torch.isfinite(t).all()), name
    assert bool((p.dw_up > 0).all()) and bool((p.dw_down > 0).all())


def test_a_half_precision_tile_array_of_the_default_config_trains():
    """A float16 TileArray of the default CrossbarConfig was refused when built (its sampled steps checked against
    float16's range); it builds again, and one pulsed update of all-ones inputs and errors moves its weights, which
    stay finite."""
    from crossbar import CrossbarConfig
    from crossbar.tiles import TileArray

    tile = TileArray(3, 4, CrossbarConfig(), seed=0, dtype=torch.float16)
    before = tile.weight_tiles.clone()
    tile.update(torch.ones(2, 4, dtype=torch.float16), torch.ones(2, 3, dtype=torch.float16), 0.1)
    after = tile.weight_tiles
    assert after.dtype == torch.float16 and bool(torch.isfinite(after).all())
    assert not torch.equal(after, before)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("cls", [dv.ConstantStepDevice, dv.LinearStepDevice, dv.ExpStepDevice],
                         ids=lambda c: c.__name__)
def test_half_precision_updates_keep_the_cycle_to_cycle_noise(cls, dtype):
    """The update's moments are computed in float32 for half-precision states: in float16 the variance
    ``dw_min_std²·n·dw²`` of 4 pulses of 1e-4 is 3.6e-9, below float16's smallest subnormal (6e-8), so the noise was
    lost (std 0). From 0 (exact in both dtypes), 4 up pulses of dw = 1e-4 (no spread; ExpStep's step at 0 is
    ``dw·(1 − A_up·e^{γ_up·b})``, 0.984·dw for its defaults) give the hand mean 4·step and std 0.3·2·step within
    the sampling error of 10,000 devices (5 % on the std, 1 % on the mean) and the half-precision rounding."""
    dev = cls(dw_min=1e-4, dw_min_dtod=0.0, up_down_dtod=0.0, w_min_dtod=0.0, w_max_dtod=0.0, dw_min_std=0.3)
    g = _gen(1)
    p = dev.sample((100, 100), g, dtype=dtype)
    step = float(p.dw_up[0, 0])
    if isinstance(dev, dv.ExpStepDevice):
        step *= 1 - dev.A_up * math.exp(dev.gamma_up * dev.b)
    w = torch.zeros(100, 100, dtype=dtype)
    n = torch.full((100, 100), 4, dtype=torch.int32)
    out = dev.apply_pulses(w, n, torch.zeros_like(n), p, g)
    assert out.dtype == dtype
    out = out.double()
    assert float(out.mean()) == pytest.approx(4 * step, rel=0.01)
    assert float(out.std()) == pytest.approx(0.3 * 2 * step, rel=0.05)
    assert bool((out >= p.w_min.double()).all()) and bool((out <= p.w_max.double()).all())


@pytest.mark.parametrize("dtype, kwargs, field, limit", [
    (torch.float16, {"dw_min": 1e-8}, "dw_min", "at least 6.104e-05 (the smallest normal torch.float16)"),
    (torch.float16, {"dw_min": 6.1e-5}, "dw_min", "at least 6.104e-05 (the smallest normal torch.float16)"),
    (torch.float16, {"w_max": 1e5}, "w_max", "at most 65504 in magnitude (the largest torch.float16)"),
    (torch.float16, {"w_min": -7e4}, "w_min", "at most 65504 in magnitude (the largest torch.float16)"),
    (torch.bfloat16, {"w_max": 3.4e38, "w_min": 0.0}, "w_max",
     "at most 3.3895e+38 in magnitude (the largest torch.bfloat16)"),
])
def test_half_precision_refuses_parameters_the_dtype_cannot_hold(dtype, kwargs, field, limit):
    """A nominal step below the dtype's smallest normal number (float16: 2^-14 = 6.104e-05) underflowed when
    sampled (1e-8 to 0: every pulse did nothing; subnormal steps lose digits) and a bound beyond its largest value
    (float16: 65504; bfloat16: 3.39e38, below float32's 3.40e38) overflowed to inf (refused as a "spread too large",
    which it was not): refused when sampled, naming the field, its value and the dtype's limit."""
    dev = dv.ConstantStepDevice(**kwargs)
    value = re.escape(repr(kwargs[field]))
    with pytest.raises(ValueError, match=rf"^ConstantStepDevice.{field} must be {re.escape(limit)} for states "
                                         rf"sampled in {dtype}, got {value}: "):
        dev.sample((4, 4), _gen(0), dtype=dtype)


def test_half_precision_takes_the_limits_themselves():
    """The limits are inclusive: a step of exactly 2^-14 and bounds of ±65504 are sampled in float16 (no spread)."""
    dev = dv.ConstantStepDevice(dw_min=2.0 ** -14, w_max=65504.0, w_min=-65504.0, dw_min_dtod=0.0, up_down_dtod=0.0,
                                w_min_dtod=0.0, w_max_dtod=0.0)
    p = dev.sample((2, 2), _gen(0), dtype=torch.float16)
    assert bool((p.dw_up == 2.0 ** -14).all()) and bool((p.w_max == 65504.0).all())


@pytest.mark.parametrize("method", ["apply_pulses", "apply_pulses_", "apply_pulses_at_"])
def test_half_precision_states_take_counts_beyond_float16(method):
    """Counts were cast to the states' dtype: in float16 70,000 pulses became inf (the state then jumped to a bound).
    In float32 they are exact: 70,000 noise-free steps of 2^-13 from 0 end at 70000·2^-13 = 8.5449 (hand value),
    which float16 holds to its half ulp there (2^-8)."""
    dev = dv.ConstantStepDevice(dw_min=2.0 ** -13, dw_min_dtod=0.0, up_down_dtod=0.0, w_min_dtod=0.0, w_max_dtod=0.0,
                                dw_min_std=0.0, w_min=-10.0, w_max=10.0)
    p = dev.sample((3,), _gen(0), dtype=torch.float16)
    w = torch.zeros(3, dtype=torch.float16)
    n_up = torch.tensor([70_000, 0, 1], dtype=torch.int32)
    n_down = torch.zeros(3, dtype=torch.int32)
    if method == "apply_pulses_at_":
        out = dev.apply_pulses_at_(w, torch.tensor([0, 2]), n_up[[0, 2]], n_down[[0, 2]], p, _gen(1))
    else:
        out = getattr(dev, method)(w, n_up, n_down, p, _gen(1))
    assert out.dtype == torch.float16
    assert abs(float(out[0]) - 70_000 * 2.0 ** -13) <= 2.0 ** -8
    assert float(out[1]) == 0.0 and float(out[2]) == 2.0 ** -13
