"""GRAPES importance and modulation as pure tensor functions.

Every function here is a stateless tensor map (call it under ``torch.no_grad()`` when the input is a
parameter, as the hooks do); it keeps the device and dtype of its input, performs no ``.item()`` and no Python
branching on tensor values, so it runs unchanged on CPU and GPU.

Notation (grapes.md §1): a layer's weights ``W`` have the output (postsynaptic) neurons on dim 0,
``W: [out, in]`` for a fully connected layer and ``K: [C_out, C_in, kh, kw]`` for a convolution.

* importance        ``F_i = Σ_j |W_ij|``                  (row sums of |W|, incoming weights; bias excluded)
* modulation        ``M_i = clip(2 F_i / max_k F_k, 1, 2)``   (BP; FA uses the same without clipping)
* outgoing importance ``P_j = 2 Σ_i |W_ij| / max``            (column sums, used by DFA+GRAPES)

Reference: the authors' numpy code, github.com/IBM/GRAPES, ``numpy_grapes_functions.py``
(``general_network.learning``): ``w_next_sum = 2*sum(|w|, axis=1)/max(...)``, clipped to [1, 2] for
``BPgrapes`` (the default ``keep_variants='un'``), unclipped for ``FAgrapes``; ``w_pre_sum =
2*sum(|w|, axis=0)/max(...)`` unclipped for ``DFAgrapes``.
"""

from __future__ import annotations

import numbers
from typing import Callable, Sequence

import torch
from torch import Tensor

from devices.base import is_number

__all__ = [
    "BP_CLIP",
    "importance",
    "outgoing_importance",
    "modulation",
    "outgoing_modulation",
    "layer_mean",
    "synapse_modulation",
    "dfa_modulations",
]

#: The clip range of the BP variant of GRAPES (grapes.md §1: fixed constants, no hyper-parameter).
BP_CLIP: tuple[float, float] = (1.0, 2.0)


def _check_tensor(value: object, fn: str, name: str) -> None:
    """``TypeError("<fn>: <name> must be a torch.Tensor, got <type>")`` unless ``value`` is a tensor (a list or a
    numpy array failed with an ``AttributeError`` on a tensor method)."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(value).__name__}")


def _check_weight(weight: Tensor, fn: str) -> None:
    """A tensor weight of at least 2 dims (``TypeError`` / ``ValueError`` naming ``fn`` otherwise)."""
    _check_tensor(weight, fn, "weight")
    if weight.dim() < 2:
        raise ValueError(
            f"{fn}: weight must have at least 2 dims ([out, in] or [C_out, C_in, kh, kw]), "
            f"got shape {tuple(weight.shape)}"
        )


def importance(weight: Tensor) -> Tensor:
    """Node importance: the sum of |w| over each output neuron's incoming weights.

    Args:
        weight: ``[out, in]`` (linear) or ``[C_out, C_in, *kernel]`` (convolution). Pass the weight only;
            a bias is not part of the importance (grapes.md §1).

    Returns:
        ``F: [out]`` (per output neuron / per output channel), same device and dtype as ``weight``.
    """
    _check_weight(weight, "importance")
    return weight.abs().flatten(1).sum(dim=1)


def outgoing_importance(weight: Tensor) -> Tensor:
    """Outgoing importance of the layer's input neurons: column sums of |w|.

    Args:
        weight: ``[out, in]`` or ``[C_out, C_in, *kernel]``.

    Returns:
        ``[in]``: ``Σ_i |W_ij|`` for each input neuron ``j`` (for a convolution: per input channel,
        summed over output channels and kernel positions).
    """
    _check_weight(weight, "outgoing_importance")
    a = weight.abs().transpose(0, 1)
    return a.flatten(1).sum(dim=1)


def modulation(F: Tensor, clip: tuple[float, float] | None = BP_CLIP) -> Tensor:
    """GRAPES modulation factor ``M = 2 F / max(F)``, optionally clipped.

    Args:
        F: importances ``[..., n]``; the max is taken over the last dim (one layer per row, so a stack of
            layers ``[layers, n]`` is handled in one call). Must be >= 0.
        clip: ``(low, high)`` bounds, ``(1.0, 2.0)`` for BP (the default); ``None`` for FA (unclipped).

    Returns:
        ``M`` of the same shape as ``F``; its largest element per layer is exactly 2. A layer whose
        importances are all zero has no distinguished node: every node is treated as the maximum (M = 2; 0/0 is
        left open by grapes.md). Unclipped (FA), a node with ``F_i = 0`` in a layer with a non-zero maximum gets
        ``M_i = 0``: its incoming weights get no update, so they stay zero (as in the reference code).
    """
    if clip is not None:
        ok = (isinstance(clip, (tuple, list)) and len(clip) == 2
              and all(is_number(c) for c in clip))
        if not ok or not float(clip[0]) <= float(clip[1]):
            raise ValueError(f"modulation.clip must be None or a pair (low, high) of numbers with low <= high, "
                             f"got {clip!r}")
        lo, hi = float(clip[0]), float(clip[1])
    _check_tensor(F, "modulation", "F")
    if F.dim() == 0:
        raise ValueError("modulation: F must have at least 1 dim ([n] or [..., n]), got a scalar")
    if F.shape[-1] == 0:
        raise ValueError(f"modulation: F must hold at least one node (its last dim, n >= 1), got shape "
                         f"{tuple(F.shape)}")
    # F / max(F), with 0/0 (an all-zero layer; also a NaN max) read as 1; then in place on that fresh tensor
    m = (F / F.amax(dim=-1, keepdim=True)).nan_to_num_(nan=1.0).mul_(2.0)
    return m if clip is None else m.clamp_(lo, hi)


def outgoing_modulation(weight: Tensor) -> Tensor:
    """DFA+GRAPES presynaptic factor ``P = 2·colsum|W| / max(colsum|W|)`` (unclipped).

    Args:
        weight: ``[out, in]``.

    Returns:
        ``P: [in]``.
    """
    return modulation(outgoing_importance(weight), clip=None)


def layer_mean(M: Tensor) -> Tensor:
    """Replace a layer's factors by their mean (the "layer-mean" control of grapes.md §5).

    Args:
        M: ``[..., n]`` factors of one layer (or a stack of layers along the leading dims).

    Returns:
        Tensor of ``M``'s shape where every entry of a layer is that layer's mean over the last dim.
    """
    _check_tensor(M, "layer_mean", "M")
    if M.dim() == 0 or M.shape[-1] == 0:
        raise ValueError(f"layer_mean: M must have at least 1 dim ([n] or [..., n]) and n >= 1, got shape "
                         f"{tuple(M.shape)}")
    return M.mean(dim=-1, keepdim=True).expand_as(M).clone()


def synapse_modulation(p_post: Tensor, p_pre: Tensor) -> Tensor:
    """Per-synapse DFA+GRAPES factor ``S_ij = p_post_i · p_pre_j``.

    Args:
        p_post: ``[out]`` factor of the layer's output neurons (``P^{l+1}``, from the layer above).
        p_pre: ``[in]`` factor of the layer's input neurons (``P^l``, from this layer's own weights).

    Returns:
        ``[out, in]``, to multiply the layer's weight gradient element-wise.
    """
    _check_tensor(p_post, "synapse_modulation", "p_post")
    _check_tensor(p_pre, "synapse_modulation", "p_pre")
    return p_post.unsqueeze(-1) * p_pre.unsqueeze(-2)


def dfa_modulations(
    outgoing: Sequence[Tensor | None],
    last_out: int,
    transform: Callable[[Tensor], Tensor] | None = None,
) -> list[tuple[Tensor, Tensor] | None]:
    """DFA+GRAPES factors for a stack of hidden layers, exactly as the reference code computes them.

    The reference (``learn_type == 'DFAgrapes'``), with layers ``0 .. L-1`` (``L-1`` = output layer), sets
    once per batch ``P^{L-1} = 1`` and, for ``k = L-2 .. 1``, ``P^k = 2·colsum|W^k| / max`` (unclipped); then
    ``δ^k = (P^{k+1} ⊙ B^{k+1} e) ⊙ f'(a^k)``, broadcast against ``P^k`` into a matrix, so that
    ``ΔW^k_ij ∝ P^{k+1}_i · P^k_j · δ^k_i x_j``. Hidden layer 0 gets ``δ^0 = (B^1 e) ⊙ f'(a^0)``: unmodulated
    (``P^0`` is never computed and ``P^1`` is not applied to it). Edge cases, as :func:`modulation`: an input
    neuron with no outgoing weight gets ``P_j = 0`` (its column of ``ΔW^k`` stays zero); a layer whose column
    sums are all zero (0/0, which grapes.md leaves open) gets ``P = 2`` everywhere.

    Args:
        outgoing: for each hidden layer ``k = 0 .. n-1`` (forward order, output layer excluded) its
            outgoing importance ``colsum|W^k|: [in_k]``. Entry 0 is not used (may be None).
        last_out: output width of the last hidden layer (length of the output layer's ``P = 1``), an integer
            >= 1.
        transform: optional map applied to every ``P^k`` vector before use (e.g. :func:`layer_mean`).

    Returns:
        A list of length ``n``: ``None`` for hidden layer 0, else ``(p_post, p_pre)`` with
        ``p_post = P^{k+1}: [out_k]`` and ``p_pre = P^k: [in_k]``; the weight-gradient factor is
        ``synapse_modulation(p_post, p_pre)`` and a bias gradient (constant input) takes ``p_post``.

    Raises:
        ValueError: ``last_out`` is not an integer >= 1 (``torch.ones(2.5)`` was torch's ``TypeError``, ``-1`` its
            ``RuntimeError``, ``0`` an empty factor), or an entry ``outgoing[k]``, ``k >= 1``, is not a 1-D tensor.
    """
    if not isinstance(last_out, numbers.Integral) or isinstance(last_out, bool) or last_out < 1:
        raise ValueError(f"dfa_modulations.last_out must be an integer >= 1 (the output width of the last hidden "
                         f"layer), got {last_out!r}")
    last_out = int(last_out)
    n = len(outgoing)
    tf = transform if transform is not None else (lambda t: t)
    p: list[Tensor | None] = [None]
    for k in range(1, n):
        o = outgoing[k]
        if not isinstance(o, Tensor) or o.dim() != 1:
            got = f"shape {tuple(o.shape)}" if isinstance(o, Tensor) else repr(o)
            raise ValueError(f"dfa_modulations.outgoing[{k}] must be a 1-D tensor [in_{k}] (only entry 0 may be "
                             f"None), got {got}")
        p.append(tf(modulation(o, clip=None)))
    factors: list[tuple[Tensor, Tensor] | None] = [None]
    for k in range(1, n):
        p_pre = p[k]
        assert p_pre is not None
        nxt = p[k + 1] if k + 1 < n else None
        p_post = nxt if nxt is not None else torch.ones(last_out, device=p_pre.device, dtype=p_pre.dtype)
        factors.append((p_post, p_pre))
    return factors
