"""Dotted paths of sweep specs: which config field a name like ``device.dw_min`` addresses, and how to set it.

Sections (a path's first part):

* no dot: a :class:`~imc_grapes.config.TrainConfig` field (``lr``, ``optimizer``, ``seed``, ``hidden``, ...);
* ``analog.<field>``: an :class:`~imc_grapes.backends.settings.AnalogSettings` field (``analog.preset``);
* ``periphery.<field>``: alias of the periphery fields of ``AnalogSettings`` (:data:`PERIPHERY_FIELDS`);
* ``device.<field>`` (or ``analog.device_overrides.<field>``): an entry of ``analog.device_overrides``, a device
  parameter with aihwkit's name (``dw_min``, ``up_down``, ``dw_min_std``, ...), validated per point by the device
  model of the point's preset.

Unknown sections and fields are rejected with the list of valid ones for that section.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any

from ..backends.settings import AnalogSettings
from ..config import DIGITAL_ANALOG_FIELDS, ConfigError, TrainConfig
from ..suggest import did_you_mean

#: the ``periphery.*`` alias: AnalogSettings fields describing the tile periphery
PERIPHERY_FIELDS: tuple[str, ...] = ("dac_bits", "adc_bits", "out_noise", "ideal_periphery", "tile_size")
SECTIONS: tuple[str, ...] = ("analog", "periphery", "device")


class SpecError(ConfigError):
    """An invalid sweep spec: unknown section/field, malformed axis, or a point the config classes reject."""


def train_fields() -> list[str]:
    """Names of the TrainConfig fields (the top-level section)."""
    return sorted(f.name for f in dataclasses.fields(TrainConfig))


def analog_fields() -> list[str]:
    """Names of the AnalogSettings fields (the ``analog.*`` section)."""
    return sorted(f.name for f in dataclasses.fields(AnalogSettings))


@dataclass(frozen=True)
class FieldPath:
    """A resolved dotted path.

    Attributes:
        name: the path as the user wrote it (``periphery.adc_bits``); used as column name in reports.
        section: ``train`` (a TrainConfig field), ``analog`` (an AnalogSettings field, also for the periphery
            alias) or ``device`` (an ``analog.device_overrides`` entry).
        field: the field name inside its section.
    """

    name: str
    section: str
    field: str

    @property
    def is_hardware(self) -> bool:
        """True for paths that only matter to analog backends (``analog``/``periphery``/``device``), but for the
        analog settings a digital run uses too (:data:`~imc_grapes.config.DIGITAL_ANALOG_FIELDS`:
        ``analog.energy_table``, which prices a digital run's operations)."""
        return self.section == "device" or (self.section == "analog" and self.field not in DIGITAL_ANALOG_FIELDS)


def resolve_path(path: str) -> FieldPath:
    """Resolve a dotted path, or raise :class:`SpecError` naming the valid fields of its section.

    Args:
        path: ``lr``, ``analog.preset``, ``periphery.adc_bits``, ``device.dw_min``,
            ``analog.device_overrides.dw_min``.
    """
    parts = path.split(".")
    if any(p == "" for p in parts):
        raise SpecError(f"sweep path {path!r} is malformed (empty part); write e.g. 'lr' or 'device.dw_min'")
    if len(parts) == 1:
        valid = train_fields()
        if path not in valid:
            raise SpecError(f"unknown field {path!r} (top level = TrainConfig fields); valid: {', '.join(valid)}; "
                            f"sections: {', '.join(s + '.*' for s in SECTIONS)}{did_you_mean(path, valid)}")
        return FieldPath(path, "train", path)
    head, rest = parts[0], parts[1:]
    if head == "analog" and len(rest) == 2 and rest[0] == "device_overrides":
        head, rest = "device", rest[1:]
    if len(rest) != 1:
        raise SpecError(f"sweep path {path!r} has too many parts; write section.field, e.g. 'device.dw_min'")
    name = rest[0]
    if head == "analog":
        valid = analog_fields()
        if name not in valid:
            raise SpecError(f"unknown field {path!r}: {name!r} is not an AnalogSettings field; valid analog.* "
                            f"fields: {', '.join(valid)}{did_you_mean(name, valid)}")
        return FieldPath(path, "analog", name)
    if head == "periphery":
        if name not in PERIPHERY_FIELDS:
            raise SpecError(f"unknown field {path!r}: valid periphery.* fields: {', '.join(PERIPHERY_FIELDS)}"
                            f"{did_you_mean(name, PERIPHERY_FIELDS)}")
        return FieldPath(path, "analog", name)
    if head == "device":
        # the preset may itself be swept, so the device fields are checked per point (by AnalogSettings);
        # this early check uses the union of all presets' fields to catch typos before anything is built
        valid = device_fields()
        if name not in valid:
            raise SpecError(f"unknown field {path!r}: {name!r} is not a field of any device preset; valid device.* "
                            f"fields: {', '.join(valid)}{did_you_mean(name, valid)}")
        return FieldPath(path, "device", name)
    valid = train_fields()
    if head in valid:
        raise SpecError(f"sweep path {path!r}: {head!r} is a plain TrainConfig field and has no sub-fields; "
                        f"sections with sub-fields: {', '.join(s + '.*' for s in SECTIONS)}")
    raise SpecError(f"unknown section {head!r} in {path!r}; valid sections: {', '.join(s + '.*' for s in SECTIONS)} "
                    f"(or a top-level TrainConfig field: {', '.join(valid)}){did_you_mean(head, [*SECTIONS, *valid])}")


def device_fields(preset: str | None = None) -> list[str]:
    """Device parameter names accepted in ``device.*``: those of ``preset``, or of any preset if None."""
    from devices import PRESETS, get_preset

    names = [preset] if preset is not None else list(PRESETS)
    fields: set[str] = set()
    for n in names:
        fields.update(f.name for f in dataclasses.fields(get_preset(n)))
    return sorted(fields)


def set_path(config: dict[str, Any], path: FieldPath, value: Any) -> dict[str, Any]:
    """A copy of ``config`` (a ``TrainConfig.to_dict()``) with ``path`` set to ``value``."""
    out = copy.deepcopy(config)
    if path.section == "train":
        out[path.field] = copy.deepcopy(value)
    elif path.section == "analog":
        out["analog"][path.field] = copy.deepcopy(value)
    else:
        out["analog"].setdefault("device_overrides", {})[path.field] = copy.deepcopy(value)
    return out
