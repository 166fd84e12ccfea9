"""Details of the aihwkit backend that the accuracy comparison (test_backends_aihwkit.py) does not see: the
device-to-device draws of layers that span several tiles, and what the saturation probe measures."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from imc_grapes.backends import AnalogSettings, crossbar_config_from

pytest.importorskip("aihwkit")

from imc_grapes.backends.aihwkit_backend import make_aihwkit_layer  # noqa: E402


def _hidden(layer, name: str) -> list[torch.Tensor]:
    return [tile.get_hidden_parameters()[name] for tile, _, _ in layer._tiles]


def test_every_tile_of_a_layer_draws_its_own_device_to_device_spread():
    # a 16x16 layer on 8x8 tiles: 4 tiles of the same shape. Every device draws its dw_min independently (spread
    # dw_min_dtod 0.3, as on the crossbar backend), so two tiles' maps of 64 devices are uncorrelated: identical
    # maps (one construction seed shared by all tiles) have correlation 1.
    cfg = crossbar_config_from(AnalogSettings(preset="GokmenVlasov", tile_size=8))
    lin = nn.Linear(16, 16, bias=False)
    layer = make_aihwkit_layer(lin, cfg, seed=3)
    maps = _hidden(layer, "dwmin_up")
    assert len(maps) == 4 and all(m.shape == (8, 8) for m in maps)
    for k in range(1, 4):
        r = torch.corrcoef(torch.stack([maps[0].flatten(), maps[k].flatten()]))[0, 1]
        assert abs(float(r)) < 0.5, (k, float(r))
    # still seeded: the same seed gives the same draws, tile by tile
    again = _hidden(make_aihwkit_layer(lin, cfg, seed=3), "dwmin_up")
    for a, b in zip(maps, again):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_saturation_probe_measures_the_device_states_not_the_write_noise():
    # ReRamSB has write noise (56 dw_min = 0.112): aihwkit's get_weights returns the device states plus a write
    # noise drawn anew at every update, which the pulses do not cause. The probe's realised change is that of the
    # device states (the crossbar backend's read(hidden=True)): with lr 0.002 (|dW_int| = 0.069, a few pulses per
    # device, far from the bounds of soft-bounds devices starting at 0; cycle-to-cycle noise off) the ratio
    # <dW_real, dW_int> / |dW_int|^2 stays within 1 +- 0.25 (measured 0.79..1.14). Through the write noise it would
    # be 1 + N(0, 0.158 / 0.069 = 2.3): ten probes all within 1 +- 0.5 then have probability ~1e-8.
    cfg = crossbar_config_from(AnalogSettings(preset="ReRamSB", device_overrides={"dw_min_std": 0.0}))
    lin = nn.Linear(32, 16, bias=False)
    with torch.no_grad():
        lin.weight.zero_()
    layer = make_aihwkit_layer(lin, cfg, seed=1)
    g = torch.Generator().manual_seed(1)
    x, d = torch.rand(8, 32, generator=g), torch.randn(8, 16, generator=g)
    ratios = []
    for _ in range(10):
        xx = x.clone().requires_grad_(True)
        layer(xx).backward(d)
        num, den = layer.apply_update(0.002, probe=True)
        assert float(den.sqrt()) == pytest.approx(0.002 * float((d.T @ x).norm()), rel=1e-4)
        ratios.append(float(num / den))
    assert all(0.5 < r < 1.5 for r in ratios), ratios
