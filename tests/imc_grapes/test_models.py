"""Models: shapes, bias-free, He-uniform init, determinism, factories, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from imc_grapes.grapes import FALinear, attach_grapes
from imc_grapes.models import MLP, Dropout, SmallCNN, build_model, cnn_max_blocks


def _x(shape, seed=0):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def test_mlp_reference_shapes_bias_free_and_layers():
    m = build_model("mlp", input_shape=(1, 28, 28), n_classes=10, hidden=[256, 256], activation="relu",
                    dropout=0.0, rule="bp", seed=0)
    assert m(_x((3, 1, 28, 28))).shape == (3, 10)
    assert [tuple(l.weight.shape) for l in m.layers] == [(256, 784), (256, 256), (10, 256)]
    assert all(name.endswith("weight") for name, _ in m.named_parameters())
    assert m.hidden_layers() == [m.layers[0], m.layers[1]] and m.output_layer() is m.layers[2]
    assert m.rule == "bp"


def test_cnn_shapes_bias_free_and_layers():
    m = build_model("cnn", input_shape=(1, 28, 28), n_classes=10, seed=0)
    assert isinstance(m, SmallCNN)
    assert m(_x((2, 1, 28, 28))).shape == (2, 10)
    assert [tuple(c.weight.shape) for c in m.convs] == [(16, 1, 3, 3), (32, 16, 3, 3)]
    assert tuple(m.classifier.weight.shape) == (10, 32 * 7 * 7)
    assert all(name.endswith("weight") for name, _ in m.named_parameters())
    assert m.hidden_layers() == list(m.convs) and m.output_layer() is m.classifier
    small = build_model("cnn", input_shape=(3, 9, 12), n_classes=4, hidden=[2, 3, 5], seed=0)
    assert small(_x((2, 3, 9, 12))).shape == (2, 4)
    assert tuple(small.classifier.weight.shape) == (4, 5 * 1 * 1)


@pytest.mark.parametrize("fan_in, shape_fn", [
    (784, lambda m: m.layers[0].weight),
    (256, lambda m: m.layers[1].weight),
])
def test_mlp_he_uniform_bounds_and_spread(fan_in, shape_fn):
    w = shape_fn(MLP([784, 256, 256, 10], seed=1)).detach().double()
    b = math.sqrt(6.0 / fan_in)
    assert w.abs().max() <= b * (1 + 1e-6)
    assert w.abs().max() > 0.99 * b
    # U(-b, b): mean 0, variance b²/3 (n ≥ 65k samples: 3% is > 10 standard errors)
    assert abs(w.mean()) < 0.01 * b
    assert abs(w.var() / (b * b / 3) - 1) < 0.03


def test_cnn_he_uniform_uses_conv_fan_in():
    m = SmallCNN(channels=(16, 32), seed=0)
    for conv, fan_in in zip(m.convs, (1 * 9, 16 * 9)):
        b = math.sqrt(6.0 / fan_in)
        assert conv.weight.abs().max() <= b * (1 + 1e-6) and conv.weight.abs().max() > 0.9 * b


@pytest.mark.parametrize("rule", ["bp", "fa", "dfa"])
def test_determinism_under_seed(rule):
    a, b, c = (MLP([20, 8, 6, 3], rule=rule, dropout=0.3, seed=s) for s in (7, 7, 8))
    for ta, tb in zip(a.state_dict().values(), b.state_dict().values()):
        torch.testing.assert_close(ta, tb)
    assert not torch.equal(a.layers[0].weight, c.layers[0].weight)
    x = _x((5, 20))
    torch.testing.assert_close(a(x), b(x))  # same dropout masks too
    assert not torch.equal(a(x), c(x))


def test_same_seed_gives_same_forward_weights_under_every_rule():
    ws = [MLP([10, 6, 6, 3], rule=r, seed=4).layers for r in ("bp", "fa", "dfa")]
    for layers in ws[1:]:
        for l0, l1 in zip(ws[0], layers):
            torch.testing.assert_close(l0.weight, l1.weight)


def test_rules_build_their_feedback_paths():
    fa = MLP([10, 6, 3], rule="fa", seed=0)
    assert all(isinstance(l, FALinear) for l in fa.layers)
    dfa = MLP([10, 6, 5, 3], rule="dfa", seed=0)
    assert [tuple(f.feedback.shape) for f in dfa.feedback] == [(6, 3), (5, 3)]
    assert "feedback.0.feedback" in dfa.state_dict()


def test_dropout_is_seeded_inverted_and_off_in_eval():
    d = Dropout(0.25, seed=3)
    x = torch.ones(20000)
    y = d(x)
    kept = y != 0
    assert abs(kept.double().mean() - 0.75) < 0.02  # binomial std ≈ 0.003
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / 0.75))
    torch.testing.assert_close(Dropout(0.25, seed=3)(x), y)
    d.eval()
    assert torch.equal(d(x), x)
    with pytest.raises(ValueError, match=r"Dropout.p must be in \[0, 1\)"):
        Dropout(1.0, seed=0)


def test_cnn_dropout_masks_the_flattened_features_before_the_classifier():
    """SmallCNN's documented order: conv -> ReLU -> pool, flatten, dropout, linear. Training logits are the classifier
    applied to the flattened features times the inverted-dropout factor D ∈ {0, 1/(1 − p)}, drawn as
    :class:`Dropout` draws it (one uniform per feature from a generator seeded with the module's seed, kept where
    u ≥ p); eval logits use the features undropped. The features are computed here with torch.nn.functional."""
    p = 0.5
    model = SmallCNN(in_channels=1, n_classes=3, channels=(2,), input_size=4, dropout=p, seed=0,
                     dtype=torch.float64)
    x = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    flat = F.max_pool2d(F.relu(F.conv2d(x, model.convs[0].weight.detach(), padding=1)), 2).flatten(1)   # [3, 8]
    u = torch.rand(flat.shape, generator=torch.Generator().manual_seed(model.drop.seed), dtype=torch.float64)
    D = torch.where(u >= p, 1.0 / (1.0 - p), 0.0).to(torch.float64)
    assert 0 < int((D == 0).sum()) < D.numel()                                      # not vacuous: some dropped
    W = model.classifier.weight.detach()
    model.train()
    torch.testing.assert_close(model(x), (flat * D) @ W.T, rtol=0, atol=1e-12)
    model.eval()
    torch.testing.assert_close(model(x), flat @ W.T, rtol=0, atol=1e-12)


def test_linear_factory_path_trains_with_bp_and_grapes():
    made = []

    class MyLinear(nn.Linear):
        pass

    def factory(n_in, n_out, bias):
        layer = MyLinear(n_in, n_out, bias=bias)
        made.append((n_in, n_out, bias))
        return layer

    m = MLP([12, 7, 3], linear_factory=factory, seed=0)
    assert made == [(12, 7, False), (7, 3, False)]
    h = attach_grapes(m)
    x, y = _x((4, 12)), torch.tensor([0, 1, 2, 0])
    F.cross_entropy(m(x), y).backward()
    assert m.layers[0].weight.grad is not None and h.refresh_count == 1
    with pytest.raises(ValueError, match="not supported with rule='fa'"):
        MLP([12, 7, 3], rule="fa", linear_factory=factory)


def test_conv_factory_is_used():
    calls = []

    def conv_factory(c_in, c_out, k, pad, bias):
        calls.append((c_in, c_out, k, pad, bias))
        return nn.Conv2d(c_in, c_out, k, padding=pad, bias=bias)

    m = SmallCNN(channels=(4, 6), kernel_size=5, conv_factory=conv_factory, seed=0)
    assert calls == [(1, 4, 5, 2, False), (4, 6, 5, 2, False)]
    assert m(_x((1, 1, 28, 28))).shape == (1, 10)


def test_device_dtype_and_bias_options():
    m = MLP([4, 3, 2], bias=True, seed=0, dtype=torch.float64)
    assert m.layers[0].bias is not None and m.layers[0].weight.dtype == torch.float64
    assert m(_x((2, 4)).double()).dtype == torch.float64
    fa = MLP([4, 3, 2], rule="fa", seed=0, dtype=torch.float64)
    assert fa.layers[1].feedback.dtype == torch.float64


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown model 'resnet'; valid names: cnn, mlp"):
        build_model("resnet", input_shape=(1, 28, 28), n_classes=10)
    for rule in ("fa", "dfa"):
        with pytest.raises(ValueError, match="SmallCNN.rule must be 'bp'"):
            build_model("cnn", input_shape=(1, 28, 28), n_classes=10, rule=rule)
    with pytest.raises(ValueError, match="MLP.rule"):
        MLP([4, 2], rule="hebbian")
    with pytest.raises(ValueError, match="MLP.activation"):
        MLP([4, 2], activation="gelu")
    with pytest.raises(ValueError, match="MLP.dropout"):
        MLP([4, 2], dropout=-0.1)
    with pytest.raises(ValueError, match="MLP.sizes"):
        MLP([4])
    with pytest.raises(ValueError, match="too small"):
        SmallCNN(input_size=3)
    with pytest.raises(ValueError, match="kernel_size"):
        SmallCNN(kernel_size=2)
    with pytest.raises(ValueError, match=r"input_shape must be \(C, H, W\)"):
        build_model("cnn", input_shape=(784,), n_classes=10)


@pytest.mark.parametrize("h, w", [(28, 28), (16, 20), (7, 100), (1, 5), (0, 4), (-5, 8)])
def test_cnn_max_blocks_is_the_most_2x2_poolings_that_leave_a_pixel(h, w):
    """Against the definition: k poolings leave ``h // 2**k`` rows; the most k with at least 1 row and column."""
    most = max((k for k in range(12) if h // 2 ** k >= 1 and w // 2 ** k >= 1), default=0)
    assert cnn_max_blocks(h, w) == most
    if most >= 1:
        SmallCNN(1, 10, channels=(2,) * most, input_size=(h, w))
    with pytest.raises(ValueError, match=rf"^SmallCNN\.input_size {h}x{w} is too small for {most + 1} 2x2 poolings"):
        SmallCNN(1, 10, channels=(2,) * (most + 1), input_size=(h, w))
