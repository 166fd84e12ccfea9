"""Training at the noise limits of the device fields (``tests/devices/test_noise_limits.py``): both engines' update
paths, on the CPU and sync-free, keep every state finite and within its bounds.

``dw_min_std = 1e38`` gave NaN states after one update of a constant-step tile array (26 of 65,536 on the sync-free
path): it is refused when the device is made; the largest accepted value, 1e19, trains without NaN. Likewise the
largest write noise the sampled bounds allow, and constant steps of 1e20 weight units (``n·dw²`` beyond float32).
"""
from __future__ import annotations

import contextlib

import pytest
import torch

from crossbar import CrossbarConfig, ReplicaTileArray, TileArray
from devices import (ConstantStepDevice, ExpStepDevice, LinearStepDevice, PowStepDevice, SoftBoundsDevice,
                     no_host_reads)
from devices.base import DW_MIN_STD_MAX

MODELS = [ConstantStepDevice, LinearStepDevice, SoftBoundsDevice, ExpStepDevice, PowStepDevice]


def _build(engine: str, device) -> TileArray | ReplicaTileArray:
    cfg = CrossbarConfig(device=device, tile_rows=128, tile_cols=128)
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
    arr = _build(engine, dev)
    for step in range(3):
        _update(arr, engine, sync_free, 1e21, step)          # lr·x·d / dw_min: a few pulses per device
        assert _bounded(arr)
    assert int(arr.counter_pulses) > 0 and float(arr.weight_tiles.abs().max()) >= 1e20


@pytest.mark.parametrize("engine", ["tiles", "replicas"])
@pytest.mark.parametrize("sync_free", [False, True], ids=["cpu", "sync-free"])
def test_write_noise_at_its_limit_trains_with_finite_apparent_states(engine, sync_free):
    with pytest.raises(ValueError, match=r"^ConstantStepDevice\.write_noise_std must be at most 3\.7\d*e\+37 "):
        _build(engine, ConstantStepDevice(dw_min=1.0, write_noise_std=3e38))
    arr = _build(engine, ConstantStepDevice(dw_min=1.0, write_noise_std=3.7e37))
    for step in range(3):
        _update(arr, engine, sync_free, 10.0, step)
        assert _bounded(arr) and torch.isfinite(arr.apparent_tiles).all()
    assert float(arr.apparent_tiles.abs().max()) > 1e37
