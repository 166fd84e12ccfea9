"""TileArray: program/read, MVMs on grids, updates, row/column sums, counters, state and devices."""

from __future__ import annotations

import copy
import dataclasses
import io
import math
import pickle

import numpy as np
import pytest
import torch

from torch import nn

from crossbar import (AnalogConv2d, AnalogLinear, CrossbarConfig, IOParameters, ReplicaTileArray, TileArray,
                      UpdateParameters)
from crossbar.periphery import bound_management_rounds
from devices import ConstantStepDevice, IdealDevice, get_preset

from .update_paths import CPU_PATHS, force_cpu_path

F64 = torch.float64


def perfect(device=None, **kw) -> CrossbarConfig:
    return CrossbarConfig.perfect(device=device or IdealDevice(), **kw)


def test_program_read_round_trip_and_clipping() -> None:
    dev = ConstantStepDevice()                                     # bounds ~ +-0.6 with 30 % spread
    arr = TileArray(20, 30, CrossbarConfig(device=dev, tile_rows=8, tile_cols=16), seed=3)
    w = torch.rand(20, 30) * 0.2 - 0.1
    arr.program(w)
    lo, hi = arr.grid.from_tiles(arr.params.w_min), arr.grid.from_tiles(arr.params.w_max)
    inside = (w >= lo) & (w <= hi)
    assert inside.float().mean() > 0.98
    assert torch.equal(arr.read()[inside], w[inside])
    assert torch.equal(arr.read()[~inside], torch.where(w > hi, hi, lo)[~inside])
    big = torch.full((20, 30), 5.0)
    arr.program(big)
    w_max = arr.grid.from_tiles(arr.params.w_max)
    assert torch.equal(arr.read(), w_max)                          # clipped to each device's own bound
    assert w_max.std() > 0.05                                      # the bounds really differ per device


def test_update_none_is_exact_float_sgd_on_a_grid() -> None:
    cfg = perfect(update=UpdateParameters(pulse_type="none"), tile_rows=4, tile_cols=8)
    arr = TileArray(10, 19, cfg, dtype=F64, seed=0)
    w = torch.randn(10, 19, dtype=F64)
    arr.program(w)
    x = torch.randn(5, 19, dtype=F64)
    d = torch.randn(5, 10, dtype=F64)
    arr.update(x, d, 0.1)
    expected = w.numpy() - 0.1 * d.numpy().T @ x.numpy()           # numpy reference
    torch.testing.assert_close(arr.read(), torch.from_numpy(expected), rtol=1e-12, atol=1e-12)
    assert (arr.weight_tiles[arr.grid.tile_mask() == 0] == 0).all()  # padding untouched


def test_pulsed_update_expected_change_and_granularity() -> None:
    dw = 0.001
    cfg = perfect(device=IdealDevice(dw_min=dw), tile_rows=8, tile_cols=8)
    torch.manual_seed(0)
    x = torch.rand(4, 12) * 0.5 + 0.25
    d = (torch.rand(4, 10) * 0.5 + 0.25) * torch.sign(torch.randn(1, 10))
    lr = 0.01
    expected = -lr * d.T @ x                                        # [10, 12], |.| up to ~0.04
    deltas = []
    for seed in range(40):
        arr = TileArray(10, 12, cfg, dtype=F64, seed=seed)
        arr.program(torch.zeros(10, 12))
        arr.update(x, d, lr)
        delta = arr.read()
        steps = delta / dw
        assert torch.allclose(steps, steps.round(), atol=1e-9)     # whole pulses of an ideal device
        pulses = int(arr.counters["pulses"])
        assert pulses >= int(steps.abs().sum().round())            # net steps <= pulses fired
        deltas.append(delta)
        assert (arr.weight_tiles[arr.grid.tile_mask() == 0] == 0).all()
    mean = torch.stack(deltas).mean(0)
    # the stochastic update is unbiased while no probability is capped (k = lr*max|x|*max|d|/dw < 31)
    err = (mean - expected.to(F64)).abs()
    assert err.max() < 4 * math.sqrt(expected.abs().max() * dw / 40) + 1e-4
    assert torch.corrcoef(torch.stack([mean.flatten(), expected.flatten().to(F64)]))[0, 1] > 0.98


def test_pulsed_update_respects_device_bounds() -> None:
    cfg = CrossbarConfig(device=ConstantStepDevice(dw_min=0.05, w_min_dtod=0.0, w_max_dtod=0.0), tile_rows=4,
                         tile_cols=4)
    arr = TileArray(6, 6, cfg, seed=2)
    arr.program(torch.full((6, 6), 0.55))
    for _ in range(5):
        arr.update(torch.ones(8, 6), -torch.ones(8, 6), 1.0)   # push every weight up, far past w_max
    w = arr.read()
    assert (w <= 0.6 + 1e-6).all() and (w > 0.5).all()


def test_row_and_col_sums_exact_and_perfect_hardware() -> None:
    arr = TileArray(11, 23, perfect(tile_rows=4, tile_cols=8), dtype=F64, seed=0)
    w = torch.randn(11, 23, dtype=F64)
    arr.program(w)
    wn = w.numpy()
    torch.testing.assert_close(arr.row_sums(), torch.from_numpy(abs(wn).sum(1)))
    torch.testing.assert_close(arr.col_sums(), torch.from_numpy(abs(wn).sum(0)))
    torch.testing.assert_close(arr.row_sums(signed=True), torch.from_numpy(wn.sum(1)))
    # perfect periphery: the all-ones read gives the same numbers
    torch.testing.assert_close(arr.row_sums("hardware", signed=True), torch.from_numpy(wn.sum(1)))
    torch.testing.assert_close(arr.row_sums("hardware"), torch.from_numpy(abs(wn).sum(1)))
    torch.testing.assert_close(arr.col_sums("hardware"), torch.from_numpy(abs(wn).sum(0)))
    torch.testing.assert_close(arr.row_sums("hardware", g_offset=0.1), torch.from_numpy(abs(wn).sum(1) + 0.2 * 23))
    torch.testing.assert_close(arr.col_sums("exact", g_offset=0.1), torch.from_numpy(abs(wn).sum(0) + 0.2 * 11))
    assert int(arr.counters["importance_reads"]) == 4
    with pytest.raises(ValueError, match="mode"):
        arr.row_sums("analog")


def test_exact_sums_see_the_apparent_states_and_ignore_padding() -> None:
    """With write noise the MVMs see the apparent states, padding included after programming (its noise is drawn
    too): exact sums are those of the logical (read) matrix, padding left out, per tile then added."""
    from devices import get_preset
    arr = TileArray(11, 23, CrossbarConfig(device=get_preset("ReRamSB"), tile_rows=4, tile_cols=8), dtype=F64, seed=3)
    arr.program(torch.randn(11, 23, dtype=F64, generator=torch.Generator().manual_seed(1)) * 0.3)
    assert arr.has_write_noise and float(arr.apparent_tiles.abs().sum()) > float(arr.read().abs().sum())   # padding
    wn = arr.read().numpy()                                        # the apparent logical matrix
    torch.testing.assert_close(arr.row_sums(), torch.from_numpy(abs(wn).sum(1)))
    torch.testing.assert_close(arr.col_sums(), torch.from_numpy(abs(wn).sum(0)))
    torch.testing.assert_close(arr.row_sums(signed=True), torch.from_numpy(wn.sum(1)))
    torch.testing.assert_close(arr.col_sums(signed=True, g_offset=0.1), torch.from_numpy(wn.sum(0)))
    torch.testing.assert_close(arr.row_sums(g_offset=0.05), torch.from_numpy(abs(wn).sum(1) + 0.1 * 23))


def test_hardware_row_sums_carry_periphery_effects() -> None:
    # default periphery (7-bit DAC, 9-bit ADC, out_noise 0.06, bound 12, iterative BM forward only)
    cfg = CrossbarConfig(device=IdealDevice(), tile_rows=64, tile_cols=40)
    arr = TileArray(64, 40, cfg, dtype=F64, seed=0)
    w = torch.rand(64, 40, dtype=F64, generator=torch.Generator().manual_seed(4)) * 0.1   # row sums ~ 2 (in range)
    arr.program(w)
    exact = arr.row_sums()
    reads = torch.stack([arr.row_sums("hardware") for _ in range(200)])
    err = reads - exact
    assert abs(err.mean().item()) < 0.01
    assert 0.04 < err.std().item() < 0.08                          # ADC noise 0.06 (+ quantization 0.047/sqrt(12))
    steps = reads / cfg.forward.out_step                           # 24/510 in float32, as aihwkit
    assert (steps - steps.round()).abs().max() < 1e-6              # on the ADC grid
    # rows summing to 20 > out_bound: bound management re-reads the whole tile at input 1/2, which the 7-bit
    # DAC turns into 31 steps = 0.4921 (1/2 is 31.4999988 steps of aihwkit's float32 step 2/126 = 0.015873017,
    # not the tie 31.5): every row of the tile reads exact * 2 * 0.4921 (hand-computed)
    w[:8] = 0.5
    arr.program(w)
    reads = torch.stack([arr.row_sums("hardware") for _ in range(200)])
    step = cfg.forward.inp_step
    assert round(0.5 / step) == 31
    gain = 2 * 31 * step
    assert (reads.mean(0) - arr.row_sums() * gain).abs().max() < 0.045       # ~4 SE (noise 0.12 at r = 2)
    assert (reads[:, :8] - 20.0).abs().max() < 1.0                 # recovered, not clipped at 12
    # the backward periphery has no bound management: column sums above out_bound saturate
    cols = TileArray(40, 64, CrossbarConfig(device=IdealDevice(), tile_rows=40, tile_cols=64), dtype=F64, seed=1)
    cols.program(w.T.contiguous())
    col_read = cols.col_sums("hardware")
    assert torch.all(col_read[:8] == 12.0)


def test_counters_count_hardware_work_without_host_sync() -> None:
    cfg = CrossbarConfig(device=IdealDevice(), forward=IOParameters(bound_management="none"), tile_rows=8,
                         tile_cols=16)
    arr = TileArray(20, 40, cfg, seed=0)                           # 3 x 3 tiles of 8 x 16, 7 x 14 in use
    arr.forward(torch.randn(5, 40))
    c = arr.counters
    assert all(isinstance(v, torch.Tensor) and v.dtype == torch.int64 for v in c.values())
    assert int(c["forward_mvms"]) == 5 and int(c["forward_passes"]) == 5 * 9
    # logical lines only (21 x 42 padded to 20 x 40): each of the 3 tile rows converts 20 outputs, drives 40 inputs
    assert int(c["adc_conversions"]) == 5 * 3 * 20 and int(c["dac_conversions"]) == 5 * 3 * 40
    arr.backward(torch.randn(2, 20))
    assert int(c["backward_mvms"]) == 2 and int(c["backward_passes"]) == 2 * 9
    assert int(c["adc_conversions"]) == 5 * 3 * 20 + 2 * 3 * 40
    arr.update(torch.randn(3, 40), torch.randn(3, 20) * 0.1, 0.1)
    assert int(c["updates"]) == 1 and int(c["pulses"]) > 0
    arr.reset_counters()
    assert all(int(v) == 0 for v in arr.counters.values())
    # bound management repeats passes; counted per tile and vector
    bm = TileArray(4, 16, CrossbarConfig(device=IdealDevice(), tile_rows=4, tile_cols=16), seed=0)
    bm.program(torch.full((4, 16), 1.0))                           # y = 16 > 12 -> 2 passes
    bm.forward(torch.ones(3, 16))
    assert int(bm.counters["forward_passes"]) == 3 * 2


def test_conversions_count_the_logical_lines_not_the_grid_padding() -> None:
    """A 5 x 5 matrix on 4 x 4 tiles is a 2 x 2 grid of 3 x 3 tiles, the last row and column block padded by one
    line (logical lines per block: 3 and 2). A pass of tile (r, c) drives its logical inputs and converts its
    logical outputs only, as aihwkit's uneven 3 + 2 split does. By hand (W = 1, x = 1, forward ADC bound 2.5, so
    bound management repeats the passes of the 3-column blocks, 3 > 2.5, not those of the 2-column blocks):

    * forward, B = 3: passes per vector 2 on tiles (0, 0), (1, 0), 1 on (0, 1), (1, 1): 6, 18 in all;
      DAC Σ passes × columns = 3·(2·3 + 1·2 + 2·3 + 1·2) = 48, ADC Σ passes × rows = 3·((2 + 1)·3 + (2 + 1)·2)
      = 45 (before: every pass counted 3 lines, 54 and 54);
    * backward, B = 2 (one pass each): DAC 2·(2 tile columns)·5 rows = 20, ADC 2·(2 tile rows)·5 columns = 20
      (before: 2·4·3 = 24 each);
    * hardware row sums (forward periphery, the same passes as one forward vector): DAC 16, ADC 15 (before 18, 18);
      column sums (backward): DAC 10, ADC 10 (before 12, 12);
    * replicas count each replica's lines: E = 2 replicas count twice the forward of one.
    """
    cfg = CrossbarConfig(device=IdealDevice(), forward=IOParameters(out_bound=2.5, out_noise=0.0),
                         backward=IOParameters(out_noise=0.0), tile_rows=4, tile_cols=4)
    arr = TileArray(5, 5, cfg, seed=0)
    arr.program(torch.ones(5, 5))

    def counts(run) -> tuple[int, int, int]:
        arr.reset_counters()
        run()
        c = arr.counters
        return int(c["forward_passes"] + c["backward_passes"]), int(c["dac_conversions"]), int(c["adc_conversions"])

    assert counts(lambda: arr.forward(torch.ones(3, 5))) == (18, 48, 45)
    assert counts(lambda: arr.backward(torch.ones(2, 5))) == (8, 20, 20)
    assert counts(lambda: arr.row_sums("hardware")) == (0, 16, 15)
    assert counts(lambda: arr.col_sums("hardware")) == (0, 10, 10)
    rep = ReplicaTileArray([1, 2], 5, 5, cfg)
    rep.program(torch.ones(2, 5, 5))
    rep.forward(torch.ones(2, 3, 5))
    assert (int(rep.counters["forward_passes"]), int(rep.counters["dac_conversions"]),
            int(rep.counters["adc_conversions"])) == (2 * 18, 2 * 48, 2 * 45)
    rep.reset_counters()
    rep.backward(torch.ones(2, 2, 5))
    assert (int(rep.counters["dac_conversions"]), int(rep.counters["adc_conversions"])) == (2 * 20, 2 * 20)
    rep.reset_counters()
    rep.row_sums("hardware")
    assert (int(rep.counters["dac_conversions"]), int(rep.counters["adc_conversions"])) == (2 * 16, 2 * 15)


def test_state_dict_round_trip_restores_states_params_counters_and_noise() -> None:
    cfg = CrossbarConfig(tile_rows=8, tile_cols=8)
    a = TileArray(12, 10, cfg, seed=1)
    a.program(torch.rand(12, 10) * 0.2 - 0.1)
    a.update(torch.randn(4, 10), torch.randn(4, 12) * 0.1, 0.05)
    a.forward(torch.randn(3, 10))
    b = TileArray(12, 10, cfg, seed=99)
    assert not torch.equal(a.params.dw_up, b.params.dw_up)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b.load_state_dict(torch.load(buf, weights_only=False))
    assert torch.equal(a.read(), b.read())
    for key, value in a.params.state_dict().items():
        assert torch.equal(value, b.params.state_dict()[key])
    assert all(int(a.counters[k]) == int(b.counters[k]) for k in a.counters)
    x = torch.randn(6, 10)
    assert torch.equal(a.forward(x), b.forward(x))                 # generator state restored too
    d = torch.randn(6, 12) * 0.1
    a.update(x, d, 0.05)
    b.update(x, d, 0.05)
    assert torch.equal(a.read(), b.read())                         # same pulses and device noise


def _layer(device, seed: int = 0, **config) -> AnalogLinear:
    return AnalogLinear(6, 5, bias=False, rpu_config=CrossbarConfig(device=device, tile_rows=4, tile_cols=4, **config),
                        seed=seed)


_ADVICE = ("; its sampled device-to-device parameters (dp_*) would run under this array's device config, a mix of "
           "two devices. Build the layer with the saved device (CrossbarConfig(device={cls}(**fields)), fields: the "
           "saved extra state's ['device']['fields']), or copy only the weights: "
           "layer.set_weights(saved_layer.get_weights()). The periphery and the update settings may differ: they "
           "are not part of the state.")


def test_a_state_of_another_device_preset_is_refused_before_anything_is_copied() -> None:
    """Capacitor and EcRam are both linear-step presets with the same buffers: the Capacitor state loaded into an
    EcRam layer would run Capacitor's sampled spread under EcRam's noise. Refused, naming the layer's tile by its
    place in the model, the class and the first four of the 11 differing fields (counted from the two presets'
    numbers: dw_min, up_down_dtod, w_min, w_max, w_min_dtod, w_max_dtod, the four gammas and mult_noise)."""
    saved = nn.Sequential(_layer(get_preset("Capacitor"))).state_dict()
    model = nn.Sequential(_layer(get_preset("EcRam"), seed=1))
    before = {k: v.clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    want = ("TileArray '0.tile': the state was saved with another device (class: saved CapacitorPresetDevice, own "
            "EcRamPresetDevice; dw_min: saved 0.005, own 0.002; up_down_dtod: saved 0.06, own 0.01; w_min: saved "
            "-1.0, own -0.8276; and 8 more)" + _ADVICE.format(cls="CapacitorPresetDevice"))
    with pytest.raises(ValueError) as info:
        model.load_state_dict(saved)
    assert str(info.value) == want
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())   # no buffer was copied
    with pytest.raises(ValueError, match=r"^TileArray: the state was saved with another device \(class: saved "
                                         r"CapacitorPresetDevice, own EcRamPresetDevice; dw_min"):
        model[0].tile.set_extra_state(saved["0.tile._extra_state"])     # called directly: no place to name


@pytest.mark.parametrize("make", [
    lambda device, seed: AnalogLinear(6, 5, bias=True, rpu_config=CrossbarConfig(device=device), seed=seed),
    lambda device, seed: AnalogConv2d(2, 3, 2, bias=True, rpu_config=CrossbarConfig(device=device), seed=seed),
], ids=["linear", "conv"])
def test_a_refused_tile_state_leaves_the_layers_bias_too(make) -> None:
    """torch loads a module's own parameters before its children's: the tile refused the Capacitor state, but the
    layer's bias had already been replaced by the saved one. The layer checks its tile's saved state first: the
    same message, and nothing of the layer changes."""
    saved_layer = make(get_preset("Capacitor"), 0)
    with torch.no_grad():
        saved_layer.bias.fill_(0.5)
    layer = make(get_preset("EcRam"), 1)
    before = {k: v.clone() for k, v in layer.state_dict().items() if isinstance(v, torch.Tensor)}
    with pytest.raises(ValueError, match=r"^TileArray 'tile': the state was saved with another device \(class: "
                                         r"saved CapacitorPresetDevice, own EcRamPresetDevice; "):
        layer.load_state_dict(saved_layer.state_dict())
    after = layer.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items()) and not torch.equal(after["bias"], saved_layer.bias)
    model = nn.Sequential(make(get_preset("EcRam"), 1))
    with pytest.raises(ValueError, match=r"^TileArray '0\.tile': the state was saved with another device"):
        model.load_state_dict(nn.Sequential(saved_layer).state_dict())
    assert torch.equal(model[0].bias, before["bias"])

def test_a_state_of_the_same_preset_with_another_field_value_is_refused_naming_that_field() -> None:
    saved = _layer(get_preset("EcRam")).state_dict()
    layer = _layer(get_preset("EcRam", dw_min=0.004), seed=1)
    want = ("TileArray 'tile': the state was saved with another device (dw_min: saved 0.002, own 0.004)"
            + _ADVICE.format(cls="EcRamPresetDevice"))
    with pytest.raises(ValueError) as info:
        layer.load_state_dict(saved)
    assert str(info.value) == want


def test_device_fields_compare_as_numbers_so_an_int_field_is_its_float() -> None:
    """``w_max=1`` (an int, kept as given) is the device of ``w_max=1.0``: the state loads; ``-0.0`` is not ``0.0``."""
    a = TileArray(3, 4, CrossbarConfig(device=ConstantStepDevice(w_max=1, up_down=0.0)), seed=2)
    b = TileArray(3, 4, CrossbarConfig(device=ConstantStepDevice(w_max=1.0, up_down=0.0)), seed=3)
    b.load_state_dict(a.state_dict())
    assert torch.equal(b.params.w_max, a.params.w_max)
    c = TileArray(3, 4, CrossbarConfig(device=ConstantStepDevice(w_max=1.0, up_down=-0.0)), seed=3)
    with pytest.raises(ValueError, match=r"^TileArray: the state was saved with another device \(up_down: saved "
                                         r"0.0, own -0.0\)"):
        c.load_state_dict(a.state_dict())


def test_a_state_loads_under_another_periphery_with_the_saved_weights_exactly() -> None:
    """Train under one periphery, evaluate under another: the periphery has no state, so a state of the same device
    with other ADC / DAC resolutions and another update loads, weights, device parameters and generator as saved."""
    a = _layer(get_preset("EcRam"), seed=4)
    a.set_weights(torch.linspace(-0.3, 0.3, 30).reshape(5, 6))
    b = _layer(get_preset("EcRam"), seed=5, forward=IOParameters(out_res=1 / 14, inp_res=1 / 30),
               update=UpdateParameters(desired_bl=7))
    b.load_state_dict(a.state_dict())
    assert torch.equal(b.get_weights(), a.get_weights())
    assert all(torch.equal(v, b.tile.params.state_dict()[k]) for k, v in a.tile.params.state_dict().items())
    assert torch.equal(b.tile.generator.get_state(), a.tile.generator.get_state())


def test_a_state_saved_before_the_device_was_recorded_loads_as_before() -> None:
    """A state dict without the extra state's ``device`` entry (saved by an earlier version) is not checked: it
    loads into a layer of its own device, and (as before) into one of another."""
    a = _layer(get_preset("Capacitor"), seed=6)
    a.set_weights(torch.full((5, 6), 0.25))
    old = copy.deepcopy(a.state_dict())
    del old["tile._extra_state"]["device"]
    for device in (get_preset("Capacitor"), get_preset("EcRam")):
        b = _layer(device, seed=7)
        b.load_state_dict(old)
        assert torch.equal(b.get_weights(), torch.full((5, 6), 0.25))
        assert torch.equal(b.tile.generator.get_state(), a.tile.generator.get_state())


def test_a_field_the_saved_device_lacks_counts_at_its_class_default() -> None:
    """A state saved before a field was added to the device class records no value for it: it ran as the field's
    default (the value that keeps the earlier behaviour), so it loads into a device holding that default, and is
    refused, naming the field, by one holding another value. Simulated by deleting a field from the record."""
    a = _layer(get_preset("EcRam"), seed=10)
    a.set_weights(torch.full((5, 6), 0.125))
    old = copy.deepcopy(a.state_dict())
    fields = old["tile._extra_state"]["device"]["fields"]
    default = {f.name: f.default for f in dataclasses.fields(type(get_preset("EcRam")))}["write_noise_std"]
    assert fields["write_noise_std"] == default == 0.0      # EcRam's own value is its class default
    del fields["write_noise_std"]
    b = _layer(get_preset("EcRam"), seed=11)
    b.load_state_dict(old)
    assert torch.equal(b.get_weights(), torch.full((5, 6), 0.125))
    c = _layer(get_preset("EcRam", write_noise_std=0.5), seed=12)
    with pytest.raises(ValueError, match=r"^TileArray 'tile': the state was saved with another device "
                                         r"\(write_noise_std: saved 0.0, own 0.5\)"):
        c.load_state_dict(old)


def test_the_saved_device_is_plain_data_and_survives_a_weights_only_load() -> None:
    a = TileArray(3, 4, CrossbarConfig(device=get_preset("EcRam")), seed=8)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    assert state["_extra_state"]["device"] == {"class": "EcRamPresetDevice",
                                               "fields": get_preset("EcRam").field_values()}
    b = TileArray(3, 4, CrossbarConfig(device=get_preset("EcRam")), seed=9)
    b.load_state_dict(state)
    state["_extra_state"]["device"] = "EcRam"
    with pytest.raises(ValueError, match=r"^TileArray: the saved extra state's 'device' entry must be a dict "
                                         r"\{'class': <device class name>, 'fields': \{field: value\}\} "
                                         r"\(crossbar.tiles.device_record\), got 'EcRam'$"):
        b.load_state_dict(state)


_STATE_OF = "the uint8 tensor of torch.Generator.get_state on that device"


@pytest.mark.parametrize("broken,entry,valid,got", [
    (lambda e: e.pop("seed"), "seed", r"an integer in \[-2\^63, 2\^64\) \(what torch.manual_seed takes\)",
     r"no 'seed' entry in \['device', 'generator_device', 'generator_state'\]"),
    (lambda e: e.update(seed="3"), "seed", r"an integer in \[-2\^63, 2\^64\)", "'3'"),
    (lambda e: e.update(seed=True), "seed", r"an integer in \[-2\^63, 2\^64\)", "True"),
    (lambda e: e.update(seed=2**64), "seed", r"an integer in \[-2\^63, 2\^64\)", "18446744073709551616"),
    (lambda e: e.pop("generator_device"), "generator_device",
     r"a device string that torch.device reads \(str\(generator.device\), e.g. 'cpu' or 'cuda:0'\)",
     r"no 'generator_device' entry in \['device', 'generator_state', 'seed'\]"),
    (lambda e: e.update(generator_device="gpu"), "generator_device", "a device string", r"'gpu' \(.*gpu\)"),
    (lambda e: e.update(generator_device=None), "generator_device", "a device string", "None"),
    (lambda e: e.pop("generator_state"), "generator_state", _STATE_OF, "no 'generator_state' entry in"),
    (lambda e: e.update(generator_state=[1, 2]), "generator_state", _STATE_OF, r"\[1, 2\]"),
    (lambda e: e.update(generator_state=e["generator_state"].float()), "generator_state", _STATE_OF,
     r"a torch.float32 tensor of shape \(5056,\)"),
    (lambda e: e.update(generator_state=e["generator_state"][:10]), "generator_state", _STATE_OF,
     r"a state of 10 bytes that a generator on 'cpu' refuses \(.*size.*\)"),
], ids=["no-seed", "string-seed", "bool-seed", "seed-beyond-range", "no-device", "unknown-device", "device-none",
        "no-state", "list-state", "float-state", "short-state"])
def test_a_state_without_readable_generator_entries_is_refused_before_any_buffer_is_copied(broken, entry, valid,
                                                                                           got) -> None:
    """A saved extra state whose seed, generator device or generator state is missing or unreadable failed in
    set_extra_state (a KeyError, TypeError or RuntimeError), which torch runs after copying every buffer: the layer
    was left with the saved weights and dp_* but its own generator. Now refused before anything is copied, naming
    the array by its place and the entry, as ReplicaTileArray's 'rng' entry."""
    a = _layer(get_preset("EcRam"), seed=4)
    a.set_weights(torch.linspace(-0.3, 0.3, 30).reshape(5, 6))
    b = _layer(get_preset("EcRam"), seed=5)
    b(torch.randn(3, 6))                                        # its own generator position, not a's
    before = {k: v.clone() for k, v in b.state_dict().items() if isinstance(v, torch.Tensor)}
    gen = b.tile.generator.get_state()
    state = copy.deepcopy(a.state_dict())
    broken(state["tile._extra_state"])
    with pytest.raises(ValueError, match=rf"^TileArray 'tile': the saved extra state's '{entry}' entry must be "
                                         rf"{valid}.* \(TileArray.get_extra_state\), got {got}"):
        b.load_state_dict(state)
    after = b.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert not torch.equal(after["tile.weight_tiles"], a.tile.weight_tiles)     # a's states were not copied
    assert torch.equal(b.tile.generator.get_state(), gen) and b.tile.seed == 5
    with pytest.raises(ValueError, match=rf"^TileArray: the saved extra state's '{entry}' entry must be"):
        b.tile.set_extra_state(state["tile._extra_state"])                      # called directly: the same check


def test_a_state_saved_on_another_device_type_is_checked_only_for_what_it_restores() -> None:
    """A state saved on a GPU restores only its seed on the CPU (the CUDA generator state is not CPU's): its
    generator state is not tried on a CPU generator, and it loads, continuing from the saved seed; the same state
    saved on the CPU restores the generator exactly."""
    a = _layer(get_preset("EcRam"), seed=4)
    state = copy.deepcopy(a.state_dict())
    extra = state["tile._extra_state"]
    extra.update(generator_device="cuda:0", generator_state=torch.zeros(16, dtype=torch.uint8))  # a CUDA state's size
    b = _layer(get_preset("EcRam"), seed=5)
    b.load_state_dict(state)
    src = torch.Generator()
    src.manual_seed(4)
    want = torch.Generator()
    want.manual_seed(int(torch.randint(0, 2**62, (1,), generator=src).item()))
    assert b.tile.seed == 4 and torch.equal(b.tile.generator.get_state(), want.get_state())


def test_a_device_of_numpy_numbers_is_saved_as_plain_numbers_that_a_weights_only_load_reads() -> None:
    """A device field may be a numpy number (validation takes any real number, e.g. a value of ``np.linspace``): the
    record holds it as the Python number it is (``np.float64(0.002)`` -> ``0.002``, ``np.int64(1)`` -> ``1``), so
    ``torch.load``'s default (``weights_only=True``), which refuses numpy scalars, reads the state back and it loads
    into an array of that device."""
    device = ConstantStepDevice(dw_min=np.float64(0.002), w_max=np.int64(1))
    a = TileArray(3, 4, CrossbarConfig(device=device), seed=10)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf)
    fields = state["_extra_state"]["device"]["fields"]
    assert (type(fields["dw_min"]), fields["dw_min"]) == (float, 0.002)
    assert (type(fields["w_max"]), fields["w_max"]) == (int, 1)
    same = ConstantStepDevice(dw_min=np.float64(0.002), w_max=np.int64(1))
    b = TileArray(3, 4, CrossbarConfig(device=same), seed=11)
    b.load_state_dict(state)
    assert torch.equal(b.read(), a.read())


def test_same_seed_same_everything_and_copies() -> None:
    cfg = CrossbarConfig(tile_rows=8, tile_cols=8)
    a = TileArray(9, 9, cfg, seed=5)
    b = TileArray(9, 9, cfg, seed=5)
    assert torch.equal(a.params.dw_up, b.params.dw_up)
    x, d = torch.randn(4, 9), torch.randn(4, 9) * 0.1
    for arr in (a, b):
        arr.program(torch.full((9, 9), 0.05))
        arr.update(x, d, 0.1)
    assert torch.equal(a.read(), b.read())
    assert torch.equal(a.forward(x), b.forward(x))
    c = copy.deepcopy(a)
    p = pickle.loads(pickle.dumps(a))
    ya, yc, yp = a.forward(x), c.forward(x), p.forward(x)
    assert torch.equal(ya, yc) and torch.equal(ya, yp)


def test_to_dtype_moves_everything() -> None:
    arr = TileArray(5, 7, CrossbarConfig(tile_rows=4, tile_cols=4), seed=0)
    arr = arr.to(F64)
    assert arr.weight_tiles.dtype == F64 and arr.params.dw_up.dtype == F64
    assert arr.counters["pulses"].dtype == torch.int64
    y = arr.forward(torch.randn(2, 7, dtype=F64))
    assert y.dtype == F64 and y.shape == (2, 5)


def test_write_noise_apparent_states() -> None:
    dev = ConstantStepDevice(write_noise_std=2.0, dw_min=0.01)
    arr = TileArray(30, 30, CrossbarConfig(device=dev, tile_rows=16, tile_cols=16), dtype=F64, seed=0)
    w = torch.zeros(30, 30, dtype=F64)
    arr.program(w)
    hidden, seen = arr.read(hidden=True), arr.read()
    assert torch.equal(hidden, w)
    assert abs((seen - hidden).std().item() - 0.02) < 0.003      # write_noise_std * dw_min
    before = arr.read()
    x = torch.zeros(1, 30, dtype=F64)
    x[0, 0] = 1.0                                                  # only column 0 gets pulses
    arr.update(x, torch.full((1, 30), 0.5, dtype=F64), 0.1)
    after = arr.read()
    assert torch.equal(after[:, 1:], before[:, 1:])                # untouched devices keep their noise
    assert not torch.equal(after[:, 0], before[:, 0])


@pytest.mark.parametrize("kwargs, field", [(dict(tile_rows=0), "tile_rows"), (dict(tile_cols=2.5), "tile_cols"),
                                           (dict(device="ConstantStep"), "device"),
                                           (dict(forward=None), "forward")])
def test_config_validation_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=f"CrossbarConfig.{field}"):
        CrossbarConfig(**kwargs)


def test_config_converts_to_aihwkit() -> None:
    from crossbar import to_aihwkit_rpu_config

    cfg = CrossbarConfig(forward=IOParameters(out_bound=math.inf, inp_res=1 / 254, noise_management="none"),
                         tile_rows=128, tile_cols=64)
    rpu = to_aihwkit_rpu_config(cfg)
    assert type(rpu).__name__ == "SingleRPUConfig"
    assert (rpu.mapping.max_output_size, rpu.mapping.max_input_size, rpu.mapping.digital_bias) == (128, 64, True)
    assert rpu.forward.out_bound == 0.0                              # aihwkit's "unbounded"
    assert rpu.forward.inp_res == pytest.approx(1 / 254)
    assert rpu.forward.noise_management.name == "NONE" and rpu.backward.noise_management.name == "ABS_MAX"
    assert rpu.update.desired_bl == 31 and rpu.device.dw_min == pytest.approx(cfg.device.dw_min)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_update_that_fires_no_pulse_leaves_the_states_unchanged(dtype) -> None:
    """Non-zero but tiny errors: pulse probabilities ~1e-12, so no device fires (regression: the CPU sparse path
    crashed gathering the parameters of zero devices)."""
    from devices import get_preset

    cfg = CrossbarConfig(device=get_preset("ReRamSB"))          # write noise, c2c and d2d spread
    tile = TileArray(64, 48, cfg, seed=0, dtype=dtype)
    tile.program(0.1 * torch.randn(64, 48, generator=torch.Generator().manual_seed(1), dtype=dtype))
    before, seen = tile.read(hidden=True), tile.read()
    tile.update(torch.randn(32, 48, dtype=dtype), 1e-12 * torch.randn(32, 64, dtype=dtype), 0.05)
    assert int(tile.counters["pulses"]) == 0 and int(tile.counters["updates"]) == 1
    assert torch.equal(tile.read(hidden=True), before) and torch.equal(tile.read(), seen)


@pytest.mark.parametrize("preset", ["GokmenVlasov", "ReRamSB", "EcRam"])
@pytest.mark.parametrize("path", [*CPU_PATHS, ("float update", ""), ("sync-free", "")])
def test_update_leaves_its_inputs_unchanged(preset: str, path: tuple[str, str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The update only reads ``x`` and ``d`` (the network backend hands it the stashed pair itself, not a copy), on
    every way the CPU draws and counts the pulses (forced), on the GPUs' sync-free path (run on the CPU), with
    samples whose errors are all zero (left out of the plan), signed inputs from a strided view, several tiles with
    padding, write noise, and the float update."""
    import contextlib

    from devices import get_preset, no_host_reads

    count, draw = path
    if path in CPU_PATHS:
        force_cpu_path(monkeypatch, count, draw)
    update = UpdateParameters(pulse_type="none") if count == "float update" else UpdateParameters()
    tile = TileArray(40, 70, CrossbarConfig(device=get_preset(preset), update=update, tile_rows=16, tile_cols=32),
                     seed=2)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(64, 140, generator=g)[:, ::2]                # signed, not contiguous
    d = 0.05 * torch.randn(64, 40, generator=g)
    d[torch.rand(64, generator=g) < 0.3] = 0.0                   # silent samples (a convolution's pooled errors)
    x0, d0 = x.clone(), d.clone()
    with no_host_reads() if count == "sync-free" else contextlib.nullcontext():
        tile.update(x, d, 1e-4 if draw == "geometric" else 0.1)   # positions need small probabilities
    assert torch.equal(x, x0) and torch.equal(d, d0)
    assert int(tile.counters["pulses"]) > 0 or count == "float update"


def test_tile_methods_never_record_autograd_history() -> None:
    """MVMs, reads and updates run without autograd history whether gradients are on or off (they are off
    inside autograd functions and optimizer steps, where the methods skip the no-grad mode switch)."""
    tile = TileArray(3, 5, CrossbarConfig(), seed=0)
    x = torch.randn(2, 5, requires_grad=True)
    d = torch.randn(2, 3, requires_grad=True)
    for grad_on in (True, False):
        with torch.set_grad_enabled(grad_on):
            outs = [tile.forward(x), tile.backward(d), tile.row_sums("hardware"), tile.col_sums("hardware"),
                    tile.read()]
            tile.update(x, d, 0.1)
            assert torch.is_grad_enabled() == grad_on
        assert all(not o.requires_grad and o.grad_fn is None for o in outs)
    assert not tile.weight_tiles.requires_grad


@pytest.mark.parametrize("config", [CrossbarConfig(tile_rows=4, tile_cols=3),
                                    CrossbarConfig(tile_rows=4, tile_cols=3,
                                                   forward=IOParameters(out_bound=3.0, w_noise=0.02),
                                                   backward=IOParameters(out_bound=2.0, out_noise=0.1)),
                                    CrossbarConfig(tile_rows=4, tile_cols=3,
                                                   forward=IOParameters(inp_sto_round=True, out_bound=3.0))])
@pytest.mark.parametrize("signed, g_offset", [(False, 0.0), (False, 0.15), (True, 0.0)])
def test_hardware_sums_are_all_ones_reads_through_the_periphery(config: CrossbarConfig, signed: bool,
                                                                g_offset: float,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """row_sums / col_sums ("hardware") equal the all-ones MVM of the pair sums ``|W| + 2·g_offset`` (``W`` when
    signed) through the forward / backward periphery with all bound-management rounds at once, for a generator in
    the same state. With a deterministic DAC the read takes each round's DAC code times the tiles' line sums
    instead of a matmul (float rounding may move an output across an ADC level: at most one level, rarely); its
    inputs are cached between reads, also across a dtype change. The stochastic DAC (third config) is never
    cached and takes the matmul (forward), so it is exactly the MVM."""
    from crossbar import periphery
    from crossbar.periphery import analog_mvm

    matmuls = []
    real = torch.matmul

    def counting(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        matmuls.append(tuple(a.shape))
        return real(a, b)

    tile = TileArray(11, 10, config, seed=3)                   # 3 x 4 tiles of 4 x 3, padded in both directions
    tile.program(torch.rand(11, 10, generator=torch.Generator().manual_seed(1)) * 2 - 1)
    for dtype in (torch.float32, torch.float64):
        tile = tile.to(dtype)
        mat = tile.tiles if signed else tile.tiles.abs() + 2 * g_offset
        for _ in range(2):
            ref_gen = torch.Generator().manual_seed(0)
            ref_gen.set_state(tile.generator.get_state())
            with monkeypatch.context() as m:
                m.setattr(periphery.torch, "matmul", counting)
                matmuls.clear()
                rows = tile.row_sums("hardware", signed=signed, g_offset=g_offset)
                cols = tile.col_sums("hardware", signed=signed, g_offset=g_offset)
                assert len(matmuls) == config.forward.random_dac + config.backward.random_dac
            ref = analog_mvm(mat, tile.grid.split_inputs(torch.ones(1, 10, dtype=dtype)), config.forward, ref_gen,
                             try_first_round=False)
            ref_rows = tile.grid.merge_outputs(ref.out.sum(dim=1).permute(1, 0, 2))[0]
            ref = analog_mvm(mat, tile.grid.split_outputs(torch.ones(1, 11, dtype=dtype)), config.backward,
                             ref_gen, transposed=True, try_first_round=False)
            ref_cols = tile.grid.merge_inputs(ref.out.sum(dim=0).permute(1, 0, 2))[0]
            for got, want, p, tr in ((rows, ref_rows, config.forward, False), (cols, ref_cols, config.backward, True)):
                if not p.random_dac:   # an ADC level is out_step in the round's scale 2**k (alpha = 1 here)
                    level = p.out_step * 2.0 ** (bound_management_rounds(p, tr) - 1)
                    assert (got - want).abs().max() <= level * 1.0001
                    assert (got != want).sum() <= 1
                else:
                    assert torch.equal(got, want)
            assert rows.dtype == cols.dtype == dtype


def _array(n_out: int, n_in: int, config: CrossbarConfig, seed: int) -> TileArray:
    arr = TileArray(n_out, n_in, config, seed=seed)
    arr.program(torch.rand(n_out, n_in, generator=torch.Generator().manual_seed(seed)) * 2 - 1)
    return arr


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("signed, g_offset", [(False, 0.0), (False, 0.1), (True, 0.0)])
def test_hardware_sums_of_several_arrays_are_their_reads_one_by_one(transposed: bool, signed: bool,
                                                                    g_offset: float,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """``hardware_sums(arrays)`` reads several arrays with the ADC side of those sharing a periphery batched: the
    same numbers as each array's own ``row_sums`` / ``col_sums("hardware")`` with its generator in the same state,
    and the same counters — for arrays of different grids and padding sharing a periphery, one with another
    periphery, and one whose random DAC takes the generic MVM, in any order. The exact sums it returns alongside
    are ``row_sums("exact")`` / ``col_sums("exact")`` bit for bit."""
    from crossbar import hardware_and_exact_sums, hardware_sums

    shared = CrossbarConfig(tile_rows=4, tile_cols=3, forward=IOParameters(out_bound=2.0, out_noise=0.1),
                            backward=IOParameters(out_bound=2.0, out_noise=0.1))
    other = CrossbarConfig(tile_rows=4, tile_cols=3, forward=IOParameters(out_bound=3.0, out_res=1 / 30))
    random_dac = CrossbarConfig(tile_rows=4, tile_cols=3, forward=IOParameters(inp_sto_round=True),
                                backward=IOParameters(inp_noise=0.01))
    specs = [(11, 10, shared), (4, 3, shared), (9, 7, other), (8, 5, random_dac), (13, 2, shared)]
    together = [_array(n_out, n_in, cfg, seed) for seed, (n_out, n_in, cfg) in enumerate(specs)]
    alone = [copy.deepcopy(a) for a in together]
    from crossbar.periphery import FullScaleADC

    adc_calls = []
    real_adc = FullScaleADC.__call__
    monkeypatch.setattr(FullScaleADC, "__call__",
                        lambda self, y, *a: adc_calls.append(y.shape) or real_adc(self, y, *a))
    for _ in range(3):
        adc_calls.clear()
        got = hardware_sums(together, transposed, signed, g_offset)
        # one ADC call per periphery and tile size, the tiles in their flat order: forward, the three arrays
        # sharing one (4-row tiles) batched (12 + 1 + 4 tiles) and the other periphery (3 x 3 tiles); backward, the
        # 3-column tiles (12 + 1) batched, the 2-column tiles of the 13 x 2 array (4 x 1) and the other periphery
        assert [tuple(shape[:2]) for shape in adc_calls] == ([(1, 13), (1, 9), (1, 4)] if transposed
                                                             else [(1, 17), (1, 9)])
        for a, f in zip(alone, got):
            want = (a.col_sums if transposed else a.row_sums)("hardware", signed=signed, g_offset=g_offset)
            assert torch.equal(f, want)
    for a, b in zip(together, alone):
        assert {k: int(v) for k, v in a.counters.items()} == {k: int(v) for k, v in b.counters.items()}
        assert int(a.counters["importance_reads"]) == 3

    flags = [True, False, True, True, False]
    reads, exacts = hardware_and_exact_sums(together, flags, transposed, signed, g_offset)
    for a, b, f, e, flag in zip(together, alone, reads, exacts, flags):
        assert torch.equal(f, (b.col_sums if transposed else b.row_sums)("hardware", signed=signed,
                                                                          g_offset=g_offset))
        if flag:
            assert torch.equal(e, (a.col_sums if transposed else a.row_sums)("exact", signed=signed))
        else:
            assert e is None
    with pytest.raises(ValueError, match="one flag per array"):
        hardware_and_exact_sums(together, flags[:2])
    with pytest.raises(ValueError, match="g_offset must be >= 0"):
        hardware_sums(together, g_offset=-1.0)


def _reference_read(arr: TileArray, transposed: bool, signed: bool, g_offset: float,
                    gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, dict[str, int]]:
    """A straightforward all-ones read of ``arr`` (deterministic DAC and ADC, abs_max noise management, so every
    tile block's scale is 1), tile by tile and round by round: ``(read, exact line sums, counter increments)``.

    Each tile's line sums ``Σ |w|`` over its logical lines (padding lines carry no input), each round's DAC code
    of a full-scale line ``round(2**-k / inp_step) · inp_step`` times the pair sums, the output noise drawn for the
    array's ``[tiles, rounds, lines]`` products at once (tile order ``r · C + c``), the ADC grid, the first round
    whose outputs all lie within ``±out_bound`` (below ``out_bound`` without ``bm_test_negative_bound``; the last
    round always passes), its saturation and rescaling by
    ``2**k · out_scale``; the tiles of a row (column) added digitally, padding dropped."""
    g, p = arr.grid, (arr.config.backward if transposed else arr.config.forward)
    rounds = bound_management_rounds(p, transposed)
    w_tiles = arr.tiles.detach()                                     # [R, C, rows, cols]
    n_in_lines = [min(g.cols, g.in_features - c * g.cols) for c in range(g.n_col_tiles)]
    n_out_lines = [min(g.rows, g.out_features - r * g.rows) for r in range(g.n_row_tiles)]
    codes = [float((torch.round(torch.tensor(0.5 ** k, dtype=w_tiles.dtype) / p.inp_step) * p.inp_step)
                   .clamp(-p.inp_bound, p.inp_bound)) for k in range(rounds)]
    sums, pair_sums = [], []
    for r in range(g.n_row_tiles):
        for c in range(g.n_col_tiles):
            w = w_tiles[r, c] if signed else w_tiles[r, c].abs()
            lines = n_out_lines[r] if transposed else n_in_lines[c]          # the driven (logical) lines
            mask = torch.zeros_like(w)
            if transposed:
                mask[:lines] = 1
                s = (w * mask).sum(dim=0)                                    # [cols]
            else:
                mask[:, :lines] = 1
                s = (w * mask).sum(dim=1)                                    # [rows]
            sums.append(s)
            pair_sums.append(torch.add(s, torch.full_like(s, lines), alpha=2 * g_offset)
                             if g_offset and not signed else s)
    y = torch.stack([torch.stack([code * s for code in codes]) for s in pair_sums])   # [T, rounds, lines]
    if p.out_noise > 0:
        y = torch.normal(y, p.out_noise, generator=gen)
    outs, passes = [], []
    for t in range(g.n_tiles):
        q = torch.round(y[t] / p.out_step) * p.out_step if p.out_step > 0 else y[t]
        tested = q.abs() if p.bm_test_negative_bound else q                  # both bounds, or the upper one
        k = next(k for k in range(rounds) if k == rounds - 1 or float(tested[k].max()) <= p.out_bound)
        outs.append(q[k].clamp(-p.out_bound, p.out_bound) * (2.0 ** k * p.out_scale))
        passes.append(k + 1)

    def merged(per_tile: list[torch.Tensor]) -> torch.Tensor:
        if transposed:   # the row blocks of each column block added
            blocks = [torch.stack(per_tile[c::g.n_col_tiles]).sum(dim=0) if g.n_row_tiles > 1
                      else per_tile[c] for c in range(g.n_col_tiles)]
            return torch.cat(blocks)[:g.in_features]
        blocks = [torch.stack(per_tile[r * g.n_col_tiles:(r + 1) * g.n_col_tiles]).sum(dim=0)
                  if g.n_col_tiles > 1 else per_tile[r * g.n_col_tiles] for r in range(g.n_row_tiles)]
        return torch.cat(blocks)[:g.out_features]

    in_lines = sum(n * passes[r * g.n_col_tiles + c] for r in range(g.n_row_tiles)
                   for c, n in enumerate(n_in_lines))
    out_lines = sum(n * passes[r * g.n_col_tiles + c] for r, n in enumerate(n_out_lines)
                    for c in range(g.n_col_tiles))
    counts = {"importance_reads": 1, "dac_conversions": out_lines if transposed else in_lines,
              "adc_conversions": in_lines if transposed else out_lines}
    return merged(outs), merged(sums), counts


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("signed, g_offset", [(False, 0.0), (False, 0.1), (True, 0.0)])
def test_hardware_sums_are_the_straightforward_read_bit_for_bit(transposed: bool, signed: bool,
                                                               g_offset: float) -> None:
    """``hardware_and_exact_sums`` (the batched ADC of arrays sharing a periphery, tiles in their flat order) gives
    exactly the numbers of :func:`_reference_read`, read after read, and its exact sums and counters: arrays with
    padding in both directions, several row and column blocks, one tile, one column block; bound management
    taking later rounds on some tiles (forward) and a single round (backward); the test of both bounds or of the
    upper one only."""
    from crossbar import hardware_and_exact_sums

    for p in (IOParameters(out_bound=1.5, out_noise=0.1, out_scale=1.5),     # line sums reach ~2 (|w| <= 0.6+)
              IOParameters(out_bound=1.2, out_noise=0.05, bm_test_negative_bound=False)):
        cfg = CrossbarConfig(tile_rows=4, tile_cols=3, forward=p, backward=p)
        arrays = [_array(n_out, n_in, cfg, seed) for seed, (n_out, n_in) in enumerate([(11, 10), (4, 3), (13, 2),
                                                                                       (8, 9)])]
        later_rounds = 0
        for _ in range(3):
            gens = []
            for a in arrays:
                gens.append(torch.Generator().manual_seed(0))
                gens[-1].set_state(a.generator.get_state())
            before = [{k: int(v) for k, v in a.counters.items()} for a in arrays]
            reads, exacts = hardware_and_exact_sums(arrays, [True] * len(arrays), transposed, signed, g_offset)
            for a, f, e, gen, old in zip(arrays, reads, exacts, gens, before):
                want, want_exact, counts = _reference_read(a, transposed, signed, g_offset, gen)
                assert f.shape == want.shape and torch.equal(f, want)
                assert e is not None and torch.equal(e, want_exact)
                assert torch.equal(a.generator.get_state(), gen.get_state())     # the same numbers drawn
                for k, v in counts.items():
                    assert int(a.counters[k]) - old[k] == v, k
                later_rounds += counts["adc_conversions"] + counts["dac_conversions"] > (
                    a.grid.in_features * a.grid.n_row_tiles + a.grid.out_features * a.grid.n_col_tiles)
        assert later_rounds > 0 or transposed     # forward: some tile needed more than one pass


def test_a_hardware_sums_plan_reads_as_hardware_sums_until_an_array_changes() -> None:
    """A :class:`crossbar.HardwareSumsPlan` kept between reads gives :func:`hardware_and_exact_sums`'s numbers and
    counters (twin arrays, generators in step) read after read, also after the states change (training,
    ``load_state_dict``); it stops being current when an array's states move to another dtype, its configuration
    is replaced or its buffers are assigned, and a new plan then reads as hardware_sums does."""
    from crossbar import HardwareSumsPlan, hardware_and_exact_sums

    cfg = CrossbarConfig(tile_rows=4, tile_cols=3, forward=IOParameters(out_bound=1.5, out_noise=0.1))
    arrays = [_array(11, 10, cfg, 0), _array(4, 3, cfg, 1), _array(6, 5, cfg, 2)]
    twins = [copy.deepcopy(a) for a in arrays]

    def same_reads(plan: HardwareSumsPlan) -> list[torch.Tensor]:
        flags = [True, False, True]
        got, got_exact = plan.read(flags)
        want, want_exact = hardware_and_exact_sums(twins, flags)
        for f, w, e, we in zip(got, want, got_exact, want_exact):
            assert f.dtype == w.dtype and torch.equal(f, w)
            assert (e is None and we is None) or (e is not None and we is not None and torch.equal(e, we))
        for a, b in zip(arrays, twins):
            assert {k: int(v) for k, v in a.counters.items()} == {k: int(v) for k, v in b.counters.items()}
        return got

    plan = HardwareSumsPlan(arrays)
    for _ in range(2):
        same_reads(plan)
    for a in (arrays[1], twins[1]):     # new states, in place: the plan stays current
        a.load_state_dict(_array(4, 3, cfg, 7).state_dict())
    assert plan.is_current()
    same_reads(plan)
    for a in (arrays[2], twins[2]):
        a.to(torch.float64)
    assert not plan.is_current()
    plan = HardwareSumsPlan(arrays)
    assert same_reads(plan)[2].dtype == torch.float64
    other = dataclasses.replace(cfg, forward=IOParameters(out_bound=3.0, out_res=1 / 30))
    for a in (arrays[0], twins[0]):
        a.config = other
    assert not plan.is_current()
    plan = HardwareSumsPlan(arrays)
    same_reads(plan)
    arrays[1].load_state_dict(twins[1].state_dict(), assign=True)    # new buffer objects
    assert not plan.is_current()
    assert HardwareSumsPlan(arrays).is_current()
    with pytest.raises(ValueError, match=r"HardwareSumsPlan.read: exact needs one flag per array \(3\), got 1"):
        plan.read([True])


def test_vectors_of_the_wrong_length_are_rejected_not_regrouped() -> None:
    """x [4, 22] on an 11-input array reshapes to [8, 11] and would pair with a d of 8 vectors: rejected instead, in
    forward, backward and update, before any MVM is counted or any pulse drawn."""
    arr = TileArray(7, 11, CrossbarConfig(device=ConstantStepDevice()), seed=0)
    before = arr.tiles.clone()
    with pytest.raises(ValueError, match=r"TileArray.update: x must be \[\.\.\., 11\], got \(4, 22\)"):
        arr.update(torch.ones(4, 22), torch.ones(8, 7), 0.1)
    with pytest.raises(ValueError, match=r"TileArray.update: d must be \[\.\.\., 7\], got \(4, 14\)"):
        arr.update(torch.ones(8, 11), torch.ones(4, 14), 0.1)
    with pytest.raises(ValueError, match=r"TileArray.forward: x must be \[\.\.\., 11\], got \(2, 22\)"):
        arr.forward(torch.ones(2, 22))
    with pytest.raises(ValueError, match=r"TileArray.backward: d must be \[\.\.\., 7\], got \(\)"):
        arr.backward(torch.tensor(1.0))
    assert torch.equal(arr.tiles, before)
    assert all(float(v) == 0 for v in arr.counters.values())


@pytest.mark.parametrize("kind", ["tile", "replica"])
@pytest.mark.parametrize("change", ["load_in_place", "load_assign", "to_float64"])
def test_the_update_uses_the_current_device_parameters(kind: str, change: str) -> None:
    """The updates reuse their device parameters between calls; after ``load_state_dict`` (in place or with
    ``assign=True``: new buffer objects) or ``.to(float64)`` they use the new ones: with zero up and down steps
    loaded (or written into the moved buffers), an update that fires pulses leaves every state as it was, while
    before it the same update moves them."""
    cfg = CrossbarConfig(device=ConstantStepDevice(), tile_rows=4, tile_cols=3)
    arr: TileArray | ReplicaTileArray = (TileArray(5, 7, cfg, seed=1) if kind == "tile"
                                         else ReplicaTileArray([1, 2], 5, 7, cfg))
    lead = () if kind == "tile" else (2,)
    g = torch.Generator().manual_seed(0)
    x, d = torch.rand(*lead, 16, 7, generator=g), torch.rand(*lead, 16, 5, generator=g) - 0.5

    def update_moves() -> bool:
        before, pulses = arr.weight_tiles.clone(), int(arr.counter_pulses)
        arr.update(x.to(arr.weight_tiles.dtype), d.to(arr.weight_tiles.dtype), 0.5)
        assert int(arr.counter_pulses) > pulses                    # pulses were fired
        return not torch.equal(arr.weight_tiles, before)

    assert update_moves()                                           # parameters now cached
    if change == "to_float64":
        arr.to(F64)
        arr.dp_dw_up.zero_()
        arr.dp_dw_down.zero_()
        assert arr.weight_tiles.dtype == F64
    else:
        state = {k: (torch.zeros_like(v) if k in ("dp_dw_up", "dp_dw_down") else copy.deepcopy(v))
                 for k, v in arr.state_dict().items()}       # (the extra state, a dict, too)
        arr.load_state_dict(state, assign=change == "load_assign")
    assert not update_moves()
    params = arr._update_params()
    for name, key in arr._param_buffers:
        assert params.state_dict()[key] is arr._buffers[name]
