"""Contract shared by every device model: sampled per-device parameters and the pulsed-device base class.

A device model is a frozen dataclass of *nominal* parameters (aihwkit's names, defaults and meaning). Calling
``sample(shape)`` draws the device-to-device spread once and returns a :class:`DeviceParams` of per-device
tensors; ``apply_pulses(w, n_up, n_down, params)`` then applies pulse *counts* to a tensor of device states in
one vectorized call (closed forms over the counts, no loop over pulses).

Weights are in normalized weight units (the unit of ``dw_min``, ``w_min``, ``w_max``); see
:mod:`devices.conductance` for the mapping to µS.

Semantics of the shared fields (identical to aihwkit 1.1's ``PulsedDevice`` / ``rpu_pulsed_device.cpp``), for a
device with standard Gaussians ``ξ`` drawn once per device:

* step sizes: ``gain = 1 + dw_min_dtod·ξ₁`` (or ``exp(dw_min_dtod·ξ₁)`` when ``dw_min_dtod_log_normal``),
  ``r = up_down_dtod·ξ₂``; ``dw_up = |dw_min·(gain + r + min(up_down, 0))|``,
  ``dw_down = |dw_min·(gain − r − max(up_down, 0))|``. So ``up_down > 0`` shrinks the *down* step and
  ``up_down < 0`` shrinks the *up* step (aihwkit's implementation; its docstring's symmetric ``1 ± β`` form
  is not what the C++ code does).
* bounds: ``b_max = w_max·(1 + w_max_dtod·ξ₃)``, ``b_min = w_min·(1 + w_min_dtod·ξ₄)``; swapped if
  ``b_min > b_max``; then ``b_max = |b_max|``, ``b_min = −|b_min|`` (aihwkit's ``enforce_consistency=True``,
  the Python default, always on here).
* cycle-to-cycle: one pulse changes the state by ``step(w)·(1 + dw_min_std·ξ)`` (multiplicative noise) with
  a fresh ``ξ`` per pulse, then the state is clipped into ``[b_min, b_max]``.

Count-based update (``apply_pulses``): the moments of the *unclipped* per-pulse process give a Gaussian end point,
drawn with one normal per device from the generator exactly as the clip-once update did, and the clip after every
pulse (aihwkit's rule) is modelled by :func:`clipped_walk_`: the clipped walk is the free walk less its running
overshoot past the bound (Lindley/Skorokhod), the free walk's maximum (minimum) drawn from a Brownian bridge between
the start and the end point (a uniform; Broadie–Glasserman–Kou's shift of the bound by 0.5826 step stds for a walk
seen at its pulses), with the last pulse split off exactly given the end point (a normal): exact for one pulse.
Only devices that the bridge reaches with probability at least :data:`BRIDGE_NEGLIGIBLE` (1e-12) are corrected;
their two numbers are derived from the device's own end point and state (:func:`devices.rng.derived_uniforms`),
not drawn, so the generator's stream is the clip-once update's and every other state is its ``clip(e)``, bit for
bit (stored seeded results away from the bounds are unchanged; the update costs a dozen elementwise passes more).

* Pulses of one sign: constant/linear step and soft bounds use exact closed forms of the mean and variance
  (geometric sums); ExpStep/PowStep use the closed-form ODE solution, time-rescaled so that one pulse is exact,
  and a linear-noise approximation of the variance (see ``devices/_flows.py``); where the flow reaches a bound,
  the last pulse ends past it by its step (the per-pulse rule clips after the pulse). A noisy step is negative with
  probability ``Φ(−1/dw_min_std)``: 4e-4 at 0.3, but 0.31 at 2 (EcRamMO preset) and 0.42 at 5 (ReRamES), and the
  additive noise of soft bounds and of PCM's complex noise does not vanish at a bound (ReRamSB, PCM): pulses towards
  a bound then move a device back off it on every negative step. Clipping once at the end (the update before the
  walk) left far too many devices on the bound; per-pulse reference, 20,000 devices starting at ``w_max``, 31 up
  pulses, share on the bound / mean change in ``dw_min`` (reference; clip once; this model): ReRamES 27 % / −8.5;
  87 % / −1.9; 26 % / −8.6. ReRamSB 10 % / −14.3; 50 % / −8.2; 10 % / −14.3. EcRamMO 53 % / −0.62; 99.8 % /
  −0.004; 52 % / −0.63. PCM 15 % / −36; 66 % / −21; 16 % / −47. For 1–31 pulses from the bound or 2 steps before
  it, every preset but PCM agrees within 5 SE in share and mean and 6 % in std (``tests/devices/
  test_clipped_walk.py``). Remaining error: PCM's longer trains (5+ pulses), whose moments taken at the start
  miss the restoring drift of its steps (~28× larger away from ``w_max``): mean 47 instead of 36 steps off the
  bound, std 46 instead of 31 (the share on the bound agrees); and the model's continuous bridge is an
  approximation between 2 and ~30 pulses (constant-step walks with noise 2–5 steps: share within 0.02, mean
  within ~0.05 of the std).
* Mixed counts on one device (``n_up > 0`` and ``n_down > 0``): the pulses are taken as randomly interleaved
  (what a batch of stochastic pulse trains produces): mean path of the evenly mixed map, c2c noise carried along
  it, plus the variance due to the random order of the fixed counts (exact linearized formula for the affine
  family, zero for constant steps; end-point estimate for ExpStep/PowStep, whose mean uses a 2-step Strang
  splitting). Checked against a per-pulse reference with random order: mean within 4 SE (+1 % of the change
  for the affine family, +5 % for ExpStep/PowStep), variance within 10 % / 15 %. Pulses lost against a bound
  between pulses of the other sign: the same walk, whose bridge also carries the random order's spread
  ``n_up·n_down/n·(dw_up + dw_down)²`` (nominal steps). From ``w_max`` (20,000 devices, reference / clip once / this
  model, mean change in ``dw_min``): ReRamSB 20 up + 10 down −37.6 / −33.4 / −37.6, EcRamMO −15.0 / −11.1 / −15.3,
  GokmenVlasov −0.88 / 0.00 / −0.74 (10 + 10: −2.60 / −0.55 / −2.44), ReRamES 3 + 2 −48.5 / −42.2 / −55.6 (its
  moments' order variance is too large: std 71 vs 64). A device whose walk spans both bounds (variance comparable
  to the range) is approximate: one uniform draws both extremes.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, TypeGuard, cast

import torch
from torch import Tensor

from devices import rng
from devices.host import flat_nonzero, host_reads_free
from devices.suggest import did_you_mean

__all__ = ["DW_MIN_MIN", "DW_MIN_STD_MAX", "DeviceParams", "FLOAT32_MAX", "FLOAT32_RANGE", "FLOAT32_TINY",
           "NORMAL_DRAW_MAX", "PULSE_COUNT_MAX", "PulsedDevice", "check_field", "check_field_types", "check_finite",
           "dw_min_max", "fits_float32", "is_finite_number", "is_number", "same_device_value"]

FLOAT32_MAX = 3.4028234663852886e38
"""The largest finite float32 (``torch.finfo(torch.float32).max``): the simulator's tensors are float32 by default, so a
parameter beyond it turns into ``inf`` there (NaN states, or torch's "cannot be converted without overflow")."""

FLOAT32_TINY = 1.1754943508222875e-38
"""The smallest normal float32 (``torch.finfo(torch.float32).tiny``): a positive parameter below it, or one whose
reciprocal the simulator takes, is subnormal or 0 in float32, and its reciprocal ``inf`` (NaN outputs from 0·inf)."""

FLOAT32_RANGE = "at most 3.4e+38 in magnitude (the largest float32, the simulator's tensors' type)"
"""How messages state the :data:`FLOAT32_MAX` limit."""

NORMAL_DRAW_MAX = 9.0
"""An upper bound on ``|ξ|`` for every standard normal the simulator draws, so that a std ``s`` with
``s·NORMAL_DRAW_MAX`` finite never gives an infinite draw. Each generator maps a finite-resolution uniform ``u`` to
``ξ``, so ``|ξ|`` is bounded by the quantile of its smallest ``u``: torch's CPU ``normal_`` of float32 tensors of at
least 16 elements is Box–Muller on 24-bit uniforms, ``|ξ| <= sqrt(−2·ln 2⁻²⁴) = 5.77``; smaller tensors and float64
take 53-bit uniforms, ``sqrt(−2·ln 2⁻⁵³) = 8.57``; CUDA's curand uniforms are at least ``2⁻³³`` (float32, 6.76) and
``2⁻⁵⁴`` (float64, 8.65); :class:`devices.rng.CounterRNG` inverts the normal CDF of uniforms at least ``2⁻²⁴``
(float32, 5.29) and ``2⁻⁵³`` (float64, 8.21). ``tests/devices/test_noise_limits.py`` recomputes these bounds
and checks torch's largest draws against them."""

DW_MIN_MIN = 3e-12
"""Smallest accepted :attr:`PulsedDevice.dw_min` (weight units). The constant-step update's std
``var·rsqrt(var + 1e-30)`` (``devices.constant_step._TINY``, which keeps devices without pulses exact) is ``sqrt(var)``
to a relative ``1e-30 / (2·var)``, below float32's half ulp (6e-8) only for steps ``dw² >= 8e-24``; a 1e-15 step had
its cycle-to-cycle std 8 % too small, 1e-17 one 92 %, and below ~1e-19 ``dw²`` is no normal float32 at all (every
model's variance). A step of 3e-12 on the range ±0.6 is 4e11 states: no device (the presets: 1e-4 to 0.1)."""

DW_MIN_STD_MAX = 1e19
"""Largest accepted :attr:`PulsedDevice.dw_min_std`: the count-based update carries the cycle-to-cycle variance
``dw_min_std²·step²``, and the factor ``dw_min_std² <= 1e38`` must be finite in float32 (largest 3.4e38; beyond it
``dw_min_std²·0 = NaN`` for the devices without pulses, which then jumped to a bound, and the constant-step draw
``N(0, dw_min_std)`` is infinite for ``|ξ| > 3.4e38/dw_min_std``, times 0 NaN states). A relative noise of 1e19 is far
beyond any device (the presets use 0.3 to 5); the states of pulsed devices then simply land on their bounds."""

PULSE_COUNT_MAX = 2.0 ** 31
"""An upper bound on the pulses one device gets in one update, per direction: the counts are int32 (at most
``2^31 − 1``, ``crossbar.update.MAX_DESIRED_BL``, the longest train; the CPU's int8-matmul counts are int32 sums), and
``2^31 − 1`` rounds up to ``2^31`` in float32, the counts' type in the device update. The update's mean
``w + n_up·dw_up − n_down·dw_down`` is finite whenever ``|bound| + PULSE_COUNT_MAX·step`` is: :func:`dw_min_max`."""


def dw_min_max(bound: float, top: float = FLOAT32_MAX) -> float:
    """The largest step for states within ``±bound``: ``(top − bound)/PULSE_COUNT_MAX``, shown to 4 significant
    digits and below it (less 5e-4 before rounding, as :meth:`PulsedDevice._refuse_write_noise`: the shown value
    is then at most ``(1 − 2.5e-7)`` times the bound, room for the step's rounding to float32), so that
    ``bound + PULSE_COUNT_MAX·step`` is finite in the dtype whose largest value is ``top`` (float32's by default):
    1.584e+29 for bounds up to ~1e28."""
    return float(f"{(top - bound) / PULSE_COUNT_MAX * (1 - 5e-4):.4g}")


def is_number(v: object) -> bool:
    """Whether ``v`` is a real number, int or float (a bool is not): the one spelling of this check, here at the
    bottom of the packages so that every layer (devices, crossbar, imc_grapes) can import it without a cycle."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def is_finite_number(v: object) -> TypeGuard[float]:
    """Whether ``v`` is a finite real number (:func:`is_number` and not NaN or ±Inf; None, a bool or a string such as
    ``"nan"`` is not): the one spelling of this check, for config fields and for values read back from results.
    Type checkers take ``v`` for a float where it holds (a real number has every operation of a float that callers
    use: comparisons, arithmetic, ``float(v)``)."""
    return is_number(v) and math.isfinite(v)  # type: ignore[arg-type]  # a real number (is_number)


def same_device_value(value: object, other: object) -> bool:
    """Whether a device field holding ``value`` is the device holding ``other``: two bools that are equal, or two
    numbers equal as numbers (``1`` and ``1.0``, ``0.001`` and ``1e-3``: the device models keep an int as given and
    compute with it as with the float; floats otherwise bit for bit) and of the same sign (``-0.0`` is kept apart
    from ``0.0``). Anything else (a string, None) is not a device value: never the same. Here at the bottom of the
    packages so that a run's config (``imc_grapes``) and a tile array's saved state (``crossbar``) compare alike."""
    if isinstance(value, bool) or isinstance(other, bool):
        return isinstance(value, bool) and isinstance(other, bool) and value == other
    return (isinstance(value, numbers.Real) and isinstance(other, numbers.Real) and value == other
            and math.copysign(1.0, value) == math.copysign(1.0, other))


def fits_float32(v: float) -> bool:
    """Whether the real number ``v`` is not a finite value beyond float32's range (``inf`` and NaN pass: each field's
    own range says whether it takes them)."""
    return not math.isfinite(v) or abs(v) <= FLOAT32_MAX

_APPARENT = "apparent states (write noise)"
"""The key under which :meth:`PulsedDevice._check_sampled` checks the largest apparent state a device can read."""

_PULSED = "states after 2^31 pulses"
"""The key under which :meth:`PulsedDevice._check_sampled` checks the largest state a device's pulses of one update
can reach (:data:`PULSE_COUNT_MAX` steps from its larger bound), in :func:`_pulsed_dtype`."""


_HALF = (torch.float16, torch.bfloat16)
"""The half-precision dtypes whose device updates :meth:`PulsedDevice._pulsed_states` computes in float32."""


def _pulsed_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype in which :meth:`PulsedDevice._check_sampled` checks :data:`PULSE_COUNT_MAX` pulses of the sampled
    steps: that of the states, at least float32 (2^31 is beyond float16's largest 65504, so 2^31 pulses of any step
    overflow it: half-precision states of realistic steps were refused); also the dtype of the counts and moments of
    the update (:meth:`PulsedDevice._pulsed_states` computes half-precision states in float32)."""
    return torch.promote_types(dtype, torch.float32)


def _non_finite(tensors: dict[str, Tensor]) -> list[str]:
    """The keys of ``tensors`` whose tensor holds a NaN or ±Inf: one reduction per tensor and one host read (a GPU
    synchronisation) for all of them."""
    finite = torch.stack([torch.isfinite(t).all() for t in tensors.values()]).tolist()
    return [k for k, ok in zip(tensors, finite) if not ok]


def _check_counts(where: str, w: Tensor, n_up: object, n_down: object, params: "DeviceParams",
                  values: bool) -> None:
    """Raise ``ValueError("<where>: n_up must be ..., got ...")`` unless ``n_up`` and ``n_down`` are real (int, float
    or bool) tensors and the shapes of the counts and of ``params`` broadcast to ``w``'s (no host read). With
    ``values``, where host reads are free (:func:`devices.host.host_reads_free`, CPU counts), also unless every
    count is a finite non-negative integer of at most :data:`PULSE_COUNT_MAX`: one host read for both tensors."""
    shape = tuple(w.shape)
    for name, n in (("n_up", n_up), ("n_down", n_down)):
        if not isinstance(n, Tensor) or n.is_complex():
            got = f"a {n.dtype} tensor" if isinstance(n, Tensor) else repr(n)
            raise ValueError(f"{where}: {name} must be a tensor of real pulse counts (int, float or bool), got {got}")
    n_up, n_down = cast(Tensor, n_up), cast(Tensor, n_down)
    try:
        out = tuple(torch.broadcast_shapes(shape, n_up.shape, n_down.shape, params.shape))
    except RuntimeError:
        out = None
    if out != shape:
        raise ValueError(f"{where}: n_up, n_down and params must have the states' shape {shape} or one that "
                         f"broadcasts to it, got n_up {tuple(n_up.shape)}, n_down {tuple(n_down.shape)}, params "
                         f"{tuple(params.shape)}")
    if not (values and host_reads_free(n_up) and host_reads_free(n_down)):
        return
    bad = []
    for n in (n_up, n_down):
        x = n.to(torch.float64)          # int64 counts beyond 2^53 stay beyond the limit
        bad.append(~(torch.isfinite(x) & (x >= 0) & (x <= PULSE_COUNT_MAX) & (x == x.floor())))
    found = torch.stack([b.any() for b in bad]).tolist()
    for name, n, b, hit in zip(("n_up", "n_down"), (n_up, n_down), bad, found):
        if hit:
            value = n.reshape(-1)[flat_nonzero(b)[0]].item()
            raise ValueError(f"{where}: {name} must hold pulse counts: integers in [0, 2^31] (the pulses a device "
                             f"gets in one update, per direction), got {value!r}")


_SPARSE_MIN_DEVICES = 4096
"""Arrays with fewer devices always take the dense path of :meth:`PulsedDevice.apply_pulses_`."""


def _same_layout(w: Tensor, n_up: Tensor, n_down: Tensor, params: "DeviceParams") -> bool:
    """Whether counts and parameters all have the shape and (parameters) the dtype of the contiguous ``w``."""
    return (w.is_contiguous() and n_up.shape == w.shape and n_down.shape == w.shape
            and all(t.shape == w.shape and t.dtype == w.dtype for t in params.state_dict().values()))


SEED_RANGE = "[-2^63, 2^64) (what torch.manual_seed takes)"
"""The seeds a ``torch.Generator`` takes (``torch.manual_seed``'s range), as messages state it; here at the bottom of
the packages so that the layers' seeds (crossbar) and a run's (``imc_grapes.config``) share one check."""

COUNTER_SEED_RANGE = "[-2^63, 2^63) (int64: what a devices.rng.CounterRNG stream takes)"
"""The seeds a :class:`devices.rng.CounterRNG` takes, as messages state it: its streams' keys are int64 tensors, so
the upper half of :data:`SEED_RANGE` (``[2^63, 2^64)``, which ``torch.manual_seed`` wraps) does not fit."""


def seed_in_range(v: int, counter: bool = False) -> bool:
    """Whether the integer ``v`` is in :data:`SEED_RANGE` (``counter``: in :data:`COUNTER_SEED_RANGE`)."""
    return -2 ** 63 <= v < (2 ** 63 if counter else 2 ** 64)


def is_seed(value: object, counter: bool = False) -> bool:
    """Whether ``value`` is a seed: an integer (a Python or numpy integer; not a bool, a float or a string, which
    ``int()`` would turn into another seed than the one written) within :data:`SEED_RANGE`, or with ``counter``
    within :data:`COUNTER_SEED_RANGE` (:func:`seed_in_range`). The test of :func:`check_seed` and of a saved
    layer's seed (``crossbar.TileArray``'s extra state)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and seed_in_range(int(value), counter)


def check_seed(where: str, value: object, name: str = "seed", counter: bool = False) -> int:
    """``value`` as an ``int``; ``ValueError("<where>.<name> must be an integer in <SEED_RANGE>, got <value>")``
    unless it is an integer (a Python or numpy integer; not a bool, a float or a string, which ``int()`` would turn
    into another seed than the one written) within :data:`SEED_RANGE` (beyond it ``manual_seed`` overflows), or with
    ``counter`` within :data:`COUNTER_SEED_RANGE` (a :class:`devices.rng.CounterRNG`'s seed; ``name`` e.g.
    ``"seeds[2]"`` for one of several)."""
    check_field(where, name, value, is_seed(value, counter),
                f"an integer in {COUNTER_SEED_RANGE if counter else SEED_RANGE}")
    return int(value)  # type: ignore[call-overload]  # an integer (checked)


def check_field(cls_name: str, name: str, value: object, ok: bool, valid: str) -> None:
    """Raise ``ValueError("<cls_name>.<name> must be <valid>, got <value>")`` unless ``ok``."""
    if not ok:
        raise ValueError(f"{cls_name}.{name} must be {valid}, got {value!r}")


def check_finite(cls_name: str, name: str, value: object, low: float | None = None, strict: bool = False) -> None:
    """Raise ``ValueError("<cls_name>.<name> must be a finite number[ > low | >= low], <FLOAT32_RANGE>, got <value>")``
    unless ``value`` is a finite real number (:func:`is_finite_number`: an int or float, not a bool), within
    float32's range (:func:`fits_float32`: the simulator's tensors' type) and ``> low`` (``strict``) or ``>= low``
    (no lower limit with ``low=None``): the check of the crossbar configs' number fields (``IOParameters``,
    ``UpdateParameters``), ``AnalogSettings``'s and the inference models' ``t_inference_s``, one message stating the
    whole valid range whichever part the value fails."""
    valid = "a finite number" + ("" if low is None else f" {'>' if strict else '>='} {low}") + f", {FLOAT32_RANGE}"
    ok = (is_finite_number(value) and fits_float32(value)
          and (low is None or (value > low if strict else value >= low)))
    check_field(cls_name, name, value, ok, valid)


def check_field_types(obj: Any) -> None:
    """Check the type of every ``float`` and ``bool`` field of the dataclass ``obj``, before any range is compared:
    a ``float`` field takes a real number, int or float, but not a bool, of magnitude at most :data:`FLOAT32_MAX`
    when finite (``inf``/NaN are left to the field's own range); a ``bool`` field only ``True``/``False``.
    Raises ``ValueError("<Class>.<field> must be ..., got <value>")``."""
    c = type(obj).__name__
    for f in fields(obj):
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
        v = getattr(obj, f.name)
        if kind == "float":
            check_field(c, f.name, v, is_number(v), "a number (int or float, not a bool)")
            check_field(c, f.name, v, fits_float32(v), FLOAT32_RANGE)
        elif kind == "bool":
            check_field(c, f.name, v, isinstance(v, bool), "true or false")


def check_sample_args(where: str, shape: object, generator: object, dtype: object) -> tuple[int, ...]:
    """``shape`` as a tuple of ints, after checking the arguments of :meth:`PulsedDevice.sample`: ``shape`` a tuple,
    list or ``torch.Size`` of integers >= 0 (Python or numpy; not a bool, a float or a string, which ``int()``
    would turn into another size), ``generator`` a ``torch.Generator``, a :class:`~devices.rng.CounterRNG` or
    ``None``, ``dtype`` a floating-point ``torch.dtype`` (the states are real numbers). Raises
    ``ValueError("<where>: <argument> must be ..., got <value>")``, before any draw."""
    sizes = list(shape) if isinstance(shape, (tuple, list, torch.Size)) else None
    if sizes is None or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and int(s) >= 0
                                for s in sizes):
        raise ValueError(f"{where}: shape must be a tuple of integers >= 0 (the device array's dimensions, () for "
                         f"one device), got {shape!r}")
    if not (generator is None or isinstance(generator, (torch.Generator, rng.CounterRNG))):
        raise ValueError(f"{where}: generator must be a torch.Generator, a devices.CounterRNG or None (torch's global "
                         f"generator), got {generator!r}")
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"{where}: dtype must be a floating-point torch.dtype (e.g. torch.float32), got {dtype!r}")
    return tuple(int(s) for s in sizes)


BGK_BETA = 0.5826
"""Broadie–Glasserman–Kou's ``β = −ζ(1/2)/sqrt(2π)``: the maximum of a Gaussian random walk of step std ``σ`` read
at its steps only crosses a barrier ``b`` about as often as the continuous path crosses ``b + β·σ``."""


BRIDGE_NEGLIGIBLE = 1e-12
"""Probability below which the clip after every pulse is skipped: a device whose free walk, as a Brownian bridge
from its state ``w`` to its free end point ``e`` of variance ``v`` (the order variance of mixed counts bounded by
``min(n_up, n_down)·(dw_up + dw_down)²``), reaches the bound ``b`` with probability ``exp(−2(b − w)(b − e)/v)``
below this (likewise at ``w_min``) keeps ``clip(e)``: the state of the update clipped once, bit for bit. This
bounds the chance that :func:`clipped_walk_` would have changed it (the model's bridge of the first ``n − 1``
pulses is narrower and its bounds are moved out by :data:`BGK_BETA`): one device-update in 10^12 (a training of
10^6 devices over 10^5 updates misses one such correction with probability 0.1; a missed one is a state left
where the clip-once update puts it). Devices within ~2.6 path stds of a bound at both ends are corrected."""

_BRIDGE_LOG = 0.5 * math.log(1.0 / BRIDGE_NEGLIGIBLE)


def _gather(t: Tensor, shape: torch.Size, index: Tensor) -> Tensor:
    """``t`` broadcast to ``shape`` and read at the flat positions ``index: [m]``; ``[m]``."""
    flat = t.reshape(-1) if t.shape == shape else t.expand(shape).reshape(-1)
    return flat.index_select(0, index)


def clipped_walk_(w: Tensor, e: Tensor, var: Tensor, n_up: Tensor, n_down: Tensor, w_min: Tensor, w_max: Tensor,
                  dw_up: Tensor, dw_down: Tensor, var_scale: float = 1.0, path_var: float | None = None,
                  scratch: tuple[Tensor, ...] = ()) -> Tensor:
    """Clip the free end points ``e`` of ``n = n_up + n_down`` pulses as a walk clipped into ``[w_min, w_max]``
    after *every* pulse would be (aihwkit's rule), in place; returns ``e``. ``w``: the states before the pulses,
    ``e``: the free end points (``mean + sqrt(var)·ξ`` with the update's one normal ``ξ`` per device, not yet
    clipped; written), ``var_scale·var``: their variance (NaN taken as infinite by the caller, ``>= 0``). All in
    weight units (counts in pulses, float or integer tensors); ``w`` and ``e`` of one shape ``[*s]`` (float32 or
    float64, ``e`` contiguous), the others broadcast to it. ``path_var``: a factor ``k`` with ``k·var >= v``, the
    path variance of :func:`_bridge_fix` including the order variance of mixed counts (a caller's cheaper bound:
    one operation fewer than four); default: ``v`` bounded with ``min(n_up, n_down)`` for ``n_up·n_down/n``. No
    generator: the correction's two numbers per device are derived from its own ``e`` and ``w``
    (:func:`devices.rng.derived_uniforms`), so the update's stream is the clip-once update's, number for number.
    ``scratch``: up to two tensors of ``e``'s shape, dtype and device that the caller no longer needs (overwritten):
    the test below then allocates one temporary of the devices' size instead of four (the same numbers).

    Where the correction cannot matter (:data:`BRIDGE_NEGLIGIBLE`: almost every device in training) the result is
    ``clip(e)`` bit for bit, at the cost of a dozen elementwise operations. The others get :func:`_bridge_fix`:
    on the CPU found with a host read and computed alone (:func:`devices.host.flat_nonzero`), elsewhere computed
    for every device and selected (no host synchronisation); both give the same numbers."""
    shape = e.shape
    # v: the path's variance, the order variance of mixed counts bounded by min(n_up, n_down)·(dw_up + dw_down)²;
    # near where v − min over the bounds of (b − w)(b − e) / K > 0 (NaN, e.g. 0·inf of an infinite variance: not)
    if path_var is None:
        v, k = torch.addcmul(var if var_scale == 1.0 else var * var_scale, torch.minimum(n_up, n_down),
                             torch.add(dw_up, dw_down).square_()), 1.0
    else:
        v, k = var, path_var
    spare = [s for s in scratch if s.shape == shape and s.dtype == e.dtype and s.device == e.device
             and s.is_contiguous()][:2]
    a, c = spare + [torch.empty_like(e) for _ in range(2 - len(spare))]
    torch.sub(w_max, w, out=a).mul_(torch.sub(w_max, e, out=c))              # (w_max − w)(w_max − e)
    torch.sub(e, w_min, out=c).mul_(torch.sub(w, w_min))                     # (w − w_min)(e − w_min)
    crit = torch.sub(v, torch.minimum(a, c, out=a), alpha=1.0 / (_BRIDGE_LOG * k), out=a)
    del c, v, spare
    if host_reads_free(e):
        index = flat_nonzero(crit, positive=True)
        if index.numel() == 0:
            return torch.clamp_(e, w_min, w_max)
        part = [_gather(t, shape, index) for t in (w, e, var, n_up, n_down, w_min, w_max, dw_up, dw_down)]
        part[3], part[4] = part[3].to(e.dtype), part[4].to(e.dtype)          # integer counts: converted gathered
        if var_scale != 1.0:
            part[2] = part[2].mul_(var_scale)
        fixed = _bridge_fix(*part)
        torch.clamp_(e, w_min, w_max).view(-1).index_copy_(0, index, fixed)
        return e
    scaled = var if var_scale == 1.0 else var * var_scale
    fixed = _bridge_fix(w, e, scaled, n_up.to(e.dtype), n_down.to(e.dtype), w_min, w_max, dw_up, dw_down)
    return torch.where(crit > 0, fixed, torch.clamp_(e, w_min, w_max), out=e)


def _hypot(a: Tensor, b: Tensor) -> Tensor:
    """``sqrt(a² + b²)`` elementwise without overflow, each element computed from its own two numbers by the same
    operations wherever it lies in the tensor (replicas computed together equal each computed alone, bit for bit);
    ``a`` and ``b`` finite, of one shape ``[*s]``; a fresh tensor ``[*s]``. float32 (and other dtypes): torch's
    ``hypot``. float64: ``max·sqrt(1 + (min/max)²)`` of the magnitudes (0 where both are 0; within ~1 ulp of the
    exact value), because torch's float64 ``hypot`` on the CPU rounds the vector lanes and the scalar tail of a call
    differently (measured on AVX2: 32 of 20,000 results an ulp apart; its float32 kernel rounds one float64
    computation, the same in every lane)."""
    if a.dtype != torch.float64:
        return torch.hypot(a, b)
    x, y = a.abs(), b.abs()
    big = torch.maximum(x, y)
    ratio = torch.minimum(x, y, out=x).div_(big)                   # 0/0 = NaN where both are 0: filled below
    return ratio.square_().add_(1.0).sqrt_().mul_(big).masked_fill_(big == 0, 0.0)


def _bridge_fix(w: Tensor, e: Tensor, var: Tensor, n_up: Tensor, n_down: Tensor, w_min: Tensor, w_max: Tensor,
                dw_up: Tensor, dw_down: Tensor) -> Tensor:
    """The state after ``n = n_up + n_down`` pulses clipped into ``[w_min, w_max]`` after every pulse, given the
    start ``w``, the free end point ``e`` and its variance ``var`` (weight units, counts in pulses; one shape
    ``[*s]`` after broadcasting, float32 or float64); a fresh tensor ``[*s]``. Two numbers per device derived from
    ``e`` and ``w`` (:func:`devices.rng.derived_uniforms`), no generator.

    Model: a walk clipped at ``b`` after each step ends at ``e − max(0, M − b)`` (Lindley/Skorokhod, for steps of
    either sign), ``M`` the maximum of the free walk; likewise ``e + max(0, b_min − m)`` with its minimum ``m``.
    The walk about the straight line from ``w`` to ``e`` is taken as a Gaussian bridge of ``n`` equal steps of total
    variance ``v = var + n_up·n_down/n·(dw_up + dw_down)²`` (the second term: the random order of mixed counts,
    with the nominal steps). The last pulse is split off exactly: given ``e``, its step is ``Δ ~ N((e − w)/n,
    (v/n)·(n − 1)/n)`` (the last increment of the bridge), so the walk is at ``f = e − Δ`` after ``n − 1`` pulses.
    Their extremes are those of a Brownian bridge from ``w`` to ``f`` (drawn in closed form with one uniform ``U``:
    ``(w + f ± sqrt((f − w)² − 2·v_b·ln U))/2``) of variance ``v_b = v·(n − 2)/(n − 1)`` (the bridge's
    ``v·(n − 1)/n`` times ``1 − 1/(n − 1)²``: exact for ``n <= 2``, where the walk's maximum is ``max(w, f)``,
    and → 1 for long trains; fitted between against simulated walks), against the bounds moved out by
    :data:`BGK_BETA` step stds ``sqrt(v/n)`` (a walk seen at its pulses crosses less often than the continuous
    bridge). The state after ``n − 1`` pulses is then clipped, the last step added and the result clipped: exact
    for ``n = 1``. The maximum and the minimum use the same ``U`` (one of them reaches its bound unless ``v`` is
    comparable to the range). Devices without pulses (``n = 0``, ``var = 0``) keep ``w``; an infinite variance
    or end point (a fused draw's overflow) lands on a bound (``e`` clipped, as without the bridge)."""
    n = n_up + n_down
    steps = n.clamp_min(1.0)
    finite = torch.isfinite(var + e)     # else e lands on a bound, as clipped once (the other values: discarded)
    # the path's variance about the straight line: the c2c noise plus the random order of mixed counts
    # (0·inf of one-sign trains of steps beyond ~1e19 is 0; sums saturate at the dtype's largest value)
    top = torch.finfo(e.dtype).max
    v = torch.nan_to_num_(n_up * n_down / steps * (dw_up + dw_down).square(), nan=0.0, posinf=top)
    v = v.add_(torch.nan_to_num(var, posinf=0.0)).clamp_max_(top)
    step_var = v / steps
    xi, u = rng.derived_uniforms(e, w, 2, torch.float64 if e.dtype == torch.float64 else torch.float32)
    xi = rng.ndtri_(xi).to(e.dtype)                          # the last step's standard normal
    last = xi.mul_((step_var * (steps - 1.0) / steps).sqrt_()).add_((e - w) / steps)
    f = e - last
    v_b = v * ((n - 2.0).clamp_min(0.0) / (n - 1.0).clamp_min(1.0))          # factor first: v may be near the max
    spread = torch.log(u.to(e.dtype)).mul_(-2.0).sqrt_().mul_(v_b.sqrt_())      # sqrt(−2·v_b·ln U), U in (0, 1)
    # halves first: w + f and f − w overflow for states near the largest float (the update's limit cases)
    half_w, half_f = w * 0.5, f * 0.5
    half = _hypot(half_f - half_w, spread.mul_(0.5))            # half the bridge's range term
    mid = half_w.add_(half_f)
    shift = step_var.sqrt_().mul_(BGK_BETA)
    over = torch.relu(mid + half - shift - w_max)                 # overshoot of the maximum past w_max + β·σ
    under = torch.relu(w_min - shift - mid + half)                # undershoot of the minimum below w_min − β·σ
    # the correction of the state after n − 1 pulses, exactly 0 where the bridge and f stay within the bounds
    fix = torch.clamp(f - over + under, w_min, w_max).sub_(f)
    return torch.clamp_(torch.where(finite, e + fix, e), w_min, w_max)


@dataclass
class DeviceParams:
    """Per-device sampled parameters, all tensors of the same shape as the device states (e.g. [tiles, rows, cols]).

    Attributes:
        dw_up: step of one up pulse at the reference state (> 0), weight units.
        dw_down: magnitude of one down pulse at the reference state (> 0), weight units.
        w_min: per-device lower bound (<= 0), weight units.
        w_max: per-device upper bound (>= 0), weight units.
        extra: model-specific sampled values (may be empty), same shape, e.g. ``slope_up`` of LinearStep.
    """

    dw_up: Tensor
    dw_down: Tensor
    w_min: Tensor
    w_max: Tensor
    extra: dict[str, Tensor] = field(default_factory=dict)

    _CORE: ClassVar[tuple[str, ...]] = ("dw_up", "dw_down", "w_min", "w_max")

    @property
    def shape(self) -> torch.Size:
        """Shape of the device array."""
        return self.dw_up.shape

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "DeviceParams":
        """Return a copy with every tensor moved to ``device`` and/or cast to ``dtype``."""
        def mv(t: Tensor) -> Tensor:
            return t.to(device=device, dtype=dtype)

        return DeviceParams(
            dw_up=mv(self.dw_up), dw_down=mv(self.dw_down), w_min=mv(self.w_min), w_max=mv(self.w_max),
            extra={k: mv(v) for k, v in self.extra.items()},
        )

    def state_dict(self) -> dict[str, Tensor]:
        """Flat mapping for saving: ``dw_up``, ``dw_down``, ``w_min``, ``w_max``, ``extra.<name>``."""
        d = {k: getattr(self, k) for k in self._CORE}
        d.update({f"extra.{k}": v for k, v in self.extra.items()})
        return d

    @classmethod
    def from_state_dict(cls, d: dict[str, Tensor]) -> "DeviceParams":
        """Inverse of :meth:`state_dict`; unknown keys raise ``ValueError``."""
        missing = [k for k in cls._CORE if k not in d]
        if missing:
            raise ValueError(f"DeviceParams.from_state_dict: missing keys {missing}; got {sorted(d)}")
        extra: dict[str, Tensor] = {}
        for k, v in d.items():
            if k in cls._CORE:
                continue
            if not k.startswith("extra."):
                raise ValueError(
                    f"DeviceParams.from_state_dict: unknown key {k!r}; valid: {list(cls._CORE)} or 'extra.<name>'"
                    f"{did_you_mean(k, cls._CORE)}"
                )
            extra[k[len("extra."):]] = v
        return cls(dw_up=d["dw_up"], dw_down=d["dw_down"], w_min=d["w_min"], w_max=d["w_max"], extra=extra)


@dataclass(frozen=True)
class PulsedDevice:
    """Abstract base of all pulsed device models; fields use aihwkit's names and defaults.

    Attributes (weight units unless stated):
        dw_min: mean step of one pulse across devices and directions (at least :data:`DW_MIN_MIN` = 3e-12, at most
            ``w_max − w_min`` and :func:`dw_min_max` of the larger bound, 1.584e29 for bounds up to ~1e28: a
            device's pulses of one update times the step must be finite in float32; the sampled steps are checked
            likewise when the tiles are built).
        dw_min_dtod: device-to-device std of the step, relative to ``dw_min`` (>= 0).
        dw_min_std: cycle-to-cycle std of each pulse's step, relative to that step (>= 0, at most
            :data:`DW_MIN_STD_MAX` = 1e19: its square must be finite in float32; 1e19 is no physical device).
        up_down: systematic up/down asymmetry in units of ``dw_min`` (in (-1, 1)); > 0 weakens down pulses.
        up_down_dtod: device-to-device std of the up/down asymmetry, in units of ``dw_min`` (>= 0).
        w_min: mean lower bound (<= 0, finite).
        w_max: mean upper bound (>= 0, > w_min, finite; ``w_max − w_min`` at most float32's largest, 3.4e38).
        w_min_dtod: device-to-device std of the lower bound, relative to ``w_min`` (>= 0).
        w_max_dtod: device-to-device std of the upper bound, relative to ``w_max`` (>= 0).
        write_noise_std: write noise in units of ``dw_min`` (>= 0): the *apparent* (read) state is the hidden
            state plus ``write_noise_std·dw_min·ξ``, redrawn whenever the device is updated (see
            :meth:`write_noise`). ``apply_pulses`` always returns the hidden (persistent) state. The apparent
            states must stay finite: :meth:`sample` (when the tiles are built) refuses a ``write_noise_std`` with
            ``write_noise_std·dw_min·NORMAL_DRAW_MAX`` plus the largest sampled ``|bound|`` beyond the dtype's range
            (:data:`NORMAL_DRAW_MAX` = 9 bounds every normal draw); realistic values are 0 to ~100 steps (the
            presets: up to 75).
        dw_min_dtod_log_normal: draw the step gain log-normally, ``exp(dw_min_dtod·ξ)``, instead of
            ``1 + dw_min_dtod·ξ``.
    """

    dw_min: float = 0.001
    dw_min_dtod: float = 0.3
    dw_min_std: float = 0.3
    up_down: float = 0.0
    up_down_dtod: float = 0.01
    w_min: float = -0.6
    w_max: float = 0.6
    w_min_dtod: float = 0.3
    w_max_dtod: float = 0.3
    write_noise_std: float = 0.0
    dw_min_dtod_log_normal: bool = False

    SPARSE_PULSES_PER_DEVICE = math.inf       # a class constant (not annotated: not a dataclass field)
    """CPU: the largest number of pulses per device of an array for which :meth:`apply_pulses_` computes only the
    devices with pulses (gathered, updated, scattered back). The closed-form responses of the models cost tens to
    hundreds of operations per device, so that pays as long as devices are left out: on 0.2 M devices the sparse
    update of ReRamSB, EcRam and Capacitor is 2.5-4x faster than the dense one with 30-60 % of the devices pulsed
    and as fast with 95 % (``benchmarks/bench_device_update.py``). A model with a cheap response sets a lower
    value (:class:`~devices.constant_step.ConstantStepDevice`: 0.2, its break-even there)."""

    # ------------------------------------------------------------------ validation
    def __post_init__(self) -> None:
        c = type(self).__name__
        check_field_types(self)
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            check_field(c, f.name, v, not math.isnan(v), "a number (not NaN)")
        check_field(c, "dw_min", self.dw_min, math.isfinite(self.dw_min) and self.dw_min >= DW_MIN_MIN,
                    f">= {DW_MIN_MIN:g} and finite (smaller steps lose the cycle-to-cycle noise's digits in float32: "
                    f"dw_min² must be far above float32's smallest normal number; realistic steps are 1e-4 to 0.1)")
        for name in ("dw_min_dtod", "up_down_dtod", "w_min_dtod", "w_max_dtod", "write_noise_std"):
            v = getattr(self, name)
            check_field(c, name, v, math.isfinite(v) and v >= 0, ">= 0 and finite")
        check_field(c, "dw_min_std", self.dw_min_std, 0 <= self.dw_min_std <= DW_MIN_STD_MAX,
                    f">= 0 and at most {DW_MIN_STD_MAX:g} (its square, the factor of the cycle-to-cycle variance, must "
                    f"be finite in float32; a relative noise of {DW_MIN_STD_MAX:g} is no device: the presets use 0.3 "
                    f"to 5)")
        check_field(c, "up_down", self.up_down, -1.0 < self.up_down < 1.0, "in (-1, 1)")
        check_field(c, "w_min", self.w_min, self.w_min <= 0, "<= 0 (the range [w_min, w_max] must contain 0)")
        check_field(c, "w_max", self.w_max, self.w_max >= 0, ">= 0 (the range [w_min, w_max] must contain 0)")
        for name in ("w_min", "w_max"):     # an infinite bound gives infinite sampled bounds and number of states
            v = getattr(self, name)
            check_field(c, name, v, math.isfinite(v), "finite")
        check_field(c, "w_max", self.w_max, self.w_max > self.w_min, f"> w_min = {self.w_min!r}")
        span = self.w_max - self.w_min
        check_field(c, "w_max", self.w_max, span <= FLOAT32_MAX,
                    f"at most w_min + {FLOAT32_MAX:.4g} = {self.w_min + FLOAT32_MAX:.4g} (the range w_max - w_min must "
                    f"be a float32, the states' type: a state crosses it)")
        check_field(c, "dw_min", self.dw_min, self.dw_min <= span,
                    f"<= w_max - w_min = {span:g} (one pulse's step at most the whole range [w_min, w_max])")
        bound = max(-self.w_min, self.w_max)
        check_field(c, "dw_min", self.dw_min, self.dw_min <= dw_min_max(bound),
                    f"at most {dw_min_max(bound):.4g} = ({FLOAT32_MAX:.4g} - largest |bound| {bound:g})/2^31 rounded "
                    f"down (a device's pulses of one update, up to 2^31 per direction, times the step, plus its state, "
                    f"must be finite in float32: the update's mean w + n_up·dw_up - n_down·dw_down; realistic steps "
                    f"are 1e-4 to 0.1)")
        self._validate()

    def _validate(self) -> None:
        """Model-specific validation hook (raise ``ValueError`` naming ``Class.field``)."""

    def field_values(self) -> dict[str, Any]:
        """Every field of the device and its value, in the class's order: a plain dict of numbers and bools (what
        makes two devices of one class the same device, compared with :func:`same_device_value`)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    # ------------------------------------------------------------------ sampling
    @property
    def _n_extra_gauss(self) -> int:
        """Number of standard Gaussians per device the model draws for its ``extra`` parameters."""
        return 0

    def sample(
        self,
        shape: tuple[int, ...],
        generator: rng.Generator = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> DeviceParams:
        """Draw the device-to-device parameters of ``shape`` devices (aihwkit's ``populate``).

        Args:
            shape: device array shape, e.g. ``(tiles, rows, cols)``; any number of dims (``()`` = one device).
            generator: seeded ``torch.Generator`` on ``device`` (``None``: torch's global generator), or a
                :class:`devices.rng.CounterRNG` (one stream per replica; ``shape[0]`` a multiple of its streams).
            device, dtype: where/how to create the tensors.
        Returns:
            :class:`DeviceParams` with tensors of ``shape``. Same generator state -> same numbers.
        Raises:
            ValueError: a sampled parameter is infinite or NaN in ``dtype`` (a spread so large that the products
                overflow, e.g. ``dw_min_dtod = 1e38`` in float32), naming the fields it comes from. Checked here,
                once per call, with one host read: sampling belongs to building a tile, not to a training step.
            ValueError: ``shape`` is not a sequence of integers >= 0, ``generator`` none of the above or ``dtype``
                not a floating-point ``torch.dtype`` (:func:`check_sample_args`).
            ValueError: ``dw_min`` below ``dtype``'s smallest normal number or ``w_min``/``w_max`` beyond its largest
                (float16: 6.104e-05 and 65504; bfloat16: 3.3895e+38), naming the field (:meth:`_check_dtype_range`).
        """
        shape = check_sample_args(f"{type(self).__name__}.sample", shape, generator, dtype)
        self._check_dtype_range(dtype)
        xi = rng.randn((4 + self._n_extra_gauss, *shape), generator, device=device, dtype=dtype)
        if self.dw_min_dtod_log_normal:
            gain = torch.exp(self.dw_min_dtod * xi[0])
        else:
            gain = 1.0 + self.dw_min_dtod * xi[0]
        r = self.up_down_dtod * xi[1]
        up_bias = min(self.up_down, 0.0)
        down_bias = -max(self.up_down, 0.0)
        dw_up = (self.dw_min * (up_bias + gain + r)).abs()
        dw_down = (self.dw_min * (down_bias + gain - r)).abs()
        b_max = self.w_max * (1.0 + self.w_max_dtod * xi[2])
        b_min = self.w_min * (1.0 + self.w_min_dtod * xi[3])
        swap = b_min > b_max
        b_max, b_min = torch.where(swap, b_min, b_max), torch.where(swap, b_max, b_min)
        params = DeviceParams(dw_up=dw_up, dw_down=dw_down, w_min=-b_min.abs(), w_max=b_max.abs())
        params.extra.update(self._sample_extra(params, xi[4:]))
        self._check_sampled(params)
        return params

    def _check_dtype_range(self, dtype: torch.dtype) -> None:
        """Raise ``ValueError("<Class>.<field> must be ... for states sampled in <dtype>, got <value>: ...")`` unless
        ``dw_min`` is at least the smallest normal number of ``dtype`` and ``|w_min|``, ``w_max`` at most its largest:
        the sampled steps and bounds are tensors of ``dtype``, where a smaller step underflows (float16: 1e-8 to 0,
        every pulse did nothing; a subnormal one loses digits) and a larger bound is ``inf``. The field checks of
        ``__post_init__`` already keep every field within float32 (and float64); this matters for float16 (smallest
        normal 2^-14 = 6.104e-05, largest 65504) and bfloat16 (largest 3.3895e+38, below float32's)."""
        info = torch.finfo(dtype)
        limits = [("dw_min", self.dw_min >= info.tiny, f"at least {info.tiny:.4g} (the smallest normal {dtype})",
                   "a smaller step is subnormal (it loses digits) or 0 (every pulse does nothing)")]
        for name in ("w_min", "w_max"):
            limits.append((name, abs(getattr(self, name)) <= info.max,
                           f"at most {info.max:.5g} in magnitude (the largest {dtype})", "a larger bound is inf"))
        for name, ok, valid, why in limits:
            if not ok:
                raise ValueError(
                    f"{type(self).__name__}.{name} must be {valid} for states sampled in {dtype}, got "
                    f"{getattr(self, name)!r}: {why} there. Sample in torch.float32 (the simulator's default), or "
                    f"use values {dtype} holds (realistic steps are 1e-4 to 0.1, bounds about 1)")

    def _sampled_fields(self) -> dict[str, tuple[str, ...]]:
        """The fields each sampled parameter (a :meth:`DeviceParams.state_dict` key) is computed from: the ones the
        error of a non-finite parameter names (:meth:`_check_sampled`). Models with ``extra`` parameters add theirs."""
        step = ("dw_min", "dw_min_dtod", "up_down_dtod",
                *(("dw_min_dtod_log_normal",) if self.dw_min_dtod_log_normal else ()))
        bounds = ("w_min", "w_min_dtod", "w_max", "w_max_dtod")          # swapped per device: both feed both
        return {"dw_up": step, "dw_down": step, "w_min": bounds, "w_max": bounds}

    def _check_sampled(self, params: DeviceParams) -> None:
        """Raise ``ValueError`` if a sampled parameter is infinite or NaN, naming the fields it comes from.

        Every field is finite and within float32's range, yet products of them can overflow when the spread is
        drawn: ``dw_min_dtod = 1e38`` gives ``1 + dw_min_dtod·ξ = inf`` for ``|ξ| > 3.4``, and later inf/NaN device
        states. Also the largest state one update can reach, ``max(w_max, −w_min) + PULSE_COUNT_MAX·max(dw_up,
        dw_down)`` (``ValueError`` naming the step's fields and the largest step for these bounds, :func:`dw_min_max`),
        and with write noise the largest apparent state a device can read, ``max(w_max, −w_min) +
        write_noise_std·dw_min·NORMAL_DRAW_MAX`` (``ValueError`` naming ``write_noise_std`` and its largest value for
        these bounds). One reduction per tensor and one host read (a GPU synchronisation) per call: :meth:`sample`
        runs when a tile is built, never in a training step."""
        # a slope (extra.slope_*: a step divided by a bound) is infinite by design where a bound is 0 or tiny (a
        # one-sided device; the update copes, tests/devices/test_device_pulses.py test_bounds_always_respected): its
        # step and bound are checked here, and a model whose slope has a spread of its own checks that spread's
        # factor where it draws it (LinearStepDevice's gamma)
        tensors = {k: t for k, t in params.state_dict().items() if not k.startswith("extra.slope_")}
        # the largest |mean| of one update, |w| + PULSE_COUNT_MAX·step (|w| <= its larger |bound|); steps of ~1e37
        # gave n_up·dw_up = n_down·dw_down = inf, inf − inf = NaN states. In float32 at least: 2^31 is no float16
        # (largest 65504), where any step would overflow (half-precision states, as the counts, stay within it)
        largest = torch.maximum(params.w_max, params.w_min.neg())
        steps = torch.maximum(params.dw_up, params.dw_down).to(_pulsed_dtype(params.dw_up.dtype))
        tensors[_PULSED] = steps.mul_(PULSE_COUNT_MAX).add_(largest)
        if self.write_noise_std > 0:
            # the largest apparent state |w + write_noise_std·dw_min·ξ| a device can read (|w| <= its larger |bound|,
            # |ξ| < NORMAL_DRAW_MAX); checked in the same host read
            tensors[_APPARENT] = largest.add(self.write_noise_std * self.dw_min * NORMAL_DRAW_MAX)
        bad = _non_finite(tensors)
        # a non-finite step or bound first (both products are then non-finite too), each with its own message
        self._refuse_non_finite([k for k in bad if k not in (_APPARENT, _PULSED)], params.dw_up.dtype)
        if _PULSED in bad:
            self._refuse_pulsed_steps(params)
        if _APPARENT in bad:
            self._refuse_write_noise(params.w_min, params.w_max)

    def _check_finite_tensors(self, tensors: dict[str, Tensor]) -> None:
        """Raise the ``ValueError`` of :meth:`_check_sampled` (:meth:`_refuse_non_finite`) unless every tensor of
        ``tensors`` (keyed by the sampled parameter it makes, a state-dict key) is finite: for a model's own sampled
        values (LinearStepDevice's gamma spread); one reduction per tensor, one host read."""
        self._refuse_non_finite(_non_finite(tensors), next(iter(tensors.values())).dtype)

    def _refuse_non_finite(self, bad: list[str], dtype: torch.dtype) -> None:
        """Raise the spread's ``ValueError`` for the non-finite sampled parameters ``bad`` (state-dict keys; nothing
        when empty): it names them and the fields (with their values) they come from (:meth:`_sampled_fields`)."""
        if not bad:
            return
        sources = self._sampled_fields()
        used = {name for k in bad for name in sources.get(k, ())}
        c = type(self).__name__
        named = ", ".join(f"{c}.{f.name} = {getattr(self, f.name)!r}" for f in fields(self) if f.name in used)
        raise ValueError(
            f"{c}: sampling the device-to-device spread gave non-finite {', '.join(bad)} in {dtype} (largest "
            f"{torch.finfo(dtype).max:.4g}) from {named}: the spread is too large for {dtype}. Realistic "
            f"device-to-device spreads (*_dtod) are 0 to 1 (0.3: a 30 % standard deviation; the presets use 0.01 to "
            f"0.4), with bounds and steps within a few orders of magnitude of 1")

    def _refuse_pulsed_steps(self, params: DeviceParams) -> None:
        """Raise the ``ValueError`` of sampled (finite) steps whose :data:`PULSE_COUNT_MAX` pulses from the larger
        (finite) bound overflow the dtype: it names the step's fields with their values (:meth:`_sampled_fields`),
        the largest sampled step and the largest step these bounds allow (:func:`dw_min_max`; host reads: the build
        fails anyway)."""
        c = type(self).__name__
        dtype = _pulsed_dtype(params.dw_up.dtype)
        top = torch.finfo(dtype).max
        bound = max(float(params.w_max.max()), -float(params.w_min.min()))
        step = max(float(params.dw_up.max()), float(params.dw_down.max()))
        named = ", ".join(f"{c}.{f.name} = {getattr(self, f.name)!r}" for f in fields(self)
                          if f.name in self._sampled_fields()["dw_up"])
        raise ValueError(
            f"{c}: the sampled steps reach {step:.4g} from {named}; a step must be at most {dw_min_max(bound, top):.4g}"
            f" with the sampled bounds (largest |bound| {bound:.4g}): a device's pulses of one update (up to 2^31 per "
            f"direction) times its step, plus its state, must be finite in {dtype} (largest {top:.4g}). Realistic "
            f"steps are 1e-4 to 0.1 with device-to-device spreads (*_dtod) of 0 to 1")

    def _refuse_write_noise(self, w_min: Tensor, w_max: Tensor) -> None:
        """Raise the ``ValueError`` of a ``write_noise_std`` whose apparent states can overflow the dtype of the
        (finite) sampled bounds ``w_min``, ``w_max``: the :meth:`_check_sampled` bound
        ``max(w_max, −w_min) + write_noise_std·dw_min·NORMAL_DRAW_MAX`` is not finite. The message states the
        largest ``write_noise_std`` these bounds allow (host reads: the build fails anyway)."""
        c = type(self).__name__
        dtype = w_max.dtype
        top = torch.finfo(dtype).max
        bound = max(float(w_max.max()), -float(w_min.min()))
        limit = float(f"{(top - bound) / (self.dw_min * NORMAL_DRAW_MAX) * (1 - 5e-4):.4g}")   # shown rounded down
        raise ValueError(
            f"{c}.write_noise_std must be at most {limit:.4g} with {c}.dw_min = {self.dw_min!r} and the sampled bounds "
            f"(largest |bound| {bound:.4g}), got {self.write_noise_std!r}: the apparent states w + "
            f"write_noise_std·dw_min·ξ (|ξ| < {NORMAL_DRAW_MAX:g} for every normal draw) must be finite in {dtype} "
            f"(largest {top:.4g}). Realistic write noise is 0 to ~100 steps dw_min (the presets: up to 75)")

    def largest_state(self) -> float:
        """An upper bound of ``|w|`` for every state an MVM reads from devices of this model (a Python float): the
        largest sampled ``|bound|``, ``max(w_max·(1 + w_max_dtod·NORMAL_DRAW_MAX), −w_min·(1 + w_min_dtod·
        NORMAL_DRAW_MAX))`` (:meth:`sample` draws ``w·(1 + dtod·ξ)`` with ``|ξ| <`` :data:`NORMAL_DRAW_MAX`; the states
        are clipped into their bounds when programmed and updated), plus the write noise of the apparent states,
        ``write_noise_std·dw_min·NORMAL_DRAW_MAX`` (not clipped). States programmed unclipped (``clip=False``, or an
        update of ``pulse_type="none"``, which knows no device) are the caller's numbers."""
        spread = max(self.w_max * (1.0 + self.w_max_dtod * NORMAL_DRAW_MAX),
                     -self.w_min * (1.0 + self.w_min_dtod * NORMAL_DRAW_MAX))
        return spread + self.write_noise_std * self.dw_min * NORMAL_DRAW_MAX

    def _sample_extra(self, params: DeviceParams, xi: Tensor) -> dict[str, Tensor]:
        """Model-specific per-device values from ``xi: [n_extra_gauss, *shape]`` standard Gaussians."""
        return {}

    # ------------------------------------------------------------------ update
    def pulse_moments(self, w: Tensor, n_up: Tensor, n_down: Tensor, params: DeviceParams) -> tuple[Tensor, Tensor]:
        """Mean and variance of the unclipped state after ``n_up`` up and ``n_down`` down pulses.

        Args:
            w, n_up, n_down: same shape as ``params``' tensors (counts non-negative, integer-valued, float dtype).
        Returns:
            ``(mean, var)``, same shape as ``w``.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement pulse_moments")

    def apply_pulses(
        self,
        w: Tensor,
        n_up: Tensor,
        n_down: Tensor,
        params: DeviceParams,
        generator: rng.Generator = None,
    ) -> Tensor:
        """Apply pulse counts to device states, vectorized over any shape, no loop over pulses.

        Args:
            w: device states ``[*shape]`` (weight units).
            n_up, n_down: non-negative integer-valued counts, at most :data:`PULSE_COUNT_MAX` (2^31), as int or
                float tensors of ``shape`` or a shape that broadcasts to it (e.g. ``()``: one count for every device).
            params: sampled parameters of the same shape (see :meth:`sample`), or one that broadcasts to it.
            generator: seeded ``torch.Generator`` on ``w.device`` for the cycle-to-cycle noise.
        Returns:
            New (hidden) states ``[*shape]``, always within ``[params.w_min, params.w_max]``: the input is first
            clipped into the bounds, then the walk clipped after every pulse is drawn from the mean and variance
            of :meth:`pulse_moments` (:func:`clipped_walk_`). Devices with zero pulses keep their (clipped) state
            exactly. The draws come from ``generator`` (one normal per device that is computed, see
            :meth:`apply_pulses_`; the walk's corrections take none), so the same generator state gives the same
            numbers.
        Raises:
            ValueError: a count is not a real (int, float or bool) tensor, or the shapes of the counts and
                ``params`` do not broadcast to ``w``'s (:meth:`apply_pulses_` checks the same; no host read).
                Where host reads are free (:func:`devices.host.host_reads_free`: CPU counts, outside
                :func:`devices.host.no_host_reads`), also a count that is negative, not an integer, not finite or
                above 2^31, naming the argument and the first such value (one host read; such counts gave NaN or
                meaningless states). On GPUs the values are the caller's contract, as in :meth:`apply_pulses_`,
                so that no update synchronises (the tiles' counts are int32 pulse trains, valid by construction).
        """
        _check_counts(f"{type(self).__name__}.apply_pulses", w, n_up, n_down, params, values=True)
        w = self.clip(w, params)                              # a fresh tensor: updated in place below
        if _same_layout(w, n_up, n_down, params):
            return self.apply_pulses_(w, n_up, n_down, params, generator)
        count = _pulsed_dtype(w.dtype)                        # float32 for half precision: counts up to 2^31
        return self._pulsed_states(w, n_up.to(dtype=count), n_down.to(dtype=count), params, generator)

    def apply_pulses_(
        self,
        w: Tensor,
        n_up: Tensor,
        n_down: Tensor,
        params: DeviceParams,
        generator: rng.Generator = None,
    ) -> Tensor:
        """In-place :meth:`apply_pulses` for states that already lie within their bounds; returns ``w``.

        ``w`` must satisfy ``params.w_min <= w <= params.w_max`` (as every state returned by :meth:`clip` or
        :meth:`apply_pulses` does), so the initial clip of :meth:`apply_pulses` is a no-op and is skipped;
        ``n_up``, ``n_down`` and ``params`` must have ``w``'s shape (or one that broadcasts to it). Same
        distribution as :meth:`apply_pulses`. The update's hot path: the counts' types and shapes are checked as in
        :meth:`apply_pulses` (``ValueError``; no host read), their values are the caller's contract (non-negative
        integers up to 2^31: a negative or NaN count gives NaN states).

        Cost: on the CPU, when some devices have no pulses and the pulses are few enough (at most
        :attr:`SPARSE_PULSES_PER_DEVICE` per device of the array), only the devices with pulses are computed:
        found, gathered, updated with one normal each and scattered back (host reads, free on the CPU; see
        :meth:`apply_pulses_at_`). Otherwise, and always on GPUs (no host synchronisation), every device is
        computed, with one normal per device (:func:`clipped_walk_` draws none).
        """
        _check_counts(f"{type(self).__name__}.apply_pulses_", w, n_up, n_down, params, values=False)
        n_up = n_up.to(dtype=_pulsed_dtype(w.dtype))           # float32 for half precision: float16 overflows at
        n_down = n_down.to(dtype=_pulsed_dtype(w.dtype))       # 65504 pulses, bfloat16 rounds counts above 256
        index = self._pulsed_subset(w, n_up, n_down, params, generator, None)
        if index is None:
            return self._pulsed_states(w, n_up, n_down, params, generator, out=w)
        if index.numel() == 0:
            return w
        return self.apply_pulses_at_(w, index, n_up.reshape(-1).index_select(0, index),
                                     n_down.reshape(-1).index_select(0, index), params, generator)

    def _pulsed_subset(self, w: Tensor, n_up: Tensor, n_down: Tensor, params: DeviceParams,
                       generator: rng.Generator, pulses: float | None) -> Tensor | None:
        """Whether :meth:`apply_pulses_` computes only the devices with pulses: then their flat indices into ``w``
        (``[n]`` int64, increasing; empty when nothing pulses), else ``None`` (every device is computed).

        Only on the CPU (host reads), for arrays of at least ``_SPARSE_MIN_DEVICES`` with counts and parameters
        of ``w``'s layout, with a torch generator (a :class:`rng.CounterRNG`'s draws would depend on all
        replicas' data), when ``pulses = sum(n_up + n_down)`` (``None``: summed here) is at most
        :attr:`SPARSE_PULSES_PER_DEVICE` per device and some device has none.
        """
        if not (host_reads_free(w) and w.numel() >= _SPARSE_MIN_DEVICES and _same_layout(w, n_up, n_down, params)
                and not isinstance(generator, rng.CounterRNG)):
            return None
        if pulses is None:
            pulses = float(n_up.sum()) + float(n_down.sum())        # >= the devices with pulses; no temporaries
        if pulses == 0:
            return torch.zeros(0, dtype=torch.int64, device=w.device)
        if pulses > self.SPARSE_PULSES_PER_DEVICE * w.numel():
            return None
        index = flat_nonzero(torch.add(n_up, n_down), positive=True)
        return index if index.numel() < w.numel() else None       # every device pulses: the dense form is cheaper

    def apply_pulses_at_(
        self,
        w: Tensor,
        index: Tensor,
        n_up: Tensor,
        n_down: Tensor,
        params: DeviceParams,
        generator: rng.Generator = None,
    ) -> Tensor:
        """:meth:`apply_pulses_` for the devices ``index`` only (all others get no pulses); returns ``w``.

        Args:
            w: contiguous device states ``[*shape]`` within their bounds, updated in place.
            index: ``[n]`` int64 distinct flat indices into ``w`` (``w.view(-1)``) of the devices with pulses.
            n_up, n_down: ``[n]`` counts of those devices (non-negative, integer-valued).
            params: sampled parameters of ``w``'s shape and dtype, or already those of the listed devices
                (every tensor ``[n]``, e.g. gathered by the caller from a faster layout).
            generator: source of the cycle-to-cycle noise (one normal per listed device).
        """
        flat = w.view(-1)
        if params.shape == index.shape:
            sub = params
        else:
            sub = DeviceParams.from_state_dict({k: v.reshape(-1).index_select(0, index)
                                                for k, v in params.state_dict().items()})
        count = _pulsed_dtype(w.dtype)                        # float32 for half precision (see apply_pulses_)
        new = self._pulsed_states(flat.index_select(0, index), n_up.to(dtype=count), n_down.to(dtype=count),
                                  sub, generator)
        flat.index_copy_(0, index, new)
        return w

    def _pulsed_states(self, w: Tensor, n_up: Tensor, n_down: Tensor, params: DeviceParams,
                       generator: rng.Generator, out: Tensor | None = None) -> Tensor:
        """New states for in-bound states ``w``: ``e = mean + sqrt(var)·ξ``, one ``ξ`` per device, clipped as after
        every pulse (:func:`clipped_walk_`; ``clip(e)`` bit for bit away from the bounds).

        ``mean`` and ``var`` from :meth:`pulse_moments`, a NaN variance taken as infinite (the state then lands on a
        bound) and a negative one as 0. Written into ``out`` when given (may be ``w`` itself),
        else a fresh tensor. Models may override this with a fused form of the same distribution.

        Half-precision states (float16, bfloat16) are computed in float32 and the clipped result rounded back once:
        in float16 the variance ``dw_min_std²·n·dw²`` of realistic steps underflows (4 pulses of 1e-4: 3.6e-9, below
        its smallest subnormal 6e-8, lost the noise entirely), and each operation in half precision rounded again.
        The bounds are values of the dtype, so the rounded result stays within them.
        """
        if w.dtype in _HALF:
            wide = self._pulsed_states(w.float(), n_up.float(), n_down.float(), params.to(dtype=torch.float32),
                                       generator)
            return wide.to(w.dtype) if out is None else out.copy_(wide)
        n_up, n_down = n_up.to(dtype=w.dtype), n_down.to(dtype=w.dtype)      # counts may be integer tensors
        mean, var = self.pulse_moments(w, n_up, n_down, params)
        var = torch.nan_to_num(var, nan=float("inf")).clamp_min_(0.0)
        noise = torch.nan_to_num_(var.sqrt() * rng.randn(w.shape, generator, device=w.device, dtype=w.dtype),
                                  nan=0.0)                      # an infinite std times a zero draw
        new = clipped_walk_(w, noise.add_(mean), var, n_up, n_down, params.w_min, params.w_max, params.dw_up,
                            params.dw_down)
        return new if out is None else out.copy_(new)

    def clip(self, w: Tensor, params: DeviceParams) -> Tensor:
        """Clip states ``w: [*shape]`` into the per-device bounds ``[params.w_min, params.w_max]``."""
        return torch.minimum(torch.maximum(w, params.w_min), params.w_max)

    def write_noise(self, w: Tensor, params: DeviceParams, generator: rng.Generator = None) -> Tensor:
        """Apparent (read) states for hidden states ``w: [*shape]``: ``w + write_noise_std·dw_min·ξ``.

        As in aihwkit, the apparent state is *not* clipped and is redrawn each time a device is updated; the
        caller keeps the hidden state from :meth:`apply_pulses` and redraws the apparent one for the devices
        it touched. Returns ``w`` itself when ``write_noise_std == 0``.
        """
        if self.write_noise_std == 0:
            return w
        xi = rng.randn(w.shape, generator, device=w.device, dtype=w.dtype)
        return w + (self.write_noise_std * self.dw_min) * xi

    @property
    def granularity(self) -> float:
        """Nominal weight change of one pulse (aihwkit's ``calcWeightGranularity``), used for bit-length management."""
        return self.dw_min

    @property
    def num_states(self) -> float:
        """Nominal number of states ``(w_max − w_min) / granularity`` (aihwkit's ``calcNumStates``)."""
        return (self.w_max - self.w_min) / self.granularity
