"""The training run's configuration: one validated dataclass, shared by the CLI, the library and sweeps."""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from .backends.settings import AnalogSettings
from .data.registry import DATASET_NAMES

MODELS = ("mlp", "cnn")
#: where the network's weights live: plain torch, this project's crossbar engine, or IBM's aihwkit
BACKENDS = ("digital", "crossbar", "aihwkit")
ACTIVATIONS = ("relu", "tanh")
RULES = ("bp", "fa", "dfa")
#: learning method -> GRAPES mode (None: plain optimizer, no modulation)
OPTIMIZERS: dict[str, str | None] = {
    "sgd": None,
    "grapes": "propagated",
    "grapes-local": "local",
    "layer-mean": "layer-mean",
}


def base_optimizer_names() -> list[str]:
    """Names of the torch optimizers usable as base optimizer (lower-case class names in ``torch.optim``)."""
    names = []
    for name in dir(torch.optim):
        obj = getattr(torch.optim, name)
        if isinstance(obj, type) and issubclass(obj, torch.optim.Optimizer) and obj is not torch.optim.Optimizer:
            names.append(name.lower())
    return sorted(names)


#: config fields added after results were first saved, with the value that reproduces the earlier behaviour
#: (``("analog", "name")`` for an :class:`AnalogSettings` field): a saved config without such a field is the same
#: config as one that holds that value, so finished runs still resume and sweep points keep their ids
LATER_FIELDS: dict[tuple[str, ...], Any] = {("analog", "importance_offset_correction"): False}


def identity_dict(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` (a :meth:`TrainConfig.to_dict`, or a saved one) without the :data:`LATER_FIELDS` that hold
    their earlier-behaviour value: what identifies a run (resume, sweep point ids)."""
    out = copy.deepcopy(config)
    for path, value in LATER_FIELDS.items():
        parent: Any = out
        for key in path[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if isinstance(parent, dict) and path[-1] in parent and parent[path[-1]] == value:
            del parent[path[-1]]
    return out


class ConfigError(ValueError):
    """An invalid configuration value; the message names the field, the valid range and the value."""


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (same config + seed -> same numbers on the same machine).

    Attributes:
        dataset: ``mnist``, ``fashion-mnist`` or ``synthetic``.
        data_root: cache folder of the data sets (default ``$IMC_GRAPES_DATA`` / ``~/.cache/imc-grapes/data``).
        model: ``mlp`` or ``cnn``.
        hidden: hidden layer widths of the MLP (ignored by the CNN).
        activation: ``relu`` or ``tanh``.
        dropout: dropout probability after hidden activations, in [0, 1).
        rule: how errors reach hidden layers: ``bp``, ``fa`` (feedback alignment), ``dfa`` (direct FA).
        optimizer: ``sgd`` (no modulation), ``grapes`` (propagated), ``grapes-local``, ``layer-mean`` (control:
            each layer's GRAPES factor replaced by its layer mean).
        base_optimizer: the torch optimizer that applies the (modulated) gradients: any ``torch.optim`` class
            name in lower case (``sgd``, ``adam``, ``adamw``, ``rmsprop``, ...).
        lr: learning rate (> 0).
        momentum: momentum of SGD / RMSprop (≥ 0; ignored by optimizers without it).
        weight_decay: L2 penalty (≥ 0).
        batch_size: mini-batch size (≥ 1).
        drop_last: drop each epoch's partial last batch (default True). The loss is the mean over a batch, so a
            partial batch of n samples would give each of them ``batch_size / n`` times its usual weight in one
            step, right before the epoch's last evaluation; at a tuned (large) lr that step can cost the final
            accuracy several points (docs/results.md measures it). The samples left out change every epoch (the
            order is reshuffled), so every sample is still used. ``False`` keeps the partial batch (the behaviour
            of earlier versions; a config saved before this field existed loads with the current default). The
            training split must hold at least one full batch.
        epochs: passes over the training set (≥ 1).
        seed: seeds the weights, dropout and the data order.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (cuda if available).
        train_subset / test_subset: use only the first N samples (None: all).
        val_holdout: if > 0, the last N training samples are held out and the run is evaluated on them
            instead of the test set (for tuning the learning rate without looking at the test set).
        inference_times: seconds after programming at which the trained analog network is evaluated with
            PCM-like programming noise, drift and read noise (e.g. 1, 3600, 86400, 31536000); empty: none.
        backend: ``digital`` (float weights), ``crossbar`` (this project's analog tile engine) or ``aihwkit``
            (IBM's simulator, the reference); the analog backends train with pulsed in-memory updates.
        analog: the analog hardware (device preset, periphery, GRAPES importance source); ignored by digital.
        evals_per_epoch: how many times per epoch the test set is evaluated (a point of the learning curve);
            train loss/accuracy of a point are means over the batches since the previous point.
    """

    dataset: str = "mnist"
    data_root: str | None = None
    model: str = "mlp"
    hidden: tuple[int, ...] = (256, 256)
    activation: str = "relu"
    dropout: float = 0.0
    rule: str = "bp"
    optimizer: str = "sgd"
    base_optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 64
    drop_last: bool = True
    epochs: int = 1
    seed: int = 0
    device: str = "cpu"
    train_subset: int | None = None
    test_subset: int | None = None
    evals_per_epoch: int = 1
    val_holdout: int = 0
    inference_times: tuple[float, ...] = ()
    backend: str = "digital"
    analog: AnalogSettings = field(default_factory=AnalogSettings)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        _check(self.dataset in DATASET_NAMES,
               f"dataset must be one of {', '.join(DATASET_NAMES)}, got {self.dataset!r}")
        _check(self.model in MODELS, f"model must be one of {', '.join(MODELS)}, got {self.model!r}")
        _check(len(self.hidden) >= 1 and all(h >= 1 for h in self.hidden),
               f"hidden must be one or more widths ≥ 1, got {list(self.hidden)}")
        _check(self.activation in ACTIVATIONS,
               f"activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        _check(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        _check(self.rule in RULES, f"rule must be one of {', '.join(RULES)}, got {self.rule!r}")
        _check(not (self.model == "cnn" and self.rule != "bp"),
               f"rule {self.rule!r} is implemented for the mlp model only; use --rule bp with --model cnn")
        _check(self.optimizer in OPTIMIZERS,
               f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        valid_base = base_optimizer_names()
        _check(self.base_optimizer in valid_base,
               f"base_optimizer must be one of {', '.join(valid_base)}, got {self.base_optimizer!r}")
        _check(self.lr > 0 and self.lr == self.lr and self.lr != float("inf"),
               f"lr must be > 0 (and finite), got {self.lr}")
        _check(self.momentum >= 0, f"momentum must be ≥ 0, got {self.momentum}")
        _check(self.weight_decay >= 0, f"weight_decay must be ≥ 0, got {self.weight_decay}")
        _check(self.batch_size >= 1, f"batch_size must be ≥ 1, got {self.batch_size}")
        _check(isinstance(self.drop_last, bool), f"drop_last must be true or false, got {self.drop_last!r}")
        _check(self.epochs >= 1, f"epochs must be ≥ 1, got {self.epochs}")
        _check(self.train_subset is None or self.train_subset >= 1,
               f"train_subset must be ≥ 1 (or None for all), got {self.train_subset}")
        _check(not (self.drop_last and self.train_subset is not None and self.train_subset < self.batch_size),
               f"drop_last leaves no batch: train_subset {self.train_subset} < batch_size {self.batch_size}; "
               f"use a smaller batch_size or set drop_last false (--no-drop-last)")
        _check(self.test_subset is None or self.test_subset >= 1,
               f"test_subset must be ≥ 1 (or None for all), got {self.test_subset}")
        object.__setattr__(self, "inference_times", tuple(float(t) for t in self.inference_times))
        _check(self.val_holdout >= 0, f"val_holdout must be ≥ 0, got {self.val_holdout}")
        _check(all(t >= 0 for t in self.inference_times),
               f"inference_times must be ≥ 0 seconds, got {list(self.inference_times)}")
        if isinstance(self.analog, dict):
            object.__setattr__(self, "analog", AnalogSettings.from_dict(self.analog))
        _check(self.backend in BACKENDS, f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        _check(isinstance(self.analog, AnalogSettings),
               f"analog must be an AnalogSettings (or a dict of its fields), got {self.analog!r}")
        _check(self.evals_per_epoch >= 1, f"evals_per_epoch must be ≥ 1, got {self.evals_per_epoch}")
        _check(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
               f"device must be cpu, cuda, cuda:N or auto, got {self.device!r}")

    @property
    def grapes_mode(self) -> str | None:
        return OPTIMIZERS[self.optimizer]

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        dev = torch.device(self.device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device {self.device!r} requested but CUDA is not available on this machine "
                              "(torch.cuda.is_available() is False); use --device cpu")
        return dev

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        d["inference_times"] = list(self.inference_times)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Build from a dict, rejecting unknown keys with the list of valid ones."""
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - valid)
        if unknown:
            raise ConfigError(f"unknown train config field(s) {unknown}; valid: {', '.join(sorted(valid))}")
        return cls(**d)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def batching(self) -> str:
        """How the runs are batched, for reports: ``"batch 64 (partial last batch left out)"``."""
        return f"batch {self.batch_size} (partial last batch {'left out' if self.drop_last else 'kept'})"

    def run_name(self) -> str:
        return f"{self.dataset}_{self.model}_{self.rule}_{self.optimizer}_lr{self.lr:g}_seed{self.seed}"
