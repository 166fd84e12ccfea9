"""Linear-step and soft-bounds devices (aihwkit ``LinearStepDevice`` / ``SoftBoundsDevice``).

Both share aihwkit's ``rpu_linearstep_device.cpp`` update: with per-device slopes
``slope_up = −γ_up·dw_up / w_ref_up`` (<= 0) and ``slope_down = −γ_down·dw_down / w_ref_down`` (>= 0, since
``w_ref_down < 0``), one pulse does

* multiplicative noise (``mult_noise=True``, default):
  up ``w += (slope_up·w + dw_up)·(1 + dw_min_std·ξ)``, down ``w −= (slope_down·w + dw_down)·(1 + dw_min_std·ξ)``;
* additive noise: up ``w += slope_up·w + dw_up·(1 + dw_min_std·ξ)``, down likewise;

then clips into the per-device bounds. Soft bounds is the special case ``γ = 1`` with the per-device bounds
as references: the step vanishes at the bound, and after ``n`` up pulses (no noise)
``w_n = w_max − (w_max − w)·(1 − dw_up/w_max)^n`` (geometric approach to the bound).
Count-based closed forms: :func:`devices._closed_forms.linear_moments` (exact mean and variance for pulses
of one sign; documented interleaving approximation for mixed counts). The affine step map is increasing in
``w``, and its steps are non-negative until the bound/fixed point, so for pulses of one sign clipping once at
the end would equal clipping after every pulse up to the negative noisy steps; those (and mixed counts) are what
:func:`devices.base.clipped_walk_` models (every device is clipped as after each pulse, aihwkit's rule).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from devices._closed_forms import linear_moments
from devices.base import DeviceParams, PulsedDevice, check_field

__all__ = ["LinearStepDevice", "SoftBoundsDevice"]


def _slope(gamma: Tensor, dw: Tensor, w_ref: Tensor | float) -> Tensor:
    """``−γ·dw / w_ref``, 0 where ``w_ref == 0`` (aihwkit's convention)."""
    ref = torch.full_like(dw, w_ref) if isinstance(w_ref, (int, float)) else w_ref   # no host->device copy
    zero = ref == 0
    return torch.where(zero, torch.zeros_like(dw), -gamma * dw / torch.where(zero, torch.ones_like(ref), ref))


class _AffineResponse:
    """Mixin: count-based response of the affine-step family, reading ``extra['slope_up'/'slope_down']``."""

    mult_noise: bool
    dw_min_std: float

    def pulse_moments(self, w: Tensor, n_up: Tensor, n_down: Tensor, params: DeviceParams) -> tuple[Tensor, Tensor]:
        """Mean and variance of the unclipped state (see :func:`devices._closed_forms.linear_moments`)."""
        return linear_moments(
            w, n_up, n_down, params.dw_up, params.dw_down, params.extra["slope_up"], params.extra["slope_down"],
            self.dw_min_std, self.mult_noise,
        )


@dataclass(frozen=True)
class LinearStepDevice(_AffineResponse, PulsedDevice):
    """Step size linear in the state (aihwkit ``LinearStepDevice``); shared fields: see :class:`PulsedDevice`.

    Attributes:
        gamma_up: relative decrease of the up step at ``w_max`` (>= 0): the up step at ``w_ref_up`` is
            ``dw_up·(1 − γ_up)``.
        gamma_down: relative decrease of the down step at ``w_min`` (>= 0).
        gamma_up_dtod, gamma_down_dtod: device-to-device std of γ (absolute, >= 0); the sampled value is
            ``|γ + γ_dtod·ξ|`` (aihwkit with ``allow_increasing=False``, the only mode implemented).
        mean_bound_reference: slopes relative to the mean bounds ``w_max``/``w_min`` (True, aihwkit default)
            instead of the per-device bounds.
        mult_noise: multiplicative (True, default) or additive cycle-to-cycle noise.
    """

    gamma_up: float = 0.0
    gamma_down: float = 0.0
    gamma_up_dtod: float = 0.05
    gamma_down_dtod: float = 0.05
    mean_bound_reference: bool = True
    mult_noise: bool = True

    def _validate(self) -> None:
        c = type(self).__name__
        for name in ("gamma_up", "gamma_down", "gamma_up_dtod", "gamma_down_dtod"):
            v = getattr(self, name)
            check_field(c, name, v, math.isfinite(v) and v >= 0, ">= 0 and finite")

    @property
    def _n_extra_gauss(self) -> int:
        return 2

    def _sample_extra(self, params: DeviceParams, xi: Tensor) -> dict[str, Tensor]:
        g_up = (self.gamma_up + self.gamma_up_dtod * xi[0]).abs()
        g_down = (self.gamma_down + self.gamma_down_dtod * xi[1]).abs()
        # the slopes' own spread (the base check leaves slopes out: infinite by design at a zero bound)
        self._check_finite_tensors({"extra.slope_up": g_up, "extra.slope_down": g_down})
        ref_up = self.w_max if self.mean_bound_reference else params.w_max
        ref_down = self.w_min if self.mean_bound_reference else params.w_min
        return {"slope_up": _slope(g_up, params.dw_up, ref_up), "slope_down": _slope(g_down, params.dw_down, ref_down)}

    def _sampled_fields(self) -> dict[str, tuple[str, ...]]:
        # a slope is checked through its gamma spread only (steps and bounds by the base check)
        return {**super()._sampled_fields(), "extra.slope_up": ("gamma_up", "gamma_up_dtod"),
                "extra.slope_down": ("gamma_down", "gamma_down_dtod")}


@dataclass(frozen=True)
class SoftBoundsDevice(_AffineResponse, PulsedDevice):
    """Soft bounds (aihwkit ``SoftBoundsDevice``): the step shrinks linearly to 0 at the per-device bound.

    Up step ``dw_up·(1 − w/w_max)``, down step ``dw_down·(1 − w/w_min)`` (per-device bounds), times
    ``(1 + dw_min_std·ξ)`` (``mult_noise=True``, default) or plus ``dw·dw_min_std·ξ`` (additive). Shared fields
    and defaults: see :class:`PulsedDevice`.
    """

    mult_noise: bool = True

    @property
    def _n_extra_gauss(self) -> int:
        return 0

    def _sample_extra(self, params: DeviceParams, xi: Tensor) -> dict[str, Tensor]:
        one = torch.ones_like(params.dw_up)
        return {
            "slope_up": _slope(one, params.dw_up, params.w_max),
            "slope_down": _slope(one, params.dw_down, params.w_min),
        }
