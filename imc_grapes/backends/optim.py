"""The base (digital) optimizer of a run."""
from __future__ import annotations

import inspect
from typing import Any, cast

import torch

from ..suggest import did_you_mean

__all__ = ["ADAPTIVE_BASE_OPTIMIZERS", "MATRIX_ONLY_BASE_OPTIMIZERS", "MOMENTUM_BASE_OPTIMIZERS",
           "UNSUPPORTED_BASE_OPTIMIZERS", "base_optimizer_names", "base_optimizer_problem", "has_capturable",
           "make_optimizer", "optimizer_class", "wants_capturable"]

#: base optimizers that update 2-D parameters (matrices) only: ``torch.optim.Muon`` orthogonalises each update
#: as a matrix, and rejects a bias or a convolution kernel
MATRIX_ONLY_BASE_OPTIMIZERS: tuple[str, ...] = ("muon",)

#: base optimizers that divide each parameter's step by a running scale of its own gradient (or take its sign):
#: a slowly changing factor on a whole row of the gradient, as local GRAPES applies, or on a whole layer and every
#: layer below it, as the layer-mean control does, is divided out again (README "From Python"; the compare report
#: says so)
ADAPTIVE_BASE_OPTIMIZERS: tuple[str, ...] = ("adadelta", "adafactor", "adagrad", "adam", "adamax", "adamw", "nadam",
                                             "radam", "rmsprop", "rprop")

#: base optimizers that :func:`make_optimizer` passes ``TrainConfig.momentum`` to (the others take none)
MOMENTUM_BASE_OPTIMIZERS: tuple[str, ...] = ("sgd", "rmsprop")

#: ``torch.optim`` classes that cannot be a base optimizer (lower-case name -> why): a training step calls
#: ``optimizer.step()`` once on the dense gradients of one batch
UNSUPPORTED_BASE_OPTIMIZERS: dict[str, str] = {
    "lbfgs": "LBFGS needs a closure that re-evaluates the loss (step(closure))",
    "sparseadam": "SparseAdam needs sparse gradients (the models' gradients are dense)",
}


def base_optimizer_names() -> list[str]:
    """Names of the torch optimizers usable as base optimizer (lower-case class names in ``torch.optim``, less
    :data:`UNSUPPORTED_BASE_OPTIMIZERS`)."""
    names = []
    for name in dir(torch.optim):
        obj = getattr(torch.optim, name)
        if (isinstance(obj, type) and issubclass(obj, torch.optim.Optimizer) and obj is not torch.optim.Optimizer
                and name.lower() not in UNSUPPORTED_BASE_OPTIMIZERS):
            names.append(name.lower())
    return sorted(names)


def base_optimizer_problem(where: str, name: object) -> str | None:
    """``None`` if ``name`` is one of :func:`base_optimizer_names`, else the message refusing it: ``"<where> must be
    one of sgd, adam, ..., got 'adm'"``, ending with why for one of :data:`UNSUPPORTED_BASE_OPTIMIZERS`, or a
    "did you mean" (:func:`~imc_grapes.suggest.did_you_mean`) for a close name; ``TrainConfig``'s check and
    :func:`optimizer_class`'s, one message."""
    valid = base_optimizer_names()
    if isinstance(name, str) and name in valid:
        return None
    why = UNSUPPORTED_BASE_OPTIMIZERS.get(name, "") if isinstance(name, str) else ""
    hint = f" ({why})" if why else did_you_mean(name, valid)
    return f"{where} must be one of {', '.join(valid)}, got {name!r}{hint}"


def optimizer_class(name: str, where: str = "optimizer_class: name") -> type[torch.optim.Optimizer]:
    """The ``torch.optim`` class whose lower-case name is ``name`` (``"adamw"`` -> ``torch.optim.AdamW``), one of
    :func:`base_optimizer_names`.

    Raises:
        ValueError: no such class, or one that cannot be a base optimizer (:data:`UNSUPPORTED_BASE_OPTIMIZERS`,
            ``torch.optim.Optimizer`` itself): :func:`base_optimizer_problem`'s message, naming ``where`` and the
            valid names.
    """
    problem = base_optimizer_problem(where, name)
    if problem is not None:
        raise ValueError(problem)
    match = [n for n in dir(torch.optim) if n.lower() == name and isinstance(getattr(torch.optim, n), type)]
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
    cls = optimizer_class(name, "make_optimizer: cfg.base_optimizer")
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
