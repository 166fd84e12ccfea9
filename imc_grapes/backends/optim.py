"""The base (digital) optimizer of a run."""
from __future__ import annotations

import inspect
from typing import Any, cast

import torch

__all__ = ["MATRIX_ONLY_BASE_OPTIMIZERS", "make_optimizer", "optimizer_class"]

#: base optimizers that update 2-D parameters (matrices) only: ``torch.optim.Muon`` orthogonalises each update
#: as a matrix, and rejects a bias or a convolution kernel
MATRIX_ONLY_BASE_OPTIMIZERS: tuple[str, ...] = ("muon",)


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
    ``capturable=True`` with ``cuda_graph`` to the optimizers that have that option (their step then runs inside a
    CUDA graph).

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
    if cfg.momentum and cfg.base_optimizer in ("sgd", "rmsprop"):
        kwargs["momentum"] = cfg.momentum
    if getattr(cfg, "cuda_graph", False) and "capturable" in inspect.signature(cls.__init__).parameters:
        kwargs["capturable"] = True
    return cls(params, **kwargs)
