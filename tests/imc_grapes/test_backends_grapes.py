"""GRAPES on analog layers reproduces digital GRAPES; the pulse budget's saturation is measured correctly.

Setup: noise-free ideal devices (preset ``Ideal``: every pulse exactly ±0.001, bounds ±1000) and an ideal
periphery, so the only difference from the digital network is the stochastic pulsed update.

1. The *intended* update of every analog layer (``-lr Σ (d⊙s_d)(x⊙s_x)ᵀ`` from what the layer stashed and the
   GRAPES scales it holds) equals the digital GRAPES weight change to float precision — for BP, FA, DFA, the
   MLP and the CNN, propagated and local form and the layer-mean control, on the crossbar and the aihwkit
   backend.
2. The *realised* change, averaged over R repeated updates from the same state (``write_weights`` restores it),
   matches the digital GRAPES change within the pulse-quantization noise (relative Frobenius error < 0.15,
   while GRAPES and SGD differ by > 0.3 on every modulated layer: the test tells them apart).
3. Saturation: for one sample the expected pulsed change has a closed form (update management with the
   budget BL = 31 exceeded): row ``i`` of the intended change is realised times ``min(1, 31·dw_min /
   max_j |ΔW_int,ij|)``. The ``sat/<layer>`` probe must match the ratio computed from that formula.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from imc_grapes.backends import AnalogSettings, build_network
from imc_grapes.config import TrainConfig
from imc_grapes.data import make_synthetic

DATA = make_synthetic(n_train=64, n_test=8, image_shape=(1, 8, 8), seed=5)
X, Y = DATA.train.x, DATA.train.y
CASES = [("mlp", "bp"), ("mlp", "fa"), ("mlp", "dfa"), ("cnn", "bp")]


def _cfg(backend: str, optimizer: str, model: str, rule: str, lr: float, **analog: object) -> TrainConfig:
    settings: dict[str, object] = dict(preset="Ideal", ideal_periphery=True, tile_size=16, sat_probe_every=0)
    settings.update(analog)
    return TrainConfig(dataset="synthetic", model=model, hidden=(12, 10) if model == "mlp" else (3,), rule=rule,
                       optimizer=optimizer, lr=lr, backend=backend, seed=1, analog=AnalogSettings(**settings))


def _digital_delta(optimizer: str, model: str, rule: str, lr: float, x=X, y=Y) -> dict[str, torch.Tensor]:
    net = build_network(_cfg("digital", optimizer, model, rule, lr), (1, 8, 8), 10, "cpu")
    w0 = net.read_weights()
    net.zero_grad()
    F.cross_entropy(net.model(x), y).backward()
    net.step()
    return {k: v - w0[k] for k, v in net.read_weights().items()}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("backend", ["crossbar", "aihwkit"])
@pytest.mark.parametrize("optimizer", ["grapes", "grapes-local", "layer-mean"])
@pytest.mark.parametrize("model,rule", CASES)
def test_intended_update_equals_digital_grapes(backend, optimizer, model, rule):
    if backend == "aihwkit":
        pytest.importorskip("aihwkit")
    lr = 0.3
    net = build_network(_cfg(backend, optimizer, model, rule, lr), (1, 8, 8), 10, "cpu")
    net.zero_grad()
    F.cross_entropy(net.model(X), Y).backward()
    intended = {k: layer.pending_update(lr) for k, layer in net.analog_layers.items()}
    digital = _digital_delta(optimizer, model, rule, lr)
    sgd = _digital_delta("sgd", model, rule, lr)
    modulated = 0
    for name, d in digital.items():
        assert intended[name] is not None
        torch.testing.assert_close(intended[name], d, rtol=1e-4, atol=1e-7)
        modulated += _rel(sgd[name], d) > 0.3
    assert modulated >= 1          # GRAPES changed at least one layer's update a lot


@pytest.mark.parametrize("optimizer", ["grapes", "grapes-local"])
@pytest.mark.parametrize("model,rule", CASES)
def test_pulsed_update_reproduces_digital_grapes_on_average(optimizer, model, rule):
    lr, repeats = 0.3, 32
    net = build_network(_cfg("crossbar", optimizer, model, rule, lr), (1, 8, 8), 10, "cpu")
    w0 = net.read_weights()
    mean = {k: torch.zeros_like(v) for k, v in w0.items()}
    for _ in range(repeats):
        net.zero_grad()
        F.cross_entropy(net.model(X), Y).backward()
        net.step()
        for k, v in net.read_weights().items():
            mean[k] += (v - w0[k]) / repeats
        net.write_weights(w0)
    digital = _digital_delta(optimizer, model, rule, lr)
    sgd = _digital_delta("sgd", model, rule, lr)
    for name, d in digital.items():
        assert _rel(mean[name], d) < 0.15, name
        if _rel(sgd[name], d) > 0.3:                       # a modulated layer: the analog run is GRAPES, not SGD
            assert _rel(mean[name], sgd[name]) > 0.25, name


def test_saturation_probe_matches_the_closed_form_of_the_pulse_budget():
    lr, repeats, dw_min, bl = 0.01, 64, 1e-3, 31
    x, y = X[:1], Y[:1]
    net = build_network(_cfg("crossbar", "grapes", "mlp", "bp", lr, sat_probe_every=1, tile_size=64), (1, 8, 8), 10,
                        "cpu")
    w0 = net.read_weights()
    net.zero_grad()
    F.cross_entropy(net.model(x), y).backward()
    intended = {k: layer.pending_update(lr) for k, layer in net.analog_layers.items()}
    net.zero_grad()
    net.metrics()
    mean = {k: torch.zeros_like(v) for k, v in w0.items()}
    for _ in range(repeats):
        net.zero_grad()
        F.cross_entropy(net.model(x), y).backward()
        net.step()
        for k, v in net.read_weights().items():
            mean[k] += (v - w0[k]) / repeats
        net.write_weights(w0)
    sat = net.metrics()
    saturated = 0
    for name, inten in intended.items():
        row_max = inten.abs().amax(dim=1, keepdim=True)
        factor = torch.clamp(bl * dw_min / row_max, max=1.0)
        expected = inten * factor
        ratio = float((expected * inten).sum() / inten.square().sum())
        saturated += ratio < 0.5
        assert sat[f"sat/{name}"] == pytest.approx(ratio, abs=0.03), name
        assert _rel(mean[name], expected) < 0.1, name
    assert saturated >= 1          # the case really exceeds the pulse budget


def test_small_updates_do_not_saturate():
    net = build_network(_cfg("crossbar", "grapes", "mlp", "bp", 0.05, sat_probe_every=1), (1, 8, 8), 10, "cpu")
    for _ in range(3):
        net.zero_grad()
        F.cross_entropy(net.model(X), Y).backward()
        net.step()
    sat = {k: v for k, v in net.metrics().items() if k.startswith("sat/")}
    assert set(sat) == {"sat/layers.0", "sat/layers.1", "sat/layers.2"}
    for v in sat.values():
        assert v == pytest.approx(1.0, abs=0.1)
