"""crossbar._im2col: the patches equal F.unfold's, their gradient F.fold's (torch's own im2col / col2im)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from crossbar._im2col import CHANNELS_LAST_MIN, im2col, output_size


def _reference(x: torch.Tensor, kernel, dilation, padding, stride) -> torch.Tensor:
    cols = F.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


_pairs = st.tuples(st.integers(1, 3), st.integers(1, 3))


@settings(max_examples=60, deadline=None)
@given(batch=st.integers(1, 3), channels=st.sampled_from([1, 2, CHANNELS_LAST_MIN, 5, 16]),
       size=st.tuples(st.integers(1, 9), st.integers(1, 9)), kernel=_pairs, dilation=_pairs,
       padding=st.tuples(st.integers(0, 2), st.integers(0, 2)), stride=_pairs, channels_last=st.booleans(),
       seed=st.integers(0, 2**31 - 1))
def test_patches_and_gradient_equal_unfold_and_fold(batch, channels, size, kernel, dilation, padding, stride,
                                                    channels_last, seed) -> None:
    h_out, w_out = output_size(size, kernel, dilation, padding, stride)
    if h_out < 1 or w_out < 1:
        return                                       # no output position: nn.Conv2d rejects such a geometry
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, *size, generator=gen)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x_new, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    got = im2col(x_new, kernel, dilation, padding, stride)
    want = _reference(x_ref, kernel, dilation, padding, stride)
    assert got.shape == (batch * h_out * w_out, channels * kernel[0] * kernel[1])
    assert torch.equal(got, want)
    g = torch.randn(got.shape, generator=gen)
    got.backward(g)
    want.backward(g)
    assert x_new.grad.shape == x.shape
    # F.fold adds the overlapping patches' gradients in the same kernel-position order: the same floats
    assert torch.equal(x_new.grad, x_ref.grad)


def test_gradient_is_the_adjoint_in_float64() -> None:
    x = torch.randn(2, 4, 6, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: im2col(t, (3, 2), (1, 2), (1, 1), (2, 1)), (x,))


def test_each_row_is_one_patch_channel_major() -> None:
    """Hand-built: a 1-image, 3-channel 3 x 3 input, 2 x 2 kernel, no padding: 4 patches of 12 values."""
    x = torch.arange(27, dtype=torch.float32).view(1, 3, 3, 3)
    rows = im2col(x, (2, 2), (1, 1), (0, 0), (1, 1))
    assert rows.shape == (4, 12)
    # patch at output (0, 1): channel c contributes x[c, 0:2, 1:3] flattened, channels in order
    want = torch.cat([x[0, c, 0:2, 1:3].reshape(-1) for c in range(3)])
    assert torch.equal(rows[1], want)
