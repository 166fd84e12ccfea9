"""A CPU stand-in for CUDA-graph capture and replay, to test :class:`imc_grapes.cuda_graphs.GraphedSteps` without a GPU.

What makes graph replay hard to get right is that it repeats the step's tensor operations but none of its Python:
:class:`EmulatedSteps` reproduces exactly that. Its "capture" records every ATen operation of the step (a
``TorchDispatchMode``: the forward, the autograd backward, the optimizer and the pulsed update) and then undoes the
step's effects — every tensor the step wrote goes back to its value before, every generator of the model to its
state — because a real capture runs no kernel. Its "replay" re-runs the recorded operations on the same tensor objects
and copies each result into the tensor the capture produced, with no Python of the step in between: a Python-side
counter, cache or reassigned attribute the step relies on goes stale just as under a real graph.

The steps run on the engine's sync-free (GPU) path (``devices.host.no_host_reads``), the one a graph captures; a
reference run for comparison uses the same class with captures turned off (:data:`NEVER`).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import imc_grapes.cuda_graphs as cg
from devices.host import no_host_reads

NEVER = 10 ** 9
"""A warm-up count no run reaches: every step eager (the reference)."""

_training_step = cg.training_step


def sync_free_training_step(net: Any, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`imc_grapes.cuda_graphs.training_step` on the sync-free path (patch it in for both runs)."""
    with no_host_reads():
        return _training_step(net, x, y)


class _Recorder(TorchDispatchMode):
    """Records ``(op, args, kwargs, out)`` of every ATen call and the value before of every tensor first written."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[tuple[Any, Any, Any, Any]] = []
        self.before: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._seen: set[int] = set()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        for i, arg in enumerate(func._schema.arguments):
            if arg.alias_info is not None and arg.alias_info.is_write:
                value = args[i] if i < len(args) else kwargs.get(arg.name)
                for t in tree_leaves(value):
                    if isinstance(t, torch.Tensor) and id(t) not in self._seen:
                        self._seen.add(id(t))
                        self.before.append((t, t.clone()))
        out = func(*args, **kwargs)
        self.ops.append((func, args, kwargs, out))
        return out


class _Graph:
    """The recorded operations; :meth:`replay` runs them again, results copied into the captured outputs."""

    def __init__(self, ops: list[tuple[Any, Any, Any, Any]]) -> None:
        self.ops = ops

    @torch.no_grad()
    def replay(self) -> None:
        for func, args, kwargs, out in self.ops:
            new = func(*args, **kwargs)
            for o, n in zip(tree_leaves(out), tree_leaves(new)):
                if isinstance(o, torch.Tensor) and o is not n:
                    o.copy_(n)


class EmulatedSteps(cg.GraphedSteps):
    """:class:`~imc_grapes.cuda_graphs.GraphedSteps` with the CUDA capture replaced by the emulation above, on any
    device; ``warmup=NEVER`` never captures (the eager reference)."""

    @staticmethod
    def _check_device(device: torch.device) -> None:
        return None

    def _warm_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return cg.training_step(self.net, x, y)

    def _record(self, step: Callable[[], object]) -> _Graph:
        generators = cg.model_generators(self.net.model, self.net.device) + [torch.default_generator]
        states = [g.get_state() for g in generators]
        recorder = _Recorder()
        with recorder:
            step()
        with torch.no_grad():                   # a capture runs no kernel: undo the step's writes, newest first
            for t, value in reversed(recorder.before):
                t.copy_(value)
        for g, state in zip(generators, states):
            g.set_state(state)
        return _Graph(recorder.ops)
