"""apply_pulses_ / apply_pulses_at_ (in place, only the devices with pulses) against apply_pulses.

Without cycle-to-cycle noise and with pulses of one sign per device (no variance from the random order of mixed
pulses) every path is deterministic and must give the same numbers as apply_pulses; with
noise, the sampled states must have the closed-form mean and variance of pulse_moments (4 standard errors),
whichever branch (all devices / only the devices with pulses) runs. Devices without pulses keep their state
exactly.
"""

from __future__ import annotations

import math

import pytest
import torch

import devices as dv

SPARSE_SHAPE = (4, 32, 40)  # 5120 devices, few pulses: the CPU branch that computes only the pulsed devices
DENSE_SHAPE = (2, 16, 40)   # 1280 devices: every device is computed
DENSITIES = [0.03, 0.4, 0.6]
"""Fractions of devices with pulses: 0.03 on SPARSE_SHAPE (only those devices are gathered and computed), 0.4 on
SPARSE_SHAPE (the closed-form models still compute only those; the constant step computes every device and draws
Gaussians only for those with pulses), 0.6 on DENSE_SHAPE (too few devices for the sparse path: every device
computed and drawn)."""
DT = torch.float64

MODELS = {
    "constant": dv.ConstantStepDevice(dw_min=0.01, up_down=0.1),
    "ideal": dv.IdealDevice(dw_min=0.01),
    "linear": dv.LinearStepDevice(dw_min=0.01, gamma_up=0.5, gamma_down=0.8),
    "softbounds": dv.SoftBoundsDevice(dw_min=0.01),
    "pow": dv.PowStepDevice(dw_min=0.01, pow_gamma=1.8),
    "exp": dv.ExpStepDevice(dw_min=0.01),
}


def _setup(dev: dv.PulsedDevice, density: float, seed: int, dtype: torch.dtype = DT, one_sign: bool = False):
    g = torch.Generator().manual_seed(seed)
    p = dev.sample(SPARSE_SHAPE if density < 0.5 else DENSE_SHAPE, g, dtype=dtype)
    w = dev.clip(0.4 * torch.rand(p.shape, generator=g, dtype=dtype) - 0.2, p)
    w.view(-1)[::11] = 0.0
    w.view(-1)[5::11] = -0.0
    w.view(-1)[7::13] = p.w_max.view(-1)[7::13]                     # some states exactly on a bound
    on = torch.rand(p.shape, generator=g) < density
    n_up = torch.randint(0, 4, p.shape, generator=g).to(dtype) * on
    n_down = torch.randint(0, 3, p.shape, generator=g).to(dtype) * on * (torch.rand(p.shape, generator=g) < 0.5)
    if one_sign:                                  # no mixed counts: no variance from the random pulse order
        n_up = n_up * (n_down == 0)
    return g, p, w, n_up, n_down


def _without_noise(dev: dv.PulsedDevice) -> dv.PulsedDevice:
    fields = {f: getattr(dev, f) for f in dev.__dataclass_fields__}
    fields["dw_min_std"] = 0.0
    if "dw_min_std_add" in fields:
        fields["dw_min_std_add"] = 0.0
        fields["dw_min_std_slope"] = 0.0
    return type(dev)(**fields)


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("density", DENSITIES)
def test_in_place_paths_equal_apply_pulses_without_noise(name: str, density: float) -> None:
    dev = _without_noise(MODELS[name])
    _, p, w, n_up, n_down = _setup(dev, density, seed=1, one_sign=True)   # then deterministic
    want = dev.apply_pulses(w, n_up, n_down, p)
    got = dev.apply_pulses_(w.clone(), n_up, n_down, p)
    assert torch.equal(got, want)
    index = ((n_up + n_down) > 0).view(-1).nonzero().squeeze(1)
    at = dev.apply_pulses_at_(w.clone(), index, n_up.view(-1)[index], n_down.view(-1)[index], p)
    assert torch.equal(at, want)
    gathered = dv.DeviceParams.from_state_dict({k: v.reshape(-1)[index] for k, v in p.state_dict().items()})
    at2 = dev.apply_pulses_at_(w.clone(), index, n_up.view(-1)[index], n_down.view(-1)[index], gathered)
    assert torch.equal(at2, want)


@pytest.mark.parametrize("name", ["constant", "softbounds", "exp"])
@pytest.mark.parametrize("density", DENSITIES)
def test_devices_without_pulses_keep_their_state_exactly(name: str, density: float) -> None:
    dev = MODELS[name]
    g, p, w, n_up, n_down = _setup(dev, density, seed=2, dtype=torch.float32)
    silent = (n_up + n_down) == 0
    out = dev.apply_pulses_(w.clone(), n_up, n_down, p, g)
    assert torch.equal(out[silent], w[silent])
    assert bool((out >= p.w_min).all()) and bool((out <= p.w_max).all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("density", DENSITIES)
def test_constant_step_noise_has_the_closed_form_moments(dtype: torch.dtype, density: float, monkeypatch) -> None:
    """ConstantStep's fused draw: mean w + n_up dw_up - n_down dw_down, var dw_min_std² (n_up dw_up² + ...)."""
    import devices.constant_step as cs

    dev = dv.ConstantStepDevice(dw_min=0.002, dw_min_std=0.5, w_min=-5.0, w_max=5.0)   # bounds far away
    g, p, w, n_up, n_down = _setup(dev, density, seed=3, dtype=dtype)
    mean, var = dev.pulse_moments(w.double(), n_up.double(), n_down.double(), p.to(dtype=DT))
    found, positions = [], cs._pulsed_positions
    monkeypatch.setattr(cs, "_pulsed_positions", lambda *a: found.append(positions(*a)) or found[-1])
    out = dev.apply_pulses_(w.clone(), n_up, n_down, p, g).double()
    # the branch each density is meant to exercise ran
    assert {0.03: all(f is None for f in found), 0.4: len(found) == 1 and found[0] is not None,
            0.6: len(found) == 1 and found[0] is None}[density]
    busy = var > 0
    inside = busy & (w < p.w_max) & (w > p.w_min)                  # states set on a bound get clipped
    z = (out - mean)[inside] / var[inside].sqrt()
    n = inside.sum().item()
    assert abs(z.mean().item()) < 4 / math.sqrt(n)
    assert abs(z.var().item() - 1) < 4 * math.sqrt(2 / n)
    assert torch.equal(out[~busy], w.double()[~busy])


@pytest.mark.parametrize("name, density, computed", [
    ("softbounds", 0.9, "pulsed"), ("exp", 0.9, "pulsed"), ("linear", 0.4, "pulsed"),
    ("softbounds", 1.0, "all"),                      # every device pulses: the dense form, no gather/scatter
    ("constant", 0.03, "pulsed"), ("constant", 0.4, "all"),   # cheap response: sparse only for few pulses
])
def test_cpu_update_computes_only_the_pulsed_devices_when_that_pays(name: str, density: float, computed: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """``apply_pulses_`` on the CPU: the closed-form models (tens to hundreds of ops per device) gather the pulsed
    devices whenever some device has none (``SPARSE_PULSES_PER_DEVICE`` = inf); the constant step only up to 0.2
    pulses per device."""
    dev = MODELS[name]
    g = torch.Generator().manual_seed(3)
    p = dev.sample(SPARSE_SHAPE, g, dtype=DT)
    w = dev.clip(0.2 * torch.rand(p.shape, generator=g, dtype=DT) - 0.1, p)
    on = torch.rand(p.shape, generator=g) < density
    n_up = torch.randint(1, 4, p.shape, generator=g).to(DT) * on
    n_down = torch.zeros_like(n_up)
    sizes = []
    original = type(dev)._pulsed_states

    def spy(self, w_, *args, **kwargs):
        sizes.append(w_.numel())
        return original(self, w_, *args, **kwargs)

    monkeypatch.setattr(type(dev), "_pulsed_states", spy)
    dev.apply_pulses_(w, n_up, n_down, p, g)
    assert sizes == [int(on.sum()) if computed == "pulsed" else w.numel()]
