"""Random numbers for the engine: a torch.Generator, or a counter-based generator with one stream per replica.

Every random draw of ``devices`` and ``crossbar`` goes through :func:`rand`, :func:`randn` or :func:`normal_`:

* with a ``torch.Generator`` (or ``None``: torch's global generator) they make exactly the torch call the
  engine always made (same numbers, same stream);
* with a :class:`CounterRNG` of ``E`` streams the draw is split into ``E`` contiguous, equally sized chunks
  (the *replica-major* layout: the tensor's leading dimension is ``E * k``) and element ``i`` of chunk ``r`` is a
  pure function of ``(seed_r, counter + i)``. Replica ``r``'s numbers therefore depend only on its own seed and
  on the per-replica sizes of the earlier draws: ``E`` replicas drawn together get exactly the numbers each would
  get alone (``E = 1``). This is what lets :mod:`crossbar.replicas` train ``E`` models in one batched pass and
  still reproduce separate runs.

The mixing function is SplitMix64 (Steele, Lea & Flood, "Fast splittable pseudorandom number generators",
OOPSLA 2014) on int64 torch ops (multiplications wrap; logical right shifts are emulated with masks), so it runs
unchanged on CPU and CUDA without a host synchronisation. Uniforms take the top 53 (float64) or 24 (float32 and
narrower) bits plus half an ulp, so they lie in the open interval (0, 1); normals are ``ndtri(u)``.
"""

from __future__ import annotations

from typing import Any, Sequence, Union

import torch
from torch import Tensor

__all__ = ["CounterRNG", "Generator", "rand", "randn", "normal_"]

_GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)      # SplitMix64 increment, as a signed int64
_MUL1 = 0xBF58476D1CE4E5B9 - (1 << 64)
_MUL2 = 0x94D049BB133111EB - (1 << 64)


def _shr_(z: Tensor, k: int) -> Tensor:
    """Logical right shift of int64 ``z`` by ``k`` bits, in place (``>>`` is arithmetic on signed tensors)."""
    return z.bitwise_right_shift_(k).bitwise_and_((1 << (64 - k)) - 1)


def _mix_(z: Tensor, top_bits: int = 64) -> Tensor:
    """SplitMix64's finalizer on int64 ``z`` (any shape), in place, wrapping arithmetic; returns ``z``.

    In-place ops with one temporary: on the CPU fresh large int64 tensors per op cost more than the arithmetic.
    ``top_bits <= 31``: only the top bits will be used; the last step (``z ^= z >>> 31``, which changes bits
    0..32 only) is skipped."""
    t = torch.empty_like(z)
    for k, mul in ((30, _MUL1), (27, _MUL2)):
        z.bitwise_xor_(_shr_(t.copy_(z), k)).mul_(mul)
    return z if top_bits <= 31 else z.bitwise_xor_(_shr_(t.copy_(z), 31))


class CounterRNG:
    """``E`` independent counter-based random streams (one per replica), on one torch device.

    Args:
        seeds: ``E`` integer seeds (a sequence or an int64 tensor ``[E]``), one per replica.
        device: where the numbers are produced (CPU or CUDA).

    Attributes:
        n_streams: ``E``. counter: per-stream position (host int, advanced by ``numel // E`` per draw).

    A draw of a tensor with ``N`` elements needs ``N % E == 0``; replica ``r`` owns elements
    ``r*N/E .. (r+1)*N/E - 1`` of the flattened (row-major) tensor.
    """

    def __init__(self, seeds: Sequence[int] | Tensor, device: torch.device | str | None = None) -> None:
        device = torch.device("cpu") if device is None else torch.device(device)
        s = torch.as_tensor(seeds, dtype=torch.int64).reshape(-1)
        if s.numel() < 1:
            raise ValueError("CounterRNG.seeds must hold at least one seed, got none")
        # decorrelate neighbouring seeds: each stream's key is a mixed seed
        self.keys = _mix_(s.to(device) * _GOLDEN + _MUL2).view(-1, 1)
        self.seeds = [int(v) for v in s.tolist()]
        self.device = device
        self.counter = 0

    @property
    def n_streams(self) -> int:
        return len(self.seeds)

    def get_state(self) -> dict[str, Any]:
        """``{"seeds", "counter"}`` (plain Python values)."""
        return {"seeds": list(self.seeds), "counter": int(self.counter)}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`get_state`'s output (the seeds must match)."""
        if list(state["seeds"]) != self.seeds:
            raise ValueError(f"CounterRNG.set_state: seeds {state['seeds']} differ from this generator's {self.seeds}")
        self.counter = int(state["counter"])

    def _bits(self, shape: Sequence[int], top_bits: int = 64) -> Tensor:
        """Raw 64-bit draws ``[*shape]`` (int64) in the replica-major layout (only the ``top_bits`` highest bits
        fully mixed); advances the counter."""
        shape = tuple(int(s) for s in shape)
        n = 1
        for s in shape:
            n *= s
        e = self.n_streams
        if n % e:
            raise ValueError(f"CounterRNG: a draw of shape {shape} ({n} numbers) cannot be split into {e} "
                             "replica streams (the number of elements must be a multiple of the replicas)")
        per = n // e
        idx = torch.arange(self.counter, self.counter + per, device=self.device, dtype=torch.int64).mul_(_GOLDEN)
        self.counter += per
        return _mix_(torch.add(self.keys, idx.view(1, -1)), top_bits).view(shape)

    def uniform(self, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> Tensor:
        """Uniforms in the open interval (0, 1), ``[*shape]``."""
        if dtype == torch.float64:
            return _shr_(self._bits(shape), 11).to(torch.float64).mul_(2.0 ** -53).add_(2.0 ** -54)
        u = _shr_(self._bits(shape, 24), 40).to(torch.float32).mul_(2.0 ** -24).add_(2.0 ** -25)
        return u if dtype == torch.float32 else u.to(dtype)

    def normal(self, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> Tensor:
        """Standard normals ``[*shape]`` (inverse CDF of :meth:`uniform`)."""
        work = torch.float64 if dtype == torch.float64 else torch.float32
        z = torch.special.ndtri(self.uniform(shape, work))
        return z if z.dtype == dtype else z.to(dtype)

    def __repr__(self) -> str:
        return f"CounterRNG(streams={self.n_streams}, counter={self.counter}, device={self.device})"


Generator = Union[torch.Generator, CounterRNG, None]
"""What the engine's ``generator=`` arguments accept."""


def rand(shape: Sequence[int], generator: Generator, device: torch.device | str | None = None,
         dtype: torch.dtype | None = None) -> Tensor:
    """``U(0, 1)`` draws ``[*shape]``: ``torch.rand`` for a torch generator, else the counter path."""
    if isinstance(generator, CounterRNG):
        out = generator.uniform(shape, dtype or torch.get_default_dtype())
        return out if device is None else out.to(device)
    return torch.rand(tuple(shape), generator=generator, device=device, dtype=dtype)


def randn(shape: Sequence[int], generator: Generator, device: torch.device | str | None = None,
          dtype: torch.dtype | None = None) -> Tensor:
    """Standard normal draws ``[*shape]``: ``torch.randn`` for a torch generator, else the counter path."""
    if isinstance(generator, CounterRNG):
        out = generator.normal(shape, dtype or torch.get_default_dtype())
        return out if device is None else out.to(device)
    return torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)


def normal_(t: Tensor, mean: float, std: float, generator: Generator) -> Tensor:
    """Fill ``t`` in place with ``N(mean, std²)`` draws; returns ``t`` (``Tensor.normal_`` for a torch generator)."""
    if isinstance(generator, CounterRNG):
        z = generator.normal(t.shape, t.dtype)
        return t.copy_(z).mul_(std).add_(mean)
    return t.normal_(mean, std, generator=generator)
