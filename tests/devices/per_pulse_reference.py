"""Slow per-pulse reference of aihwkit's update-once rules, written independently of devices/ (test helper).

Each function applies ONE pulse of sign ``+1`` (up) or ``-1`` (down) per device (``sign: [*shape]``, 0 = no
pulse) following aihwkit 1.1's C++ ``update_once`` code, including the clip after every pulse. The loop over
pulses lives in :func:`apply_sequence`; that is fine in a test.
"""

from __future__ import annotations

import torch
from torch import Tensor

import devices as dv


def _clip(w: Tensor, p: dv.DeviceParams) -> Tensor:
    return torch.minimum(torch.maximum(w, p.w_min), p.w_max)


def one_pulse(dev: dv.PulsedDevice, w: Tensor, sign: Tensor, p: dv.DeviceParams, g: torch.Generator) -> Tensor:
    """Apply one pulse of ``sign`` (+1 up, -1 down, 0 none) to every device, aihwkit's update-once rule."""
    xi = torch.randn(w.shape, generator=g, dtype=w.dtype)
    noise = 1.0 + dev.dw_min_std * xi
    up = sign > 0
    down = sign < 0
    if isinstance(dev, dv.ConstantStepDevice):
        dw = torch.where(up, p.dw_up * noise, torch.where(down, -p.dw_down * noise, torch.zeros_like(w)))
        new = w + dw
    elif isinstance(dev, (dv.LinearStepDevice, dv.SoftBoundsDevice)):
        su, sd = p.extra["slope_up"], p.extra["slope_down"]
        if dev.mult_noise:
            d_up = (su * w + p.dw_up) * noise
            d_down = (sd * w + p.dw_down) * noise
        else:
            d_up = su * w + p.dw_up * noise
            d_down = sd * w + p.dw_down * noise
        new = torch.where(up, w + d_up, torch.where(down, w - d_down, w))
    elif isinstance(dev, dv.PowStepDevice):
        rng = p.w_max - p.w_min
        om_up = (p.w_max - w) / rng
        om_down = (w - p.w_min) / rng
        d_up = p.dw_up * om_up.pow(p.extra["gamma_up"]) * noise
        d_down = p.dw_down * om_down.pow(p.extra["gamma_down"]) * noise
        new = torch.where(up, w + d_up, torch.where(down, w - d_down, w))
    elif isinstance(dev, dv.ExpStepDevice):
        z = 2.0 * w / (p.w_max - p.w_min) * dev.a + dev.b
        y_up = (1.0 - dev.A_up * torch.exp(dev.gamma_up * z)).clamp_min(0.0)
        y_down = (1.0 - dev.A_down * torch.exp(-dev.gamma_down * z)).clamp_min(0.0)
        if dev.has_complex_noise:
            d_up = y_up * p.dw_up
            d_down = -y_down * p.dw_down
            dw = torch.where(up, d_up, d_down)
            std = dev.dw_min_std * (dw.abs() + dev.dw_min_std_add + dev.dw_min_std_slope * w.abs())
            new = torch.where(up | down, w + dw + std * xi, w)
        else:
            new = torch.where(up, w + y_up * noise * p.dw_up, torch.where(down, w - y_down * noise * p.dw_down, w))
    else:  # pragma: no cover
        raise TypeError(type(dev))
    return torch.where(sign != 0, _clip(new, p), w)


def apply_sequence(
    dev: dv.PulsedDevice, w: Tensor, n_up: int, n_down: int, p: dv.DeviceParams, g: torch.Generator,
    order: str = "random",
) -> Tensor:
    """Apply ``n_up`` up and ``n_down`` down pulses one at a time to every device.

    ``order``: ``"random"`` (an independent random permutation per device), ``"up_first"``.
    """
    n = n_up + n_down
    base = torch.cat([torch.ones(n_up), -torch.ones(n_down)])
    if order == "random":
        keys = torch.rand((*w.shape, n), generator=g)
        perm = keys.argsort(dim=-1)
        seq = base[perm]                                   # [*shape, n]
    else:
        seq = base.expand(*w.shape, n)
    for k in range(n):
        w = one_pulse(dev, w, seq[..., k], p, g)
    return w
