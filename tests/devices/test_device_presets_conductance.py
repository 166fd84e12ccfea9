"""Presets, the conductance view and the aihwkit converters."""

from __future__ import annotations

import dataclasses
import sys

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

import devices as dv


# ------------------------------------------------------------------ presets
@pytest.mark.parametrize("name", list(dv.PRESETS))
def test_presets_construct_sample_and_update(name):
    dev = dv.get_preset(name)
    assert isinstance(dev, dv.PulsedDevice)
    assert dev.__doc__ and ("20" in dev.__doc__ or name == "Ideal")   # cites a year (a paper)
    g = torch.Generator().manual_seed(0)
    p = dev.sample((4, 8, 8), g)
    w = dev.clip(torch.zeros(4, 8, 8), p)
    out = dev.apply_pulses(w, torch.full_like(w, 3), torch.full_like(w, 1), p, g)
    assert bool(torch.isfinite(out).all())
    assert bool((out >= p.w_min).all()) and bool((out <= p.w_max).all())


def test_preset_lookup():
    assert isinstance(dv.get_preset("ecram"), dv.EcRamPresetDevice)        # case-insensitive
    assert dv.get_preset("ReRamSB", dw_min=0.01).dw_min == 0.01             # overrides
    with pytest.raises(ValueError) as err:
        dv.get_preset("NoSuchDevice")
    msg = str(err.value)
    assert "NoSuchDevice" in msg and all(n in msg for n in dv.PRESETS)


def test_at_least_five_distinct_technologies():
    kinds = {"ReRamES", "ReRamSB", "PCM", "EcRam", "Capacitor", "Idealized"}
    assert kinds <= set(dv.PRESETS)


# ------------------------------------------------------------------ conductance
def test_conductance_single_device_hand_values():
    cm = dv.ConductanceMap(g_min_uS=1.0, g_max_uS=21.0, w_max=0.5)
    w = torch.tensor([-0.5, 0.0, 0.25, 0.5, 2.0])
    assert torch.allclose(cm.to_conductance(w), torch.tensor([1.0, 11.0, 16.0, 21.0, 21.0]))
    assert cm.g_ref_uS == 11.0 and cm.scale_uS == 40.0


def test_conductance_pair_hand_values():
    cm = dv.ConductanceMap(g_min_uS=1.0, g_max_uS=21.0, w_max=0.5)
    gp, gm = cm.to_pair(torch.tensor([-0.25, 0.0, 0.5]))
    assert torch.allclose(gp, torch.tensor([1.0, 1.0, 21.0]))
    assert torch.allclose(gm, torch.tensor([11.0, 1.0, 1.0]))


@settings(max_examples=60, deadline=None)
@given(g_min=st.floats(0.0, 5.0), span=st.floats(0.5, 100.0), w_max=st.floats(0.05, 5.0),
       shape=st.lists(st.integers(1, 4), min_size=0, max_size=3), seed=st.integers(0, 10_000))
# found by hypothesis: to_pair at |w| = w_max read one ulp past g_max: float32 with g_min = 0 (the float32 w_max times
# scale_uS), float64 (0.1 + 0.3·(0.7/0.3)), float32 with g_min > 0 (0.1 + 0.1·(1.3/0.1))
@example(g_min=0.0, span=3.0, w_max=4.209073809421646, shape=[], seed=0)
@example(g_min=0.1, span=0.7, w_max=0.3, shape=[2], seed=0)
@example(g_min=0.1, span=1.3, w_max=0.1, shape=[2], seed=0)
def test_conductance_round_trips(g_min, span, w_max, shape, seed):
    cm = dv.ConductanceMap(g_min_uS=g_min, g_max_uS=g_min + span, w_max=w_max)
    g = torch.Generator().manual_seed(seed)
    w = (2 * torch.rand(shape, generator=g, dtype=torch.float64) - 1) * w_max
    gs = cm.to_conductance(w)
    assert gs.shape == w.shape
    assert torch.allclose(cm.from_conductance(gs), w, atol=1e-9 * (1 + span))
    assert bool((gs >= g_min).all()) and bool((gs <= g_min + span).all())
    gp, gm = cm.to_pair(w)
    assert torch.allclose(cm.from_pair(gp, gm), w, atol=1e-9 * (1 + span))
    # exactly one device of each pair at g_min (both when w == 0)
    assert bool((torch.minimum(gp, gm) == g_min).all())
    # row sum of the pair = scale·Σ|w| + 2·n·g_min (what GRAPES reads from the hardware)
    n = w.numel()
    assert torch.allclose((gp + gm).sum(), cm.scale_uS * w.abs().sum() + 2 * n * g_min, rtol=1e-9, atol=1e-9)
    # the range ends and beyond (a state at its device's bound, a weight past the map's w_max): every conductance
    # in [g_min, g_max] as the dtype holds them (g_min + w_max·scale_uS had rounded one or two ulps past g_max)
    for dtype in (torch.float32, torch.float64):
        ends = torch.tensor([w_max, -w_max, 3 * w_max, -3 * w_max, 0.0], dtype=dtype)
        lo, hi = torch.tensor(g_min, dtype=dtype), torch.tensor(g_min + span, dtype=dtype)
        for g_end in (*cm.to_pair(ends), cm.to_conductance(ends)):
            assert bool((g_end >= lo).all()) and bool((g_end <= hi).all()), (dtype, g_end, hi)


# ------------------------------------------------------------------ aihwkit converter
def test_package_does_not_import_aihwkit():
    code = "import sys, devices; assert 'aihwkit' not in sys.modules, 'imported'"
    import subprocess

    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(__import__("pathlib").Path(__file__).parents[2]))


NON_DEFAULT = [
    dv.ConstantStepDevice(dw_min=0.002, dw_min_dtod=0.1, dw_min_std=0.2, up_down=0.05, up_down_dtod=0.02, w_min=-0.7,
                          w_max=0.9, w_min_dtod=0.1, w_max_dtod=0.2, dw_min_dtod_log_normal=True),
    dv.LinearStepDevice(gamma_up=0.3, gamma_down=0.4, gamma_up_dtod=0.02, gamma_down_dtod=0.03,
                        mean_bound_reference=False, mult_noise=False, write_noise_std=1.5, dw_min=0.004),
    dv.SoftBoundsDevice(mult_noise=False, write_noise_std=2.0, up_down=-0.1),
    dv.ExpStepDevice(A_up=0.01, A_down=0.2, gamma_up=3.0, gamma_down=4.0, a=0.1, b=0.2, dw_min_std_add=0.01,
                     dw_min_std_slope=0.02, write_noise_std=0.5),
    dv.PowStepDevice(pow_gamma=2.0, pow_gamma_dtod=0.2, pow_up_down=0.1, pow_up_down_dtod=0.05, write_noise_std=0.3),
]


@pytest.mark.parametrize("dev", NON_DEFAULT, ids=lambda d: type(d).__name__)
def test_converter_round_trip_field_by_field(dev):
    pytest.importorskip("aihwkit")
    cfg = dv.to_aihwkit(dev)
    assert type(cfg).__name__ == type(dev).__name__
    for f in dataclasses.fields(dev):
        if f.name == "write_noise_std" and isinstance(dev, dv.ConstantStepDevice):
            assert not hasattr(cfg, f.name) and dev.write_noise_std == 0   # aihwkit's ConstantStep has none
            continue
        assert getattr(cfg, f.name) == getattr(dev, f.name), f.name
    back = dv.from_aihwkit(cfg)
    assert back == dev


def test_converter_defaults_agree_with_aihwkit():
    """Our defaults are aihwkit's (shared and model-specific fields)."""
    pytest.importorskip("aihwkit")
    from aihwkit.simulator.configs import devices as ad

    for cls in (dv.ConstantStepDevice, dv.LinearStepDevice, dv.SoftBoundsDevice, dv.ExpStepDevice, dv.PowStepDevice):
        theirs = dv.from_aihwkit(getattr(ad, cls.__name__)())
        assert theirs == cls(), cls.__name__


@pytest.mark.parametrize(
    "ours,theirs",
    [("ReRamES", "ReRamESPresetDevice"), ("EcRam", "EcRamPresetDevice"), ("EcRamMO", "EcRamMOPresetDevice"),
     ("Idealized", "IdealizedPresetDevice"), ("GokmenVlasov", "GokmenVlasovPresetDevice"),
     ("PCM", "PCMPresetDevice"), ("Capacitor", "CapacitorPresetDevice")],
)
def test_presets_match_aihwkit_presets(ours, theirs):
    pytest.importorskip("aihwkit")
    from aihwkit.simulator.presets import devices as ap

    cfg = getattr(ap, theirs)()
    if ours == "Capacitor":   # aihwkit adds leakage, not modelled here
        with pytest.warns(UserWarning, match="lifetime"):
            conv = dv.from_aihwkit(cfg, strict=False)
    else:
        conv = dv.from_aihwkit(cfg)
    mine = dv.get_preset(ours)
    for f in dataclasses.fields(conv):
        assert getattr(mine, f.name) == pytest.approx(getattr(conv, f.name)), f.name


def test_ideal_device_converts_to_noise_free_constant_step():
    pytest.importorskip("aihwkit")
    cfg = dv.to_aihwkit(dv.IdealDevice(dw_min=0.01, w_min=-2.0, w_max=3.0))
    assert type(cfg).__name__ == "ConstantStepDevice"
    assert (cfg.dw_min, cfg.dw_min_std, cfg.dw_min_dtod, cfg.up_down_dtod, cfg.w_max_dtod) == (0.01, 0, 0, 0, 0)
    assert (cfg.w_min, cfg.w_max) == (-2.0, 3.0)


def test_converter_errors():
    pytest.importorskip("aihwkit")
    from aihwkit.simulator.configs import devices as ad

    with pytest.raises(ValueError, match="write_noise_std must be 0"):
        dv.to_aihwkit(dv.ConstantStepDevice(write_noise_std=1.0))
    with pytest.raises(ValueError, match="unsupported aihwkit config SoftBoundsReferenceDevice"):
        dv.from_aihwkit(ad.SoftBoundsReferenceDevice())
    with pytest.raises(ValueError, match=r"ConstantStepDevice\.lifetime = 100\.0"):
        dv.from_aihwkit(ad.ConstantStepDevice(lifetime=100.0))
    with pytest.raises(ValueError, match="reverse_up"):
        dv.from_aihwkit(ad.LinearStepDevice(reverse_up=True))
    # aihwkit drifts the weights of a pulsed device whenever drift.nu > 0 (rpu_simple_device.cpp); not modelled here
    from aihwkit.simulator.parameters.inference import DriftParameter
    with pytest.raises(ValueError, match=r"ConstantStepDevice\.drift\.nu = 0\.1"):
        dv.from_aihwkit(ad.ConstantStepDevice(drift=DriftParameter(nu=0.1)))
    with pytest.warns(UserWarning, match=r"drift\.nu"):
        assert dv.from_aihwkit(ad.SoftBoundsDevice(drift=DriftParameter(nu=0.1)), strict=False) == dv.SoftBoundsDevice()

    class Other(dv.PulsedDevice):
        pass

    with pytest.raises(ValueError, match="no aihwkit counterpart for Other"):
        dv.to_aihwkit(Other())
