"""Invalid device/conductance parameters raise ValueError naming Class.field, the valid range and the value."""

from __future__ import annotations

import dataclasses
import fractions
import math
import re

import numpy as np
import pytest
import torch

import devices as dv
from devices.base import FLOAT32_MAX, is_finite_number

from ..field_walk import walk_errors

SHARED_BAD = [
    ("dw_min", -0.1, ">= 3e-12"),
    ("dw_min", 0.0, ">= 3e-12"),
    ("dw_min", 2.9e-12, ">= 3e-12"),
    ("dw_min", math.inf, ">= 3e-12 and finite"),
    ("dw_min_dtod", -0.01, ">= 0"),
    ("dw_min_std", -1.0, ">= 0"),
    ("up_down_dtod", -0.5, ">= 0"),
    ("w_min_dtod", -0.3, ">= 0"),
    ("w_max_dtod", -0.3, ">= 0"),
    ("write_noise_std", -2.0, ">= 0"),
    ("up_down", 1.0, "in (-1, 1)"),
    ("up_down", -1.5, "in (-1, 1)"),
    ("w_min", 0.2, "<= 0"),
    ("w_max", -0.2, ">= 0"),
    ("dw_min", math.nan, "not NaN"),
]

MODELS = [dv.ConstantStepDevice, dv.LinearStepDevice, dv.SoftBoundsDevice, dv.ExpStepDevice, dv.PowStepDevice]


@pytest.mark.parametrize("cls", MODELS)
@pytest.mark.parametrize("field,value,valid", SHARED_BAD)
def test_shared_fields_validated(cls, field, value, valid):
    with pytest.raises(ValueError) as err:
        cls(**{field: value})
    msg = str(err.value)
    assert msg.startswith(f"{cls.__name__}.{field} must be")
    assert valid in msg
    assert repr(value) in msg


def test_error_message_format_exact():
    with pytest.raises(ValueError, match=r"^ConstantStepDevice\.dw_min must be >= 3e-12 and finite \(smaller steps "
                                         r"lose .* realistic steps are 1e-4 to 0\.1\), got -0\.1$"):
        dv.ConstantStepDevice(dw_min=-0.1)


@pytest.mark.parametrize("cls", MODELS)
def test_a_range_beyond_float32_is_refused_naming_w_max(cls):
    """``w_min = -3e38, w_max = 3e38``: every field is a float32 but the range 6e38 is not (a state crossing it, or a
    step of the whole range, is inf in float32). The largest range, exactly float32's largest, is accepted."""
    kw = dict(dw_min=1e28, w_min_dtod=0.0, w_max_dtod=0.0)
    with pytest.raises(ValueError, match=rf"^{cls.__name__}\.w_max must be at most w_min \+ 3\.403e\+38 = 4\.028e\+37 "
                                         r"\(the range w_max - w_min must be a float32.*\), got 3e\+38$"):
        cls(w_min=-3e38, w_max=3e38, **kw)
    ok = cls(w_min=-3e38, w_max=FLOAT32_MAX - 3e38, **kw)
    assert ok.w_max - ok.w_min == FLOAT32_MAX


@pytest.mark.parametrize("cls", MODELS)
def test_dw_min_larger_than_the_range_rejected(cls):
    """One pulse's step may span at most the whole range [w_min, w_max] (here 0.5 - (-0.25) = 0.75)."""
    with pytest.raises(ValueError, match=rf"^{cls.__name__}\.dw_min must be <= w_max - w_min = 0\.75 .*, got 0\.76$"):
        cls(dw_min=0.76, w_min=-0.25, w_max=0.5)
    assert cls(dw_min=0.75, w_min=-0.25, w_max=0.5).dw_min == 0.75


def test_every_preset_validates_and_pcm_rejects_a_step_beyond_its_range():
    for name in dv.PRESETS:
        dev = dv.get_preset(name)
        assert 0 < dev.dw_min <= dev.w_max - dev.w_min
    with pytest.raises(ValueError, match=r"^PCMPresetDevice\.dw_min must be <= w_max - w_min = 2 .*, got 10$"):
        dv.get_preset("PCM", dw_min=10)


@pytest.mark.parametrize("cls", MODELS)
def test_w_min_equal_w_max_rejected(cls):
    with pytest.raises(ValueError, match=rf"{cls.__name__}\.w_max must be > w_min = 0\.0, got 0\.0"):
        cls(w_min=0.0, w_max=0.0)


@pytest.mark.parametrize(
    "cls,field,value",
    [
        (dv.LinearStepDevice, "gamma_up", -0.1),
        (dv.LinearStepDevice, "gamma_down", -0.1),
        (dv.LinearStepDevice, "gamma_up_dtod", -0.1),
        (dv.LinearStepDevice, "gamma_down_dtod", -1.0),
        (dv.PowStepDevice, "pow_gamma", -1.0),
        (dv.PowStepDevice, "pow_gamma_dtod", -0.1),
        (dv.PowStepDevice, "pow_up_down", 1.0),
        (dv.PowStepDevice, "pow_up_down_dtod", -0.1),
        (dv.ExpStepDevice, "gamma_up", -1.0),
        (dv.ExpStepDevice, "gamma_down", -1.0),
        (dv.ExpStepDevice, "dw_min_std_add", -0.1),
        (dv.ExpStepDevice, "dw_min_std_slope", -0.1),
        (dv.ExpStepDevice, "A_up", math.inf),
        (dv.ExpStepDevice, "a", math.nan),
        (dv.PowStepDevice, "w_max", math.inf),      # steps ∝ ((w_max − w)/(w_max − w_min))^γ: NaN states
        (dv.PowStepDevice, "w_min", -math.inf),
    ],
)
def test_model_fields_validated(cls, field, value):
    with pytest.raises(ValueError, match=rf"^{cls.__name__}\.{field} must be .*, got "):
        cls(**{field: value})


@pytest.mark.parametrize("field", ["dw_min_std", "dw_min_dtod", "up_down", "up_down_dtod", "w_max_dtod",
                                   "write_noise_std"])
def test_ideal_device_rejects_noise(field):
    with pytest.raises(ValueError,
                       match=rf"^IdealDevice\.{field} must be 0 \(an ideal device has no spread or noise\)"):
        dv.IdealDevice(**{field: 0.1})


def test_ideal_device_bounds_must_be_finite():
    with pytest.raises(ValueError, match=r"^IdealDevice\.w_max must be finite, got inf"):
        dv.IdealDevice(w_max=math.inf)


def test_preset_overrides_are_validated():
    with pytest.raises(ValueError, match=r"^EcRamPresetDevice\.dw_min_std must be >= 0"):
        dv.get_preset("EcRam", dw_min_std=-1.0)


@pytest.mark.parametrize(
    "kwargs,field",
    [({"g_min_uS": -0.1}, "g_min_uS"), ({"g_max_uS": 0.05}, "g_max_uS"), ({"w_max": 0.0}, "w_max"),
     ({"g_max_uS": math.inf}, "g_max_uS")],
)
def test_conductance_map_validated(kwargs, field):
    with pytest.raises(ValueError, match=rf"^ConductanceMap\.{field} must be "):
        dv.ConductanceMap(**kwargs)


@pytest.mark.parametrize("kwargs", [{"g_min_uS": 0.0, "g_max_uS": 5.06028381458603e-152, "w_max": 1.0},
                                    {"w_max": 1e-300}, {"w_max": 1e-40}, {"g_max_uS": 1e38, "w_max": 1e-3},
                                    {"w_max": 3e38}])
def test_conductance_map_scale_beyond_float32_rejected(kwargs):
    """The maps compute in the tensors' float32 with ``scale_uS = (g_max - g_min)/w_max`` and ``w + w_max``: a scale
    beyond float32 (tiny ``w_max``) gave NaN conductances (0·inf at ``w = -w_max``), one below its normal numbers
    (hypothesis found a span of 5e-152 µS) NaN weights from ``from_pair`` (0/0), and ``2·w_max`` beyond float32
    infinite ones. Refused, naming ``w_max`` and its range."""
    span = kwargs.get("g_max_uS", 25.0) - kwargs.get("g_min_uS", 0.1)
    lo, hi = span / 3.4028234663852886e38, min(1.7014117331926443e38, span / 1.1754943508222875e-38)
    bounds = re.escape(f"[{lo:.3g}, {hi:.3g}]")
    with pytest.raises(ValueError, match=rf"^ConductanceMap\.w_max must be in \[.*\] = {bounds} "
                                         rf"\(the µS per weight unit .* normal float32 number .*got "
                                         rf"{re.escape(repr(kwargs['w_max']))}$"):
        dv.ConductanceMap(**kwargs)


@pytest.mark.parametrize("w_max", [24.9 / FLOAT32_MAX, FLOAT32_MAX / 2])
def test_conductance_map_at_its_w_max_limits_is_finite_in_float32(w_max):
    """At either end of the accepted ``w_max`` (0.1-25 µS: scale_uS = the largest float32, or 2·w_max = it) the
    float32 maps give the range ends at ``∓w_max``, its middle at 0, and weights back to float32 rounding."""
    cm = dv.ConductanceMap(g_min_uS=0.1, g_max_uS=25.0, w_max=w_max)
    w = torch.tensor([-w_max, 0.0, w_max], dtype=torch.float64).float()
    g32 = torch.tensor([0.1, 12.55, 25.0]).tolist()
    assert cm.to_conductance(w).tolist() == pytest.approx(g32, rel=1e-6)
    gp, gm = cm.to_pair(w)
    assert gp.tolist() == pytest.approx([g32[0], g32[0], g32[2]], rel=1e-6)
    assert gm.tolist() == pytest.approx([g32[2], g32[0], g32[0]], rel=1e-6)
    for back in (cm.from_pair(gp, gm), cm.from_conductance(cm.to_conductance(w))):
        assert bool(torch.isfinite(back).all())
        assert back.double().tolist() == pytest.approx(w.double().tolist(), rel=1e-5, abs=1e-6 * w_max)


def test_devices_are_frozen():
    d = dv.SoftBoundsDevice()
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign to field 'dw_min'"):
        d.dw_min = 0.5  # type: ignore[misc]
    assert d.dw_min == dv.SoftBoundsDevice().dw_min


def _fields_of_type(cls, kind):
    """The fields of the dataclass ``cls`` annotated ``kind`` (``"float"`` or ``"bool"``)."""
    return [f.name for f in dataclasses.fields(cls) if f.type in (kind, {"float": float, "bool": bool}[kind])]


ALL_DEVICE_CLASSES = [*MODELS, dv.IdealDevice, *dv.PRESETS.values()]


@pytest.mark.parametrize("cls", ALL_DEVICE_CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("value", [True, False, "0.1", None, [0.1]], ids=repr)
def test_float_fields_reject_bools_and_strings(cls, value):
    """Every float field of every device class (presets included) takes a number only, never a bool (which would
    silently count as 1 or 0) or a string (which would fail later, in a comparison), and the message names it."""
    names = _fields_of_type(cls, "float")
    assert "dw_min" in names
    for name in names:
        with pytest.raises(ValueError, match=rf"^{cls.__name__}\.{name} must be a number \(int or float, not a bool\), "
                                             rf"got {re.escape(repr(value))}$"):
            cls(**{name: value})


@pytest.mark.parametrize("cls", ALL_DEVICE_CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("value", ["no", "False", 0, 1, None, 1.0], ids=repr)
def test_bool_fields_take_only_true_or_false(cls, value):
    """``mult_noise``, ``mean_bound_reference``, ``dw_min_dtod_log_normal``: ``"no"`` would otherwise run as True."""
    names = _fields_of_type(cls, "bool")
    assert "dw_min_dtod_log_normal" in names
    for name in names:
        with pytest.raises(ValueError, match=rf"^{cls.__name__}\.{name} must be true or false, got "):
            cls(**{name: value})


def test_bool_fields_found():
    assert set(_fields_of_type(dv.LinearStepDevice, "bool")) == {"dw_min_dtod_log_normal", "mean_bound_reference",
                                                                 "mult_noise"}
    assert set(_fields_of_type(dv.SoftBoundsDevice, "bool")) == {"dw_min_dtod_log_normal", "mult_noise"}


@pytest.mark.parametrize("cls", MODELS)
def test_ints_for_float_fields_and_real_bools_pass(cls):
    d = cls(dw_min=1, w_min=-2, w_max=3)
    assert d.dw_min == 1 and d.w_max == 3
    for name in _fields_of_type(cls, "bool"):
        assert getattr(cls(**{name: True}), name) is True


def test_preset_overrides_check_types():
    with pytest.raises(ValueError, match=r"^EcRamPresetDevice\.mult_noise must be true or false, got 'no'$"):
        dv.get_preset("EcRam", mult_noise="no")
    with pytest.raises(ValueError, match=r"^EcRamPresetDevice\.dw_min must be a number .*, got True$"):
        dv.get_preset("EcRam", dw_min=True)


@pytest.mark.parametrize("field", ["g_min_uS", "g_max_uS", "w_max"])
@pytest.mark.parametrize("value", [True, "1.0"], ids=repr)
def test_conductance_map_checks_types(field, value):
    with pytest.raises(ValueError, match=rf"^ConductanceMap\.{field} must be a number"):
        dv.ConductanceMap(**{field: value})


# --- every field, walked (tests/field_walk.py): a new field without validation fails here ---------------------------

WALKED = [*ALL_DEVICE_CLASSES, dv.GenericDriftModel, dv.NoDrift, dv.PCMLikeNoiseModel, dv.ConductanceMap]


@pytest.mark.parametrize("cls", WALKED, ids=lambda c: c.__name__)
def test_every_field_rejects_invalid_values_naming_it(cls):
    """NaN, a bool or text for a number, a number beyond float32's range, a non-bool switch, a malformed tuple: each
    raises ``ValueError``/``TypeError`` whose message names ``Class.field``, for every field of every class."""
    assert walk_errors(cls) == []


def test_float32_limit_is_torchs():
    assert FLOAT32_MAX == torch.finfo(torch.float32).max
    assert float(torch.tensor(FLOAT32_MAX, dtype=torch.float32)) == FLOAT32_MAX
    assert torch.isinf(torch.tensor(1e39, dtype=torch.float32))      # the values the limit keeps out


@pytest.mark.parametrize("cls", ALL_DEVICE_CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("field,value", [("w_max", math.inf), ("w_min", -math.inf)])
def test_infinite_bounds_rejected_by_every_model(cls, field, value):
    """An infinite bound gave infinite sampled bounds and ``num_states`` (only PowStep and Ideal refused it)."""
    with pytest.raises(ValueError, match=rf"^{cls.__name__}\.{field} must be finite, got -?inf$"):
        cls(**{field: value})


@pytest.mark.parametrize("cls,field", [(dv.ConstantStepDevice, "dw_min_dtod"), (dv.PowStepDevice, "pow_gamma"),
                                       (dv.ExpStepDevice, "A_up"), (dv.LinearStepDevice, "gamma_up"),
                                       (dv.ConductanceMap, "g_max_uS"), (dv.GenericDriftModel, "t_0")])
def test_values_beyond_float32_rejected(cls, field):
    """``dw_min_dtod = 1e300`` sampled infinite steps in float32, so NaN states after one pulse; ``pow_gamma = 1e300``
    infinite exponents, NaN states too. The largest float32 itself is accepted (the limit, not a narrower one)."""
    with pytest.raises(ValueError, match=rf"^{cls.__name__}\.{field} must be at most 3\.4e\+38 in magnitude .*"
                                         rf"got 1e\+300$"):
        cls(**{field: 1e300})
    kwargs = {field: FLOAT32_MAX, **({"g_min_uS": 0.1} if cls is dv.ConductanceMap else {})}
    assert getattr(cls(**kwargs), field) == FLOAT32_MAX


def test_inference_times_beyond_float32_rejected():
    model = dv.GenericDriftModel(nu_mean=0.05)
    g = torch.full((3,), 10.0)
    with pytest.raises(ValueError,
                       match=r"^GenericDriftModel\.t_inference_s must be a finite number >= 0, at most 3\.4e\+38"):
        model.read_noise(g, 1e300, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("value", [0, -3, 1.5, -1e-300, FLOAT32_MAX * 10, fractions.Fraction(1, 3), np.float32(0.25),
                                   np.int64(7)])
def test_is_finite_number_takes_every_finite_real(value):
    # any real number that is not NaN or ±Inf (its float32 range is each field's own check)
    assert is_finite_number(value)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, np.float64("nan"), True, False, None, "1", "nan",
                                   torch.tensor(1.0), [1.0], 1j])
def test_is_finite_number_rejects_non_finite_bools_and_non_numbers(value):
    assert not is_finite_number(value)


# ------------------------------------------------------------------ sample()'s arguments
@pytest.mark.parametrize("cls", ALL_DEVICE_CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("shape", [(-1, 3), (2.5, 3), (True, 3), "23", 4, (2, None)])
def test_sample_refuses_a_shape_that_is_no_tuple_of_sizes(cls, shape):
    """A negative size failed inside torch ("Trying to create tensor with negative dimension"); a float, a bool
    or a string was int()-ed into another shape (``(2.5, 3)`` sampled 2 x 3 devices, ``"23"`` 2 x 3): each is
    refused naming the model's ``sample``, the argument and what it takes."""
    with pytest.raises(ValueError, match=rf"^{cls.__name__}.sample: shape must be a tuple of integers >= 0 \(the "
                                         rf"device array's dimensions, \(\) for one device\), got "
                                         rf"{re.escape(repr(shape))}$"):
        cls().sample(shape, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("shape", [[2, 3], torch.Size([2, 3]), (np.int64(2), np.int32(3))])
def test_sample_takes_a_list_a_size_or_numpy_sizes_as_the_tuple(shape):
    """Any sequence of integer sizes draws the numbers of the tuple ``(2, 3)`` (same generator state)."""
    dev = dv.SoftBoundsDevice()
    ref = dev.sample((2, 3), torch.Generator().manual_seed(4)).state_dict()
    got = dev.sample(shape, torch.Generator().manual_seed(4)).state_dict()
    assert got.keys() == ref.keys()
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=0, atol=0)
    assert dev.sample((0, 3)).dw_up.shape == (0, 3) and dev.sample(()).dw_up.shape == ()


@pytest.mark.parametrize("generator", ["0", 0, np.random.default_rng(0)])
def test_sample_refuses_a_generator_of_another_kind(generator):
    """A seed or a numpy generator passed as ``generator`` failed deep in ``torch.randn`` (a TypeError listing
    randn's overloads); it is refused naming what the argument takes."""
    with pytest.raises(ValueError, match=r"^PowStepDevice.sample: generator must be a torch.Generator, a "
                                         r"devices.CounterRNG or None \(torch's global generator\), got "):
        dv.PowStepDevice().sample((2,), generator)


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex64, "float32", np.float32])
def test_sample_and_tile_array_refuse_a_dtype_that_is_no_floating_torch_dtype(dtype):
    """An integer dtype failed in torch's normal kernel ("not implemented for 'Long'") and a string in randn's
    argument parsing; the device model and the tile array (``TileArray`` / ``AnalogLinear(dtype=...)``) refuse
    them naming the argument."""
    from crossbar import AnalogLinear, TileArray

    with pytest.raises(ValueError, match=r"^ExpStepDevice.sample: dtype must be a floating-point torch.dtype "
                                         rf"\(e.g. torch.float32\), got {re.escape(repr(dtype))}$"):
        dv.ExpStepDevice().sample((2,), dtype=dtype)
    for make in (lambda: TileArray(3, 4, dtype=dtype), lambda: AnalogLinear(4, 3, dtype=dtype)):
        with pytest.raises(ValueError, match=r"^TileArray.dtype must be a floating-point torch.dtype \(e.g. "
                                             rf"torch.float32; the device states are real numbers\), got "
                                             rf"{re.escape(repr(dtype))}$"):
            make()


def test_the_smallest_dw_min_keeps_the_cycle_to_cycle_std():
    """At dw_min = 3e-12 (DW_MIN_MIN) the constant-step update's std ``var·rsqrt(var + 1e-30)`` is still
    ``dw_min_std·sqrt(n)·dw_min`` (hand formula; sampling error of 3600 devices ~1.2 %); at 1e-15, now refused, it was
    8 % too small, at 1e-17 92 %."""
    from devices.base import DW_MIN_MIN

    dev = dv.ConstantStepDevice(dw_min=DW_MIN_MIN, w_min=-1e-6, w_max=1e-6, dw_min_dtod=0.0, up_down_dtod=0.0,
                                w_min_dtod=0.0, w_max_dtod=0.0, dw_min_std=0.3)
    g = torch.Generator().manual_seed(0)
    p = dev.sample((60, 60), g)
    n_up = torch.full((60, 60), 5.0)
    new = dev.apply_pulses(torch.zeros(60, 60), n_up, torch.zeros(60, 60), p, g).double()
    want = 0.3 * math.sqrt(5) * DW_MIN_MIN
    assert float(new.mean()) == pytest.approx(5 * DW_MIN_MIN, rel=0.01)
    assert float(new.std()) == pytest.approx(want, rel=0.05)


def test_field_values_are_every_field_of_the_device_in_the_class_order():
    dev = dv.get_preset("EcRam", dw_min=0.004)
    values = dev.field_values()
    assert list(values) == [f.name for f in dataclasses.fields(dev)]
    # EcRam's own numbers (aihwkit's preset) and the override
    assert values["dw_min"] == 0.004 and values["gamma_up"] == 0.1153 and values["w_min"] == -0.8276
    assert values["mult_noise"] is True and values["dw_min_dtod_log_normal"] is False


@pytest.mark.parametrize("a, b, same", [
    (0.001, 1e-3, True), (1, 1.0, True), (True, True, True), (0.0, 0.0, True),
    (0.0, -0.0, False),                      # the sign of a zero is kept apart
    (0.1, 0.1 + 2 ** -56, False),            # one unit in the last place: bit for bit
    (True, 1, False), (1, True, False),      # a bool is no number
    ("0.001", 0.001, False), (None, 0.0, False),
])
def test_same_device_value_compares_numbers_as_numbers_and_keeps_bools_apart(a, b, same):
    from devices.base import same_device_value

    assert same_device_value(a, b) is same and same_device_value(b, a) is same


def _count_setup() -> tuple[dv.PulsedDevice, dv.DeviceParams, torch.Tensor, torch.Generator]:
    dev = dv.ConstantStepDevice()
    g = torch.Generator().manual_seed(0)
    return dev, dev.sample((3,), g), torch.zeros(3), g


@pytest.mark.parametrize("n_up, got", [
    (torch.tensor([-5.0, 0.0, 0.0]), "-5.0"),                 # gave NaN states
    (torch.tensor([math.nan, 0.0, 0.0]), "nan"),               # gave NaN states
    (torch.tensor([0.0, math.inf, 0.0]), "inf"),
    (torch.tensor([0.0, 0.0, 1.5]), "1.5"),                    # the closed forms' real counts: no pulse train
    (torch.tensor([0, 2 ** 31 + 1, 0]), "2147483649"),         # beyond PULSE_COUNT_MAX (int64 counts)
], ids=["negative", "nan", "inf", "fraction", "too_many"])
@pytest.mark.parametrize("arg", ["n_up", "n_down"])
def test_apply_pulses_refuses_counts_that_are_no_pulse_counts(n_up, got, arg):
    dev, p, w, g = _count_setup()
    counts = {"n_up": torch.zeros(3, dtype=n_up.dtype), "n_down": torch.zeros(3, dtype=n_up.dtype), arg: n_up}
    msg = rf"ConstantStepDevice.apply_pulses: {arg} must hold pulse counts: integers in \[0, 2\^31\] .*got {got}$"
    with pytest.raises(ValueError, match=msg):
        dev.apply_pulses(w, counts["n_up"], counts["n_down"], p, g)


def test_apply_pulses_takes_the_largest_count_and_broadcast_counts():
    """2^31 pulses (PULSE_COUNT_MAX) and int, bool or 0-d counts pass: 2^31 steps of 1e-3 take a device from 0 to its
    bound; a 0-d count of 2 gives every device 2 pulses (mean 2·dw_up without noise, hand value)."""
    dev = dv.ConstantStepDevice(dw_min_std=0.0)
    g = torch.Generator().manual_seed(0)
    p = dev.sample((3,), g, dtype=torch.float64)
    w = torch.zeros(3, dtype=torch.float64)
    zero = torch.zeros(3, dtype=torch.int64)
    assert torch.equal(dev.apply_pulses(w, torch.tensor([2 ** 31, 0, 0]), zero, p, g)[0], p.w_max[0])
    assert torch.allclose(dev.apply_pulses(w, torch.tensor(2.0, dtype=torch.float64), zero, p, g), 2 * p.dw_up)
    assert torch.allclose(dev.apply_pulses(w, torch.tensor([True, False, True]), zero, p, g),
                          torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64) * p.dw_up)


@pytest.mark.parametrize("method", ["apply_pulses", "apply_pulses_"])
def test_apply_pulses_refuses_counts_of_another_type_or_shape(method):
    """Types and shapes are checked on both entries, without a host read: a Python number or a complex tensor is no
    count tensor; counts of a shape that does not broadcast to the states' (or that would enlarge them: (2, 3) for
    3 states silently returned 2×3 states) are refused, naming every shape."""
    dev, p, w, g = _count_setup()
    apply = getattr(dev, method)
    zero = torch.zeros(3)
    with pytest.raises(ValueError, match=rf"ConstantStepDevice.{method}: n_up must be a tensor of real pulse counts "
                                         r"\(int, float or bool\), got 5$"):
        apply(w, 5, zero, p, g)
    with pytest.raises(ValueError, match=r"n_down must be a tensor of real pulse counts .*got a torch.complex64 "):
        apply(w, zero, torch.zeros(3, dtype=torch.complex64), p, g)
    for n_up in (torch.ones(2, 3), torch.ones(4)):
        shape = re.escape(str(tuple(n_up.shape)))
        with pytest.raises(ValueError, match=rf"{method}: n_up, n_down and params must have the states' shape \(3,\) "
                                             rf"or one that broadcasts to it, got n_up {shape}, n_down \(3,\), "
                                             r"params \(3,\)$"):
            apply(w, n_up, zero, p, g)


def test_apply_pulses_checks_count_values_only_where_host_reads_are_free():
    """On the sync-free path (GPUs; forced here on the CPU by no_host_reads) the values are the caller's contract:
    no host read, so a negative count is not refused there (and gives a NaN state, as documented)."""
    from devices.host import no_host_reads

    dev, p, w, g = _count_setup()
    with no_host_reads():
        out = dev.apply_pulses(w, torch.tensor([-5.0, 0.0, 0.0]), torch.zeros(3), p, g)
    assert torch.isnan(out[0]) and torch.equal(out[1:], torch.zeros(2))
