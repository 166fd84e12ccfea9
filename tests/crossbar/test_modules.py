"""AnalogLinear / AnalogConv2d and the optimizers: shapes, equivalence with digital SGD, error_scale, state."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from crossbar import (AnalogConv2d, AnalogLinear, AnalogSGD, CrossbarConfig, IOParameters, UpdateParameters,
                      analog_module_of, analog_step)
from devices import ConductanceMap, ConstantStepDevice, IdealDevice, get_preset

F64 = torch.float64


def ideal_config(**kw) -> CrossbarConfig:
    """Perfect periphery, ideal device, exact float update: the analog layer must equal the digital one."""
    return CrossbarConfig.perfect(device=IdealDevice(), update=UpdateParameters(pulse_type="none"), **kw)


def test_linear_and_conv_shapes() -> None:
    lin = AnalogLinear(12, 5, seed=0)
    assert lin(torch.randn(7, 12)).shape == (7, 5)
    assert lin(torch.randn(2, 3, 12)).shape == (2, 3, 5)
    assert lin.weight.shape == (5, 12) and lin.tile.grid.tile_shape == (5, 12)
    for kw in (dict(kernel_size=3), dict(kernel_size=3, padding=1), dict(kernel_size=(3, 2), stride=2, padding=(1, 0)),
               dict(kernel_size=3, dilation=2, padding=2, bias=False)):
        conv = AnalogConv2d(3, 4, seed=1, **kw)
        ref = nn.Conv2d(3, 4, **kw)
        x = torch.randn(2, 3, 11, 9)
        assert conv(x).shape == ref(x).shape
        assert conv.weight.shape == ref.weight.shape
    assert AnalogConv2d(3, 4, 3)(torch.randn(3, 8, 8)).shape == (4, 6, 6)   # unbatched


def test_linear_step_equals_digital_sgd() -> None:
    torch.manual_seed(0)
    analog = AnalogLinear(20, 7, rpu_config=ideal_config(tile_rows=4, tile_cols=8), dtype=F64, seed=0)
    digital = nn.Linear(20, 7, dtype=F64)
    with torch.no_grad():
        digital.weight.copy_(analog.get_weights())
        digital.bias.copy_(analog.bias)
    x = torch.randn(16, 20, dtype=F64, requires_grad=True)
    x_d = x.detach().clone().requires_grad_(True)
    target = torch.randn(16, 7, dtype=F64)
    y_a, y_d = analog(x), digital(x_d)
    torch.testing.assert_close(y_a, y_d, rtol=1e-12, atol=1e-12)
    F.mse_loss(y_a, target).backward()
    F.mse_loss(y_d, target).backward()
    torch.testing.assert_close(x.grad, x_d.grad, rtol=1e-12, atol=1e-12)   # input gradient through the tile
    assert analog.analog_ctx.grad.shape == (0,)         # no float weight gradient: an empty mark (zero_grad drops)
    AnalogSGD(analog.parameters(), lr=0.1).step()
    torch.optim.SGD(digital.parameters(), lr=0.1).step()
    torch.testing.assert_close(analog.get_weights(), digital.weight, rtol=0, atol=1e-6)
    torch.testing.assert_close(analog.bias, digital.bias, rtol=0, atol=1e-6)
    assert analog.stashed == 0


def test_conv_step_equals_digital_sgd_through_unfold() -> None:
    torch.manual_seed(1)
    kw = dict(kernel_size=3, stride=2, padding=1)
    analog = AnalogConv2d(3, 5, rpu_config=ideal_config(tile_rows=4, tile_cols=16), dtype=F64, seed=0, **kw)
    digital = nn.Conv2d(3, 5, dtype=F64, **kw)
    with torch.no_grad():
        digital.weight.copy_(analog.get_weights())
        digital.bias.copy_(analog.bias)
    x = torch.randn(4, 3, 9, 10, dtype=F64, requires_grad=True)
    x_d = x.detach().clone().requires_grad_(True)
    y_a, y_d = analog(x), digital(x_d)
    torch.testing.assert_close(y_a, y_d, rtol=1e-10, atol=1e-10)
    (y_a.square().mean()).backward()
    (y_d.square().mean()).backward()
    torch.testing.assert_close(x.grad, x_d.grad, rtol=1e-10, atol=1e-10)
    AnalogSGD(analog.parameters(), lr=0.5).step()
    torch.optim.SGD(digital.parameters(), lr=0.5).step()
    torch.testing.assert_close(analog.get_weights(), digital.weight, rtol=0, atol=1e-6)
    torch.testing.assert_close(analog.bias, digital.bias, rtol=0, atol=1e-6)


def test_first_layer_without_input_grad_still_updates() -> None:
    analog = AnalogLinear(6, 3, bias=False, rpu_config=ideal_config(), dtype=F64, seed=0)
    w0 = analog.get_weights()
    x = torch.randn(5, 6, dtype=F64)                                         # no requires_grad
    analog(x).sum().backward()
    assert analog.stashed == 1
    assert int(analog.tile.counters["backward_mvms"]) == 0                   # no input gradient needed
    analog_step(analog, 0.1)
    # d = dL/dy = 1 for every output: W <- W - lr * 1 x_sum^T (numpy-free hand form)
    expected = w0 - 0.1 * torch.ones(3, 1, dtype=F64) * x.sum(0, keepdim=True)
    torch.testing.assert_close(analog.get_weights(), expected, rtol=0, atol=1e-12)


def test_error_scale_changes_only_the_update() -> None:
    cfg = ideal_config()
    a = AnalogLinear(8, 4, bias=False, rpu_config=cfg, dtype=F64, seed=3)
    b = AnalogLinear(8, 4, bias=False, rpu_config=cfg, dtype=F64, seed=3)
    scale = torch.tensor([1.0, 2.0, 0.5, 1.5], dtype=F64)
    b.error_scale = scale
    w0 = a.get_weights()
    x = torch.randn(10, 8, dtype=F64)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    g = torch.randn(10, 4, dtype=F64)
    a(xa).backward(g)
    b(xb).backward(g)
    assert torch.equal(xa.grad, xb.grad)                                     # upstream gradient unchanged
    AnalogSGD(list(a.parameters()) + list(b.parameters()), lr=0.1).step()
    torch.testing.assert_close(a.get_weights(), w0 - 0.1 * g.T @ x)
    torch.testing.assert_close(b.get_weights(), w0 - 0.1 * (g * scale).T @ x)
    b.error_scale = torch.ones(3)
    b(x).sum().backward()
    with pytest.raises(ValueError, match="error_scale"):
        analog_step(b, 0.1)


def test_weight_is_read_only() -> None:
    lin = AnalogLinear(4, 3, rpu_config=ideal_config(), seed=0)
    with pytest.raises(AttributeError):
        lin.weight = torch.zeros(3, 4)                                       # type: ignore[misc]
    w = lin.weight
    with pytest.raises(RuntimeError, match="read-only copy"):                # a copy: writing into it is refused
        w.zero_()
    assert lin.get_weights().abs().sum() > 0
    lin.set_weights(torch.ones(3, 4))
    assert torch.equal(lin.weight, torch.ones(3, 4))
    with pytest.raises(ValueError, match="set_weights"):
        lin.set_weights(torch.ones(4, 3))


def test_state_dict_round_trip_and_determinism() -> None:
    cfg = CrossbarConfig(tile_rows=8, tile_cols=8)                           # noisy periphery, pulsed device
    a = AnalogLinear(12, 6, rpu_config=cfg, seed=7)
    twin = AnalogLinear(12, 6, rpu_config=cfg, seed=7)
    other = AnalogLinear(12, 6, rpu_config=cfg, seed=8)
    assert torch.equal(a.get_weights(), twin.get_weights())
    assert not torch.equal(a.get_weights(), other.get_weights())
    x = torch.randn(5, 12)
    for m in (a, twin):                                                      # same seed: same training step
        opt = AnalogSGD(m.parameters(), lr=0.05)
        m(x).square().sum().backward()
        opt.step()
    assert torch.equal(a.get_weights(), twin.get_weights())
    other.load_state_dict(a.state_dict())
    assert torch.equal(other.get_weights(), a.get_weights())
    assert torch.equal(other.bias, a.bias)
    assert torch.equal(other(x), a(x))                                       # device params and noise state


def test_analog_step_with_any_torch_optimizer_and_deepcopy() -> None:
    model = nn.Sequential(AnalogLinear(6, 5, rpu_config=ideal_config(), dtype=F64, seed=0), nn.ReLU(),
                          nn.Linear(5, 2, dtype=F64))
    analog = model[0]
    digital_params = [p for p in model.parameters() if analog_module_of(p) is None]
    assert analog_module_of(analog.analog_ctx) is analog
    assert len(digital_params) == 3                                          # analog bias + nn.Linear w, b
    opt = torch.optim.Adam(digital_params, lr=0.01)
    w0 = analog.get_weights()
    model(torch.randn(3, 6, dtype=F64)).sum().backward()
    opt.step()
    assert torch.equal(analog.get_weights(), w0)                             # Adam does not touch the tile
    assert analog_step(model, 0.1) == 1
    assert not torch.equal(analog.get_weights(), w0)
    clone = copy.deepcopy(model)
    assert analog_module_of(clone[0].analog_ctx) is clone[0]
    opt2 = AnalogSGD(clone.parameters(), lr=0.1)
    w_orig, w_clone = model[0].get_weights(), clone[0].get_weights()
    clone(torch.randn(3, 6, dtype=F64)).sum().backward()
    opt2.step()
    assert torch.equal(model[0].get_weights(), w_orig)                       # the copy updated only itself
    assert not torch.equal(clone[0].get_weights(), w_clone)


def test_zero_grad_drops_unused_stash() -> None:
    lin = AnalogLinear(4, 2, rpu_config=ideal_config(), seed=0)
    opt = AnalogSGD(lin.parameters(), lr=0.1)
    lin(torch.randn(3, 4)).sum().backward()
    lin(torch.randn(3, 4)).sum().backward()
    assert lin.stashed == 2
    opt.zero_grad()
    assert lin.stashed == 0


def _analog_and_digital() -> tuple[nn.Sequential, nn.Sequential]:
    """An analog layer on an exact (ideal, float-update) crossbar and an ``nn.Linear`` with the same weights."""
    analog = nn.Sequential(AnalogLinear(6, 4, rpu_config=ideal_config(tile_rows=4, tile_cols=4), dtype=F64, seed=0))
    digital = nn.Sequential(nn.Linear(6, 4, dtype=F64))
    with torch.no_grad():
        digital[0].weight.copy_(analog[0].get_weights())
        digital[0].bias.copy_(analog[0].bias)
    return analog, digital


@pytest.mark.parametrize("set_to_none", [True, False])
@pytest.mark.parametrize("how", ["model", "layer", "torch optimizer"])
def test_torch_zero_grad_forgets_the_stashed_update_as_it_forgets_weight_grad(how: str, set_to_none: bool) -> None:
    """torch's contract: ``zero_grad`` forgets the gradients of earlier backward passes. A standard loop
    ``model.zero_grad(); loss.backward(); opt.step()`` after a backward that had no step used to apply the stale
    stashed update as well (torch's ``zero_grad`` resets ``.grad`` only, and the stash is no ``.grad``); now the
    analog layer moves as the ``nn.Linear`` with the same weights does under the same calls: by the second
    backward's gradient only."""
    g = torch.Generator().manual_seed(0)
    x1, x2 = torch.randn(5, 6, generator=g, dtype=F64), torch.randn(5, 6, generator=g, dtype=F64)
    analog, digital = _analog_and_digital()
    for model in (analog, digital):
        model(x1).square().sum().backward()                                 # a backward without a step
        if how == "model":
            model.zero_grad(set_to_none=set_to_none)
        elif how == "layer":
            model[0].zero_grad(set_to_none=set_to_none)
        else:
            torch.optim.SGD(model.parameters(), lr=0.1).zero_grad(set_to_none=set_to_none)
        model(x2).square().sum().backward()
    assert analog[0].stashed == 1
    AnalogSGD(analog.parameters(), lr=0.01).step()
    torch.optim.SGD(digital.parameters(), lr=0.01).step()
    torch.testing.assert_close(analog[0].get_weights(), digital[0].weight, rtol=0, atol=1e-6)
    torch.testing.assert_close(analog[0].bias, digital[0].bias, rtol=0, atol=1e-12)
    assert analog[0].stashed == 0


def test_torch_zero_grad_keeps_what_backward_stashes_after_it_and_accumulates_as_weight_grad() -> None:
    """The stash is forgotten only by a ``zero_grad`` after it: a ``zero_grad`` between the forward and the
    backward (``out = model(x); model.zero_grad(); loss.backward()``) keeps the update, two backward passes without
    one accumulate (as ``weight.grad``), and ``analog_step`` next to a torch optimizer over every parameter (the
    layer's ``analog_ctx`` included: its ``.grad`` is an empty tensor, an empty update) applies them."""
    g = torch.Generator().manual_seed(1)
    xs = [torch.randn(5, 6, generator=g, dtype=F64) for _ in range(3)]
    analog, digital = _analog_and_digital()
    opts = [torch.optim.SGD(m.parameters(), lr=0.01) for m in (analog, digital)]
    for model, opt in zip((analog, digital), opts):
        out = model(xs[0])
        model.zero_grad()
        out.square().sum().backward()
        model(xs[1]).sum().backward()
        opt.step()
    assert analog[0].stashed == 2 and analog[0].analog_ctx.grad.shape == (0,)
    assert analog_step(analog, 0.01) == 2
    torch.testing.assert_close(analog[0].get_weights(), digital[0].weight, rtol=0, atol=1e-6)
    for model, opt in zip((analog, digital), opts):                          # the torch loop, step after step
        opt.zero_grad()
        model(xs[2]).sum().backward()
        opt.step()
    assert analog_step(analog, 0.01) == 1
    torch.testing.assert_close(analog[0].get_weights(), digital[0].weight, rtol=0, atol=1e-6)


@pytest.mark.parametrize("make_opt", [lambda p: torch.optim.SGD(p, lr=0.1), lambda p: torch.optim.Adam(p, lr=0.1)],
                         ids=["SGD", "Adam"])
def test_a_torch_optimizer_alone_warns_once_that_the_analog_weights_do_not_train(make_opt) -> None:
    """``torch.optim.SGD`` / ``Adam`` over an analog model move the digital bias only (the analog weights have no
    float gradient; the module docstring says so): a user who swaps in a torch optimizer used to get a model whose
    analog weights silently never changed. The third backward of such a loop (the second stash dropped unapplied)
    warns once, naming AnalogSGD and analog_step; the weights stay exactly the initial ones and the bias moves as
    that of an ``nn.Linear`` with the same weights, frozen, under the same optimizer."""
    analog, frozen = _analog_and_digital()
    w0 = analog[0].get_weights()
    frozen[0].weight.requires_grad_(False)
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(2), dtype=F64)
    opts = [make_opt(m.parameters()) for m in (analog, frozen)]
    with pytest.warns(UserWarning, match="AnalogSGD.*analog_step") as record:
        for _ in range(5):
            for model, opt in zip((analog, frozen), opts):
                opt.zero_grad()
                (model(x) - 1.0).square().sum().backward()
                opt.step()
    assert sum("AnalogSGD" in str(w.message) for w in record) == 1
    assert torch.equal(analog[0].get_weights(), w0)
    torch.testing.assert_close(analog[0].bias, frozen[0].bias, rtol=0, atol=1e-12)
    assert not torch.equal(frozen[0].bias, _analog_and_digital()[1][0].bias)      # the bias did train


def test_no_warning_where_the_update_is_applied_or_dropped_once() -> None:
    """The loops that apply the update (AnalogSGD; a torch optimizer plus analog_step) and torch's one-off drop (a
    backward without a step, then zero_grad) stay silent."""
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(3), dtype=F64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        analog, _ = _analog_and_digital()
        opt = AnalogSGD(analog.parameters(), lr=0.01)
        for _ in range(4):
            opt.zero_grad()
            analog(x).sum().backward()
            opt.step()
        analog, _ = _analog_and_digital()
        torch_opt = torch.optim.Adam(analog.parameters(), lr=0.01)
        for _ in range(4):
            torch_opt.zero_grad()
            analog(x).sum().backward()
            torch_opt.step()
            analog_step(analog, 0.01)
        analog, _ = _analog_and_digital()
        for _ in range(3):
            analog(x).sum().backward()                       # a backward without a step, dropped once
            analog.zero_grad()
            analog(x).sum().backward()
            AnalogSGD(analog.parameters(), lr=0.01).step()
            analog.zero_grad()


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copy_keeps_the_pending_update_and_its_zero_grad_drops_it(how: str) -> None:
    """A copy (``copy.deepcopy``, pickle) of a layer with pending pairs keeps them pending (torch copies a
    parameter's values, not its ``.grad``, so the copy gets a mark of its own) and applies the same update;
    ``zero_grad`` of the copy then drops its stash only."""
    import pickle

    lin = AnalogLinear(6, 4, rpu_config=ideal_config(), dtype=F64, seed=0)
    lin(torch.randn(5, 6, dtype=F64)).sum().backward()
    lin(torch.randn(5, 6, dtype=F64)).sum().backward()
    clone = copy.deepcopy(lin) if how == "deepcopy" else pickle.loads(pickle.dumps(lin))
    assert clone.stashed == 2
    w = lin.get_weights()
    assert lin.analog_update(0.1) == 2 and clone.analog_update(0.1) == 2
    assert not torch.equal(lin.get_weights(), w)
    torch.testing.assert_close(clone.get_weights(), lin.get_weights(), rtol=0, atol=1e-12)
    lin(torch.randn(5, 6, dtype=F64)).sum().backward()
    clone = copy.deepcopy(lin) if how == "deepcopy" else pickle.loads(pickle.dumps(lin))
    clone.zero_grad()
    assert clone.stashed == 0 and lin.stashed == 1


def test_the_torch_loop_with_zero_grad_makes_no_host_read() -> None:
    """The stash's mark is host bookkeeping (object identity, version counter): the loop ``model.zero_grad();
    loss.backward(); opt.step()`` stays on the engine's sync-free path."""
    from devices import get_preset, no_host_reads

    model = nn.Sequential(AnalogLinear(6, 4, rpu_config=CrossbarConfig(device=get_preset("GokmenVlasov")), seed=0))
    opt = AnalogSGD(model.parameters(), lr=0.05)
    x = torch.randn(5, 6)
    model(x).sum().backward()
    with no_host_reads():
        for _ in range(2):
            model.zero_grad()
            model(x).sum().backward()
            opt.step()
    assert model[0].stashed == 0


def test_pending_pairs_are_the_inputs_and_output_gradients() -> None:
    lin = AnalogLinear(4, 2, rpu_config=ideal_config(), seed=0)
    x = torch.randn(3, 4)
    g = torch.randn(3, 2)
    (lin(x) * g).sum().backward()                 # d(loss)/d(output) = g
    (pairs,) = lin.pending_pairs()
    assert torch.equal(pairs[0], x) and torch.equal(pairs[1], g)
    lin.clear_stash()
    assert lin.pending_pairs() == ()


def test_module_to_dtype() -> None:
    lin = AnalogLinear(4, 2, seed=0).to(F64)
    assert lin.tile.weight_tiles.dtype == F64 and lin.bias.dtype == F64
    assert lin(torch.randn(3, 4, dtype=F64)).dtype == F64


@pytest.mark.parametrize("kw, name", [(dict(padding="full"), "padding"), (dict(padding=1.5), "padding"),
                                      (dict(stride=(1, 1, 1)), "stride"), (dict(kernel_size=(3, 3, 3)), "kernel_size"),
                                      (dict(kernel_size=2.5), "kernel_size"), (dict(dilation=(1.0, 1)), "dilation")])
def test_conv_rejects_unsupported_geometry_naming_the_argument(kw, name) -> None:
    """String padding modes, floats and 3-tuples were passed through ``_pair``: a TypeError about ``'<'``, an error
    deep in the tile or im2col, or (a 3-tuple stride) silently accepted with its third entry ignored."""
    args = dict(kernel_size=3)
    args.update(kw)
    with pytest.raises(ValueError, match=f"AnalogConv2d.{name} must be an int or a pair of ints"):
        AnalogConv2d(4, 2, seed=0, **args)


@pytest.mark.parametrize("channels, size", [(2, (4, 6)), (4, (4, 6)), (4, (3, 3)), (4, (6, 2))])
def test_conv_input_smaller_than_kernel_is_rejected(channels, size) -> None:
    """nn.Conv2d raises for an input smaller than the (dilated) kernel; the analog layer returned an empty
    ``[B, C_out, 0, w]`` output (or failed inside ``as_strided``)."""
    with pytest.raises(RuntimeError):
        nn.Conv2d(channels, 2, 5)(torch.randn(1, channels, *size))
    conv = AnalogConv2d(channels, 2, 5, seed=0)
    with pytest.raises(ValueError, match=r"smaller than the kernel \(5, 5\)"):
        conv(torch.randn(1, channels, *size))
    assert conv.stashed == 0


def test_conv_positional_arguments_follow_nn_conv2d() -> None:
    """``nn.Conv2d`` (and aihwkit's AnalogConv2d) take ``groups`` 7th and ``bias`` 8th; the analog layer took ``bias``
    7th, so ``AnalogConv2d(4, 4, 3, 1, 0, 1, 2)`` (groups=2 for torch) silently built an ungrouped layer with a bias,
    and ``AnalogConv2d(3, 4, 3, 1, 0, 1, 1, False)`` failed with ``rpu_config=False``."""
    args = (3, 4, 3, 1, 1, 1, 1, False)
    ref = nn.Conv2d(*args, dtype=F64)
    conv = AnalogConv2d(*args, rpu_config=ideal_config(), dtype=F64, seed=0)
    assert conv.bias is None and ref.bias is None
    with torch.no_grad():
        ref.weight.copy_(conv.get_weights())
    x = torch.randn(2, 3, 6, 5, dtype=F64)
    torch.testing.assert_close(conv(x), ref(x), rtol=1e-12, atol=1e-12)
    assert AnalogConv2d(3, 4, 3, 1, 0, 1, 1, True, "zeros", seed=0).bias is not None
    with pytest.raises(ValueError, match="AnalogConv2d.groups must be 1"):
        AnalogConv2d(4, 4, 3, 1, 0, 1, 2, seed=0)
    with pytest.raises(ValueError, match="AnalogConv2d.padding_mode must be 'zeros'"):
        AnalogConv2d(4, 4, 3, padding=1, padding_mode="reflect", seed=0)


@pytest.mark.parametrize("group", [dict(lr=-0.1), dict(lr=0.0), dict(lr=float("nan")), dict(lr=torch.tensor(-0.1)),
                                   dict(lr=float("inf")), dict(lr=torch.tensor(float("inf"))), dict(momentum=0.9),
                                   dict(weight_decay=1e-4), dict(nesterov=True), dict(maximize=True),
                                   dict(foreach=True), dict(fused=True), dict(differentiable=True)])
def test_analog_sgd_checks_every_parameter_group(group) -> None:
    """Only the default ``lr`` was checked: a group's ``lr <= 0`` (or a negative tensor ``lr``) was taken, and the
    pulsed update then moved the weights up the gradient; a group's ``momentum`` / ``weight_decay`` / ``nesterov``
    / ``maximize`` was silently ignored."""
    lin = AnalogLinear(4, 2, rpu_config=ideal_config(), seed=0)
    with pytest.raises(ValueError, match="AnalogSGD"):
        AnalogSGD([dict(params=list(lin.parameters()), **group)], lr=0.1)
    if set(group) == {"lr"}:
        with pytest.raises(ValueError, match="AnalogSGD.lr must be a finite number > 0"):
            AnalogSGD(lin.parameters(), lr=group["lr"])


@pytest.mark.parametrize(("option", "value", "only"), [
    ("momentum", 0.9, "0"), ("dampening", 0.1, "0"), ("weight_decay", 1e-4, "0"),
    ("weight_decay", torch.tensor(1e-4), "0"), ("weight_decay", torch.zeros(2), "0"), ("nesterov", True, "False"),
    ("maximize", True, "False"), ("foreach", True, "None or False"), ("differentiable", True, "False"),
    ("fused", True, "None or False"), ("momentum", "0", "0"), ("nesterov", None, "False")])
def test_analog_sgd_constructor_refuses_sgd_options_by_name(option: str, value: object, only: str) -> None:
    """``AnalogSGD(params, lr=0.1, momentum=0.9)`` failed with Python's bare "unexpected keyword argument
    'momentum'" while the same option in a parameter group got the helpful refusal: the constructor takes
    ``torch.optim.SGD``'s options and refuses any but their defaults with the group's message, naming the option."""
    lin = AnalogLinear(4, 2, rpu_config=ideal_config(), seed=0)
    msg = f"^AnalogSGD: option {option}=.* is not supported \\(only {only}\\); use analog_step next to a torch optim"
    with pytest.raises(ValueError, match=msg):
        AnalogSGD(lin.parameters(), lr=0.1, **{option: value})
    with pytest.raises(ValueError, match=f"^AnalogSGD: parameter group option {option}="):
        AnalogSGD([dict(params=list(lin.parameters()), **{option: value})], lr=0.1)


def test_analog_sgd_constructor_takes_sgd_defaults_positionally_and_keeps_type_error_for_unknown_keywords() -> None:
    """torch.optim.SGD's signature: ``momentum``, ``dampening``, ``weight_decay``, ``nesterov`` positional after
    ``lr``, the rest keyword-only; defaults (and equal values: ``0.0``, a zero tensor, ``foreach=False``) are the
    plain SGD step, so the optimizer steps as without them: ``W -= lr · 1 xᵀ`` for ``sum(y)``, ``b -= lr · B``."""
    lin = AnalogLinear(4, 2, rpu_config=ideal_config(), dtype=F64, seed=0)
    with pytest.raises(ValueError, match="^AnalogSGD: option momentum=0.9 is not supported"):
        AnalogSGD(lin.parameters(), 0.1, 0.9)
    with pytest.raises(TypeError, match="unexpected keyword argument 'betas'"):
        AnalogSGD(lin.parameters(), lr=0.1, betas=(0.9, 0.99))  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        AnalogSGD(lin.parameters(), 0.1, 0, 0, 0, False, False)  # type: ignore[misc]   # maximize is keyword-only
    opt = AnalogSGD(lin.parameters(), 0.5, 0.0, 0, torch.tensor(0.0), 0, maximize=False, foreach=False,
                    differentiable=False, fused=None)
    assert opt.defaults == {"lr": 0.5}
    w0, b0 = lin.get_weights(), lin.bias.detach().clone()
    x = torch.randn(3, 4, dtype=F64)
    lin(x).sum().backward()
    opt.step()
    torch.testing.assert_close(lin.get_weights(), w0 - 0.5 * torch.ones(2, 1, dtype=F64) * x.sum(0, keepdim=True))
    torch.testing.assert_close(lin.bias.detach(), b0 - 0.5 * 3)


@pytest.mark.parametrize("lr", [-0.1, 0.0, float("nan"), float("inf"), torch.tensor(-0.1), torch.tensor(0.0),
                                torch.tensor([0.1, 0.2]), "0.1", True, None])
def test_analog_step_requires_lr_above_zero_as_analog_sgd_does(lr: object) -> None:
    """``analog_step(model, -0.1)`` (or 0, or a negative CPU tensor) was taken: the pulsed update accepts any sign,
    and moved the weights up the gradient. It now refuses what AnalogSGD refuses, before any update, keeping the
    stash: the next valid step applies it."""
    lin = AnalogLinear(4, 2, rpu_config=ideal_config(), dtype=F64, seed=0)
    lin(torch.randn(3, 4, dtype=F64)).sum().backward()
    w0 = lin.get_weights()
    with pytest.raises(ValueError, match=r"^analog_step: lr must be a finite number > 0 \(a number or a one-element "
                                         r"tensor\), got "):
        analog_step(lin, lr)  # type: ignore[arg-type]
    assert torch.equal(lin.get_weights(), w0)
    with pytest.raises(ValueError, match=r"^AnalogSGD\.lr must be a finite number > 0"):
        AnalogSGD(lin.parameters(), lr=lr)  # type: ignore[arg-type]
    assert analog_step(lin, 0.1) == 1


@pytest.mark.parametrize("lr", [0.5, torch.tensor(0.5, dtype=F64)])
def test_analog_step_applies_lr_and_reads_no_tensor_value_on_the_sync_free_path(lr: float | torch.Tensor) -> None:
    """A valid lr gives the exact SGD step of the ideal layer: ``d = 1`` for ``sum(y)``, so ``ΔW = -lr · 1 xᵀ``
    summed over the batch. On the sync-free path (``no_host_reads``, the path GPUs take) a tensor lr's value is not
    read, as the pulse update does not read it: a negative one is not refused there (the caller's to keep
    positive), while a negative number still is (no synchronisation needed)."""
    from devices import no_host_reads

    lin = AnalogLinear(4, 2, rpu_config=ideal_config(), dtype=F64, seed=0)
    x = torch.randn(3, 4, dtype=F64)
    w0 = lin.get_weights()
    step = 0.5 * torch.ones(2, 1, dtype=F64) * x.sum(0, keepdim=True)
    lin(x).sum().backward()
    assert analog_step(lin, lr) == 1
    torch.testing.assert_close(lin.get_weights(), w0 - step)
    with no_host_reads():
        lin(x).sum().backward()
        with pytest.raises(ValueError, match=r"^analog_step: lr must be a finite number > 0"):
            analog_step(lin, -0.5)
        assert analog_step(lin, torch.tensor(-0.5, dtype=F64)) == 1                 # not read: the step is taken
    torch.testing.assert_close(lin.get_weights(), w0)                                # -0.5 undid the +0.5 step


def test_analog_sgd_accepts_positive_group_lr_and_sgd_defaults() -> None:
    lin = AnalogLinear(4, 2, rpu_config=ideal_config(), dtype=F64, seed=0)
    opt = AnalogSGD([dict(params=[lin.analog_ctx], lr=torch.tensor(0.5), momentum=0, weight_decay=0.0),
                     dict(params=[lin.bias], lr=0.25)], lr=0.1)
    w0, b0 = lin.get_weights(), lin.bias.detach().clone()
    x = torch.randn(3, 4, dtype=F64)
    lin(x).sum().backward()
    opt.step()
    torch.testing.assert_close(lin.get_weights(), w0 - 0.5 * torch.ones(2, 1, dtype=F64) * x.sum(0, keepdim=True))
    torch.testing.assert_close(lin.bias.detach(), b0 - 0.25 * 3)


@pytest.mark.parametrize("shape", [(4, 6), (2, 3, 6), (24,), ()])
def test_linear_rejects_wrong_input_size_before_any_mvm(shape) -> None:
    """nn.Linear rejects an input whose last dimension is not in_features (and a 0-d one); the analog layer ran the
    MVM on ``x.reshape(-1, 12)`` (counting it and drawing its noise) and then failed reshaping the output (``shape
    '[4, 5]' is invalid``), or, for a 0-d input of a 1-input layer, returned a result."""
    for in_features in (12, 1):
        if shape == () and in_features == 12:
            continue
        with pytest.raises(RuntimeError):
            nn.Linear(in_features, 5)(torch.randn(shape))
        lin = AnalogLinear(in_features, 5, rpu_config=CrossbarConfig(), seed=0)
        state = lin.tile.generator.get_state()
        with pytest.raises(ValueError, match=rf"AnalogLinear: expected input \[\.\.\., {in_features}\]"):
            lin(torch.randn(shape))
        assert int(lin.tile.counters["forward_mvms"]) == 0
        assert torch.equal(lin.tile.generator.get_state(), state)


@pytest.mark.parametrize("in_features, out_features, tile, x_shape", [
    (1, 7, (3, 4), (1, 1)), (7, 1, (3, 4), (1, 7)), (1, 1, (1, 1), (1,)), (13, 11, (4, 5), (3, 2, 13)),
    (5, 9, (2, 3), (5,))])
def test_linear_odd_sizes_equal_nn_linear(in_features, out_features, tile, x_shape) -> None:
    """1×N, N×1 and sizes that pad both tile axes, a batch of one, a 1-D input, leading dimensions, a
    non-contiguous input: forward, input gradient and one step equal nn.Linear + SGD (ideal periphery and device)."""
    torch.manual_seed(5)
    analog = AnalogLinear(in_features, out_features, rpu_config=ideal_config(tile_rows=tile[0], tile_cols=tile[1]),
                          dtype=F64, seed=0)
    digital = nn.Linear(in_features, out_features, dtype=F64)
    with torch.no_grad():
        digital.weight.copy_(analog.get_weights())
        digital.bias.copy_(analog.bias)
    x = torch.randn(*reversed(x_shape), dtype=F64).permute(*reversed(range(len(x_shape)))).requires_grad_(True)
    _assert_step_equals_digital(analog, digital, x)


def _assert_step_equals_digital(analog: nn.Module, digital: nn.Module, x: torch.Tensor) -> None:
    """Forward, input gradient and one SGD step (lr 0.3) of ``analog`` equal those of ``digital`` (same weights)."""
    x_d = x.detach().clone().requires_grad_(True)
    y_a, y_d = analog(x), digital(x_d)
    assert y_a.shape == y_d.shape
    torch.testing.assert_close(y_a, y_d, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(y_d)
    y_a.backward(g)
    y_d.backward(g)
    torch.testing.assert_close(x.grad, x_d.grad, rtol=1e-12, atol=1e-12)
    AnalogSGD(analog.parameters(), lr=0.3).step()
    torch.optim.SGD(digital.parameters(), lr=0.3).step()
    torch.testing.assert_close(analog.get_weights(), digital.weight, rtol=0, atol=1e-12)
    if digital.bias is not None:
        torch.testing.assert_close(analog.bias, digital.bias, rtol=0, atol=1e-12)


@pytest.mark.parametrize("c_in, c_out, kw, size", [
    (1, 1, dict(kernel_size=1), (1, 1)),
    (5, 3, dict(kernel_size=(2, 3), stride=(2, 1), padding=(0, 2), dilation=(1, 2)), (7, 9)),
    (6, 4, dict(kernel_size=3, stride=3, padding=2, dilation=2), (11, 10)),
    (4, 7, dict(kernel_size=(1, 3), stride=(1, 2), padding=(1, 0), bias=False), (5, 6))])
def test_conv_geometries_on_padded_tiles_equal_nn_conv2d(c_in, c_out, kw, size) -> None:
    """Strides, paddings and dilations per axis, 1×1 kernels, the channels-last im2col (>= 4 channels), a batch of
    one and a non-contiguous input, on tiles padded on both axes: equal to nn.Conv2d + SGD."""
    torch.manual_seed(6)
    analog = AnalogConv2d(c_in, c_out, rpu_config=ideal_config(tile_rows=3, tile_cols=5), dtype=F64, seed=0, **kw)
    digital = nn.Conv2d(c_in, c_out, dtype=F64, **kw)
    with torch.no_grad():
        digital.weight.copy_(analog.get_weights())
        if digital.bias is not None:
            digital.bias.copy_(analog.bias)
    x = torch.randn(1, c_in, size[1], size[0], dtype=F64).transpose(2, 3).requires_grad_(True)
    _assert_step_equals_digital(analog, digital, x)


# ---------------------------------------------------------------------------------------------- frozen layers


def _freeze(layer: AnalogLinear, how: str, flag: bool = False) -> None:
    if how == "module":
        layer.requires_grad_(flag)
    elif how == "weight_method":
        layer.weight.requires_grad_(flag)
    else:
        layer.weight.requires_grad = flag


def _tile_state(layer: AnalogLinear) -> dict[str, torch.Tensor]:
    """The tile's device state: weights, device parameters, update counters and its generator's state."""
    state = {k: v.clone() for k, v in layer.tile.state_dict().items()
             if isinstance(v, torch.Tensor) and "forward" not in k and "backward" not in k
             and "adc" not in k and "dac" not in k}
    state["generator"] = layer.tile.generator.get_state().clone()
    return state


@pytest.mark.parametrize("how", ["module", "weight_method", "weight_attribute"])
def test_frozen_layer_gets_no_pulses_but_passes_the_error(how: str) -> None:
    """A frozen pulsed layer between two trainable ones: the devices stay bit for bit, its input gradient
    (and the earlier layer's training) is the unfrozen twin's."""
    cfg = CrossbarConfig(tile_rows=4, tile_cols=4)                           # noisy periphery, ConstantStep device
    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    target = torch.randn(6, 2, generator=torch.Generator().manual_seed(1))
    models, x_grads = [], []
    for frozen in (False, True):
        model = nn.Sequential(AnalogLinear(5, 7, rpu_config=cfg, seed=1), nn.Tanh(),
                              AnalogLinear(7, 3, rpu_config=cfg, seed=2), nn.Tanh(),
                              AnalogLinear(3, 2, rpu_config=cfg, seed=3))
        if frozen:
            _freeze(model[2], how)
        opt = AnalogSGD(model.parameters(), lr=0.2)
        hidden = model[1](model[0](x))
        hidden.retain_grad()
        F.mse_loss(model[4](model[3](model[2](hidden))), target).backward()
        before = _tile_state(model[2])                                       # after the noisy MVMs' draws
        assert model[2].stashed == (0 if frozen else 1)
        opt.step()
        changed = any(not torch.equal(before[k], v) for k, v in _tile_state(model[2]).items())
        assert changed != frozen
        models.append(model)
        x_grads.append(hidden.grad)
    assert torch.equal(x_grads[0], x_grads[1])                                # the error still goes upstream
    assert int(models[1][2].tile.counters["pulses"]) == 0
    assert int(models[1][2].tile.counters["backward_mvms"]) == int(models[0][2].tile.counters["backward_mvms"]) > 0
    for i in (0, 4):                                                         # the trainable layers: same steps
        assert torch.equal(models[0][i].get_weights(), models[1][i].get_weights())
    bias_frozen = how == "module"
    assert torch.equal(models[1][2].bias, models[0][2].bias) == (not bias_frozen)   # weight-only freeze: bias trains


def test_frozen_then_unfrozen_resumes_training_exactly() -> None:
    """Ideal layer: frozen -> no change (nor a stale stash applied later); unfrozen -> W - lr d^T x exactly."""
    lin = AnalogLinear(4, 3, bias=False, rpu_config=ideal_config(), dtype=F64, seed=0)
    opt = AnalogSGD(lin.parameters(), lr=0.1)
    w0 = lin.get_weights()
    x = torch.randn(5, 4, dtype=F64, requires_grad=True)
    g = torch.randn(5, 3, dtype=F64)
    lin.weight.requires_grad_(False)
    assert lin.weight.requires_grad is False and lin.analog_ctx.requires_grad is False
    lin(x).backward(g)
    torch.testing.assert_close(x.grad, g @ w0, rtol=0, atol=1e-12)        # dL/dx = d W, through the tile
    opt.step()
    assert torch.equal(lin.get_weights(), w0)
    lin.weight.requires_grad_(True)
    lin(x.detach()).backward(g)                                               # input needs no gradient now
    opt.step()
    torch.testing.assert_close(lin.get_weights(), w0 - 0.1 * g.T @ x.detach(), rtol=0, atol=1e-12)


def test_parameter_groups_with_a_scheduler_and_a_frozen_group() -> None:
    """Two groups with their own lr under StepLR; the second layer's group is frozen, the first trains with the
    error the frozen layer sends back (ideal layers: ``W1 - lr (g W2)^T x`` exactly)."""
    first = AnalogLinear(4, 3, bias=False, rpu_config=ideal_config(), dtype=F64, seed=0)
    second = AnalogLinear(3, 2, bias=False, rpu_config=ideal_config(), dtype=F64, seed=1)
    second.requires_grad_(False)
    opt = AnalogSGD([{"params": first.parameters(), "lr": 0.3}, {"params": second.parameters()}], lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    w1, w2 = first.get_weights(), second.get_weights()
    x = torch.randn(5, 4, dtype=F64)
    for lr in (0.3, 0.15):
        g = torch.randn(5, 2, dtype=F64)
        second(first(x)).backward(g)
        assert (first.stashed, second.stashed) == (1, 0)
        opt.step()
        sched.step()
        w1 = w1 - lr * (g @ w2).T @ x
        torch.testing.assert_close(first.get_weights(), w1, rtol=0, atol=1e-12)
    assert torch.equal(second.get_weights(), w2)
    assert [group["lr"] for group in opt.param_groups] == [0.075, 0.025]


_WEIGHT_WRITES = {
    "nn.init.kaiming_uniform_": lambda w: nn.init.kaiming_uniform_(w),
    "nn.init.zeros_": lambda w: nn.init.zeros_(w),
    "copy_ under no_grad": lambda w: w.copy_(torch.ones_like(w)),
    ".data.normal_": lambda w: w.data.normal_(),
    ".data.copy_": lambda w: w.data.copy_(torch.ones_like(w)),
    ".data = ...": lambda w: setattr(w, "data", torch.ones_like(w)),
    "w[0] = 0": lambda w: w.__setitem__(0, 0.0),
    "w += 1": lambda w: w.__iadd__(1.0),
    "out=w": lambda w: torch.mul(torch.ones_like(w), 2.0, out=w),
}


@pytest.mark.parametrize("write", sorted(_WEIGHT_WRITES))
@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_writing_into_the_weight_copy_raises_instead_of_leaving_the_devices_as_they_are(kind: str, write: str) -> None:
    """``nn.Linear`` users initialise and overwrite ``layer.weight`` in place; on an analog layer that wrote into a
    copy and left the devices untouched without a word. Now every such write raises, naming ``set_weights``, and the
    devices keep their states; ``set_weights`` programs the same values exactly (ideal device)."""
    layer = (AnalogLinear(4, 3, rpu_config=ideal_config(), dtype=F64, seed=0) if kind == "linear"
             else AnalogConv2d(2, 3, 2, rpu_config=ideal_config(), dtype=F64, seed=0))
    name = type(layer).__name__
    before = layer.get_weights()
    message = rf"{name}\.weight is a read-only copy.*{name}\.set_weights"
    with torch.no_grad(), pytest.raises(RuntimeError, match=message):
        _WEIGHT_WRITES[write](layer.weight)
    assert torch.equal(layer.get_weights(), before)
    ones = torch.ones(layer.weight.shape, dtype=F64)
    layer.set_weights(0.5 * ones)
    assert torch.equal(layer.get_weights(), 0.5 * ones)


def test_the_weight_copy_still_reads_and_clones_as_a_tensor() -> None:
    """Reading ops are unaffected by the write guard: plain results, ``.data`` and ``.clone()`` hold the weights,
    and a clone is an ordinary tensor that can be changed (the layer keeps its weights)."""
    lin = AnalogLinear(3, 2, bias=False, rpu_config=ideal_config(), dtype=F64, seed=0)
    target = torch.tensor([[0.5, -0.25, 0.0], [0.125, 1.0, -1.0]], dtype=F64)
    lin.set_weights(target)
    w = lin.weight
    assert torch.equal(w.data, target) and torch.equal(w.abs().sum(1), torch.tensor([0.75, 2.125], dtype=F64))
    clone = w.clone()
    assert type(clone) is torch.Tensor
    clone.zero_()
    assert torch.equal(lin.get_weights(), target)


_DERIVED_WRITES = {
    ".detach().zero_()": lambda w: w.detach().zero_(),
    ".detach().copy_()": lambda w: w.detach().copy_(torch.full_like(w, 0.75)),
    "w[0].fill_()": lambda w: w[0].fill_(1.0),
    ".view(-1).mul_()": lambda w: w.view(-1).mul_(-3.0),
    ".transpose(0, 1).add_()": lambda w: w.transpose(0, 1).add_(0.5),
    "nn.init on .detach()": lambda w: nn.init.normal_(w.detach()),
}


@pytest.mark.parametrize("write", sorted(_DERIVED_WRITES))
@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_a_write_into_a_detached_or_viewed_weight_copy_never_reaches_the_devices(kind: str, write: str) -> None:
    """``layer.weight`` is a new copy on each read: ``.detach()`` and views of it are plain tensors over that copy,
    so writing into them is allowed and changes that tensor only. The layer computes what it did before: the same
    forward output (ideal device, perfect periphery: the exact product with the programmed weights, by hand with
    ``F.linear`` / ``F.conv2d``) and the same states."""
    layer = (AnalogLinear(4, 3, rpu_config=ideal_config(), dtype=F64, seed=0) if kind == "linear"
             else AnalogConv2d(2, 3, 2, rpu_config=ideal_config(), dtype=F64, seed=0))
    target = torch.linspace(-0.5, 0.5, layer.weight.numel(), dtype=F64).reshape(layer.weight.shape)
    layer.set_weights(target)
    x = torch.randn(5, 4, dtype=F64) if kind == "linear" else torch.randn(2, 2, 5, 5, dtype=F64)
    want = F.linear(x, target, layer.bias) if kind == "linear" else F.conv2d(x, target, layer.bias)
    torch.testing.assert_close(layer(x), want, rtol=0, atol=1e-12)
    w = layer.weight
    _DERIVED_WRITES[write](w)
    assert not torch.equal(w, target)                                   # the write did change the copy ...
    assert torch.equal(layer.get_weights(), target)                     # ... not the devices
    torch.testing.assert_close(layer(x), want, rtol=0, atol=1e-12)
    assert torch.equal(layer.weight, target) and layer.weight is not w  # each read is a new copy


def test_the_weight_copys_data_neither_reads_nor_sets_the_layers_requires_grad_as_nn_linear() -> None:
    """``.data`` of ``nn.Linear``'s weight is a tensor outside autograd: its ``requires_grad`` reads False, and
    ``.data.requires_grad_(False)`` leaves the layer training. The analog copy's ``.data`` (read-only too) did the
    same before it became read-only; then it carried the layer's flag: it read True and froze the layer."""
    lin = AnalogLinear(3, 2, bias=False, rpu_config=ideal_config(), dtype=F64, seed=0)
    data = lin.weight.data
    assert not data.requires_grad and not nn.Linear(3, 2).weight.data.requires_grad
    data.requires_grad_(False)
    lin.weight.data.requires_grad = False
    assert lin.analog_ctx.requires_grad and lin.weight.requires_grad      # the layer still trains
    with pytest.raises(RuntimeError, match=r"AnalogLinear\.weight is a read-only copy"):
        data.zero_()                                                     # and the data stays read-only


def test_analog_weight_copy_is_plain_data() -> None:
    lin = AnalogLinear(4, 3, rpu_config=ideal_config(), seed=0)
    w = lin.weight
    assert w.requires_grad and type(w * 2) is torch.Tensor and not (w * 2).requires_grad
    assert type(copy.deepcopy(w)) is torch.Tensor and torch.equal(copy.deepcopy(w), w)
    assert w.grad_fn is None and w.numpy().shape == (3, 4)
    lin.requires_grad_(False)
    assert not lin.weight.requires_grad and not w.requires_grad


def exact_step_config(w_min: float = -1.0, w_max: float = 1.0) -> CrossbarConfig:
    """A constant-step device without spread or write noise: the per-device bounds are exactly ``[w_min, w_max]`` and
    ``set_weights`` sets exactly the given values."""
    return CrossbarConfig(device=ConstantStepDevice(w_min=w_min, w_max=w_max, w_min_dtod=0.0, w_max_dtod=0.0,
                                                    write_noise_std=0.0))


def test_conductances_default_map_uses_the_device_bounds_and_saturates_beyond() -> None:
    """``(G⁺, G⁻)`` in µS of set weights, by hand with the default map (``g_min = 0.1``, ``g_max = 25`` µS) and the
    device's ``w_max = 1``: ``scale = 24.9`` µS per unit, ``G⁺ = 0.1 + 24.9·max(w, 0)``, ``G⁻ = 0.1 + 24.9·max(-w, 0)``;
    1.5 (set with ``clip=False``, beyond the device's range) saturates at 25 µS."""
    lin = AnalogLinear(3, 2, bias=False, rpu_config=exact_step_config(), dtype=F64, seed=0)
    lin.set_weights(torch.tensor([[0.5, -0.25, 0.0], [1.0, -1.0, 1.5]], dtype=F64), clip=False)
    g_plus, g_minus = lin.conductances()
    torch.testing.assert_close(g_plus, torch.tensor([[12.55, 0.1, 0.1], [25.0, 0.1, 25.0]], dtype=F64))
    torch.testing.assert_close(g_minus, torch.tensor([[0.1, 6.325, 0.1], [0.1, 25.0, 0.1]], dtype=F64))
    # the pair read of row_sums with the idle device at g_min (in weight units) is Σ(G⁺ + G⁻) where nothing saturates
    torch.testing.assert_close(lin.row_sums(g_offset=0.1 / 24.9)[0] * 24.9, (g_plus + g_minus)[0].sum())


def test_conductances_take_a_given_map_and_an_asymmetric_range_and_keep_shape_device_dtype() -> None:
    """A given map: ``g_min = 1``, ``g_max = 11`` µS, ``w_max = 2`` → 5 µS per unit. An asymmetric device range
    ``[-0.5, 2]``: the default map's ``w_max`` is the larger bound, 2 (12.45 µS per unit). A conv layer's pairs are
    shaped like its weight; float32 stays float32 (float32 of the hand values)."""
    lin = AnalogLinear(2, 2, bias=False, rpu_config=exact_step_config(), dtype=F64, seed=0)
    lin.set_weights(torch.tensor([[0.5, -0.25], [1.5, -2.5]], dtype=F64))
    g_plus, g_minus = lin.conductances(ConductanceMap(g_min_uS=1.0, g_max_uS=11.0, w_max=2.0))
    # set_weights clipped 1.5 and -2.5 into the device's [-1, 1]: the states hold ±1, not the map's ±2
    torch.testing.assert_close(g_plus, torch.tensor([[3.5, 1.0], [6.0, 1.0]], dtype=F64))
    torch.testing.assert_close(g_minus, torch.tensor([[1.0, 2.25], [1.0, 6.0]], dtype=F64))

    conv = AnalogConv2d(1, 2, 2, bias=False, rpu_config=exact_step_config(-0.5, 2.0), seed=0)
    w = torch.zeros(2, 1, 2, 2)
    w[0, 0, 0, 0], w[1, 0, 1, 1] = 1.0, -0.5
    conv.set_weights(w)
    g_plus, g_minus = conv.conductances()
    assert g_plus.shape == g_minus.shape == (2, 1, 2, 2) and g_plus.dtype == g_minus.dtype == torch.float32
    want_plus, want_minus = torch.full((2, 1, 2, 2), 0.1), torch.full((2, 1, 2, 2), 0.1)
    want_plus[0, 0, 0, 0], want_minus[1, 0, 1, 1] = 0.1 + 12.45, 0.1 + 0.5 * 12.45
    torch.testing.assert_close(g_plus, want_plus)
    torch.testing.assert_close(g_minus, want_minus)


def test_conductances_are_exact_reads_and_refuse_another_map_type() -> None:
    """No read noise and no counted read: the same pairs twice, ``from_pair`` gives ``get_weights`` back (the
    Idealized preset's weights lie far inside ``±1``); a non-map ``cmap`` is refused naming it."""
    lin = AnalogLinear(8, 4, rpu_config=CrossbarConfig(device=get_preset("Idealized")), seed=0)
    first = lin.conductances()
    second = lin.conductances()
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    torch.testing.assert_close(ConductanceMap().from_pair(*first), lin.get_weights(), rtol=0, atol=1e-6)
    assert int(lin.tile.counter_forward_mvms) == 0
    with pytest.raises(ValueError, match=r"^AnalogLinear\.conductances: cmap must be a devices\.ConductanceMap or "
                                         r"None, got 1\.0$"):
        lin.conductances(1.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["linear", "conv"])
@pytest.mark.parametrize("config", ["default", "nm-none", "perfect"])
def test_a_nan_input_reaches_the_loss_as_nan(kind: str, config: str) -> None:
    """A NaN in one sample's input gives NaN outputs for that sample (the others stay finite) and, through backward,
    a NaN input gradient for it, so a NaN loss shows it (the training loop stops on a non-finite loss:
    imc_grapes.train's DivergenceError), never finite values in its place. No host read is added for it."""
    cfg = {"default": CrossbarConfig(tile_rows=4, tile_cols=4),
           "nm-none": CrossbarConfig(forward=IOParameters(noise_management="none"),
                                     backward=IOParameters(noise_management="none"), tile_rows=4, tile_cols=4),
           "perfect": CrossbarConfig.perfect(tile_rows=4, tile_cols=4)}[config]
    layer = (AnalogLinear(9, 6, rpu_config=cfg, seed=0) if kind == "linear"
             else AnalogConv2d(2, 3, 2, rpu_config=cfg, seed=0))
    x = torch.rand(3, 9) if kind == "linear" else torch.rand(3, 2, 4, 4)
    x.view(3, -1)[1, 5] = math.nan
    x.requires_grad_(True)
    y = layer(x)
    flat = y.reshape(3, -1)
    assert torch.isnan(flat[1]).any() and torch.isfinite(flat[[0, 2]]).all()
    loss = y.square().sum()
    assert torch.isnan(loss)
    loss.backward()
    assert torch.isnan(x.grad.reshape(3, -1)[1]).any()
