"""``devices._closed_forms.order_variance``: the eager CPU shortcut (only the devices with pulses of both signs) gives
the formula's numbers bit for bit, and the sync-free path (GPUs) computes every device."""
from __future__ import annotations

import pytest
import torch

from devices import no_host_reads
from devices._closed_forms import _SUBSET_MIN, _order_variance, order_variance


def _inputs(size: int, mixed_frac: float, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Per-device arguments of a soft-bounds update: ``n`` pulses, of which a fraction ``p`` up; ``mixed_frac`` of
    the devices get both signs (``n >= 2``), the others one sign or a single pulse."""
    g = torch.Generator().manual_seed(seed)
    mixed = torch.rand(size, generator=g) < mixed_frac
    n = torch.randint(1, 6, (size,), generator=g).float()
    n = torch.where(mixed, n.clamp_min(2.0), n)
    n_up = torch.where(mixed, torch.floor(torch.rand(size, generator=g) * (n - 1)) + 1,
                       torch.where(torch.rand(size, generator=g) < 0.5, n, torch.zeros(size)))
    p, q = n_up / n, (n - n_up) / n
    slope_up = -torch.rand(size, generator=g) * 1e-2
    slope_down = torch.rand(size, generator=g) * 1e-2
    log_r = p * torch.log1p(slope_up) + q * torch.log1p(-slope_down)
    lam = -torch.expm1(log_r)
    dw_up, dw_down = 1e-3 * (1 + 0.3 * torch.rand(size, generator=g)), 1e-3 * (1 + 0.3 * torch.rand(size, generator=g))
    c = p * dw_up - q * dw_down
    return n, p, q, log_r, lam, c, dw_up + dw_down, slope_up + slope_down


@pytest.mark.parametrize("size", [100, _SUBSET_MIN + 37])
@pytest.mark.parametrize("mixed_frac", [0.0, 0.01, 0.3, 0.9])
def test_mixed_devices_only_is_the_formula_bit_for_bit(size: int, mixed_frac: float) -> None:
    args = _inputs(size, mixed_frac)
    n, p, q = args[:3]
    mixed = (n > 1) & (p * q > 0)
    want = _order_variance(*args, mixed=mixed)                     # every device, 0 where the order cannot matter
    got = order_variance(*args)
    assert torch.equal(got, want)
    assert bool((want[~mixed] == 0).all()) and (mixed_frac == 0 or bool((want[mixed] > 0).all()))
    with no_host_reads():                                     # the GPU path: every device, no host read
        got_sync_free = order_variance(*args)
    assert torch.equal(got_sync_free, want)


def test_shapes_and_views_keep_their_elements() -> None:
    args = _inputs(4 * _SUBSET_MIN, 0.2, seed=1)
    want = order_variance(*args)
    # a [rows, cols] layout and its transposed (non-contiguous) view: the same numbers at the same devices
    as_2d = [a.view(64, -1) for a in args]
    assert torch.equal(order_variance(*as_2d), want.view(64, -1))
    transposed = [a.t() for a in as_2d]
    assert torch.equal(order_variance(*transposed), want.view(64, -1).t())
