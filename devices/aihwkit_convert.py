"""Converters between this package's device models and aihwkit 1.1 device configs (aihwkit imported lazily).

``to_aihwkit(device)`` builds the aihwkit config with the same update semantics; ``from_aihwkit(cfg)`` the
reverse, for the models present in both: ConstantStep, LinearStep, SoftBounds, ExpStep, PowStep (``IdealDevice``
maps to an aihwkit ``ConstantStepDevice`` with all spreads 0; it converts back as ``ConstantStepDevice``).
aihwkit features this package does not model (decay ``lifetime``, ``diffusion``, ``drift``, corrupt devices,
``perfect_bias``, ``enforce_consistency=False``, reverse/increasing linear steps, adjusted bounds) raise
``ValueError`` in ``from_aihwkit`` when set to non-default values, unless ``strict=False`` (then a warning).
aihwkit's ``reset`` / ``reset_std`` are dropped without a message: they act only when a reset is called explicitly
(``reset_columns``, compound devices), never during the plain pulsed training modelled here (the PCM preset sets
``reset = 0.01``).
"""

from __future__ import annotations

import warnings
from dataclasses import fields
from typing import Any

from devices.base import PulsedDevice
from devices.constant_step import ConstantStepDevice
from devices.exp_step import ExpStepDevice
from devices.linear_step import LinearStepDevice, SoftBoundsDevice
from devices.pow_step import PowStepDevice

__all__ = ["to_aihwkit", "from_aihwkit", "SHARED_FIELDS"]

SHARED_FIELDS: tuple[str, ...] = (
    "dw_min", "dw_min_dtod", "dw_min_std", "up_down", "up_down_dtod", "w_min", "w_max", "w_min_dtod",
    "w_max_dtod", "dw_min_dtod_log_normal",
)
"""Fields of :class:`PulsedDevice` that aihwkit's ``PulsedDevice`` has under the same name and meaning."""

_MODEL_FIELDS: dict[type, tuple[str, ...]] = {
    ConstantStepDevice: (),
    LinearStepDevice: ("gamma_up", "gamma_down", "gamma_up_dtod", "gamma_down_dtod", "mean_bound_reference",
                       "mult_noise", "write_noise_std"),
    SoftBoundsDevice: ("mult_noise", "write_noise_std"),
    ExpStepDevice: ("A_up", "A_down", "gamma_up", "gamma_down", "a", "b", "dw_min_std_add", "dw_min_std_slope",
                    "write_noise_std"),
    PowStepDevice: ("pow_gamma", "pow_gamma_dtod", "pow_up_down", "pow_up_down_dtod", "write_noise_std"),
}

# aihwkit fields that must keep these values for the update semantics to match ours
_NEUTRAL: dict[str, Any] = {
    "lifetime": 0.0, "diffusion": 0.0, "corrupt_devices_prob": 0.0, "perfect_bias": False,
    "enforce_consistency": True, "allow_increasing": False, "reverse_up": False, "reverse_down": False,
    "adjust_bounds_with_up_down": False,
}


def _base_class(device: PulsedDevice) -> type:
    for cls in (ConstantStepDevice, LinearStepDevice, SoftBoundsDevice, ExpStepDevice, PowStepDevice):
        if isinstance(device, cls):
            return cls
    raise ValueError(
        f"to_aihwkit: no aihwkit counterpart for {type(device).__name__}; supported: ConstantStepDevice, "
        "IdealDevice, LinearStepDevice, SoftBoundsDevice, ExpStepDevice, PowStepDevice"
    )


def to_aihwkit(device: PulsedDevice) -> Any:
    """The aihwkit 1.1 device config (``aihwkit.simulator.configs.devices``) with the same semantics as ``device``.

    Raises:
        ValueError: unsupported model, or ``write_noise_std > 0`` on a constant-step device (aihwkit's
            ConstantStep has no write noise).
    """
    from aihwkit.simulator.configs import devices as ad  # lazy: the rest of devices/ must not need aihwkit

    cls = _base_class(device)
    if cls is ConstantStepDevice and device.write_noise_std != 0:
        raise ValueError(
            f"to_aihwkit: {type(device).__name__}.write_noise_std must be 0 for aihwkit's ConstantStepDevice "
            f"(it has no write noise), got {device.write_noise_std!r}"
        )
    target = getattr(ad, cls.__name__)
    kwargs = {name: getattr(device, name) for name in SHARED_FIELDS + _MODEL_FIELDS[cls]}
    return target(**kwargs)


def from_aihwkit(cfg: Any, strict: bool = True) -> PulsedDevice:
    """The device model equivalent to the aihwkit device config ``cfg`` (field by field).

    Args:
        cfg: an aihwkit ``ConstantStepDevice``, ``LinearStepDevice``, ``SoftBoundsDevice``, ``ExpStepDevice`` or
            ``PowStepDevice`` (or a preset subclass of one of them).
        strict: raise (True) or warn (False) when ``cfg`` uses aihwkit features not modelled here.
    Raises:
        ValueError: unsupported config class, or (strict) a non-neutral unsupported feature.
    """
    from aihwkit.simulator.configs import devices as ad

    unsupported = (getattr(ad, "SoftBoundsPmaxDevice", ()), getattr(ad, "SoftBoundsReferenceDevice", ()),
                   getattr(ad, "PowStepReferenceDevice", ()), getattr(ad, "PiecewiseStepDevice", ()))
    ours: type | None = None
    if not isinstance(cfg, unsupported):
        for cls in (ConstantStepDevice, LinearStepDevice, SoftBoundsDevice, ExpStepDevice, PowStepDevice):
            if isinstance(cfg, getattr(ad, cls.__name__)):
                ours = cls
                break
    if ours is None:
        raise ValueError(
            f"from_aihwkit: unsupported aihwkit config {type(cfg).__name__}; supported: ConstantStepDevice, "
            "LinearStepDevice, SoftBoundsDevice, ExpStepDevice, PowStepDevice"
        )
    problems = []
    for name, neutral in _NEUTRAL.items():
        if hasattr(cfg, name) and getattr(cfg, name) != neutral:
            problems.append(f"{type(cfg).__name__}.{name} = {getattr(cfg, name)!r} (supported: {neutral!r})")
    nu = getattr(getattr(cfg, "drift", None), "nu", 0.0)       # aihwkit drifts the weights whenever nu > 0
    if nu != 0:
        problems.append(f"{type(cfg).__name__}.drift.nu = {nu!r} (supported: 0.0, no drift)")
    if problems:
        msg = "from_aihwkit: aihwkit features not modelled by devices/: " + "; ".join(problems)
        if strict:
            raise ValueError(msg + " (pass strict=False to convert anyway, ignoring them)")
        warnings.warn(msg, stacklevel=2)
    names = set(SHARED_FIELDS + _MODEL_FIELDS[ours])
    kwargs = {f.name: getattr(cfg, f.name) for f in fields(ours) if f.name in names}
    return ours(**kwargs)
