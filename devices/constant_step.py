"""Constant-step device (aihwkit ``ConstantStepDevice``) and the ideal device."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from devices import rng
from devices.host import flat_nonzero, host_reads_free

from devices.base import DeviceParams, PulsedDevice, check_field, clipped_walk_

__all__ = ["ConstantStepDevice", "IdealDevice"]

_TINY = {torch.float64: 1e-200, torch.float32: 1e-30}   # half precision: computed in float32 by the base class
"""Negligible addend of squared steps (weight units²), far below any squared step of a meaningful device."""


_FEW_PULSED = 0.6
"""Largest fraction of devices with pulses for which the CPU draws Gaussians only for those (see below)."""


def _pulsed_positions(var: Tensor, generator: rng.Generator) -> Tensor | None:
    """Flat positions (increasing, int64) of the devices with pulses (``var > 0``) when they are few enough to
    treat apart: on the CPU (found by :func:`devices.host.flat_nonzero`) with a torch
    generator, at most ``_FEW_PULSED`` of the devices. ``None``: treat every device."""
    if host_reads_free(var) and var.numel() >= 4096 and var.is_contiguous() and not var.requires_grad \
            and var.dtype in (torch.float32, torch.float64) and not isinstance(generator, rng.CounterRNG):
        where = flat_nonzero(var, positive=True)
        if where.numel() <= _FEW_PULSED * var.numel():
            return where
    return None


@dataclass(frozen=True)
class ConstantStepDevice(PulsedDevice):
    """Constant step up to hard bounds (aihwkit ``ConstantStepDevice``, ``rpu_constantstep_device.cpp``).

    One up pulse: ``w += dw_up·(1 + dw_min_std·ξ)``; one down pulse: ``w −= dw_down·(1 + dw_min_std·ξ)``;
    then ``w = clip(w, w_min, w_max)`` (per device). Fields and defaults: see :class:`PulsedDevice`.

    Count-based closed form (``pulse_moments``): ``n_up`` up and ``n_down`` down pulses give
    ``mean = w + n_up·dw_up − n_down·dw_down`` and ``var = dw_min_std²·(n_up·dw_up² + n_down·dw_down²)`` — the
    exact distribution of the sum of independent Gaussian steps (it does not depend on the order of the
    pulses). The clip after every pulse is modelled by :func:`devices.base.clipped_walk_` (a device held at its
    bound leaves it on every negative step, probability ``Φ(−1/dw_min_std)`` per pulse: 4·10⁻⁴ at 0.3, 0.31 at 2;
    for mixed signs, pulses lost against a bound in between): see :mod:`devices.base`.
    """

    SPARSE_PULSES_PER_DEVICE = 0.2   # a cheap response: the CPU's measured break-even

    def pulse_moments(self, w: Tensor, n_up: Tensor, n_down: Tensor, params: DeviceParams) -> tuple[Tensor, Tensor]:
        """Exact mean and variance of the unclipped state; all tensors ``[*shape]``."""
        mean = w + n_up * params.dw_up - n_down * params.dw_down
        var = (self.dw_min_std ** 2) * (n_up * params.dw_up.square() + n_down * params.dw_down.square())
        return mean, var

    def _pulsed_states(self, w: Tensor, n_up: Tensor, n_down: Tensor, params: DeviceParams,
                       generator: rng.Generator, out: Tensor | None = None) -> Tensor:
        """Fused form of the base class's draw for the moments above (``var >= 0``; ``dw_min_std <= 1e19`` keeps the
        draw finite, and the sum of squared steps saturates at the dtype's largest value instead of overflowing): the
        free end point ``w + n_up·dw_up − n_down·dw_down + dw_min_std·sqrt(n_up·dw_up² + n_down·dw_down²)·ξ`` (one
        ``ξ`` per device, the clip-once update's numbers; on the CPU drawn only for the devices with pulses when they
        are few, :func:`_pulsed_positions`), then clipped as after every pulse (:func:`devices.base.clipped_walk_`:
        ``clip(e)`` bit for bit for devices far from their bounds)."""
        if type(self).pulse_moments is not ConstantStepDevice.pulse_moments \
                or not (n_up.shape == n_down.shape == w.shape) or w.dtype not in _TINY:
            # a subclass with its own model, broadcasting, or half precision (the base class computes it in float32)
            return super()._pulsed_states(w, n_up, n_down, params, generator, out)
        # Two temporaries of the devices' size (fewer large allocations). Integer counts are converted first and
        # multiplied in place: the same numbers, one pass and allocation fewer than a mixed-dtype product (which
        # casts into a temporary). The free end point is the clip-once update's, number for number.
        var = n_up.to(w.dtype).mul_(params.dw_up) if not n_up.is_floating_point() else n_up * params.dw_up
        new = torch.add(w, var)                  # up step, then var (not into out: the walk reads w, out may be w)
        var.mul_(params.dw_up)
        noise = (n_down.to(w.dtype).mul_(params.dw_down) if not n_down.is_floating_point()
                 else n_down * params.dw_down)                                       # down step, then noise
        new.sub_(noise)                                                              # the mean
        var.addcmul_(noise, params.dw_down)                        # n_up·dw_up² + n_down·dw_down² (/ dw_min_std²)
        # saturated at the largest float: steps beyond ~1e19 weight units overflow the sum of squares, and an infinite
        # one gave NaN below (ξ·inf·rsqrt(inf) = inf·0, or 0·inf for a zero draw); the std is then underestimated
        # (sqrt(max)·dw_min_std, the state ends far out or on its bound). Finite sums are unchanged, bit for bit.
        var.clamp_max_(torch.finfo(var.dtype).max)
        scale = self.dw_min_std ** 2                            # var·scale: the variance of the end point
        # the path's variance with the order variance of mixed counts, n_up·n_down/n·(dw_up + dw_down)², is at most
        # var·(scale + 2): (dw_up + dw_down)² <= 2·(dw_up² + dw_down²) and n_up·n_down/n <= min(n_up, n_down)
        bound = scale + 2.0
        where = _pulsed_positions(var, generator)
        if where is not None:      # few devices with pulses: one Gaussian each, added where they are
            std = var.view(-1).index_select(0, where).sqrt_()
            new.view(-1).index_add_(0, where, rng.normal_(torch.empty_like(std), 0.0, self.dw_min_std,
                                                          generator).mul_(std))
            free: tuple[Tensor, ...] = (noise,)
        else:
            # std = var / sqrt(var + tiny): exactly 0 without pulses, sqrt(var) to ~tiny/var otherwise (sqrt(0)
            # takes a slow path on common CPUs, and devices without pulses must keep their state exactly)
            rng.normal_(noise, 0.0, self.dw_min_std, generator).mul_(var)
            inv = torch.add(var, _TINY[var.dtype]).rsqrt_()
            new.addcmul_(noise, inv)
            free = (noise, inv)
        # every device (those without pulses have e = w and var = 0: never near a bound, and clip(w) = w); the
        # temporaries above are the walk's scratch space
        clipped_walk_(w, new, var, n_up, n_down, params.w_min, params.w_max, params.dw_up, params.dw_down,
                      var_scale=scale, path_var=bound, scratch=free)
        return new if out is None else out.copy_(new)


@dataclass(frozen=True)
class IdealDevice(ConstantStepDevice):
    """Ideal pulsed device: every pulse changes the state by exactly ``±dw_min``; no spread, no noise.

    Bounds are configurable and wide by default (``±1000``, effectively unbounded for normalized weights).
    All spread and noise fields must be 0 (``ValueError`` otherwise). aihwkit's ``IdealDevice`` is a
    floating-point update without pulses; the closest aihwkit pulsed model is a ``ConstantStepDevice`` with
    all spreads 0, which is what :func:`devices.to_aihwkit` produces.
    """

    dw_min: float = 0.001
    dw_min_dtod: float = 0.0
    dw_min_std: float = 0.0
    up_down: float = 0.0
    up_down_dtod: float = 0.0
    w_min: float = -1000.0
    w_max: float = 1000.0
    w_min_dtod: float = 0.0
    w_max_dtod: float = 0.0
    write_noise_std: float = 0.0

    def _validate(self) -> None:
        c = type(self).__name__
        for name in ("dw_min_dtod", "dw_min_std", "up_down", "up_down_dtod", "w_min_dtod", "w_max_dtod",
                     "write_noise_std"):
            v = getattr(self, name)
            check_field(c, name, v, v == 0, "0 (an ideal device has no spread or noise)")
