"""Edge cases of the analog layers' torch contract: input dtypes, stashed pairs modified in place (and every reader of
the stash checking them), backward passes that ask for other gradients only, empty batches, argument errors.
Expectations from ``nn.Linear`` / ``nn.Conv2d`` + ``torch.optim.SGD`` semantics and
hand-computed updates (ideal layers: perfect periphery, ideal device, exact float update)."""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest
import torch
from torch import nn

from crossbar import (AnalogConv2d, AnalogLinear, AnalogSGD, CrossbarConfig, ReplicaLinear, ReplicaTileArray,
                      TileArray, UpdateParameters)
from devices import IdealDevice

F64 = torch.float64


def ideal_config(**kw) -> CrossbarConfig:
    """Perfect periphery, ideal device, exact float update: the analog layer must equal the digital one."""
    return CrossbarConfig.perfect(device=IdealDevice(), update=UpdateParameters(pulse_type="none"), **kw)


# ---------------------------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("config", [ideal_config(), CrossbarConfig()], ids=["perfect", "noisy"])
@pytest.mark.parametrize("dtype", [F64, torch.float16, torch.bfloat16, torch.int64])
def test_input_of_another_dtype_is_refused_naming_the_dtype(config: CrossbarConfig, dtype: torch.dtype) -> None:
    """``nn.Linear`` / ``nn.Conv2d`` (and aihwkit's layers) refuse an input whose dtype is not the layer's; the analog
    layers failed deep in the periphery (``expected scalar type Double but found Float``; an integer input through
    the noisy periphery: ``TypeError`` from ``torch.finfo``). Now a ``ValueError`` naming both dtypes, before any MVM
    (no count, no noise drawn)."""
    x = torch.ones(2, 6).to(dtype)
    with pytest.raises(RuntimeError):
        nn.Linear(6, 3)(x)
    with pytest.raises(RuntimeError):
        nn.Conv2d(2, 3, 2)(x.reshape(1, 2, 2, 3))
    for layer, xin in ((AnalogLinear(6, 3, rpu_config=config, seed=0), x),
                       (AnalogConv2d(2, 3, 2, rpu_config=config, seed=0), x.reshape(1, 2, 2, 3))):
        state = layer.tile.generator.get_state()
        with pytest.raises(ValueError, match=rf"{type(layer).__name__}: input dtype must be the layer's, "
                                             rf"torch.float32, got {dtype}"):
            layer(xin)
        assert int(layer.tile.counters["forward_mvms"]) == 0
        assert torch.equal(layer.tile.generator.get_state(), state)
    tile = TileArray(3, 6, config, seed=0)
    with pytest.raises(ValueError,
                       match=rf"TileArray.forward: x must have the array's dtype, torch.float32, got {dtype}"):
        tile.forward(x)
    with pytest.raises(ValueError, match=rf"TileArray.backward: d must have the array's dtype, torch.float32"):
        tile.backward(torch.ones(2, 3).to(dtype))
    assert int(tile.counters["forward_mvms"]) == int(tile.counters["backward_mvms"]) == 0


@pytest.mark.parametrize("dtype", [F64, torch.float16, torch.bfloat16])
def test_layer_converted_to_the_input_dtype_equals_nn_linear(dtype: torch.dtype) -> None:
    """The remedy the error names, ``layer.to(dtype)``: the converted ideal layer computes ``nn.Linear``'s output in
    that dtype (forward and input gradient)."""
    analog = AnalogLinear(6, 3, rpu_config=ideal_config(), seed=0).to(dtype)
    digital = nn.Linear(6, 3).to(dtype)
    with torch.no_grad():
        digital.weight.copy_(analog.get_weights())
        digital.bias.copy_(analog.bias)
    x = torch.randn(4, 6).to(dtype).requires_grad_(True)
    x_d = x.detach().clone().requires_grad_(True)
    y, y_d = analog(x), digital(x_d)
    assert y.dtype == dtype
    tol = dict(rtol=0, atol=8 * torch.finfo(dtype).eps)    # O(1) values; the tile sums in another order in 16 bits
    torch.testing.assert_close(y, y_d, **tol)
    y.sum().backward()
    y_d.sum().backward()
    torch.testing.assert_close(x.grad, x_d.grad, **tol)


# ---------------------------------------------------------------------------------------------- stashed pairs


def _ideal_linear() -> AnalogLinear:
    return AnalogLinear(4, 3, bias=False, rpu_config=ideal_config(), dtype=F64, seed=0)


def test_two_backward_passes_before_one_step_accumulate_as_sgd() -> None:
    """Two forward + backward passes, one step: both updates applied once, as SGD applies the accumulated
    ``weight.grad = g1ᵀ x1 + g2ᵀ x2``; the stash is then empty (a second step changes nothing)."""
    lin = _ideal_linear()
    w0 = lin.get_weights()
    gen = torch.Generator().manual_seed(0)
    x1, x2 = torch.randn(2, 4, generator=gen, dtype=F64), torch.randn(5, 4, generator=gen, dtype=F64)
    g1, g2 = torch.randn(2, 3, generator=gen, dtype=F64), torch.randn(5, 3, generator=gen, dtype=F64)
    opt = AnalogSGD(lin.parameters(), lr=0.1)
    lin(x1).backward(g1)
    lin(x2).backward(g2)
    opt.step()
    expected = w0 - 0.1 * (g1.T @ x1 + g2.T @ x2)
    torch.testing.assert_close(lin.get_weights(), expected, rtol=0, atol=1e-12)
    opt.step()
    torch.testing.assert_close(lin.get_weights(), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("modify", ["refill_input_buffer", "scale_input", "zero_output_gradient"])
def test_pair_modified_in_place_before_the_step_is_refused(modify: str) -> None:
    """Gradient accumulation through one input buffer refilled with the next micro-batch (or an input / output
    gradient changed in place after backward): ``nn.Linear``'s ``weight.grad`` holds the values of the backward
    passes (``g1ᵀ x1 + g2ᵀ x2``), but the stash holds the tensors themselves, so the pulsed update silently used the
    new values (``g1ᵀ x2 + g2ᵀ x2``). Now the step raises, applying nothing; a fresh tensor per pass works."""
    gen = torch.Generator().manual_seed(1)
    x1, x2 = torch.randn(2, 4, generator=gen, dtype=F64), torch.randn(2, 4, generator=gen, dtype=F64)
    g = torch.randn(2, 3, generator=gen, dtype=F64)
    lin = _ideal_linear()
    w0 = lin.get_weights()
    opt = AnalogSGD(lin.parameters(), lr=0.1)
    if modify == "refill_input_buffer":
        buf = x1.clone()
        lin(buf).backward(g)
        buf.copy_(x2)
        lin(buf).backward(g)
    elif modify == "scale_input":
        x = x1.clone()
        lin(x).backward(g)
        x.mul_(2)
    else:
        g_user = g.clone()
        lin(x1).backward(g_user)              # bias-free layer: the output gradient is the tensor given
        g_user.zero_()
    with pytest.raises(RuntimeError, match="modified in place after its backward pass"):
        opt.step()
    assert torch.equal(lin.get_weights(), w0)
    # the same accumulation with a fresh tensor per micro-batch: SGD's update
    lin.clear_stash()
    lin(x1.clone()).backward(g)
    lin(x2.clone()).backward(g)
    opt.step()
    torch.testing.assert_close(lin.get_weights(), w0 - 0.1 * (g.T @ x1 + g.T @ x2), rtol=0, atol=1e-12)


def test_copied_layer_applies_its_stash_without_a_false_alarm() -> None:
    """``copy.deepcopy`` (and pickling) give the stashed pairs as new tensors: their version counters start afresh,
    which is no in-place modification (the input had been changed in place *before* the forward pass, by ``relu_``)."""
    lin = _ideal_linear()
    w0 = lin.get_weights()
    x = torch.randn(3, 4, dtype=F64).relu_()                     # version 1 when stashed
    g = torch.randn(3, 3, dtype=F64)
    lin(x).backward(g)
    clone = copy.deepcopy(lin)
    AnalogSGD(clone.parameters(), lr=0.1).step()
    torch.testing.assert_close(clone.get_weights(), w0 - 0.1 * g.T @ x, rtol=0, atol=1e-12)
    AnalogSGD(lin.parameters(), lr=0.1).step()
    torch.testing.assert_close(lin.get_weights(), w0 - 0.1 * g.T @ x, rtol=0, atol=1e-12)



def test_layer_converted_to_float64_between_backward_and_step_applies_its_stash() -> None:
    """``model.to(torch.float64)`` after ``loss.backward()`` and before ``optimizer.step()``: the stash keeps the
    float32 pair of the backward pass (exact in float64), ``analog_ctx.grad`` (the stash's mark) is converted in place,
    so the step applies the update once, in float64, as SGD would: ``W - lr·gᵀx`` and ``b - lr·Σ g`` (exact
    update), and a pulsed layer's states are bit for bit those of the same layer converted first and updated with the
    same pair in float64 (same stream position)."""
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    g = torch.randn(5, 3, generator=torch.Generator().manual_seed(2))
    lin = AnalogLinear(4, 3, bias=True, rpu_config=ideal_config(), seed=0)
    w0, b0 = lin.get_weights().double(), lin.bias.detach().double()
    opt = AnalogSGD(lin.parameters(), lr=0.1)
    lin(x).backward(g)
    lin.to(F64)
    opt.step()
    assert lin.tile.weight_tiles.dtype == lin.bias.dtype == F64 and lin.stashed == 0
    torch.testing.assert_close(lin.get_weights(), w0 - 0.1 * g.double().T @ x.double(), rtol=0, atol=1e-12)
    # the bias's gradient was summed in float32 by the backward pass (as nn.Linear's): float32's rounding
    torch.testing.assert_close(lin.bias.detach(), b0 - 0.1 * g.double().sum(0), rtol=0, atol=1e-6)
    # pulsed update, noisy periphery: the same draws as converting first and updating with the float64 pair
    moved, first = (AnalogLinear(4, 3, bias=False, seed=3) for _ in range(2))
    moved(x).backward(g)
    moved.to(F64)
    AnalogSGD(moved.parameters(), lr=0.1).step()
    with torch.no_grad():
        first(x)                                           # the forward's draws, as the other layer made them
    first.to(F64)
    first.tile.update(x.double(), g.double(), 0.1)
    assert torch.equal(moved.tile.read(hidden=True), first.tile.read(hidden=True))
    assert not torch.equal(moved.tile.read(hidden=True), AnalogLinear(4, 3, bias=False, seed=3).tile.read(
        hidden=True).double())                             # the update really moved the states

# ---------------------------------------------------------------------------------------------- partial backward


@pytest.mark.parametrize("how", ["autograd_grad", "backward_inputs"])
def test_backward_for_the_input_only_stashes_no_update(how: str) -> None:
    """``torch.autograd.grad(loss, x)`` / ``loss.backward(inputs=[x])`` (saliency maps, gradient penalties) leave an
    ``nn.Linear``'s ``weight.grad`` untouched, so the next SGD step does not move its weights; the analog layer
    stashed ``(x, d)`` all the same, and the next step applied that update. Now nothing is stashed; the input
    gradient still comes through the tile, and a normal backward afterwards trains as SGD."""
    lin = AnalogLinear(4, 3, rpu_config=ideal_config(), dtype=F64, seed=0)
    digital = nn.Linear(4, 3, dtype=F64)
    with torch.no_grad():
        digital.weight.copy_(lin.get_weights())
        digital.bias.copy_(lin.bias)
    w0 = lin.get_weights()
    x = torch.randn(5, 4, dtype=F64, requires_grad=True)
    for layer in (lin, digital):
        loss = layer(x).square().sum()
        if how == "autograd_grad":
            (grad_x,) = torch.autograd.grad(loss, x)
        else:
            x.grad = None
            loss.backward(inputs=[x])
            grad_x = x.grad
        torch.testing.assert_close(grad_x, 2 * (x @ w0.T + lin.bias.detach()) @ w0, rtol=1e-12, atol=1e-12)
    assert digital.weight.grad is None and lin.stashed == 0
    opt = AnalogSGD(lin.parameters(), lr=0.1)
    opt.step()
    assert torch.equal(lin.get_weights(), w0)
    g = torch.randn(5, 3, dtype=F64)
    lin(x.detach()).backward(g)                     # a full backward pass: the update is stashed
    assert lin.stashed == 1
    opt.step()
    torch.testing.assert_close(lin.get_weights(), w0 - 0.1 * g.T @ x.detach(), rtol=0, atol=1e-12)


def test_backward_for_the_weights_only_still_stashes() -> None:
    """``loss.backward(inputs=[layer.analog_ctx])`` asks for the analog weights' gradient: the update is stashed."""
    lin = AnalogLinear(4, 3, bias=False, rpu_config=ideal_config(), dtype=F64, seed=0)
    w0 = lin.get_weights()
    x = torch.randn(5, 4, dtype=F64, requires_grad=True)
    g = torch.randn(5, 3, dtype=F64)
    lin(x).backward(g, inputs=[lin.analog_ctx])
    assert lin.stashed == 1 and x.grad is None
    AnalogSGD(lin.parameters(), lr=0.1).step()
    torch.testing.assert_close(lin.get_weights(), w0 - 0.1 * g.T @ x.detach(), rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------- readers of the stash


def test_pending_pairs_refuses_a_pair_modified_in_place() -> None:
    """``pending_pairs`` (what the backends that apply the update themselves read: GRAPES's ``CrossbarLayer``, the
    replicas' saturation probe) gave the modified values where ``analog_update`` raises; now it raises as well,
    naming itself, and an untouched stash reads as the tensors of the backward pass."""
    lin = _ideal_linear()
    x, g = torch.randn(2, 4, dtype=F64), torch.randn(2, 3, dtype=F64)
    lin(x).backward(g)
    ((px, pd),) = lin.pending_pairs()
    assert torch.equal(px, x) and torch.equal(pd, g)
    x.add_(1.0)
    with pytest.raises(RuntimeError, match=r"AnalogLinear.pending_pairs: the input x of stashed pair 0 was modified "
                                           r"in place after its backward pass"):
        lin.pending_pairs()
    assert lin.stashed == 1


@pytest.mark.parametrize("masked", [False, True])
def test_replica_layer_refuses_a_pair_modified_in_place(masked: bool) -> None:
    """``ReplicaLinear``'s masked update and ``pending_pairs`` check the stash as ``AnalogLinear`` does: nothing
    applied, no update counted."""
    cfg = ideal_config(tile_rows=4, tile_cols=4)
    lin = ReplicaLinear([1, 2], 4, 3, cfg, dtype=F64)
    lin.set_weights(torch.randn(2, 3, 4, dtype=F64) * 0.1)
    w0 = lin.get_weights()
    x, g = torch.randn(2, 5, 4, dtype=F64), torch.randn(2, 5, 3, dtype=F64)
    lin(x).backward(g)
    g_seen = lin.pending_pairs()[0][1]
    g_seen.mul_(0.5)                                              # the stashed output gradient, changed in place
    with pytest.raises(RuntimeError, match="ReplicaLinear.pending_pairs: the output gradient d of stashed pair 0"):
        lin.pending_pairs()
    mask = torch.tensor([True, False]) if masked else None
    with pytest.raises(RuntimeError, match="ReplicaLinear.analog_update: the output gradient d of stashed pair 0"):
        lin.analog_update(0.1, mask)
    assert torch.equal(lin.get_weights(), w0) and int(lin.tile.counters["updates"]) == 0


# ---------------------------------------------------------------------------------------------- replica input dtype


def test_replica_layer_converts_an_input_of_another_dtype() -> None:
    """``ReplicaLinear`` converts the input to its states' dtype instead of refusing it as ``AnalogLinear`` does:
    ``train_replicas(dtype=torch.float64)`` feeds float32 images to float64 states. The float32 input gives what
    its float64 conversion gives: forward, and the update ``W - lr gᵀ x`` per replica (exact float update)."""
    cfg = ideal_config(tile_rows=4, tile_cols=4)
    w = torch.randn(2, 3, 6, dtype=F64) * 0.1
    x = torch.randn(2, 5, 6)                                           # float32, as the data sets' images
    g = torch.randn(2, 5, 3, dtype=F64)
    layers = []
    for xin in (x, x.to(F64)):
        lin = ReplicaLinear([1, 2], 6, 3, cfg, dtype=F64)
        lin.set_weights(w)
        y = lin(xin)
        assert y.dtype == F64
        torch.testing.assert_close(y, torch.einsum("eoi,ebi->ebo", w, x.to(F64)), rtol=0, atol=1e-12)
        y.backward(g)
        lin.analog_update(0.1)
        layers.append(lin)
    expected = w - 0.1 * torch.einsum("ebo,ebi->eoi", g, x.to(F64))
    for lin in layers:
        torch.testing.assert_close(lin.get_weights(), expected, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------- empty batches


def _empty_batch_layers() -> list[tuple[nn.Module, torch.Tensor]]:
    """An analog linear, conv and replica layer, each with an input batch of 0 samples."""
    cfg = ideal_config(tile_rows=4, tile_cols=4)
    return [(AnalogLinear(4, 3, rpu_config=cfg, dtype=F64, seed=0), torch.randn(0, 4, dtype=F64)),
            (AnalogConv2d(2, 3, 2, rpu_config=cfg, dtype=F64, seed=0), torch.randn(0, 2, 3, 3, dtype=F64)),
            (ReplicaLinear([1, 2], 4, 3, cfg, dtype=F64), torch.randn(2, 0, 4, dtype=F64))]


@pytest.mark.parametrize("k", [0, 1, 2], ids=["linear", "conv", "replicas"])
def test_backward_of_an_empty_batch_stashes_nothing(k: int) -> None:
    """A batch of 0 samples: ``nn.Linear``'s ``weight.grad`` is zeros and SGD moves nothing. The analog layers
    stashed the empty pair, and the step counted a tile update of zero vectors; now nothing is stashed, the step
    applies and counts nothing, and a later batch trains as before."""
    digital = nn.Linear(4, 3, dtype=F64)
    digital(torch.randn(0, 4, dtype=F64)).sum().backward()
    assert torch.equal(digital.weight.grad, torch.zeros(3, 4, dtype=F64))
    layer, x = _empty_batch_layers()[k]
    w0 = layer.get_weights()
    y = layer(x)
    assert y.numel() == 0
    y.sum().backward()
    assert layer.stashed == 0
    opt = AnalogSGD(layer.parameters(), lr=0.1)
    opt.step()
    assert torch.equal(layer.get_weights(), w0) and int(layer.tile.counters["updates"]) == 0
    x1 = torch.randn(1, *x.shape[1:], dtype=F64) if k < 2 else torch.randn(2, 1, 4, dtype=F64)
    layer(x1).sum().backward()
    assert layer.stashed == 1
    opt.step()
    assert int(layer.tile.counters["updates"]) == (2 if k == 2 else 1)    # one per replica
    assert not torch.equal(layer.get_weights(), w0)


# ---------------------------------------------------------------------------------------------- argument errors


@pytest.mark.parametrize("make,field", [
    (lambda v: AnalogLinear(v, 3), "AnalogLinear.in_features"),
    (lambda v: AnalogLinear(3, v), "AnalogLinear.out_features"),
    (lambda v: AnalogConv2d(v, 3, 2), "AnalogConv2d.in_channels"),
    (lambda v: AnalogConv2d(2, v, 2), "AnalogConv2d.out_channels"),
    (lambda v: ReplicaLinear([1], v, 3), "ReplicaLinear.in_features"),
    (lambda v: ReplicaLinear([1], 3, v), "ReplicaLinear.out_features"),
    (lambda v: TileArray(v, 3, seed=0), "TileArray.out_features"),
    (lambda v: TileArray(3, v, seed=0), "TileArray.in_features"),
    (lambda v: ReplicaTileArray([1], v, 3), "ReplicaTileArray.out_features"),
    (lambda v: ReplicaTileArray([1], 3, v), "ReplicaTileArray.in_features"),
])
@pytest.mark.parametrize("value", [0, -2, 2.0, True])
def test_bad_size_names_the_layer_argument_and_range(make, field: str, value: object) -> None:
    """A zero (negative, float, bool) feature / channel count was refused naming ``TileGrid.in_features`` (for a
    conv: the flattened kernel's fan-in; for a ``TileArray`` / ``ReplicaTileArray``, which the user called, the
    grid it builds); the error now names the argument of the class called and the valid range."""
    with pytest.raises(ValueError, match=rf"^{field} must be an integer >= 1, got {value!r}$"):
        make(value)


@pytest.mark.parametrize("name", ["kernel_size", "stride", "dilation"])
def test_kernel_size_of_three_dims_is_refused_without_a_padding_hint(name: str) -> None:
    """``AnalogConv2d(kernel_size=(3, 3, 3))`` got a message about zero padding / string padding modes; the hint now
    comes with ``padding`` only."""
    with pytest.raises(ValueError, match=rf"^AnalogConv2d.{name} must be an int or a pair of ints, got \(3, 3, 3\)$"):
        AnalogConv2d(2, 3, **{"kernel_size": 2, name: (3, 3, 3)})
    with pytest.raises(ValueError, match=r"^AnalogConv2d.padding must be an int or a pair of ints \(zero padding "
                                         r"given as numbers, or 'valid' / 'same'\), got \(1, 1, 1\)$"):
        AnalogConv2d(2, 3, 2, padding=(1, 1, 1))


def test_tile_arrays_take_numpy_integer_sizes_as_the_layers_do() -> None:
    """``TileArray(np.int64(4), ...)`` was refused by its grid as "TileGrid.out_features must be an integer >= 1, got
    np.int64(4)" (a false statement) while the layers take numpy sizes; the arrays now take them as the Python ints
    they hold: the same grid and the same sampled states as with ints."""
    cfg = CrossbarConfig(tile_rows=3, tile_cols=4)
    arr, ref = TileArray(np.int64(5), np.int32(6), cfg, seed=3), TileArray(5, 6, cfg, seed=3)
    assert (type(arr.grid.out_features), type(arr.grid.in_features)) == (int, int)
    assert (arr.grid.n_row_tiles, arr.grid.n_col_tiles, arr.grid.rows, arr.grid.cols) == (2, 2, 3, 3)  # ceil(5/3)..
    assert torch.equal(arr.weight_tiles, ref.weight_tiles)
    rep = ReplicaTileArray([1, 2], np.int64(5), np.int16(6), cfg)
    assert rep.grid == ref.grid


def test_numpy_integer_sizes_are_taken_as_nn_linear_and_nn_conv2d_take_them() -> None:
    """``nn.Linear(np.int64(4), ...)`` / ``nn.Conv2d(np.int64(2), ...)`` work (sizes read from a numpy config); the
    analog layers refused them as "must be an integer >= 1, got np.int64(2)", a false statement. They now build the
    layer with Python ints, equal to ``nn.Conv2d`` on the same weights (ideal layer)."""
    conv = AnalogConv2d(np.int64(2), np.int32(3), np.int64(3), padding=np.int64(1), rpu_config=ideal_config(),
                        dtype=F64, seed=0)
    ref = nn.Conv2d(np.int64(2), np.int32(3), np.int64(3), padding=np.int64(1), dtype=F64)
    assert type(conv.in_channels) is int and type(conv.out_channels) is int
    with torch.no_grad():
        ref.weight.copy_(conv.get_weights())
        ref.bias.copy_(conv.bias)
    x = torch.randn(2, 2, 4, 5, dtype=F64)
    torch.testing.assert_close(conv(x), ref(x), rtol=1e-12, atol=1e-12)
    lin = AnalogLinear(np.int64(4), np.int64(2), seed=0)
    rep = ReplicaLinear([1, 2], np.int64(4), np.int64(2))
    assert (type(lin.in_features), type(rep.out_features)) == (int, int) and lin(torch.randn(3, 4)).shape == (3, 2)
    with pytest.raises(ValueError, match=r"^AnalogConv2d.in_channels must be an integer >= 1, got np.int64\(0\)$"):
        AnalogConv2d(np.int64(0), 3, 3)


@pytest.mark.parametrize("shape", [(3, 5, 5), (1, 3, 5, 5), (5, 5), (1, 1, 2, 5, 5)])
def test_conv_input_shape_error_shows_the_given_shape(shape: tuple[int, ...]) -> None:
    """An unbatched input ``[C, H, W]`` with the wrong channel count was reported with the batch dimension the layer
    had added (``got (1, 3, 5, 5)`` for a ``(3, 5, 5)`` input); the error now shows the input's own shape and both
    accepted layouts."""
    with pytest.raises(RuntimeError):
        nn.Conv2d(2, 3, 3)(torch.randn(*shape))                          # torch refuses every one of them
    with pytest.raises(ValueError, match=rf"^AnalogConv2d: expected input \[B, 2, H, W\] or \[2, H, W\] \(in_channels "
                                         rf"2\), got {re.escape(str(shape))}$"):
        AnalogConv2d(2, 3, 3, seed=0)(torch.randn(*shape))


@pytest.mark.parametrize("padding, kw, size", [
    ("valid", dict(kernel_size=3), (6, 7)),
    ("valid", dict(kernel_size=(3, 5), stride=2, dilation=(1, 2)), (9, 13)),
    ("same", dict(kernel_size=3), (6, 7)),
    ("same", dict(kernel_size=(3, 5)), (5, 8)),
    ("same", dict(kernel_size=(2, 3), dilation=(2, 1)), (6, 6)),      # dilation·(k − 1) = (2, 2): equal sides
    ("same", dict(kernel_size=1), (4, 5)),
])
def test_string_paddings_give_what_nn_conv2d_gives(padding, kw, size) -> None:
    """``padding='valid'`` / ``'same'`` (as ``nn.Conv2d`` takes them) on a perfect periphery: the output equals
    ``F.conv2d`` with the same string padding, and ``'same'`` keeps the image size."""
    from crossbar import CrossbarConfig
    from devices import IdealDevice

    cfg = CrossbarConfig.perfect(device=IdealDevice())
    layer = AnalogConv2d(2, 3, padding=padding, bias=False, rpu_config=cfg, seed=0, **kw)
    x = torch.randn(2, 2, *size, generator=torch.Generator().manual_seed(0))
    expected = torch.nn.functional.conv2d(x, layer.get_weights(), padding=padding,
                                          **{k: v for k, v in kw.items() if k != "kernel_size"})
    got = layer(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    if padding == "same":
        assert got.shape[-2:] == x.shape[-2:]


@pytest.mark.parametrize("kw, message", [
    (dict(kernel_size=2), r"padding='same' with kernel_size \(2, 2\) and dilation \(1, 1\) needs \(1, 1\) zero "
                          r"rows/columns in all, one more on one side"),
    (dict(kernel_size=(3, 4)), r"padding='same' with kernel_size \(3, 4\) .* needs \(2, 3\) zero rows/columns"),
    (dict(kernel_size=3, stride=(1, 2)), r"padding='same' needs stride 1 \(as nn.Conv2d\), got stride \(1, 2\)"),
])
def test_same_padding_that_needs_unequal_sides_or_a_stride_is_refused(kw, message) -> None:
    """``'same'`` with an odd total padding (an even kernel) pads one side more in ``nn.Conv2d``; this layer pads
    both sides equally, so it refuses, saying how to get there (``nn.Conv2d`` refuses a stride itself)."""
    with pytest.raises(ValueError, match=rf"^AnalogConv2d.{message}"):
        AnalogConv2d(2, 3, padding="same", **kw)



@pytest.mark.parametrize("make,where", [
    (lambda s: AnalogLinear(4, 3, seed=s), "AnalogLinear"),
    (lambda s: AnalogConv2d(2, 3, 2, seed=s), "AnalogConv2d"),
    (lambda s: TileArray(3, 4, seed=s), "TileArray"),
])
@pytest.mark.parametrize("value", [True, 2.5, "3", 2 ** 64, -2 ** 63 - 1])
def test_bad_seed_names_the_layer_argument_and_range(make, where: str, value: object) -> None:
    """A bool, float or string seed was turned into another seed by ``int()`` (``True`` -> 1, ``2.5`` -> 2, ``"3"``
    -> 3) and one beyond ``manual_seed``'s range failed in torch ("Overflow when unpacking long long"); each is now
    refused naming the argument and the range."""
    with pytest.raises(ValueError, match=rf"^{where}.seed must be an integer in \[-2\^63, 2\^64\) \(what "
                                         rf"torch.manual_seed takes\), got {re.escape(repr(value))}$"):
        make(value)


def test_seeds_at_the_ends_of_the_range_and_numpy_seeds_are_taken() -> None:
    """Every seed ``torch.manual_seed`` takes still builds the layer: torch maps a negative seed ``s`` to
    ``s + 2^64`` (so ``-1`` and ``2^64 - 1`` are one seed), and a numpy integer is the Python int."""
    def weights(seed: object) -> torch.Tensor:
        return AnalogLinear(4, 3, seed=seed).get_weights()

    torch.testing.assert_close(weights(-1), weights(2 ** 64 - 1), rtol=0, atol=0)
    torch.testing.assert_close(weights(-2 ** 63), weights(2 ** 63), rtol=0, atol=0)
    torch.testing.assert_close(weights(np.int64(7)), weights(7), rtol=0, atol=0)
    tile = TileArray(3, 4, seed=np.int32(5))
    assert type(tile.seed) is int and tile.seed == 5


@pytest.mark.parametrize("make,where", [
    (lambda b: AnalogLinear(4, 3, bias=b, seed=0), "AnalogLinear"),
    (lambda b: AnalogConv2d(2, 3, 2, bias=b, seed=0), "AnalogConv2d"),
])
@pytest.mark.parametrize("value", ["no", 0, None, 1.0])
def test_bias_that_is_no_bool_is_refused(make, where: str, value: object) -> None:
    """``bias="no"`` built a layer *with* a bias (a truthy string), ``bias=0`` one without: the flag is refused
    unless it is ``True`` or ``False``."""
    with pytest.raises(ValueError, match=rf"^{where}.bias must be true or false, got {re.escape(repr(value))}$"):
        make(value)


@pytest.mark.parametrize("make,x", [
    (lambda: AnalogLinear(4, 3, seed=0), [[0.0] * 4]),
    (lambda: AnalogLinear(4, 3, seed=0), np.zeros((2, 4), dtype=np.float32)),
    (lambda: AnalogConv2d(2, 3, 2, seed=0), np.zeros((1, 2, 3, 3), dtype=np.float32)),
])
def test_input_that_is_no_tensor_is_refused_with_a_type_error(make, x: object) -> None:
    """A list or numpy array failed with ``AttributeError: 'list' object has no attribute 'dim'``; it is now a
    ``TypeError`` naming the layer and the type (``nn.Linear`` also raises a ``TypeError``)."""
    with pytest.raises(TypeError):
        nn.Linear(4, 3)(x)
    layer = make()
    with pytest.raises(TypeError, match=rf"^{type(layer).__name__}: input must be a torch.Tensor, got "
                                        rf"{type(x).__name__}$"):
        layer(x)


@pytest.mark.parametrize("make,shape", [
    (lambda: AnalogLinear(4, 3, seed=0), (2, 4)),
    (lambda: AnalogConv2d(2, 3, 2, seed=0), (1, 2, 3, 3)),
])
def test_input_on_another_device_is_refused_naming_both_devices(make, shape: tuple[int, ...]) -> None:
    """An input on another device than the layer's (here ``meta``, standing for a CPU input to a CUDA layer) failed
    deep in the periphery; it is refused naming the layer's device, the input's and both ways out."""
    layer = make()
    with pytest.raises(ValueError, match=rf"^{type(layer).__name__}: input must be on the layer's device, cpu, got "
                                         r"meta \(move the input with x.to\('cpu'\), or the layer with "
                                         r"\.to\(device\)\)$"):
        layer(torch.zeros(shape, device="meta"))


_NO_META = (r" must be a device that holds data \(e\.g\. 'cpu' or 'cuda'\), got {got}: the simulator needs real device "
            r"states \(device-to-device parameters sampled from the seed, a generator for the noise\), which the meta "
            r"device does not hold$")


@pytest.mark.parametrize("device", ["meta", torch.device("meta")])
@pytest.mark.parametrize("make,where", [
    (lambda device: AnalogLinear(4, 3, seed=0, device=device), "AnalogLinear.device"),
    (lambda device: AnalogConv2d(2, 3, 2, seed=0, device=device), "AnalogConv2d.device"),
    (lambda device: ReplicaLinear([1, 2], 4, 3, device=device), "ReplicaLinear.device"),
    (lambda device: TileArray(3, 4, seed=0, device=device), "TileArray.device"),
    (lambda device: ReplicaTileArray([1, 2], 3, 4, device=device), "ReplicaTileArray.device"),
])
def test_meta_device_is_refused_naming_the_argument(make, where: str, device: str | torch.device) -> None:
    """``AnalogLinear(..., device="meta")`` failed with torch's "META device type not an accelerator" (making the
    tile's generator), a ``ReplicaLinear`` with "Cannot copy out of meta tensor" (sampling the device parameters):
    the simulator needs real states, so the meta device is refused up front, naming the argument."""
    with pytest.raises(ValueError, match="^" + re.escape(where) + _NO_META.format(got=re.escape(repr(device)))):
        make(device)


@pytest.mark.parametrize("make", [lambda: AnalogLinear(4, 3, seed=0), lambda: AnalogConv2d(2, 3, 2, seed=0),
                                  lambda: ReplicaLinear([1, 2], 4, 3), lambda: TileArray(3, 4, seed=0),
                                  lambda: ReplicaTileArray([1, 2], 3, 4)])
@pytest.mark.parametrize("move", [lambda m: m.to("meta"), lambda m: m.to_empty(device="meta"),
                                  lambda m: nn.Sequential(m).to(torch.device("meta"))],
                         ids=["to", "to_empty", "parent.to"])
def test_moving_to_the_meta_device_is_refused_before_anything_moves(make, move) -> None:
    """``layer.to("meta")`` failed with "META device type not an accelerator" after the states had moved (a
    half-moved layer: meta states, a CPU generator); a ``ReplicaTileArray`` moved silently to states without values.
    Now refused naming the module, with every tensor left where it was (here the CPU), and the layer still runs."""
    module = make()
    before = {k: v.clone() for k, v in module.state_dict().items() if isinstance(v, torch.Tensor)}
    name = type(module).__name__
    with pytest.raises(ValueError, match="^" + name + ": the device to move to" + _NO_META.format(
            got=re.escape("device(type='meta')"))):
        move(module)
    after = {k: v for k, v in module.state_dict().items() if isinstance(v, torch.Tensor)}
    assert set(after) == set(before)
    for key, value in before.items():
        assert after[key].device.type == "cpu" and torch.equal(after[key], value), key
    tile = module if isinstance(module, (TileArray, ReplicaTileArray)) else module.tile
    assert tile.generator.device.type == "cpu"
    if isinstance(module, AnalogLinear):
        assert module(torch.ones(2, 4)).shape == (2, 3)
