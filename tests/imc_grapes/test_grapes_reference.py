"""GRAPES gradients against an independent per-sample numpy implementation of the reference equations.

The reference functions below are written from grapes.md §1-3 and the authors' numpy code
(github.com/IBM/GRAPES, ``general_network.learning``): numpy only, a loop over samples, column vectors,
``δ_out = softmax(a) - t``, ``ΔW = mean over the batch of δ xᵀ``. They do not call project code; the torch
side (models + attach_grapes + loss.backward()) must match them to 1e-6 in float64, layer by layer.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from imc_grapes.grapes import attach_grapes
from imc_grapes.models import MLP, SmallCNN

TOL = 1e-6


# --------------------------------------------------------------------------------------- numpy reference
def _act(name):
    if name == "relu":
        return (lambda a: np.maximum(a, 0.0)), (lambda a: (a > 0).astype(float))
    return np.tanh, (lambda a: 1.0 - np.tanh(a) ** 2)


def _softmax(a):
    z = np.exp(a - a.max())
    return z / z.sum()


def _m_factor(W, clip, mean):
    F_ = np.abs(W).sum(axis=1)  # row sums: incoming weights of each output neuron
    M = 2.0 * F_ / F_.max()
    if clip:
        M = np.clip(M, 1.0, 2.0)
    if mean:
        M = np.full_like(M, M.mean())
    return M


def np_mlp_grads(Ws, X, labels, act, rule="bp", grapes=None, fa_B=None, dfa_B=None):
    """Ws: list of [out, in]; X: [batch, in]; fa_B[l]: reference-shaped [in_l, out_l] for layer l >= 1;
    dfa_B[k]: [out_k, n_classes] for hidden layer k. grapes: None, 'propagated', 'local', 'layer-mean',
    'layer-mean-local'. Returns the list of mean weight gradients."""
    f, df = _act(act)
    L = len(Ws)  # layers 0..L-1, L-1 = output
    n_cls = Ws[-1].shape[0]
    mean = grapes is not None and grapes.startswith("layer-mean")
    local = grapes is not None and grapes.endswith("local")
    # factors, once per batch, from the weights
    M = [None] * L
    if grapes is not None and rule in ("bp", "fa"):
        for l in range(L - 1):
            M[l] = _m_factor(Ws[l], clip=(rule == "bp"), mean=mean)
    P = [None] * L
    if grapes is not None and rule == "dfa":
        P[L - 1] = np.ones(Ws[L - 1].shape[1])
        for l in range(L - 2, 0, -1):
            colsum = np.abs(Ws[l]).sum(axis=0)
            P[l] = 2.0 * colsum / colsum.max()
            if mean:
                P[l] = np.full_like(P[l], P[l].mean())
    grads = [np.zeros_like(W) for W in Ws]
    for s in range(X.shape[0]):
        h = [X[s][:, None]]
        a = []
        for l in range(L):
            a.append(Ws[l] @ h[-1])
            h.append(f(a[-1]) if l < L - 1 else a[-1])
        t = np.zeros((n_cls, 1))
        t[labels[s]] = 1.0
        e = _softmax(a[-1][:, 0])[:, None] - t
        delta = [None] * L
        delta[L - 1] = e
        upstream = e  # the error that the layer below receives through layer l+1
        for l in range(L - 2, -1, -1):
            if rule == "bp":
                d_bp = (Ws[l + 1].T @ upstream) * df(a[l])
            elif rule == "fa":
                d_bp = (fa_B[l + 1] @ upstream) * df(a[l])
            else:  # dfa
                base = dfa_B[l] @ e
                if grapes is not None and l > 0:
                    d_bp = (P[l + 1][:, None] * base) * df(a[l]) * P[l][None, :]  # matrix [out, in]
                else:
                    d_bp = base * df(a[l])
            if rule in ("bp", "fa") and grapes is not None:
                d_mod = M[l][:, None] * d_bp
                delta[l] = d_mod
                upstream = d_bp if local else d_mod
            else:
                delta[l] = d_bp
                upstream = d_bp
        for l in range(L):
            grads[l] += delta[l] * h[l].T
    return [g / X.shape[0] for g in grads]


# ------------------------------------------------------------------------------------------ torch side
def _torch_grads(model, X, labels, mode, rule):
    handle = attach_grapes(model, mode=mode, rule=rule) if mode is not None else None
    model.train()
    model.zero_grad()
    loss = F.cross_entropy(model(torch.from_numpy(X)), torch.from_numpy(labels))
    loss.backward()
    if handle is not None:
        handle.remove()
    return [layer.weight.grad.detach().numpy() for layer in model.layers]


def _make(sizes, rule, act, seed):
    model = MLP(sizes, activation=act, rule=rule, seed=seed, dtype=torch.float64)
    with torch.no_grad():
        # make the clip bite: one weak row per hidden layer (2F/max < 1) and one strong column
        for layer in model.hidden_layers():
            layer.weight[0] *= 0.1
            layer.weight[:, -1] *= 3.0
    return model


ARCHS = [(5, 4, 3, 2), (6, 5, 4, 4, 3)]
GRAPES_MODES = [None, "propagated", "local", "layer-mean", "layer-mean-local"]


@pytest.mark.parametrize("sizes", ARCHS)
@pytest.mark.parametrize("act", ["relu", "tanh"])
@pytest.mark.parametrize("rule", ["bp", "fa", "dfa"])
@pytest.mark.parametrize("mode", GRAPES_MODES)
def test_mlp_gradients_match_numpy_reference(sizes, act, rule, mode):
    rng = np.random.default_rng(zlib.crc32(repr((sizes, act, rule, mode)).encode()))
    X = rng.normal(size=(7, sizes[0]))
    labels = rng.integers(0, sizes[-1], size=7)
    model = _make(sizes, rule, act, seed=3)
    Ws = [layer.weight.detach().numpy().copy() for layer in model.layers]
    fa_B = [None] + [layer.feedback.detach().numpy().T.copy() for layer in model.layers[1:]] if rule == "fa" else None
    dfa_B = [fb.feedback.detach().numpy().copy() for fb in model.feedback] if rule == "dfa" else None
    expected = np_mlp_grads(Ws, X, labels, act, rule=rule, grapes=mode, fa_B=fa_B, dfa_B=dfa_B)
    got = _torch_grads(model, X, labels, mode, rule)
    for l, (g, e) in enumerate(zip(got, expected)):
        np.testing.assert_allclose(g, e, rtol=0, atol=TOL, err_msg=f"layer {l}")


@pytest.mark.parametrize("rule", ["bp", "fa", "dfa"])
def test_grapes_actually_changes_the_gradients(rule):
    """Guard against a vacuous comparison: with GRAPES the hidden gradients differ from the plain rule."""
    rng = np.random.default_rng(0)
    X, labels = rng.normal(size=(7, 6)), rng.integers(0, 3, size=7)
    sizes = (6, 5, 4, 4, 3)
    plain = _torch_grads(_make(sizes, rule, "tanh", 1), X, labels, None, rule)
    mod = _torch_grads(_make(sizes, rule, "tanh", 1), X, labels, "propagated", rule)
    np.testing.assert_allclose(plain[-1], mod[-1], atol=1e-12)  # output layer unmodulated
    changed = [not np.allclose(p, m, atol=1e-9) for p, m in zip(plain[:-1], mod[:-1])]
    # dfa: hidden layer 0 is unmodulated by the reference; every other hidden layer changes
    assert changed == ([False, True, True] if rule == "dfa" else [True, True, True])


def test_fa_grapes_factor_is_unclipped_and_bp_clipped():
    """FA+GRAPES uses 2F/maxF (the weak row gets M = 2·F_0/max < 1), BP clips it up to 1."""
    model = _make((5, 4, 3, 2), "fa", "tanh", 0)
    h = attach_grapes(model)
    h.refresh()
    w = model.layers[0].weight.detach().numpy()
    F_ = np.abs(w).sum(1)
    np.testing.assert_allclose(h.modulations["layers.0"].numpy(), 2 * F_ / F_.max(), atol=1e-12)
    assert h.modulations["layers.0"].min() < 1.0
    h.remove()
    model2 = _make((5, 4, 3, 2), "bp", "tanh", 0)
    h2 = attach_grapes(model2)
    h2.refresh()
    np.testing.assert_allclose(h2.modulations["layers.0"].numpy(), np.clip(2 * F_ / F_.max(), 1, 2), atol=1e-12)


# ------------------------------------------------------------------------------------ conv (per channel)
def _np_conv_same(x, K):
    """x: [C_in, H, W], K: [C_out, C_in, k, k] -> [C_out, H, W] (cross-correlation, zero 'same' padding)."""
    k = K.shape[-1]
    p = k // 2
    xp = np.pad(x, ((0, 0), (p, p), (p, p)))
    out = np.zeros((K.shape[0], x.shape[1], x.shape[2]))
    for c in range(K.shape[0]):
        for i in range(x.shape[1]):
            for j in range(x.shape[2]):
                out[c, i, j] = np.sum(K[c] * xp[:, i : i + k, j : j + k])
    return out


def _np_conv_same_backward(x, K, d):
    """Gradients of sum(d * conv(x, K)) w.r.t. K and x."""
    k = K.shape[-1]
    p = k // 2
    xp = np.pad(x, ((0, 0), (p, p), (p, p)))
    dK = np.zeros_like(K)
    dxp = np.zeros_like(xp)
    for c in range(K.shape[0]):
        for i in range(x.shape[1]):
            for j in range(x.shape[2]):
                dK[c] += d[c, i, j] * xp[:, i : i + k, j : j + k]
                dxp[:, i : i + k, j : j + k] += d[c, i, j] * K[c]
    return dK, dxp[:, p : p + x.shape[1], p : p + x.shape[2]]


def _np_pool(x):
    C, H, W = x.shape
    out = np.zeros((C, H // 2, W // 2))
    arg = np.zeros((C, H // 2, W // 2, 2), dtype=int)
    for c in range(C):
        for i in range(H // 2):
            for j in range(W // 2):
                win = x[c, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2]
                r, s = np.unravel_index(np.argmax(win), (2, 2))
                out[c, i, j] = win[r, s]
                arg[c, i, j] = (2 * i + r, 2 * j + s)
    return out, arg


def _np_pool_backward(d, arg, shape):
    g = np.zeros(shape)
    for c in range(d.shape[0]):
        for i in range(d.shape[1]):
            for j in range(d.shape[2]):
                r, s = arg[c, i, j]
                g[c, r, s] += d[c, i, j]
    return g


def np_cnn_grads(Ks, Wout, X, labels, mode):
    """Two conv blocks (conv-relu-pool) + linear; GRAPES per output channel, clipped (BP)."""
    n_cls = Wout.shape[0]
    M = []
    for K in Ks:
        F_ = np.abs(K).reshape(K.shape[0], -1).sum(1)  # per output channel over (C_in, kh, kw)
        M.append(np.clip(2 * F_ / F_.max(), 1.0, 2.0) if mode is not None else np.ones(K.shape[0]))
    local = mode == "local"
    gK = [np.zeros_like(K) for K in Ks]
    gW = np.zeros_like(Wout)
    for s in range(X.shape[0]):
        hs, acts, args = [X[s]], [], []
        for K in Ks:
            a = _np_conv_same(hs[-1], K)
            r = np.maximum(a, 0.0)
            pooled, arg = _np_pool(r)
            acts.append(a)
            args.append(arg)
            hs.append(pooled)
        flat = hs[-1].reshape(-1)
        logits = Wout @ flat
        t = np.zeros(n_cls)
        t[labels[s]] = 1.0
        e = _softmax(logits) - t
        gW += np.outer(e, flat)
        d_up = (Wout.T @ e).reshape(hs[-1].shape)
        for b in range(len(Ks) - 1, -1, -1):
            d_a = _np_pool_backward(d_up, args[b], acts[b].shape) * (acts[b] > 0)
            d_mod = M[b][:, None, None] * d_a
            dK, dx = _np_conv_same_backward(hs[b], Ks[b], d_mod)
            gK[b] += dK
            d_up = _np_conv_same_backward(hs[b], Ks[b], d_a)[1] if local else dx
    n = X.shape[0]
    return [g / n for g in gK], gW / n


@pytest.mark.parametrize("mode", [None, "propagated", "local"])
def test_conv_per_channel_factor_matches_numpy_reference(mode):
    model = SmallCNN(in_channels=2, n_classes=3, channels=(3, 4), input_size=8, seed=5, dtype=torch.float64)
    with torch.no_grad():
        model.convs[0].weight[1] *= 0.1  # a weak channel so the clip bites
        model.convs[1].weight[0] *= 0.2
    rng = np.random.default_rng(11)
    X = rng.normal(size=(3, 2, 8, 8))
    labels = rng.integers(0, 3, size=3)
    Ks = [c.weight.detach().numpy().copy() for c in model.convs]
    Wout = model.classifier.weight.detach().numpy().copy()
    exp_K, exp_W = np_cnn_grads(Ks, Wout, X, labels, mode)
    handle = attach_grapes(model, mode=mode) if mode is not None else None
    loss = F.cross_entropy(model(torch.from_numpy(X)), torch.from_numpy(labels))
    loss.backward()
    for b, conv in enumerate(model.convs):
        np.testing.assert_allclose(conv.weight.grad.numpy(), exp_K[b], rtol=0, atol=TOL, err_msg=f"conv {b}")
    np.testing.assert_allclose(model.classifier.weight.grad.numpy(), exp_W, rtol=0, atol=TOL)
    if handle is not None:
        assert set(handle.modulations) == {"convs.0", "convs.1"}
        assert handle.modulations["convs.0"].shape == (3,)


# ------------------------------------------------------------------------------------------------ biases
def np_mlp_grads_with_bias(Ws, bs, X, labels, act, rule, grapes, fa_B=None, dfa_B=None):
    """Batched reference with biases: ``F`` from the weights only (grapes.md §1: bias excluded); a bias is the
    weight of a constant input, so its gradient is ``Σ_batch δ`` of the same (modulated) ``δ`` as the weights; under
    DFA+GRAPES that constant input has no outgoing importance of its own, so the bias takes ``P^{l+1}`` only (the
    documented choice of :func:`imc_grapes.grapes.dfa_modulations`). Returns ``([dW], [db])``, batch means."""
    f, df = _act(act)
    L, n = len(Ws), X.shape[0]
    mean = grapes is not None and grapes.startswith("layer-mean")
    local = grapes is not None and grapes.endswith("local")
    hs, As = [X], []
    for l in range(L):
        As.append(hs[-1] @ Ws[l].T + bs[l])
        hs.append(f(As[-1]) if l < L - 1 else As[-1])
    z = np.exp(As[-1] - As[-1].max(1, keepdims=True))
    e = (z / z.sum(1, keepdims=True) - np.eye(Ws[-1].shape[0])[labels]) / n
    dW, db = [None] * L, [None] * L
    dW[-1], db[-1] = e.T @ hs[-2], e.sum(0)
    up = e
    for l in range(L - 2, -1, -1):
        if rule == "dfa":
            d = (e @ dfa_B[l].T) * df(As[l])
            dW[l], db[l] = d.T @ hs[l], d.sum(0)
            if grapes is not None and l > 0:
                cols = [np.abs(Ws[k]).sum(0) for k in (l, l + 1)]
                p_pre, p_post = (2 * c / c.max() for c in cols)
                if l + 1 == L - 1:
                    p_post = np.ones_like(p_post)
                if mean:
                    p_pre, p_post = np.full_like(p_pre, p_pre.mean()), np.full_like(p_post, p_post.mean())
                dW[l], db[l] = np.outer(p_post, p_pre) * dW[l], p_post * db[l]
            continue
        d = (up @ (Ws[l + 1] if rule == "bp" else fa_B[l + 1].T)) * df(As[l])
        m = np.ones(d.shape[1])
        if grapes is not None:
            m = _m_factor(Ws[l], clip=(rule == "bp"), mean=mean)
        dW[l], db[l] = (d * m).T @ hs[l], (d * m).sum(0)
        up = d if local else d * m
    return dW, db


@pytest.mark.parametrize("rule", ["bp", "fa", "dfa"])
@pytest.mark.parametrize("mode", GRAPES_MODES)
def test_mlp_with_biases_matches_numpy_reference(rule, mode):
    """Biases (large, so that counting them in ``F`` would change every factor) are excluded from the importance and
    their gradients are modulated like the weights' rows."""
    sizes = (6, 5, 4, 3)
    model = MLP(sizes, activation="tanh", rule=rule, bias=True, seed=4, dtype=torch.float64)
    with torch.no_grad():
        for layer in model.layers:
            layer.bias.mul_(20.0)
        for layer in model.hidden_layers():
            layer.weight[0] *= 0.1
            layer.weight[:, -1] *= 3.0
    rng = np.random.default_rng(zlib.crc32(repr((rule, mode)).encode()))
    X, labels = rng.normal(size=(7, sizes[0])), rng.integers(0, sizes[-1], size=7)
    Ws = [layer.weight.detach().numpy().copy() for layer in model.layers]
    bs = [layer.bias.detach().numpy().copy() for layer in model.layers]
    fa_B = [None] + [layer.feedback.detach().numpy().T.copy() for layer in model.layers[1:]] if rule == "fa" else None
    dfa_B = [fb.feedback.detach().numpy().copy() for fb in model.feedback] if rule == "dfa" else None
    exp_W, exp_b = np_mlp_grads_with_bias(Ws, bs, X, labels, "tanh", rule, mode, fa_B, dfa_B)
    handle = attach_grapes(model, mode=mode, rule=rule) if mode is not None else None
    F.cross_entropy(model(torch.from_numpy(X)), torch.from_numpy(labels)).backward()
    for l, layer in enumerate(model.layers):
        np.testing.assert_allclose(layer.weight.grad.numpy(), exp_W[l], rtol=0, atol=TOL, err_msg=f"W{l}")
        np.testing.assert_allclose(layer.bias.grad.numpy(), exp_b[l], rtol=0, atol=TOL, err_msg=f"b{l}")
    if handle is not None:
        handle.remove()
