"""Building networks on every backend: same initial weights, weight access, optimizers, settings, GRAPES hooks
on analog layers, and the metrics the training loop records."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import crossbar
import devices
from imc_grapes.backends import (AnalogSettings, bits_to_res, build_network, crossbar_config_from, make_optimizer)
from imc_grapes.config import TrainConfig
from imc_grapes.grapes import attach_grapes
from imc_grapes.models import build_model

BACKENDS = ["digital", "crossbar", "aihwkit"]


def _cfg(backend: str, model: str = "mlp", optimizer: str = "grapes", rule: str = "bp",
         **analog: object) -> TrainConfig:
    settings: dict[str, object] = dict(tile_size=32, sat_probe_every=2)
    settings.update(analog)
    return TrainConfig(dataset="synthetic", model=model, hidden=(10, 6) if model == "mlp" else (3,), rule=rule,
                       optimizer=optimizer, lr=0.05, backend=backend, seed=7, analog=AnalogSettings(**settings))


def _step(net, n: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)
    net.zero_grad()
    loss = F.cross_entropy(net.model(x), y)
    loss.backward()
    net.step()
    return loss.detach()


def _needs(backend: str) -> None:
    if backend == "aihwkit":
        pytest.importorskip("aihwkit")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_same_initial_weights_as_the_digital_model(backend, model):
    _needs(backend)
    cfg = _cfg(backend, model, preset="Ideal")
    ref = build_model(model, input_shape=(1, 8, 8), n_classes=10, hidden=list(cfg.hidden), rule="bp", seed=cfg.seed)
    expected = {n: m.weight.detach() for n, m in ref.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
    got = build_network(cfg, (1, 8, 8), 10, "cpu").read_weights()
    assert set(got) == set(expected)
    for name, w in expected.items():
        torch.testing.assert_close(got[name], w)


def test_initial_weights_are_clipped_into_each_devices_bounds():
    cfg = _cfg("crossbar", preset="ReRamSB")
    ref = build_model("mlp", input_shape=(1, 8, 8), n_classes=10, hidden=[10, 6], seed=cfg.seed)
    net = build_network(cfg, (1, 8, 8), 10, "cpu")
    clipped = 0
    for name, layer in net.analog_layers.items():
        tile = layer.inner.tile
        p = tile.params
        w_min, w_max = tile.grid.from_tiles(p.w_min), tile.grid.from_tiles(p.w_max)
        w_dig = dict(ref.named_modules())[name].weight.detach()
        # the hidden (persistent) states are the clipped weights; ReRamSB's write noise sits on top of them
        torch.testing.assert_close(tile.read(hidden=True), torch.minimum(torch.maximum(w_dig, w_min), w_max))
        clipped += int(((w_dig < w_min) | (w_dig > w_max)).sum())
    assert clipped > 0                  # the device-to-device spread of the bounds really clips some weights


@pytest.mark.parametrize("backend", BACKENDS)
def test_write_then_read_weights(backend):
    _needs(backend)
    net = build_network(_cfg(backend, "cnn", preset="Ideal"), (1, 8, 8), 10, "cpu")
    w = {k: torch.randn_like(v) * 0.1 for k, v in net.read_weights().items()}
    net.write_weights(w)
    for k, v in net.read_weights().items():
        torch.testing.assert_close(v, w[k])
    with pytest.raises(ValueError, match="unknown layer"):
        net.write_weights({"nope": torch.zeros(1)})


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("model,rule", [("mlp", "bp"), ("mlp", "fa"), ("mlp", "dfa"), ("cnn", "bp")])
@pytest.mark.parametrize("optimizer", ["sgd", "grapes", "grapes-local", "layer-mean"])
def test_every_combination_trains_a_step(backend, model, rule, optimizer):
    _needs(backend)
    net = build_network(_cfg(backend, model, optimizer, rule), (1, 8, 8), 10, "cpu")
    w0 = net.read_weights()
    loss = _step(net)
    assert torch.isfinite(loss)
    w1 = net.read_weights()
    assert all(not torch.equal(w0[k], w1[k]) for k in w0)
    assert (net.grapes is None) == (optimizer == "sgd")
    json.dumps(net.cost_summary())                     # JSON-friendly
    m = net.metrics()
    if backend != "digital":
        assert {f"sat/{k}" for k in net.analog_layers} <= set(m)     # step 0 is a probe step
    assert "cost/energy_pj_per_step" in m


def test_digital_backend_is_the_plain_torch_loop():
    cfg = _cfg("digital")
    net = build_network(cfg, (1, 8, 8), 10, "cpu")
    ref = build_model("mlp", input_shape=(1, 8, 8), n_classes=10, hidden=[10, 6], seed=cfg.seed)
    handle = attach_grapes(ref, "propagated")
    opt = torch.optim.SGD(ref.parameters(), lr=cfg.lr)
    for i in range(3):
        g = torch.Generator().manual_seed(i)
        x, y = torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g)
        _step(net, seed=i)
        opt.zero_grad()
        F.cross_entropy(ref(x), y).backward()
        opt.step()
    handle.remove()
    for name, w in net.read_weights().items():
        torch.testing.assert_close(w, dict(ref.named_modules())[name].weight.detach())


def test_analog_weights_are_not_given_to_the_digital_optimizer():
    net = build_network(_cfg("crossbar"), (1, 8, 8), 10, "cpu")
    assert net.optimizer is None                     # bias-free model: every weight is analog
    cfg = _cfg("crossbar").replace(base_optimizer="adam", lr=0.01)
    opt = make_optimizer(cfg, [nn.Parameter(torch.zeros(3))])
    assert isinstance(opt, torch.optim.Adam) and opt.defaults["lr"] == 0.01


def test_a_layer_frozen_at_build_and_unfrozen_later_is_stepped_by_the_digital_optimizer():
    """The digital optimizer holds every digital parameter, also one frozen when the network is built: torch's SGD
    skips a parameter without a gradient, so a frozen layer does not move (no weight decay, no momentum drift) and,
    unfrozen, moves as SGD says. Hand values: x = [3, 4], loss = w2 · (w1 · x), lr 0.1, momentum 0.9, decay 0.5."""
    from imc_grapes.backends import Network

    first, second = nn.Linear(2, 1, bias=False), nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        first.weight.copy_(torch.tensor([[1.0, 2.0]]))
        second.weight.fill_(1.0)
    model = nn.Sequential(first, second)
    first.requires_grad_(False)
    cfg = TrainConfig(dataset="synthetic", backend="digital", optimizer="sgd", lr=0.1, momentum=0.9,
                      weight_decay=0.5)
    net = Network(cfg, model, {}, torch.device("cpu"))
    x = torch.tensor([[3.0, 4.0]])

    def step() -> None:
        net.zero_grad()
        model(x).sum().backward()
        net.step()

    step()   # h = 11; w2: d = 11 + 0.5·1 = 11.5, w2 = 1 − 1.15; w1 frozen
    torch.testing.assert_close(first.weight, torch.tensor([[1.0, 2.0]]))
    torch.testing.assert_close(second.weight, torch.tensor([[-0.15]]))
    first.requires_grad_(True)
    step()   # w1: d = w2·x + 0.5·w1 = [−0.45 + 0.5, −0.6 + 1] = [0.05, 0.4] (fresh momentum), w1 −= 0.1·d
    torch.testing.assert_close(first.weight, torch.tensor([[0.995, 1.96]]))
    # w2: d = 11 + 0.5·(−0.15) = 10.925, buf = 0.9·11.5 + 10.925 = 21.275, w2 = −0.15 − 2.1275
    torch.testing.assert_close(second.weight, torch.tensor([[-2.2775]]))
    first.requires_grad_(False)
    step()   # frozen again: its momentum buffer [0.05, 0.4] and the decay do not move it
    torch.testing.assert_close(first.weight, torch.tensor([[0.995, 1.96]]))
    # w2: h = 0.995·3 + 1.96·4 = 10.825, d = 10.825 − 0.5·2.2775 = 9.68625, buf = 0.9·21.275 + d = 28.83375
    torch.testing.assert_close(second.weight, torch.tensor([[-5.160875]]))
    first.requires_grad_(True)
    step()   # w1: d = −5.160875·[3, 4] + 0.5·w1 = [−14.985125, −19.6635]; its buffer resumes: 0.9·[0.05, 0.4] + d
    torch.testing.assert_close(first.weight, torch.tensor([[2.4890125, 3.89035]]))


def test_lr_scales_the_analog_update():
    deltas = []
    for lr in (0.01, 0.04):
        cfg = _cfg("crossbar", optimizer="sgd", preset="Ideal", ideal_periphery=True).replace(lr=lr)
        net = build_network(cfg, (1, 8, 8), 10, "cpu")
        w0 = net.read_weights()
        _step(net)
        deltas.append((net.read_weights()["layers.2"] - w0["layers.2"]).norm())
    assert float(deltas[1] / deltas[0]) == pytest.approx(4.0, rel=0.25)


def test_dfa_factors_reach_analog_layers_as_error_and_input_scales():
    net = build_network(_cfg("crossbar", rule="dfa"), (1, 8, 8), 10, "cpu")
    _step(net)
    l0, l1 = net.analog_layers["layers.0"], net.analog_layers["layers.1"]
    assert l0.error_scale is None and l0.input_scale is None      # first hidden layer unmodulated
    p_post, p_pre = net.grapes.modulations["layers.1"].amax(1), net.grapes.modulations["layers.1"].amax(0)
    assert l1.error_scale is not None and l1.input_scale is not None
    torch.testing.assert_close(torch.outer(l1.error_scale, l1.input_scale), net.grapes.modulations["layers.1"])
    assert p_post.shape == (6,) and p_pre.shape == (10,)
    net.close()
    assert l1.error_scale is None and l1.input_scale is None


def test_hooks_local_mode_on_crossbar_layers_sets_error_scale():
    layer = crossbar.AnalogLinear(4, 3, bias=False, seed=0)
    model = nn.Sequential(layer, nn.ReLU(), crossbar.AnalogLinear(3, 2, bias=False, seed=1))
    handle = attach_grapes(model, "local", layers=[layer])
    model(torch.randn(5, 4)).sum().backward()
    torch.testing.assert_close(layer.error_scale, handle.modulations["0"])
    handle.remove()
    assert layer.error_scale is None
    with pytest.raises(ValueError, match="input_scale"):
        attach_grapes(model, "local", layers=[layer, model[2]], rule="dfa")


def test_hooks_refresh_every_k_batches():
    model = build_model("mlp", input_shape=(4,), n_classes=3, hidden=[5], seed=0)
    with pytest.raises(ValueError, match="refresh_every must be an integer >= 1"):
        attach_grapes(model, refresh_every=0)
    handle = attach_grapes(model, refresh_every=3)
    factors = []
    for i in range(7):
        model(torch.randn(2, 4)).sum().backward()
        factors.append(handle.modulations["layers.0"].clone())
        with torch.no_grad():
            model.layers[0].weight.mul_(1.0 + 0.1 * torch.rand_like(model.layers[0].weight))
    assert handle.refresh_count == 3 and handle.train_batches == 7
    assert torch.equal(factors[0], factors[2]) and not torch.equal(factors[2], factors[3])


def test_settings_and_config_translation():
    s = AnalogSettings(preset="GokmenVlasov", tile_size=64, dac_bits=5, adc_bits=8, out_noise=0.02)
    c = crossbar_config_from(s)
    assert isinstance(c.device, devices.GokmenVlasovPresetDevice)
    assert c.tile_rows == c.tile_cols == 64
    assert c.forward.inp_res == pytest.approx(1 / 30) and c.forward.out_res == pytest.approx(1 / 254)
    assert c.forward.out_noise == 0.02 and c.backward == c.forward
    assert crossbar_config_from(AnalogSettings(ideal_periphery=True)).forward.is_perfect
    assert bits_to_res(0) == 0.0 and bits_to_res(2) == 0.5 and bits_to_res(9) == pytest.approx(1 / 510)
    # one bit (res = 1: grid step 2 * bound) rounds every value within the range to 0, in aihwkit as here: every
    # analog output would read 0, so it is refused, naming the field
    with pytest.raises(ValueError, match="bits_to_res.bits"):
        bits_to_res(1)
    for field in ("dac_bits", "adc_bits"):
        with pytest.raises(ValueError, match=f"AnalogSettings.{field} = 1"):
            AnalogSettings(**{field: 1})
    for field, value, msg in [("sat_probe_every", -1, "sat_probe_every must be an integer ≥ 0"),
                              ("importance_g_offset", -0.1,
                               "importance_g_offset must be a finite number >= 0, at most 3\\.4e\\+38"),
                              ("importance_offset_correction", "yes",
                               "importance_offset_correction must be true or false"),
                              ("energy_table", "", "energy_table must be None or the path")]:
        with pytest.raises(ValueError, match=msg):
            AnalogSettings(**{field: value})
    assert AnalogSettings.from_dict(AnalogSettings(sat_probe_every=5).to_dict()).sat_probe_every == 5



_INF, _NAN = float("inf"), float("nan")


@pytest.mark.parametrize("field,value,message", [
    ("out_noise", _INF, "out_noise must be a finite number >= 0, at most 3\\.4e\\+38 .*, got inf"),
    ("out_noise", -_INF, "out_noise must be a finite number >= 0, at most 3\\.4e\\+38"),
    ("out_noise", _NAN, "out_noise must be a finite number >= 0, at most 3\\.4e\\+38 .*, got nan"),
    ("out_noise", -0.1, "out_noise must be a finite number >= 0, at most 3\\.4e\\+38"),
    ("out_noise", "0.06", "out_noise must be a finite number >= 0, at most 3\\.4e\\+38 .*, got '0.06'"),
    ("out_noise", True, "out_noise must be a finite number >= 0, at most 3\\.4e\\+38 .*, got True"),
    ("importance_g_offset", _INF, "importance_g_offset must be a finite number >= 0, at most 3\\.4e\\+38"),
    ("importance_g_offset", _NAN, "importance_g_offset must be a finite number >= 0, at most 3\\.4e\\+38"),
    ("importance_g_offset", True, "importance_g_offset must be a finite number >= 0, at most 3\\.4e\\+38"),
    ("ideal_periphery", "no", "ideal_periphery must be true or false, got 'no'"),
    ("ideal_periphery", 1, "ideal_periphery must be true or false, got 1"),
    ("ideal_periphery", None, "ideal_periphery must be true or false, got None"),
    ("importance_offset_correction", 0, "importance_offset_correction must be true or false, got 0"),
    ("tile_size", True, "tile_size must be an integer ≥ 1, got True"),
    ("tile_size", 64.0, "tile_size must be an integer ≥ 1, got 64.0"),
    ("dac_bits", True, r"dac_bits must be an integer in \[0, 24\]"),
    ("adc_bits", 8.0, r"adc_bits must be an integer in \[0, 24\]"),
    ("importance_every", True, "importance_every must be an integer ≥ 1"),
    ("sat_probe_every", False, "sat_probe_every must be an integer ≥ 0"),
    ("preset", ["ReRamSB"], "preset must be one of"),
    ("importance", ["exact"], "importance must be one of"),
    ("device_overrides", "dw_min", "device_overrides must be a dict of device fields and values"),
])
def test_settings_types_and_finite_values_are_checked(field, value, message):
    """Every field of AnalogSettings rejects a value of the wrong type (a bool for a number, a string for a bool) and
    a number field a non-finite value, naming the field; an int for a float field is fine."""
    with pytest.raises(ValueError, match=rf"^AnalogSettings\.{message}"):
        AnalogSettings(**{field: value})


def test_settings_take_ints_for_floats_and_bools_from_a_dict():
    s = AnalogSettings.from_dict({"out_noise": 0, "importance_g_offset": 1, "ideal_periphery": True,
                                  "importance_offset_correction": False})
    assert s.out_noise == 0 and s.importance_g_offset == 1 and s.ideal_periphery is True
    with pytest.raises(ValueError, match=r"^AnalogSettings\.ideal_periphery must be true or false, got 'no'"):
        AnalogSettings.from_dict({"ideal_periphery": "no"})
    with pytest.raises(ValueError, match=r"^ReRamSBPresetDevice\.mult_noise must be true or false, got 'no'"):
        AnalogSettings(device_overrides={"mult_noise": "no"})
    with pytest.raises(ValueError, match=r"^ReRamSBPresetDevice\.dw_min must be a number"):
        AnalogSettings(device_overrides={"dw_min": True})


def test_a_unidirectional_device_is_warned_about():
    """One device per weight with w_min = 0 (PCM) cannot hold a negative weight: the translation warns, naming the
    preset; a bidirectional device or one made signed by an override does not warn."""
    import warnings

    with pytest.warns(UserWarning, match=r"'PCM' is unidirectional \(w_min = 0\).*OneSidedUnitCell"):
        crossbar_config_from(AnalogSettings(preset="PCM"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        crossbar_config_from(AnalogSettings(preset="ReRamSB"))
        crossbar_config_from(AnalogSettings(preset="PCM", device_overrides={"w_min": -2.0}))


def test_device_overrides_reach_both_backends():
    s = AnalogSettings(preset="GokmenVlasov", device_overrides={"dw_min": 0.004})
    assert crossbar_config_from(s).device.dw_min == 0.004
    pytest.importorskip("aihwkit")
    from crossbar import to_aihwkit_rpu_config

    assert to_aihwkit_rpu_config(crossbar_config_from(s)).device.dw_min == pytest.approx(0.004)


@pytest.mark.parametrize("read", ["apply_update", "pending_update"])
def test_crossbar_layer_refuses_a_stashed_pair_modified_in_place(read: str) -> None:
    """The crossbar backend's layer reads its inner layer's stash itself (GRAPES scales ``x`` / ``d`` before its
    one ``tile.update``): an input refilled in place after backward made it apply the new values, where the inner
    layer's own ``analog_update`` raises. It raises now as well, nothing applied; a fresh input per pass gives the
    update ``-lr gᵀ x`` (ideal device, exact float update)."""
    from imc_grapes.backends.layers import CrossbarLayer

    cfg = crossbar.CrossbarConfig.perfect(device=devices.IdealDevice(),
                                          update=crossbar.UpdateParameters(pulse_type="none"))
    layer = CrossbarLayer(crossbar.AnalogLinear(4, 3, bias=False, rpu_config=cfg, dtype=torch.float64, seed=0))
    w0 = layer.get_weights()
    x1, x2 = torch.randn(2, 4, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
    g = torch.randn(2, 3, dtype=torch.float64)
    buf = x1.clone()
    layer(buf).backward(g)
    buf.copy_(x2)
    with pytest.raises(RuntimeError, match="pending_pairs: the input x of stashed pair 0 was modified in place"):
        getattr(layer, read)(0.1)
    assert torch.equal(layer.get_weights(), w0) and int(layer.inner.tile.counters["updates"]) == 0
    layer.clear()
    layer(x1.clone()).backward(g)
    torch.testing.assert_close(layer.pending_update(0.1), -0.1 * g.T @ x1, rtol=0, atol=1e-12)
    layer.apply_update(0.1)
    torch.testing.assert_close(layer.get_weights(), w0 - 0.1 * g.T @ x1, rtol=0, atol=1e-12)


def test_a_converted_nn_conv2d_keeps_its_string_padding() -> None:
    """The crossbar backend converts an ``nn.Conv2d(padding='same')`` (it refused every string padding)."""
    from crossbar import CrossbarConfig
    from devices import IdealDevice
    from imc_grapes.backends.network import _make_crossbar_layer

    conv = torch.nn.Conv2d(2, 3, 3, padding="same", bias=False)
    layer = _make_crossbar_layer(conv, CrossbarConfig.perfect(device=IdealDevice()), 0, "array", torch.device("cpu"))
    x = torch.randn(1, 2, 5, 6, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(layer(x), conv(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["crossbar", "aihwkit"])
def test_write_weights_refuses_non_finite_analog_weights_naming_the_layer(backend):
    """A NaN / Inf weight is refused before anything is written (the other layers keep theirs too), with the
    layer's name and the number of NaN and Inf entries."""
    _needs(backend)
    net = build_network(_cfg(backend, "mlp", preset="Ideal"), (1, 8, 8), 10, "cpu")
    before = net.read_weights()
    names = list(net.analog_layers)
    assert len(names) >= 2
    w = {k: torch.full_like(v, 0.05) for k, v in before.items()}
    w[names[1]][0, :3] = float("nan")
    w[names[1]][1, 0] = float("-inf")
    n = w[names[1]].numel()
    with pytest.raises(ValueError) as err:
        net.write_weights(w)
    assert str(err.value) == (f"write_weights: layer {names[1]!r}: weight must be finite, got 3 NaN and 1 Inf of "
                              f"its {n} entries (shape {tuple(w[names[1]].shape)})")
    for k, v in net.read_weights().items():
        assert torch.equal(v, before[k]), k
    layer = net.analog_layers[names[1]]
    with pytest.raises(ValueError, match=r"^(AnalogLinear|AihwkitLayer)\.set_weights: weight must be finite, "
                                         r"got 3 NaN and 1 Inf"):
        layer.set_weights(w[names[1]])


def test_make_aihwkit_layer_refuses_a_non_finite_digital_layer():
    pytest.importorskip("aihwkit")
    from imc_grapes.backends.aihwkit_backend import make_aihwkit_layer

    lin = nn.Linear(4, 3)
    with torch.no_grad():
        lin.weight[2, 1] = float("inf")
    with pytest.raises(ValueError, match=r"^make_aihwkit_layer\(Linear\): weight must be finite, got 0 NaN and 1 "
                                         r"Inf of its 12 entries"):
        make_aihwkit_layer(lin, crossbar_config_from(AnalogSettings(preset="Ideal")), seed=0)


def test_the_finite_check_stays_out_of_the_training_step(monkeypatch):
    """The check reads a value back to the host (a GPU synchronisation): a training step (forward, backward,
    GRAPES, pulsed update) never calls it; writing weights does."""
    import crossbar.modules
    import crossbar.replicas
    import crossbar.tiles

    calls = []
    real = crossbar.tiles.check_finite_weights

    def counted(where, weight):
        calls.append(where)
        real(where, weight)

    for module in (crossbar, crossbar.tiles, crossbar.modules, crossbar.replicas):
        monkeypatch.setattr(module, "check_finite_weights", counted)
    net = build_network(_cfg("crossbar", "mlp", optimizer="grapes"), (1, 8, 8), 10, "cpu")
    calls.clear()
    for seed in range(3):
        assert torch.isfinite(_step(net, seed=seed))
    assert calls == []
    name = next(iter(net.analog_layers))
    net.write_weights({name: net.read_weights()[name]})
    assert calls == [f"write_weights: layer {name!r}", "AnalogLinear.set_weights", "TileArray.program"]
