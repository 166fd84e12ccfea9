"""devices: physics of one resistive device (what a pulse does to its state), vectorized over any shape.

Public API: device models (frozen dataclasses with aihwkit's field names), their sampled per-device
parameters (:class:`DeviceParams`), presets, the conductance view and converters to/from aihwkit configs.
Imports nothing else of this project and does not import aihwkit (the converters import it lazily).

Typical use::

    dev = get_preset("EcRam")                                     # or SoftBoundsDevice(dw_min=0.002)
    g = torch.Generator().manual_seed(0)
    params = dev.sample((tiles, rows, cols), generator=g)        # device-to-device spread, once
    w = dev.apply_pulses(w, n_up, n_down, params, generator=g)    # pulse counts -> new states

Execution helpers: ``set_compile("auto")`` fuses the device models with torch.compile (:mod:`devices.fusion`);
``no_host_reads()`` proves a block free of GPU host synchronisations (:mod:`devices.host`).
"""

from devices.aihwkit_convert import from_aihwkit, to_aihwkit
from devices.base import DeviceParams, PulsedDevice
from devices.conductance import ConductanceMap
from devices.constant_step import ConstantStepDevice, IdealDevice
from devices.exp_step import ExpStepDevice
from devices.inference import (
    STANDARD_TIME_LABELS,
    STANDARD_TIMES_S,
    GenericDriftModel,
    InferenceNoiseModel,
    NoDrift,
    PCMLikeNoiseModel,
    ProgrammedWeights,
    apply_inference_noise,
    program_weights,
    read_weights_at,
)
from devices.linear_step import LinearStepDevice, SoftBoundsDevice
from devices.pow_step import PowStepDevice
from devices.rng import CounterRNG
from devices.host import HostReadError, host_reads_free, no_host_reads
from devices.fusion import get_compile, set_compile
from devices.presets import (
    PRESETS,
    CapacitorPresetDevice,
    EcRamMOPresetDevice,
    EcRamPresetDevice,
    GokmenVlasovPresetDevice,
    IdealizedPresetDevice,
    PCMPresetDevice,
    ReRamESPresetDevice,
    ReRamSBPresetDevice,
    get_preset,
)

__all__ = [
    "DeviceParams",
    "PulsedDevice",
    "IdealDevice",
    "ConstantStepDevice",
    "LinearStepDevice",
    "SoftBoundsDevice",
    "ExpStepDevice",
    "PowStepDevice",
    "PRESETS",
    "get_preset",
    "ReRamESPresetDevice",
    "ReRamSBPresetDevice",
    "CapacitorPresetDevice",
    "EcRamPresetDevice",
    "EcRamMOPresetDevice",
    "IdealizedPresetDevice",
    "GokmenVlasovPresetDevice",
    "PCMPresetDevice",
    "ConductanceMap",
    "to_aihwkit",
    "from_aihwkit",
    "STANDARD_TIMES_S",
    "STANDARD_TIME_LABELS",
    "InferenceNoiseModel",
    "PCMLikeNoiseModel",
    "GenericDriftModel",
    "NoDrift",
    "ProgrammedWeights",
    "program_weights",
    "read_weights_at",
    "apply_inference_noise",
    "CounterRNG",
    "HostReadError",
    "host_reads_free",
    "no_host_reads",
    "set_compile",
    "get_compile",
]
