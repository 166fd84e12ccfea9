"""Named device presets: aihwkit 1.1's preset numbers (``aihwkit/simulator/presets/devices.py``) and the papers
they were fitted to. Each preset is a frozen subclass of a model with different defaults, so any field can
still be overridden: ``ReRamSBPresetDevice(dw_min_std=0.5)``.

Not modelled here (and left out of the presets): aihwkit's capacitor leakage (``lifetime``), device reset and
the reference-device subtraction of ``SoftBoundsReferenceDevice`` — noted per preset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from devices.base import PulsedDevice
from devices.constant_step import ConstantStepDevice, IdealDevice
from devices.exp_step import ExpStepDevice
from devices.linear_step import LinearStepDevice, SoftBoundsDevice
from devices.suggest import did_you_mean

__all__ = [
    "ReRamESPresetDevice",
    "ReRamSBPresetDevice",
    "CapacitorPresetDevice",
    "EcRamPresetDevice",
    "EcRamMOPresetDevice",
    "IdealizedPresetDevice",
    "GokmenVlasovPresetDevice",
    "PCMPresetDevice",
    "PRESETS",
    "get_preset",
]


@dataclass(frozen=True)
class ReRamESPresetDevice(ExpStepDevice):
    """ReRAM, exponential-step fit to Gong et al., "Signal and noise extraction from analog memory elements
    for neuromorphic computing", Nature Communications 9, 2102 (2018) — aihwkit ``ReRamESPresetDevice``.

    Very noisy: cycle-to-cycle std 5× the step, write noise 75× the step.
    """

    dw_min: float = 0.00135
    up_down: float = 0.259359
    w_max: float = 1.0
    w_min: float = -1.0
    a: float = -0.5
    b: float = -0.5
    gamma_up: float = 5.0
    gamma_down: float = 5.0
    A_up: float = -1.18445
    A_down: float = -0.081404
    dw_min_dtod: float = 0.2
    up_down_dtod: float = 0.05
    w_max_dtod: float = 0.3
    w_min_dtod: float = 0.3
    dw_min_std: float = 5.0
    write_noise_std: float = 75.0


@dataclass(frozen=True)
class ReRamSBPresetDevice(SoftBoundsDevice):
    """ReRAM, soft-bounds loose fit to Gong et al., Nature Communications 9, 2102 (2018) — aihwkit
    ``ReRamSBPresetDevice`` (there a ``SoftBoundsReferenceDevice`` without reference subtraction, i.e. the same
    update as soft bounds with additive noise; the range is assumed shifted to the symmetry point).
    """

    dw_min: float = 0.002
    up_down: float = 0.0
    w_max: float = 1.25
    w_min: float = -0.75
    mult_noise: bool = False
    dw_min_dtod: float = 0.3
    up_down_dtod: float = 0.01
    w_max_dtod: float = 0.3 / 1.25
    w_min_dtod: float = 0.3 / 0.75
    dw_min_std: float = 3.75
    write_noise_std: float = 56.0


@dataclass(frozen=True)
class CapacitorPresetDevice(LinearStepDevice):
    """Capacitor-based cell, linear-step fit to Li et al., "Capacitor-based cross-point array for analog neural
    network with record symmetry and linearity", VLSI Technology 2018 — aihwkit ``CapacitorPresetDevice``.

    aihwkit also adds leakage (``lifetime = 1e6`` mini-batches, ``lifetime_dtod = 0.3``); decay is not modelled
    here.
    """

    dw_min: float = 0.005
    up_down: float = 0.0
    w_max: float = 1.0
    w_min: float = -1.0
    mult_noise: bool = False
    gamma_up: float = 0.05
    gamma_down: float = 0.05
    dw_min_dtod: float = 0.1
    up_down_dtod: float = 0.06
    w_max_dtod: float = 0.07
    w_min_dtod: float = 0.07
    gamma_up_dtod: float = 0.01
    gamma_down_dtod: float = 0.01
    dw_min_std: float = 0.3
    write_noise_std: float = 0.0
    mean_bound_reference: bool = True


@dataclass(frozen=True)
class EcRamPresetDevice(LinearStepDevice):
    """Li-ion ECRAM, linear-step fit to Tang et al., "ECRAM as scalable synaptic cell for high-speed,
    low-power neuromorphic computing", IEDM 2018 — aihwkit ``EcRamPresetDevice`` (range shifted so the
    symmetry point is 0).
    """

    dw_min: float = 0.002
    up_down: float = 0.0
    w_max: float = 1.1724
    w_min: float = -0.8276
    mult_noise: bool = True
    gamma_up: float = 0.1153
    gamma_down: float = 0.5085
    dw_min_dtod: float = 0.1
    up_down_dtod: float = 0.01
    w_max_dtod: float = 0.05
    w_min_dtod: float = 0.05
    gamma_up_dtod: float = 0.05
    gamma_down_dtod: float = 0.05
    dw_min_std: float = 0.3
    write_noise_std: float = 0.0
    mean_bound_reference: bool = True


@dataclass(frozen=True)
class EcRamMOPresetDevice(LinearStepDevice):
    """Metal-oxide ECRAM, linear-step fit to Kim et al., "Metal-oxide based, CMOS-compatible ECRAM for deep
    learning accelerator", IEDM 2019 — aihwkit ``EcRamMOPresetDevice``.
    """

    dw_min: float = 2.8214e-4
    up_down: float = 0.0
    w_max: float = 1.1714
    w_min: float = -0.8286
    mult_noise: bool = True
    gamma_up: float = 0.4152
    gamma_down: float = 0.7342
    dw_min_dtod: float = 0.1
    up_down_dtod: float = 0.01
    w_max_dtod: float = 0.05
    w_min_dtod: float = 0.05
    gamma_up_dtod: float = 0.05
    gamma_down_dtod: float = 0.05
    dw_min_std: float = 2.0
    write_noise_std: float = 0.0
    mean_bound_reference: bool = True


@dataclass(frozen=True)
class IdealizedPresetDevice(ConstantStepDevice):
    """Idealized symmetric constant-step device with ~10,000 states: the specification of Gokmen & Vlasov,
    "Acceleration of deep neural network training with resistive cross-point devices", Frontiers in
    Neuroscience 10:333 (2016), with the asymmetry spread set to 0 and 8× more states, as used by Rasch,
    Gokmen & Haensch, IEEE Design & Test (2019) — aihwkit ``IdealizedPresetDevice``.
    """

    dw_min: float = 0.0002
    dw_min_dtod: float = 0.3
    dw_min_std: float = 0.3
    up_down: float = 0.0
    up_down_dtod: float = 0.0
    w_max: float = 1.0
    w_min: float = -1.0
    w_max_dtod: float = 0.3
    w_min_dtod: float = 0.3


@dataclass(frozen=True)
class GokmenVlasovPresetDevice(ConstantStepDevice):
    """Constant-step device with ~1,200 states from the specification of Gokmen & Vlasov, Frontiers in
    Neuroscience 10:333 (2016), scaled to the weight range −1..1 — aihwkit ``GokmenVlasovPresetDevice``.
    """

    dw_min: float = 0.0016
    dw_min_dtod: float = 0.3
    dw_min_std: float = 0.3
    up_down: float = 0.0
    up_down_dtod: float = 0.01
    w_max: float = 1.0
    w_min: float = -1.0
    w_max_dtod: float = 0.3
    w_min_dtod: float = 0.3


@dataclass(frozen=True)
class PCMPresetDevice(ExpStepDevice):
    """Ge₂Sb₂Te₅ phase-change memory, exponential-step fit with complex noise to Nandakumar et al.,
    "Mixed-precision deep learning based on computational memory", Frontiers in Neuroscience 14:406 (2020) —
    aihwkit ``PCMPresetDevice``.

    Unidirectional (``w_min = 0``): meant for a G⁺/G⁻ pair with refresh (aihwkit ``OneSidedUnitCell``); the
    down direction models the abrupt RESET. aihwkit's reset parameters (``reset = 0.01``, ``reset_dtod = 0.02``)
    are not modelled. Strongly nonlinear (the first SET pulse from ``w = 0`` is ~28× ``dw_min``): the count-based
    response is exact for 1 pulse per call and approximate for more (see :class:`ExpStepDevice`).
    """

    dw_min: float = 0.01
    up_down: float = 0.0
    w_max: float = 2.0
    w_min: float = 0.0
    a: float = -1.0
    b: float = 0.0
    gamma_up: float = 2.5
    gamma_down: float = 2.5
    A_up: float = -27.235
    A_down: float = -2.235
    dw_min_dtod: float = 0.2
    up_down_dtod: float = 0.05
    w_max_dtod: float = 0.1
    w_min_dtod: float = 0.0
    dw_min_std: float = 0.6
    dw_min_std_add: float = 0.042
    dw_min_std_slope: float = 0.108
    write_noise_std: float = 0.0


PRESETS: dict[str, type[PulsedDevice]] = {
    "ReRamES": ReRamESPresetDevice,
    "ReRamSB": ReRamSBPresetDevice,
    "Capacitor": CapacitorPresetDevice,
    "EcRam": EcRamPresetDevice,
    "EcRamMO": EcRamMOPresetDevice,
    "Idealized": IdealizedPresetDevice,
    "GokmenVlasov": GokmenVlasovPresetDevice,
    "PCM": PCMPresetDevice,
    "Ideal": IdealDevice,
}
"""Registry of preset names (case-insensitive in :func:`get_preset`) to device classes."""


def get_preset(name: str, **overrides: Any) -> PulsedDevice:
    """The preset device ``name`` (case-insensitive), optionally with fields overridden.

    Raises:
        ValueError: unknown name (the message lists the valid names) or an invalid override.
    """
    lookup = {k.lower(): v for k, v in PRESETS.items()}
    cls = lookup.get(str(name).lower())
    if cls is None:
        raise ValueError(f"unknown device preset {name!r}; valid names: {', '.join(PRESETS)}"
                         f"{did_you_mean(name, PRESETS)}")
    return cls(**overrides)
