"""devices.fusion: the compiled closed forms (linear-step family, exp step) give the eager numbers (to float
rounding), keep the engine's bit-identities, and the modes behave (fallback to eager when compiling fails, clear
errors for bad modes).

The eager closed forms are tested against per-pulse simulation and aihwkit elsewhere; here the compiled kernel
is held to them: the mean within 1e-3 of a pulse step or 1e-5 of the distance moved (plus float32 rounding of the
state), the variance within 1e-4 relative, on states, counts and slopes spanning the cases the formulas distinguish
(no pulses, one pulse, one sign, mixed, long trains, states on the bounds, tiny and zero slopes).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import devices as dv
from devices import fusion
from devices._closed_forms import _linear_moments, linear_moments

pytestmark = pytest.mark.slow          # each new dtype / flag combination compiles for ~10-15 s


@pytest.fixture
def compiled():
    before = fusion.get_compile()
    fusion.set_compile("on")
    yield
    fusion.set_compile(before if before in fusion.COMPILE_MODES else "off")


def _inputs(dev: dv.PulsedDevice, n: int, dtype: torch.dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    p = dev.sample((n,), g, dtype=dtype)
    w = dev.clip(torch.rand(n, generator=g, dtype=dtype) * 2.4 - 1.2, p)
    w[::17] = p.w_max[::17]                                       # on the bounds
    w[5::17] = p.w_min[5::17]
    n_up = torch.randint(0, 40, (n,), generator=g).to(dtype) * (torch.rand(n, generator=g) < 0.6)
    n_down = torch.randint(0, 40, (n,), generator=g).to(dtype) * (torch.rand(n, generator=g) < 0.6)
    n_up[::7], n_down[::7] = 1.0, 0.0                             # single pulses
    n_up[3::11] = 500.0                                           # long trains
    return w, n_up, n_down, p


DEVICES = {
    "ReRamSB": dv.get_preset("ReRamSB"),
    "EcRam": dv.get_preset("EcRam"),
    "EcRamMO": dv.get_preset("EcRamMO"),
    "Capacitor": dv.get_preset("Capacitor"),
    "tiny slopes": dv.LinearStepDevice(dw_min=0.001, gamma_up=1e-4, gamma_down=3e-4, gamma_up_dtod=0.0,
                                       gamma_down_dtod=0.0),
    "zero slopes": dv.LinearStepDevice(dw_min=0.001, gamma_up=0.0, gamma_down=0.0, gamma_up_dtod=0.0,
                                       gamma_down_dtod=0.0),
    "additive noise": dv.LinearStepDevice(dw_min=0.002, gamma_up=0.3, gamma_down=0.5, mult_noise=False),
    "noiseless": dv.SoftBoundsDevice(dw_min=0.002, dw_min_std=0.0),
    "PCM (exp step)": dv.get_preset("PCM"),                       # ~60 s to compile: the largest kernel
}


@pytest.mark.parametrize("name", list(DEVICES))
def test_compiled_moments_match_eager(name, compiled):
    dev = DEVICES[name]
    dtypes = [torch.float32, torch.float64] if name == "ReRamSB" else [torch.float32]
    for dtype in dtypes:
        w, n_up, n_down, p = _inputs(dev, 20011, dtype)
        fusion.set_compile("off")
        m0, v0 = dev.pulse_moments(w, n_up, n_down, p)
        fusion.set_compile("on")
        m1, v1 = dev.pulse_moments(w, n_up, n_down, p)
        assert torch.isfinite(m1).all() and torch.isfinite(v1).all()
        eps = torch.finfo(dtype).eps
        # float rounding: 1e-3 of a pulse step, or 1e-5 of the distance moved (PCM jumps across its range in a
        # few pulses), plus a few ulps of the states
        tol = 1e-3 * dev.dw_min + 1e-5 * (m0 - w).abs() + 8 * eps * (w.abs() + m0.abs())
        assert ((m1 - m0).abs() <= tol).all(), name
        assert ((v1 - v0).abs() <= 1e-4 * v0.abs() + 1e-12 * dev.dw_min ** 2).all(), name
        assert torch.equal(m1[(n_up + n_down) == 0], w[(n_up + n_down) == 0])     # no pulses: unchanged


def test_compiled_kernel_does_not_depend_on_position_or_shape(compiled):
    # what keeps replicas bit-identical to single runs and the sparse path identical to the dense one
    dev = DEVICES["ReRamSB"]
    w, n_up, n_down, p = _inputs(dev, 4099, torch.float32)
    args = (w, n_up, n_down, p.dw_up, p.dw_down, p.extra["slope_up"], p.extra["slope_down"])
    mean, var = linear_moments(*args, dev.dw_min_std, dev.mult_noise)
    for start, stop in [(0, 7), (3, 20), (5, 4099), (1000, 1003), (4090, 4099)]:
        m, v = linear_moments(*(a[start:stop].clone() for a in args), dev.dw_min_std, dev.mult_noise)
        assert torch.equal(m, mean[start:stop]) and torch.equal(v, var[start:stop])
    m, v = linear_moments(*(a[:4096].reshape(16, 256) for a in args), dev.dw_min_std, dev.mult_noise)
    assert torch.equal(m.reshape(-1), mean[:4096]) and torch.equal(v.reshape(-1), var[:4096])


def test_compiled_training_keeps_replicas_bit_identical_to_single_runs(compiled):
    from crossbar import CrossbarConfig
    from crossbar.replicas import ReplicaTileArray

    cfg = CrossbarConfig(device=dv.get_preset("ReRamSB"), tile_rows=16, tile_cols=16)
    both = ReplicaTileArray([11, 12], 20, 24, cfg)
    alone = ReplicaTileArray([12], 20, 24, cfg)
    x, d = torch.randn(2, 8, 24), torch.randn(2, 8, 20) * 0.1
    for _ in range(3):
        both.update(x, d, 0.2)
        alone.update(x[1:], d[1:], 0.2)
    assert torch.equal(both.read()[1], alone.read()[0])


def test_off_is_exactly_eager_and_modes_are_checked():
    dev = DEVICES["ReRamSB"]
    w, n_up, n_down, p = _inputs(dev, 300, torch.float32)
    s2 = w.new_full((), dev.dw_min_std ** 2)
    args = (w, n_up, n_down, p.dw_up, p.dw_down, p.extra["slope_up"], p.extra["slope_down"], s2, True, True)
    before = fusion.get_compile()
    try:
        fusion.set_compile("off")
        for got, want in zip(_linear_moments(*args), _linear_moments.eager(*args)):
            assert torch.equal(got, want)
        with pytest.raises(ValueError, match="set_compile.*auto, on, off"):
            fusion.set_compile("fast")
    finally:
        fusion.set_compile(before if before in fusion.COMPILE_MODES else "off")
    # an invalid IMC_GRAPES_COMPILE lets the import through (so `imc-grapes --help` works and the command line
    # reports it as a usage error) but raises at check_env and at the first use; set_compile overrides it
    script = ("import devices; from devices import fusion; print(fusion.get_compile())\n"
              "try:\n    fusion.check_env()\nexcept ValueError as e:\n    print('check_env:', e)\n"
              "try:\n    fusion.fusion_active()\nexcept ValueError as e:\n    print('active:', e)\n"
              "fusion.set_compile('off'); fusion.check_env(); print(fusion.fusion_active(), fusion.get_compile())")
    bad = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env={"IMC_GRAPES_COMPILE": "yes", "PATH": "/usr/bin:/bin"})
    msg = "IMC_GRAPES_COMPILE must be one of auto, on, off, got 'yes'"
    assert bad.returncode == 0, bad.stderr
    assert bad.stdout.splitlines() == [f"invalid ({msg})", f"check_env: {msg}", f"active: {msg}", "False off"]


def test_auto_falls_back_to_eager_when_compiling_fails(monkeypatch):
    def broken_compile(fn, **kwargs):
        def run(*args, **kw):
            raise RuntimeError("no C++ compiler")
        return run

    @fusion.fused
    def double(x: torch.Tensor) -> torch.Tensor:
        return x * 2

    monkeypatch.setattr(torch, "compile", broken_compile)
    before = fusion.get_compile()
    try:
        fusion.set_compile("on")
        with pytest.raises(RuntimeError, match="no C\\+\\+ compiler"):
            double(torch.ones(3))
        fusion.set_compile("auto")
        with pytest.warns(RuntimeWarning, match="torch.compile failed.*IMC_GRAPES_COMPILE=off"):
            assert torch.equal(double(torch.ones(3)), torch.full((3,), 2.0))
        assert fusion.get_compile().startswith("off (compile failed: RuntimeError: no C++ compiler")
        assert torch.equal(double(torch.ones(2)), torch.full((2,), 2.0))      # eager from now on, no warning
    finally:
        fusion.set_compile(before if before in fusion.COMPILE_MODES else "off")


def test_one_kernel_serves_strided_viewed_and_tiny_inputs(compiled):
    """Gathered per-device parameters are strided columns of a packed array, the sparse update passes views, and
    some updates touch 0 or 1 devices: none of these may recompile (each recompile costs seconds, and after
    eight torch gives up compiling)."""
    from torch._dynamo.utils import counters

    dev = DEVICES["EcRam"]
    w, n_up, n_down, p = _inputs(dev, 3001, torch.float32, seed=4)
    args = [w, n_up, n_down, p.dw_up, p.dw_down, p.extra["slope_up"], p.extra["slope_down"]]
    linear_moments(*args, dev.dw_min_std, dev.mult_noise)                 # compiles (or loads) the kernel
    graphs = counters["stats"]["unique_graphs"]
    packed = torch.stack(args, dim=1)                                    # [n, 7]: every column strided
    for variant in ([a.reshape(3001)[: 2000].view(40, 50) for a in args],   # views of another shape
                    [packed[:, k] for k in range(7)],                    # strided
                    [a[:2] for a in args], [a[:1] for a in args], [a[:0] for a in args]):   # tiny
        mean, var = linear_moments(*variant, dev.dw_min_std, dev.mult_noise)
        fusion.set_compile("off")
        want = linear_moments(*variant, dev.dw_min_std, dev.mult_noise)
        fusion.set_compile("on")
        assert mean.shape == variant[0].shape
        assert torch.allclose(mean, want[0], rtol=0, atol=1e-3 * dev.dw_min + 1e-6)
        assert torch.allclose(var, want[1], rtol=1e-4, atol=1e-12)
    assert counters["stats"]["unique_graphs"] == graphs


_THREADS_SCRIPT = """
import sys, torch
from devices import fusion
torch.set_num_threads(int(sys.argv[1]))
fusion.set_compile("on")
@fusion.fused
def affine(x, y):
    return x * 2.0 + y
assert torch.equal(affine(torch.ones(100_000), torch.ones(100_000)), torch.full((100_000,), 3.0))
"""


def test_a_kernel_compiled_for_another_thread_count_is_not_reused(tmp_path):
    # inductor's on-disk cache keys a CPU kernel by its code and config, not by torch's thread count: without
    # `cpp.threads` in the config, a 1-thread process took the kernel a 2-thread process had compiled
    # (`#pragma omp parallel num_threads(2)`) and ran ReRamSB's moments 2.1x slower there, the other core busy
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMP_")}
    env.update(TORCHINDUCTOR_CACHE_DIR=str(tmp_path), PYTHONPATH=str(Path(fusion.__file__).resolve().parents[1]))
    for threads in (2, 1):
        subprocess.run([sys.executable, "-c", _THREADS_SCRIPT, str(threads)], env=env, check=True, timeout=300)
    kernels = [t for t in (p.read_text() for p in tmp_path.rglob("*.cpp")) if "in_ptr0" in t]     # the kernels
    assert any("num_threads(2)" in k for k in kernels)              # the 2-thread process's kernel
    assert any("omp parallel" not in k for k in kernels)            # and one compiled for 1 thread
