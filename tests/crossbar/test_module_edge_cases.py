"""Edge cases of the analog layers' torch contract: input dtypes, stashed pairs modified in place, backward passes that
ask for other gradients only. Expectations from ``nn.Linear`` / ``nn.Conv2d`` + ``torch.optim.SGD`` semantics and
hand-computed updates (ideal layers: perfect periphery, ideal device, exact float update)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from crossbar import AnalogConv2d, AnalogLinear, AnalogSGD, CrossbarConfig, TileArray, UpdateParameters
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
    with pytest.raises(ValueError, match=rf"TileArray.forward: x must have the array's dtype, torch.float32, got {dtype}"):
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
