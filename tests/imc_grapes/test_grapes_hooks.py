"""attach_grapes: once-per-batch recomputation, optimizers, layer selection, importance sources, lifecycle."""

from __future__ import annotations

import copy
import math
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from imc_grapes.grapes import attach_grapes, importance, modulation
from imc_grapes.models import MLP, build_model


def _data(n_in=5, n_cls=3, batch=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, n_in, generator=g, dtype=torch.float64), torch.randint(0, n_cls, (batch,), generator=g)


def _one_hidden(seed=0):
    """5-4-3 net: GRAPES on its single hidden layer scales that layer's gradient rows by M (both modes)."""
    model = MLP([5, 4, 3], activation="tanh", seed=seed, dtype=torch.float64)
    with torch.no_grad():
        model.layers[0].weight[2] *= 0.2  # clip bites for row 2
    return model


def _plain_grads(model, x, y):
    m = copy.deepcopy(model)
    m.zero_grad()
    F.cross_entropy(m(x), y).backward()
    return [p.grad.clone() for p in m.parameters()]


def _expected_m(weight):
    f = weight.detach().abs().sum(1)
    return (2 * f / f.max()).clamp(1, 2)


@pytest.mark.parametrize("mode", ["propagated", "local"])
def test_modulation_recomputed_once_per_batch_and_changes_after_step(mode):
    model = _one_hidden()
    x, y = _data()
    h = attach_grapes(model, mode=mode)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    assert h.refresh_count == 0 and h.mode == mode
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    assert h.refresh_count == 1
    m0 = h.modulations["layers.0"].clone()
    torch.testing.assert_close(m0, _expected_m(model.layers[0].weight))
    opt.step()
    assert h.refresh_count == 1  # the step itself does not recompute
    model(x)
    assert h.refresh_count == 2
    m1 = h.modulations["layers.0"]
    torch.testing.assert_close(m1, _expected_m(model.layers[0].weight))
    assert not torch.allclose(m0, m1)


def test_eval_and_no_grad_forwards_do_not_recompute():
    model = _one_hidden()
    x, _ = _data()
    h = attach_grapes(model)
    model(x)
    assert h.refresh_count == 1
    model.eval()
    model(x)
    with torch.no_grad():
        model.train()
        model(x)
    assert h.refresh_count == 1
    h.refresh()
    assert h.refresh_count == 2


@pytest.mark.parametrize("mode", ["propagated", "local"])
def test_factor_held_fixed_within_the_batch(mode):
    """The backward uses the factor of its own forward, even if refresh() runs before backward."""
    calls = []

    def shifting_importance(layer):
        calls.append(1)
        base = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
        return base if len(calls) == 1 else base.flip(0)  # second read gives another M

    model = _one_hidden()
    x, y = _data()
    plain = _plain_grads(model, x, y)
    h = attach_grapes(model, mode=mode, importance_fn=shifting_importance)
    loss = F.cross_entropy(model(x), y)
    h.refresh()  # M changes now, after the forward
    loss.backward()
    m_first = torch.tensor([0.5, 1.0, 1.5, 2.0], dtype=torch.float64).clamp(1, 2)
    torch.testing.assert_close(model.layers[0].weight.grad, m_first[:, None] * plain[0])
    torch.testing.assert_close(model.layers[1].weight.grad, plain[1])


def test_importance_fn_plugs_in_any_source():
    """A custom source (e.g. a hardware row-sum read) replaces Σ|W|; it is called once per layer per batch."""
    seen = []

    def source(layer):
        seen.append(layer)
        return torch.tensor([4.0, 1.0, 3.0, 2.0], dtype=torch.float64)

    model = _one_hidden()
    x, y = _data()
    plain = _plain_grads(model, x, y)
    h = attach_grapes(model, importance_fn=source)
    F.cross_entropy(model(x), y).backward()
    assert seen == [model.layers[0]]
    m = torch.tensor([2.0, 1.0, 1.5, 1.0], dtype=torch.float64)
    torch.testing.assert_close(h.modulations["layers.0"], m)
    torch.testing.assert_close(model.layers[0].weight.grad, m[:, None] * plain[0])
    torch.testing.assert_close(h.importances["layers.0"], torch.tensor([4.0, 1.0, 3.0, 2.0], dtype=torch.float64))


@pytest.mark.parametrize("rule", ["bp", "dfa"])
def test_a_source_with_many_reads_every_layer_in_one_call(rule):
    """An importance source that offers ``many(layers)`` is called once per refresh with every layer (forward
    order) instead of once per layer; the factors are those of the per-layer calls (hand values for bp: the two
    layers' modulations, computed on their stack, are each ``clip(2F/max F, 1, 2)``)."""
    reads = {}

    class Source:
        def __init__(self):
            self.calls = []

        def __call__(self, layer):
            raise AssertionError("per-layer call although many() is offered")

        def many(self, layers):
            self.calls.append(list(layers))
            return [reads[id(layer)] for layer in layers]

    model = MLP([5, 4, 4, 3], activation="tanh", seed=0, dtype=torch.float64)
    x, y = _data()
    src = Source()
    h = attach_grapes(model, rule=rule, **(dict(outgoing_importance_fn=src) if rule == "dfa" else
                                           dict(importance_fn=src)))
    hidden = list(h.layers)
    assert len(hidden) == 2
    # bp: the row sums [out] of both hidden layers; dfa: the column sums [in] of the second
    for layer, f in zip(hidden, ([4.0, 1.0, 3.0, 2.0], [1.0, 1.0, 2.0, 0.5])):
        reads[id(layer)] = torch.tensor(f, dtype=torch.float64)
    F.cross_entropy(model(x), y).backward()
    assert len(src.calls) == 1
    if rule == "bp":
        assert src.calls[0] == hidden
        assert [torch.equal(h.modulations[name], torch.tensor(m, dtype=torch.float64))
                for name, m in zip(h.names, ([2.0, 1.0, 1.5, 1.0], [1.0, 1.0, 2.0, 1.0]))] == [True, True]
    else:
        assert src.calls[0] == hidden[1:]
    src.many = lambda layers: []                          # a source that returns too few reads is refused
    with pytest.raises(ValueError, match="one tensor per layer"):
        h.refresh()


@pytest.mark.parametrize(
    "make_opt",
    [
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
        lambda p: torch.optim.Adam(p, lr=0.01),
    ],
    ids=["sgd-momentum", "adam"],
)
def test_works_with_optimizers_and_they_see_the_modulated_gradient(make_opt):
    model = _one_hidden()
    x, y = _data()
    plain = _plain_grads(model, x, y)
    m = _expected_m(model.layers[0].weight)
    h = attach_grapes(model, mode="propagated")
    opt = make_opt(model.parameters())
    w0 = model.layers[0].weight.detach().clone()
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    g = model.layers[0].weight.grad.clone()
    torch.testing.assert_close(g, m[:, None] * plain[0])
    opt.step()
    if isinstance(opt, torch.optim.Adam):
        # first Adam step: m̂ = g, v̂ = g², Δ = -lr·g/(|g| + eps)
        expected = w0 - 0.01 * g / (g.abs() + 1e-8)
    else:
        expected = w0 - 0.1 * g  # first momentum step: buffer = g
    torch.testing.assert_close(model.layers[0].weight.detach(), expected)
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()  # second batch recomputes from the stepped weights
    opt.step()
    assert h.refresh_count == 2



def _weight_changes_under_adam(mode: str | None, steps: int = 20) -> list[torch.Tensor]:
    """The change of each weight matrix of a seeded 784-256-256-10 MLP after ``steps`` Adam steps on one fixed
    random batch, with GRAPES attached in ``mode`` (None: plain Adam)."""
    torch.manual_seed(1)
    x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    model = build_model("mlp", input_shape=(1, 28, 28), n_classes=10, hidden=[256, 256], activation="relu",
                        dropout=0.0, rule="bp", seed=0)
    w0 = [p.detach().clone() for p in model.parameters()]
    if mode is not None:
        attach_grapes(model, mode=mode)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return [p.detach() - w for p, w in zip(model.parameters(), w0)]


def test_adam_divides_out_local_and_layer_mean_factors_but_not_propagated_ones():
    """The README's caveat: Adam divides each parameter's step by a running scale of its own gradient, so a factor on
    a whole row (local GRAPES) or on a whole layer and everything below it (the layer-mean control) that changes
    slowly is divided out: the weights move as under plain Adam, up to eps and the factors' drift (< 0.1 % here,
    against a 1 % bound). Propagated GRAPES' per-neuron factors mix as the error flows down: the hidden layers'
    changes differ by several percent (> 1 %)."""
    plain = _weight_changes_under_adam(None)

    def relative(mode: str) -> list[float]:
        return [float((d - p).norm() / p.norm()) for d, p in zip(_weight_changes_under_adam(mode), plain)]

    assert max(relative("local")) < 0.01
    assert max(relative("layer-mean")) < 0.01
    propagated = relative("propagated")
    assert min(propagated[:2]) > 0.01, propagated


def test_remove_restores_plain_gradients_and_allows_reattach():
    model = _one_hidden()
    x, y = _data()
    plain = _plain_grads(model, x, y)
    h = attach_grapes(model)
    with pytest.raises(ValueError, match="already has GRAPES attached"):
        attach_grapes(model)
    h.remove()
    h.remove()  # idempotent
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    torch.testing.assert_close(model.layers[0].weight.grad, plain[0])
    with pytest.raises(RuntimeError, match="removed"):
        h.refresh()
    with attach_grapes(model, mode="local") as h2:
        assert h2.mode == "local"
    assert h2.removed


def test_layers_argument_selects_what_is_modulated():
    model = MLP([5, 4, 4, 3], activation="tanh", seed=1, dtype=torch.float64)
    x, y = _data()
    plain = _plain_grads(model, x, y)
    h = attach_grapes(model, mode="local", layers=[model.layers[1]])
    F.cross_entropy(model(x), y).backward()
    assert list(h.modulations) == ["layers.1"]
    torch.testing.assert_close(model.layers[0].weight.grad, plain[0])
    m = _expected_m(model.layers[1].weight)
    torch.testing.assert_close(model.layers[1].weight.grad, m[:, None] * plain[1])


@pytest.mark.parametrize("mode", ["local", "layer-mean-local"])
def test_a_bias_frozen_at_attach_is_scaled_once_unfrozen(mode):
    """torch hooks only a tensor that needs a gradient: a bias frozen when GRAPES is attached gets its hook at the
    first forward after it is unfrozen, and its gradient is the plain one scaled by M (layer-mean: by mean M) from
    the weights, by hand; after ``remove()`` it is the plain gradient again."""
    model = MLP([5, 4, 3], activation="tanh", bias=True, seed=0, dtype=torch.float64)
    with torch.no_grad():
        model.layers[0].weight[2] *= 0.2  # clip bites for row 2
    x, y = _data()
    plain = _plain_grads(model, x, y)                # before attaching: the unscaled gradients
    bias = model.layers[0].bias
    bias.requires_grad_(False)
    h = attach_grapes(model, mode=mode)
    F.cross_entropy(model(x), y).backward()
    assert bias.grad is None                         # still frozen: no gradient, nothing to scale
    bias.requires_grad_(True)
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    m = _expected_m(model.layers[0].weight)
    if mode == "layer-mean-local":
        m = m.mean().expand(4)
    assert not torch.allclose(m, torch.ones(4, dtype=m.dtype))
    torch.testing.assert_close(bias.grad, m * plain[1])
    torch.testing.assert_close(model.layers[0].weight.grad, m[:, None] * plain[0])
    h.remove()
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    torch.testing.assert_close(bias.grad, plain[1])


@pytest.mark.parametrize("mode,rule", [("local", "bp"), ("layer-mean-local", "bp"), ("propagated", "bp"),
                                       ("propagated", "dfa")])
def test_scaled_params_names_what_the_local_forms_hook(mode, rule):
    """The one decision of which parameters the local forms scale through a gradient hook (the backends' cost
    counters use it too): a digital layer's weight and bias while each requires a gradient, an analog layer's
    (one with ``error_scale``) bias only; nothing for the propagated form (it scales the output's gradient) or for
    DFA's unmodulated hidden layer 0 (DFA is always local)."""
    model = MLP([5, 4, 4, 3], activation="tanh", bias=True, seed=0, dtype=torch.float64)
    first, second = model.layers[0], model.layers[1]
    h = attach_grapes(model, mode=mode, rule=rule)
    assert [h.modulated(k) for k in range(2)] == [rule != "dfa", True]
    names = [[n for n, _ in h.scaled_params(k, layer)] for k, layer in enumerate((first, second))]
    if rule == "dfa":
        assert names == [[], ["weight", "bias"]]
    elif mode == "propagated":
        assert names == [[], []]
    else:
        assert names == [["weight", "bias"], ["weight", "bias"]]
        assert all(p is getattr(first, n) for n, p in h.scaled_params(0, first))
        first.bias.requires_grad_(False)
        assert [n for n, _ in h.scaled_params(0, first)] == ["weight"]
        first.error_scale = None                     # read as an analog layer: its weight is updated in memory
        first.bias.requires_grad_(True)
        assert [n for n, _ in h.scaled_params(0, first)] == ["bias"]


def test_plain_sequential_model_detects_hidden_layers():
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(
        nn.Linear(5, 4, bias=False), nn.ReLU(), nn.Linear(4, 4, bias=True), nn.Tanh(), nn.Linear(4, 3)
    )
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    model = model.double()
    x, y = _data()
    plain = _plain_grads(model, x, y)
    h = attach_grapes(model, mode="local")
    assert h.names == ("0", "2")
    F.cross_entropy(model(x), y).backward()
    m2 = modulation(importance(model[2].weight.detach()))
    torch.testing.assert_close(model[2].weight.grad, m2[:, None] * plain[1])
    torch.testing.assert_close(model[2].bias.grad, m2 * plain[2])  # local mode scales the bias row too


def test_plain_sequential_model_of_analog_layers_detects_hidden_layers():
    """A model built from ``crossbar.AnalogLinear`` layers, as the README's "From Python" invites: attach_grapes
    finds its hidden layers without ``layers=`` (it found none and refused), and local GRAPES scales the digital
    bias gradient of a hidden analog layer by that layer's M, computed by hand from its weights."""
    import crossbar
    from devices import IdealDevice

    cfg = crossbar.CrossbarConfig.perfect(IdealDevice(dw_min=1e-3))
    model = nn.Sequential(crossbar.AnalogLinear(5, 4, bias=False, rpu_config=cfg, seed=0), nn.ReLU(),
                          crossbar.AnalogLinear(4, 4, bias=True, rpu_config=cfg, seed=1), nn.Tanh(),
                          crossbar.AnalogLinear(4, 3, bias=False, rpu_config=cfg, seed=2))
    with torch.no_grad():
        model[2].bias.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0]))
        model[2].set_weights(torch.tensor([[0.5, -0.4, 0.3, 0.1], [0.05, 0.02, -0.01, 0.0],
                                           [0.2, 0.2, -0.2, 0.2], [0.9, -0.1, 0.0, 0.3]]))
    x, y = torch.randn(6, 5, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2, 0, 1, 2])
    twin = copy.deepcopy(model)
    F.cross_entropy(twin(x), y).backward()
    h = attach_grapes(model, mode="local")
    assert h.names == ("0", "2")
    model.train()
    F.cross_entropy(model(x), y).backward()
    factor = _expected_m(model[2].get_weights())
    assert not torch.allclose(factor, torch.ones(4))
    torch.testing.assert_close(model[2].bias.grad, factor * twin[2].bias.grad)


def test_invalid_arguments_raise_clear_errors():
    model = _one_hidden()
    with pytest.raises(ValueError, match="mode must be one of"):
        attach_grapes(model, mode="global")
    with pytest.raises(ValueError, match="rule must be one of"):
        attach_grapes(model, rule="hebb")
    with pytest.raises(ValueError, match="not a submodule"):
        attach_grapes(model, layers=[nn.Linear(2, 2)])
    with pytest.raises(ValueError, match="at least one layer"):
        attach_grapes(model, layers=[])
    with pytest.raises(ValueError, match="need an output layer"):
        attach_grapes(nn.Sequential(nn.Linear(3, 2)))

    class NoWeight(nn.Module):
        def forward(self, x):
            return x

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = NoWeight()

        def forward(self, x):
            return self.a(x)

    net = Net()
    with pytest.raises(ValueError, match="no trainable 'weight'"):
        attach_grapes(net, mode="local", layers=[net.a])


def test_model_with_grapes_attached_can_be_saved_whole():
    model = _one_hidden()
    attach_grapes(model)
    buf = io.BytesIO()
    torch.save(model, buf)
    assert buf.tell() > 0


def _attached(model):
    return getattr(model, "_imc_grapes_attached", None)


@pytest.mark.parametrize("mode", ["propagated", "local"])
@pytest.mark.parametrize("how", ["deepcopy", "torch.save"])
def test_a_copied_model_carries_its_own_working_grapes(mode, how):
    """A copy of a model with GRAPES carries an independent handle: its hooks are in the copy (removing the
    original's leaves them), its gradients are scaled by M of its own weights (the local forms' parameter hooks,
    which torch does not copy, are put on the copy's parameters at its first forward), and removing it leaves the
    original's GRAPES working."""
    model = _one_hidden()
    x, y = _data()
    plain = _plain_grads(model, x, y)
    h = attach_grapes(model, mode=mode)
    F.cross_entropy(model(x), y).backward()       # the original has hooked its parameters (local) before the copy
    model.zero_grad()

    def copy_of(m):
        if how == "deepcopy":
            return copy.deepcopy(m)
        buf = io.BytesIO()
        torch.save(m, buf)
        buf.seek(0)
        return torch.load(buf, weights_only=False)

    twin = copy_of(model)
    ht = _attached(twin)
    assert ht is not None and ht is not h and ht.model is twin and ht.layers == (twin.layers[0],)
    assert ht.refresh_count == h.refresh_count == 1
    h.remove()
    F.cross_entropy(model(x), y).backward()        # the original trains plainly again
    torch.testing.assert_close([p.grad for p in model.parameters()], plain)
    F.cross_entropy(twin(x), y).backward()
    m = _expected_m(twin.layers[0].weight)
    assert not torch.allclose(m, torch.ones_like(m))
    torch.testing.assert_close(twin.layers[0].weight.grad, m[:, None] * plain[0])
    torch.testing.assert_close(twin.layers[1].weight.grad, plain[1])
    assert ht.refresh_count == 2 and h.refresh_count == 1

    h2 = attach_grapes(model, mode=mode)            # and the other way round: removing the copy's handle
    twin2 = copy_of(model)
    _attached(twin2).remove()
    assert _attached(twin2) is None and _attached(model) is h2
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    torch.testing.assert_close(model.layers[0].weight.grad, m[:, None] * plain[0])
    F.cross_entropy(twin2(x), y).backward()
    torch.testing.assert_close([p.grad for p in twin2.parameters()], plain)
    attach_grapes(twin2, mode=mode).remove()         # a copy without GRAPES takes a new attach


def test_a_handle_pickled_without_the_parameter_hook_fields_hooks_its_copys_parameters(monkeypatch):
    """A whole model saved by an earlier version carries a handle without ``_param_hooks`` / ``_hooked``: loaded,
    it hooks the copy's parameters at the first forward (local form) and scales its gradients by M."""
    from imc_grapes.grapes.hooks import GrapesHandle

    model = _one_hidden()
    x, y = _data()
    plain = _plain_grads(model, x, y)
    attach_grapes(model, mode="local")

    def old_getstate(self):     # the state as an earlier version pickled it: no such fields
        state = dict(self.__dict__)
        del state["_param_hooks"], state["_hooked"]
        return state

    monkeypatch.setattr(GrapesHandle, "__getstate__", old_getstate)
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    twin = torch.load(buf, weights_only=False)
    ht = _attached(twin)
    assert ht._param_hooks == [] and ht._hooked == {}
    F.cross_entropy(twin(x), y).backward()
    m = _expected_m(twin.layers[0].weight)
    assert not torch.allclose(m, torch.ones_like(m))
    torch.testing.assert_close(twin.layers[0].weight.grad, m[:, None] * plain[0])


def test_training_loop_contract_runs_for_every_rule_and_mode():
    """The training loop's exact usage (grapes.md / task contract) with tiny sizes."""
    x = torch.rand(16, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    y = torch.arange(16) % 4
    for rule in ("bp", "fa", "dfa"):
        for mode in ("propagated", "local", "layer-mean", "layer-mean-local"):
            model = build_model("mlp", input_shape=(1, 6, 6), n_classes=4, hidden=[8, 8], activation="relu",
                                dropout=0.1, rule=rule, seed=0)
            handle = attach_grapes(model, mode=mode)
            opt = torch.optim.SGD(model.parameters(), lr=0.1)
            losses = []
            for _ in range(3):
                opt.zero_grad()
                loss = F.cross_entropy(model(x), y)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
            assert handle.refresh_count == 3
            assert all(torch.isfinite(torch.tensor(losses)))


@pytest.mark.parametrize("conv, shape", [(nn.Conv1d, (2, 7)), (nn.Conv2d, (2, 4, 5)), (nn.Conv2d, (2, 3, 5))])
def test_unbatched_convolutions_are_scaled_per_output_channel(conv, shape):
    """A convolution on one unbatched input (``[C, *spatial]``, as torch accepts) is modulated per output channel
    (dim 0 of its output), also when a spatial size equals the channel count: each channel's weight gradient is
    ``M_c`` times the plain one, M from its kernels' Σ|w| by hand, and equals the gradient of the same input
    batched."""
    torch.manual_seed(0)
    layer = conv(2, 3, 3, padding=1, bias=False).double()
    with torch.no_grad():
        layer.weight[1] *= 0.3
    n_flat = 3 * math.prod(shape[1:])
    model = nn.Sequential(layer, nn.Tanh(), nn.Flatten(0), nn.Linear(n_flat, 2, bias=False).double())
    x = torch.randn(*shape, dtype=torch.float64)
    y = torch.tensor(1)
    plain = _plain_grads(model, x, y)[0]
    m = _expected_m(layer.weight.flatten(1))
    attach_grapes(model, "propagated", layers=[layer])
    model.train()
    F.cross_entropy(model(x), y).backward()
    torch.testing.assert_close(layer.weight.grad, m.reshape(-1, *[1] * (layer.weight.dim() - 1)) * plain)
    assert not torch.allclose(m, torch.ones_like(m))                                  # the factors differ


def test_a_linear_layer_on_a_sequence_is_scaled_per_output_feature_on_the_last_dim():
    """``nn.Linear`` applied to ``[batch, T, in]`` (as to the steps of a sequence): its output's features are on the
    last dim, not dim 1 — here T equals the 4 output features, so scaling dim 1 would raise no shape error. Propagated
    GRAPES on the hidden layer against numpy: loss = Σ out ⊙ G, δ_a = (G W1) ⊙ (1 − h²) ⊙ M (M = clip(2F/max F, 1, 2)
    per output feature), ∂L/∂W0 = Σ_{b,t} δ_a xᵀ."""
    import numpy as np

    g = torch.Generator().manual_seed(3)
    hidden = nn.Linear(3, 4, bias=False).double()
    out = nn.Linear(4, 2, bias=False).double()
    with torch.no_grad():
        hidden.weight.copy_(torch.randn(4, 3, generator=g, dtype=torch.float64))
        hidden.weight[1] *= 0.2                                                      # the clip bites for row 1
        out.weight.copy_(torch.randn(2, 4, generator=g, dtype=torch.float64))
    model = nn.Sequential(hidden, nn.Tanh(), out)
    x = torch.randn(5, 4, 3, generator=g, dtype=torch.float64)                      # [batch, T = 4, in]
    G = torch.randn(5, 4, 2, generator=g, dtype=torch.float64)
    attach_grapes(model, "propagated")
    model.train()
    (model(x) * G).sum().backward()
    W0, W1, xn, Gn = (t.detach().numpy() for t in (hidden.weight, out.weight, x, G))
    f = np.abs(W0).sum(1)
    m = np.clip(2 * f / f.max(), 1, 2)
    h = np.tanh(xn @ W0.T)
    d_a = (Gn @ W1) * (1 - h ** 2) * m
    expected = np.einsum("bto,bti->oi", d_a, xn)
    np.testing.assert_allclose(hidden.weight.grad.numpy(), expected, rtol=0, atol=1e-12)
    assert not np.allclose(m, m[0])                                                 # the factors differ per feature


@pytest.mark.parametrize("rule, wrapped", [("bp", False), ("bp", True), ("dfa", True)])
def test_local_mode_scales_an_analog_layers_digital_bias_like_a_digital_one(rule, wrapped):
    """Local GRAPES on an analog layer (``crossbar.AnalogLinear``, or wrapped as the backends' ``CrossbarLayer``):
    the in-memory weight update gets the factors through ``error_scale`` (DFA: and ``input_scale``); its digital
    bias gets the row factor in its gradient, as a digital layer's bias does: ``M ⊙`` (DFA: ``P^{l+1} ⊙``) the
    plain bias gradient, the factors by hand from the weights."""
    import crossbar
    from devices import IdealDevice
    from imc_grapes.backends.layers import CrossbarLayer

    torch.manual_seed(1)
    first = nn.Linear(4, 3, bias=False)
    inner = crossbar.AnalogLinear(3, 3, bias=True, rpu_config=crossbar.CrossbarConfig.perfect(IdealDevice(dw_min=1e-3)),
                                  seed=0)
    with torch.no_grad():
        inner.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
        inner.set_weights(torch.tensor([[0.5, -0.4, 0.3], [0.05, 0.02, -0.01], [0.2, 0.2, -0.2]]))
    hidden = CrossbarLayer(inner, "array") if wrapped else inner
    model = nn.Sequential(first, nn.Tanh(), hidden, nn.Tanh(), nn.Linear(3, 2, bias=False))
    x, y = torch.randn(6, 4), torch.randint(0, 2, (6,))
    twin = copy.deepcopy(model)
    F.cross_entropy(twin(x), y).backward()
    plain = twin[2].bias.grad
    if rule == "bp":     # M of the analog layer's rows, clipped to [1, 2]
        attach_grapes(model, "local", layers=[first, hidden],
                      importance_fn=lambda layer: (layer.row_importance("exact") if layer is hidden and wrapped
                                                   else layer.weight.detach().abs().sum(1)))
        factor = _expected_m(inner.get_weights())
    else:                # DFA: P of the layer above = 2·Σ_i |w_ij| / max over the output layer's columns, unclipped
        attach_grapes(model, "local", rule="dfa", layers=[first, hidden, model[4]],
                      outgoing_importance_fn=lambda layer: (layer.col_importance("exact") if layer is hidden
                                                            else layer.weight.detach().abs().sum(0)))
        f = model[4].weight.detach().abs().sum(0)
        factor = 2 * f / f.max()
    model.train()
    F.cross_entropy(model(x), y).backward()
    assert not torch.allclose(factor, torch.ones(3))
    torch.testing.assert_close(inner.bias.grad, factor * plain)


def test_local_mode_scales_an_aihwkit_layers_digital_bias_like_a_digital_one():
    """The same contract on the aihwkit backend's layer: aihwkit keeps the digital bias on ``inner.analog_module``
    (its ``inner.bias`` is only a flag), so the wrapper must expose that parameter for the local factor to reach
    it. The bias gradient is ``M ⊙`` that of a digital twin (same weights, perfect periphery), ``M`` by hand."""
    pytest.importorskip("aihwkit")
    import crossbar
    from devices import IdealDevice
    from imc_grapes.backends.aihwkit_backend import make_aihwkit_layer

    torch.manual_seed(1)
    w = torch.tensor([[0.5, -0.4, 0.3], [0.05, 0.02, -0.01], [0.2, 0.2, -0.2]])
    digital = nn.Linear(3, 3)
    with torch.no_grad():
        digital.weight.copy_(w)
        digital.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    first, out = nn.Linear(4, 3, bias=False), nn.Linear(3, 2, bias=False)
    twin = nn.Sequential(copy.deepcopy(first), nn.Tanh(), copy.deepcopy(digital), nn.Tanh(), copy.deepcopy(out))
    hidden = make_aihwkit_layer(digital, crossbar.CrossbarConfig.perfect(IdealDevice(dw_min=1e-3)), seed=0)
    model = nn.Sequential(first, nn.Tanh(), hidden, nn.Tanh(), out)
    assert hidden.bias is not None and all(p is not hidden.bias for p in hidden.analog_parameters())   # digital
    x, y = torch.randn(6, 4), torch.randint(0, 2, (6,))
    F.cross_entropy(twin(x), y).backward()
    plain = twin[2].bias.grad
    attach_grapes(model, "local", layers=[first, hidden], importance_fn=lambda layer: (
        layer.row_importance("exact") if layer is hidden else layer.weight.detach().abs().sum(1)))
    f = w.abs().sum(1)
    factor = (2 * f / f.max()).clamp(1, 2)             # [1.8, 1 (clipped from 0.16), 1.2]
    model.train()
    F.cross_entropy(model(x), y).backward()
    assert not torch.allclose(factor, torch.ones(3))
    torch.testing.assert_close(hidden.bias.grad, factor * plain, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("wrapped", [False, True])
@pytest.mark.parametrize("shape", [(2, 4, 5), (2, 3, 5)])
def test_unbatched_analog_convolutions_are_scaled_per_output_channel(wrapped, shape):
    """Propagated GRAPES on an analog convolution (``crossbar.AnalogConv2d``, or wrapped as the backends'
    ``CrossbarLayer``) fed one unbatched ``[C, H, W]`` input: the error the layer stashes for its pulsed update is
    ``M_c`` times the plain one per output channel (dim 0 of its unbatched output), M by hand from the kernels,
    also when the height equals the channel count (3 channels, shape (2, 3, 5))."""
    import crossbar
    from devices import IdealDevice
    from imc_grapes.backends.layers import CrossbarLayer

    torch.manual_seed(0)
    inner = crossbar.AnalogConv2d(2, 3, 3, padding=1, bias=False,
                                  rpu_config=crossbar.CrossbarConfig.perfect(IdealDevice(dw_min=1e-3)), seed=0)
    w = inner.get_weights()
    w[1] *= 0.3
    inner.set_weights(w)
    conv = CrossbarLayer(inner) if wrapped else inner
    model = nn.Sequential(conv, nn.Tanh(), nn.Flatten(0), nn.Linear(3 * shape[1] * shape[2], 2, bias=False))
    twin = copy.deepcopy(model)
    x, y = torch.randn(*shape), torch.tensor(1)
    F.cross_entropy(twin(x), y).backward()
    twin_inner = twin[0].inner if wrapped else twin[0]
    d_plain = twin_inner.pending_pairs()[0][1]                          # [H·W, C_out]
    f = w.abs().flatten(1).sum(1)
    m = (2 * f / f.max()).clamp(1, 2)
    attach_grapes(model, "propagated", layers=[conv], importance_fn=lambda layer: layer.row_importance("exact")
                  if wrapped else layer.weight.abs().flatten(1).sum(1))
    model.train()
    F.cross_entropy(model(x), y).backward()
    torch.testing.assert_close(inner.pending_pairs()[0][1], d_plain * m)
    assert not torch.allclose(m, torch.ones_like(m))


@pytest.mark.parametrize("model", [[nn.Linear(2, 2), nn.Linear(2, 2)], None, "mlp"])
def test_attach_grapes_refuses_a_model_that_is_no_module(model):
    """A list of layers (or None) failed with ``AttributeError: 'list' object has no attribute 'modules'``; it is
    refused naming the argument, as a layer of ``layers=`` that is no module is."""
    with pytest.raises(ValueError, match=rf"^attach_grapes.model must be an nn.Module, got {type(model).__name__}$"):
        attach_grapes(model)
