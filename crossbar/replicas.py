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
stream depend on all replicas' data, so the replica path always takes the dense, sync-free route (as on GPUs).
The numbers differ from a ``TileArray`` with the same seed (a different generator); the distributions agree.

:class:`ReplicaLinear` is the bias-free ``nn.Linear`` of ``E`` replicas (``x: [E, B, in] -> [E, B, out]``), an
analog module like :class:`~crossbar.modules.AnalogLinear`: the pulsed in-memory update is applied at
``analog_update`` (the optimizer step: :class:`~crossbar.optim.AnalogSGD` or :func:`~crossbar.optim.analog_step`).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from crossbar.config import CrossbarConfig
from crossbar.mapping import TileGrid
from crossbar.modules import AnalogModuleBase
from crossbar.periphery import MVMResult, _analog_mvm_blocks
from crossbar.tiles import COUNTER_NAMES
from crossbar.update import _dense_counts, _draw_dense_trains, _plan_trains
from devices import DeviceParams
from devices.rng import CounterRNG

__all__ = ["ReplicaTileArray", "ReplicaLinear"]


class ReplicaTileArray(nn.Module):
    """``E`` replicas of a logical ``[out_features, in_features]`` weight matrix, simulated together.

    Args:
        seeds: one integer seed per replica (``E = len(seeds)``): replica ``e``'s device-to-device parameters
            and all its noise come from a counter stream keyed by ``seeds[e]`` only.
        out_features, in_features: logical matrix shape of one replica.
        config: crossbar configuration shared by all replicas (default :class:`CrossbarConfig` ()).
        device, dtype: where the states live (default CPU / ``torch.get_default_dtype()``).

    State (``nn.Module`` buffers): ``weight_tiles`` ``[E*T, rows, cols]`` (``T = R*C`` tiles per replica),
    ``apparent_tiles`` (with write noise), ``dp_*`` sampled device parameters, ``counter_*`` 0-d int64 totals
    over all replicas (each replica did ``counter / E`` of it). The counter generator's position is saved in
    ``_extra_state``.
    """

    weight_tiles: Tensor
    apparent_tiles: Tensor
    counter_updates: Tensor
    counter_pulses: Tensor
    counter_importance_reads: Tensor
    counter_adc_conversions: Tensor
    counter_dac_conversions: Tensor

    def __init__(self, seeds: Sequence[int], out_features: int, in_features: int,
                 config: CrossbarConfig | None = None, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        cfg = CrossbarConfig() if config is None else config
        if not isinstance(cfg, CrossbarConfig):
            raise ValueError(f"ReplicaTileArray.config must be a crossbar.CrossbarConfig, got {cfg!r}")
        seeds = [int(s) for s in seeds]
        if not seeds:
            raise ValueError("ReplicaTileArray.seeds must hold at least one seed (one per replica), got none")
        self.config = cfg
        self.seeds = seeds
        self.grid = TileGrid(out_features, in_features, cfg.tile_rows, cfg.tile_cols)
        device = torch.device("cpu") if device is None else torch.device(device)
        dtype = torch.get_default_dtype() if dtype is None else dtype
        self.generator = CounterRNG(seeds, device)
        g = self.grid
        shape = (g.n_tiles, g.rows, g.cols)
        # device-to-device spread: each replica from its own stream (a loop at construction only)
        per_replica = [cfg.device.sample(shape, CounterRNG([s], device), device, dtype).state_dict()
                       for s in seeds]
        self._param_buffers: list[tuple[str, str]] = []
        for key in per_replica[0]:
            name = "dp_" + key.replace(".", "__")
            self.register_buffer(name, torch.cat([p[key] for p in per_replica]))
            self._param_buffers.append((name, key))
        full = (self.n_replicas * g.n_tiles, g.rows, g.cols)
        self.register_buffer("weight_tiles", cfg.device.clip(torch.zeros(full, device=device, dtype=dtype),
                                                             self.params))
        self.has_write_noise = bool(getattr(cfg.device, "write_noise_std", 0.0) > 0)
        if self.has_write_noise:
            self.register_buffer("apparent_tiles", self.weight_tiles.clone())
        for name in COUNTER_NAMES:
            self.register_buffer(f"counter_{name}", torch.zeros((), dtype=torch.int64, device=device))

    # ------------------------------------------------------------------ basic properties
    @property
    def n_replicas(self) -> int:
        """``E``."""
        return len(self.seeds)

    @property
    def out_features(self) -> int:
        return self.grid.out_features

    @property
    def in_features(self) -> int:
        return self.grid.in_features

    @property
    def params(self) -> DeviceParams:
        """The sampled device parameters ``[E*T, rows, cols]`` (views of the ``dp_*`` buffers)."""
        return DeviceParams.from_state_dict({key: getattr(self, name) for name, key in self._param_buffers})

    @property
    def tiles(self) -> Tensor:
        """States the MVMs see as one grid ``[E*R, C, rows, cols]`` (apparent states with write noise)."""
        w = self.apparent_tiles if self.has_write_noise else self.weight_tiles
        g = self.grid
        return w.view(self.n_replicas * g.n_row_tiles, g.n_col_tiles, g.rows, g.cols)

    @property
    def counters(self) -> dict[str, Tensor]:
        """Hardware counters summed over the replicas (0-d int64 tensors, live buffers)."""
        return {name: getattr(self, f"counter_{name}") for name in COUNTER_NAMES}

    def reset_counters(self) -> None:
        for name in COUNTER_NAMES:
            getattr(self, f"counter_{name}").zero_()

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

    def _count(self, res: MVMResult, n_vectors: int, kind: str | None, n_in: int, n_out: int) -> None:
        passes = res.passes.sum()
        if kind is None:
            self.counter_importance_reads.add_(self.n_replicas)
        else:
            getattr(self, f"counter_{kind}_mvms").add_(n_vectors)
            getattr(self, f"counter_{kind}_passes").add_(passes)
        self.counter_adc_conversions.add_(passes, alpha=n_out)
        self.counter_dac_conversions.add_(passes, alpha=n_in)

    def _forward_tiles(self, w: Tensor, x: Tensor) -> MVMResult:
        """Forward MVM of the grid ``w: [E*R, C, rows, cols]`` with ``x: [E, B, in]`` (periphery, noise)."""
        xin = self._row_blocks(x.to(w.dtype)).permute(1, 2, 0, 3)          # [E*R, C, B, cols]
        return _analog_mvm_blocks(w, xin, self.config.forward, self.generator, sync_free=True)

    def _merge_forward(self, res: MVMResult) -> Tensor:
        """``[E*R, C, B, rows]`` partial sums -> ``[E, B, out]`` (digital sum over the column blocks)."""
        g = self.grid
        y = res.out.sum(dim=1)                                             # [E*R, B, rows]
        y = y.view(self.n_replicas, g.n_row_tiles, y.shape[1], g.rows).permute(0, 2, 1, 3)
        return g.merge_outputs(y)

    # ------------------------------------------------------------------ programming and reading
    @torch.no_grad()
    def program(self, weight: Tensor) -> None:
        """Set the states to ``weight: [E, out, in]`` (clipped into each device's bounds); with write noise the
        apparent states of all devices are redrawn."""
        self._check(weight, self.in_features, "program")
        w = weight.detach().to(device=self.weight_tiles.device, dtype=self.weight_tiles.dtype)
        tiles = torch.cat([self.grid.to_tiles(w[e]) for e in range(self.n_replicas)])
        self.weight_tiles.copy_(self.config.device.clip(tiles, self.params))
        if self.has_write_noise:
            self.apparent_tiles.copy_(self.config.device.write_noise(self.weight_tiles, self.params,
                                                                     self.generator))

    @torch.no_grad()
    def read(self, hidden: bool = False) -> Tensor:
        """The weights ``[E, out, in]`` exactly (a copy): the states the MVMs see, or the hidden states."""
        w = self.weight_tiles if (hidden or not self.has_write_noise) else self.apparent_tiles
        g = self.grid
        full = w.view(self.n_replicas, g.n_row_tiles, g.n_col_tiles, g.rows, g.cols).permute(0, 1, 3, 2, 4)
        full = full.reshape(self.n_replicas, g.padded_out, g.padded_in)
        return full[:, : g.out_features, : g.in_features].clone()

    # ------------------------------------------------------------------ MVMs
    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        """Forward MVM of every replica, ``x: [E, B, in] -> [E, B, out]`` (replica ``e`` sees its own weights)."""
        self._check(x, self.in_features, "forward")
        res = self._forward_tiles(self.tiles, x)
        self._count(res, x.shape[0] * x.shape[1], "forward", self.grid.cols, self.grid.rows)
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
        self._count(res, d.shape[0] * d.shape[1], "backward", g.rows, g.cols)
        return g.merge_inputs(z.permute(0, 2, 1, 3))

    @torch.no_grad()
    def row_sums(self, mode: str = "exact") -> Tensor:
        """Row sums ``Σ_j |w_ij|`` of every replica, ``[E, out]`` (GRAPES importance).

        ``"exact"``: digitally from the states. ``"hardware"``: one all-ones read per replica through the
        forward periphery (each tile's own ADC, partial sums added digitally), as
        :meth:`crossbar.tiles.TileArray.row_sums` with ``g_offset = 0``; counts one ``importance_reads`` per replica.
        """
        if mode not in ("exact", "hardware"):
            raise ValueError(f"ReplicaTileArray.row_sums: mode must be 'exact' or 'hardware', got {mode!r}")
        if mode == "exact":
            return self.read().abs().sum(dim=-1)
        w = self.tiles
        ones = torch.ones(self.n_replicas, 1, self.in_features, device=w.device, dtype=w.dtype)
        res = self._forward_tiles(w.abs(), ones)
        self._count(res, 0, None, self.grid.cols, self.grid.rows)
        return self._merge_forward(res)[:, 0]

    # ------------------------------------------------------------------ update
    @torch.no_grad()
    def update(self, x: Tensor, d: Tensor, lr: float | Tensor) -> None:
        """In-memory update of every replica, ``W_e`` moves by about ``-lr · Σ_b d_eb x_ebᵀ``.

        Args:
            x: ``[E, B, in]`` layer inputs per replica. d: ``[E, B, out]`` gradients w.r.t. the outputs.
            lr: learning rate (number or 0-d tensor), the same for every replica.

        Pulsed types: dense pulse trains of ``max_bl`` slots for every tile of every replica, coincidence counts,
        then the device response on all replicas' devices at once. ``pulse_type="none"``: the exact update.
        """
        self._check(x, self.in_features, "update")
        self._check(d, self.out_features, "update")
        if x.shape[1] != d.shape[1]:
            raise ValueError(f"ReplicaTileArray.update: x and d need the same number of vectors, got "
                             f"{tuple(x.shape)} and {tuple(d.shape)}")
        dtype = self.weight_tiles.dtype
        xt = self._row_blocks(x.to(dtype))                                  # [B, E*R, C, cols]
        dt = self._out_blocks(d.to(dtype))                                  # [B, E*R, rows]
        cfg = self.config
        shape = self.weight_tiles.shape
        if cfg.update.pulse_type == "none":
            delta = -lr * torch.einsum("bri,brcj->rcij", dt, xt)
            self.weight_tiles.add_(delta.reshape(shape).to(dtype))
            if self.has_write_noise:
                self.apparent_tiles.copy_(self.weight_tiles)
        else:
            device = cfg.device
            plan = _plan_trains(xt, dt, lr, device.granularity, cfg.update, self.generator, trim_slots=False)
            n_up, n_down, total = _dense_counts(_draw_dense_trains(plan, self.generator))
            n_up, n_down = n_up.reshape(shape), n_down.reshape(shape)
            params = self.params
            device.apply_pulses_(self.weight_tiles, n_up, n_down, params, self.generator)
            if self.has_write_noise:
                touched = (n_up + n_down) > 0
                noisy = device.write_noise(self.weight_tiles, params, self.generator)
                self.apparent_tiles.copy_(torch.where(touched, noisy, self.apparent_tiles))
            self.counter_pulses.add_(total.to(torch.int64))
        self.counter_updates.add_(self.n_replicas)

    # ------------------------------------------------------------------ state
    def get_extra_state(self) -> dict[str, Any]:
        return {"rng": self.generator.get_state()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["rng"])

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
    """

    tile: ReplicaTileArray  # type: ignore[assignment]

    def __init__(self, seeds: Sequence[int], in_features: int, out_features: int,
                 rpu_config: CrossbarConfig | None = None, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        tile = ReplicaTileArray(seeds, out_features, in_features, rpu_config, device=device, dtype=dtype)
        self._init_analog(tile)  # type: ignore[arg-type]   # the same contract as a TileArray for the base class

    @property
    def n_replicas(self) -> int:
        return self.tile.n_replicas

    def _weight_shape(self) -> tuple[int, ...]:
        return (self.n_replicas, self.out_features, self.in_features)

    def set_weights(self, weight: Tensor) -> None:
        """Program ``weight: [E, out, in]`` (clipped into the device bounds)."""
        if tuple(weight.shape) != self._weight_shape():
            raise ValueError(f"ReplicaLinear.set_weights: expected shape {self._weight_shape()}, got "
                             f"{tuple(weight.shape)}")
        self.tile.program(weight)

    def row_sums(self, mode: str = "exact", signed: bool = False, g_offset: float = 0.0) -> Tensor:
        """``[E, out]`` row sums of ``|W|`` (see :meth:`ReplicaTileArray.row_sums`; ``signed`` / ``g_offset`` are
        not supported by the replica engine)."""
        if signed or g_offset:
            raise ValueError("ReplicaLinear.row_sums: signed sums and g_offset are not supported by the replica "
                             f"engine, got signed={signed!r}, g_offset={g_offset!r}")
        return self.tile.row_sums(mode)

    def col_sums(self, mode: str = "exact", signed: bool = False, g_offset: float = 0.0) -> Tensor:
        raise ValueError("ReplicaLinear.col_sums: column sums (DFA importance) are not supported by the replica "
                         "engine")

    def forward(self, x: Tensor) -> Tensor:
        if self.error_scale is not None:
            raise ValueError("ReplicaLinear.error_scale is not supported; scale the error before the layer")
        return self._analog_mvm(x)

    def extra_repr(self) -> str:
        return f"replicas={self.n_replicas}, in_features={self.in_features}, out_features={self.out_features}"
