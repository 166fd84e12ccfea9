"""Training steps replayed as CUDA graphs (``TrainConfig.cuda_graph``).

On a GPU the engine's training step is a few hundred small kernels (the pulsed update of every tile), so at small
batches its time is the launch overhead, not the arithmetic (docs/performance.md "CUDA"). The step makes no host
synchronisation, so it can be captured once as a CUDA graph and replayed, one launch per step.

A graph replays the device work of the step it captured, not its Python. :class:`GraphedSteps` keeps the two in
step:

* it replays only *plain* steps: those whose host-side decisions (:meth:`~imc_grapes.backends.Network.step_kind`)
  are all off. A step that takes a saturation probe or samples the array importance for its comparison with the
  exact one (diagnostics, every ``analog.sat_probe_every`` and every ``ImportanceSource.compare_every``-th step)
  runs eagerly, as do the first :attr:`GraphedSteps.warmup` plain steps of each batch shape (on a side stream:
  lazily created optimizer state, caches and cuBLAS workspaces exist before the capture);
* after a replay it does the step's host bookkeeping (:meth:`~imc_grapes.backends.Network.count_replayed_step`:
  step counters, GRAPES's batch and refresh counts, the importance reads) and points ``grapes.modulations`` /
  ``grapes.importances`` back at the graph's outputs. The host-side hardware counts of a step (the hooks' counts)
  are constants captured with it; the tiles' counters are device tensors the graph updates;
* every random generator of the model (each tile's, dropout's) is registered with the graph, so each replay
  draws new numbers and advances the generator as the eager step would.

The numbers are those of eager training, bit for bit, on the same GPU (``benchmarks/check_graph_training_cuda.py``
checks it; five cases equal on an H200 in the twenty-eighth session): the same kernels with the same random
offsets, in the same order (an optimizer's ``capturable`` option is on in eager CUDA runs too:
:func:`~imc_grapes.backends.optim.wants_capturable`). What differs: the loss is checked for NaN/Inf after a
replayed step, not before its update.

Limits (checked by :class:`~imc_grapes.config.TrainConfig` and here): CUDA only; the ``digital`` and ``crossbar``
backends (aihwkit's tiles are not capturable); GRAPES factors refreshed every batch (``analog.importance_every``
= 1: a graph captured between two refreshes would keep reading the factors of the capture); a base optimizer
that can run inside a graph (SGD, or one with torch's ``capturable`` option, on for every CUDA run).
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backends import Network
from .config import ConfigError

__all__ = ["GraphedSteps", "check_graph_device", "graphed_steps", "model_generators", "training_step"]


def training_step(net: Network, x: Tensor, y: Tensor,
                  before_update: Callable[[Tensor], None] | None = None) -> tuple[Tensor, Tensor]:
    """One training step of ``net`` on ``(x: [batch, ...], y: [batch])``: zero the gradients, forward,
    cross-entropy, backward, :meth:`~imc_grapes.backends.Network.step`. Returns ``(logits, loss)`` detached.
    ``before_update(loss)`` (the detached loss) runs before the backward, e.g. an eager loop's NaN check, which
    must stop a NaN error before it reaches the devices (a captured step has none: it would read the device)."""
    net.zero_grad()
    out = net.model(x)
    loss = F.cross_entropy(out, y)
    if before_update is not None:
        before_update(loss.detach())
    loss.backward()
    net.step()
    return out.detach(), loss.detach()


def model_generators(model: nn.Module, device: torch.device) -> list[torch.Generator]:
    """The distinct ``torch.Generator`` objects on ``device``'s type held by ``model``'s modules, as attributes or in
    dict attributes (each tile's generator, dropout's per-device generators)."""
    found: dict[int, torch.Generator] = {}
    for module in model.modules():
        for value in vars(module).values():
            candidates = value.values() if isinstance(value, dict) else (value,)
            for g in candidates:
                if isinstance(g, torch.Generator) and g.device.type == device.type:
                    found.setdefault(id(g), g)
    return list(found.values())


@dataclass
class _Captured:
    """One captured plain step: the graph, its static input buffers and its outputs."""

    graph: Replayable
    x: Tensor
    y: Tensor
    out: Tensor
    loss: Tensor
    modulations: dict[str, Tensor]
    importances: dict[str, Tensor]


class Replayable(Protocol):
    """What :meth:`GraphedSteps._record` returns: ``torch.cuda.CUDAGraph`` (or a stand-in in tests)."""

    def replay(self) -> None: ...


class GraphedSteps:
    """:func:`training_step` for one network, each plain step replayed from a CUDA graph (module docstring).

    Call it as ``out, loss = steps(x, y)`` once per training batch, in order (the outputs of a replayed step are the
    graph's buffers: read them before the next call). One graph per batch shape.

    Args:
        net: a network on a CUDA device, built from a config with ``cuda_graph`` on.
        warmup: eager plain steps of each batch shape before its capture (≥ 1).

    Attributes:
        replays: steps replayed so far. eager: steps run eagerly (warm-up and diagnostic steps). captures: graphs.

    Raises:
        ConfigError: the network is not on a CUDA device, or its config cannot be captured.
    """

    def __init__(self, net: Network, warmup: int = 3) -> None:
        self._check_device(net.device)
        if net.backend == "aihwkit":
            raise ConfigError("TrainConfig.cuda_graph works with the digital and crossbar backends, not aihwkit")
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 1:
            raise ValueError(f"GraphedSteps.warmup must be an integer >= 1, got {warmup!r}")
        self.net = net
        self.warmup = warmup
        self.replays = self.eager = self.captures = 0
        self._seen: dict[tuple[object, ...], int] = {}
        self._graphs: dict[tuple[object, ...], _Captured] = {}

    @staticmethod
    def _check_device(device: torch.device) -> None:
        check_graph_device(device)

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        net = self.net
        if any(net.step_kind()):
            self.eager += 1
            return training_step(net, x, y)
        key = (tuple(x.shape), x.dtype, tuple(y.shape), y.dtype)
        cap = self._graphs.get(key)
        if cap is None:
            n = self._seen.get(key, 0)
            if n < self.warmup:
                self._seen[key] = n + 1
                self.eager += 1
                return self._warm_step(x, y)
            cap = self._graphs[key] = self._capture(x, y)
            self.captures += 1
            cap.graph.replay()          # the capture ran the step's Python (its bookkeeping) but no kernel
        else:
            cap.x.copy_(x)
            cap.y.copy_(y)
            cap.graph.replay()
            net.count_replayed_step()
        if net.grapes is not None:      # an eager step since may have pointed them at its own tensors
            net.grapes.modulations.update(cap.modulations)
            net.grapes.importances.update(cap.importances)
        self.replays += 1
        return cap.out, cap.loss

    def _warm_step(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """An eager step on a side stream (how torch's documentation warms up a step before capturing it)."""
        main = torch.cuda.current_stream(self.net.device)
        side = torch.cuda.Stream(self.net.device)
        side.wait_stream(main)
        with torch.cuda.stream(side):
            result = training_step(self.net, x, y)
        main.wait_stream(side)
        return result

    def _capture(self, x: Tensor, y: Tensor) -> _Captured:
        """Capture a step on static copies of ``(x, y)`` (:meth:`_record`) with the Python of that step run once."""
        net = self.net
        static_x, static_y = x.clone(), y.clone()
        net.flush_host_counts()         # (nothing pends after a whole step) what pends now would join every replay
        outputs: list[Tensor] = []
        graph = self._record(lambda: outputs.extend(training_step(net, static_x, static_y)))
        handle = net.grapes
        return _Captured(graph, static_x, static_y, outputs[0], outputs[1],
                         dict(handle.modulations) if handle is not None else {},
                         dict(handle.importances) if handle is not None else {})

    def _record(self, step: Callable[[], object]) -> Replayable:
        """``step`` captured as a CUDA graph with every generator of the model registered (no kernel runs)."""
        torch.cuda.synchronize(self.net.device)
        graph = torch.cuda.CUDAGraph()
        for g in model_generators(self.net.model, self.net.device):
            graph.register_generator_state(g)
        with torch.cuda.graph(graph):
            step()
        return graph

    def summary(self) -> dict[str, int]:
        """How the steps ran (``results.json`` ``"cuda_graph"``): replayed steps, eager steps, graphs captured."""
        return {"replayed_steps": self.replays, "eager_steps": self.eager, "graphs": self.captures}

    def release(self) -> None:
        """Drop the graphs and their memory (called again, each batch shape warms up and is captured anew)."""
        self._graphs.clear()
        self._seen.clear()


def check_graph_device(device: torch.device) -> None:
    """Raise :class:`~imc_grapes.config.ConfigError` unless ``device`` is a CUDA device (``cuda_graph``'s need; the
    config alone cannot tell when its device is ``auto``)."""
    if device.type != "cuda":
        raise ConfigError(f"TrainConfig.cuda_graph needs a CUDA device, but the run is on {device} "
                          "(use --device cuda, or leave --cuda-graph off)")


@contextlib.contextmanager
def graphed_steps(net: Network, cfg: Any, extra: dict[str, Any]) -> Iterator[GraphedSteps | None]:
    """A run's :class:`GraphedSteps` when ``cfg.cuda_graph`` (else None), released at the end, with its
    :meth:`~GraphedSteps.summary` put into ``extra["cuda_graph"]`` (a run's ``results.json``)."""
    if not cfg.cuda_graph:
        yield None
        return
    steps = GraphedSteps(net)
    try:
        yield steps
    finally:
        extra["cuda_graph"] = steps.summary()
        steps.release()
