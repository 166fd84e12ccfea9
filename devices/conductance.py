"""Conductance view: normalized weights ↔ conductances in µS, single device or differential pair."""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

from devices.base import FLOAT32_MAX, FLOAT32_TINY, check_field, check_field_types

__all__ = ["ConductanceMap"]


@dataclass(frozen=True)
class ConductanceMap:
    """Linear map between normalized weights in ``[−w_max, w_max]`` and conductances in ``[g_min_uS, g_max_uS]``.

    * Single device (with a reference at the mid conductance): ``g = g_min + (w + w_max)/(2·w_max)·(g_max − g_min)``,
      so ``w = 0`` reads ``g_ref_uS = (g_min + g_max)/2``.
    * Differential pair: ``w = (g⁺ − g⁻)/scale_uS`` with ``scale_uS = (g_max − g_min)/w_max`` µS per weight unit;
      :meth:`to_pair` puts one device of each pair at ``g_min`` (so ``Σ_j (g⁺ + g⁻) = scale·Σ_j|w| + 2·n·g_min``).

    Weights beyond ``±w_max`` saturate at ``g_min``/``g_max`` (a device cannot exceed its range). All methods are
    elementwise over any shape and keep the input's device and dtype.

    Attributes:
        g_min_uS: minimum conductance in µS (>= 0). g_max_uS: maximum conductance in µS (> g_min_uS).
        w_max: normalized weight mapped to the full range (> 0; :attr:`scale_uS` a normal float32 number, 1.2e-38 to
            3.4e38, and ``2·w_max`` at most 3.4e38: the maps compute in the tensors' float32).
    """

    g_min_uS: float = 0.1
    g_max_uS: float = 25.0
    w_max: float = 1.0

    def __post_init__(self) -> None:
        c = type(self).__name__
        check_field_types(self)
        check_field(c, "g_min_uS", self.g_min_uS, math.isfinite(self.g_min_uS) and self.g_min_uS >= 0,
                    ">= 0 and finite")
        check_field(c, "g_max_uS", self.g_max_uS, math.isfinite(self.g_max_uS) and self.g_max_uS > self.g_min_uS,
                    f"> g_min_uS = {self.g_min_uS!r} and finite")
        check_field(c, "w_max", self.w_max, math.isfinite(self.w_max) and self.w_max > 0, "> 0 and finite")
        # the maps compute w + w_max (up to 2·w_max) and multiply or divide by scale_uS in the tensors' float32: a scale
        # beyond float32 (a tiny w_max) gave NaN conductances (0·inf at w = -w_max), one below its normal range (a tiny
        # span) NaN weights from from_pair (0/0), an overflowing 2·w_max infinite ones
        span = self.g_max_uS - self.g_min_uS
        lo, hi = span / FLOAT32_MAX, min(FLOAT32_MAX / 2, span / FLOAT32_TINY)
        check_field(c, "w_max", self.w_max, lo <= self.w_max <= hi,
                    f"in [(g_max_uS - g_min_uS)/{FLOAT32_MAX:.2g}, min({FLOAT32_MAX / 2:.2g}, (g_max_uS - g_min_uS)/"
                    f"{FLOAT32_TINY:.2g})] = [{lo:.3g}, {hi:.3g}] (the µS per weight unit (g_max_uS - g_min_uS)/w_max "
                    f"must be a normal float32 number and 2·w_max a float32, the simulator's tensors' type)")

    @property
    def scale_uS(self) -> float:
        """µS per weight unit of a differential pair, ``(g_max − g_min)/w_max``."""
        return (self.g_max_uS - self.g_min_uS) / self.w_max

    @property
    def g_ref_uS(self) -> float:
        """Reference conductance (µS) read as weight 0 by a single device, ``(g_min + g_max)/2``."""
        return 0.5 * (self.g_min_uS + self.g_max_uS)

    def to_conductance(self, w: Tensor) -> Tensor:
        """Single device: weights ``w: [*]`` → conductances in µS ``[*]`` (saturating at the range ends)."""
        g = self.g_min_uS + (w + self.w_max) * (0.5 * self.scale_uS)
        return g.clamp(self.g_min_uS, self.g_max_uS)

    def from_conductance(self, g: Tensor) -> Tensor:
        """Single device: conductances in µS ``g: [*]`` → weights ``[*]`` (inverse of :meth:`to_conductance`)."""
        return (g - self.g_min_uS) / (0.5 * self.scale_uS) - self.w_max

    def to_pair(self, w: Tensor) -> tuple[Tensor, Tensor]:
        """Differential pair: weights ``w: [*]`` → ``(g_plus, g_minus)`` in µS, one of each pair at ``g_min``."""
        wc = w.clamp(-self.w_max, self.w_max)
        # clamped at g_max too (as to_conductance): at |w| = w_max, g_min + w_max·scale_uS rounds in the tensor's dtype
        # up to a few ulps past g_max (float32 and float64 alike), a device beyond its range
        g_plus = (self.g_min_uS + wc.clamp_min(0.0) * self.scale_uS).clamp_max(self.g_max_uS)
        g_minus = (self.g_min_uS + (-wc).clamp_min(0.0) * self.scale_uS).clamp_max(self.g_max_uS)
        return g_plus, g_minus

    def from_pair(self, g_plus: Tensor, g_minus: Tensor) -> Tensor:
        """Differential pair: ``(g_plus, g_minus)`` in µS ``[*]`` → weights ``(g⁺ − g⁻)/scale_uS`` ``[*]``."""
        return (g_plus - g_minus) / self.scale_uS
