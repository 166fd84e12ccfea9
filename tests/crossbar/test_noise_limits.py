"""Training at the noise limits of the device fields (``tests/devices/test_noise_limits.py``): both engines' update
paths, on the CPU and sync-free, keep every state finite and within its bounds.

``dw_min_std = 1e38`` gave NaN states after one update of a constant-step tile array (26 of 65,536 on the sync-free
path): it is refused when the device is made; the largest accepted value, 1e19, trains without NaN. Likewise the
largest write noise the sampled bounds allow, and constant steps of 1e20 weight units (``n·dw²`` beyond float32).
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import warnings

import pytest
import torch

from crossbar import (AnalogConv2d, AnalogLinear, CrossbarConfig, IOParameters, MVMRangeError, ReplicaTileArray,
                      TileArray)
from crossbar.periphery import analog_mvm
from devices import rng
from devices.base import NORMAL_DRAW_MAX
from devices import (ConstantStepDevice, ExpStepDevice, LinearStepDevice, PowStepDevice, SoftBoundsDevice,
                     no_host_reads)
from devices.base import DW_MIN_STD_MAX

MODELS = [ConstantStepDevice, LinearStepDevice, SoftBoundsDevice, ExpStepDevice, PowStepDevice]


SMALL_DAC = IOParameters(noise_management="none", inp_bound=1e-6)
"""A periphery whose DAC range keeps the MVMs of bounds or apparent states near float32's largest (up to 2.7e39 for
write_noise_std 3e38, which the device refuses) finite on tiles of 128 lines: CrossbarConfig refuses a config whose MVM
can overflow. The updates these tests make do not use the periphery (same numbers)."""


def _build(engine: str, device, io: IOParameters | None = None) -> TileArray | ReplicaTileArray:
    periphery = {} if io is None else {"forward": io, "backward": io}
    cfg = CrossbarConfig(device=device, tile_rows=128, tile_cols=128, **periphery)
    arr = TileArray(256, 256, cfg, seed=0) if engine == "tiles" else ReplicaTileArray([1, 2], 256, 256, cfg)
    lead = () if engine == "tiles" else (2,)
    arr.program(torch.rand(*lead, 256, 256, generator=torch.Generator().manual_seed(1)) * 0.4 - 0.2)
    return arr


def _update(arr, engine: str, sync_free: bool, lr: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    lead = () if engine == "tiles" else (2,)
    x, d = torch.randn(*lead, 8, 256, generator=g), torch.randn(*lead, 8, 256, generator=g) * 0.3
    with no_host_reads() if sync_free else contextlib.nullcontext():
        arr.update(x, d, lr)


def _bounded(arr) -> bool:
    p = arr.params
    w = arr.weight_tiles
    return bool(torch.isfinite(w).all() and (w >= p.w_min).all() and (w <= p.w_max).all())


@pytest.mark.parametrize("engine", ["tiles", "replicas"])
@pytest.mark.parametrize("sync_free", [False, True], ids=["cpu", "sync-free"])
@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.__name__)
def test_the_largest_dw_min_std_trains_without_nan(cls, engine, sync_free):
    with pytest.raises(ValueError, match=rf"^{cls.__name__}\.dw_min_std must be >= 0 and at most 1e\+19"):
        cls(dw_min_std=1e38)
    arr = _build(engine, cls(dw_min_std=DW_MIN_STD_MAX))
    before = arr.weight_tiles.clone()
    _update(arr, engine, sync_free, 1e-4, 0)                 # few pulses: most devices idle
    assert _bounded(arr)
    changed = int((arr.weight_tiles != before).sum())
    assert 0 < changed <= int(arr.counter_pulses) < 0.5 * before.numel()   # a device changes only with a pulse


@pytest.mark.parametrize("engine", ["tiles", "replicas"])
@pytest.mark.parametrize("sync_free", [False, True], ids=["cpu", "sync-free"])
def test_constant_steps_beyond_1e19_train_without_nan(engine, sync_free):
    dev = ConstantStepDevice(dw_min=1e20, w_min=-1e38, w_max=1e38, dw_min_dtod=0.0, up_down_dtod=0.0,
                             w_min_dtod=0.0, w_max_dtod=0.0)
    arr = _build(engine, dev, SMALL_DAC)
    for step in range(3):
        _update(arr, engine, sync_free, 1e21, step)          # lr·x·d / dw_min: a few pulses per device
        assert _bounded(arr)
    assert int(arr.counter_pulses) > 0 and float(arr.weight_tiles.abs().max()) >= 1e20


@pytest.mark.parametrize("engine", ["tiles", "replicas"])
@pytest.mark.parametrize("sync_free", [False, True], ids=["cpu", "sync-free"])
def test_write_noise_at_its_limit_trains_with_finite_apparent_states(engine, sync_free):
    with pytest.raises(ValueError, match=r"^ConstantStepDevice\.write_noise_std must be at most 3\.7\d*e\+37 "):
        _build(engine, ConstantStepDevice(dw_min=1.0, write_noise_std=3e38), SMALL_DAC)
    arr = _build(engine, ConstantStepDevice(dw_min=1.0, write_noise_std=3.7e37), SMALL_DAC)
    for step in range(3):
        _update(arr, engine, sync_free, 10.0, step)
        assert _bounded(arr) and torch.isfinite(arr.apparent_tiles).all()
    assert float(arr.apparent_tiles.abs().max()) > 1e37


# ---------------------------------------------------------------------------------------------- the MVM's range
# The worst case of a forward MVM on tiles of n columns, by hand (analog_mvm's steps; D = NORMAL_DRAW_MAX = 9 bounds
# every normal draw; the default device's largest |state| W = 0.6·(1 + 9·0.3) = 2.22, its sampled bounds' limit):
# DAC outputs X = 1 + D·inp_noise, products n·W·X, with additive weight noise the squared norm n·X² (torch's
# vector_norm sums the squares) and the noise D·w_noise·sqrt(n)·X, analog outputs products + weight noise + D·out_noise.
# CrossbarConfig allows each (n + 16)·2^-24 of float32's largest for float32's rounding.
F32_MAX = float(torch.finfo(torch.float32).max)
W_DEFAULT = 0.6 * (1 + 9 * 0.3)


def _room(n: int) -> float:
    return F32_MAX / (1 + (n + 16) * 2.0 ** -24)


def _shown(limit: float) -> float:
    """A limit as the messages show it: 4 digits, below it."""
    return float(f"{limit * (1 - 5e-4):.4g}")


LIMITS = {   # field, other periphery fields, n -> the largest value, by hand
    "inp_noise": ({}, lambda n: ((_room(n) - 9 * 0.06) / (n * W_DEFAULT) - 1) / 9),
    "inp_noise+w_noise": ({"w_noise": 0.1, "w_noise_type": "additive_constant"},
                          lambda n: ((_room(n) / n) ** 0.5 - 1) / 9),          # the squared norm binds first
    "out_noise": ({"out_bound": math.inf}, lambda n: (_room(n) - n * W_DEFAULT) / 9),
}


def _extreme_draws(monkeypatch) -> None:
    """Every normal draw of the periphery at +NORMAL_DRAW_MAX: the worst case, made real."""
    monkeypatch.setattr(rng, "add_normal", lambda v, std, generator: v + std * NORMAL_DRAW_MAX)
    monkeypatch.setattr(rng, "randn", lambda shape, generator, device=None, dtype=None:
                        torch.full(tuple(shape), NORMAL_DRAW_MAX, device=device, dtype=dtype))


@pytest.mark.parametrize("n", [256, 1024])
@pytest.mark.parametrize("case", list(LIMITS))
def test_at_the_derived_limit_the_worst_case_mvm_is_finite_and_just_above_it_is_refused(case, n, monkeypatch):
    """inp_noise 1e38 on tiles of 256 columns gave NaN outputs, 3e37 on 1024; out_noise 3.7e37 with an unbounded ADC
    infinite ones. The limit, by hand, of each field on tiles of n columns: at the value the message shows, the MVM
    with every weight at W, every input at full scale and every draw at +9 is finite (and its largest output near
    float32's largest: the bound is tight); 0.1 % above, that MVM overflows and CrossbarConfig refuses the value."""
    field = case.split("+")[0]
    others, limit = LIMITS[case]
    shown = _shown(limit(n))
    io = IOParameters(**{"out_noise": 0.06, **others, field: shown})
    CrossbarConfig(forward=io, tile_cols=n)                                     # accepted
    above = dataclasses.replace(io, **{field: limit(n) * 1.001})
    with pytest.raises(ValueError, match=rf"^CrossbarConfig\.forward\.{field} must be at most "
                                         rf"{re.escape(f'{shown:.4g}')} with CrossbarConfig\.tile_cols = {n}, "):
        CrossbarConfig(forward=above, tile_cols=n)
    _extreme_draws(monkeypatch)
    w = torch.full((1, 1, 4, n), W_DEFAULT)
    x = torch.ones(1, 1, n)
    out = analog_mvm(w, x, dataclasses.replace(io, out_bound=math.inf), torch.Generator()).out
    assert bool(torch.isfinite(out).all()), out
    if "w_noise" in others:     # the squared norm of the noisy inputs is the largest intermediate
        dac = torch.full((n,), 1 + NORMAL_DRAW_MAX * shown)
        assert 0.99 * F32_MAX < float(dac.square().sum()) < F32_MAX
    else:
        assert float(out.max()) > 0.99 * F32_MAX, out
    out = analog_mvm(w, x, dataclasses.replace(above, out_bound=math.inf), torch.Generator()).out
    assert not bool(torch.isfinite(out).any()), out


def test_the_refusal_names_every_field_with_its_value() -> None:
    """The exact message of inp_noise 1e38 on tiles of 1024 columns of the default device: the limit (by hand:
    ((3.4028e38/(1 + 1040·2^-24) - 0.54)/(1024·2.22) - 1)/9 = 1.6631e34, shown 1.662e+34), the fields that take part
    with their values, and what overflows."""
    with pytest.raises(ValueError) as info:
        CrossbarConfig(forward=IOParameters(inp_noise=1e38), tile_cols=1024)
    assert str(info.value) == (
        "CrossbarConfig.forward.inp_noise must be at most 1.662e+34 with CrossbarConfig.tile_cols = 1024, "
        "CrossbarConfig.forward: inp_bound = 1.0, inp_noise = 1e+38, w_noise_type = 'none', w_noise = 0.0, "
        "out_noise = 0.06, out_bound = 12.0, out_res = 0.00196078431372549, out_scale = 1.0, noise_management = "
        "'abs_max', nm_thres = 0.0, max_bm_factor = 1000, and the device's largest |state| 2.22 (ConstantStepDevice: "
        "w_min = -0.6, w_max = 0.6, w_min_dtod = 0.3, w_max_dtod = 0.3, write_noise_std = 0.0, dw_min = 0.001), got "
        "1e+38: the forward MVM must stay finite in float32 (largest 3.403e+38) for inputs of magnitude at most 1 and "
        "weights within the device's sampled bounds (every normal draw |ξ| < 9), but its DAC outputs can reach 9e+38 "
        "(crossbar.periphery.mvm_extremes). Realistic values: noise stds of 0 to ~1 in normalized units (aihwkit's "
        "out_noise 0.06), out_scale ~1, device bounds of order 1 and tiles of up to a few thousand lines")
    assert _shown(LIMITS["inp_noise"][1](1024)) == 1.662e34


def test_the_limit_is_that_of_the_field_farthest_from_realistic_and_replace_checks_again() -> None:
    """Backward (tiles of tile_rows input lines), unbounded ADC: out_noise 1e36 (analog outputs up to 9e36) rescaled
    by out_scale 1e3 overflows; out_noise is the farther beyond its realistic scale (1), so its limit is stated:
    (3.4028e38/(1 + 272·2^-24)/1e3 - 256·2.22)/9 = 3.781e34, shown 3.779e+34. A device whose bounds alone overflow
    the products names its largest |state|. ``replace`` checks as the constructor."""
    io = IOParameters(out_noise=1e36, out_scale=1e3, out_bound=math.inf)
    with pytest.raises(ValueError, match=r"^CrossbarConfig\.backward\.out_noise must be at most 3\.779e\+34 with "
                                         r"CrossbarConfig\.tile_rows = 256, .*, got 1e\+36: the backward MVM .* its "
                                         r"digital outputs can reach 9e\+39"):
        CrossbarConfig(backward=io)
    assert _shown((F32_MAX / (1 + 272 * 2.0 ** -24) / 1e3 - 256 * W_DEFAULT) / 9) == 3.779e34
    big = ConstantStepDevice(dw_min=1.0, w_min=-1e37, w_max=1e37, w_min_dtod=0.0, w_max_dtod=0.0)
    with pytest.raises(ValueError, match=r"^the device's largest \|state\| must be at most 1\.329e\+36 with "
                                         r"CrossbarConfig\.tile_cols = 256, .*\(ConstantStepDevice: w_min = -1e\+37, "
                                         r"w_max = 1e\+37, .*got 1e\+37: .* its products can reach 2\.56e\+39"):
        CrossbarConfig(device=big)
    assert _shown(F32_MAX / (1 + 272 * 2.0 ** -24) / 256) == 1.329e36     # inputs at full scale 1, no input noise
    cfg = CrossbarConfig(forward=IOParameters(inp_noise=1e34), tile_cols=64)            # 64·2.22·9e34 = 1.3e37
    with pytest.raises(ValueError, match=r"^CrossbarConfig\.forward\.inp_noise must be at most .* with "
                                         r"CrossbarConfig\.tile_cols = 8192, "):
        cfg.replace(tile_cols=8192)


def test_presets_examples_and_the_cli_configs_are_accepted() -> None:
    """Every preset on tiles of 4 to 4096 lines, the ideal device and periphery, the example's and the command
    line's configs (imc_grapes.backends.hardware), with realistic noise: far from the limits."""
    from devices import IdealDevice, get_preset
    from devices.presets import PRESETS
    from imc_grapes.backends.hardware import crossbar_config_from
    from imc_grapes.config import AnalogSettings

    noisy = IOParameters(inp_noise=0.1, w_noise=0.1, w_noise_type="additive_constant", out_noise=0.1)
    for name in PRESETS:
        for size in (4, 256, 4096):
            CrossbarConfig(device=get_preset(name), forward=noisy, backward=noisy, tile_rows=size, tile_cols=size)
        with warnings.catch_warnings():      # PCM's unidirectional-device warning: not what this test is about
            warnings.filterwarnings("ignore", message="analog device .* is unidirectional")
            crossbar_config_from(AnalogSettings(preset=name))
    CrossbarConfig(device=IdealDevice(), tile_rows=4096, tile_cols=4096)
    CrossbarConfig.perfect(IdealDevice())
    example = IOParameters(inp_res=1 / 126, out_res=1 / 510, out_noise=0.06)          # examples/analog_layer_grapes
    CrossbarConfig(device=get_preset("ReRamSB"), forward=example, backward=example, tile_rows=128, tile_cols=128)


def _sum_config(**io) -> CrossbarConfig:
    """Tiles of one line, a device of bounds exactly ±1 (no spread, no write noise: largest |state| 1) and perfect
    peripheries, ``io``: the forward / backward ``out_scale``."""
    device = ConstantStepDevice(w_min=-1.0, w_max=1.0, w_min_dtod=0.0, w_max_dtod=0.0, write_noise_std=0.0)
    return CrossbarConfig(device=device, forward=IOParameters(is_perfect=True, out_scale=io.get("forward", 1.0)),
                          backward=IOParameters(is_perfect=True, out_scale=io.get("backward", 1.0)),
                          tile_rows=1, tile_cols=1)


def test_a_layer_whose_digital_sum_over_its_tiles_overflows_is_refused_when_it_is_made() -> None:
    """By hand: a perfect periphery of out_scale 1e38 on tiles of one line, weights at most 1: each tile's output is at
    most 1·1·1e38 = 1e38, which CrossbarConfig accepts (≤ 3.4028e38). The digital sum of 3 tiles, 3e38, fits; of 4,
    4e38, is float32's inf (shown), so 4 column tiles (in_features 4) are refused naming the layer's in_features,
    tile_cols and the limit 3; the backward direction likewise for the row tiles (out_features, tile_rows); a
    TileArray made directly is named as itself."""
    cfg = _sum_config(forward=1e38)
    assert torch.isinf(torch.full((4,), 1e38).sum()) and torch.isfinite(torch.full((3,), 1e38).sum())
    layer = AnalogLinear(3, 2, bias=False, rpu_config=cfg, seed=0)                 # 3 column tiles: accepted
    layer.set_weights(torch.ones(2, 3))
    y = layer(torch.ones(1, 3))
    assert torch.isfinite(y).all() and torch.allclose(y, torch.full((1, 2), 3e38), rtol=1e-6)
    with pytest.raises(MVMRangeError, match=r"^AnalogLinear\.in_features must be at most 3 with CrossbarConfig\."
                                            r"tile_cols = 1 \(at most 3 column tiles\), got 4 \(4 column tiles\): the "
                                            r"forward "
                                            r"MVM adds .* each up to 1e\+38 .* can reach 4e\+38, beyond float32's "
                                            r"largest 3\.403e\+38") as info:
        AnalogLinear(4, 2, rpu_config=cfg, seed=0)
    assert info.value.quantity == "tiles"
    with pytest.raises(MVMRangeError, match=r"^ReplicaTileArray\.in_features must be at most 3 .* got 4"):
        ReplicaTileArray([1, 2], 2, 4, cfg)
    with pytest.raises(MVMRangeError, match=r"^TileArray\.in_features must be at most 3 .* got 4"):
        TileArray(2, 4, cfg)
    back = _sum_config(backward=1e38)
    AnalogLinear(7, 3, rpu_config=back, seed=0)                                  # 3 row tiles: accepted
    with pytest.raises(MVMRangeError, match=r"^AnalogLinear\.out_features must be at most 3 with CrossbarConfig\."
                                            r"tile_rows = 1 \(at most 3 row tiles\), got 5 \(5 row tiles\): the "
                                            r"backward MVM"):
        AnalogLinear(2, 5, rpu_config=back, seed=0)


def test_a_conv_layer_refused_for_its_tile_sum_names_its_channels_and_kernel() -> None:
    """The columns of a conv layer's matrix are in_channels·kh·kw, a size the user never gave: the refusal names
    in_channels and kernel_size (with their product), and out_channels for the rows. By hand, as for AnalogLinear
    above (out_scale 1e38, tiles of one line: at most 3 tiles): 1 channel and a 2×2 kernel are 4 column tiles,
    refused; 3 channels and a 1×1 kernel, or 1 channel and a 1×3 kernel, are 3, accepted; 5 output channels with
    out_scale 1e38 backward are 5 row tiles, refused."""
    cfg = _sum_config(forward=1e38)
    AnalogConv2d(3, 2, 1, rpu_config=cfg, seed=0)
    AnalogConv2d(1, 2, (1, 3), rpu_config=cfg, seed=0)
    with pytest.raises(MVMRangeError, match=r"^AnalogConv2d\.in_channels·kernel_size \(in_channels 1 × kernel_size "
                                            r"2×2: the columns of its weight matrix\) must be at most 3 with "
                                            r"CrossbarConfig\.tile_cols = 1 \(at most 3 column tiles\), got 4 \(4 "
                                            r"column tiles\): the forward MVM") as info:
        AnalogConv2d(1, 2, 2, rpu_config=cfg, seed=0)
    assert info.value.quantity == "tiles"
    back = _sum_config(backward=1e38)
    AnalogConv2d(2, 3, 1, rpu_config=back, seed=0)
    with pytest.raises(MVMRangeError, match=r"^AnalogConv2d\.out_channels must be at most 3 with CrossbarConfig\."
                                            r"tile_rows = 1 \(at most 3 row tiles\), got 5 \(5 row tiles\): the "
                                            r"backward MVM"):
        AnalogConv2d(2, 5, 1, rpu_config=back, seed=0)


def test_realistic_layers_are_far_from_the_tile_sum_limit() -> None:
    """aihwkit's default periphery bounds each tile's digital output by out_bound·2^(rounds-1)·out_scale: a layer of
    many tiles (here 64 column and 64 row tiles of 4 lines) is accepted."""
    TileArray(256, 256, CrossbarConfig(tile_rows=4, tile_cols=4), seed=0)
