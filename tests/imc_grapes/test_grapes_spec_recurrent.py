"""GRAPES on recurrent (vanilla RNN, LSTM) and spiking (SNU / sSNU) networks against an independent numpy reference:
one SGD step of tiny hand-weighted networks (forward through time, BPTT, GRAPES), compared with the project's updated
weights to 1e-10 in float64; and the SNU's forward dynamics (intensity, latency code, membrane, reset, spikes).

The reference implements grapes.md §1-3 and the choices documented in :mod:`imc_grapes.recurrent` and
:mod:`imc_grapes.snu` (the spec leaves them open for recurrent and spiking layers):

* ``M = clip(2 F / max F, 1, 2)`` per unit from the row sums ``F`` of the **input** matrix ``W`` (biases and the
  recurrent matrix ``U`` excluded); for the LSTM one factor per gate row, normalised by the maximum over all ``4·H``
  gate rows of the layer together (the hand weights below make that differ from a per-gate-block maximum);
* propagated: the error of the input branch ``∂L/∂(W x_t)`` is multiplied by ``M`` at every step, so ``ΔW`` and the
  error sent to the layer below are modulated, while ``ΔU``, ``Δb`` and the error carried back through time are plain
  BPTT; local: only ``ΔW`` is scaled; layer-mean: ``M`` replaced by its layer mean;
* SNU (Woźniak et al. 2020, as grapes.md §3 writes it): ``s_t = ReLU(W x_t + l ⊙ s_{t−1} ⊙ (1 − y_{t−1}))``,
  ``y_t = h(s_t + b)``; ``h`` the Heaviside step (``h(0) = 0``) with the surrogate derivative ``β σ(βv)(1 − σ(βv))``
  or the sigmoid (sSNU); the gradient flows through the reset term too; readout ``V · mean_t y_t``; latency code: a
  pixel of intensity ``I ≥ 0.2`` (per-sample min-max) spikes once, at step ``round((1 − I)(T − 1))``.

Nothing in the reference section imports from ``imc_grapes``: it is numpy written from the formulas above.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from imc_grapes.config import TrainConfig
from imc_grapes.experiments import custom_network
from imc_grapes.grapes import attach_grapes
from imc_grapes.recurrent import SequenceClassifier
from imc_grapes.snu import SpikingClassifier

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOL = 1e-10
LR = 0.5
MODES = [None, "propagated", "local", "layer-mean", "layer-mean-local"]


# ============================================================================================ numpy reference
def np_factor(W: np.ndarray, mode: str | None) -> np.ndarray:
    """grapes.md §1 for the rows of ``W: [out, in]``: ``clip(2 F / max F, 1, 2)``, F = Σ_j |W_ij|; ones without
    GRAPES; the layer mean for the layer-mean control."""
    if mode is None:
        return np.ones(W.shape[0])
    f = np.abs(W).sum(axis=1)
    m = np.clip(2.0 * f / f.max(), 1.0, 2.0)
    return np.full_like(m, m.mean()) if mode.startswith("layer-mean") else m


def np_ce_error(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """∂(mean cross-entropy)/∂logits = (softmax(z) − onehot(y)) / B, [B, C]."""
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True) - np.eye(z.shape[1])[y]) / z.shape[0]


def sigmoid(v: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-v))


def _rnn_forward(p: dict, xs: np.ndarray) -> tuple[np.ndarray, dict]:
    """tanh RNN: h_t = tanh(W x_t + U h_{t−1} + b), h_0 = 0. xs [T, B, in] -> hs [T, B, H]."""
    W, U, b = p["W"], p["U"], p["b"]
    h = np.zeros((xs.shape[1], U.shape[1]))
    hs = []
    for t in range(xs.shape[0]):
        h = np.tanh(xs[t] @ W.T + h @ U.T + b)
        hs.append(h)
    hs = np.stack(hs)
    return hs, {"hs": hs}


def _rnn_backward(p: dict, xs: np.ndarray, cache: dict, dh_above: np.ndarray, m: np.ndarray, propagate_m: bool):
    """BPTT of the tanh RNN; ``dh_above[t] = ∂L/∂h_t`` from outside the layer. GRAPES scales the input branch's
    error by ``m`` for ΔW (and, if ``propagate_m``, for the error to the layer below). Returns (gW, gU, gb, dx)."""
    W, U = p["W"], p["U"]
    hs = cache["hs"]
    gW, gU, gb, dx = np.zeros_like(W), np.zeros_like(U), np.zeros_like(p["b"]), np.zeros_like(xs)
    carry = np.zeros_like(hs[0])
    for t in reversed(range(xs.shape[0])):
        da = (dh_above[t] + carry) * (1.0 - hs[t] ** 2)          # ∂L/∂a_t, a_t = W x_t + U h_{t−1} + b
        h_prev = hs[t - 1] if t > 0 else np.zeros_like(hs[t])
        gU += da.T @ h_prev
        gb += da.sum(axis=0)
        carry = da @ U                                            # through time: unmodulated
        gW += (da * m).T @ xs[t]
        dx[t] = (da * m if propagate_m else da) @ W
    return gW, gU, gb, dx


def _lstm_forward(p: dict, xs: np.ndarray) -> tuple[np.ndarray, dict]:
    """LSTM, gate blocks (i, f, g, o) of the rows of W, U, b: a = W x_t + U h_{t−1} + b;
    i, f, o = σ(a_i), σ(a_f), σ(a_o), g = tanh(a_g); c_t = f c_{t−1} + i g; h_t = o tanh(c_t); h_0 = c_0 = 0."""
    W, U, b = p["W"], p["U"], p["b"]
    H = U.shape[1]
    B = xs.shape[1]
    h, c = np.zeros((B, H)), np.zeros((B, H))
    rec = {k: [] for k in ("i", "f", "g", "o", "c", "c_prev", "h_prev", "h")}
    for t in range(xs.shape[0]):
        a = xs[t] @ W.T + h @ U.T + b
        i, f, g, o = sigmoid(a[:, :H]), sigmoid(a[:, H:2 * H]), np.tanh(a[:, 2 * H:3 * H]), sigmoid(a[:, 3 * H:])
        rec["c_prev"].append(c)
        rec["h_prev"].append(h)
        c = f * c + i * g
        h = o * np.tanh(c)
        for k, v in (("i", i), ("f", f), ("g", g), ("o", o), ("c", c), ("h", h)):
            rec[k].append(v)
    return np.stack(rec["h"]), rec


def _lstm_backward(p: dict, xs: np.ndarray, cache: dict, dh_above: np.ndarray, m: np.ndarray, propagate_m: bool):
    """BPTT of the LSTM; ``m: [4H]`` scales the input branch's error per gate row (see :func:`_rnn_backward`)."""
    W, U = p["W"], p["U"]
    H = U.shape[1]
    gW, gU, gb, dx = np.zeros_like(W), np.zeros_like(U), np.zeros_like(p["b"]), np.zeros_like(xs)
    dh_carry = np.zeros((xs.shape[1], H))
    dc_carry = np.zeros((xs.shape[1], H))
    for t in reversed(range(xs.shape[0])):
        i, f, g, o, c = (cache[k][t] for k in ("i", "f", "g", "o", "c"))
        dh = dh_above[t] + dh_carry
        tc = np.tanh(c)
        dc = dh * o * (1.0 - tc ** 2) + dc_carry
        da = np.concatenate([dc * g * i * (1.0 - i),                  # input gate
                             dc * cache["c_prev"][t] * f * (1.0 - f),  # forget gate
                             dc * i * (1.0 - g ** 2),                  # cell candidate
                             dh * tc * o * (1.0 - o)], axis=1)         # output gate
        dc_carry = dc * f
        gU += da.T @ cache["h_prev"][t]
        gb += da.sum(axis=0)
        dh_carry = da @ U
        gW += (da * m).T @ xs[t]
        dx[t] = (da * m if propagate_m else da) @ W
    return gW, gU, gb, dx


def np_recurrent_step(cell: str, layers: list[dict], V: np.ndarray, xs: np.ndarray, y: np.ndarray,
                      mode: str | None, lr: float = LR) -> tuple[list[dict], np.ndarray, list[np.ndarray]]:
    """One SGD step of stacked recurrent layers + a bias-free readout of the last state h_T; ``xs: [T, B, in]``.
    Returns the updated layers, the updated V and the factors used (from the weights before the step)."""
    fwd, bwd = (_rnn_forward, _rnn_backward) if cell == "rnn" else (_lstm_forward, _lstm_backward)
    ins, caches, seq = [], [], xs
    for p in layers:
        ins.append(seq)
        seq, cache = fwd(p, seq)
        caches.append(cache)
    e = np_ce_error(seq[-1] @ V.T, y)
    gV = e.T @ seq[-1]
    dh = np.zeros_like(seq)
    dh[-1] = e @ V
    factors = [np_factor(p["W"], mode) for p in layers]
    propagate_m = mode is not None and not mode.endswith("local")
    new = [None] * len(layers)
    for k in reversed(range(len(layers))):
        gW, gU, gb, dh = bwd(layers[k], ins[k], caches[k], dh, factors[k], propagate_m)
        p = layers[k]
        new[k] = {"W": p["W"] - lr * gW, "U": p["U"] - lr * gU, "b": p["b"] - lr * gb}
    return new, V - lr * gV, factors


def np_intensity(x: np.ndarray) -> np.ndarray:
    """Per-sample min-max rescale to [0, 1]: x [B, *] -> [B, n]."""
    flat = x.reshape(x.shape[0], -1)
    lo, hi = flat.min(axis=1, keepdims=True), flat.max(axis=1, keepdims=True)
    return (flat - lo) / (hi - lo)


def np_latency(intensity: np.ndarray, steps: int, min_intensity: float = 0.2) -> np.ndarray:
    """Time-to-first-spike code: each input with I ≥ min_intensity spikes once, at round((1 − I)(steps − 1)) (brighter
    = earlier), written as floor(· + 1/2); the test data avoid exact halves. [B, n] -> [steps, B, n]."""
    out = np.zeros((steps, *intensity.shape))
    for b in range(intensity.shape[0]):
        for j in range(intensity.shape[1]):
            if intensity[b, j] >= min_intensity:
                out[int(np.floor((1.0 - intensity[b, j]) * (steps - 1) + 0.5)), b, j] = 1.0
    return out


def _snu_forward(p: dict, xs: np.ndarray, decay: float, soft: bool) -> tuple[np.ndarray, dict]:
    """s_t = ReLU(W x_t + l s_{t−1}(1 − y_{t−1})), y_t = h(s_t + b), s_0 = y_0 = 0. xs [T, B, in] -> ys [T, B, out]."""
    W, b = p["W"], p["b"]
    s = np.zeros((xs.shape[1], W.shape[0]))
    y = np.zeros_like(s)
    rec = {k: [] for k in ("pre", "s", "s_prev", "y_prev", "v", "y")}
    for t in range(xs.shape[0]):
        rec["s_prev"].append(s)
        rec["y_prev"].append(y)
        pre = xs[t] @ W.T + decay * s * (1.0 - y)
        s = np.maximum(pre, 0.0)
        v = s + b
        y = sigmoid(v) if soft else (v > 0).astype(float)
        for k, val in (("pre", pre), ("s", s), ("v", v), ("y", y)):
            rec[k].append(val)
    return np.stack(rec["y"]), rec


def _snu_backward(p: dict, xs: np.ndarray, cache: dict, dy_above: np.ndarray, m: np.ndarray, propagate_m: bool,
                  decay: float, soft: bool, beta: float):
    """BPTT of an SNU layer (through the reset term too); ``dy_above[t] = ∂L/∂y_t`` from outside the layer.
    Returns (gW, gb, dx)."""
    W = p["W"]
    gW, gb, dx = np.zeros_like(W), np.zeros_like(p["b"]), np.zeros_like(xs)
    dpre_next = np.zeros((xs.shape[1], W.shape[0]))            # ∂L/∂pre_{t+1}
    for t in reversed(range(xs.shape[0])):
        s, v, y = cache["s"][t], cache["v"][t], cache["y"][t]
        # pre_{t+1} = W x_{t+1} + l s_t (1 − y_t): ∂/∂y_t = −l s_t, ∂/∂s_t = l (1 − y_t)
        dy = dy_above[t] - dpre_next * decay * s
        hv = sigmoid(v) if soft else sigmoid(beta * v)
        dv = dy * (hv * (1.0 - hv) if soft else beta * hv * (1.0 - hv))
        gb += dv.sum(axis=0)
        ds = dv + dpre_next * decay * (1.0 - y)
        dpre = ds * (cache["pre"][t] > 0)                       # ReLU'(0) = 0
        gW += (dpre * m).T @ xs[t]
        dx[t] = (dpre * m if propagate_m else dpre) @ W
        dpre_next = dpre
    return gW, gb, dx


def np_snu_step(layers: list[dict], V: np.ndarray, images: np.ndarray, y: np.ndarray, mode: str | None, steps: int,
                decay: float, soft: bool, beta: float, lr: float = LR):
    """One SGD step of the latency-coded SNU classifier (logits = V · mean_t y_t of the last layer). Returns the
    updated layers, V, the factors and the forward record (input spikes, every layer's outputs)."""
    seq = np_latency(np_intensity(images), steps)
    ins, caches, outs = [], [], []
    for p in layers:
        ins.append(seq)
        seq, cache = _snu_forward(p, seq, decay, soft)
        caches.append(cache)
        outs.append(seq)
    rate = seq.mean(axis=0)
    e = np_ce_error(rate @ V.T, y)
    gV = e.T @ rate
    dy = np.broadcast_to(e @ V / steps, seq.shape).copy()
    factors = [np_factor(p["W"], mode) for p in layers]
    propagate_m = mode is not None and not mode.endswith("local")
    new = [None] * len(layers)
    for k in reversed(range(len(layers))):
        gW, gb, dy = _snu_backward(layers[k], ins[k], caches[k], dy, factors[k], propagate_m, decay, soft, beta)
        new[k] = {"W": layers[k]["W"] - lr * gW, "b": layers[k]["b"] - lr * gb}
    return new, V - lr * gV, factors, {"spikes": ins[0], "outs": outs, "caches": caches}


# ============================================================================================ hand-set networks
# Vanilla RNN 3 -> 4 -> 3 -> 2 classes. W0 row 1 all zero (F = 0 -> M = 1), row 3 weak (2F/max < 1 -> 1).
RNN_W0 = np.array([[0.5, -1.0, 0.25],      # F = 1.75 -> 2·1.75/2.75 = 14/11
                   [0.0, 0.0, 0.0],        # F = 0    -> 1 (clipped)
                   [-0.75, 0.5, 1.5],      # F = 2.75 -> 2
                   [0.2, -0.3, 0.1]])      # F = 0.6  -> 1 (clipped)
RNN_U0 = np.array([[0.3, -0.2, 0.1, 0.0],
                   [0.1, 0.4, -0.3, 0.2],
                   [-0.2, 0.1, 0.2, -0.4],
                   [0.0, 0.3, -0.1, 0.5]])
RNN_B0 = np.array([0.1, -0.2, 0.05, 0.3])
RNN_W1 = np.array([[1.0, -0.5, 0.25, 0.0],     # F = 1.75 -> 1.75
                   [-0.2, 0.4, -0.6, 0.8],     # F = 2.0  -> 2
                   [0.3, 0.3, -0.3, -0.3]])    # F = 1.2  -> 1.2
RNN_U1 = np.array([[0.2, -0.4, 0.1],
                   [0.3, 0.1, -0.2],
                   [-0.1, 0.2, 0.4]])
RNN_B1 = np.array([-0.1, 0.2, 0.0])
RNN_V = np.array([[0.7, -0.4, 0.9],
                  [-0.5, 0.6, 0.2]])
RNN_M = [np.array([14 / 11, 1.0, 2.0, 1.0]), np.array([1.75, 2.0, 1.2])]

# LSTM 2 -> 2 -> 2 -> 2 classes; rows of W, U, b in gate blocks (i0, i1, f0, f1, g0, g1, o0, o1).
LSTM_W0 = np.array([[0.75, -0.75],    # i0 F = 1.5  -> 2·1.5/2 = 1.5
                    [0.0, 0.0],       # i1 F = 0    -> 1 (clipped)
                    [1.0, 0.25],      # f0 F = 1.25 -> 1.25
                    [-0.3, 0.2],      # f1 F = 0.5  -> 1 (clipped)
                    [1.2, -0.8],      # g0 F = 2    -> 2 (the layer's maximum)
                    [0.5, 1.25],      # g1 F = 1.75 -> 1.75
                    [-0.7, 0.5],      # o0 F = 1.2  -> 1.2
                    [0.6, -1.0]])     # o1 F = 1.6  -> 1.6
# (normalised per gate block instead, i0, f0 and o1 would get 2: the test tells the two apart)
LSTM_U0 = np.array([[0.2, -0.1], [0.3, 0.4], [-0.5, 0.2], [0.1, 0.1],
                    [0.6, -0.3], [-0.2, 0.5], [0.4, 0.2], [-0.1, -0.6]])
LSTM_B0 = np.array([0.1, -0.1, 1.0, 1.0, 0.0, 0.2, -0.2, 0.1])     # forget-gate biases near 1
LSTM_W1 = np.array([[0.4, 0.4],       # F = 0.8 -> 2·0.8/1.5 = 16/15
                    [-0.9, 0.3],      # F = 1.2 -> 1.6
                    [0.5, -0.5],      # F = 1.0 -> 4/3
                    [0.2, 0.1],       # F = 0.3 -> 1 (clipped)
                    [-0.6, 0.9],      # F = 1.5 -> 2
                    [0.7, 0.0],       # F = 0.7 -> 1 (clipped, 14/15)
                    [0.3, -0.8],      # F = 1.1 -> 22/15
                    [-0.5, -0.5]])    # F = 1.0 -> 4/3
LSTM_U1 = np.array([[-0.3, 0.2], [0.5, 0.1], [0.2, -0.4], [0.3, 0.3],
                    [-0.7, 0.4], [0.1, 0.6], [0.5, -0.2], [0.2, 0.1]])
LSTM_B1 = np.array([0.0, 0.1, 1.0, 0.8, -0.1, 0.0, 0.2, -0.3])
LSTM_V = np.array([[0.9, -0.6],
                   [-0.4, 0.8]])
LSTM_M = [np.array([1.5, 1.0, 1.25, 1.0, 2.0, 1.75, 1.2, 1.6]),
          np.array([16 / 15, 1.6, 4 / 3, 1.0, 2.0, 1.0, 22 / 15, 4 / 3])]

# sequences [B, T, in]: batch 2, T = 3 (RNN, 3 features) and T = 4 (LSTM, 2 features)
RNN_X = np.array([[[1.0, -0.5, 2.0], [0.3, 0.8, -1.2], [-1.5, 0.4, 0.6]],
                  [[0.2, 1.1, -0.7], [-0.9, 0.5, 0.3], [0.6, -1.3, 0.8]]])
LSTM_X = np.array([[[1.0, -0.5], [0.3, 0.8], [-1.5, 0.4], [0.7, 0.2]],
                   [[-0.4, 1.2], [0.9, -0.6], [0.1, 0.5], [-0.8, -1.1]]])
Y2 = np.array([1, 0])


def _recurrent_params(cell: str):
    if cell == "rnn":
        return [{"W": RNN_W0, "U": RNN_U0, "b": RNN_B0}, {"W": RNN_W1, "U": RNN_U1, "b": RNN_B1}], RNN_V, RNN_X
    return [{"W": LSTM_W0, "U": LSTM_U0, "b": LSTM_B0}, {"W": LSTM_W1, "U": LSTM_U1, "b": LSTM_B1}], LSTM_V, LSTM_X


def _sequence_model(cell: str, layers: list[dict], V: np.ndarray) -> SequenceClassifier:
    hidden = [p["U"].shape[1] for p in layers]
    model = SequenceClassifier(cell, layers[0]["W"].shape[1], hidden, V.shape[0], seed=0, dtype=torch.float64)
    with torch.no_grad():
        for layer, p in zip(model.layers, layers):
            layer.inp.weight.copy_(torch.from_numpy(p["W"]))
            layer.rec.weight.copy_(torch.from_numpy(p["U"]))
            layer.rec.bias.copy_(torch.from_numpy(p["b"]))
        model.readout.weight.copy_(torch.from_numpy(V))
    return model


def _recurrent_state(model: SequenceClassifier) -> tuple[list[dict], np.ndarray]:
    layers = [{"W": r.inp.weight.detach().numpy().copy(), "U": r.rec.weight.detach().numpy().copy(),
               "b": r.rec.bias.detach().numpy().copy()} for r in model.layers]
    return layers, model.readout.weight.detach().numpy().copy()


def _assert_layers(got: list[dict], expected: list[dict], what: str) -> None:
    for k, (g, e) in enumerate(zip(got, expected)):
        for name in e:
            np.testing.assert_allclose(g[name], e[name], rtol=0, atol=TOL, err_msg=f"{what}: layer {k} {name}")


def _sgd_steps(model, batches, mode, lr=LR):
    """SGD steps with GRAPES attached (torch.optim.SGD on every parameter); returns the handle's factors per step."""
    handle = attach_grapes(model, mode) if mode else None
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    model.train()
    mods = []
    for x, y in batches:
        opt.zero_grad()
        F.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        opt.step()
        mods.append({k: v.clone().numpy() for k, v in handle.modulations.items()} if handle else {})
    if handle is not None:
        handle.remove()
    return mods


# ============================================================================================ recurrent tests
def test_hand_factors_follow_the_definition():
    """The factors written out in the comments equal the definition (guards the constants below)."""
    for W, M in zip((RNN_W0, RNN_W1, LSTM_W0, LSTM_W1), (*RNN_M, *LSTM_M)):
        np.testing.assert_allclose(np_factor(W, "propagated"), M, rtol=0, atol=1e-15)
    per_block = np.concatenate([np_factor(blk, "propagated") for blk in np.split(LSTM_W0, 4)])
    assert not np.allclose(per_block, LSTM_M[0]), "the example separates the layer max from a per-gate max"


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_one_sgd_step_of_a_stacked_recurrent_net(cell, mode, batch):
    """Two stacked layers (so the upper factor reaching the lower layer — propagated only — is tested), BPTT over
    T = 3 (RNN) / 4 (LSTM) steps; every parameter after one SGD step: W, U, b of both layers and the readout."""
    layers, V, X = _recurrent_params(cell)
    X, y = X[:batch], Y2[:batch]
    expected, V_new, factors = np_recurrent_step(cell, layers, V, X.transpose(1, 0, 2), y, mode)
    model = _sequence_model(cell, layers, V)
    mods = _sgd_steps(model, [(X, y)], mode)
    got, V_got = _recurrent_state(model)
    _assert_layers(got, expected, f"{cell} {mode}")
    np.testing.assert_allclose(V_got, V_new, rtol=0, atol=TOL)
    if mode is not None:
        hand = LSTM_M if cell == "lstm" else RNN_M
        for k in range(2):
            np.testing.assert_allclose(mods[0][f"layers.{k}.inp"], factors[k], rtol=0, atol=1e-12)
            if not mode.startswith("layer-mean"):
                np.testing.assert_allclose(factors[k], hand[k], rtol=0, atol=1e-12)
        # not vacuous: GRAPES changed the input-matrix updates, and left U, b of the top layer alone
        plain, _, _ = np_recurrent_step(cell, layers, V, X.transpose(1, 0, 2), y, None)
        assert not np.allclose(plain[0]["W"], expected[0]["W"], atol=1e-6)
        np.testing.assert_allclose(plain[1]["U"], expected[1]["U"], rtol=0, atol=1e-15)
        np.testing.assert_allclose(plain[1]["b"], expected[1]["b"], rtol=0, atol=1e-15)
        if mode.endswith("local"):   # nothing modulated reaches layer 0's U and b
            np.testing.assert_allclose(plain[0]["U"], expected[0]["U"], rtol=0, atol=1e-15)
        else:
            assert not np.allclose(plain[0]["U"], expected[0]["U"], atol=1e-6)


def test_lstm_factor_is_refreshed_from_the_updated_weights_at_the_next_batch():
    """Two SGD steps of the LSTM, propagated: the second batch's per-gate-row factors come from the weights after
    step 1."""
    layers, V, X = _recurrent_params("lstm")
    b1, b2 = (X[:1], Y2[:1]), (X[1:], Y2[1:])
    step1, V1, m1 = np_recurrent_step("lstm", layers, V, b1[0].transpose(1, 0, 2), b1[1], "propagated")
    step2, V2, m2 = np_recurrent_step("lstm", step1, V1, b2[0].transpose(1, 0, 2), b2[1], "propagated")
    assert not np.allclose(m1[0], m2[0], atol=1e-4), "the refresh matters in this example"
    model = _sequence_model("lstm", layers, V)
    mods = _sgd_steps(model, [b1, b2], "propagated")
    got, V_got = _recurrent_state(model)
    _assert_layers(got, step2, "lstm step 2")
    np.testing.assert_allclose(V_got, V2, rtol=0, atol=TOL)
    np.testing.assert_allclose(mods[1]["layers.0.inp"], m2[0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("optimizer", ["sgd", "grapes", "grapes-local", "layer-mean"])
@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_the_training_network_step_matches_the_reference(cell, optimizer):
    """The experiments' path (custom_network: backend digital, GRAPES per TrainConfig.optimizer, its base SGD and
    Network.step) gives the same weights as the reference."""
    mode = TrainConfig(optimizer=optimizer).grapes_mode
    layers, V, X = _recurrent_params(cell)
    expected, V_new, _ = np_recurrent_step(cell, layers, V, X.transpose(1, 0, 2), Y2, mode)
    cfg = TrainConfig(dataset="synthetic", optimizer=optimizer, lr=LR, extra={"model": {"kind": cell, "hidden": [2]}})
    net = custom_network(cfg, _sequence_model(cell, layers, V), "cpu")
    net.model.train()
    net.zero_grad()
    F.cross_entropy(net.model(torch.from_numpy(X)), torch.from_numpy(Y2)).backward()
    net.step()
    got, V_got = _recurrent_state(net.model)
    _assert_layers(got, expected, f"{cell} {optimizer}")
    np.testing.assert_allclose(V_got, V_new, rtol=0, atol=TOL)
    net.close()


# ============================================================================================ spiking (SNU) tests
# 6 pixels (a 2×3 image) -> 4 SNUs -> 3 SNUs -> 2 classes, T = 5, latency code, decay l = 0.7, threshold b = −0.3.
SNU_STEPS, SNU_DECAY, SNU_BETA = 5, 0.7, 2.0
SNU_W0 = np.array([[0.5, -0.2, 0.4, 0.3, 0.0, -0.1],     # F = 1.5 -> 2·1.5/2.4 = 1.25
                   [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],       # F = 0   -> 1 (clipped)
                   [0.6, 0.5, -0.3, 0.2, 0.4, 0.4],      # F = 2.4 -> 2
                   [-0.2, 0.6, 0.5, 0.1, 0.3, 0.2]])     # F = 1.9 -> 19/12
SNU_B0 = np.array([-0.3, -0.3, -0.35, -0.25])
SNU_W1 = np.array([[0.8, -0.3, 0.6, 0.4],                # F = 2.1 -> 2
                   [0.2, 0.5, 0.4, -0.3],                # F = 1.4 -> 4/3
                   [-0.4, 0.1, 0.5, 0.6]])               # F = 1.6 -> 32/21
SNU_B1 = np.array([-0.3, -0.2, -0.25])
SNU_V = np.array([[0.9, -0.5, 0.3],
                  [-0.6, 0.7, 0.4]])
SNU_M = [np.array([1.25, 1.0, 2.0, 19 / 12]), np.array([2.0, 4 / 3, 32 / 21])]
# images [B, 1, 2, 3]; per-sample min-max intensities (T − 1 = 4):
#   sample 0: (x + 1)/4 -> I = 0, 0.8, 1, 0.3, 0.55, 0.1 -> spike steps (1 − I)·4 = -, 0.8→1, 0→0, 2.8→3, 1.8→2, -
#   sample 1: (x − 0.5)/2.5 -> I = 1, 0, 0.4, 0.64, 0.92, 0.16 -> 0, -, 2.4→2, 1.44→1, 0.32→0, -
SNU_IMAGES = np.array([[[[-1.0, 2.2, 3.0], [0.2, 1.2, -0.6]]],
                       [[[3.0, 0.5, 1.5], [2.1, 2.8, 0.9]]]])
SNU_SPIKE_STEPS = [{1: 1, 2: 0, 3: 3, 4: 2}, {0: 0, 2: 2, 3: 1, 4: 0}]   # sample -> {pixel: step}, by hand
SNU_Y = np.array([0, 1])


def _snu_params():
    return [{"W": SNU_W0, "b": SNU_B0}, {"W": SNU_W1, "b": SNU_B1}], SNU_V


def _snu_model(soft: bool) -> SpikingClassifier:
    model = SpikingClassifier(6, (4, 3), 2, steps=SNU_STEPS, encoding="latency", soft=soft, decay=SNU_DECAY,
                              threshold=0.3, surrogate_beta=SNU_BETA, seed=0, dtype=torch.float64)
    with torch.no_grad():
        for layer, p in zip(model.layers, _snu_params()[0]):
            layer.inp.weight.copy_(torch.from_numpy(p["W"]))
            layer.b.copy_(torch.from_numpy(p["b"]))
        model.readout.weight.copy_(torch.from_numpy(SNU_V))
    return model


def test_snu_hand_values_follow_the_definitions():
    """The hand factors and the hand spike times of the comments equal the reference's definitions, and the example
    has no rounding tie (where floor(· + 1/2) and round-half-to-even would differ)."""
    for W, M in zip((SNU_W0, SNU_W1), SNU_M):
        np.testing.assert_allclose(np_factor(W, "propagated"), M, rtol=0, atol=1e-15)
    intensity = np_intensity(SNU_IMAGES)
    frac = ((1.0 - intensity) * (SNU_STEPS - 1)) % 1.0
    assert np.all(np.abs(frac - 0.5) > 1e-6)
    spikes = np_latency(intensity, SNU_STEPS)
    for b, hand in enumerate(SNU_SPIKE_STEPS):
        assert {int(j): int(t) for t, j in zip(*np.nonzero(spikes[:, b]))} == hand


@pytest.mark.parametrize("soft", [False, True])
def test_snu_forward_dynamics_match_the_reference(soft):
    """Encoding (intensity + latency code) and every layer's outputs through time; the example spikes, resets a unit
    that carried state, has a unit whose membrane is clipped by the ReLU and one exactly at the threshold."""
    model = _snu_model(soft)
    x = torch.from_numpy(SNU_IMAGES)
    spikes = model.encode(x)
    np.testing.assert_array_equal(spikes.numpy(), np_latency(np_intensity(SNU_IMAGES), SNU_STEPS))
    ys, seq = [], spikes
    with torch.no_grad():
        for layer in model.layers:
            seq = layer(seq)
            ys.append(seq.numpy())
        logits = model(x).numpy()
    _, _, _, rec = np_snu_step(*_snu_params(), SNU_IMAGES, SNU_Y, None, SNU_STEPS, SNU_DECAY, soft, SNU_BETA)
    for k, (g, e) in enumerate(zip(ys, rec["outs"])):
        np.testing.assert_allclose(g, e, rtol=0, atol=1e-12, err_msg=f"layer {k}")
    np.testing.assert_allclose(logits, rec["outs"][-1].mean(axis=0) @ SNU_V.T, rtol=0, atol=1e-12)
    if not soft:   # the example exercises spikes, the reset of carried state and the ReLU
        c0 = rec["caches"][0]
        y_prev, s_prev = np.stack(c0["y_prev"]), np.stack(c0["s_prev"])
        assert 0 < rec["outs"][0].sum() < rec["outs"][0].size
        assert np.any((y_prev == 1) & (s_prev > 0)), "a spike resets a non-zero state"
        assert np.any(np.stack(c0["pre"]) < 0), "the ReLU clips a negative membrane"
        assert np.any(np.stack(c0["v"]) == 0.0), "s + b = 0 exactly (a single 0.3 input): h(0) = 0, no spike"


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("soft", [False, True])
def test_one_sgd_step_of_a_two_layer_snu_net(soft, mode, batch):
    """BPTT through the membrane, the reset and the (surrogate) spike function; GRAPES per unit from W's row sums at
    every step; the thresholds b and the readout unmodulated. Every parameter after one SGD step."""
    images, y = SNU_IMAGES[:batch], SNU_Y[:batch]
    expected, V_new, factors, _ = np_snu_step(*_snu_params(), images, y, mode, SNU_STEPS, SNU_DECAY, soft, SNU_BETA)
    model = _snu_model(soft)
    mods = _sgd_steps(model, [(images, y)], mode)
    got = [{"W": layer.inp.weight.detach().numpy(), "b": layer.b.detach().numpy()} for layer in model.layers]
    _assert_layers(got, expected, f"snu soft={soft} {mode}")
    np.testing.assert_allclose(model.readout.weight.detach().numpy(), V_new, rtol=0, atol=TOL)
    if mode is not None:
        for k in range(2):
            np.testing.assert_allclose(mods[0][f"layers.{k}.inp"], factors[k], rtol=0, atol=1e-12)
            if not mode.startswith("layer-mean"):
                np.testing.assert_allclose(factors[k], SNU_M[k], rtol=0, atol=1e-12)
        plain, _, _, _ = np_snu_step(*_snu_params(), images, y, None, SNU_STEPS, SNU_DECAY, soft, SNU_BETA)
        assert not np.allclose(plain[0]["W"], expected[0]["W"], atol=1e-6), "GRAPES changed layer 0's update"
        assert not np.allclose(plain[0]["W"], SNU_W0, atol=1e-6), "layer 0 learned"
        np.testing.assert_allclose(plain[1]["b"], expected[1]["b"], rtol=0, atol=1e-15)


@pytest.mark.parametrize("optimizer", ["sgd", "grapes", "grapes-local", "layer-mean"])
def test_the_training_network_step_of_an_snu_net_matches_the_reference(optimizer):
    """The experiments' path (custom_network, Network.step) on the SNU classifier gives the reference's weights."""
    mode = TrainConfig(optimizer=optimizer).grapes_mode
    expected, V_new, _, _ = np_snu_step(*_snu_params(), SNU_IMAGES, SNU_Y, mode, SNU_STEPS, SNU_DECAY, False,
                                        SNU_BETA)
    cfg = TrainConfig(dataset="synthetic", optimizer=optimizer, lr=LR, extra={"model": {"kind": "snu", "hidden": [4]}})
    net = custom_network(cfg, _snu_model(soft=False), "cpu")
    net.model.train()
    net.zero_grad()
    F.cross_entropy(net.model(torch.from_numpy(SNU_IMAGES)), torch.from_numpy(SNU_Y)).backward()
    net.step()
    got = [{"W": layer.inp.weight.detach().numpy(), "b": layer.b.detach().numpy()} for layer in net.model.layers]
    _assert_layers(got, expected, f"snu {optimizer}")
    np.testing.assert_allclose(net.model.readout.weight.detach().numpy(), V_new, rtol=0, atol=TOL)
    net.close()
