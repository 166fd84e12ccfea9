"""Details of the aihwkit backend that the accuracy comparison (test_backends_aihwkit.py) does not see: the
device-to-device draws of layers that span several tiles, what the saturation probe measures, and frozen layers."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from imc_grapes.backends import COST_KINDS, AnalogSettings, build_network, crossbar_config_from
from imc_grapes.config import TrainConfig

pytest.importorskip("aihwkit")

from imc_grapes.backends.aihwkit_backend import make_aihwkit_layer  # noqa: E402

_K = {name: i for i, name in enumerate(COST_KINDS)}


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
    # <dW_real, dW_int> / |dW_int|^2 of one probe is 0.94 ± 0.14 (300 probes on the AVX2 machine: 0.56..1.34; aihwkit
    # cannot be seeded, so each run draws anew), the mean of ten 0.94 ± 0.045 (30 sets: 0.84..1.02). Through the
    # write noise a probe would be 1 + N(0, 0.158 / 0.069 = 2.3): ten probes then spread with a std below 0.6 with
    # probability ~1e-5 (chi-square, 9 degrees of freedom), while the pulses' own spread (0.14) leaves it there by
    # far. Their mean within 0.7..1.2 is > 5 of its SDs from 0.94 either way. (Each probe within 0.5..1.5 was asked
    # before: 3.2 SDs, one run in ~150 failed it.)
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
    spread = torch.tensor(ratios, dtype=torch.float64)
    assert float(spread.std()) < 0.6, ratios
    assert 0.7 < float(spread.mean()) < 1.2, ratios


# ---------------------------------------------------------------------------------------------- frozen layers
def _states(layer) -> list[torch.Tensor]:
    """Every hidden parameter (device states, bounds, ...) and the weights of every tile, copied."""
    out = []
    for tile, _, _ in layer._tiles:
        out += [v.clone() for v in tile.get_hidden_parameters().values()]
        out.append(tile.get_weights()[0].clone())
    return out


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(u, v) for u, v in zip(a, b))


def test_frozen_layer_gets_no_pulses_but_passes_the_error():
    # a 12x16 layer on 8x8 tiles (4 tiles) after a trainable digital layer, so that backward runs through it and
    # aihwkit stashes (x, d) on its tiles whatever their requires_grad says. Frozen: no tile moves (bit for bit),
    # nothing pending, no pulse or update counted; the error still reaches its input: with an ideal periphery
    # exactly d @ W (the independent float product). Unfrozen again, the next step pulses it.
    cfg = crossbar_config_from(AnalogSettings(preset="GokmenVlasov", tile_size=8, ideal_periphery=True))
    torch.manual_seed(0)
    first = nn.Linear(6, 16)
    layer = make_aihwkit_layer(nn.Linear(16, 12, bias=False), cfg, seed=2)
    g = torch.Generator().manual_seed(4)
    x, d = torch.randn(5, 6, generator=g), torch.randn(5, 12, generator=g)

    layer.requires_grad_(False)
    assert not any(p.requires_grad for p in layer.analog_parameters())
    before = _states(layer)
    h = first(x)
    h.retain_grad()
    layer(h).backward(d)
    torch.testing.assert_close(h.grad, d @ layer.get_weights(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(first.weight.grad, (d @ layer.get_weights()).T @ x, rtol=1e-5, atol=1e-6)  # upstream
    assert not layer.has_pending() and layer.pending_update(0.1) is None
    assert layer.apply_update(0.1, probe=True) is None
    assert _same(_states(layer), before)
    assert all(not t.analog_ctx.has_gradient() for t, _, _ in layer._tiles)   # the stash was dropped
    assert float(layer.counts()[_K["pulses"]]) == 0 and float(layer.counts()[_K["updates"]]) == 0

    layer.requires_grad_(True)
    layer(first(x)).backward(d)
    assert layer.has_pending()
    layer.apply_update(0.1)
    assert not _same(_states(layer), before)
    assert float(layer.counts()[_K["updates"]]) == 4


def test_the_frozen_flag_counts_at_the_forward_pass():
    # as on the crossbar backend (and in torch): frozen after the forward, the pending update is still applied;
    # frozen at the forward and unfrozen before the step, it is not. One tile may be frozen alone.
    cfg = crossbar_config_from(AnalogSettings(preset="GokmenVlasov", tile_size=8))
    layer = make_aihwkit_layer(nn.Linear(8, 16, bias=False), cfg, seed=5)   # 2 tiles: rows 0-7, 8-15
    g = torch.Generator().manual_seed(6)
    x, d = torch.randn(4, 8, generator=g), torch.randn(4, 16, generator=g)

    before = _states(layer)
    y = layer(x.requires_grad_(True))
    layer.requires_grad_(False)
    y.backward(d)
    layer.apply_update(0.1)
    after = _states(layer)
    assert not _same(after, before)

    y = layer(x)
    layer.requires_grad_(True)
    y.backward(d)
    assert not layer.has_pending()
    layer.apply_update(0.1)
    assert _same(_states(layer), after)

    tile0 = layer._tiles[0][0]
    tile0.analog_ctx.requires_grad_(False)
    layer(x).backward(d)
    intended = layer.pending_update(0.1)
    assert intended is not None and torch.equal(intended[:8], torch.zeros(8, 8))
    torch.testing.assert_close(intended[8:], -0.1 * d[:, 8:].T @ x)
    n = len(after) // 2   # tile 0's entries come first
    layer.apply_update(0.1)
    now = _states(layer)
    assert _same(now[:n], after[:n]) and not _same(now[n:], after[n:])


@pytest.mark.parametrize("set_to_none", [True, False])
@pytest.mark.parametrize("how", ["model", "torch optimizer"])
def test_torch_zero_grad_drops_the_pending_update_of_every_tile(how, set_to_none):
    # aihwkit stores (x, d) beside its tiles' contexts and gives them no .grad, so torch's zero_grad used to leave
    # a backward's stash to the next update: the standard loop zero_grad(); backward(); step() after a backward
    # without a step applied both. Now, as on the crossbar backend, the pending update after it is the second
    # backward's only: -lr d2ᵀ x2 (the independent float product, torch's weight.grad), over 4 tiles; a
    # zero_grad between a forward and its backward keeps that backward's update; a zero_grad alone leaves none.
    cfg = crossbar_config_from(AnalogSettings(preset="GokmenVlasov", tile_size=8))
    layer = make_aihwkit_layer(nn.Linear(16, 12, bias=False), cfg, seed=2)
    model = nn.Sequential(layer)
    g = torch.Generator().manual_seed(7)
    x1, x2 = torch.randn(5, 16, generator=g), torch.randn(5, 16, generator=g)
    d1, d2 = torch.randn(5, 12, generator=g), torch.randn(5, 12, generator=g)

    def zero_grad():
        if how == "model":
            model.zero_grad(set_to_none=set_to_none)
        else:
            torch.optim.SGD(model.parameters(), lr=0.1).zero_grad(set_to_none=set_to_none)

    model(x1).backward(d1)
    zero_grad()
    model(x2).backward(d2)
    torch.testing.assert_close(layer.pending_update(0.1), -0.1 * d2.T @ x2)
    y = model(x1)
    zero_grad()                         # forgets the x2 backward's update; the backward after it counts (torch)
    y.backward(d1)
    torch.testing.assert_close(layer.pending_update(0.1), -0.1 * d1.T @ x1)
    model(x2).backward(d2)              # two backward passes without zero_grad accumulate
    torch.testing.assert_close(layer.pending_update(0.1), -0.1 * (d1.T @ x1 + d2.T @ x2))
    zero_grad()
    assert not layer.has_pending() and layer.pending_update(0.1) is None
    before = _states(layer)
    assert layer.apply_update(0.1) is None
    assert _same(_states(layer), before) and float(layer.counts()[_K["updates"]]) == 0
    assert all(not t.analog_ctx.has_gradient() for t, _, _ in layer._tiles)   # the stash was dropped


def test_a_frozen_layer_of_an_aihwkit_network_keeps_its_devices():
    # the user-facing way, as on the crossbar backend: Network.analog_layers[name].requires_grad_(False). The
    # output layer of a 64-16-10 MLP (no biases) is frozen; its input needs a gradient (the first layer trains), so
    # aihwkit would stash and update it. A training step (with the saturation probe) leaves its devices as they
    # were and trains the first layer.
    cfg = TrainConfig(dataset="synthetic", model="mlp", hidden=(16,), optimizer="sgd", lr=0.1, backend="aihwkit",
                      seed=0, batch_size=8, analog=AnalogSettings(preset="GokmenVlasov", sat_probe_every=1))
    net = build_network(cfg, (1, 8, 8), 10, "cpu")
    first, last = net.analog_layers.values()
    last.requires_grad_(False)
    before_first, before_last = _states(first), _states(last)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g)
    net.zero_grad()
    F.cross_entropy(net.model(x), y).backward()
    net.step()
    assert _same(_states(last), before_last)
    assert not _same(_states(first), before_first)


@pytest.mark.parametrize("how", ["autograd_grad", "backward_inputs"])
def test_backward_for_the_input_only_stashes_no_update(how):
    # torch.autograd.grad(loss, x) / loss.backward(inputs=[x]) (saliency maps, gradient penalties) leave an
    # nn.Linear's weight.grad as it is, and the crossbar backend stashes nothing; aihwkit's backward stored (x, d)
    # all the same, so the next update applied it. Now such a pass leaves the pending update as it was: none
    # before any full backward; after a full backward (x1, d1) still -lr d1ᵀ x1 (the independent float product)
    # over 4 tiles; the input gradient still comes through the tiles (= the digital x-gradient of the same
    # weights within the GokmenVlasov periphery's noise: checked for shape and finiteness only here).
    cfg = crossbar_config_from(AnalogSettings(preset="GokmenVlasov", tile_size=8))
    layer = make_aihwkit_layer(nn.Linear(16, 12, bias=False), cfg, seed=2)
    g = torch.Generator().manual_seed(7)
    x1, d1 = torch.randn(5, 16, generator=g), torch.randn(5, 12, generator=g)

    def input_only_pass() -> torch.Tensor:
        x = torch.randn(3, 16, generator=g, requires_grad=True)
        loss = layer(x).square().sum()
        if how == "autograd_grad":
            (grad_x,) = torch.autograd.grad(loss, x)
        else:
            loss.backward(inputs=[x])
            grad_x = x.grad
        assert grad_x is not None and grad_x.shape == x.shape and bool(grad_x.isfinite().all())
        return grad_x

    input_only_pass()
    assert not layer.has_pending() and layer.pending_update(0.1) is None
    assert all(not t.analog_ctx.has_gradient() for t, _, _ in layer._tiles)
    layer(x1).backward(d1)
    input_only_pass()
    torch.testing.assert_close(layer.pending_update(0.1), -0.1 * d1.T @ x1)
    layer(x1).backward(d1, inputs=[t.analog_ctx for t, _, _ in layer._tiles])   # asks for the weights: stashes
    torch.testing.assert_close(layer.pending_update(0.1), -0.2 * d1.T @ x1)
