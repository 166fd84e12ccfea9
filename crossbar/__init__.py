"""crossbar: arrays of resistive devices with their periphery, vectorized torch tiles and analog layers.

Imports ``devices`` only (aihwkit lazily, in the converters).
"""

from crossbar.config import CrossbarConfig, MVMRangeError, to_aihwkit_io_parameters, to_aihwkit_rpu_config
from crossbar.mapping import TileGrid
from crossbar.modules import (AnalogConv2d, AnalogFunction, AnalogLinear, AnalogModuleBase, analog_module_of,
                              analog_modules)
from crossbar.optim import AnalogSGD, analog_step, analog_zero_grad
from crossbar._sparse_update import CPU_PULSE_COUNTS, INT8_COUNTS_ENV, check_int8_counts_env
from crossbar.periphery import (IOParameters, MVMResult, PreparedInputs, add_gaussian_noise, analog_mvm,
                                bound_management_rounds, noise_management_scale, prepare_inputs, quantize,
                                quantize_adc, quantize_dac, resolution_step)
from crossbar.replicas import ReplicaLinear, ReplicaTileArray
from crossbar.tiles import (COUNTER_NAMES, HardwareSumsPlan, TileArray, TileState, check_finite_weights,
                           hardware_and_exact_sums, hardware_sums, pair_offset)
from crossbar.update import UpdateParameters, ideal_delta, pulse_counts, pulse_probabilities, update_scales

__all__ = [
    # config
    "CrossbarConfig",
    "MVMRangeError",
    "to_aihwkit_io_parameters",
    "to_aihwkit_rpu_config",
    # periphery
    "IOParameters",
    "MVMResult",
    "analog_mvm",
    "PreparedInputs",
    "prepare_inputs",
    "quantize",
    "quantize_dac",
    "quantize_adc",
    "add_gaussian_noise",
    "noise_management_scale",
    "bound_management_rounds",
    "resolution_step",
    # mapping and tiles
    "TileGrid",
    "TileArray",
    "hardware_sums",
    "hardware_and_exact_sums",
    "HardwareSumsPlan",
    "pair_offset",
    "check_finite_weights",
    "TileState",
    "COUNTER_NAMES",
    # replicas (crossbar/replicas.py)
    "ReplicaTileArray",
    "ReplicaLinear",
    # update (crossbar/update.py)
    "UpdateParameters",
    "pulse_counts",
    "pulse_probabilities",
    "update_scales",
    "ideal_delta",
    "CPU_PULSE_COUNTS",
    "INT8_COUNTS_ENV",
    "check_int8_counts_env",
    # modules and optimizers
    "AnalogModuleBase",
    "AnalogLinear",
    "AnalogConv2d",
    "AnalogFunction",
    "analog_module_of",
    "analog_modules",
    "AnalogSGD",
    "analog_step",
    "analog_zero_grad",
]
