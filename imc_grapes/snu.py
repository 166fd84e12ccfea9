"""Spiking Neural Units (Woźniak et al., Nat. Mach. Intell. 2, 2020) and a spiking MNIST classifier, trained with
BPTT, with GRAPES per unit from the input weights (grapes.md §3).

One SNU layer, for every time step ``t = 1 … T`` (``s_0 = y_0 = 0``)::

    s_t = g(W x_t + l(τ) ⊙ s_{t-1} ⊙ (1 − y_{t-1}))        state (membrane potential), g = ReLU
    y_t = h(s_t + b)                                       output

* ``l(τ) = 1 − Δt/τ`` is the per-unit decay (a fixed buffer ``decay``, default 0.8); the factor
  ``(1 − y_{t−1})`` resets the state after a spike.
* SNU: ``h`` is the Heaviside step (spike when ``s_t + b > 0``; ``b < 0`` acts as a threshold) with a
  surrogate gradient in the backward pass: the derivative of ``σ(β v)``, i.e. ``β σ(βv)(1 − σ(βv))``.
* sSNU (soft, ``soft=True``): ``h = σ``, differentiable, outputs in (0, 1).
* The gradient flows through every term, the reset included (plain BPTT through the formula).

``W x_t`` does not depend on the state, so it is one matrix product over all steps (``[T·batch, in]``); only
the state update runs step by step. GRAPES: ``W`` is the layer's ``inp`` (``nn.Linear``, bias-free), so
:func:`~imc_grapes.grapes.attach_grapes` takes ``F = Σ_j |W_ij|`` and its propagated hook scales the error
arriving at ``W x_t`` at every step, so ``ΔW`` and the error sent to the layer below are modulated (local mode:
``ΔW`` only); the threshold ``b`` and the decay are not part of ``F``, the threshold's gradient ``Δb`` is not
modulated (``b`` acts on the output ``h(s_t + b)``, not on ``W x_t``), and the error carried back through time
inside the unit (through ``s_{t-1}`` and the reset) is not scaled (see :mod:`imc_grapes.recurrent` for why the
temporal path stays unmodulated).

The classifier :class:`SpikingClassifier` encodes an image into spike trains (rate or latency code, drawn from
its own seeded generator), runs the SNU layers, and reads out the last layer's spike counts with a bias-free
linear layer (``logits = V · mean_t y_t``, a non-spiking readout).
"""
from __future__ import annotations

import math
from typing import Any, Sequence, cast

import torch
from torch import Tensor, nn

from .grapes.initializers import he_uniform_, make_generator, uniform_
from .suggest import did_you_mean

__all__ = ["ENCODINGS", "SNULayer", "SpikingClassifier", "encode_latency", "encode_rate", "spike_fn",
           "to_intensity"]

ENCODINGS: tuple[str, ...] = ("rate", "latency")


class _StepSurrogate(torch.autograd.Function):
    """Forward: ``(v > 0)`` as float. Backward: ``grad · β σ(βv)(1 − σ(βv))``."""

    @staticmethod
    def forward(ctx: Any, v: Tensor, beta: float) -> Tensor:
        ctx.save_for_backward(v)
        ctx.beta = beta
        return (v > 0).to(v.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (v,) = ctx.saved_tensors
        sig = torch.sigmoid(ctx.beta * v)
        return grad * ctx.beta * sig * (1.0 - sig), None


def spike_fn(v: Tensor, beta: float = 1.0) -> Tensor:
    """Heaviside step ``H(v)`` (1 where ``v > 0``) with the surrogate gradient ``d σ(βv)/dv``. Any shape."""
    return _StepSurrogate.apply(v, float(beta))


class SNULayer(nn.Module):
    """A layer of Spiking Neural Units over a whole sequence (see the module docstring for the equations).

    Args:
        in_features, out_features: widths of ``x_t`` and ``y_t``.
        soft: ``False`` SNU (step output, surrogate gradient), ``True`` sSNU (sigmoid output).
        decay: ``l(τ)`` in [0, 1), the same for every unit (kept as a per-unit buffer ``[out]``).
        threshold: initial ``b = −threshold`` for every unit (trainable, ``[out]``); ``threshold`` ≥ 0.
        surrogate_beta: steepness ``β`` > 0 of the SNU's surrogate gradient.
        generator: draws ``W`` (He-uniform, ``fan_in = in_features``).
        device, dtype: where parameters live.

    Attributes: ``inp`` (``W``: ``nn.Linear(in, out, bias=False)``), ``b`` ``[out]``, buffer ``decay`` ``[out]``.

    Shapes: ``x: [T, batch, in_features]`` -> ``y: [T, batch, out_features]``.
    """

    def __init__(self, in_features: int, out_features: int, soft: bool = False, decay: float = 0.8,
                 threshold: float = 1.0, surrogate_beta: float = 1.0, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ValueError(f"SNULayer.in_features and out_features must be >= 1, got {in_features}, "
                             f"{out_features}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"SNULayer.decay must be in [0, 1) (l(τ) = 1 − Δt/τ), got {decay}")
        if not threshold >= 0.0:
            raise ValueError(f"SNULayer.threshold must be >= 0, got {threshold}")
        if not surrogate_beta > 0.0:
            raise ValueError(f"SNULayer.surrogate_beta must be > 0, got {surrogate_beta}")
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.soft, self.surrogate_beta = bool(soft), float(surrogate_beta)
        self.inp = nn.Linear(in_features, out_features, bias=False)
        he_uniform_(self.inp.weight, generator if generator is not None else make_generator(None))
        # created in the target dtype: a float32 constant cast to float64 would keep float32's rounding
        # (decay 0.7 would become 0.699999988)
        self.b = nn.Parameter(torch.full((out_features,), -float(threshold), device=device, dtype=dtype))
        self.register_buffer("decay", torch.full((out_features,), float(decay), device=device, dtype=dtype))
        self.to(device=device, dtype=dtype)

    def output(self, v: Tensor) -> Tensor:
        """``h(v)``: sigmoid (sSNU) or the step with surrogate gradient (SNU)."""
        return torch.sigmoid(v) if self.soft else spike_fn(v, self.surrogate_beta)

    def forward(self, x: Tensor) -> Tensor:
        """x: ``[T, batch, in_features]`` -> ``y: [T, batch, out_features]``."""
        t_len, batch, _ = x.shape
        a = self.inp(x.reshape(t_len * batch, self.in_features)).reshape(t_len, batch, self.out_features)
        s = a.new_zeros(batch, self.out_features)
        y = a.new_zeros(batch, self.out_features)
        outs = []
        for t in range(t_len):  # the state recursion is sequential; each step is element-wise over the batch
            s = torch.relu(a[t] + self.decay * s * (1.0 - y))
            y = self.output(s + self.b)
            outs.append(y)
        return torch.stack(outs)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"{'sSNU' if self.soft else 'SNU'}, beta={self.surrogate_beta}")


def to_intensity(x: Tensor) -> Tensor:
    """Per-sample min-max rescale to [0, 1]: ``x: [batch, *]`` -> ``[batch, prod(*)]`` (works for normalised
    MNIST, whose background is each image's minimum, and for any z-scored data)."""
    flat = x.flatten(1)
    lo = flat.amin(dim=1, keepdim=True)
    hi = flat.amax(dim=1, keepdim=True)
    return (flat - lo) / (hi - lo).clamp_min(1e-12)


def encode_rate(intensity: Tensor, steps: int, generator: torch.Generator) -> Tensor:
    """Rate (Bernoulli) code: at every step, input ``i`` spikes with probability ``intensity_i``.

    ``intensity: [batch, n]`` in [0, 1] -> spikes ``[steps, batch, n]`` (0/1, same dtype), drawn from
    ``generator`` (on the tensor's device).
    """
    u = torch.rand((steps, *intensity.shape), generator=generator, device=intensity.device, dtype=intensity.dtype)
    return (u < intensity.unsqueeze(0)).to(intensity.dtype)


def encode_latency(intensity: Tensor, steps: int, min_intensity: float = 0.2) -> Tensor:
    """Latency (time-to-first-spike) code: input ``i`` spikes once, at step ``round((1 − I_i)(steps − 1))``
    (brighter = earlier; an exact half rounds to even, as ``torch.round``); inputs with ``I_i < min_intensity``
    never spike.

    ``intensity: [batch, n]`` in [0, 1] -> spikes ``[steps, batch, n]`` (deterministic).
    """
    t_spike = torch.round((1.0 - intensity) * (steps - 1))
    t = torch.arange(steps, device=intensity.device, dtype=intensity.dtype).reshape(-1, 1, 1)
    return ((t == t_spike.unsqueeze(0)) & (intensity.unsqueeze(0) >= min_intensity)).to(intensity.dtype)


class SpikingClassifier(nn.Module):
    """Spike-encoded image -> SNU layers -> linear readout of the last layer's spike rate.

    Args:
        in_features: pixels per image (784 for MNIST).
        hidden: widths of the SNU layers, e.g. ``(256,)``.
        n_classes: classes.
        steps: time steps ``T`` per image.
        encoding: ``"rate"`` (Bernoulli, from the model's own generator) or ``"latency"``.
        soft: sSNU layers (sigmoid outputs) instead of SNU (step + surrogate).
        decay, threshold, surrogate_beta: see :class:`SNULayer`.
        seed: seeds the weights and the rate-code spike stream (same seed -> same numbers).
        device, dtype: where parameters live.

    ``hidden_layers()`` are the SNU layers' input matrices ``W`` (what GRAPES modulates), ``output_layer()``
    the readout ``V`` (``nn.Linear(hidden[-1], n_classes, bias=False)``); ``rule`` is ``"bp"`` (BPTT).

    Shapes: ``x: [batch, *]`` with ``prod(*) == in_features`` -> logits ``[batch, n_classes]``
    (``V · mean_t y_t``).
    """

    rule = "bp"

    def __init__(self, in_features: int = 784, hidden: Sequence[int] = (256,), n_classes: int = 10,
                 steps: int = 16, encoding: str = "rate", soft: bool = False, decay: float = 0.8,
                 threshold: float = 1.0, surrogate_beta: float = 1.0, seed: int | None = None, *,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        hidden = tuple(int(h) for h in hidden)
        if not hidden or any(h < 1 for h in hidden):
            raise ValueError(f"SpikingClassifier.hidden must be one or more widths >= 1, got {list(hidden)}")
        if steps < 1:
            raise ValueError(f"SpikingClassifier.steps must be >= 1, got {steps}")
        if encoding not in ENCODINGS:
            raise ValueError(f"SpikingClassifier.encoding must be one of {ENCODINGS}, got {encoding!r}"
                             f"{did_you_mean(encoding, ENCODINGS)}")
        root = make_generator(seed)
        w_seed, spike_seed = (int(s) for s in torch.randint(0, 2**62, (2,), generator=root))
        g = make_generator(w_seed)
        self.in_features, self.hidden, self.n_classes = int(in_features), hidden, int(n_classes)
        self.steps, self.encoding, self.soft = int(steps), encoding, bool(soft)
        self.spike_seed = spike_seed
        self._generators: dict[str, torch.Generator] = {}
        sizes = (self.in_features, *hidden)
        self.layers = nn.ModuleList(
            SNULayer(n_in, n_out, soft=soft, decay=decay, threshold=threshold, surrogate_beta=surrogate_beta,
                     generator=g, dtype=dtype) for n_in, n_out in zip(sizes[:-1], sizes[1:]))
        self.readout = nn.Linear(hidden[-1], n_classes, bias=False)
        uniform_(self.readout.weight, math.sqrt(6.0 / hidden[-1]), g)
        self.to(device=device, dtype=dtype)

    def generator(self, device: torch.device) -> torch.Generator:
        """The rate-code spike generator for ``device`` (created and seeded on first use)."""
        key = str(device)
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=device).manual_seed(self.spike_seed)
        return self._generators[key]

    def encode(self, x: Tensor) -> Tensor:
        """Images ``[batch, *]`` -> input spikes ``[steps, batch, in_features]``."""
        intensity = to_intensity(x)
        if intensity.shape[1] != self.in_features:
            raise ValueError(f"SpikingClassifier: an input has {intensity.shape[1]} values, expected "
                             f"{self.in_features}")
        if self.encoding == "rate":
            return encode_rate(intensity, self.steps, self.generator(x.device))
        return encode_latency(intensity, self.steps)

    def hidden_layers(self) -> list[nn.Module]:
        """The SNU layers' input matrices ``W`` (``layer.inp``), forward order."""
        return [cast(SNULayer, layer).inp for layer in self.layers]

    def output_layer(self) -> nn.Module:
        """The linear readout of the spike rates."""
        return self.readout

    def forward(self, x: Tensor) -> Tensor:
        """x: ``[batch, *]`` -> logits ``[batch, n_classes]``."""
        y = self.encode(x)
        for layer in self.layers:
            y = layer(y)
        return self.readout(y.mean(0))

    def extra_repr(self) -> str:
        return (f"hidden={list(self.hidden)}, steps={self.steps}, encoding={self.encoding!r}, "
                f"{'sSNU' if self.soft else 'SNU'}")
