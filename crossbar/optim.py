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
from devices.base import is_finite_number
from devices.host import host_reads_free

__all__ = ["AnalogSGD", "analog_step", "analog_zero_grad"]

_SGD_OPTIONS: dict[str, Any] = {"momentum": 0, "dampening": 0, "weight_decay": 0, "nesterov": False, "maximize": False,
                                "foreach": None, "differentiable": False, "fused": None}
"""``torch.optim.SGD`` options :class:`AnalogSGD` does not implement, with the only value it accepts (SGD's default;
``foreach`` / ``fused`` also ``False``)."""


def _equals(value: Any, ok: Any) -> bool:
    """``value == ok`` as a bool (``False`` for ``None`` on either side, which only ``is`` matches, and where the
    comparison has no single truth value: a tensor of several elements)."""
    if value is None or ok is None or (isinstance(value, Tensor) and value.numel() != 1):
        return False
    return bool(value == ok)


def _check_sgd_option(where: str, key: str, value: Any) -> None:
    """``ValueError("<where> option <key>=<value> is not supported (only <default>); use analog_step next to a torch
    optimizer for <key>")`` unless ``value`` is the default of the ``torch.optim.SGD`` option ``key``
    (:data:`_SGD_OPTIONS`), which :class:`AnalogSGD` accepts as the plain SGD step it takes (``foreach`` / ``fused``
    also ``False``: its step is a plain loop over the parameters)."""
    off = _SGD_OPTIONS[key]
    accepted = (off, False) if off is None else (off,)
    if not any(value is ok or _equals(value, ok) for ok in accepted):
        only = " or ".join(repr(ok) for ok in accepted)
        raise ValueError(f"{where} option {key}={value!r} is not supported (only {only}); use analog_step next to a "
                         f"torch optimizer for {key}")


def _check_optimizer_lr(lr: Any, where: str = "AnalogSGD.lr", read_device_tensor: bool = True) -> None:
    """``ValueError("<where> must be a finite number > 0 ...")`` unless ``lr`` is a finite number or one-element tensor
    > 0 (NaN and ±inf fail: the pulsed update refuses them; ``<= 0`` would move the weights up the gradient, or not
    at all). A number is checked without any synchronisation; a tensor's value is read where host reads are free
    (:func:`devices.host.host_reads_free`: the CPU), or everywhere with ``read_device_tensor`` (:class:`AnalogSGD`:
    once, when the optimizer is made), and otherwise only its element count, as the update's own check does
    (``crossbar.update._check_update_lr``; :func:`analog_step`, called every step, never reads a GPU tensor). That
    check accepts any sign; the optimizer's lr must be > 0."""
    if isinstance(lr, Tensor) and lr.numel() == 1:
        if not (read_device_tensor or host_reads_free(lr)):
            return
        value = lr.item()
    else:
        value = lr
    if not is_finite_number(value) or not float(value) > 0:
        raise ValueError(f"{where} must be a finite number > 0 (a number or a one-element tensor), got {lr!r}")


class AnalogSGD(torch.optim.Optimizer):
    """SGD for digital parameters and the pulsed in-memory update for analog layers.

    Args:
        params: parameters or parameter groups (e.g. ``model.parameters()``); include the analog layers'
            ``analog_ctx`` parameters (they are in ``model.parameters()``) for those layers to be updated.
        lr: learning rate (> 0) of both the digital SGD step and the analog update (``tile.update(x, d, lr)``;
            the device's pulse granularity and the update management turn it into pulses).
        momentum, dampening, weight_decay, nesterov, maximize, foreach, differentiable, fused: ``torch.optim.SGD``'s
            other options, in its order, accepted at their defaults only (the plain SGD step this optimizer takes):
            any other value is a ``ValueError`` naming the option (use :func:`analog_step` next to a torch
            optimizer for them), as in a parameter group; an unknown keyword is Python's ``TypeError``.

    A frozen analog layer (``layer.requires_grad_(False)`` or ``layer.weight.requires_grad_(False)`` before the
    forward pass) stashes nothing in backward, so ``step`` sends its devices no pulse, as ``torch.optim`` skips a
    parameter without gradient (aihwkit's ``AnalogSGD`` still updates such a layer: see :mod:`crossbar.modules`).

    ``zero_grad`` also drops analog stashes that were not consumed by a ``step`` (as torch's ``model.zero_grad()``
    does: see :mod:`crossbar.modules`). Every parameter group's ``lr`` must be > 0 (a number or a one-element
    tensor, whose value is read once, when the group is added, even on a GPU; :func:`analog_step` checks the same
    at every call, without reading a GPU tensor); groups asking for ``torch.optim.SGD`` options this optimizer
    does not have (momentum, dampening, weight decay, Nesterov, maximize, foreach, differentiable, fused) are refused
    rather than ignored.
    """

    def __init__(self, params: Iterable[Tensor] | Iterable[dict[str, Any]], lr: float = 0.01, momentum: float = 0,
                 dampening: float = 0, weight_decay: float = 0, nesterov: bool = False, *, maximize: bool = False,
                 foreach: bool | None = None, differentiable: bool = False, fused: bool | None = None) -> None:
        _check_optimizer_lr(lr)
        options = {"momentum": momentum, "dampening": dampening, "weight_decay": weight_decay, "nesterov": nesterov,
                   "maximize": maximize, "foreach": foreach, "differentiable": differentiable, "fused": fused}
        for key, value in options.items():
            _check_sgd_option("AnalogSGD:", key, value)
        super().__init__(params, {"lr": lr})

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """``torch.optim.Optimizer.add_param_group``, with the group's ``lr`` and options checked first."""
        if isinstance(param_group, dict):
            if "lr" in param_group:
                _check_optimizer_lr(param_group["lr"])
            for key in _SGD_OPTIONS:
                if key in param_group:
                    _check_sgd_option("AnalogSGD: parameter group", key, param_group[key])
        super().add_param_group(param_group)

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
    """Apply the pulsed update of every analog layer in ``model`` with its stashed ``(x, d)`` (a frozen layer has
    none: see :class:`AnalogSGD`).

    ``lr`` must be > 0, as :class:`AnalogSGD`'s (a number or a one-element tensor): a number is checked at every
    call without any synchronisation; a tensor's value only where host reads are free (the CPU,
    :func:`devices.host.host_reads_free`), so that a step on a GPU never waits for the device (a CUDA tensor
    ``lr`` is then the caller's to keep positive; the update still checks that it is on the layers' device).

    Returns the number of tile updates applied (0 if nothing was stashed).

    Raises:
        ValueError: ``lr`` is not a finite number > 0 (nothing is updated, the stashes are kept).
    """
    _check_optimizer_lr(lr, "analog_step: lr", read_device_tensor=False)
    return sum(m.analog_update(lr) for m in analog_modules(model))


def analog_zero_grad(model: nn.Module) -> None:
    """Drop the stashed ``(x, d)`` of every analog layer in ``model`` (``model.zero_grad()`` drops them too, see
    :mod:`crossbar.modules`; this one leaves the digital gradients as they are)."""
    for m in analog_modules(model):
        m.clear_stash()
