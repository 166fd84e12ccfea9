"""Inference noise (programming noise, drift, read noise) of devices/inference.py.

References are independent of the code under test: hand-written formulas of aihwkit's PCM fit (constants typed
in here), the folded-normal moments, and aihwkit's own ``PCMLikeNoiseModel`` sampled with the same inputs.
Statistical tolerances are stated next to each check (n devices per level, several standard errors).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.inference import (
    STANDARD_TIME_LABELS,
    STANDARD_TIMES_S,
    GenericDriftModel,
    NoDrift,
    PCMLikeNoiseModel,
    apply_inference_noise,
    program_weights,
    read_weights_at,
)

N = 40_000  # devices per conductance level: standard error of a std estimate ≈ 1/sqrt(2N) ≈ 0.35 %
G_MAX = 25.0
T_0, T_READ = 20.0, 250e-9


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- hand-written references (aihwkit 1.1 PCMLikeNoiseModel constants) ------------------------------------


def prog_sigma_ref(g: float, g_max: float = G_MAX) -> float:
    """σ_prog in µS: (0.26348 + 1.9650 x − 1.1731 x²)·g_max/25 with x = g/g_max."""
    x = g / g_max
    return (0.26348 + 1.9650 * x - 1.1731 * x * x) * g_max / 25.0


def nu_normal_ref(g: float) -> tuple[float, float]:
    """(μ, σ) of the normal that ν is folded from, r = max(|g|/g_max, 1e-7):

    μ = clip(0.0244 − 0.0155 ln r, 0.049, 0.1), σ = clip(−0.0059 − 0.0125 ln r, 0.008, 0.045).
    """
    r = max(abs(g) / G_MAX, 1e-7)
    mu = min(max(0.0244 - 0.0155 * math.log(r), 0.049), 0.1)
    sig = min(max(-0.0059 - 0.0125 * math.log(r), 0.008), 0.045)
    return mu, sig


def folded_normal_moments(mu: float, sig: float) -> tuple[float, float]:
    """Mean and std of |X|, X ~ N(mu, sig²)."""
    phi = 0.5 * (1.0 + math.erf(-mu / (sig * math.sqrt(2.0))))  # Φ(−μ/σ)
    mean = sig * math.sqrt(2.0 / math.pi) * math.exp(-mu * mu / (2 * sig * sig)) + mu * (1.0 - 2.0 * phi)
    return mean, math.sqrt(mu * mu + sig * sig - mean * mean)


def relu_normal_moments(mu: float, sig: float) -> tuple[float, float]:
    """Mean and std of max(0, X), X ~ N(mu, sig²) (rectified normal)."""
    a = mu / sig
    cdf, pdf = 0.5 * (1.0 + math.erf(a / math.sqrt(2.0))), math.exp(-0.5 * a * a) / math.sqrt(2 * math.pi)
    m1 = mu * cdf + sig * pdf
    m2 = (mu * mu + sig * sig) * cdf + mu * sig * pdf
    return m1, math.sqrt(m2 - m1 * m1)


def read_rel_sigma_ref(g_prog: float, t_inf: float) -> float:
    """Relative 1/f read-noise std: min(0.2, 0.0088/max((g/g_max)^0.65, 1e-3))·sqrt(ln((t+t_read)/(2 t_read)))."""
    q = min(0.2, 0.0088 / max((g_prog / G_MAX) ** 0.65, 1e-3))
    t = t_inf + T_0
    return q * math.sqrt(math.log((t + T_READ) / (2 * T_READ)))


def levels(values: list[float], n: int = N, dtype=torch.float32) -> torch.Tensor:
    """[len(values), n] tensor, row i filled with values[i]."""
    return torch.tensor(values, dtype=dtype)[:, None].expand(len(values), n).contiguous()


# --- validation ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field,value,valid",
    [
        ("g_max", 0.0, "> 0"),
        ("g_max", -25.0, "> 0"),
        ("g_max", math.nan, "> 0 and finite"),
        ("t_read", 0.0, "> 0"),
        ("t_0", -1.0, ">= t_read"),
        ("t_0", 1e-9, ">= t_read"),
        ("prog_noise_scale", -0.1, ">= 0"),
        ("read_noise_scale", -1.0, ">= 0"),
        ("drift_scale", math.inf, ">= 0 and finite"),
        ("prog_coeff_g_max_reference", 0.0, "> 0"),
        ("prog_coeff", (), "at least one"),
        ("prog_coeff", (1.0, math.nan), "finite numbers"),
        ("drift_nu_mean_range", (0.1, 0.05), "lo <= hi"),
        ("drift_nu_std_range", (-0.01, 0.05), "0 <= lo"),
        ("drift_nu_std_coeff", (1.0,), "a pair"),
        ("read_noise_coeff", -0.01, ">= 0"),
        ("read_noise_q_max", -0.2, ">= 0"),
    ],
)
def test_pcm_fields_validated(field, value, valid):
    with pytest.raises(ValueError) as err:
        PCMLikeNoiseModel(**{field: value})
    msg = str(err.value)
    assert msg.startswith(f"PCMLikeNoiseModel.{field} must be"), msg
    assert valid in msg and repr(value) in msg


@pytest.mark.parametrize(
    "cls,field,value",
    [(GenericDriftModel, "g_max", 0.0), (GenericDriftModel, "t_0", -5.0), (GenericDriftModel, "nu_std", -0.1),
     (GenericDriftModel, "prog_noise_std", -1.0), (NoDrift, "nu_mean", 0.05), (NoDrift, "read_noise_std", 0.1)],
)
def test_generic_fields_validated(cls, field, value):
    with pytest.raises(ValueError, match=rf"^{cls.__name__}\.{field} must be .*got {value!r}"):
        cls(**{field: value})


def test_pcm_defaults_and_list_coeffs():
    m = PCMLikeNoiseModel(prog_coeff=[0.1, 0.2])
    assert m.prog_coeff == (0.1, 0.2) and hash(m)  # stored as a tuple: frozen and hashable
    d = PCMLikeNoiseModel()
    assert (d.g_max, d.t_0, d.t_read) == (25.0, 20.0, 250e-9)
    assert STANDARD_TIMES_S == (1.0, 3600.0, 86400.0, 31_536_000.0) and len(STANDARD_TIME_LABELS) == 4


@pytest.mark.parametrize("bad", [-1.0, math.nan, [1.0, -3600.0], []])
def test_negative_or_empty_times_rejected(bad):
    w = torch.ones(3)
    with pytest.raises(ValueError, match=r"^apply_inference_noise\.t_inference_s must be"):
        apply_inference_noise(w, bad, generator=gen())
    if isinstance(bad, float):
        with pytest.raises(ValueError,
                           match=r"^PCMLikeNoiseModel\.t_inference_s must be a finite number >= 0, at most 3\.4e\+38 "):
            PCMLikeNoiseModel().drift(torch.ones(3), bad, torch.zeros(3))


def test_mapping_arguments_validated():
    w = torch.ones(2, 3)
    with pytest.raises(ValueError, match=r"^ConductanceMap\.g_max_uS must be"):
        apply_inference_noise(w, 1.0, generator=gen(), g_max_uS=-1.0)
    with pytest.raises(ValueError, match=r"^program_weights\.w_max must be > 0"):
        apply_inference_noise(w, 1.0, generator=gen(), w_max=0.0)
    with pytest.raises(ValueError, match=r"^read_weights_at\.compensation_dims must be"):
        apply_inference_noise(w, 1.0, generator=gen(), compensation_dims=(2,))
    with pytest.raises(ValueError, match=r"^read_weights_at\.compensation_dims must be"):
        apply_inference_noise(w, 1.0, generator=gen(), compensation_dims=())


# --- programming noise -----------------------------------------------------------------------------------


@pytest.mark.parametrize("g_max", [25.0, 50.0])
def test_programming_noise_std_follows_polynomial(g_max):
    targets = [0.2 * g_max, 0.5 * g_max, 0.8 * g_max, 1.0 * g_max]  # >= 8σ above 0: the clip at 0 is negligible
    g = levels(targets)
    g_prog = PCMLikeNoiseModel(g_max=g_max).program(g, gen(1))
    for i, gt in enumerate(targets):
        sig = prog_sigma_ref(gt, g_max)
        assert abs(g_prog[i].mean().item() - gt) < 5 * sig / math.sqrt(N)  # unbiased within 5 standard errors
        assert g_prog[i].std().item() == pytest.approx(sig, rel=0.03)  # ≈ 9 standard errors of a std


def test_programming_noise_scale_and_zero_noise():
    g = levels([5.0, 20.0], n=10_000)
    half = PCMLikeNoiseModel(prog_noise_scale=0.5).program(g, gen(2))
    assert half[1].std().item() == pytest.approx(0.5 * prog_sigma_ref(20.0), rel=0.04)
    exact = PCMLikeNoiseModel(prog_noise_scale=0.0).program(g, gen(2))
    assert torch.equal(exact, g)


def test_programming_at_zero_is_clipped_half_normal():
    g_prog = PCMLikeNoiseModel().program(torch.zeros(N), gen(3))
    sig0 = 0.26348  # σ_prog(0)
    assert g_prog.min().item() >= 0.0
    assert (g_prog == 0).float().mean().item() == pytest.approx(0.5, abs=0.01)
    assert g_prog.mean().item() == pytest.approx(sig0 / math.sqrt(2 * math.pi), rel=0.03)  # E[max(0, σξ)]


# --- drift ---------------------------------------------------------------------------------------------------


def test_drift_hand_computed():
    m = PCMLikeNoiseModel()
    g_prog = torch.tensor([10.0, 25.0, 0.0, 3.0])
    nu = torch.tensor([0.05, 0.1, 0.07, 0.0])
    for t in STANDARD_TIMES_S:
        expected = [10.0 * ((t + 20.0) / 20.0) ** -0.05, 25.0 * ((t + 20.0) / 20.0) ** -0.1, 0.0, 3.0]
        torch.testing.assert_close(m.drift(g_prog, t, nu), torch.tensor(expected), rtol=1e-6, atol=0)
    # t_inference = 0 is the read at t_0: no drift
    torch.testing.assert_close(m.drift(g_prog, 0.0, nu), g_prog)
    # several times at once: [T, 1] with [n] -> [T, n]
    t = torch.tensor([1.0, 3600.0])[:, None]
    out = m.drift(g_prog, t, nu)
    assert out.shape == (2, 4)
    torch.testing.assert_close(out[1], m.drift(g_prog, 3600.0, nu))


def test_nu_mean_and_spread_follow_the_fit():
    targets = [0.0, 0.25, 2.5, 12.5, 25.0]  # r = 0 (clip), 0.01, 0.1, 0.5, 1
    nu = PCMLikeNoiseModel().sample_nu(levels(targets), gen(4))
    assert nu.min().item() >= 0.0
    for i, gt in enumerate(targets):
        mean, std = folded_normal_moments(*nu_normal_ref(gt))
        assert nu[i].mean().item() == pytest.approx(mean, abs=5 * std / math.sqrt(N))
        assert nu[i].std().item() == pytest.approx(std, rel=0.03)
    # drift_scale multiplies ν
    nu2 = PCMLikeNoiseModel(drift_scale=2.0).sample_nu(levels(targets), gen(4))
    torch.testing.assert_close(nu2, 2.0 * nu)


def test_read_noise_std_follows_1_over_f_fit():
    m = PCMLikeNoiseModel()
    # 0.1 µS: 0.0088 / (0.1/25)^0.65 = 0.32 > q_max, so the 1/f amplitude is clipped to q_max = 0.2 there (0.5 µS
    # gives 0.0088 / 0.02^0.65 = 0.11, not clipped); the others span the unclipped fit
    targets = [0.1, 0.5, 5.0, 12.5, 25.0]
    assert read_rel_sigma_ref(0.1, 0.0) == 0.2 * math.sqrt(math.log((T_0 + T_READ) / (2 * T_READ)))
    assert read_rel_sigma_ref(0.5, 0.0) < 0.2 * math.sqrt(math.log((T_0 + T_READ) / (2 * T_READ)))
    g = levels(targets)
    for t in (0.0, 3600.0, STANDARD_TIMES_S[-1]):
        out = m.read_noise(g, t, gen(5), g_prog_uS=g)
        for i, gp in enumerate(targets):
            # g_t = max(0, g·(1 + rel·ξ)): rectified normal with mean g, std g·rel (the clip at 0 matters where
            # rel is large: 0.1 and 0.5 µS)
            mean, std = relu_normal_moments(gp, gp * read_rel_sigma_ref(gp, t))
            assert out[i].std().item() == pytest.approx(std, rel=0.03)
            assert abs(out[i].mean().item() - mean) < 5 * std / math.sqrt(N)


def test_pcm_noises_are_the_hand_written_fits_sample_by_sample():
    """The statistical checks above allow 3 % on a std, more than some plausible slips change it (``ln((t +
    t_read)/t_read)`` instead of ``/(2 t_read)`` moves the read noise by 1-2 %). Each method draws one standard
    normal per element from ``generator`` (its contract), so with those same ξ (torch's own stream of the seed)
    every output is the hand-written fit: programming ``max(0, g + s_prog·σ_prog(g)·ξ)``, drift exponents
    ``s_drift·|μ_ν(g) + σ_ν(g)·ξ|``, read noise ``max(0, g + g·s_read·rel(g_prog, t)·ξ)`` (the q_max clip and the
    amplitude from ``g_prog``, not the drifted ``g``, included)."""
    g_prog = torch.tensor([0.01, 0.1, 0.5, 2.0, 5.0, 12.5, 25.0], dtype=torch.float64)
    xi = torch.randn(g_prog.shape, generator=gen(11), dtype=torch.float64)
    scaled = PCMLikeNoiseModel(prog_noise_scale=1.5, drift_scale=2.0)
    sig = torch.tensor([prog_sigma_ref(g) for g in g_prog.tolist()], dtype=torch.float64)
    torch.testing.assert_close(scaled.program(g_prog, gen(11)), (g_prog + 1.5 * sig * xi).clamp_min(0.0),
                               rtol=1e-12, atol=0)
    mu_nu, sig_nu = (torch.tensor(v, dtype=torch.float64) for v in zip(*(nu_normal_ref(g) for g in g_prog.tolist())))
    torch.testing.assert_close(scaled.sample_nu(g_prog, gen(11)), 2.0 * (mu_nu + sig_nu * xi).abs(), rtol=1e-12,
                               atol=0)
    m = PCMLikeNoiseModel()
    g_drift = 0.8 * g_prog
    for t in (0.0, 3600.0, STANDARD_TIMES_S[-1]):
        out = m.read_noise(g_drift, t, gen(11), g_prog_uS=g_prog)
        rel = torch.tensor([read_rel_sigma_ref(gp, t) for gp in g_prog.tolist()], dtype=torch.float64)
        torch.testing.assert_close(out, (g_drift + g_drift * rel * xi).clamp_min(0.0), rtol=1e-12, atol=0)
    half = PCMLikeNoiseModel(read_noise_scale=0.5).read_noise(g_drift, 3600.0, gen(11), g_prog_uS=g_prog)
    rel = torch.tensor([read_rel_sigma_ref(gp, 3600.0) for gp in g_prog.tolist()], dtype=torch.float64)
    torch.testing.assert_close(half, (g_drift + 0.5 * g_drift * rel * xi).clamp_min(0.0), rtol=1e-12, atol=0)


@settings(max_examples=25, deadline=None)
@given(
    g=st.lists(st.floats(0.0, 40.0), min_size=1, max_size=30),
    t=st.floats(0.0, 1e9),
    read_scale=st.floats(0.0, 30.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_conductance_never_negative(g, t, read_scale, seed):
    m = PCMLikeNoiseModel(read_noise_scale=read_scale, prog_noise_scale=5.0)
    gt = torch.tensor(g)
    g_prog = m.program(gt, gen(seed))
    nu = m.sample_nu(gt, gen(seed + 1))
    g_t = m.at_time(g_prog, nu, t, gen(seed + 2))
    assert g_prog.min().item() >= 0.0 and g_t.min().item() >= 0.0 and torch.isfinite(g_t).all()
    assert (m.drift(g_prog, t, nu) <= g_prog).all()  # drift only lowers a conductance


# --- agreement with aihwkit ----------------------------------------------------------------------------------


def _close_stats(a: torch.Tensor, b: torch.Tensor, std_rel: float = 0.04, n_se: float = 5.0) -> None:
    """Rows of a and b have equal means (n_se standard errors of the difference) and stds (relative std_rel)."""
    ma, mb, sa, sb = a.mean(-1), b.mean(-1), a.std(-1), b.std(-1)
    se = torch.sqrt((sa**2 + sb**2) / a.shape[-1])
    assert ((ma - mb).abs() <= n_se * se + 1e-12).all(), (ma, mb, se)
    assert ((sa / sb - 1.0).abs() <= std_rel).all(), (sa, sb)


@pytest.fixture(scope="module")
def aihw_pcm():
    inference = pytest.importorskip("aihwkit.inference")  # aihwkit is a project dependency; lazy import only
    return inference.PCMLikeNoiseModel


def test_conductance_level_agrees_with_aihwkit(aihw_pcm):
    ref = aihw_pcm(g_max=25.0)
    ours = PCMLikeNoiseModel()
    g = levels([0.5, 2.0, 8.0, 15.0, 25.0])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        ref_prog = ref.apply_programming_noise_to_conductance(g.clone())
        ref_nu = ref.generate_drift_coefficients(g.clone())
        ref_t = {t: ref.apply_drift_noise_to_conductance(ref_prog, ref_nu, t) for t in (3600.0, 86400.0 * 365)}
    ours_prog = ours.program(g, gen(7))
    ours_nu = ours.sample_nu(g, gen(8))
    _close_stats(ours_prog, ref_prog)
    _close_stats(ours_nu, ref_nu)
    for i, (t, r) in enumerate(ref_t.items()):
        _close_stats(ours.at_time(ours_prog, ours_nu, t, gen(9 + i)), r)


def mean_drift_factor(g_target: float, t_inf: float) -> float:
    """E[((t_inf + t_0)/t_0)^(−ν)] over ν = |μ + σξ| of the hand-written fit (Gauss–Hermite quadrature)."""
    x, wts = np.polynomial.hermite_e.hermegauss(80)
    mu, sig = nu_normal_ref(g_target)
    nu = np.abs(mu + sig * x)
    return float(np.sum(wts * ((t_inf + T_0) / T_0) ** -nu) / np.sqrt(2 * np.pi))


def test_weight_level_agrees_with_aihwkit(aihw_pcm):
    """Programmed and drifted weights (single pair, max|w| -> 25 µS) match aihwkit's apply_* API.

    Read noise is off here: aihwkit re-maps the already programmed weights with a new scale (max|w_prog|)
    before adding read noise, which changes its amplitude by a few %; read noise is compared on conductances.

    One known difference, checked exactly: aihwkit drifts the *net* programmed weight with the ν of the
    device that carries the weight; here each device of the pair drifts with its own ν. The device targeted
    at 0 µS holds E[max(0, σ_prog(0)·ξ)] = 0.26348/sqrt(2π) µS after programming and drifts faster (ν ≈ 0.1),
    so the mean weight differs by sign(w)·E[g_small]·(E[f(ν_big)] − E[f(ν_small)])/25 µS.
    """
    ref = aihw_pcm(g_max=25.0, read_noise_scale=0.0)
    ours = PCMLikeNoiseModel(read_noise_scale=0.0)
    values = [-1.0, -0.6, 0.3, 0.8]
    w = levels(values)
    times = [3600.0, 31_536_000.0]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(321)
        ref_wp, ref_nus = ref.apply_programming_noise(w.clone())
        ref_wt = [ref.apply_drift_noise(ref_wp, ref_nus, t) for t in times]
    prog = program_weights(w, ours, gen(11))
    ours_wt = read_weights_at(prog, times, ours, gen(12), compensate_drift=False)
    _close_stats(prog.weights, ref_wp)
    g_small = 0.26348 / math.sqrt(2 * math.pi)
    for k, t in enumerate(times):
        offset = torch.tensor([math.copysign(g_small, v) / 25.0 * (mean_drift_factor(25.0 * abs(v), t)
                                                                   - mean_drift_factor(0.0, t)) for v in values])
        assert (offset.abs() > 0).all()
        _close_stats(ours_wt[k] - offset[:, None], ref_wt[k])


def test_to_and_from_aihwkit(aihw_pcm):
    ours = PCMLikeNoiseModel(g_max=40.0, prog_noise_scale=0.7, read_noise_scale=1.5, drift_scale=0.5,
                             t_0=10.0, prog_coeff=(0.1, 0.5), prog_coeff_g_max_reference=40.0)
    a = ours.to_aihwkit()
    assert isinstance(a, aihw_pcm)
    assert (a.g_max, a.t_0, a.t_read, a.prog_noise_scale, a.read_noise_scale, a.drift_scale) == (
        40.0, 10.0, 250e-9, 0.7, 1.5, 0.5)
    assert list(a.prog_coeff) == [0.1, 0.5] and a.prog_coeff_g_max_reference == 40.0
    assert PCMLikeNoiseModel.from_aihwkit(a) == ours
    assert PCMLikeNoiseModel.from_aihwkit(aihw_pcm(g_max=25.0)) == PCMLikeNoiseModel()
    with pytest.raises(ValueError, match=r"^PCMLikeNoiseModel\.read_noise_q_max must be aihwkit's fixed value"):
        PCMLikeNoiseModel(read_noise_q_max=0.3).to_aihwkit()


# --- weights: apply_inference_noise ----------------------------------------------------------------------


def test_shapes_dtype_and_default_times():
    w = torch.randn(3, 5, 7, generator=gen(20))
    out = apply_inference_noise(w, generator=gen(21))
    assert out.shape == (4, 3, 5, 7) and out.dtype == torch.float32
    assert apply_inference_noise(w, 60.0, generator=gen(21)).shape == (1, 3, 5, 7)
    w64 = w.double()
    out64 = apply_inference_noise(w64, [1.0, 2.0], generator=gen(21))
    assert out64.shape == (2, 3, 5, 7) and out64.dtype == torch.float64 and out64.device == w.device
    scalar = apply_inference_noise(torch.tensor(0.5), [1.0, 10.0], generator=gen(21))
    assert scalar.shape == (2,)
    # a single weight compensates onto its programmed magnitude: the same |w| at both times, near 0.5
    torch.testing.assert_close(scalar.abs()[0], scalar.abs()[1])
    assert abs(scalar[0].item() - 0.5) < 5 * prog_sigma_ref(25.0) / 25.0 * 0.5


def test_deterministic_under_seed():
    w = torch.randn(16, 32, generator=gen(30))
    a = apply_inference_noise(w, STANDARD_TIMES_S, generator=gen(31))
    b = apply_inference_noise(w, STANDARD_TIMES_S, generator=gen(31))
    c = apply_inference_noise(w, STANDARD_TIMES_S, generator=gen(32))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # the same as programming once and reading afterwards with the same generator
    g = gen(31)
    prog = program_weights(w, PCMLikeNoiseModel(), g)
    assert torch.equal(read_weights_at(prog, STANDARD_TIMES_S, PCMLikeNoiseModel(), g), a)


def test_ideal_and_hand_computed_generic_drift():
    w = torch.tensor([[0.5, -1.0, 0.0], [0.25, 0.75, -0.125]])
    ideal = apply_inference_noise(w, STANDARD_TIMES_S, NoDrift(), generator=gen(), compensate_drift=False)
    torch.testing.assert_close(ideal, w.expand(4, 2, 3), rtol=1e-6, atol=1e-7)
    m = GenericDriftModel(nu_mean=0.06)  # every device drifts with ν = 0.06, no noise
    out = apply_inference_noise(w, STANDARD_TIMES_S, m, generator=gen(), compensate_drift=False)
    for k, t in enumerate(STANDARD_TIMES_S):
        torch.testing.assert_close(out[k], w * ((t + 20.0) / 20.0) ** -0.06, rtol=1e-5, atol=1e-7)
    # a uniform drift is exactly undone by the global compensation
    comp = apply_inference_noise(w, STANDARD_TIMES_S, m, generator=gen())
    torch.testing.assert_close(comp, w.expand(4, 2, 3), rtol=1e-5, atol=1e-7)


def test_generic_model_noises_are_the_documented_formulas_sample_by_sample():
    """GenericDriftModel's three noises, each with the standard normals ξ its ``generator`` gives (one per element,
    torch's own stream of the seed): programming ``max(0, g + prog_noise_std·ξ)`` (additive, µS), drift exponents
    ``|nu_mean + nu_std·ξ|``, read noise ``max(0, g·(1 + read_noise_std·ξ))`` (relative), at any time."""
    m = GenericDriftModel(prog_noise_std=0.4, nu_mean=0.01, nu_std=0.03, read_noise_std=2.0)
    g = torch.tensor([0.0, 0.3, 2.0, 0.1, 25.0], dtype=torch.float64)
    xi = torch.randn(g.shape, generator=gen(3), dtype=torch.float64)
    # the seed draws ξ_3 ≈ -0.61: the clip at 0 (programming, read noise) and the fold of ν are all exercised
    assert 0.1 + 0.4 * xi[3] < 0 and 0.01 + 0.03 * xi[3] < 0 and 1 + 2.0 * xi[3] < 0
    torch.testing.assert_close(m.program(g, gen(3)), (g + 0.4 * xi).clamp_min(0.0), rtol=1e-12, atol=0)
    torch.testing.assert_close(m.sample_nu(g, gen(3)), (0.01 + 0.03 * xi).abs(), rtol=1e-12, atol=0)
    for t in (0.0, 3600.0):
        torch.testing.assert_close(m.read_noise(g, t, gen(3)), (g * (1.0 + 2.0 * xi)).clamp_min(0.0), rtol=1e-12,
                                   atol=0)


def test_fixed_w_max_saturates_and_scales():
    w = torch.tensor([2.0, -3.0, 0.5, -0.25])
    out = apply_inference_noise(w, 1.0, NoDrift(), generator=gen(), w_max=1.0, compensate_drift=False)
    torch.testing.assert_close(out[0], torch.tensor([1.0, -1.0, 0.5, -0.25]))
    prog = program_weights(w, NoDrift(), gen(), w_max=1.0, g_min_uS=1.0)
    torch.testing.assert_close(prog.g_target_uS, torch.tensor([[25.0, 1.0, 13.0, 1.0], [1.0, 25.0, 1.0, 7.0]]))


def test_drift_compensation_restores_mean_abs_weight():
    w = torch.randn(32, 64, generator=gen(40))
    # only the ν spread and its conductance dependence: programmed weights are the targets
    m = PCMLikeNoiseModel(prog_noise_scale=0.0, read_noise_scale=0.0)
    raw = apply_inference_noise(w, STANDARD_TIMES_S, m, generator=gen(41), compensate_drift=False)
    comp = apply_inference_noise(w, STANDARD_TIMES_S, m, generator=gen(41))
    mean_abs = w.abs().mean()
    assert (raw.abs().mean(dim=(1, 2)) < mean_abs).all()  # drift shrinks the weights
    torch.testing.assert_close(comp.abs().mean(dim=(1, 2)), mean_abs.expand(4), rtol=1e-5, atol=0)
    # full noise: the reference is the programmed weights, Σ|w_t| = Σ|w_prog| at each time
    g = gen(42)
    full = PCMLikeNoiseModel()
    prog = program_weights(w, full, g)
    out = read_weights_at(prog, STANDARD_TIMES_S, full, g)
    torch.testing.assert_close(out.abs().sum(dim=(1, 2)), prog.weights.abs().sum().expand(4), rtol=1e-5, atol=0)


def test_per_tile_compensation():
    w = torch.randn(3, 16, 16, generator=gen(50)) * torch.tensor([0.2, 1.0, 3.0])[:, None, None]
    g = gen(51)
    m = PCMLikeNoiseModel()
    prog = program_weights(w, m, g)
    out = read_weights_at(prog, [3600.0, 86400.0], m, g, compensation_dims=(1, -1))
    torch.testing.assert_close(out.abs().sum(dim=(2, 3)), prog.weights.abs().sum(dim=(1, 2)).expand(2, 3),
                               rtol=1e-5, atol=0)


def test_weight_error_grows_with_time():
    w = torch.randn(64, 256, generator=gen(60))

    def rel_err(out: torch.Tensor) -> list[float]:
        return [((o - w).norm() / w.norm()).item() for o in out]

    comp = rel_err(apply_inference_noise(w, STANDARD_TIMES_S, generator=gen(61)))
    raw = rel_err(apply_inference_noise(w, STANDARD_TIMES_S, generator=gen(61), compensate_drift=False))
    assert all(a < b for a, b in zip(comp, comp[1:])), comp
    assert all(a < b for a, b in zip(raw, raw[1:])), raw
    assert comp[-1] < raw[-1]  # compensation removes the mean decay; the ν spread and read noise remain
    assert 0.02 < comp[0] < 0.2 and raw[-1] > 0.3  # programming noise ≈ several %; 1 year of drift ≈ −50 %


@settings(max_examples=25, deadline=None)
@given(
    shape=st.lists(st.integers(1, 6), min_size=1, max_size=3),
    times=st.lists(st.floats(0.0, 1e8), min_size=1, max_size=4),
    nu_std=st.floats(0.0, 0.05),
    seed=st.integers(0, 2**31 - 1),
)
def test_compensation_invariant_generic(shape, times, nu_std, seed):
    w = torch.randn(shape, generator=gen(seed))
    m = GenericDriftModel(prog_noise_std=0.5, nu_mean=0.05, nu_std=nu_std, read_noise_std=0.02)
    g = gen(seed + 1)
    prog = program_weights(w, m, g)
    out = read_weights_at(prog, times, m, g)
    assert out.shape == (len(times), *shape) and torch.isfinite(out).all()
    dims = tuple(range(1, out.ndim))
    torch.testing.assert_close(out.abs().sum(dim=dims), prog.weights.abs().sum().expand(len(times)),
                               rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_weights_are_programmed_in_float32(dtype):
    """float16 cannot hold a year in seconds (3.2e7 > 65504) nor the read noise's time terms: half-precision
    weights are programmed and read in float32 and returned in their own dtype — the float32 result of the same
    weights and seed, rounded."""
    from devices import STANDARD_TIMES_S, apply_inference_noise

    w = (0.3 * torch.randn(16, 16, generator=torch.Generator().manual_seed(0))).to(dtype)
    out = apply_inference_noise(w, STANDARD_TIMES_S, generator=torch.Generator().manual_seed(1))
    ref = apply_inference_noise(w.float(), STANDARD_TIMES_S, generator=torch.Generator().manual_seed(1))
    assert out.dtype == dtype and bool(torch.isfinite(out).all())
    assert torch.equal(out, ref.to(dtype))


def test_g_max_uS_other_than_the_models_agrees_with_aihwkit_at_that_g_max(aihw_pcm):
    """``program_weights(..., g_max_uS=50)`` with a 25 µS model: aihwkit maps weights with its converter's g_max,
    which is also the g_max of every fit (x = g/g_max, σ_prog·g_max/25 µS, ν(g/g_max), q(g/g_max)). The
    programmed conductances, ν and the read noise must have the statistics of aihwkit's model at g_max = 50 µS."""
    targets = [2.0, 10.0, 30.0, 50.0]  # µS on G⁺ (w = g/50 with w_max = 1)
    w = levels([g / 50.0 for g in targets])
    ref = aihw_pcm(g_max=50.0)
    g = levels(targets)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(77)
        ref_prog = ref.apply_programming_noise_to_conductance(g.clone())
        ref_nu = ref.generate_drift_coefficients(g.clone())
    prog = program_weights(w, PCMLikeNoiseModel(), gen(78), g_max_uS=50.0, w_max=1.0)
    torch.testing.assert_close(prog.g_target_uS[0], g)
    _close_stats(prog.g_prog_uS[0], ref_prog)
    _close_stats(prog.nu[0], ref_nu)
    # hand-written σ_prog at g_max = 50 µS: (0.26348 + 1.9650 x − 1.1731 x²)·50/25, x = g/50
    for i, gt in enumerate(targets):
        assert prog.g_prog_uS[0, i].std().item() == pytest.approx(prog_sigma_ref(gt, 50.0), rel=0.03)
    # read noise through read_weights_at (no programming noise, no drift: G⁻ stays at 0 µS)
    quiet_ref = aihw_pcm(g_max=50.0, prog_noise_scale=0.0, drift_scale=0.0)
    quiet = PCMLikeNoiseModel(prog_noise_scale=0.0, drift_scale=0.0)
    t = 86400.0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(79)
        ref_t = quiet_ref.apply_drift_noise_to_conductance(g.clone(), torch.zeros_like(g), t)
    qprog = program_weights(w, quiet, gen(80), g_max_uS=50.0, w_max=1.0)
    ours_t = read_weights_at(qprog, t, quiet, gen(81), compensate_drift=False)[0] * 50.0
    _close_stats(ours_t, ref_t)


def test_g_max_uS_of_a_model_that_is_not_a_dataclass_is_rejected():
    from devices.inference import InferenceNoiseModel

    class Plain(InferenceNoiseModel):  # not a dataclass: its g_max cannot be replaced
        g_max = 25.0
        t_0 = 20.0

        def program(self, g_target_uS, generator):
            return g_target_uS

        def sample_nu(self, g_target_uS, generator):
            return torch.zeros_like(g_target_uS)

        def read_noise(self, g_drift_uS, t_inference_s, generator, g_prog_uS=None):
            return g_drift_uS

    w = torch.ones(3)
    assert torch.equal(program_weights(w, Plain(), gen()).g_prog_uS[0], torch.full((3,), 25.0))
    with pytest.raises(ValueError, match=r"^program_weights\.g_max_uS must be .*Plain"):
        program_weights(w, Plain(), gen(), g_max_uS=50.0)


def test_programming_detaches_from_the_input_weights():
    """Programming is a write onto devices, not a differentiable op: nothing it returns carries grad history
    (and the weights it reads back are the same numbers as for the detached input)."""
    w = torch.randn(4, 5, generator=gen(90), requires_grad=True)
    prog = program_weights(2.0 * w, PCMLikeNoiseModel(), gen(91))
    for name in ("g_target_uS", "g_prog_uS", "nu"):
        t = getattr(prog, name)
        assert not t.requires_grad and t.grad_fn is None, name
    assert not prog.weights.requires_grad
    out = read_weights_at(prog, [1.0, 3600.0], PCMLikeNoiseModel(), gen(92))
    assert not out.requires_grad and out.grad_fn is None
    assert not apply_inference_noise(w, 1.0, generator=gen(93)).requires_grad
    ref = program_weights(2.0 * w.detach(), PCMLikeNoiseModel(), gen(91))
    assert torch.equal(prog.g_prog_uS, ref.g_prog_uS) and torch.equal(prog.nu, ref.nu)


def test_from_aihwkit_with_both_prog_coeff_arguments(aihw_pcm):
    """aihwkit 1.1 does not store ``prog_coeff_g_max_reference`` when ``prog_coeff`` is also given (its own
    programming then fails with AttributeError): the conversion names the missing field instead of passing the
    AttributeError on, and converts once the value is set on the aihwkit model."""
    a = aihw_pcm(prog_coeff=[0.1, 1.0, -0.5], g_max=25.0, prog_coeff_g_max_reference=30.0)
    with pytest.raises(AttributeError):
        a.apply_programming_noise_to_conductance(torch.ones(3))  # aihwkit 1.1 itself cannot use this model
    with pytest.raises(ValueError, match=r"^PCMLikeNoiseModel\.from_aihwkit: .*prog_coeff_g_max_reference"):
        PCMLikeNoiseModel.from_aihwkit(a)
    a.prog_coeff_g_max_reference = 30.0
    ours = PCMLikeNoiseModel.from_aihwkit(a)
    assert ours == PCMLikeNoiseModel(prog_coeff=(0.1, 1.0, -0.5), prog_coeff_g_max_reference=30.0)
    # σ_prog at g = 25 µS: (0.1 + 1.0 − 0.5)·25/30 µS, as aihwkit's model (now usable) draws it
    g = levels([25.0])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        ref = a.apply_programming_noise_to_conductance(g.clone())
    assert ref.std().item() == pytest.approx(0.6 * 25.0 / 30.0, rel=0.03)
    _close_stats(ours.program(g, gen(6)), ref)
