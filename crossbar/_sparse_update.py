"""CPU fast path of the pulsed update: sparse pulse trains and coincidences, same distribution as ``update``.

:func:`crossbar.update.pulse_counts` draws one uniform per line and slot and counts coincidences with two
dense batched matmuls, which costs ``O(devices x slots)`` whatever the learning rate. With the short trains
and small firing probabilities that update management produces for small gradients, few lines fire and
few devices get pulses; on the CPU (where host reads are free) :func:`cpu_pulse_counts` then

* draws the trains as the *positions* of the fired lines (``O(fired lines)``, see :func:`_bernoulli_positions`)
  when every firing probability is small, else draws them densely as ``pulse_counts`` does;
* counts the coincidences pair by pair (``O(coincidences)``) when that is cheaper than the matmuls
  (:func:`_sparse_is_cheaper`, a rough cost model), returning only the devices with pulses, else
  falls back to the dense count on the same trains.

Every path gives exactly the same distribution as ``pulse_counts``: each line fires independently in each
slot with its probability (the random stream differs); the dense and the sparse count of the same trains
are identical numbers.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch
from torch import Tensor

from crossbar.update import (
    UpdateParameters,
    _dense_counts,
    _draw_dense_trains,
    _plan_trains,
    _TrainPlan,
    _Trains,
)

__all__ = ["CpuCounts", "cpu_pulse_counts"]

_GEOMETRIC_MAX_P = 0.25
"""Largest firing probability for which the trains are drawn as positions (geometric gaps + thinning)."""

# Rough single-core costs (ns) of the two ways to count the coincidences of the same trains.
_NS_PER_MAC = 0.045      # dense: two float32 batched matmuls, per device and slot
_NS_PER_DEVICE = 4.0     # dense: passes over the device arrays (counts, touched devices, update)
_NS_PER_PAIR = 40.0      # sparse: enumerating, sorting and reducing one coincidence


class CpuCounts(NamedTuple):
    """Pulse counts of one update (see :func:`cpu_pulse_counts`).

    Attributes:
        index: ``None`` when ``n_up``/``n_down`` are dense ``[R, C, rows, cols]``; else ``[n]`` int64
            increasing flat indices into ``[R, C, rows, cols]`` of the devices with at least one pulse, and
            ``n_up``/``n_down`` are their ``[n]`` counts.
        n_up, n_down: potentiating / depressing pulses (integer-valued, compute dtype).
        total: 0-d int64, the number of device pulses (coincidences).
    """

    index: Tensor | None
    n_up: Tensor
    n_down: Tensor
    total: Tensor


def cpu_pulse_counts(x: Tensor, d: Tensor, lr: float | Tensor, dw_min: float | Tensor, cfg: UpdateParameters,
                     generator: torch.Generator | None) -> CpuCounts:
    """The counts of :func:`crossbar.update.pulse_counts` (``trim_slots=True``), computed sparsely when cheaper.

    Args: as ``pulse_counts`` (``x: [batch, C, cols]``, ``d: [batch, R, rows]``; CPU tensors).
    Returns: :class:`CpuCounts`, dense or for the devices with pulses only.
    """
    plan = _plan_trains(x, d, lr, dw_min, cfg, generator, trim_slots=True)
    n_r, n_c, batch, n_slots, cols, rows = plan.shape
    groups = n_r * n_c * batch * n_slots
    trains: _Trains | None = None
    positions = _draw_sparse_trains(plan, generator)
    if positions is None:
        trains = _draw_dense_trains(plan, generator)
        fired_x, fired_d = (f.to(torch.int64) for f in trains.fired())
    else:
        fired_x = torch.bincount(torch.div(positions[0], cols, rounding_mode="floor"), minlength=groups)
        fired_d = torch.bincount(torch.div(positions[1], rows, rounding_mode="floor"), minlength=groups)
    total = (fired_x * fired_d).sum()
    n_pairs = int(total)
    if _sparse_is_cheaper(plan, n_pairs):
        if positions is None:
            assert trains is not None
            positions = (trains.x_bits.view(-1).nonzero().squeeze(1), trains.d_bits.view(-1).nonzero().squeeze(1))
        index, n_up, n_down = _sparse_counts(plan, positions[0], positions[1], fired_x, fired_d, n_pairs)
        return CpuCounts(index, n_up, n_down, total)
    if trains is None:
        trains = _bits_from_positions(plan, positions[0], positions[1])
    n_up, n_down, _ = _dense_counts(trains, total)
    return CpuCounts(None, n_up, n_down, total)


def _sparse_is_cheaper(plan: _TrainPlan, n_pairs: int) -> bool:
    """Whether counting ``n_pairs`` coincidences one by one beats the dense count (rough cost model)."""
    n_r, n_c, batch, n_slots, cols, rows = plan.shape
    devices = n_r * n_c * rows * cols
    return n_pairs * _NS_PER_PAIR < devices * (_NS_PER_MAC * batch * n_slots + _NS_PER_DEVICE)


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
    log_q = math.log1p(-p_bar)
    chunks = []
    last = -1.0                                             # position of the last candidate so far
    while last < n_pos:                                     # almost always one pass (6-sigma margin)
        expected = (n_pos - 1 - last) * p_bar
        n = int(expected + 6.0 * math.sqrt(expected) + 64)
        u = torch.rand(n, generator=generator, device=device, dtype=torch.float32).to(torch.float64)
        gaps = torch.floor_divide(torch.log1p(-u), log_q).add_(1.0)
        pos = torch.cumsum(gaps, 0).add_(last)
        chunks.append(pos)
        last = float(pos[-1])
    cand = torch.cat(chunks) if len(chunks) > 1 else chunks[0]
    cand = cand[cand < n_pos].to(torch.int64)
    p = prob_at(cand)
    keep = torch.rand(cand.shape, generator=generator, device=device, dtype=p.dtype).mul_(p_bar) < p
    return cand[keep]


def _draw_sparse_trains(plan: _TrainPlan, generator: torch.Generator | None) -> tuple[Tensor, Tensor] | None:
    """Positions of the fired lines in ``[R, C, batch, slot, cols]`` / ``[..., rows]`` (flat, increasing), or
    ``None`` when some firing probability exceeds ``_GEOMETRIC_MAX_P`` or is discretized (dense draws then)."""
    if plan.p_x is not None:
        return None
    n_r, n_c, batch, n_slots, cols, rows = plan.shape
    if n_r * n_c * batch == 0:
        return None
    device = plan.x_abs.device
    b_flat = plan.b.reshape(-1)                                  # [(r, c, b)]
    a_flat = plan.a.reshape(-1)
    bl_flat = plan.bl.reshape(-1)
    x_abs = plan.x_abs.reshape(-1)                               # [(c, b, j)]
    d_abs = plan.d_abs.reshape(-1)                               # [(r, b, i)]
    # Slots beyond a sample's BL carry no coincidences: there both trains are left silent (the dense draw
    # silences only the errors; the counts are the same). Largest probabilities: the same float products as
    # the per-line ones, hence bounds on every line.
    live = plan.bl > 0
    p_bar_x = float((plan.b * plan.x_abs.amax(dim=-1)[None] * live).max())
    p_bar_d = float((plan.a * plan.d_abs.amax(dim=-1)[:, None] * live).max())
    if max(p_bar_x, p_bar_d) > _GEOMETRIC_MAX_P:
        return None

    def p_x(pos: Tensor) -> Tensor:                              # pos = ((rcb * slots + s) * cols + j)
        g = torch.div(pos, cols, rounding_mode="floor")
        rcb = torch.div(g, n_slots, rounding_mode="floor")
        cb = rcb % (n_c * batch)
        p = b_flat[rcb] * x_abs[cb * cols + (pos - g * cols)]
        return p.masked_fill_((g - rcb * n_slots) >= bl_flat[rcb], 0.0)

    def p_d(pos: Tensor) -> Tensor:                              # pos = ((rcb * slots + s) * rows + i)
        g = torch.div(pos, rows, rounding_mode="floor")
        rcb = torch.div(g, n_slots, rounding_mode="floor")
        rb = torch.div(rcb, n_c * batch, rounding_mode="floor") * batch + rcb % batch
        p = a_flat[rcb] * d_abs[rb * rows + (pos - g * rows)]
        return p.masked_fill_((g - rcb * n_slots) >= bl_flat[rcb], 0.0)   # slots beyond the sample's BL

    n_groups = n_r * n_c * batch * n_slots
    x_pos = _bernoulli_positions(n_groups * cols, p_bar_x, p_x, generator, device)
    d_pos = _bernoulli_positions(n_groups * rows, p_bar_d, p_d, generator, device)
    return x_pos, d_pos


def _bits_from_positions(plan: _TrainPlan, x_pos: Tensor, d_pos: Tensor) -> _Trains:
    """The dense 0/1 trains with ones at the given flat positions."""
    n_r, n_c, batch, n_slots, cols, rows = plan.shape
    dtype, device = plan.x_abs.dtype, plan.x_abs.device
    x_bits = torch.zeros(n_r * n_c * batch * n_slots * cols, dtype=dtype, device=device).index_fill_(0, x_pos, 1.0)
    d_bits = torch.zeros(n_r * n_c * batch * n_slots * rows, dtype=dtype, device=device).index_fill_(0, d_pos, 1.0)
    return _Trains(x_bits.view(n_r, n_c, batch, n_slots, cols), d_bits.view(n_r, n_c, batch, n_slots, rows),
                   plan.x_sign, plan.d_sign)


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
    gx = torch.div(x_pos, cols, rounding_mode="floor")
    jx = x_pos - gx * cols
    gd = torch.div(d_pos, rows, rounding_mode="floor")
    i_d = d_pos - gd * rows
    # Each fired line's part of the pair key 3·device + (neg_d + neg_x), device = (t·rows + i)·cols + j, with
    # neg_* = 1 for a negative pulse: neg_d + neg_x is 1 for opposite signs (up), 0 or 2 for equal signs (down).
    rcb_x = torch.div(gx, n_slots, rounding_mode="floor")
    rcb_d = torch.div(gd, n_slots, rounding_mode="floor")
    t_d = torch.div(rcb_d, batch, rounding_mode="floor")
    rb_d = torch.div(t_d, n_c, rounding_mode="floor") * batch + rcb_d % batch
    neg_x = plan.x_sign.reshape(-1)[(rcb_x % (n_c * batch)) * cols + jx] < 0
    neg_d = plan.d_sign.reshape(-1)[rb_d * rows + i_d] < 0
    x_key = 3 * jx + neg_x
    d_key = 3 * cols * (t_d * rows + i_d) + neg_d
    # pair o of group g is (d line o // fired_x[g], x line o % fired_x[g]) of that group
    per_group = fired_x * fired_d
    group = torch.repeat_interleave(per_group, output_size=n_pairs)
    o = torch.arange(n_pairs, device=device) - (torch.cumsum(per_group, 0) - per_group)[group]
    nx = fired_x[group]
    q = torch.div(o, nx, rounding_mode="floor")
    key = d_key[(torch.cumsum(fired_d, 0) - fired_d)[group] + q] \
        + x_key[(torch.cumsum(fired_x, 0) - fired_x)[group] + o - q * nx]
    keys, counts = torch.unique(key, sorted=True, return_counts=True)
    dev = torch.div(keys, 3, rounding_mode="floor")
    up = (keys - 3 * dev) == 1
    index, inverse = torch.unique_consecutive(dev, return_inverse=True)
    counts = counts.to(dtype)
    n_up = torch.zeros(index.shape[0], device=device, dtype=dtype).index_add_(0, inverse, counts * up)
    n_down = torch.zeros(index.shape[0], device=device, dtype=dtype).index_add_(0, inverse, counts * ~up)
    return index, n_up, n_down
