"""im2col for :class:`~crossbar.modules.AnalogConv2d`: the image patches as MVM input vectors, and its adjoint.

:func:`im2col` returns the matrix ``F.unfold`` gives, laid out one patch per row, ``[B·L, C·kh·kw]`` (columns in
``(channel, kh, kw)`` order, rows in ``(image, output row, output column)`` order), differentiable. Its values
are those of ``F.unfold(...).transpose(1, 2).reshape(B·L, -1)`` exactly and its gradient is ``F.fold``'s, bit for
bit (the overlapping patches' contributions added in the same ``(kh, kw)`` order), but both are computed
through the channels-last layout: CPU ``F.unfold`` / ``F.fold`` copy one image row of one channel at a time,
which for a convolution with many channels over small images (a CNN's second layer: 16 channels, 14 × 14)
costs several times the memory traffic (measured on the AVX2 machine, ``[64, 16, 14, 14]``, 3 × 3, padding 1:
forward 4.1 → 1.8 ms, backward 3.7 → 1.6 ms).

* forward: the image zero-padded into a channels-last buffer ``[B, H+2p, W+2p, C]``, the patches read as one
  strided view ``[B, h_out, w_out, kh, kw, C]`` and copied, then each row's ``(kh·kw) × C`` block transposed to
  ``C × (kh·kw)``. With fewer than :data:`CHANNELS_LAST_MIN` channels ``F.unfold`` is faster and is used.
* backward: the gradient rows viewed as ``[B, h_out, w_out, C, kh, kw]``; for each kernel position one strided
  add into a zeroed channels-last buffer; the result is returned as a ``[B, C, H, W]`` view of it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["CHANNELS_LAST_MIN", "im2col", "output_size"]

CHANNELS_LAST_MIN = 4
"""Least number of input channels for which :func:`im2col` builds the patches through the channels-last layout
(3 × 3 kernels, 64 images: with 1–2 channels ``F.unfold`` was 1.5–1.7× faster, with 3 it depended on the image
size, from 4 channels on the channels-last copy was faster: 4 × 28 × 28 4.3 → 3.6 ms)."""

_Pair = tuple[int, int]


def output_size(size: _Pair, kernel: _Pair, dilation: _Pair, padding: _Pair, stride: _Pair) -> _Pair:
    """``(h_out, w_out)`` of a convolution over an image of ``size = (H, W)`` (``nn.Conv2d``'s formula)."""
    h, w = ((n + 2 * p - d * (k - 1) - 1) // s + 1
            for n, k, d, p, s in zip(size, kernel, dilation, padding, stride))
    return h, w


def im2col(x: Tensor, kernel: _Pair, dilation: _Pair, padding: _Pair, stride: _Pair) -> Tensor:
    """The patches of ``x: [B, C, H, W]`` as rows ``[B·L, C·kh·kw]`` (``L = h_out·w_out``), differentiable in
    ``x`` (see the module docstring)."""
    out: Tensor = _Im2Col.apply(x, kernel, dilation, padding, stride)
    return out


def _channels_last_padded(x: Tensor, padding: _Pair) -> Tensor:
    """``x: [B, C, H, W]`` zero-padded and channels-last: a contiguous ``[B, H+2p_h, W+2p_w, C]``."""
    b, c, h, w = x.shape
    ph, pw = padding
    out = x.new_zeros(b, h + 2 * ph, w + 2 * pw, c)
    out[:, ph:ph + h, pw:pw + w].copy_(x.permute(0, 2, 3, 1))
    return out


def _patch_view(buf: Tensor, out_hw: _Pair, kernel: _Pair, dilation: _Pair, stride: _Pair) -> Tensor:
    """The patches of a channels-last buffer ``[B, Hp, Wp, C]`` as a view ``[B, h_out, w_out, kh, kw, C]``."""
    sb, sh, sw, sc = buf.stride()
    return buf.as_strided((buf.shape[0], *out_hw, *kernel, buf.shape[3]),
                          (sb, sh * stride[0], sw * stride[1], sh * dilation[0], sw * dilation[1], sc))


class _Im2Col(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, kernel: _Pair, dilation: _Pair, padding: _Pair,  # type: ignore[override]
                stride: _Pair) -> Tensor:
        b, c, h, w = x.shape
        out_hw = output_size((h, w), kernel, dilation, padding, stride)
        ctx.geometry = (x.shape, out_hw, kernel, dilation, padding, stride)
        n, k = b * out_hw[0] * out_hw[1], kernel[0] * kernel[1]
        if c < CHANNELS_LAST_MIN:
            cols = F.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)   # [B, C·k, L]
            return cols.transpose(1, 2).reshape(n, c * k)
        patches = _patch_view(_channels_last_padded(x, padding), out_hw, kernel, dilation, stride)
        rows = patches.reshape(n, k, c)                                         # a copy: [B·L, kh·kw, C]
        return rows.transpose(1, 2).reshape(n, c * k)                           # [B·L, C, kh·kw]

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None, None]:  # type: ignore[override]
        shape, out_hw, kernel, dilation, padding, stride = ctx.geometry
        b, c, h, w = shape
        (ph, pw), (sh, sw), (dh, dw) = padding, stride, dilation
        acc = grad.new_zeros(b, h + 2 * ph, w + 2 * pw, c)
        g = grad.reshape(b, *out_hw, c, *kernel)                              # [B, h_out, w_out, C, kh, kw]
        rows, cols = sh * (out_hw[0] - 1) + 1, sw * (out_hw[1] - 1) + 1
        for i in range(kernel[0]):      # kernel positions (9 for 3 x 3): in F.fold's order of addition
            for j in range(kernel[1]):
                acc[:, i * dh:i * dh + rows:sh, j * dw:j * dw + cols:sw].add_(g[..., i, j])
        return acc[:, ph:ph + h, pw:pw + w].permute(0, 3, 1, 2), None, None, None, None
