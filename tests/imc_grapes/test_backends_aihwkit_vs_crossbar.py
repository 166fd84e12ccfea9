"""The aihwkit backend and the crossbar backend build the same hardware from one ``TrainConfig``: the settings reach
aihwkit's tiles, the initial weights are programmed and clipped alike, forward, intended update and GRAPES's exact
importance agree exactly (ideal periphery, a grid of tiles), and the pulsed update realises the same share of the
intended change at the same learning rate, also where it saturates. (Accuracy after training: test_backends_aihwkit.)
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from imc_grapes.backends import AnalogSettings, build_network, crossbar_config_from
from imc_grapes.backends.network import _make_crossbar_layer
from imc_grapes.config import TrainConfig
from imc_grapes.data import make_synthetic

pytest.importorskip("aihwkit")

from imc_grapes.backends.aihwkit_backend import make_aihwkit_layer  # noqa: E402  (needs aihwkit)

DATA = make_synthetic(n_train=128, n_test=16, image_shape=(1, 8, 8), noise=1.0)


def _net(backend: str, seed: int = 3, lr: float = 0.1, model: str = "mlp", rule: str = "bp", **analog: object):
    settings: dict[str, object] = dict(preset="Ideal", ideal_periphery=True, sat_probe_every=1, tile_size=40)
    settings.update(analog)
    cfg = TrainConfig(dataset="synthetic", model=model, hidden=(48,), optimizer="grapes", rule=rule, lr=lr,
                      backend=backend, seed=seed, batch_size=64, analog=AnalogSettings(**settings))
    return build_network(cfg, (1, 8, 8), 10, "cpu")


def _backward(net) -> torch.Tensor:
    net.zero_grad()
    y = net.model(DATA.train.x[:64])
    F.cross_entropy(y, DATA.train.y[:64]).backward()
    return y.detach()


def test_analog_settings_reach_every_aihwkit_tile():
    settings = dict(preset="EcRam", device_overrides={"dw_min": 0.004}, dac_bits=5, adc_bits=6, out_noise=0.02,
                    tile_size=24, ideal_periphery=False)
    net = _net("aihwkit", **settings)
    for layer in net.analog_layers.values():
        assert len(layer._tiles) > 1                       # 64 -> 48 -> 10 on 24 x 24 tiles
        for tile, rows, cols in layer._tiles:
            rpu = tile.rpu_config
            assert rows.stop - rows.start <= 24 and cols.stop - cols.start <= 24
            for io in (rpu.forward, rpu.backward):
                assert (io.is_perfect, io.inp_res, io.out_res, io.out_noise) == (False, 1 / 30, 1 / 62, 0.02)
            assert type(rpu.device).__name__ == "LinearStepDevice" and rpu.device.dw_min == 0.004
            assert rpu.device.gamma_down == 0.5085 and rpu.mapping.digital_bias
    perfect = _net("aihwkit", ideal_periphery=True)
    for layer in perfect.analog_layers.values():
        assert all(t.rpu_config.forward.is_perfect and t.rpu_config.backward.is_perfect for t, _, _ in layer._tiles)


def test_initial_programming_clips_into_per_device_bounds_alike():
    """Weights uniform in ±2.5 on GokmenVlasov devices (bounds ±1 with a 30 % device-to-device spread): both
    backends clip each weight into its own device's bounds — the same share of weights, clipped to values with the
    same quartiles (within 0.03, several standard errors of 6,000 draws); the digital bias is copied exactly."""
    cfg = crossbar_config_from(AnalogSettings(preset="GokmenVlasov", ideal_periphery=True, tile_size=512))
    lin = nn.Linear(100, 100)
    with torch.no_grad():
        lin.weight.copy_(torch.rand(100, 100, generator=torch.Generator().manual_seed(0)) * 5 - 2.5)
    layers = {"crossbar": _make_crossbar_layer(lin, cfg, 5, "array", torch.device("cpu")),
              "aihwkit": make_aihwkit_layer(lin, cfg, 5)}
    w = lin.weight.detach()
    q = torch.tensor([0.25, 0.5, 0.75])
    stats = {}
    for name, layer in layers.items():
        got = layer.get_weights()
        assert torch.equal(layer.bias.detach(), lin.bias.detach())
        clipped = got != w
        assert bool((got[clipped].abs() < w[clipped].abs()).all())           # clipping only shrinks
        stats[name] = (float(clipped.float().mean()), torch.quantile(got[clipped & (w > 0)], q),
                       torch.quantile(got[clipped & (w < 0)], q))
    (fc, upc, downc), (fa, upa, downa) = stats["crossbar"], stats["aihwkit"]
    assert 0.5 < fc < 0.7 and abs(fc - fa) < 0.03, (fc, fa)
    torch.testing.assert_close(upc, upa, rtol=0, atol=0.03)
    torch.testing.assert_close(downc, downa, rtol=0, atol=0.03)


@pytest.mark.parametrize("model,rule", [("mlp", "bp"), ("mlp", "dfa"), ("cnn", "bp")])
def test_forward_intended_update_and_exact_importance_are_the_same(model, rule):
    """Ideal periphery, layers spread over a grid of 40 x 40 tiles, GRAPES (exact importance): the outputs, the
    intended weight change of every layer (GRAPES's error/input scales included) and the row and column
    importances of both backends agree to float rounding."""
    nets = {b: _net(b, model=model, rule=rule) for b in ("crossbar", "aihwkit")}
    out = {b: _backward(n) for b, n in nets.items()}
    torch.testing.assert_close(out["aihwkit"], out["crossbar"], rtol=1e-5, atol=1e-5)
    c, a = (nets[b].analog_layers for b in ("crossbar", "aihwkit"))
    for name in c:
        want = c[name].pending_update(0.1)
        torch.testing.assert_close(a[name].pending_update(0.1), want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))
        torch.testing.assert_close(a[name].row_importance("exact"), c[name].row_importance("exact"))
        torch.testing.assert_close(a[name].col_importance("exact"), c[name].col_importance("exact"))


@pytest.mark.parametrize("lr,low,high,tol", [(0.5, 0.9, 1.1, 0.08), (30.0, 0.3, 0.7, 0.03)])
def test_pulsed_update_realises_the_same_share_of_the_intended_change(lr, low, high, tol):
    """Constant-step devices (dw_min 0.01, no spread or noise), ideal periphery, BL 31 with update management: at
    lr 0.5 the pulses realise the intended change on average (ratio ~1); at lr 30 the pulse budget caps it
    (ratio ~0.4-0.6). The same lr gives the same ratio on both backends: the means over 8 seeds per layer agree
    within ``tol`` (one seed's ratio spreads by ~0.05 at lr 0.5, where few pulses fire per device, and by ~0.01 at
    lr 30: about 4 standard errors of the difference of the means)."""
    ratios = {}
    for backend in ("crossbar", "aihwkit"):
        per_seed = []
        for seed in range(8):
            net = _net(backend, seed=seed, lr=lr, device_overrides={"dw_min": 0.01})
            _backward(net)
            net.step()
            m = net.metrics()
            per_seed.append([m[f"sat/{k}"] for k in net.analog_layers])
        ratios[backend] = torch.tensor(per_seed).mean(0)
    c, a = ratios["crossbar"], ratios["aihwkit"]
    assert bool(((c > low) & (c < high) & (a > low) & (a < high)).all()), ratios
    assert float((c - a).abs().max()) < tol, ratios


def test_state_kept_puts_an_aihwkit_network_back_and_training_goes_on():
    """On a device without write noise aihwkit's state_dict round trip restores the weights exactly; the layer then
    still stashes and applies its pulsed updates (aihwkit gives its tiles new analog contexts on loading)."""
    net = _net("aihwkit", preset="GokmenVlasov", ideal_periphery=False)
    _backward(net)
    net.step()
    trained = net.read_weights()
    with net.state_kept():
        net.write_weights({k: torch.zeros_like(v) for k, v in trained.items()})
    restored = net.read_weights()
    for k, v in trained.items():
        assert torch.equal(restored[k], v), k
    _backward(net)
    assert all(layer.has_pending() for layer in net.analog_layers.values())
    net.step()
    assert all(not torch.equal(net.read_weights()[k], v) for k, v in trained.items())
