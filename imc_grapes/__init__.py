"""imc-grapes: learning on simulated in-memory-computing hardware.

Public API (the heavier submodules stay importable on their own):

* GRAPES: :func:`attach_grapes`, :func:`importance`, :func:`modulation`, :func:`layer_mean` (``imc_grapes.grapes``)
* models: :func:`build_model`, :class:`MLP`, :class:`SmallCNN` (``imc_grapes.models``)
* data: :func:`load_dataset`, :func:`fetch` (``imc_grapes.data``)
* training: :class:`TrainConfig`, :func:`train` (``imc_grapes.config``, ``imc_grapes.train``); many seeds of a small
  analog MLP in one batched pass: :func:`train_replicas` (``imc_grapes.replicas``)
* CPU runtime: :func:`tune_malloc` (``imc_grapes.runtime``; the command line calls it)
"""
from .config import ConfigError, TrainConfig
from .data import fetch, load_dataset
from .grapes import attach_grapes, importance, layer_mean, modulation
from .models import MLP, SmallCNN, build_model
from .train import DivergenceError, RunResult, evaluate, train
from .replicas import train_replicas
from .runtime import tune_malloc

__version__ = "0.1.0"

__all__ = [
    "ConfigError", "DivergenceError", "MLP", "RunResult", "SmallCNN", "TrainConfig", "attach_grapes",
    "build_model", "evaluate", "fetch", "importance", "layer_mean", "load_dataset", "modulation", "train",
    "train_replicas", "tune_malloc",
    "__version__",
]
