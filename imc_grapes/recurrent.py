"""Recurrent classifiers for sequential (row-by-row) MNIST: a vanilla RNN or an LSTM, with GRAPES per unit.

An image ``[batch, C, H, W]`` is read as a sequence of ``T = H`` rows, each row a ``C·W`` vector (28 steps of
28 pixels for MNIST). Each recurrent layer splits its pre-activation into an input branch and a recurrent
branch::

    a_t = W x_t + U h_{t-1} + b          (LSTM: the same for the 4 gate blocks i, f, g, o)
    RNN:  h_t = tanh(a_t)
    LSTM: i, f, g, o = σ(a^i), σ(a^f), tanh(a^g), σ(a^o);  c_t = f c_{t-1} + i g;  h_t = o tanh(c_t)

``W`` is ``self.inp`` (``nn.Linear(in, G·hidden, bias=False)``, G = 1 for the RNN, 4 for the LSTM), ``U`` and
``b`` are ``self.rec`` (``nn.Linear(hidden, G·hidden)``). The input branch does not depend on the state, so it
is one matrix product over all time steps at once (``[T·batch, in]``); only the recurrence runs step by step.
The classifier ``self.readout`` (bias-free) reads the last layer's final state ``h_T``.

GRAPES (grapes.md §3, "recurrent layers"): :meth:`SequenceClassifier.hidden_layers` names the input
matrices ``W`` of the recurrent layers, so :func:`~imc_grapes.grapes.attach_grapes` computes ``F = Σ_j |W_ij|``
(row sums of the input-to-hidden matrix; for the LSTM one factor per gate row, normalised by the maximum over
all ``4·hidden`` gate rows of the layer together, not per gate block) and its propagated hook
multiplies the error arriving at the output of ``W`` — i.e. ``∂L/∂a_t`` of the input branch — at every time
step. What the recurrent weights contribute (a documented choice):

* they do **not** enter the importance ``F`` (input rows only, as the issue asks; biases excluded too);
* their own gradient and the error carried back through time (``Uᵀ δ_t``) are **not** modulated: the factor
  scales the input branch only, so ``ΔW`` and the error sent to the layer below are modulated while ``ΔU``,
  ``Δb`` are plain BPTT. Scaling the temporal path as well would multiply the error by up to ``M^T`` over a
  sequence (2^28 for M = 2), which is not a modulation but an explosion.
"""
from __future__ import annotations

import math
from typing import Sequence, cast

import torch
from torch import Tensor, nn

from .grapes.initializers import he_uniform_, make_generator, uniform_
from .suggest import did_you_mean

__all__ = ["CELLS", "RecurrentLayer", "SequenceClassifier", "image_to_sequence"]

CELLS: tuple[str, ...] = ("rnn", "lstm")


def image_to_sequence(x: Tensor) -> Tensor:
    """Row-by-row sequence of an image batch: ``x: [batch, C, H, W]`` -> ``[T=H, batch, C·W]``.

    A ``[batch, T, F]`` tensor is taken as already a sequence (batch first) -> ``[T, batch, F]``.
    """
    if x.dim() == 4:
        b, c, h, w = x.shape
        return x.permute(2, 0, 1, 3).reshape(h, b, c * w)
    if x.dim() == 3:
        return x.transpose(0, 1)
    raise ValueError(f"image_to_sequence: expected [batch, C, H, W] or [batch, T, F], got shape {tuple(x.shape)}")


@torch.no_grad()
def _orthogonal_blocks_(w: Tensor, blocks: int, generator: torch.Generator) -> None:
    """Fill each of the ``blocks`` row blocks ``[hidden, hidden]`` of ``w: [blocks·hidden, hidden]`` with a
    random orthogonal matrix (QR of a Gaussian, sign-corrected), drawn on CPU from ``generator``."""
    n = w.shape[1]
    a = torch.randn(blocks, n, n, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    w.copy_(q.reshape(blocks * n, n).to(w.dtype))


class RecurrentLayer(nn.Module):
    """One recurrent layer (vanilla tanh RNN or LSTM) over a whole sequence.

    Args:
        cell: ``"rnn"`` or ``"lstm"``.
        in_features: width of ``x_t``. hidden: units.
        generator: draws the initial weights: ``W`` He-uniform (``fan_in = in_features``), ``U`` one random
            orthogonal matrix per gate block, ``b = 0`` (LSTM: forget-gate bias 1).
        device, dtype: where the parameters live.

    Attributes:
        inp: ``W``, ``nn.Linear(in_features, G·hidden, bias=False)`` (G = 1 rnn, 4 lstm: gates i, f, g, o).
        rec: ``U`` and ``b``, ``nn.Linear(hidden, G·hidden)``.

    Shapes: ``x: [T, batch, in_features]`` -> ``h: [T, batch, hidden]`` (the state after every step).
    """

    def __init__(self, cell: str, in_features: int, hidden: int, generator: torch.Generator,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"RecurrentLayer.cell must be one of {CELLS}, got {cell!r}{did_you_mean(cell, CELLS)}")
        if in_features < 1 or hidden < 1:
            raise ValueError(f"RecurrentLayer.in_features and hidden must be >= 1, got {in_features}, {hidden}")
        self.cell, self.in_features, self.hidden = cell, int(in_features), int(hidden)
        self.gates = 4 if cell == "lstm" else 1
        self.inp = nn.Linear(in_features, self.gates * hidden, bias=False)
        self.rec = nn.Linear(hidden, self.gates * hidden, bias=True)
        he_uniform_(self.inp.weight, generator)
        _orthogonal_blocks_(self.rec.weight, self.gates, generator)
        with torch.no_grad():
            self.rec.bias.zero_()
            if cell == "lstm":
                self.rec.bias[hidden:2 * hidden] = 1.0
        self.to(device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        """x: ``[T, batch, in_features]`` -> ``[T, batch, hidden]``."""
        t_len, batch, _ = x.shape
        a_in = self.inp(x.reshape(t_len * batch, self.in_features)).reshape(t_len, batch, -1)
        h = a_in.new_zeros(batch, self.hidden)
        c = a_in.new_zeros(batch, self.hidden) if self.cell == "lstm" else None
        outs = []
        for t in range(t_len):  # the recurrence is sequential; everything inside a step is one tensor op
            a = a_in[t] + self.rec(h)
            if c is None:
                h = torch.tanh(a)
            else:
                i, f, g, o = a.chunk(4, dim=-1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
            outs.append(h)
        return torch.stack(outs)

    def extra_repr(self) -> str:
        return f"cell={self.cell!r}, in_features={self.in_features}, hidden={self.hidden}"


class SequenceClassifier(nn.Module):
    """Stacked recurrent layers reading an image row by row, and a bias-free linear classifier on ``h_T``.

    Args:
        cell: ``"rnn"`` or ``"lstm"``.
        in_features: width of one step (28 for MNIST rows).
        hidden: units of each recurrent layer (one entry per layer), e.g. ``(64,)``.
        n_classes: classes.
        seed: seeds the initial weights (same seed -> same weights).
        device, dtype: where the parameters live.

    ``hidden_layers()`` are the input matrices ``W`` of the recurrent layers (what GRAPES modulates, see the
    module docstring), ``output_layer()`` the classifier; ``rule`` is ``"bp"`` (BPTT).

    Shapes: ``x: [batch, C, H, W]`` (rows become steps, ``C·W == in_features``) or ``[batch, T, in_features]``
    -> logits ``[batch, n_classes]``.
    """

    rule = "bp"

    def __init__(self, cell: str = "lstm", in_features: int = 28, hidden: Sequence[int] = (64,),
                 n_classes: int = 10, seed: int | None = None, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        hidden = tuple(int(h) for h in hidden)
        if not hidden or any(h < 1 for h in hidden):
            raise ValueError(f"SequenceClassifier.hidden must be one or more widths >= 1, got {list(hidden)}")
        if n_classes < 2:
            raise ValueError(f"SequenceClassifier.n_classes must be >= 2, got {n_classes}")
        if cell not in CELLS:
            raise ValueError(f"SequenceClassifier.cell must be one of {CELLS}, got {cell!r}"
                             f"{did_you_mean(cell, CELLS)}")
        g = make_generator(seed)
        self.cell, self.in_features, self.hidden, self.n_classes = cell, int(in_features), hidden, int(n_classes)
        sizes = (self.in_features, *hidden)
        self.layers = nn.ModuleList(RecurrentLayer(cell, n_in, n_out, g) for n_in, n_out in zip(sizes[:-1], sizes[1:]))
        self.readout = nn.Linear(hidden[-1], n_classes, bias=False)
        uniform_(self.readout.weight, math.sqrt(6.0 / hidden[-1]), g)
        self.to(device=device, dtype=dtype)

    def hidden_layers(self) -> list[nn.Module]:
        """The input matrices ``W`` (``layer.inp``) of the recurrent layers, forward order."""
        return [cast(RecurrentLayer, layer).inp for layer in self.layers]

    def output_layer(self) -> nn.Module:
        """The classifier on the last state."""
        return self.readout

    def forward(self, x: Tensor) -> Tensor:
        """x: ``[batch, C, H, W]`` or ``[batch, T, F]`` -> logits ``[batch, n_classes]``."""
        seq = image_to_sequence(x)
        if seq.shape[-1] != self.in_features:
            raise ValueError(f"SequenceClassifier: a step has {seq.shape[-1]} features, expected {self.in_features}")
        for layer in self.layers:
            seq = layer(seq)
        return self.readout(seq[-1])

    def extra_repr(self) -> str:
        return f"cell={self.cell!r}, hidden={list(self.hidden)}, n_classes={self.n_classes}"
