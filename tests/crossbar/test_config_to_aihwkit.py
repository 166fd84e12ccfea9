"""Every field that ``crossbar.to_aihwkit_rpu_config`` maps, set to a non-default value, read back from the aihwkit
objects it builds (the config and the C++ tile), and the setting it refuses.

The MVM and update statistics of the mapped settings are compared in ``test_vs_aihwkit_mvm.py`` and
``test_update_vs_aihwkit.py``; here: that each field reaches the right aihwkit field with the right value and units,
in the right direction only, and that every device preset's sampled per-device parameters (bounds, steps, slopes)
are distributed as aihwkit's C++ tile draws them from the converted config.
"""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import devices
from crossbar import CrossbarConfig, IOParameters, TileArray, UpdateParameters, to_aihwkit_rpu_config

pytest.importorskip("aihwkit")

# field -> (our non-default value, the value aihwkit must hold: same units; enums by name)
IO_VALUES: dict[str, tuple[object, object]] = {
    "is_perfect": (True, True),
    "inp_bound": (2.0, 2.0),
    "inp_res": (1 / 62, 1 / 62),
    "inp_sto_round": (True, True),
    "inp_noise": (0.03, 0.03),
    "out_bound": (7.0, 7.0),
    "out_res": (1 / 126, 1 / 126),
    "out_sto_round": (True, True),
    "out_noise": (0.11, 0.11),
    "out_scale": (2.5, 2.5),
    "w_noise": (0.02, 0.02),
    "w_noise_type": ("additive_constant", "ADDITIVE_CONSTANT"),
    "noise_management": ("constant", "CONSTANT"),
    "nm_thres": (0.7, 0.7),
    "bound_management": ("none", "NONE"),
    "max_bm_factor": (64, 64),
    "max_bm_res": (0.5, 0.5),
    "bm_test_negative_bound": (False, False),
}
UNBOUNDED = {"inp_bound": (math.inf, 0.0), "out_bound": (math.inf, 0.0)}   # aihwkit's "<= 0: no bound"


def _aihwkit_value(obj: object, name: str) -> object:
    v = getattr(obj, name)
    return getattr(v, "name", v)


def test_every_io_field_has_a_case() -> None:
    assert set(IO_VALUES) == {f.name for f in dataclasses.fields(IOParameters)}


@pytest.mark.parametrize("direction", ["forward", "backward"])
@pytest.mark.parametrize("name,ours,theirs", [(k, *v) for k, v in IO_VALUES.items()]
                         + [(k, *v) for k, v in UNBOUNDED.items()])
def test_io_field_reaches_its_aihwkit_field(direction: str, name: str, ours: object, theirs: object) -> None:
    extra: dict[str, object] = {"noise_management": "none"} if name == "inp_bound" else {}  # inp_bound 1 with NM
    if name == "bm_test_negative_bound" and direction == "forward":
        extra["bound_management"] = "none"      # refused with iterative forward bound management (next test)
    io = IOParameters(**{name: ours}, **extra)
    rpu = to_aihwkit_rpu_config(CrossbarConfig(**{direction: io}))
    got = getattr(rpu, direction)
    assert _aihwkit_value(got, name) == theirs
    other = getattr(rpu, "backward" if direction == "forward" else "forward")
    default = _aihwkit_value(to_aihwkit_rpu_config(CrossbarConfig()).forward, name)
    assert _aihwkit_value(other, name) == default          # the other direction keeps the default
    for field in dataclasses.fields(IOParameters):         # and no other field of this direction moved
        if field.name not in (name, *extra):
            assert _aihwkit_value(got, field.name) == _aihwkit_value(other, field.name), field.name


def test_bm_test_negative_bound_false_is_refused_where_aihwkit_differs() -> None:
    with pytest.raises(ValueError, match="IOParameters.bm_test_negative_bound=False"):
        to_aihwkit_rpu_config(CrossbarConfig(forward=IOParameters(bm_test_negative_bound=False)))
    # where bound management does not act the field changes nothing: converted
    for io in (IOParameters(bm_test_negative_bound=False, bound_management="none"),
               IOParameters(bm_test_negative_bound=False, out_bound=math.inf),
               IOParameters(bm_test_negative_bound=False, is_perfect=True)):
        assert to_aihwkit_rpu_config(CrossbarConfig(forward=io)).forward.bm_test_negative_bound is False
    rpu = to_aihwkit_rpu_config(CrossbarConfig(backward=IOParameters(bm_test_negative_bound=False)))
    assert rpu.backward.bm_test_negative_bound is False


def test_aihwkit_bound_management_with_bm_test_negative_bound_false_is_not_ours() -> None:
    """Why the refusal: W = [[2], [-2]], x = [1], ADC range ±1, no noise or quantization. Ours repeats the pass
    (output 0 saturates at +1) with the input halved: [1, -1] lies within the range, times 2 gives [2, -2]. aihwkit
    lets output 1, saturated at -1, clear the repeat: it returns the clipped [1, -1] of the first pass."""
    device = devices.ConstantStepDevice(w_min=-3.0, w_max=3.0, w_min_dtod=0.0, w_max_dtod=0.0)
    io = IOParameters(out_bound=1.0, out_noise=0.0, inp_res=0.0, out_res=0.0, noise_management="none")
    cfg = CrossbarConfig(device=device, forward=dataclasses.replace(io, bm_test_negative_bound=False), backward=io,
                         tile_rows=2, tile_cols=1)
    w, x = torch.tensor([[2.0], [-2.0]]), torch.ones(1, 1)
    ours = TileArray(2, 1, cfg, seed=0)
    ours.program(w)
    torch.testing.assert_close(ours.forward(x), torch.tensor([[2.0, -2.0]]))
    rpu = to_aihwkit_rpu_config(dataclasses.replace(cfg, forward=io))
    rpu.forward.bm_test_negative_bound = False                   # what the converter refuses to build
    tile = rpu.tile_class(2, 1, rpu)
    tile.set_weights(w)
    with torch.no_grad():
        torch.testing.assert_close(tile.forward(x), torch.tensor([[1.0, -1.0]]))


UPDATE_VALUES: dict[str, tuple[object, object]] = {
    "desired_bl": (15, 15),
    "fixed_bl": (False, False),
    "update_bl_management": (False, False),
    "update_management": (False, False),
    "um_grad_scale": (0.5, 0.5),
    "pulse_type": ("stochastic", "STOCHASTIC"),
    "res": (0.05, 0.05),
    "sto_round": (True, True),
}


def test_every_update_field_has_a_case() -> None:
    assert set(UPDATE_VALUES) == {f.name for f in dataclasses.fields(UpdateParameters)}


@pytest.mark.parametrize("name,ours,theirs", [(k, *v) for k, v in UPDATE_VALUES.items()]
                         + [("pulse_type", "none", "NONE"), ("res", 20.0, 0.05)])   # res > 1: steps -> bin width
def test_update_field_reaches_its_aihwkit_field(name: str, ours: object, theirs: object) -> None:
    got = to_aihwkit_rpu_config(CrossbarConfig(update=UpdateParameters(**{name: ours}))).update
    default = to_aihwkit_rpu_config(CrossbarConfig()).update
    value = _aihwkit_value(got, name)
    assert value == (pytest.approx(theirs) if isinstance(theirs, float) else theirs)
    for field in dataclasses.fields(UpdateParameters):
        if field.name != name:
            assert _aihwkit_value(got, field.name) == _aihwkit_value(default, field.name), field.name


def test_tile_size_reaches_the_mapping_and_the_bias_stays_digital() -> None:
    mapping = to_aihwkit_rpu_config(CrossbarConfig(tile_rows=12, tile_cols=40)).mapping
    assert (mapping.max_output_size, mapping.max_input_size, mapping.digital_bias) == (12, 40, True)
    # no remapping of the weights and no learned output scales: aihwkit programs the weights as given, as here
    assert (mapping.weight_scaling_omega, mapping.learn_out_scaling) == (0.0, False)


N = 128
# aihwkit's hidden parameter -> ours (DeviceParams field or model-specific extra)
HIDDEN = {"max_bound": "w_max", "min_bound": "w_min", "dwmin_up": "dw_up", "dwmin_down": "dw_down",
          "slope_up": "slope_up", "slope_down": "slope_down"}


@pytest.mark.parametrize("preset", list(devices.PRESETS))
def test_preset_device_parameters_are_drawn_as_aihwkit_draws_them(preset: str) -> None:
    """The per-device parameters of a 128 x 128 tile: aihwkit's C++ tile (from the converted config) and ours draw
    them from the same distributions — quartiles within 5 % of the interquartile range (about 5 standard errors of
    the difference), or equal where the preset has no spread."""
    cfg = CrossbarConfig(device=devices.get_preset(preset), tile_rows=N, tile_cols=N)
    rpu = to_aihwkit_rpu_config(cfg)
    hidden = rpu.tile_class(N, N, rpu).get_hidden_parameters()
    params = TileArray(N, N, cfg, seed=1).params
    compared = 0
    q = torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)
    for theirs_name, ours_name in HIDDEN.items():
        if theirs_name not in hidden:
            continue
        ours_t = getattr(params, ours_name) if ours_name in params._CORE else params.extra[ours_name]
        a, b = hidden[theirs_name].double().flatten(), ours_t.double().flatten()
        qa, qb = torch.quantile(a, q), torch.quantile(b, q)
        iqr = float(qa[2] - qa[0])
        assert torch.allclose(qa, qb, rtol=0, atol=0.05 * iqr + 1e-7 * float(qa.abs().max())), \
            f"{preset} {theirs_name}: aihwkit quartiles {qa.tolist()}, ours ({ours_name}) {qb.tolist()}"
        compared += 1
    assert compared >= 4
