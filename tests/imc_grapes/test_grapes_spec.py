"""GRAPES against its specification (docs grapes.md §1-3): one SGD step of tiny hand-weighted networks, computed here
with an independent, batched numpy implementation of the spec's formulas, must give the project's updated weights.

What this file adds to the existing reference tests (``test_grapes_reference.py``: per-sample numpy gradients of
random MLPs / CNNs): hand-chosen weights with the edge cases of the definitions — a row of all-zero weights
(``F_i = 0``: BP clips ``M_i`` up to 1, FA leaves it at 0), a column of all-zero weights (DFA: ``P_j = 0``), a layer
whose maximum importance is 0 (0/0: the project's documented choice ``M = 2``, see
:func:`imc_grapes.grapes.core.modulation`), negative weights, batch 1, the first hidden layer (no upstream) and the
layer before the output; the updated weights after ``torch.optim.SGD`` (``W ← W − η/B Σ δ hᵀ``), not only gradients;
when the factor is refreshed over two steps (``refresh_every`` 1 and 2); and convolutions with biases and a
zero kernel, attached to a plain ``nn.Sequential``.

Nothing here calls the project's GRAPES functions to compute an expectation: factors are written out (and some
checked against values computed by hand in the comments), the network algebra is numpy.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from numpy.lib.stride_tricks import sliding_window_view
from torch import nn

from imc_grapes.grapes import attach_grapes
from imc_grapes.models import MLP

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOL = 1e-9
LR = 0.5

# ------------------------------------------------------------------------------------------- hand-chosen nets
# 3-4-3-2, bias-free. W0 row 1 is all zeros (F = 0), row 3 is weak (2F/max < 1), row 2 holds the max.
W0 = np.array([[0.5, -1.0, 0.25],      # F = 1.75  -> 2·1.75/2.75 = 14/11
               [0.0, 0.0, 0.0],        # F = 0     -> BP 1 (clipped), FA 0
               [-0.75, 0.5, 1.5],      # F = 2.75  -> 2
               [0.2, -0.3, 0.1]])      # F = 0.6   -> BP 1 (clipped), FA 24/55
W1 = np.array([[1.0, -0.5, 0.25, 0.0],     # F = 1.75 -> 1.75
               [-0.2, 0.4, -0.6, 0.8],     # F = 2.0  -> 2
               [0.3, 0.3, -0.3, -0.3]])    # F = 1.2  -> 1.2
W2 = np.array([[0.7, -0.4, 0.9],
               [-0.5, 0.6, 0.2]])
M_BP = [np.array([14 / 11, 1.0, 2.0, 1.0]), np.array([1.75, 2.0, 1.2])]
M_FA = [np.array([14 / 11, 0.0, 2.0, 24 / 55]), np.array([1.75, 2.0, 1.2])]
# FA's fixed feedback matrices, [out, in] like the weights (error sent to the input: δ @ B)
B1 = np.array([[0.3, -0.8, 0.5, 0.1],
               [0.6, 0.2, -0.4, -0.7],
               [-0.1, 0.9, 0.3, 0.4]])
B2 = np.array([[-0.6, 0.5, 0.3],
               [0.4, -0.2, 0.8]])

X3 = np.array([[1.0, -0.5, 2.0], [0.3, 0.8, -1.2], [-1.5, 0.4, 0.6]])
Y3 = np.array([1, 0, 1])


# ------------------------------------------------------------------------------------------- numpy spec side
def _row_factor(W: np.ndarray, clip: bool) -> np.ndarray:
    """grapes.md §1: F_i = Σ_j |W_ij| (all dims but the first), M = 2F/max F, clipped to [1, 2] for BP."""
    f = np.abs(W).reshape(W.shape[0], -1).sum(1)
    m = 2.0 * f / f.max()
    return np.clip(m, 1.0, 2.0) if clip else m


def _output_error(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """∂(mean cross-entropy)/∂logits = (softmax − one-hot)/B, [B, classes]."""
    z = np.exp(logits - logits.max(1, keepdims=True))
    return (z / z.sum(1, keepdims=True) - np.eye(logits.shape[1])[y]) / logits.shape[0]


def np_mlp_step(Ws, X, y, rule, mode, feedback=None, factors=None, lr=LR, masks=None):
    """One SGD step of a bias-free tanh MLP with GRAPES, batched (rows = samples).

    rule bp: up = δ^{l+1} W^{l+1}; fa: up = δ^{l+1} B^{l+1}; δ^l = M^l ⊙ up ⊙ f'(a^l) (propagated: that δ flows on;
    local: only ΔW^l uses M^l ⊙ δ_BP, the unmodulated δ flows on). ``factors``: per hidden layer M (default: from
    ``Ws``, all of each W: dropout does not enter F). ``masks``: per hidden layer the inverted-dropout factor
    D^l ∈ {0, 1/keep} [B, out_l] (default none): h^l = f(a^l) ⊙ D^l, so up ⊙ D^l ⊙ f'(a^l). Returns the updated
    weights and the factors used."""
    L = len(Ws)
    if factors is None:
        factors = [_row_factor(W, clip=(rule == "bp")) for W in Ws[:-1]] if mode else [None] * (L - 1)
    if masks is None:
        masks = [1.0] * (L - 1)
    hs, As = [X], []
    for l, W in enumerate(Ws):
        As.append(hs[-1] @ W.T)
        hs.append(np.tanh(As[-1]) * masks[l] if l < L - 1 else As[-1])
    grads = [None] * L
    d = _output_error(As[-1], y)
    grads[-1] = d.T @ hs[-2]
    for l in range(L - 2, -1, -1):
        back = Ws[l + 1] if rule == "bp" else feedback[l + 1]
        d_plain = (d @ back) * masks[l] * (1.0 - np.tanh(As[l]) ** 2)
        m = factors[l] if mode else np.ones(d_plain.shape[1])
        grads[l] = (d_plain * m).T @ hs[l]
        d = d_plain if mode == "local" else d_plain * m
    return [W - lr * g for W, g in zip(Ws, grads)], factors


def np_dfa_step(Ws, X, y, feedback, grapes, P_override=None, lr=LR, masks=None):
    """One SGD step of a bias-free tanh MLP trained by DFA (grapes.md §3): δ^k = (e Bᵀ_k) ⊙ f'(a^k) for every hidden
    layer k; with GRAPES, ΔW^k (k ≥ 1) is scaled per synapse by P^{k+1}_i P^k_j, P^k = 2 colsum|W^k| / max, P of the
    output layer = 1, the first hidden layer unmodulated. ``feedback[k]``: [out_k, classes]. ``masks``: per hidden
    layer the inverted-dropout factor D^k (see :func:`np_mlp_step`); the direct error enters after the dropout, so
    δ^k = (e Bᵀ_k) ⊙ D^k ⊙ f'(a^k)."""
    L = len(Ws)
    if masks is None:
        masks = [1.0] * (L - 1)
    hs, As = [X], []
    for l, W in enumerate(Ws):
        As.append(hs[-1] @ W.T)
        hs.append(np.tanh(As[-1]) * masks[l] if l < L - 1 else As[-1])
    e = _output_error(As[-1], y)
    P = dict(P_override or {})
    for k in range(1, L - 1):
        if k not in P:
            c = np.abs(Ws[k]).sum(0)
            P[k] = 2.0 * c / c.max()
    P[L - 1] = np.ones(Ws[-1].shape[1])
    grads = [None] * L
    grads[-1] = e.T @ hs[-2]
    for k in range(L - 1):
        d = (e @ feedback[k].T) * masks[k] * (1.0 - np.tanh(As[k]) ** 2)
        grads[k] = d.T @ hs[k]
        if grapes and k >= 1:
            grads[k] = grads[k] * np.outer(P[k + 1], P[k])
    return [W - lr * g for W, g in zip(Ws, grads)]


# ------------------------------------------------------------------------------------------- torch side
def _mlp(Ws, rule, feedback=None, dropout=0.0) -> MLP:
    sizes = [Ws[0].shape[1]] + [W.shape[0] for W in Ws]
    model = MLP(sizes, activation="tanh", rule=rule, dropout=dropout, seed=0, dtype=torch.float64)
    with torch.no_grad():
        for layer, W in zip(model.layers, Ws):
            layer.weight.copy_(torch.from_numpy(W))
        if rule == "fa":
            for l, B in feedback.items():
                model.layers[l].feedback.copy_(torch.from_numpy(B))
        if rule == "dfa":
            for k, B in enumerate(feedback):
                model.feedback[k].feedback.copy_(torch.from_numpy(B))
    return model


def _torch_steps(model, batches, mode, rule, refresh_every=1, lr=LR):
    """SGD steps with GRAPES attached; returns the weights after each step and the handle's factor history."""
    handle = attach_grapes(model, mode, rule=rule, refresh_every=refresh_every) if mode else None
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    after, mods = [], []
    model.train()
    for X, y in batches:
        opt.zero_grad()
        F.cross_entropy(model(torch.from_numpy(X)), torch.from_numpy(y)).backward()
        opt.step()
        after.append([layer.weight.detach().numpy().copy() for layer in model.layers])
        mods.append({k: v.clone().numpy() for k, v in handle.modulations.items()} if handle else {})
    if handle is not None:
        handle.remove()
    return after, mods


def _assert_weights(got, expected):
    for l, (g, e) in enumerate(zip(got, expected)):
        np.testing.assert_allclose(g, e, rtol=0, atol=TOL, err_msg=f"layer {l}")


# ------------------------------------------------------------------------------------------------------ tests
def test_hand_factors_follow_the_definition():
    """The hand values of the comments equal the definition (guards the constants used below)."""
    for M, clip in ((M_BP, True), (M_FA, False)):
        for l, W in enumerate((W0, W1)):
            np.testing.assert_allclose(_row_factor(W, clip), M[l], rtol=0, atol=1e-15)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("mode", [None, "propagated", "local"])
@pytest.mark.parametrize("rule", ["bp", "fa"])
def test_one_sgd_step_bp_fa_with_a_zero_row_and_negative_weights(rule, mode, batch):
    """BP: M clipped to [1, 2] (the zero row gets 1, the weak row 1); FA: 2F/max unclipped (zero row 0, so that
    unit's weights get no update and, propagated, it passes no error upstream). Output layer unmodulated."""
    Ws = [W0, W1, W2]
    fb = {1: B1, 2: B2} if rule == "fa" else None
    X, y = X3[:batch], Y3[:batch]
    expected, _ = np_mlp_step(Ws, X, y, rule, mode, feedback=fb)
    got, mods = _torch_steps(_mlp(Ws, rule, fb), [(X, y)], mode, rule)
    _assert_weights(got[0], expected)
    if mode:
        hand = M_BP if rule == "bp" else M_FA
        np.testing.assert_allclose(mods[0]["layers.0"], hand[0], rtol=0, atol=1e-12)
        np.testing.assert_allclose(mods[0]["layers.1"], hand[1], rtol=0, atol=1e-12)
        assert "layers.2" not in mods[0]                       # the output layer has no factor
    if mode and rule == "fa":                                  # M = 0: the zero row stays exactly zero
        assert np.all(got[0][0][1] == 0.0)
    if mode:                                                   # not vacuous: GRAPES changed the hidden updates
        plain, _ = np_mlp_step(Ws, X, y, rule, None, feedback=fb)
        assert not np.allclose(plain[0], expected[0], atol=1e-6)
        np.testing.assert_allclose(plain[2], expected[2], rtol=0, atol=1e-15)


@pytest.mark.parametrize("rule", ["bp", "fa"])
@pytest.mark.parametrize("mode", ["propagated", "local"])
def test_a_layer_whose_maximum_importance_is_zero_gets_factor_two(rule, mode):
    """All-zero first hidden layer: F = 0 everywhere and 2F/max is 0/0, which the spec leaves undefined. The project's
    documented choice (core.modulation): no node is distinguished, every node is the maximum, M = 2 (BP and FA)."""
    Ws = [np.zeros_like(W0), W1, W2]
    fb = {1: B1, 2: B2} if rule == "fa" else None
    M1 = _row_factor(W1, clip=(rule == "bp"))
    expected, _ = np_mlp_step(Ws, X3, Y3, rule, mode, feedback=fb, factors=[np.full(4, 2.0), M1])
    got, mods = _torch_steps(_mlp(Ws, rule, fb), [(X3, Y3)], mode, rule)
    np.testing.assert_array_equal(mods[0]["layers.0"], np.full(4, 2.0))
    _assert_weights(got[0], expected)
    assert np.abs(got[0][0]).sum() > 0                        # the zero layer did learn


@pytest.mark.parametrize("refresh_every", [1, 2])
@pytest.mark.parametrize("mode", ["propagated", "local"])
def test_factor_is_refreshed_from_the_updated_weights_at_the_next_batch(mode, refresh_every):
    """Two SGD steps: the second batch's M comes from the weights after step 1 (refresh_every=1), or is the one of
    step 1 held (refresh_every=2)."""
    Ws = [W0, W1, W2]
    b1, b2 = (X3[:2], Y3[:2]), (X3[1:], Y3[1:])
    step1, m_first = np_mlp_step(Ws, *b1, "bp", mode)
    m_second = [_row_factor(W, clip=True) for W in step1[:-1]] if refresh_every == 1 else m_first
    assert not np.allclose(m_first[1], _row_factor(step1[1], True), atol=1e-4)  # the refresh matters here
    step2, _ = np_mlp_step(step1, *b2, "bp", mode, factors=m_second)
    got, mods = _torch_steps(_mlp(Ws, "bp"), [b1, b2], mode, "bp", refresh_every=refresh_every)
    _assert_weights(got[0], step1)
    _assert_weights(got[1], step2)
    np.testing.assert_allclose(mods[1]["layers.1"], m_second[1], rtol=0, atol=1e-12)


# DFA: 3-4-3-3-2, column 1 of W1 all zero (P^1_1 = 0); feedback B^k: [out_k, classes]
W1_DFA = np.array([[0.6, 0.0, -0.4, 0.2],
                   [-0.3, 0.0, 0.9, -0.5],
                   [0.1, 0.0, 0.2, 0.7]])     # colsums 1.0, 0, 1.5, 1.4 -> P^1 = (4/3, 0, 2, 28/15)
W2_DFA = np.array([[0.5, -0.2, 0.3],
                   [-0.4, 0.8, 0.1],
                   [0.2, 0.3, -0.6]])         # colsums 1.1, 1.3, 1.0 -> P^2 = (22/13, 2, 20/13)
W3_DFA = np.array([[0.7, -0.4, 0.9],
                   [-0.5, 0.6, 0.2]])
B_DFA = [np.array([[0.5, -0.3], [0.2, 0.8], [-0.6, 0.1], [0.4, 0.4]]),
         np.array([[-0.7, 0.2], [0.3, 0.5], [0.6, -0.9]]),
         np.array([[0.1, -0.4], [-0.8, 0.3], [0.5, 0.6]])]


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("mode", [None, "propagated", "local"])
def test_one_sgd_step_dfa_with_a_zero_column(mode, batch):
    """DFA+GRAPES: hidden layer 0 unmodulated; layer 1 scaled by P^2_i P^1_j (the zero column: P^1_1 = 0, no update
    of that column); layer 2 (before the output) by 1 · P^2_j; output layer plain."""
    Ws = [W0, W1_DFA, W2_DFA, W3_DFA]
    X, y = X3[:batch], Y3[:batch]
    expected = np_dfa_step(Ws, X, y, B_DFA, grapes=mode is not None)
    got, mods = _torch_steps(_mlp(Ws, "dfa", B_DFA), [(X, y)], mode, "dfa")
    _assert_weights(got[0], expected)
    if mode:
        p1, p2 = np.array([4 / 3, 0.0, 2.0, 28 / 15]), np.array([22 / 13, 2.0, 20 / 13])
        np.testing.assert_allclose(mods[0]["layers.1"], np.outer(p2, p1), rtol=0, atol=1e-12)
        np.testing.assert_allclose(mods[0]["layers.2"], np.outer(np.ones(3), p2), rtol=0, atol=1e-12)
        assert "layers.0" not in mods[0]
        np.testing.assert_array_equal(got[0][1][:, 1], W1_DFA[:, 1])   # P^1_1 = 0: column 1 untouched
        plain = np_dfa_step(Ws, X, y, B_DFA, grapes=False)
        np.testing.assert_allclose(got[0][0], plain[0], rtol=0, atol=TOL)   # first hidden layer unmodulated


def test_dfa_layer_whose_maximum_outgoing_importance_is_zero_gets_factor_two():
    """All-zero W^1 under DFA: colsum max 0 (0/0), the project's choice P^1 = 2 (as for M)."""
    Ws = [W0, np.zeros_like(W1_DFA), W2_DFA, W3_DFA]
    expected = np_dfa_step(Ws, X3, Y3, B_DFA, grapes=True, P_override={1: np.full(4, 2.0)})
    got, _ = _torch_steps(_mlp(Ws, "dfa", B_DFA), [(X3, Y3)], "propagated", "dfa")
    _assert_weights(got[0], expected)


def test_dfa_with_one_hidden_layer_is_plain_dfa():
    """With a single hidden layer there is nothing to modulate (layer 0 unmodulated, the output plain)."""
    fb = [np.array([[0.5, -0.3], [0.2, 0.8], [-0.6, 0.1], [0.4, 0.4]])]
    Ws = [W0, np.array([[0.7, -0.4, 0.9, 0.1], [-0.5, 0.6, 0.2, -0.3]])]
    expected = np_dfa_step(Ws, X3, Y3, fb, grapes=False)
    got, _ = _torch_steps(_mlp(Ws, "dfa", fb), [(X3, Y3)], "propagated", "dfa")
    _assert_weights(got[0], expected)


# --------------------------------------------------------------------------------------------------- dropout
DROP = 0.5      # inverted dropout: a kept unit is scaled by 1/(1 − 0.5) = 2


def _dropout_masks(model: MLP, batch: int) -> list[np.ndarray]:
    """The inverted-dropout factors D^l ∈ {0, 2}, [batch, out_l], of the model's next training forward. The masks are
    random input data: drawn here as :class:`imc_grapes.models.Dropout` draws them (one uniform per unit, layer after
    layer, from a generator seeded with the module's seed; a unit is kept where u ≥ p)."""
    g = torch.Generator().manual_seed(model.drop.seed)
    return [np.where(torch.rand((batch, n), generator=g, dtype=torch.float64).numpy() >= DROP, 1.0 / (1.0 - DROP), 0.0)
            for n in model.sizes[1:-1]]


@pytest.mark.parametrize("mode", [None, "propagated", "local"])
@pytest.mark.parametrize("rule", ["bp", "fa", "dfa"])
def test_one_sgd_step_with_dropout(rule, mode):
    """Dropout (the reference MLP's 10 %, grapes.md §6; 50 % here, so that 3 samples drop units of every layer): a
    dropped unit passes no error and a kept one's is scaled by 1/keep, the GRAPES factor on top as without dropout
    (DFA: the direct error enters after the dropout). F (DFA: the column sums) comes from the whole weights — the
    project's documented deviation from the reference code, which masks W with the batch's first dropout mask: that
    would give other factors here (sample 0 drops the first layer's units 0 and 2, the strongest among them)."""
    Ws = [W0, W1_DFA, W2_DFA, W3_DFA] if rule == "dfa" else [W0, W1, W2]
    fb = B_DFA if rule == "dfa" else {1: B1, 2: B2} if rule == "fa" else None
    model = _mlp(Ws, rule, fb, dropout=DROP)
    masks = _dropout_masks(model, 3)
    for D in masks:                                               # not vacuous: every layer drops and keeps units
        assert 0 < np.count_nonzero(D) < D.size
    if rule == "dfa":
        expected = np_dfa_step(Ws, X3, Y3, fb, grapes=mode is not None, masks=masks)
        undropped = np_dfa_step(Ws, X3, Y3, fb, grapes=mode is not None)
    else:
        expected, _ = np_mlp_step(Ws, X3, Y3, rule, mode, feedback=fb, masks=masks)
        undropped, _ = np_mlp_step(Ws, X3, Y3, rule, mode, feedback=fb)
    got, mods = _torch_steps(model, [(X3, Y3)], mode, rule)
    _assert_weights(got[0], expected)
    assert not np.allclose(undropped[0], expected[0], atol=1e-6)   # the masks changed the update
    if mode and rule == "dfa":
        p1, p2 = np.array([4 / 3, 0.0, 2.0, 28 / 15]), np.array([22 / 13, 2.0, 20 / 13])
        np.testing.assert_allclose(mods[0]["layers.1"], np.outer(p2, p1), rtol=0, atol=1e-12)
    elif mode:
        hand = M_BP if rule == "bp" else M_FA
        for l in range(2):
            np.testing.assert_allclose(mods[0][f"layers.{l}"], hand[l], rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------------- convolution, with biases
def _conv_params():
    rng = np.random.default_rng(7)
    K0 = rng.uniform(-1, 1, size=(3, 2, 2, 2))
    K0[1] = 0.0                                     # a zero kernel: F = 0 -> M = 1 (clipped)
    K0[2] *= 0.2                                    # weak: 2F/max < 1 -> 1
    b0 = np.array([3.0, -2.0, 4.0])                 # large biases: counting them in F would change every M
    K1 = rng.uniform(-1, 1, size=(2, 3, 2, 2))
    b1 = np.array([-1.5, 2.5])
    V = rng.uniform(-1, 1, size=(2, 2 * 2 * 2))     # [classes, C·H·W] after two 2×2 convs on 4×4
    return K0, b0, K1, b1, V


def _np_conv(x, K, b):
    """Valid cross-correlation: x [B, C_in, H, W], K [C_out, C_in, kh, kw] -> [B, C_out, H-kh+1, W-kw+1]."""
    win = sliding_window_view(x, K.shape[2:], axis=(2, 3))            # [B, C_in, Ho, Wo, kh, kw]
    return np.einsum("bcijkl,ockl->boij", win, K) + b[None, :, None, None]


def _np_conv_back(x, K, d):
    """Gradients of Σ d ⊙ conv(x, K, b) w.r.t. K, b and x."""
    win = sliding_window_view(x, K.shape[2:], axis=(2, 3))
    dK = np.einsum("boij,bcijkl->ockl", d, win)
    dx = np.zeros_like(x)
    kh, kw = K.shape[2:]
    ho, wo = d.shape[2:]
    for p in range(kh):
        for q in range(kw):
            dx[:, :, p:p + ho, q:q + wo] += np.einsum("boij,oc->bcij", d, K[:, :, p, q])
    return dK, d.sum((0, 2, 3)), dx


def np_cnn_step(X, y, mode, lr=LR):
    """conv(2→3, 2×2)+b -> tanh -> conv(3→2, 2×2)+b -> tanh -> flatten -> linear (bias-free); GRAPES per output
    channel, F over (C_in, kh, kw), bias excluded, M clipped to [1, 2] (layer-mean, layer-mean-local: its mean); the
    bias gradient takes the channel's factor as the kernel's (it is the weight of a constant input); the local forms
    scale the layer's own gradients only, the unmodulated error flows to the layer below."""
    K0, b0, K1, b1, V = _conv_params()
    a0 = _np_conv(X, K0, b0)
    h0 = np.tanh(a0)
    a1 = _np_conv(h0, K1, b1)
    h1 = np.tanh(a1)
    flat = h1.reshape(X.shape[0], -1)
    e = _output_error(flat @ V.T, y)
    M = [_row_factor(K, clip=True) for K in (K0, K1)]
    if mode is not None and mode.startswith("layer-mean"):
        M = [np.full_like(m, m.mean()) for m in M]
    local = mode is not None and mode.endswith("local")
    if mode is None:
        M = [np.ones(3), np.ones(2)]
    d1_plain = (e @ V).reshape(h1.shape) * (1 - h1 ** 2)
    d1 = d1_plain * M[1][None, :, None, None]
    dK1, db1, dh0 = _np_conv_back(h0, K1, d1_plain if local else d1)
    if local:
        dK1, db1 = dK1 * M[1][:, None, None, None], db1 * M[1]
    d0 = dh0 * (1 - h0 ** 2) * M[0][None, :, None, None]
    dK0, db0, _ = _np_conv_back(X, K0, d0)
    new = [K0 - lr * dK0, b0 - lr * db0, K1 - lr * dK1, b1 - lr * db1, V - lr * e.T @ flat]
    return new, M


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("mode", [None, "propagated", "local", "layer-mean", "layer-mean-local"])
def test_one_sgd_step_of_a_sequential_cnn_with_biases_and_a_zero_kernel(mode, batch):
    """Convolutions (grapes.md §3): M_c per output channel from Σ|K| over (C_in, kh, kw), biases excluded from F,
    applied at every spatial position; the hidden layers found on a plain nn.Sequential (every conv, not the final
    linear)."""
    X = np.random.default_rng(3).normal(size=(2, 2, 4, 4))[:batch]
    y = np.array([1, 0])[:batch]
    expected, M = np_cnn_step(X, y, mode)
    K0, b0, K1, b1, V = _conv_params()
    model = nn.Sequential(nn.Conv2d(2, 3, 2), nn.Tanh(), nn.Conv2d(3, 2, 2), nn.Tanh(), nn.Flatten(),
                          nn.Linear(8, 2, bias=False)).double()
    with torch.no_grad():
        for p, v in zip(model.parameters(), (K0, b0, K1, b1, V)):
            p.copy_(torch.from_numpy(v))
    handle = attach_grapes(model, mode) if mode else None
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    F.cross_entropy(model(torch.from_numpy(X)), torch.from_numpy(y)).backward()
    opt.step()
    for k, (p, e) in enumerate(zip(model.parameters(), expected)):
        np.testing.assert_allclose(p.detach().numpy(), e, rtol=0, atol=TOL, err_msg=f"parameter {k}")
    if handle is not None:
        assert set(handle.modulations) == {"0", "2"}
        np.testing.assert_allclose(handle.modulations["0"].numpy(), M[0], rtol=0, atol=1e-12)
        if not mode.startswith("layer-mean"):
            assert M[0][1] == 1.0 and M[0].max() == 2.0   # the zero kernel is clipped up to 1
        handle.remove()
