"""Exponential-step device (aihwkit ``ExpStepDevice``, ``rpu_expstep_device.cpp``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from devices._flows import Bundle, flow_moments
from devices.base import DeviceParams, PulsedDevice, check_field
from devices.fusion import Scalar, constants, expm1, fused

__all__ = ["ExpStepDevice"]


@dataclass(frozen=True)
class ExpStepDevice(PulsedDevice):
    """Step size an exponential function of the state (aihwkit ``ExpStepDevice``; CMOS/ReRAM/PCM fits).

    With ``z = 2·a·w/(w_max − w_min) + b`` (per-device bounds), one up pulse does
    ``w += dw_up·max(1 − A_up·exp(γ_up·z), 0)·(1 + dw_min_std·ξ)`` and one down pulse
    ``w −= dw_down·max(1 − A_down·exp(−γ_down·z), 0)·(1 + dw_min_std·ξ)``; then clip. With
    ``dw_min_std_add``/``dw_min_std_slope`` non-zero the noise is instead additive with std
    ``dw_min_std·(|step| + dw_min_std_add + dw_min_std_slope·|w|)`` (aihwkit's "complex noise").

    Count-based response: in ``u = A·exp(±γz)`` the ODE ``dw/dt = ±step(w)`` is logistic,
    ``u(t) = u₀e^{κt}/(1 − u₀ + u₀e^{κt})`` with ``κ = γ·2a/(w_max − w_min)·dw``, solved in closed form; the time
    scale is set per device so that one pulse is exact (see :mod:`devices._flows`). Accurate when one pulse
    changes the step size by a small fraction (``|κ·(1 − u)| ≪ 1``: 0.5 % for the defaults); for strongly
    nonlinear fits (e.g. the PCM preset near ``w = 0``) counts above 2 carry an O(|κ(1−u)|) relative error in
    the mean. A single pulse that overshoots the saturation point (``u`` jumping past 1) stops the device, as
    in aihwkit.

    Attributes (aihwkit's names and defaults; tile-wide, no device-to-device spread):
        A_up, A_down: prefactors; gamma_up, gamma_down: exponents (>= 0); a: slope, b: offset of ``z``;
        dw_min_std_add (>= 0, weight units), dw_min_std_slope (>= 0): complex-noise terms.
    """

    A_up: float = 0.00081
    A_down: float = 0.36833
    gamma_up: float = 12.44625
    gamma_down: float = 12.78785
    a: float = 0.244
    b: float = 0.2425
    dw_min_std_add: float = 0.0
    dw_min_std_slope: float = 0.0

    def _validate(self) -> None:
        c = type(self).__name__
        for name in ("A_up", "A_down", "a", "b"):
            v = getattr(self, name)
            check_field(c, name, v, math.isfinite(v), "finite")
        for name in ("gamma_up", "gamma_down", "dw_min_std_add", "dw_min_std_slope"):
            v = getattr(self, name)
            check_field(c, name, v, math.isfinite(v) and v >= 0, ">= 0 and finite")

    @property
    def has_complex_noise(self) -> bool:
        """aihwkit's ``hasComplexNoise``: additive noise with std ``σ(|dw| + add + slope|w|)``."""
        return self.dw_min_std > 0 and (self.dw_min_std_add != 0 or self.dw_min_std_slope != 0)

    @property
    def granularity(self) -> float:
        """aihwkit's ``calcWeightGranularity`` for ExpStep, reproduced as implemented there.

        The steps at ``w = 0`` (nominal bounds, no spread); aihwkit averages ``(dw_down + dw_down)/2`` (it uses
        the down step twice) and falls back to ``dw_min`` when that is 0; kept identical for compatibility.
        """
        down_bias = -max(self.up_down, 0.0)
        scale_down = (1.0 + down_bias) * self.dw_min
        z = self.b
        dw_down = scale_down * max(1.0 - self.A_down * math.exp(-self.gamma_down * z), 0.0)
        g = max(dw_down, 0.0)
        return g if g > 0 else self.dw_min

    def pulse_moments(self, w: Tensor, n_up: Tensor, n_down: Tensor, params: DeviceParams) -> tuple[Tensor, Tensor]:
        """Mean and variance of the state (see :mod:`devices._flows`); all tensors ``[*shape]``. One fused kernel
        when :mod:`devices.fusion` compiles (the tile-wide constants then pass as 0-d tensors: one kernel for
        every configuration)."""
        gamma_up, gamma_down, A_up, A_down, a, b, sigma, sigma_add, sigma_slope = constants(
            w, self.gamma_up, self.gamma_down, self.A_up, self.A_down, self.a, self.b, self.dw_min_std,
            self.dw_min_std_add, self.dw_min_std_slope)
        return _exp_step_moments(w, n_up, n_down, params.dw_up, params.dw_down, params.w_min, params.w_max,
                                 gamma_up, gamma_down, A_up, A_down, a, b, sigma, sigma_add, sigma_slope,
                                 self.has_complex_noise)


@fused
def _exp_step_moments(w: Tensor, n_up: Tensor, n_down: Tensor, dw_up: Tensor, dw_down: Tensor, w_min: Tensor,
                      w_max: Tensor, gamma_up: Scalar, gamma_down: Scalar, A_up: Scalar, A_down: Scalar, a: Scalar,
                      b: Scalar, sigma: Scalar, sigma_add: Scalar, sigma_slope: Scalar, complex_noise: bool
                      ) -> tuple[Tensor, Tensor]:
    """:meth:`ExpStepDevice.pulse_moments` with the device's fields as arguments (numbers, or 0-d tensors when
    compiled). Defines the direction functions of :func:`devices._flows.flow_moments` for ``u = A·exp(±γz)``."""

    def u_of(w: Tensor, dp: Bundle) -> tuple[Tensor, Tensor, Tensor]:
        rng = dp["w_max"] - dp["w_min"]
        ok = rng > 0
        c = 2.0 * a / torch.where(ok, rng, torch.ones_like(rng))
        z = c * w + b
        return dp["A"] * torch.exp(dp["sign"] * dp["gamma"] * z), c, ok

    def step(w: Tensor, dp: Bundle) -> Tensor:
        u, _, ok = u_of(w, dp)
        return torch.where(ok, dp["dw"] * (1.0 - u).clamp_min(0.0), torch.zeros_like(w))

    def field(w: Tensor, dp: Bundle) -> Tensor:
        u, _, ok = u_of(w, dp)
        return torch.where(ok, (1.0 - u).clamp_min(0.0), torch.zeros_like(w))

    def start(w0: Tensor, dp: Bundle) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """What a flow from ``w0`` starts from: ``u0``, ``ok`` (a non-empty range), ``y0 = 1 − u0``, ``y0s`` (``y0``,
        1 where ``y0 <= 0``), ``κ = γ·c·dw``, ``κ == 0`` and ``κs`` (``κ``, 1 where it is 0)."""
        u0, c, ok = u_of(w0, dp)
        y0 = 1.0 - u0
        kappa = dp["gamma"] * c * dp["dw"]
        k0 = kappa == 0
        return (u0, ok, y0, torch.where(y0 > 0, y0, torch.ones_like(y0)), kappa, k0,
                torch.where(k0, torch.ones_like(kappa), kappa))

    def pulse_time(u0: Tensor, y0: Tensor, y0s: Tensor, kappa: Tensor, k0: Tensor, ks: Tensor
                   ) -> tuple[Tensor, Tensor]:
        """ODE time ``τ`` of one pulse (the quantities of :func:`start`) and ``expm1(κ·y0)``: the exact one-pulse
        step ``u1 = u0·exp(κ·y0)`` gives ``κτ = κ·y0 + log(y0) − log(1 − u1)``."""
        em1 = expm1(kappa * y0)
        arg = (-u0 * em1 / y0s).clamp(min=-1.0 + 1e-7)
        return torch.where(k0, torch.ones_like(kappa), 1.0 + (-torch.log1p(arg) - kappa * u0) / ks), em1

    def flow(w0: Tensor, n: Tensor, dp: Bundle) -> Tensor:
        u0, ok, y0, y0s, kappa, k0, ks = start(w0, dp)
        moving = ok & (y0 > 0) & (n > 0)
        # exact one pulse: u1 = u0·exp(κ·y0); overshoot past saturation stops the device after that pulse
        tau, em1 = pulse_time(u0, y0, y0s, kappa, k0, ks)
        saturate = u0 * (1.0 + em1) >= 1.0
        t = n * tau
        kt = kappa * t
        # G(t) = t − log1p(u0·expm1(κt))/κ, stable for large κt and κ → 0
        big = (kt > 20.0) & (u0 > 0)
        small_arg = (u0 * expm1(kt.clamp(max=20.0))).clamp(min=-1.0)
        small_arg = torch.where(u0 == 0, torch.zeros_like(small_arg), small_arg)
        g_small = t - torch.log1p(small_arg) / ks
        g_big = -torch.log(u0.clamp_min(1e-30) + (1.0 - u0) * torch.exp(-kt.clamp(max=80.0))) / ks
        g = torch.where(k0, t * y0, torch.where(big, g_big, g_small))
        g = torch.where(saturate, y0 * torch.minimum(n, torch.ones_like(n)), g)
        w_n = torch.where(moving, w0 + dp["sign"] * dp["dw"] * g, w0)
        w_n = torch.nan_to_num(w_n, nan=0.0, posinf=float("inf"), neginf=float("-inf"))
        return torch.minimum(torch.maximum(w_n, dp["w_min"]), dp["w_max"])

    def to_bound(w0: Tensor, dp: Bundle) -> Tensor:
        """Pulses (real) the flow from ``w0`` takes to reach the bound ahead, ``inf`` if it never does (it stalls
        at the saturation point first): with ``D`` the distance in steps ``dw``, ``u_bound = u0·e^{κD}`` gives the
        ODE time ``t = D − log1p(−u0·expm1(κD)/y0)/κ`` (``D/y0`` for ``κ = 0``), ``t/τ`` pulses."""
        u0, ok, y0, y0s, kappa, k0, ks = start(w0, dp)
        dw = dp["dw"]
        moves = ok & (y0 > 0) & (dw > 0)
        d = dp["sign"] * (torch.where(dp["sign"] > 0, dp["w_max"], dp["w_min"]) - w0) / torch.where(
            dw > 0, dw, torch.ones_like(dw))
        t = torch.where(k0, d / y0s, d - torch.log1p(-u0 * expm1(kappa * d) / y0s) / ks)
        tau, _ = pulse_time(u0, y0, y0s, kappa, k0, ks)
        pulses = torch.nan_to_num(t / tau, nan=float("inf"))
        return torch.where(moves, pulses, torch.full_like(pulses, float("inf")))

    def noise_std(w: Tensor, step: Tensor) -> Tensor:
        if complex_noise:
            return sigma * (step + sigma_add + sigma_slope * w.abs())
        return sigma * step

    one = torch.ones_like(w)
    common = {"w_min": w_min, "w_max": w_max}
    up = {"dw": dw_up, "gamma": one * gamma_up, "A": one * A_up, "sign": one, **common}
    down = {"dw": dw_down, "gamma": one * gamma_down, "A": one * A_down, "sign": -one, **common}
    return flow_moments(w, n_up, n_down, up, down, flow, step, field, noise_std, to_bound=to_bound)
