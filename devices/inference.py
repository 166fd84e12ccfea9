"""Inference after training: programming noise, conductance drift and read noise of PCM-like devices.

The trained weights are programmed once onto differential pairs ``(G⁺, G⁻)`` (µS) with programming noise; each
device draws a drift exponent ``ν`` once; at a time ``t_inference`` (s) after programming ended, every device
reads ``g(t) = g_prog·((t_inference + t_0)/t_0)^(−ν)`` plus accumulated 1/f read noise. The weights read back
are optionally rescaled by a global drift compensation (aihwkit's ``GlobalDriftCompensation``).

Semantics follow aihwkit 1.1's ``aihwkit.inference.PCMLikeNoiseModel`` (Nandakumar et al., ICECS 2019); the
code is this project's own, vectorized over any tensor shape and over several inference times at once, with
randomness only from an explicit ``torch.Generator`` (which must live on the tensors' device).

Typical use::

    gen = torch.Generator().manual_seed(0)
    w_t = apply_inference_noise(w, STANDARD_TIMES_S, PCMLikeNoiseModel(), generator=gen)   # [4, *w.shape]

or, to program once and read at several times in separate calls (as aihwkit's ``program_weights`` /
``drift_weights``)::

    prog = program_weights(w, model, gen)
    w_1h = read_weights_at(prog, 3600.0, model, gen)[0]

Units: conductances in µS, times in s, ``ν`` dimensionless, weights in the caller's units.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from devices import rng

from devices.base import (
    FLOAT32_MAX,
    FLOAT32_RANGE,
    FLOAT32_TINY,
    NORMAL_DRAW_MAX,
    check_field,
    check_field_types,
    check_finite,
    fits_float32,
    is_finite_number,
)
from devices.conductance import ConductanceMap

__all__ = [
    "STANDARD_TIMES_S",
    "STANDARD_TIME_LABELS",
    "InferenceNoiseModel",
    "PCMLikeNoiseModel",
    "GenericDriftModel",
    "NoDrift",
    "ProgrammedWeights",
    "program_weights",
    "read_weights_at",
    "apply_inference_noise",
]

#: Inference times after programming (s): 1 s, 1 h, 1 day, 1 year (365 days).
STANDARD_TIMES_S: tuple[float, ...] = (1.0, 3600.0, 86400.0, 365.0 * 86400.0)
#: Human-readable labels of :data:`STANDARD_TIMES_S`, same order.
STANDARD_TIME_LABELS: tuple[str, ...] = ("1 s", "1 h", "1 day", "1 year")

_G_REL_MIN = 1e-7  # aihwkit's _ZERO_CLIP: floor of |g|/g_max before taking its log
_Q_DEN_MIN = 1e-3  # aihwkit's floor of (|g|/g_max)^exponent in the 1/f read-noise amplitude
_W_ABS_MAX_MIN = 1e-7  # aihwkit's floor of max|w| when mapping max|w| to g_max
_F32_MAX = FLOAT32_MAX * (1.0 - 2.0**-16)  # float32's largest, less room for the few roundings of each formula
_LN_F32_MAX = math.log(FLOAT32_MAX)  # 88.7: the largest ln of a float32 (the 1/f term's logarithm)
_LN_F32_TINY = -math.log(FLOAT32_TINY)  # 87.3: the largest decay exponent whose factor stays a normal float32


def _at_g_max(model: InferenceNoiseModel, g_max_uS: float, where: str) -> InferenceNoiseModel:
    """``model`` with its fits normalized at ``g_max_uS`` (µS): the model itself when its ``g_max`` already is,
    else a copy with ``g_max = g_max_uS`` (other fields kept, e.g. ``prog_coeff_g_max_reference``: σ_prog scales
    with ``g_max_uS`` as aihwkit's model built with that ``g_max``). Raises ``ValueError`` naming ``g_max_uS``
    when the model is not a dataclass with a ``g_max`` field."""
    if float(model.g_max) == float(g_max_uS):
        return model
    ok = dataclasses.is_dataclass(model) and any(f.name == "g_max" for f in dataclasses.fields(model))
    _check(where, "g_max_uS", g_max_uS, ok,
           f"model.g_max = {model.g_max!r} µS for {type(model).__name__} (not a dataclass with a g_max field, so "
           "its fits cannot be re-normalized at another g_max; set the model's g_max instead)")
    return dataclasses.replace(model, g_max=float(g_max_uS))  # type: ignore[type-var]  # a dataclass: checked


def _check(where: str, name: str, value: Any, ok: bool, valid: str) -> None:
    """:func:`devices.base.check_field` for any value (numbers, tuples, sequences of times)."""
    check_field(where, name, value, ok, valid)


def _randn(shape: torch.Size, like: Tensor, generator: torch.Generator) -> Tensor:
    """Standard normal draws of ``shape`` on ``like``'s device and dtype, from ``generator``."""
    return rng.randn(shape, generator, dtype=like.dtype, device=like.device)


#: The tensor of times :func:`read_weights_at` built from times it has validated (one by one, on the host) while
#: it calls the model: :func:`_time` does not read that tensor back to check it again (no device sync per call).
_CHECKED_TIMES: ContextVar[Tensor | None] = ContextVar("_CHECKED_TIMES", default=None)


def _check_time_tensor(t_inference_s: Tensor, where: str, model: InferenceNoiseModel) -> None:
    """Refuse a tensor of times (s) holding a NaN, a time < 0, an infinite one or one beyond float32's range
    (``ValueError`` naming ``<where>.t_inference_s``, as :func:`~devices.base.check_finite` for a number), or one
    at which ``model``'s float32 arithmetic fails (:meth:`~InferenceNoiseModel.check_times`, on its largest time:
    every limit there is an upper bound). One host read per call (a NaN flag, the smallest and the largest time:
    a device sync on CUDA), none for an empty tensor."""
    _check(where, "t_inference_s", t_inference_s, not (t_inference_s.dtype == torch.bool or t_inference_s.is_complex()),
           "a number or a tensor of real numbers (s, not bool or complex)")
    if t_inference_s.numel() == 0:
        return
    x = t_inference_s.detach()
    x = x if x.is_floating_point() else x.double()
    has_nan, lo, hi = torch.stack([x.isnan().any().double(), x.amin().double(), x.amax().double()]).tolist()
    if has_nan:
        check_finite(where, "t_inference_s", math.nan, 0)
    check_finite(where, "t_inference_s", lo, 0)
    check_finite(where, "t_inference_s", hi, 0)
    model.check_times([hi], where)


@contextlib.contextmanager
def _times_checked(t: Tensor) -> Iterator[None]:
    """Within the block, :func:`_time` takes the tensor of times ``t`` as validated (no second host read)."""
    token = _CHECKED_TIMES.set(t)
    try:
        yield
    finally:
        _CHECKED_TIMES.reset(token)


def _time(t_inference_s: float | Tensor, like: Tensor, model: InferenceNoiseModel) -> Tensor:
    """Inference time(s) in s as a tensor on ``like``'s device/dtype, validated: a Python number by
    :func:`~devices.base.check_finite` (finite, >= 0, within float32's range) and by ``model``'s
    :meth:`~InferenceNoiseModel.check_times`; a tensor by the same rules (:func:`_check_time_tensor`: one host
    read, a sync on CUDA), unless it is the one :func:`read_weights_at` built from times it validated."""
    where = type(model).__name__
    if isinstance(t_inference_s, Tensor):
        if t_inference_s is not _CHECKED_TIMES.get():
            _check_time_tensor(t_inference_s, where, model)
        return t_inference_s.to(device=like.device, dtype=like.dtype)
    check_finite(where, "t_inference_s", t_inference_s, 0)
    model.check_times([float(t_inference_s)], where)
    return torch.tensor(float(t_inference_s), dtype=like.dtype, device=like.device)


class InferenceNoiseModel(ABC):
    """Contract of an inference noise model on conductances in µS (any shape, any device, elementwise).

    Subclasses are frozen dataclasses with at least ``g_max`` (µS, the conductance the largest weight maps to,
    and the normalization of the conductance-dependent fits) and ``t_0`` (s, the first read after
    programming, reference time of the drift).

    Methods:
        program(g_target_uS, generator): programmed conductances ``[*]`` (programming noise, once).
        sample_nu(g_target_uS, generator): drift exponents ``ν`` ``[*]`` (once per device).
        drift(g_prog_uS, t_inference_s, nu): ``g_prog·((t_inference + t_0)/t_0)^(−ν)``, deterministic.
        read_noise(g_drift_uS, t_inference_s, generator, g_prog_uS): drifted conductances plus read noise.
        at_time(g_prog_uS, nu, t_inference_s, generator): drift then read noise (aihwkit's
            ``apply_drift_noise_to_conductance``).
        nu_range(): bounds of the drawn ``ν``; check_times(times, where): refuses times at which the model's
            float32 arithmetic fails (a drift ratio or 1/f term beyond float32, every device drifted to ~0 µS).
    """

    g_max: float
    t_0: float

    @abstractmethod
    def program(self, g_target_uS: Tensor, generator: torch.Generator) -> Tensor:
        """Programmed conductances ``[*]`` (µS, >= 0) for targets ``g_target_uS: [*]`` (µS)."""

    @abstractmethod
    def sample_nu(self, g_target_uS: Tensor, generator: torch.Generator) -> Tensor:
        """Drift exponents ``ν: [*]`` (dimensionless, >= 0) for devices programmed to ``g_target_uS: [*]``."""

    @abstractmethod
    def read_noise(self, g_drift_uS: Tensor, t_inference_s: float | Tensor, generator: torch.Generator,
                   g_prog_uS: Tensor | None = None) -> Tensor:
        """Drifted conductances plus the read noise accumulated up to ``t_inference_s`` (µS, >= 0)."""

    def drift(self, g_prog_uS: Tensor, t_inference_s: float | Tensor, nu: Tensor) -> Tensor:
        """Conductance after drift: ``g_prog·((t_inference + t_0)/t_0)^(−ν)``, clipped at 0 µS.

        ``t_inference_s`` counts from the end of programming (so ``t_inference = 0`` is the read at ``t_0`` and
        leaves ``g_prog`` unchanged), as aihwkit's ``t_inference``. Args (broadcast together):
        ``g_prog_uS: [*]`` (µS), ``nu: [*]``, ``t_inference_s``: a number (s, >= 0, validated, also by
        :meth:`check_times`) or a tensor, e.g. ``[T, 1, …]`` to evaluate several times in one call (then the result
        is ``[T, *]``), validated by the same rules (a NaN, negative or refused time: ``ValueError`` naming
        ``t_inference_s``), which reads its smallest and largest time back to the host (a sync on CUDA).
        """
        t = _time(t_inference_s, g_prog_uS, self)
        factor = torch.pow((t + self.t_0) / self.t_0, -nu)
        return (g_prog_uS * factor).clamp_min(0.0)

    def nu_range(self) -> tuple[float, float]:
        """``(lo, hi)``: bounds of every drift exponent ``ν`` :meth:`sample_nu` can draw (``|ξ| <=``
        :data:`~devices.base.NORMAL_DRAW_MAX` for each standard normal); this default, ``(0, inf)``, knows none.
        :meth:`check_times` uses them."""
        return 0.0, math.inf

    def check_times(self, times: Sequence[float], where: str) -> None:
        """Raise ``ValueError`` naming ``<where>.t_inference_s`` for a time (s, each finite and >= 0: checked before)
        at which this model's float32 arithmetic fails (:meth:`_time_problem`); the time terms are evaluated on the
        host in float32, with the models' own roundings (no tensor of the run is read)."""
        for t in times:
            problem = self._time_problem(float(t))
            if problem is not None:
                _check(where, "t_inference_s", t, False, problem)

    def _time_problem(self, t_inference_s: float) -> str | None:
        """Why the drift fails in float32 at ``t_inference_s`` (s), or None: ``(t_inference_s + t_0)/t_0`` beyond
        float32 when some ``ν > 0`` (its power is 0: every such device reads 0 µS), or, when every ``ν >= lo > 0``
        (:meth:`nu_range`), a slowest drift factor ``((t_inference_s + t_0)/t_0)^(−lo)`` below float32's smallest
        normal number (every device reads ~0 µS: all weights 0, NaN after drift compensation)."""
        t_0 = float(self.t_0)
        nu_lo, nu_hi = self.nu_range()
        ratio = float((torch.tensor(t_inference_s, dtype=torch.float32) + t_0) / t_0)  # as drift() computes it
        if nu_hi > 0 and not math.isfinite(ratio):
            about = (f"t_inference_s up to about {t_0 * FLOAT32_MAX - t_0:.4g} s" if t_0 < 1.0
                     else f"t_inference_s + t_0 at most {FLOAT32_MAX:.3g} s")
            return (f"such that the drift's (t_inference_s + t_0)/t_0 is a float32, at most {FLOAT32_MAX:.3g} "
                    f"(t_0 = {t_0!r} s: {about}); beyond it ((t_inference_s + t_0)/t_0)^(-ν) is 0 for every ν > 0: "
                    "the weights read 0, NaN after drift compensation")
        if nu_lo > 0 and nu_lo * math.log(ratio) > _LN_F32_TINY:
            x = _LN_F32_TINY / nu_lo
            lim = t_0 * math.expm1(x) if x < 700.0 else math.inf
            return (f"such that the slowest drift factor ((t_inference_s + t_0)/t_0)^(-{nu_lo:.4g}) is at least "
                    f"{FLOAT32_TINY:.3g}, float32's smallest normal number (every drift exponent of this model is "
                    f">= {nu_lo:.4g}; t_0 = {t_0!r} s: t_inference_s up to about {lim:.4g} s); beyond it every "
                    "device drifts to ~0 µS: the weights read 0, NaN after drift compensation")
        return None

    def at_time(self, g_prog_uS: Tensor, nu: Tensor, t_inference_s: float | Tensor,
                generator: torch.Generator) -> Tensor:
        """Conductances ``[*]`` (µS, >= 0) read at ``t_inference_s``: :meth:`drift` then :meth:`read_noise`.

        ``g_prog_uS: [*]`` programmed conductances, ``nu: [*]`` their drift exponents; ``t_inference_s`` as in
        :meth:`drift` (a tensor ``[T, 1, …]`` gives ``[T, *]`` with independent read noise per time; validated
        once for both steps: one host read).
        """
        checked: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
        if isinstance(t_inference_s, Tensor) and t_inference_s is not _CHECKED_TIMES.get():
            _check_time_tensor(t_inference_s, type(self).__name__, self)   # once for both: one host read
            checked = _times_checked(t_inference_s)
        with checked:
            g_drift = self.drift(g_prog_uS, t_inference_s, nu)
            return self.read_noise(g_drift, t_inference_s, generator, g_prog_uS=g_prog_uS)


@dataclass(frozen=True)
class PCMLikeNoiseModel(InferenceNoiseModel):
    """PCM noise model fitted on measured devices (aihwkit ``PCMLikeNoiseModel``; Nandakumar et al., ICECS 2019).

    With ``x = g_target/g_max``, ``r = max(|g|/g_max, 1e-7)`` and standard normals ``ξ``:

    * programming: ``g_prog = max(0, g_target + prog_noise_scale·σ_prog·ξ)``,
      ``σ_prog = (Σ_i prog_coeff[i]·x^i)·g_max/prog_coeff_g_max_reference`` µS;
    * drift exponent (from the *target* conductance, as aihwkit): ``μ_ν = clip(a + b·ln r, *drift_nu_mean_range)``
      with ``(a, b) = drift_nu_mean_coeff``, ``σ_ν = clip(c + d·ln r, *drift_nu_std_range)`` with
      ``(c, d) = drift_nu_std_coeff``; ``ν = drift_scale·|μ_ν + σ_ν·ξ|``;
    * drift: ``g_drift = g_prog·(t/t_0)^(−ν)`` with ``t = t_inference + t_0``;
    * read (1/f) noise accumulated since programming: ``q = min(read_noise_q_max,
      read_noise_coeff / max(r_prog^read_noise_exponent, 1e-3))`` with ``r_prog = |g_prog|/g_max``,
      ``σ_read = q·sqrt(ln((t + t_read)/(2·t_read)))``,
      ``g_t = max(0, g_drift + |g_drift|·read_noise_scale·σ_read·ξ)``.

    Defaults are aihwkit 1.1's (its drift and read-noise constants are hard-coded there; here they are fields).

    Attributes:
        prog_coeff: programming-noise polynomial coefficients ``c_0, c_1, …`` in µS (at
            ``g_max = prog_coeff_g_max_reference``); at least one, finite.
        g_max: conductance (µS, > 0) the largest |weight| maps to; normalizes every fit.
        t_read: read duration of the 1/f fit (s, > 0).
        t_0: first read after programming, drift reference (s, >= t_read).
        prog_noise_scale: multiplier of the programming noise (>= 0).
        read_noise_scale: multiplier of the read (1/f) noise (>= 0).
        drift_scale: multiplier of the drift exponents ``ν`` (>= 0).
        prog_coeff_g_max_reference: ``g_max`` (µS, > 0) at which ``prog_coeff`` were fitted (aihwkit: 25 µS for
            its default coefficients). Set it to ``g_max`` when giving coefficients fitted at your own ``g_max``.
            ``σ_prog`` scales with ``g_max/prog_coeff_g_max_reference`` (relative to ``g_max`` it is
            ``Σ_i prog_coeff[i]·x^i/prog_coeff_g_max_reference`` whatever ``g_max``): a reference far above
            ``g_max`` is legitimate and gives a proportionally small programming noise (below float32's resolution
            of the conductances the programmed ones equal their targets); where that factor is below float32's
            normal range (reference > ``g_max/1.18e-38``) ``σ_prog`` is computed in float64, not zeroed.
        drift_nu_mean_coeff: ``(a, b)`` of ``μ_ν = a + b·ln(g/g_max)``.
        drift_nu_mean_range: ``(lo, hi)`` clip of ``μ_ν`` (0 <= lo <= hi).
        drift_nu_std_coeff: ``(c, d)`` of ``σ_ν = c + d·ln(g/g_max)``.
        drift_nu_std_range: ``(lo, hi)`` clip of ``σ_ν`` (0 <= lo <= hi).
        read_noise_coeff: 1/f amplitude prefactor (>= 0, dimensionless).
        read_noise_exponent: power of ``g/g_max`` in the 1/f amplitude (finite).
        read_noise_q_max: upper clip of the 1/f amplitude ``q`` (>= 0).

    Fields valid alone but overflowing float32 together (the simulator's tensors' type) are refused, naming the field
    and its largest (or smallest) value: ``g_max`` and ``t_read`` normal float32 numbers, ``t_read >= t_0/3.4e38``,
    ``σ_prog``'s largest ``Σ|prog_coeff|·g_max/prog_coeff_g_max_reference``, the largest programmed conductance
    ``g_max + 9·prog_noise_scale·σ_prog``, the largest ``ν`` and the largest read conductance all float32 numbers
    (every standard normal ``|ξ| <= 9``, :data:`~devices.base.NORMAL_DRAW_MAX`). Times are checked at the call
    (:meth:`check_times`).
    """

    prog_coeff: tuple[float, ...] = (0.26348, 1.9650, -1.1731)
    g_max: float = 25.0
    t_read: float = 250.0e-9
    t_0: float = 20.0
    prog_noise_scale: float = 1.0
    read_noise_scale: float = 1.0
    drift_scale: float = 1.0
    prog_coeff_g_max_reference: float = 25.0
    drift_nu_mean_coeff: tuple[float, float] = (0.0244, -0.0155)
    drift_nu_mean_range: tuple[float, float] = (0.049, 0.1)
    drift_nu_std_coeff: tuple[float, float] = (-0.0059, -0.0125)
    drift_nu_std_range: tuple[float, float] = (0.008, 0.045)
    read_noise_coeff: float = 0.0088
    read_noise_exponent: float = 0.65
    read_noise_q_max: float = 0.2

    def __post_init__(self) -> None:
        c = type(self).__name__
        check_field_types(self)     # the float fields: numbers (not bools) within float32's range
        for name in ("prog_coeff", "drift_nu_mean_coeff", "drift_nu_mean_range", "drift_nu_std_coeff",
                     "drift_nu_std_range"):
            v = getattr(self, name)
            ok = isinstance(v, (tuple, list)) and all(is_finite_number(x) and fits_float32(x) for x in v)
            _check(c, name, v, ok, f"a sequence of finite numbers, each {FLOAT32_RANGE}")
            object.__setattr__(self, name, tuple(float(x) for x in v))
        _check(c, "prog_coeff", self.prog_coeff, len(self.prog_coeff) >= 1, "at least one coefficient")
        for name in ("drift_nu_mean_coeff", "drift_nu_mean_range", "drift_nu_std_coeff", "drift_nu_std_range"):
            v = getattr(self, name)
            _check(c, name, v, len(v) == 2, "a pair of numbers")
        for name in ("drift_nu_mean_range", "drift_nu_std_range"):
            lo, hi = getattr(self, name)
            _check(c, name, getattr(self, name), 0 <= lo <= hi, "(lo, hi) with 0 <= lo <= hi")
        for name in ("g_max", "t_read", "prog_coeff_g_max_reference"):
            v = getattr(self, name)
            _check(c, name, v, is_finite_number(v) and v > 0, "> 0 and finite")
        _check(c, "t_0", self.t_0, is_finite_number(self.t_0) and self.t_0 >= self.t_read,
                    f">= t_read = {self.t_read!r} s and finite")
        for name in ("prog_noise_scale", "read_noise_scale", "drift_scale", "read_noise_coeff", "read_noise_q_max"):
            v = getattr(self, name)
            _check(c, name, v, is_finite_number(v) and v >= 0, ">= 0 and finite")
        _check(c, "read_noise_exponent", self.read_noise_exponent, is_finite_number(self.read_noise_exponent), "finite")
        self._check_float32_edges()

    def _check_float32_edges(self) -> None:
        """Refuse fields, each valid alone, whose combination overflows (or underflows) float32, the simulator's
        tensors' type: NaN or infinite conductances, or ones silently 0. Every bound takes ``|ξ| <= 9``
        (:data:`~devices.base.NORMAL_DRAW_MAX`) and targets in ``[0, g_max]`` (what :func:`program_weights` maps
        weights to); limits keep a 2⁻¹⁶ margin below float32's largest number for the formulas' roundings."""
        c, xi = type(self).__name__, NORMAL_DRAW_MAX
        _check(c, "g_max", self.g_max, self.g_max >= FLOAT32_TINY,
               f">= {FLOAT32_TINY:.3g} µS, float32's smallest normal number (the fits divide conductances by g_max: "
               "below it, g/g_max overflows and ln(g/g_max) is infinite)")
        t_read_min = max(FLOAT32_TINY, self.t_0 / FLOAT32_MAX)
        _check(c, "t_read", self.t_read, self.t_read >= t_read_min,
               f">= max({FLOAT32_TINY:.3g}, t_0/{FLOAT32_MAX:.3g}) = {t_read_min:.4g} s (the 1/f read noise takes "
               "ln((t_inference_s + t_0 + t_read)/(2·t_read)): below it that ratio overflows float32, NaN "
               "conductances)")
        coeff_sum = math.fsum(abs(x) for x in self.prog_coeff)
        _check(c, "prog_coeff", self.prog_coeff, coeff_sum <= _F32_MAX,
               f"coefficients whose magnitudes sum to at most {_F32_MAX:.4g} (σ_prog's polynomial on targets in "
               "[0, g_max], evaluated in float32, must stay finite)")
        ref_min = self.g_max * max(1.0, coeff_sum) / _F32_MAX
        _check(c, "prog_coeff_g_max_reference", self.prog_coeff_g_max_reference,
               self.prog_coeff_g_max_reference >= ref_min,
               f">= g_max·max(1, Σ|prog_coeff|)/{_F32_MAX:.4g} = {ref_min:.4g} µS (the factor "
               "g_max/prog_coeff_g_max_reference and the largest σ_prog, Σ|prog_coeff|·g_max/"
               "prog_coeff_g_max_reference µS, must be float32 numbers: beyond, NaN programmed conductances)")
        sigma_max = coeff_sum * (self.g_max / self.prog_coeff_g_max_reference)
        scale_max = (_F32_MAX - self.g_max) / (xi * sigma_max) if sigma_max > 0 else math.inf
        _check(c, "prog_noise_scale", self.prog_noise_scale, self.prog_noise_scale <= scale_max,
               f"<= ({_F32_MAX:.4g} - g_max)/({xi:g}·Σ|prog_coeff|·g_max/prog_coeff_g_max_reference) = "
               f"{scale_max:.4g} (a programmed conductance g_target + prog_noise_scale·σ_prog·ξ, |ξ| <= {xi:g}, "
               "must be a float32)")
        (_, mean_hi), (_, std_hi) = self.drift_nu_mean_range, self.drift_nu_std_range
        std_hi_max = (_F32_MAX - mean_hi) / xi
        _check(c, "drift_nu_std_range", self.drift_nu_std_range, std_hi <= std_hi_max,
               f"(lo, hi) with hi <= ({_F32_MAX:.4g} - drift_nu_mean_range's hi)/{xi:g} = {std_hi_max:.4g} (the "
               f"largest |μ_ν + σ_ν·ξ|, |ξ| <= {xi:g}, must be a float32: beyond, NaN drift exponents)")
        nu_abs_max = mean_hi + xi * std_hi
        drift_scale_max = _F32_MAX / nu_abs_max if nu_abs_max > 0 else math.inf
        _check(c, "drift_scale", self.drift_scale, self.drift_scale <= drift_scale_max,
               f"<= {_F32_MAX:.4g}/(drift_nu_mean_range's hi + {xi:g}·drift_nu_std_range's hi) = "
               f"{drift_scale_max:.4g} (the largest drift exponent ν must be a float32)")
        q_hi = min(self.read_noise_q_max, self.read_noise_coeff / _Q_DEN_MIN)
        q_lim = _F32_MAX / math.sqrt(_LN_F32_MAX)
        _check(c, "read_noise_q_max", self.read_noise_q_max, q_hi <= q_lim,
               f"<= {_F32_MAX:.4g}/sqrt(ln {FLOAT32_MAX:.3g}) = {q_lim:.4g}, unless read_noise_coeff/{_Q_DEN_MIN:g} is "
               "(the 1/f std q·sqrt(ln((t + t_read)/(2·t_read))) must be a float32 for every float32 ratio: beyond, "
               "NaN conductances)")
        g_hi = self.g_max + self.prog_noise_scale * xi * sigma_max  # the largest programmed conductance (µS)
        read_max = (_F32_MAX / max(1.0, g_hi) - 1.0) / (xi * q_hi * math.sqrt(_LN_F32_MAX)) if q_hi > 0 else math.inf
        _check(c, "read_noise_scale", self.read_noise_scale, self.read_noise_scale <= read_max,
               f"<= ({_F32_MAX:.4g}/max(1, g_hi) - 1)/({xi:g}·q_hi·sqrt(ln {FLOAT32_MAX:.3g})) = {read_max:.4g}, "
               f"with g_hi = g_max + {xi:g}·prog_noise_scale·σ_prog's largest = {g_hi:.4g} µS the largest "
               f"programmed conductance and q_hi = min(read_noise_q_max, read_noise_coeff/{_Q_DEN_MIN:g}) = "
               f"{q_hi:.4g} (a read conductance g·(1 + read_noise_scale·σ_read·ξ), |ξ| <= {xi:g}, must be a "
               "float32)")

    def nu_range(self) -> tuple[float, float]:
        """``drift_scale·(max(0, μ_lo − 9·σ_hi), μ_hi + 9·σ_hi)`` with ``(μ_lo, μ_hi) = drift_nu_mean_range``
        and ``σ_hi = drift_nu_std_range[1]``: bounds of every ``ν`` drawn (``|ξ| <= 9``)."""
        (mean_lo, mean_hi), (_, std_hi) = self.drift_nu_mean_range, self.drift_nu_std_range
        xi = NORMAL_DRAW_MAX
        return self.drift_scale * max(0.0, mean_lo - xi * std_hi), self.drift_scale * (mean_hi + xi * std_hi)

    def _time_problem(self, t_inference_s: float) -> str | None:
        """The drift's limits (:meth:`InferenceNoiseModel._time_problem`), and the 1/f read noise's
        ``(t_inference_s + t_0 + t_read)/(2·t_read)`` beyond float32 (its logarithm infinite: NaN conductances)."""
        t32 = torch.tensor(t_inference_s, dtype=torch.float32)
        if not math.isfinite(float((t32 + self.t_0 + self.t_read) / (2.0 * self.t_read))):  # as read_noise()
            lim = min(FLOAT32_MAX, 2.0 * self.t_read * FLOAT32_MAX) - self.t_0 - self.t_read
            return (f"such that the 1/f read noise's (t_inference_s + t_0 + t_read)/(2·t_read) is a float32, at most "
                    f"{FLOAT32_MAX:.3g} (t_0 = {self.t_0!r} s, t_read = {self.t_read!r} s: t_inference_s up to about "
                    f"{lim:.4g} s); beyond it the read noise's std is infinite: NaN conductances")
        return super()._time_problem(t_inference_s)

    def prog_std(self, g_target_uS: Tensor) -> Tensor:
        """Programming-noise std ``σ_prog`` (µS) before ``prog_noise_scale``; ``[*]`` in, ``[*]`` out."""
        x = g_target_uS / self.g_max
        sig = torch.full_like(g_target_uS, self.prog_coeff[-1])
        for coeff in reversed(self.prog_coeff[:-1]):  # Horner over the (few) polynomial coefficients
            sig = sig * x + coeff
        factor = self.g_max / self.prog_coeff_g_max_reference
        if factor >= torch.finfo(sig.dtype).tiny:
            return sig * factor
        # a reference more than g_max/1.18e-38 (float32): the factor, rounded to sig's dtype, would be subnormal
        # (σ_prog off by up to 100 %) or 0 (the noise silently off) though σ_prog itself may be a normal number:
        # multiply in float64, σ_prog rounded once (a decision on Python numbers: no tensor read back)
        return (sig.to(torch.float64) * factor).to(sig.dtype)

    def program(self, g_target_uS: Tensor, generator: torch.Generator) -> Tensor:
        """``max(0, g_target + prog_noise_scale·σ_prog(g_target)·ξ)``; ``g_target_uS: [*]`` µS → ``[*]`` µS."""
        noise = self.prog_noise_scale * self.prog_std(g_target_uS) * _randn(g_target_uS.shape, g_target_uS, generator)
        return (g_target_uS + noise).clamp_min(0.0)

    def nu_moments(self, g_uS: Tensor) -> tuple[Tensor, Tensor]:
        """``(μ_ν, σ_ν)`` ``[*]`` of the normal that ``ν`` is folded from (before ``drift_scale``)."""
        log_r = torch.log((g_uS.abs() / self.g_max).clamp_min(_G_REL_MIN))
        a, b = self.drift_nu_mean_coeff
        c, d = self.drift_nu_std_coeff
        mu = (a + b * log_r).clamp(*self.drift_nu_mean_range)
        sig = (c + d * log_r).clamp(*self.drift_nu_std_range)
        return mu, sig

    def sample_nu(self, g_target_uS: Tensor, generator: torch.Generator) -> Tensor:
        """``ν = drift_scale·|μ_ν + σ_ν·ξ|`` ``[*]`` for target conductances ``g_target_uS: [*]`` µS.

        aihwkit draws ``ν`` from the *target* conductance (not the programmed one); pass the target to match it.
        """
        mu, sig = self.nu_moments(g_target_uS)
        return (mu + sig * _randn(g_target_uS.shape, g_target_uS, generator)).abs() * self.drift_scale

    def read_noise(self, g_drift_uS: Tensor, t_inference_s: float | Tensor, generator: torch.Generator,
                   g_prog_uS: Tensor | None = None) -> Tensor:
        """``max(0, g_drift + |g_drift|·read_noise_scale·q(g_prog)·sqrt(ln((t + t_read)/(2 t_read)))·ξ)``.

        Args:
            g_drift_uS: drifted conductances ``[*]`` (µS), e.g. ``[T, *]`` for several times.
            t_inference_s: time since programming (s); ``t = t_inference + t_0``. A number, or a tensor that
                broadcasts with ``g_drift_uS`` (e.g. ``[T, 1, …]``); validated as in :meth:`drift`.
            generator: source of the standard normals ``ξ`` (one per element of the broadcast shape).
            g_prog_uS: programmed conductances setting the 1/f amplitude ``q`` (aihwkit's choice); defaults to
                ``g_drift_uS``. Broadcasts with ``g_drift_uS``.
        Returns:
            conductances (µS, >= 0) of the broadcast shape.
        """
        t = _time(t_inference_s, g_drift_uS, self) + self.t_0
        g_ref = g_drift_uS if g_prog_uS is None else g_prog_uS
        den = torch.pow(g_ref.abs() / self.g_max, self.read_noise_exponent).clamp_min(_Q_DEN_MIN)
        q = (self.read_noise_coeff / den).clamp_max(self.read_noise_q_max)
        sig = q * torch.sqrt(torch.log((t + self.t_read) / (2.0 * self.t_read)))
        shape = torch.broadcast_shapes(g_drift_uS.shape, sig.shape)
        xi = _randn(shape, g_drift_uS, generator)
        return (g_drift_uS + g_drift_uS.abs() * (self.read_noise_scale * sig) * xi).clamp_min(0.0)

    # --- aihwkit interop (lazy import) ----------------------------------------------------------------------

    def to_aihwkit(self) -> Any:
        """The equivalent ``aihwkit.inference.PCMLikeNoiseModel`` (single-pair converter at ``g_max``).

        Raises ``ValueError`` when a drift or read-noise constant differs from aihwkit's hard-coded value
        (aihwkit cannot express it).
        """
        from aihwkit.inference import PCMLikeNoiseModel as AihwPCM  # lazy: aihwkit is optional here

        default = PCMLikeNoiseModel()
        for name in ("drift_nu_mean_coeff", "drift_nu_mean_range", "drift_nu_std_coeff", "drift_nu_std_range",
                     "read_noise_coeff", "read_noise_exponent", "read_noise_q_max"):
            _check(type(self).__name__, name, getattr(self, name), getattr(self, name) == getattr(default, name),
                        f"aihwkit's fixed value {getattr(default, name)!r} to convert to aihwkit")
        model = AihwPCM(prog_coeff=list(self.prog_coeff), g_max=self.g_max, t_read=self.t_read, t_0=self.t_0,
                        prog_noise_scale=self.prog_noise_scale, read_noise_scale=self.read_noise_scale,
                        drift_scale=self.drift_scale)
        # aihwkit 1.1 only stores prog_coeff_g_max_reference when it is *not* passed; set it afterwards.
        model.prog_coeff_g_max_reference = self.prog_coeff_g_max_reference
        return model

    @classmethod
    def from_aihwkit(cls, model: Any) -> "PCMLikeNoiseModel":
        """Build from an ``aihwkit.inference.PCMLikeNoiseModel`` (its fields; drift/read constants are aihwkit's).

        Raises ``ValueError`` naming ``prog_coeff_g_max_reference`` when the model lacks it: aihwkit 1.1 does not
        store it when both ``prog_coeff`` and ``prog_coeff_g_max_reference`` are given (aihwkit's own programming
        of that model fails too). The value passed there is lost; set it on the aihwkit model and convert again.
        """
        if not hasattr(model, "prog_coeff_g_max_reference"):
            raise ValueError(
                f"{cls.__name__}.from_aihwkit: the aihwkit model has no prog_coeff_g_max_reference (aihwkit 1.1 "
                "drops it when prog_coeff and prog_coeff_g_max_reference are both given, so the µS reference of "
                f"prog_coeff = {list(model.prog_coeff)!r} is unknown); set model.prog_coeff_g_max_reference = "
                "<g_max in µS at which prog_coeff were fitted> on the aihwkit model, or build "
                f"{cls.__name__}(prog_coeff=..., prog_coeff_g_max_reference=...) directly")
        return cls(prog_coeff=tuple(model.prog_coeff), g_max=float(model.g_max), t_read=float(model.t_read),
                   t_0=float(model.t_0), prog_noise_scale=float(model.prog_noise_scale),
                   read_noise_scale=float(model.read_noise_scale), drift_scale=float(model.drift_scale),
                   prog_coeff_g_max_reference=float(model.prog_coeff_g_max_reference))


@dataclass(frozen=True)
class GenericDriftModel(InferenceNoiseModel):
    """Conductance-independent noise: a simple knob-per-effect model for sweeps.

    * programming: ``g_prog = max(0, g_target + prog_noise_std·ξ)`` (``prog_noise_std`` in µS);
    * drift exponent: ``ν = |nu_mean + nu_std·ξ|``; drift ``g_prog·((t_inference + t_0)/t_0)^(−ν)``;
    * read noise: ``g_t = max(0, g_drift·(1 + read_noise_std·ξ))`` (relative, time-independent).

    Attributes:
        g_max: conductance (µS, > 0) the largest |weight| maps to.
        t_0: drift reference time (s, > 0).
        prog_noise_std: programming noise (µS, >= 0).
        nu_mean: mean drift exponent (>= 0). nu_std: its device-to-device spread (>= 0).
        read_noise_std: relative read noise (>= 0).

    Combinations overflowing float32 are refused, naming the field and its largest (or smallest) value: ``t_0`` a
    normal float32 number, ``g_max + 9·prog_noise_std``, ``nu_mean + 9·nu_std`` and the largest read conductance
    ``(g_max + 9·prog_noise_std)·(1 + 9·read_noise_std)`` float32 numbers (``|ξ| <= 9``,
    :data:`~devices.base.NORMAL_DRAW_MAX`). Times are checked at the call (:meth:`check_times`).
    """

    g_max: float = 25.0
    t_0: float = 20.0
    prog_noise_std: float = 0.0
    nu_mean: float = 0.05
    nu_std: float = 0.0
    read_noise_std: float = 0.0

    def __post_init__(self) -> None:
        c = type(self).__name__
        check_field_types(self)     # numbers (not bools) within float32's range
        for name in ("g_max", "t_0"):
            v = getattr(self, name)
            _check(c, name, v, is_finite_number(v) and v > 0, "> 0 and finite")
        for name in ("prog_noise_std", "nu_mean", "nu_std", "read_noise_std"):
            v = getattr(self, name)
            _check(c, name, v, is_finite_number(v) and v >= 0, ">= 0 and finite")
        self._validate()
        self._check_float32_edges()

    def _validate(self) -> None:
        """Hook for subclasses' extra checks."""

    def _check_float32_edges(self) -> None:
        """Refuse fields, each valid alone, whose combination overflows float32, the simulator's tensors' type (NaN
        or infinite conductances); bounds take ``|ξ| <= 9`` (:data:`~devices.base.NORMAL_DRAW_MAX`) and targets in
        ``[0, g_max]``, with a 2⁻¹⁶ margin below float32's largest number for the formulas' roundings."""
        c, xi = type(self).__name__, NORMAL_DRAW_MAX
        _check(c, "t_0", self.t_0, self.t_0 >= FLOAT32_TINY,
               f">= {FLOAT32_TINY:.3g} s, float32's smallest normal number (the drift divides by t_0: below it, "
               "(t_inference_s + t_0)/t_0 overflows from t_inference_s ~ 1e-7 s on)")
        prog_max = (_F32_MAX - self.g_max) / xi
        _check(c, "prog_noise_std", self.prog_noise_std, self.prog_noise_std <= prog_max,
               f"<= ({_F32_MAX:.4g} - g_max)/{xi:g} = {prog_max:.4g} µS (a programmed conductance g_target + "
               f"prog_noise_std·ξ, |ξ| <= {xi:g}, must be a float32: beyond, NaN weights)")
        nu_std_max = (_F32_MAX - self.nu_mean) / xi
        _check(c, "nu_std", self.nu_std, self.nu_std <= nu_std_max,
               f"<= ({_F32_MAX:.4g} - nu_mean)/{xi:g} = {nu_std_max:.4g} (the largest drift exponent nu_mean + "
               f"nu_std·ξ, |ξ| <= {xi:g}, must be a float32: beyond, NaN weights)")
        g_hi = self.g_max + xi * self.prog_noise_std  # the largest programmed conductance (µS)
        read_max = (_F32_MAX / max(1.0, g_hi) - 1.0) / xi
        _check(c, "read_noise_std", self.read_noise_std, self.read_noise_std <= read_max,
               f"<= ({_F32_MAX:.4g}/max(1, g_max + {xi:g}·prog_noise_std) - 1)/{xi:g} = {read_max:.4g} (a read "
               f"conductance g·(1 + read_noise_std·ξ), |ξ| <= {xi:g}, from the largest programmed one, must be a "
               "float32: beyond, NaN weights)")

    def nu_range(self) -> tuple[float, float]:
        """``(max(0, nu_mean − 9·nu_std), nu_mean + 9·nu_std)``: bounds of every ``ν`` drawn (``|ξ| <= 9``)."""
        xi = NORMAL_DRAW_MAX
        return max(0.0, self.nu_mean - xi * self.nu_std), self.nu_mean + xi * self.nu_std

    def program(self, g_target_uS: Tensor, generator: torch.Generator) -> Tensor:
        """``max(0, g_target + prog_noise_std·ξ)``; ``[*]`` µS → ``[*]`` µS."""
        return (g_target_uS + self.prog_noise_std * _randn(g_target_uS.shape, g_target_uS, generator)).clamp_min(0.0)

    def sample_nu(self, g_target_uS: Tensor, generator: torch.Generator) -> Tensor:
        """``|nu_mean + nu_std·ξ|`` ``[*]``."""
        return (self.nu_mean + self.nu_std * _randn(g_target_uS.shape, g_target_uS, generator)).abs()

    def read_noise(self, g_drift_uS: Tensor, t_inference_s: float | Tensor, generator: torch.Generator,
                   g_prog_uS: Tensor | None = None) -> Tensor:
        """``max(0, g_drift·(1 + read_noise_std·ξ))``; shape of ``g_drift_uS`` broadcast with the time tensor."""
        t = _time(t_inference_s, g_drift_uS, self)
        shape = torch.broadcast_shapes(g_drift_uS.shape, t.shape)
        xi = _randn(shape, g_drift_uS, generator)
        return (g_drift_uS * (1.0 + self.read_noise_std * xi)).clamp_min(0.0)


@dataclass(frozen=True)
class NoDrift(GenericDriftModel):
    """Ideal inference: exact programming, no drift, no read noise (every noise field must be 0).

    Its methods draw no random numbers: the conductances read back are the targets at every time.
    """

    nu_mean: float = 0.0

    def _validate(self) -> None:
        c = type(self).__name__
        for name in ("prog_noise_std", "nu_mean", "nu_std", "read_noise_std"):
            v = getattr(self, name)
            _check(c, name, v, v == 0, "0 (NoDrift is ideal; use GenericDriftModel for noise)")

    def program(self, g_target_uS: Tensor, generator: torch.Generator) -> Tensor:
        """Exact programming: a copy of ``g_target_uS`` clipped at 0 µS."""
        return g_target_uS.clamp_min(0.0)

    def sample_nu(self, g_target_uS: Tensor, generator: torch.Generator) -> Tensor:
        """Zeros ``[*]``."""
        return torch.zeros_like(g_target_uS)

    def read_noise(self, g_drift_uS: Tensor, t_inference_s: float | Tensor, generator: torch.Generator,
                   g_prog_uS: Tensor | None = None) -> Tensor:
        """No read noise: ``g_drift_uS`` broadcast with the time tensor."""
        t = _time(t_inference_s, g_drift_uS, self)
        return g_drift_uS.clamp_min(0.0).expand(torch.broadcast_shapes(g_drift_uS.shape, t.shape)).contiguous()


# --- weights ↔ programmed differential pairs -------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ProgrammedWeights:
    """Weights programmed onto differential pairs, ready to be read at any inference time.

    Attributes:
        g_target_uS: target conductances ``[2, *]`` (µS), index 0 = G⁺, 1 = G⁻.
        g_prog_uS: programmed conductances ``[2, *]`` (µS), after programming noise.
        nu: drift exponents ``[2, *]`` (one per device, drawn once).
        w_scale: weight units per normalized unit: a 0-dim tensor (``max|w|``) or the fixed ``w_max``.
        conductance_map: the normalized-weight ↔ µS map (``w_max = 1``).
    """

    g_target_uS: Tensor
    g_prog_uS: Tensor
    nu: Tensor
    w_scale: Tensor | float
    conductance_map: ConductanceMap

    def to_weights(self, g_uS: Tensor) -> Tensor:
        """Weights ``[…, *]`` from pair conductances ``g_uS: [..., 2, *]`` (pair axis at ``-(w.ndim + 1)``)."""
        return self.to_normalized(g_uS) * self.w_scale

    def to_normalized(self, g_uS: Tensor) -> Tensor:
        """Normalized weights ``[…, *]`` (weights / ``w_scale``: ``|w| <= 1`` up to noise) from pair conductances
        ``g_uS: [..., 2, *]``."""
        pair_dim = g_uS.ndim - self.g_prog_uS.ndim
        g_plus, g_minus = g_uS.select(pair_dim, 0), g_uS.select(pair_dim, 1)
        return self.conductance_map.from_pair(g_plus, g_minus)

    @property
    def weights(self) -> Tensor:
        """Programmed weights ``[*]`` (programming noise, no drift, no read noise): the compensation reference."""
        return self.to_weights(self.g_prog_uS)


def program_weights(
    w: Tensor,
    model: InferenceNoiseModel,
    generator: torch.Generator,
    *,
    g_max_uS: float | None = None,
    g_min_uS: float = 0.0,
    w_max: float | None = None,
) -> ProgrammedWeights:
    """Program weights ``w: [*]`` onto ``(G⁺, G⁻)`` pairs with programming noise; draw each device's ``ν``.

    Mapping (aihwkit's ``SinglePairConductanceConverter``, through :class:`devices.ConductanceMap`):
    ``|w|`` up to ``w_max`` spans ``[g_min_uS, g_max_uS]`` on G⁺ (w > 0) or G⁻ (w < 0), the other device at
    ``g_min_uS``. ``w_max=None`` uses ``max|w|`` of this tensor (aihwkit's per-tile scaling, no saturation);
    a number fixes the range and saturates weights beyond it.

    Args:
        w: weights ``[*]`` (any shape, device, float dtype; float16 / bfloat16 are programmed in float32: the
            conductances, times of up to a year and the read noise's time terms overflow float16).
        model: the noise model; ``g_max_uS`` defaults to ``model.g_max``. Another ``g_max_uS`` also
            normalizes the model's fits (programming noise, ``ν``, read noise) at ``g_max_uS``, as aihwkit,
            whose noise model's ``g_max`` is its conductance converter's: the model is used with
            ``g_max = g_max_uS`` (:func:`read_weights_at` does the same from ``conductance_map.g_max_uS``).
        generator: torch.Generator on ``w``'s device (programming noise drawn first, then ``ν``).
        g_max_uS, g_min_uS: conductance range in µS (0 <= g_min_uS < g_max_uS).
        w_max: weight mapped to ``g_max_uS`` (a normal float32 number, 1.18e-38 to 3.4e38) or None for ``max|w|``.
    Returns:
        :class:`ProgrammedWeights` with ``[2, *]`` conductances and ``ν``, detached from ``w`` (no grad history:
        programming is a write onto devices, not a differentiable operation).
    """
    g_max = model.g_max if g_max_uS is None else g_max_uS
    cmap = ConductanceMap(g_min_uS=g_min_uS, g_max_uS=g_max, w_max=1.0)
    model = _at_g_max(model, cmap.g_max_uS, "program_weights")
    w = w.detach()  # programming writes devices: the result carries no grad history of ``w``
    if w.dtype in (torch.float16, torch.bfloat16):
        w = w.float()
    if w_max is None:
        w_scale: Tensor | float = w.abs().amax().clamp_min(_W_ABS_MAX_MIN)
    else:
        _check("program_weights", "w_max", w_max, is_finite_number(w_max) and w_max > 0, "> 0 and finite or None")
        _check("program_weights", "w_max", w_max, FLOAT32_TINY <= w_max <= FLOAT32_MAX,
               f"None or in [{FLOAT32_TINY:.3g}, {FLOAT32_MAX:.3g}], a normal float32 number (the weights are divided "
               "by w_max and the read ones multiplied by it in float32: beyond, NaN weights; below, 0 or subnormal "
               "ones)")
        w_scale = float(w_max)
    g_target = torch.stack(cmap.to_pair(w / w_scale))
    g_prog = model.program(g_target, generator)
    nu = model.sample_nu(g_target, generator)
    return ProgrammedWeights(g_target_uS=g_target, g_prog_uS=g_prog, nu=nu, w_scale=w_scale, conductance_map=cmap)


def _times(t_inference_s: float | Sequence[float] | Tensor, where: str) -> list[float]:
    """Validated inference times (s, each finite and >= 0) as a non-empty list of floats. A tensor (0-d: a time,
    1-d: a sequence of times; one host read) gives its values, each checked as a number is."""
    if isinstance(t_inference_s, Tensor):
        _check(where, "t_inference_s", t_inference_s, t_inference_s.dim() <= 1,
               "a time or a non-empty sequence of times (a 0-d or 1-d tensor)")
        times: list[Any] = t_inference_s.detach().reshape(-1).tolist()
    elif isinstance(t_inference_s, (int, float, numbers.Real)):
        times = [t_inference_s]
    else:
        times = list(t_inference_s)
    _check(where, "t_inference_s", t_inference_s, len(times) > 0, "a time or a non-empty sequence of times")
    for t in times:
        check_finite(where, "t_inference_s", t, 0)
    return [float(t) for t in times]


def read_weights_at(
    programmed: ProgrammedWeights,
    t_inference_s: float | Sequence[float] | Tensor,
    model: InferenceNoiseModel,
    generator: torch.Generator,
    *,
    compensate_drift: bool = True,
    compensation_dims: Sequence[int] | None = None,
) -> Tensor:
    """Read programmed weights at one or several times after programming: drift + read noise, optional compensation.

    All times in one vectorized call (independent read noise per time, the same programmed state and ``ν``).
    Global drift compensation (aihwkit's ``GlobalDriftCompensation`` applied to the weights): each time's weights
    are scaled by ``Σ|w_prog| / Σ|w_t|`` (reference: the programmed weights, read at ``t_0`` without read noise);
    where that factor overflows float32 (heavy drift: most devices at ~0 µS) each weight is scaled by its share
    ``|w_t|/Σ|w_t|`` of ``Σ|w_prog|`` instead, the same value in exact arithmetic; where a sum overflows (weights
    near float32's largest number) the factor is taken from the weights divided by ``w_scale``. Where every device
    of a group reads 0 µS in float32 (drift exponents spread down to 0, so that the model's
    :meth:`~InferenceNoiseModel.check_times` cannot refuse the time, yet every drawn one large) the weights read 0,
    compensated too: nothing is left to scale (aihwkit's compensation, its read-out clamped at 1e-4, gives ~0 as
    well); weights read from subnormal conductances (1e-45 to 1e-38 µS) keep only a few significant bits.

    Args:
        programmed: from :func:`program_weights` (weights ``[*]``).
        t_inference_s: a time or a sequence of ``T`` times (s after programming, each >= 0 and within the model's
            float32 limits, :meth:`InferenceNoiseModel.check_times`: ``ValueError`` naming ``t_inference_s``); a
            0-d or 1-d tensor of times is read back to the host (one read) and checked in the same way.
        model: the noise model used to program (evaluated at ``g_max = programmed.conductance_map.g_max_uS``,
            as in :func:`program_weights`).
        generator: torch.Generator on the weights' device.
        compensate_drift: apply the global drift compensation.
        compensation_dims: weight dims the sums run over (one factor per remaining index, e.g. ``(1, 2)`` for
            one factor per tile of ``[tiles, rows, cols]``); None: all dims, one factor per time.
    Returns:
        weights ``[T, *]``.
    """
    times = _times(t_inference_s, "read_weights_at")
    model = _at_g_max(model, programmed.conductance_map.g_max_uS, "read_weights_at")
    model.check_times(times, "read_weights_at")
    w_ndim = programmed.g_prog_uS.ndim - 1
    g_prog = programmed.g_prog_uS
    t = torch.tensor(times, dtype=g_prog.dtype, device=g_prog.device).reshape([len(times)] + [1] * (w_ndim + 1))
    with _times_checked(t):  # validated above, on the host: not read back from the device in _time
        g_t = model.at_time(g_prog, programmed.nu, t, generator)  # [T, 2, *]
    w_n = programmed.to_normalized(g_t)  # [T, *]
    w_t = w_n * programmed.w_scale  # as programmed.to_weights(g_t)
    if not compensate_drift:
        return w_t
    if compensation_dims is None:
        dims = list(range(w_ndim))
    else:
        dims = list(compensation_dims)
        ok = len(dims) > 0 and all(isinstance(d, int) and -w_ndim <= d < w_ndim for d in dims)
        _check("read_weights_at", "compensation_dims", tuple(dims), ok,
                    f"None or a non-empty sequence of weight dims in [-{w_ndim}, {w_ndim})")
        dims = sorted({d % w_ndim for d in dims})
    w_prog_n = programmed.to_normalized(programmed.g_prog_uS)
    if not dims:  # 0-dim weights: the single weight is its own reference
        ref, cur = (w_prog_n * programmed.w_scale).abs(), w_t.abs()
        ref_n, cur_n = w_prog_n.abs(), w_n.abs()
    else:
        ref = (w_prog_n * programmed.w_scale).abs().sum(dim=dims, keepdim=True)
        cur = w_t.abs().sum(dim=[d + 1 for d in dims], keepdim=True)
        ref_n = w_prog_n.abs().sum(dim=dims, keepdim=True)
        cur_n = w_n.abs().sum(dim=[d + 1 for d in dims], keepdim=True)
    # where a sum of |w| overflowed float32 (weights near its largest number: inf/inf = NaN, or a read sum inf and
    # every weight 0) the factor is taken from the normalized weights' sums, w_scale cancelling (|w_n| <= 1 up to
    # noise: their sums stay finite), and the weights scaled back; elsewhere unchanged, bit for bit
    sums_finite = torch.isfinite(ref) & torch.isfinite(cur)
    return torch.where(sums_finite, _compensated(w_t, ref, cur), _compensated(w_n, ref_n, cur_n) * programmed.w_scale)


def _compensated(w_t: Tensor, ref: Tensor, cur: Tensor) -> Tensor:
    """Weights ``w_t`` scaled by ``ref/cur`` (the global drift compensation; ``ref``, ``cur``: sums of ``|w|``
    that broadcast with ``w_t``, ``cur`` the sum of ``|w_t|`` itself, >= 0).

    Where the read sum drifted below ``ref/3.4e38`` (heavy drift: most devices at ~0 µS) ``ref/cur`` overflows (and
    ``w_t·inf`` gave inf, NaN for a weight read 0): each weight is scaled by its share of the read sum instead, the
    same value in exact arithmetic (``|w_t|/cur <= 1``, finite); elsewhere ``w_t·(ref/cur)``. A sum of 0 (every
    weight read 0) divides by 1: those weights stay 0. A subnormal sum (a few weights read 1e-45 to 1e-38) is
    divided by as it is (clamping it to 1.18e-38 scaled those weights by too small a factor, up to 1e7 times).
    """
    cur = torch.where(cur > 0, cur, torch.ones_like(cur))
    factor = ref / cur
    return torch.where(torch.isfinite(factor), w_t * factor, (w_t / cur) * ref)


def apply_inference_noise(
    w: Tensor,
    t_inference_s: float | Sequence[float] | Tensor = STANDARD_TIMES_S,
    model: InferenceNoiseModel | None = None,
    *,
    generator: torch.Generator,
    g_max_uS: float | None = None,
    g_min_uS: float = 0.0,
    w_max: float | None = None,
    compensate_drift: bool = True,
    compensation_dims: Sequence[int] | None = None,
) -> Tensor:
    """Weights as read at each inference time: program once (noise, ``ν``), then drift + read noise per time.

    ``= read_weights_at(program_weights(w, model, generator, …), t_inference_s, model, generator, …)``.

    Args:
        w: trained weights ``[*]``.
        t_inference_s: a time or ``T`` times (s after programming, >= 0, within the model's float32 limits:
            :meth:`InferenceNoiseModel.check_times`, checked before programming); default :data:`STANDARD_TIMES_S`.
        model: noise model, default :class:`PCMLikeNoiseModel` ``()``.
        generator: torch.Generator on ``w``'s device (explicit, seeded: same seed → same result).
        g_max_uS, g_min_uS, w_max: the weight ↔ conductance mapping, see :func:`program_weights`.
        compensate_drift, compensation_dims: see :func:`read_weights_at`.
    Returns:
        weights ``[T, *]`` (``T = 1`` for a single time), same device and dtype as ``w``.
    """
    model = PCMLikeNoiseModel() if model is None else model
    times = _times(t_inference_s, "apply_inference_noise")
    model.check_times(times, "apply_inference_noise")  # before programming: nothing drawn for a refused time
    programmed = program_weights(w, model, generator, g_max_uS=g_max_uS, g_min_uS=g_min_uS, w_max=w_max)
    return read_weights_at(programmed, times, model, generator, compensate_drift=compensate_drift,
                           compensation_dims=compensation_dims).to(w.dtype)
