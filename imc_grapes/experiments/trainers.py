"""Training loops of the experiments whose models or schedules ``imc_grapes.train.train`` does not cover.

:func:`train_custom` trains a recurrent or spiking model (``cfg.extra["model"]``, see
:mod:`imc_grapes.experiments.models`) with the same loop, files and result type as
:func:`imc_grapes.train.train`: ``metrics.csv`` and ``results.json`` in the run folder, a :class:`RunResult`,
:class:`~imc_grapes.train.DivergenceError` on a NaN/Inf loss or evaluation (what was finished is kept). The batches
are drawn in the same seeded order as ``train`` (same ``BatchLoader`` seed), so every optimizer sees the same data.

Every trainer has ``train``'s signature, ``trainer(cfg, out_dir, dataset=..., progress=..., log=...)``.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from ..backends import Network
from ..config import TrainConfig
from ..data import Dataset
from ..train import RunResult, train
from .models import build_custom_model, custom_network

__all__ = ["Trainer", "train_custom"]

#: ``trainer(cfg, out_dir, dataset=..., progress=..., log=...) -> RunResult``
Trainer = Callable[..., RunResult]


def train_custom(cfg: TrainConfig, out_dir: str | Path | None = None, dataset: Dataset | None = None,
                 progress: bool | None = True, log: Callable[[str], None] = print) -> RunResult:
    """Train the recurrent / spiking model ``cfg.extra["model"]`` under ``cfg`` (backend, optimizer with GRAPES
    or the layer-mean control, lr, epochs, seed, subsets, validation holdout) like :func:`imc_grapes.train.train`.

    ``cfg.model`` and ``cfg.hidden`` are not used (the description in ``cfg.extra["model"]`` is); ``cfg.rule``
    must be ``bp`` (BPTT). ``cfg.inference_times`` evaluates the trained analog model after programming and
    drift, as for ``train``'s models. Raises :class:`~imc_grapes.train.DivergenceError` on a NaN/Inf loss, or a NaN/Inf
    evaluation loss or accuracy (:func:`~imc_grapes.train.check_evaluation`).
    """
    spec = cfg.extra.get("model")
    if not isinstance(spec, dict):
        raise ValueError("train_custom: cfg.extra['model'] must describe the model, e.g. {'kind': 'lstm', "
                         "'hidden': [64]}")
    if cfg.rule != "bp":
        raise ValueError(f"train_custom: recurrent and spiking models train with BPTT (rule 'bp'), got {cfg.rule!r}")

    def build(cfg: TrainConfig, input_shape: tuple[int, ...], n_classes: int, device: torch.device) -> Network:
        return custom_network(cfg, build_custom_model(spec, input_shape, n_classes, cfg.seed, device), device)

    return train(cfg, out_dir, dataset, progress, log, build=build)
