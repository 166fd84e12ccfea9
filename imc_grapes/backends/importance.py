"""Where GRAPES's importance comes from on analog layers, and how far the hardware read is from the exact one.

:class:`ImportanceSource` is what the backends pass to :func:`~imc_grapes.grapes.attach_grapes` as
``importance_fn`` (row sums, BP/FA) and ``outgoing_importance_fn`` (column sums, DFA):

* ``"exact"``: ``Σ_j |w_ij|`` computed digitally from the device states (what a simulator can do);
* ``"array"``: one all-ones read of each tile through its forward (row sums) or backward (column sums)
  periphery — DAC, output noise, ADC quantization and saturation, noise and bound management — with the
  partial sums of the tiles added digitally. The read is the differential-pair sum ``Σ_j (G⁺ + G⁻)``, which
  equals ``Σ_j |w_ij|`` when the idle device of each pair sits at zero conductance (``g_offset = 0``) and is
  ``Σ_j |w_ij| + 2·g_offset·n_in`` otherwise; with ``offset_correction`` the nominal ``2·g_offset·n_in`` is
  subtracted digitally after the read.

With ``"array"``, every :data:`COMPARE_EVERY`-th read also computes the exact importance (digitally, not counted as
a hardware cost) and records, per layer, the Pearson correlation of the two factor vectors ``M`` (``modulation(F)``
with the rule's clip; for DFA the ``P`` vectors) and their mean absolute difference: :meth:`ImportanceSource.stats`.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

import crossbar

from ..grapes.core import modulation
from ..suggest import did_you_mean
from .layers import ImportanceReadPlan, read_importances
from .settings import IMPORTANCE_SOURCES

__all__ = ["COMPARE_EVERY", "MeanMeter", "ImportanceSource", "pearson"]

#: every k-th array read of a layer is also compared with the exact importance (``M_corr`` / ``M_err``)
COMPARE_EVERY = 10


def pearson(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation of two vectors along the last dim: ``[..., n]`` -> ``[...]`` (a 0-d tensor for two
    vectors ``[n]``), in float64, without a host sync.

    If either vector is constant the correlation is undefined: it is 1 when the vectors are equal and 0
    otherwise.
    """
    a = a.to(torch.float64)
    b = b.to(torch.float64)
    da, db = a - a.mean(dim=-1, keepdim=True), b - b.mean(dim=-1, keepdim=True)
    den = torch.sqrt(da.square().sum(dim=-1) * db.square().sum(dim=-1))
    r = (da * db).sum(dim=-1) / torch.where(den > 0, den, 1.0)
    same = torch.isclose(a, b).all(dim=-1).to(torch.float64)
    return torch.where(den > 0, r, same)


class MeanMeter:
    """Per-name running means of 0-d tensor values, kept on the device until :meth:`means` (one sync)."""

    def __init__(self) -> None:
        self._sum: dict[str, Tensor] = {}
        self._n: dict[str, Tensor] = {}

    def add(self, name: str, value: Tensor, valid: Tensor | None = None) -> None:
        """Add ``value`` (0-d; or ``[k]``: ``k`` values) to ``name``'s mean, except where the bool ``valid`` (same
        shape) is False."""
        v = value.detach().to(torch.float64)
        if valid is None:
            v, ok = v.sum(), torch.full((), v.numel(), dtype=torch.float64, device=v.device)
        else:
            keep = valid.to(torch.bool)
            v, ok = torch.where(keep, v, 0.0).sum(), keep.sum().to(torch.float64)
        if name in self._sum:
            self._sum[name] = self._sum[name] + v
            self._n[name] = self._n[name] + ok
        else:
            self._sum[name], self._n[name] = v, ok

    def means(self) -> dict[str, float]:
        """``name -> mean`` of the values added since the last :meth:`reset` (names with no valid value are left
        out)."""
        out: dict[str, float] = {}
        for name, total in self._sum.items():
            n = float(self._n[name])
            if n > 0:
                out[name] = float(total) / n
        return out

    def reset(self) -> None:
        self._sum.clear()
        self._n.clear()


class ImportanceSource:
    """Importance reads of the backends' analog layers (see the module docstring).

    Args:
        source: ``"exact"`` or ``"array"`` (:data:`~imc_grapes.backends.settings.IMPORTANCE_SOURCES`).
        clip: the clip of the BP/FA factors (``(1, 2)`` for bp, ``None`` for fa) used for the ``M`` comparison.
        g_offset: idle-device conductance of the differential pair in weight units (``array`` only).
        offset_correction: with ``array``, subtract the nominal offset ``2·g_offset·n`` (``n`` the summed lines:
            the layer's inputs for row sums, its outputs for column sums) from the read digitally.
        names: ``layer -> name`` for the records (default: ``layer<k>`` by first use). Keyed by the layer objects
            themselves (not their ``id()``), so a copy of the network (``copy.deepcopy``, pickle), whose source
            maps the copied layers, keeps the names.
        compare_every: with ``array``, compare with the exact importance (``M_corr`` / ``M_err``) on every k-th
            read of each layer, starting with its first (0 = never; default :data:`COMPARE_EVERY`): the
            comparison is a diagnostic that costs an exact Σ|w| and two modulations, so it is sampled rather
            than paid on every step. The sampled pairs are kept (on the device) and compared in batches of
            :attr:`COMPARE_BATCH` or at :meth:`stats`, out of the training steps' way.

    The layers must implement ``row_importance(source, g_offset)`` / ``col_importance(source, g_offset)``
    (:class:`~imc_grapes.backends.layers.AnalogLayer`).
    """

    def __init__(self, source: str, clip: tuple[float, float] | None = (1.0, 2.0), g_offset: float = 0.0,
                 names: Mapping[nn.Module, str] | None = None, compare_every: int = COMPARE_EVERY,
                 offset_correction: bool = False) -> None:
        if source not in IMPORTANCE_SOURCES:
            raise ValueError(f"ImportanceSource.source must be one of {IMPORTANCE_SOURCES}, got {source!r}"
                             f"{did_you_mean(source, IMPORTANCE_SOURCES)}")
        if not g_offset >= 0:
            raise ValueError(f"ImportanceSource.g_offset must be >= 0, got {g_offset!r}")
        if isinstance(compare_every, bool) or not isinstance(compare_every, int) or compare_every < 0:
            raise ValueError(f"ImportanceSource.compare_every must be an integer >= 0 (0 = never), "
                             f"got {compare_every!r}")
        names = dict(names or {})
        bad = next(((k, v) for k, v in names.items() if not isinstance(k, nn.Module) or not isinstance(v, str)), None)
        if bad is not None:
            raise ValueError(f"ImportanceSource.names must map layers (nn.Module) to names (str), got "
                             f"{type(bad[0]).__name__} -> {type(bad[1]).__name__}")
        self.compare_every = compare_every
        self._layer_reads: dict[str, int] = {}
        self.source = source
        self.clip = clip
        self.g_offset = float(g_offset)
        self.offset_correction = bool(offset_correction)
        self.names: dict[nn.Module, str] = names
        self.corr = MeanMeter()
        self.err = MeanMeter()
        self.reads = 0
        self._sampled: dict[str, tuple[str, tuple[float, float] | None, list[Tensor], list[Tensor]]] = {}
        self._plans: dict[tuple[str, tuple[nn.Module, ...]], ImportanceReadPlan] = {}

    def _name(self, layer: nn.Module) -> str:
        """The record name of ``layer`` (:attr:`names`; a layer not there is named ``layer<k>`` by first use)."""
        name = self.names.get(layer)
        if name is None:
            name = self.names[layer] = f"layer{len(self.names)}"
        return name

    def _due(self, layer: nn.Module, which: str) -> bool:
        """Whether this read of ``layer`` is one of every :attr:`compare_every` compared with the exact importance
        (counts the layer's reads)."""
        if self.source != "array" or not self.compare_every:
            return False
        key = self._name(layer) + which
        k = self._layer_reads.get(key, 0)
        self._layer_reads[key] = k + 1
        return k % self.compare_every == 0

    def compare_due(self) -> bool:
        """Whether the next read of some layer will be sampled for the comparison (:attr:`compare_every`; a layer's
        first read is). Every layer is read once per GRAPES refresh, so their counts advance together."""
        if self.source != "array" or not self.compare_every:
            return False
        return not self._layer_reads or any(k % self.compare_every == 0 for k in self._layer_reads.values())

    def count_replayed_reads(self, n_layers: int) -> None:
        """Count one read of each of the ``n_layers`` layers read so far, for a GRAPES refresh whose device work was
        replayed from a CUDA graph (none of those reads was due: :meth:`compare_due` was False)."""
        self.reads += n_layers
        for key in self._layer_reads:
            self._layer_reads[key] += 1

    def _read(self, layers: Sequence[nn.Module], which: str) -> list[Tensor]:
        """The importances of ``layers`` (one read of each, see :func:`~imc_grapes.backends.layers.read_importances`);
        from the array: minus the nominal offset (with ``offset_correction``), clamped at 0, every
        :attr:`compare_every`-th sampled with the exact importance for :meth:`stats`."""
        due = [self._due(layer, which) for layer in layers]
        if self.source == "array":
            reads, exacts = self._plan(layers, which).read(due)
        else:
            reads, exacts = read_importances(layers, which, self.source, self.g_offset, due)
        self.reads += len(layers)
        if self.source != "array":
            return reads
        clip = self.clip if which == "row" else None
        out = []
        for layer, f, e in zip(layers, reads, exacts):
            if self.offset_correction and self.g_offset:    # the nominal offset of the pairs' idle devices
                n_lines = int(getattr(layer, "in_features" if which == "row" else "out_features"))
                f = f - crossbar.pair_offset(self.g_offset, n_lines)
            f = f.clamp_min(0)                      # the read's noise can take a small sum below 0
            if e is not None:
                name = self._name(layer)
                _, _, arrays, exact_reads = self._sampled.setdefault(name + which, (name, clip, [], []))
                arrays.append(f)
                exact_reads.append(e)
                if len(arrays) >= self.COMPARE_BATCH:
                    self._compare()
            out.append(f)
        return out

    MAX_PLANS = 64
    """Read plans kept (:meth:`_plan`; one per set of layers read together and kind, a few in practice)."""

    def _plan(self, layers: Sequence[nn.Module], which: str) -> ImportanceReadPlan:
        """The :class:`~imc_grapes.backends.layers.ImportanceReadPlan` of these layers (kept between reads; a new one
        when the layers' tiles, their configuration or their states' dtype or device, or :attr:`g_offset` changed)."""
        key = (which, tuple(layers))
        plan = self._plans.get(key)
        if plan is None or plan.g_offset != self.g_offset or not plan.is_current():
            if len(self._plans) >= self.MAX_PLANS:
                self._plans.clear()
            plan = self._plans[key] = ImportanceReadPlan(layers, which, self.g_offset)
        return plan

    COMPARE_BATCH = 32
    """Sampled (array, exact) pairs of a layer compared at once."""

    def _compare(self) -> None:
        """Record ``M_corr`` / ``M_err`` of the sampled pairs (one batched comparison per layer and read kind)."""
        for name, clip, arrays, exacts in self._sampled.values():
            if arrays:
                m_arr = modulation(torch.stack(arrays), clip).to(torch.float64)
                m_ex = modulation(torch.stack(exacts), clip).to(torch.float64)
                self.corr.add(name, pearson(m_arr, m_ex))
                self.err.add(name, (m_arr - m_ex).abs().mean(dim=-1))
                arrays.clear()
                exacts.clear()

    @property
    def rows(self) -> "_Reads":
        """GRAPES ``importance_fn``: ``rows(layer)`` the ``[out]`` importance of ``layer``; ``rows.many(layers)``
        those of several layers in one read (the crossbar layers' array reads batched, see
        :func:`~imc_grapes.backends.layers.read_importances`)."""
        return _Reads(self, "row")

    @property
    def cols(self) -> "_Reads":
        """GRAPES ``outgoing_importance_fn`` (DFA; unclipped ``P``): ``cols(layer)`` the ``[in]`` outgoing importance
        of ``layer``, ``cols.many(layers)`` as :attr:`rows`."""
        return _Reads(self, "col")

    def stats(self, reset: bool = True) -> dict[str, float]:
        """``M_corr/<layer>`` and ``M_err/<layer>`` averaged over the reads since the last reset (array only)."""
        self._compare()
        out = {f"M_corr/{k}": v for k, v in self.corr.means().items()}
        out.update({f"M_err/{k}": v for k, v in self.err.means().items()})
        if reset:
            self.corr.reset()
            self.err.reset()
        return out


class _Reads:
    """One kind of importance read of an :class:`ImportanceSource` (``"row"`` or ``"col"``), per layer (a call) or
    for several layers at once (:meth:`many`, which GRAPES's refresh uses when present)."""

    def __init__(self, source: ImportanceSource, which: str) -> None:
        self.source, self.which = source, which

    def __call__(self, layer: nn.Module) -> Tensor:
        return self._read([layer])[0]

    def many(self, layers: Sequence[nn.Module]) -> list[Tensor]:
        return self._read(layers)

    def _read(self, layers: Sequence[nn.Module]) -> list[Tensor]:
        """The reads without autograd; ``no_grad`` entered only when gradients are on (GRAPES's refresh, the hot
        caller, has them off already: no mode switch per refresh)."""
        if torch.is_grad_enabled():
            with torch.no_grad():
                return self.source._read(layers, self.which)
        return self.source._read(layers, self.which)
