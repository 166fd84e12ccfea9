"""Pure GRAPES tensor functions: hand-computed values and invariants (hypothesis)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from imc_grapes.grapes import (
    BP_CLIP,
    dfa_modulations,
    importance,
    layer_mean,
    modulation,
    outgoing_importance,
    outgoing_modulation,
    synapse_modulation,
)

W = torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.25, -0.25], [-3.0, 1.0, 0.0]], dtype=torch.float64)
# row sums of |W|: 3.5, 0.5, 4.0 ; column sums: 4.0, 3.25, 0.75


def test_importance_hand_computed():
    torch.testing.assert_close(importance(W), torch.tensor([3.5, 0.5, 4.0], dtype=torch.float64))
    torch.testing.assert_close(outgoing_importance(W), torch.tensor([4.0, 3.25, 0.75], dtype=torch.float64))


def test_modulation_hand_computed_clipped_and_unclipped():
    F = torch.tensor([3.5, 0.5, 4.0], dtype=torch.float64)
    # 2F/max = [1.75, 0.25, 2.0]
    torch.testing.assert_close(modulation(F, clip=None), torch.tensor([1.75, 0.25, 2.0], dtype=torch.float64))
    torch.testing.assert_close(modulation(F), torch.tensor([1.75, 1.0, 2.0], dtype=torch.float64))
    torch.testing.assert_close(modulation(F, clip=BP_CLIP), modulation(F))
    torch.testing.assert_close(outgoing_modulation(W), torch.tensor([2.0, 1.625, 0.375], dtype=torch.float64))


def test_conv_importance_is_per_output_channel():
    g = torch.Generator().manual_seed(0)
    K = torch.randn(4, 3, 2, 2, generator=g)
    expected = torch.stack([K[c].abs().sum() for c in range(4)])
    torch.testing.assert_close(importance(K), expected)
    assert outgoing_importance(K).shape == (3,)
    torch.testing.assert_close(outgoing_importance(K), torch.stack([K[:, c].abs().sum() for c in range(3)]))


def test_layer_mean_and_synapse_modulation():
    M = torch.tensor([1.0, 1.5, 2.0])
    torch.testing.assert_close(layer_mean(M), torch.full((3,), 1.5))
    stacked = torch.tensor([[1.0, 2.0], [1.0, 1.0]])
    torch.testing.assert_close(layer_mean(stacked), torch.tensor([[1.5, 1.5], [1.0, 1.0]]))
    S = synapse_modulation(torch.tensor([1.0, 2.0]), torch.tensor([0.5, 1.0, 3.0]))
    torch.testing.assert_close(S, torch.tensor([[0.5, 1.0, 3.0], [1.0, 2.0, 6.0]]))


def test_modulation_batched_over_layers_uses_each_rows_max():
    F = torch.tensor([[1.0, 2.0, 4.0], [3.0, 3.0, 1.5]])
    torch.testing.assert_close(modulation(F, clip=None), torch.tensor([[0.5, 1.0, 2.0], [2.0, 2.0, 1.0]]))


def test_all_zero_importance_gives_two_not_nan():
    m = modulation(torch.zeros(5))
    torch.testing.assert_close(m, torch.full((5,), 2.0))
    torch.testing.assert_close(modulation(torch.zeros(5), clip=None), torch.full((5,), 2.0))


def test_dtype_and_device_preserved():
    for dt in (torch.float32, torch.float64):
        w = W.to(dt)
        assert importance(w).dtype == dt and modulation(importance(w)).dtype == dt
        assert outgoing_modulation(w).dtype == dt


def test_invalid_inputs_raise():
    with pytest.raises(ValueError, match="at least 2 dims"):
        importance(torch.ones(3))
    with pytest.raises(ValueError, match="at least 2 dims"):
        outgoing_importance(torch.ones(3))
    with pytest.raises(ValueError, match="low <= high"):
        modulation(torch.ones(3), clip=(2.0, 1.0))
    with pytest.raises(ValueError, match="scalar"):
        modulation(torch.tensor(1.0))


def test_dfa_modulations_hand_computed():
    """Hidden layers 0, 1, 2: layer 0 unmodulated; layer 1: P^2 ⊗ P^1; layer 2: 1 ⊗ P^2 (output P = 1)."""
    o1 = torch.tensor([1.0, 2.0, 4.0])  # colsums of W^1 -> P^1 = [0.5, 1, 2]
    o2 = torch.tensor([3.0, 1.0])  # colsums of W^2 -> P^2 = [2, 2/3]
    fac = dfa_modulations([None, o1, o2], last_out=4)
    assert fac[0] is None
    p_post, p_pre = fac[1]
    torch.testing.assert_close(p_post, torch.tensor([2.0, 2.0 / 3.0]))
    torch.testing.assert_close(p_pre, torch.tensor([0.5, 1.0, 2.0]))
    p_post, p_pre = fac[2]
    torch.testing.assert_close(p_post, torch.ones(4))
    torch.testing.assert_close(p_pre, torch.tensor([2.0, 2.0 / 3.0]))
    mean_fac = dfa_modulations([None, o1, o2], last_out=4, transform=layer_mean)
    torch.testing.assert_close(mean_fac[1][1], torch.full((3,), 3.5 / 3))
    with pytest.raises(ValueError, match=r"outgoing\[1\]"):
        dfa_modulations([None, None], last_out=2)


@pytest.mark.parametrize("last_out", [0, -1, 2.5, True, "3", None])
def test_dfa_modulations_refuses_a_last_out_that_is_no_width(last_out: object) -> None:
    """``last_out`` went to ``torch.ones`` unchecked: 2.5 was torch's TypeError, -1 its RuntimeError, 0 an empty
    output factor (and True a factor of one element); each is now refused naming the argument and the range."""
    with pytest.raises(ValueError, match=r"^dfa_modulations\.last_out must be an integer >= 1 \(the output width of "
                                         rf"the last hidden layer\), got {re.escape(repr(last_out))}$"):
        dfa_modulations([None, torch.tensor([1.0, 2.0])], last_out=last_out)  # type: ignore[arg-type]


def test_dfa_modulations_takes_a_numpy_width_and_refuses_an_outgoing_entry_that_is_no_vector() -> None:
    """A numpy integer width is its value (the output layer's P = 1 has that many ones); an entry ``k >= 1`` that
    is not a 1-D tensor (a list, or a stack [2, 2] that ``modulation`` would take row by row) is refused."""
    fac = dfa_modulations([None, torch.tensor([1.0, 4.0])], last_out=np.int64(3))  # type: ignore[arg-type]
    assert torch.equal(fac[1][0], torch.ones(3))
    torch.testing.assert_close(fac[1][1], torch.tensor([0.5, 2.0]))                 # 2·[1, 4] / 4
    for bad, got in (([1.0, 2.0], r"\[1\.0, 2\.0\]"), (torch.ones(2, 2), r"shape \(2, 2\)")):
        with pytest.raises(ValueError, match=r"^dfa_modulations\.outgoing\[1\] must be a 1-D tensor \[in_1\] "
                                             rf"\(only entry 0 may be None\), got {got}$"):
            dfa_modulations([None, bad], last_out=2)  # type: ignore[list-item]


weights = arrays(
    np.float64,
    st.tuples(st.integers(1, 8), st.integers(1, 8)),
    elements=st.floats(-10.0, 10.0, allow_nan=False, allow_subnormal=False),
)


@settings(max_examples=200, deadline=None)
@given(weights)
def test_clipped_modulation_in_one_two_with_max_exactly_two(w):
    M = modulation(importance(torch.from_numpy(w)))
    assert torch.all(M >= 1.0) and torch.all(M <= 2.0)
    assert M.max() == 2.0


@settings(max_examples=200, deadline=None)
@given(weights)
def test_unclipped_modulation_equals_two_f_over_max(w):
    F = np.abs(w).sum(axis=1)
    M = modulation(importance(torch.from_numpy(w)), clip=None).numpy()
    if F.max() > 0:
        np.testing.assert_allclose(M, 2.0 * F / F.max(), rtol=1e-12, atol=0)
    else:
        np.testing.assert_array_equal(M, 2.0)
    assert M.max() == 2.0 and M.min() >= 0.0


@settings(max_examples=100, deadline=None)
@given(weights, st.floats(0.01, 100.0))
def test_modulation_is_scale_invariant_and_layer_mean_preserves_mean(w, scale):
    t = torch.from_numpy(w)
    m1 = modulation(importance(t), clip=None)
    m2 = modulation(importance(t * scale), clip=None)
    torch.testing.assert_close(m1, m2, rtol=1e-12, atol=1e-12)
    lm = layer_mean(m1)
    torch.testing.assert_close(lm.mean(), m1.mean())
    assert torch.all(lm == lm[0])


conv_weights = arrays(
    np.float64,
    st.tuples(st.integers(1, 5), st.integers(1, 4), st.integers(1, 3), st.integers(1, 3)),
    elements=st.floats(-10.0, 10.0, allow_nan=False, allow_subnormal=False),
)


@settings(max_examples=100, deadline=None)
@given(st.one_of(weights, conv_weights))
def test_factors_of_linear_and_conv_weights_lie_in_their_documented_ranges(w):
    """The documented ranges of every factor, for linear ``[out, in]`` and conv ``[C_out, C_in, kh, kw]`` weights
    (the tests above draw linear weights and the incoming modulation only): the clipped modulation lies in
    ``[1, 2]``, the outgoing modulation ``P`` in ``[0, 2]`` with its maximum exactly 2 (``2·colsum / max``), the
    synapse factor ``S_ij = P_post_i·P_pre_j`` in ``[0, 4]``, and layer-mean factors are one value in the
    range of the factors they average."""
    t = torch.from_numpy(w)
    m = modulation(importance(t))
    assert m.shape == (w.shape[0],) and torch.all(m >= 1.0) and torch.all(m <= 2.0) and m.max() == 2.0
    p = outgoing_modulation(t)
    col = np.abs(w).sum(axis=tuple(d for d in range(w.ndim) if d != 1))     # per input neuron / channel
    assert p.shape == (w.shape[1],) and torch.all(p >= 0.0) and torch.all(p <= 2.0) and p.max() == 2.0
    if col.max() > 0:
        np.testing.assert_allclose(p.numpy(), 2.0 * col / col.max(), rtol=1e-12, atol=0)
    s = synapse_modulation(m, p)
    assert s.shape == (w.shape[0], w.shape[1]) and torch.all(s >= 0.0) and torch.all(s <= 4.0)
    for f in (m, p):
        lm = layer_mean(f)
        assert torch.all(lm == lm[0]) and f.min() - 1e-12 <= lm[0] <= f.max() + 1e-12   # a mean, up to rounding


@settings(max_examples=50, deadline=None)
@given(st.lists(weights, min_size=2, max_size=4), st.integers(1, 6))
def test_dfa_modulations_lie_in_zero_two_and_the_last_post_factor_is_one(ws, last_out):
    """``dfa_modulations``: every ``P^k`` (unclipped) lies in ``[0, 2]`` with maximum 2, the post factor of the last
    hidden layer is ``P = 1`` of length ``last_out``, and each post factor is the next layer's pre factor."""
    outgoing = [None] + [outgoing_importance(torch.from_numpy(w)) for w in ws[1:]]
    factors = dfa_modulations(outgoing, last_out=last_out)
    assert factors[0] is None and len(factors) == len(ws)
    for k in range(1, len(ws)):
        p_post, p_pre = factors[k]
        assert torch.all(p_pre >= 0.0) and torch.all(p_pre <= 2.0) and p_pre.max() == 2.0
        if k + 1 < len(ws):
            assert torch.equal(p_post, factors[k + 1][1])
        else:
            assert torch.equal(p_post, torch.ones(last_out, dtype=p_pre.dtype))


# ------------------------------------------------------------------ argument errors
@pytest.mark.parametrize("call, fn, name", [
    (lambda v: importance(v), "importance", "weight"),
    (lambda v: outgoing_importance(v), "outgoing_importance", "weight"),
    (lambda v: outgoing_modulation(v), "outgoing_importance", "weight"),
    (lambda v: modulation(v), "modulation", "F"),
    (lambda v: layer_mean(v), "layer_mean", "M"),
    (lambda v: synapse_modulation(v, torch.ones(2)), "synapse_modulation", "p_post"),
    (lambda v: synapse_modulation(torch.ones(2), v), "synapse_modulation", "p_pre"),
])
@pytest.mark.parametrize("value", [[[1.0, 2.0], [3.0, 4.0]], np.ones((2, 2))])
def test_a_list_or_array_is_refused_naming_the_function_and_argument(call, fn, name, value):
    """A list or numpy array failed with ``AttributeError: 'list' object has no attribute 'dim'`` (or ``abs``,
    ``mean``); it is a ``TypeError`` naming the function, the argument and the type."""
    with pytest.raises(TypeError, match=rf"^{fn}: {name} must be a torch.Tensor, got {type(value).__name__}$"):
        call(value)


@pytest.mark.parametrize("shape", [(0,), (3, 0)])
def test_modulation_and_layer_mean_of_a_layer_without_nodes_are_refused(shape):
    """``modulation`` of an empty layer failed in ``amax`` (IndexError "Expected reduction dim -1 to have non-zero
    size") and ``layer_mean`` returned NaN-free empty tensors silently; both name the shape now."""
    with pytest.raises(ValueError, match=rf"^modulation: F must hold at least one node \(its last dim, n >= 1\), "
                                         rf"got shape \({shape[0]},{' 0' if len(shape) == 2 else ''}\)$"):
        modulation(torch.zeros(shape))
    with pytest.raises(ValueError, match=r"^layer_mean: M must have at least 1 dim"):
        layer_mean(torch.zeros(shape))
    with pytest.raises(ValueError, match=r"^layer_mean: M must have at least 1 dim .* got shape \(\)$"):
        layer_mean(torch.tensor(1.0))
