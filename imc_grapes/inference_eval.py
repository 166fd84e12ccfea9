"""Inference after training: accuracy of a trained network after PCM-like programming noise, drift and read
noise at several times after programming (aihwkit's ``PCMLikeNoiseModel`` semantics, ``devices.inference``).

The trained weights of every weight layer are programmed once onto differential conductance pairs (largest
|w| of the layer at g_max), each device draws its drift exponent once, and at each time the weights are read
back with global drift compensation, written into the network, and the network is evaluated (through its own
forward path: an analog network keeps its DAC/ADC periphery). The trained weights are restored afterwards.
On a :class:`~imc_grapes.backends.Network` (:func:`network_accuracy_after_drift`, what training runs use) the
noisy weights replace the trained ones exactly — a training device's write noise is not drawn again on top, the
inference model's programming noise stands for it, and on the crossbar backend they are not clipped into the
training device's bounds (aihwkit's training tiles always clip) — and the network's exact state comes back
afterwards.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from devices import InferenceNoiseModel, PCMLikeNoiseModel, apply_inference_noise
from devices.base import is_finite_number

from .interrupts import raise_if_stop_requested

if TYPE_CHECKING:
    from .backends import Network


def accuracy_after_drift(read_weights: Callable[[], Mapping[str, Tensor]],
                         write_weights: Callable[[Mapping[str, Tensor]], None],
                         evaluate: Callable[[], float], times_s: Sequence[float], seed: int = 0,
                         model: InferenceNoiseModel | None = None,
                         compensate_drift: bool = True, *, restore: bool = True) -> dict[str, float]:
    """Accuracy at each time after programming.

    The times are evaluated in ascending order whatever order they are given in (the noise draws follow that
    order, so ``[3600, 1]`` gives the numbers of ``[1, 3600]``). Each time starts at a safe point
    (:func:`~imc_grapes.interrupts.raise_if_stop_requested`: a stop swallowed while a time was evaluated ends the
    evaluation before the next one, the trained weights written back as on any error).

    Args:
        read_weights: returns the trained weights ``{layer name: tensor}`` (any shapes, one device).
        write_weights: programs weights of the same names and shapes into the network.
        evaluate: returns the network's accuracy (fraction) on the evaluation split.
        times_s: seconds after programming (each finite and ≥ 0, no time twice), e.g. ``devices.STANDARD_TIMES_S``.
        seed: seeds the programming noise, drift exponents and read noise (same seed, same result).
        model: noise model (default ``PCMLikeNoiseModel()``).
        compensate_drift: apply global drift compensation (per layer, as a reference read would).
        restore: write the trained weights back before returning (also on an error); False when the caller puts
            the network's state back itself (:func:`network_accuracy_after_drift`), the last noisy weights are left.

    Returns:
        ``{time_key(time_s): accuracy}`` in ascending time; with ``restore`` the trained weights are written back
        before returning. Without any weight (``read_weights`` returns none) nothing can drift: every time gets
        the accuracy of one plain ``evaluate()``. When a trained weight is NaN or infinite (a diverged model) the
        accuracy is undefined: every time gets NaN, and nothing is written or evaluated. Finite weights can still
        give outputs beyond float32 after drift (e.g. weights of 1e37 on inputs of 100): ``evaluate`` decides
        then, and :func:`~imc_grapes.train.evaluate` returns NaN for non-finite outputs (not the share of the
        class that argmax picks from infinities); that NaN is recorded as it is.

    Raises:
        ValueError: a time is negative, NaN or infinite, or given twice (the message names ``times_s``).
    """
    times = _checked_times(times_s)
    if not times:
        return {}
    model = model or PCMLikeNoiseModel()
    trained = {k: v.detach().clone() for k, v in read_weights().items()}
    if not trained:
        acc = float(evaluate())
        return {time_key(t): acc for t in times}
    if not _all_finite(trained):
        return {time_key(t): math.nan for t in times}
    device = next(iter(trained.values())).device
    gen = torch.Generator(device=device).manual_seed(int(seed) + 7919)
    noisy = {k: apply_inference_noise(w, times, model, generator=gen, compensate_drift=compensate_drift)
             for k, w in trained.items()}  # each [T, *shape]
    out: dict[str, float] = {}
    try:
        for i, t in enumerate(times):
            raise_if_stop_requested()   # a swallowed stop (imc_grapes.interrupts): no further time is evaluated
            write_weights({k: v[i] for k, v in noisy.items()})
            out[time_key(t)] = float(evaluate())
    finally:
        if restore:
            write_weights(trained)
    return out


def _checked_times(times_s: Sequence[float]) -> list[float]:
    """``times_s`` (s) sorted ascending as floats; ``ValueError`` naming ``times_s`` unless every time is a finite
    number ≥ 0 and no time (as :func:`time_key` writes it) is given twice."""
    times = list(times_s)
    if not all(is_finite_number(t) and t >= 0 for t in times):
        raise ValueError(f"accuracy_after_drift.times_s must be times ≥ 0 s (each finite), got {times!r}")
    keys = [time_key(t) for t in times]
    if len(set(keys)) != len(keys):
        raise ValueError(f"accuracy_after_drift.times_s must not give a time twice (each result is keyed by its "
                         f"time), got {times!r}")
    return sorted(float(t) for t in times)


def _all_finite(weights: Mapping[str, Tensor]) -> bool:
    """Whether every weight is finite (one device sync for all layers; once per evaluation, not per step)."""
    return bool(torch.stack([torch.isfinite(w).all() for w in weights.values()]).all())


def network_accuracy_after_drift(net: Network, evaluate: Callable[[], float], times_s: Sequence[float],
                                 seed: int = 0, model: InferenceNoiseModel | None = None,
                                 compensate_drift: bool = True) -> dict[str, float]:
    """:func:`accuracy_after_drift` of a :class:`~imc_grapes.backends.Network`'s weight layers: the noisy weights
    replace the trained ones exactly (on devices with write noise, no fresh write-noise draw of the training
    device on top: the inference noise model stands for the programming), and the network's exact state — device
    states, write noise, generators — comes back afterwards (:meth:`~imc_grapes.backends.Network.state_kept`, the
    one restore: writing the trained weights back first, as :func:`accuracy_after_drift` does by itself, would be
    overwritten by it)."""
    with net.state_kept():
        # clip=False: the inference weights are those of the inference model's device (its own physical limit,
        # g >= 0, is applied there; programming and read noise may exceed g_max as in aihwkit) with the global
        # drift compensation, a digital output scale, folded in; the training device's per-device bounds are
        # another device's and clipping into them would cut that noise and the compensation (aihwkit's
        # inference tiles do not clip programmed weights either). aihwkit's training tiles always clip.
        return accuracy_after_drift(net.read_weights,
                                    functools.partial(net.write_weights, write_noise=False, clip=False),
                                    evaluate, times_s, seed, model, compensate_drift, restore=False)


def time_key(t: float) -> str:
    """The key of a time in result files: whole seconds without a decimal point (``"31536000"``)."""
    t = float(t)
    return str(int(t)) if t.is_integer() else repr(t)


def time_label(t: float) -> str:
    """A time in seconds as tables head it: ``1s``, ``1h``, ``1d``, ``1y``, ``2h``, ``90s`` (``:g`` seconds when
    no whole number of a unit)."""
    for secs, name in ((31536000, "1y"), (86400, "1d"), (3600, "1h"), (60, "1min"), (1, "1s")):
        if t >= secs and abs(t / secs - round(t / secs)) < 1e-9:
            n = round(t / secs)
            return f"{n}{name[1:]}" if n != 1 else name
    return f"{t:g}s"
