"""A whole crossbar configuration ("rpu config"): device model, periphery of both directions, update, tiles.

:class:`CrossbarConfig` plays the role of aihwkit's ``SingleRPUConfig``; :func:`to_aihwkit_rpu_config`
builds that aihwkit config from it (aihwkit is imported lazily, only there).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from crossbar.mapping import _check_size
from crossbar.periphery import IOParameters
from crossbar.update import UpdateParameters
from devices import ConstantStepDevice, PulsedDevice

__all__ = ["CrossbarConfig", "to_aihwkit_io_parameters", "to_aihwkit_rpu_config"]


@dataclass(frozen=True)
class CrossbarConfig:
    """Everything a layer on crossbar tiles needs (cf. aihwkit ``SingleRPUConfig``).

    Attributes:
        device: pulsed device model of every cross-point (default: aihwkit's ConstantStep defaults).
        forward: periphery of the forward MVM ``y = W x``.
        backward: periphery of the backward (transposed) MVM ``x_grad = Wᵀ d``; bound management is
            ignored there (as in aihwkit).
        update: pulsed-update parameters (``pulse_type="none"``: exact float update, no device).
        tile_rows: physical output lines per tile (>= 1).
        tile_cols: physical input lines per tile (>= 1).
    """

    device: PulsedDevice = field(default_factory=ConstantStepDevice)
    forward: IOParameters = field(default_factory=IOParameters)
    backward: IOParameters = field(default_factory=IOParameters)
    update: UpdateParameters = field(default_factory=UpdateParameters)
    tile_rows: int = 256
    tile_cols: int = 256

    def __post_init__(self) -> None:
        if not isinstance(self.device, PulsedDevice):
            raise ValueError(f"CrossbarConfig.device must be a devices.PulsedDevice, got {self.device!r}")
        for name in ("forward", "backward"):
            if not isinstance(getattr(self, name), IOParameters):
                raise ValueError(f"CrossbarConfig.{name} must be a crossbar.IOParameters, "
                                 f"got {getattr(self, name)!r}")
        if not isinstance(self.update, UpdateParameters):
            raise ValueError(f"CrossbarConfig.update must be a crossbar.UpdateParameters, got {self.update!r}")
        for name in ("tile_rows", "tile_cols"):     # a numpy integer (a sweep's value) is kept as its Python int
            object.__setattr__(self, name, _check_size("CrossbarConfig", name, getattr(self, name)))

    def replace(self, **changes: Any) -> "CrossbarConfig":
        """Copy with some fields changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def perfect(cls, device: PulsedDevice | None = None, **kwargs: Any) -> "CrossbarConfig":
        """Ideal periphery in both directions (``is_perfect=True``); the device and update stay as given."""
        kwargs.setdefault("forward", IOParameters(is_perfect=True))
        kwargs.setdefault("backward", IOParameters(is_perfect=True))
        if device is not None:
            kwargs["device"] = device
        return cls(**kwargs)


_NM = {"abs_max": "ABS_MAX", "none": "NONE", "constant": "CONSTANT"}
_BM = {"iterative": "ITERATIVE", "none": "NONE"}
_WN = {"none": "NONE", "additive_constant": "ADDITIVE_CONSTANT"}


def to_aihwkit_io_parameters(p: IOParameters, transposed: bool = False):  # -> aihwkit ...parameters.io.IOParameters
    """The aihwkit ``IOParameters`` with the same semantics (lazy aihwkit import).

    Unbounded ranges (``math.inf``) become aihwkit's ``<= 0`` convention (0, which also turns off that
    converter's quantization, as it does here). Fields aihwkit has and this project does not model keep
    their "off" values (no IR drop, no non-linearity, one-pass MVM).

    Args:
        p: the periphery of one direction.
        transposed: ``p`` is the backward periphery (where bound management does not act, here or in aihwkit).

    Raises:
        ValueError: ``bm_test_negative_bound=False`` with iterative bound management in the forward direction
            (bounded ADC, not perfect): aihwkit 1.1's CPU tile lets a later output saturating at ``-out_bound``
            clear the "repeat" flag set by an earlier output above ``+out_bound``, so its bound management answers
            differently from this project's (repeat whenever any output saturates at ``+out_bound``); no aihwkit
            setting has this project's semantics.
    """
    from aihwkit.simulator.parameters.enums import (BoundManagementType, NoiseManagementType,
                                                    WeightNoiseType)
    from aihwkit.simulator.parameters.io import IOParameters as AIOParameters

    if (not transposed and not p.is_perfect and p.bound_management == "iterative" and math.isfinite(p.out_bound)
            and not p.bm_test_negative_bound):
        raise ValueError(
            "to_aihwkit_io_parameters: IOParameters.bm_test_negative_bound=False (forward, iterative bound "
            "management) has no aihwkit counterpart: aihwkit 1.1 lets an output saturating at -out_bound clear the "
            "repeat triggered by an earlier output above +out_bound (its answer depends on the order of the "
            "outputs); use bm_test_negative_bound=True or bound_management='none' to compare with aihwkit")

    def bound(b: float) -> float:
        return b if math.isfinite(b) else 0.0

    return AIOParameters(
        is_perfect=p.is_perfect,
        inp_bound=bound(p.inp_bound),
        inp_res=p.inp_res,
        inp_sto_round=p.inp_sto_round,
        inp_noise=p.inp_noise,
        out_bound=bound(p.out_bound),
        out_res=p.out_res,
        out_sto_round=p.out_sto_round,
        out_noise=p.out_noise,
        out_scale=p.out_scale,
        w_noise=p.w_noise,
        w_noise_type=getattr(WeightNoiseType, _WN[p.w_noise_type]),
        noise_management=getattr(NoiseManagementType, _NM[p.noise_management]),
        nm_thres=p.nm_thres,
        bound_management=getattr(BoundManagementType, _BM[p.bound_management]),
        max_bm_factor=p.max_bm_factor,
        max_bm_res=p.max_bm_res,
        bm_test_negative_bound=p.bm_test_negative_bound,
    )


def to_aihwkit_rpu_config(cfg: CrossbarConfig):  # -> aihwkit.simulator.configs.SingleRPUConfig
    """The equivalent aihwkit ``SingleRPUConfig`` (lazy aihwkit import), for validation against aihwkit.

    Tile size maps to ``mapping.max_output_size`` / ``max_input_size``; the bias is digital in both. Both
    spread a layer evenly over the fewest tiles that hold it; when a size does not divide evenly, aihwkit
    makes the first pieces one line larger while this project pads the last piece (same tile count, lines
    shifted by at most ``R - 1`` / ``C - 1``).

    Raises:
        ValueError: a setting without an aihwkit counterpart (see :func:`to_aihwkit_io_parameters` and
            ``devices.to_aihwkit``), naming the field.
    """
    import devices
    from aihwkit.simulator.configs import SingleRPUConfig
    from aihwkit.simulator.parameters.mapping import MappingParameter

    to_aihwkit = getattr(devices, "to_aihwkit", None)
    if to_aihwkit is None:
        raise ValueError("to_aihwkit_rpu_config needs devices.to_aihwkit (the devices package's converter)")
    return SingleRPUConfig(
        device=to_aihwkit(cfg.device),
        forward=to_aihwkit_io_parameters(cfg.forward),
        backward=to_aihwkit_io_parameters(cfg.backward, transposed=True),
        update=cfg.update.to_aihwkit(),
        mapping=MappingParameter(digital_bias=True, max_input_size=cfg.tile_cols,
                                 max_output_size=cfg.tile_rows),
    )
