"""Pulsed in-memory weight update: stochastic pulse trains and their coincidences.

This module turns the update of a crossbar tile, ``W <- W - lr * d x^T``, into the pulse counts that the
hardware would fire, following the semantics of aihwkit's CPU simulator (``SparseBitLineMaker`` and
``PulsedUpdateMetaParameter::performUpdateManagement``, aihwkit 1.1):

* For every update cycle (one sample of the batch) and every tile, each input line ``j`` (``x_j``) and
  each error line ``i`` (``d_i``) gets a train of ``BL`` slots. In every slot a line fires independently
  with probability ``p = min(1, B |x_j|)`` (inputs) or ``q = min(1, A |d_i|)`` (errors); the sign of the
  pulse is the sign of the value ("stochastic compressed": one train per line carries both signs).
* A device at ``(i, j)`` receives one pulse for every slot in which both of its lines fire. Same signs
  move the weight down (for ``lr > 0``), opposite signs move it up, so the expected change is
  ``-BL * A * B * d_i * x_j * dw_min = -lr * d_i * x_j`` as long as no probability is capped at 1.
* Bit-length management (``update_bl_management``) picks per tile and per sample
  ``BL = min(ceil(lr * max|x| * um_grad_scale * max|d| / dw_min), desired_bl)`` and
  ``A = B = sqrt(lr / (dw_min * BL))``; update management (``update_management``, always on with BL
  management) rescales ``A <- A sqrt(x_val / d_val)`` and ``B <- B sqrt(d_val / x_val)`` with
  ``x_val = max|x|``, ``d_val = um_grad_scale * max|d|`` so that the largest input and error have the same
  firing probability. When the pulse budget is exceeded (``k = lr x_val d_val / dw_min > desired_bl``),
  ``d_val`` is first scaled by ``desired_bl / k``: the largest input then fires in every slot and the
  error probabilities are capped at 1 -- this is where the update *saturates* (a larger ``d`` no longer
  gives a proportionally larger weight change). Float limits: a sample whose ``k`` overflows the tile's float
  type (``lr·max|x|·max|d|/dw_min`` above ≈ 3.4e38 in float32: a diverged run) gets ``B = 0`` and fires nothing;
  one within budget whose ``max|x| / max|d|`` ratio over- or underflows (≈ 1e38) gets unusable scales. Neither
  occurs with finite training signals of sensible size; handling them would cost every update extra operations.

Differences from aihwkit (documented approximations):

* aihwkit applies the samples of a batch one after another, and the device model applies every
  coincidence as one pulse in slot order. Here the coincidences are *counted* per device and summed over
  the batch; the device model then applies ``n_up`` and ``n_down`` at once
  (``PulsedDevice.apply_pulses``). For a constant-step device away from its bounds both are identical in
  distribution, and so are all devices when the batch has one sample (a device then gets pulses of one
  sign only). With several samples of mixed signs, a state-dependent device (soft bounds) depends on the
  order: measured against aihwkit (8x8, batch 4, lr 0.05) the mean change differs by about 1 % of the
  largest change (up to 3 % of an element's own mean; about 2 % at lr 0.2).
* ``total`` counts device pulses (coincidences, ``sum(n_up + n_down)``), not line pulses.
* aihwkit's CPU random number generator is seeded from the clock; here every draw comes from the given
  ``torch.Generator`` (same seed, same pulses).

Shapes used throughout: ``batch`` samples, a grid of ``R x C`` tiles of ``rows x cols`` devices;
``x: [batch, C, cols]`` is the input slice of every tile column block, ``d: [batch, R, rows]`` the error
slice of every tile row block, and per-tile results are ``[R, C, rows, cols]``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from devices import rng
from devices.base import check_finite
from devices.host import host_reads_free, host_scalar_math
from devices.suggest import did_you_mean

from crossbar._reduce import has_zero, live_samples, nonneg_amax

__all__ = [
    "PULSE_TYPES",
    "UpdateParameters",
    "ideal_delta",
    "pulse_counts",
    "pulse_probabilities",
    "update_scales",
]

PULSE_TYPES: tuple[str, ...] = ("stochastic_compressed", "stochastic", "none")
"""Supported ``UpdateParameters.pulse_type`` values.

``"stochastic_compressed"`` (aihwkit's default) and ``"stochastic"`` (aihwkit draws the positive and
negative inputs in two passes) give the same distribution of coincidence counts, so both use the same
code here. ``"none"`` means an exact floating-point update: use :func:`ideal_delta` instead of pulses (the
device takes no part, as in aihwkit: programming a tile neither clips nor adds write noise, see
``TileArray.update``)."""

MAX_DESIRED_BL = 2**31 - 1
"""Largest ``UpdateParameters.desired_bl``: a device's pulse count (at most the train length) is an int32."""

_AIHWKIT_PULSE_TYPES: dict[str, str] = {
    "stochastic_compressed": "STOCHASTIC_COMPRESSED",
    "stochastic": "STOCHASTIC",
    "none": "NONE",
}


@dataclass(frozen=True)
class UpdateParameters:
    """How a tile turns ``(x, d, lr)`` into pulse trains (names and defaults as aihwkit's ``UpdateParameters``).

    Attributes:
        desired_bl: length of the pulse trains in slots; with ``update_bl_management`` the *maximal*
            length (aihwkit ``desired_bl``). Integer in ``[1, 2^31 - 1]``.
        fixed_bl: without BL management, keep ``BL = desired_bl`` even when ``lr > dw_min * desired_bl``
            (if ``False``, such a learning rate gives ``A = B = 1`` and ``BL = ceil(lr / dw_min)``, computed in
            the tile's float type as aihwkit does, float32 by default: :meth:`free_bl`).
        update_bl_management: choose ``BL`` per tile and sample from the largest ``|x|`` and ``|d|``
            (see the module docstring). Implies ``update_management`` (as in aihwkit).
        update_management: balance the firing probabilities of inputs and errors per tile and sample.
        um_grad_scale: factor ``alpha`` on ``max|d|`` in the update management (> 0); below 1 the error
            probabilities are capped earlier.
        pulse_type: one of :data:`PULSE_TYPES`; ``"none"`` = exact float update (:func:`ideal_delta`).
        res: resolution (bin width, in probability units) of the firing probabilities; ``0`` = continuous.
            A value > 1 is read as a number of steps (bin width ``1 / res``).
        sto_round: round the probabilities stochastically (only with ``res > 0``).
    """

    desired_bl: int = 31
    fixed_bl: bool = True
    update_bl_management: bool = True
    update_management: bool = True
    um_grad_scale: float = 1.0
    pulse_type: str = "stochastic_compressed"
    res: float = 0.0
    sto_round: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.desired_bl, bool) or not isinstance(self.desired_bl, int) \
                or not 1 <= self.desired_bl <= MAX_DESIRED_BL:
            raise ValueError(f"UpdateParameters.desired_bl must be an integer in [1, 2^31 - 1] (the pulse counts are "
                             f"int32), got {self.desired_bl!r}")
        for name in ("fixed_bl", "update_bl_management", "update_management", "sto_round"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"UpdateParameters.{name} must be a bool, got {getattr(self, name)!r}")
        check_finite("UpdateParameters", "um_grad_scale", self.um_grad_scale, 0, strict=True)
        check_finite("UpdateParameters", "res", self.res, 0)
        if self.pulse_type not in PULSE_TYPES:
            raise ValueError(
                f"UpdateParameters.pulse_type must be one of {PULSE_TYPES}, got {self.pulse_type!r}"
                f"{did_you_mean(self.pulse_type, PULSE_TYPES)}"
            )

    @property
    def uses_management(self) -> bool:
        """Whether update management is active (BL management always switches it on, as in aihwkit)."""
        return self.update_management or self.update_bl_management

    @property
    def resolution(self) -> float:
        """Bin width of the firing probabilities (``res``, or ``1 / res`` when ``res > 1``); 0 = off."""
        return 1.0 / self.res if self.res > 1.0 else self.res

    def max_bl(self, lr: float | Tensor, dw_min: float | Tensor, dtype: torch.dtype = torch.float32) -> int:
        """Number of pulse slots to allocate for learning rate ``lr`` (the largest BL any sample can get).

        ``desired_bl``, except where :meth:`free_bl` gives the learning-rate-driven length (without fixed BL and
        without BL management, for a learning rate above ``dw_min * desired_bl``). ``dtype``: the update's compute
        dtype (float32 or float64; see :meth:`free_bl`).
        """
        free = self.free_bl(lr, dw_min, dtype)
        return self.desired_bl if free is None else free

    def free_bl(self, lr: float | Tensor, dw_min: float | Tensor, dtype: torch.dtype = torch.float32) -> int | None:
        """The train length of aihwkit's learning-rate-driven branch (``A = B = 1``), or ``None`` if not taken.

        Taken only without ``fixed_bl`` and without ``update_bl_management``, when ``dw_min * desired_bl < |lr|``:
        then ``BL = max(ceil(|lr| / dw_min), 1)`` slots. Computed as aihwkit's ``calculateBlAB`` does (C++,
        ``rpu_pulsed_meta_parameter.cpp``): ``lr`` and ``dw_min`` rounded to the tile's type ``T`` (``dtype``:
        float32, or float64 for a float64 tile), the product, the comparison and the quotient in ``T``, and the
        ceiling by ``ceilf``, i.e. of the quotient rounded to float32. In float32, ``lr = 0.3`` and ``dw_min = 0.01``
        give ``0.3f / 0.01f = 30.000002``, so ``BL = 31`` (30 in exact or float64 arithmetic), and with
        ``desired_bl = 30`` the branch is taken (``0.01f * 30 < 0.3f``). ``lr`` may be a one-element tensor, read on
        the host in this configuration only (the trains' length depends on its value): on a GPU a host
        synchronisation per update, and no CUDA-graph capture; pass a Python number there (the engine's training
        loops do).
        """
        if self.fixed_bl or self.update_bl_management:
            return None
        ft = np.float64 if dtype == torch.float64 else np.float32
        lr_t, dw_t = abs(ft(float(lr))), ft(float(dw_min))
        if not dw_t * ft(self.desired_bl) < lr_t:
            return None
        quotient = np.float32(lr_t / dw_t)
        if not quotient <= MAX_DESIRED_BL:     # an lr of 1e10 steps: trains of 1e10 slots per line and sample
            raise ValueError(
                f"UpdateParameters: without fixed_bl and update_bl_management the train length is ceil(|lr|/dw_min), "
                f"which must be at most {MAX_DESIRED_BL} (2^31 - 1, desired_bl's limit), got lr = {float(lr)!r}, "
                f"dw_min = {float(dw_min)!r} ({float(quotient):.4g} slots); use update_bl_management, fixed_bl, or a "
                f"smaller lr")
        return max(int(np.ceil(quotient)), 1)

    def to_aihwkit(self):  # -> aihwkit.simulator.parameters.training.UpdateParameters
        """The equivalent aihwkit ``UpdateParameters`` (imports aihwkit lazily). ``res`` goes over as the bin width
        (:attr:`resolution`): aihwkit's docstring allows a number of steps (``res > 1``), but its C++ update (1.1)
        uses the value as the width, so ``res = 7`` would round every probability to 0 there."""
        from aihwkit.simulator.parameters.enums import PulseType
        from aihwkit.simulator.parameters.training import UpdateParameters as AihwkitUpdateParameters

        return AihwkitUpdateParameters(
            desired_bl=self.desired_bl,
            fixed_bl=self.fixed_bl,
            update_bl_management=self.update_bl_management,
            update_management=self.update_management,
            um_grad_scale=self.um_grad_scale,
            pulse_type=getattr(PulseType, _AIHWKIT_PULSE_TYPES[self.pulse_type]),
            res=self.resolution,
            sto_round=self.sto_round,
        )

    @classmethod
    def from_aihwkit(cls, params) -> "UpdateParameters":
        """Build from an aihwkit ``UpdateParameters``; raises ``ValueError`` for pulse types not supported here."""
        by_enum = {v: k for k, v in _AIHWKIT_PULSE_TYPES.items()}
        name = params.pulse_type.name
        if name not in by_enum:
            raise ValueError(
                f"UpdateParameters.pulse_type: aihwkit's {name} is not supported; "
                f"supported are {sorted(_AIHWKIT_PULSE_TYPES.values())}"
            )
        return cls(
            desired_bl=int(params.desired_bl),
            fixed_bl=bool(params.fixed_bl),
            update_bl_management=bool(params.update_bl_management),
            update_management=bool(params.update_management),
            um_grad_scale=float(params.um_grad_scale),
            pulse_type=by_enum[name],
            res=float(params.res),
            sto_round=bool(params.sto_round),
        )


def _check_inputs(x: Tensor, d: Tensor) -> None:
    if x.dim() not in (3, 4) or d.dim() != 3 or (x.dim() == 4 and x.shape[1] not in (1, d.shape[1])):
        raise ValueError(
            "pulse update expects x: [batch, C, cols] (or per row block [batch, R, C, cols]) and d: "
            f"[batch, R, rows], got x.shape={tuple(x.shape)} and d.shape={tuple(d.shape)}"
        )
    if x.shape[0] != d.shape[0]:
        raise ValueError(f"x and d must have the same batch size, got {x.shape[0]} and {d.shape[0]}")


def _check_scalars(lr: float | Tensor, dw_min: float | Tensor, device: torch.device) -> None:
    """``ValueError`` for a ``dw_min`` that is not > 0, or an ``lr`` refused by :func:`_check_update_lr`."""
    if not isinstance(dw_min, Tensor) and not (math.isfinite(dw_min) and dw_min > 0):
        raise ValueError(f"pulse update: dw_min (the device's weight granularity) must be > 0, got {dw_min!r}")
    _check_update_lr(lr, device)


def _check_update_lr(lr: float | Tensor, device: torch.device, where: str = "pulse update") -> None:
    """``ValueError`` (naming ``<where>``'s ``lr``) for a non-finite number ``lr``, or a tensor ``lr`` that is not one
    element on ``device`` (the update's: a tensor elsewhere would be copied over at every update, on a GPU a host
    synchronisation) or, where host reads are free (the CPU, :func:`devices.host.host_reads_free`), whose value is
    not finite. On the sync-free (GPU) path only a tensor's metadata is read, never its value. Any sign is valid
    (a negative ``lr`` flips the update's direction)."""
    if isinstance(lr, Tensor):
        if lr.numel() != 1 or lr.device != device:
            raise ValueError(f"{where}: lr must be a number or a one-element tensor on the update's device "
                             f"({device}), got a tensor of shape {tuple(lr.shape)} on {lr.device}")
        if host_reads_free(lr) and not math.isfinite(float(lr)):
            raise ValueError(f"{where}: lr must be finite, got {float(lr)!r}")
    elif not math.isfinite(lr):
        raise ValueError(f"{where}: lr must be finite, got {lr!r}")


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 at least (coincidence counts must be exact integers), float64 kept."""
    return torch.promote_types(dtype, torch.float32)


def update_scales(
    x: Tensor, d: Tensor, lr: float | Tensor, dw_min: float | Tensor, cfg: UpdateParameters
) -> tuple[Tensor, Tensor, Tensor]:
    """Pulse-train length and probability scales per sample and tile (aihwkit's BL and update management).

    Args:
        x: ``[batch, C, cols]`` inputs of every tile column block.
        d: ``[batch, R, rows]`` errors (gradients w.r.t. the tile outputs) of every tile row block.
        lr: learning rate (plain number or 0-d tensor); its sign only flips the update direction.
        dw_min: weight granularity of the device (mean weight change of one pulse, weight units).
        cfg: update parameters.

    Returns:
        ``bl``: ``[batch, R, C]`` train length in slots (``int64``, 0 = nothing fires);
        ``a``: ``[batch, R, C]`` scale of the error probabilities (``q_i = min(1, a |d_i|)``);
        ``b``: ``[batch, R, C]`` scale of the input probabilities (``p_j = min(1, b |x_j|)``).
        With update management, a NaN or an Inf (either sign) in a sample's ``x`` or ``d`` gives NaN ``a`` and ``b``
        for the tiles of its block (and, with BL management, ``bl`` cast from NaN: negative on x86 CPUs). Nothing
        is raised here (the CPU tile update raises: :func:`crossbar._sparse_update.cpu_pulse_counts`).
    """
    _check_inputs(x, d)
    _check_scalars(lr, dw_min, x.device)
    dtype = _compute_dtype(x.dtype)
    return _scales(x.detach().abs().to(dtype).amax(dim=-1), d.detach().abs().to(dtype).amax(dim=-1), lr, dw_min, cfg)


def _x_val(x_max: Tensor) -> Tensor:
    """``x_max`` as ``[batch, R|1, C]``: ``[batch, C]`` (the same inputs for every row block) gets a unit dim."""
    return x_max[:, None, :] if x_max.dim() == 2 else x_max


def _scales(x_max: Tensor, d_max: Tensor, lr: float | Tensor, dw_min: float | Tensor, cfg: UpdateParameters
            ) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`update_scales` from the maxima ``x_max = max_j |x|: [batch, C]`` (or per row block
    ``[batch, R|1, C]``) and ``d_max: [batch, R]``.

    An infinite maximum (an Inf in the inputs or errors of that sample and tile block) is taken as a NaN
    (:func:`_inf_as_nan`), so that with update management a diverging run's Inf gives exactly what its NaN gives:
    NaN scales (no line of that tile and sample fires) and, with BL management, ``BL`` cast from NaN (negative on
    x86 CPUs). Without update management the maxima are not used: the probabilities are ``B |x|``, so an Inf line
    fires in every slot (capped at 1), a NaN line in none. Nothing here raises: the CPU tile update
    (:func:`crossbar._sparse_update.cpu_pulse_counts`) raises in every configuration, from the maxima; the
    sync-free (GPU) path checks nothing on the host and leaves a NaN or Inf to the training loop's loss check."""
    if not isinstance(lr, Tensor) and not isinstance(dw_min, Tensor):
        return _scales_scalar(x_max, d_max, float(lr), float(dw_min), cfg)
    dtype, device = x_max.dtype, x_max.device
    batch, n_c = x_max.shape[0], x_max.shape[-1]
    n_r = d_max.shape[1]
    shape = (batch, n_r, n_c)
    lr_abs = torch.as_tensor(lr, dtype=dtype, device=device).abs()
    dw = torch.as_tensor(dw_min, dtype=dtype, device=device)

    # calculateBlAB: the learning-rate-only part.
    free_bl = cfg.free_bl(lr, dw_min, dtype)
    max_bl = cfg.desired_bl if free_bl is None else free_bl
    if free_bl is not None:  # only without fixed BL and BL management: A = B = 1
        ab_base = torch.ones_like(lr_abs)
    else:
        ab_base = torch.sqrt(lr_abs / (dw * max_bl))
    if not cfg.uses_management:
        a = ab_base.expand(shape).clone()
        bl = torch.full(shape, max_bl, dtype=torch.int64, device=device)
        return bl.masked_fill_(lr_abs == 0, 0), a, a.clone()

    x_max, d_max = _inf_as_nan(x_max), _inf_as_nan(d_max)
    x_val = _x_val(x_max)                                        # [batch, R|1, C]
    d_val = (cfg.um_grad_scale * d_max)[:, :, None]              # [batch, R, 1]
    empty = (x_val == 0) | (d_val == 0)                          # [batch, R, C]
    x_safe = torch.where(empty, 1.0, x_val)
    d_safe = torch.where(empty, 1.0, d_val)
    k = lr_abs * x_safe * d_safe / dw
    if cfg.update_bl_management:
        bl = torch.ceil(k).clamp_(1, cfg.desired_bl).to(torch.int64)
        a = torch.sqrt(lr_abs / (dw * bl.to(dtype)))
        b = a
    else:
        bl = torch.full(shape, max_bl, dtype=torch.int64, device=device)
        a = b = ab_base
    # Over budget: shrink d_val so that the largest x keeps probability 1 (errors get capped instead).
    d_safe = torch.where(k > cfg.desired_bl, d_safe * (cfg.desired_bl / k), d_safe)
    a = a * _sqrt_ratio(x_safe, d_safe)
    b = b * _sqrt_ratio(d_safe, x_safe)
    bl.masked_fill_(empty | (lr_abs == 0), 0)
    return bl, a, b


def _sqrt_ratio(num: Tensor, den: Tensor) -> Tensor:
    """``sqrt(num / den)`` of the positive maxima (or 1 where a line is empty; NaN kept), the factor of the scales
    ``a`` and ``b``. Where the quotient leaves the normal range of the dtype (a subnormal maximum such as
    ``|d| = 1e-40``, or ``x_max / d_max > 3.4e38`` in float32) it is ``sqrt(num) / sqrt(den)`` instead, capped at the
    largest float: the quotient's ``inf`` gave ``a = inf`` and so ``q = inf·0 = NaN`` on the lines without error and
    ``q = 1`` on the others, and its subnormal or 0 lost the digits of ``b``. Normal quotients are kept bit for bit;
    no host read (``torch.where``)."""
    ratio = num / den
    root = torch.sqrt(ratio)
    info = torch.finfo(root.dtype)
    outside = torch.isinf(ratio) | (ratio < info.tiny)
    return torch.where(outside, (num.sqrt() / den.sqrt()).clamp_(max=info.max), root)


def _sqrt_ratio_numpy(num: np.ndarray, den: np.ndarray) -> Tensor:
    """:func:`_sqrt_ratio` of numpy arrays (the CPU path, :func:`_scales_numpy`): the quotient by numpy, the square
    root by torch, as before; the split form only when some quotient leaves the normal range (a host test)."""
    ratio = num / den
    if (np.isinf(ratio) | (ratio < np.finfo(ratio.dtype).tiny)).any():
        return _sqrt_ratio(torch.from_numpy(np.asarray(num)), torch.from_numpy(np.asarray(den)))
    return torch.from_numpy(ratio).sqrt_()         # in place: ratio is not read again


def _inf_as_nan(t: Tensor) -> Tensor:
    """``t`` (maxima ``|x|`` or ``|d|``, any shape) with every infinite element replaced by NaN; finite elements
    (and NaNs) kept bit for bit. Without an Inf, ``t`` itself: on the CPU after a host read (numpy's test, a few
    microseconds for the ``[batch, C]`` maxima); on the sync-free path (GPU, :func:`~devices.host.host_reads_free`
    ``False``) always by ``torch.where``, which reads nothing on the host. Applied where the maxima enter the update
    management (the CPU's numpy path, :func:`_scales_numpy`, does the same on its own arrays)."""
    if host_reads_free(t) and t.dtype in (torch.float32, torch.float64) and not t.requires_grad:
        if not np.isinf(t.numpy()).any():
            return t
    return torch.where(torch.isinf(t), torch.nan, t)


def _scales_scalar(x_max: Tensor, d_max: Tensor, lr: float, dw: float, cfg: UpdateParameters
                   ) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`_scales` for a plain-number ``lr`` and ``dw_min``: the same float operations in the same order
    (so bit-identical results), with host scalars where the tensor version uses 0-d tensors (fewer ops)."""
    device, dtype = x_max.device, x_max.dtype
    batch, n_c = x_max.shape[0], x_max.shape[-1]
    shape = (batch, d_max.shape[1], n_c)
    lr_abs = abs(lr)
    if lr_abs == 0:
        zero = torch.zeros(shape, dtype=dtype, device=device)
        return torch.zeros(shape, dtype=torch.int64, device=device), zero, zero.clone()
    free_bl = cfg.free_bl(lr, dw, dtype)
    max_bl = cfg.desired_bl if free_bl is None else free_bl
    if free_bl is not None:
        ab_base = 1.0
    else:   # sqrt(lr / (dw * max_bl)) computed (on the host) exactly as the tensor version does
        ab_base = _ab_base(lr_abs, dw, max_bl, dtype)
    if not cfg.uses_management:
        base = torch.full(shape, ab_base, dtype=dtype, device=device)
        return torch.full(shape, max_bl, dtype=torch.int64, device=device), base, base.clone()

    if host_reads_free(device) and dtype in (torch.float32, torch.float64):
        return _scales_host(x_max, d_max, lr_abs, dw, max_bl, ab_base, cfg)
    x_max, d_max = _inf_as_nan(x_max), _inf_as_nan(d_max)
    x_val = _x_val(x_max)                                        # [batch, R|1, C]
    d_val = (d_max * cfg.um_grad_scale if cfg.um_grad_scale != 1.0 else d_max)[:, :, None]   # [batch, R, 1]
    empty = (x_val == 0) | (d_val == 0)                          # [batch, R, C]
    x_safe = torch.where(empty, 1.0, x_val)
    d_safe = torch.where(empty, 1.0, d_val)
    k = (x_safe * lr_abs).mul_(d_safe).div_(dw)                  # lr x d / dw_min
    a: Tensor | float
    if cfg.update_bl_management:
        bl_f = torch.ceil(k).clamp_(1, cfg.desired_bl)
        bl = bl_f.to(torch.int64)
        a = torch.full_like(bl_f, lr_abs).div_(bl_f.mul_(dw)).sqrt_()     # sqrt(lr / (dw BL))
    else:
        bl = torch.full(shape, max_bl, dtype=torch.int64, device=device)
        a = ab_base
    # Over budget: shrink d_val so that the largest x keeps probability 1 (errors get capped instead).
    d_safe = torch.where(k > cfg.desired_bl, d_safe * (cfg.desired_bl / k), d_safe)
    b = _sqrt_ratio(d_safe, x_safe).mul_(a)
    a = _sqrt_ratio(x_safe, d_safe).mul_(a)
    return bl.masked_fill_(empty, 0), a, b


@functools.lru_cache(maxsize=64)
def _ab_base(lr_abs: float, dw: float, max_bl: int, dtype: torch.dtype) -> float:
    """``sqrt(lr / (dw * max_bl))`` in ``dtype`` as the tensor version of :func:`_scales` computes it (cached:
    the same few learning rates recur every step)."""
    with host_scalar_math():   # CPU tensors of Python numbers (on the CPU whatever the default device): no device data
        cpu = torch.device("cpu")
        return float(torch.sqrt(torch.as_tensor(lr_abs, dtype=dtype, device=cpu)
                                / (torch.as_tensor(dw, dtype=dtype, device=cpu) * max_bl)))


def _scales_host(x_max: Tensor, d_max: Tensor, lr_abs: float, dw: float, max_bl: int, ab_base: float,
                 cfg: UpdateParameters) -> tuple[Tensor, Tensor, Tensor]:
    """The update-management part of :func:`_scales_scalar` for CPU tensors, in numpy: the same IEEE float
    operations in the same order on the same dtype (host scalars rounded to it first, as torch does; square
    roots by torch), so bit-identical results, with less per-operation overhead on these ``[batch, R, C]``
    arrays."""
    with np.errstate(all="ignore"):      # inf / NaN as torch gives them, silently (e.g. a diverged run)
        return _scales_numpy(x_max.numpy(), d_max.numpy(), lr_abs, dw, max_bl, ab_base, cfg)


def _scales_numpy(xv: np.ndarray, dv: np.ndarray, lr_abs: float, dw: float, max_bl: int, ab_base: float,
                  cfg: UpdateParameters) -> tuple[Tensor, Tensor, Tensor]:
    """The body of :func:`_scales_host` on the arrays ``xv = x_max``, ``dv = d_max`` (an infinite maximum taken as a
    NaN, as :func:`_inf_as_nan` does on the other paths: on these arrays, without another host copy)."""
    ft = xv.dtype.type
    if np.isinf(xv).any():
        xv = np.where(np.isinf(xv), ft(np.nan), xv)
    if np.isinf(dv).any():
        dv = np.where(np.isinf(dv), ft(np.nan), dv)
    x_val = xv[:, None, :] if xv.ndim == 2 else xv                              # [batch, R|1, C]
    d_val = (dv * ft(cfg.um_grad_scale) if cfg.um_grad_scale != 1.0 else dv)[:, :, None]   # [batch, R, 1]
    empty = (x_val == 0) | (d_val == 0)                                         # [batch, R, C]
    any_empty = bool(empty.any())
    if any_empty:
        one = ft(1.0)
        x_safe, d_safe = np.where(empty, one, x_val), np.where(empty, one, d_val)
    else:               # the same values, left to broadcast (each np.where costs more than the rest here)
        x_safe, d_safe = x_val, d_val
    k = x_safe * ft(lr_abs)
    k = k * d_safe
    k /= ft(dw)                                                                 # lr x d / dw_min: [batch, R, C]
    if cfg.update_bl_management:
        bl_f = np.ceil(k)
        np.maximum(bl_f, ft(1.0), out=bl_f)                                     # np.clip, without its wrapper
        np.minimum(bl_f, ft(cfg.desired_bl), out=bl_f)
        bl = bl_f.astype(np.int64)
        bl_f *= ft(dw)
        a: Tensor | float = torch.from_numpy(np.divide(ft(lr_abs), bl_f)).sqrt_()   # sqrt(lr / (dw BL))
    else:
        bl = np.full(k.shape, max_bl, dtype=np.int64)
        a = ab_base
    # torch's ``number / tensor`` is ``tensor.reciprocal() * number``
    over = k > cfg.desired_bl
    if over.any():
        d_safe = np.where(over, d_safe * (np.reciprocal(k) * ft(cfg.desired_bl)), d_safe)
    # square roots by torch: its float32 sqrt is not always correctly rounded, numpy's is
    b = _sqrt_ratio_numpy(d_safe, x_safe).mul_(a)
    a = _sqrt_ratio_numpy(x_safe, d_safe).mul_(a)
    if any_empty:
        bl[empty] = 0
    return torch.from_numpy(bl), a, b


def _discretize(p: Tensor, cfg: UpdateParameters, generator: rng.Generator) -> Tensor:
    """Round firing probabilities to ``cfg.resolution`` (round half to even, as aihwkit's ``rintf``)."""
    res = cfg.resolution
    if res <= 0:
        return p
    if cfg.sto_round:
        u = rng.rand(p.shape, generator, device=p.device, dtype=p.dtype)
        return torch.round(p / res + (u - 0.5)) * res
    return torch.round(p / res) * res


def pulse_probabilities(
    x: Tensor,
    d: Tensor,
    lr: float | Tensor,
    dw_min: float | Tensor,
    cfg: UpdateParameters,
    generator: rng.Generator = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-slot firing probabilities of every line of every tile, and the train lengths.

    Args: as :func:`pulse_counts` (``generator`` is used only for stochastic rounding, ``cfg.sto_round``).

    Returns:
        ``p_x``: ``[batch, R, C, cols]`` probability that input line ``j`` of tile ``(r, c)`` fires in a slot;
        ``p_d``: ``[batch, R, C, rows]`` the same for error line ``i``;
        ``bl``: ``[batch, R, C]`` number of slots (``int64``). All probabilities are in ``[0, 1]``.
    """
    _check_inputs(x, d)
    _check_scalars(lr, dw_min, x.device)
    dtype = _compute_dtype(x.dtype)
    x_abs = x.detach().abs().to(dtype)                       # [batch, C, cols]
    d_abs = d.detach().abs().to(dtype)                       # [batch, R, rows]
    bl, a, b = _scales(x_abs.amax(dim=-1), d_abs.amax(dim=-1), lr, dw_min, cfg)
    p_x = _discretize(b[..., None] * x_abs[:, None, :, :], cfg, generator).clamp_(0.0, 1.0)
    p_d = _discretize(a[..., None] * d_abs[:, :, None, :], cfg, generator).clamp_(0.0, 1.0)
    return p_x, p_d, bl


def pulse_counts(
    x: Tensor,
    d: Tensor,
    lr: float | Tensor,
    dw_min: float | Tensor,
    cfg: UpdateParameters,
    generator: rng.Generator = None,
    trim_slots: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """Coincidence counts of the stochastic pulse trains of one update, per device, summed over the batch.

    Every sample of the batch is one update cycle with its own trains (BL and update management per
    sample and per tile, see :func:`update_scales`); every tile has its own independent trains.

    Args:
        x: ``[batch, C, cols]`` inputs of every tile column block (forward activations).
        d: ``[batch, R, rows]`` errors of every tile row block (gradient w.r.t. the tile outputs).
        lr: learning rate (plain number or 0-d tensor on ``x.device``); ``lr > 0`` moves ``W`` by about
            ``-lr * d x^T`` (as aihwkit's ``tile.update``), ``lr < 0`` the other way.
        dw_min: weight granularity of the device (weight change of one pulse), > 0.
        cfg: update parameters; ``cfg.pulse_type`` must be a pulsed type (for ``"none"`` use
            :func:`ideal_delta`).
        generator: the source of all randomness (on ``x.device``); ``None`` uses torch's default generator.
        trim_slots: allocate only ``max(BL)`` slots instead of ``desired_bl`` (BL management usually picks
            short trains, so this can be many times faster), at the price of one host-device sync
            (``bl.max()``). Same distribution; the random stream (hence the exact counts for a seed) differs
            from ``trim_slots=False``.

    Returns:
        ``n_up``, ``n_down``: ``[R, C, rows, cols]`` number of potentiating / depressing pulses per device,
        integer-valued, in ``x.dtype`` promoted to at least float32;
        ``total``: 0-d tensor, the total number of device pulses (``n_up.sum() + n_down.sum()``).
        With update management, a NaN or an Inf (either sign) in a sample's ``x`` or ``d`` silences that sample's
        trains in the tiles of its block (no pulse); without it a NaN line never fires and an Inf line fires in
        every slot. No error is raised here (nor on the tile arrays' sync-free GPU path), unlike the tile arrays'
        CPU update, which raises in every configuration (:func:`crossbar._sparse_update.cpu_pulse_counts`).

    Cost: two batched matmuls ``[R*C, rows, batch*BL] @ [R*C, batch*BL, cols]`` and random draws of
    ``R * C * batch * BL * (rows + cols)`` numbers (the memory peak; split huge batches if needed).
    """
    plan = _plan_trains(x, d, lr, dw_min, cfg, generator, trim_slots)
    return _dense_counts(_draw_dense_trains(plan, generator))


class _TrainPlan(NamedTuple):
    """Everything that defines the trains of one update, before any of them is drawn (compute dtype).

    Input line ``j`` of tile ``(r, c)`` fires in each slot of sample ``b`` with probability
    ``p_x = b[r, c, b] * x_abs[c, b, j]`` (or its discretized value, see ``p_x``), error line ``i`` with
    ``a[r, c, b] * d_abs[r, b, i]`` in the first ``bl[r, c, b]`` of the ``n_slots`` slots.
    """

    x_abs: Tensor       # [C, batch, cols] |x| (or per row block [R|1, C, batch, cols])
    d_abs: Tensor       # [R, batch, rows] |d|
    a: Tensor           # [R, C, batch] scale of the error probabilities
    b: Tensor           # [R, C, batch] scale of the input probabilities
    bl: Tensor          # [R, C, batch] int64 train lengths (slots)
    n_slots: int        # slots allocated per sample (>= max BL)
    x_sign: Tensor      # [C, batch, cols] sign of x (+1, -1, 0) (or per row block, as x_abs)
    d_sign: Tensor      # [R, batch, rows] sign of d times sign(lr): equal to x's sign -> the weight goes down
    p_x: Tensor | None  # [R, C, batch, cols] discretized probabilities, only with cfg.resolution > 0
    p_d: Tensor | None  # [R, C, batch, rows] likewise
    x_max: Tensor       # [C, batch] max |x| per sample and column block (or [R|1, C, batch], as x_abs)
    d_max: Tensor       # [R, batch] max |d| per sample and row block

    @property
    def shape(self) -> tuple[int, int, int, int, int, int]:
        """``(R, C, batch, n_slots, cols, rows)``."""
        n_r, n_c, batch = self.bl.shape
        return n_r, n_c, batch, self.n_slots, self.x_abs.shape[-1], self.d_abs.shape[-1]

    def x_per_tile(self, t: Tensor) -> Tensor:
        """``x_abs`` / ``x_sign`` as ``[R|1, C, batch, cols]``."""
        return t[None] if t.dim() == 3 else t


class _Trains(NamedTuple):
    """The drawn trains of one update as dense 0/1 tensors (compute dtype)."""

    x_bits: Tensor      # [R, C, batch, slot, cols]: input line j fires in that slot
    d_bits: Tensor      # [R, C, batch, slot, rows]: error line i fires (slots beyond the sample's BL silent)
    x_sign: Tensor      # [R|1, C, batch, cols], as _TrainPlan.x_per_tile
    d_sign: Tensor      # [R, batch, rows], as _TrainPlan (or per tile [R, C, batch, rows])

    def fired(self) -> tuple[Tensor, Tensor]:
        """Number of fired input / error lines per (tile, sample, slot): two ``[R*C*batch*slot]`` tensors."""
        n_x, n_d = self.x_bits.shape[-1], self.d_bits.shape[-1]
        return self.x_bits.view(-1, n_x).sum(dim=-1), self.d_bits.view(-1, n_d).sum(dim=-1)


def _plan_trains(x: Tensor, d: Tensor, lr: float | Tensor, dw_min: float | Tensor, cfg: UpdateParameters,
                 generator: rng.Generator, trim_slots: bool, drop_silent: bool = False) -> _TrainPlan:
    """Validate the arguments of :func:`pulse_counts` (same ``Args``) and compute the trains' parameters.

    ``drop_silent`` (the CPU's counts, host reads): when at least :data:`~crossbar._reduce.SILENT_SHARE` of the
    samples have all-zero errors (a convolution's output positions that max pooling and ReLU gave no gradient), the
    plan leaves them out (:func:`~crossbar._reduce.live_samples`): their trains are 0 slots long (``BL = 0``), so
    they carry no pulse, and the inputs' planning (``|x|``, signs, maxima) is then done for the others only. Its
    ``batch`` is the kept samples'."""
    if cfg.pulse_type == "none":
        raise ValueError(
            "pulse_counts: UpdateParameters.pulse_type is 'none' (exact float update); use ideal_delta(x, d, lr)"
        )
    _check_inputs(x, d)
    _check_scalars(lr, dw_min, x.device)
    dtype = _compute_dtype(x.dtype)
    x = x.detach() if x.dtype == dtype else x.detach().to(dtype)
    d = d.detach() if d.dtype == dtype else d.detach().to(dtype)
    # |x|, |d| and the signs laid out per tile block ([C, batch, cols] or [R|1, C, batch, cols]; [R, batch, rows]),
    # written contiguously in that order (flattening them later, as the sparse CPU path does, is then free)
    d_abs, d_sign = _abs_and_sign(d.permute(1, 0, 2))
    d_max = nonneg_amax(d_abs)                                # [R, batch]
    # samples with an error (a NaN: kept); a silent sample has a zero maximum in every row block, so none is silent
    # unless some maximum is zero (a cheap host read first: the CPU's usual case of no silent sample)
    live = live_samples(d_max.amax(dim=0)) if drop_silent and has_zero(d_max) else None
    if live is not None:
        x = x.index_select(0, live)
        d_abs, d_sign, d_max = (t.index_select(1, live) for t in (d_abs, d_sign, d_max))
    x_abs, x_sign = _abs_and_sign(x.permute(*((1, 0, 2) if x.dim() == 3 else (1, 2, 0, 3))))
    x_max = nonneg_amax(x_abs)
    bl, a, b = _scales(x_max.movedim(-1, 0), d_max.movedim(-1, 0), lr, dw_min, cfg)   # [batch, R, C]
    if trim_slots and bl.numel() > 0:   # the longest train (numpy's max: a cheaper host read on the CPU)
        # at least 0: a NaN (or Inf) in every sample casts every BL from NaN (negative on the CPU): no slot
        n_slots = max(int(bl.numpy().max()) if host_reads_free(bl) else int(bl.max()), 0)
    else:
        n_slots = cfg.max_bl(lr, dw_min, dtype)
    a, b, bl = a.permute(1, 2, 0), b.permute(1, 2, 0), bl.permute(1, 2, 0)
    p_x = p_d = None
    if cfg.resolution > 0:
        p_x = _discretize(b[..., None] * (x_abs[None] if x.dim() == 3 else x_abs), cfg, generator)
        p_d = _discretize(a[..., None] * d_abs[:, None], cfg, generator)
    if isinstance(lr, Tensor):
        d_sign = d_sign.mul_(lr.to(dtype).sign())
    elif lr < 0:
        d_sign = d_sign.neg_()
    return _TrainPlan(x_abs, d_abs, a, b, bl, n_slots, x_sign, d_sign, p_x, p_d, x_max, d_max)


def _abs_and_sign(v: Tensor) -> tuple[Tensor, Tensor]:
    """``(|v|, sign(v))`` of a (permuted) view, each a contiguous tensor of ``v``'s shape."""
    if v.is_contiguous():
        return v.abs(), v.sign()
    return (torch.abs(v, out=torch.empty(v.shape, dtype=v.dtype, device=v.device)),
            torch.sign(v, out=torch.empty(v.shape, dtype=v.dtype, device=v.device)))


def _draw_dense_trains(plan: _TrainPlan, generator: rng.Generator) -> _Trains:
    """Draw every line's train: one uniform per line and slot (``u < p`` fires)."""
    n_r, n_c, batch, n_slots, cols, rows = plan.shape
    device, dtype = plan.x_abs.device, plan.x_abs.dtype
    # Layout [R, C, batch, slot, line]: each tile's trains are one contiguous [batch*slot, line] block.
    p_x = plan.b[..., None] * plan.x_per_tile(plan.x_abs) if plan.p_x is None else plan.p_x
    p_d = plan.a[..., None] * plan.d_abs[:, None] if plan.p_d is None else plan.p_d
    # In place on the uniform draws (p <= 0 never fires, p >= 1 always: no [0, 1] clamp needed).
    x_bits = rng.rand((n_r, n_c, batch, n_slots, cols), generator, device=device, dtype=dtype)
    x_bits = x_bits.lt_(p_x[:, :, :, None, :])
    d_bits = rng.rand((n_r, n_c, batch, n_slots, rows), generator, device=device, dtype=dtype)
    d_bits = d_bits.lt_(p_d[:, :, :, None, :])
    if n_slots > 1:
        # slots beyond a sample's BL stay silent (with one slot, BL = 0 only where all p_x or all p_d are 0)
        slot = torch.arange(n_slots, device=device)
        d_bits.mul_((slot < plan.bl[..., None]).to(dtype)[..., None])
    return _Trains(x_bits, d_bits, plan.x_per_tile(plan.x_sign), plan.d_sign)


def _dense_counts(trains: _Trains, total: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """``(n_up, n_down, total)`` of :func:`pulse_counts` from the trains: two batched matmuls over the slots.

    ``total`` (the number of coincidences, ``sum(fired_x * fired_d)``) is computed when not given.
    """
    x_bits, d_bits = trains.x_bits, trains.d_bits
    n_r, n_c, batch, n_slots, cols = x_bits.shape
    rows = d_bits.shape[-1]
    tiles, k_len = n_r * n_c, batch * n_slots
    if total is None:
        fired_x, fired_d = trains.fired()
        total = (fired_x * fired_d).sum()
    x_sign = trains.x_sign[:, :, :, None, :]
    d_sign = (trains.d_sign[:, None] if trains.d_sign.dim() == 3 else trains.d_sign)[:, :, :, None, :]
    low = _count_operand_dtype(x_bits.device, x_bits.dtype, k_len)
    if low is not None:                             # 0 and ±1 are exact in bfloat16 (see _count_operand_dtype)
        x_bits, d_bits, x_sign, d_sign = (t.to(low) for t in (x_bits, d_bits, x_sign, d_sign))
    x_flat = x_bits.view(tiles, k_len, cols)
    d_flat = d_bits.view(tiles, k_len, rows)
    xs_flat = (x_bits * x_sign).view(tiles, k_len, cols)
    ds_flat = (d_bits * d_sign).view(tiles, k_len, rows)
    swap = _swap_count_operands(x_bits.device, k_len, rows, cols)
    if swap:                                        # [tiles, cols, rows] products (see _swap_count_operands)
        d_flat, x_flat, ds_flat, xs_flat = x_flat, d_flat, xs_flat, ds_flat
    if low is None:
        both = torch.bmm(d_flat.transpose(1, 2), x_flat)                            # n_up + n_down
        # n_down = (both + signed) / 2 with signed = same-sign minus opposite-sign coincidences (integers: exact)
        n_down = torch.baddbmm(both, ds_flat.transpose(1, 2), xs_flat, beta=0.5, alpha=0.5)
    else:                                           # float32 sums of the bfloat16 products (exact integers)
        both = torch.bmm(d_flat.transpose(1, 2), x_flat, out_dtype=torch.float32)
        n_down = torch.bmm(ds_flat.transpose(1, 2), xs_flat, out_dtype=torch.float32).add_(both).mul_(0.5)
    n_up = both.sub_(n_down)
    return _count_layout(n_up, n_r, n_c, rows, cols, swap), _count_layout(n_down, n_r, n_c, rows, cols, swap), total


COUNT_BF16_MIN_SLOTS = 4096
"""Shortest count matmul (``batch × slots`` per tile) that :func:`_count_operand_dtype` runs in bfloat16: measured
on an H200, 1.7x *slower* at 1,984 (784-256 MLP tiles at batch 64), 1.5x faster at 7,936 (one 1024² tile at batch
256) and 2.3x at 388,864 (the 256-channel CNN's second convolution, 9 tiles of 256²)."""

COUNT_BF16_MAX_SLOTS = 2 ** 24
"""Longest count matmul that :func:`_count_operand_dtype` runs in bfloat16: float32 accumulation adds integers
exactly up to 2^24 (the float32 matmul has the same limit)."""

count_bf16 = True
"""Whether float32 trains on CUDA are counted with bfloat16 operands (:func:`_count_operand_dtype`); a switch for
the GPU check that compares both ways (``benchmarks/check_crossbar_cuda.py``), not a setting."""


def _count_operand_dtype(device: torch.device, dtype: torch.dtype, k_len: int) -> torch.dtype | None:
    """``torch.bfloat16`` where the coincidence counts of float32 trains on CUDA are multiplied as bfloat16 with
    float32 sums (``bmm(..., out_dtype=torch.float32)``, CUDA only), else ``None`` (the trains' own dtype).

    The operands hold only 0 and ±1 (exact in bfloat16), their products are exact and the float32 sums stay exact
    integers up to 2^24 terms (:data:`COUNT_BF16_MAX_SLOTS`): the same counts as the float32 matmul, on tensor
    cores (checked equal on an H200 by ``benchmarks/check_crossbar_cuda.py``). Taken for long matmuls only
    (:data:`COUNT_BF16_MIN_SLOTS`): on an H200 (twenty-eighth session) the 256-channel CNN's second convolution
    counts over ``64 × 196`` positions × 31 slots per tile, its float32 count matmuls (a small-tile SIMT kernel)
    took about half of the training step's GPU time, and bfloat16 cut the step from 81 to 47 ms; short ones got
    slower. float64 trains keep float64."""
    if (count_bf16 and device.type == "cuda" and dtype == torch.float32
            and COUNT_BF16_MIN_SLOTS <= k_len <= COUNT_BF16_MAX_SLOTS):
        return torch.bfloat16
    return None


def _swap_count_operands(device: torch.device, k_len: int, rows: int, cols: int) -> bool:
    """Whether the count matmuls over ``k_len`` slots multiply ``xᵀ d`` (``[tiles, cols, rows]``, laid out as
    ``[.., rows, cols]`` afterwards by :func:`_count_layout`) instead of ``dᵀ x``: on the CPU, for trains of at
    least 1,024 slots with fewer input lines than error lines and an input count that is not a multiple of 16
    (the first layers of CNNs: 9 or 27 lines). The sums are the same exact integers either way; MKL's CPU
    matmul was measured (AVX2 machine) 1.04–10× faster in that orientation over 1,024–50,176 slots (16 × 9:
    2.3–5.9×, 64 × 27: 1.8×; the layout copy included), and slower or even elsewhere."""
    return device.type == "cpu" and k_len >= 1024 and cols < rows and cols % 16 != 0


def _count_layout(counts: Tensor, n_r: int, n_c: int, rows: int, cols: int, swapped: bool) -> Tensor:
    """Per-tile counts ``[R*C, rows, cols]`` (``[R*C, cols, rows]`` when ``swapped``) as a contiguous
    ``[R, C, rows, cols]`` tensor."""
    if swapped:
        return counts.transpose(1, 2).contiguous().view(n_r, n_c, rows, cols)
    return counts.view(n_r, n_c, rows, cols)


def ideal_delta(x: Tensor, d: Tensor, lr: float | Tensor) -> Tensor:
    """Exact floating-point weight change of every tile (``pulse_type="none"``).

    Args:
        x: ``[batch, C, cols]`` inputs of every tile column block.
        d: ``[batch, R, rows]`` errors of every tile row block.
        lr: learning rate (plain number or 0-d tensor).

    Returns:
        ``[R, C, rows, cols]``: ``-lr * sum_b d[b, r, :]^T x[b, c, :]`` (weight units).
    """
    _check_inputs(x, d)
    _check_update_lr(lr, x.device, "exact update")
    return -lr * torch.einsum("bri,bcj->rcij", d, x)
