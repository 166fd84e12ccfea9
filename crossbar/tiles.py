"""TileArray: one layer's weight matrix on a grid of crossbar tiles, every operation one batched tensor op.

State (all ``nn.Module`` buffers, so ``state_dict()`` / ``.to()`` carry them):

* ``weight_tiles`` ``[T, rows, cols]``: the persistent (hidden) device states, ``T = R * C`` tiles, tile
  ``t = r * C + c`` (see :class:`crossbar.mapping.TileGrid`);
* ``apparent_tiles`` ``[T, rows, cols]`` (only when the device has write noise): the states the MVMs see,
  redrawn for every device an update touches (aihwkit's write noise);
* ``dp_*``: the device-to-device parameters sampled once (``DeviceParams``, same shape);
* ``counter_*``: 0-d int64 tensors of what the hardware did (never read back to the host by this class).

The torch.Generator of the array (seeded) drives all noise; its state is saved in the state dict
(``_extra_state``) and it follows the array to another device (re-seeded deterministically from itself).
``_extra_state`` also records the device model the ``dp_*`` parameters were sampled from (:func:`device_record`):
loading the state into an array of another device model, or of the same model with other field values, raises
``ValueError`` before anything is copied (:meth:`TileState._check_saved_device`), since the saved ``dp_*`` would run
under the other device's config. The periphery and the update settings are not recorded: a state trained under one
periphery loads under another (e.g. to evaluate it with other ADC bits).

Not state: on the CPU, the first sparse pulsed update also builds a packed copy of the ``dp_*`` parameters
(16 bytes per device for four float32 parameters; see :meth:`TileArray._params_at`), rebuilt automatically
when a ``dp_*`` buffer is replaced or modified in place (not through ``.data``).
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
from typing import Any, Callable, NamedTuple, Sequence, TypeVar, cast

import torch
from torch import Tensor, nn

from crossbar.config import CrossbarConfig, check_tile_sums
from crossbar.mapping import TileGrid, _check_size
from crossbar.periphery import (FullScaleADC, IOParameters, MVMResult, PreparedInputs, analog_mvm,
                               full_scale_scales, prepare_inputs)
from crossbar._sparse_update import cpu_pulse_counts
from crossbar.update import _dense_counts, _draw_dense_trains, _plan_trains, ideal_delta
from devices import DeviceParams, PulsedDevice, rng
from devices.base import SEED_RANGE, check_seed, is_seed, same_device_value
from devices.host import host_reads_free
from devices.rng import CounterRNG

__all__ = ["TileArray", "TileState", "COUNTER_NAMES", "hardware_sums", "hardware_and_exact_sums", "HardwareSumsPlan",
           "pair_offset", "check_finite_weights", "device_record", "device_differences"]

COUNTER_NAMES: tuple[str, ...] = (
    "forward_mvms",      # input vectors sent through the layer's forward MVM (B per call)
    "backward_mvms",     # error vectors sent through the backward MVM
    "forward_passes",    # analog tile passes, forward (tiles x vectors x bound-management rounds)
    "backward_passes",   # analog tile passes, backward
    "adc_conversions",   # output-line conversions: passes x logical output lines of the tile (padding not read)
    "dac_conversions",   # input-line conversions: passes x logical input lines of the tile (padding not driven)
    "updates",           # update calls
    "pulses",            # device pulses fired by pulsed updates
    "importance_reads",  # hardware row/column-sum reads
)


def _pack_rows(buffers: list[Tensor]) -> list[Tensor]:
    """The tensors (same shape, float32 or float64) interleaved per element, in 16-byte groups: a list of
    ``[numel]`` complex128 tensors, group ``g`` holding parameters ``g*k .. g*k + k - 1`` (``k = 16 / itemsize``,
    the last group zero-padded)."""
    per_group = 16 // buffers[0].element_size()
    flat = [b.reshape(-1) for b in buffers]
    flat += [torch.zeros_like(flat[0])] * (-len(flat) % per_group)
    return [torch.stack(flat[g:g + per_group], dim=1).view(torch.complex128).view(-1)
            for g in range(0, len(flat), per_group)]


_F = TypeVar("_F", bound=Callable[..., Any])

_CACHES = ("_packed", "_packed_key", "_ones_inputs", "_logical_mask", "_params_cache")
"""Instance attributes that are caches (rebuilt on demand): not copied, pickled or moved between devices."""


def _no_grad(fn: _F) -> _F:
    """``torch.no_grad()`` as a decorator, entered only when gradients are on (the MVMs and updates run inside
    autograd functions and optimizer steps, where they are already off: no mode switch per call)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not torch.is_grad_enabled():
            return fn(*args, **kwargs)
        with torch.no_grad():
            return fn(*args, **kwargs)
    return wrapper  # type: ignore[return-value]


def _check_vectors(method: str, name: str, t: Tensor, n: int) -> None:
    """``ValueError`` unless ``t`` is ``[..., n]`` (a reshape to ``[-1, n]`` would otherwise silently regroup the
    elements of vectors of another length)."""
    if t.dim() < 1 or t.shape[-1] != n:
        raise ValueError(f"TileArray.{method}: {name} must be [..., {n}], got {tuple(t.shape)}")


def _check_dtype(method: str, name: str, t: Tensor, dtype: torch.dtype) -> None:
    """``ValueError`` unless ``t`` has the states' ``dtype`` (an MVM with another dtype fails deep in the periphery:
    ``expected scalar type Double but found Float``, or ``torch.finfo`` for an integer input)."""
    if t.dtype != dtype:
        raise ValueError(f"TileArray.{method}: {name} must have the array's dtype, {dtype}, got {t.dtype}")


def check_finite_weights(where: str, weight: Tensor) -> None:
    """``ValueError`` naming ``where`` (a layer or tile and its method) unless every entry of ``weight`` (any shape)
    is finite, saying how many are NaN and how many ±Inf: a device cannot hold such a state, and programmed it
    would turn every MVM through its line into NaN.

    One reduction read back to the host (a synchronisation on a GPU): for the public programming entry points
    (``program``, ``set_weights``, ``write_weights``) only, never inside a training step's forward, backward or
    update."""
    if not (weight.is_floating_point() or weight.is_complex()):
        return                                   # integer weights are always finite
    if bool(torch.isfinite(weight).all()):
        return
    n_nan = int(torch.isnan(weight).sum())
    n_inf = int(torch.isinf(weight).sum())
    raise ValueError(f"{where}: weight must be finite, got {n_nan} NaN and {n_inf} Inf of its {weight.numel()} "
                     f"entries (shape {tuple(weight.shape)})")


def _sum_blocks(out: Tensor, dim: int) -> Tensor:
    """The digital sum of the tiles' partial results over tile-grid dimension ``dim`` (a view when it has one
    block: the sum of one term is that term)."""
    return out.squeeze(dim) if out.shape[dim] == 1 else out.sum(dim=dim)


class _OnesRead(NamedTuple):
    """What an all-ones read through a periphery with a deterministic DAC reuses (:meth:`TileArray._ones_read`),
    laid out against the tiles in their flat order ``t = r * C + c`` (``[T, rows, cols]``, as the states): the
    prepared inputs, each round's DAC code of a full-scale line ``codes`` ``[1, 1, rounds, 1]``, the input lines of
    each tile ``lines`` (``[T, 1, cols]`` forward, ``[T, rows, 1]`` backward; 1 logical, 0 padding; ``None``
    without padding), their number per tile ``n_lines`` ``[T, 1, 1]``, and each round's rescaling ``scales``
    ``[1, 1, rounds, 1]`` (:func:`~crossbar.periphery.full_scale_scales` with the output dim;
    ``None``: the ADC side goes through :func:`~crossbar.periphery.analog_mvm`). Codes and scales are those of
    every tile block: each block has a logical line at full scale, so the same noise-management scale."""

    prepared: PreparedInputs
    codes: Tensor
    lines: Tensor | None
    n_lines: Tensor
    scales: Tensor | None


def pair_offset(g_offset: float, n_lines: int = 1) -> float:
    """The idle devices' share of a differential-pair read summed over ``n_lines`` lines, ``2·g_offset·n_lines``:
    a pair holding ``w`` reads ``G⁺ + G⁻ = |w| + 2·g_offset`` (``g_offset``: the conductance at the pair's minimum,
    in weight units)."""
    return 2.0 * g_offset * n_lines


def check_state_device(what: str, device: torch.device | str | None) -> torch.device:
    """``device`` as a ``torch.device`` (``None``: the CPU); ``ValueError("<what> must be a device that holds data
    ...")`` for the meta device. The simulator needs real device states: the device-to-device parameters are sampled
    from the seed when the array is made, every later noise comes from the array's generator, and a meta tensor holds
    no values (torch failed with "META device type not an accelerator" making the generator, or "Cannot copy out of
    meta tensor" sampling the parameters, and a meta copy could not run an MVM). Another unusable device (``"mps"``
    on Linux, a CUDA device without a driver) keeps torch's own "not available" error."""
    dev = torch.device("cpu") if device is None else torch.device(device)
    if dev.type == "meta":
        raise ValueError(f"{what} must be a device that holds data (e.g. 'cpu' or 'cuda'), got {device!r}: the "
                         "simulator needs real device states (device-to-device parameters sampled from the seed, a "
                         "generator for the noise), which the meta device does not hold")
    return dev


def check_move(owner: str, fn: Callable[[Tensor], Any], like: Tensor) -> None:
    """Refuse, before anything moves, an ``nn.Module._apply`` (``.to``, ``.to_empty``, ``.cuda``, ...) whose ``fn``
    sends the states to the meta device (:func:`check_state_device`, naming ``owner``): ``fn`` is tried on an empty
    tensor of ``like``'s device and dtype (the states would otherwise be moved before the generator failed, leaving a
    half-moved module)."""
    probe = fn(torch.empty(0, device=like.device, dtype=like.dtype))
    if isinstance(probe, Tensor) and probe.device.type == "meta":
        check_state_device(f"{owner}: the device to move to", probe.device)


_EXTRA_STATE = "_extra_state"
"""The state-dict key suffix of a module's ``get_extra_state`` (``torch.nn.Module``'s own, a private name there)."""

DEVICE_DIFFERENCES_SHOWN = 4
"""How many differences between a saved device and an array's own the error of :meth:`TileState._check_saved_device`
names (then ``and N more``)."""


def _plain_number(value: Any) -> Any:
    """A device field's value as a Python number: a numpy (or other) integer as its ``int``, another real number
    as its ``float`` (``np.float64(0.002)`` -> ``0.002``), a bool kept; ``torch.load(weights_only=True)`` refuses
    numpy scalars. Equal to ``value`` as :func:`~devices.base.same_device_value` compares."""
    if isinstance(value, bool) or type(value) in (int, float):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    return float(value) if isinstance(value, numbers.Real) else value


def device_record(device: PulsedDevice) -> dict[str, Any]:
    """The device model as a tile array's extra state records it: ``{"class": <class name>, "fields": {field:
    value}}`` (:meth:`~devices.PulsedDevice.field_values`, each number a Python ``int`` or ``float`` even where the
    device holds a numpy one), plain and JSON-like (``torch.load(weights_only=True)`` reads it back)."""
    return {"class": type(device).__name__,
            "fields": {name: _plain_number(v) for name, v in device.field_values().items()}}


def _field_defaults(device: PulsedDevice) -> dict[str, Any]:
    """The default of every field of ``device``'s class that has one (a plain value, not a factory)."""
    return {f.name: f.default for f in dataclasses.fields(device) if f.default is not dataclasses.MISSING}


def device_differences(saved: dict[str, Any], device: PulsedDevice) -> list[str]:
    """``"<what>: saved <value>, own <value>"`` for the class and for every field in which the device ``saved`` (a
    :func:`device_record`) is not ``device``, fields compared as the device would (:func:`~devices.base.
    same_device_value`: ``0.001`` is ``1e-3``, ``1`` is ``1.0``, ``-0.0`` is not ``0.0``); a field only one of them
    has reads ``(none)`` on the other side. A field of the same class that the saved record lacks (one added to the
    class after the state was saved) counts as the class's default, the value that keeps the earlier behaviour (the
    project's rule for a new field), so a state saved before it loads into a device that holds that default. Empty
    when they are the same device."""
    own = device_record(device)
    out = [] if saved["class"] == own["class"] else [f"class: saved {saved['class']}, own {own['class']}"]
    theirs, mine = dict(saved["fields"]), own["fields"]
    if saved["class"] == own["class"]:
        theirs.update({k: v for k, v in _field_defaults(device).items() if k not in theirs and k in mine})
    for name in [*theirs, *(k for k in mine if k not in theirs)]:
        if not (name in theirs and name in mine and same_device_value(theirs[name], mine[name])):
            a, b = (repr(f[name]) if name in f else "(none)" for f in (theirs, mine))
            out.append(f"{name}: saved {a}, own {b}")
    return out


_SAVED_ENTRIES = {
    "seed": f"an integer in {SEED_RANGE}",
    "generator_device": "a device string that torch.device reads (str(generator.device), e.g. 'cpu' or 'cuda:0')",
    "generator_state": "the uint8 tensor of torch.Generator.get_state on that device",
}
"""What each generator entry of a :class:`TileArray`'s extra state must be (:meth:`TileArray._check_saved_state`)."""


def _new_generator(device: torch.device, seed: int) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


class TileState(nn.Module):
    """The state every tile array keeps (shared by :class:`TileArray` and :class:`crossbar.ReplicaTileArray`).

    Subclasses set ``self.config`` and ``self.grid``, then call :meth:`_register_state` with the sampled
    device parameters; the buffers are ``dp_*`` (device parameters), ``weight_tiles`` (states clipped into each
    device's bounds, initially zero), ``apparent_tiles`` (only with write noise) and ``counter_*``.
    """

    config: CrossbarConfig
    grid: TileGrid
    weight_tiles: Tensor
    apparent_tiles: Tensor
    counter_updates: Tensor
    counter_pulses: Tensor
    counter_importance_reads: Tensor
    counter_adc_conversions: Tensor
    counter_dac_conversions: Tensor
    generator: torch.Generator | CounterRNG   # TileArray: a torch.Generator; ReplicaTileArray: a CounterRNG

    def _apply(self, fn: Any, recurse: bool = True) -> "TileState":
        """``nn.Module._apply``, refusing the meta device first (:func:`check_move`)."""
        check_move(type(self).__name__, fn, self.weight_tiles)
        return super()._apply(fn, recurse)

    def _check_saved_device(self, state: object, where: str) -> None:
        """Refuse an extra state (``state``, saved by :meth:`get_extra_state`) whose ``"device"`` entry
        (:func:`device_record`) is another device than ``self.config.device`` (:func:`device_differences`): its
        ``dp_*`` buffers were sampled from that device, and loading them under this array's config (cycle-to-cycle
        and write noise, the response's fields) would run a mix of two devices. ``ValueError`` naming ``where``
        (the array, by its state-dict prefix when known), the first :data:`DEVICE_DIFFERENCES_SHOWN` differences
        with the saved and the own value, and what to do instead. A state without the entry (saved before it was
        recorded) is not checked. Load time only: compares Python values, no tensor is read."""
        saved = state.get("device") if isinstance(state, dict) else None
        if saved is None:
            return
        if not (isinstance(saved, dict) and isinstance(saved.get("class"), str)
                and isinstance(saved.get("fields"), dict)):
            raise ValueError(f"{where}: the saved extra state's 'device' entry must be a dict {{'class': <device "
                             f"class name>, 'fields': {{field: value}}}} (crossbar.tiles.device_record), got "
                             f"{saved!r}")
        diffs = device_differences(saved, self.config.device)
        if not diffs:
            return
        shown = "; ".join(diffs[:DEVICE_DIFFERENCES_SHOWN])
        more = f"; and {len(diffs) - DEVICE_DIFFERENCES_SHOWN} more" if len(diffs) > DEVICE_DIFFERENCES_SHOWN else ""
        raise ValueError(
            f"{where}: the state was saved with another device ({shown}{more}); its sampled device-to-device "
            f"parameters (dp_*) would run under this array's device config, a mix of two devices. Build the layer "
            f"with the saved device (CrossbarConfig(device={saved['class']}(**fields)), fields: the saved extra "
            f"state's ['device']['fields']), or copy only the weights: layer.set_weights(saved_layer.get_weights()). "
            f"The periphery and the update settings may differ: they are not part of the state.")

    def _check_saved_state(self, state: object, where: str) -> None:
        """Refuse an extra state (``state``, saved by ``get_extra_state``; None when the state dict has none) that
        this array cannot load, before anything is copied: :meth:`_check_saved_device` (a subclass adds its own
        checks)."""
        self._check_saved_device(state, where)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, local_metadata: dict[str, Any],
                              strict: bool, missing_keys: list[str], unexpected_keys: list[str],
                              error_msgs: list[str]) -> None:
        """``nn.Module``'s, after :meth:`_check_saved_state` of the saved extra state: a state of another device
        (or, for a :class:`~crossbar.ReplicaTileArray`, of other replica seeds) is refused before any buffer is
        copied (torch sets the extra state last). The array is named by ``prefix``, its place in the module that
        loads (e.g. ``TileArray '0.tile'``)."""
        where = f"{type(self).__name__} {prefix[:-1]!r}" if prefix else type(self).__name__
        self._check_saved_state(state_dict.get(prefix + _EXTRA_STATE), where)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def _register_state(self, params: dict[str, Tensor], device: torch.device, dtype: torch.dtype) -> None:
        """Register the buffers: ``params`` is a ``DeviceParams.state_dict()`` of the states' shape."""
        self._param_buffers: list[tuple[str, str]] = []
        for key, value in params.items():
            name = "dp_" + key.replace(".", "__")
            self.register_buffer(name, value)
            self._param_buffers.append((name, key))
        shape = next(iter(params.values())).shape
        self.register_buffer("weight_tiles", self.config.device.clip(torch.zeros(shape, device=device, dtype=dtype),
                                                                     self.params))
        # pulse_type "none": the device's bounds and write noise take no part (aihwkit builds such a tile without
        # its device); its parameters are still sampled above, so the generator's stream is that of any tile
        self.has_write_noise = (self._pulsed and bool(getattr(self.config.device, "write_noise_std", 0.0) > 0))
        if self.has_write_noise:
            self.register_buffer("apparent_tiles", self.weight_tiles.clone())
        for name in COUNTER_NAMES:
            self.register_buffer(f"counter_{name}", torch.zeros((), dtype=torch.int64, device=device))

    @property
    def _pulsed(self) -> bool:
        """Whether the update is pulsed (not ``pulse_type="none"``, whose exact update knows no device: then, as in
        aihwkit, which builds such a tile without its device, programming neither clips into the device's bounds
        nor adds its write noise)."""
        return self.config.update.pulse_type != "none"

    @_no_grad
    def _program_tiles(self, tiles: Tensor, write_noise: bool = True, clip: bool = True) -> None:
        """Set the states to ``tiles`` (the states' shape), clipped into each device's bounds (``clip=False``, or
        ``pulse_type="none"``: as given, for evaluating given weights such as inference-noise weights; an update
        from states beyond the bounds is outside the device model); with write noise the apparent states of all
        devices are redrawn (``self.generator``), or, with ``write_noise=False``, set to ``tiles`` as given
        (apparent states, like write noise, are not bounded)."""
        self.weight_tiles.copy_(self.config.device.clip(tiles, self.params) if clip and self._pulsed else tiles)
        if self.has_write_noise:
            self.apparent_tiles.copy_(self.config.device.write_noise(self.weight_tiles, self.params, self.generator)
                                      if write_noise else tiles)

    @property
    def out_features(self) -> int:
        return self.grid.out_features

    @property
    def in_features(self) -> int:
        return self.grid.in_features

    @property
    def params(self) -> DeviceParams:
        """The sampled device parameters (views of the ``dp_*`` buffers, the states' shape)."""
        return DeviceParams.from_state_dict({key: getattr(self, name) for name, key in self._param_buffers})

    def _update_params(self) -> DeviceParams:
        """:attr:`params` for the updates' hot paths, built once and reused while every ``dp_*`` buffer is still
        the same tensor object (a cache, not state: rebuilt after ``.to()``, a reassigned buffer or
        ``load_state_dict(..., assign=True)``; an in-place ``load_state_dict`` keeps the objects, which the
        cached views then read). Checked by identity on ``_buffers`` directly: an attribute read of a buffer goes
        through ``nn.Module.__getattr__`` (several µs per buffer on a slow core). Read-only: callers must not
        modify the returned object (:attr:`params` gives a fresh one)."""
        buffers = self._buffers
        cached = self.__dict__.get("_params_cache")
        if cached is not None and all(buffers[name] is t for (name, _), t in zip(self._param_buffers, cached[1])):
            return cast(DeviceParams, cached[0])
        tensors = tuple(cast(Tensor, buffers[name]) for name, _ in self._param_buffers)
        params = DeviceParams.from_state_dict({key: t for (_, key), t in zip(self._param_buffers, tensors)})
        self.__dict__["_params_cache"] = (params, tensors)
        return params

    @property
    def counters(self) -> dict[str, Tensor]:
        """Hardware counters as 0-d int64 tensors on the array's device (live buffers; read with ``int()``)."""
        return {name: getattr(self, f"counter_{name}") for name in COUNTER_NAMES}

    def reset_counters(self) -> None:
        """Set every counter to 0."""
        for name in COUNTER_NAMES:
            getattr(self, f"counter_{name}").zero_()

    def _reads_per_call(self) -> int:
        """``importance_reads`` counted by one importance read of this array (one per logical array)."""
        return 1

    def _count(self, res: MVMResult, n_vectors: int, kind: str | None, transposed: bool) -> None:
        """Hardware counters of one MVM call: ``kind`` ``"forward"``/``"backward"``, or ``None`` for an
        importance read (counted as :meth:`_reads_per_call` reads, not as MVMs); ``transposed``: the inputs drive
        the tiles' rows (backward periphery). Called on every MVM: the counter buffers are taken from ``_buffers``
        directly (an attribute read of a buffer goes through ``nn.Module.__getattr__`` after a failed lookup,
        several µs per call on a slow core).

        Conversions count *logical* lines: each pass of a tile drives its logical input lines (DAC) and converts
        its logical output lines (ADC). The zero padding of the grid's last row / column block
        (:class:`~crossbar.mapping.TileGrid`) carries no signal: a chip would neither drive nor convert it, as it
        does not the unused physical lines of a tile, and aihwkit's uneven split has none. So a layer converts the
        same lines however its grid pads (``B·R·in`` DAC and ``B·C·out`` ADC conversions per forward of ``B``
        vectors, one pass each), and both backends count the same."""
        passes = res.total_passes()
        counters = cast("dict[str, Tensor]", self._buffers)
        if kind is None:
            counters["counter_importance_reads"].add_(self._reads_per_call())
        else:
            counters[f"counter_{kind}_mvms"].add_(n_vectors)
            counters[f"counter_{kind}_passes"].add_(passes)
        adc, dac = counters["counter_adc_conversions"], counters["counter_dac_conversions"]
        col_lines, row_lines = (adc, dac) if transposed else (dac, adc)     # the counters of column / row lines
        g = self.grid
        if res.total is not None:   # one pass per vector and tile, total = (E·)R·C·B: B·(E·)R·in, B·(E·)C·out
            col_lines.add_(res.total // g.n_col_tiles * g.in_features)
            row_lines.add_(res.total // g.n_row_tiles * g.out_features)
            return
        col_lines.add_(passes, alpha=g.cols)    # passes [(E·)R, C, B]; only the last block of a grid is padded
        row_lines.add_(passes, alpha=g.rows)
        _subtract_padding(g, res.passes, col_lines, row_lines)


class TileArray(TileState):
    """A logical ``[out_features, in_features]`` weight matrix on ``R x C`` analog tiles.

    Args:
        out_features, in_features: logical matrix shape.
        config: crossbar configuration (device model, forward/backward periphery, update, tile size);
            default :class:`CrossbarConfig` ().
        device, dtype: where the states live (default CPU / ``torch.get_default_dtype()``; not the meta device,
            :func:`check_state_device`).
        seed: seed of the array's generator (device-to-device sampling and all later noise). ``None``
            draws one from torch's global generator (so ``torch.manual_seed`` makes it reproducible).
        size_names: ``(owner, rows, columns)``: how a refusal of :func:`~crossbar.config.check_tile_sums` names the
            array's sizes (default ``("TileArray", "out_features", "in_features")``); a layer whose matrix sizes
            are not its arguments passes its own (:class:`~crossbar.modules.AnalogConv2d`).

    Its ``state_dict`` loads only into an array of the same device model and field values (``ValueError`` naming
    the differing fields otherwise; the periphery and the update settings may differ): see the module docstring.
    """

    generator: torch.Generator

    def __init__(self, out_features: int, in_features: int, config: CrossbarConfig | None = None, *,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                 seed: int | None = None,
                 size_names: tuple[str, str, str] = ("TileArray", "out_features", "in_features")) -> None:
        super().__init__()
        cfg = CrossbarConfig() if config is None else config
        if not isinstance(cfg, CrossbarConfig):
            raise ValueError(f"TileArray.config must be a crossbar.CrossbarConfig, got {cfg!r}")
        self.config = cfg
        self.grid = TileGrid(_check_size("TileArray", "out_features", out_features),
                             _check_size("TileArray", "in_features", in_features), cfg.tile_rows, cfg.tile_cols)
        check_tile_sums(cfg, self.grid, size_names[0], size_names[1:])
        device = check_state_device("TileArray.device", device)
        dtype = torch.get_default_dtype() if dtype is None else dtype
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise ValueError(f"TileArray.dtype must be a floating-point torch.dtype (e.g. torch.float32; the device "
                             f"states are real numbers), got {dtype!r}")
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,)).item())
        self.seed = check_seed("TileArray", seed)
        self.generator = _new_generator(device, self.seed)
        shape = (self.grid.n_tiles, self.grid.rows, self.grid.cols)
        self._register_state(cfg.device.sample(shape, self.generator, device, dtype).state_dict(), device, dtype)

    # ------------------------------------------------------------------ basic properties
    @property
    def tiles(self) -> Tensor:
        """States the MVMs see, ``[R, C, rows, cols]`` (apparent states if the device has write noise)."""
        w = self.apparent_tiles if self.has_write_noise else self.weight_tiles
        return w.view(self.grid.n_row_tiles, self.grid.n_col_tiles, self.grid.rows, self.grid.cols)

    def extra_repr(self) -> str:
        g = self.grid
        return (f"out_features={g.out_features}, in_features={g.in_features}, tiles={g.n_row_tiles}x"
                f"{g.n_col_tiles} of {g.rows}x{g.cols}, device={type(self.config.device).__name__}")

    # ------------------------------------------------------------------ programming and reading
    @_no_grad
    def program(self, weight: Tensor, write_noise: bool = True, clip: bool = True) -> None:
        """Set the states to ``weight: [out, in]`` (clipped into each device's bounds, as aihwkit's set_weights;
        ``clip=False``: as given, see :meth:`_program_tiles`).

        With write noise the apparent states of all devices are redrawn; ``write_noise=False`` makes the MVMs of
        such a device see ``weight`` itself, unclipped (to evaluate given weights exactly, e.g. weights after
        inference noise, which replaces the write noise); without write noise the MVMs see the clipped states.

        Raises:
            ValueError: ``weight`` has a NaN or ±Inf entry (:func:`check_finite_weights`; the states are left as
                they were).
        """
        check_finite_weights("TileArray.program", weight.detach())
        w = weight.detach().to(device=self.weight_tiles.device, dtype=self.weight_tiles.dtype)
        self._program_tiles(self.grid.to_tiles(w), write_noise, clip)

    @_no_grad
    def read(self, hidden: bool = False) -> Tensor:
        """The weight matrix ``[out, in]`` exactly (a copy): the states the MVMs see, or the hidden states."""
        w = self.weight_tiles if (hidden or not self.has_write_noise) else self.apparent_tiles
        return self.grid.from_tiles(w).clone()

    # ------------------------------------------------------------------ MVMs
    @_no_grad
    def forward(self, x: Tensor) -> Tensor:
        """Forward MVM ``y = W x`` through the forward periphery: ``x: [..., in] -> [..., out]``.

        Every tile's partial sum goes through its own ADC (and noise/bound management); the partial sums
        of a row of tiles are then added digitally.
        """
        _check_vectors("forward", "x", x, self.in_features)
        _check_dtype("forward", "x", x, cast(Tensor, self._buffers["weight_tiles"]).dtype)
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        res = analog_mvm(self.tiles, self.grid.split_inputs(x2), self.config.forward, self.generator)
        y = _sum_blocks(res.out, 1).permute(1, 0, 2)            # [B, R, rows]
        self._count(res, x2.shape[0], "forward", False)
        return self.grid.merge_outputs(y).reshape(*lead, self.out_features)

    @_no_grad
    def backward(self, d: Tensor) -> Tensor:
        """Backward (transposed) MVM ``Wᵀ d`` through the backward periphery: ``d: [..., out] -> [..., in]``."""
        _check_vectors("backward", "d", d, self.out_features)
        _check_dtype("backward", "d", d, cast(Tensor, self._buffers["weight_tiles"]).dtype)
        lead = d.shape[:-1]
        d2 = d.reshape(-1, self.out_features)
        res = analog_mvm(self.tiles, self.grid.split_outputs(d2), self.config.backward, self.generator,
                         transposed=True)
        z = _sum_blocks(res.out, 0).permute(1, 0, 2)            # [B, C, cols]
        self._count(res, d2.shape[0], "backward", True)
        return self.grid.merge_inputs(z).reshape(*lead, self.in_features)

    # ------------------------------------------------------------------ update
    @_no_grad
    def update(self, x: Tensor, d: Tensor, lr: float | Tensor) -> None:
        """In-memory update, ``W`` moves by about ``-lr · Σ_b d_b x_bᵀ`` (aihwkit's ``tile.update``).

        Args:
            x: ``[..., in]`` layer inputs (flattened to ``[B, in]``).
            d: ``[..., out]`` gradients w.r.t. the layer outputs (flattened to ``[B, out]``).
            lr: learning rate (number or 0-d tensor).

        Pulsed types: :func:`crossbar.update.pulse_counts` per tile, then the device model applies the
        counts to all tiles at once. ``pulse_type="none"``: exact float update without device (no bounds),
        as aihwkit's ``PulseType.NONE``, which builds the tile without its device: :meth:`program` then neither
        clips into the device's bounds nor adds its write noise either
        (``test_update_vs_aihwkit.py::test_pulse_type_none_programs_and_updates_as_aihwkit``).

        Raises:
            ValueError: ``lr`` is a non-finite number, a tensor of more than one element or on another device, or
                (on the CPU) a tensor holding a NaN or an Inf (:func:`crossbar.update._check_update_lr`), any pulse
                type.
            FloatingPointError: pulsed types on the CPU only, in every BL / update management configuration: a NaN
                or an Inf in ``x`` or ``d`` would reach a tile whose other operand is not all zero in that sample
                (:func:`crossbar._sparse_update.cpu_pulse_counts`); the states are left untouched. The sync-free
                (GPU) path reads nothing on the host and does not check (the training loop's loss check does).
        """
        _check_vectors("update", "x", x, self.in_features)
        _check_vectors("update", "d", d, self.out_features)
        x2 = x.reshape(-1, self.in_features)
        d2 = d.reshape(-1, self.out_features)
        if x2.shape[0] != d2.shape[0]:
            raise ValueError(f"TileArray.update: x and d need the same number of vectors, got "
                             f"{tuple(x.shape)} and {tuple(d.shape)}")
        xt = self.grid.split_inputs(x2.to(self.weight_tiles.dtype))
        dt = self.grid.split_outputs(d2.to(self.weight_tiles.dtype))
        shape = self.weight_tiles.shape
        cfg = self.config
        if cfg.update.pulse_type == "none":
            self.weight_tiles.add_(ideal_delta(xt, dt, lr).reshape(shape).to(self.weight_tiles.dtype))
            if self.has_write_noise:
                self.apparent_tiles.copy_(self.weight_tiles)
        else:
            self._pulsed_update(xt, dt, lr)
        self.counter_updates.add_(1)

    def _pulsed_update(self, xt: Tensor, dt: Tensor, lr: float | Tensor) -> None:
        """Pulse trains of every tile, their coincidence counts, the device response (see :meth:`update`).

        CPU (host reads are free there): :func:`crossbar._sparse_update.cpu_pulse_counts` trims the trains to
        ``max(BL)`` slots and, when few lines fire / few devices get pulses, draws and counts them sparsely;
        the device model then updates only the devices with pulses (``apply_pulses_at_``, parameters gathered
        from their packed copy, write noise redrawn for those devices only). Dense counts take the same path
        whenever the device model would compute only the devices with pulses (``PulsedDevice._pulsed_subset``).
        GPUs: fixed-length dense trains and counts, every device computed, no host synchronisation (hence no
        NaN / Inf check, which the CPU makes from the maxima of ``x`` and ``d``). Same distribution either way.
        """
        cfg = self.config
        device = cfg.device
        params = self._update_params()
        shape = self.weight_tiles.shape
        if host_reads_free(self.weight_tiles):
            subset = type(device).apply_pulses_ is PulsedDevice.apply_pulses_    # the device may update a subset
            index, n_up, n_down, total = cpu_pulse_counts(xt, dt, lr, device.granularity, cfg.update,
                                                          self.generator,
                                                          device.SPARSE_PULSES_PER_DEVICE if subset else None)
            if index is None and subset:
                # dense counts: when the device model computes only the devices with pulses, so does the sparse
                # path below (with their packed parameters, and their write noise only)
                n_up = n_up.reshape(shape)                  # integer-valued, int32 or float (see CpuCounts)
                n_down = n_down.reshape(shape)
                index = device._pulsed_subset(self.weight_tiles, n_up, n_down, params, self.generator, float(total))
                if index is None:
                    device._pulsed_states(self.weight_tiles, n_up, n_down, params, self.generator,
                                          out=self.weight_tiles)
                    self._dense_write_noise(n_up, n_down, params)
                    self.counter_pulses.add_(total)
                    return
                n_up = n_up.reshape(-1).index_select(0, index)
                n_down = n_down.reshape(-1).index_select(0, index)
        else:
            plan = _plan_trains(xt, dt, lr, device.granularity, cfg.update, self.generator, trim_slots=False)
            trains = _draw_dense_trains(plan, self.generator)
            fired_x, fired_d = trains.fired()
            total = (fired_x * fired_d).to(torch.int64).sum()      # exact number of coincidences (pulses)
            index = None
            n_up, n_down, _ = _dense_counts(trains, total)
        # the states always lie within their bounds (programmed clipped, updated clipped): updated in place
        if index is not None:
            if index.numel() > 0:
                sub = self._params_at(index)
                device.apply_pulses_at_(self.weight_tiles, index, n_up, n_down, sub, self.generator)
                if self.has_write_noise:
                    noisy = device.write_noise(self.weight_tiles.view(-1).index_select(0, index), sub,
                                               self.generator)
                    self.apparent_tiles.view(-1).index_copy_(0, index, noisy)
        else:
            n_up = n_up.reshape(shape)
            n_down = n_down.reshape(shape)
            device.apply_pulses_(self.weight_tiles, n_up, n_down, params, self.generator)
            self._dense_write_noise(n_up, n_down, params)
        self.counter_pulses.add_(total)

    def _dense_write_noise(self, n_up: Tensor, n_down: Tensor, params: DeviceParams) -> None:
        """With write noise: redraw the apparent states of the devices with pulses (counts ``[*states]``)."""
        if self.has_write_noise:
            touched = (n_up + n_down) > 0
            noisy = self.config.device.write_noise(self.weight_tiles, params, self.generator)
            self.apparent_tiles.copy_(torch.where(touched, noisy, self.apparent_tiles))

    def _params_at(self, index: Tensor) -> DeviceParams:
        """The sampled parameters of the devices ``index`` (``[n]`` flat indices), each tensor ``[n]``.

        On the CPU, gathering a few scattered devices from several large arrays is dominated by cache misses;
        the parameters are therefore also kept packed, one 16-byte group per device and four float32 (two
        float64) parameters, as complex128 arrays (a cache, not state: rebuilt whenever a ``dp_*`` buffer was
        replaced or modified in place, e.g. by ``load_state_dict`` or ``.to()``).
        """
        buffers = [getattr(self, name) for name, _ in self._param_buffers]
        key = tuple((b.data_ptr(), b._version) for b in buffers)
        if self.__dict__.get("_packed_key") != key:
            self.__dict__["_packed"] = _pack_rows(buffers)
            self.__dict__["_packed_key"] = key
        per_group = 16 // buffers[0].element_size()          # parameters per 16-byte group (also for n = 0)
        columns = torch.cat([part.index_select(0, index).view(buffers[0].dtype).view(-1, per_group)
                             for part in self.__dict__["_packed"]], dim=1)
        return DeviceParams.from_state_dict({key: columns[:, k] for k, (_, key) in enumerate(self._param_buffers)})

    # ------------------------------------------------------------------ importance reads
    def _exact_sums(self, signed: bool, dim: int) -> Tensor:
        """Sums of the states the MVMs see (``|w|`` unless ``signed``) within each tile along ``dim`` (-1: rows,
        ``[R, C, rows]``; -2: columns, ``[R, C, cols]``). Padding positions are excluded: with write noise their
        apparent states need not be zero."""
        w = self.tiles
        if self.grid.padded_out > self.out_features or self.grid.padded_in > self.in_features:
            w = w * self._padding_free_mask()
        return (w if signed else w.abs()).sum(dim=dim)

    def _padding_free_mask(self) -> Tensor:
        """``[R, C, rows, cols]`` 1 where a tile position holds a logical weight, 0 on padding (a cache)."""
        w = self.weight_tiles
        key = (w.dtype, w.device)
        cached = self.__dict__.get("_logical_mask")
        if cached is None or cached[0] != key:
            mask = self.grid.tile_mask(device=w.device, dtype=w.dtype)
            cached = (key, mask.view(self.grid.n_row_tiles, self.grid.n_col_tiles, self.grid.rows, self.grid.cols))
            self.__dict__["_logical_mask"] = cached
        return cached[1]

    @_no_grad
    def row_sums(self, mode: str = "exact", signed: bool = False, g_offset: float = 0.0) -> Tensor:
        """Row sums ``[out]`` of the weights (GRAPES importance: ``Σ_j |w_ij|``).

        Args:
            mode: ``"exact"``: computed digitally from the states (no noise). ``"hardware"``: one read with
                every input line at full scale (all-ones input) through the **forward** periphery: each
                tile's row currents go through its own ADC (quantization, saturation, noise, noise/bound
                management), the tiles of a row are added digitally. Counts one ``importance_reads``.
            signed: ``False`` (default): sum of ``|w|``. In hardware this is the differential-pair read:
                ``w = G⁺ − G⁻`` with ``G⁺ = max(w, 0) + g_offset``, ``G⁻ = max(−w, 0) + g_offset`` and the
                two currents *added* before the ADC, giving ``Σ_j (G⁺ + G⁻) = Σ_j |w_ij| + 2·g_offset·in``.
                ``True``: the plain signed-array read, ``Σ_j w_ij`` (what an all-ones read of a single
                signed array gives; it is *not* ``Σ|w|``).
            g_offset: per-device conductance at the pair's minimum, in weight units (>= 0); ``0`` means
                the unused device of each pair sits at zero so the pair read equals ``Σ|w|``.
        """
        self._check_sum_args(mode, g_offset)
        if mode == "exact":     # per tile, then the tiles of a row added (padding holds no logical weight)
            out = self._merged(self._exact_sums(signed, -1).unsqueeze(2), False)
            return out + pair_offset(g_offset, self.in_features) if g_offset and not signed else out
        return _hardware_sums([self], False, signed, g_offset)[0][0]

    @_no_grad
    def col_sums(self, mode: str = "exact", signed: bool = False, g_offset: float = 0.0) -> Tensor:
        """Column sums ``[in]`` (``Σ_i |w_ij|``); ``"hardware"`` reads through the **backward** periphery.

        Same arguments as :meth:`row_sums` (``g_offset`` adds ``2·g_offset·out``).
        """
        self._check_sum_args(mode, g_offset)
        if mode == "exact":
            out = self._merged(self._exact_sums(signed, -2).unsqueeze(2), True)
            return out + pair_offset(g_offset, self.out_features) if g_offset and not signed else out
        return _hardware_sums([self], True, signed, g_offset)[0][0]

    def _ones_plan(self, transposed: bool) -> tuple[Tensor, _OnesRead | None]:
        """The all-ones input laid out per tile block and what its reads through the forward
        (``transposed=False``) or backward periphery reuse (``None``: a perfect periphery or a random DAC), computed
        once per periphery and dtype/device (a cache, not state)."""
        p = self.config.backward if transposed else self.config.forward
        w = cast(Tensor, self._buffers["weight_tiles"])
        # keyed by the periphery object (not its value: no hash of its every field per read); the entry holds it,
        # so its id is not reused while the entry lives
        key = (transposed, id(p), w.dtype, w.device)
        cache: dict[tuple[Any, ...], tuple[IOParameters, tuple[Tensor, _OnesRead | None]]] = \
            self.__dict__.setdefault("_ones_inputs", {})
        hit = cache.get(key)
        if hit is None:
            hit = cache[key] = (p, self._new_ones_plan(transposed, p))
        return hit[1]

    def _new_ones_plan(self, transposed: bool, p: IOParameters) -> tuple[Tensor, _OnesRead | None]:
        """What :meth:`_ones_plan` caches for periphery ``p``."""
        w, g = self.weight_tiles, self.grid
        n = self.out_features if transposed else self.in_features
        ones = torch.ones(1, n, device=w.device, dtype=w.dtype)
        x_tiles = g.split_outputs(ones) if transposed else g.split_inputs(ones)
        prepared = prepare_inputs(x_tiles, p, transposed)
        if prepared is None:
            return x_tiles, None
        # the input lines of each tile block laid out against the tiles, [R, 1, rows, 1] (backward) or
        # [1, C, 1, cols] (forward): 1 on logical lines, 0 on padding; then repeated for every tile, [T, ...]
        lines = (x_tiles[0].view(-1, 1, x_tiles.shape[-1], 1) if transposed
                 else x_tiles[0].view(1, -1, 1, x_tiles.shape[-1]))
        n_lines = lines.sum(dim=-2 if transposed else -1, keepdim=True)
        per_tile = (g.n_row_tiles, g.n_col_tiles)
        lines = lines.expand(*per_tile, *lines.shape[2:]).reshape(g.n_tiles, *lines.shape[2:])
        n_lines = n_lines.expand(*per_tile, 1, 1).reshape(g.n_tiles, 1, 1)
        # the first block's codes and scales serve every block (and the arrays read together, hardware_sums)
        codes = prepared.xq.amax(dim=-1, keepdim=True)[:1, :1]
        scales = full_scale_scales(prepared, p)
        padded = n < (g.padded_out if transposed else g.padded_in)
        return x_tiles, _OnesRead(prepared, codes, lines if padded else None, n_lines,
                                  None if scales is None else scales[:1, :1].unsqueeze(-1))

    def _merged(self, per_tile: Tensor, transposed: bool) -> Tensor:
        """Per-tile partial sums of the rows (``transposed``: columns) added over the tiles of each row (column) of
        the layer: ``[out]`` (``[in]``), padding dropped. ``per_tile`` holds the tiles in their flat order
        ``t = r * C + c`` in its leading dims and the ``n`` lines of a tile in its last: ``[R, C, 1, n]``,
        ``[1, T, 1, n]`` or ``[T, 1, n]``. (The sum over the tile columns is ``[R, 1, rows]``, row block by row
        block: flat, it is the padded output vector, as ``merge_outputs`` lays it out; likewise the columns.) One
        operation when a single block is summed (a view: the sum of one term is that term) or the grid has a single
        row (column) block."""
        g = self.grid
        n_r, n_c = g.n_row_tiles, g.n_col_tiles
        summed, kept = (n_r, n_c) if transposed else (n_c, n_r)
        if summed == 1:
            merged = per_tile.reshape(-1)
        elif kept == 1:     # every tile in the one block: the leading dims summed at once ([n])
            merged = per_tile.sum(dim=tuple(range(per_tile.dim() - 1)))
        else:
            blocks = per_tile if per_tile.shape[:2] == (n_r, n_c) else per_tile.reshape(n_r, n_c, 1, -1)
            merged = blocks.sum(dim=0 if transposed else 1).reshape(-1)
        n = g.in_features if transposed else g.out_features
        return merged[:n] if merged.shape[0] > n else merged

    def _ones_products(self, read: _OnesRead, signed: bool, g_offset: float,
                       transposed: bool) -> tuple[Tensor, Tensor]:
        """The noise-free analog products of an all-ones read (deterministic DAC), ``[1, T, rounds, n_out]`` (the
        tiles in their flat order), and the line sums they come from, ``[T, 1, n_out]``: ``Σ |w|`` (``w`` when
        ``signed``) over each tile's logical lines, without the offset — the exact sums, bit for bit. The products
        are each round's DAC code times the line sums of ``|w| + 2·g_offset``: one reduction of the tiles instead
        of a matmul per round (the same values up to float rounding)."""
        w = cast(Tensor, self._buffers["apparent_tiles" if self.has_write_noise else "weight_tiles"])  # [T, rows, cols]
        m = w if signed else w.abs()
        if read.lines is not None:
            m = m * read.lines
        sums = m.sum(-2, True) if transposed else m.sum(-1).unsqueeze(-2)   # [T, 1, n_out]
        if g_offset and not signed:
            return read.codes * torch.add(sums, read.n_lines, alpha=pair_offset(g_offset)), sums
        return read.codes * sums, sums

    def _ones_read(self, signed: bool, g_offset: float, transposed: bool) -> MVMResult:
        """One read with every input line at full scale through :func:`~crossbar.periphery.analog_mvm`, all
        bound-management rounds at once (an all-ones read nearly always saturates the first); what
        :func:`hardware_sums` does where :func:`~crossbar.periphery.full_scale_adc` does not apply."""
        p = self.config.backward if transposed else self.config.forward
        x_tiles, read = self._ones_plan(transposed)
        w = self.tiles
        if read is None:   # a perfect periphery or a random DAC: the generic MVM
            mat = w if signed else (w.abs() + pair_offset(g_offset) if g_offset else w.abs())
            return analog_mvm(mat, x_tiles, p, self.generator, transposed, try_first_round=False)
        products = self._ones_products(read, signed, g_offset, transposed)[0]
        return analog_mvm(w, x_tiles, p, self.generator, transposed, prepared=read.prepared,
                          products=products.view(*w.shape[:2], *products.shape[2:]))

    @staticmethod
    def _check_sum_args(mode: str, g_offset: float) -> None:
        if mode not in ("exact", "hardware"):
            raise ValueError(f"TileArray sums: mode must be 'exact' or 'hardware', got {mode!r}")
        if not g_offset >= 0:
            raise ValueError(f"TileArray sums: g_offset must be >= 0, got {g_offset!r}")

    # ------------------------------------------------------------------ state and devices
    def get_extra_state(self) -> dict[str, Any]:
        """The seed, the generator's device and state, and the device model the ``dp_*`` buffers were sampled from
        (``"device"``: :func:`device_record`)."""
        return {"seed": self.seed, "generator_device": str(self.generator.device),
                "generator_state": self.generator.get_state(), "device": device_record(self.config.device)}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`get_extra_state`'s state; ``ValueError`` for one saved with another device model
        (:meth:`TileState._check_saved_device`; a state without the ``"device"`` entry, saved before it was
        recorded, loads as it did) or whose generator entries it cannot restore (:meth:`_check_saved_state`;
        ``load_state_dict`` checks both before anything is copied)."""
        self._check_saved_state(state, type(self).__name__)
        self.seed = int(state["seed"])
        if torch.device(state["generator_device"]) == self.generator.device:
            self.generator.set_state(state["generator_state"])
        else:  # saved on another device type: continue deterministically from the saved state
            src = torch.Generator(device="cpu")
            src.manual_seed(self.seed)
            if torch.device(state["generator_device"]).type == "cpu":
                src.set_state(state["generator_state"])
            seed = int(torch.randint(0, 2**62, (1,), generator=src).item())
            self.generator = _new_generator(self.weight_tiles.device, seed)

    def _check_saved_state(self, state: object, where: str) -> None:
        """:meth:`TileState._check_saved_state`, and a state whose ``"seed"``, ``"generator_device"`` or
        ``"generator_state"`` entry (every version's :meth:`get_extra_state` wrote them) is missing or not what
        :meth:`set_extra_state` restores — an integer seed in :data:`~devices.base.SEED_RANGE`, a device string
        ``torch.device`` reads, a ``torch.Generator`` state (tried on a new generator of the device that would take
        it) — refused: ``ValueError`` naming ``where`` and the entry, before ``load_state_dict`` copies any buffer
        (torch sets the extra state last: set_extra_state's ``KeyError``/``TypeError``/``RuntimeError`` came after
        the saved weights and ``dp_*`` were copied, leaving the layer half-loaded). No extra state at all
        (``None``) is torch's missing key."""
        super()._check_saved_state(state, where)
        if state is None:
            return
        problem = self._saved_generator_problem(state)
        if problem is not None:
            entry, valid, got = problem
            raise ValueError(f"{where}: the saved extra state's {entry!r} entry must be {valid} "
                             f"(TileArray.get_extra_state), got {got}")

    def _saved_generator_problem(self, state: object) -> tuple[str, str, str] | None:
        """``(entry, what it must be, what it is)`` for the first of the saved generator entries ``state`` (an extra
        state) lacks or holds unreadable, or ``None`` (:meth:`_check_saved_state`)."""
        for entry in ("seed", "generator_device", "generator_state"):
            if not (isinstance(state, dict) and entry in state):
                where = repr(state if not isinstance(state, dict) else sorted(state))
                return entry, _SAVED_ENTRIES[entry], f"no {entry!r} entry in {where}"
        assert isinstance(state, dict)
        seed, device, gen_state = state["seed"], state["generator_device"], state["generator_state"]
        if not is_seed(seed):
            return "seed", _SAVED_ENTRIES["seed"], repr(seed)
        try:
            saved_device = torch.device(device) if isinstance(device, (str, torch.device)) else None
        except RuntimeError as err:
            return "generator_device", _SAVED_ENTRIES["generator_device"], f"{device!r} ({err})"
        if saved_device is None:
            return "generator_device", _SAVED_ENTRIES["generator_device"], repr(device)
        if not (isinstance(gen_state, Tensor) and gen_state.dtype == torch.uint8):
            got = (f"a {gen_state.dtype} tensor of shape {tuple(gen_state.shape)}" if isinstance(gen_state, Tensor)
                   else repr(gen_state))
            return "generator_state", _SAVED_ENTRIES["generator_state"], got
        # the generator set_extra_state gives it to: this array's (same device) or a CPU one (saved on the CPU)
        target = (self.generator.device if saved_device == self.generator.device
                  else torch.device("cpu") if saved_device.type == "cpu" else None)
        if target is not None:
            try:
                torch.Generator(device=target).set_state(gen_state)
            except RuntimeError as err:
                return ("generator_state", _SAVED_ENTRIES["generator_state"],
                        f"a state of {gen_state.numel()} bytes that a generator on {str(target)!r} refuses ({err})")
        return None

    def _apply(self, fn: Any, recurse: bool = True) -> "TileArray":
        super()._apply(fn, recurse)
        for key in _CACHES:
            self.__dict__.pop(key, None)
        device = self.weight_tiles.device
        if self.generator.device != device:
            seed = int(torch.randint(0, 2**62, (1,), generator=self.generator,
                                     device=self.generator.device).item())
            self.generator = _new_generator(device, seed)
        return self

    def __deepcopy__(self, memo: dict) -> "TileArray":
        import copy

        cls = type(self)
        new = cls.__new__(cls)
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            if key in _CACHES:
                continue
            if key == "generator":
                gen = torch.Generator(device=value.device)
                gen.set_state(value.get_state())
                new.__dict__[key] = gen
            else:
                new.__dict__[key] = copy.deepcopy(value, memo)
        return new

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in _CACHES:
            state.pop(key, None)
        gen = state.pop("generator")
        state["_generator_pickle"] = (str(gen.device), gen.get_state())
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        dev, gen_state = state.pop("_generator_pickle")
        gen = torch.Generator(device=dev)
        gen.set_state(gen_state)
        state["generator"] = gen
        super().__setstate__(state)


@_no_grad
def hardware_sums(arrays: Sequence[TileArray], transposed: bool = False, signed: bool = False,
                  g_offset: float = 0.0) -> list[Tensor]:
    """Hardware row sums (``transposed=False``, ``[out]`` each) or column sums (``[in]``) of several tile arrays:
    ``[a.row_sums("hardware", signed, g_offset) for a in arrays]`` (:meth:`TileArray.row_sums` /
    :meth:`TileArray.col_sums`), the same numbers, with the ADC side of the arrays that share a periphery computed
    in one batched call — as a chip reads all its tiles at once.

    Each array's output noise comes from its own generator, in the order of ``arrays``; the arrays batched
    together are those with equal periphery (forward, or backward when ``transposed``), dtype, device, rounds and
    output lines per tile, a deterministic DAC and :func:`~crossbar.periphery.full_scale_adc` applicable; the
    others are read one by one. Counts one ``importance_reads`` per array.
    """
    return _hardware_sums(arrays, transposed, signed, g_offset)[0]


@_no_grad
def hardware_and_exact_sums(arrays: Sequence[TileArray], exact: Sequence[bool], transposed: bool = False,
                            signed: bool = False, g_offset: float = 0.0) -> tuple[list[Tensor], list[Tensor | None]]:
    """:func:`hardware_sums`, and for each array with ``exact[k]`` its exact sums (``row_sums("exact", signed)`` /
    ``col_sums``, without the offset; ``None`` for the others): with a deterministic DAC the line sums the read's
    analog products come from (bit for bit the exact sums, at no extra pass over the tiles), else computed
    separately."""
    if len(exact) != len(arrays):
        raise ValueError(f"hardware_and_exact_sums: exact needs one flag per array ({len(arrays)}), got {len(exact)}")
    return _hardware_sums(arrays, transposed, signed, g_offset, exact)


def _hardware_sums(arrays: Sequence[TileArray], transposed: bool, signed: bool, g_offset: float,
                   exact: Sequence[bool] = ()) -> tuple[list[Tensor], list[Tensor | None]]:
    return HardwareSumsPlan(arrays, transposed, signed, g_offset).read(exact)


class _Batched(NamedTuple):
    """An array of a :class:`HardwareSumsPlan` read through the batched :func:`~crossbar.periphery.full_scale_adc`:
    its ``position`` in the plan, its cached all-ones ``read`` (:meth:`TileArray._ones_plan`), the output
    noise std of its periphery, its tile count, and its counters: the buffer names of ``importance_reads`` and of
    the column-line and row-line conversions, with their increments ``[reads, column lines, row lines]`` per read
    (one bound-management round: one pass per tile) or, with ``per_pass``, the line increments per pass of a tile
    (several rounds: the passes are data; the padding lines of the last blocks are subtracted per pass too)."""

    position: int
    array: TileArray
    read: _OnesRead
    out_noise: float
    n_tiles: int
    counters: tuple[str, str, str]
    increments: list[int]
    per_pass: bool


class _AdcGroup(NamedTuple):
    """Arrays of a :class:`HardwareSumsPlan` sharing one periphery, dtype, device, rounds and output lines per tile:
    one call of their ``adc`` on their tiles side by side (``sizes``: each member's tile count, to split them back
    out), with the first member's ``scales``."""

    adc: FullScaleADC
    scales: Tensor
    members: tuple[_Batched, ...]
    sizes: list[int]
    per_pass: bool


class HardwareSumsPlan:
    """What repeated :func:`hardware_and_exact_sums` reads of the same tile arrays reuse (GRAPES reads every hidden
    layer's importance on every refresh): which arrays take the batched full-scale ADC and which the generic MVM,
    the ADC groups (arrays sharing a periphery, dtype, device, rounds and tile size), each array's cached all-ones
    read, its counter names and increments, and the one-tensors of the counter update — decided once instead of on
    every read (hashing each periphery for the grouping, grid arithmetic per array).

    Args:
        arrays, transposed, signed, g_offset: as :func:`hardware_sums`.

    A plan depends on each array's configuration (its peripheries) and on its states' dtype and device (the cached
    reads' tensors); :meth:`is_current` tells whether these are still the ones it was made for (the same config
    object and the same ``weight_tiles`` buffer: ``.to()`` to another dtype or device and ``load_state_dict(...,
    assign=True)`` replace the buffer). Everything else — the states, their write-noise copies, the generators, the
    counter buffers — is looked up on every read, so a current plan reads exactly what a new one would. (A plan keeps
    the config and states buffer it was made for alive until it is dropped.)
    """

    def __init__(self, arrays: Sequence[TileArray], transposed: bool = False, signed: bool = False,
                 g_offset: float = 0.0) -> None:
        TileArray._check_sum_args("hardware", g_offset)
        self.arrays = tuple(arrays)
        self.transposed, self.signed, self.g_offset = transposed, signed, g_offset
        self._deps = [(a, a.config, a._buffers["weight_tiles"]) for a in self.arrays]
        self._generic: list[int] = []       # positions of the arrays read through analog_mvm
        groups: dict[tuple[Any, ...], list[_Batched]] = {}
        for i, a in enumerate(self.arrays):
            p = a.config.backward if transposed else a.config.forward
            read = a._ones_plan(transposed)[1]
            if read is None or read.scales is None:
                self._generic.append(i)
                continue
            w = a.weight_tiles
            rounds, n_out = read.codes.shape[2], (a.grid.cols if transposed else a.grid.rows)
            groups.setdefault((p, rounds, w.dtype, w.device, n_out), []).append(self._batched(i, a, read, rounds))
        self._groups = [_AdcGroup(FullScaleADC(p, rounds, device), cast(Tensor, members[0].read.scales),
                                  tuple(members), [m.n_tiles for m in members], any(m.per_pass for m in members))
                        for (p, rounds, _dtype, device, _), members in groups.items()]
        by_device: dict[torch.device, list[_Batched]] = {}
        for group in self._groups:
            for m in group.members:
                by_device.setdefault(m.array.weight_tiles.device, []).append(m)
        # per device: its batched arrays and the all-ones factors of their counter update
        self._counted = [(members, [_int_one(device)] * (3 * len(members))) for device, members in by_device.items()]

    def _batched(self, index: int, a: TileArray, read: _OnesRead, rounds: int) -> _Batched:
        """The :class:`_Batched` entry of array ``a`` (its counters as :meth:`TileState._count` counts a read)."""
        g, transposed = a.grid, self.transposed
        col_lines, row_lines = (("counter_adc_conversions", "counter_dac_conversions") if transposed
                                else ("counter_dac_conversions", "counter_adc_conversions"))
        p = a.config.backward if transposed else a.config.forward
        if rounds == 1:     # one pass per tile: R·C passes, R·in column and C·out row line conversions
            increments = [a._reads_per_call(), g.n_row_tiles * g.in_features, g.n_col_tiles * g.out_features]
        else:               # per pass of a tile; the padding's lines subtracted (_subtract_padding)
            increments = [a._reads_per_call(), g.cols, g.rows]
        return _Batched(index, a, read, float(p.out_noise), g.n_tiles, ("counter_importance_reads", col_lines,
                                                                        row_lines), increments, rounds > 1)

    def is_current(self) -> bool:
        """Whether every array still has the configuration and states buffer the plan was made for."""
        for a, config, w in self._deps:
            if a.config is not config or a._buffers["weight_tiles"] is not w:
                return False
        return True

    @_no_grad
    def read(self, exact: Sequence[bool] = ()) -> tuple[list[Tensor], list[Tensor | None]]:
        """One read of every array: :func:`hardware_and_exact_sums` ``(arrays, exact, transposed, signed,
        g_offset)``, the same numbers and counters (the caller makes sure that the plan :meth:`is_current`)."""
        arrays, transposed = self.arrays, self.transposed
        if exact and len(exact) != len(arrays):
            raise ValueError(f"HardwareSumsPlan.read: exact needs one flag per array ({len(arrays)}), got {len(exact)}")
        sums: list[Tensor | None] = [None] * len(arrays)
        exacts: list[Tensor | None] = [None] * len(arrays)
        for i in self._generic:
            a = arrays[i]
            res = a._ones_read(self.signed, self.g_offset, transposed)
            a._count(res, 1, None, transposed)
            sums[i] = a._merged(res.out, transposed)
            if exact and exact[i]:
                exacts[i] = (a.col_sums if transposed else a.row_sums)("exact", self.signed)
        passes: list[Tensor | None] = [None] * len(arrays)
        for group in self._groups:
            ys = [self._products(m, exact, exacts) for m in group.members]   # [1, T, rounds, n_out] each
            # the tiles of the arrays sharing the periphery side by side, [1, ΣT, rounds, n_out]: one ADC call
            out, group_passes = group.adc(ys[0] if len(ys) == 1 else torch.cat(ys, dim=1), group.scales)
            outs = (out,) if len(ys) == 1 else out.split_with_sizes(group.sizes, dim=1)
            if group.per_pass:
                assert group_passes is not None
                split = (group_passes,) if len(ys) == 1 else group_passes.split_with_sizes(group.sizes, dim=1)
                for m, m_passes in zip(group.members, split):
                    passes[m.position] = m_passes
            for m, m_out in zip(group.members, outs):
                sums[m.position] = m.array._merged(m_out, transposed)
        self._count(passes)
        return cast("list[Tensor]", sums), exacts

    def _products(self, m: _Batched, exact: Sequence[bool], exacts: list[Tensor | None]) -> Tensor:
        """The analog outputs of batched array ``m`` before its ADC (products plus output noise); its exact sums
        into ``exacts`` when ``exact`` asks for them."""
        a = m.array
        y, line_sums = a._ones_products(m.read, self.signed, self.g_offset, self.transposed)
        if exact and exact[m.position]:
            exacts[m.position] = a._merged(line_sums, self.transposed)
        return rng.add_normal(y, m.out_noise, a.generator) if m.out_noise > 0 else y

    def _count(self, passes: list[Tensor | None]) -> None:
        """The counters of one read of each batched array (``passes[k]``: the tiles' passes of the ``k``-th array
        where it took several rounds): one ``_foreach_addcmul_`` per device, the numbers of
        :meth:`TileState._count`."""
        for members, ones in self._counted:
            tensors: list[Tensor] = []
            factors: list[Tensor] = ones
            scalars: list[int] = []
            for k, m in enumerate(members):
                buffers = cast("dict[str, Tensor]", m.array._buffers)
                tensors += [buffers[m.counters[0]], buffers[m.counters[1]], buffers[m.counters[2]]]
                scalars += m.increments
                m_passes = passes[m.position]
                if m_passes is not None:    # counter += increment · Σ passes for the conversions
                    total = m_passes.sum()
                    factors = factors[:3 * k + 1] + [total, total] + factors[3 * k + 3:]
                    _subtract_padding(m.array.grid, m_passes, tensors[-2], tensors[-1])
            # counter += scalar · factor · 1 for every counter at once (each counter once: the adds are independent)
            torch._foreach_addcmul_(tensors, factors, ones, scalars)


def _subtract_padding(g: TileGrid, passes: Tensor, col_lines: Tensor, row_lines: Tensor) -> None:
    """Less the padding's lines of the grid's last column (row) block, on the passes of its tiles, from the column
    (row) line counters (the conversions count logical lines: :meth:`TileState._count`). ``passes``: the tiles'
    passes with their vectors last, the tiles in their order ``r * C + c`` (of each replica), e.g. ``[(E·)R, C, B]``
    or ``[1, T, 1]``."""
    if g.padded_in > g.in_features or g.padded_out > g.out_features:
        per_tile = passes.reshape(-1, g.n_row_tiles, g.n_col_tiles, passes.shape[-1])     # [E|1, R, C, B]
        if g.padded_in > g.in_features:
            col_lines.sub_(per_tile.select(2, -1).sum(), alpha=g.padded_in - g.in_features)
        if g.padded_out > g.out_features:
            row_lines.sub_(per_tile.select(1, -1).sum(), alpha=g.padded_out - g.out_features)


@functools.lru_cache(maxsize=None)   # unbounded, as crossbar.periphery's device-tensor caches (CUDA graphs)
def _int_one(device: torch.device) -> Tensor:
    """A 0-d int64 1 on ``device`` (a cache)."""
    return torch.ones((), dtype=torch.int64, device=device)
