"""Whether a network's weights can fit in the memory of the device that would train it, checked before anything
is allocated: a width typed with a few zeros too many (``--hidden 100000000000``) is a clear error naming
``hidden``, not an out-of-memory traceback from deep inside torch.

The bound is a lower one, so it never refuses a network that could be trained: training holds at least
:data:`BYTES_PER_WEIGHT` bytes per weight (its float32 value and float32 gradient; an analog layer holds more:
two conductances per weight, device states, optimizer states), and it is compared with the device's whole memory
(:func:`memory_bytes`), not with what is free now. A network that passes can still run out of memory (activations,
an analog backend's per-device states); one that fails could never have been built.
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from .config import ConfigError, TrainConfig
from .models import cnn_max_blocks, weight_count

__all__ = ["BYTES_PER_WEIGHT", "check_model_fits", "memory_bytes"]

BYTES_PER_WEIGHT = 8
"""The least memory (bytes) that training takes per weight: a float32 weight and its float32 gradient."""


def memory_bytes(device: torch.device | str) -> int | None:
    """The memory of ``device`` in bytes: a CUDA device's total memory, or for the CPU this machine's physical
    memory (less a smaller cgroup v2 limit, ``/sys/fs/cgroup/memory.max``, when the process runs under one);
    None when it cannot be read (then nothing is refused)."""
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return None
        return int(torch.cuda.get_device_properties(device).total_memory)
    if device.type != "cpu":
        return None
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        limit = "max"
    return min(total, int(limit)) if limit.isdigit() else total


def _size(n_bytes: float) -> str:
    """``n_bytes`` in binary units, 3 significant digits: ``1.5 GiB``."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    k = min(int(math.log(max(n_bytes, 1), 1024)), len(units) - 1)
    return f"{n_bytes / 1024 ** k:.3g} {units[k]}"


def check_model_fits(cfg: TrainConfig, input_shape: Sequence[int], n_classes: int, device: torch.device | str,
                     copies: int = 1) -> None:
    """Raise :class:`~imc_grapes.config.ConfigError` (``TrainConfig.hidden: ...``) when ``copies`` networks of
    ``cfg`` (its ``model`` with widths / channels ``cfg.hidden`` on inputs of ``input_shape``, e.g. ``(1, 28, 28)``,
    and ``n_classes`` outputs) need more memory to train than ``device`` has: :data:`BYTES_PER_WEIGHT` per weight
    against :func:`memory_bytes`. ``copies``: networks trained side by side (replicas). A ``cnn`` with more conv
    blocks (``cfg.hidden`` entries) than its 2×2 poolings can halve the input's height and width is refused too
    (``TrainConfig.hidden: ...``; the model's own check would raise only once training starts)."""
    if cfg.model == "cnn" and len(input_shape) == 3:
        h, w = int(input_shape[1]), int(input_shape[2])
        most = cnn_max_blocks(h, w)
        if len(cfg.hidden) > most:
            raise ConfigError(f"TrainConfig.hidden: the cnn pools its {h}x{w} inputs 2x2 once per conv block, so "
                              f"it takes at most {most} blocks (channel counts), got {len(cfg.hidden)}: "
                              f"{list(cfg.hidden)}")
    n = copies * weight_count(cfg.model, input_shape=input_shape, n_classes=n_classes, hidden=cfg.hidden)
    memory = memory_bytes(device)
    if memory is None or n * BYTES_PER_WEIGHT <= memory:
        return
    what = ("the mlp " + "-".join(str(s) for s in (math.prod(input_shape), *cfg.hidden, n_classes))
            if cfg.model == "mlp" else f"the cnn with channels {list(cfg.hidden)}")
    most = max(1, memory // (copies * BYTES_PER_WEIGHT))
    raise ConfigError(
        f"TrainConfig.hidden: {what} has {n:.3g} weights{f' ({copies} copies)' if copies > 1 else ''}; training "
        f"them takes at least {BYTES_PER_WEIGHT} bytes each (a float32 weight and its gradient), "
        f"{_size(n * BYTES_PER_WEIGHT)}, more than the {_size(memory)} that {torch.device(device).type} has on this "
        f"machine (at most {most:.3g} weights): use smaller {'widths' if cfg.model == 'mlp' else 'channel counts'}")
