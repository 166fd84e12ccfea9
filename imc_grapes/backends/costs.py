"""Hardware cost accounting: what a training step costs in array reads, conversions, pulses and digital ops,
and an optional energy estimate from an overridable table of per-operation energies.

Cost kinds (:data:`COST_KINDS`, all counted over *training* steps only, in either module mode; evaluation
forwards, under ``torch.no_grad()``, are excluded):

==========================  ===========================================================================
``forward_mvms``            input vectors sent through a layer's forward MVM (a batch of B is B; a conv
                            layer with L output positions is B·L)
``backward_mvms``           error vectors sent through a transposed (backward) MVM of the array
``forward_passes``          analog tile passes, forward (tiles × vectors × bound-management rounds)
``backward_passes``         analog tile passes, backward
``importance_reads``        GRAPES importance reads of a layer's array (one all-ones read, ``array`` source)
``adc_conversions``         output-line conversions (passes × logical output lines of the tile), all reads
``dac_conversions``         input-line conversions (passes × logical input lines of the tile), all reads
``array_macs``              analog multiply-accumulates done by the arrays (passes × logical cells of the tile)
``pulses``                  device pulses fired by the pulsed updates (aihwkit backend: the expected number)
``updates``                 pulsed update calls: crossbar one per layer and step (its tiles updated in one
                            call), aihwkit one per tile (aihwkit updates each tile with its own call)
``digital_macs``            digital multiply-accumulates of the weight products: the forward, weight-gradient
                            and input-gradient products of every layer of the digital backend; the fixed
                            feedback products of FA (``d @ B``) and DFA (``e @ Bᵀ``) on the analog backends.
                            Additions without a multiply are not MACs and are left out on purpose: a digital
                            bias's add (``B·out`` per layer and step) and its gradient's sum over the batch,
                            the same work on every backend (an analog layer's bias is digital too), so they
                            change no comparison of backends, and at most ``1/in`` of the layer's MACs. Not
                            counted either: activations, the loss, the digital optimizer's update
``grapes_ops``              digital operations of GRAPES: its factor refreshes (:func:`grapes_refresh_ops`) and its
                            scalings (below)
``importance_digital_adds`` additions of the ``exact`` importance (``Σ|w|`` over every weight, digital — what
                            a simulator can do; a chip would first have to read every weight)
==========================  ===========================================================================

GRAPES's scalings, per batch: one multiply per element of the error ``d`` that GRAPES scales (``B·n_out``, or
``B·L·C_out`` for a conv), plus the update-input elements scaled by DFA's presynaptic factor. (How
:class:`~imc_grapes.backends.network.Network` counts them per layer and training forward: the analog backends scale
``d`` — and under DFA ``x`` — of the pulsed update, or the output gradient in the propagated modes; the digital
backend's local modes scale the weight gradient, ``n_out·n_in`` multiplies, twice that under DFA, whose per-synapse
factor ``p_post_i·p_pre_j`` is one more multiply. In the local modes a digital bias's gradient is scaled too,
``n_out`` multiplies per layer (both backends; the propagated modes scale it with the output gradient). A scaling
that does not happen counts none: a frozen layer's or bias's, an output that sends no gradient.)

*Logical* lines and cells: those that hold the layer's matrix. When a layer does not divide evenly into its tiles,
the crossbar backend's grid pads its last row / column block with zeros (:class:`crossbar.mapping.TileGrid`);
a padding line carries no signal, so, like a tile's unused physical lines, it is neither driven, converted nor
multiplied, and aihwkit's uneven split has no padding: both backends count the same layer alike (a forward of
``B`` vectors on an ``R × C`` grid of an ``out × in`` layer, one pass each: ``B·R·in`` DAC and ``B·C·out`` ADC
conversions, ``B·out·in`` MACs). The crossbar's MACs are the passes times the mean logical cells per tile, exact
unless bound management repeats a pass on some tiles of a padded grid and not on others.

Energy (:func:`energy_breakdown`): ``Σ_kind count × energy``. The defaults (:data:`ENERGY_TABLE_PJ`) are
**order-of-magnitude values, not a circuit design**: a converter costs ``pJ_per_level × 2**bits`` (the
Walden figure-of-merit scaling; a few fJ per conversion step is typical of published SAR ADCs, see
B. Murmann's "ADC Performance Survey"); the per-conversion and per-cell defaults were chosen so that one
full 256×256 forward read with a 9-bit ADC and a 7-bit DAC costs ≈ 11 fJ per MAC (≈ 65 pJ array + 655 pJ
ADC + 33 pJ DAC for 65,536 MACs), the figure that Marinella et al., "Multiscale Co-Design Analysis of Energy,
Latency, Area, and Accuracy of a ReRAM Analog Neural Training Accelerator", IEEE JETCAS 8(1), 2018, report
for their 14/16 nm analog ReRAM block. Digital operations use M. Horowitz, "Computing's energy problem (and
what we can do about it)", ISSCC 2014 (45 nm: FP32 add 0.9 pJ, FP32 multiply 3.7 pJ). The device pulse
energy (1 pJ) is our assumption for a ReRAM programming pulse (≈ 10 µA × 1 V × 100 ns). Override any entry
with a dict or a JSON file (:func:`load_energy_table`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from devices.base import is_finite_number

from ..suggest import did_you_mean

__all__ = [
    "COST_KINDS",
    "ENERGY_TABLE_PJ",
    "ENERGY_SOURCES",
    "load_energy_table",
    "converter_energy_pj",
    "energy_breakdown",
    "grapes_refresh_ops",
    "ops_total",
    "summary_table",
    "grapes_overhead",
]

COST_KINDS: tuple[str, ...] = (
    "forward_mvms",
    "backward_mvms",
    "forward_passes",
    "backward_passes",
    "importance_reads",
    "adc_conversions",
    "dac_conversions",
    "array_macs",
    "pulses",
    "updates",
    "digital_macs",
    "grapes_ops",
    "importance_digital_adds",
)

#: Default per-operation energies in pJ (order-of-magnitude values; sources in :data:`ENERGY_SOURCES`).
ENERGY_TABLE_PJ: dict[str, float] = {
    "adc_pj_per_level": 0.005,   # ADC: 5 fJ per conversion step -> 2.56 pJ per 9-bit conversion
    "dac_pj_per_level": 0.001,   # DAC / input driver: 1 fJ per level -> 0.128 pJ per 7-bit conversion
    "array_mac_pj": 0.001,       # one analog MAC in the array (cell current x read voltage x time)
    "pulse_pj": 1.0,             # one device programming pulse
    "digital_op_pj": 0.9,        # one digital add / compare / scale (FP32 add)
    "digital_mac_pj": 4.6,       # one digital multiply-accumulate (FP32 multiply + add)
}

ENERGY_SOURCES: dict[str, str] = {
    "adc_pj_per_level": "assumed Walden FoM 5 fJ/conversion-step (order of published SAR ADCs, B. Murmann, "
                        "ADC Performance Survey); calibrated with the two entries below to ~11 fJ/MAC for a "
                        "256x256 read (Marinella et al., IEEE JETCAS 2018)",
    "dac_pj_per_level": "assumption (input drivers/DACs cost well below the ADC); see adc_pj_per_level",
    "array_mac_pj": "assumption: ~1 uA x 0.2 V x 5 ns per cell; see adc_pj_per_level",
    "pulse_pj": "assumption: ReRAM programming pulse ~10 uA x 1 V x 100 ns",
    "digital_op_pj": "Horowitz, ISSCC 2014, 45 nm: FP32 add 0.9 pJ",
    "digital_mac_pj": "Horowitz, ISSCC 2014, 45 nm: FP32 multiply 3.7 pJ + add 0.9 pJ",
}

#: Converter resolution assumed for the energy of an unquantized converter (a 0-bit setting). An ideal periphery
#: (``AnalogSettings.ideal_periphery``) is priced at the configured ``adc_bits`` / ``dac_bits``: the same converters,
#: simulated without their errors.
IDEAL_CONVERTER_BITS = 8


def load_energy_table(overrides: Mapping[str, float] | str | Path | None = None) -> dict[str, float]:
    """The default table with ``overrides`` applied (a dict, or the path of a JSON file holding one).

    Raises:
        ValueError: an unknown entry (the message lists the valid names) or a value that is not a finite
            number >= 0.
    """
    table = dict(ENERGY_TABLE_PJ)
    if overrides is None:
        return table
    if isinstance(overrides, (str, Path)):
        path = Path(overrides)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"energy table {str(path)!r} could not be read as JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError(f"energy table {str(path)!r} must hold a JSON object {{name: pJ}}, "
                             f"got {type(data).__name__}")
        overrides = data
    for key, value in overrides.items():
        if key not in ENERGY_TABLE_PJ:
            raise ValueError(f"energy table: unknown entry {key!r}; valid: {', '.join(ENERGY_TABLE_PJ)}"
                             f"{did_you_mean(key, ENERGY_TABLE_PJ)}")
        if not (is_finite_number(value) and value >= 0):
            raise ValueError(f"energy table: {key} must be a finite number >= 0 (pJ), got {value!r}")
        table[key] = float(value)
    return table


def converter_energy_pj(pj_per_level: float, bits: int) -> float:
    """Energy of one conversion: ``pj_per_level · 2**bits`` (``bits == 0``: :data:`IDEAL_CONVERTER_BITS`)."""
    return pj_per_level * 2.0 ** (bits if bits > 0 else IDEAL_CONVERTER_BITS)


def energy_breakdown(counts: Mapping[str, float], table: Mapping[str, float], adc_bits: int,
                     dac_bits: int) -> dict[str, float]:
    """Energy in pJ per cost kind (and ``"total"``) of the given ``counts`` (any subset of :data:`COST_KINDS`).

    Args:
        counts: ``kind -> count``; missing kinds count 0, ``None`` (not measured) counts 0.
        table: per-operation energies (:func:`load_energy_table`).
        adc_bits, dac_bits: converter resolutions (0: unquantized, priced at :data:`IDEAL_CONVERTER_BITS`).
    """
    def c(kind: str) -> float:
        v = counts.get(kind)
        return float(v) if v is not None else 0.0

    out = {
        "adc_conversions": c("adc_conversions") * converter_energy_pj(table["adc_pj_per_level"], adc_bits),
        "dac_conversions": c("dac_conversions") * converter_energy_pj(table["dac_pj_per_level"], dac_bits),
        "array_macs": c("array_macs") * table["array_mac_pj"],
        "pulses": c("pulses") * table["pulse_pj"],
        "digital_macs": c("digital_macs") * table["digital_mac_pj"],
        "grapes_ops": c("grapes_ops") * table["digital_op_pj"],
        "importance_digital_adds": c("importance_digital_adds") * table["digital_op_pj"],
    }
    out["total"] = sum(out.values())
    return out


def ops_total(counts: Mapping[str, float]) -> float:
    """One unweighted scalar per step: conversions (ADC + DAC) + pulses + digital MACs + GRAPES ops +
    exact-importance additions (the analog MACs themselves are not counted; use the energy to weigh them)."""
    keys = ("adc_conversions", "dac_conversions", "pulses", "digital_macs", "grapes_ops", "importance_digital_adds")
    return float(sum(float(counts.get(k) or 0.0) for k in keys))


def grapes_refresh_ops(n_out: int, n_in: int, rule: str, mode: str, source: str,
                       partial_sums: int = 1, offset_correction: bool = False) -> tuple[int, int]:
    """Digital operations of one GRAPES refresh of one layer: ``(grapes_ops, importance_digital_adds)``.

    Args:
        n_out, n_in: rows (output neurons / channels) and columns (``C_in·kh·kw``) of the layer's matrix.
        rule: ``bp`` / ``fa`` (factors per output row from the row sums) or ``dfa`` (per input column from the
            column sums, ``n`` below is then ``n_in``).
        mode: the GRAPES mode; the layer-mean modes add one mean (``n`` adds).
        source: ``exact`` (``n_out·n_in`` digital additions of ``|w|``, reported apart as
            ``importance_digital_adds``) or ``array`` (the read itself is counted by the array; the partial
            sums of the ``partial_sums`` tiles along the summed dimension need ``(partial_sums − 1)·n`` adds).
        partial_sums: tiles whose partial sums are added digitally (tile columns for rows sums, tile rows for
            column sums).
        offset_correction: ``array`` read minus the nominal idle-device offset: one subtraction per sum (``n``).

    Counted per factor vector of length ``n``: the max (``n``), the scaling by ``2/max`` (``n``, the one
    division is included), the clip to ``[1, 2]`` for ``bp`` (``2n`` compares).
    """
    n = n_in if rule == "dfa" else n_out
    ops = 2 * n + (2 * n if rule == "bp" else 0)
    if mode.startswith("layer-mean"):
        ops += n
    if source == "array":
        return ops + max(partial_sums - 1, 0) * n + (n if offset_correction else 0), 0
    return ops, n_out * n_in


def summary_table(table: Mapping[str, float], adc_bits: int | None = None,
                  dac_bits: int | None = None) -> dict[str, Any]:
    """JSON-friendly record of the energy table used (values and sources) and, when given, the converter resolutions
    the conversions were priced at (``converter_bits``; 0: :data:`IDEAL_CONVERTER_BITS`)."""
    sources = {k: ENERGY_SOURCES[k] if table[k] == ENERGY_TABLE_PJ.get(k) else "user override" for k in table}
    out: dict[str, Any] = {"pj": dict(table), "sources": sources, "ideal_converter_bits": IDEAL_CONVERTER_BITS}
    if adc_bits is not None and dac_bits is not None:
        out["converter_bits"] = {"adc": int(adc_bits), "dac": int(dac_bits)}
    return out


def grapes_overhead(grapes: Mapping[str, Any], sgd: Mapping[str, Any]) -> dict[str, float | None]:
    """Cost of a GRAPES run over the cost of an SGD run, per training step, from two
    :meth:`~imc_grapes.backends.network.Network.cost_summary` records.

    Returns ``{"energy": ratio, "ops": ratio, "<kind>": ratio, ...}`` for the per-step energy, the unweighted op
    count (:func:`ops_total`) and every cost kind; ``None`` where the SGD run's value is 0 (e.g.
    ``grapes_ops``).
    """
    def ratio(a: float, b: float) -> float | None:
        return a / b if b else None

    out: dict[str, float | None] = {
        "energy": ratio(float(grapes["energy_pj_per_step"]), float(sgd["energy_pj_per_step"])),
        "ops": ratio(float(grapes["ops_per_step"]), float(sgd["ops_per_step"])),
    }
    for kind in COST_KINDS:
        out[kind] = ratio(float(grapes["per_step"][kind]), float(sgd["per_step"][kind]))
    return out
