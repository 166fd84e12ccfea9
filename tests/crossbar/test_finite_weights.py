"""NaN / ±Inf weights are refused where weights enter the tiles (``program`` / ``set_weights``), with a message
naming the entry point and counting the NaN and Inf entries; the states are left as they were. The check is one
host read, so it stays out of the MVMs and the update (the training step's hot path)."""
from __future__ import annotations

import pytest
import torch

import crossbar
from crossbar import AnalogConv2d, AnalogLinear, CrossbarConfig, ReplicaLinear, ReplicaTileArray, TileArray
from crossbar.tiles import check_finite_weights
from devices import ConstantStepDevice, get_preset, no_host_reads

NAN, INF = float("nan"), float("inf")


def _bad(shape: tuple[int, ...], n_nan: int, n_pos_inf: int, n_neg_inf: int) -> torch.Tensor:
    """Finite weights of ``shape`` with the first entries (flat order) set to that many NaN, +Inf, -Inf."""
    w = torch.linspace(-0.2, 0.2, torch.Size(shape).numel()).reshape(shape)
    flat = w.view(-1)
    values = [NAN] * n_nan + [INF] * n_pos_inf + [-INF] * n_neg_inf
    flat[:len(values)] = torch.tensor(values)
    return w


def test_the_message_counts_nan_and_inf_apart():
    with pytest.raises(ValueError) as err:
        check_finite_weights("here", _bad((3, 4), 2, 1, 1))
    assert str(err.value) == "here: weight must be finite, got 2 NaN and 2 Inf of its 12 entries (shape (3, 4))"
    with pytest.raises(ValueError, match=r"^here: weight must be finite, got 0 NaN and 1 Inf of its 6 entries"):
        check_finite_weights("here", _bad((2, 3), 0, 0, 1))
    check_finite_weights("here", torch.zeros(2, 3))              # finite: nothing raised
    check_finite_weights("here", torch.tensor([1.0e38, -1.0e38]))   # large but finite
    check_finite_weights("here", torch.arange(6).reshape(2, 3))  # integers are always finite
    assert crossbar.check_finite_weights is check_finite_weights


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tile_array_program_refuses_and_keeps_its_states(dtype):
    cfg = CrossbarConfig(device=get_preset("ReRamSB"), tile_rows=4, tile_cols=4)   # write noise, 2 x 2 tiles
    arr = TileArray(6, 5, cfg, dtype=dtype, seed=3)
    arr.program(torch.full((6, 5), 0.05, dtype=dtype))
    hidden, seen = arr.read(hidden=True), arr.read()
    with pytest.raises(ValueError) as err:
        arr.program(_bad((6, 5), 1, 2, 0).to(dtype), write_noise=False, clip=False)
    assert str(err.value) == ("TileArray.program: weight must be finite, got 1 NaN and 2 Inf of its 30 entries "
                              "(shape (6, 5))")
    assert torch.equal(arr.read(hidden=True), hidden) and torch.equal(arr.read(), seen)


def test_layers_name_themselves():
    lin = AnalogLinear(5, 3, seed=0)
    before = lin.get_weights()
    with pytest.raises(ValueError, match=r"^AnalogLinear\.set_weights: weight must be finite, got 1 NaN and 0 Inf "
                                         r"of its 15 entries \(shape \(3, 5\)\)$"):
        lin.set_weights(_bad((3, 5), 1, 0, 0))
    assert torch.equal(lin.get_weights(), before)
    conv = AnalogConv2d(2, 3, 2, seed=0)
    with pytest.raises(ValueError, match=r"^AnalogConv2d\.set_weights: .* 0 NaN and 3 Inf of its 24 entries "
                                         r"\(shape \(3, 2, 2, 2\)\)$"):
        conv.set_weights(_bad((3, 2, 2, 2), 0, 2, 1))
    # the shape is checked first: a wrong shape is named as such, whatever the values
    with pytest.raises(ValueError, match="expected shape"):
        lin.set_weights(torch.full((5, 3), NAN))


def test_replicas_refuse_too():
    arr = ReplicaTileArray([1, 2], 3, 4)
    w = torch.full((2, 3, 4), 0.1)
    arr.program(w)
    before = arr.read(hidden=True)
    w[1, 2, 3] = NAN
    with pytest.raises(ValueError, match=r"^ReplicaTileArray\.program: weight must be finite, got 1 NaN and 0 Inf "
                                         r"of its 24 entries \(shape \(2, 3, 4\)\)$"):
        arr.program(w)
    assert torch.equal(arr.read(hidden=True), before)
    layer = ReplicaLinear([1, 2], 4, 3)
    w = torch.full((2, 3, 4), 0.1)
    w[0, 0, 0] = -INF
    with pytest.raises(ValueError, match=r"^ReplicaLinear\.set_weights: .* 0 NaN and 1 Inf of its 24"):
        layer.set_weights(w)


def test_the_step_never_runs_the_check():
    """Forward, backward and the pulsed update read nothing back to the host (the check would): after programming,
    they run under ``no_host_reads``, which raises at any host read."""
    lin = AnalogLinear(5, 3, seed=0)
    lin.set_weights(torch.full((3, 5), 0.05))
    x = torch.rand(4, 5, requires_grad=True)
    with no_host_reads():
        lin(x).sum().backward()
        lin.analog_update(0.1)
    assert x.grad is not None and torch.isfinite(x.grad).all()


SPREAD = dict(dw_min_dtod=1e38)
"""Within float32's range, yet ``1 + 1e38·ξ`` overflows for ``|ξ| > 3.4``: about 44 of 256² devices."""


@pytest.mark.parametrize("build", [
    lambda cfg: TileArray(256, 256, cfg, seed=0),
    lambda cfg: ReplicaTileArray([1, 2], 256, 256, cfg),
    lambda cfg: AnalogLinear(256, 256, rpu_config=cfg, seed=0),
    lambda cfg: ReplicaLinear([1, 2], 256, 256, rpu_config=cfg),
], ids=["TileArray", "ReplicaTileArray", "AnalogLinear", "ReplicaLinear"])
def test_an_overflowing_spread_is_refused_when_the_tiles_are_built(build):
    """Infinite sampled steps made every pulsed device's state NaN or inf at the first update; now building the
    tiles (each replica's sampling included) raises, naming the field."""
    cfg = CrossbarConfig(device=ConstantStepDevice(**SPREAD))
    with pytest.raises(ValueError, match=r"^ConstantStepDevice: sampling the device-to-device spread gave "
                                         r"non-finite dw_up, dw_down in torch\.float32 "
                                         r".*ConstantStepDevice\.dw_min_dtod = 1e\+38"):
        build(cfg)


def test_the_step_never_samples(monkeypatch):
    """The sampled-parameter check (one host read) runs once per sampling, when the tiles are built: training steps
    of both engines never call it."""
    from devices.base import PulsedDevice

    calls = []
    check = PulsedDevice._check_sampled
    monkeypatch.setattr(PulsedDevice, "_check_sampled", lambda self, p: calls.append(1) or check(self, p))
    cfg = CrossbarConfig(device=get_preset("ReRamSB"))
    lin, rep = AnalogLinear(5, 3, rpu_config=cfg, seed=0), ReplicaLinear([1, 2, 3], 5, 3, rpu_config=cfg)
    assert len(calls) == 1 + 3                                       # one per tile array, one per replica
    for _ in range(3):
        lin(torch.rand(4, 5)).sum().backward()
        lin.analog_update(0.1)
        rep(torch.rand(3, 4, 5)).sum().backward()
        rep.analog_update(0.1)
    assert len(calls) == 4
