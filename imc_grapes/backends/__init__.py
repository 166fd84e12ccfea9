"""Backends: the same model description built as a digital torch network, on this project's crossbar engine,
or on aihwkit — with GRAPES attached (importance from the device states or read from the array), pulsed
in-memory updates, saturation probes and hardware cost accounting.

* :func:`build_network` -> :class:`Network` (``model``, ``grapes``, ``step()``, ``metrics()``,
  ``cost_summary()``, ``read_weights()`` / ``write_weights()``);
* :func:`crossbar_config_from`: :class:`AnalogSettings` -> ``crossbar.CrossbarConfig``;
* :mod:`.costs`: cost kinds and the energy table (:data:`ENERGY_TABLE_PJ`);
* aihwkit is imported lazily, only by the aihwkit backend (:mod:`.aihwkit_backend`).
"""
from .costs import (COST_KINDS, ENERGY_SOURCES, ENERGY_TABLE_PJ, energy_breakdown, grapes_overhead,
                    load_energy_table)
from .hardware import bits_to_res, crossbar_config_from, io_parameters_from
from .importance import ImportanceSource, MeanMeter, pearson
from .layers import BACKWARD_MODES, AnalogLayer, CrossbarLayer
from .network import Network, build_network, layer_seed
from .optim import make_optimizer
from .settings import IMPORTANCE_SOURCES, AnalogSettings

__all__ = [
    "AnalogSettings",
    "IMPORTANCE_SOURCES",
    "build_network",
    "Network",
    "make_optimizer",
    "crossbar_config_from",
    "io_parameters_from",
    "bits_to_res",
    "AnalogLayer",
    "CrossbarLayer",
    "BACKWARD_MODES",
    "ImportanceSource",
    "MeanMeter",
    "pearson",
    "COST_KINDS",
    "ENERGY_TABLE_PJ",
    "ENERGY_SOURCES",
    "energy_breakdown",
    "grapes_overhead",
    "load_energy_table",
    "layer_seed",
]
