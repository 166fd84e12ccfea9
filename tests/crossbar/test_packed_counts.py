"""The CPU dense path's coincidence counts equal the two-matmul float reference exactly.

``crossbar._sparse_update._int8_counts`` multiplies 0/±1 int8 trains with int32 sums; ``_packed_counts`` (the
fallback without an int8 matmul) weights negative pulses by powers of ``M = batch*slots + 1`` and reads
``n_up`` / ``n_down`` back from the digits of one float matmul. On the same drawn trains both must give exactly
the numbers of ``crossbar.update._dense_counts`` (every sign pattern, both compute dtypes, long trains).
"""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import crossbar._sparse_update as su
from crossbar.update import UpdateParameters, _dense_counts, _draw_dense_trains, _plan_trains


def _trains(batch: int, n_r: int, n_c: int, rows: int, cols: int, x_signs: str, d_signs: str, lr: float,
            desired_bl: int, dtype: torch.dtype, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, n_c, cols, generator=g, dtype=dtype) * (torch.rand(batch, n_c, cols, generator=g) < 0.8)
    d = torch.randn(batch, n_r, rows, generator=g, dtype=dtype) * (torch.rand(batch, n_r, rows, generator=g) < 0.8)
    x = {"mixed": x, "pos": x.abs(), "neg": -x.abs()}[x_signs]
    d = {"mixed": d, "pos": d.abs(), "neg": -d.abs()}[d_signs]
    plan = _plan_trains(x, d, lr, 0.01, UpdateParameters(desired_bl=desired_bl), g, trim_slots=False)
    return _draw_dense_trains(plan, g)


def _clone(trains):
    return trains._replace(x_bits=trains.x_bits.clone(), d_bits=trains.d_bits.clone())


@settings(max_examples=80, deadline=None)
@given(batch=st.integers(1, 12), n_r=st.integers(1, 3), n_c=st.integers(1, 3), rows=st.integers(1, 9),
       cols=st.integers(1, 9), x_signs=st.sampled_from(["mixed", "pos", "neg"]),
       d_signs=st.sampled_from(["mixed", "pos", "neg"]), lr=st.sampled_from([0.05, -0.3, 1.0, 0.002]),
       desired_bl=st.sampled_from([1, 3, 31]), dtype=st.sampled_from([torch.float32, torch.float64]),
       seed=st.integers(0, 2**31 - 1))
def test_packed_count_equals_the_two_matmul_count(batch, n_r, n_c, rows, cols, x_signs, d_signs, lr, desired_bl,
                                                  dtype, seed) -> None:
    trains = _trains(batch, n_r, n_c, rows, cols, x_signs, d_signs, lr, desired_bl, dtype, seed)
    ref_up, ref_down, _ = _dense_counts(trains)
    n_up, n_down = su._packed_counts(_clone(trains))
    assert n_up.dtype == ref_up.dtype and n_up.shape == ref_up.shape
    assert torch.equal(n_up, ref_up) and torch.equal(n_down, ref_down)
    n_up, n_down = su._int8_counts(_clone(trains))                # int32 counts, the same numbers
    assert n_up.dtype == n_down.dtype == torch.int32 and n_up.shape == ref_up.shape
    assert torch.equal(n_up.to(ref_up.dtype), ref_up) and torch.equal(n_down.to(ref_down.dtype), ref_down)


def test_long_mixed_trains_near_and_beyond_the_exact_range() -> None:
    """float32, mixed signs: K = 160 slots x samples (the largest packed, M**3 <= 2**22), K = 161 (the two-matmul
    fallback) and a one-sided case with K = 2000 (packed with one digit); many devices with large counts (int8:
    counts far beyond int8's range)."""
    for batch, desired_bl, x_signs in ((160, 1, "mixed"), (161, 1, "mixed"), (80, 2, "mixed"),
                                       (1000, 2, "pos"), (256, 1, "mixed"), (128, 2, "pos")):
        g = torch.Generator().manual_seed(batch)
        x = torch.randn(batch, 1, 6, generator=g)
        x = x.abs() if x_signs == "pos" else x
        d = torch.randn(batch, 1, 5, generator=g)
        # lr large: every line fires in almost every slot, so counts reach ~K (the digits' full range)
        plan = _plan_trains(x, d, 50.0, 0.01, UpdateParameters(desired_bl=desired_bl), g, trim_slots=False)
        trains = _draw_dense_trains(plan, g)
        ref_up, ref_down, _ = _dense_counts(trains)
        assert float((ref_up + ref_down).max()) > 0.3 * batch * desired_bl
        n_up, n_down = su._packed_counts(_clone(trains))
        assert torch.equal(n_up, ref_up) and torch.equal(n_down, ref_down)
        n_up, n_down = su._int8_counts(_clone(trains))             # int8 with int32 sums: exact at any length
        assert torch.equal(n_up.to(ref_up.dtype), ref_up) and torch.equal(n_down.to(ref_down.dtype), ref_down)


@settings(max_examples=80, deadline=None)
@given(batch=st.integers(1, 9), n_r=st.integers(1, 3), n_c=st.integers(1, 3), per_row=st.booleans(),
       lr=st.sampled_from([0.05, -0.3, 1.0, 0.002, 1e-7, 40.0]), dw=st.sampled_from([0.001, 0.0137, 0.3]),
       desired_bl=st.sampled_from([1, 5, 31]), bl_management=st.booleans(), grad_scale=st.sampled_from([1.0, 0.37]),
       dtype=st.sampled_from([torch.float32, torch.float64]), seed=st.integers(0, 2**31 - 1))
def test_host_scales_are_bit_identical_to_the_tensor_scales(batch, n_r, n_c, per_row, lr, dw, desired_bl,
                                                            bl_management, grad_scale, dtype, seed) -> None:
    """The numpy form of the update management (CPU, plain-number lr) against the 0-d-tensor torch form."""
    from crossbar.update import _scales

    g = torch.Generator().manual_seed(seed)
    x_shape = (batch, n_r if per_row else 1, n_c) if per_row or seed % 2 else (batch, n_c)
    x_max = torch.rand(x_shape, generator=g, dtype=dtype).mul_(torch.rand(1, generator=g, dtype=dtype) * 5)
    d_max = torch.rand(batch, n_r, generator=g, dtype=dtype).mul_(torch.rand(1, generator=g, dtype=dtype) * 0.3)
    x_max[torch.rand(x_shape, generator=g) < 0.2] = 0.0
    d_max[torch.rand(batch, n_r, generator=g) < 0.2] = 0.0
    cfg = UpdateParameters(desired_bl=desired_bl, update_bl_management=bl_management, um_grad_scale=grad_scale)
    host = _scales(x_max, d_max, lr, dw, cfg)
    ref = _scales(x_max, d_max, torch.tensor(lr, dtype=dtype), torch.tensor(dw, dtype=dtype), cfg)
    for h, r in zip(host, ref):
        assert h.dtype == r.dtype and h.shape == r.shape
        assert torch.equal(h, r.expand_as(h)), (h, r)
