"""Numerically stable closed forms shared by the device models (elementwise, any shape/device/dtype).

The linear-step family (constant step, linear step, soft bounds) has an *affine* mean response per pulse,
``w ← w + f(w)`` with ``f(w) = a + s·w``; its mean and variance after ``n`` pulses are geometric sums, written
here with ``expm1``/``log1p`` so that they stay accurate in float32 when the slopes are tiny (``|s| ~ 1e-6``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from devices.fusion import Scalar, constants, expm1, fused
from devices.host import flat_nonzero, host_reads_free

__all__ = ["sum_exp", "power_sum", "order_variance", "linear_moments"]


def sum_exp(delta: Tensor, n: Tensor) -> Tensor:
    """``Σ_{i=0}^{n-1} exp(i·delta)`` for ``delta <= 0`` (any real ``n >= 0``); ``n`` when ``delta == 0``."""
    zero = delta == 0
    d = torch.where(zero, torch.full_like(delta, -1.0), delta)
    return torch.where(zero, n, expm1(n * d) / expm1(d))


def power_sum(log_a: Tensor, log_b: Tensor, n: Tensor) -> Tensor:
    """``S = Σ_{k=0}^{n-1} a^(n-1-k)·b^k`` for ``a, b > 0`` given as logs (symmetric in a, b); 0 when n = 0."""
    hi = torch.maximum(log_a, log_b)
    lo = torch.minimum(log_a, log_b)
    return torch.exp((n - 1).clamp_min(0.0) * hi) * sum_exp(lo - hi, n)


def order_variance(
    n: Tensor, p: Tensor, q: Tensor, log_r: Tensor, lam: Tensor, c: Tensor, diff0: Tensor, diff_slope: Tensor
) -> Tensor:
    """Variance from the random order of ``n·p`` up and ``n·q`` down pulses on an affine-step device.

    With the order a uniformly random permutation of the fixed counts, ``ξ_k = 1[pulse k is up] − p`` has
    ``Var ξ_k = pq`` and ``Cov(ξ_i, ξ_j) = −pq/(n−1)``. Linearized around the mean path ``m_k``, the state deviates
    by ``δ_n = Σ_k ξ_k·h_k`` with ``h_k = Δ(m_k)·r^(n−1−k)`` and ``Δ(w) = f_up(w) − f_down(w) = diff0 + diff_slope·w``
    (difference of the signed one-pulse steps). Hence ``Var δ_n = pq·n/(n−1)·Σ_k (h_k − h̄)²``; with
    ``m_k = w_s + (w0 − w_s)r^k`` only the part ``A = Δ(w_s)`` (``w_s = c/λ`` the mixed fixed point) survives:
    ``Var = pq·n²/(n−1)·A²·Var_J(r^J)``, ``J`` uniform on ``0..n−1``. Zero for constant steps (``r = 1``),
    for one sign (``pq = 0``) and for ``n <= 1``. All arguments ``[*shape]``.

    ``Var_J(r^J) = r^(n−1)·Var(e^{−μJ'})`` with ``μ = −log r`` and ``J' = J − (n−1)/2`` symmetric; for
    ``μ(n−1) < 1`` the series ``μ²m₂ + μ⁴(7m₄/12 − m₂²/4)`` (``m₂ = (n²−1)/12``, ``m₄ = (n²−1)(3n²−7)/240``, relative
    error < 1e-3) avoids the cancellation of the direct formula ``E[r^{2J}] − E[r^J]²``.

    Eagerly on the CPU (where reading values is free; never while compiling), when at most half of many devices
    (:data:`_SUBSET_MIN`) have ``n > 1`` and pulses of both signs, only those are computed and the others set to
    exactly 0, as the formula gives them: the same numbers element by element, its ~70 operations on fewer
    elements (after the first few hundred steps of training most devices get pulses of one sign per update); with
    no such device nothing is computed.
    """
    mixed = (n > 1) & (p * q > 0)
    args = (n, p, q, log_r, lam, c, diff0, diff_slope)
    index = subset_positions(mixed, args)
    if index is None:
        return _order_variance(*args, mixed=mixed)
    out = torch.zeros(n.shape, dtype=n.dtype, device=n.device)        # contiguous: its flat view is logical order
    if index.numel() == 0:
        return out
    out.view(-1).index_copy_(0, index, _order_variance(*[t.reshape(-1).index_select(0, index) for t in args],
                                                       mixed=None))
    return out


_SUBSET_MIN = 8192
"""Fewest devices for which :func:`order_variance` computes the mixed ones only (the gathers cost more on fewer:
measured on an AVX2 core, 2,560 devices with 1 % mixed took 0.34 ms gathered against 0.30 ms in full; 30,000 with
4 %, 0.47 against 1.13 ms; 110,000 with 20 %, 1.5 against 4.2 ms)."""


def subset_positions(mask: Tensor, tensors: Sequence[Tensor]) -> Tensor | None:
    """The flat positions of ``mask``'s True elements where an element-wise formula over ``tensors`` (each of
    ``mask``'s shape and of one dtype) pays to compute on those only — none of them, or at most half of at least
    :data:`_SUBSET_MIN` — eagerly on the CPU (reading values is free; never while compiling); else ``None``:
    compute on every element (gathering would cost more than it saves)."""
    if torch.compiler.is_compiling() or not host_reads_free(mask) or any(
            t.shape != mask.shape or t.dtype != tensors[0].dtype for t in tensors):
        return None
    index = flat_nonzero(mask)
    if index.numel() > 0 and (mask.numel() < _SUBSET_MIN or 2 * index.numel() > mask.numel()):
        return None
    return index


def _order_variance(n: Tensor, p: Tensor, q: Tensor, log_r: Tensor, lam: Tensor, c: Tensor, diff0: Tensor,
                    diff_slope: Tensor, *, mixed: Tensor | None) -> Tensor:
    """The formula of :func:`order_variance` on every element, 0 where ``mixed`` is False (``None``: every element
    is a mixed device with ``n > 1``)."""
    lam0 = lam == 0
    ws_term = torch.where(lam0, torch.zeros_like(c), diff_slope * c / torch.where(lam0, torch.ones_like(lam), lam))
    a = diff0 + ws_term                                   # Δ at the mixed fixed point
    mu = (-log_r).clamp_min(0.0)
    ok = n > 1
    n_s = torch.where(ok, n, torch.full_like(n, 2.0))
    x = mu * (n_s - 1)
    # series (small x)
    n2 = n_s.square()
    m2 = (n2 - 1) / 12
    m4 = (n2 - 1) * (3 * n2 - 7) / 240
    mu2 = mu.square()
    var_series = torch.exp(-x) * (mu2 * m2 + mu2.square() * (7 * m4 / 12 - m2.square() / 4))
    # direct (x >= 1): E[r^J] = (1 − r^n)/(n(1 − r)), E[r^{2J}] = (1 − r^{2n})/(n(1 − r²))
    mus = torch.where(mu > 0, mu, torch.ones_like(mu))
    e1 = expm1(-n_s * mus) / (n_s * expm1(-mus))
    e2 = expm1(-2 * n_s * mus) / (n_s * expm1(-2 * mus))
    var_direct = (e2 - e1.square()).clamp_min(0.0)
    var_j = torch.where(x < 1.0, var_series, var_direct)
    out = p * q * n2 / (n_s - 1) * a.square() * var_j
    return out if mixed is None else torch.where(mixed, out, torch.zeros_like(out))


def linear_moments(
    w: Tensor,
    n_up: Tensor,
    n_down: Tensor,
    dw_up: Tensor,
    dw_down: Tensor,
    slope_up: Tensor,
    slope_down: Tensor,
    dw_min_std: float,
    mult_noise: bool,
) -> tuple[Tensor, Tensor]:
    """Mean and variance after ``n_up`` up and ``n_down`` down pulses of an affine-step device (aihwkit LinearStep).

    One up pulse:   ``w += (dw_up + slope_up·w)·(1 + σξ)``     (``slope_up <= 0``);
    one down pulse: ``w −= (dw_down + slope_down·w)·(1 + σξ)`` (``slope_down >= 0``);
    with additive noise (``mult_noise=False``) the noise term is ``dw·σξ`` instead of ``(dw + slope·w)·σξ``.

    Pulses of one sign: the mean ``m_k`` and variance ``V_k`` obey exact linear recursions
    (``m' = m + f(m)``, ``V' = (1+s)²V + σ²(f(m)² + s²V)`` for multiplicative noise), solved in closed form.
    Mixed counts (``p = n_up/n`` up, ``q = n_down/n`` down, ``n = n_up + n_down``): the pulses are treated as
    evenly interleaved — the per-pulse maps are replaced by their p/q mixture, with the homogeneous factors mixed
    geometrically (``r = (1+slope_up)^p·(1−slope_down)^q``), which makes the dependence on the initial state exact
    for any order; the order-dependent remainder is O(slope·dw) per pulse. Randomness of the order itself is not
    added (it is zero for constant steps, where the sum does not depend on the order).

    All tensors ``[*shape]``; returns ``(mean, var)`` of the unclipped state.

    Runs as one fused kernel when :mod:`devices.fusion` compiles (see there); the formulas are those of
    :func:`_linear_moments`.
    """
    (s2,) = constants(w, dw_min_std ** 2)
    return _linear_moments(w, n_up, n_down, dw_up, dw_down, slope_up, slope_down, s2, dw_min_std != 0, mult_noise)


@fused
def _linear_moments(w: Tensor, n_up: Tensor, n_down: Tensor, dw_up: Tensor, dw_down: Tensor, slope_up: Tensor,
                    slope_down: Tensor, s2: Scalar, noisy: bool, mult_noise: bool) -> tuple[Tensor, Tensor]:
    """The body of :func:`linear_moments`, with ``s2 = dw_min_std²`` (see :func:`devices.fusion.constants`) and
    ``noisy = s2 > 0``."""
    n = n_up + n_down
    has = n > 0
    n_safe = torch.where(has, n, torch.ones_like(n))
    p = torch.where(has, n_up / n_safe, torch.zeros_like(n))
    q = torch.where(has, n_down / n_safe, torch.zeros_like(n))
    # homogeneous factor r = (1+slope_up)^p (1-slope_down)^q; slopes with |s| >= 1 are clamped (a pulse that
    # would jump across the fixed point: the per-pulse model then lands on the bound in one pulse)
    lim = 1.0 - 1e-6
    su = slope_up.clamp(-lim, lim)
    sd = slope_down.clamp(-lim, lim)
    log_r = p * torch.log1p(su) + q * torch.log1p(-sd)
    lam = -expm1(log_r)                                 # 1 - r
    c = p * dw_up - q * dw_down                          # mean drift at w = 0 per pulse
    e = c - lam * w                                      # mean drift at w0 per pulse (mixed)
    geo = sum_exp(log_r, n)                              # Σ_{k<n} r^k
    mean = w + e * geo

    var = order_variance(n, p, q, log_r, lam, c, dw_up + dw_down, su + sd)
    if not noisy:
        return mean, var
    if not mult_noise:
        force = s2 * (p * dw_up.square() + q * dw_down.square())
        var = var + force * power_sum(2 * log_r, torch.zeros_like(log_r), n)
        return mean, var
    # multiplicative noise: forcing σ²[p f_u(m_k)² + q f_d(m_k)²], f(m_k) = A + B r^k
    lam0 = lam == 0
    lam_safe = torch.where(lam0, torch.ones_like(lam), lam)
    b_u = torch.where(lam0, torch.zeros_like(lam), -su * e / lam_safe)
    b_d = torch.where(lam0, torch.zeros_like(lam), -sd * e / lam_safe)
    a_u = dw_up + su * w - b_u
    a_d = dw_down + sd * w - b_d
    c0 = p * a_u.square() + q * a_d.square()
    c1 = 2 * (p * a_u * b_u + q * a_d * b_d)
    c2 = p * b_u.square() + q * b_d.square()
    # noise-on-noise: the homogeneous variance factor per pulse is (1+s)² + σ² s², mixed geometrically
    eta = p * torch.log1p(s2 * su.square() / (1 + su).square()) + q * torch.log1p(s2 * sd.square() / (1 - sd).square())
    log_rho = 2 * log_r + eta
    def term(coef: Tensor, log_x: Tensor) -> Tensor:    # coef·S, 0 where coef == 0 (even if S overflows)
        return torch.where(coef == 0, torch.zeros_like(coef), coef * power_sum(log_rho, log_x, n))

    inj = term(c0, torch.zeros_like(log_r)) + term(c1, log_r) + term(c2, 2 * log_r)
    # inf − inf only when ρ^n overflows: the variance is then astronomically large (steps ~ the range, huge noise)
    inj = torch.nan_to_num(inj, nan=float("inf"))
    return mean, var + s2 * inj.clamp_min(0.0)
