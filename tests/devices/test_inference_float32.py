"""devices/inference.py at float32's edges: fields (and times) whose combination overflowed or underflowed float32.

Each field below was valid alone, yet gave NaN (or all-zero) weights read back in float32, the simulator's tensors'
type; the refusal names the field and its range. The limits are the documented worst cases, typed in here: every
standard normal ``|ξ| <= NORMAL_DRAW_MAX = 9``, targets in ``[0, g_max]``, and a 2⁻¹⁶ margin below float32's
largest number for the formulas' roundings. Just inside each limit the weights read back are finite.
"""

from __future__ import annotations

import dataclasses
import math
import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
import torch

from devices.base import FLOAT32_MAX, FLOAT32_TINY
from devices.inference import (
    STANDARD_TIMES_S,
    GenericDriftModel,
    NoDrift,
    PCMLikeNoiseModel,
    apply_inference_noise,
    program_weights,
    read_weights_at,
)

F32 = FLOAT32_MAX * (1.0 - 2.0**-16)   # float32's largest less the documented rounding margin
SQRT_LN = math.sqrt(math.log(FLOAT32_MAX))  # the largest sqrt(ln(ratio)) of a float32 ratio: 9.42
XI = 9.0                                # NORMAL_DRAW_MAX
PCM_SIGMA_MAX = 0.26348 + 1.9650 + 1.1731  # Σ|prog_coeff| of aihwkit's fit (µS at g_max = 25 µS = the reference)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_finite_reads(model, w: torch.Tensor | None = None, times=STANDARD_TIMES_S, **kw) -> torch.Tensor:
    """Weights read back at ``times`` (default 4 weights): finite and, at every time, not all 0."""
    w = torch.tensor([0.5, -1.0, 0.25, 0.0]) if w is None else w
    out = apply_inference_noise(w, times, model, generator=gen(), **kw)
    assert torch.isfinite(out).all(), out
    assert (out != 0).flatten(1).any(dim=1).all(), out
    return out


# --- refused where the model is made -------------------------------------------------------------------------------

PCM_REFUSED = [
    # (field, value, other fields, the limit as the message states it, why it failed before)
    ("g_max", 1e-45, {}, "1.18e-38 µS", "g/g_max overflowed: ln(g/g_max) = inf, 0·inf = NaN for a zero slope"),
    ("t_read", 1e-45, {}, "t_0/3.4e+38) = 5.877e-38 s", "(t_0 + t_read)/(2 t_read) = inf: NaN read conductances"),
    ("t_read", 1e-38, {}, "5.877e-38 s", "normal, yet 20 s/(2e-38) overflows: NaN read conductances"),
    ("prog_coeff", (3e38, 3e38, 0.0), {}, "at most 3.403e+38", "σ_prog = inf at g_max: NaN programmed conductances"),
    ("prog_coeff_g_max_reference", 1e-38, {}, f"= {25.0 * PCM_SIGMA_MAX / F32:.4g} µS",
     "g_max/reference = 2.5e39 = inf in float32: NaN programmed conductances"),
    ("prog_coeff_g_max_reference", 1e-40, {"prog_coeff": (1e-20,)}, f"= {25.0 / F32:.4g} µS",
     "the factor alone overflows even for a tiny σ_prog: 1e-20·inf"),
    ("prog_noise_scale", 1e38, {}, f"= {(F32 - 25.0) / (XI * PCM_SIGMA_MAX):.4g}", "σ_prog·ξ overflowed"),
    ("drift_nu_std_range", (0.0, 1e38), {}, f"= {(F32 - 0.1) / XI:.4g}", "σ_ν·ξ overflowed: ν = inf, NaN"),
    ("drift_scale", 1e38, {"drift_nu_mean_range": (0.049, 10.0)}, f"= {F32 / (10.0 + XI * 0.045):.4g}",
     "ν = drift_scale·|μ + σξ| overflowed"),
    ("read_noise_q_max", 3e38, {"read_noise_coeff": 3e38}, f"= {F32 / SQRT_LN:.4g}",
     "q·sqrt(ln(...)) = inf, times read_noise_scale 0: NaN"),
    ("read_noise_scale", 1e37, {}, None, "|g|·σ_read·ξ overflowed"),
]


@pytest.mark.parametrize("field,value,others,limit,why", PCM_REFUSED, ids=[f"{r[0]}={r[1]!r}" for r in PCM_REFUSED])
def test_pcm_fields_overflowing_float32_are_refused(field, value, others, limit, why):
    with pytest.raises(ValueError) as err:
        PCMLikeNoiseModel(**others, **{field: value})
    msg = str(err.value)
    assert msg.startswith(f"PCMLikeNoiseModel.{field} must be"), msg
    assert msg.endswith(f", got {value!r}"), msg
    if limit is not None:
        assert limit in msg, msg


@pytest.mark.parametrize("ref", [1e36, 1e33, 1e30])
def test_a_reference_whose_factor_is_below_float32s_normal_range_keeps_the_noise(ref):
    """g_max = 1e-10 µS, coefficients fitted at ``ref`` µS of magnitude ref/100: σ_prog = (ref/100)·1e-10/ref =
    1e-12 µS, 1 % of g_max, whatever ref. In float32 the factor g_max/ref was 0 at ref = 1e36 (1e-46: the
    programming noise silently off) and subnormal at 1e33 (9.949e-44: σ_prog 0.5 % too small) and at 1e30."""
    m = PCMLikeNoiseModel(g_max=1e-10, prog_coeff=(ref / 100.0,), prog_coeff_g_max_reference=ref)
    g = torch.full((20000,), 5e-11)
    torch.testing.assert_close(m.prog_std(g[:3]), torch.full((3,), 1e-12), rtol=2**-23, atol=0)
    noise = (m.program(g, gen()) - g).double()
    assert noise.std().item() == pytest.approx(1e-12, rel=0.03)  # 20000 draws: the std's own spread is 0.5 %


def test_a_g_max_uS_given_at_programming_keeps_the_noise_of_a_far_reference():
    """program_weights re-normalizes the model at g_max_uS = 1e-9 µS: the factor 1e-9/1e38 = 1e-47 is 0 in float32
    (before: every G⁺ programmed exactly); σ_prog = 1e36·1e-47 = 1e-11 µS, 1 % of g_max."""
    m = PCMLikeNoiseModel(prog_coeff=(1e36,), prog_coeff_g_max_reference=1e38)
    prog = program_weights(torch.tensor([1.0, 0.5, 0.75]), m, gen(), g_max_uS=1e-9)
    g_plus = prog.g_target_uS[0].double()
    torch.testing.assert_close(g_plus, torch.tensor([1e-9, 5e-10, 7.5e-10], dtype=torch.float64), rtol=1e-6, atol=0)
    dev = (prog.g_prog_uS[0].double() - g_plus).abs()
    assert ((dev > 0) & (dev < 9 * 1e-11)).all(), dev


def test_a_reference_far_above_g_max_scales_the_noise_down():
    """Legitimate: σ_prog = (Σ c_i x^i)·g_max/reference, e.g. aihwkit's fit at 25 µS used with a 1e6 µS reference
    is 2.5e-5 of it: 0.26348·2.5e-5 = 6.587e-6 µS at x = 0 and (0.26348 + 1.9650 − 1.1731)·2.5e-5 = 2.6370e-5 µS
    at x = 1; at 1e30 µS the noise (~1e-29 µS) is far below float32's resolution of 25 µS: the targets come back."""
    m = PCMLikeNoiseModel(prog_coeff_g_max_reference=1e6)
    expected = torch.tensor([0.26348 * 2.5e-5, (0.26348 + 1.9650 - 1.1731) * 2.5e-5])
    torch.testing.assert_close(m.prog_std(torch.tensor([0.0, 25.0])), expected, rtol=1e-5, atol=0)
    g = torch.tensor([5.0, 12.5, 25.0])
    assert torch.equal(PCMLikeNoiseModel(prog_coeff_g_max_reference=1e30).program(g, gen()), g)


def test_pcm_read_noise_scale_limit_is_stated_with_its_inputs():
    # g_hi = 25 + 9·1·Σ|c| µS (the largest programmed conductance), q_hi = min(0.2, 0.0088/1e-3) = 0.2
    g_hi = 25.0 + XI * PCM_SIGMA_MAX
    limit = (F32 / g_hi - 1.0) / (XI * 0.2 * SQRT_LN)
    stated = re.escape(f"{limit:.4g}")
    with pytest.raises(ValueError, match=rf"^PCMLikeNoiseModel\.read_noise_scale must be <= .* = {stated}, "
                                         rf"with g_hi = .* = {g_hi:.4g} µS .* q_hi = .* = 0\.2 .*got 1e\+37$"):
        PCMLikeNoiseModel(read_noise_scale=1e37)


GENERIC_REFUSED = [
    ("t_0", 1e-45, {}, "1.18e-38 s", "(t + t_0)/t_0 = inf from t ~ 1e-7 s: NaN after compensation"),
    ("t_0", 1e-38, {}, "1.18e-38 s", "subnormal in float32 too: the same"),
    ("prog_noise_std", 1e38, {}, f"= {(F32 - 25.0) / XI:.4g} µS", "prog_noise_std·ξ overflowed: NaN weights"),
    ("nu_std", 1e38, {}, f"= {(F32 - 0.05) / XI:.4g}", "ν = inf: NaN weights"),
    ("read_noise_std", 1e38, {}, f"= {(F32 / 25.0 - 1.0) / XI:.4g}", "g·(1 + read_noise_std·ξ) overflowed"),
    ("read_noise_std", 1e37, {"prog_noise_std": 1e6}, f"= {(F32 / (25.0 + 9e6) - 1.0) / XI:.4g}",
     "the bound follows the largest programmed conductance g_max + 9·prog_noise_std"),
]


@pytest.mark.parametrize("field,value,others,limit,why", GENERIC_REFUSED,
                         ids=[f"{r[0]}={r[1]!r}" for r in GENERIC_REFUSED])
def test_generic_fields_overflowing_float32_are_refused(field, value, others, limit, why):
    with pytest.raises(ValueError) as err:
        GenericDriftModel(**others, **{field: value})
    msg = str(err.value)
    assert msg.startswith(f"GenericDriftModel.{field} must be"), msg
    assert msg.endswith(f", got {value!r}") and limit in msg, msg


def test_limits_are_where_float32_overflows():
    """Each limit is tight: at 1.01× it the formula's worst case (|ξ| = 9) is inf in float32, at the limit finite."""
    f32 = torch.float32
    g_max = torch.tensor(25.0, dtype=f32)
    prog = (F32 - 25.0) / XI                     # GenericDriftModel.prog_noise_std
    assert torch.isfinite(g_max + torch.tensor(prog, dtype=f32) * XI)
    assert torch.isinf(g_max + torch.tensor(1.01 * prog, dtype=f32) * XI)
    read = (F32 / 25.0 - 1.0) / XI               # GenericDriftModel.read_noise_std at prog_noise_std = 0
    assert torch.isfinite(g_max * (1.0 + torch.tensor(read, dtype=f32) * XI))
    assert torch.isinf(g_max * (1.0 + torch.tensor(1.01 * read, dtype=f32) * XI))
    t_read = 20.0 / FLOAT32_MAX                  # PCM t_read at t_0 = 20 s: the 1/f ratio at t_inference_s = 0
    assert torch.isfinite((torch.tensor(20.0, dtype=f32) + t_read) / (2.0 * t_read))
    assert torch.isinf((torch.tensor(20.0, dtype=f32) + t_read / 2.1) / (2.0 * t_read / 2.1))


@pytest.mark.parametrize("model", [
    GenericDriftModel(prog_noise_std=(F32 - 25.0) / XI),
    GenericDriftModel(read_noise_std=(F32 / 25.0 - 1.0) / XI),
    PCMLikeNoiseModel(prog_noise_scale=(F32 - 25.0) / (XI * PCM_SIGMA_MAX), read_noise_scale=0.0),
    PCMLikeNoiseModel(prog_coeff_g_max_reference=25.0 * PCM_SIGMA_MAX / F32, prog_noise_scale=0.0),
    PCMLikeNoiseModel(read_noise_scale=(F32 / (25.0 + XI * PCM_SIGMA_MAX) - 1.0) / (XI * 0.2 * SQRT_LN)),
    PCMLikeNoiseModel(read_noise_q_max=F32 / SQRT_LN, read_noise_coeff=F32 / SQRT_LN * 1e-3, read_noise_scale=0.0),
], ids=lambda m: repr(m)[:90])
def test_at_each_limit_the_weights_read_are_finite(model):
    """At each limit (accepted) the weights read back at 1 s … 1 year are finite and not all 0: 4 weights, so that
    the compensation's sum of |w| (up to 4·3.4e38/25) stays a float32 too."""
    assert_finite_reads(model)


@pytest.mark.parametrize("model", [
    GenericDriftModel(t_0=FLOAT32_TINY),
    PCMLikeNoiseModel(t_read=20.0 / FLOAT32_MAX),
    PCMLikeNoiseModel(g_max=FLOAT32_TINY, t_read=FLOAT32_TINY, t_0=FLOAT32_TINY),
], ids=lambda m: repr(m)[:90])
def test_at_the_time_limits_the_weights_read_are_finite(model):
    """The smallest t_0 / t_read: their times reach a few seconds (later ones are refused at the call, below)."""
    assert_finite_reads(model, times=[0.0, 1.0], g_max_uS=max(model.g_max, 1.0))


@pytest.mark.parametrize("spread", ["nu_std", "drift_scale"])
def test_the_largest_drift_spreads_read_finite_weights(spread):
    """ν up to 3.4e38 (nu_std at its limit, or PCM's largest drift_scale): almost every device drifts to 0 µS from
    1 s on (refused only where *every* device must: the drift-to-zero test below); the weights read back are finite."""
    model = (GenericDriftModel(nu_std=(F32 - 0.05) / XI) if spread == "nu_std"
             else PCMLikeNoiseModel(drift_scale=FLOAT32_MAX))  # its own limit, F32/0.505, is beyond float32
    out = apply_inference_noise(torch.linspace(-1.0, 1.0, 64), STANDARD_TIMES_S, model, generator=gen())
    assert torch.isfinite(out).all()


def test_the_limits_follow_a_g_max_uS_given_at_programming():
    """program_weights normalizes the model at another g_max_uS; the limits of that model apply (prog_noise_std's
    limit (3.4e38 − g_max)/9 shrinks by 1e37/9 at g_max_uS = 1e37 µS)."""
    m = GenericDriftModel(prog_noise_std=(F32 - 25.0) / XI)
    with pytest.raises(ValueError, match=r"^GenericDriftModel\.prog_noise_std must be <= .*= 3\.67\d*e\+37 µS"):
        program_weights(torch.ones(3), m, gen(), g_max_uS=1e37)


@pytest.mark.parametrize("w_max", [1e39, 1e-40, 1e-50])
def test_w_max_beyond_a_normal_float32_is_refused(w_max):
    """w_max = 1e39 is inf as a float32 (w/inf = 0, 0·inf = NaN weights); 1e-50 is 0 (0/0 = NaN); 1e-40 is subnormal
    (read weights 1.7e-42 for 0.5e-40)."""
    with pytest.raises(ValueError, match=rf"^program_weights\.w_max must be None or in \[1\.18e-38, 3\.4e\+38\], "
                                         rf"a normal float32 number .*got {re.escape(repr(w_max))}$"):
        program_weights(torch.ones(3), GenericDriftModel(), gen(), w_max=w_max)


@pytest.mark.parametrize("w_max,rel", [(FLOAT32_TINY, [0.0, 1.0, -1.0]), (FLOAT32_MAX, [0.0, 0.25, -0.5])])
def test_w_max_at_float32_edges_reads_the_weights(w_max, rel):
    # no noise, a uniform drift undone by the compensation: the weights come back (normal float32 numbers whose
    # |w| sum to one too: 2·1.18e-38, 0.75·3.4e38)
    w = torch.tensor(rel, dtype=torch.float64) * w_max
    out = apply_inference_noise(w.float(), [1.0, 3600.0], GenericDriftModel(), generator=gen(), w_max=w_max)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), w.expand(2, 3), rtol=1e-5, atol=0)


# --- refused at the call: times --------------------------------------------------------------------------------------


def test_a_time_whose_drift_ratio_overflows_is_refused():
    """t_0 = 1e-30 s (a normal float32): (t + t_0)/t_0 overflows from t ~ 3.4e8 s; before, ν > 0 then drifted every
    device to 0 µS (NaN after compensation). 1e8 s is finite: the drift factor 1e38^(-0.05) = 0.0126, undone by the
    compensation."""
    m = GenericDriftModel(t_0=1e-30)
    with pytest.raises(ValueError, match=r"^apply_inference_noise\.t_inference_s must be such that the drift's "
                                         r"\(t_inference_s \+ t_0\)/t_0 is a float32, .*t_inference_s up to about "
                                         r"3\.403e\+08 s.*got 1000000000\.0$"):
        apply_inference_noise(torch.ones(3), [1.0, 1e9], m, generator=gen())
    w = torch.tensor([0.5, -1.0, 0.25])
    raw = apply_inference_noise(w, 1e8, m, generator=gen(), compensate_drift=False)[0]
    torch.testing.assert_close(raw, w * (1e8 / 1e-30) ** -0.05, rtol=1e-5, atol=0)
    torch.testing.assert_close(apply_inference_noise(w, 1e8, m, generator=gen())[0], w, rtol=1e-5, atol=0)
    # NoDrift (ν = 0) reads the weights at any float32 time, even where the ratio overflows (x^0 = 1)
    ideal = apply_inference_noise(w, [1e9, FLOAT32_MAX], NoDrift(t_0=1e-30), generator=gen())
    torch.testing.assert_close(ideal, w.expand(2, 3), rtol=1e-6, atol=0)


def test_a_time_at_which_every_device_drifts_to_zero_is_refused():
    """ν = 10 for every device (nu_std = 0): ((t + 20)/20)^(-10) is below 1.18e-38 from t = 20·(e^8.734 − 1) =
    1.24e5 s on; before, 1 year read all-zero weights (NaN after compensation). At 1 day the factor is 4.4e-37 —
    a normal float32 — and the compensation restores the weights."""
    m = GenericDriftModel(nu_mean=10.0)
    limit = 20.0 * math.expm1(-math.log(FLOAT32_TINY) / 10.0)
    assert 1.23e5 < limit < 1.25e5
    stated = re.escape(f"{limit:.4g}")
    with pytest.raises(ValueError, match=rf"^apply_inference_noise\.t_inference_s must be such that the slowest drift "
                                         rf"factor .*\^\(-10\) is at least 1\.18e-38.* >= 10; t_0 = 20\.0 s: "
                                         rf"t_inference_s up to about {stated} s\).*got 31536000\.0$"):
        apply_inference_noise(torch.ones(3), STANDARD_TIMES_S, m, generator=gen())
    w = torch.tensor([0.5, -1.0, 0.25])
    raw = apply_inference_noise(w, 86400.0, m, generator=gen(), compensate_drift=False)[0]
    torch.testing.assert_close(raw.double(), w.double() * (86420.0 / 20.0) ** -10.0, rtol=1e-4, atol=0)
    torch.testing.assert_close(apply_inference_noise(w, 86400.0, m, generator=gen())[0], w, rtol=1e-4, atol=0)
    # the same limit at each entry point that takes a number of seconds
    prog = program_weights(w, m, gen())
    for call, name in [(lambda: read_weights_at(prog, [1.0, 1e6], m, gen()), "read_weights_at"),
                       (lambda: m.drift(prog.g_prog_uS, 1e6, prog.nu), "GenericDriftModel"),
                       (lambda: m.at_time(prog.g_prog_uS, prog.nu, 1e6, gen()), "GenericDriftModel")]:
        with pytest.raises(ValueError, match=rf"^{name}\.t_inference_s must be such that the slowest drift factor"):
            call()


def test_pcm_time_whose_read_noise_ratio_overflows_is_refused():
    """t_read = t_0 = 1e-30 s: the 1/f term's (t + t_0 + t_read)/(2·t_read) overflows from t ~ 6.8e8 s (before:
    ln = inf, NaN conductances); at 1e8 s it is 5e37 and the weights read back are finite."""
    m = PCMLikeNoiseModel(t_read=1e-30, t_0=1e-30)
    with pytest.raises(ValueError, match=r"^apply_inference_noise\.t_inference_s must be such that the 1/f read "
                                         r"noise's .*t_inference_s up to about 6\.806e\+08 s.*got 1000000000\.0$"):
        apply_inference_noise(torch.ones(3), 1e9, m, generator=gen())
    with pytest.raises(ValueError, match=r"^PCMLikeNoiseModel\.t_inference_s must be such that the 1/f read noise's"):
        m.read_noise(torch.ones(3), 1e9, gen())
    assert_finite_reads(m, times=[1.0, 1e8])


def test_nu_ranges_are_the_nine_sigma_bounds():
    # PCM: drift_scale·(max(0, μ_lo − 9 σ_hi), μ_hi + 9 σ_hi) with aihwkit's clip ranges
    assert PCMLikeNoiseModel().nu_range() == pytest.approx((0.0, 0.1 + 9 * 0.045))
    assert PCMLikeNoiseModel(drift_nu_mean_range=(1.0, 2.0), drift_scale=2.0).nu_range() == \
        pytest.approx((2.0 * (1.0 - 9 * 0.045), 2.0 * (2.0 + 9 * 0.045)))
    assert GenericDriftModel(nu_mean=0.5, nu_std=0.01).nu_range() == pytest.approx((0.41, 0.59))
    assert NoDrift().nu_range() == (0.0, 0.0)


# --- the drift compensation when the read sum underflows -------------------------------------------------------------


def test_compensation_of_a_read_sum_below_float32_range_is_finite():
    """63 weights of 1 drift to 0 µS (ν = 1000 at 1 h), one of 1e-37 keeps ν = 0: the compensation factor
    Σ|w_prog|/Σ|w_t| = 63/1e-37 overflows float32. Before: w_t·inf = inf there and 0·inf = NaN elsewhere. Now each
    weight is scaled by its share of the read sum: the survivor carries the whole programmed sum, the others 0."""
    w = torch.ones(64)
    w[5] = -1e-37
    m = GenericDriftModel(nu_mean=0.0)
    prog = program_weights(w, m, gen())
    nu = torch.full_like(prog.nu, 1000.0)
    nu[:, 5] = 0.0
    prog = dataclasses.replace(prog, nu=nu)
    out = read_weights_at(prog, [3600.0], m, gen())[0]
    ref = prog.weights.abs().double().sum().item()
    assert ref == pytest.approx(63.0, rel=1e-6)
    assert torch.isfinite(out).all()
    assert out[5].item() == pytest.approx(-ref, rel=1e-5)
    assert torch.count_nonzero(out) == 1
    # where the factor is finite the compensated weights are w_t·Σ|w_prog|/Σ|w_t|, as before
    w2 = torch.tensor([0.5, -1.0, 0.25])
    m2 = GenericDriftModel(nu_mean=0.2)
    prog2 = program_weights(w2, m2, gen())
    raw = read_weights_at(prog2, [3600.0], m2, gen(), compensate_drift=False)
    comp = read_weights_at(prog2, [3600.0], m2, gen())
    assert torch.equal(comp, raw * (prog2.weights.abs().sum() / raw.abs().sum()))


# --- tensors of times: the same rules as numbers ---------------------------------------------------------------------

BAD_TIME_TENSORS = [
    # (times, the value the message names, what it gave before the check)
    (torch.tensor(-1.0), "-1.0", "drift factor ((−1 + 20)/20)^(−ν) > 1: the conductance grew"),
    (torch.tensor(-100.0), "-100.0", "(−100 + 20)/20 < 0 to a fractional power: NaN"),
    (torch.tensor(math.nan), "nan", "NaN conductances"),
    (torch.tensor(math.inf), "inf", "every device drifted to 0 µS (PCM: NaN read noise)"),
    (torch.tensor([[1.0], [-50.0]]), "-50.0", "the second time's conductances NaN, the first's fine"),
    (torch.tensor([[1.0], [1e300]], dtype=torch.float64), "1e+300", "beyond float32: inf once cast to the weights'"),
]
TIME_MODELS = [GenericDriftModel(), PCMLikeNoiseModel(), NoDrift()]


@pytest.mark.parametrize("model", TIME_MODELS, ids=lambda m: type(m).__name__)
@pytest.mark.parametrize("times,named,before", BAD_TIME_TENSORS, ids=[r[1] for r in BAD_TIME_TENSORS])
def test_a_tensor_of_times_is_checked_as_numbers_are(model, times, named, before):
    g, nu = torch.tensor([10.0, 20.0]), torch.tensor([0.05, 0.1])
    name = type(model).__name__
    pattern = (rf"^{name}\.t_inference_s must be a finite number >= 0, at most 3\.4e\+38 in magnitude .*, "
               rf"got {re.escape(named)}$")
    for call in (lambda: model.drift(g, times, nu), lambda: model.read_noise(g, times, gen(), g_prog_uS=g),
                 lambda: model.at_time(g, nu, times, gen())):
        with pytest.raises(ValueError, match=pattern):
            call()


def test_a_tensor_of_times_meets_the_models_float32_limits():
    """ν = 10 for every device: from 1.24e5 s on every device drifts below 1.18e-38 µS (see above); a tensor holding
    such a time is refused like the number, a tensor of earlier times reads the hand-computed drift."""
    m = GenericDriftModel(nu_mean=10.0)
    g, nu = torch.tensor([10.0, 20.0]), torch.full((2,), 10.0)
    with pytest.raises(ValueError, match=r"^GenericDriftModel\.t_inference_s must be such that the slowest drift "
                                         r"factor .*got 1000000\.0$"):
        m.drift(g, torch.tensor([[1.0], [1e6]]), nu)
    t = torch.tensor([[0.0], [20.0], [86400.0]])
    expected = torch.tensor([[10.0, 20.0], [10.0 * 2.0**-10, 20.0 * 2.0**-10],
                             [10.0 * 4321.0**-10, 20.0 * 4321.0**-10]], dtype=torch.float64)
    torch.testing.assert_close(m.drift(g, t, nu).double(), expected, rtol=1e-5, atol=0)
    # PCM's 1/f term: (t + t_0 + t_read)/(2·t_read) beyond float32 from 6.8e8 s at t_read = t_0 = 1e-30 s
    pcm = PCMLikeNoiseModel(t_read=1e-30, t_0=1e-30)
    with pytest.raises(ValueError, match=r"^PCMLikeNoiseModel\.t_inference_s must be such that the 1/f read noise"):
        pcm.read_noise(g, torch.tensor([1.0, 1e9]), gen())


def test_an_empty_or_integer_tensor_of_times_is_read():
    g, nu = torch.tensor([10.0, 20.0]), torch.tensor([0.05, 0.1])
    m = GenericDriftModel()
    assert m.drift(g, torch.empty(0, 1), nu).shape == (0, 2)
    # 20 s after programming: ((20 + 20)/20)^(−ν) = 2^(−ν)
    expected = torch.tensor([10.0 * 2.0**-0.05, 20.0 * 2.0**-0.1])
    torch.testing.assert_close(m.drift(g, torch.tensor(20), nu), expected, rtol=1e-6, atol=0)



@pytest.mark.parametrize("model", TIME_MODELS, ids=lambda m: type(m).__name__)
def test_a_bool_tensor_of_times_is_refused_as_a_bool_number_is(model):
    """``True`` as a time is refused (not a number of seconds); ``torch.tensor(True)`` was read as 1 s by drift, read
    noise and at_time. Now the same kind of ValueError naming ``t_inference_s``, as is a complex tensor."""
    g, nu = torch.tensor([10.0, 20.0]), torch.tensor([0.05, 0.1])
    name = type(model).__name__
    with pytest.raises(ValueError, match=rf"^{name}\.t_inference_s must be a finite number"):
        model.drift(g, True, nu)
    for times in (torch.tensor(True), torch.tensor([[True], [False]]), torch.tensor(1.0 + 0j)):
        for call in (lambda: model.drift(g, times, nu), lambda: model.read_noise(g, times, gen(), g_prog_uS=g),
                     lambda: model.at_time(g, nu, times, gen())):
            with pytest.raises(ValueError, match=rf"^{name}\.t_inference_s must be a number or a tensor of real "
                                                 r"numbers \(s, not bool or complex\), got tensor\("):
                call()


def test_read_weights_at_and_apply_inference_noise_take_a_tensor_of_times_as_its_numbers():
    """A 0-d or 1-d tensor of times once failed in read_weights_at / apply_inference_noise with a TypeError
    ('iteration over a 0-d tensor') or a refusal of a valid time ('must be a finite number >= 0 ..., got
    tensor(1.)'): its values are now taken as the numbers they hold, the same weights bit for bit as the list of
    those numbers (same seed); a negative or NaN time in it is refused naming the number, a 2-d tensor by its
    shape."""
    w = torch.tensor([[0.5, -1.0], [0.25, 0.0]])
    m = PCMLikeNoiseModel()
    for times, numbers in ((torch.tensor(3600.0), [3600.0]), (torch.tensor([1.0, 86400.0]), [1.0, 86400.0]),
                           (torch.tensor([20, 3600]), [20.0, 3600.0])):
        want = apply_inference_noise(w, numbers, m, generator=gen(5))
        assert torch.equal(apply_inference_noise(w, times, m, generator=gen(5)), want)
        prog = program_weights(w, m, gen(6))
        assert torch.equal(read_weights_at(prog, times, m, gen(7)), read_weights_at(prog, numbers, m, gen(7)))
    for bad, named in ((torch.tensor([1.0, -2.0]), "-2.0"), (torch.tensor(math.nan), "nan")):
        with pytest.raises(ValueError, match=rf"^apply_inference_noise\.t_inference_s must be a finite number >= 0"
                                             rf".*got {named}$"):
            apply_inference_noise(w, bad, m, generator=gen())
    with pytest.raises(ValueError, match=r"^read_weights_at\.t_inference_s must be a time or a non-empty sequence of "
                                         r"times \(a 0-d or 1-d tensor\), got tensor\(\[\[1\.\]\]\)$"):
        read_weights_at(program_weights(w, m, gen()), torch.tensor([[1.0]]), m, gen())
    with pytest.raises(ValueError, match=r"^apply_inference_noise\.t_inference_s must be a time or a non-empty"):
        apply_inference_noise(w, torch.empty(0), m, generator=gen())

def test_read_weights_at_does_not_read_its_own_tensor_of_times_back(monkeypatch):
    """read_weights_at validates its times as numbers on the host and builds the tensor of times itself: the models'
    drift and read noise do not check (read back: a device sync on CUDA) that tensor again. A caller's tensor is
    checked once per call (at_time: once for its drift and its read noise)."""
    import devices.inference as inference

    calls: list[torch.Tensor] = []
    check = inference._check_time_tensor

    def counted(t: torch.Tensor, where: str, model) -> None:
        calls.append(t)
        check(t, where, model)

    monkeypatch.setattr(inference, "_check_time_tensor", counted)
    m = PCMLikeNoiseModel()
    prog = program_weights(torch.tensor([0.5, -1.0, 0.25]), m, gen())
    read_weights_at(prog, STANDARD_TIMES_S, m, gen())
    assert calls == []
    t = torch.tensor([[1.0], [3600.0]]).unsqueeze(-1)
    m.at_time(prog.g_prog_uS, prog.nu, t, gen())
    assert len(calls) == 1 and calls[0] is t  # once for drift and read noise together
    m.read_noise(m.drift(prog.g_prog_uS, t, prog.nu), t, gen())
    assert len(calls) == 3 and all(c is t for c in calls)  # called alone: once each


def _with_nu(w: torch.Tensor, nu: float) -> tuple[GenericDriftModel, object]:
    """``w`` programmed without noise (g_max = 25 µS, w_max = max|w|), every device's ν set to ``nu`` afterwards: the
    model's ν = 0 passes check_times, which refuses a time at which the model's own slowest drift is subnormal."""
    m = GenericDriftModel(nu_mean=0.0)
    prog = program_weights(w, m, gen())
    return m, dataclasses.replace(prog, nu=torch.full_like(prog.nu, nu))


def test_compensation_of_a_subnormal_read_sum_uses_that_sum():
    """One weight of 1, three of 0; ν = 17 for every device (no noise): at 1 h the weight reads
    (3620/20)^(-17) = 181^(-17) = 4.2e-39, a subnormal float32, and so is the read sum. The compensation factor
    Σ|w_prog|/Σ|w_t| = 1/4.2e-39 = 2.4e38 is a float32: the weight comes back as 1. Before, the sum was clamped to
    1.18e-38 first: the weight read 181^(-17)/1.18e-38 = 0.36."""
    m, prog = _with_nu(torch.tensor([1.0, 0.0, 0.0, 0.0]), 17.0)
    raw = read_weights_at(prog, [3600.0], m, gen(), compensate_drift=False)[0]
    assert 0 < raw[0].item() < FLOAT32_TINY
    assert raw[0].item() == pytest.approx(181.0**-17.0, rel=2e-6)  # subnormal: 2^-149/4.2e-39 = 3e-7 resolution
    out = read_weights_at(prog, [3600.0], m, gen())[0]
    torch.testing.assert_close(out, torch.tensor([1.0, 0.0, 0.0, 0.0]), rtol=1e-6, atol=0)


@settings(max_examples=40, deadline=None)
@given(nu=st.floats(0.0, 19.5), w0=st.floats(1e-3, 1e3), sign=st.sampled_from([-1.0, 1.0]),
       at=st.integers(0, 5))
def test_a_uniform_drift_is_undone_down_to_subnormal_reads(nu, w0, sign, at):
    """Invariant: one weight ±w0 among zeros, every device with the same ν, no noise. Whatever ν, as long as the
    weight reads nonzero (w0·181^(-ν) >= 2^-149 at 1 h), the compensation returns it as programmed (its share of the
    read sum is 1): read normal, subnormal (w0·181^(-ν) < 1.18e-38) or with an overflowing factor alike."""
    w = torch.zeros(6)
    w[at] = sign * w0
    m, prog = _with_nu(w, nu)
    raw = read_weights_at(prog, [3600.0], m, gen(), compensate_drift=False)[0]
    assume(raw[at].item() != 0.0)
    out = read_weights_at(prog, [3600.0], m, gen())[0]
    torch.testing.assert_close(out, w, rtol=2e-6, atol=0)


# --- the drift compensation when a sum of |w| overflows float32 ------------------------------------------------------


def test_compensation_of_weights_whose_sum_overflows_float32():
    """64 weights of ±1e37: Σ|w| = 6.4e38 is beyond float32 (inf/inf = NaN: every weight read NaN before). A uniform
    drift (ν = 0.05, no noise) is undone: the weights come back as programmed, with w_max = None (max|w|) or given."""
    w = torch.full((64,), 1e37)
    w[::2] = -1e37
    for w_max in (None, 1e37, 3e38):
        out = apply_inference_noise(w, [1.0, 3600.0], GenericDriftModel(), generator=gen(), w_max=w_max)
        torch.testing.assert_close(out, w.expand(2, 64), rtol=1e-6, atol=0)


def test_compensation_when_only_the_read_sum_overflows():
    """64 weights of 5e36 (Σ|w_prog| = 3.2e38, a float32) read with 200 % relative read noise: their read sum
    overflows. Before, the factor 3.2e38/inf = 0 read every weight as 0. Now each weight is w_t·Σ|w_prog|/Σ|w_t|,
    the sums taken in float64 here."""
    w = torch.full((64,), 5e36)
    m = GenericDriftModel(nu_mean=0.0, read_noise_std=2.0)
    prog = program_weights(w, m, gen())
    raw = read_weights_at(prog, [3600.0], m, gen(1), compensate_drift=False)[0]
    assert torch.isfinite(raw).all() and torch.isinf(raw.abs().sum())
    out = read_weights_at(prog, [3600.0], m, gen(1))[0]
    raw64 = raw.double()
    expected = raw64 * (prog.weights.double().abs().sum() / raw64.abs().sum())
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=0)
    assert out.double().abs().sum().item() == pytest.approx(3.2e38, rel=1e-5)


def test_per_tile_compensation_with_one_tile_overflowing():
    """Two tiles, one factor each: the tile of ±1e37 overflows its sum and is compensated from the normalized
    weights; the other tile, ordinary, gets w_t·(Σ|w_prog|/Σ|w_t|) bit for bit as before."""
    w = torch.stack([torch.full((64,), 1e37), torch.linspace(-1.0, 1.0, 64)])
    m = GenericDriftModel(nu_mean=0.05, nu_std=0.01, read_noise_std=0.01)
    prog = program_weights(w, m, gen(), w_max=1e37)
    raw = read_weights_at(prog, [3600.0], m, gen(1), compensate_drift=False)[0]
    out = read_weights_at(prog, [3600.0], m, gen(1), compensation_dims=(1,))[0]
    assert torch.isfinite(out).all()
    ordinary = raw[1] * (prog.weights[1].abs().sum() / raw[1].abs().sum())
    assert torch.equal(out[1], ordinary)
    raw64 = raw[0].double()
    expected = raw64 * (prog.weights[0].double().abs().sum() / raw64.abs().sum())
    torch.testing.assert_close(out[0].double(), expected, rtol=1e-5, atol=0)


def test_every_device_drifted_to_zero_reads_zero_weights():
    """ν = 30 for every device, yet the model's spread reaches ν = 0 (GenericDriftModel(nu_mean=0.0)), so 1 h is
    not refused: 181^(-30) = 1.9e-68 is 0 in float32, every weight reads 0 and, with nothing left to scale, the
    compensated weights are 0 too (finite: no 0/0)."""
    m, prog = _with_nu(torch.tensor([0.5, -1.0, 0.25]), 30.0)
    for compensate in (False, True):
        out = read_weights_at(prog, [3600.0], m, gen(), compensate_drift=compensate)
        assert torch.equal(out, torch.zeros(1, 3))
