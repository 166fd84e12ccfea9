"""FA and DFA autograd pieces: the backward really uses the fixed random matrices."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from imc_grapes.grapes import DFAContext, DFAFeedback, FALinear, dfa_hidden, dfa_output
from imc_grapes.models import MLP


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_fa_backward_sends_grad_out_times_b_not_w():
    layer = FALinear(5, 3, bias=True, generator=_gen(0), dtype=torch.float64)
    x = torch.randn(4, 5, generator=_gen(1), dtype=torch.float64, requires_grad=True)
    g_out = torch.randn(4, 3, generator=_gen(2), dtype=torch.float64)
    y = layer(x)
    torch.testing.assert_close(y, x @ layer.weight.T + layer.bias)  # forward as nn.Linear
    y.backward(g_out)
    torch.testing.assert_close(x.grad, g_out @ layer.feedback)
    assert not torch.allclose(x.grad, g_out @ layer.weight)
    torch.testing.assert_close(layer.weight.grad, g_out.T @ x.detach())
    torch.testing.assert_close(layer.bias.grad, g_out.sum(0))


def test_fa_feedback_is_a_buffer_that_moves_and_is_saved():
    layer = FALinear(6, 4, generator=_gen(0))
    assert "feedback" in dict(layer.named_buffers())
    assert "feedback" not in dict(layer.named_parameters())
    sd = layer.state_dict()
    assert set(sd) == {"weight", "feedback"}
    other = FALinear(6, 4, generator=_gen(99))
    other.load_state_dict(sd)
    torch.testing.assert_close(other.feedback, layer.feedback)
    layer.to(torch.float64)
    assert layer.feedback.dtype == torch.float64


def test_fa_init_bounds_and_seed():
    layer = FALinear(50, 40, generator=_gen(0), feedback_generator=_gen(1))
    bound = math.sqrt(6 / 50)
    assert layer.weight.abs().max() <= bound and layer.feedback.abs().max() <= bound
    assert layer.feedback.abs().max() > 0.9 * bound  # really spread over the range
    again = FALinear(50, 40, generator=_gen(0), feedback_generator=_gen(1))
    torch.testing.assert_close(again.feedback, layer.feedback)
    torch.testing.assert_close(again.weight, layer.weight)


def test_dfa_hidden_gradient_is_b_times_output_error_regardless_of_upper_layers():
    g = _gen(3)
    h0 = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    B = torch.randn(4, 3, generator=g, dtype=torch.float64)
    targets = torch.tensor([0, 1, 2, 0, 1, 2])
    for upper in (torch.randn(3, 4, generator=g, dtype=torch.float64), torch.zeros(3, 4, dtype=torch.float64)):
        h0.grad = None
        ctx = DFAContext()
        h = dfa_hidden(h0, B, ctx)
        logits = dfa_output(torch.tanh(h) @ upper.T + 0.1, ctx)
        logits.retain_grad()
        F.cross_entropy(logits, targets).backward()
        e = (torch.softmax(logits.detach(), 1) - F.one_hot(targets, 3)) / 6
        torch.testing.assert_close(ctx.e, e)
        torch.testing.assert_close(h0.grad, e @ B.T)  # the upper weights never enter


def test_dfa_mlp_hidden_weight_grads_follow_the_direct_feedback():
    model = MLP([5, 4, 4, 3], activation="relu", rule="dfa", seed=2, dtype=torch.float64)
    x = torch.randn(7, 5, generator=_gen(4), dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    F.cross_entropy(model(x), y).backward()
    with torch.no_grad():
        a0 = x @ model.layers[0].weight.T
        h0 = a0.relu()
        a1 = h0 @ model.layers[1].weight.T
        h1 = a1.relu()
        logits = h1 @ model.layers[2].weight.T
        e = (torch.softmax(logits, 1) - F.one_hot(y, 3)) / 7
        d1 = (e @ model.feedback[1].feedback.T) * (a1 > 0)
        d0 = (e @ model.feedback[0].feedback.T) * (a0 > 0)
    torch.testing.assert_close(model.layers[2].weight.grad, e.T @ h1)
    torch.testing.assert_close(model.layers[1].weight.grad, d1.T @ h0)
    torch.testing.assert_close(model.layers[0].weight.grad, d0.T @ x)


def test_dfa_feedback_init_and_missing_output_error():
    fb = DFAFeedback(30, 10, generator=_gen(0))
    assert fb.feedback.shape == (30, 10)
    assert fb.feedback.abs().max() <= math.sqrt(6 / 30)
    h = torch.randn(2, 30, requires_grad=True)
    out = fb(h, DFAContext())  # no dfa_output downstream: e is never captured
    with pytest.raises(RuntimeError, match="output error was not captured"):
        out.sum().backward()
    assert fb(h, None) is h


def test_dfa_model_eval_forward_needs_no_context():
    model = MLP([5, 4, 3], rule="dfa", seed=0)
    with torch.no_grad():
        out = model(torch.randn(2, 5, generator=_gen(0)))
    assert out.shape == (2, 3)


# ------------------------------------------------------------------ argument errors
@pytest.mark.parametrize("make, field", [
    (lambda v: FALinear(v, 3), "FALinear.in_features"),
    (lambda v: FALinear(3, v), "FALinear.out_features"),
    (lambda v: DFAFeedback(v, 3), "DFAFeedback.out_features"),
    (lambda v: DFAFeedback(3, v), "DFAFeedback.n_classes"),
])
@pytest.mark.parametrize("value", [0, -1, 2.0, True, "3"])
def test_bad_size_names_the_argument_and_range(make, field, value):
    """A string size failed with "'<' not supported between instances of 'str' and 'int'", a bool or a float
    built a layer (``True`` -> one feature); each is refused as the analog layers refuse them."""
    import re

    with pytest.raises(ValueError, match=rf"^{field} must be an integer >= 1, got {re.escape(repr(value))}$"):
        make(value)


@pytest.mark.parametrize("value", ["no", 1, None])
def test_fa_linear_bias_that_is_no_bool_is_refused(value):
    """``bias="no"`` built a layer with a bias (a truthy string)."""
    with pytest.raises(ValueError, match=r"^FALinear.bias must be true or false, got "):
        FALinear(3, 2, bias=value)


def test_fa_linear_forward_refuses_wrong_inputs_naming_layer_and_expectation():
    """A wrong width or dtype failed in torch's matmul ("mat1 and mat2 shapes cannot be multiplied", "expected m1
    and m2 to have the same dtype") and a list with an AttributeError; the layer names what it expects.
    Under ``torch.autocast`` another dtype is taken, as ``nn.Linear`` takes it."""
    layer = FALinear(3, 2, generator=_gen(0))
    with pytest.raises(ValueError, match=r"^FALinear: expected input \[\.\.\., 3\] \(in_features\), got \(2, 4\)$"):
        layer(torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"^FALinear: input dtype must be the layer's, torch.float32, got "
                                         r"torch.float64"):
        layer(torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"^FALinear: input must be on the layer's device, cpu, got meta"):
        layer(torch.zeros(2, 3, device="meta"))
    with pytest.raises(TypeError, match=r"^FALinear: input must be a torch.Tensor, got list$"):
        layer([[0.0, 0.0, 0.0]])
    x = torch.randn(4, 3, generator=_gen(1)).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
        ref = F.linear(x, layer.weight)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y, ref, rtol=0, atol=0)
