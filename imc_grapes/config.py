"""The training run's configuration: one validated dataclass, shared by the CLI, the library and sweeps."""
from __future__ import annotations

import copy
import dataclasses
import math
import numbers
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from devices.base import FLOAT32_RANGE, SEED_RANGE, fits_float32, is_number, seed_in_range

from .backends.optim import (MATRIX_ONLY_BASE_OPTIMIZERS, base_optimizer_names, base_optimizer_problem, has_capturable,
                             optimizer_class)
from .backends.settings import AnalogSettings, overrides_at_preset_values
from .data.registry import DATASET_NAMES
from .models import DEFAULT_HIDDEN
from .suggest import did_you_mean, did_you_mean_each

_FLOAT32_SMALLEST = 1.401298464324817e-45
"""The smallest positive float32 (a subnormal, ``2⁻¹⁴⁹``): the smallest lr that is not 0 in float32."""

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
#: the learning methods that modulate with GRAPES (read the importance): those of :data:`OPTIMIZERS` with a mode
GRAPES_OPTIMIZERS: tuple[str, ...] = tuple(o for o, mode in OPTIMIZERS.items() if mode is not None)
#: what each learning method of :data:`OPTIMIZERS` does, in the variants' names of docs grapes.md §2 and §5 (--help)
OPTIMIZER_MEANINGS: dict[str, str] = {
    "sgd": "no modulation",
    "grapes": "GRAPES propagated: the modulated error also flows to the layers below",
    "grapes-local": "GRAPES local: only each layer's own weight gradient is modulated",
    "layer-mean": "the layer-mean control: propagated, each layer's factors replaced by their mean",
}
#: what each learning rule of :data:`RULES` does and the GRAPES factor it takes (docs grapes.md §3; --help)
RULE_MEANINGS: dict[str, str] = {
    "bp": "backpropagation; GRAPES factor clip(2F/max F, 1, 2)",
    "fa": "feedback alignment, fixed random feedback; factor 2F/max F, not clipped",
    "dfa": "direct feedback alignment, the output error sent to every hidden layer; factor per synapse from the "
           "outgoing importance, the first hidden layer unmodulated",
}


def describe_choices(meanings: dict[str, str]) -> str:
    """``name (meaning), ...`` of :data:`OPTIMIZER_MEANINGS` or :data:`RULE_MEANINGS`, for an option's --help."""
    return ", ".join(f"{name} ({meaning})" for name, meaning in meanings.items())


def graph_safe_base_optimizers() -> list[str]:
    """The base optimizers that can run inside a CUDA graph (``TrainConfig.cuda_graph``): ``sgd`` and those with
    torch's ``capturable`` option (:func:`~imc_grapes.backends.make_optimizer` turns it on)."""
    return [name for name in base_optimizer_names()
            if name == "sgd" or has_capturable(optimizer_class(name))]


#: config fields added after results were first saved, with the value that reproduces the earlier behaviour
#: (``("analog", "name")`` for an :class:`AnalogSettings` field): a saved config without such a field is the same
#: config as one that holds that value, so finished runs still resume and sweep points keep their ids
LATER_FIELDS: dict[tuple[str, ...], Any] = {("analog", "importance_offset_correction"): False, ("cuda_graph",): False}


def _later_fields_in(config: dict[str, Any]) -> Iterator[tuple[tuple[str, ...], Any, dict[str, Any]]]:
    """Each :data:`LATER_FIELDS` entry (path, earlier-behaviour value) with the dict of ``config`` that holds or
    would hold its last key (``config`` itself, or its ``analog`` dict); entries whose parent ``config`` lacks (a
    damaged saved config) are left out."""
    for path, value in LATER_FIELDS.items():
        parent: Any = config
        for key in path[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if isinstance(parent, dict):
            yield path, value, parent


def with_later_fields(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` (a saved run's config as a dict) in which each :data:`LATER_FIELDS` entry it lacks (saved
    before the field existed) holds the value that reproduces the behaviour of that run: what the run used, for a
    message that shows its settings (``cuda_graph: False -> True``, not ``None -> True``)."""
    out = copy.deepcopy(config)
    for path, value, parent in _later_fields_in(out):
        if path[-1] not in parent:
            parent[path[-1]] = value
    return out


def identity_dict(config: dict[str, Any], *, device_defaults: bool = True) -> dict[str, Any]:
    """A copy of ``config`` (a :meth:`TrainConfig.to_dict`, or a saved one) without the :data:`LATER_FIELDS` that hold
    their earlier-behaviour value, and without the entries of ``analog.device_overrides`` that hold the preset's own
    value (:func:`~imc_grapes.backends.settings.overrides_at_preset_values`: ``dw_min = 0.002`` on ``ReRamSB``, whose
    dw_min is 0.002, is the same device and the same run as no override): what identifies a run (resume, sweep point
    ids). A config without such an override keeps the identity it had before they were left out.

    ``device_defaults=False`` keeps those overrides: the identity of earlier versions, under which a sweep folder
    written before named its points (:func:`imc_grapes.sweep.spec.legacy_config_id`)."""
    out = copy.deepcopy(config)
    for path, value, parent in _later_fields_in(out):
        if path[-1] in parent and parent[path[-1]] == value:
            del parent[path[-1]]
    analog = out.get("analog")
    overrides = analog.get("device_overrides") if isinstance(analog, dict) else None
    if device_defaults and isinstance(analog, dict) and isinstance(overrides, dict):
        for name in overrides_at_preset_values(analog.get("preset"), overrides):
            del overrides[name]
    return out


#: the :class:`AnalogSettings` fields that a ``digital`` run uses too: its energy estimate's table. Every other analog
#: setting (device preset and overrides, tile size, DAC/ADC bits, noise, importance source, ...) only matters to the
#: analog backends
DIGITAL_ANALOG_FIELDS: tuple[str, ...] = ("energy_table",)


def run_identity(config: dict[str, Any]) -> dict[str, Any]:
    """What identifies a finished run for resume (``compare``, ``experiment``): :func:`identity_dict`, and for a
    ``digital`` run only its :data:`DIGITAL_ANALOG_FIELDS` of the analog settings, so that a digital run finished
    under one device preset (or other analog settings) is the same run under another.

    Sweep point ids keep :func:`identity_dict` (a sweep resets its digital points' analog settings to the base's
    itself, and ids of existing sweep stores must not change)."""
    out = identity_dict(config)
    analog = out.get("analog")
    if out.get("backend") == "digital" and isinstance(analog, dict):
        out["analog"] = {k: v for k, v in analog.items() if k in DIGITAL_ANALOG_FIELDS}
    return out


def as_saved(value: Any) -> Any:
    """``value`` as a ``results.json`` reads it back (tuples as lists, other non-JSON values as their ``str``), so
    that a config about to be trained and a saved one compare equal where they hold the same settings."""
    import json

    return json.loads(json.dumps(value, default=str))


def compared_as_run(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` (a run's config as a dict) as :func:`config_differences` compares it: its :func:`run_identity`,
    :func:`as_saved`."""
    out = as_saved(run_identity(config))
    return out if isinstance(out, dict) else {}


def config_differences(saved: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """The top-level fields in which a saved run's config (``results.json``'s ``config``) and ``config`` (a
    :meth:`TrainConfig.to_dict`) differ as runs (:func:`run_identity`: fields added since, and the analog settings a
    digital run ignores, do not count), sorted; empty when they are the same run."""
    a, b = compared_as_run(saved), compared_as_run(config)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def current_cuda_index() -> int:
    """The index of the GPU that ``cuda`` without one (``torch.device("cuda")``: the current device) denotes in this
    process: :func:`torch.cuda.current_device` once CUDA is initialised, and 0 before (choosing another one,
    ``torch.cuda.set_device`` or ``torch.cuda.device``, initialises CUDA), so that naming a device creates no CUDA
    context (GPU memory) in a process that may never use the GPU. Only meaningful where CUDA is available."""
    return torch.cuda.current_device() if torch.cuda.is_initialized() else 0


def device_named(device: object) -> object:
    """``device`` (a config's, ``auto`` resolved or not) as torch names the device it denotes on this machine, so
    that names of the same device compare equal: a name :class:`torch.device` reads, as torch writes it, with ``cuda``
    (the current GPU) as ``cuda:<index>`` (:func:`current_cuda_index`) where CUDA is available; without CUDA here
    ``cuda`` stays ``cuda`` (which GPU it meant is not known). Anything else (``auto``, a non-string, a name torch
    does not read) is returned as it is."""
    if not isinstance(device, str):
        return device
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        return device
    if dev.type == "cuda" and dev.index is None and torch.cuda.is_available():
        return f"cuda:{current_cuda_index()}"
    return str(dev)


def device_run_on(config: dict[str, Any], cuda_available: object) -> object:
    """The ``device`` of ``config`` (a run's config as a dict) as the run used it: ``auto`` resolved as
    :meth:`TrainConfig.resolved_device` resolves it, to ``cuda`` when CUDA was available (``cuda_available``: a
    saved run's ``versions``) and ``cpu`` otherwise; any other value, or ``auto`` when ``cuda_available`` is no bool
    (not recorded), as it is; then named as torch names that device here (:func:`device_named`: ``cuda`` is
    ``cuda:0`` on a machine with CUDA whose current GPU is 0). The same config gives other numbers on the CPU and
    on a GPU, so a run's device counts; ``auto`` and the device it resolved to, or two names of one GPU, do not
    differ. (Sweep point ids hash the config as given, not this.)"""
    device = config.get("device")
    if device == "auto" and isinstance(cuda_available, bool):
        device = "cuda" if cuda_available else "cpu"
    return device_named(device)


def as_run_on(config: dict[str, Any], cuda_available: object) -> dict[str, Any]:
    """``config`` (a run's config as a dict) with its ``device`` as the run used it (:func:`device_run_on`), for
    :func:`config_differences`: a saved run's with its ``versions``' ``cuda_available``, the run about to be trained
    with ``torch.cuda.is_available()``. A config without a ``device`` is returned as it is (copied)."""
    return {**config, "device": device_run_on(config, cuda_available)} if "device" in config else dict(config)


class ConfigError(ValueError):
    """An invalid configuration value; the message names the field, the valid range and the value."""


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def is_int(v: object) -> bool:
    """Whether ``v`` is an integer (a bool is not)."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_sequence(v: object) -> bool:
    """Whether ``v`` is a list or tuple (a string or a bare number is not)."""
    return isinstance(v, (list, tuple))


def check_distinct(name: str, values: Sequence[Any]) -> None:
    """Raise :class:`ConfigError` naming ``name`` unless ``values`` holds no value twice (a repeated seed or
    optimizer would run the same job again and count it twice in the means)."""
    repeated: list[Any] = []
    for i, v in enumerate(values):
        if v in values[:i] and v not in repeated:
            repeated.append(v)
    _check(not repeated, f"{name} must not repeat a value, got {list(values)} "
                         f"({', '.join(repr(v) for v in repeated)} more than once)")


#: torch's CPU generator (Mersenne Twister), which draws a run's initial weights and data order, uses only the
#: low 32 bits of a seed: seeds equal modulo this give the same run
SEED_PERIOD = 2 ** 32


def check_seeds_apart(name: str, seeds: Sequence[Any]) -> None:
    """Raise :class:`ConfigError` naming ``name`` when two integer ``seeds`` are equal modulo :data:`SEED_PERIOD`
    (e.g. 0 and 2^32, or -1 and 2^32 - 1): they would train the same network, and the means and std over the
    seeds would count one run twice. (Equal seeds: :func:`check_distinct`; non-integers: the config's own check.)"""
    first: dict[int, int] = {}
    for s in seeds:
        if not is_int(s):
            continue
        low = int(s) % SEED_PERIOD
        if low in first and first[low] != s:
            raise ConfigError(f"{name} lists the seeds {first[low]} and {s}, which give the same run: torch's CPU "
                              f"generator uses only a seed's low 32 bits (seed mod 2^32 = {low} for both); pick "
                              "seeds that differ modulo 2^32")
        first.setdefault(low, s)


def device_ok(device: object) -> bool:
    """Whether ``device`` is ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` with N ≥ 0 (CUDA need not be present)."""
    if not isinstance(device, str):
        return False
    if device in ("auto", "cpu"):
        return True
    if not device.startswith("cuda"):
        return False
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        return False
    return dev.type == "cuda" and (dev.index is None or dev.index >= 0)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (same config + seed -> same numbers on the same machine).

    Attributes:
        dataset: ``mnist``, ``fashion-mnist`` or ``synthetic``.
        data_root: cache folder of the data sets (default ``$IMC_GRAPES_DATA`` /
            ``${XDG_CACHE_HOME:-~/.cache}/imc-grapes/data``).
        model: ``mlp`` or ``cnn``.
        hidden: the MLP's hidden layer widths, or the CNN's conv channels per block; ``None`` (the default)
            gives the model's own (:data:`imc_grapes.models.DEFAULT_HIDDEN`: ``(256, 256)`` for the MLP,
            ``(16, 32)`` for the CNN), which the config then holds (a ``replace(model=...)`` keeps the widths it
            had).
        activation: ``relu`` or ``tanh``.
        dropout: dropout probability after hidden activations, in [0, 1).
        rule: how errors reach hidden layers: ``bp`` (backpropagation), ``fa`` (feedback alignment), ``dfa``
            (direct feedback alignment); the GRAPES factor each takes: :data:`RULE_MEANINGS`.
        optimizer: ``sgd`` (no modulation), ``grapes`` (GRAPES propagated), ``grapes-local`` (GRAPES local),
            ``layer-mean`` (control: propagated, each layer's GRAPES factors replaced by their layer mean);
            :data:`OPTIMIZER_MEANINGS`.
        base_optimizer: the torch optimizer that applies the (modulated) gradients: a ``torch.optim`` class
            name in lower case (``sgd``, ``adam``, ``adamw``, ``rmsprop``, ...; :func:`base_optimizer_names`), not
            one of :data:`~imc_grapes.backends.optim.UNSUPPORTED_BASE_OPTIMIZERS` (``lbfgs``, ``sparseadam``).
            ``muon`` updates 2-D parameters only, so it is rejected for the ``cnn`` model on the ``digital`` backend
            (4-D convolution kernels); the MLPs have no biases, and on the analog backends every weight layer is
            analog.
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
        cuda_graph: replay each plain training step as a CUDA graph (:mod:`imc_grapes.cuda_graphs`): one launch
            instead of a few hundred small kernels per step, with the numbers of eager training. Needs a
            CUDA device, the ``digital`` or ``crossbar`` backend, ``analog.importance_every = 1`` and a base
            optimizer in :func:`graph_safe_base_optimizers`.
        train_subset / test_subset: use only the first N samples (None: all). A number larger than the split
            uses the whole split (so that one config fits data sets of any size, e.g. ``compare``'s default 6000
            on the 2000-sample synthetic set): the config keeps the number as given, and the run's
            ``results.json`` records the samples used (``train_samples``, ``eval_samples``).
        val_holdout: if > 0, the last N training samples are held out and the run is evaluated on them
            instead of the test set (for tuning the learning rate without looking at the test set).
        inference_times: seconds after programming at which the trained analog network is evaluated with
            PCM-like programming noise, drift and read noise (e.g. 1, 3600, 86400, 31536000); empty: none. Each
            finite, ≥ 0 and given once; evaluated in ascending order whatever the order given.
        backend: ``digital`` (float weights), ``crossbar`` (this project's analog tile engine) or ``aihwkit``
            (IBM's simulator, the reference); the analog backends train with pulsed in-memory updates.
        analog: the analog hardware (device preset, periphery, GRAPES importance source); ignored by digital
            but for its :data:`DIGITAL_ANALOG_FIELDS` (``energy_table``; :meth:`normalised`).
        evals_per_epoch: how many times per epoch the test set is evaluated (a point of the learning curve);
            train loss/accuracy of a point are means over the batches since the previous point. At most the
            number of batches per epoch (a run with more is rejected when it starts, as the data set's size is
            known only then). The k-th point of an epoch of n batches comes after batch ``round(k·n/m)`` (m =
            ``evals_per_epoch``; Python's ``round``: a half goes to the even count, e.g. 93 batches, 4 points:
            after batches 23, 46, 70, 93): :func:`imc_grapes.train.eval_points`.
    """

    dataset: str = "mnist"
    data_root: str | None = None
    model: str = "mlp"
    hidden: tuple[int, ...] = None  # type: ignore[assignment]  # None: the model's own, set in __post_init__
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
    cuda_graph: bool = False
    train_subset: int | None = None
    test_subset: int | None = None
    evals_per_epoch: int = 1
    val_holdout: int = 0
    inference_times: tuple[float, ...] = ()
    backend: str = "digital"
    analog: AnalogSettings = field(default_factory=AnalogSettings)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        def number(name: str, valid: str, integer: bool = False, optional: bool = False) -> None:
            """The type check of a numeric field, before its range is compared: ``valid`` is that range."""
            v = getattr(self, name)
            ok = (v is None and optional) or (is_int(v) if integer else is_number(v))
            _check(ok, f"TrainConfig.{name} must be {'an integer' if integer else 'a number'} {valid}"
                       f"{' (or None for all)' if optional else ''}, got {v!r}")
            _check(integer or v is None or fits_float32(v), f"TrainConfig.{name} must be {valid}, {FLOAT32_RANGE}, "
                                                            f"got {v!r}")

        if self.hidden is None:   # the model's own (an unknown model is reported below, by its own check)
            own = DEFAULT_HIDDEN.get(self.model) if isinstance(self.model, str) else None
            object.__setattr__(self, "hidden", own or DEFAULT_HIDDEN["mlp"])
        _check(_is_sequence(self.hidden) and all(is_int(h) for h in self.hidden),
               f"TrainConfig.hidden must be a list of one or more integer widths ≥ 1, got {self.hidden!r}")
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        _check(isinstance(self.dataset, str) and self.dataset in DATASET_NAMES,
               f"TrainConfig.dataset must be one of {', '.join(DATASET_NAMES)}, got {self.dataset!r}"
               f"{did_you_mean(self.dataset, DATASET_NAMES)}")
        _check(self.data_root is None or isinstance(self.data_root, (str, os.PathLike)),
               f"TrainConfig.data_root must be None or the path of a folder, got {self.data_root!r}")
        _check(self.data_root != "", "TrainConfig.data_root must be None or the path of a folder (an empty path names "
                                     "none: None for the default cache), got ''")
        _check(isinstance(self.model, str) and self.model in MODELS,
               f"TrainConfig.model must be one of {', '.join(MODELS)}, got {self.model!r}"
               f"{did_you_mean(self.model, MODELS)}")
        _check(len(self.hidden) >= 1 and all(h >= 1 for h in self.hidden),
               f"TrainConfig.hidden must be one or more widths ≥ 1, got {list(self.hidden)}")
        _check(isinstance(self.activation, str) and self.activation in ACTIVATIONS,
               f"TrainConfig.activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}"
               f"{did_you_mean(self.activation, ACTIVATIONS)}")
        number("dropout", "in [0, 1)")
        _check(0.0 <= self.dropout < 1.0, f"TrainConfig.dropout must be in [0, 1), got {self.dropout}")
        _check(isinstance(self.rule, str) and self.rule in RULES,
               f"TrainConfig.rule must be one of {', '.join(RULES)}, got {self.rule!r}"
               f"{did_you_mean(self.rule, RULES)}")
        _check(not (self.model == "cnn" and self.rule != "bp"),
               f"rule {self.rule!r} is implemented for the mlp model only; use --rule bp with --model cnn")
        _check(isinstance(self.optimizer, str) and self.optimizer in OPTIMIZERS,
               f"TrainConfig.optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"
               f"{did_you_mean(self.optimizer, OPTIMIZERS)}")
        base = self.base_optimizer
        problem = base_optimizer_problem("TrainConfig.base_optimizer", base)
        if problem is not None:
            raise ConfigError(problem)
        number("lr", "> 0")
        _check(self.lr > 0 and math.isfinite(self.lr), f"TrainConfig.lr must be > 0 (and finite), got {self.lr}")
        _check(self.lr >= _FLOAT32_SMALLEST,
               f"TrainConfig.lr must be at least {_FLOAT32_SMALLEST:.4g} (the smallest positive float32: a smaller "
               f"lr is 0 in the float32 arithmetic it scales, and nothing would train), got {self.lr!r}")
        number("momentum", "≥ 0")
        _check(self.momentum >= 0 and math.isfinite(self.momentum),
               f"TrainConfig.momentum must be ≥ 0 (and finite), got {self.momentum}")
        number("weight_decay", "≥ 0")
        _check(self.weight_decay >= 0 and math.isfinite(self.weight_decay),
               f"TrainConfig.weight_decay must be ≥ 0 (and finite), got {self.weight_decay}")
        number("batch_size", "≥ 1", integer=True)
        _check(self.batch_size >= 1, f"TrainConfig.batch_size must be ≥ 1, got {self.batch_size}")
        _check(isinstance(self.drop_last, bool),
               f"TrainConfig.drop_last must be true or false, got {self.drop_last!r}")
        number("epochs", "≥ 1", integer=True)
        _check(self.epochs >= 1, f"TrainConfig.epochs must be ≥ 1, got {self.epochs}")
        number("seed", f"in {SEED_RANGE}", integer=True)
        _check(seed_in_range(self.seed), f"TrainConfig.seed must be an integer in {SEED_RANGE}, got {self.seed}")
        number("train_subset", "≥ 1", integer=True, optional=True)
        _check(self.train_subset is None or self.train_subset >= 1,
               f"TrainConfig.train_subset must be ≥ 1 (or None for all), got {self.train_subset}")
        _check(not (self.drop_last and self.train_subset is not None and self.train_subset < self.batch_size),
               f"TrainConfig.train_subset {self.train_subset} < TrainConfig.batch_size {self.batch_size}, so drop_last "
               "leaves no batch: train on more samples or use a smaller batch, or set drop_last false (--no-drop-last)")
        number("test_subset", "≥ 1", integer=True, optional=True)
        _check(self.test_subset is None or self.test_subset >= 1,
               f"TrainConfig.test_subset must be ≥ 1 (or None for all), got {self.test_subset}")
        _check(_is_sequence(self.inference_times) and all(is_number(t) for t in self.inference_times),
               f"TrainConfig.inference_times must be a list of numbers ≥ 0 (seconds), got {self.inference_times!r}")
        object.__setattr__(self, "inference_times", tuple(float(t) for t in self.inference_times))
        number("val_holdout", "≥ 0", integer=True)
        _check(self.val_holdout >= 0, f"TrainConfig.val_holdout must be ≥ 0, got {self.val_holdout}")
        _check(all(0 <= t < math.inf for t in self.inference_times),
               f"TrainConfig.inference_times must be ≥ 0 seconds (and finite), got {list(self.inference_times)}")
        _check(all(fits_float32(t) for t in self.inference_times),
               f"TrainConfig.inference_times must be ≥ 0 seconds, each {FLOAT32_RANGE}, "
               f"got {list(self.inference_times)}")
        _check(len(set(self.inference_times)) == len(self.inference_times),
               f"TrainConfig.inference_times must not give a time twice (each result is keyed by its time), got "
               f"{list(self.inference_times)}")
        if isinstance(self.analog, dict):
            object.__setattr__(self, "analog", AnalogSettings.from_dict(self.analog))
        _check(isinstance(self.backend, str) and self.backend in BACKENDS,
               f"TrainConfig.backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}"
               f"{did_you_mean(self.backend, BACKENDS)}")
        _check(isinstance(self.analog, AnalogSettings),
               f"TrainConfig.analog must be an AnalogSettings (or a dict of its fields), got {self.analog!r}")
        _check(not (base in MATRIX_ONLY_BASE_OPTIMIZERS and self.model == "cnn" and self.backend == "digital"),
               f"TrainConfig.base_optimizer {base!r} updates 2-D parameters (matrices) only, but the cnn model on "
               f"the digital backend trains its 4-D convolution kernels with it; use another base optimizer (e.g. "
               f"sgd, adam, adamw) or an analog backend (crossbar, aihwkit: every weight layer analog)")
        _check(not (self.backend == "aihwkit" and self.grapes_mode is not None and self.analog.importance != "exact"),
               f"AnalogSettings.importance {self.analog.importance!r} works with the crossbar backend only (an "
               f"all-ones read of an aihwkit tile gives the signed row sum Σw of one signed array, not the "
               f"differential-pair sum Σ(G⁺+G⁻)); with the aihwkit backend and optimizer {self.optimizer!r} use "
               f"importance 'exact'")
        number("evals_per_epoch", "≥ 1", integer=True)
        _check(self.evals_per_epoch >= 1, f"TrainConfig.evals_per_epoch must be ≥ 1, got {self.evals_per_epoch}")
        _check(device_ok(self.device),
               f"TrainConfig.device must be cpu, cuda, cuda:N or auto (N an integer ≥ 0), got {self.device!r}")
        _check(isinstance(self.extra, dict), f"TrainConfig.extra must be a dict, got {self.extra!r}")
        _check(isinstance(self.cuda_graph, bool),
               f"TrainConfig.cuda_graph must be true or false, got {self.cuda_graph!r}")
        if self.cuda_graph:
            self._check_graphable()

    def _check_graphable(self) -> None:
        """The limits of ``cuda_graph`` that the config alone decides (the device is checked when the run starts,
        ``auto`` may resolve to either)."""
        _check(self.device != "cpu", "TrainConfig.cuda_graph needs a CUDA device, but TrainConfig.device is 'cpu' "
                                     "(use --device cuda, or leave --cuda-graph off)")
        _check(self.backend != "aihwkit", "TrainConfig.cuda_graph works with the digital and crossbar backends, "
                                          "not aihwkit (its tiles cannot be captured)")
        _check(self.backend == "digital" or self.grapes_mode is None or self.analog.importance_every == 1,
               f"TrainConfig.cuda_graph needs AnalogSettings.importance_every = 1 (GRAPES factors refreshed every "
               f"batch; a graph captured between refreshes would keep the factors of its capture), got "
               f"{self.analog.importance_every}")
        safe = graph_safe_base_optimizers()
        _check(self.base_optimizer in safe,
               f"TrainConfig.cuda_graph needs a base optimizer that runs inside a CUDA graph ({', '.join(safe)}), "
               f"got {self.base_optimizer!r}")

    @property
    def grapes_mode(self) -> str | None:
        return OPTIMIZERS[self.optimizer]

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        dev = torch.device(self.device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"TrainConfig.device is {self.device!r}, but CUDA is not available on this machine "
                              "(torch.cuda.is_available() is False): use cpu, or auto (the GPU when there is one)")
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
            raise ConfigError(f"unknown train config field(s) {unknown}; valid: {', '.join(sorted(valid))}"
                              f"{did_you_mean_each(unknown, valid)}")
        return cls(**d)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def normalised(self) -> "TrainConfig":
        """The config as a run is trained and recorded: on the ``digital`` backend the analog settings that it
        ignores (all but :data:`DIGITAL_ANALOG_FIELDS`) at their defaults, so that a digital run has one recorded
        config whatever analog hardware the job around it named (``analog`` of a digital run's ``results.json`` is
        not the hardware of the job); other backends: the config itself."""
        if self.backend != "digital":
            return self
        analog = AnalogSettings(**{k: getattr(self.analog, k) for k in DIGITAL_ANALOG_FIELDS})
        return self if analog == self.analog else self.replace(analog=analog)

    def batching(self) -> str:
        """How the runs are batched, for reports: ``"batch 64 (partial last batch left out)"``."""
        return f"batch {self.batch_size} (partial last batch {'left out' if self.drop_last else 'kept'})"

    def run_name(self) -> str:
        return f"{self.dataset}_{self.model}_{self.rule}_{self.optimizer}_lr{self.lr:g}_seed{self.seed}"
