"""Recurrent models for sequential MNIST: against torch's own RNN/LSTM, GRAPES per unit at every time step,
analog conversion, and the custom trainer."""
import json

import pytest
import torch
from torch import nn

from imc_grapes.backends import AnalogSettings, CrossbarLayer
from imc_grapes.config import TrainConfig
from imc_grapes.data import make_synthetic
from imc_grapes.experiments import build_custom_model, custom_network, train_custom
from imc_grapes.grapes import attach_grapes
from imc_grapes.recurrent import RecurrentLayer, SequenceClassifier, image_to_sequence


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_image_is_read_row_by_row():
    x = torch.arange(2 * 1 * 3 * 4, dtype=torch.float32).reshape(2, 1, 3, 4)
    seq = image_to_sequence(x)
    assert seq.shape == (3, 2, 4)
    for t in range(3):
        assert torch.equal(seq[t], x[:, 0, t, :])


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_layer_matches_torch_reference(cell):
    layer = RecurrentLayer(cell, 5, 7, torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = (nn.LSTM if cell == "lstm" else nn.RNN)(5, 7, dtype=torch.float64)  # gate order i, f, g, o as ours
    with torch.no_grad():
        ref.weight_ih_l0.copy_(layer.inp.weight)
        ref.weight_hh_l0.copy_(layer.rec.weight)
        ref.bias_hh_l0.copy_(layer.rec.bias)
        ref.bias_ih_l0.zero_()
    x = torch.randn(6, 3, 5, dtype=torch.float64)
    torch.testing.assert_close(layer(x), ref(x)[0])


def test_init_orthogonal_recurrence_and_forget_bias():
    layer = RecurrentLayer("lstm", 4, 6, torch.Generator().manual_seed(1), dtype=torch.float64)
    for k in range(4):
        u = layer.rec.weight[6 * k:6 * (k + 1)]
        torch.testing.assert_close(u @ u.T, torch.eye(6, dtype=torch.float64))
    assert layer.rec.bias[6:12].tolist() == [1.0] * 6 and layer.rec.bias[:6].abs().sum() == 0
    bound = (6 / 4) ** 0.5
    assert layer.inp.weight.abs().max() <= bound


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_grapes_modulates_the_input_branch_only(cell):
    torch.manual_seed(0)
    x, y = torch.randn(5, 1, 6, 4, dtype=torch.float64), torch.randint(0, 3, (5,))

    def grads(mode):
        model = SequenceClassifier(cell, 4, (8,), 3, seed=2, dtype=torch.float64)
        handle = attach_grapes(model, mode) if mode else None
        nn.functional.cross_entropy(model(x), y).backward()
        if handle:
            handle.remove()
        return model, {n: p.grad.clone() for n, p in model.named_parameters()}

    model, plain = grads(None)
    _, mod = grads("propagated")
    w = model.layers[0].inp.weight.detach()
    f = w.abs().sum(1)  # one factor per row of W (LSTM: per gate row)
    m = (2 * f / f.max()).clamp(1, 2)
    torch.testing.assert_close(mod["layers.0.inp.weight"], m[:, None] * plain["layers.0.inp.weight"])
    for name in ("layers.0.rec.weight", "layers.0.rec.bias", "readout.weight"):
        torch.testing.assert_close(mod[name], plain[name], msg=f"{name} must not be modulated")


def test_stacked_layers_propagate_the_upper_factor():
    torch.manual_seed(0)
    x, y = torch.randn(4, 1, 5, 3, dtype=torch.float64), torch.randint(0, 2, (4,))

    def grad_w0(mode):
        model = SequenceClassifier("rnn", 3, (6, 6), 2, seed=3, dtype=torch.float64)
        h = attach_grapes(model, mode) if mode else None
        nn.functional.cross_entropy(model(x), y).backward()
        if h:
            h.remove()
        return model, model.layers[0].inp.weight.grad.clone()

    model, plain = grad_w0(None)
    _, local = grad_w0("local")
    _, prop = grad_w0("propagated")
    f0 = model.layers[0].inp.weight.detach().abs().sum(1)
    m0 = (2 * f0 / f0.max()).clamp(1, 2)
    torch.testing.assert_close(local, m0[:, None] * plain)  # local: own factor only
    assert not torch.allclose(prop, local), "propagated: layer 1's factor reaches layer 0 through its input"


def test_crossbar_conversion_keeps_weights_and_trains():
    cfg = TrainConfig(dataset="synthetic", backend="crossbar", optimizer="grapes", lr=0.1,
                      analog=AnalogSettings(preset="Ideal"), extra={"model": {"kind": "lstm", "hidden": [6]}})
    digital = build_custom_model(cfg.extra["model"], (1, 8, 8), 3, seed=0)
    w_inp = digital.layers[0].inp.weight.detach().clone()
    net = custom_network(cfg, build_custom_model(cfg.extra["model"], (1, 8, 8), 3, seed=0), "cpu")
    assert sorted(net.analog_layers) == ["layers.0.inp", "layers.0.rec", "readout"]
    assert all(isinstance(m, CrossbarLayer) for m in net.analog_layers.values())
    torch.testing.assert_close(net.analog_layers["layers.0.inp"].get_weights(), w_inp)  # same initial weights
    x, y = torch.randn(4, 1, 8, 8), torch.randint(0, 3, (4,))
    net.zero_grad()
    nn.functional.cross_entropy(net.model(x), y).backward()
    rec = net.analog_layers["layers.0.rec"]
    assert rec.inner.stashed == 8, "the recurrent matrix is called once per step: one (x, d) per step"
    before = rec.get_weights().clone()
    net.step()
    assert not torch.equal(before, rec.get_weights())
    assert net.grapes is not None and "layers.0.inp" in net.grapes.modulations
    net.close()


def test_train_custom_writes_files_and_is_deterministic(tmp_path):
    data = make_synthetic(200, 60, n_classes=3, image_shape=(1, 8, 8), seed=0)
    cfg = TrainConfig(dataset="synthetic", optimizer="grapes", lr=0.3, batch_size=20, epochs=2, evals_per_epoch=2,
                      extra={"model": {"kind": "lstm", "hidden": [8]}})
    a = train_custom(cfg, tmp_path / "a", dataset=data, progress=False, log=lambda s: None)
    b = train_custom(cfg, None, dataset=data, progress=False, log=lambda s: None)
    assert a.status == "completed" and len(a.history) == 4
    assert [h["test_acc"] for h in a.history] == [h["test_acc"] for h in b.history]
    saved = json.loads((tmp_path / "a" / "results.json").read_text())
    assert saved["config"]["extra"]["model"]["kind"] == "lstm" and saved["status"] == "completed"
    assert (tmp_path / "a" / "metrics.csv").read_text().count("\n") == 5
    assert any(k.startswith("M_mean/") for k in a.history[-1])


def test_train_custom_evaluates_after_programming_and_drift_like_train(tmp_path):
    """``inference_times`` (was silently ignored for recurrent/spiking models): the trained analog model is read at
    each time after programming noise and drift, recorded in results.json, and training itself is unchanged."""
    data = make_synthetic(120, 60, n_classes=3, image_shape=(1, 8, 8), seed=0)
    base = dict(dataset="synthetic", backend="crossbar", lr=0.3, batch_size=20, epochs=1,
                extra={"model": {"kind": "snu", "hidden": [8]}})
    plain = train_custom(TrainConfig(**base), None, dataset=data, progress=False, log=lambda s: None)
    drift = train_custom(TrainConfig(**base, inference_times=(1.0, 86400.0)), tmp_path, dataset=data,
                         progress=False, log=lambda s: None)
    untimed = [{k: v for k, v in row.items() if not k.endswith("_s")} for row in plain.history]
    assert [{k: v for k, v in row.items() if not k.endswith("_s")} for row in drift.history] == untimed
    acc = drift.extra["inference"]
    assert sorted(acc) == ["1", "86400"] and all(0.0 <= a <= 1.0 for a in acc.values())
    assert json.loads((tmp_path / "results.json").read_text())["inference"] == acc


def test_train_custom_rejects_a_missing_model_and_other_rules():
    with pytest.raises(ValueError, match=r"cfg.extra\['model'\] must describe the model"):
        train_custom(TrainConfig(dataset="synthetic"), dataset=make_synthetic(10, 10))
    with pytest.raises(ValueError, match="model.kind must be one of rnn, lstm, snu, ssnu"):
        build_custom_model({"kind": "gru", "hidden": [4]}, (1, 4, 4), 2, 0)


def _numpy_bptt_grads(model, x, y, mode):
    """Every gradient of a stacked tanh ``SequenceClassifier`` by hand-written BPTT in numpy, with GRAPES as the
    module docstring states it: ``M = clip(2 F / max F, 1, 2)``, ``F`` the row sums of ``|W|`` (layer-mean: their
    mean); propagated: the error of the input branch ``W x_t`` scaled by ``M`` at every step (so ``ΔW`` and the error
    sent to the layer below), local: ``ΔW`` only; ``ΔU``, ``Δb`` and the error through time unscaled."""
    import numpy as np  # a dependency of torch: always there, so a missing numpy fails instead of skipping
    layers = [(r.inp.weight.detach().numpy(), r.rec.weight.detach().numpy(), r.rec.bias.detach().numpy())
              for r in model.layers]
    v = model.readout.weight.detach().numpy()
    seq = x.numpy()[:, 0].transpose(1, 0, 2)  # [T, B, F]
    t_len, batch = seq.shape[:2]
    cache = []
    for w, u, b in layers:
        h, out = np.zeros((batch, u.shape[1])), []
        for t in range(t_len):
            h = np.tanh(seq[t] @ w.T + h @ u.T + b)
            out.append(h)
        cache.append((seq, np.stack(out)))
        seq = cache[-1][1]
    z = seq[-1] @ v.T
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    dz = (p - np.eye(v.shape[0])[y.numpy()]) / batch
    grads = {"readout.weight": dz.T @ seq[-1]}
    dh_above = np.zeros_like(seq)
    dh_above[-1] = dz @ v
    for k in reversed(range(len(layers))):
        (w, u, b), (xin, hout) = layers[k], cache[k]
        f = np.abs(w).sum(1)
        m = np.ones_like(f) if mode is None else np.clip(2 * f / f.max(), 1, 2)
        if mode is not None and mode.startswith("layer-mean"):
            m = np.full_like(m, m.mean())
        scale_upstream = mode is not None and not mode.endswith("local")
        gw, gu, gb, dx, carry = np.zeros_like(w), np.zeros_like(u), np.zeros_like(b), np.zeros_like(xin), 0.0
        for t in reversed(range(t_len)):
            da = (dh_above[t] + carry) * (1 - hout[t] ** 2)
            h_prev = hout[t - 1] if t > 0 else np.zeros_like(hout[t])
            gu += da.T @ h_prev
            gb += da.sum(0)
            carry = da @ u
            gw += (da * m).T @ xin[t]
            dx[t] = (da * m if scale_upstream else da) @ w
        grads.update({f"layers.{k}.inp.weight": gw, f"layers.{k}.rec.weight": gu, f"layers.{k}.rec.bias": gb})
        dh_above = dx
    return grads


@pytest.mark.parametrize("mode", [None, "propagated", "local", "layer-mean", "layer-mean-local"])
def test_stacked_rnn_gradients_match_a_numpy_bptt_reference(mode):
    torch.manual_seed(0)
    x, y = torch.randn(3, 1, 5, 4, dtype=torch.float64), torch.randint(0, 3, (3,))
    model = SequenceClassifier("rnn", 4, (6, 6), 3, seed=4, dtype=torch.float64)
    handle = attach_grapes(model, mode) if mode else None
    nn.functional.cross_entropy(model(x), y).backward()
    if handle is not None:  # the example's factors really differ between units (clip at 1 and the max at 2 reached)
        m = handle.modulations["layers.0.inp"]
        assert mode.startswith("layer-mean") or (m.min() < 1.5 and m.max() == 2.0)
    expected = _numpy_bptt_grads(model, x, y, mode)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, torch.from_numpy(expected[name]), msg=f"{mode}: {name}")
