"""Agreement with aihwkit 1.1's C++ devices (CPU tiles).

Pulse control: with ``update_bl_management`` and ``update_management`` off, ``desired_bl = n`` and a learning
rate far above ``dw_min``, every pulse probability saturates at 1, so one ``tile.update(x=1, d=∓1)`` gives every
device exactly ``n`` coincidences (``d = −1``: up pulses). This is checked directly on a noise-free
ConstantStep tile. The tile's own sampled hidden parameters (``dwmin_up``, ``max_bound``, ``slope_up``, …) are
read back into a :class:`DeviceParams`, so our closed forms and aihwkit's per-pulse C++ update see the same
devices: per-device residuals ``w_aihwkit − mean_ours`` must have mean 0 (5 SE) and mean square equal to our
predicted variance (tolerance stated per model). aihwkit seeds its C++ generator from the clock, so every run draws
anew: 5 SE keeps the chance that one of the 36 cases fails by chance below ~2e-5 per run (4 SE failed once, at
4.2, in a CI run; 40 repeated draws of each case gave residual means with a spread of 0.7–1.1 SE).

aihwkit's CPU RNG draws its Gaussians from a fixed list of 32,768 numbers (``src/rpucuda/rng.h``,
``FIXED_LIST_SIZE``), whose sample mean ``ε`` (std ``1/√32768``) is shared by every pulse of the tile: the
residuals then carry a common offset ``≈ ε·dw_min_std·|mean change|``, added (4σ) to the mean tolerance.
"""

from __future__ import annotations

import math

import pytest
import torch

import devices as dv
from tests.devices.per_pulse_reference import apply_sequence
from tests.devices.shares import share_difference_se

aihwkit = pytest.importorskip("aihwkit")
from aihwkit.simulator.configs import SingleRPUConfig  # noqa: E402
from aihwkit.simulator.tiles import AnalogTile  # noqa: E402

ROWS, COLS = 100, 100      # 10,000 devices


def _tile(device: dv.PulsedDevice, bl: int, rows: int = ROWS, cols: int = COLS) -> AnalogTile:
    cfg = SingleRPUConfig(device=dv.to_aihwkit(device))
    cfg.update.desired_bl = bl
    cfg.update.update_bl_management = False
    cfg.update.update_management = False
    tile = AnalogTile(rows, cols, cfg)
    tile.set_learning_rate(1.0)          # >> dw_min·bl: pulse probabilities saturate at 1
    return tile


def _params(device: dv.PulsedDevice, tile: AnalogTile) -> dv.DeviceParams:
    hp = {k: v.double() for k, v in tile.get_hidden_parameters().items()}
    extra = {k: hp[k] for k in ("slope_up", "slope_down", "gamma_up", "gamma_down") if k in hp}
    return dv.DeviceParams(dw_up=hp["dwmin_up"], dw_down=hp["dwmin_down"], w_min=hp["min_bound"],
                           w_max=hp["max_bound"], extra=extra)


def _pulse(tile: AnalogTile, up: bool) -> None:
    d = -torch.ones(1, ROWS) if up else torch.ones(1, ROWS)
    tile.update(torch.ones(1, COLS), d)


def test_update_gives_exactly_bl_pulses():
    dev = dv.ConstantStepDevice(dw_min=0.001, dw_min_dtod=0.0, dw_min_std=0.0, up_down_dtod=0.0, w_min_dtod=0.0,
                                w_max_dtod=0.0)
    tile = _tile(dev, bl=7)
    tile.set_weights(torch.zeros(ROWS, COLS))
    _pulse(tile, up=True)
    w = tile.get_weights()[0].double()
    assert torch.allclose(w, torch.full_like(w, 0.007), atol=1e-7)  # float32 tile
    _pulse(tile, up=False)
    _pulse(tile, up=False)
    assert torch.allclose(tile.get_weights()[0].double(), torch.full_like(w, -0.007), atol=1e-7)  # float32 tile


CASES = {
    "constant": (dv.ConstantStepDevice(dw_min=0.002, up_down=0.1, w_max_dtod=0.05, w_min_dtod=0.05), 0.08),
    "softbounds": (dv.SoftBoundsDevice(dw_min=0.01, up_down=-0.2, w_max_dtod=0.05, w_min_dtod=0.05), 0.08),
    "softbounds_add": (dv.SoftBoundsDevice(dw_min=0.01, mult_noise=False, w_max_dtod=0.05, w_min_dtod=0.05), 0.08),
    "linear": (dv.LinearStepDevice(dw_min=0.005, gamma_up=0.5, gamma_down=0.8, w_max_dtod=0.05, w_min_dtod=0.05),
               0.08),
    "pow": (dv.PowStepDevice(dw_min=0.01, pow_gamma=1.8, w_max_dtod=0.05, w_min_dtod=0.05), 0.15),
    "exp": (dv.ExpStepDevice(dw_min=0.005, w_max_dtod=0.05, w_min_dtod=0.05), 0.15),
    # model options left at their defaults above: additive cycle-to-cycle noise of the linear step, the exp step's
    # extra noise (add + slope·|w|: about 30 % of the variance here; the predicted variance without it is 0.68-0.71
    # of this case's, beyond the 0.15 bound), the power step's asymmetry (30 %: a mean change far beyond the bound)
    "linear_add": (dv.LinearStepDevice(dw_min=0.005, gamma_up=0.5, gamma_down=0.8, gamma_up_dtod=0.1,
                                       mult_noise=False, w_max_dtod=0.05, w_min_dtod=0.05), 0.08),
    "exp_std_add": (dv.ExpStepDevice(dw_min=0.005, dw_min_std=0.1, dw_min_std_add=0.0005, dw_min_std_slope=0.005,
                                     w_max_dtod=0.05, w_min_dtod=0.05), 0.15),
    "pow_up_down": (dv.PowStepDevice(dw_min=0.01, pow_gamma=1.8, pow_up_down=0.3, pow_up_down_dtod=0.05,
                                     w_max_dtod=0.05, w_min_dtod=0.05), 0.15),
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("n,up", [(1, True), (5, False), (31, True), (31, False)])
def test_pulse_response_matches_aihwkit(name, n, up):
    dev, var_tol = CASES[name]
    tile = _tile(dev, bl=n)
    p = _params(dev, tile)
    g = torch.Generator().manual_seed(n)
    w0 = dev.clip(0.4 * torch.rand(ROWS, COLS, generator=g, dtype=torch.float64) - 0.2, p)
    tile.set_weights(w0.float())
    w0 = tile.get_weights()[0].double()             # what aihwkit stored (float32)
    _pulse(tile, up)
    w_aih = tile.get_weights()[0].double()
    cnt = torch.full_like(w0, float(n))
    zero = torch.zeros_like(w0)
    mean, var = dev.pulse_moments(w0, cnt if up else zero, zero if up else cnt, p)
    r = w_aih - mean
    se = r.std().item() / math.sqrt(r.numel())
    change = (mean - w0).abs().mean().item()
    list_bias = dev.dw_min_std * change / math.sqrt(32768)
    tol = 5 * math.hypot(se, list_bias) + (0.0 if var_tol < 0.1 else 0.05 * change)
    assert abs(r.mean().item()) <= tol, (r.mean().item(), tol)
    ratio = r.square().mean().item() / var.mean().item()
    assert abs(ratio - 1) <= var_tol, ratio


SAMPLING = [
    dv.ConstantStepDevice(dw_min=0.01, dw_min_dtod=0.2, up_down=0.3, up_down_dtod=0.05, w_max=0.8, w_max_dtod=0.1,
                          w_min=-0.5, w_min_dtod=0.2),
    dv.ConstantStepDevice(dw_min=0.01, up_down=-0.2, dw_min_dtod=0.5, dw_min_dtod_log_normal=True),
    dv.SoftBoundsDevice(),
    dv.LinearStepDevice(gamma_up=0.4, gamma_down=0.7, gamma_up_dtod=0.1, gamma_down_dtod=0.05),
    dv.LinearStepDevice(gamma_up=0.4, gamma_down=0.7, mean_bound_reference=False),
    dv.PowStepDevice(pow_gamma=2.0, pow_gamma_dtod=0.1, pow_up_down=0.2, pow_up_down_dtod=0.05),
    # bounds spread so wide that a third of the devices draw w_max·(1 + 3ξ) below w_min·(1 + 0.1ξ'): aihwkit then
    # swaps the two before taking |.|, so w_min reaches -3 (mean ≈ -0.89) where without the swap it stays at
    # -0.2 ± 0.02; the other cases never draw a crossing
    dv.ConstantStepDevice(w_max=1.0, w_max_dtod=3.0, w_min=-0.2, w_min_dtod=0.1),
]


def _derived(dev: dv.PulsedDevice, p: dv.DeviceParams) -> dict[str, torch.Tensor]:
    """Core parameters plus the per-device γ behind the slopes (ratios of heavy-tailed slopes are compared via γ)."""
    out = {k: getattr(p, k) for k in ("dw_up", "dw_down", "w_min", "w_max")}
    if "slope_up" in p.extra:
        by_mean = isinstance(dev, dv.LinearStepDevice) and dev.mean_bound_reference
        ref_up = dev.w_max if by_mean else p.w_max
        ref_down = dev.w_min if by_mean else p.w_min
        out["gamma_up"] = -p.extra["slope_up"] * ref_up / p.dw_up
        out["gamma_down"] = -p.extra["slope_down"] * ref_down / p.dw_down
    for k in ("gamma_up", "gamma_down"):
        if k in p.extra:
            out[k] = p.extra[k]
    return out


def _std_of_std(x: torch.Tensor) -> float:
    """Standard error of the sample std of ``x``: ``std·sqrt((κ−1)/(4N))`` with ``κ`` its sample kurtosis."""
    x = x.double().flatten()
    c = x - x.mean()
    var = c.square().mean()
    kurt = (c.pow(4).mean() / var.square()).item() if var > 0 else 1.0
    return math.sqrt(var.item() * max(kurt - 1, 0.0) / (4 * x.numel()))


@pytest.mark.parametrize("dev", SAMPLING, ids=lambda d: type(d).__name__)
def test_sampled_parameter_statistics_match_aihwkit(dev):
    """Means and stds of the sampled device-to-device parameters, ours vs aihwkit's (whose CPU RNG is not seeded
    from Python, so the comparison is statistical): 90,000 devices, 5-sigma bounds (about 70 checks per suite run,
    each failing by chance with probability < 1e-6; a 2 % error in a std is caught)."""
    rows = cols = 300
    theirs_p = _params(dev, _tile(dev, bl=1, rows=rows, cols=cols))
    ours_p = dev.sample((rows, cols), torch.Generator().manual_seed(11), dtype=torch.float64)
    assert set(ours_p.extra) == set(theirs_p.extra)
    theirs, ours = _derived(dev, theirs_p), _derived(dev, ours_p)
    n = rows * cols
    for k, a in ours.items():
        b = theirs[k]
        sa, sb = a.std().item(), b.std().item()
        se = math.sqrt((sa**2 + sb**2) / n)
        assert abs(a.mean().item() - b.mean().item()) <= 5 * se + 1e-6 * abs(b.mean().item()), k
        tol = 5 * math.hypot(_std_of_std(a), _std_of_std(b)) + 1e-6 * abs(b.mean().item()) + 1e-12  # float32 tile
        assert abs(sa - sb) <= tol, (k, sa, sb, tol)


def test_soft_bounds_slopes_identity_in_aihwkit():
    """aihwkit's soft-bounds slopes are exactly −dw/bound per device, as ours."""
    dev = dv.SoftBoundsDevice()
    p = _params(dev, _tile(dev, bl=1))
    assert torch.allclose(p.extra["slope_up"], -p.dw_up / p.w_max, rtol=1e-5)
    assert torch.allclose(p.extra["slope_down"], -p.dw_down / p.w_min, rtol=1e-5)


def _at_bound(w: torch.Tensor, bound: torch.Tensor) -> torch.Tensor:
    """Whether each float32-stored state ``w`` lies on its (float32) bound: within 1e-6 relative."""
    return ((w - bound).abs() <= 1e-6 * bound.abs()).double()


def _train_from_bound(dev: dv.PulsedDevice, n: int, up: bool, steps_away: float
                      ) -> tuple[dv.DeviceParams, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` pulses towards a bound on aihwkit's tile, every device starting ``steps_away`` steps ``dw_min`` before
    the bound ahead: the sampled parameters, the bound, the start and aihwkit's states (float64 of its float32)."""
    tile = _tile(dev, bl=n)
    p = _params(dev, tile)
    bound = p.w_max if up else p.w_min
    w0 = bound - (1.0 if up else -1.0) * steps_away * dev.dw_min
    tile.set_weights(w0.float())
    w0 = tile.get_weights()[0].double()
    _pulse(tile, up)
    return p, bound, w0, tile.get_weights()[0].double()


@pytest.mark.parametrize("dev", [
    dv.ConstantStepDevice(dw_min=0.01, dw_min_std=2.0, w_max_dtod=0.05, w_min_dtod=0.05),
    dv.ExpStepDevice(dw_min=0.01, dw_min_std=2.0, w_max_dtod=0.05, w_min_dtod=0.05),
], ids=["constant", "exp"])
@pytest.mark.parametrize("up", [True, False], ids=["up", "down"])
def test_aihwkit_clips_after_every_pulse(dev, up):
    """aihwkit clips the state into its bounds after *every* pulse (``update_once``), not once after the train: with
    a cycle-to-cycle noise of twice the step, a step is negative with probability Φ(−1/2) = 0.31, so a device held
    at its bound by 20 pulses towards it leaves the bound on every such step. aihwkit's share of devices on the
    bound then matches the per-pulse reference (``tests/devices/per_pulse_reference.py``, clipping after each
    pulse; 5 SE of two proportions) and lies far below that of clipping once at the end: the sum of the 20 steps is
    positive with probability Φ(√20/2) = 0.987 for a constant step (hand-computed: a Gaussian sum of mean 20·dw and
    std √20·2·dw), and at least that for the exp step, whose steps shrink towards its bound."""
    n = 20
    p, bound, w0, w_aih = _train_from_bound(dev, n, up, steps_away=0.0)
    g = torch.Generator().manual_seed(21 + up)
    ref = apply_sequence(dev, w0, n if up else 0, 0 if up else n, p, g)
    at_aih, at_ref = _at_bound(w_aih, bound).mean().item(), _at_bound(ref, bound).mean().item()
    share_se = share_difference_se(at_aih, at_ref, w0.numel())
    assert abs(at_aih - at_ref) <= 5 * share_se, (at_aih, at_ref, share_se)
    end_clip = 0.5 * math.erfc(-math.sqrt(n) / dev.dw_min_std / math.sqrt(2))       # Φ(√n/σ) = 0.987
    assert at_aih < end_clip - 0.3, (at_aih, end_clip)
    se = math.sqrt((w_aih.var().item() + ref.var().item()) / w0.numel())
    assert abs(w_aih.mean().item() - ref.mean().item()) <= 5 * se


@pytest.mark.parametrize("dev,steps_away", [
    (dv.ExpStepDevice(dw_min=0.005, w_max_dtod=0.05, w_min_dtod=0.05), 3.0),
    (dv.ExpStepDevice(dw_min=0.005, w_max_dtod=0.05, w_min_dtod=0.05), 0.0),
    (dv.ExpStepDevice(dw_min=0.005, dw_min_std=0.1, dw_min_std_add=0.0005, dw_min_std_slope=0.005,
                      w_max_dtod=0.05, w_min_dtod=0.05), 3.0),
], ids=["exp_near", "exp_at", "exp_std_add_near"])
@pytest.mark.parametrize("up", [True, False], ids=["up", "down"])
def test_exp_step_with_small_noise_at_the_bound_matches_aihwkit(dev, steps_away, up):
    """With little cycle-to-cycle noise a step is rarely negative (``dw_min_std = 0.3``: probability Φ(−1/0.3) =
    4e-4 per pulse; the complex noise: std 0.1·(step + add + slope·|w|), below 0.2 of the step near these bounds),
    so almost every device that reaches its bound stays there: 31 pulses from 0 or 3 steps before a bound towards
    it leave the same share of devices on the bound in our count-based update as in aihwkit's (5 SE of two
    proportions, pooled: a few devices in 10,000 leave the bound, and the fixed-list bias of aihwkit's Gaussians is
    well within) and the same mean state (5 SE)."""
    n = 31
    p, bound, w0, w_aih = _train_from_bound(dev, n, up, steps_away)
    cnt, zero = torch.full_like(w0, float(n)), torch.zeros_like(w0)
    ours = dev.apply_pulses(w0, cnt if up else zero, zero if up else cnt, p, torch.Generator().manual_seed(5 + up))
    at_aih, at_ours = _at_bound(w_aih, bound).mean().item(), _at_bound(ours, bound).mean().item()
    assert at_aih > 0.5                                              # the scenario really reaches the bound
    share_se = share_difference_se(at_ours, at_aih, w0.numel())
    assert abs(at_ours - at_aih) <= 5 * share_se, (at_ours, at_aih, share_se)
    se = math.sqrt((w_aih.var().item() + ours.var().item()) / w0.numel())
    assert abs(ours.mean().item() - w_aih.mean().item()) <= 5 * se


def test_exp_step_with_noisy_steps_at_the_bound_matches_aihwkit():
    """With ``dw_min_std = 2`` and devices held at their bound by 20 pulses towards it, aihwkit leaves about half
    of them on the bound (see :func:`test_aihwkit_clips_after_every_pulse`); clipping once at the end left
    Φ(√20/2) ≈ 0.99 there. The count-based update models the per-pulse clipping (the reflected walk,
    :func:`devices.base.clipped_walk_`): the same share on the bound (5 SE of two proportions) and mean (5 SE)."""
    dev = dv.ExpStepDevice(dw_min=0.01, dw_min_std=2.0, w_max_dtod=0.05, w_min_dtod=0.05)
    n = 20
    p, bound, w0, w_aih = _train_from_bound(dev, n, True, steps_away=0.0)
    ours = dev.apply_pulses(w0, torch.full_like(w0, float(n)), torch.zeros_like(w0), p,
                            torch.Generator().manual_seed(3))
    at_aih, at_ours = _at_bound(w_aih, bound).mean().item(), _at_bound(ours, bound).mean().item()
    assert abs(at_ours - at_aih) <= 5 * share_difference_se(at_ours, at_aih, w0.numel()), (at_ours, at_aih)
    se = math.sqrt((w_aih.var().item() + ours.var().item()) / w0.numel())
    assert abs(ours.mean().item() - w_aih.mean().item()) <= 5 * se, (ours.mean().item(), w_aih.mean().item(), se)
