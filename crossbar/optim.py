"""Optimizers for models with analog layers.

* :class:`AnalogSGD`: one torch optimizer for everything: the analog layers' ``analog_ctx`` parameters
  (found among the given params, see :func:`crossbar.modules.analog_module_of`) trigger the pulsed
  in-memory update with the stashed ``(x, d)``; every other parameter gets plain SGD ``p -= lr * p.grad``.
* :func:`analog_step`: apply the analog updates of a whole model with a given learning rate, so that any
  torch optimizer (Adam, SGD with momentum, ...) can drive the digital parameters::

      opt = torch.optim.Adam(p for p in model.parameters() if analog_module_of(p) is None)
      loss.backward(); opt.step(); analog_step(model, lr=0.05); opt.zero_grad()
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from torch import Tensor, nn

from crossbar.modules import analog_module_of, analog_modules

__all__ = ["AnalogSGD", "analog_step", "analog_zero_grad"]


class AnalogSGD(torch.optim.Optimizer):
    """SGD for digital parameters and the pulsed in-memory update for analog layers.

    Args:
        params: parameters or parameter groups (e.g. ``model.parameters()``); include the analog layers'
            ``analog_ctx`` parameters (they are in ``model.parameters()``) for those layers to be updated.
        lr: learning rate (> 0) of both the digital SGD step and the analog update (``tile.update(x, d, lr)``;
            the device's pulse granularity and the update management turn it into pulses).

    ``zero_grad`` also drops analog stashes that were not consumed by a ``step``.
    """

    def __init__(self, params: Iterable[Tensor] | Iterable[dict[str, Any]], lr: float = 0.01) -> None:
        if not (isinstance(lr, Tensor) or lr > 0):
            raise ValueError(f"AnalogSGD.lr must be > 0, got {lr!r}")
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr = group["lr"]
            for p in group["params"]:
                module = analog_module_of(p)
                if module is not None:
                    module.analog_update(lr)
                elif p.grad is not None:
                    p.add_(p.grad, alpha=-lr)
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the gradients as ``torch.optim.Optimizer.zero_grad`` does (without its profiler range, a
        noticeable share of a small model's step) and drop the analog stashes not consumed by a ``step``."""
        for group in self.param_groups:
            for p in group["params"]:
                module = analog_module_of(p)
                if module is not None:
                    module.clear_stash()
                grad = p.grad
                if grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    if grad.grad_fn is not None:
                        grad.detach_()
                    else:
                        grad.requires_grad_(False)
                    grad.zero_()


def analog_step(model: nn.Module, lr: float | Tensor) -> int:
    """Apply the pulsed update of every analog layer in ``model`` with its stashed ``(x, d)``.

    Returns the number of tile updates applied (0 if nothing was stashed).
    """
    return sum(m.analog_update(lr) for m in analog_modules(model))


def analog_zero_grad(model: nn.Module) -> None:
    """Drop the stashed ``(x, d)`` of every analog layer in ``model``."""
    for m in analog_modules(model):
        m.clear_stash()
