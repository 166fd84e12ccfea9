"""The base (digital) optimizer of a run."""
from __future__ import annotations

import inspect
from typing import Any, cast

import torch

__all__ = ["MATRIX_ONLY_BASE_OPTIMIZERS", "MOMENTUM_BASE_OPTIMIZERS", "has_capturable", "make_optimizer",
           "optimizer_class", "wants_capturable"]

#: base optimizers that update 2-D parameters (matrices) only: ``torch.optim.Muon`` orthogonalises each update
#: as a matrix, and rejects a bias or a convolution kernel
MATRIX_ONLY_BASE_OPTIMIZERS: tuple[str, ...] = ("muon",)

#: base optimizers that :func:`make_optimizer` passes ``TrainConfig.momentum`` to (the others take none)
MOMENTUM_BASE_OPTIMIZERS: tuple[str, ...] = ("sgd", "rmsprop")


def optimizer_class(name: str) -> type[torch.optim.Optimizer]:
    """The ``torch.optim`` class whose lower-case name is ``name`` (``"adamw"`` -> ``torch.optim.AdamW``).

    Raises:
        ValueError: no such class.
    """
    match = [n for n in dir(torch.optim) if n.lower() == name and isinstance(getattr(torch.optim, n), type)]
    if not match:
        raise ValueError(f"make_optimizer: unknown base_optimizer {name!r}")
    return cast("type[torch.optim.Optimizer]", getattr(torch.optim, match[0]))


def make_optimizer(cfg: Any, params: Any) -> torch.optim.Optimizer:
    """The base torch optimizer named by ``cfg.base_optimizer`` with ``lr = cfg.lr`` (GRAPES is applied by hooks).

    ``cfg`` is a :class:`~imc_grapes.config.TrainConfig` (fields ``base_optimizer``, ``lr``, ``weight_decay``,
    ``momentum``, ``cuda_graph``); momentum is passed to SGD and RMSprop only, weight decay when non-zero, and
    ``capturable=True`` to the optimizers that have that option with ``cuda_graph`` or CUDA parameters
    (:func:`wants_capturable`: their step can then run inside a CUDA graph, and eager CUDA runs round the same way).

    Raises:
        ValueError: an unknown name, or one of :data:`MATRIX_ONLY_BASE_OPTIMIZERS` given a parameter that is not
            2-D (a bias, a convolution kernel).
    """
    name = cfg.base_optimizer
    cls = optimizer_class(name)
    params = list(params)
    if name in MATRIX_ONLY_BASE_OPTIMIZERS:
        shapes = list(dict.fromkeys(tuple(p.shape) for p in params if p.dim() != 2))
        if shapes:
            raise ValueError(f"TrainConfig.base_optimizer {name!r} updates 2-D parameters (matrices) only, but the "
                             f"network's digital parameters include shape(s) {shapes} (biases, convolution "
                             "kernels, ...); use another base optimizer, e.g. sgd, adam or adamw")
    kwargs: dict[str, Any] = {"lr": cfg.lr}
    if cfg.weight_decay:
        kwargs["weight_decay"] = cfg.weight_decay
    if cfg.momentum and cfg.base_optimizer in MOMENTUM_BASE_OPTIMIZERS:
        kwargs["momentum"] = cfg.momentum
    if wants_capturable(cls, getattr(cfg, "cuda_graph", False), {p.device.type for p in params}):
        kwargs["capturable"] = True
    return cls(params, **kwargs)


def wants_capturable(cls: type[torch.optim.Optimizer], cuda_graph: bool, device_types: set[str]) -> bool:
    """Whether :func:`make_optimizer` passes ``capturable=True`` to ``cls``: when ``cls`` has that option and the step
    is captured (``cuda_graph``) or any parameter is on a CUDA device (``device_types``: ``torch.device.type`` of
    the parameters). On CUDA the option is on with or without graphs, so ``cuda_graph`` stays a pure speed option:
    torch's capturable Adam keeps its step count and bias corrections on the device and rounds differently from the
    host-side path (relative differences ~1e-6 after a few hundred steps, measured on an H200), which would make a
    replayed run differ from the eager run of the same config."""
    return has_capturable(cls) and (cuda_graph or "cuda" in device_types)


def has_capturable(cls: type[torch.optim.Optimizer]) -> bool:
    """Whether the optimizer class ``cls`` takes torch's ``capturable`` option (its step can run in a CUDA graph)."""
    return "capturable" in inspect.signature(cls.__init__).parameters
