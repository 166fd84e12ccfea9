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
unchanged on CPU and CUDA without a host synchronisation. Uniforms take the top 52 (float64), 23 (float32), 10
(float16) or 7 (bfloat16) bits plus half a grid step, so they are exact and lie in the open interval (0, 1); normals are
``ndtri(u)``, computed as ``sqrt(2)·erfinv(2u − 1)`` (see :func:`ndtri_`).

Partial draws give exactly the full draw's numbers at their positions and advance the counter as the full draw,
so they keep replica exactness: a ``window`` (the first ``n`` entries along a dimension),
:meth:`CounterRNG.uniform_runs` (scattered rows of the last dimension) and :meth:`CounterRNG.at` (chosen flat
positions, or a block, for code that makes one draw); :class:`WindowedDraws` takes every draw of some code as a
window of a larger draw. Work buffers and index offsets are reused across draws.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from devices.host import host_reads_free

__all__ = ["CounterRNG", "IndexedDraws", "WindowedDraws", "Generator", "add_normal", "derived_uniforms", "ndtri_",
           "rand", "randn", "normal_"]

_GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)      # SplitMix64 increment, as a signed int64
_MUL1 = 0xBF58476D1CE4E5B9 - (1 << 64)
_MUL2 = 0x94D049BB133111EB - (1 << 64)


def _wrap(v: int) -> int:
    """Python int -> the int64 with the same low 64 bits (wrapping, as torch's int64 arithmetic)."""
    v &= (1 << 64) - 1
    return v - (1 << 64) if v >= 1 << 63 else v


def _shr_(z: Tensor, k: int, out: Tensor | None = None) -> Tensor:
    """Logical right shift of int64 ``z`` by ``k`` bits (``>>`` is arithmetic on signed tensors); in place, or
    into ``out`` (same shape) when given; returns the result."""
    if out is None:
        out = z.bitwise_right_shift_(k)
    else:
        torch.bitwise_right_shift(z, k, out=out)
    return out.bitwise_and_((1 << (64 - k)) - 1)


def _uniform_bits(dtype: torch.dtype) -> int:
    """How many top bits of a mixed 64-bit number make one uniform of ``dtype`` (:meth:`CounterRNG._to_uniform`):
    52 for float64, 23 for float32, the significand's bits for narrower dtypes (float16: 10, bfloat16: 7)."""
    if dtype == torch.float64:
        return 52
    return 23 if dtype == torch.float32 else min(23, round(-math.log2(torch.finfo(dtype).eps)))


def _mix_(z: Tensor, top_bits: int = 64, scratch: Tensor | None = None) -> Tensor:
    """SplitMix64's finalizer on int64 ``z`` (any shape), in place, wrapping arithmetic; returns ``z``.

    In-place ops with one int64 temporary of ``z``'s shape (``scratch`` if given, reused across calls by
    :class:`CounterRNG`: on the CPU fresh large tensors cost page faults, more than the arithmetic). ``top_bits
    <= 31``: only the top bits will be used; the last step (``z ^= z >>> 31``, which changes bits 0..32 only) is
    skipped."""
    t = torch.empty_like(z) if scratch is None else scratch
    for k, mul in ((30, _MUL1), (27, _MUL2)):
        z.bitwise_xor_(_shr_(z, k, out=t)).mul_(mul)
    return z if top_bits <= 31 else z.bitwise_xor_(_shr_(z, 31, out=t))


def ndtri_(u: Tensor) -> Tensor:
    """Standard normal quantile of uniforms ``u`` in (0, 1), in place: ``sqrt(2)·erfinv(2u − 1)``.

    Equal to ``ndtri(u)`` up to rounding (measured: relative difference < 2e-7 in float32, < 1e-15 in float64),
    about 5x faster on the CPU (torch's ``ndtri`` has no vectorized kernel). ``2u − 1`` loses nothing: the
    uniforms are ``(2v + 1)·2^-(b+1)`` (see :meth:`CounterRNG._to_uniform`), so ``2u − 1 = (2v + 1)·2^-b − 1``
    is an exact float on a symmetric grid in (−1, 1) and the tails keep their full resolution. Elementwise only,
    so each number depends on its own uniform alone (replica exactness)."""
    return u.mul_(2.0).sub_(1.0).erfinv_().mul_(math.sqrt(2.0))


_SCRATCH_MAX = 1 << 22
"""Largest draw (numbers) whose two int64 work buffers a :class:`CounterRNG` keeps for reuse (32 MiB each)."""


def check_seeds(where: str, seeds: object) -> list[int]:
    """``seeds`` (a sequence of integers, an integer tensor, or one integer) as a list of ints; ``ValueError`` naming
    ``<where>.seeds`` (``<where>.seeds[i]`` for one entry: :func:`devices.base.check_seed`) unless every seed is an
    integer in :data:`~devices.base.COUNTER_SEED_RANGE`, the seeds of a :class:`CounterRNG` (``torch.as_tensor``
    took ``True`` as 1 and ``2.5`` as 2, and overflowed beyond int64) and there is at least one."""
    from devices.base import COUNTER_SEED_RANGE, check_seed   # here: devices.base imports this module
    if isinstance(seeds, Tensor):
        if seeds.dtype.is_floating_point or seeds.dtype.is_complex or seeds.dtype == torch.bool:
            raise ValueError(f"{where}.seeds must be integers in {COUNTER_SEED_RANGE} (an integer tensor), "
                             f"got a tensor of dtype {seeds.dtype}")
        values: list[Any] = seeds.reshape(-1).tolist()
    elif isinstance(seeds, numbers.Integral):
        return [check_seed(where, seeds, "seeds", counter=True)]     # one seed (a bool is refused)
    elif isinstance(seeds, (str, bytes)) or not isinstance(seeds, Iterable):
        raise ValueError(f"{where}.seeds must be a sequence of integers in {COUNTER_SEED_RANGE} (or an integer "
                         f"tensor), got {seeds!r}")
    else:
        values = list(seeds)
    if not values:
        raise ValueError(f"{where}.seeds must hold at least one seed (one per replica), got none")
    return [check_seed(where, v, f"seeds[{i}]", counter=True) for i, v in enumerate(values)]


class CounterRNG:
    """``E`` independent counter-based random streams (one per replica), on one torch device.

    Args:
        seeds: ``E`` integer seeds (a sequence or an integer tensor ``[E]``), one per replica, each in
            :data:`~devices.base.COUNTER_SEED_RANGE` (int64; a bool, a float or a string is refused, as
            :func:`devices.base.check_seed` refuses it).
        device: where the numbers are produced (CPU or CUDA).

    Attributes:
        n_streams: ``E``. counter: per-stream position (host int, advanced by ``numel // E`` per draw).

    A draw of a tensor with ``N`` elements needs ``N % E == 0``; replica ``r`` owns elements
    ``r*N/E .. (r+1)*N/E - 1`` of the flattened (row-major) tensor.

    Windows: ``uniform(shape, dtype, window=(dim, n))`` (likewise :meth:`normal`) returns only the first ``n``
    entries along ``dim`` (``1 <= dim < len(shape)``; the leading, replica-major dimension cannot be cut) of the
    *conceptual* full draw of ``shape``: every returned number is exactly the one the full draw has at that
    position (its index in the full per-replica layout feeds the mixer), and the counter advances by the full
    per-replica size. A window of a replica-major tensor is still replica-major, so ``E`` replicas drawing a
    window together still get exactly their ``E = 1`` numbers, and any window agrees with the full draw's slice.
    """

    def __init__(self, seeds: Sequence[int] | Tensor, device: torch.device | str | None = None) -> None:
        device = torch.device("cpu") if device is None else torch.device(device)
        s = torch.tensor(check_seeds("CounterRNG", seeds), dtype=torch.int64)
        # decorrelate neighbouring seeds: each stream's key is a mixed seed
        self.keys = _mix_(s.to(device) * _GOLDEN + _MUL2).view(-1, 1, 1)
        self.seeds = [int(v) for v in s.tolist()]
        self.device = device
        self.counter = 0
        self._work: Tensor | None = None       # reused int64 buffers [2, cap] (draws of <= _SCRATCH_MAX numbers)
        self._cols: dict[int, Tensor] = {}     # length L -> arange(L) * GOLDEN (int64), a few recent lengths

    @property
    def n_streams(self) -> int:
        return len(self.seeds)

    def get_state(self) -> dict[str, Any]:
        """``{"seeds", "counter"}`` (plain Python values)."""
        return {"seeds": list(self.seeds), "counter": int(self.counter)}

    def seeds_problem(self, seeds: Any) -> str | None:
        """Why a state saved with ``seeds`` (:meth:`get_state`'s ``"seeds"``) does not restore into this generator
        (``"seeds [4, 6] differ from this generator's [4, 5]"``), or None when they are its own seeds."""
        return None if list(seeds) == self.seeds else f"seeds {seeds} differ from this generator's {self.seeds}"

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`get_state`'s output (the seeds must match: :meth:`seeds_problem`)."""
        if (problem := self.seeds_problem(state["seeds"])) is not None:
            raise ValueError(f"CounterRNG.set_state: {problem}")
        self.counter = int(state["counter"])

    # ------------------------------------------------------------------ raw bits
    def _golden_cols(self, length: int) -> Tensor:
        """``arange(length) * GOLDEN`` (int64, wrapping) ``[length]``, cached for a few recent lengths."""
        col = self._cols.get(length)
        if col is None:
            if len(self._cols) >= 16:
                self._cols.pop(next(iter(self._cols)))
            col = torch.arange(length, device=self.device, dtype=torch.int64).mul_(_GOLDEN)
            self._cols[length] = col
        return col

    def _buffers(self, n: int) -> tuple[Tensor | None, Tensor | None]:
        """Two reusable int64 work buffers of ``n`` numbers, or ``(None, None)`` for large draws."""
        if n > _SCRATCH_MAX:
            return None, None
        if self._work is None or self._work.shape[1] < n:
            self._work = torch.empty((2, max(n, 4096)), device=self.device, dtype=torch.int64)
        return self._work[0, :n], self._work[1, :n]

    def _layout(self, shape: Sequence[int], window: tuple[int, int] | None
                ) -> tuple[tuple[int, ...], int, int, int, int]:
        """Validate a draw; returns ``(out_shape, per, A, S*B, n*B)``: the per-replica full layout (``per``
        numbers) seen as ``[A, S, B]`` around the window dimension (``S`` its size, ``n`` the kept part). Without
        a window: ``A`` rows of the last dimension (``S = n``, ``B = 1``; one row for 0-d and 1-d draws)."""
        shape = tuple(int(s) for s in shape)
        total = 1
        for s in shape:
            total *= s
        e = self.n_streams
        if total % e:
            raise ValueError(f"CounterRNG: a draw of shape {shape} ({total} numbers) cannot be split into {e} "
                             "replica streams (the number of elements must be a multiple of the replicas)")
        per = total // e
        if window is None:
            last = shape[-1] if shape else 1
            if per == 0 or last == 0 or len(shape) < 2:
                return shape, per, 1, per, per
            return shape, per, per // last, last, last
        dim, n = int(window[0]), int(window[1])
        nd = len(shape)
        if dim < 0:
            dim += nd
        if not 1 <= dim < nd:
            raise ValueError(f"CounterRNG: window dim must be a non-leading dimension of the draw "
                             f"(1 <= dim < {nd}), got {window[0]} for shape {shape}")
        if not 0 <= n <= shape[dim]:
            raise ValueError(f"CounterRNG: window size must be in [0, {shape[dim]}] for dim {dim} of shape "
                             f"{shape}, got {n}")
        lead = shape[0] // e
        a = lead
        for s in shape[1:dim]:
            a *= s
        b = 1
        for s in shape[dim + 1:]:
            b *= s
        out_shape = shape[:dim] + (n,) + shape[dim + 1:]
        return out_shape, per, a, shape[dim] * b, n * b

    def _bits(self, shape: Sequence[int], top_bits: int = 64, window: tuple[int, int] | None = None,
              fresh: bool = True) -> Tensor:
        """Raw 64-bit draws (int64) in the replica-major layout, ``[*shape]`` or its window (only the
        ``top_bits`` highest bits fully mixed); advances the counter by the full per-replica size.

        Element ``(r, a, j)`` of the ``[E, A, n*B]`` view is ``mix(key_r + (counter + a*S*B + j) * GOLDEN)``: the
        sum is formed in one broadcast add of a small ``[E, A, 1]`` row term and a cached ``[n*B]`` column
        term (no per-element index arithmetic). ``fresh=False`` may return a reused work buffer (valid until
        the next draw)."""
        out_shape, per, a, row_len, cols = self._layout(shape, window)
        e = self.n_streams
        rows = (torch.arange(a, device=self.device, dtype=torch.int64).mul_(_wrap(row_len * _GOLDEN))
                if a > 1 else None)
        row = self.keys + _wrap(self.counter * _GOLDEN)                         # [E, 1, 1]
        if rows is not None:
            row = row + rows.view(1, a, 1)                                      # [E, A, 1]
        self.counter += per
        n = e * a * cols
        z, t = self._buffers(n) if not fresh else (None, None)
        z = torch.empty((e, a, cols), device=self.device, dtype=torch.int64) if z is None else z.view(e, a, cols)
        torch.add(row, self._golden_cols(cols).view(1, 1, cols), out=z)
        return _mix_(z, top_bits, None if t is None else t.view(e, a, cols)).view(out_shape)

    # ------------------------------------------------------------------ draws
    @staticmethod
    def _to_uniform(z: Tensor, dtype: torch.dtype) -> Tensor:
        """Mixed bits ``z`` (int64, consumed) -> uniforms in (0, 1) of ``dtype`` (a fresh tensor).

        The top ``b`` bits ``v`` (``b = 52`` for float64, 23 for float32, 10 for float16, 7 for bfloat16) give
        ``u = (v + 1/2)·2^-b = (2v + 1)·2^-(b+1)``: ``2v + 1 < 2^(b+1)`` fits the significand, so every ``u`` is
        exact, symmetric (``1 − u`` is on the grid too) and lies strictly inside (0, 1) (a ``b + 1``-bit ``v``
        would round its top values to 1.0, whose normal quantile is infinite)."""
        if dtype == torch.float64:
            return _shr_(z, 12).to(torch.float64).mul_(2.0 ** -52).add_(2.0 ** -53)
        # v * 2**-b is exact in float32 (computed in float32, written once), and so is adding 2**-(b+1); narrower
        # dtypes take their own b (float16: 10, bfloat16: 7), so that the cast is exact too (with 23 bits the top
        # values would round to 1.0)
        b = _uniform_bits(dtype)
        u = torch.mul(_shr_(z, 64 - b), 2.0 ** -b, out=torch.empty(z.shape, device=z.device, dtype=torch.float32))
        u.add_(2.0 ** -(b + 1))
        return u if dtype == torch.float32 else u.to(dtype)

    def uniform(self, shape: Sequence[int], dtype: torch.dtype = torch.float32,
                window: tuple[int, int] | None = None) -> Tensor:
        """Uniforms in the open interval (0, 1), ``[*shape]`` (or its ``window = (dim, n)``, see the class)."""
        return self._to_uniform(self._bits(shape, 64 if dtype == torch.float64 else 23, window, fresh=False), dtype)

    def normal(self, shape: Sequence[int], dtype: torch.dtype = torch.float32,
               window: tuple[int, int] | None = None) -> Tensor:
        """Standard normals ``[*shape]`` or its window (inverse CDF of :meth:`uniform`)."""
        work = torch.float64 if dtype == torch.float64 else torch.float32
        z = ndtri_(self.uniform(shape, work, window))
        return z if z.dtype == dtype else z.to(dtype)

    def _uniform_at(self, shape: Sequence[int], index: Tensor, dtype: torch.dtype) -> Tensor:
        """The uniforms that a draw of ``shape`` has at the flat positions ``index: [m]`` (int64, on this
        generator's device, into the row-major flattened draw), ``[m]``; advances the counter as that draw."""
        _, per, _, _, _ = self._layout(shape, None)
        rep = torch.div(index, per, rounding_mode="floor") if self.n_streams > 1 else None
        pos = index if rep is None else index - rep * per
        key = self.keys.view(-1)
        z = pos.add(self.counter).mul_(_GOLDEN).add_(key[0] if rep is None else key.index_select(0, rep))
        self.counter += per
        return self._to_uniform(_mix_(z, 64 if dtype == torch.float64 else 23), dtype)

    def uniform_runs(self, shape: Sequence[int], starts: Tensor, length: int,
                     dtype: torch.dtype = torch.float32) -> Tensor:
        """Runs of a draw of ``shape``: ``[m, length]`` uniforms, row ``i`` being the full draw's flattened
        entries ``starts[i] .. starts[i] + length - 1`` (``starts: [m]`` int64 flat positions; a run must not
        cross a replica's block, e.g. runs along the last dimension). Advances the counter as the full draw.

        One broadcast add of ``[m, 1]`` row terms and cached ``[length]`` offsets, then the mixer: as cheap per
        number as a plain draw, for any scattered set of rows (e.g. only the pulse slots a sample uses)."""
        _, per, _, _, _ = self._layout(shape, None)
        if starts.dim() != 1 or starts.dtype != torch.int64:
            raise ValueError(f"CounterRNG.uniform_runs: starts must be a 1-D int64 tensor, got {starts.dtype} "
                             f"{tuple(starts.shape)}")
        key = self.keys.view(-1)
        if self.n_streams > 1:
            rep = torch.div(starts, per, rounding_mode="floor")
            row = (starts - rep * per).add_(self.counter).mul_(_GOLDEN).add_(key.index_select(0, rep))
        else:
            row = starts.add(self.counter).mul_(_GOLDEN).add_(key[0])
        z = torch.add(row.view(-1, 1), self._golden_cols(length).view(1, -1))
        self.counter += per
        return self._to_uniform(_mix_(z, 64 if dtype == torch.float64 else 23), dtype)

    def _uniform_block(self, shape: Sequence[int], block: tuple[int, int, int, int], dtype: torch.dtype) -> Tensor:
        """The uniforms of a draw of ``shape`` for replicas ``r0 <= r < r1`` at per-replica positions
        ``s <= p < e`` (``block = (r0, r1, s, e)``), ``[(r1 - r0) * (e - s)]`` replica-major; advances the counter
        as that draw. One broadcast add of ``[r1 - r0, 1]`` keys and cached ``[e - s]`` offsets, then the mixer."""
        _, per, _, _, _ = self._layout(shape, None)
        r0, r1, s, e = block
        if not (0 <= r0 <= r1 <= self.n_streams and 0 <= s <= e <= per):
            raise ValueError(f"CounterRNG: block {block} is outside the draw ({self.n_streams} replicas of {per})")
        row = self.keys.view(-1, 1)[r0:r1] + _wrap((self.counter + s) * _GOLDEN)
        z = torch.add(row, self._golden_cols(e - s).view(1, -1))
        self.counter += per
        return self._to_uniform(_mix_(z, 64 if dtype == torch.float64 else 23), dtype).view(-1)

    def at(self, shape: Sequence[int], index: Tensor | tuple[int, int, int, int],
           advance: bool = True) -> "IndexedDraws":
        """A one-draw generator for the next draw of ``shape``, computed only at the flat positions ``index``.

        Args:
            shape: the full draw's shape (replica-major, as for :meth:`uniform`).
            index: ``[m]`` int64 flat indices into the row-major full draw (any order, repeats allowed), or a
                block ``(r0, r1, s, e)``: replicas ``r0..r1-1`` at per-replica positions ``s..e-1`` (``m = (r1 -
                r0)(e - s)`` numbers, replica-major; no index arithmetic).

        Returns an :class:`IndexedDraws` whose single draw, of shape ``[m]``, is exactly
        ``full.view(-1)[index]`` of that full draw, and which advances this generator by the full draw's
        per-replica size (only when the draw happens). Lets a caller compute only the entries it needs (e.g. the
        devices that got pulses) while every replica's numbers stay those of its ``E = 1`` run.
        ``advance=False``: the draw leaves the counter alone (several blocks of one logical draw; the caller then
        advances it once, see :meth:`IndexedDraws.settle`).
        """
        return IndexedDraws(self, shape, index, advance)

    def __repr__(self) -> str:
        return f"CounterRNG(streams={self.n_streams}, counter={self.counter}, device={self.device})"


class _ParentDraws(CounterRNG):
    """A view of a parent :class:`CounterRNG` that draws through it: the parent's streams and counter (a
    :class:`CounterRNG` for dispatch: sync-free code paths)."""

    parent: CounterRNG

    def _attach(self, parent: CounterRNG) -> None:
        self.parent = parent
        self.keys, self.seeds, self.device = parent.keys, parent.seeds, parent.device

    @property
    def counter(self) -> int:  # type: ignore[override]
        return self.parent.counter

    @counter.setter
    def counter(self, value: int) -> None:
        self.parent.counter = value


class IndexedDraws(_ParentDraws):
    """One draw of a :class:`CounterRNG` evaluated at chosen flat positions only (see :meth:`CounterRNG.at`).

    A drop-in ``generator=`` for code that makes exactly one draw of ``[m]`` numbers (``m = len(index)``),
    uniform or normal: the draw returns ``full.view(-1)[index]`` of the parent's next full draw of ``shape`` and
    advances the parent by that draw's per-replica size. A second draw, a window, or a draw of another size
    raises ``ValueError`` (the caller's code does not draw as assumed, so the numbers would not be exact).
    It is a :class:`CounterRNG` for dispatch (sync-free code paths), with the parent's streams.
    """

    def __init__(self, parent: CounterRNG, shape: Sequence[int],  # noqa: D107
                 index: Tensor | tuple[int, int, int, int], advance: bool = True) -> None:
        shape = tuple(int(s) for s in shape)
        parent._layout(shape, None)                                  # validates the split into replicas
        if isinstance(index, tuple):
            r0, r1, s, e = (int(v) for v in index)
            self.size = max(r1 - r0, 0) * max(e - s, 0)
            index = (r0, r1, s, e)
        elif index.dim() != 1 or index.dtype != torch.int64:
            raise ValueError(f"IndexedDraws.index must be a 1-D int64 tensor, got {index.dtype} "
                             f"{tuple(index.shape)}")
        else:
            self.size = index.numel()
        self._attach(parent)
        self.full_shape = shape
        self.index = index
        self.used = False
        self.advance = advance

    def _take(self, shape: Sequence[int], window: tuple[int, int] | None) -> None:
        m = self.size
        if self.used or window is not None or tuple(int(s) for s in shape) != (m,):
            raise ValueError(f"IndexedDraws: one draw of shape ({m},) without a window is allowed, got shape "
                             f"{tuple(shape)}, window {window}" + (" after the draw" if self.used else ""))
        self.used = True

    def uniform(self, shape: Sequence[int], dtype: torch.dtype = torch.float32,
                window: tuple[int, int] | None = None) -> Tensor:
        """``[m]`` uniforms: the parent's full draw at ``index``."""
        self._take(shape, window)
        counter = self.parent.counter
        u = (self.parent._uniform_block(self.full_shape, self.index, dtype) if isinstance(self.index, tuple)
             else self.parent._uniform_at(self.full_shape, self.index, dtype))
        if not self.advance:
            self.parent.counter = counter
        return u

    @staticmethod
    def settle(parts: Sequence["IndexedDraws"]) -> None:
        """Advance the parent once for the blocks ``parts`` (made with ``advance=False``) of one logical draw:
        by the full draw's per-replica size if they all drew, not at all if none did (``ValueError`` if only
        some did: the blocks' code drew inconsistently)."""
        used = {p.used for p in parts}
        if len(used) > 1:
            raise ValueError("IndexedDraws.settle: some blocks of the draw drew and some did not")
        if parts and used == {True}:
            parent = parts[0].parent
            parent.counter += parent._layout(parts[0].full_shape, None)[1]

    def __repr__(self) -> str:
        return (f"IndexedDraws({self.size} of {self.full_shape}, used={self.used}, "
                f"parent={self.parent!r})")


class WindowedDraws(_ParentDraws):
    """Draws of a :class:`CounterRNG` taken as windows of ``factor`` times larger draws: a drop-in ``generator=``
    whose draw of ``shape`` returns the first ``shape[dim]`` entries along ``dim`` of the parent's draw of that
    shape with ``shape[dim] * factor`` entries there (:meth:`CounterRNG.uniform`'s ``window``), and advances the
    parent as that larger draw.

    Code that draws for ``factor`` stacked blocks along ``dim`` (e.g. the bound-management rounds of an MVM,
    ``[R, C, rounds·B, n]``) can so run for the first block alone (``[R, C, B, n]``) and get exactly the numbers the
    stacked draws give it, with the parent's counter ending where the stacked draws leave it. Any number of draws,
    uniform or normal, each of its own shape (``1 <= dim < len(shape)``; a window of its own is refused).
    """

    def __init__(self, parent: CounterRNG, dim: int, factor: int) -> None:  # noqa: D107
        if not isinstance(factor, int) or factor < 1:
            raise ValueError(f"WindowedDraws.factor must be an integer >= 1, got {factor!r}")
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"WindowedDraws.dim must be a non-leading dimension (an integer >= 1), got {dim!r}")
        self._attach(parent)
        self.dim, self.factor = dim, factor

    def uniform(self, shape: Sequence[int], dtype: torch.dtype = torch.float32,
                window: tuple[int, int] | None = None) -> Tensor:
        """The first ``shape[dim]`` entries along ``dim`` of the parent's uniforms of the enlarged shape."""
        shape = tuple(int(s) for s in shape)
        if window is not None or len(shape) <= self.dim:
            raise ValueError(f"WindowedDraws: a draw needs more than {self.dim} dimensions and no window of its "
                             f"own, got shape {shape}, window {window}")
        full = shape[:self.dim] + (shape[self.dim] * self.factor,) + shape[self.dim + 1:]
        return self.parent.uniform(full, dtype, window=(self.dim, shape[self.dim]))

    def __repr__(self) -> str:
        return f"WindowedDraws(dim={self.dim}, factor={self.factor}, parent={self.parent!r})"


_DERIVED_SALT = 0x5851F42D4C957F2D              # any odd constant: keeps derived keys apart from raw bits


def _float_bits(t: Tensor) -> Tensor:
    """The bit pattern of float ``t`` (float64: its 64 bits; other dtypes: their float32 bits in the low half) as
    int64, ``t``'s shape (a view of a contiguous float64 ``t``, else a fresh tensor)."""
    t = t.contiguous()
    if t.dtype == torch.float64:
        return t.view(torch.int64)
    return (t if t.dtype == torch.float32 else t.float()).view(torch.int32).to(torch.int64)


def derived_uniforms(key: Tensor, salt: Tensor, count: int, dtype: torch.dtype) -> list[Tensor]:
    """``count`` uniforms in the open interval (0, 1) per element, a pure function of the bits of ``key`` and
    ``salt`` (float tensors of one shape ``[*s]``; returns ``count`` tensors ``[*s]`` of ``dtype``).

    Draws that take no generator: ``key`` is a fresh random number of the element (e.g. the end point of a
    device's update, drawn from the engine's generator), ``salt`` another value of the same element (its state).
    Draw ``j`` is SplitMix64's finalizer of ``bits(key)·γ + bits(salt)·m + c + (j + 1)·γ`` (wrapping int64; ``γ``
    the SplitMix increment, ``m`` an odd multiplier, ``c`` a constant): keys one ulp apart are one ``γ`` apart,
    as consecutive counters of :class:`CounterRNG` are, then :meth:`CounterRNG._to_uniform`. Elementwise, so an
    element's numbers do not depend on which other elements are computed (a gathered subset gets the numbers of
    the full tensor, replicas those of their own runs), and no generator advances: code can add draws where a rare
    event needs them without shifting the stream of every later draw. They are as random as ``key`` is:
    independent across elements and calls while the keys differ (a key repeats for one element with the
    probability that two of its draws coincide, ~2^-23 in float32).

    Where host reads are free (CPU tensors, :func:`devices.host.host_reads_free`) the same integer arithmetic runs
    in numpy's unsigned 64-bit integers (:func:`_derived_uniforms_np`): the same numbers, bit for bit, with a
    fraction of torch's per-operation cost on the few devices the update's bound correction gathers."""
    if host_reads_free(key) and host_reads_free(salt) and not (key.requires_grad or salt.requires_grad):
        return _derived_uniforms_np(key, salt, count, dtype)
    z = _float_bits(key).mul(_GOLDEN).add_(_DERIVED_SALT)
    z.add_(_float_bits(salt).mul(_MUL2))
    scratch = torch.empty_like(z)
    out = []
    for j in range(count):
        h = _mix_(torch.add(z, _wrap((j + 1) * _GOLDEN)), 64 if dtype == torch.float64 else 23, scratch)
        out.append(CounterRNG._to_uniform(h, dtype))
    return out


def _u64(v: int) -> np.uint64:
    """Python int -> numpy uint64 of its low 64 bits."""
    return np.uint64(v & ((1 << 64) - 1))


def _float_bits_np(t: Tensor) -> np.ndarray:
    """:func:`_float_bits` of a CPU tensor as a numpy uint64 array (the same 64-bit patterns), computed in numpy:
    going through :func:`_float_bits`'s torch views and conversion made the whole hash of 29 devices 2.2× slower
    (81 against 37 µs on the Intel Xeon)."""
    t = t.contiguous()
    if t.dtype == torch.float64:
        return t.numpy().view(np.uint64)
    a = (t if t.dtype == torch.float32 else t.float()).numpy().view(np.int32)
    return a.astype(np.int64).view(np.uint64)


def _derived_uniforms_np(key: Tensor, salt: Tensor, count: int, dtype: torch.dtype) -> list[Tensor]:
    """:func:`derived_uniforms` for CPU tensors, in numpy uint64 (wrapping products and sums modulo 2^64, logical
    shifts: torch's signed int64 arithmetic with masked shifts computes the same bits). Uniforms as
    :meth:`CounterRNG._to_uniform`: the top ``b`` bits ``v`` give ``(v + 1/2)·2^-b``, exact in the dtype."""
    z = _float_bits_np(key) * _u64(_GOLDEN)
    z += _u64(_DERIVED_SALT)
    z += _float_bits_np(salt) * _u64(_MUL2)
    wide = dtype == torch.float64
    b = _uniform_bits(dtype)
    out = []
    for j in range(count):
        h = z + _u64((j + 1) * _GOLDEN)
        for k, mul in ((30, _MUL1), (27, _MUL2)):
            h ^= h >> np.uint64(k)
            h *= _u64(mul)
        if wide:
            h ^= h >> np.uint64(31)
        top = (h >> np.uint64(64 - b)).astype(np.float64 if wide else np.float32)
        grid, half = (np.float64(2.0 ** -b), np.float64(2.0 ** -(b + 1))) if wide else \
            (np.float32(2.0 ** -b), np.float32(2.0 ** -(b + 1)))
        u = torch.from_numpy(top * grid + half)
        out.append(u if u.dtype == dtype else u.to(dtype))
    return out


Generator = Union[torch.Generator, CounterRNG, None]
"""What the engine's ``generator=`` arguments accept."""


def rand(shape: Sequence[int], generator: Generator, device: torch.device | str | None = None,
         dtype: torch.dtype | None = None, window: tuple[int, int] | None = None) -> Tensor:
    """``U(0, 1)`` draws ``[*shape]``: ``torch.rand`` for a torch generator, else the counter path.

    ``window = (dim, n)``: only the first ``n`` entries along ``dim`` of the draw of ``shape`` (the same numbers
    as the full draw's slice, and the generator advances as for the full draw). A :class:`CounterRNG` computes
    only the window; a torch generator draws the full tensor and returns a contiguous copy of the slice."""
    if isinstance(generator, CounterRNG):
        out = generator.uniform(shape, dtype or torch.get_default_dtype(), window)
        return out if device is None else out.to(device)
    out = torch.rand(tuple(shape), generator=generator, device=device, dtype=dtype)
    return out if window is None else out.narrow(window[0], 0, window[1]).contiguous()


def randn(shape: Sequence[int], generator: Generator, device: torch.device | str | None = None,
          dtype: torch.dtype | None = None) -> Tensor:
    """Standard normal draws ``[*shape]``: ``torch.randn`` for a torch generator, else the counter path."""
    if isinstance(generator, CounterRNG):
        out = generator.normal(shape, dtype or torch.get_default_dtype())
        return out if device is None else out.to(device)
    return torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)


def add_normal(v: Tensor, std: float, generator: Generator) -> Tensor:
    """``v + N(0, std²)`` per element: the numbers :func:`normal_` would draw into a tensor of ``v``'s shape, added
    to ``v``. A torch generator: one ``torch.normal(v, std)`` call (a new tensor, the same numbers as drawing the
    noise and adding it); a :class:`CounterRNG`: added in place to ``v``, which is returned."""
    if isinstance(generator, CounterRNG):
        return v.add_(normal_(torch.empty_like(v), 0.0, std, generator))
    return torch.normal(v, std, generator=generator)


def normal_(t: Tensor, mean: float, std: float, generator: Generator) -> Tensor:
    """Fill ``t`` in place with ``N(mean, std²)`` draws; returns ``t`` (``Tensor.normal_`` for a torch generator)."""
    if isinstance(generator, CounterRNG):
        z = generator.normal(t.shape, t.dtype)
        return t.copy_(z).mul_(std).add_(mean)
    return t.normal_(mean, std, generator=generator)
