"""Count-based response of devices whose step depends nonlinearly on the state (ExpStep, PowStep).

Each such model describes one pulse direction at a time through four elementwise functions of a
"direction bundle" ``dp`` (the per-device tensors of the chosen direction, selected per element):

* ``step(w, dp)``: exact mean magnitude of one pulse at state ``w`` (aihwkit's update-once rule without noise);
* ``flow(w0, n, dp)``: state after ``n`` pulses (real ``n >= 0``) from the closed-form solution of the ODE
  ``dw/dt = ±step(w)``, with the time rescaled per device so that ``n = 1`` reproduces the exact one-pulse
  step (``flow(w0, 1) = w0 ± step(w0)``), clipped into the bounds;
* ``field(w, dp)``: a quantity proportional to the ODE's right-hand side (only ratios are used);
* ``noise_std(w, step)``: std of one pulse's cycle-to-cycle noise (default ``dw_min_std·step``).

Moments after ``n`` pulses of one sign (linear-noise approximation, exact for ``n <= 2``):
``mean = flow(w0, n)`` — or, when the flow reaches the bound, the state before the pulse that crosses it plus
that pulse's step plus the step at the bound for each remaining pulse: the per-pulse rule clips *after* every
pulse, so a train that reaches the bound ends past it, its noise centred there, and with non-negative steps
clipping once at the end is the same (exact for one pulse, and for any count when the step is constant; the clip
after every pulse of noisy steps is :func:`devices.base.clipped_walk_`'s, applied by ``apply_pulses``) — and
``var = Σ_k s_k²·(F(w_n)/F(w_{k+1}))²`` — the noise ``s_k`` of pulse ``k`` carried to the end by the flow's
sensitivity ``∂w_n/∂w_{k+1} = F(w_n)/F(w_{k+1})`` (exact for a 1-D autonomous flow) — with the first and last
terms exact and the interior by Simpson's rule (states at ``k = 0, (n−1)/2, n−1`` from the flow).
Mixed counts: symmetric (Strang) splitting ``up(n_up/2) → down(n_down) → up(n_up/2)``, the variance carried
through each stage by the same sensitivity, the state clipped between stages; second-order accurate in the step
size (pulses evenly interleaved).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from devices._closed_forms import subset_positions

__all__ = ["flow_moments", "Bundle"]

Bundle = dict[str, Tensor]


def _ratio(num: Tensor, den: Tensor) -> Tensor:
    """``num/den``, 1 where ``den == 0`` (a stalled flow: locally flat map, sensitivity 1)."""
    zero = den == 0
    return torch.where(zero, torch.ones_like(num), num / torch.where(zero, torch.ones_like(den), den))


def _stage(
    m: Tensor, v: Tensor, n: Tensor, dp: Bundle,
    flow: Callable[[Tensor, Tensor, Bundle], Tensor],
    step: Callable[[Tensor, Bundle], Tensor],
    field: Callable[[Tensor, Bundle], Tensor],
    noise_std: Callable[[Tensor, Tensor], Tensor],
    to_bound: Callable[[Tensor, Bundle], Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """One stage of ``n`` pulses of one direction: propagate mean ``m`` and variance ``v``.

    The injected variance ``Σ_{k<n} q_k``, ``q_k = (s(w_k)·F(w_n)/F(w_{k+1}))²``, is summed exactly for ``n <= 2``
    and as ``q_0 + q_{n−1} + (n−2)·(q_0 + 4q_mid + q_{n−1})/6`` (Simpson average of the interior) otherwise.
    """
    one = torch.ones_like(n)
    w_end = flow(m, n, dp)
    f_end = field(w_end, dp)
    sens_end = _ratio(f_end, field(m, dp))            # ∂w_end/∂m

    def q(k: Tensor, w_k: Tensor | None = None, w_k1: Tensor | None = None) -> Tensor:
        """Squared noise of pulse ``k`` carried to the end (``w_k``, ``w_k1``: the states before and after it)."""
        w_k = flow(m, k, dp) if w_k is None else w_k
        w_k1 = flow(m, torch.minimum(k + 1, n), dp) if w_k1 is None else w_k1
        return (noise_std(w_k, step(w_k, dp)) * _ratio(f_end, field(w_k1, dp))).square()

    last = (n - 1).clamp_min(0.0)
    w_last = flow(m, last, dp)                        # the state before the last pulse (after it: w_end)
    q_first, q_mid, q_last = q(torch.zeros_like(n)), q(0.5 * last), q(last, w_last, w_end)
    injected = torch.where(
        n <= 1, n * q_first, q_first + q_last + (n - 2).clamp_min(0.0) * (q_first + 4 * q_mid + q_last) / 6
    )
    # The flow stops at the bound; the per-pulse rule clips *after* each pulse, so a train that reaches the bound
    # ends past it (its noise centred there; apply_pulses then clips it as after every pulse, clipped_walk_):
    # the state before the pulse that crosses the bound (after k = floor(to_bound) pulses; without to_bound, the
    # last) plus its step, plus the step at the bound for each of the n − 1 − k pulses after it — exact for one
    # pulse. A stage without pulses passes the state (which may lie past a bound after an earlier stage) on.
    moved = n > 0
    hit = moved & torch.where(dp["sign"] > 0, w_end >= dp["w_max"], w_end <= dp["w_min"])
    var = torch.where(moved, v * sens_end.square() + injected, v)
    if to_bound is None:
        w_past = w_last + dp["sign"] * (step(w_last, dp) * torch.minimum(n, one))
        return torch.where(hit, w_past, torch.where(moved, w_end, m)), var
    index = subset_positions(hit, (m, n, last, *dp.values()))
    if index is None:
        return torch.where(hit, _past_bound(m, n, last, dp, flow, step, to_bound), torch.where(moved, w_end, m)), var
    # eagerly on the CPU with few devices at the bound (training: most trains stop short of it), the bound's
    # ~100 operations on those only: the same numbers element by element (as devices._closed_forms.order_variance)
    mean = torch.where(moved, w_end, m).contiguous()
    if index.numel() > 0:
        m_s, n_s, last_s = (t.reshape(-1).index_select(0, index) for t in (m, n, last))
        sub = {key: t.reshape(-1).index_select(0, index) for key, t in dp.items()}
        mean.view(-1).index_copy_(0, index, _past_bound(m_s, n_s, last_s, sub, flow, step, to_bound))
    return mean, var


def _past_bound(m: Tensor, n: Tensor, last: Tensor, dp: Bundle, flow: Callable[[Tensor, Tensor, Bundle], Tensor],
                step: Callable[[Tensor, Bundle], Tensor], to_bound: Callable[[Tensor, Bundle], Tensor]) -> Tensor:
    """The mean of :func:`_stage` for a train of ``n`` pulses from ``m`` that reaches the bound ahead: the state
    before the crossing pulse (after ``k = floor(to_bound)`` pulses, at most ``last = n − 1``) plus that pulse's step,
    plus the step at the bound for each of the ``last − k`` pulses after it."""
    k = torch.minimum(to_bound(m, dp).floor(), last).clamp_min(0.0)
    w_pre = flow(m, k, dp)
    bound = torch.where(dp["sign"] > 0, dp["w_max"], dp["w_min"])
    return w_pre + dp["sign"] * (step(w_pre, dp) * torch.minimum(n, torch.ones_like(n)) + (last - k) * step(bound, dp))


SUBSTEPS = 2
"""Strang sub-steps for mixed counts:
``up(n_up/2K) → [down(n_down/K) → up(n_up/K)]×(K−1) → down(n_down/K) → up(n_up/2K)``."""


def flow_moments(
    w: Tensor, n_up: Tensor, n_down: Tensor,
    up: Bundle, down: Bundle,
    flow: Callable[[Tensor, Tensor, Bundle], Tensor],
    step: Callable[[Tensor, Bundle], Tensor],
    field: Callable[[Tensor, Bundle], Tensor],
    noise_std: Callable[[Tensor, Tensor], Tensor],
    with_noise: bool = True,
    to_bound: Callable[[Tensor, Bundle], Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """Mean and variance after ``n_up`` up / ``n_down`` down pulses (see module docstring); all ``[*shape]``.

    ``up``/``down`` are direction bundles (dicts of tensors broadcastable to ``w``); ``flow`` etc. must accept a
    bundle whose tensors were selected elementwise from both. Mixed counts also get the variance of the
    random pulse order (see :func:`devices._closed_forms.order_variance`), here from the end points of the
    path: ``pq·n²(n+1)/(12(n−1)²)·(h_last − h_first)²`` with ``h = Δ·sensitivity`` interpolated linearly in ``k``.
    ``with_noise=False`` drops the cycle-to-cycle part (order variance kept). ``to_bound(w0, dp)``: the (real) number
    of pulses the flow from ``w0`` takes to reach the bound ahead (``inf`` if never); needed where the step at a
    bound is not 0 (hard bounds), so that the pulses after the flow reaches the bound keep the state there;
    ``None``: as if the bound were reached by the last pulse (right when the step vanishes at the bound).
    """
    only_down = n_up == 0
    mixed = (n_up > 0) & (n_down > 0)

    def pick(mask: Tensor, a: Bundle, b: Bundle) -> Bundle:
        return {k: torch.where(mask, a[k], b[k]) for k in a}

    if not with_noise:
        def noise_std(w_: Tensor, s_: Tensor) -> Tensor:  # noqa: F811 - deliberate override
            return torch.zeros_like(w_)

    zero = torch.zeros_like(w)
    k = float(SUBSTEPS)
    # stage 1: single-sign devices do all their pulses here; mixed ones n_up/(2K)
    dp1 = pick(only_down, down, up)
    n1 = torch.where(mixed, n_up / (2 * k), torch.where(only_down, n_down, n_up))
    m, v = _stage(w, zero, n1, dp1, flow, step, field, noise_std, to_bound)
    sens = _ratio(field(m, dp1), field(w, dp1))
    n_d = torch.where(mixed, n_down / k, zero)
    w_min, w_max = up["w_min"], up["w_max"]

    def clip_mixed(m_: Tensor) -> Tensor:
        """A mixed device's state between stages, clipped into its bounds (the pulses of opposite sign that come
        next start from the bound); the last stage's end stays unclipped, like a single-sign device's."""
        return torch.where(mixed, torch.minimum(torch.maximum(m_, w_min), w_max), m_)

    for i in range(SUBSTEPS):   # fixed small number of splitting stages, not a loop over pulses
        m0 = m = clip_mixed(m)
        m, v = _stage(m, v, n_d, down, flow, step, field, noise_std, to_bound)
        sens = sens * _ratio(field(m, down), field(m0, down))
        n_u = torch.where(mixed, n_up / (k if i < SUBSTEPS - 1 else 2 * k), zero)
        m0 = m = clip_mixed(m)
        m, v = _stage(m, v, n_u, up, flow, step, field, noise_std, to_bound)
        sens = sens * _ratio(field(m, up), field(m0, up))
    # variance of the random order of mixed pulses
    n = n_up + n_down
    n_s = torch.where(mixed, n, torch.full_like(n, 2.0))
    pq = torch.where(mixed, n_up * n_down / n_s.square(), zero)
    delta0 = step(w, up) + step(w, down)
    delta1 = step(m, up) + step(m, down)
    h_first = delta0 * sens.clamp_min(0.0).pow((n_s - 1) / n_s)
    v_order = torch.where(mixed, pq * n_s.square() * (n_s + 1) / (12 * (n_s - 1).square())
                          * (delta1 - h_first).square(), zero)     # 0, not 0·inf, where m lies far past a bound
    return m, v + v_order
