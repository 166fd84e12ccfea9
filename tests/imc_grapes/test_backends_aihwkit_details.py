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
