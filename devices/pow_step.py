"""Power-step device (aihwkit ``PowStepDevice``, ``rpu_powstep_device.cpp``; Fusi & Abbott 2007 synapse)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from devices._flows import Bundle, flow_moments
from devices.base import DeviceParams, PulsedDevice, check_field

__all__ = ["PowStepDevice"]


@dataclass(frozen=True)
class PowStepDevice(PulsedDevice):
    """Step size a power of the distance to the bound (aihwkit ``PowStepDevice``).

    With ``R = w_max − w_min`` (per device) and ``ω = (w_max − w)/R``, one up pulse does
    ``w += dw_up·ω^γ_up·(1 + dw_min_std·ξ)``; one down pulse ``w −= dw_down·((w − w_min)/R)^γ_down·(1 + dw_min_std·ξ)``;
    then clip. ``γ = 1`` is soft bounds with steps ``dw·(distance to bound)/R``. Per-device exponents
    (aihwkit's sampling): ``gain = 1 + pow_gamma_dtod·ξ₁``, ``r = pow_up_down_dtod·ξ₂``,
    ``γ_up = |pow_gamma·(gain + r + min(pow_up_down, 0))|``, ``γ_down = |pow_gamma·(gain − r − max(pow_up_down, 0))|``.

    Count-based response: exact ODE solution ``ω^(1−γ) = ω₀^(1−γ) − (1−γ)·(dw/R)·t`` with per-device time scale
    making one pulse exact (and every ``n`` exact when ``γ = 1``), see :mod:`devices._flows`.

    Attributes:
        pow_gamma: mean exponent (>= 0). pow_gamma_dtod: its relative device-to-device std (>= 0).
        pow_up_down: up/down bias of the exponent (in (-1, 1)). pow_up_down_dtod: its device-to-device std (>= 0).
    """

    pow_gamma: float = 1.0
    pow_gamma_dtod: float = 0.1
    pow_up_down: float = 0.0
    pow_up_down_dtod: float = 0.0

    def _validate(self) -> None:
        c = type(self).__name__
        for name in ("pow_gamma", "pow_gamma_dtod", "pow_up_down_dtod"):
            v = getattr(self, name)
            check_field(c, name, v, math.isfinite(v) and v >= 0, ">= 0 and finite")
        check_field(c, "pow_up_down", self.pow_up_down, -1.0 < self.pow_up_down < 1.0, "in (-1, 1)")

    @property
    def _n_extra_gauss(self) -> int:
        return 2

    def _sample_extra(self, params: DeviceParams, xi: Tensor) -> dict[str, Tensor]:
        gain = 1.0 + self.pow_gamma_dtod * xi[0]
        r = self.pow_up_down_dtod * xi[1]
        up_bias = min(self.pow_up_down, 0.0)
        down_bias = -max(self.pow_up_down, 0.0)
        return {
            "gamma_up": (self.pow_gamma * (up_bias + gain + r)).abs(),
            "gamma_down": (self.pow_gamma * (down_bias + gain - r)).abs(),
        }

    def _sampled_fields(self) -> dict[str, tuple[str, ...]]:
        exponent = ("pow_gamma", "pow_gamma_dtod", "pow_up_down_dtod")
        return {**super()._sampled_fields(), "extra.gamma_up": exponent, "extra.gamma_down": exponent}

    @property
    def granularity(self) -> float:
        """aihwkit's ``dw_min·0.5^pow_gamma`` (the step at the middle of the range)."""
        return self.dw_min * 0.5 ** self.pow_gamma

    # ---------------------------------------------------------------- one direction, elementwise
    @staticmethod
    def _omega(w: Tensor, dp: Bundle) -> tuple[Tensor, Tensor, Tensor]:
        rng = dp["w_max"] - dp["w_min"]
        ok = rng > 0
        rs = torch.where(ok, rng, torch.ones_like(rng))
        # + 0.0 turns a -0.0 (a state exactly at the bound) into +0.0, whose negative powers are +inf, not -inf
        omega = (dp["sign"] * (dp["anchor"] - w) / rs).clamp(0.0, 1.0) + 0.0
        return omega, rs, ok

    def _step(self, w: Tensor, dp: Bundle) -> Tensor:
        omega, _, ok = self._omega(w, dp)
        return torch.where(ok, dp["dw"] * omega.pow(dp["gamma"]), torch.zeros_like(w))

    def _field(self, w: Tensor, dp: Bundle) -> Tensor:
        omega, _, ok = self._omega(w, dp)
        return torch.where(ok, omega.pow(dp["gamma"]), torch.zeros_like(w))

    def _flow(self, w0: Tensor, n: Tensor, dp: Bundle) -> Tensor:
        omega0, rs, ok = self._omega(w0, dp)
        eps = 1.0 - dp["gamma"]
        e0 = eps == 0
        eps_s = torch.where(e0, torch.ones_like(eps), eps)
        alpha = dp["dw"] / rs
        x1 = alpha * omega0.pow(-eps)                                 # relative one-pulse decrease of ω
        l1 = torch.log1p(-x1.clamp(max=1.0))                          # log(ω1/ω0), exact one pulse
        y = torch.where(e0, -l1, -torch.expm1(eps * l1) / eps_s)       # rescaled ODE time per pulse
        z = n * y
        big_l = torch.where(e0, -z, torch.log1p((-eps * z).clamp(min=-1.0)) / eps_s)
        omega_n = omega0 * torch.exp(big_l)
        w_n = dp["anchor"] - dp["sign"] * rs * omega_n
        w_n = torch.where(ok & (n > 0), w_n, w0)
        return torch.minimum(torch.maximum(w_n, dp["w_min"]), dp["w_max"])

    def _noise_std(self, w: Tensor, step: Tensor) -> Tensor:
        return self.dw_min_std * step

    def pulse_moments(self, w: Tensor, n_up: Tensor, n_down: Tensor, params: DeviceParams) -> tuple[Tensor, Tensor]:
        """Mean and variance of the state (see :mod:`devices._flows`); all tensors ``[*shape]``."""
        one = torch.ones_like(w)
        common = {"w_min": params.w_min, "w_max": params.w_max}
        up = {"dw": params.dw_up, "gamma": params.extra["gamma_up"], "anchor": params.w_max, "sign": one, **common}
        down = {"dw": params.dw_down, "gamma": params.extra["gamma_down"], "anchor": params.w_min, "sign": -one,
                **common}
        return flow_moments(w, n_up, n_down, up, down, self._flow, self._step, self._field, self._noise_std)
