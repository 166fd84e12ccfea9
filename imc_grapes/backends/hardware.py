"""From :class:`AnalogSettings` (what a run names) to the crossbar engine's :class:`crossbar.CrossbarConfig`.

Both analog backends use this one translation (the aihwkit backend converts the result with
``crossbar.to_aihwkit_rpu_config``), so the two simulators see the same device and periphery.
"""
from __future__ import annotations

import math
import warnings

import crossbar
import devices

from .settings import AnalogSettings

__all__ = ["bits_to_res", "crossbar_config_from", "io_parameters_from"]


def bits_to_res(bits: int) -> float:
    """Converter resolution (fraction of the full range) for ``bits`` bits, aihwkit's convention.

    ``1 / (2**bits - 2)`` (aihwkit's defaults: 7-bit DAC ``1/126``, 9-bit ADC ``1/510``: an odd number of
    levels, so that 0 is one of them); ``bits == 0`` means no quantization (0.0). One bit is refused: its grid
    (``res = 1``, step ``2 * bound``) rounds every value within ``±bound`` to 0, in aihwkit as in
    :mod:`crossbar` (a DAC would feed only zeros, an ADC read 0 unless saturated); 2 bits give the levels
    ``-bound, 0, +bound``.
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or bits < 0:
        raise ValueError(f"bits_to_res.bits must be an integer >= 0, got {bits!r}")
    if bits == 1:
        raise ValueError("bits_to_res.bits = 1 is no usable converter: one bit (res = 1, grid step 2 * bound) rounds "
                         "every value within the range to 0; use 0 (no quantization) or 2 bits or more")
    if bits == 0:
        return 0.0
    return 1.0 / (2 ** bits - 2)


def io_parameters_from(settings: AnalogSettings) -> crossbar.IOParameters:
    """Periphery of one MVM direction: DAC/ADC bits and output noise from ``settings``, aihwkit's defaults
    for the rest (noise management ``abs_max``, iterative bound management, ADC range ±12)."""
    if settings.ideal_periphery:
        return crossbar.IOParameters(is_perfect=True)
    return crossbar.IOParameters(inp_res=bits_to_res(settings.dac_bits), out_res=bits_to_res(settings.adc_bits),
                                 out_noise=float(settings.out_noise))


def crossbar_config_from(settings: AnalogSettings, *,
                         device: devices.PulsedDevice | None = None) -> crossbar.CrossbarConfig:
    """The :class:`crossbar.CrossbarConfig` of ``settings``.

    * device: ``settings.device()`` (the preset ``settings.preset`` with ``settings.device_overrides`` applied), or
      ``device`` when the caller has built it already (that same ``settings.device()``: the settings' validation
      passes the one it built); a unidirectional device (``w_min >= 0``, e.g. ``PCM``) gets a warning: one device
      per weight cannot hold a negative weight;
    * forward and backward periphery: :func:`io_parameters_from` (the same for both directions, as aihwkit's
      defaults); ``ideal_periphery`` gives exact MVMs (``is_perfect``) in both;
    * update: aihwkit's default pulsed update (stochastic compressed trains, BL 31, update and BL management);
    * tiles of ``tile_size × tile_size``.
    """
    if not isinstance(settings, AnalogSettings):
        raise ValueError(f"crossbar_config_from: expected an AnalogSettings, got {settings!r}")
    io = io_parameters_from(settings)
    if device is None:
        device = settings.device()
    w_min = float(getattr(device, "w_min", -math.inf))
    if w_min >= 0:
        warnings.warn(
            f"analog device {settings.preset!r} is unidirectional (w_min = {w_min:g}): each weight is one device, "
            f"so no weight can go below {w_min:g} and a network whose weights need both signs does not learn "
            "(the full-MNIST MLP stays at chance, docs/results.md). Such devices are meant for a G⁺/G⁻ pair "
            "with refresh (aihwkit's OneSidedUnitCell), which this engine does not model", UserWarning, stacklevel=2)
    return crossbar.CrossbarConfig(device=device, forward=io, backward=io,
                                   update=crossbar.UpdateParameters(), tile_rows=settings.tile_size,
                                   tile_cols=settings.tile_size)
