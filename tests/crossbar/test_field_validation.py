"""Every field of the crossbar configs (periphery, update, tile grid, whole config) rejects invalid values with a
message naming ``Class.field`` (walked by tests/field_walk.py), and the limits that the walk does not see: finite values
beyond float32's range (which turned the MVM's outputs into NaN, or raised from inside torch) and a train length whose
pulse counts do not fit an int32."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from crossbar import CrossbarConfig, IOParameters, TileGrid, UpdateParameters
from crossbar.periphery import analog_mvm
from crossbar.update import MAX_DESIRED_BL

from ..field_walk import walk_errors


@pytest.mark.parametrize("make,cls", [
    (IOParameters, IOParameters),
    (UpdateParameters, UpdateParameters),
    (CrossbarConfig, CrossbarConfig),
    (lambda **kw: TileGrid(**{"out_features": 4, "in_features": 4, **kw}), TileGrid),
], ids=lambda v: getattr(v, "__name__", ""))
def test_every_field_rejects_invalid_values_naming_it(make, cls) -> None:
    assert walk_errors(cls, make) == []


@pytest.mark.parametrize("field", ["inp_res", "out_res", "inp_noise", "out_noise", "w_noise", "nm_thres", "out_scale",
                                   "max_bm_res"])
def test_io_values_beyond_float32_rejected(field: str) -> None:
    """E.g. ``out_scale = 1e300`` gave inf outputs and ``nm_thres = 1e300`` torch's "cannot be converted to type float
    without overflow"; the message names the field and its range."""
    with pytest.raises(ValueError, match=rf"^IOParameters\.{field} must be a finite number( >=? 0\.0)?, at most "
                                         rf"3\.4e\+38 in magnitude .*, got 1e\+300$"):
        IOParameters(**{field: 1e300})


@pytest.mark.parametrize("field", ["inp_bound", "out_bound"])
def test_io_bounds_infinite_or_within_float32(field: str) -> None:
    kwargs = {"noise_management": "none"}
    assert getattr(IOParameters(**kwargs, **{field: math.inf}), field) == math.inf       # unbounded: valid
    for value in (1e300, 1.8e38):
        with pytest.raises(ValueError, match=rf"^IOParameters\.{field} must be > 0 \(math\.inf for unbounded\) and, "
                                             rf"when finite, at most 1\.7e\+38 \(the converter's range 2 \* {field} "
                                             rf"must be a float32, the MVMs' type\), got {re.escape(repr(value))}$"):
            IOParameters(**kwargs, **{field: value})


_RANGE = r"at most 3\.4e\+38 in magnitude \(the largest float32, the simulator's tensors' type\)"


def test_io_range_message_states_the_lower_limit() -> None:
    """Whichever part of the range a value fails (finite, the lower limit), the message states all of it."""
    for field, value, valid in [("inp_noise", math.nan, ">= 0.0"), ("out_scale", math.inf, "> 0.0"),
                                ("inp_noise", -0.5, ">= 0.0"), ("out_scale", 0.0, "> 0.0"),
                                ("out_scale", True, "> 0.0"), ("inp_res", "0.5", "")]:
        with pytest.raises(ValueError, match=rf"^IOParameters\.{field} must be a finite number"
                                             rf"{re.escape((' ' + valid).rstrip())}, {_RANGE}, "
                                             rf"got {re.escape(repr(value))}$"):
            IOParameters(**{field: value})


@pytest.mark.parametrize("value", [1.1125369292536007e-308, 1e-300, 1e-39])
def test_nm_thres_below_float32_normal_rejected(value: float) -> None:
    """A positive ``nm_thres`` below float32's smallest normal number 1.18e-38 (hypothesis found 1.1e-308) made
    ``1/alpha`` overflow in the MVMs' float32: ``"constant"`` gave NaN outputs for every vector holding a zero (0·inf),
    ``"abs_max"`` silently all-zero outputs. Refused, naming the field and its range."""
    with pytest.raises(ValueError, match=rf"^IOParameters\.nm_thres must be 0 \(off\) or at least "
                                         rf"1\.17549435\d*e-38 \(float32's smallest normal number: 1/nm_thres must "
                                         rf"be a float32, the MVMs' type\), got {re.escape(repr(value))}$"):
        IOParameters(nm_thres=value)


@pytest.mark.parametrize("nm", ["constant", "abs_max"])
def test_smallest_nm_thres_gives_finite_outputs_in_float32(nm: str) -> None:
    """At the smallest accepted ``nm_thres`` (float32's smallest normal) every nonzero input, divided by it, saturates
    the DAC at ±1 (``|x| >= 0.05 ≫ 1.18e-38``) and a zero input stays 0: the output is ``tiny · W·sign(x)`` to within
    half an ADC step (24/510), finite — no 0·inf."""
    tiny = float(np.finfo(np.float32).tiny)
    p = IOParameters(noise_management=nm, nm_thres=tiny, out_noise=0.0)
    w = torch.tensor([[0.5, -0.25, 0.125], [-0.5, 0.3, 0.2]])
    x = torch.tensor([[0.3, 0.0, -0.05], [-1.0, 0.5, 0.0]])
    out = analog_mvm(w[None, None], x[:, None, :], p, torch.Generator().manual_seed(0)).out[:, 0]
    assert bool(torch.isfinite(out).all())
    expected = (x.sign() @ w.T).double()
    assert ((out.double() / tiny - expected).abs() <= 12 / 510 + 1e-6).all(), out / tiny


@pytest.mark.parametrize("field", ["inp_res", "out_res"])
@pytest.mark.parametrize("value", [1e-44, 1e-40, 1.1e-38])
def test_converter_res_below_float32_normal_rejected(field: str, value: float) -> None:
    """A positive resolution below float32's smallest normal number 1.18e-38: a value within the range divided by the
    grid step ``res·2·bound`` (up to ``1/(2·res)``) overflows float32 below 1.5e-39, so the converter read every value
    near its bound as saturated. Refused, naming the field and its range; 0 and negative values stay "no
    quantization"."""
    bound = "inp_bound" if field == "inp_res" else "out_bound"
    with pytest.raises(ValueError, match=rf"^IOParameters\.{field} must be <= 0 \(no quantization\) or at least "
                                         rf"1\.17549435\d*e-38 \(float32's smallest normal number: a value within the "
                                         rf"range divided by the grid step {field}·2·{bound}, up to 1/\(2·{field}\), "
                                         rf"must be a float32, the MVMs' type; {field} = N > 1 is a grid of N steps\), "
                                         rf"got {re.escape(repr(value))}$"):
        IOParameters(**{field: value})
    for off in (0.0, -1e-44, -1.0):
        assert getattr(IOParameters(**{field: off}), "inp_step" if field == "inp_res" else "out_step") == 0.0


def _without_validation(**fields: object) -> IOParameters:
    """An IOParameters with ``fields`` as accepted before their limits, without its validation."""
    p = IOParameters.__new__(IOParameters)
    object.__setattr__(p, "__dict__", {**IOParameters().__dict__, **fields})
    return p


def test_smallest_converter_res_quantizes_outputs_near_the_bound_exactly() -> None:
    """At the smallest accepted resolution (float32's smallest normal, step 24·1.18e-38 on the default ADC ±12) the
    outputs 11.5, -11.5 and 0.3 (each row a sum of exact products of the DAC's full-scale code 1) are read as they
    are, to float32's rounding of the quotient (likewise through the DAC); at 1e-44 (accepted before) 11.5/step
    overflowed to inf and read as saturated: bound management halved the input until the rescaled output was far off
    (2^k·12)."""
    tiny = float(np.finfo(np.float32).tiny)
    w = torch.tensor([[4.0, 4.0, 3.5], [-4.0, -4.0, -3.5], [0.25, 0.25, -0.2]])
    x = torch.ones(2, 1, 3)
    want = torch.tensor([11.5, -11.5, 0.3])
    for field in ("out_res", "inp_res"):
        p = IOParameters(**{"out_noise": 0.0, "out_res": 0.0, field: tiny})      # the other converter exact
        out = analog_mvm(w[None, None], x, p, torch.Generator().manual_seed(0)).out[0, 0]
        assert torch.allclose(out, want.expand(2, 3), rtol=1e-6, atol=0), (field, out)
    old = _without_validation(out_noise=0.0, out_res=1e-44)
    out = analog_mvm(w[None, None], x, old, torch.Generator().manual_seed(0)).out[0, 0]
    assert bool(torch.isfinite(out).all()) and not torch.allclose(out, want.expand(2, 3), rtol=1e-2), out


@pytest.mark.parametrize("bound,finite", [(torch.finfo(torch.float32).max / 2, True),
                                           (torch.finfo(torch.float32).max, False)])
def test_io_largest_bound_gives_finite_outputs(bound: float, finite: bool) -> None:
    """Why the bounds stop at half the largest float32: there the ADC's range ``2 * out_bound`` and its grid step are
    float32 numbers and the outputs finite; at the largest float32 (before, accepted) they overflow to NaN outputs."""
    p = IOParameters.__new__(IOParameters)          # the config as it was accepted before, without its validation
    object.__setattr__(p, "__dict__", {**IOParameters().__dict__, "out_bound": bound})
    if finite:
        assert IOParameters(out_bound=bound) == p
    g = torch.Generator().manual_seed(0)
    out = analog_mvm(torch.full((1, 1, 2, 3), 0.1), torch.ones(4, 1, 3), p, g).out
    assert bool(torch.isfinite(out).all()) is finite


@pytest.mark.parametrize("field,value", [("um_grad_scale", True), ("res", False), ("um_grad_scale", "1"),
                                         ("res", None), ("um_grad_scale", 1e300), ("res", 1e300),
                                         ("um_grad_scale", 0.0), ("res", -0.1), ("res", math.nan)])
def test_update_number_fields(field: str, value: object) -> None:
    """A bool counted as 1/0 and a string raised torch's "must be real number, not str" without the field's name."""
    with pytest.raises(ValueError, match=rf"^UpdateParameters\.{field} must be a finite number >=? 0, {_RANGE}, "
                                         rf"got {re.escape(repr(value))}$"):
        UpdateParameters(**{field: value})


def test_update_desired_bl_fits_int32() -> None:
    assert MAX_DESIRED_BL == torch.iinfo(torch.int32).max
    assert UpdateParameters(desired_bl=MAX_DESIRED_BL).desired_bl == 2**31 - 1
    with pytest.raises(ValueError, match=r"^UpdateParameters\.desired_bl must be an integer in \[1, 2\^31 - 1\] "
                                         r"\(the pulse counts are int32\), got 2147483648$"):
        UpdateParameters(desired_bl=2**31)
