"""A whole crossbar configuration ("rpu config"): device model, periphery of both directions, update, tiles.

:class:`CrossbarConfig` plays the role of aihwkit's ``SingleRPUConfig``; :func:`to_aihwkit_rpu_config`
builds that aihwkit config from it (aihwkit is imported lazily, only there).
"""

from __future__ import annotations

import dataclasses
import math
import struct
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, cast

from crossbar.mapping import TileGrid, _check_size
from crossbar.periphery import IOParameters, bound_management_rounds, mvm_extremes
from crossbar.update import UpdateParameters
from devices import ConstantStepDevice, PulsedDevice
from devices.base import FLOAT32_MAX, FLOAT32_TINY, NORMAL_DRAW_MAX

__all__ = ["CrossbarConfig", "MVMRangeError", "check_tile_sums", "to_aihwkit_io_parameters",
           "to_aihwkit_rpu_config"]


@dataclass(frozen=True)
class CrossbarConfig:
    """Everything a layer on crossbar tiles needs (cf. aihwkit ``SingleRPUConfig``).

    Attributes:
        device: pulsed device model of every cross-point (default: aihwkit's ConstantStep defaults).
        forward: periphery of the forward MVM ``y = W x``.
        backward: periphery of the backward (transposed) MVM ``x_grad = Wᵀ d``; bound management is
            ignored there (as in aihwkit).
        update: pulsed-update parameters (``pulse_type="none"``: exact float update, no device).
        tile_rows: physical output lines per tile (>= 1).
        tile_cols: physical input lines per tile (>= 1).

    The MVMs of both directions must stay finite in float32 for inputs of magnitude at most 1 and the weights the
    device holds (:meth:`~devices.PulsedDevice.largest_state`): a combination of the periphery's noise and scale, the
    tile size and the device's bounds whose worst case (:func:`~crossbar.periphery.mvm_extremes`) is not is refused
    (``ValueError`` naming the fields with their values and the largest value of the one farthest from realistic;
    e.g. ``inp_noise`` at most 1.66e34 on tiles of 1024 columns of the default device). The config is frozen:
    ``replace`` checks again. What the check does not cover (see :func:`~crossbar.periphery.mvm_extremes`): larger
    inputs under ``"abs_max"`` noise management without ``nm_thres`` (the digital outputs grow with ``max |x|``) or
    through an unbounded DAC, and the digital sum over a layer's tiles, which the tile array checks when it is made
    (:func:`check_tile_sums`: it knows the layer's size).
    """

    device: PulsedDevice = field(default_factory=ConstantStepDevice)
    forward: IOParameters = field(default_factory=IOParameters)
    backward: IOParameters = field(default_factory=IOParameters)
    update: UpdateParameters = field(default_factory=UpdateParameters)
    tile_rows: int = 256
    tile_cols: int = 256

    def __post_init__(self) -> None:
        if not isinstance(self.device, PulsedDevice):
            raise ValueError(f"CrossbarConfig.device must be a devices.PulsedDevice, got {self.device!r}")
        for name in ("forward", "backward"):
            if not isinstance(getattr(self, name), IOParameters):
                raise ValueError(f"CrossbarConfig.{name} must be a crossbar.IOParameters, "
                                 f"got {getattr(self, name)!r}")
        if not isinstance(self.update, UpdateParameters):
            raise ValueError(f"CrossbarConfig.update must be a crossbar.UpdateParameters, got {self.update!r}")
        for name in ("tile_rows", "tile_cols"):     # a numpy integer (a sweep's value) is kept as its Python int
            object.__setattr__(self, name, _check_size("CrossbarConfig", name, getattr(self, name)))
        _check_mvm_range(self)

    def replace(self, **changes: Any) -> "CrossbarConfig":
        """Copy with some fields changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def perfect(cls, device: PulsedDevice | None = None, **kwargs: Any) -> "CrossbarConfig":
        """Ideal periphery in both directions (``is_perfect=True``); the device and update stay as given."""
        kwargs.setdefault("forward", IOParameters(is_perfect=True))
        kwargs.setdefault("backward", IOParameters(is_perfect=True))
        if device is not None:
            kwargs["device"] = device
        return cls(**kwargs)


class MVMRangeError(ValueError):
    """The ``ValueError`` of a config whose MVM can overflow float32 (:func:`_check_mvm_range`), or of a tile array
    whose digital sum over its tiles can (:func:`check_tile_sums`). ``quantity``: the key of :data:`_REALISTIC` of
    the value whose limit the message states (``"out_noise"``, ``"lines"`` for the tile size, ``"weight"`` for the
    device's largest state, ...), ``"tiles"`` for the number of tiles of an array, or None when no single value keeps
    it finite: so that a caller with its own names for these values (``imc_grapes``' ``AnalogSettings``) can name its
    field."""

    def __init__(self, message: str, quantity: str | None) -> None:
        super().__init__(message)
        self.quantity = quantity


_ROUNDING_LINES = 16
"""Float32 operations of an MVM besides its sum over the tile's lines (noise draws and additions, the ADC's quotient
and product, the rescaling): each rounds by at most 2^-24, so :func:`_check_mvm_range` allows the worst case
``(lines + 16)·2^-24`` of float32's largest for the rounding (6e-5 on tiles of 1024 lines)."""

_REALISTIC = {"inp_noise": 1.0, "w_noise": 1.0, "out_noise": 1.0, "out_scale": 1.0, "inp_bound": 1.0, "nm_thres": 1.0,
              "max_bm_factor": 1000.0, "lines": 4096.0, "weight": 1.0}
"""The scale of a realistic value of each quantity of :func:`_check_mvm_range` (noise stds and scales in normalized
units, aihwkit's max_bm_factor, tiles of a few thousand lines, device bounds of order 1): the quantity whose value is
the most times beyond its scale is the one a refusal states the limit of."""


class _Knob(NamedTuple):
    """A quantity of :func:`_check_mvm_range` that a refusal may state the limit of: its ``name`` in the message, its
    key in :data:`_REALISTIC`, its value, the smallest value it takes, whether it is an integer, and ``apply``: the
    (periphery, lines, weight) of the MVM with the quantity at another value."""

    name: str
    key: str
    value: float
    low: float
    integer: bool
    apply: Callable[[float], tuple[IOParameters, int, float]]


def _overflow(p: IOParameters, lines: int, weight: float, transposed: bool) -> tuple[str, float] | None:
    """The first intermediate of :func:`~crossbar.periphery.mvm_extremes` whose worst case, with room for float32's
    rounding (:data:`_ROUNDING_LINES`), is beyond float32's largest, and that worst case; ``None`` when all fit."""
    room = 1.0 + (lines + _ROUNDING_LINES) * 2.0 ** -24
    for what, value in mvm_extremes(p, lines, weight, transposed).items():
        if not value * room <= FLOAT32_MAX:                 # NaN fails too
            return what, value
    return None


def _largest_passing(knob: _Knob, transposed: bool) -> float | None:
    """The largest value of ``knob`` (at least its ``low``, below its value, which overflows) for which no worst case
    overflows; ``None`` when even ``low`` does. Bisection on integers, or on the bit patterns of non-negative floats
    (ordered as the floats): exact, 64 steps at most."""
    def ok(v: float) -> bool:
        return _overflow(*knob.apply(v), transposed) is None

    if not ok(knob.low):
        return None
    if knob.integer:
        lo, hi = int(knob.low), int(knob.value)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if ok(mid) else (lo, mid)
        return lo
    bits = [struct.unpack("<q", struct.pack("<d", v))[0] for v in (knob.low, knob.value)]
    lo_b, hi_b = bits
    while hi_b - lo_b > 1:
        mid_b = (lo_b + hi_b) // 2
        if ok(struct.unpack("<d", struct.pack("<q", mid_b))[0]):
            lo_b = mid_b
        else:
            hi_b = mid_b
    return struct.unpack("<d", struct.pack("<q", lo_b))[0]


def _knobs(cfg: CrossbarConfig, direction: str, lines_name: str, weight: float) -> list[_Knob]:
    """The quantities of the ``direction`` MVM's worst case that a refusal may state the limit of (those that take
    part in it)."""
    p: IOParameters = getattr(cfg, direction)
    lines = getattr(cfg, lines_name)
    transposed = direction == "backward"

    def io(name: str) -> Callable[[float], tuple[IOParameters, int, float]]:
        return lambda v: (dataclasses.replace(p, **cast("dict[str, Any]", {name: v})), lines, weight)

    knobs = [_Knob(f"CrossbarConfig.{lines_name}", "lines", lines, 1, True, lambda v: (p, int(v), weight)),
             _Knob("the device's largest |state|", "weight", weight, 0.0, False,
                   lambda v: (p, lines, v))]
    if not p.is_perfect:
        knobs += [_Knob(f"CrossbarConfig.{direction}.{name}", name, getattr(p, name), 0.0, False, io(name))
                  for name in ("inp_noise", "out_noise") if getattr(p, name) > 0]
        if p.w_noise_type == "additive_constant" and p.w_noise > 0:
            knobs.append(_Knob(f"CrossbarConfig.{direction}.w_noise", "w_noise", p.w_noise, 0.0, False, io("w_noise")))
        if math.isfinite(p.inp_bound):
            knobs.append(_Knob(f"CrossbarConfig.{direction}.inp_bound", "inp_bound", p.inp_bound, FLOAT32_TINY, False,
                               io("inp_bound")))
        if p.noise_management == "constant" and p.nm_thres > 0:
            knobs.append(_Knob(f"CrossbarConfig.{direction}.nm_thres", "nm_thres", p.nm_thres, FLOAT32_TINY, False,
                               io("nm_thres")))
        if p.max_bm_factor.bit_length() > 1000 or bound_management_rounds(p, transposed) > 1:
            knobs.append(_Knob(f"CrossbarConfig.{direction}.max_bm_factor", "max_bm_factor", p.max_bm_factor, 1, True,
                               io("max_bm_factor")))
    knobs.append(_Knob(f"CrossbarConfig.{direction}.out_scale", "out_scale", p.out_scale, FLOAT32_TINY, False,
                       io("out_scale")))
    return knobs


def _io_values(p: IOParameters) -> str:
    """The fields of ``p`` that take part in :func:`~crossbar.periphery.mvm_extremes`, as ``name = value``."""
    if p.is_perfect:
        return f"is_perfect = True, out_scale = {p.out_scale!r}"
    names = ["inp_bound", "inp_noise", "w_noise_type", "w_noise", "out_noise", "out_bound", "out_res", "out_scale",
             "noise_management", "nm_thres", "max_bm_factor"]
    return ", ".join(f"{name} = {getattr(p, name)!r}" for name in names)


def _check_mvm_range(cfg: CrossbarConfig) -> None:
    """Refuse (``ValueError``) a config whose forward or backward MVM can overflow float32
    (:func:`~crossbar.periphery.mvm_extremes` on tiles of ``tile_cols`` / ``tile_rows`` input lines with the device's
    :meth:`~devices.PulsedDevice.largest_state`): inp_noise 1e38 on tiles of 256 columns gave NaN outputs, 3e37 on
    1024 columns, and out_noise 3.7e37 with an unbounded ADC infinite ones. The message names the fields that take
    part with their values and the largest value of the one farthest beyond its realistic scale (:data:`_REALISTIC`)
    that alone keeps the worst case finite, shown to 4 digits and below it (as
    ``devices.PulsedDevice._refuse_write_noise``). Host arithmetic when the config is made, never in an MVM."""
    weight = cfg.device.largest_state()
    for direction, lines_name in (("forward", "tile_cols"), ("backward", "tile_rows")):
        p: IOParameters = getattr(cfg, direction)
        lines = getattr(cfg, lines_name)
        transposed = direction == "backward"
        over = _overflow(p, lines, weight, transposed)
        if over is None:
            continue
        what, worst = over
        knobs = sorted(_knobs(cfg, direction, lines_name, weight),
                       key=lambda k: -(k.value / _REALISTIC[k.key] if k.value > 0 else 0.0))
        d = cfg.device
        device = (f"{type(d).__name__}: w_min = {d.w_min!r}, w_max = {d.w_max!r}, w_min_dtod = {d.w_min_dtod!r}, "
                  f"w_max_dtod = {d.w_max_dtod!r}, write_noise_std = {d.write_noise_std!r}, dw_min = {d.dw_min!r}")
        values = (f"CrossbarConfig.{lines_name} = {lines}, CrossbarConfig.{direction}: {_io_values(p)}, and the "
                  f"device's largest |state| {weight:.4g} ({device})")
        why = (f"the {direction} MVM must stay finite in float32 (largest {FLOAT32_MAX:.4g}) for inputs of magnitude "
               f"at most 1 and weights within the device's sampled bounds (every normal draw |ξ| < "
               f"{NORMAL_DRAW_MAX:g}), but its {what} can reach {worst:.4g} (crossbar.periphery.mvm_extremes). "
               f"Realistic values: noise stds of 0 to ~1 in normalized units (aihwkit's out_noise 0.06), out_scale "
               f"~1, device bounds of order 1 and tiles of up to a few thousand lines")
        for knob in knobs:
            limit = _largest_passing(knob, transposed)
            if limit is None:
                continue
            shown = f"{int(limit)}" if knob.integer else f"{float(f'{limit * (1 - 5e-4):.4g}'):.4g}"
            got = f"{int(knob.value)}" if knob.integer else f"{knob.value!r}"
            raise MVMRangeError(f"{knob.name} must be at most {shown} with {values}, got {got}: {why}", knob.key)
        raise MVMRangeError(f"CrossbarConfig: no single one of these values keeps the {direction} MVM finite, "
                            f"lower several: {values}; {why}", None)


def _sum_fits(per_tile: float, lines: int, blocks: int) -> bool:
    """Whether ``blocks`` partial results of at most ``per_tile`` each, from tiles of ``lines`` input lines, add up
    within float32's largest, with room for the rounding of each tile's MVM (:data:`_ROUNDING_LINES`) and of the
    ``blocks - 1`` additions (2^-24 each)."""
    return blocks * per_tile * (1.0 + (lines + _ROUNDING_LINES + blocks) * 2.0 ** -24) <= FLOAT32_MAX


def check_tile_sums(cfg: CrossbarConfig, grid: TileGrid, owner: str,
                    names: tuple[str, str] = ("out_features", "in_features")) -> None:
    """Refuse (:class:`MVMRangeError`, quantity ``"tiles"``) a tile array whose digital sum of the tiles' partial
    results can overflow float32: the forward MVM adds the outputs of the ``C = grid.n_col_tiles`` tiles of a tile
    row, the backward MVM those of the ``R = grid.n_row_tiles`` tiles of a tile column, each at most the ``"digital
    outputs"`` of :func:`~crossbar.periphery.mvm_extremes` on tiles of ``grid.cols`` (``grid.rows``) input lines with
    the device's :meth:`~devices.PulsedDevice.largest_state` (the bound :class:`CrossbarConfig` checks per tile, for
    inputs of magnitude at most 1). So ``C · per-tile worst case`` (with room for the rounding) must stay within
    float32's largest. ``owner``: the class name the message starts with; ``names``: how it names the rows and the
    columns of ``grid`` (``owner.names[1]`` must be at most ... with ``tile_cols``, ``owner.names[0]`` with
    ``tile_rows``), with the most tiles allowed: by default the array's ``out_features`` / ``in_features``, a layer
    the sizes its user set (:class:`~crossbar.modules.AnalogConv2d`: ``out_channels``, ``in_channels·kernel_size``).
    With realistic settings the
    per-tile worst case is at most ``out_bound · max_bm_factor · out_scale`` (1.2e4 for aihwkit's defaults), so
    only configs at the edge of :class:`CrossbarConfig`'s check (``out_scale`` 1e38) are refused. Host arithmetic
    when the array is made, never in an MVM."""
    weight = cfg.device.largest_state()
    for direction, blocks, lines, sizes, what in (
            ("forward", grid.n_col_tiles, grid.cols, (names[1], grid.in_features, "tile_cols"), "column"),
            ("backward", grid.n_row_tiles, grid.rows, (names[0], grid.out_features, "tile_rows"), "row")):
        if blocks == 1:
            continue                              # one tile: CrossbarConfig's own check
        p: IOParameters = getattr(cfg, direction)
        per_tile = mvm_extremes(p, lines, weight, direction == "backward")["digital outputs"]
        if _sum_fits(per_tile, lines, blocks):
            continue
        size_name, size, tile_name = sizes
        line_s = f"{lines} input line{'s' if lines != 1 else ''}"
        # the most tiles of any layer size: full tiles of the config's size (the worst case grows with the lines)
        full = mvm_extremes(p, getattr(cfg, tile_name), weight, direction == "backward")["digital outputs"]
        most = max(1, int(FLOAT32_MAX / full))
        while most > 1 and not _sum_fits(full, getattr(cfg, tile_name), most):
            most -= 1
        raise MVMRangeError(
            f"{owner}.{size_name} must be at most {most * getattr(cfg, tile_name)} with CrossbarConfig.{tile_name} = "
            f"{getattr(cfg, tile_name)} (at most {most} {what} tiles), got {size} ({blocks} {what} tiles): the "
            f"{direction} MVM adds the partial results of its {blocks} {what} tiles digitally, each up to "
            f"{per_tile:.4g} (the 'digital outputs' of crossbar.periphery.mvm_extremes on tiles of {line_s}, "
            f"{direction} periphery {_io_values(p)}, the device's largest |state| {weight:.4g}), so their sum can "
            f"reach {blocks * per_tile:.4g}, beyond float32's largest {FLOAT32_MAX:.4g}. Use fewer or larger tiles, "
            f"or a periphery with a smaller worst case (out_scale, out_bound, max_bm_factor)", "tiles")


_NM = {"abs_max": "ABS_MAX", "none": "NONE", "constant": "CONSTANT"}
_BM = {"iterative": "ITERATIVE", "none": "NONE"}
_WN = {"none": "NONE", "additive_constant": "ADDITIVE_CONSTANT"}


def to_aihwkit_io_parameters(p: IOParameters, transposed: bool = False):  # -> aihwkit ...parameters.io.IOParameters
    """The aihwkit ``IOParameters`` with the same semantics (lazy aihwkit import).

    Unbounded ranges (``math.inf``) become aihwkit's ``<= 0`` convention (0, which also turns off that
    converter's quantization, as it does here). Fields aihwkit has and this project does not model keep
    their "off" values (no IR drop, no non-linearity, one-pass MVM).

    Args:
        p: the periphery of one direction.
        transposed: ``p`` is the backward periphery (where bound management does not act, here or in aihwkit).

    Raises:
        ValueError: ``bm_test_negative_bound=False`` with iterative bound management in the forward direction
            (bounded ADC, not perfect): aihwkit 1.1's CPU tile lets a later output saturating at ``-out_bound``
            clear the "repeat" flag set by an earlier output above ``+out_bound``, so its bound management answers
            differently from this project's (repeat whenever any output saturates at ``+out_bound``); no aihwkit
            setting has this project's semantics.
    """
    from aihwkit.simulator.parameters.enums import (BoundManagementType, NoiseManagementType,
                                                    WeightNoiseType)
    from aihwkit.simulator.parameters.io import IOParameters as AIOParameters

    if (not transposed and not p.is_perfect and p.bound_management == "iterative" and math.isfinite(p.out_bound)
            and not p.bm_test_negative_bound):
        raise ValueError(
            "to_aihwkit_io_parameters: IOParameters.bm_test_negative_bound=False (forward, iterative bound "
            "management) has no aihwkit counterpart: aihwkit 1.1 lets an output saturating at -out_bound clear the "
            "repeat triggered by an earlier output above +out_bound (its answer depends on the order of the "
            "outputs); use bm_test_negative_bound=True or bound_management='none' to compare with aihwkit")

    def bound(b: float) -> float:
        return b if math.isfinite(b) else 0.0

    return AIOParameters(
        is_perfect=p.is_perfect,
        inp_bound=bound(p.inp_bound),
        inp_res=p.inp_res,
        inp_sto_round=p.inp_sto_round,
        inp_noise=p.inp_noise,
        out_bound=bound(p.out_bound),
        out_res=p.out_res,
        out_sto_round=p.out_sto_round,
        out_noise=p.out_noise,
        out_scale=p.out_scale,
        w_noise=p.w_noise,
        w_noise_type=getattr(WeightNoiseType, _WN[p.w_noise_type]),
        noise_management=getattr(NoiseManagementType, _NM[p.noise_management]),
        nm_thres=p.nm_thres,
        bound_management=getattr(BoundManagementType, _BM[p.bound_management]),
        max_bm_factor=p.max_bm_factor,
        max_bm_res=p.max_bm_res,
        bm_test_negative_bound=p.bm_test_negative_bound,
    )


def to_aihwkit_rpu_config(cfg: CrossbarConfig):  # -> aihwkit.simulator.configs.SingleRPUConfig
    """The equivalent aihwkit ``SingleRPUConfig`` (lazy aihwkit import), for validation against aihwkit.

    Tile size maps to ``mapping.max_output_size`` / ``max_input_size``; the bias is digital in both. Both
    spread a layer evenly over the fewest tiles that hold it; when a size does not divide evenly, aihwkit
    makes the first pieces one line larger while this project pads the last piece (same tile count, lines
    shifted by at most ``R - 1`` / ``C - 1``).

    Raises:
        ValueError: a setting without an aihwkit counterpart (see :func:`to_aihwkit_io_parameters` and
            ``devices.to_aihwkit``), naming the field.
    """
    import devices
    from aihwkit.simulator.configs import SingleRPUConfig
    from aihwkit.simulator.parameters.mapping import MappingParameter

    to_aihwkit = getattr(devices, "to_aihwkit", None)
    if to_aihwkit is None:
        raise ValueError("to_aihwkit_rpu_config needs devices.to_aihwkit (the devices package's converter)")
    return SingleRPUConfig(
        device=to_aihwkit(cfg.device),
        forward=to_aihwkit_io_parameters(cfg.forward),
        backward=to_aihwkit_io_parameters(cfg.backward, transposed=True),
        update=cfg.update.to_aihwkit(),
        mapping=MappingParameter(digital_bias=True, max_input_size=cfg.tile_cols,
                                 max_output_size=cfg.tile_rows),
    )
