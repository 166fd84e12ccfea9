"""crossbar._reduce.nonneg_amax against torch's float amax and a numpy maximum (the same bits)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from crossbar._reduce import nonneg_amax

_SPECIAL = [0.0, math.inf, 1e-45, 1.17549435e-38, 3.4e38, 1.0, 0.5, 2.0]


@settings(max_examples=80, deadline=None)
@given(rows=st.integers(0, 40), lines=st.integers(1, 70), seed=st.integers(0, 2**31 - 1),
       dtype=st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16]),
       special=st.booleans(), nan_rows=st.integers(0, 3), transpose=st.booleans(), keepdim=st.booleans())
def test_equals_float_amax_bit_for_bit(rows: int, lines: int, seed: int, dtype: torch.dtype, special: bool,
                                       nan_rows: int, transpose: bool, keepdim: bool) -> None:
    gen = np.random.default_rng(seed)
    a = np.abs(gen.standard_normal((rows, lines)) * 10.0 ** gen.integers(-30, 30, (rows, lines)))
    if special and a.size:   # zeros, infinities, subnormals, the largest finite values
        a.flat[gen.integers(0, a.size, min(a.size, 12))] = gen.choice(_SPECIAL, min(a.size, 12))
    t = torch.from_numpy(a).to(dtype).abs()      # values beyond a dtype's range become inf, tiny ones +0
    for r in gen.integers(0, max(rows, 1), min(nan_rows, rows)):
        t[r, gen.integers(0, lines)] = torch.nan
    t = t.abs()                                   # NaNs with a clear sign bit, as |x| gives them
    dim = -1
    if transpose:                                 # a strided view, reduced along its non-contiguous dim
        t, dim = t.t(), 0
    got = nonneg_amax(t, dim, keepdim)
    want = t.amax(dim=dim, keepdim=keepdim)
    assert got.dtype == t.dtype and got.shape == want.shape
    assert torch.equal(torch.isnan(got), torch.isnan(want))
    finite = ~torch.isnan(want)
    assert torch.equal(got[finite], want[finite])
    # an independent reference: numpy's maximum over the same values (float64 holds every dtype exactly)
    ref = np.max(t.to(torch.float64).numpy(), axis=dim, keepdims=keepdim) if t.shape[dim] else None
    if ref is not None:
        np.testing.assert_array_equal(got.to(torch.float64).numpy(), ref)


def test_rows_of_a_cnn_layer_and_other_dtypes() -> None:
    t = torch.rand(3, 50, 9, generator=torch.Generator().manual_seed(0))
    assert torch.equal(nonneg_amax(t), t.amax(dim=-1))
    assert torch.equal(nonneg_amax(t, dim=1, keepdim=True), t.amax(dim=1, keepdim=True))
    ints = torch.tensor([[3, 7, 1], [0, 2, 9]])
    assert torch.equal(nonneg_amax(ints), torch.tensor([7, 9]))     # not a float: torch's amax
    with pytest.raises((RuntimeError, IndexError)):
        nonneg_amax(torch.rand(4, 0))                                # as amax: no maximum of nothing


def test_live_samples_leaves_out_silent_samples_from_an_eighth_on() -> None:
    """Hand-built batches of 16: 2 silent (= 1/8) are left out, 1 silent is not worth it; a NaN is a live sample;
    an empty or all-live batch computes everything."""
    from crossbar._reduce import SILENT_SHARE, live_samples

    assert SILENT_SHARE == 0.125
    active = torch.ones(16)
    active[[3, 9]] = 0.0
    assert torch.equal(live_samples(active), torch.tensor([0, 1, 2, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 15]))
    active[3] = float("nan")
    assert live_samples(active) is None                        # one silent sample of 16: computed in full
    assert live_samples(torch.ones(16, dtype=torch.bool)) is None
    assert live_samples(torch.zeros(0)) is None
    assert torch.equal(live_samples(torch.zeros(4, dtype=torch.bool)), torch.zeros(0, dtype=torch.int64))


def test_has_zero_finds_an_exact_zero_only() -> None:
    """Hand-built tensors: an exact zero (+0 or -0) anywhere is found, a NaN, an inf or a tiny subnormal is not
    zero; an empty tensor has none; float32/float64 (numpy) and other dtypes (torch) agree."""
    from crossbar._reduce import has_zero

    for dtype in (torch.float32, torch.float64, torch.float16, torch.int32):
        t = torch.tensor([[1, 2, 3], [4, 5, 6]], dtype=dtype)
        assert not has_zero(t)
        t[1, 2] = 0
        assert has_zero(t)
        assert has_zero(t.t())                                     # a strided view
    assert has_zero(torch.tensor([1.0, -0.0]))
    assert not has_zero(torch.tensor([float("nan"), math.inf, 1e-45]))
    assert not has_zero(torch.zeros(0, 3))
    assert not has_zero(torch.zeros(2, 0, dtype=torch.float64))
