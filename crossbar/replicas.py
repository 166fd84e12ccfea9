"""Replicas: ``E`` independent copies of one layer (same shapes, own seeds) simulated in one batched pass.

:class:`ReplicaTileArray` holds ``E`` replicas of an ``[out, in]`` weight matrix on an ``R x C`` tile grid
(``R``, ``C`` of one replica) by folding the replicas into the tile-row dimension: the states are
``weight_tiles: [E*R*C, rows, cols]`` (replica-major: replica ``e``'s tiles are ``e*R*C .. (e+1)*R*C - 1``, in
:class:`~crossbar.mapping.TileGrid` order), seen by the MVMs as a grid of ``E*R`` tile rows. Forward, backward,
update and the importance reads are then one call of the engine's tile code for all replicas
(:func:`crossbar.periphery._analog_mvm_blocks`, :func:`crossbar.update._plan_trains` /
``_draw_dense_trains`` / ``_dense_counts`` with per-row-block inputs), so a GPU is kept busy by small networks.

Exactness: all noise comes from a :class:`devices.rng.CounterRNG` with one stream per replica, and every random
tensor of the replica path has the replicas on its leading dimension (``E*R`` tile rows or ``E*R*C`` tiles).
Replica ``e`` therefore draws exactly the numbers it would draw alone: an array of ``E`` replicas with seeds
``s_1..s_E`` gives the same forward / backward / update results as ``E`` arrays of one replica with those seeds
(bit for bit on the same machine and dtype). The data-dependent shortcuts of :class:`~crossbar.tiles.TileArray`
on the CPU (first bound-management round alone, sparse pulse trains, sparse device update) would make the
stream depend on all replicas' data, so the replica path never consumes random numbers data-dependently: on GPUs
it takes the dense, sync-free route; on the CPU (where host reads are free) it computes only what can matter but
addresses every number by its position in the dense draw (:meth:`devices.rng.CounterRNG.uniform_runs` /
:meth:`~devices.rng.CounterRNG.at`; in the MVMs :class:`~devices.rng.WindowedDraws`: bound management's round 0
alone unless a vector saturates, see :func:`crossbar.periphery._round_zero_exact`), so it gets the dense route's
numbers and counts: the pulse trains hold only the slots each sample uses (``slot < BL``, packed per tile), and the
device update runs in cache-sized blocks (only the pulsed devices when few are). The numbers differ from a
``TileArray`` with the same seed (a different generator); the distributions agree.

:class:`ReplicaLinear` is the bias-free ``nn.Linear`` of ``E`` replicas (``x: [E, B, in] -> [E, B, out]``), an
analog module like :class:`~crossbar.modules.AnalogLinear`: the pulsed in-memory update is applied at
``analog_update`` (the optimizer step: :class:`~crossbar.optim.AnalogSGD` or :func:`~crossbar.optim.analog_step`).
"""

from __future__ import annotations

import numbers
from typing import Any, Sequence

import torch
from torch import Tensor

from crossbar.config import CrossbarConfig, check_tile_sums
from crossbar.mapping import TileGrid, _check_size
from crossbar.modules import AnalogModuleBase
from crossbar.periphery import MVMResult, _analog_mvm_blocks
from crossbar.tiles import TileState, check_finite_weights, check_state_device, device_record, pair_offset
from crossbar.update import _check_update_lr, _dense_counts, _draw_dense_trains, _plan_trains, _TrainPlan, _Trains
from devices import DeviceParams
from devices.host import flat_nonzero, host_reads_free
from devices.rng import CounterRNG, IndexedDraws, check_seeds

_BLOCK = 480 * 64
"""Devices per block of the CPU device update: a multiple of 64 (SIMD), below torch's parallel grain size
(32768: one thread per op, so no E-dependent thread split) and small enough for the temporaries to stay in L2.
With one torch thread (nothing is split) blocks may be ``_BLOCK_1T`` long (fewer Python calls)."""

_BLOCK_1T = 1 << 16


def _block_size() -> int:
    """Block length for the CPU device update (see ``_BLOCK``)."""
    return _BLOCK_1T if torch.get_num_threads() == 1 else _BLOCK


_DENSE_FRACTION = 0.25
"""CPU device update: above this fraction of devices with pulses, compute all devices in place (no gather)."""

_TRAIN_BUDGET = 1 << 19
"""Numbers per tile group of the CPU pulse trains (``tiles x K x (cols + rows)``): small enough to stay in cache."""


def _compact_counts(plan: _TrainPlan, generator: CounterRNG) -> tuple[Tensor, Tensor, Tensor]:
    """``(n_up, n_down, total)`` of the plan's trains (as :func:`~crossbar.update._dense_counts` of the dense
    trains of all ``n_slots`` slots), drawing only the slots that can fire (CPU: host reads).

    Per tile, only the ``(sample, slot)`` pairs with ``slot < BL[tile, sample]`` are drawn, packed along the batch
    axis (``K`` pairs per tile, shorter tiles padded with silent pairs), for groups of tiles of about
    ``_TRAIN_BUDGET`` numbers at a time. Every number is the one the dense draw has at that line and slot
    (:meth:`devices.rng.CounterRNG.uniform_runs`, the group's draws made at the dense draws' counter positions;
    the generator ends where the dense draws leave it), and the pairs left out are those the dense trains
    silence (``slot >= BL``; ``BL = 0`` only where no input or no error line can fire), so the counts are exactly
    the dense trains' counts (a sample with a NaN input or error has ``BL < 0``, cast from NaN: no pair, as the
    dense trains silence it, so a diverging replica does not move the others' pairs). ``n_up``, ``n_down``:
    ``[R, C, rows, cols]``; ``total``: 0-d.
    """
    n_r, n_c, batch, n_slots, cols, rows = plan.shape
    dev, dtype = plan.x_abs.device, plan.x_abs.dtype
    tiles = n_r * n_c
    x_shape, d_shape = (n_r, n_c, batch, n_slots, cols), (n_r, n_c, batch, n_slots, rows)

    def rows_of(t: Tensor, n_line: int) -> Tensor:                               # [R|1, C, batch, line] rows
        return t.expand(n_r, n_c, batch, n_line).reshape(tiles * batch, n_line)

    p_x = rows_of(plan.b[..., None] * plan.x_per_tile(plan.x_abs) if plan.p_x is None else plan.p_x, cols)
    p_d = rows_of(plan.a[..., None] * plan.d_abs[:, None] if plan.p_d is None else plan.p_d, rows)
    s_x = rows_of(plan.x_per_tile(plan.x_sign), cols)
    s_d = rows_of(plan.d_sign[:, None], rows)
    bl = plan.bl.reshape(tiles, batch).clamp_min(0)   # a NaN input or error casts to BL < 0: silent, as in dense
    n_used = max(int(bl.max()), 1) if bl.numel() else 1
    t_idx, b_idx, s_idx = (torch.arange(n_used, device=dev) < bl[..., None]).nonzero(as_tuple=True)  # t, b, s
    per_tile = bl.sum(dim=1)
    first = torch.cumsum(per_tile, 0) - per_tile                                 # first pair of each tile
    counts = per_tile.tolist()
    bounds = [0] + torch.cumsum(per_tile, 0).tolist()                           # pairs of tiles < t: bounds[t]
    group = max(1, _TRAIN_BUDGET // (max(max(counts, default=1), 1) * (cols + rows)))   # tiles per group
    c0 = generator.counter
    n_up, n_down, totals = [], [], []
    for t0 in range(0, tiles, group):
        t1 = min(t0 + group, tiles)
        k = max(max(counts[t0:t1]), 1)
        lo, hi = bounds[t0], bounds[t1]
        t, b, s = t_idx[lo:hi], b_idx[lo:hi], s_idx[lo:hi]
        pair = (t - t0) * k + torch.arange(lo, hi, device=dev) - first.index_select(0, t)
        sample = (torch.arange(t0, t1, device=dev) * batch).repeat_interleave(k)   # [G*K]; pads: sample 0
        sample.index_copy_(0, pair, t * batch + b)
        row = sample * n_slots                                                   # slot 0 of that (tile, sample)
        row.index_copy_(0, pair, row.index_select(0, pair) + s)
        live = torch.zeros(sample.numel(), device=dev, dtype=dtype).index_fill_(0, pair, 1.0)
        generator.counter = c0
        x_bits = generator.uniform_runs(x_shape, row * cols, cols, dtype).lt_(p_x.index_select(0, sample))
        d_bits = generator.uniform_runs(d_shape, row * rows, rows, dtype).lt_(p_d.index_select(0, sample))
        d_bits.mul_(live[:, None])
        g = t1 - t0
        trains = _Trains(x_bits.view(g, 1, k, 1, cols), d_bits.view(g, 1, k, 1, rows),
                         s_x.index_select(0, sample).view(g, 1, k, cols),
                         s_d.index_select(0, sample).view(g, 1, k, rows))
        up, down, total = _dense_counts(trains)
        n_up.append(up)
        n_down.append(down)
        totals.append(total)
    shape = (n_r, n_c, rows, cols)
    return torch.cat(n_up).view(shape), torch.cat(n_down).view(shape), torch.stack(totals).sum()


def _block_of(cut: tuple[int, int], per: int) -> tuple[int, int, int, int]:
    """A flat cut of :func:`_dense_blocks` as a ``(r0, r1, s, e)`` block of :meth:`devices.rng.CounterRNG.at`."""
    a, b = cut
    r0 = a // per
    if b - r0 * per <= per:
        return r0, r0 + 1, a - r0 * per, b - r0 * per
    return r0, b // per, 0, per


def _dense_blocks(n_replicas: int, per: int, size: int) -> list[tuple[int, int]]:
    """Flat ``(start, stop)`` cuts of ``n_replicas`` blocks of ``per`` (a multiple of 64) states, at most
    ``size`` long, none crossing a replica unless it holds whole replicas: ``per >= size`` -> pieces of one
    replica; else groups of ``size // per`` replicas."""
    if per >= size:
        return [(r * per + s, r * per + min(s + size, per)) for r in range(n_replicas) for s in range(0, per, size)]
    k = size // per
    return [(r * per, min(r + k, n_replicas) * per) for r in range(0, n_replicas, k)]

__all__ = ["ReplicaTileArray", "ReplicaLinear"]


class ReplicaTileArray(TileState):
    """``E`` replicas of a logical ``[out_features, in_features]`` weight matrix, simulated together.

    Args:
        seeds: one integer seed per replica (``E = len(seeds)``, at least one; each in
            :data:`~devices.base.COUNTER_SEED_RANGE`): replica ``e``'s device-to-device parameters and all its
            noise come from a counter stream keyed by ``seeds[e]`` only.
        out_features, in_features: logical matrix shape of one replica.
        config: crossbar configuration shared by all replicas (default :class:`CrossbarConfig` ()).
        device, dtype: where the states live (default CPU / ``torch.get_default_dtype()``).

    State (``nn.Module`` buffers): ``weight_tiles`` ``[E*T, rows, cols]`` (``T = R*C`` tiles per replica),
    ``apparent_tiles`` (with write noise), ``dp_*`` sampled device parameters, ``counter_*`` 0-d int64 totals
    over all replicas (each replica did ``counter / E`` of it). The counter generator's position is saved in
    ``_extra_state``, with the device model: as a :class:`~crossbar.TileArray`'s, the state loads only into an array
    of the same device and field values (the periphery and the update settings may differ), and only into one of the
    same replica seeds; either is refused before anything is copied.
    """

    generator: CounterRNG

    def __init__(self, seeds: Sequence[int], out_features: int, in_features: int,
                 config: CrossbarConfig | None = None, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        cfg = CrossbarConfig() if config is None else config
        if not isinstance(cfg, CrossbarConfig):
            raise ValueError(f"ReplicaTileArray.config must be a crossbar.CrossbarConfig, got {cfg!r}")
        seeds = check_seeds("ReplicaTileArray", seeds)
        self.config = cfg
        self.seeds = seeds
        self.grid = TileGrid(_check_size("ReplicaTileArray", "out_features", out_features),
                             _check_size("ReplicaTileArray", "in_features", in_features), cfg.tile_rows, cfg.tile_cols)
        check_tile_sums(cfg, self.grid, "ReplicaTileArray")
        device = check_state_device("ReplicaTileArray.device", device)
        dtype = torch.get_default_dtype() if dtype is None else dtype
        self.generator = CounterRNG(seeds, device)
        g = self.grid
        shape = (g.n_tiles, g.rows, g.cols)
        # device-to-device spread: each replica from its own stream (a loop at construction only)
        per_replica = [cfg.device.sample(shape, CounterRNG([s], device), device, dtype).state_dict()
                       for s in seeds]
        self._register_state({key: torch.cat([p[key] for p in per_replica]) for key in per_replica[0]}, device, dtype)

    # ------------------------------------------------------------------ basic properties
    @property
    def n_replicas(self) -> int:
        """``E``."""
        return len(self.seeds)

    @property
    def tiles(self) -> Tensor:
        """States the MVMs see as one grid ``[E*R, C, rows, cols]`` (apparent states with write noise)."""
        w = self.apparent_tiles if self.has_write_noise else self.weight_tiles
        g = self.grid
        return w.view(self.n_replicas * g.n_row_tiles, g.n_col_tiles, g.rows, g.cols)

    def extra_repr(self) -> str:
        g = self.grid
        return (f"replicas={self.n_replicas}, out_features={g.out_features}, in_features={g.in_features}, "
                f"tiles={g.n_row_tiles}x{g.n_col_tiles} of {g.rows}x{g.cols}, "
                f"device={type(self.config.device).__name__}")

    # ------------------------------------------------------------------ layout helpers
    def _check(self, t: Tensor, n: int, what: str) -> None:
        if t.dim() < 2 or t.shape[0] != self.n_replicas or t.shape[-1] != n:
            raise ValueError(f"ReplicaTileArray.{what}: expected [{self.n_replicas}, ..., {n}] "
                             f"(replicas first), got {tuple(t.shape)}")

    def _row_blocks(self, x: Tensor) -> Tensor:
        """``x: [E, B, in] -> [B, E*R, C, cols]``: each replica's input slices, repeated for its R row blocks."""
        g = self.grid
        e, batch = x.shape[0], x.shape[1]
        xs = g.split_inputs(x).permute(1, 0, 2, 3).unsqueeze(2)             # [B, E, 1, C, cols]
        return xs.expand(batch, e, g.n_row_tiles, g.n_col_tiles, g.cols).reshape(
            batch, e * g.n_row_tiles, g.n_col_tiles, g.cols)

    def _out_blocks(self, d: Tensor) -> Tensor:
        """``d: [E, B, out] -> [B, E*R, rows]``."""
        g = self.grid
        return g.split_outputs(d).permute(1, 0, 2, 3).reshape(d.shape[1], -1, g.rows)

    def _reads_per_call(self) -> int:
        """One importance read per replica (:meth:`TileState._count`)."""
        return self.n_replicas

    def _forward_tiles(self, w: Tensor, x: Tensor) -> MVMResult:
        """Forward MVM of the grid ``w: [E*R, C, rows, cols]`` with ``x: [E, B, in]`` (periphery, noise)."""
        # contiguous: a strided view's matmul (the ideal periphery's, on x itself) can round differently in the
        # last bit depending on E (its layout folds into one bmm batch only for E = 1)
        xin = self._row_blocks(x.to(w.dtype)).permute(1, 2, 0, 3).contiguous()   # [E*R, C, B, cols]
        return _analog_mvm_blocks(w, xin, self.config.forward, self.generator, sync_free=True)

    def _merge_forward(self, res: MVMResult) -> Tensor:
        """``[E*R, C, B, rows]`` partial sums -> ``[E, B, out]`` (digital sum over the column blocks)."""
        g = self.grid
        y = res.out.sum(dim=1)                                             # [E*R, B, rows]
        y = y.view(self.n_replicas, g.n_row_tiles, y.shape[1], g.rows).permute(0, 2, 1, 3)
        return g.merge_outputs(y)

    # ------------------------------------------------------------------ programming and reading
    @torch.no_grad()
    def program(self, weight: Tensor, write_noise: bool = True, clip: bool = True) -> None:
        """Set the states to ``weight: [E, out, in]`` (clipped into each device's bounds unless ``clip=False``);
        with write noise the apparent states of all devices are redrawn (or set to the states,
        ``write_noise=False``); ``ValueError`` for a NaN or ±Inf entry (:func:`~crossbar.tiles.check_finite_weights`;
        the states are left as they were)."""
        self._check(weight, self.in_features, "program")
        check_finite_weights("ReplicaTileArray.program", weight.detach())
        w = weight.detach().to(device=self.weight_tiles.device, dtype=self.weight_tiles.dtype)
        self._program_tiles(self.grid.to_tiles(w).flatten(0, 1), write_noise, clip)   # [E*T, rows, cols], replica-major

    @torch.no_grad()
    def read(self, hidden: bool = False) -> Tensor:
        """The weights ``[E, out, in]`` exactly (a copy): the states the MVMs see, or the hidden states."""
        w = self.weight_tiles if (hidden or not self.has_write_noise) else self.apparent_tiles
        g = self.grid
        return g.from_tiles(w.view(self.n_replicas, g.n_tiles, g.rows, g.cols)).clone()

    # ------------------------------------------------------------------ MVMs
    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        """Forward MVM of every replica, ``x: [E, B, in] -> [E, B, out]`` (replica ``e`` sees its own weights)."""
        self._check(x, self.in_features, "forward")
        res = self._forward_tiles(self.tiles, x)
        self._count(res, x.shape[0] * x.shape[1], "forward", False)
        return self._merge_forward(res)

    @torch.no_grad()
    def backward(self, d: Tensor) -> Tensor:
        """Transposed MVM of every replica, ``d: [E, B, out] -> [E, B, in]`` (backward periphery)."""
        self._check(d, self.out_features, "backward")
        g = self.grid
        w = self.tiles
        din = self._out_blocks(d.to(w.dtype)).permute(1, 0, 2).unsqueeze(1)   # [E*R, 1, B, rows]
        res = _analog_mvm_blocks(w, din, self.config.backward, self.generator, transposed=True, sync_free=True)
        z = res.out.view(self.n_replicas, g.n_row_tiles, g.n_col_tiles, d.shape[1], g.cols).sum(dim=1)
        self._count(res, d.shape[0] * d.shape[1], "backward", True)
        return g.merge_inputs(z.permute(0, 2, 1, 3))

    @torch.no_grad()
    def row_sums(self, mode: str = "exact", g_offset: float = 0.0) -> Tensor:
        """Row sums ``Σ_j |w_ij|`` of every replica, ``[E, out]`` (GRAPES importance).

        ``"exact"``: digitally from the states. ``"hardware"``: one all-ones read per replica through the
        forward periphery (each tile's own ADC, partial sums added digitally) of the differential pairs' summed
        currents, as :meth:`crossbar.tiles.TileArray.row_sums`: ``Σ_j |w_ij| + 2·g_offset·in`` (``g_offset``: the
        idle device's conductance in weight units, >= 0); counts one ``importance_reads`` per replica.
        """
        if mode not in ("exact", "hardware"):
            raise ValueError(f"ReplicaTileArray.row_sums: mode must be 'exact' or 'hardware', got {mode!r}")
        if not g_offset >= 0:
            raise ValueError(f"ReplicaTileArray.row_sums: g_offset must be >= 0, got {g_offset!r}")
        if mode == "exact":
            out = self.read().abs().sum(dim=-1)
            return out + pair_offset(g_offset, self.in_features) if g_offset else out
        w = self.tiles
        ones = torch.ones(self.n_replicas, 1, self.in_features, device=w.device, dtype=w.dtype)
        # padding input lines carry 0, so the offset of their devices adds nothing (as on a real array)
        res = self._forward_tiles(w.abs() + pair_offset(g_offset) if g_offset else w.abs(), ones)
        self._count(res, 0, None, False)
        return self._merge_forward(res)[:, 0]

    # ------------------------------------------------------------------ update
    @torch.no_grad()
    def update(self, x: Tensor, d: Tensor, lr: float | Tensor, mask: Tensor | None = None) -> None:
        """In-memory update of every replica, ``W_e`` moves by about ``-lr · Σ_b d_eb x_ebᵀ``.

        Args:
            x: ``[E, B, in]`` layer inputs per replica. d: ``[E, B, out]`` gradients w.r.t. the outputs.
            lr: learning rate (number or 0-d tensor), the same for every replica; refused as by
                :meth:`crossbar.tiles.TileArray.update` (``ValueError``, before anything moves).
            mask: optional ``[E]`` bool tensor on the states' device: the replicas where it is ``False`` are not
                updated (their states and apparent states stay bit for bit what they were, even with NaN/Inf in
                their ``x`` / ``d``; no pulse and no update of theirs is counted), sync-free (no host read). The
                others are updated exactly as without the mask; every replica's noise stream advances as usual.

        Pulsed types: pulse trains for every tile of every replica (GPU: dense, ``max_bl`` slots; CPU: only the
        slots below each sample's BL, the same numbers), coincidence counts, then the device response on all
        replicas' devices (CPU: in blocks, see :meth:`_apply_pulses_cpu`); a masked replica's errors are set to 0,
        so none of its error lines fires (0 pulses: its devices keep their states exactly, see
        :meth:`devices.PulsedDevice.apply_pulses`). ``pulse_type="none"``: the exact update.

        NaN / Inf in ``x`` or ``d`` of a replica that is not masked off: unlike :meth:`crossbar.tiles.TileArray.update`
        on the CPU (``FloatingPointError``), nothing is raised, on any device, so that one diverging replica never
        stops the others (their updates stay exact). With update management (the default) such a sample fires no
        pulse on the tiles of its block; without it a NaN line never fires and an Inf line fires in every slot; the
        exact update writes NaN / Inf into that replica's states. Divergence is the caller's to detect: mask the
        replica off from its first non-finite loss on, as :func:`imc_grapes.replicas.train_replicas` does.
        """
        self._check(x, self.in_features, "update")
        self._check(d, self.out_features, "update")
        if x.shape[1] != d.shape[1]:
            raise ValueError(f"ReplicaTileArray.update: x and d need the same number of vectors, got "
                             f"{tuple(x.shape)} and {tuple(d.shape)}")
        if mask is not None:
            self._check_mask(mask)
        dtype = self.weight_tiles.dtype
        xt = self._row_blocks(x.to(dtype))                                  # [B, E*R, C, cols]
        dt = self._out_blocks(d.to(dtype))                                  # [B, E*R, rows]
        cfg = self.config
        shape = self.weight_tiles.shape
        if cfg.update.pulse_type == "none":
            self._exact_update(xt, dt, lr, mask)
        else:
            if mask is not None:                                            # masked replicas: no error line fires
                dt = torch.where(self._per_replica(mask, self.grid.n_row_tiles).view(1, -1, 1), dt, 0.0)
            device = cfg.device
            plan = _plan_trains(xt, dt, lr, device.granularity, cfg.update, self.generator, trim_slots=False)
            on_cpu = host_reads_free(self.weight_tiles)
            # CPU: only the slots each sample uses (host reads, free there); GPU: all slots, sync-free
            n_up, n_down, total = (_compact_counts(plan, self.generator) if on_cpu
                                   else _dense_counts(_draw_dense_trains(plan, self.generator)))
            n_up, n_down = n_up.reshape(shape), n_down.reshape(shape)
            if on_cpu:
                self._apply_pulses_cpu(n_up, n_down)
            else:
                params = self._update_params()
                device.apply_pulses_(self.weight_tiles, n_up, n_down, params, self.generator)
                if self.has_write_noise:
                    touched = (n_up + n_down) > 0
                    noisy = device.write_noise(self.weight_tiles, params, self.generator)
                    self.apparent_tiles.copy_(torch.where(touched, noisy, self.apparent_tiles))
            self.counter_pulses.add_(total.to(torch.int64))
        self.counter_updates.add_(self.n_replicas if mask is None else mask.sum())

    def _check_mask(self, mask: Tensor) -> None:
        """``ValueError`` unless ``mask`` is an ``[E]`` bool tensor on the states' device (no host read)."""
        dev = self.weight_tiles.device
        if mask.shape != (self.n_replicas,) or mask.dtype != torch.bool or mask.device != dev:
            raise ValueError(f"ReplicaTileArray.update: mask must be a bool tensor of shape ({self.n_replicas},) "
                             f"(one entry per replica) on {dev}, got {mask.dtype} {tuple(mask.shape)} on "
                             f"{mask.device}")

    def _per_replica(self, mask: Tensor, n: int) -> Tensor:
        """``mask: [E]`` repeated for each replica's ``n`` consecutive entries (tile rows, tiles): ``[E*n]``."""
        return mask.view(-1, 1).expand(self.n_replicas, n).reshape(-1)

    def _exact_update(self, xt: Tensor, dt: Tensor, lr: float | Tensor, mask: Tensor | None) -> None:
        """``pulse_type="none"``: ``W -= lr · Σ_b d xᵀ`` on every tile (``xt: [B, E*R, C, cols]``,
        ``dt: [B, E*R, rows]``), the apparent states set to the new states; replicas masked off keep both. ``lr`` is
        checked as by :func:`~crossbar.update.ideal_delta` (``ValueError``)."""
        _check_update_lr(lr, xt.device, "exact update")
        shape = self.weight_tiles.shape
        delta = (-lr * torch.einsum("bri,brcj->rcij", dt, xt)).reshape(shape).to(self.weight_tiles.dtype)
        if mask is None:
            self.weight_tiles.add_(delta)
            if self.has_write_noise:
                self.apparent_tiles.copy_(self.weight_tiles)
            return
        keep = self._per_replica(mask, self.grid.n_tiles).view(-1, 1, 1)              # [E*T, 1, 1]
        self.weight_tiles.copy_(torch.where(keep, self.weight_tiles + delta, self.weight_tiles))
        if self.has_write_noise:
            self.apparent_tiles.copy_(torch.where(keep, self.weight_tiles, self.apparent_tiles))

    def _apply_pulses_cpu(self, n_up: Tensor, n_down: Tensor) -> None:
        """CPU form of the device update and write-noise redraw, in cache-sized blocks; ``n_up``, ``n_down``:
        ``[E*T, rows, cols]`` counts. Host reads (free on the CPU).

        Every device's new state is computed elementwise from its own state, counts, parameters and the dense
        draw's numbers *at its position* (:meth:`devices.rng.CounterRNG.at`; the generator advances as for the
        dense draw), by vectorized kernels on blocks whose lengths are multiples of 64 (no scalar tails) and
        below torch's parallel grain size (one thread per op). So a device's result does not depend on where in a
        block it sits, and each replica gets exactly its ``E = 1`` result whichever of the two layouts is taken:

        * dense (many devices pulsed, ``T*rows*cols`` a multiple of 64): blocks of the states themselves (views;
          pulse-free devices are computed too and keep their state exactly);
        * gathered (few pulsed): only the devices with pulses, gathered replica by replica into an ``[E, M]``
          block (``M`` a multiple of 64, padded with pulse-free dummies whose results are dropped).

        Same distribution as :meth:`devices.PulsedDevice.apply_pulses_`.
        """
        w = self.weight_tiles
        e = self.n_replicas
        per = w.numel() // e
        touched = torch.add(n_up, n_down).view(-1) > 0
        n_touched = int(touched.sum())
        if per % 64 == 0 and n_touched > _DENSE_FRACTION * w.numel():
            self._update_blocks(w.view(-1), n_up.reshape(-1), n_down.reshape(-1), self._update_params(), touched,
                                _dense_blocks(e, per, _block_size()), lambda cut: _block_of(cut, per))
            return
        dev = w.device
        index = flat_nonzero(touched)                                            # sorted: grouped by replica
        rep = torch.div(index, per, rounding_mode="floor")
        counts = torch.bincount(rep, minlength=e)
        m = -(-max(int(counts.max()), 1) // 64) * 64
        pos = torch.arange(index.numel(), device=dev) - (torch.cumsum(counts, 0) - counts).index_select(0, rep)
        slot = rep * m + pos                                                     # place in the [E*M] block
        gather = (torch.arange(e, device=dev) * per).repeat_interleave(m)        # dummies: a replica's device 0
        gather.index_copy_(0, slot, index)
        params = DeviceParams.from_state_dict({k: v.reshape(-1).index_select(0, gather)
                                               for k, v in self._update_params().state_dict().items()})
        keep = torch.zeros(e * m, device=dev, dtype=torch.bool).index_fill_(0, slot, True)
        sub_up = n_up.reshape(-1).index_select(0, gather).mul_(keep)
        sub_down = n_down.reshape(-1).index_select(0, gather).mul_(keep)
        sub_w = w.view(-1).index_select(0, gather)
        size = _block_size()
        cuts = [(s, min(s + size, e * m)) for s in range(0, e * m, size)]
        sub_apparent = self.apparent_tiles.view(-1).index_select(0, gather) if self.has_write_noise else None
        self._update_blocks(sub_w, sub_up, sub_down, params, keep, cuts, lambda cut: gather[cut[0]:cut[1]],
                            sub_apparent)
        w.view(-1).index_copy_(0, index, sub_w.index_select(0, slot))
        if sub_apparent is not None:
            self.apparent_tiles.view(-1).index_copy_(0, index, sub_apparent.index_select(0, slot))

    def _update_blocks(self, w: Tensor, n_up: Tensor, n_down: Tensor, params: DeviceParams, touched: Tensor,
                       cuts: list[tuple[int, int]], where: Any, apparent: Tensor | None = None) -> None:
        """Device update (then write noise) of the flat states ``w: [n]`` (updated in place) block by block.

        ``cuts``: ``(start, stop)`` ranges of ``w`` (lengths multiples of 64, at most ``_block_size()``); ``where(cut)``
        gives the positions of that block in the dense draw of the states' shape (an index tensor, or a
        ``(r0, r1, s, e)`` block of :meth:`devices.rng.CounterRNG.at`). ``touched: [n]`` devices with pulses get
        their apparent state (``apparent``, default ``self.apparent_tiles``) redrawn."""
        device = self.config.device
        shape = self.weight_tiles.shape
        flat = {k: v.reshape(-1) for k, v in params.state_dict().items()}
        blocks = [(slice(a, b), DeviceParams.from_state_dict({k: v[a:b] for k, v in flat.items()}), where((a, b)))
                  for a, b in cuts]
        parts = []
        for cut, block_params, pos in blocks:
            parts.append(self.generator.at(shape, pos, advance=False))
            device.apply_pulses_(w[cut], n_up[cut], n_down[cut], block_params, parts[-1])
        IndexedDraws.settle(parts)
        if not self.has_write_noise:
            return
        apparent = self.apparent_tiles.view(-1) if apparent is None else apparent
        parts = []
        for cut, block_params, pos in blocks:
            parts.append(self.generator.at(shape, pos, advance=False))
            noisy = device.write_noise(w[cut], block_params, parts[-1])
            apparent[cut] = torch.where(touched[cut], noisy, apparent[cut])
        IndexedDraws.settle(parts)

    # ------------------------------------------------------------------ state
    def get_extra_state(self) -> dict[str, Any]:
        """The counter generator's position and the device model the ``dp_*`` buffers were sampled from
        (``"device"``: :func:`crossbar.tiles.device_record`)."""
        return {"rng": self.generator.get_state(), "device": device_record(self.config.device)}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`get_extra_state`'s state; ``ValueError`` for one saved with another device model
        (:meth:`~crossbar.tiles.TileState._check_saved_device`, as a :class:`~crossbar.TileArray`'s; a state without
        the ``"device"`` entry, saved before it was recorded, loads as it did) or with other replica seeds
        (:meth:`_check_saved_state`; ``load_state_dict`` checks both before anything is copied)."""
        self._check_saved_state(state, type(self).__name__)
        self.generator.set_state(state["rng"])

    def _check_saved_state(self, state: object, where: str) -> None:
        """:meth:`~crossbar.tiles.TileState._check_saved_state`, and a state whose counter generator has other seeds
        than this array's replicas (:meth:`~devices.rng.CounterRNG.seeds_problem`) refused: its ``dp_*`` buffers
        were sampled from the other seeds' streams, and its position is in those streams. ``ValueError`` naming
        ``where`` and both seed lists; likewise (naming the entry) a state whose ``"rng"`` entry is missing or not
        :meth:`~devices.rng.CounterRNG.get_state`'s ``{"seeds": [...], "counter": <int>}``, which
        :meth:`set_extra_state` cannot restore (refused before ``load_state_dict`` copies any buffer, which torch
        does before it sets the extra state). No extra state at all (``None``) is torch's missing key."""
        super()._check_saved_state(state, where)
        if state is None:
            return
        rng = state.get("rng") if isinstance(state, dict) else None
        seeds = rng.get("seeds") if isinstance(rng, dict) else None
        counter = rng.get("counter") if isinstance(rng, dict) else None
        if not (isinstance(seeds, (list, tuple)) and isinstance(counter, numbers.Integral)
                and not isinstance(counter, bool)):
            got = (f"{rng!r}" if isinstance(state, dict) and "rng" in state
                   else "no 'rng' entry in " + repr(state if not isinstance(state, dict) else sorted(state)))
            raise ValueError(f"{where}: the saved extra state's 'rng' entry must be a dict {{'seeds': [one seed per "
                             f"replica], 'counter': <int>}} (devices.CounterRNG.get_state), got {got}")
        if (problem := self.generator.seeds_problem(seeds)) is not None:
            raise ValueError(f"{where}: the state was saved with other replica seeds: {problem}; build the array "
                             f"with the saved seeds (the saved extra state's ['rng']['seeds'])")

    def _apply(self, fn: Any, recurse: bool = True) -> "ReplicaTileArray":
        super()._apply(fn, recurse)
        device = self.weight_tiles.device
        if self.generator.device != device:   # same streams, same position, on the new device
            state = self.generator.get_state()
            self.generator = CounterRNG(self.seeds, device)
            self.generator.set_state(state)
        return self


class ReplicaLinear(AnalogModuleBase):
    """Bias-free ``nn.Linear`` of ``E`` replicas on one :class:`ReplicaTileArray`: ``x: [E, B, in] -> [E, B, out]``.

    Args:
        seeds: one seed per replica (see :class:`ReplicaTileArray`).
        in_features, out_features: as ``nn.Linear``.
        rpu_config: :class:`CrossbarConfig` shared by the replicas. device, dtype: as ``nn.Linear``.

    An analog module like :class:`~crossbar.modules.AnalogLinear` (the same autograd function, stash and
    ``analog_ctx``, so :class:`~crossbar.optim.AnalogSGD` and :func:`~crossbar.optim.analog_step` drive it): the
    weights have no float gradient, ``backward`` sends ``Wᵀ d`` upstream through the array and stashes ``(x, d)``,
    and :meth:`analog_update` (the optimizer step) applies the pulsed update. ``error_scale`` is not supported
    (scale ``d`` before it reaches the layer). Program the initial weights with :meth:`set_weights`
    (``[E, out, in]``; the array starts at zero).

    Input dtype: unlike :class:`~crossbar.modules.AnalogLinear` (which refuses an input of another dtype, as
    ``nn.Linear`` does), an input of another dtype is converted to the states' dtype (by the array's MVMs and
    update; the stash keeps ``x`` as given). The replica engine relies on it: ``train_replicas(..., dtype=...)``
    (:class:`imc_grapes.replicas.ReplicaMLP`) keeps the states in ``dtype`` and feeds the data sets' float32
    images to the first layer as they are.
    """

    tile: ReplicaTileArray  # type: ignore[assignment]

    def __init__(self, seeds: Sequence[int], in_features: int, out_features: int,
                 rpu_config: CrossbarConfig | None = None, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        seeds = check_seeds("ReplicaLinear", seeds)      # named as called (the array checks them again)
        in_features = _check_size("ReplicaLinear", "in_features", in_features)
        out_features = _check_size("ReplicaLinear", "out_features", out_features)
        device = check_state_device("ReplicaLinear.device", device)
        self.in_features = in_features
        self.out_features = out_features
        tile = ReplicaTileArray(seeds, out_features, in_features, rpu_config, device=device, dtype=dtype)
        self._init_analog(tile)  # type: ignore[arg-type]   # the same contract as a TileArray for the base class

    @property
    def n_replicas(self) -> int:
        return self.tile.n_replicas

    def _weight_shape(self) -> tuple[int, ...]:
        return (self.n_replicas, self.out_features, self.in_features)

    def set_weights(self, weight: Tensor, write_noise: bool = True, clip: bool = True) -> None:
        """Program ``weight: [E, out, in]`` (clipped into the device bounds unless ``clip=False``; ``write_noise``: see
        :meth:`ReplicaTileArray.program`)."""
        if tuple(weight.shape) != self._weight_shape():
            raise ValueError(f"ReplicaLinear.set_weights: expected shape {self._weight_shape()}, got "
                             f"{tuple(weight.shape)}")
        check_finite_weights("ReplicaLinear.set_weights", weight.detach())
        self.tile.program(weight, write_noise, clip)

    def row_sums(self, mode: str = "exact", signed: bool = False, g_offset: float = 0.0) -> Tensor:
        """``[E, out]`` row sums of ``|W|`` (plus ``2·g_offset·in``; see :meth:`ReplicaTileArray.row_sums`;
        ``signed`` sums are not supported by the replica engine)."""
        if signed:
            raise ValueError("ReplicaLinear.row_sums: signed sums are not supported by the replica engine")
        return self.tile.row_sums(mode, g_offset)

    def col_sums(self, mode: str = "exact", signed: bool = False, g_offset: float = 0.0) -> Tensor:
        raise ValueError("ReplicaLinear.col_sums: column sums (DFA importance) are not supported by the replica "
                         "engine")

    def forward(self, x: Tensor) -> Tensor:
        """``x: [E, B, in]`` (any dtype: converted to the states', see the class docstring) ``-> [E, B, out]``."""
        if self.error_scale is not None:
            raise ValueError("ReplicaLinear.error_scale is not supported; scale the error before the layer")
        return self._analog_mvm(x)

    @torch.no_grad()
    def analog_update(self, lr: float | Tensor, mask: Tensor | None = None) -> int:
        """Apply the pulsed update for every stashed ``(x, d)``; the replicas where ``mask`` (``[E]`` bool, see
        :meth:`ReplicaTileArray.update`) is ``False`` are left as they are. Returns the number of updates applied
        (the stash is emptied)."""
        if mask is None:
            return super().analog_update(lr)
        n = 0
        for x, d in self._checked_stash():             # error_scale is refused by forward: d is the error itself
            self.tile.update(x, d, lr, mask)
            n += 1
        self.clear_stash()
        return n

    def extra_repr(self) -> str:
        return f"replicas={self.n_replicas}, in_features={self.in_features}, out_features={self.out_features}"
