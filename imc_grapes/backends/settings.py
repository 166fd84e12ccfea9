"""Settings of the analog hardware a network is trained on (used by the ``crossbar`` and ``aihwkit`` backends).

A frozen, validated dataclass so that runs, compare jobs and sweeps share one definition; every field is
addressable by a dotted path (``analog.preset``, ``analog.adc_bits``) in sweep specs.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

IMPORTANCE_SOURCES = ("exact", "array")


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


@dataclass(frozen=True)
class AnalogSettings:
    """The analog hardware of a run.

    Attributes:
        preset: device preset name (``devices.PRESETS``), e.g. ``ReRamSB`` (soft-bounds ReRAM).
        tile_size: rows = columns of one crossbar tile (a layer larger than that spans a grid of tiles).
        dac_bits / adc_bits: input (DAC) and output (ADC) resolution in bits; 0 = no quantization.
        out_noise: additive Gaussian output noise of each MVM, in units of the ADC full-scale input range
            normalisation used by aihwkit (aihwkit default 0.06).
        ideal_periphery: if true, MVMs are exact (no DAC/ADC/noise); the device physics still applies.
        importance: where GRAPES's importance comes from: ``exact`` (Σ|w| from the device states, digital) or
            ``array`` (one all-ones read of each tile through its DAC/ADC, what the chip can do).
        importance_every: refresh the GRAPES factors every k training batches (1 = every batch).
    """

    preset: str = "ReRamSB"
    tile_size: int = 256
    dac_bits: int = 7
    adc_bits: int = 9
    out_noise: float = 0.06
    ideal_periphery: bool = False
    importance: str = "exact"
    importance_every: int = 1

    def __post_init__(self) -> None:
        from devices import PRESETS

        _check(self.preset in PRESETS,
               f"AnalogSettings.preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        _check(isinstance(self.tile_size, int) and self.tile_size >= 1,
               f"AnalogSettings.tile_size must be an integer ≥ 1, got {self.tile_size!r}")
        for name in ("dac_bits", "adc_bits"):
            v = getattr(self, name)
            _check(isinstance(v, int) and 0 <= v <= 24, f"AnalogSettings.{name} must be an integer in [0, 24] "
                   f"(0 = no quantization), got {v!r}")
        _check(self.out_noise >= 0, f"AnalogSettings.out_noise must be ≥ 0, got {self.out_noise}")
        _check(self.importance in IMPORTANCE_SOURCES,
               f"AnalogSettings.importance must be one of {', '.join(IMPORTANCE_SOURCES)}, got {self.importance!r}")
        _check(isinstance(self.importance_every, int) and self.importance_every >= 1,
               f"AnalogSettings.importance_every must be an integer ≥ 1, got {self.importance_every!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AnalogSettings":
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - valid)
        _check(not unknown, f"unknown analog setting(s) {unknown}; valid: {', '.join(sorted(valid))}")
        return cls(**d)
