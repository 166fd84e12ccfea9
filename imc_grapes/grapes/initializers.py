"""Seeded initializers: every random draw goes through an explicit ``torch.Generator`` on CPU (float64),
then is copied to the tensor's device and dtype, so one seed gives the same numbers on CPU and GPU."""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

from devices.base import check_field, check_finite, check_seed

__all__ = ["make_generator", "he_uniform_", "uniform_"]


def make_generator(seed: int | None) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed``; ``None`` seeds it from OS entropy (not reproducible).

    Raises:
        ValueError: ``seed`` is not an integer in :data:`~devices.base.SEED_RANGE` (a bool, a float or a string
            such as ``"3"`` is refused: ``int()`` would turn it into another seed than the one written).
    """
    g = torch.Generator()
    if seed is None:
        g.seed()
    else:
        g.manual_seed(check_seed("make_generator", seed))
    return g


def _check_args(where: str, tensor: object, generator: object) -> None:
    """``ValueError("<where>.tensor must be a torch.Tensor, ...")`` / ``("<where>.generator must be a CPU
    torch.Generator or None, ...")`` unless the arguments are those (a string generator got torch's ``TypeError``
    from inside ``uniform_``, a CUDA one torch's device error: the draws are made on the CPU)."""
    if not isinstance(tensor, Tensor):
        raise ValueError(f"{where}.tensor must be a torch.Tensor, got {type(tensor).__name__}")
    ok = generator is None or (isinstance(generator, torch.Generator) and generator.device.type == "cpu")
    check_field(where, "generator", generator, ok,
                "a CPU torch.Generator or None (the draws are made on the CPU, then copied)")


@torch.no_grad()
def he_uniform_(tensor: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Fill ``tensor`` in place from ``U(-√(6/fan_in), √(6/fan_in))``, ``fan_in = prod(shape[1:])``.

    This is the reference code's ``he_uniform`` (``limit = sqrt(6/n_in)``), identical to
    ``torch.nn.init.kaiming_uniform_(t, mode='fan_in', nonlinearity='relu')``. The reference uses it for
    every activation (ReLU and tanh alike), and so do we. Draws on CPU with ``generator`` then copies, so
    a seed gives the same numbers on every device. A tensor of no element is left as it is, with torch's
    ``UserWarning`` ("Initializing zero-element tensors is a no-op"), as ``kaiming_uniform_`` does (its
    ``fan_in`` may be 0: it was a ``ZeroDivisionError``); the generator does not advance.

    Raises:
        ValueError: ``tensor`` is not a tensor, or ``generator`` not a CPU ``torch.Generator`` or None.
    """
    _check_args("he_uniform_", tensor, generator)
    if tensor.numel() == 0:
        warnings.warn("Initializing zero-element tensors is a no-op", stacklevel=3)   # the caller (past no_grad)
        return tensor
    fan_in = math.prod(tensor.shape[1:]) if tensor.dim() > 1 else tensor.shape[0]
    return uniform_(tensor, math.sqrt(6.0 / fan_in), generator)


@torch.no_grad()
def uniform_(tensor: Tensor, bound: float, generator: torch.Generator | None = None) -> Tensor:
    """Fill ``tensor`` in place from ``U(-bound, bound)`` drawn with ``generator`` (CPU, float64).

    Raises:
        ValueError: ``bound`` is not a finite number >= 0 (:func:`~devices.base.check_finite`; a negative bound
            failed in torch's ``uniform_`` with "expects to return a [from, to) range"), ``tensor`` is not a
            tensor or ``generator`` not a CPU ``torch.Generator`` or None.
    """
    _check_args("uniform_", tensor, generator)
    check_finite("uniform_", "bound", bound, 0.0)
    g = generator if generator is not None else make_generator(None)
    values = torch.empty(tensor.shape, dtype=torch.float64).uniform_(-bound, bound, generator=g)
    tensor.copy_(values.to(dtype=tensor.dtype))
    return tensor


def _he_uniform_layer_(weight: Tensor, bias: Tensor | None, generator: torch.Generator | None = None) -> None:
    """A weight layer's default init, in this order: ``weight`` (``[out, in]`` or ``[out, in, *kernel]``)
    He-uniform (:func:`he_uniform_`), then ``bias`` (``[out]``, if any) from ``U(±1/√fan_in)``,
    ``fan_in = prod(weight.shape[1:])``; both drawn with ``generator``."""
    he_uniform_(weight, generator)
    if bias is not None:
        uniform_(bias, 1.0 / math.sqrt(math.prod(weight.shape[1:])), generator)
