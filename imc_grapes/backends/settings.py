"""Settings of the analog hardware a network is trained on (used by the ``crossbar`` and ``aihwkit`` backends).

A frozen, validated dataclass so that runs, compare jobs and sweeps share one definition; every field is
addressable by a dotted path (``analog.preset``, ``analog.adc_bits``) in sweep specs.
"""
from __future__ import annotations

import dataclasses
import functools
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devices.base import check_finite, same_device_value

from ..suggest import did_you_mean, did_you_mean_each

IMPORTANCE_SOURCES = ("exact", "array")


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def _is_int(v: object) -> bool:
    """Whether ``v`` is an integer (a bool is not)."""
    return isinstance(v, int) and not isinstance(v, bool)


def format_device_overrides(overrides: dict[str, Any]) -> str:
    """``device_overrides`` as reports show them, in the given order: ``"dw_min=0.008, up_down=0.2"`` (numbers with
    ``:g``, bools as true/false), ``""`` for none."""
    return ", ".join(f"{k}={str(v).lower() if isinstance(v, bool) else format(v, 'g')}" for k, v in overrides.items())


@functools.cache
def _preset_values(preset: str) -> dict[str, Any]:
    """The field values of the device preset ``preset`` (a key of ``devices.PRESETS``, exact spelling), built once."""
    from devices import PRESETS

    return PRESETS[preset]().field_values()


def overrides_at_preset_values(preset: object, overrides: object) -> list[str]:
    """The names of the entries of ``overrides`` (``AnalogSettings.device_overrides``, or that of a saved config)
    that hold the value the preset ``preset`` has anyway (:func:`devices.base.same_device_value`): overrides that
    change nothing, the device being the same with them and without. Empty when ``preset`` is no preset name or
    ``overrides`` no dict (a damaged saved config: nothing is taken for redundant). Reads only."""
    from devices import PRESETS

    if not (isinstance(preset, str) and preset in PRESETS and isinstance(overrides, dict)):
        return []
    values = _preset_values(preset)
    return [k for k, v in overrides.items() if k in values and same_device_value(v, values[k])]


@dataclass(frozen=True)
class AnalogSettings:
    """The analog hardware of a run.

    Attributes:
        preset: device preset name (``devices.PRESETS``), e.g. ``ReRamSB`` (soft-bounds ReRAM).
        device_overrides: device fields that replace the preset's values, with aihwkit's names
            (e.g. ``{"dw_min": 0.002, "up_down": 0.1}``); validated by the device model itself.
        tile_size: rows = columns of one crossbar tile (a layer larger than that spans a grid of tiles).
        dac_bits / adc_bits: input (DAC) and output (ADC) resolution in bits; 0 = no quantization, 1 is refused
            (aihwkit's 1-bit grid rounds every value within the range to 0).
        out_noise: additive Gaussian output noise of each MVM, in units of the ADC full-scale input range
            normalisation used by aihwkit (aihwkit default 0.06); with ``tile_size`` and the device's bounds it
            must keep the worst-case MVM finite in float32 (3.779e37 on the default tiles of 256 lines), the
            crossbar engine's check (:class:`crossbar.CrossbarConfig`), which these settings run when made.
        ideal_periphery: if true, MVMs are exact (no DAC/ADC/noise); the device physics still applies.
        importance: where GRAPES's importance comes from: ``exact`` (Σ|w| from the device states, digital) or
            ``array`` (one all-ones read of each tile through its DAC/ADC, what the chip can do).
        importance_every: refresh the GRAPES factors every k training batches (1 = every batch).
        importance_g_offset: conductance of the idle device of each differential pair, in weight units (≥ 0),
            seen by the ``array`` importance read: it returns ``Σ_j (G⁺ + G⁻) = Σ_j |w_ij| + 2·g_offset·n_in``
            (0: the idle device sits at zero conductance, the read equals ``Σ|w|`` up to the periphery).
        importance_offset_correction: with the ``array`` importance, subtract the nominal offset
            ``2·importance_g_offset·n_in`` from every row's read digitally (what a chip that knows its devices'
            off-state conductance can do). The read keeps its noise, and the coarser resolution that the offset's
            larger currents cost it (bound management scales the inputs down to keep them within the ADC range).
        sat_probe_every: measure the realised / intended weight change of every analog layer on every k-th
            training step (0 = never). Each probe reads the weights before and after the pulsed update.
        energy_table: path of a JSON file ``{"name": pJ, ...}`` overriding entries of
            :data:`imc_grapes.backends.costs.ENERGY_TABLE_PJ` (None: the documented defaults).
    """

    preset: str = "ReRamSB"
    device_overrides: dict[str, float] = dataclasses.field(default_factory=dict)
    tile_size: int = 256
    dac_bits: int = 7
    adc_bits: int = 9
    out_noise: float = 0.06
    ideal_periphery: bool = False
    importance: str = "exact"
    importance_every: int = 1
    importance_g_offset: float = 0.0
    importance_offset_correction: bool = False
    sat_probe_every: int = 20
    energy_table: str | None = None

    def __post_init__(self) -> None:
        from devices import PRESETS

        _check(isinstance(self.preset, str) and self.preset in PRESETS,
               f"AnalogSettings.preset must be one of {', '.join(PRESETS)}, got {self.preset!r}"
               f"{did_you_mean(self.preset, PRESETS)}")
        _check(isinstance(self.device_overrides, dict) and all(isinstance(k, str) for k in self.device_overrides),
               f"AnalogSettings.device_overrides must be a dict of device fields and values, "
               f"got {self.device_overrides!r}")
        # raises a ValueError naming the field and its valid range; built once, for the crossbar check below too
        device = self.device() if self.device_overrides else None
        _check(_is_int(self.tile_size) and self.tile_size >= 1,
               f"AnalogSettings.tile_size must be an integer ≥ 1, got {self.tile_size!r}")
        for name in ("dac_bits", "adc_bits"):
            v = getattr(self, name)
            _check(_is_int(v) and 0 <= v <= 24, f"AnalogSettings.{name} must be an integer in [0, 24] "
                   f"(0 = no quantization), got {v!r}")
            _check(v != 1, f"AnalogSettings.{name} = 1 is no usable converter: one bit (aihwkit's res = 1, grid "
                   "step 2 * bound) rounds every value within the range to 0, so the analog outputs would all read "
                   "0; use 0 (no quantization) or 2 bits or more")
        for name in ("out_noise", "importance_g_offset"):
            check_finite("AnalogSettings", name, getattr(self, name), 0)
        for name in ("ideal_periphery", "importance_offset_correction"):
            v = getattr(self, name)
            _check(isinstance(v, bool), f"AnalogSettings.{name} must be true or false, got {v!r}")
        _check(isinstance(self.importance, str) and self.importance in IMPORTANCE_SOURCES,
               f"AnalogSettings.importance must be one of {', '.join(IMPORTANCE_SOURCES)}, got {self.importance!r}"
               f"{did_you_mean(self.importance, IMPORTANCE_SOURCES)}")
        _check(_is_int(self.importance_every) and self.importance_every >= 1,
               f"AnalogSettings.importance_every must be an integer ≥ 1, got {self.importance_every!r}")
        _check(_is_int(self.sat_probe_every) and self.sat_probe_every >= 0,
               f"AnalogSettings.sat_probe_every must be an integer ≥ 0 (0 = off), got {self.sat_probe_every!r}")
        _check(self.energy_table is None or (isinstance(self.energy_table, str) and self.energy_table != ""),
               f"AnalogSettings.energy_table must be None or the path of a JSON file, got {self.energy_table!r}")
        self._check_crossbar_config(device)

    def _check_crossbar_config(self, device: Any = None) -> None:
        """Refuse settings whose crossbar config the engine refuses (:class:`crossbar.CrossbarConfig`: its MVMs must
        stay finite in float32, which ``out_noise``, ``tile_size`` and the device's bounds decide together; e.g.
        ``out_noise`` 1e38), at once and naming the setting (``ValueError``: ``AnalogSettings.out_noise = 1e+38:
        ...`` and the engine's message with the largest value), not when a run builds its network. The aihwkit
        backend converts the same config. ``device``: :meth:`device` when the caller has built it (None: built
        here). Host arithmetic (~0.1 ms)."""
        from .hardware import crossbar_config_from      # here: hardware imports this module

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")     # a unidirectional device's warning belongs to the run using it
                crossbar_config_from(self, device=device)
            return
        except ValueError as exc:
            message = str(exc)
            quantity = getattr(exc, "quantity", None)       # crossbar.MVMRangeError's: the value it limits
        if quantity == "out_noise":
            field = f"out_noise = {self.out_noise!r}"
        elif quantity == "lines":                           # tile_cols / tile_rows: both are tile_size
            field = f"tile_size = {self.tile_size!r}"
        else:
            field = (f"device_overrides = {self.device_overrides!r}" if self.device_overrides
                     else f"preset = {self.preset!r}")
        raise ValueError(f"AnalogSettings.{field}: the crossbar engine refuses the config these settings make "
                         f"(tile_size {self.tile_size}, out_noise {self.out_noise!r}, preset {self.preset!r}): "
                         f"{message}")

    @property
    def subtracts_importance_offset(self) -> bool:
        """Whether the ``array`` importance read has the nominal idle-device offset subtracted digitally
        (``importance_offset_correction`` with ``importance_g_offset`` > 0)."""
        return self.importance == "array" and self.importance_offset_correction and self.importance_g_offset > 0

    def device(self):  # -> devices.PulsedDevice
        """The device model: the preset with ``device_overrides`` applied (unknown fields are rejected with
        the list of valid ones)."""
        from devices import PRESETS, get_preset

        valid = sorted(f.name for f in dataclasses.fields(PRESETS[self.preset]))   # the class's: no device built
        unknown = sorted(set(self.device_overrides) - set(valid))
        _check(not unknown, f"unknown device field(s) {unknown} for preset {self.preset!r}; valid: {', '.join(valid)}"
                            f"{did_you_mean_each(unknown, valid)}")
        return get_preset(self.preset, **self.device_overrides)

    def check_energy_table(self) -> None:
        """Raise ``ValueError`` naming ``AnalogSettings.energy_table`` and the path unless the table (if any) can be
        read (:func:`~imc_grapes.backends.costs.load_energy_table`). Not part of the validation, since a saved
        config may name a file that has moved since; the sweep command calls it before any point runs (and on
        ``--dry-run``), a run reads the table when its network is built."""
        if self.energy_table is None:
            return
        from .costs import load_energy_table

        _check(Path(self.energy_table).is_file(),
               f"AnalogSettings.energy_table must be the path of a JSON file {{name: pJ}}, got {self.energy_table!r} "
               f"(no such file)")
        try:
            load_energy_table(self.energy_table)
        except ValueError as exc:
            raise ValueError(f"AnalogSettings.energy_table: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AnalogSettings":
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - valid)
        _check(not unknown, f"unknown analog setting(s) {unknown}; valid: {', '.join(sorted(valid))}"
                            f"{did_you_mean_each(unknown, valid)}")
        return cls(**d)
