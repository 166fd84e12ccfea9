"""The base (digital) optimizer of a run."""
from __future__ import annotations

from typing import Any

import torch

__all__ = ["make_optimizer"]


def make_optimizer(cfg: Any, params: Any) -> torch.optim.Optimizer:
    """The base torch optimizer named by ``cfg.base_optimizer`` with ``lr = cfg.lr`` (GRAPES is applied by hooks).

    ``cfg`` is a :class:`~imc_grapes.config.TrainConfig` (fields ``base_optimizer``, ``lr``, ``weight_decay``,
    ``momentum``); momentum is passed to SGD and RMSprop only, weight decay when non-zero.
    """
    name = cfg.base_optimizer
    match = [n for n in dir(torch.optim) if n.lower() == name and isinstance(getattr(torch.optim, n), type)]
    if not match:
        raise ValueError(f"make_optimizer: unknown base_optimizer {name!r}")
    cls = getattr(torch.optim, match[0])
    kwargs: dict[str, Any] = {"lr": cfg.lr}
    if cfg.weight_decay:
        kwargs["weight_decay"] = cfg.weight_decay
    if cfg.momentum and name in ("sgd", "rmsprop"):
        kwargs["momentum"] = cfg.momentum
    return cls(params, **kwargs)
