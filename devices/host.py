"""Host reads: where the engine may look at tensor values from Python, and a guard that proves where it does not.

On the CPU, reading a tensor's value on the host (``float(t)``, ``.item()``, ``nonzero``, ``numpy()``) costs
nothing, and the engine uses such reads to skip work (only the devices with pulses, only the slots a sample
uses, one bound-management round when nothing saturated). On a GPU each such read is a *host
synchronisation*: the Python thread waits until every queued kernel has finished, which serialises the
launches and can cost more than the kernels. The engine therefore takes a sync-free path on every device
but the CPU; every such decision asks :func:`host_reads_free`.

:func:`no_host_reads` runs a block on the sync-free path *on the CPU* and raises :class:`HostReadError` on the
first operation that would read a value on the host (or whose output shape depends on values, which needs
one on a GPU). The tests use it to prove, without a GPU, that a training step performs no host
synchronisation; it is also a debugging aid for new device models.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

__all__ = ["HostReadError", "flat_nonzero", "host_reads_free", "host_scalar_math", "no_host_reads", "HOST_READS"]

_FORCED_SYNC_FREE = [0]
"""Nesting depth of :func:`no_host_reads` blocks (``> 0``: every device takes the sync-free path)."""
_SCALAR_MATH = [0]
"""Nesting depth of :func:`host_scalar_math` blocks (``> 0``: the guard lets reads through)."""

HOST_READS = frozenset({
    "item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__", "__complex__",
    "nonzero", "argwhere", "unique", "unique_consecutive", "masked_select", "bincount", "cpu",
    "equal", "allclose", "is_nonzero", "__array__",
})
"""Names of the torch functions / tensor methods that read values on the host or size their output by the
values (on a GPU: a synchronisation). Also flagged: indexing with a boolean mask, ``torch.where`` with one
argument and ``repeat_interleave`` of a tensor without ``output_size``."""


class HostReadError(RuntimeError):
    """A host read (GPU: synchronisation) inside a :func:`no_host_reads` block."""


def host_reads_free(where: torch.Tensor | torch.device) -> bool:
    """Whether code may read values of tensors on ``where`` from Python for free: on the CPU, unless inside
    :func:`no_host_reads`. Callers take their sync-free path (the one GPUs use) when this is ``False``."""
    device = where.device if isinstance(where, torch.Tensor) else where
    return device.type == "cpu" and _FORCED_SYNC_FREE[0] == 0


_NUMPY_DTYPES = frozenset({torch.bool, torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64,
                           torch.float16, torch.float32, torch.float64})


def flat_nonzero(t: torch.Tensor, positive: bool = False) -> torch.Tensor:
    """Flat positions of the nonzero elements of ``t`` (with ``positive``: of the elements ``> 0``), int64,
    increasing: ``t.reshape(-1).nonzero().squeeze(1)`` (``(t > 0)...``).

    A host read, as torch's ``nonzero`` (its output size depends on the values). CPU tensors go through numpy,
    whose comparison and search of a boolean array are 5–15× faster than torch's ``nonzero`` of a float one here
    (the devices with pulses, the pulse trains' fired lines in the sparse CPU update)."""
    if t.device.type == "cpu" and not t.requires_grad and t.dtype in _NUMPY_DTYPES:
        a = t.reshape(-1).numpy()
        return torch.from_numpy(np.flatnonzero(a > 0 if positive else a if a.dtype == np.bool_ else a != 0))
    return (t > 0 if positive else t).reshape(-1).nonzero().squeeze(1)


def _is_host_read(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    name = getattr(func, "__name__", "")
    if name in HOST_READS:
        return True
    if name == "where" and len(args) + len(kwargs) == 1:
        return True
    if name == "repeat_interleave" and "output_size" not in kwargs and not (
            len(args) > 1 and isinstance(args[1], int)):
        return True
    if name in ("__getitem__", "__setitem__", "index_put_", "index_put") and len(args) > 1:
        index = args[1]
        parts = index if isinstance(index, (tuple, list)) else (index,)
        return any(isinstance(p, torch.Tensor) and p.dtype == torch.bool for p in parts)
    return False


class _HostReadGuard(TorchFunctionMode):
    def __torch_function__(self, func: Callable[..., Any], types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        if _SCALAR_MATH[0] == 0 and _is_host_read(func, args, kwargs):
            raise HostReadError(f"host read inside no_host_reads(): {getattr(func, '__qualname__', func)} "
                                f"(a synchronisation on a GPU)")
        return func(*args, **kwargs)


@contextlib.contextmanager
def host_scalar_math() -> Iterator[None]:
    """Mark a block that computes with CPU tensors made from Python numbers (to round exactly as the tensor
    code does) and reads the result: no device data is read, so :func:`no_host_reads` lets it through."""
    _SCALAR_MATH[0] += 1
    try:
        yield
    finally:
        _SCALAR_MATH[0] -= 1


@contextlib.contextmanager
def no_host_reads() -> Iterator[None]:
    """Run the block on the engine's sync-free (GPU) path, raising :class:`HostReadError` at any host read.

    Works on any device, CPU included (results are the GPU path's: same distributions as the CPU path,
    different random streams). Only the engine's step (forward, backward, update, importance reads) is meant
    to run inside; building models and logging read values and belong outside.
    """
    _FORCED_SYNC_FREE[0] += 1
    try:
        with _HostReadGuard():
            yield
    finally:
        _FORCED_SYNC_FREE[0] -= 1
