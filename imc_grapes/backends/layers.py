"""Analog weight layers as the backends see them: one wrapper type around a crossbar or an aihwkit layer.

:class:`AnalogLayer` is the uniform interface the :class:`~imc_grapes.backends.network.Network` drives:
forward (with the learning rule's backward), exact weight access, importance reads, the pending pulsed
update (with GRAPES's ``error_scale`` / ``input_scale``), a saturation probe, and cumulative hardware
counts. :class:`CrossbarLayer` implements it on this project's engine (``crossbar.AnalogLinear`` /
``AnalogConv2d``); ``AihwkitLayer`` (in :mod:`imc_grapes.backends.aihwkit_backend`) on aihwkit.

How the error reaches the layer's input (``backward_mode``), decided per learning rule:

* ``"array"`` (BP): the transposed read of the array (``Wᵀ d`` through the backward periphery);
* ``"feedback"`` (FA): ``d @ B`` with the fixed random matrix ``B`` (``[out, in]``) held **digitally**
  (a digital product, counted as ``digital_macs``); the array is not read backward. On a chip ``B`` could also
  live in a second, never-updated array; this project keeps it digital so that FA's error is the
  same on every backend and the comparison isolates the effect of the analog forward and update;
* ``"zeros"`` (DFA): no error is computed at all — the hidden layers get ``B e`` injected directly by
  :class:`~imc_grapes.grapes.feedback.DFAFeedback`, which discards what arrives from above, so sending zeros
  saves the useless backward read. (The layer still stashes ``(x, d)`` for its own update.)

For ``"feedback"``/``"zeros"`` the wrapped layer sees ``x.detach()`` (so it does no backward MVM) and a
zero-valued bridge carries the chosen input gradient; linear layers only (FA/DFA are MLP rules).
"""
from __future__ import annotations

from typing import Any, Sequence, cast

import torch
from torch import Tensor, nn

import crossbar

from ..suggest import did_you_mean
from .costs import COST_KINDS

__all__ = ["BACKWARD_MODES", "AnalogLayer", "CrossbarLayer", "ImportanceReadPlan", "read_importances"]

BACKWARD_MODES: tuple[str, ...] = ("array", "feedback", "zeros")

_COUNTER_KEYS = tuple(f"counter_{name}" for name in crossbar.COUNTER_NAMES)
"""The tiles' counter buffers, by name in their ``_buffers``."""


class _InputGradBridge(torch.autograd.Function):
    """Forward: zeros ``[..., out]``. Backward: ``grad_x = grad_out @ feedback`` (or zeros without feedback)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, feedback: Tensor | None, out_features: int, macs: Tensor) -> Tensor:
        ctx.save_for_backward(feedback if feedback is not None else x.new_zeros(0))
        ctx.has_feedback = feedback is not None
        ctx.x_shape = x.shape
        ctx.macs = macs
        return x.new_zeros(*x.shape[:-1], out_features)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, None, None, None]:
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        if not ctx.has_feedback:
            return grad_out.new_zeros(ctx.x_shape), None, None, None
        (feedback,) = ctx.saved_tensors
        ctx.macs.add_(grad_out.numel() * feedback.shape[1])
        return grad_out @ feedback.to(grad_out.dtype), None, None, None


class AnalogLayer(nn.Module):
    """Base of the backends' analog weight layers (wraps one analog layer as ``self.inner``).

    Attributes:
        inner: the simulator's layer (crossbar or aihwkit). kind: ``"linear"`` or ``"conv"``.
        in_features: columns of the weight matrix (``C_in·kh·kw`` for a conv). out_features: rows.
        weight_shape: shape of the torch layer's ``weight`` (``[out, in]`` or ``[C_out, C_in, kh, kw]``).
        backward_mode: one of :data:`BACKWARD_MODES` (see the module docstring).
        feedback: FA's fixed ``B: [out, in]`` (buffer) or None.
        error_scale: ``None`` or ``[out]``: multiplies the error ``d`` of the pending update (GRAPES local
            form / DFA's ``P^{l+1}``); set by :func:`~imc_grapes.grapes.attach_grapes`'s hooks.
        input_scale: ``None`` or ``[in]``: multiplies the update's input ``x`` (DFA's ``P^l``).
        grapes_feature_dim: output dim of the features GRAPES modulates (-1 linear; -3 conv: the channels of
            ``[B, C, H, W]`` and of an unbatched ``[C, H, W]``).

    Freezing: ``layer.requires_grad_(False)`` (e.g. on ``Network.analog_layers[name]``) freezes the analog weights
    (the analog contexts of :meth:`analog_parameters`) and the digital bias on every backend: the layer still
    sends the error to its input, but :meth:`apply_update` pulses none of its devices (``requires_grad_(True)``
    resumes). As in torch, the flag counts at the forward pass.
    """

    feedback: Tensor | None
    digital_mac_count: Tensor

    def __init__(self, inner: nn.Module, kind: str, in_features: int, out_features: int,
                 weight_shape: tuple[int, ...], backward_mode: str = "array", feedback: Tensor | None = None,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        if backward_mode not in BACKWARD_MODES:
            raise ValueError(f"{type(self).__name__}.backward_mode must be one of {BACKWARD_MODES}, "
                             f"got {backward_mode!r}{did_you_mean(backward_mode, BACKWARD_MODES)}")
        if backward_mode != "array" and kind != "linear":
            raise ValueError(f"{type(self).__name__}: backward_mode {backward_mode!r} (FA/DFA) is implemented "
                             "for linear layers only")
        if (backward_mode == "feedback") != (feedback is not None):
            raise ValueError(f"{type(self).__name__}: backward_mode 'feedback' needs feedback=B [out, in] "
                             "(and only it takes one)")
        if feedback is not None and tuple(feedback.shape) != (out_features, in_features):
            raise ValueError(f"{type(self).__name__}.feedback must have shape ({out_features}, {in_features}), "
                             f"got {tuple(feedback.shape)}")
        self.inner = inner
        self.kind = kind
        self.in_features = in_features
        self.out_features = out_features
        self.weight_shape = tuple(weight_shape)
        self.backward_mode = backward_mode
        self.grapes_feature_dim = -1 if kind == "linear" else -3
        self.register_buffer("feedback", None if feedback is None else feedback.detach().clone().to(device))
        self.register_buffer("digital_mac_count", torch.zeros((), dtype=torch.float64, device=device))
        self.error_scale: Tensor | None = None
        self.input_scale: Tensor | None = None

    @property
    def bias(self) -> Tensor | None:
        """The wrapped layer's digital bias ``[out]`` (a parameter of :attr:`inner`, trained by the digital
        optimizer), or ``None``."""
        b = getattr(self.inner, "bias", None)
        return b if isinstance(b, Tensor) else None

    # ------------------------------------------------------------------ forward
    def forward(self, x: Tensor) -> Tensor:
        """``x: [..., in]`` (linear) or ``[B, C_in, H, W]`` (conv) -> the wrapped layer's output."""
        if self.backward_mode == "array":
            return self.inner(x)
        y = self.inner(x.detach())
        if not (torch.is_grad_enabled() and x.requires_grad):
            return y
        return y + _InputGradBridge.apply(x, self.feedback, self.out_features, self.digital_mac_count)

    # ------------------------------------------------------------------ interface of the backends
    def get_weights(self) -> Tensor:
        """Exact weights (no read noise), ``weight_shape``."""
        raise NotImplementedError

    def set_weights(self, weight: Tensor, write_noise: bool = True, clip: bool = True) -> None:
        """Program ``weight`` (``weight_shape``; clipped into the device bounds, or as given with ``clip=False``
        where the backend allows it). On devices with write noise the MVMs see ``weight`` plus a fresh write-noise
        draw, or ``weight`` itself with ``write_noise=False``."""
        raise NotImplementedError

    def row_importance(self, source: str, g_offset: float = 0.0) -> Tensor:
        """``[out]`` importance ``Σ_j |w_ij|``: ``source="exact"`` digitally from the states, ``"array"``
        by one all-ones read through the periphery (differential pair, idle device at ``g_offset``)."""
        raise NotImplementedError

    def col_importance(self, source: str, g_offset: float = 0.0) -> Tensor:
        """``[in]`` outgoing importance ``Σ_i |w_ij|`` (DFA), same sources as :meth:`row_importance`."""
        raise NotImplementedError

    def has_pending(self) -> bool:
        """Whether a backward stashed ``(x, d)`` for the next update."""
        raise NotImplementedError

    def pending_update(self, lr: float) -> Tensor | None:
        """The intended weight change of the pending update, ``−lr Σ (d⊙error_scale)(x⊙input_scale)ᵀ``
        (``weight_shape``), or None when nothing is pending; the update itself stays pending."""
        raise NotImplementedError

    def apply_update(self, lr: float, probe: bool = False) -> tuple[Tensor, Tensor] | None:
        """Apply the pending pulsed update (``x ⊙ input_scale``, ``d ⊙ error_scale``) with learning rate ``lr``.

        Returns ``None``, or with ``probe=True`` the pair ``(⟨ΔW_real, ΔW_int⟩, ‖ΔW_int‖²)`` (0-d tensors)
        with ``ΔW_int = −lr Σ (d⊙s_d)(x⊙s_x)ᵀ`` the intended change and ``ΔW_real`` the measured change of
        the (hidden) device states.
        """
        raise NotImplementedError

    def clear(self) -> None:
        """Drop the pending ``(x, d)`` without updating."""
        raise NotImplementedError

    def counts(self) -> Tensor:
        """Cumulative hardware counts ``[len(COST_KINDS)]`` (float64, on the layer's device)."""
        raise NotImplementedError

    def count_terms(self) -> tuple[Tensor, list[Tensor], list[Tensor]] | None:
        """``(matrix, counters, floats)`` with ``counts() == matrix @ torch.stack(counters + floats)`` in float64: the
        live 0-d buffers the counts combine — integer ones, then floating ones; all hold integers below ``2**53``, so
        the product is exact in any order — and ``matrix`` ``[len(COST_KINDS), len(counters) + len(floats)]``
        float64 on their device. What lets the :class:`~.network.Network` read several layers' counts in one
        product. ``None`` (this base class): only :meth:`counts`."""
        return None

    def analog_parameters(self) -> list[Tensor]:
        """Parameters that belong to the analog machinery (never given to a digital optimizer)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ shared helpers
    def _scaled(self, x: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
        """``x: [N, in] ⊙ input_scale``, ``d: [N, out] ⊙ error_scale`` (checked shapes)."""
        if self.error_scale is not None:
            if self.error_scale.numel() != self.out_features:
                raise ValueError(f"{type(self).__name__}.error_scale must have {self.out_features} elements, "
                                 f"got shape {tuple(self.error_scale.shape)}")
            d = d * self.error_scale.reshape(1, -1).to(device=d.device, dtype=d.dtype)
        if self.input_scale is not None:
            if self.input_scale.numel() != self.in_features:
                raise ValueError(f"{type(self).__name__}.input_scale must have {self.in_features} elements, "
                                 f"got shape {tuple(self.input_scale.shape)}")
            x = x * self.input_scale.reshape(1, -1).to(device=x.device, dtype=x.dtype)
        return x, d

    @staticmethod
    def _probe_result(before: Tensor, after: Tensor, x: Tensor, d: Tensor, lr: float) -> tuple[Tensor, Tensor]:
        intended = -lr * (d.transpose(0, 1).to(before.dtype) @ x.to(before.dtype))
        real = after - before
        return (real * intended).sum(), intended.square().sum()

    def extra_repr(self) -> str:
        return (f"kind={self.kind!r}, in_features={self.in_features}, out_features={self.out_features}, "
                f"backward_mode={self.backward_mode!r}")


class CrossbarLayer(AnalogLayer):
    """An :class:`AnalogLayer` on this project's engine (``crossbar.AnalogLinear`` / ``AnalogConv2d``).

    Args:
        inner: the crossbar layer (already programmed).
        backward_mode, feedback: see :class:`AnalogLayer`.

    Counts come from the tile's counters (``inner.tile.counters``; conversions on logical lines only, see
    :meth:`crossbar.TileState._count`); ``array_macs`` counts the logical cells (the grid's zero padding does
    no MAC): ``(forward_passes + backward_passes) · out · in / tiles + importance_reads · out · in`` (an
    importance read is priced as one pass per tile, its bound-management repeats are not counted). Exact whenever
    every tile of a vector takes the same number of passes (always without bound-management repeats); a repeat on
    a padded tile is priced at the mean logical cells per tile.
    """

    inner: crossbar.AnalogModuleBase

    def __init__(self, inner: crossbar.AnalogModuleBase, backward_mode: str = "array",
                 feedback: Tensor | None = None) -> None:
        if not isinstance(inner, crossbar.AnalogModuleBase):
            raise ValueError(f"CrossbarLayer.inner must be a crossbar analog layer, got {type(inner).__name__}")
        kind = "conv" if isinstance(inner, crossbar.AnalogConv2d) else "linear"
        tile = inner.tile
        super().__init__(inner, kind, tile.in_features, tile.out_features, inner._weight_shape(), backward_mode,
                         feedback, device=tile.weight_tiles.device)

    def get_weights(self) -> Tensor:
        return self.inner.get_weights()

    def set_weights(self, weight: Tensor, write_noise: bool = True, clip: bool = True) -> None:
        self.inner.set_weights(weight, write_noise, clip)

    def row_importance(self, source: str, g_offset: float = 0.0) -> Tensor:
        if source == "exact":
            return self.inner.row_sums(mode="exact")
        return self.inner.row_sums(mode="hardware", g_offset=g_offset)

    def col_importance(self, source: str, g_offset: float = 0.0) -> Tensor:
        if source == "exact":
            return self.inner.col_sums(mode="exact")
        return self.inner.col_sums(mode="hardware", g_offset=g_offset)

    def has_pending(self) -> bool:
        return self.inner.stashed > 0

    def _pending_xd(self) -> tuple[Tensor, Tensor] | None:
        stash = self.inner.pending_pairs()    # checked: RuntimeError for a pair modified in place since backward
        if not stash:
            return None
        if len(stash) == 1:     # one forward per step: the pair itself (the update does not write its inputs)
            x, d = stash[0][0].reshape(-1, self.in_features), stash[0][1].reshape(-1, self.out_features)
        else:
            x = torch.cat([s[0].reshape(-1, self.in_features) for s in stash])
            d = torch.cat([s[1].reshape(-1, self.out_features) for s in stash])
        return self._scaled(x, d)

    @torch.no_grad()
    def pending_update(self, lr: float) -> Tensor | None:
        xd = self._pending_xd()
        if xd is None:
            return None
        x, d = xd
        return (-lr * (d.transpose(0, 1) @ x)).reshape(self.weight_shape)

    @torch.no_grad()
    def apply_update(self, lr: float, probe: bool = False) -> tuple[Tensor, Tensor] | None:
        xd = self._pending_xd()
        if xd is None:
            return None
        self.inner.clear_stash()
        x, d = xd
        tile = self.inner.tile
        before = tile.read(hidden=True) if probe else None
        tile.update(x, d, lr)
        if before is None:
            return None
        return self._probe_result(before, tile.read(hidden=True), x, d, lr)

    def clear(self) -> None:
        self.inner.clear_stash()

    def counts(self) -> Tensor:
        matrix, counters, floats = self.count_terms()
        return matrix @ torch.stack(counters + floats)

    def count_terms(self) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """The tile's counters (:data:`crossbar.COUNTER_NAMES` order; int64) and the digital MACs (float64), read
        from the buffer dicts directly (``nn.Module``'s attribute fallback costs a few µs per name; the Network
        reads them twice per training step), and the cost kinds as their combinations."""
        buffers = cast("dict[str, Tensor]", self.inner.tile._buffers)
        macs = cast(Tensor, self._buffers["digital_mac_count"])
        return self._count_matrix(macs.device), [buffers[key] for key in _COUNTER_KEYS], [macs]

    def _count_matrix(self, device: torch.device) -> Tensor:
        """``[len(COST_KINDS), len(COUNTER_NAMES) + 1]`` float64: the cost kinds as combinations of the tile's
        counters and the digital MACs (a cache)."""
        cached = self.__dict__.get("_count_matrix_cache")
        if cached is None or cached.device != device:
            tile = self.inner.tile
            names = [*crossbar.COUNTER_NAMES, "digital_macs"]
            cells = float(tile.out_features * tile.in_features)   # the logical cells of the grid (padding does no MAC)
            # built on the host, moved once
            m = torch.zeros(len(COST_KINDS), len(names), dtype=torch.float64, device="cpu")
            for i, kind in enumerate(COST_KINDS):
                if kind in names:
                    m[i, names.index(kind)] = 1.0
            macs = COST_KINDS.index("array_macs")   # (forward + backward passes) · cells / tiles + reads · cells
            m[macs, names.index("forward_passes")] = m[macs, names.index("backward_passes")] = cells / tile.grid.n_tiles
            m[macs, names.index("importance_reads")] = cells
            cached = m.to(device)
            self.__dict__["_count_matrix_cache"] = cached
        return cached

    def analog_parameters(self) -> list[Tensor]:
        return [self.inner.analog_ctx]


def read_importances(layers: Sequence[nn.Module], which: str, source: str, g_offset: float = 0.0,
                     exact: Sequence[bool] = ()) -> tuple[list[Tensor], list[Tensor | None]]:
    """``[layer.row_importance(source, g_offset) for layer in layers]`` (``which="row"``; ``"col"``:
    ``col_importance``), with the array reads of the :class:`CrossbarLayer` s among them made together
    (:func:`crossbar.hardware_and_exact_sums`: the same numbers, their ADC side batched); and for each layer with
    ``exact[k]`` its exact importance (``None`` for the others), on crossbar layers from the read's own line sums.
    (A caller that reads the same layers again keeps an :class:`ImportanceReadPlan` instead.)
    """
    if source == "array":
        return ImportanceReadPlan(layers, which, g_offset).read(exact)
    return _read_one_by_one(layers, range(len(layers)), f"{which}_importance", source, g_offset, exact,
                            [None] * len(layers), [None] * len(layers))


def _read_one_by_one(layers: Sequence[nn.Module], which_layers: Sequence[int], fn: str, source: str,
                     g_offset: float, exact: Sequence[bool], reads: list[Tensor | None],
                     exacts: list[Tensor | None]) -> tuple[list[Tensor], list[Tensor | None]]:
    """The layers ``which_layers`` of ``layers`` read through their own ``fn`` (``row_importance`` /
    ``col_importance``) into ``reads`` (and their exact importance into ``exacts`` where ``exact`` asks for it);
    returns ``(reads, exacts)``."""
    for k in which_layers:
        layer = layers[k]
        reads[k] = getattr(layer, fn)(source, g_offset)
        if exact and exact[k]:
            exacts[k] = getattr(layer, fn)("exact", 0.0)
    return cast("list[Tensor]", reads), exacts


def _tile_of(layer: CrossbarLayer) -> nn.Module:
    """``layer.inner.tile``, from the modules' dicts (``nn.Module``'s attribute fallback costs ~1 µs per name)."""
    return cast(nn.Module, cast(nn.Module, layer._modules["inner"])._modules["tile"])


class ImportanceReadPlan:
    """The array importance reads of one set of layers, as :func:`read_importances` (``source="array"``) makes
    them, with what every read of the same layers reuses (GRAPES reads them on every refresh): which layers sit on
    crossbar tiles — their reads made together, through a :class:`crossbar.HardwareSumsPlan` of their tile arrays —
    and which are read one by one.

    Args:
        layers: the layers, in the order of the reads. which: ``"row"`` (``[out]`` importances, forward
            periphery) or ``"col"`` (``[in]``, backward). g_offset: the pairs' idle-device conductance (>= 0).

    :meth:`is_current` while every crossbar layer holds the tile array the plan was made for and that array's
    configuration and states buffer (dtype, device) are unchanged (:meth:`crossbar.HardwareSumsPlan.is_current`).
    """

    def __init__(self, layers: Sequence[nn.Module], which: str, g_offset: float = 0.0) -> None:
        self.layers, self.which, self.g_offset = tuple(layers), which, g_offset
        on_crossbar = [k for k, layer in enumerate(self.layers) if isinstance(layer, CrossbarLayer)]
        self._on_crossbar = on_crossbar
        self._others = [k for k in range(len(self.layers)) if k not in on_crossbar]
        self._tiles = [_tile_of(cast(CrossbarLayer, self.layers[k])) for k in on_crossbar]
        self._sums = crossbar.HardwareSumsPlan(cast("list[crossbar.TileArray]", self._tiles), transposed=which == "col",
                                               g_offset=g_offset) if on_crossbar else None

    def is_current(self) -> bool:
        """Whether the layers still read through what the plan was made for (see the class docstring)."""
        layers = self.layers
        for k, tile in zip(self._on_crossbar, self._tiles):
            if _tile_of(cast(CrossbarLayer, layers[k])) is not tile:
                return False
        return self._sums is None or self._sums.is_current()

    def read(self, exact: Sequence[bool] = ()) -> tuple[list[Tensor], list[Tensor | None]]:
        """One array read of every layer: ``(reads, exacts)`` as :func:`read_importances` with ``source="array"``."""
        n = len(self.layers)
        reads: list[Tensor | None] = [None] * n
        exacts: list[Tensor | None] = [None] * n
        if self._sums is not None:
            got, got_exact = self._sums.read([exact[k] for k in self._on_crossbar] if exact else ())
            for k, f, e in zip(self._on_crossbar, got, got_exact):
                reads[k], exacts[k] = f, e
        return _read_one_by_one(self.layers, self._others, f"{self.which}_importance", "array", self.g_offset,
                                exact, reads, exacts)
