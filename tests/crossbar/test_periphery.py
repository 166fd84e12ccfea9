"""Periphery of one analog MVM: DAC/ADC grids, saturation, noise, noise and bound management.

Expectations are hand-computed values, statistical bounds, and a plain numpy re-implementation of
aihwkit's C++ loop (``ForwardBackwardPassIOManaged::forwardVector``) written here, sample by sample.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from crossbar.periphery import (IOParameters, analog_mvm, bound_management_rounds, noise_management_scale,
                                prepare_inputs, quantize, quantize_adc, quantize_dac, resolution_step)
from devices import CounterRNG, no_host_reads

SETTINGS = settings(max_examples=40, deadline=None)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def mvm(w: torch.Tensor, x: torch.Tensor, p: IOParameters, seed: int = 0, transposed: bool = False):
    """Single tile: w [out, in]; x [B, in] (or [B, out] transposed) -> out [B, n_out], passes [B]."""
    res = analog_mvm(w[None, None], x[:, None, :], p, gen(seed), transposed=transposed)
    return res.out[0, 0], res.passes[0, 0]


NOISELESS = dict(out_noise=0.0)


# ---------------------------------------------------------------- numpy reference (noise free)
def _np_quant(v: np.ndarray, step: float) -> np.ndarray:
    return v if step <= 0 else np.rint(v / step) * step   # rint: ties to even, like C's rintf


def f32_step(res: float, bound: float) -> float:
    """A converter's grid step as aihwkit's C++ computes it, in float32 (numpy's float32 arithmetic):
    ``float(res) * float(2 * bound)``, ``res > 1`` read as a number of steps (``1/res``); 0 when ``res <= 0``."""
    f32 = np.float32
    return 0.0 if res <= 0 else float(f32(f32(1 / f32(res) if res > 1 else res) * f32(2 * bound)))


def ref_forward(w: np.ndarray, x: np.ndarray, p: IOParameters) -> tuple[np.ndarray, np.ndarray]:
    """aihwkit's forward loop, one sample at a time, without noise (float64; the grid steps in float32, as
    aihwkit's C++ computes them: :func:`f32_step`)."""
    res_in, res_out = f32_step(p.inp_res, p.inp_bound), f32_step(p.out_res, p.out_bound)
    ys, passes = [], []
    for xv in x:
        if p.noise_management == "abs_max":
            alpha = np.abs(xv).max()
            if p.nm_thres > 0:
                alpha = min(alpha, p.nm_thres)
        elif p.noise_management == "constant":
            alpha = p.nm_thres if p.nm_thres > 0 else 1.0
        else:
            alpha = 1.0
        if p.noise_management != "none" and alpha <= 0:
            ys.append(np.zeros(w.shape[0]))
            passes.append(1)
            continue
        bm = p.bound_management == "iterative"
        reduction, n = 0.5, 0
        while True:
            reduction *= 2
            n += 1
            scale = 1.0 / alpha / (reduction if bm else 1.0)
            xin = np.clip(_np_quant(xv * scale, res_in), -p.inp_bound, p.inp_bound)
            y = _np_quant(w @ xin, res_out)
            ok = not (y > p.out_bound).any()
            if p.bm_test_negative_bound and (y < -p.out_bound).any():
                ok = False
            y = np.clip(y, -p.out_bound, p.out_bound)
            limit = np.float32(np.float32(p.max_bm_res) / np.float32(res_in)) if res_in > 0 else math.inf
            if not bm or ok or int(reduction) > p.max_bm_factor or reduction > limit:
                break
        ys.append(y * alpha * (reduction if bm else 1.0) * p.out_scale)
        passes.append(n)
    return np.stack(ys), np.array(passes)


# ---------------------------------------------------------------- conventions and validation
def test_resolution_conventions() -> None:
    assert resolution_step(1 / 254, 1.0) == pytest.approx(2 / 254)
    assert resolution_step(254, 1.0) == pytest.approx(2 / 254)          # number of steps
    assert resolution_step(1 / 510, 12.0) == pytest.approx(24 / 510)
    assert resolution_step(0, 1.0) == 0.0 and resolution_step(-1, 1.0) == 0.0
    assert resolution_step(1 / 254, math.inf) == 0.0
    assert IOParameters().inp_step == pytest.approx(2 / 126)           # aihwkit default 7 bits
    assert IOParameters().out_step == pytest.approx(24 / 510)          # aihwkit default 9 bits


@pytest.mark.parametrize("kwargs, field", [
    (dict(inp_res=float("nan")), "inp_res"),
    (dict(out_bound=0.0), "out_bound"),
    (dict(inp_bound=-1.0), "inp_bound"),
    (dict(out_noise=-0.1), "out_noise"),
    (dict(noise_management="avg"), "noise_management"),
    (dict(bound_management="shift"), "bound_management"),
    (dict(max_bm_factor=0), "max_bm_factor"),
    (dict(max_bm_res=0.0), "max_bm_res"),
    (dict(out_scale=0.0), "out_scale"),
    (dict(w_noise_type="pcm"), "w_noise_type"),
    (dict(inp_bound=2.0), "inp_bound"),                      # noise management needs inp_bound == 1
    (dict(is_perfect=1), "is_perfect"),
])
def test_validation_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=f"IOParameters.{field}"):
        IOParameters(**kwargs)


def test_bound_management_rounds_match_aihwkit_stop_rule() -> None:
    # defaults: inp step 2/126, max_bm_res 0.25 -> stop once r > 15.75: r = 1, 2, 4, 8, 16 -> 5 rounds
    assert bound_management_rounds(IOParameters()) == 5
    # no DAC quantization: only max_bm_factor=1000 -> r = 1 ... 1024 -> 11 rounds
    assert bound_management_rounds(IOParameters(inp_res=0)) == 11
    assert bound_management_rounds(IOParameters(max_bm_factor=1)) == 2
    assert bound_management_rounds(IOParameters(bound_management="none")) == 1
    assert bound_management_rounds(IOParameters(), transposed=True) == 1   # forward only, as aihwkit
    assert bound_management_rounds(IOParameters(out_bound=math.inf)) == 1
    # max_bm_res / step = 0.1 / (2/40) = 2 exactly in aihwkit's float32: r = 2 does not stop it, r = 4 does
    assert bound_management_rounds(IOParameters(max_bm_res=0.1, inp_res=1 / 40)) == 3


# ---------------------------------------------------------------- DAC / ADC grids
@SETTINGS
@given(values=st.lists(st.floats(-5, 5, allow_nan=False), min_size=1, max_size=50),
       steps=st.integers(2, 1024), bound=st.sampled_from([1.0, 0.5, 3.0]))
# an input 1e-9 past the midpoint 1/3 of the grid 2/3: the DAC's float32 step 0.66666669 puts it below its own
# midpoint, 0 is its nearest level (1/3 + 1e-9 from it: more than the half exact step + 1e-12 the test had allowed)
@example(values=[0.33333333433333334], steps=3, bound=1.0)
def test_dac_values_lie_on_grid_and_in_range(values: list[float], steps: int, bound: float) -> None:
    p = IOParameters(inp_res=1.0 / steps, inp_bound=bound, noise_management="none")
    x = torch.tensor(values, dtype=torch.float64)
    q = quantize_dac(x, p)
    # the grid is the DAC's own, its step computed in float32 as aihwkit does (up to 2^-24 relative from the exact
    # 2·bound/steps, enough to move an input near a midpoint to the other level); 1e-12 below: float64 rounding
    step = f32_step(p.inp_res, bound)
    k = q / step
    # on the grid, or clipped to the range end (quantize, then clip: as aihwkit; with an odd number of
    # steps the range end is not a grid point)
    assert (torch.isclose(k, k.round(), atol=1e-9) | (q.abs() == bound)).all()
    assert (q.abs() <= bound).all()                                  # inside the DAC range
    inside = x.abs() <= bound
    assert ((q - x)[inside].abs() <= step / 2 + 1e-12).all()         # nearest grid point (or the end)
    assert torch.equal(q[x > bound + step], torch.full_like(q[x > bound + step], bound))
    assert torch.equal(q[x < -bound - step], torch.full_like(q[x < -bound - step], -bound))   # either end


@SETTINGS
@given(values=st.lists(st.floats(-40, 40, allow_nan=False), min_size=1, max_size=50),
       steps=st.integers(2, 2048), bound=st.sampled_from([12.0, 4.0, 1.0]))
def test_adc_values_lie_on_grid_and_saturate(values: list[float], steps: int, bound: float) -> None:
    p = IOParameters(out_res=float(steps), out_bound=bound)             # res given as number of steps
    y = torch.tensor(values, dtype=torch.float64)
    q = quantize_adc(y, p)
    step = f32_step(p.out_res, bound)                                    # the ADC's float32 step, as aihwkit's
    k = q / step
    on_grid = torch.isclose(k, k.round(), atol=1e-9) | (q.abs() == bound)
    assert on_grid.all()
    assert (q.abs() <= bound).all()
    assert (q[y >= bound + step] == bound).all() and (q[y <= -bound - step] == -bound).all()


@SETTINGS
@given(values=st.lists(st.floats(-40, 40, allow_nan=False), min_size=1, max_size=50),
       steps=st.integers(2, 2048), bound=st.sampled_from([1.0, 0.5, 12.0]), seed=st.integers(0, 2**31 - 1),
       converter=st.sampled_from(["dac", "adc"]), counter=st.booleans())
def test_stochastic_rounding_values_lie_on_grid_next_to_the_input(values: list[float], steps: int, bound: float,
                                                                  seed: int, converter: str, counter: bool) -> None:
    """DAC and ADC with stochastic rounding (``inp_sto_round`` / ``out_sto_round``; the tests above cover nearest
    rounding only), with a torch generator or a counter stream: every value is a grid point ``k·step`` or the range
    end, inside the range, and within one step of its input when the input is inside the range (one of the two
    neighbouring grid points)."""
    if converter == "dac":
        p = IOParameters(inp_res=1.0 / steps, inp_bound=bound, inp_sto_round=True, noise_management="none")
        convert = quantize_dac
    else:
        p = IOParameters(out_res=1.0 / steps, out_bound=bound, out_sto_round=True)
        convert = quantize_adc
    x = torch.tensor(values, dtype=torch.float64)
    g = CounterRNG([seed]) if counter else gen(seed)
    q = convert(x, p, g)
    step = f32_step(1.0 / steps, bound)                                  # the converter's float32 step, as aihwkit's
    k = q / step
    assert (torch.isclose(k, k.round(), atol=1e-9) | (q.abs() == bound)).all()
    assert (q.abs() <= bound).all()
    inside = x.abs() <= bound
    assert ((q - x)[inside].abs() <= step * (1 + 1e-9)).all()
    assert (q[x >= bound + step] == bound).all() and (q[x <= -bound - step] == -bound).all()


def test_stochastic_rounding_is_unbiased_and_uses_neighbours() -> None:
    step = 0.1
    v = torch.full((200_000,), 0.337, dtype=torch.float64)
    q = quantize(v, step, stochastic=True, generator=gen(3))
    levels = set(torch.unique((q / step).round()).tolist())
    assert levels == {3.0, 4.0}
    # P(up) = 0.37; mean 0.337, SE = 0.1*sqrt(.37*.63/2e5) ~ 1.1e-4
    assert abs(q.mean().item() - 0.337) < 5e-4
    with pytest.raises(ValueError, match="Generator"):
        quantize(v, step, stochastic=True, generator=None)


def test_nearest_rounding_ties_to_even_like_rintf() -> None:
    q = quantize(torch.tensor([0.5, 1.5, 2.5, -0.5]), 1.0)
    assert q.tolist() == [0.0, 2.0, 2.0, -0.0]


# ---------------------------------------------------------------- full MVM against the reference
def test_is_perfect_is_exact_matmul() -> None:
    torch.manual_seed(0)
    w = torch.randn(7, 13, dtype=torch.float64) * 3
    x = torch.randn(11, 13, dtype=torch.float64) * 100
    y, passes = mvm(w, x, IOParameters(is_perfect=True))
    torch.testing.assert_close(y, x @ w.T, rtol=0, atol=1e-10)
    assert (passes == 1).all()
    d = torch.randn(11, 7, dtype=torch.float64)
    yb, _ = mvm(w, d, IOParameters(is_perfect=True), transposed=True)
    torch.testing.assert_close(yb, d @ w, rtol=0, atol=1e-10)


@SETTINGS
@given(seed=st.integers(0, 10_000), n_out=st.integers(1, 9), n_in=st.integers(1, 17),
       w_scale=st.sampled_from([0.1, 1.0, 3.0]), x_scale=st.sampled_from([0.01, 1.0, 50.0]),
       nm=st.sampled_from(["abs_max", "none", "constant"]), bm=st.sampled_from(["iterative", "none"]),
       inp_res=st.sampled_from([1 / 126, 1 / 30, 0.0]), out_bound=st.sampled_from([12.0, 2.0]),
       max_bm_factor=st.sampled_from([1000, 4]), nm_thres=st.sampled_from([0.0, 0.5]))
# the smallest accepted nm_thres (float32's smallest normal; hypothesis found 1.1e-308, now refused): every input
# saturates the DAC, the output the ADC, and bound management runs to its max_bm_res limit (5 rounds)
@example(seed=0, n_out=1, n_in=1, w_scale=4.0, x_scale=1.0, nm="abs_max", bm="iterative", inp_res=1 / 126,
         out_bound=1.0, max_bm_factor=1000, nm_thres=float(np.finfo(np.float32).tiny))
def test_noise_free_mvm_matches_numpy_reference(seed: int, n_out: int, n_in: int, w_scale: float,
                                                x_scale: float, nm: str, bm: str, inp_res: float,
                                                out_bound: float, max_bm_factor: int, nm_thres: float) -> None:
    rng = np.random.default_rng(seed)
    w = rng.uniform(-w_scale, w_scale, (n_out, n_in))
    x = rng.normal(0, x_scale, (6, n_in))
    x[0] = 0.0                                                       # all-zero input
    p = IOParameters(out_noise=0.0, noise_management=nm, bound_management=bm, inp_res=inp_res,
                     out_bound=out_bound, max_bm_factor=max_bm_factor, nm_thres=nm_thres)
    y_ref, passes_ref = ref_forward(w, x, p)
    for first in (True, False):          # CPU: first round alone, then all rounds if needed / all rounds at once
        res = analog_mvm(torch.from_numpy(w)[None, None], torch.from_numpy(x)[:, None, :], p, gen(seed),
                         try_first_round=first)
        np.testing.assert_allclose(res.out[0, 0].numpy(), y_ref, rtol=1e-9, atol=1e-9)
        np.testing.assert_array_equal(res.passes[0, 0].numpy(), passes_ref)
        assert int(res.total_passes()) == int(passes_ref.sum())
        assert res.total is None or res.total == int(passes_ref.sum())


def test_zero_input_gives_exact_zero_with_noise_management() -> None:
    w = torch.ones(5, 8)
    y, _ = mvm(w, torch.zeros(3, 8), IOParameters(out_noise=0.5))
    assert torch.equal(y, torch.zeros(3, 5))
    yb, _ = mvm(w, torch.zeros(3, 5), IOParameters(out_noise=0.5), transposed=True)
    assert torch.equal(yb, torch.zeros(3, 8))
    # without noise management the ADC noise is still there
    y2, _ = mvm(w, torch.zeros(3, 8), IOParameters(out_noise=0.5, noise_management="none"))
    assert (y2 != 0).any()


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("n_zero", [0, 30])        # 30 of 34 vectors all zero: the CPU computes the others apart
@pytest.mark.parametrize("sync_free", [False, True])
def test_a_nan_or_inf_input_gives_nan_outputs_not_zeros(bad: float, transposed: bool, n_zero: int,
                                                        sync_free: bool) -> None:
    """A vector holding a NaN or ±Inf gives NaN outputs, as aihwkit's tiles do (checked with aihwkit 1.1: its
    ``AnalogLinear`` returns NaN for that sample), instead of being taken for an all-zero vector (exact zeros: a NaN
    coming from upstream vanished, and with it the training loop's divergence check). All-zero vectors still give
    exact zeros, ordinary ones finite values."""
    w = torch.rand(6, 9, generator=gen(1)) - 0.5
    n_in = 6 if transposed else 9
    x = torch.rand(4 + n_zero, n_in, generator=gen(2)) - 0.5
    x[0, 3] = bad
    x[1] = 0.0
    x[4:] = 0.0
    for p in (IOParameters(), IOParameters(out_bound=0.5)):             # one round; bound management retried
        if sync_free:
            with no_host_reads():
                res = analog_mvm(w[None, None], x[:, None, :], p, gen(0), transposed=transposed)
        else:
            res = analog_mvm(w[None, None], x[:, None, :], p, gen(0), transposed=transposed)
        y = res.out[0, 0]
        assert torch.isnan(y[0]).all()
        assert torch.equal(y[1], torch.zeros_like(y[1])) and torch.equal(y[4:], torch.zeros_like(y[4:]))
        assert torch.isfinite(y[2:4]).all() and (y[2:4] != 0).any()


_CLIPPING_PERIPHERIES = {
    "nm-none": IOParameters(noise_management="none"),
    "nm-constant": IOParameters(noise_management="constant", nm_thres=2.0),
    "abs-max-capped": IOParameters(nm_thres=0.5),
    "nm-none-bm": IOParameters(noise_management="none", out_bound=0.5),
}


@pytest.mark.parametrize("name", sorted(_CLIPPING_PERIPHERIES))
@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("n_zero", [0, 30])
def test_a_nan_input_gives_nan_outputs_whatever_the_noise_management(name: str, transposed: bool,
                                                                      n_zero: int) -> None:
    """NaN through the clipping DAC stays NaN (torch.clamp keeps NaN, as rounding and the ADC's clamp do) under every
    noise management, also those that do not divide by the input's largest magnitude (``"none"``, ``"constant"``,
    ``"abs_max"`` capped by ``nm_thres``), and through the perfect periphery: never a finite value."""
    w = torch.rand(6, 9, generator=gen(1)) - 0.5
    n_in = 6 if transposed else 9
    x = torch.rand(4 + n_zero, n_in, generator=gen(2)) - 0.5
    x[0, 3] = math.nan
    x[4:] = 0.0
    for p in (_CLIPPING_PERIPHERIES[name], IOParameters(is_perfect=True)):
        y, _ = mvm(w, x, p, transposed=transposed)
        assert torch.isnan(y[0]).all()
        assert torch.isfinite(y[1:]).all()


@pytest.mark.parametrize("name", sorted(_CLIPPING_PERIPHERIES))
@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("bad", [math.inf, -math.inf])
def test_an_inf_input_that_no_noise_management_divides_by_saturates_the_dac(name: str, transposed: bool,
                                                                            bad: float) -> None:
    """Where the noise management does not divide by ``max |x|`` (``"none"``, ``"constant"``, ``"abs_max"`` capped by
    ``nm_thres``), ±Inf is a very large input: the DAC clips it to ``±inp_bound`` as it clips ±1e30, so the output
    is exactly that of ±1e30 in its place (same generator seed, same draws) and finite, as aihwkit 1.1's
    ``AnalogLinear`` gives (checked: finite outputs for an Inf under these three, NaN under plain ``"abs_max"``)."""
    w = torch.rand(6, 9, generator=gen(1)) - 0.5
    n_in = 6 if transposed else 9
    x = torch.rand(5, n_in, generator=gen(2)) - 0.5
    big = x.clone()
    x[0, 3], big[0, 3] = bad, math.copysign(1e30, bad)
    p = _CLIPPING_PERIPHERIES[name]
    y, passes = mvm(w, x, p, seed=3, transposed=transposed)
    y_big, passes_big = mvm(w, big, p, seed=3, transposed=transposed)
    assert torch.equal(y, y_big) and torch.equal(passes, passes_big) and torch.isfinite(y).all()


# ---------------------------------------------------------------- noise
def test_output_noise_std_matches_in_normalized_units() -> None:
    torch.manual_seed(1)
    w = torch.randn(64, 32, dtype=torch.float64) * 0.1
    x = torch.rand(4000, 32, dtype=torch.float64) * 2 - 1
    x[:, 0] = 1.0                                                    # alpha = max|x| = 1 for every sample
    p = IOParameters(inp_res=0, out_res=0, out_noise=0.1, bound_management="none")
    y, _ = mvm(w, x, p)
    err = y - x @ w.T
    n = err.numel()
    assert abs(err.std().item() - 0.1) < 0.1 * 4 / math.sqrt(2 * n)    # 4 SE of a std estimate
    assert abs(err.mean().item()) < 4 * 0.1 / math.sqrt(n)
    # with abs-max noise management the noise scales with alpha = max|x| (here 5)
    y5, _ = mvm(w, 5 * x, p, seed=2)
    err5 = y5 - 5 * x @ w.T
    assert abs(err5.std().item() - 0.5) < 0.5 * 4 / math.sqrt(2 * n)


def test_input_noise_and_weight_noise_std() -> None:
    w = torch.zeros(16, 32, dtype=torch.float64)
    w[:, 0] = 1.0                                                    # y = x_dac[0]
    x = torch.full((20_000, 32), 0.5, dtype=torch.float64)
    x[:, 0] = 1.0
    p = IOParameters(inp_res=0, out_res=0, out_noise=0.0, inp_noise=0.05, bound_management="none",
                     noise_management="none")
    y, _ = mvm(w, x, p)
    assert abs((y - 1.0).std().item() - 0.05) < 0.05 * 0.03
    # additive-constant weight noise: std = w_noise * ||x_dac||_2 = 0.02 * sqrt(1 + 31 * 0.25)
    p = IOParameters(inp_res=0, out_res=0, out_noise=0.0, w_noise=0.02, w_noise_type="additive_constant",
                     bound_management="none", noise_management="none")
    y, _ = mvm(w, x, p)
    assert abs((y - 1.0).std().item() - 0.02 * math.sqrt(1 + 31 * 0.25)) < 0.02 * 3 * 0.03


def test_abs_max_noise_management_is_scale_invariant() -> None:
    torch.manual_seed(2)
    w = torch.randn(16, 32, dtype=torch.float64) * 0.2
    x = torch.randn(2000, 32, dtype=torch.float64)
    noiseless = IOParameters(out_noise=0.0)
    y1, _ = mvm(w, x, noiseless)
    for c in (1e-3, 10.0, 1e3):
        yc, _ = mvm(w, c * x, noiseless)
        torch.testing.assert_close(yc / c, y1, rtol=1e-9, atol=1e-12)   # deterministic part: exact
    noisy = IOParameters()
    rel = []
    for c, seed in ((0.01, 5), (1.0, 6), (100.0, 7)):
        yc, _ = mvm(w, c * x, noisy, seed=seed)
        err = (yc - c * x @ w.T) / c
        rel.append((err.mean().item(), err.std().item()))
    stds = [s for _, s in rel]
    assert max(stds) / min(stds) < 1.05                                  # same relative error
    assert all(abs(m) < 0.01 for m, _ in rel)
    # without noise management the relative error explodes for small inputs
    yn, _ = mvm(w, 0.01 * x, IOParameters(noise_management="none"), seed=8)
    assert ((yn - 0.01 * x @ w.T) / 0.01).std() > 5 * min(stds)


def test_bound_management_recovers_saturated_outputs() -> None:
    w = torch.full((4, 64), 0.5, dtype=torch.float64)               # y = 32 for x = 1: above out_bound 12
    x = torch.ones(3, 64, dtype=torch.float64)
    no_bm, passes = mvm(w, x, IOParameters(out_noise=0.0, bound_management="none"))
    assert torch.equal(no_bm, torch.full_like(no_bm, 12.0)) and (passes == 1).all()
    y, passes = mvm(w, x, IOParameters(out_noise=0.0))
    # round 1: 32 > 12, round 2: 16 > 12, round 3 (r = 4): DAC(0.25) = 16 * 2/126, y = 32 * that,
    # ADC to the 24/510 grid, times r = 4 (hand-computed)
    dac = round(0.25 / (2 / 126)) * (2 / 126)
    adc = round(32 * dac / (24 / 510)) * (24 / 510)
    torch.testing.assert_close(y, torch.full_like(y, 4 * adc))
    assert (passes == 3).all()
    assert abs(4 * adc - 32) < 0.6                                   # recovered up to DAC resolution
    # statistically, with output noise: errors small, no sample clipped
    torch.manual_seed(3)
    wr = torch.rand(8, 64, dtype=torch.float64)                      # positive weights: sums ~ 32
    xr = torch.rand(1000, 64, dtype=torch.float64) + 0.5
    yr, passes_r = mvm(wr, xr, IOParameters(), seed=4)
    err = yr - xr @ wr.T
    assert (passes_r > 1).all()
    assert err.abs().max() < 2.0 and abs(err.mean().item()) < 0.1
    yc, _ = mvm(wr, xr, IOParameters(bound_management="none"), seed=4)
    assert (yc - xr @ wr.T).mean() < -10                              # clipped without bound management


def test_total_passes_known_on_the_host_only_when_every_sample_took_one_pass() -> None:
    w = torch.full((4, 64), 0.5, dtype=torch.float64)               # y = 32 for x = 1: above out_bound 12
    x = torch.ones(3, 64, dtype=torch.float64)
    for first in (True, False):
        res = analog_mvm(w[None, None], x[:, None, :], IOParameters(out_noise=0.0), gen(), try_first_round=first)
        assert res.total is None and int(res.total_passes()) == 9           # 3 samples x 3 rounds
        res = analog_mvm(0.1 * w[None, None], x[:, None, :], IOParameters(out_noise=0.0), gen(),
                         try_first_round=first)                             # y = 3.2: one pass each
        assert int(res.total_passes()) == 3 == int(res.passes.sum())
        assert res.total == (3 if first else None)        # all rounds at once: read from passes (no host read)
    res = analog_mvm(w[None, None].expand(2, 3, 4, 64), x[:, None, :].expand(3, 3, 64), IOParameters(is_perfect=True),
                     gen())
    assert res.total == 2 * 3 * 3 == int(res.passes.sum())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_top_adc_code_counts_as_saturated_as_in_aihwkit(dtype: torch.dtype) -> None:
    # aihwkit's ADC step is float32(1/510) * 24 = 0.04705883 in float32 (24/510 = 0.0470588235...): the top
    # code 255 reads 12.000001 > out_bound 12, a saturated output, and bound management repeats the pass
    p = IOParameters(out_noise=0.0, noise_management="none", inp_res=0)      # x goes to the tile as it is
    assert p.out_step == float(np.float32(np.float32(1 / 510) * np.float32(24.0)))
    assert 255 * p.out_step > 12.0
    w = torch.full((3, 24), 11.99 / 24, dtype=dtype)               # y = 11.99: code 255 (the band 11.976..12.024)
    x = torch.ones(2, 24, dtype=dtype)
    y, passes = mvm(w, x, p)
    assert (passes == 2).all()
    # round 2 (r = 2): y = 5.995, code 127, times 2 (hand-computed: 11.953, not 12.0)
    torch.testing.assert_close(y, torch.full_like(y, 2 * 127 * p.out_step))
    y_none, passes = mvm(w, x, IOParameters(out_noise=0.0, noise_management="none", inp_res=0,
                                            bound_management="none"))
    assert (passes == 1).all() and torch.equal(y_none, torch.full_like(y_none, 12.0))   # saturated


def test_negative_saturation_test_flag() -> None:
    w = torch.full((2, 64), -0.5, dtype=torch.float64)              # y = -32
    x = torch.ones(2, 64, dtype=torch.float64)
    _, passes = mvm(w, x, IOParameters(out_noise=0.0))
    assert (passes == 3).all()
    y, passes = mvm(w, x, IOParameters(out_noise=0.0, bm_test_negative_bound=False))
    assert (passes == 1).all() and torch.equal(y, torch.full_like(y, -12.0))


def test_noise_management_scale_types() -> None:
    x = torch.tensor([[0.5, -2.0, 1.0], [0.0, 0.0, 0.0]])
    assert noise_management_scale(x, IOParameters()).flatten().tolist() == [2.0, 0.0]
    assert noise_management_scale(x, IOParameters(nm_thres=1.5)).flatten().tolist() == [1.5, 0.0]
    assert noise_management_scale(x, IOParameters(noise_management="constant", nm_thres=3.0)).flatten().tolist() \
        == [3.0, 3.0]
    assert noise_management_scale(x, IOParameters(noise_management="none")).flatten().tolist() == [1.0, 1.0]


def test_same_generator_seed_same_numbers() -> None:
    w = torch.randn(8, 8)
    x = torch.randn(5, 8)
    p = IOParameters(inp_noise=0.01, inp_sto_round=True, out_sto_round=True)
    a, _ = mvm(w, x, p, seed=11)
    b, _ = mvm(w, x, p, seed=11)
    c, _ = mvm(w, x, p, seed=12)
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("p", [IOParameters(), IOParameters(out_bound=2.0, out_noise=0.1),
                               IOParameters(noise_management="none", bound_management="none"),
                               IOParameters(noise_management="constant", nm_thres=0.7, inp_res=1 / 30),
                               IOParameters(out_bound=2.0, w_noise=0.05)])
def test_prepared_inputs_give_exactly_the_all_rounds_mvm(p: IOParameters, transposed: bool) -> None:
    """``analog_mvm(prepared=prepare_inputs(x))`` (inputs' noise management and DAC done once, for reuse) is the
    same computation as ``analog_mvm(x, try_first_round=False)``: equal outputs and passes, for a generator in the
    same state, call after call; and so is passing the noise-free ``products`` of the prepared DAC outputs (the
    MVM then skips its matmul but draws the same weight and output noise)."""
    g = torch.Generator().manual_seed(5)
    w = torch.rand(2, 3, 6, 9, generator=g) - 0.3                  # R=2, C=3 tiles of 6x9
    x = torch.ones(4, 2 if transposed else 3, 6 if transposed else 9)
    x[1] *= 0.25
    x[2, 0] = 0.0                                                  # an all-zero block
    prep = prepare_inputs(x, p, transposed)
    assert prep is not None and prep.rounds == bound_management_rounds(p, transposed)
    g1, g2, g3 = gen(9), gen(9), gen(9)
    mat = w if transposed else w.transpose(-1, -2)
    for _ in range(3):
        a = analog_mvm(w, x, p, g1, transposed, try_first_round=False)
        b = analog_mvm(w, x, p, g2, transposed, prepared=prep)
        c = analog_mvm(w, x, p, g3, transposed, prepared=prep, products=torch.matmul(prep.xq, mat))
        assert torch.equal(a.out, b.out) and torch.equal(a.passes, b.passes)
        assert torch.equal(a.out, c.out) and torch.equal(a.passes, c.passes)
    with pytest.raises(ValueError, match="products need the prepared inputs"):
        analog_mvm(w, x, p, g1, transposed, products=torch.matmul(prep.xq, mat))


@pytest.mark.parametrize("p", [IOParameters(), IOParameters(out_bound=2.0, out_noise=0.1),
                               IOParameters(out_bound=2.0, bm_test_negative_bound=False, out_scale=1.5),
                               IOParameters(noise_management="none", bound_management="none"),
                               IOParameters(noise_management="constant", nm_thres=0.7, inp_res=1 / 30, out_bound=3.0),
                               IOParameters(out_bound=1.0, out_noise=0.0, out_res=0.0)])
@pytest.mark.parametrize("transposed", [False, True])
def test_full_scale_adc_is_the_mvm_of_an_all_ones_input(p: IOParameters, transposed: bool) -> None:
    """The ADC side of an all-ones read, :func:`full_scale_adc` (given the products plus the output noise), gives
    exactly ``analog_mvm(prepared=..., products=...)`` for a generator in the same state: outputs and passes,
    with bound management (rounds > 1, some tiles passing in a later round; signed products) and without; also
    for a slice of the scales broadcast over the tiles (every block of an all-ones input has the same scales), given
    as ``[1, 1, rounds]`` or with the output dim, ``[1, 1, rounds, 1]``."""
    from crossbar.periphery import full_scale_adc, full_scale_scales
    from devices import rng

    g = torch.Generator().manual_seed(3)
    n_r, n_c, rows, cols = 2, 3, 5, 4
    # line sums of about -0.5 ... 1.5 ADC ranges: some tiles saturate in round 0 (also at the negative bound)
    w = (torch.rand(n_r, n_c, rows, cols, generator=g) - 0.25) * min(p.out_bound, 12.0) / 2
    x = torch.ones(1, n_r if transposed else n_c, rows if transposed else cols)
    prep = prepare_inputs(x, p, transposed)
    assert prep is not None
    scales = full_scale_scales(prep, p)
    assert scales is not None and scales.shape == (n_r if transposed else 1, 1 if transposed else n_c, prep.rounds)
    products = torch.matmul(prep.xq, w if transposed else w.transpose(-1, -2))   # [R, C, rounds, n_out]
    g1, g2 = gen(4), gen(4)
    firsts = []
    for _ in range(5):
        want = analog_mvm(w, x, p, g1, transposed, prepared=prep, products=products.clone())
        y = rng.add_normal(products.clone(), p.out_noise, g2) if p.out_noise > 0 else products.clone()
        y4 = y.clone()
        got = full_scale_adc(y, scales[:1, :1], p)
        assert torch.equal(got.out, want.out) and torch.equal(got.passes, want.passes)
        assert got.total == want.total
        got4 = full_scale_adc(y4, scales[:1, :1].unsqueeze(-1), p)     # the scales with the output dim
        assert torch.equal(got4.out, want.out) and torch.equal(got4.passes, want.passes)
        assert got4.total == want.total
        firsts.append(got.passes)
    if prep.rounds > 1:     # the case bound management was built for is exercised: a later round taken
        assert (torch.stack(firsts) > 1).any() and (torch.stack(firsts) < prep.rounds).any()


def test_full_scale_scales_refuse_a_random_adc_and_additive_weight_noise() -> None:
    from crossbar.periphery import full_scale_scales

    x = torch.ones(1, 1, 4)
    for p in (IOParameters(out_sto_round=True), IOParameters(w_noise=0.01, w_noise_type="additive_constant")):
        prep = prepare_inputs(x, p)
        assert prep is not None and full_scale_scales(prep, p) is None


def test_prepare_inputs_refuses_a_random_or_perfect_dac() -> None:
    x = torch.ones(2, 1, 4)
    assert prepare_inputs(x, IOParameters(inp_noise=0.01)) is None
    assert prepare_inputs(x, IOParameters(inp_sto_round=True)) is None
    assert prepare_inputs(x, IOParameters(is_perfect=True)) is None


@pytest.mark.parametrize("dtype, tiny", [(torch.float32, 7.7e-40), (torch.float64, 1e-310)])
@pytest.mark.parametrize("transposed", [False, True])
def test_subnormal_input_vector_reads_as_zero_not_nan(dtype: torch.dtype, tiny: float, transposed: bool) -> None:
    """A vector whose largest element is subnormal (the float32 error of a sample the softmax saturated on) is
    zero for the periphery: exactly zero output, no inf/NaN from 1/alpha overflowing (found as spurious
    'divergences' of ReRamSB/PCM training runs)."""
    w = torch.rand(6, 9, dtype=dtype, generator=gen(1)) - 0.5
    n_in = 6 if transposed else 9
    x = torch.zeros(3, n_in, dtype=dtype)
    x[0, 2] = tiny                                         # subnormal only
    x[1] = torch.rand(n_in, dtype=dtype, generator=gen(2))  # an ordinary vector next to it
    x[2, 1] = -tiny
    for p in (IOParameters(), IOParameters(out_bound=0.5)):  # one round; bound management retried
        y, passes = mvm(w, x, p, transposed=transposed)
        assert torch.isfinite(y).all()
        assert torch.equal(y[0], torch.zeros_like(y[0])) and torch.equal(y[2], torch.zeros_like(y[2]))
        assert y[1].abs().sum() > 0
    alpha = noise_management_scale(x, IOParameters())
    assert alpha[0].item() == 0.0 and alpha[2].item() == 0.0 and alpha[1].item() > 0


def _normal_cdf(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


@pytest.mark.parametrize("try_first_round", [True, False])
def test_bound_management_round_frequencies_match_the_per_sample_loop(try_first_round: bool) -> None:
    """One output y = w x + noise (w = x = 1, out_noise 0.3, out_bound 1, no DAC/ADC grid), one sample per call:
    round 0 passes when |1 + n| <= 1 (probability 1/2), round 1 (input halved) when |0.5 + n| <= 1. The CPU path
    (rounds one at a time) and the batched rounds must both give aihwkit's per-sample frequencies; an earlier CPU
    path redrew round 0 after a saturated try and took round 0 three times in four."""
    p = IOParameters(out_bound=1.0, out_noise=0.3, out_res=0.0, inp_res=0.0)
    w, x = torch.ones(1, 1, 1, 1, dtype=torch.float64), torch.ones(1, 1, 1, dtype=torch.float64)
    g = gen(3)
    n = 4000
    passes = torch.tensor([int(analog_mvm(w, x, p, g, try_first_round=try_first_round).passes)
                           for _ in range(n)])
    p0 = _normal_cdf(0.0) - _normal_cdf(-2.0 / 0.3)
    p1 = (1 - p0) * (_normal_cdf(0.5 / 0.3) - _normal_cdf(-1.5 / 0.3))
    for k, expected in ((1, p0), (2, p1)):
        observed = float((passes == k).double().mean())
        assert abs(observed - expected) < 4.5 * math.sqrt(expected * (1 - expected) / n), (k, observed, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("p", [IOParameters(), IOParameters(out_bound=2.0, out_noise=0.1),
                               IOParameters(out_bound=1.5, out_sto_round=True, inp_sto_round=True, inp_noise=0.02),
                               IOParameters(out_bound=3.0, w_noise=0.05, w_noise_type="additive_constant"),
                               IOParameters(out_bound=2.0, bm_test_negative_bound=False, out_res=1 / 60)])
def test_rounds_on_demand_have_the_batched_rounds_distribution(p: IOParameters, dtype: torch.dtype) -> None:
    """The CPU path (round 0 for all, later rounds only for the samples that need them, fresh draws per round)
    against every round computed at once: the same frequency of each round per tile (within 5 standard errors)
    and the same output errors (means within 5 standard errors, standard deviations within 10 %), over many
    samples whose outputs straddle the ADC bound."""
    from crossbar.periphery import _analog_mvm_blocks

    g = torch.Generator().manual_seed(1)
    w = torch.rand(2, 3, 6, 40, generator=g, dtype=dtype) * 0.5 + 0.5              # R=2, C=3 tiles of 6x40
    w[1] *= -1                                                                     # negative outputs too
    batch = 3000
    # sample b drives its first n_b lines of each tile at full scale: |y| ~ 0.75 n_b, from 0.75 to 3 out_bound
    n_b = torch.randint(1, min(40, int(4 * p.out_bound)) + 1, (1, 3, batch, 1), generator=g)
    xin = (torch.arange(40).view(1, 1, 1, 40) < n_b).to(dtype)
    exact = torch.matmul(xin, w.transpose(-1, -2))
    a = _analog_mvm_blocks(w, xin, p, gen(4))
    b = _analog_mvm_blocks(w, xin, p, gen(5), sync_free=True)
    assert a.out.dtype == b.out.dtype == dtype and a.passes.shape == b.passes.shape == (2, 3, batch)
    for k in range(1, 4):
        fa, fb = (a.passes == k).double().mean(-1), (b.passes == k).double().mean(-1)     # [R, C]
        se = torch.sqrt((fa * (1 - fa) + fb * (1 - fb)) / batch)
        assert ((fa - fb).abs() <= 5 * se + 1e-9).all(), (k, fa, fb)
    assert 0.05 < float((a.passes > 1).double().mean()) < 0.95, "the inputs made some samples need later rounds"
    for lo, hi in ((1, 1), (2, 99)):
        ea, eb = ((a.out - exact)[(a.passes >= lo) & (a.passes <= hi)],
                  (b.out - exact)[(b.passes >= lo) & (b.passes <= hi)])
        ea, eb = ea.double(), eb.double()
        se = math.sqrt(ea.var().item() / ea.numel() + eb.var().item() / eb.numel())
        assert abs(ea.mean().item() - eb.mean().item()) < 5 * se
        assert ea.std().item() == pytest.approx(eb.std().item(), rel=0.1)


@pytest.mark.parametrize("p", [IOParameters(), IOParameters(out_sto_round=True, inp_sto_round=True, inp_noise=0.02,
                                                            w_noise=0.05, w_noise_type="additive_constant"),
                               IOParameters(bm_test_negative_bound=False)])
def test_rounds_on_demand_without_saturation_are_one_round(p: IOParameters) -> None:
    """When no output saturates, the CPU path is one MVM: bit for bit the result of the same periphery without
    bound management, for a generator in the same state (the same draws), call after call."""
    g = torch.Generator().manual_seed(2)
    w = (torch.rand(2, 3, 6, 9, generator=g) - 0.5) * 0.2                       # |y| < 1: far from out_bound 12
    x = torch.rand(4, 3, 9, generator=g)
    one_round = IOParameters(**{**p.__dict__, "bound_management": "none"})
    g1, g2 = gen(6), gen(6)
    for _ in range(3):
        a, b = analog_mvm(w, x, p, g1), analog_mvm(w, x, one_round, g2)
        assert torch.equal(a.out, b.out) and (a.passes == 1).all() and (b.passes == 1).all()
    assert torch.equal(g1.get_state(), g2.get_state())


def test_rounds_on_demand_run_later_rounds_only_for_the_samples_that_need_them(monkeypatch: pytest.MonkeyPatch
                                                                                ) -> None:
    """y = 32 for x = 1 (out_bound 12) on sample 1 only (the others read 3): rounds 0, 1 saturate (32, 16),
    round 2 passes (8). Round 0 runs for the three samples, rounds 1 and 2 for sample 1 alone; the configuration
    has more rounds, which are not computed. Outputs hand-computed."""
    import crossbar.periphery as periphery

    w = torch.full((1, 1, 4, 64), 0.5, dtype=torch.float64)
    x = torch.zeros(3, 1, 64, dtype=torch.float64)
    x[:, :, :6] = 1.0                                                 # samples 0, 2: y = 3
    x[1] = 1.0                                                        # sample 1: y = 32
    p = IOParameters(out_noise=0.0)
    calls = []
    real = torch.matmul

    def counting(a, b, *args, **kwargs):
        calls.append(a.shape[-2])
        return real(a, b, *args, **kwargs)
    monkeypatch.setattr(periphery.torch, "matmul", counting)
    res = analog_mvm(w, x, p, gen())
    assert res.passes[0, 0].tolist() == [1, 3, 1]
    dac = round(0.25 / p.inp_step) * p.inp_step                       # x / 4 on the DAC grid
    adc = round(64 * 0.5 * dac / p.out_step) * p.out_step             # ~8 on the ADC grid
    small = round(3.0 / p.out_step) * p.out_step                      # 3 on the ADC grid, round 0
    torch.testing.assert_close(res.out[0, 0, 1], torch.full((4,), 4 * adc, dtype=torch.float64), rtol=1e-12, atol=0)
    torch.testing.assert_close(res.out[0, 0, ::2], torch.full((2, 4), small, dtype=torch.float64), rtol=1e-12, atol=0)
    assert bound_management_rounds(p) > 3 and calls == [3, 1, 1]      # round 0 for all, rounds 1, 2 for sample 1


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("share, computed_apart", [(0.5, True), (0.05, False)])
def test_all_zero_inputs_are_left_out_of_the_mvm(transposed: bool, share: float, computed_apart: bool) -> None:
    """On the CPU, when at least an eighth of the input vectors are all zero (a CNN's errors after max pooling),
    the MVM computes only the others: their outputs are exactly those of an MVM of the others alone (same
    generator state: the same numbers), the all-zero ones give exact zeros and one pass each, as computed in full.
    With few zero vectors everything is computed (zeros and passes the same)."""
    g = torch.Generator().manual_seed(4)
    n_r, n_c, rows, cols, batch = 2, 3, 5, 7, 40
    w = 0.5 + 0.05 * torch.randn(n_r, n_c, rows, cols, generator=g)     # positive: some outputs saturate
    x = torch.randn(batch, n_r if transposed else n_c, rows if transposed else cols, generator=g).abs() * 4.0
    zero = torch.rand(batch, generator=g) < share
    zero[:2] = True
    x[zero] = 0.0
    x[~zero, 0] = 0.0                   # a vector that is zero in one tile block only stays computed
    p = IOParameters(out_noise=0.1, out_bound=0.8)      # noise, and bound management with several rounds
    res = analog_mvm(w, x, p, gen(9), transposed=transposed)
    kept = (~zero).nonzero().squeeze(1)
    alone = analog_mvm(w, x[kept], p, gen(9), transposed=transposed)
    if computed_apart:
        assert torch.equal(res.out[:, :, kept], alone.out) and torch.equal(res.passes[:, :, kept], alone.passes)
    assert torch.equal(res.out[:, :, zero], torch.zeros_like(res.out[:, :, zero]))
    assert torch.equal(res.passes[:, :, zero], torch.ones_like(res.passes[:, :, zero]))
    assert int(res.total_passes()) == int(res.passes.sum())
    assert int(res.passes.max()) > 1 or transposed             # (bound management works in the forward direction)


def test_quantization_divides_exactly_also_at_ties() -> None:
    """The DAC/ADC grid: ``rint(v / step) * step`` with an exactly rounded float32 division, ties to even, as numpy
    computes it — including exact ties such as an input at half of full scale (the largest input of the second
    bound-management round: 0.5 / (2/126) = 31.5). On a GPU the divisor is a 0-d tensor on the device
    (``_divisor``): CUDA divides by a Python number as a product with its reciprocal, which lands on the other
    side of such ties (seen on an H200: one DAC step apart in 0.13 % of the codes of a small-bound MVM)."""
    import numpy as np

    from crossbar.periphery import _divisor, _quantize_, quantize

    step = IOParameters().inp_step
    v = torch.tensor([0.5, -0.5, 0.25, 1.0, 0.123456, -0.999, 31.5 * step, 30.5 * step], dtype=torch.float32)
    ref = np.rint(v.numpy() / np.float32(step)) * np.float32(step)
    assert np.array_equal(quantize(v, step).numpy(), ref)
    assert np.array_equal(_quantize_(v.clone(), step, False, None).numpy(), ref)
    meta = torch.empty(3, device="meta")
    d = _divisor(step, meta)
    assert isinstance(d, torch.Tensor) and d.device.type == "meta" and d.dim() == 0
    assert _divisor(step, meta) is d                                   # cached: no new tensor per call
    assert _divisor(step, v) == step


@pytest.mark.parametrize("perfect", [False, True])
def test_single_pass_results_share_a_read_only_passes_tensor(perfect: bool) -> None:
    """An MVM where every (tile, sample) took one pass returns int64 ones ``[R, C, B]`` and total ``R·C·B``; the
    tensor is shared between calls (no allocation per MVM), so an in-place write into it must be refused."""
    p = IOParameters(is_perfect=True) if perfect else IOParameters(out_bound=math.inf)   # one round: no BM test
    g = torch.Generator().manual_seed(3)
    w = torch.randn(2, 3, 4, 5, generator=g) * 0.1
    first = analog_mvm(w, torch.randn(6, 3, 5, generator=g), p, g)
    second = analog_mvm(w, torch.randn(6, 3, 5, generator=g), p, g)
    assert first.passes.dtype == torch.int64 and tuple(first.passes.shape) == (2, 3, 6)
    assert torch.equal(first.passes, torch.ones(2, 3, 6, dtype=torch.int64))
    assert first.total == 2 * 3 * 6 and int(first.passes.sum()) == first.total
    assert second.passes.data_ptr() == first.passes.data_ptr()
    with pytest.raises(RuntimeError):
        first.passes.add_(1)
    assert torch.equal(second.passes, torch.ones(2, 3, 6, dtype=torch.int64))
