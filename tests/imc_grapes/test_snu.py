"""Spiking Neural Units: the two-step example by hand, the surrogate gradient, the spike codes, and GRAPES per
unit from the input weights at every time step."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from imc_grapes.grapes import attach_grapes
from imc_grapes.snu import SNULayer, SpikingClassifier, encode_latency, encode_rate, spike_fn, to_intensity


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _layer(soft: bool) -> SNULayer:
    layer = SNULayer(2, 2, soft=soft, decay=0.5, threshold=1.0, generator=torch.Generator().manual_seed(0),
                     dtype=torch.float64)
    with torch.no_grad():
        layer.inp.weight.copy_(torch.tensor([[1.0, 0.5], [-1.0, 2.0]], dtype=torch.float64))
        layer.b.copy_(torch.tensor([-1.0, -0.5], dtype=torch.float64))
    return layer


# x_1 = (1, 1), x_2 = (1, 0), W = [[1, .5], [-1, 2]], l = 0.5, b = (-1, -.5)
X = torch.tensor([[[1.0, 1.0]], [[1.0, 0.0]]], dtype=torch.float64)  # [T=2, batch=1, in=2]


def test_snu_two_steps_by_hand():
    # t=1: W x1 = (1.5, 1.0); s1 = relu(W x1 + 0) = (1.5, 1.0); y1 = step(s1 + b) = step(0.5, 0.5) = (1, 1)
    # t=2: W x2 = (1, -1); s2 = relu(W x2 + 0.5 * s1 * (1 - y1)) = relu(1, -1) = (1, 0)
    #      y2 = step(s2 + b) = step(0, -0.5) = (0, 0)          (step(0) = 0: a spike needs s + b > 0)
    y = _layer(soft=False)(X)
    assert torch.equal(y[:, 0], torch.tensor([[1.0, 1.0], [0.0, 0.0]], dtype=torch.float64))


def test_soft_snu_two_steps_by_hand():
    sig = lambda v: 1.0 / (1.0 + math.exp(-v))  # noqa: E731
    # t=1: s1 = (1.5, 1.0), y1 = (σ(0.5), σ(0.5))
    y1 = sig(0.5)
    # t=2: s2 = relu((1, -1) + 0.5 * (1.5, 1.0) * (1 - y1))
    s2 = [max(0.0, 1.0 + 0.5 * 1.5 * (1 - y1)), max(0.0, -1.0 + 0.5 * 1.0 * (1 - y1))]
    y2 = [sig(s2[0] - 1.0), sig(s2[1] - 0.5)]
    y = _layer(soft=True)(X)
    expected = torch.tensor([[y1, y1], y2], dtype=torch.float64)
    torch.testing.assert_close(y[:, 0], expected, rtol=0, atol=1e-12)
    assert s2[1] == 0.0, "the example exercises the ReLU g(·)"


def test_reset_keeps_state_only_without_a_spike():
    # one unit, constant input 0.3, decay 0.9, threshold 1: s accumulates 0.3, 0.57, 0.813, 1.0317 (spike), then
    # the reset removes the carried state: s_5 = 0.3
    layer = SNULayer(1, 1, decay=0.9, threshold=1.0, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        layer.inp.weight.fill_(1.0)
    y = layer(torch.full((5, 1, 1), 0.3, dtype=torch.float64))[:, 0, 0]
    assert y.tolist() == [0.0, 0.0, 0.0, 1.0, 0.0]


@given(st.floats(-6, 6), st.sampled_from([0.5, 1.0, 4.0]))
@settings(max_examples=30, deadline=None)
def test_surrogate_gradient_is_the_sigmoid_derivative(v, beta):
    x = torch.tensor(v, dtype=torch.float64, requires_grad=True)
    y = spike_fn(x, beta)
    y.backward()
    s = 1.0 / (1.0 + math.exp(-beta * v))
    assert y.item() == (1.0 if v > 0 else 0.0)
    assert x.grad.item() == pytest.approx(beta * s * (1 - s), rel=1e-12, abs=1e-300)


def test_latency_code_by_hand():
    i = torch.tensor([[1.0, 0.5, 0.25, 0.1]])
    spikes = encode_latency(i, steps=5, min_intensity=0.2)  # t = round((1 - I) * 4) = 0, 2, 3, (never)
    assert spikes.shape == (5, 1, 4)
    assert spikes[:, 0].nonzero().tolist() == [[0, 0], [2, 1], [3, 2]]
    # exact halves round to even (the docstring's choice): (1 − 0.375)·4 = 2.5 -> 2, (1 − 0.125)·4 = 3.5 -> 4
    ties = encode_latency(torch.tensor([[0.375, 0.125]]), steps=5, min_intensity=0.1)
    assert ties[:, 0].nonzero().tolist() == [[2, 0], [4, 1]]


def test_latency_code_threshold_is_inclusive():
    """The docstring: inputs with ``I < min_intensity`` never spike, so one at exactly ``min_intensity`` does (0.25 and
    0.5 are exact in binary): at step round((1 − 0.25)·4) = 3; one just below never."""
    i = torch.tensor([[0.25, 0.25 - 1e-9]], dtype=torch.float64)
    spikes = encode_latency(i, steps=5, min_intensity=0.25)
    assert spikes[:, 0].nonzero().tolist() == [[3, 0]]
    assert encode_latency(torch.tensor([[0.5]], dtype=torch.float64), 3, min_intensity=0.5)[:, 0, 0].tolist() == [
        0.0, 1.0, 0.0]                                                      # round(0.5 · 2) = 1


def test_rate_code_statistics_and_seed():
    i = torch.tensor([[0.0, 0.2, 0.7, 1.0]]).expand(50, 4)
    s = encode_rate(i, 200, torch.Generator().manual_seed(3))
    rate = s.mean(dim=(0, 1))
    # 10 000 Bernoulli draws per input: std ≤ 0.005; 6 std tolerance
    assert rate[0] == 0 and rate[3] == 1
    assert abs(rate[1] - 0.2) < 0.03 and abs(rate[2] - 0.7) < 0.03
    assert torch.equal(s, encode_rate(i, 200, torch.Generator().manual_seed(3)))


def test_intensity_is_per_sample_min_max():
    x = torch.tensor([[[[-1.0, 0.0], [1.0, 3.0]]]])
    assert to_intensity(x).tolist() == [[0.0, 0.25, 0.5, 1.0]]


@pytest.mark.parametrize("soft", [False, True])
def test_grapes_scales_the_input_weight_gradient_per_unit_at_every_step(soft):
    torch.manual_seed(0)
    x = torch.randn(8, 1, 6, 6)
    y = torch.randint(0, 3, (8,))

    def grads(mode):
        model = SpikingClassifier(36, (12,), 3, steps=5, soft=soft, seed=1, dtype=torch.float64)
        handle = attach_grapes(model, mode) if mode else None
        loss = torch.nn.functional.cross_entropy(model(x.double()), y)
        loss.backward()
        if handle:
            handle.remove()
        return model, {n: p.grad.clone() for n, p in model.named_parameters()}

    model, plain = grads(None)
    _, mod = grads("propagated")
    w = model.layers[0].inp.weight.detach()
    f = w.abs().sum(1)
    m = (2 * f / f.max()).clamp(1, 2)  # grapes.md §1, computed here independently
    assert plain["layers.0.inp.weight"].abs().sum() > 0
    torch.testing.assert_close(mod["layers.0.inp.weight"], m[:, None] * plain["layers.0.inp.weight"])
    torch.testing.assert_close(mod["readout.weight"], plain["readout.weight"])
    torch.testing.assert_close(mod["layers.0.b"], plain["layers.0.b"])


def test_classifier_shapes_and_determinism():
    x = torch.randn(4, 1, 28, 28)
    a = SpikingClassifier(784, (20, 10), 10, steps=6, seed=5)
    b = SpikingClassifier(784, (20, 10), 10, steps=6, seed=5)
    out = a(x)
    assert out.shape == (4, 10)
    torch.testing.assert_close(out, b(x))  # same seed: same weights and the same spike trains
    assert [type(m).__name__ for m in a.hidden_layers()] == ["Linear", "Linear"]
    assert a.output_layer() is a.readout


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_decay_and_threshold_are_exact_in_the_model_dtype(dtype):
    # built in float32 and cast, a float64 model had decay 0.69999998807907 and threshold 0.30000001192
    model = SpikingClassifier(6, (4, 3), 2, decay=0.7, threshold=0.3, seed=0, dtype=dtype)
    for layer in model.layers:
        assert layer.decay.dtype == dtype and layer.b.dtype == dtype
        assert torch.equal(layer.decay, torch.full((layer.out_features,), 0.7, dtype=dtype))
        assert torch.equal(layer.b, torch.full((layer.out_features,), -0.3, dtype=dtype))


def test_invalid_arguments_name_the_field():
    with pytest.raises(ValueError, match=r"SNULayer.decay must be in \[0, 1\)"):
        SNULayer(2, 2, decay=1.0)
    with pytest.raises(ValueError, match="SpikingClassifier.encoding must be one of"):
        SpikingClassifier(4, (2,), 2, encoding="phase")


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``m`` (GRAPES written out, without the hooks)."""

    @staticmethod
    def forward(ctx, a, m):
        ctx.m = m
        return a.clone()

    @staticmethod
    def backward(ctx, g):
        return g * ctx.m, None


@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("mode", ["propagated", "local"])
def test_two_snu_layers_match_a_hand_written_bptt_with_grapes(mode, soft):
    # The SNU equations written out step by step; GRAPES per unit from the row sums of each layer's W at every step:
    # propagated scales ∂L/∂(W x_t) (so ΔW and the error sent to the layer below), local scales ΔW only.
    x = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    model = SpikingClassifier(16, (10, 8), 3, steps=6, encoding="latency", soft=soft, threshold=0.3, seed=3,
                              dtype=torch.float64)
    handle = attach_grapes(model, mode)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    handle.remove()

    seq = encode_latency(to_intensity(x), 6)
    ws = [layer.inp.weight.detach().clone().requires_grad_() for layer in model.layers]
    bs = [layer.b.detach().clone().requires_grad_() for layer in model.layers]
    v = model.readout.weight.detach().clone().requires_grad_()
    for w, b in zip(ws, bs):
        f = w.detach().abs().sum(1)
        m = (2 * f / f.max()).clamp(1, 2)
        s = torch.zeros(seq.shape[1], w.shape[0], dtype=torch.float64)
        out = torch.zeros_like(s)
        outs = []
        for t in range(seq.shape[0]):
            a = seq[t] @ w.T
            if mode == "propagated":
                a = _ScaleGrad.apply(a, m)
            s = torch.relu(a + 0.8 * s * (1 - out))
            out = torch.sigmoid(s + b) if soft else spike_fn(s + b)
            outs.append(out)
        seq = torch.stack(outs)
        if mode == "local":
            w.register_hook(lambda g, m=m: g * m[:, None])
    torch.nn.functional.cross_entropy(seq.mean(0) @ v.T, y).backward()
    assert ws[0].grad.abs().sum() > 0
    torch.testing.assert_close(model.readout.weight.grad, v.grad)
    for k, layer in enumerate(model.layers):
        torch.testing.assert_close(layer.inp.weight.grad, ws[k].grad, msg=f"layers.{k}.inp.weight")
        torch.testing.assert_close(layer.b.grad, bs[k].grad, msg=f"layers.{k}.b")
