"""Periphery of an analog crossbar tile: DAC, ADC, noise, noise and bound management.

One analog matrix-vector product (MVM) on a tile, as aihwkit's C++ ``ForwardBackwardPassIOManaged``
computes it (``src/rpucuda/rpu_forward_backward_pass.cpp``), for every sample and every tile at once:

1. noise management: ``alpha = max_j |x_j|`` per sample and tile input block (``"abs_max"``; capped at
   ``nm_thres`` when that is > 0), ``alpha = nm_thres`` (or 1) for ``"constant"``, 1 for ``"none"``;
2. bound management round ``k`` (reduction ``r = 2**k``): the input ``x / (alpha * r)`` goes through the
   DAC: rounded to the grid ``inp_res * 2 * inp_bound`` (deterministic or stochastic rounding), **then**
   clipped to ``[-inp_bound, inp_bound]``, then Gaussian input noise ``inp_noise`` is added;
3. the analog MVM ``W x`` (weights in normalized units), plus output-referred weight noise
   (``w_noise * ||x||_2``, type ``"additive_constant"``);
4. Gaussian output noise ``out_noise`` (normalized units, i.e. relative to the inputs after noise management),
   then the ADC: rounded to the grid ``out_res * 2 * out_bound``, then clipped to ``[-out_bound, out_bound]``;
5. bound management ``"iterative"``: if a quantized output lies above ``out_bound`` (or below
   ``-out_bound`` when ``bm_test_negative_bound``), the round is repeated with ``r`` doubled (fresh
   noise); the iteration stops at the first round that passes, or when ``r > max_bm_factor`` or
   ``r > max_bm_res / (inp_res * 2 * inp_bound)``;
6. the digital output is rescaled: ``y * alpha * r * out_scale``. If noise management is on and
   ``alpha == 0`` (all-zero input, and no input noise) the output is exactly 0. A vector holding a NaN gives NaN
   outputs under every setting (rounding and ``torch.clamp`` keep NaN; never the zeros of an all-zero vector: a NaN
   from upstream stays visible), as in aihwkit. A ±Inf gives NaN outputs under ``"abs_max"`` noise management
   without ``nm_thres`` (``x / inf``); where the noise management does not divide by it (``"none"``,
   ``"constant"``, ``"abs_max"`` capped by ``nm_thres``) it is an input beyond the DAC's range, clipped to
   ``±inp_bound`` as any large input, so the outputs are finite (as aihwkit 1.1's); the perfect periphery passes it
   (±Inf or NaN outputs).

Differences from aihwkit, by design: bound management runs without host synchronisation — all rounds a
configuration can ever need (a number fixed by the config, see :func:`bound_management_rounds`) are computed
in one batched matmul and each sample/tile keeps its first passing round (``torch.where``/``gather``), which
is the same distribution as aihwkit's loop but costs that many MVMs. On the CPU, where reading values is free,
the rounds run one at a time as in aihwkit's loop: round 0 for every sample, each later round only for the
samples that still have a saturated output (:func:`_rounds_on_demand`); the sync-free MVMs of a counter-based
generator (the replicas) run round 0 alone there and all rounds only when a vector saturates, with exactly the
all-rounds numbers (:func:`_round_zero_exact`). Like aihwkit, bound management is
only applied in the forward direction (``transposed=False``); for the backward pass it is ignored.
Not modelled: IR drop, output non-linearity, voltage offsets, asymmetries, PCM read noise, the
AbsMaxNPSum / AverageAbsMax noise managements, multi-pass MVM types.
"""

from __future__ import annotations

import functools
import math
import struct
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from devices import rng
from devices.base import FLOAT32_TINY, NORMAL_DRAW_MAX, check_finite, fits_float32, is_number
from devices.host import flat_nonzero, host_reads_free
from devices.suggest import did_you_mean

from crossbar._reduce import live_samples, nonneg_amax

__all__ = [
    "IOParameters",
    "MVMResult",
    "NOISE_MANAGEMENT_TYPES",
    "BOUND_MANAGEMENT_TYPES",
    "W_NOISE_TYPES",
    "resolution_step",
    "bound_management_rounds",
    "mvm_extremes",
    "quantize",
    "quantize_dac",
    "quantize_adc",
    "add_gaussian_noise",
    "full_scale_adc",
    "full_scale_outputs",
    "FullScaleADC",
    "full_scale_scales",
    "noise_management_scale",
    "analog_mvm",
    "PreparedInputs",
    "prepare_inputs",
]

NOISE_MANAGEMENT_TYPES = ("abs_max", "none", "constant")
BOUND_MANAGEMENT_TYPES = ("iterative", "none")
W_NOISE_TYPES = ("none", "additive_constant")


@dataclass(frozen=True)
class IOParameters:
    """Periphery of one MVM direction (forward or backward); names and defaults follow aihwkit.

    All values are in normalized units: inputs after noise management lie in ``[-inp_bound, inp_bound]``
    (the DAC range), weights are the device states (``w_min..w_max``), outputs are ``Σ_j w_ij x_j`` in the
    same units; the ADC range is ``[-out_bound, out_bound]``.

    Attributes:
        is_perfect: ideal MVM ``x @ W.T`` (times ``out_scale``); every other field is ignored.
        inp_bound: DAC range (> 0, ``math.inf`` for unbounded). Must be 1 with noise management (as aihwkit).
        inp_res: DAC resolution as a fraction of the range (e.g. ``1/254``), or the number of steps when
            > 1 (254 means ``1/254``); <= 0 means no quantization. Grid step ``inp_res * 2 * inp_bound``. A positive
            fraction is at least float32's smallest normal number :data:`~devices.base.FLOAT32_TINY` (an input
            divided by the step must be a float32).
        inp_sto_round: stochastic instead of nearest rounding in the DAC.
        inp_noise: std of Gaussian noise added to the DAC output (normalized units, >= 0).
        out_bound: ADC saturation (> 0, ``math.inf`` for none).
        out_res: ADC resolution, same convention (and lower limit) as ``inp_res``; grid step
            ``out_res * 2 * out_bound``.
        out_sto_round: stochastic rounding in the ADC.
        out_noise: std of Gaussian noise added to each analog output before the ADC (normalized units).
        out_scale: fixed digital factor applied to the outputs (> 0).
        w_noise: output-referred weight noise scale; with ``w_noise_type="additive_constant"`` the output
            gets Gaussian noise of std ``w_noise * ||x_dac||_2`` (``x_dac``: the DAC output of that tile).
        w_noise_type: ``"none"`` or ``"additive_constant"``.
        noise_management: ``"abs_max"``, ``"none"`` or ``"constant"`` (see module docstring).
        nm_thres: constant for ``"constant"``; upper cap of ``alpha`` for ``"abs_max"`` when > 0 (0, or at least
            float32's smallest normal number :data:`~devices.base.FLOAT32_TINY`: ``1/alpha`` must be a float32).
        bound_management: ``"iterative"`` or ``"none"`` (forward direction only).
        max_bm_factor: largest input reduction of iterative bound management (>= 1).
        max_bm_res: bound management also stops once ``r > max_bm_res / (inp_res * 2 * inp_bound)``.
        bm_test_negative_bound: also repeat a round when an output saturates at ``-out_bound``. With ``False``
            a round is repeated when any output saturates at ``+out_bound``. (aihwkit 1.1's CPU tile differs
            here: a later output of the vector that saturates at ``-out_bound`` resets its "failed" flag, so its
            answer depends on the order of the outputs; the two agree when no vector saturates at both ends, and
            ``crossbar.to_aihwkit_rpu_config`` refuses ``False`` in the forward direction for that reason.)
    """

    is_perfect: bool = False
    inp_bound: float = 1.0
    inp_res: float = 1.0 / (2**7 - 2)
    inp_sto_round: bool = False
    inp_noise: float = 0.0
    out_bound: float = 12.0
    out_res: float = 1.0 / (2**9 - 2)
    out_sto_round: bool = False
    out_noise: float = 0.06
    out_scale: float = 1.0
    w_noise: float = 0.0
    w_noise_type: str = "none"
    noise_management: str = "abs_max"
    nm_thres: float = 0.0
    bound_management: str = "iterative"
    max_bm_factor: int = 1000
    max_bm_res: float = 0.25
    bm_test_negative_bound: bool = True

    def __post_init__(self) -> None:
        for name in ("is_perfect", "inp_sto_round", "out_sto_round", "bm_test_negative_bound"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"IOParameters.{name} must be a bool, got {getattr(self, name)!r}")
        for name in ("inp_bound", "out_bound"):
            value = getattr(self, name)
            # not check_finite: math.inf (unbounded) is valid, and the limit is half float32's (2 * bound)
            if not is_number(value) or math.isnan(value) or not value > 0 or not fits_float32(2 * value):
                raise ValueError(
                    f"IOParameters.{name} must be > 0 (math.inf for unbounded) and, when finite, at most 1.7e+38 (the "
                    f"converter's range 2 * {name} must be a float32, the MVMs' type), got {value!r}")
        for name, bound in (("inp_res", "inp_bound"), ("out_res", "out_bound")):
            res = getattr(self, name)
            check_finite("IOParameters", name, res)
            if 0.0 < res < FLOAT32_TINY:
                # the quotient of a value within the range by the grid step res·2·bound is at most 1/(2·res): beyond
                # float32 below res = 1.5e-39, where every output near the bound (every input, for the DAC) rounded to
                # inf and read as saturated (1e-44: outputs of 0.6 read 3686 after bound management)
                raise ValueError(
                    f"IOParameters.{name} must be <= 0 (no quantization) or at least {FLOAT32_TINY!r} (float32's "
                    f"smallest normal number: a value within the range divided by the grid step {name}·2·{bound}, "
                    f"up to 1/(2·{name}), must be a float32, the MVMs' type; {name} = N > 1 is a grid of N steps), "
                    f"got {res!r}")
        check_finite("IOParameters", "inp_noise", self.inp_noise, 0.0)
        check_finite("IOParameters", "out_noise", self.out_noise, 0.0)
        check_finite("IOParameters", "w_noise", self.w_noise, 0.0)
        check_finite("IOParameters", "nm_thres", self.nm_thres, 0.0)
        if 0.0 < self.nm_thres < FLOAT32_TINY:
            # below float32's smallest normal number, 1/alpha overflows in the MVMs' float32: "constant" then gave
            # NaN outputs (0·inf) for every input vector holding a zero, "abs_max" silently zero outputs
            raise ValueError(
                f"IOParameters.nm_thres must be 0 (off) or at least {FLOAT32_TINY!r} (float32's smallest normal "
                f"number: 1/nm_thres must be a float32, the MVMs' type), got {self.nm_thres!r}")
        check_finite("IOParameters", "out_scale", self.out_scale, 0.0, strict=True)
        check_finite("IOParameters", "max_bm_res", self.max_bm_res, 0.0, strict=True)
        if not isinstance(self.max_bm_factor, int) or isinstance(self.max_bm_factor, bool) \
                or self.max_bm_factor < 1:
            raise ValueError(
                f"IOParameters.max_bm_factor must be an integer >= 1, got {self.max_bm_factor!r}")
        if self.noise_management not in NOISE_MANAGEMENT_TYPES:
            raise ValueError(f"IOParameters.noise_management must be one of {NOISE_MANAGEMENT_TYPES}, "
                             f"got {self.noise_management!r}"
                             f"{did_you_mean(self.noise_management, NOISE_MANAGEMENT_TYPES)}")
        if self.bound_management not in BOUND_MANAGEMENT_TYPES:
            raise ValueError(f"IOParameters.bound_management must be one of {BOUND_MANAGEMENT_TYPES}, "
                             f"got {self.bound_management!r}"
                             f"{did_you_mean(self.bound_management, BOUND_MANAGEMENT_TYPES)}")
        if self.w_noise_type not in W_NOISE_TYPES:
            raise ValueError(f"IOParameters.w_noise_type must be one of {W_NOISE_TYPES}, "
                             f"got {self.w_noise_type!r}"
                             f"{did_you_mean(self.w_noise_type, W_NOISE_TYPES)}")
        if self.noise_management != "none" and self.inp_bound != 1.0 and not self.is_perfect:
            raise ValueError(
                "IOParameters.inp_bound must be 1.0 when noise_management is "
                f"{self.noise_management!r} (as in aihwkit), got {self.inp_bound}; "
                "set noise_management='none' to use another DAC range")

    @functools.cached_property   # frozen: computed once (float32 emulation, several struct calls)
    def inp_step(self) -> float:
        """DAC grid step in normalized input units (0: no quantization)."""
        return resolution_step(self.inp_res, self.inp_bound)

    @functools.cached_property   # frozen: computed once (float32 emulation, several struct calls)
    def out_step(self) -> float:
        """ADC grid step in normalized output units (0: no quantization)."""
        return resolution_step(self.out_res, self.out_bound)

    @property
    def random_dac(self) -> bool:
        """Whether the DAC draws random numbers on every conversion (stochastic rounding or input noise): then
        every tile has its own DAC draws, and the same inputs give different DAC outputs call after call."""
        return self.inp_sto_round or self.inp_noise > 0


class MVMResult(NamedTuple):
    """Result of :func:`analog_mvm`.

    Attributes:
        out: per-tile digital outputs ``[R, C, B, n_out]`` (already rescaled to the input's units).
        passes: analog passes each sample needed on each tile ``[R, C, B]`` (int64; > 1 only with
            bound management), for hardware counters; read only (with one pass everywhere a shared expanded view).
        total: ``passes.sum()`` as a plain number when it is known without reading ``passes`` (every sample
            took one pass: ``R·C·B``), else ``None``.
    """

    out: Tensor
    passes: Tensor
    total: int | None = None

    def total_passes(self) -> Tensor | int:
        """``passes.sum()``: a plain number when known (:attr:`total`), else a 0-d tensor (no host read)."""
        return self.total if self.total is not None else self.passes.sum()


def resolution_step(res: float, bound: float) -> float:
    """Quantization grid step of a converter with resolution ``res`` over ``[-bound, bound]``.

    aihwkit's convention: ``res <= 0`` means no quantization, ``res > 1`` is a number of steps
    (``1/res``), else a fraction of the full range ``2 * bound``. An unbounded range has no grid.

    The step is computed as aihwkit's C++ tile does, in float32 (``float(res) * float(2 * bound)``), so that
    the grids' levels are the same numbers: this decides whether the top level of the ADC lies above its bound.
    For the default 9-bit ADC over ``±12`` the step is ``0.04705883`` (not ``24/510 = 0.047058823…``) and the top
    code 255 reads ``12.000001 > out_bound``: it counts as saturated, and iterative bound management repeats the
    pass, as in aihwkit.
    """
    if res <= 0 or not math.isfinite(bound):
        return 0.0
    frac = _float32(1.0 / _float32(res)) if res > 1.0 else _float32(res)
    return _float32(frac * _float32(2.0 * bound))


def _float32(v: float) -> float:
    """``v`` rounded to the nearest float32 (a Python float); ``v`` itself beyond float32's range."""
    try:
        return float(struct.unpack("f", struct.pack("f", v))[0])
    except OverflowError:
        return v


def bound_management_rounds(p: IOParameters, transposed: bool = False) -> int:
    """Maximal number of analog passes iterative bound management can take (fixed by the config).

    Round ``k`` uses the input reduction ``r = 2**k``; aihwkit stops after the round in which
    ``int(r) > max_bm_factor`` or ``r > max_bm_res / inp_step``. Returns 1 without bound management,
    with an unbounded ADC, for perfect periphery, and for the backward direction.
    """
    if p.is_perfect or transposed or p.bound_management == "none" or not math.isfinite(p.out_bound):
        return 1
    step = p.inp_step
    # the limit in float32 like the step (aihwkit's float quotient: 0.1 / float32(2/40) is 2.0, not 1.99999997)
    limit = _float32(_float32(p.max_bm_res) / step) if step > 0 else math.inf
    reduction = 1.0
    rounds = 1
    while not (int(reduction) > p.max_bm_factor or reduction > limit):
        reduction *= 2.0
        rounds += 1
    return rounds


_BM_FACTOR_BITS = 1000
"""A ``max_bm_factor`` of more bits is taken as unbounded by :func:`mvm_extremes` (its rescaling ``2**k`` is beyond any
float then; :func:`bound_management_rounds`'s float reduction would overflow on the way)."""


def mvm_extremes(p: IOParameters, lines: int, weight: float, transposed: bool = False) -> dict[str, float]:
    """The largest magnitude each intermediate of one MVM through ``p`` (:func:`analog_mvm`) can reach on a tile of
    ``lines`` input lines whose weights are at most ``weight`` in magnitude, for inputs of magnitude at most 1 and
    every normal draw within ``±NORMAL_DRAW_MAX`` (:data:`~devices.base.NORMAL_DRAW_MAX`), as Python floats, in the
    order the MVM computes them (``D = NORMAL_DRAW_MAX``):

    * ``"DAC outputs"``: ``X = inp_bound + D·inp_noise`` (the DAC clips before its noise; with an unbounded DAC,
      possible only without noise management, the inputs themselves: at most 1);
    * ``"products"``: ``lines·weight·X``, a bound of every partial sum of the tile's matmul;
    * with additive weight noise: ``"squared input norm"`` ``lines·X²`` (``torch.linalg.vector_norm`` sums the
      squares without scaling) and ``"weight noise"`` ``D·w_noise·sqrt(lines)·X``;
    * ``"analog outputs"``: the products plus the weight noise plus ``D·out_noise``;
    * ``"rescaling factor"``: ``alpha·2**(rounds - 1)·out_scale`` (``alpha``: ``nm_thres`` for ``"constant"`` noise
      management, else at most 1 for inputs of at most 1; ``rounds``: :func:`bound_management_rounds`);
    * ``"digital outputs"``: the ADC's largest output (the analog outputs plus one grid step, at most ``out_bound``)
      times the rescaling factor.

    A perfect periphery: ``"products"`` ``lines·weight`` and ``"digital outputs"`` those times ``out_scale``. Not
    counted: the ADC's quotient ``y / out_step``, which may overflow only for outputs beyond ``out_bound`` (read as
    saturated, as they are; ``out_res``'s lower limit keeps the quotient of every value within the range finite),
    and the digital sum over a layer's tiles (the layer's size, not the periphery's: checked when a tile array is
    made, :func:`crossbar.config.check_tile_sums`, ``C`` column tiles times ``"digital outputs"``).

    What "inputs of magnitude at most 1" means per periphery, for an input vector of largest magnitude ``A``:

    * ``"abs_max"`` noise management: the DAC sees ``x / alpha`` with ``alpha = A`` (capped at ``nm_thres`` when
      that is > 0), so the DAC outputs, products and analog outputs stay within the values above for inputs of
      any magnitude; but the rescaling factor, and with it the digital outputs, is ``alpha`` times the value
      above: ``A`` times for ``A > 1`` (``min(A, nm_thres)`` times with ``nm_thres``). E.g. an unbounded ADC with
      ``out_noise`` 3.7e37 on a tile of 256 lines and weights ≤ 1: analog outputs up to ``256 + 9·3.7e37 = 3.33e38``
      (accepted), digital outputs beyond float32's largest (3.40e38) for ``A > 1.02`` in that worst case (at 9σ of
      the output noise; a typical 3σ draw overflows for ``A`` around 3);
    * ``"constant"`` and ``"none"`` with a bounded DAC: the DAC clips ``x / alpha`` to ``±inp_bound``: the values
      above hold for inputs of any magnitude;
    * an unbounded DAC (``inp_bound = inf``, only without noise management) and the perfect periphery: ``x`` passes
      unscaled and unclipped, so the products and everything after them are up to ``A`` times the values above.

    NaN and ±Inf inputs are outside these bounds (NaN outputs for a NaN; for a ±Inf NaN or clipped outputs, see the
    module docstring). The check is of the worst case in float32 only: the layer's caller keeps its inputs and
    errors in range (a diverging run's NaN or Inf loss stops training, ``imc_grapes.train``). Host arithmetic only
    (for the checks of :class:`~crossbar.CrossbarConfig`), never in an MVM."""
    if p.is_perfect:
        products = lines * weight
        return {"products": products, "digital outputs": products * p.out_scale}
    dac = (p.inp_bound if math.isfinite(p.inp_bound) else 1.0) + NORMAL_DRAW_MAX * p.inp_noise
    out = {"DAC outputs": dac, "products": lines * weight * dac}
    analog = out["products"] + NORMAL_DRAW_MAX * p.out_noise
    if p.w_noise_type == "additive_constant" and p.w_noise > 0:
        out["squared input norm"] = lines * dac * dac
        out["weight noise"] = NORMAL_DRAW_MAX * p.w_noise * math.sqrt(lines) * dac
        analog += out["weight noise"]
    out["analog outputs"] = analog
    alpha = p.nm_thres if p.noise_management == "constant" and p.nm_thres > 0 else 1.0
    if p.max_bm_factor.bit_length() > _BM_FACTOR_BITS:
        reduction = math.inf
    else:
        reduction = 2.0 ** (bound_management_rounds(p, transposed) - 1)
    out["rescaling factor"] = alpha * reduction * p.out_scale
    # the ADC rounds by at most one step (stochastic rounding) and saturates at out_bound (out_step 0 without one)
    out["digital outputs"] = min(p.out_bound, analog + p.out_step) * out["rescaling factor"]
    return out


def quantize(v: Tensor, step: float, stochastic: bool = False,
             generator: rng.Generator = None) -> Tensor:
    """Round ``v`` to the grid ``step * k`` (``k`` integer; ties to even, like C's ``rintf``).

    Stochastic rounding adds ``U(-0.5, 0.5)`` steps before rounding (needs ``generator``).
    ``step <= 0`` returns ``v`` unchanged. Any shape.
    """
    if step <= 0:
        return v
    scaled = v / _divisor(step, v)
    if stochastic:
        if generator is None:
            raise ValueError("quantize: stochastic rounding needs a generator (torch.Generator or "
                             "devices.rng.CounterRNG), got None")
        scaled = scaled + (rng.rand(v.shape, generator, device=v.device, dtype=v.dtype) - 0.5)
    return torch.round(scaled) * step


def _divisor(step: float, v: Tensor) -> float | Tensor:
    """``step`` as the divisor of ``v``: the number on the CPU; on another device a cached 0-d tensor of ``v``'s
    dtype there. CUDA divides by a Python number as a product with its float reciprocal, which rounds differently
    from the CPU's division at exact ties of the grid — the DAC code of an input at half of full scale (the largest
    input in the second bound-management round) is one — so the two would quantize such inputs one step apart; by a
    tensor it divides exactly as the CPU does."""
    return step if v.device.type == "cpu" else _step_tensor(step, v.dtype, v.device)


# The device-tensor caches below are unbounded: a captured CUDA graph (imc_grapes/cuda_graphs.py) reads their tensors
# by address, so an entry must not be evicted (and its memory reused) while a graph lives. Their keys are a run's few
# quantization steps and bound-management round counts.
@functools.lru_cache(maxsize=None)
def _step_tensor(step: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    return torch.tensor(step, dtype=dtype, device=device)


def _quantize_(v: Tensor, step: float, stochastic: bool, generator: rng.Generator) -> Tensor:
    """:func:`quantize` in place on ``v`` (a tensor the caller owns); returns ``v``."""
    if step <= 0:
        return v
    # the step as a cached 0-d tensor of v's dtype on every device: the same float32 (float64) operand the number
    # would be rounded to, without wrapping and casting it on each call (two fewer conversions per quantization)
    t = _step_tensor(step, v.dtype, v.device)
    v.div_(t)
    if stochastic:
        if generator is None:
            raise ValueError("quantize: stochastic rounding needs a generator (torch.Generator or "
                             "devices.rng.CounterRNG), got None")
        v.add_(rng.rand(v.shape, generator, device=v.device, dtype=v.dtype).sub_(0.5))
    return v.round_().mul_(t)


def quantize_dac(x: Tensor, p: IOParameters, generator: rng.Generator = None) -> Tensor:
    """DAC: quantize normalized inputs to the ``inp_res`` grid, then clip to ``±inp_bound``. Any shape."""
    q = quantize(x, p.inp_step, p.inp_sto_round, generator)
    return q.clamp(-p.inp_bound, p.inp_bound) if math.isfinite(p.inp_bound) else q


def quantize_adc(y: Tensor, p: IOParameters, generator: rng.Generator = None) -> Tensor:
    """ADC: quantize normalized outputs to the ``out_res`` grid, then saturate at ``±out_bound``."""
    q = quantize(y, p.out_step, p.out_sto_round, generator)
    return q.clamp(-p.out_bound, p.out_bound) if math.isfinite(p.out_bound) else q


def add_gaussian_noise(v: Tensor, std: float | Tensor, generator: rng.Generator) -> Tensor:
    """Return ``v + std * N(0, 1)`` (``std`` a float or a tensor broadcastable to ``v``)."""
    return v + std * rng.randn(v.shape, generator, device=v.device, dtype=v.dtype)


def noise_management_scale(x: Tensor, p: IOParameters) -> Tensor:
    """Noise-management factor ``alpha`` per input vector: ``x: [..., n_in] -> [..., 1]``.

    ``"abs_max"``: ``max_j |x_j|`` (capped at ``nm_thres`` if > 0), and 0 for a vector whose largest element is
    below the dtype's smallest normal number (e.g. the float32 error of a sample the softmax has saturated on,
    ~1e-40): ``1/alpha`` would overflow to ``inf`` and the normalized input become ``inf``/``NaN``; such a vector
    is zero for any converter, and a zero ``alpha`` gives an exactly zero output. ``"constant"``: ``nm_thres``
    (1 if ``nm_thres`` is 0); ``"none"``: 1.
    """
    return _scale_with_positivity(x, p)[0]


def _scale_with_positivity(x: Tensor, p: IOParameters) -> tuple[Tensor, bool | None]:
    """:func:`noise_management_scale` and, on the CPU (host reads are free) with noise management on, whether
    every ``alpha`` is > 0 (the common case, where the subnormal masking is skipped); ``None`` elsewhere."""
    if p.noise_management == "abs_max":
        alpha = nonneg_amax(x.abs(), keepdim=True)
        if p.nm_thres > 0:
            alpha = alpha.clamp(max=p.nm_thres)
        tiny = torch.finfo(alpha.dtype).tiny
        if host_reads_free(alpha):
            if alpha.numel() == 0 or float(alpha.min()) >= tiny:     # nothing to mask (False for NaN)
                return alpha, True
            return alpha.masked_fill_(alpha < tiny, 0.0), False
        return alpha.masked_fill_(alpha < tiny, 0.0), None
    value = p.nm_thres if (p.noise_management == "constant" and p.nm_thres > 0) else 1.0
    alpha = torch.full((*x.shape[:-1], 1), value, device=x.device, dtype=x.dtype)
    return alpha, (True if p.noise_management == "constant" and host_reads_free(alpha) else None)


def analog_mvm(tiles_w: Tensor, x_tiles: Tensor, p: IOParameters, generator: rng.Generator,
               transposed: bool = False, try_first_round: bool = True,
               prepared: PreparedInputs | None = None, products: Tensor | None = None) -> MVMResult:
    """One analog MVM through the periphery on every tile of a grid at once.

    Args:
        tiles_w: tile weights ``[R, C, rows, cols]`` (normalized units).
        x_tiles: forward: inputs per tile column block ``[B, C, cols]``; transposed: inputs per tile row
            block ``[B, R, rows]``. Each tile gets its own noise management, DAC, noise, ADC and bound
            management.
        p: periphery of this direction.
        generator: source of all randomness (on the tensors' device): a ``torch.Generator`` or a
            :class:`devices.rng.CounterRNG` (see :mod:`crossbar.replicas`).
        transposed: ``False``: ``y = W x`` per tile (forward); ``True``: ``y = Wᵀ d`` (backward).
        try_first_round: with iterative bound management on the CPU, compute the rounds one at a time: round 0
            for every sample, later rounds only for the samples that need them (fast when saturation is rare).
            ``False``: all rounds at once, as on GPUs (faster when saturation is expected, e.g. the all-ones
            importance reads). Same distribution either way; the random stream differs.
        prepared: the input side of this call computed earlier (:func:`prepare_inputs` of the same
            ``x_tiles``, ``p`` and ``transposed``): skips the noise management and the DAC; all rounds at once.
        products: with ``prepared`` only: the noise-free analog products of ``prepared.xq`` with the tiles,
            ``[R, C, rounds·B, n_out]`` (what the matmul would give), computed by the caller in a cheaper
            equivalent way (the all-ones importance read: each round's DAC code times the tiles' line sums);
            the MVM skips its matmul and adds the weight and output noise, the ADC and the bound management as
            usual. A fresh tensor: it is modified in place.

    Returns:
        :class:`MVMResult`: ``out`` ``[R, C, B, rows]`` (forward) or ``[R, C, B, cols]`` (transposed),
        the per-tile partial results after their own ADC, in the units of ``x_tiles`` times weight units;
        and ``passes`` ``[R, C, B]``. Summing ``out`` over ``C`` (forward) or ``R`` (transposed) gives the
        digital accumulation of the partial sums.
    """
    if tiles_w.ndim != 4 or x_tiles.ndim != 3:
        raise ValueError(f"analog_mvm: expected tiles_w [R, C, rows, cols] and x_tiles [B, blocks, n_in], "
                         f"got {tuple(tiles_w.shape)} and {tuple(x_tiles.shape)}")
    n_r, n_c, rows, cols = tiles_w.shape
    if x_tiles.shape[1:] != ((n_r, rows) if transposed else (n_c, cols)):
        raise ValueError(f"analog_mvm: {'transposed ' if transposed else ''}input must be "
                         f"[B, {n_r if transposed else n_c}, {rows if transposed else cols}], "
                         f"got {tuple(x_tiles.shape)}")
    if products is not None and prepared is None:
        raise ValueError("analog_mvm: products need the prepared inputs they were computed from (prepared=...)")
    if prepared is not None:   # the inputs' side was computed earlier: no layout of x_tiles needed
        mat = None if products is not None else tiles_w if transposed else tiles_w.transpose(-1, -2)
        return _mvm_rounds(None, mat, prepared.alpha, prepared.alpha_safe, p.noise_management != "none", p,
                           generator, transposed, prepared.rounds, (n_r, n_c, x_tiles.shape[0]),
                           alpha_pos=prepared.alpha_pos, xq=prepared.xq, products=products)
    xin = x_tiles.permute(1, 0, 2).unsqueeze(1 if transposed else 0)   # [R, 1, B, rows] or [1, C, B, cols]
    return _analog_mvm_blocks(tiles_w, xin, p, generator, transposed, sync_free=not try_first_round)


class PreparedInputs(NamedTuple):
    """Inputs of an MVM that is repeated with the same ``x`` (e.g. the all-ones importance read), with their
    noise management and DAC codes for every bound-management round computed once (:func:`prepare_inputs`).

    Attributes: ``alpha``, ``alpha_safe`` ``[R|1, C|1, B, 1]`` the noise-management scale (and 1 where it is 0)
    of the inputs laid out per tile block (``[R|1, C|1, B, n_in]``); ``alpha_pos`` whether every alpha is > 0
    (``None``: not known); ``rounds`` the bound-management rounds; ``xq`` ``[R|1, C|1, rounds·B, n_in]`` the DAC
    outputs of all rounds.
    """

    alpha: Tensor
    alpha_safe: Tensor
    alpha_pos: bool | None
    rounds: int
    xq: Tensor


def prepare_inputs(x_tiles: Tensor, p: IOParameters, transposed: bool = False) -> PreparedInputs | None:
    """The input side of :func:`analog_mvm` (same ``x_tiles`` layout) for reuse with
    ``analog_mvm(..., prepared=...)``, or ``None`` when it cannot be reused: a perfect periphery, or a random DAC
    (stochastic rounding or input noise draw new numbers on every call). Applying the result gives exactly what
    ``analog_mvm(..., try_first_round=False)`` gives for the same generator state."""
    if p.is_perfect or p.random_dac:
        return None
    xin = x_tiles.permute(1, 0, 2).unsqueeze(1 if transposed else 0)
    alpha, alpha_safe, alpha_pos = _noise_management(xin, p)
    rounds = bound_management_rounds(p, transposed)
    return PreparedInputs(alpha, alpha_safe, alpha_pos, rounds, _dac_rounds(xin, alpha_safe, p, None, rounds))


def full_scale_scales(prepared: PreparedInputs, p: IOParameters) -> Tensor | None:
    """The digital rescaling of each bound-management round of an all-ones read, ``[R|1, C|1, rounds]``
    (``alpha·2**k·out_scale``), for :func:`full_scale_adc`; ``None`` where that ADC does not apply (stochastic
    ADC rounding or additive weight noise: :func:`analog_mvm` with ``products`` then)."""
    if p.out_sto_round or (p.w_noise_type == "additive_constant" and p.w_noise > 0):
        return None
    a = prepared.alpha_safe
    scales = a.reshape(*a.shape[:2], 1) * _powers_of_two(prepared.rounds, a.dtype, a.device)
    return scales * p.out_scale if p.out_scale != 1.0 else scales


def full_scale_adc(y: Tensor, scales: Tensor, p: IOParameters) -> MVMResult:
    """The ADC side of an all-ones read (one input vector, every line at full scale): what :func:`analog_mvm` with
    ``prepared``/``products`` does after its output noise, in fewer operations and with the same numbers.

    Args:
        y: ``[R, C, rounds, n_out]`` the analog outputs of each bound-management round (each round's DAC code
            times the tiles' line sums, plus the output noise), a fresh tensor (modified in place).
        scales: :func:`full_scale_scales` (or a broadcastable slice of it), ``[R|1, C|1, rounds]``, or the same
            with the output dim, ``[R|1, C|1, rounds, 1]`` (what a caller that keeps them saves a view with).

    The ADC grid on every round, the bound-management test, each tile's first passing round (the last round
    always passes), its saturation and its rescaling (:func:`full_scale_outputs`). The zeroing of
    all-zero inputs is left out: an all-ones input has a noise-management scale > 0 on every tile block. No
    random numbers are drawn (the ADC is deterministic where :func:`full_scale_scales` applies).
    """
    out, passes = full_scale_outputs(y, scales, p)
    if passes is not None:
        return MVMResult(out, passes, None)
    n_r, n_c = out.shape[0], out.shape[1]
    return MVMResult(out, _single_passes((n_r, n_c, 1), out.device), n_r * n_c)


def full_scale_outputs(y: Tensor, scales: Tensor, p: IOParameters) -> tuple[Tensor, Tensor | None]:
    """:func:`full_scale_adc` (same arguments) without its :class:`MVMResult`: ``(out, passes)``, ``out``
    ``[R, C, 1, n_out]`` and ``passes`` ``[R, C, 1]`` (int64, each tile's first passing round + 1), or ``None`` for
    a single round (one pass per tile: nothing to read, so no tensor of ones is made). A caller that converts with
    the same periphery, rounds, dtype and device again keeps a :class:`FullScaleADC` instead."""
    return FullScaleADC(p, scales.shape[2], y.device)(y, scales)


class FullScaleADC:
    """:func:`full_scale_outputs` for one periphery ``p``, number of bound-management ``rounds`` and device, with
    what depends on these alone looked up once: the ADC grid's step, the saturation bound, which bounds the
    bound-management test checks, the last-round mask. Calling it, ``adc(y, scales)``, is
    ``full_scale_outputs(y, scales, p)`` for ``y`` ``[R, C, rounds, n_out]`` on that device: the same operations
    (what :class:`crossbar.tiles.HardwareSumsPlan` keeps per ADC group, as GRAPES's reads repeat)."""

    def __init__(self, p: IOParameters, rounds: int, device: torch.device) -> None:
        self.p, self.rounds = p, rounds
        self._step = p.out_step
        self._bound = p.out_bound
        self._last = _is_last_round(rounds, device) if rounds > 1 else None      # [rounds]

    def __call__(self, y: Tensor, scales: Tensor) -> tuple[Tensor, Tensor | None]:
        """``(out, passes)`` of the analog outputs ``y`` (a fresh tensor, modified in place) rescaled by ``scales``
        (``[R|1, C|1, rounds]``, or with the output dim), as :func:`full_scale_outputs`."""
        scale = scales if scales.dim() == 4 else scales.unsqueeze(-1)              # [R|1, C|1, rounds, 1]
        q = _quantize_(y, self._step, False, None)                                 # the ADC grid
        bound = self._bound
        if self._last is None:      # one round
            if math.isfinite(bound):
                q.clamp_(-bound, bound)
            return q.mul_(scale), None
        n_r, n_c = q.shape[0], q.shape[1]
        passed = _passed(q, self.p).logical_or_(self._last)                      # [R, C, rounds]
        first = torch.argmax(passed.view(torch.uint8), dim=2, keepdim=True)       # [R, C, 1]: first passing round
        # every round saturated and rescaled (after the test; a few rounds of one vector), then the first passing one
        q.clamp_(-bound, bound).mul_(scale)
        out = torch.gather(q, 2, first.unsqueeze(-1).expand(n_r, n_c, 1, q.shape[-1]))   # [R, C, 1, n_out]
        return out, first.add_(1)


def _noise_management(xin: Tensor, p: IOParameters) -> tuple[Tensor, Tensor, bool | None]:
    """``(alpha, alpha_safe, alpha_pos)`` of :class:`PreparedInputs` for ``xin``."""
    alpha, alpha_pos = _scale_with_positivity(xin, p)      # [R|1, C|1, B, 1]; alpha_pos known on the CPU
    nm_on = p.noise_management != "none"
    alpha_safe = torch.where(alpha != 0, alpha, 1.0) if nm_on and not alpha_pos else alpha   # NaN stays NaN
    return alpha, alpha_safe, alpha_pos


def _analog_mvm_blocks(tiles_w: Tensor, xin: Tensor, p: IOParameters, generator: rng.Generator,
                       transposed: bool = False, sync_free: bool = False) -> MVMResult:
    """:func:`analog_mvm` with the inputs already laid out per tile block: ``xin: [R|1, C|1, B, n_in]``.

    Forward inputs may differ per tile *row* block too (``[R, C, B, cols]``: how :mod:`crossbar.replicas`
    feeds ``E`` replicas folded into the row-block dimension). ``sync_free``: never take the CPU shortcut of
    trying the first bound-management round alone (all rounds at once, so the random stream does not depend
    on the data), as on GPUs; on the CPU with a :class:`~devices.rng.CounterRNG` round 0 is still tried alone,
    giving bit for bit the all-rounds result and counter (:func:`_round_zero_exact`). Otherwise, on the CPU, when
    at least :data:`~crossbar._reduce.SILENT_SHARE` of the input vectors are all zero (with noise management their
    outputs are exactly 0), only the others are computed.
    """
    n_r, n_c = tiles_w.shape[0], tiles_w.shape[1]
    batch = xin.shape[2]
    mat = tiles_w if transposed else tiles_w.transpose(-1, -2)   # [R, C, rows, cols] or [R, C, cols, rows]
    full_shape = (n_r, n_c, batch)
    nm_on = p.noise_management != "none"
    if p.is_perfect:
        out = torch.matmul(xin, mat)
        if p.out_scale != 1.0:
            out = out * p.out_scale
        return MVMResult(out, _single_passes(full_shape, xin.device), n_r * n_c * batch)

    alpha, alpha_safe, alpha_pos = _noise_management(xin, p)
    if alpha_pos is False and nm_on and not (p.inp_noise > 0 and not transposed) and not sync_free \
            and not isinstance(generator, rng.CounterRNG):
        # CPU, some all-zero inputs, whose outputs are exactly zero (see _rescaled): when they are many (a CNN's
        # errors after max pooling, zero-padded borders of an image) only the other samples are computed (a
        # data-dependent random stream: not with sync_free or the replicas' counter-based generator)
        keep = live_samples((alpha != 0).reshape(-1, batch).any(dim=0))     # a NaN sample is computed (NaN)
        if keep is not None:
            res = _analog_mvm_blocks(tiles_w, xin.index_select(2, keep), p, generator, transposed, sync_free)
            out = res.out.new_zeros((n_r, n_c, batch, res.out.shape[-1])).index_copy_(2, keep, res.out)
            passes = torch.ones(full_shape, dtype=torch.int64, device=xin.device).index_copy_(2, keep, res.passes)
            skipped = n_r * n_c * (batch - keep.numel())              # one pass each, as computed in full
            return MVMResult(out, passes, None if res.total is None else res.total + skipped)
    rounds = bound_management_rounds(p, transposed)
    if rounds > 1 and sync_free and isinstance(generator, rng.CounterRNG) and host_reads_free(xin):
        # the replicas on the CPU: round 0 alone when no vector saturates, exactly the all-rounds result
        return _round_zero_exact(xin, mat, alpha, alpha_safe, alpha_pos, nm_on, p, generator, transposed, rounds,
                                 full_shape)
    if rounds > 1 and host_reads_free(xin) and not sync_free:
        # On the CPU a host check is free: the rounds one at a time, as aihwkit's loop (the common case, no
        # saturated output, needs one MVM instead of ``rounds``). On GPUs all rounds run batched, without a
        # host synchronisation. Same distribution.
        return _rounds_on_demand(xin, mat, alpha, alpha_safe, alpha_pos, nm_on, p, generator, transposed, rounds,
                                 full_shape)
    return _mvm_rounds(xin, mat, alpha, alpha_safe, nm_on, p, generator, transposed, rounds, full_shape,
                       alpha_pos=alpha_pos)


def _dac_rounds(xin: Tensor, alpha_safe: Tensor, p: IOParameters, generator: rng.Generator, rounds: int,
                tiles: tuple[int, int] | None = None, start: int = 0) -> Tensor:
    """DAC outputs of ``rounds`` bound-management rounds ``start, start + 1, ...``, ``[R|1, C|1, rounds·B, n_in]``:
    ``x / (alpha·2**k)`` quantized, clipped and (with input noise) noisy. ``tiles = (R, C)``: every tile has its
    own DAC (needed for stochastic rounding and input noise, whose draws differ per tile)."""
    batch = xin.shape[2]
    # inputs of the bound-management rounds: [R|1, C|1, K, B, n_in], x / (alpha * 2**k)
    if rounds == 1 and start == 0:
        xs = xin * alpha_safe.reciprocal()
    else:
        inv_reduction = torch.pow(0.5, torch.arange(start, start + rounds, device=xin.device, dtype=xin.dtype))
        xs = xin.unsqueeze(2) * (inv_reduction.view(1, 1, rounds, 1, 1) / alpha_safe.unsqueeze(2))
    if tiles is not None:
        xs = xs.expand(*tiles, *xs.shape[2:]).clone()
    if xs.ndim == 5:
        xs = xs.reshape(xs.shape[0], xs.shape[1], rounds * batch, xs.shape[-1])
    xq = _quantize_(xs, p.inp_step, p.inp_sto_round, generator)             # DAC (xs is a fresh tensor)
    if math.isfinite(p.inp_bound):
        xq.clamp_(-p.inp_bound, p.inp_bound)
    if p.inp_noise > 0:
        xq = rng.add_normal(xq, p.inp_noise, generator)
    return xq


def _mvm_rounds(xin: Tensor | None, mat: Tensor | None, alpha: Tensor, alpha_safe: Tensor, nm_on: bool,
                p: IOParameters, generator: rng.Generator, transposed: bool, rounds: int,
                full_shape: tuple[int, int, int],
                alpha_pos: bool | None = None, xq: Tensor | None = None,
                products: Tensor | None = None) -> MVMResult:
    """The noisy MVM with ``rounds`` bound-management rounds computed at once (see :func:`analog_mvm`).

    ``alpha_pos``: on the CPU, whether every ``alpha`` is > 0 (``None``: not known). ``xq``: the DAC outputs of
    these rounds, computed earlier (:class:`PreparedInputs`; then ``xin`` is not used); ``products``: their products
    with the tiles (then ``mat`` is not used)."""
    n_r, n_c, batch = full_shape
    if xq is None:
        assert xin is not None
        # every tile has its own DAC: independent rounding / noise per tile
        per_tile = (n_r, n_c) if p.random_dac else None
        xq = _dac_rounds(xin, alpha_safe, p, generator, rounds, per_tile)
    q = _adc_grid(xq, mat, p, generator, products)             # [R, C, K*B, n_out]
    passed = _passed(q, p) if rounds > 1 else None
    yq = q.clamp_(-p.out_bound, p.out_bound) if math.isfinite(p.out_bound) else q
    yq = yq.view(n_r, n_c, rounds, batch, yq.shape[-1])

    if passed is not None:   # the last round always passes
        passed = passed.view(n_r, n_c, rounds, batch).logical_or_(_last_round(rounds, passed.device))
        first = torch.argmax(passed.view(torch.uint8), dim=2)  # [R, C, B]: first passing round (a view, no copy)
        index = first.view(n_r, n_c, 1, batch, 1).expand(n_r, n_c, 1, batch, yq.shape[-1])
        return _rescaled(torch.gather(yq, 2, index).squeeze(2), first, alpha, alpha_safe, alpha_pos, nm_on, p,
                         transposed, rounds)
    return _rescaled(yq.squeeze(2), None, alpha, alpha_safe, alpha_pos, nm_on, p, transposed)


@functools.lru_cache(maxsize=None)   # unbounded: see _step_tensor
def _single_passes(shape: tuple[int, ...], device: torch.device) -> Tensor:
    """The :attr:`MVMResult.passes` of an MVM whose every (tile, sample) took one pass: int64 ones of ``shape``
    (``[R, C, B]``), a cache. An expanded view of one element, so the same tensor serves every call without a copy
    and cannot be modified in place by mistake (torch refuses to write into overlapping memory). Saves the
    allocation and fill of a fresh ``torch.ones`` per MVM: ~25 µs each on the AVX2 machine, where the first such
    call after the large products runs cold."""
    return torch.ones((), dtype=torch.int64, device=device).expand(shape)


@functools.lru_cache(maxsize=None)   # unbounded: see _step_tensor
def _powers_of_two(rounds: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``[rounds]``: ``2**k`` for ``k = 0 … rounds - 1`` in ``dtype`` (a cache). ``alpha · table[k]`` is exactly
    ``ldexp(alpha, k)`` (a product with a power of two is exact), in one indexing op instead of ldexp's
    conversions and ``pow``."""
    # computed on the host in float64 (exact powers; not every device has float64), then moved once
    return torch.pow(2.0, torch.arange(rounds, dtype=torch.float64, device="cpu")).to(device=device, dtype=dtype)


@functools.lru_cache(maxsize=None)   # unbounded: see _step_tensor
def _last_round(rounds: int, device: torch.device) -> Tensor:
    """``[rounds, 1]`` bool, True in the last bound-management round only (a cache: one small tensor per count and
    device)."""
    return (torch.arange(rounds, device=device) == rounds - 1).view(rounds, 1)


@functools.lru_cache(maxsize=None)   # unbounded: see _step_tensor
def _is_last_round(rounds: int, device: torch.device) -> Tensor:
    """:func:`_last_round` as ``[rounds]`` (a cache)."""
    return _last_round(rounds, device).view(rounds)


def _adc_grid(xq: Tensor, mat: Tensor | None, p: IOParameters, generator: rng.Generator,
              products: Tensor | None = None) -> Tensor:
    """The analog products of DAC outputs ``xq: [R|1, C|1, N, n_in]`` with ``mat`` ``[R, C, n_in, n_out]``, plus
    weight noise (``w_noise·||x_dac||₂·ξ``) and output noise, on the ADC grid but not yet saturated:
    ``[R, C, N, n_out]`` (a fresh tensor; every op after the matmul is in place). ``products``: the noise-free
    products, computed by the caller (no matmul; modified in place)."""
    if products is None:
        assert mat is not None
        y = torch.matmul(xq, mat)
    else:
        y = products
    if p.w_noise_type == "additive_constant" and p.w_noise > 0:
        y.add_(p.w_noise * torch.linalg.vector_norm(xq, dim=-1, keepdim=True)
               * rng.randn(y.shape, generator, device=y.device, dtype=y.dtype))
    if p.out_noise > 0:
        y = rng.add_normal(y, p.out_noise, generator)
    return _quantize_(y, p.out_step, p.out_sto_round, generator)


def _rounds_on_demand(xin: Tensor, mat: Tensor, alpha: Tensor, alpha_safe: Tensor, alpha_pos: bool | None,
                      nm_on: bool, p: IOParameters, generator: rng.Generator, transposed: bool, rounds: int,
                      full_shape: tuple[int, int, int]) -> MVMResult:
    """Iterative bound management round by round, as aihwkit's loop, on the CPU (where reading values is free).

    Round 0 runs for every (tile, sample). When an output saturated, round ``k = 1, 2, ...`` runs for the samples
    with a (tile) output vector that has not passed yet, with its own DAC conversion, weight and output noise and
    ADC draws; each (tile, sample) keeps its first passing round (or the last round). The distribution is that
    of :func:`_mvm_rounds`, which computes every round for every sample (GPUs; no host synchronisation), and
    when nothing saturates the result is exactly that of one round without bound management. The cost of the
    later rounds grows with the number of samples that need them, not with the batch."""
    n_r, n_c, batch = full_shape
    per_tile = (n_r, n_c) if p.random_dac else None
    q = _adc_grid(_dac_rounds(xin, alpha_safe, p, generator, 1, per_tile), mat, p, generator)
    bound = p.out_bound
    if q.numel() == 0 or not (float(q.amax()) > bound or (p.bm_test_negative_bound and float(q.amin()) < -bound)):
        # every output vector passed round 0; with both bounds tested every output already lies within them
        out = q if p.bm_test_negative_bound or not math.isfinite(bound) else q.clamp_(-bound, bound)
        return _rescaled(out, None, alpha, alpha_safe, alpha_pos, nm_on, p, transposed)
    pending = ~_passed(q, p)                                   # [R, C, B]: not yet passed
    out = q.clamp_(-bound, bound)                              # round 0, replaced where a later round is taken
    first = torch.zeros(full_shape, dtype=torch.int64, device=q.device)
    for k in range(1, rounds):
        samples = flat_nonzero(pending.any(dim=1).any(dim=0))  # samples with a pending output vector, [S]
        xq = _dac_rounds(xin.index_select(2, samples), alpha_safe.index_select(2, samples), p, generator, 1,
                         per_tile, start=k)
        y = _adc_grid(xq, mat, p, generator)                   # round k of those samples, [R, C, S, n_out]
        passed = _passed(y, p)
        y.clamp_(-bound, bound)
        waiting = pending.index_select(2, samples)
        taken = waiting if k == rounds - 1 else waiting & passed   # the last round takes the rest
        out.index_copy_(2, samples, torch.where(taken.unsqueeze(-1), y, out.index_select(2, samples)))
        first.index_copy_(2, samples, torch.where(taken, k, first.index_select(2, samples)))
        pending.index_copy_(2, samples, waiting & ~passed)
        if not bool(pending.any()):
            break
    return _rescaled(out, first, alpha, alpha_safe, alpha_pos, nm_on, p, transposed, rounds)


_ZERO_ROWS_KEPT = 1 << 24
"""Numbers per zero-padded matmul input of :func:`_round_zero_products` (64 MiB in float32): larger inputs run in
pieces of whole matrices."""


@functools.lru_cache(maxsize=4)
def _zero_rows(shape: tuple[int, ...], batch: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A zero tensor of ``shape`` (``[r, C, rounds·batch, n_in]``) for :func:`_round_zero_products`, which writes
    its first ``batch`` rows of dim 2 only, so the others stay zero: kept for the few shapes of a run's training
    and evaluation batches (the zero fill was a quarter of the MVM's time at batch 500)."""
    return torch.zeros(shape, dtype=dtype, device=device)


def _round_zero_products(xq: Tensor, mat: Tensor, rounds: int) -> Tensor:
    """Products of round 0's DAC outputs ``xq: [R|1, C|1, B, n_in]`` with ``mat: [R, C, n_in, n_out]``, ``[R, C, B,
    n_out]``, rounded as the same rows of the all-rounds matmul (``[R, C, rounds·B, n_in]``, :func:`_mvm_rounds`):
    computed in that layout with the later rounds' rows zero. BLAS rounds a row's products differently with the
    number of rows (measured with MKL: the rows of 1–3-row products, and of 5- or 7-row ones in float64, differ in
    the last bit from the same rows of a larger product), not with the other rows' values nor with the number of
    matrices in a batch; so inputs above :data:`_ZERO_ROWS_KEPT` numbers run a few whole tiles at a time."""
    lead, batch = xq.shape[0], xq.shape[2]
    one = xq.shape[1] * rounds * batch * xq.shape[3]                   # numbers per tile row of the padded input
    step = lead if lead != mat.shape[0] else max(1, _ZERO_ROWS_KEPT // one)
    parts = []
    for a in range(0, lead, step):
        b = min(a + step, lead)
        shape = (b - a, xq.shape[1], rounds * batch, xq.shape[3])
        padded = (_zero_rows(shape, batch, xq.dtype, xq.device) if (b - a) * one <= _ZERO_ROWS_KEPT
                  else torch.zeros(shape, dtype=xq.dtype, device=xq.device))           # one tile row above it
        padded[:, :, :batch] = xq[a:b]
        parts.append(torch.matmul(padded, mat[a:b] if step < lead else mat)[:, :, :batch])
    return parts[0].contiguous() if len(parts) == 1 else torch.cat(parts)


def _round_zero_exact(xin: Tensor, mat: Tensor, alpha: Tensor, alpha_safe: Tensor, alpha_pos: bool | None,
                      nm_on: bool, p: IOParameters, generator: rng.CounterRNG, transposed: bool, rounds: int,
                      full_shape: tuple[int, int, int]) -> MVMResult:
    """:func:`_mvm_rounds` of all ``rounds`` bound-management rounds (the sync-free path of a
    :class:`~devices.rng.CounterRNG`), bit for bit, computing the later rounds only when some vector needs them
    (the CPU, where reading values is free; :mod:`crossbar.replicas`).

    Round 0 runs alone: its DAC codes, the products and every draw are those of the all-rounds computation at
    round 0's positions (:class:`~devices.rng.WindowedDraws`: round 0 is the first ``B`` of the ``rounds·B``
    vectors of each draw, and the counter advances as the all-rounds draws; the matmul: see
    :func:`_round_zero_products`). If every (tile) output vector passes, that is the all-rounds result (each
    vector's first passing round is round 0); otherwise the counter is reset and all rounds are computed
    (:func:`_mvm_rounds`). Cost without saturation: the matmul of the all-rounds path, one round of DAC, draws and
    ADC (instead of ``rounds``)."""
    n_r, n_c, batch = full_shape
    counter = generator.counter
    draws = rng.WindowedDraws(generator, 2, rounds)
    xq = _dac_rounds(xin, alpha_safe, p, draws, 1, (n_r, n_c) if p.random_dac else None)   # [R|1, C|1, B, n_in]
    products = _round_zero_products(xq, mat, rounds)                                  # [R, C, B, n_out]
    q = _adc_grid(xq, None, p, draws, products)
    if q.numel() == 0 or bool(_passed(q, p).all()):     # a NaN vector fails, as in every round of _mvm_rounds
        return _rescaled(q.clamp_(-p.out_bound, p.out_bound), None, alpha, alpha_safe, alpha_pos, nm_on, p,
                         transposed)
    generator.counter = counter
    return _mvm_rounds(xin, mat, alpha, alpha_safe, nm_on, p, generator, transposed, rounds, full_shape,
                       alpha_pos=alpha_pos)


def _passed(q: Tensor, p: IOParameters) -> Tensor:
    """Bound management: whether each output vector ``q: [..., n_out]`` on the ADC grid stayed within the ADC
    range (``|q| <= out_bound``; only the upper bound unless ``bm_test_negative_bound``), ``[...]``. (Both bounds
    as ``max |q|``: the same test as amax and amin, in fewer operations; torch's CPU aminmax along a dim is ~18x
    slower. The bound is compared as a cached 0-d tensor of ``q``'s dtype: the value a Python number would be cast
    to, without wrapping and casting it on every call: the full-scale ADC of GRAPES's array read 79 → 72 µs.)"""
    top = nonneg_amax(q.abs()) if p.bm_test_negative_bound else q.amax(dim=-1)
    return top <= _step_tensor(p.out_bound, top.dtype, top.device)


def _rescaled(out: Tensor, first: Tensor | None, alpha: Tensor, alpha_safe: Tensor, alpha_pos: bool | None,
              nm_on: bool, p: IOParameters, transposed: bool, rounds: int = 1) -> MVMResult:
    """The :class:`MVMResult` of ADC outputs ``out: [R, C, B, n_out]`` (rescaled in place) whose samples passed in
    bound-management round ``first: [R, C, B]`` (< ``rounds``; ``None``: one round): the digital rescaling by
    ``alpha·2**first·out_scale``, and the exact zeros of all-zero inputs under noise management."""
    if first is not None:
        scale = alpha_safe * _powers_of_two(rounds, out.dtype, out.device)[first].unsqueeze(-1)   # alpha * 2**first
        passes, total = first + 1, None
    else:
        scale = alpha_safe
        passes = _single_passes(tuple(out.shape[:-1]), out.device)
        total = passes.numel()
    out.mul_(scale * p.out_scale if p.out_scale != 1.0 else scale)
    if nm_on and not (p.inp_noise > 0 and not transposed):
        # aihwkit short-cut: an all-zero input gives an exactly zero output (forward only without
        # input noise; backward always). On the CPU a host check skips the pass when no input is all zero.
        if not host_reads_free(out.device) or not (alpha_pos if alpha_pos is not None
                                            else alpha.numel() == 0 or float(alpha.min()) > 0):
            out.masked_fill_(alpha == 0, 0.0)          # only all-zero inputs: a NaN/Inf input gives NaN
    return MVMResult(out, passes, total)
