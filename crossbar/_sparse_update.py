"""CPU fast path of the pulsed update: sparse pulse trains and coincidences, same distribution as ``update``.

:func:`crossbar.update.pulse_counts` draws one uniform per line and slot and counts coincidences with two
dense batched matmuls, which costs ``O(devices x slots)`` whatever the learning rate. With the short trains
and small firing probabilities that update management produces for small gradients, few lines fire and
few devices get pulses; on the CPU (where host reads are free) :func:`cpu_pulse_counts` then

* draws the trains as the *positions* of the fired lines (``O(fired lines)``, see :func:`_bernoulli_positions`)
  when every firing probability is small, else draws them densely as ``pulse_counts`` does;
* counts the coincidences pair by pair (``O(coincidences)``) when that is cheaper than the matmuls
  (:func:`_sparse_is_cheaper`, a rough cost model), returning only the devices with pulses, else
  falls back to the dense count on the same trains;
* when the errors are sparse (a CNN's convolutions: errors through max pooling and ReLU over few channels), draws
  the error trains first and the input trains only in the slots where an error line fired
  (:func:`_errors_first_pays`, :func:`_draw_errors_first`): the other slots carry no coincidence.

The dense count itself draws only the live slots (``slot < BL``, :func:`_draw_compact_trains`) and counts with
int8 matmuls (:func:`_int8_counts`, exact) where the CPU multiplies int8 fast (:func:`int8_counts_mode`), else
with one float matmul on sign-weighted trains (:func:`_packed_counts`).

Every path gives exactly the same distribution as ``pulse_counts``: each line fires independently in each
slot with its probability (the random stream differs); the dense and the sparse count of the same trains
are identical numbers.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Callable, NamedTuple

import numpy as np
import torch
from torch import Tensor

from devices import rng
from devices.host import flat_nonzero
from devices.suggest import did_you_mean

from crossbar.update import (
    UpdateParameters,
    _count_layout,
    _dense_counts,
    _draw_dense_trains,
    _plan_trains,
    _swap_count_operands,
    _TrainPlan,
    _Trains,
)

__all__ = ["CPU_PULSE_COUNTS", "CpuCounts", "check_int8_counts_env", "cpu_flags", "cpu_pulse_counts",
           "int8_counts_mode"]

_GEOMETRIC_MAX_P = 0.5
"""Largest firing probability for which the trains are drawn as positions (geometric gaps + thinning)."""
_MARGIN_SIGMAS, _MARGIN_EXTRA = 6.0, 64
"""Candidates drawn at once beyond their expected number: this many standard deviations plus this many."""


INT8_COUNTS_ENV = "IMC_GRAPES_INT8_COUNTS"
"""Environment variable read at import: ``auto`` (default), ``on`` or ``off`` (see :func:`int8_counts_mode`)."""
INT8_COUNTS_MODES = ("auto", "on", "off")
_INT8_DOT_FLAGS = frozenset({"avx512_vnni", "amx_int8"})
"""``/proc/cpuinfo`` flags of the x86 int8 dot-product instructions behind a fast CPU ``torch._int_mm``."""


def _int8_matmul_works() -> bool:
    try:
        a = torch.tensor([[1, -1], [0, 1]], dtype=torch.int8)
        return torch.equal(torch._int_mm(a, a), torch.tensor([[1, -2], [0, 1]], dtype=torch.int32))
    except Exception:      # an older torch, or one without a CPU int8 matmul
        return False


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The instruction-set flags of this CPU as Linux lists them (x86), or an empty set where there is no such
    list (another OS, or a file without a ``flags`` line)."""
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def int8_counts_mode(setting: str | None, flags: frozenset[str], works: bool) -> tuple[bool, str]:
    """Whether the dense pulse counts use int8 matmuls, and why (a phrase for ``imc-grapes doctor``).

    ``torch._int_mm`` on the CPU is fast only where the CPU has int8 dot-product instructions (AVX-512 VNNI,
    AMX): there it beat the float count 4x on the reference machine; without them torch falls back to a
    scalar loop, 15-35x *slower* than a float32 matmul (measured on an AVX2-only AMD EPYC: the MLP step
    38.8 ms against 9.6 ms). ``auto`` therefore takes it only with those flags; both counts give the same
    numbers, but the choice also sets the cost model that picks the sparse or the dense count, so a run's
    random stream (not its distribution) depends on it.

    Args:
        setting: ``auto``/``on``/``off`` (any case; ``None`` or empty: ``auto``): ``$IMC_GRAPES_INT8_COUNTS``.
        flags: :func:`cpu_flags`.
        works: whether this torch multiplies int8 matrices on the CPU (``on`` cannot force it otherwise).
    Raises:
        ValueError: ``setting`` is not one of :data:`INT8_COUNTS_MODES`.
    """
    mode = (setting or "auto").strip().lower()
    if mode not in INT8_COUNTS_MODES:
        raise ValueError(f"{INT8_COUNTS_ENV} must be one of {', '.join(INT8_COUNTS_MODES)}, got {setting!r}"
                         f"{did_you_mean(mode, INT8_COUNTS_MODES)}")
    if not works:
        return False, "float matmuls (this torch has no CPU int8 matmul)"
    if mode == "off":
        return False, f"float matmuls ({INT8_COUNTS_ENV}=off)"
    found = sorted(flags & _INT8_DOT_FLAGS)
    if mode == "on":
        return True, f"int8 matmuls ({INT8_COUNTS_ENV}=on" + (")" if found else
                                                              "; no AVX-512 VNNI / AMX listed: may be a slow loop)")
    if found:
        return True, f"int8 matmuls (the CPU has {', '.join(found)})"
    return False, "float matmuls (the CPU has no AVX-512 VNNI / AMX: torch's int8 matmul would be a slow loop)"


def _int8_counts_from_env() -> tuple[bool, str, str | None]:
    """:func:`int8_counts_mode` of ``$IMC_GRAPES_INT8_COUNTS`` on this machine, and ``None``; for an invalid value
    ``(False, "invalid (<why>)", <why>)``: the import goes on (so that ``imc-grapes --help`` works and the command
    line reports it as a usage error), :func:`check_int8_counts_env` and every :func:`cpu_pulse_counts` raise it."""
    try:
        return (*int8_counts_mode(os.environ.get(INT8_COUNTS_ENV), cpu_flags(), _int8_matmul_works()), None)
    except ValueError as exc:
        return False, f"invalid ({exc})", str(exc)


_INT8_MM, CPU_PULSE_COUNTS, _INT8_COUNTS_ERROR = _int8_counts_from_env()
"""Whether the dense CPU counts use :func:`_int8_counts` (else :func:`_packed_counts`), and in words why
(recorded with every result: ``imc_grapes.versions``, ``versions.cpu_pulse_counts``); why the environment variable
is invalid, or ``None``."""


def check_int8_counts_env() -> None:
    """Raise the error of an invalid ``IMC_GRAPES_INT8_COUNTS`` (read at import). The ``imc-grapes`` command calls
    it before any work; library code gets the same error from the first :func:`cpu_pulse_counts` call.

    Raises:
        ValueError: the variable is not one of :data:`INT8_COUNTS_MODES` (the message names it and them).
    """
    if _INT8_COUNTS_ERROR is not None:
        raise ValueError(_INT8_COUNTS_ERROR)

# Rough single-core CPU costs (ns) of the alternative algorithms (torch 2.10). The count constants are fitted to
# whole tile updates timed both ways, ``benchmarks/bench_update_paths.py``: the int8 count's on an AVX-512 VNNI
# machine, the float count's on an AVX2-only AMD EPYC (29 of 120 cases picked the slower algorithm with the
# constants fitted on the AVX-512 machine, costing 2.4 % of the update time on average and 65 % at worst; 8 with
# these, 0.16 % on average and 9 % at worst).
_NS_PER_MAC = 0.011                           # dense count: per device and packed slot (int8 or float32 matmuls)
_NS_PER_DEVICE = 1.15 if _INT8_MM else 1.5    # dense count: passes over the device arrays
_NS_PER_SUBSET_DEVICE = 1.0   # dense count, then only the pulsed devices updated: finding them among all
_NS_PER_PAIR = 19.0           # sparse count: enumerating, sorting, reducing one coincidence
_NS_SPARSE_FIXED = 230_000.0  # sparse count: its extra tensor operations (fixed overhead)
_NS_PER_LINE = 3.5            # dense trains: one uniform, comparison and nonzero scan per line and slot
_NS_PER_CANDIDATE = 25.0      # sparse trains: one geometric gap, thinning draw and probability per candidate
_NS_GEOMETRIC_FIXED = 80_000.0  # sparse trains: their extra tensor operations
_ERRORS_FIRST_SHARE = 0.25    # errors-first trains: least expected share of silent-error slots (see _errors_first_pays)
_NS_ERRORS_FIRST_FIXED = 300_000.0  # errors-first trains: their extra tensor operations


def _div(n: Tensor, m: int) -> Tensor:
    """``n // m`` for non-negative int64 ``n`` (a shift when ``m`` is a power of two: integer division is slow)."""
    if m == 1:
        return n
    if m & (m - 1) == 0:
        return n >> (m.bit_length() - 1)
    return torch.div(n, m, rounding_mode="floor")


def _mod(n: Tensor, m: int) -> Tensor:
    """``n % m`` for non-negative int64 ``n``."""
    if m & (m - 1) == 0:
        return n & (m - 1)
    return n - _div(n, m) * m


def _input_rows(plan: _TrainPlan, tile_rows: Tensor) -> Tensor:
    """The rows of :meth:`_TrainPlan.x_per_tile` ``(x_abs or x_sign)`` flattened to ``[rows, cols]`` that feed the
    (tile, sample) rows ``tile_rows = (r·C + c)·batch + b``: ``c·batch + b`` for inputs per column block, the row
    itself for inputs per row block too (``[R, C, batch, cols]``)."""
    n_r, n_c, batch = plan.bl.shape
    return tile_rows if plan.x_per_tile(plan.x_abs).shape[0] == n_r > 1 else _mod(tile_rows, n_c * batch)


def _error_rows(plan: _TrainPlan, tile_rows: Tensor) -> Tensor:
    """The rows ``r·batch + b`` of the per-row-block errors (``d_abs``, ``d_sign`` flattened to ``[rows, line]``) that
    feed the (tile, sample) rows ``tile_rows = (r·C + c)·batch + b``."""
    n_r, n_c, batch = plan.bl.shape
    return _div(tile_rows, n_c * batch) * batch + _mod(tile_rows, batch)


def _sort(keys: Tensor) -> Tensor:
    """``keys`` (1-D int64 on the CPU) sorted: numpy's vectorized sort, several times faster than torch's
    CPU sort (which also builds the unused permutation, and is slowest for 5k-30k elements)."""
    return torch.from_numpy(np.sort(keys.numpy()))


class CpuCounts(NamedTuple):
    """Pulse counts of one update (see :func:`cpu_pulse_counts`).

    Attributes:
        touched: ``None`` when ``n_up``/``n_down`` are dense ``[R, C, rows, cols]``; else ``[n]`` int64
            increasing flat indices into ``[R, C, rows, cols]`` of the devices with at least one pulse, and
            ``n_up``/``n_down`` are their ``[n]`` counts.
        n_up, n_down: potentiating / depressing pulses: int32 when dense and counted by int8 matmuls (no
            conversion pass: the device models compute with them as they are), else integer-valued in the
            compute dtype.
        total: 0-d int64, the number of device pulses (coincidences).
    """

    touched: Tensor | None
    n_up: Tensor
    n_down: Tensor
    total: Tensor


def cpu_pulse_counts(x: Tensor, d: Tensor, lr: float | Tensor, dw_min: float | Tensor, cfg: UpdateParameters,
                     generator: torch.Generator | None, subset_pulses: float | None = None) -> CpuCounts:
    """The counts of :func:`crossbar.update.pulse_counts` (``trim_slots=True``), computed sparsely when cheaper.

    Args: as ``pulse_counts`` (``x: [batch, C, cols]``, ``d: [batch, R, rows]``; CPU tensors), and
        ``subset_pulses``: the pulses per device up to which the device update after a dense count computes
        only the devices with pulses (``PulsedDevice.SPARSE_PULSES_PER_DEVICE``; ``None``: it never does), a
        term of the cost model that picks the algorithm.
    Returns: :class:`CpuCounts`, dense or for the devices with pulses only.
    Raises:
        ValueError: ``IMC_GRAPES_INT8_COUNTS`` was invalid at import (:func:`check_int8_counts_env`), or ``lr`` is
            a tensor holding a NaN or an Inf.
        FloatingPointError: in any configuration (BL and update management on or off), ``x`` or ``d`` holds a NaN
            or an Inf (positive or negative) in the block of a tile whose other operand (errors, inputs) is not all
            zero in that sample, and ``lr != 0`` (the training diverged): :func:`_check_finite`.
    """
    if _INT8_COUNTS_ERROR is not None:
        check_int8_counts_env()
    plan = _plan_trains(x, d, lr, dw_min, cfg, generator, trim_slots=True, drop_silent=True)
    _check_finite(plan, lr)
    n_r, n_c, batch, n_slots, cols, rows = plan.shape
    groups = n_r * n_c * batch * n_slots
    # Choose the algorithms from the trains' parameters (never from the draws), see _expected_pairs; the
    # expectation is not needed when the dense count is cheaper than the sparse one's fixed overhead alone.
    fires = _lazy_error_fires(plan)                  # a sum over the error lines: at most once, when needed
    if _sparse_is_cheaper(plan, 0.0, subset_pulses) \
            and _sparse_is_cheaper(plan, _expected_pairs(plan, fires), subset_pulses):
        p_bars = _max_probabilities(plan)
        positions: tuple[Tensor, Tensor] | None = None
        if p_bars is not None and _geometric_is_cheaper(plan, *p_bars):
            positions = _draw_sparse_trains(plan, *p_bars, generator)
        elif _errors_first_pays(plan, dense_count=False, fires=fires):
            positions = _errors_first_positions(plan, generator)
        if positions is not None:           # the fired lines' positions: their numbers per (tile, sample, slot)
            fired_x = torch.bincount(_div(positions[0], cols), minlength=groups)
            fired_d = torch.bincount(_div(positions[1], rows), minlength=groups)
        else:
            trains = _draw_dense_trains(plan, generator)
            fired_x, fired_d = (f.to(torch.int64) for f in trains.fired())
            positions = (flat_nonzero(trains.x_bits), flat_nonzero(trains.d_bits))
        total = (fired_x * fired_d).sum()
        index, n_up, n_down = _sparse_counts(plan, positions[0], positions[1], fired_x, fired_d, int(total))
        return CpuCounts(index, n_up, n_down, total)
    trains = (_errors_first_trains(plan, generator) if _errors_first_pays(plan, dense_count=True, fires=fires)
              else _draw_compact_trains(plan, generator))
    fired_x, fired_d = trains.fired()
    total = (fired_x * fired_d).to(torch.int64).sum()
    n_up, n_down = _int8_counts(trains) if _INT8_MM else _packed_counts(trains)
    return CpuCounts(None, n_up, n_down, total)


def _check_finite(plan: _TrainPlan, lr: float | Tensor) -> None:
    """Raise the diverged-training error when a NaN or an Inf input or error would reach a live tile and sample.

    Read on the host from the plan's maxima (``x_max: [C, batch]`` or ``[R|1, C, batch]``, ``d_max: [R, batch]``,
    computed in every configuration; a NaN or an Inf in a block makes its maximum NaN or Inf, see
    :func:`crossbar._reduce.nonneg_amax`): no pass over ``x`` or ``d``. Without a bad value, two numpy tests of
    these small arrays are all it costs. Otherwise it raises when some (tile, sample) pair has a non-finite maximum
    on one side and a nonzero one (a NaN counts) on the other, and ``lr != 0``: exactly the pairs whose trains the
    bad value would corrupt. Without update management such a pair would otherwise train on garbage silently (a
    NaN line never fires, an Inf line fires in every slot); with update management its scales are NaN (no pulse)
    and, with BL management, its length is cast from NaN. A CPU check: the sync-free (GPU) path
    (:func:`crossbar.update._plan_trains` with the dense trains) checks nothing, leaving a NaN or Inf to the loss
    check of the training loop.

    Raises:
        FloatingPointError: as above (the message names the cause and the remedy).
    """
    xm, dm = plan.x_max.numpy(), plan.d_max.numpy()
    if np.isfinite(xm).all() and np.isfinite(dm).all():
        return
    x_val = xm if xm.ndim == 3 else xm[None]                     # [R|1, C, batch]
    d_val = dm[:, None, :]                                        # [R, 1, batch]
    bad = ~np.isfinite(x_val) & (d_val != 0) | ~np.isfinite(d_val) & (x_val != 0)
    if bad.any() and float(lr) != 0:
        raise FloatingPointError("pulsed update: the layer inputs or errors contain NaN or Inf (the training "
                                 "diverged?); lower the learning rate")


def _int8_counts(trains: _Trains) -> tuple[Tensor, Tensor]:
    """``(n_up, n_down)`` of :func:`crossbar.update._dense_counts` (the same numbers, as int32) with int8 matmuls.

    The trains become int8 matrices of 0 and ±1 and are multiplied with int32 accumulation (``torch._int_mm``,
    exact for any length; about 4x faster than float32 on a CPU with AVX-512 VNNI, much slower without it).
    When no input is negative (e.g. after a ReLU) the error trains split by sign are stacked, ``[D+ D-]ᵀX``,
    and one product per tile gives ``n_down = D+ᵀX`` and ``n_up = D-ᵀX``; otherwise ``both = |D|ᵀ|X|`` and
    ``signed = (sign(d)·D)ᵀ(sign(x)·X)`` give ``n_down = (both + signed) / 2`` and ``n_up = both - n_down``.
    ``_int_mm`` has no batched form: one call per tile (and product).
    """
    x_bits, d_bits = trains.x_bits, trains.d_bits
    n_r, n_c, batch, n_slots, cols = x_bits.shape
    rows = d_bits.shape[-1]
    tiles, k_len = n_r * n_c, batch * n_slots
    i8 = torch.int8
    # 0/1 trains and ±1/0 signs as int8 before they are multiplied (a quarter of the float traffic)
    x8, d8 = x_bits.to(i8), d_bits.to(i8)
    d_sign = (trains.d_sign[:, None] if trains.d_sign.dim() == 3 else trains.d_sign)[:, :, :, None, :]
    signed_d = d8.mul(d_sign.to(i8)).view(tiles, k_len, rows)                     # ±1 where an error line fires
    if trains.x_sign.numel() == 0 or float(trains.x_sign.min()) >= 0:             # no negative input pulse
        # [D+ D-]: [tiles, K, 2 rows]; its transposed view [tiles, 2 rows, K] is read in place by the int8 matmul
        left = torch.cat((signed_d, signed_d.neg()), dim=2).clamp_(min=0).transpose(1, 2)
        out = torch.empty(tiles, 2 * rows, cols, dtype=torch.int32)
        for a, b, o in zip(left.unbind(0), x8.view(tiles, k_len, cols).unbind(0), out.unbind(0)):
            torch._int_mm(a, b, out=o)
        n_down, n_up = out[:, :rows], out[:, rows:]
    else:
        # Dᵀ: [tiles, rows, K], a transposed view (one row is reshaped instead: its stride would be misread)
        def left_of(t: Tensor) -> Tensor:
            return t.view(tiles, 1, k_len) if rows == 1 else t.transpose(1, 2)

        both, signed = (torch.empty(tiles, rows, cols, dtype=torch.int32) for _ in range(2))
        signed_x = x8.mul(trains.x_sign[:, :, :, None, :].to(i8)).view(tiles, k_len, cols)
        for a, b, o, sa, sb, so in zip(left_of(d8.view(tiles, k_len, rows)).unbind(0),
                                       x8.view(tiles, k_len, cols).unbind(0), both.unbind(0),
                                       left_of(signed_d).unbind(0), signed_x.unbind(0), signed.unbind(0)):
            torch._int_mm(a, b, out=o)                                             # |D|ᵀ|X|
            torch._int_mm(sa, sb, out=so)                                          # (sD)ᵀ(sX)
        n_down = signed.add_(both).bitwise_right_shift_(1)
        n_up = both.sub_(n_down)
    return n_up.reshape(n_r, n_c, rows, cols), n_down.reshape(n_r, n_c, rows, cols)


def _pair_layout(bl: np.ndarray) -> tuple[int, np.ndarray]:
    """The live slots of every tile packed along one axis, from the train lengths ``bl: [tiles, batch]`` (int64).

    Tile ``t`` gets ``K = max_t sum_b bl[t, b]`` pairs: ``bl[t, b]`` pairs of each sample ``b`` in turn, then
    ``K - sum_b bl[t, b]`` silent padding pairs. Returns ``K`` and ``runs: [tiles * (batch + 1)]``, the number of
    pairs of each (tile, sample) and of each tile's padding slot: ``np.repeat(table, runs)`` lays a table of
    :func:`_pair_tables` out pair by pair (``[tiles * K]``). (numpy: a CPU path, where its few small operations
    cost less than torch's.)"""
    tiles, batch = bl.shape
    per_tile = bl.sum(axis=1)
    k = int(per_tile.max()) if tiles else 0
    runs = np.empty((tiles, batch + 1), dtype=np.int64)
    runs[:, :batch] = bl
    runs[:, batch] = k - per_tile
    return k, runs.reshape(-1)


class _PairTables(NamedTuple):
    """Per (tile ``t = r·C + c``, sample ``b`` or the padding slot ``b = batch``), flat ``[R·C·(batch + 1)]``
    (read-only); ``b'`` is ``min(b, batch - 1)``: a padding pair gathers the tile's last sample and stays silent."""

    rows: np.ndarray    # int64 t·batch + b': the row of a per-tile [R·C·batch, line] array
    x_rows: np.ndarray  # int64 c·batch + b': the row of a per-column-block [C·batch, line] array (the inputs)
    d_rows: np.ndarray  # int64 r·batch + b': the row of a per-row-block [R·batch, line] array (the errors)
    live: np.ndarray    # bool b < batch


@functools.lru_cache(maxsize=32)
def _pair_tables(n_r: int, n_c: int, batch: int) -> _PairTables:
    """The :class:`_PairTables` of a grid of ``n_r x n_c`` tiles (a cache)."""
    b = np.minimum(np.arange(batch + 1, dtype=np.int64), batch - 1)[None, None]       # [1, 1, batch + 1]
    r = np.arange(n_r, dtype=np.int64)[:, None, None]
    c = np.arange(n_c, dtype=np.int64)[None, :, None]
    shape = (n_r, n_c, batch + 1)
    tables = _PairTables((r * n_c + c) * batch + b, np.broadcast_to(c * batch + b, shape),
                         np.broadcast_to(r * batch + b, shape),
                         np.broadcast_to(np.arange(batch + 1) < batch, shape))
    out = _PairTables(*(np.ascontiguousarray(t).reshape(-1) for t in tables))
    for t in out:
        t.setflags(write=False)
    return out


def _draw_compact_trains(plan: _TrainPlan, generator: torch.Generator | None) -> _Trains:
    """The trains of :func:`crossbar.update._draw_dense_trains` without the slots that cannot fire.

    Per tile only the ``(sample, slot)`` pairs with ``slot < BL[tile, sample]`` are drawn, packed along the
    batch axis (``K = max over tiles of sum_b BL`` pairs per tile, shorter tiles padded with silent pairs):
    returned as trains of ``K`` samples with one slot each (``x_bits: [R, C, K, 1, cols]``, signs per pair).
    Every line fires independently in every live slot with its probability, as in the dense draw (a different
    random stream); the silent pairs left out carry no coincidences, so the counts have the same distribution.
    """
    n_r, n_c, batch, n_slots, cols, rows = plan.shape
    tiles = n_r * n_c
    if n_slots <= 1:
        return _draw_dense_trains(plan, generator)
    device, dtype = plan.x_abs.device, plan.x_abs.dtype
    k, runs = _pair_layout(plan.bl.numpy().reshape(tiles, batch))
    if k >= batch * n_slots:                                          # nothing to leave out
        return _draw_dense_trains(plan, generator)
    tables = _pair_tables(n_r, n_c, batch)
    laid_out: dict[int, Tensor] = {}

    def pairs(table: np.ndarray) -> Tensor:                          # [tiles*K] (each table repeated once)
        if id(table) not in laid_out:
            laid_out[id(table)] = torch.from_numpy(np.repeat(table, runs))
        return laid_out[id(table)]

    # per tile [R, C, batch, line], per column block [1, C, ...] (inputs), per row block [R, 1, ...] (errors): each
    # gathered as it is, not expanded into a per-tile copy first (where two keys coincide, so do their tables)
    by_blocks = {(n_r, n_c): tables.rows, (1, n_c): tables.x_rows, (n_r, 1): tables.d_rows}

    def per_pair(t: Tensor, n_line: int) -> Tensor:                  # [R|1, C|1, batch, line] -> [tiles*K, line]
        table = by_blocks[(t.shape[0], t.shape[1])]
        return t.reshape(t.shape[0] * t.shape[1] * batch, n_line).index_select(0, pairs(table))

    p_x = per_pair(plan.b[..., None] * plan.x_per_tile(plan.x_abs) if plan.p_x is None else plan.p_x, cols)
    p_d = per_pair(plan.a[..., None] * plan.d_abs[:, None] if plan.p_d is None else plan.p_d, rows)
    x_bits = rng.rand((tiles * k, cols), generator, device=device, dtype=dtype).lt_(p_x)
    d_bits = rng.rand((tiles * k, rows), generator, device=device, dtype=dtype).lt_(p_d)
    d_bits.mul_(pairs(tables.live).view(-1, 1).to(dtype))
    # the signs as int8 when the int8 count reads them (a quarter of the gathered bytes; the same values)
    sign_dtype = torch.int8 if _INT8_MM else dtype
    x_sign = per_pair(plan.x_per_tile(plan.x_sign).to(sign_dtype), cols)
    d_sign = per_pair(plan.d_sign[:, None].to(sign_dtype), rows)
    return _Trains(x_bits.view(n_r, n_c, k, 1, cols), d_bits.view(n_r, n_c, k, 1, rows),
                   x_sign.view(n_r, n_c, k, cols), d_sign.view(n_r, n_c, k, rows))


def _errors_first_pays(plan: _TrainPlan, dense_count: bool, fires: Callable[[], Tensor] | None = None) -> bool:
    """Whether to draw the error trains first and the input trains only in the slots where an error line fired
    (:func:`_draw_errors_first`): when the errors are sparse enough that many live slots (``slot < BL``) are
    expected to fire no error line at all — a CNN's convolutions, whose errors come back through max pooling and
    ReLU, mostly zero, over few channels. Decided from the trains' parameters, never from draws: the expected share
    of silent live slots is at most ``exp(-Σ_i q_i)`` per slot (``q_i``: the error lines' firing probabilities;
    ``1 - q <= exp(-q)``, tight for small ``q``); it must reach :data:`_ERRORS_FIRST_SHARE`, and the input-line
    draws it saves, less the error-line draws it adds, must outweigh its extra operations (the ``_NS_*`` costs).
    (It draws the errors of every slot; the ``dense_count``'s usual trains, :func:`_draw_compact_trains`, only
    those of the live ones.) ``fires``: :func:`_error_fires` of ``plan`` when the caller has it."""
    n_r, n_c, batch, n_slots, cols, rows = plan.shape
    if plan.bl.numel() == 0:
        return False
    bl = plan.bl.numpy()
    slots = float(bl.sum())
    extra = 0.0                       # error lines drawn beyond those of the usual trains
    if dense_count and n_slots > 1:   # (the compact draw, K slots per tile; with one slot it draws every sample)
        extra = float(max(batch * n_slots - _longest_tile_slots(plan), 0) * n_r * n_c * rows)
    if (slots * cols - extra) * _NS_PER_LINE < _NS_ERRORS_FIRST_FIXED:      # too few input draws to save
        return False
    live = bl > 0                                                   # (a sample with BL = 0 may have A = inf)
    q = _error_fires(plan) if fires is None else fires()
    silent = float((np.exp(-q.numpy()[live].astype(np.float64)) * bl[live]).sum())
    return (silent >= _ERRORS_FIRST_SHARE * slots
            and (silent * cols - extra) * _NS_PER_LINE >= _NS_ERRORS_FIRST_FIXED)


class _LiveGroups(NamedTuple):
    """The (tile, sample, slot) groups of an update in which an error line fired, with their trains."""

    groups: Tensor      # [n] int64 increasing flat indices into [R, C, batch, slot]
    x_bits: Tensor      # [n, cols] 0/1 (compute dtype): the input lines that fire in the group's slot
    d_bits: Tensor      # [n, rows] likewise the error lines (at least one per group)
    d_pos: Tensor       # the fired error lines as increasing flat positions in [R, C, batch, slot, rows]


def _draw_errors_first(plan: _TrainPlan, generator: torch.Generator | None) -> _LiveGroups:
    """The trains of :func:`crossbar.update._draw_dense_trains` drawn errors first: the error lines of every slot,
    then the input lines only of the slots in which an error line fired (:func:`_errors_first_pays`).

    A slot without a fired error line carries no coincidence whatever its inputs do, so leaving its inputs out
    keeps the distribution of the counts: each line still fires independently, with its probability, in every slot
    that can count (a different random stream). Only the error lines that can fire (``q > 0``: most errors of a
    convolution are 0) draw a uniform."""
    n_r, n_c, batch, n_slots, cols, rows = plan.shape
    device, dtype = plan.x_abs.device, plan.x_abs.dtype
    p_d = plan.a[..., None] * plan.d_abs[:, None] if plan.p_d is None else plan.p_d      # [R, C, batch, rows]
    if n_slots != 1:                                 # slots beyond a sample's BL stay silent (none: no slot at all)
        slot = torch.arange(n_slots, device=device)
        p_d = p_d[:, :, :, None, :] * (slot < plan.bl[..., None]).to(dtype)[..., None]
    p_d = p_d.reshape(-1)                                            # [R, C, batch, slot, rows] flat
    maybe = flat_nonzero(p_d, positive=True)
    u = rng.rand(maybe.shape, generator, device=device, dtype=dtype)
    d_pos = maybe.index_select(0, flat_nonzero(u.lt_(p_d.index_select(0, maybe))))
    d_group = _div(d_pos, rows)
    groups, inverse = torch.unique_consecutive(d_group, return_inverse=True)   # slots with a fired error
    d_bits = torch.zeros(groups.numel() * rows, dtype=dtype, device=device)
    d_bits = d_bits.index_fill_(0, inverse.mul_(rows).add_(d_pos - d_group * rows), 1.0).view(-1, rows)
    tile_rows = _div(groups, n_slots)                                # t·batch + b
    if plan.p_x is not None:
        p_x = plan.p_x.reshape(-1, cols).index_select(0, tile_rows)
    else:                                                            # inputs per column block, or per tile
        p_x = plan.x_per_tile(plan.x_abs).reshape(-1, cols).index_select(0, _input_rows(plan, tile_rows)).mul_(
            plan.b.reshape(-1).index_select(0, tile_rows)[:, None])
    x_bits = rng.rand((groups.numel(), cols), generator, device=device, dtype=dtype).lt_(p_x)
    return _LiveGroups(groups, x_bits, d_bits, d_pos)


def _positions(groups: Tensor, bits: Tensor) -> Tensor:
    """Flat positions in ``[R, C, batch, slot, line]`` of the ones of ``bits: [n, line]``, the trains of ``groups``
    (increasing, as ``groups``)."""
    line = bits.shape[-1]
    at = flat_nonzero(bits)
    row = _div(at, line)
    return groups.index_select(0, row).mul_(line).add_(at - row * line)


def _errors_first_positions(plan: _TrainPlan, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """:func:`_draw_errors_first` as the sparse count reads trains: ``x_pos``, ``d_pos``, the increasing flat positions
    of the fired lines (as :func:`_draw_sparse_trains`; no input line fires in a slot without a fired error, where
    the inputs are not drawn)."""
    live = _draw_errors_first(plan, generator)
    return _positions(live.groups, live.x_bits), live.d_pos


def _errors_first_trains(plan: _TrainPlan, generator: torch.Generator | None) -> _Trains:
    """:func:`_draw_errors_first` as the dense count reads trains: per tile its slots with a fired error, in order,
    as ``K'`` samples of one slot (``x_bits: [R, C, K', 1, cols]``, signs per slot), ``K'`` the largest number of
    such slots of a tile; a tile with fewer is padded with silent slots."""
    n_r, n_c, batch, n_slots, cols, rows = plan.shape
    tiles = n_r * n_c
    live = _draw_errors_first(plan, generator)
    tile_rows = _div(live.groups, n_slots)                           # t·batch + b
    x_rows = _input_rows(plan, tile_rows)
    d_rows = _error_rows(plan, tile_rows)
    sign_dtype = torch.int8 if _INT8_MM else plan.x_abs.dtype
    x_sign = plan.x_per_tile(plan.x_sign).reshape(-1, cols).index_select(0, x_rows)
    parts = [live.x_bits, live.d_bits, x_sign.to(sign_dtype),
             plan.d_sign.reshape(-1, rows).index_select(0, d_rows).to(sign_dtype)]
    per_tile = np.bincount(_div(tile_rows, batch).numpy(), minlength=tiles)
    k = int(per_tile.max()) if tiles else 0
    if tiles > 1 and int(per_tile.min()) < k:                        # pad the shorter tiles with silent slots
        start = np.cumsum(per_tile) - per_tile
        tile = np.repeat(np.arange(tiles), per_tile)
        dest = torch.from_numpy(tile * k + np.arange(len(tile)) - start[tile])
        parts = [p.new_zeros((tiles * k, p.shape[-1])).index_copy_(0, dest, p) for p in parts]
    x_bits, d_bits, xs, ds = parts
    return _Trains(x_bits.view(n_r, n_c, k, 1, cols), d_bits.view(n_r, n_c, k, 1, rows),
                   xs.view(n_r, n_c, k, cols), ds.view(n_r, n_c, k, rows))


def _packed_counts(trains: _Trains) -> tuple[Tensor, Tensor]:
    """``(n_up, n_down)`` of :func:`crossbar.update._dense_counts` (the same numbers), with *one* batched matmul.

    Every fired line is weighted ``M**neg`` (``neg = 1`` for a negative pulse, ``M = batch*slots + 1`` > any
    count): a coincidence then adds ``M**(neg_d + neg_x)`` to its device, 1 or ``M**2`` for equal signs (down),
    ``M`` for opposite signs (up), so the matmul gives ``S = a + M·n_up + M**2·c`` with ``n_down = a + c`` and
    ``a, n_up, c <= batch*slots < M``, read back digit by digit. When one side never pulses negatively (e.g.
    ReLU inputs) only the other side is weighted and ``S = n_down + M·n_up``. All values are integers (plus a
    half, see :func:`_floor_div`) below ``2**22`` in float32 (``2**51`` in float64), hence exact; larger trains
    fall back to the two-matmul count.
    """
    x_bits, d_bits = trains.x_bits, trains.d_bits
    n_r, n_c, batch, n_slots, cols = x_bits.shape
    rows = d_bits.shape[-1]
    tiles, k_len = n_r * n_c, batch * n_slots
    m = float(k_len + 1)
    x_sign = trains.x_sign                                     # [R|1, C, batch, cols]
    d_sign = trains.d_sign[:, None] if trains.d_sign.dim() == 3 else trains.d_sign   # [R, 1|C, batch, rows]
    weigh_x = x_sign.numel() > 0 and float(x_sign.min()) < 0
    weigh_d = d_sign.numel() > 0 and float(d_sign.min()) < 0
    digits = int(weigh_x) + int(weigh_d)
    limit = 2.0 ** (22 if x_bits.dtype != torch.float64 else 51)
    if m ** (digits + 1) > limit:
        n_up, n_down, _ = _dense_counts(trains, x_bits.new_zeros((), dtype=torch.int64))
        return n_up, n_down
    # weight of a line of sign s (+1, -1; a line of sign 0 never fires): (m + 1)/2 - s (m - 1)/2 = 1 or M
    if weigh_x:
        x_bits = x_bits.mul_(torch.add((m + 1) / 2, x_sign, alpha=-(m - 1) / 2)[:, :, :, None, :])
    if weigh_d:
        d_bits = d_bits.mul_(torch.add((m + 1) / 2, d_sign, alpha=-(m - 1) / 2)[:, :, :, None, :])
    d_flat, x_flat = d_bits.view(tiles, k_len, rows), x_bits.view(tiles, k_len, cols)
    swap = _swap_count_operands(x_bits.device, k_len, rows, cols)
    s = torch.bmm(x_flat.transpose(1, 2), d_flat) if swap else torch.bmm(d_flat.transpose(1, 2), x_flat)
    if digits == 0:                                            # every coincidence has equal signs: all down
        return (torch.zeros(n_r, n_c, rows, cols, dtype=s.dtype, device=s.device),
                _count_layout(s, n_r, n_c, rows, cols, swap))
    high, low = _floor_div(s, m)                               # S = low + M high (elementwise: any layout)
    if digits == 1:
        n_up, n_down = high, low
    else:
        c, n_up = _floor_div(high, m)                          # high = n_up + M c
        n_down = low.add_(c)
    return _count_layout(n_up, n_r, n_c, rows, cols, swap), _count_layout(n_down, n_r, n_c, rows, cols, swap)


def _floor_div(s: Tensor, m: float) -> tuple[Tensor, Tensor]:
    """``(s // m, s % m)`` for integer-valued ``0 <= s < 2**22`` (float32; ``2**51`` for float64) and integer
    ``m >= 2``, exactly; ``s`` is overwritten by the remainder.

    ``(s + 1/2) / m`` lies at least ``1/(2m)`` away from any integer; ``s + 1/2`` is exact and the two roundings
    (of ``1/m`` and of the product) move it by less than ``2**-23 · s/m < 1/(2m)`` (float32), so its floor is
    exact; the remainder ``s - m·q`` is an exact integer. (:func:`_packed_counts` calls it with ``s < M**3`` or
    ``M**2``, at most the limit.)"""
    q = torch.add(s, 0.5).mul_(1.0 / m).floor_()
    return q, s.add_(q, alpha=-m)


def _longest_tile_slots(plan: _TrainPlan) -> int:
    """The largest number of live slots of a tile, ``max_t Σ_b BL[t, b]`` (numpy: a cheaper host read here)."""
    n_r, n_c, batch = plan.bl.shape
    return int(plan.bl.numpy().reshape(n_r * n_c, batch).sum(axis=1).max())


def _error_fires(plan: _TrainPlan) -> Tensor:
    """``[R, C, batch]``: the expected number of error lines that fire in a live slot of each (tile, sample),
    ``Σ_i q_i``."""
    if plan.p_d is None:
        return plan.a * plan.d_abs.sum(dim=-1)[:, None]
    return plan.p_d.clamp(0.0, 1.0).sum(dim=-1)


def _lazy_error_fires(plan: _TrainPlan) -> Callable[[], Tensor]:
    """:func:`_error_fires` of ``plan`` computed on the first call and then returned as is (``[R, C, batch]``). A
    plain closure: ``functools.cache`` of a ``functools.partial`` costs several µs to build, on every update."""
    box: list[Tensor] = []

    def fires() -> Tensor:
        if not box:
            box.append(_error_fires(plan))
        return box[0]
    return fires


def _expected_pairs(plan: _TrainPlan, fires: Callable[[], Tensor] | None = None) -> float:
    """Expected number of coincidences: the sum over (tile, sample) of active slots x E[fired inputs per slot]
    x E[fired errors per slot] (``fires``: :func:`_error_fires` of ``plan`` when the caller has it)."""
    if plan.bl.numel() == 0:
        return 0.0
    fire_x = plan.b * plan.x_abs.sum(dim=-1)[None] if plan.p_x is None else plan.p_x.clamp(0.0, 1.0).sum(dim=-1)
    return float((fire_x * (_error_fires(plan) if fires is None else fires()) * plan.bl).sum())


def _sparse_is_cheaper(plan: _TrainPlan, n_pairs: float, subset_pulses: float | None = None) -> bool:
    """Whether counting ``n_pairs`` coincidences one by one beats the dense count (rough cost model, see
    :func:`cpu_pulse_counts` for ``subset_pulses``). The dense count multiplies the live slots only
    (:func:`_draw_compact_trains`): at most ``batch * n_slots``, the longest tile's sum of the samples' BL."""
    n_r, n_c, batch, n_slots, cols, rows = plan.shape
    devices = n_r * n_c * rows * cols
    slots = batch * n_slots
    if n_slots > 1 and plan.bl.numel() > 0:
        slots = min(slots, _longest_tile_slots(plan))
    per_device = _NS_PER_MAC * slots + _NS_PER_DEVICE
    if subset_pulses is not None and n_pairs <= subset_pulses * devices:
        per_device += _NS_PER_SUBSET_DEVICE
    return _NS_SPARSE_FIXED + n_pairs * _NS_PER_PAIR < devices * per_device


def _geometric_is_cheaper(plan: _TrainPlan, p_bar_x: float, p_bar_d: float) -> bool:
    """Whether drawing the trains as positions beats one uniform per line and slot (rough cost model)."""
    n_r, n_c, batch, n_slots, cols, rows = plan.shape
    groups = n_r * n_c * batch * n_slots
    candidates = groups * (cols * p_bar_x + rows * p_bar_d)
    return _NS_GEOMETRIC_FIXED + candidates * _NS_PER_CANDIDATE < groups * (cols + rows) * _NS_PER_LINE


def _max_probabilities(plan: _TrainPlan) -> tuple[float, float] | None:
    """Largest firing probability of the input and of the error lines in live slots (``BL > 0``), or ``None``
    when the probabilities are discretized or one exceeds ``_GEOMETRIC_MAX_P``. They are the same float
    products as the per-line probabilities, hence bounds on every line."""
    if plan.p_x is not None or plan.bl.numel() == 0:
        return None
    live = plan.bl > 0
    p_bar_x = float((plan.b * plan.x_max[None] * live).max())
    p_bar_d = float((plan.a * plan.d_max[:, None] * live).max())
    if not (p_bar_x <= _GEOMETRIC_MAX_P and p_bar_d <= _GEOMETRIC_MAX_P):   # also NaN
        return None
    return p_bar_x, p_bar_d


def _bernoulli_positions(n_pos: int, p_bar: float, prob_at: Callable[[Tensor], Tensor],
                         generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Increasing positions in ``[0, n_pos)`` where independent Bernoulli trials of probability ``prob_at(pos)``
    succeed, for probabilities all ``<= p_bar`` (``0 < p_bar < 1``). Cost ``O(n_pos * p_bar)``.

    Candidates are the successes of Bernoulli(``p_bar``) trials, generated by their geometric gaps
    (``1 + floor(log(1 - u) / log(1 - p_bar))``); each candidate is kept with probability
    ``prob_at(pos) / p_bar``, so position ``pos`` succeeds with probability ``prob_at(pos)``, independently.
    """
    if n_pos == 0 or p_bar <= 0:
        return torch.zeros(0, dtype=torch.int64, device=device)
    inv_log_q = 1.0 / math.log1p(-p_bar)
    chunks = []
    last = -1.0                                             # position of the last candidate so far
    while last < n_pos:                                     # almost always one pass (6-sigma margin)
        expected = (n_pos - 1 - last) * p_bar
        n = int(expected + _MARGIN_SIGMAS * math.sqrt(expected) + _MARGIN_EXTRA)
        u = rng.rand((n,), generator, device=device, dtype=torch.float32).to(torch.float64)
        gaps = torch.log1p(u.neg_()).mul_(inv_log_q).floor_().add_(1.0)     # >= 1, exact integers
        pos = torch.cumsum(gaps, 0).add_(last)
        chunks.append(pos)
        last = float(pos[-1])
    cand = torch.cat(chunks) if len(chunks) > 1 else chunks[0]
    cand = cand[: int(torch.searchsorted(cand, float(n_pos)))].to(torch.int64)   # increasing: cut at n_pos
    p = prob_at(cand)
    keep = rng.rand(cand.shape, generator, device=device, dtype=p.dtype).mul_(p_bar) < p
    return cand.index_select(0, flat_nonzero(keep))           # (numpy finds them: a bool index is slow here)


def _draw_sparse_trains(plan: _TrainPlan, p_bar_x: float, p_bar_d: float, generator: torch.Generator | None
                        ) -> tuple[Tensor, Tensor]:
    """Positions of the fired lines in ``[R, C, batch, slot, cols]`` / ``[..., rows]`` (flat, increasing).

    ``p_bar_x``, ``p_bar_d``: bounds on the firing probabilities (:func:`_max_probabilities`). Slots beyond
    a sample's BL carry no coincidences: there both trains stay silent (the dense draw silences only the
    errors; the counts are the same). With one slot, BL = 0 only where no coincidence is possible.
    """
    n_r, n_c, batch, n_slots, cols, rows = plan.shape
    device = plan.x_abs.device
    b_flat = plan.b.reshape(-1)                                  # [(r, c, b)]
    a_flat = plan.a.reshape(-1)
    bl_flat = plan.bl.reshape(-1)
    x_abs = plan.x_abs.reshape(-1)                               # [(c, b, j)] (per row block: [(r, c, b, j)])
    d_abs = plan.d_abs.reshape(-1)                               # [(r, b, i)]

    def p_x(pos: Tensor) -> Tensor:                              # pos = ((rcb * slots + s) * cols + j)
        g = _div(pos, cols)
        rcb = _div(g, n_slots)
        p = b_flat.index_select(0, rcb) * x_abs.index_select(0, _input_rows(plan, rcb) * cols + (pos - g * cols))
        return p if n_slots == 1 else p.masked_fill_((g - rcb * n_slots) >= bl_flat.index_select(0, rcb), 0.0)

    def p_d(pos: Tensor) -> Tensor:                              # pos = ((rcb * slots + s) * rows + i)
        g = _div(pos, rows)
        rcb = _div(g, n_slots)
        p = a_flat.index_select(0, rcb) * d_abs.index_select(0, _error_rows(plan, rcb) * rows + (pos - g * rows))
        return p if n_slots == 1 else p.masked_fill_((g - rcb * n_slots) >= bl_flat.index_select(0, rcb), 0.0)

    n_groups = n_r * n_c * batch * n_slots
    x_pos = _bernoulli_positions(n_groups * cols, p_bar_x, p_x, generator, device)
    d_pos = _bernoulli_positions(n_groups * rows, p_bar_d, p_d, generator, device)
    return x_pos, d_pos


def _bits_from_positions(plan: _TrainPlan, x_pos: Tensor, d_pos: Tensor) -> _Trains:
    """The dense 0/1 trains with ones at the given flat positions (the inverse of ``nonzero``)."""
    n_r, n_c, batch, n_slots, cols, rows = plan.shape
    dtype, device = plan.x_abs.dtype, plan.x_abs.device
    x_bits = torch.zeros(n_r * n_c * batch * n_slots * cols, dtype=dtype, device=device).index_fill_(0, x_pos, 1.0)
    d_bits = torch.zeros(n_r * n_c * batch * n_slots * rows, dtype=dtype, device=device).index_fill_(0, d_pos, 1.0)
    return _Trains(x_bits.view(n_r, n_c, batch, n_slots, cols), d_bits.view(n_r, n_c, batch, n_slots, rows),
                   plan.x_per_tile(plan.x_sign), plan.d_sign)


def _sparse_counts(plan: _TrainPlan, x_pos: Tensor, d_pos: Tensor, fired_x: Tensor, fired_d: Tensor,
                   n_pairs: int) -> tuple[Tensor, Tensor, Tensor]:
    """The coincidence counts of the devices with pulses, pair by pair (same numbers as the dense count).

    Args:
        plan: the trains' parameters (shape, signs).
        x_pos, d_pos: increasing flat positions of the fired lines (see :func:`_draw_sparse_trains`).
        fired_x, fired_d: ``[R*C*batch*slot]`` int64 numbers of fired lines per (tile, sample, slot).
        n_pairs: ``sum(fired_x * fired_d)``, the number of coincidences.
    Returns:
        ``index`` ``[n]`` (int64, increasing flat indices into ``[R, C, rows, cols]``) and ``n_up``,
        ``n_down`` ``[n]`` (compute dtype) of the devices with at least one pulse.
    """
    n_r, n_c, batch, n_slots, cols, rows = plan.shape
    device, dtype = x_pos.device, plan.x_abs.dtype
    if n_pairs == 0:
        empty = torch.zeros(0, device=device, dtype=dtype)
        return torch.zeros(0, device=device, dtype=torch.int64), empty, empty.clone()
    gx = _div(x_pos, cols)                                   # group (tile, sample, slot) of each fired line
    jx = x_pos - gx * cols
    gd = _div(d_pos, rows)
    i_d = d_pos - gd * rows
    # Each fired line's part of the pair key 4·device + (neg_d + neg_x), device = (t·rows + i)·cols + j, with
    # neg_* = 1 for a negative pulse: neg_d + neg_x is 1 for opposite signs (up), 0 or 2 for equal signs (down).
    rcb_x = _div(gx, n_slots)
    rcb_d = _div(gd, n_slots)
    t_d = _div(rcb_d, batch)
    rb_d = _error_rows(plan, rcb_d)
    neg_x = plan.x_sign.reshape(-1).index_select(0, _input_rows(plan, rcb_x) * cols + jx) < 0
    neg_d = plan.d_sign.reshape(-1).index_select(0, rb_d * rows + i_d) < 0
    x_key = 4 * jx + neg_x
    d_key = 4 * cols * (t_d * rows + i_d) + neg_d
    # Pairs, d line by d line: fired d line k (group g) pairs with the fired_x[g] x lines of g, which start
    # at start_x[g]; pair p of the run of k is x line start_x[g] + (p - run_start[k]).
    reps = fired_x.index_select(0, gd)                       # pairs of each fired d line
    d_of_pair = torch.repeat_interleave(reps, output_size=n_pairs)
    base = (torch.cumsum(fired_x, 0) - fired_x).index_select(0, gd) - (torch.cumsum(reps, 0) - reps)
    x_of_pair = base.index_select(0, d_of_pair) + torch.arange(n_pairs, device=device)
    key = d_key.index_select(0, d_of_pair) + x_key.index_select(0, x_of_pair)
    keys, counts = torch.unique_consecutive(_sort(key), return_counts=True)
    up = (keys & 3) == 1
    index, inverse = torch.unique_consecutive(keys >> 2, return_inverse=True)
    counts = counts.to(dtype)
    n_up = torch.zeros(index.shape[0], device=device, dtype=dtype).index_add_(0, inverse, counts * up)
    n_down = torch.zeros(index.shape[0], device=device, dtype=dtype).index_add_(0, inverse, counts * ~up)
    return index, n_up, n_down
