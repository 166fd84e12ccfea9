"""The models of the experiments that :func:`imc_grapes.models.build_model` does not build (recurrent and
spiking), described by a plain dict kept in ``TrainConfig.extra["model"]`` so that a run's ``results.json``
says exactly what was trained, and built on any backend.

A model description::

    {"kind": "lstm", "hidden": [64]}                                    # imc_grapes.recurrent
    {"kind": "rnn",  "hidden": [128]}
    {"kind": "snu",  "hidden": [256], "steps": 16, "encoding": "rate"}  # imc_grapes.snu (step + surrogate)
    {"kind": "ssnu", "hidden": [256], "steps": 16, "encoding": "rate"}  # soft SNU (sigmoid output)

:func:`custom_network` replaces every ``nn.Linear`` of such a model by an analog layer for the ``crossbar`` /
``aihwkit`` backends (the input matrices ``W``, the recurrent matrices ``U`` with their digital bias, and the
readout), exactly as :func:`imc_grapes.backends.build_network` does for the MLP, and wraps it in a
:class:`~imc_grapes.backends.Network` (GRAPES, optimizer, pulsed updates, costs). A layer called once per time
step stashes one ``(x, d)`` pair per call; its pulsed update at the optimizer step uses all of them (the BPTT sum).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

import crossbar

from ..backends import AnalogLayer, CrossbarLayer, Network, crossbar_config_from, layer_seed
from ..backends.network import _replace
from ..recurrent import CELLS, SequenceClassifier
from ..snu import ENCODINGS, SpikingClassifier
from ..suggest import did_you_mean, did_you_mean_each

__all__ = ["CUSTOM_MODELS", "build_custom_model", "custom_network", "describe_model"]

CUSTOM_MODELS: tuple[str, ...] = ("rnn", "lstm", "snu", "ssnu")
_SNN_KEYS = {"steps", "encoding", "decay", "threshold", "surrogate_beta"}


def _check_spec(spec: Mapping[str, Any]) -> None:
    kind = spec.get("kind")
    if kind not in CUSTOM_MODELS:
        raise ValueError(f"model.kind must be one of {', '.join(CUSTOM_MODELS)}, got {kind!r}"
                         f"{did_you_mean(kind, CUSTOM_MODELS)}")
    allowed = {"kind", "hidden"} | (_SNN_KEYS if kind in ("snu", "ssnu") else set())
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ValueError(f"model {kind!r}: unknown field(s) {unknown}; valid: {', '.join(sorted(allowed))}"
                         f"{did_you_mean_each(unknown, allowed)}")
    hidden = spec.get("hidden")
    if not hidden or any(int(h) < 1 for h in hidden):
        raise ValueError(f"model.hidden must be one or more widths >= 1, got {hidden!r}")
    if kind in ("snu", "ssnu") and spec.get("encoding", "rate") not in ENCODINGS:
        raise ValueError(f"model.encoding must be one of {', '.join(ENCODINGS)}, got {spec.get('encoding')!r}"
                         f"{did_you_mean(spec.get('encoding'), ENCODINGS)}")


def describe_model(spec: Mapping[str, Any]) -> str:
    """A short label, e.g. ``lstm 64`` or ``snu 256 (rate, T=16)``."""
    _check_spec(spec)
    widths = "-".join(str(int(h)) for h in spec["hidden"])
    if spec["kind"] in CELLS:
        return f"{spec['kind']} {widths}"
    return f"{spec['kind']} {widths} ({spec.get('encoding', 'rate')}, T={spec.get('steps', 16)})"


def build_custom_model(spec: Mapping[str, Any], input_shape: tuple[int, ...], n_classes: int, seed: int,
                       device: torch.device | str = "cpu") -> nn.Module:
    """The digital model described by ``spec`` for inputs of one sample's shape ``input_shape`` (e.g.
    ``(1, 28, 28)``: 28 steps of 28 features for the recurrent models, 784 pixels for the spiking ones)."""
    _check_spec(spec)
    hidden = tuple(int(h) for h in spec["hidden"])
    if spec["kind"] in CELLS:
        if len(input_shape) != 3:
            raise ValueError(f"model {spec['kind']!r} reads images row by row: input_shape must be (C, H, W), "
                             f"got {tuple(input_shape)}")
        c, _, w = input_shape
        return SequenceClassifier(spec["kind"], c * w, hidden, n_classes, seed=seed, device=device)
    kw = {k: spec[k] for k in _SNN_KEYS if k in spec}
    n_in = 1
    for s in input_shape:
        n_in *= int(s)
    return SpikingClassifier(n_in, hidden, n_classes, soft=spec["kind"] == "ssnu", seed=seed, device=device, **kw)


def _crossbar_linear(layer: nn.Linear, config: crossbar.CrossbarConfig, seed: int,
                     device: torch.device) -> CrossbarLayer:
    inner = crossbar.AnalogLinear(layer.in_features, layer.out_features, bias=layer.bias is not None,
                                  rpu_config=config, device=device, seed=seed)
    inner.set_weights(layer.weight.detach().to(device=device, dtype=inner.tile.weight_tiles.dtype))
    if layer.bias is not None:
        with torch.no_grad():
            inner.bias.copy_(layer.bias.detach())
    return CrossbarLayer(inner, "array")


def custom_network(cfg: Any, model: nn.Module, device: torch.device | str) -> Network:
    """``model`` on ``cfg.backend`` as a :class:`~imc_grapes.backends.Network` (GRAPES per ``cfg.optimizer``).

    For the analog backends every ``nn.Linear`` becomes an analog layer programmed with its weights (clipped
    into the device bounds), with seeds :func:`~imc_grapes.backends.layer_seed` ``(cfg.seed, k)``; other
    parameters (biases, SNU thresholds) stay digital and are trained by ``cfg.base_optimizer``.

    Raises:
        ValueError: an unknown backend, aihwkit on a non-CPU device or with ``importance='array'``.
    """
    device = torch.device(device)
    if cfg.backend not in ("digital", "crossbar", "aihwkit"):
        raise ValueError(f"custom_network: backend must be digital, crossbar or aihwkit, got {cfg.backend!r}")
    analog: dict[str, AnalogLayer] = {}
    if cfg.backend != "digital":
        if cfg.backend == "aihwkit":
            from ..backends.aihwkit_backend import check_aihwkit_device, make_aihwkit_layer

            check_aihwkit_device(device)
            if cfg.grapes_mode and cfg.analog.importance != "exact":
                raise ValueError("analog.importance='array' is implemented for the crossbar backend only; use "
                                 "'exact' with aihwkit")
        xcfg = crossbar_config_from(cfg.analog)
        linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        for k, (name, layer) in enumerate(linears):
            seed = layer_seed(cfg.seed, k)
            if cfg.backend == "crossbar":
                new: AnalogLayer = _crossbar_linear(layer, xcfg, seed, device)
            else:
                new = make_aihwkit_layer(layer, xcfg, seed, "array")
            _replace(model, name, new)
            analog[name] = new
    model.to(device)
    return Network(cfg, model, analog, device)
