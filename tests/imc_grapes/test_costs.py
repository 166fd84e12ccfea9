"""Hardware cost accounting of the backends, checked against hand-counted values on a 2-layer net.

Net: MLP 8 -> 6 -> 4 (bias-free), batch B = 5, one tile per layer, ideal periphery (one pass per vector).
Per training step, by hand:

* forward MVMs: B per layer = 10; backward MVMs: layer 1 only (the input of layer 0 needs no gradient) = 5;
* ADC conversions: forward 5·6 + 5·4, backward of layer 1 5·6, GRAPES array read of layer 0: 6 -> 86;
* DAC conversions: forward 5·8 + 5·6, backward 5·4, array read 8 -> 98;
* array MACs: (5 + 5)·... = 5·48 + 5·24 (forward) + 5·24 (backward) + 48 (read) = 528;
* GRAPES digital ops: refresh of layer 0 (max 6, scale 6, clip 2·6 = 24) + error scaling B·6 = 30 -> 54.
"""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from imc_grapes.backends import (COST_KINDS, ENERGY_TABLE_PJ, AnalogSettings, build_network, grapes_overhead,
                                 load_energy_table)
from imc_grapes.backends.costs import converter_energy_pj, energy_breakdown, grapes_refresh_ops
from imc_grapes.config import TrainConfig

B = 5


def _cfg(backend: str = "crossbar", optimizer: str = "grapes", **analog: object) -> TrainConfig:
    settings = dict(preset="Ideal", ideal_periphery=True, tile_size=16, importance="array", sat_probe_every=0)
    settings.update(analog)
    return TrainConfig(dataset="synthetic", model="mlp", hidden=(6,), optimizer=optimizer, lr=0.05, backend=backend,
                       seed=3, analog=AnalogSettings(**settings))


def _batch(n: int = B, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 8, generator=g), torch.randint(0, 4, (n,), generator=g)


def _train_step(net, x, y) -> None:
    net.zero_grad()
    F.cross_entropy(net.model(x), y).backward()
    net.step()


HAND = {
    "forward_mvms": 10, "backward_mvms": 5, "forward_passes": 10, "backward_passes": 5, "importance_reads": 1,
    "adc_conversions": 86, "dac_conversions": 98, "array_macs": 528, "updates": 2, "digital_macs": 0,
    "grapes_ops": 54, "importance_digital_adds": 0,
}


def test_crossbar_counts_match_hand_counted_values_and_skip_evaluation():
    net = build_network(_cfg(), (8,), 4, "cpu")
    x, y = _batch()
    _train_step(net, x, y)
    net.model.eval()
    with torch.no_grad():                      # an evaluation between steps must not be counted
        net.model(torch.randn(50, 8))
    net.model.train()
    _train_step(net, *_batch(seed=1))
    s = net.cost_summary(steps_per_epoch=10)
    assert s["steps"] == 2
    for kind, value in HAND.items():
        assert s["per_step"][kind] == pytest.approx(value), kind
        assert s["counts"][kind] == pytest.approx(2 * value), kind
        assert s["per_epoch"][kind] == pytest.approx(10 * value), kind
    assert s["grapes_ops"] == pytest.approx(2 * 54)
    assert s["per_step"]["pulses"] > 0
    m = net.metrics()
    assert m["cost/adc_conversions_per_step"] == pytest.approx(86)
    assert m["cost/grapes_ops_per_step"] == pytest.approx(54)
    assert net.metrics() == {}                  # reset after the call, nothing new happened


def test_exact_importance_counts_digital_additions_instead_of_a_read():
    net = build_network(_cfg(importance="exact"), (8,), 4, "cpu")
    _train_step(net, *_batch())
    per = net.cost_summary()["per_step"]
    assert per["importance_reads"] == 0
    assert per["importance_digital_adds"] == 6 * 8
    assert per["adc_conversions"] == 86 - 6 and per["dac_conversions"] == 98 - 8
    assert per["grapes_ops"] == 54


def test_sgd_has_no_grapes_costs_and_grapes_overhead_is_the_read_plus_digital_ops():
    x, y = _batch()
    table = {k: 0.0 for k in ENERGY_TABLE_PJ}
    table["adc_pj_per_level"] = 1.0 / 2 ** 9        # 1 pJ per 9-bit conversion, everything else free
    runs = {}
    for opt in ("sgd", "grapes"):
        net = build_network(_cfg(optimizer=opt), (8,), 4, "cpu")
        net.energy_table = load_energy_table(table)
        _train_step(net, x, y)
        runs[opt] = net.cost_summary()
    sgd, gr = runs["sgd"]["per_step"], runs["grapes"]["per_step"]
    assert sgd["grapes_ops"] == 0 and sgd["importance_reads"] == 0
    assert gr["adc_conversions"] - sgd["adc_conversions"] == 6      # the one array read of layer 0
    assert runs["sgd"]["energy_pj_per_step"] == pytest.approx(80.0)
    assert runs["grapes"]["energy_pj_per_step"] == pytest.approx(86.0)
    ratio = grapes_overhead(runs["grapes"], runs["sgd"])
    assert ratio["energy"] == pytest.approx(86.0 / 80.0)
    assert ratio["adc_conversions"] == pytest.approx(86.0 / 80.0)
    assert ratio["grapes_ops"] is None                                  # SGD does none


def test_refresh_every_k_batches_reads_the_array_every_k():
    net = build_network(_cfg(importance_every=2), (8,), 4, "cpu")
    for i in range(4):
        _train_step(net, *_batch(seed=i))
    c = net.cost_summary()["counts"]
    assert c["importance_reads"] == 2
    assert c["grapes_ops"] == 2 * 24 + 4 * 30
    assert net.grapes is not None and net.grapes.refresh_count == 2


def test_pulses_equal_total_weight_change_for_one_sample_on_an_ideal_device():
    # B = 1: every device gets pulses of one sign only (sign(x_j d_i)), each exactly dw_min = 0.001, far from
    # the bounds, so the number of pulses is Σ|ΔW| / dw_min.
    net = build_network(_cfg(optimizer="sgd"), (8,), 4, "cpu")
    w0 = net.read_weights()
    _train_step(net, *_batch(n=1))
    w1 = net.read_weights()
    n = sum(int(torch.round((w1[k] - w0[k]).abs() / 1e-3).sum()) for k in w0)
    assert n > 0
    assert net.cost_summary()["counts"]["pulses"] == n


def test_digital_backend_counts_macs():
    net = build_network(_cfg(backend="digital"), (8,), 4, "cpu")
    _train_step(net, *_batch())
    per = net.cost_summary()["per_step"]
    # layer 0: forward + weight gradient 2·5·48; layer 1: forward + weight gradient + input gradient 3·5·24
    assert per["digital_macs"] == 2 * 5 * 48 + 3 * 5 * 24
    assert per["forward_mvms"] == 10 and per["backward_mvms"] == 5
    assert per["grapes_ops"] == 54 and per["importance_digital_adds"] == 48
    assert per["adc_conversions"] == 0 and per["pulses"] == 0


def test_aihwkit_analytic_counts_match_the_hand_count():
    pytest.importorskip("aihwkit")
    net = build_network(_cfg(backend="aihwkit", importance="exact", ideal_periphery=False), (8,), 4, "cpu")
    _train_step(net, *_batch())
    per = net.cost_summary()["per_step"]
    for kind in ("forward_mvms", "backward_mvms", "forward_passes", "backward_passes", "updates"):
        assert per[kind] == HAND[kind], kind
    assert per["adc_conversions"] == 86 - 6 and per["dac_conversions"] == 98 - 8
    assert per["array_macs"] == 528 - 48
    assert per["pulses"] > 0


def test_aihwkit_analytic_counts_of_a_tile_grid_by_hand():
    # 4×4 tiles: layer 0 (6×8) is a 2×2 grid, layer 1 (4×6) a 1×2 grid (one output block, two input blocks).
    # A tile pass converts its outputs and drives its inputs, so per vector a forward converts n_out per input
    # block and drives n_in per output block, and a backward the other way round:
    #   layer 0 forward (B = 5): passes 5·4, ADC 5·6·2, DAC 5·8·2, MACs 5·48; no backward (input needs no grad)
    #   layer 1 forward: passes 5·2, ADC 5·4·2, DAC 5·6·1, MACs 5·24; backward: passes 5·2, ADC 5·6·1, DAC 5·4·2
    pytest.importorskip("aihwkit")
    net = build_network(_cfg(backend="aihwkit", importance="exact", ideal_periphery=False, tile_size=4),
                        (8,), 4, "cpu")
    _train_step(net, *_batch())
    per = net.cost_summary()["per_step"]
    assert per["forward_mvms"] == 10 and per["backward_mvms"] == 5
    assert per["forward_passes"] == 20 + 10 and per["backward_passes"] == 10
    assert per["adc_conversions"] == 60 + 40 + 30
    assert per["dac_conversions"] == 80 + 30 + 40
    assert per["array_macs"] == 240 + 120 + 120
    assert per["updates"] == 4 + 2                           # one per tile with a pending gradient


def test_energy_breakdown_by_hand():
    table = load_energy_table()
    counts = {"adc_conversions": 10, "dac_conversions": 4, "array_macs": 1000, "pulses": 3, "digital_macs": 2,
              "grapes_ops": 5, "importance_digital_adds": 1}
    e = energy_breakdown(counts, table, adc_bits=9, dac_bits=7)
    assert e["adc_conversions"] == pytest.approx(10 * 0.005 * 512)
    assert e["dac_conversions"] == pytest.approx(4 * 0.001 * 128)
    assert e["array_macs"] == pytest.approx(1.0)
    assert e["pulses"] == pytest.approx(3.0)
    assert e["digital_macs"] == pytest.approx(2 * 4.6)
    assert e["grapes_ops"] + e["importance_digital_adds"] == pytest.approx(6 * 0.9)
    assert e["total"] == pytest.approx(sum(v for k, v in e.items() if k != "total"))
    # unquantized converters are priced at 8 bits
    assert converter_energy_pj(0.005, 0) == pytest.approx(0.005 * 256)
    # the documented calibration: one 256x256 forward read, 9-bit ADC, 7-bit DAC, is about 11 fJ per MAC
    read = energy_breakdown({"adc_conversions": 256, "dac_conversions": 256, "array_macs": 256 * 256}, table, 9, 7)
    assert 0.008 < read["total"] / (256 * 256) < 0.014


def test_energy_table_overrides_from_json(tmp_path):
    path = tmp_path / "energy.json"
    path.write_text(json.dumps({"pulse_pj": 2.5}))
    table = load_energy_table(str(path))
    assert table["pulse_pj"] == 2.5 and table["adc_pj_per_level"] == ENERGY_TABLE_PJ["adc_pj_per_level"]
    with pytest.raises(ValueError, match="unknown entry 'pulse'"):
        load_energy_table({"pulse": 1.0})
    with pytest.raises(ValueError, match="pulse_pj must be a finite number >= 0"):
        load_energy_table({"pulse_pj": -1.0})
    net = build_network(_cfg(energy_table=str(path)), (8,), 4, "cpu")
    assert net.cost_summary()["energy_table"]["pj"]["pulse_pj"] == 2.5


def test_an_energy_table_file_that_is_not_utf8_json_is_a_value_error_naming_it(tmp_path):
    """A binary file raised a bare UnicodeDecodeError that named neither the file nor the setting."""
    path = tmp_path / "energy.json"
    path.write_bytes(b"\xff\xfe{}")
    with pytest.raises(ValueError, match=r"energy table '.*energy\.json' could not be read as JSON: 'utf-8' codec"):
        load_energy_table(str(path))


def test_refresh_op_counts():
    assert grapes_refresh_ops(6, 8, "bp", "propagated", "array", 1) == (24, 0)
    assert grapes_refresh_ops(6, 8, "fa", "local", "exact") == (12, 48)
    assert grapes_refresh_ops(6, 8, "dfa", "propagated", "array", 3) == (16 + 2 * 8, 0)
    assert grapes_refresh_ops(6, 8, "bp", "layer-mean", "array", 2) == (24 + 6 + 6, 0)
    assert grapes_refresh_ops(6, 8, "bp", "propagated", "array", 2, True) == (24 + 6 + 6, 0)   # + one sub per row
    assert set(COST_KINDS) >= {"adc_conversions", "pulses", "grapes_ops"}


@pytest.mark.parametrize("rule", ["fa", "dfa"])
def test_fa_and_dfa_need_no_backward_read_but_a_digital_feedback_product(rule):
    # FA: layer 1 sends d @ B (B: [4, 6]) digitally: 5·4·6 MACs; DFA: hidden layer 0 receives e @ Bᵀ (B: [6, 4]):
    # 5·6·4 MACs. Neither reads an array backward.
    net = build_network(_cfg(optimizer="sgd").replace(rule=rule), (8,), 4, "cpu")
    _train_step(net, *_batch())
    per = net.cost_summary()["per_step"]
    assert per["backward_mvms"] == 0 and per["backward_passes"] == 0
    assert per["digital_macs"] == 5 * 4 * 6
    assert per["adc_conversions"] == 5 * 6 + 5 * 4


def test_digital_dfa_counts_no_input_gradient_macs():
    # DFA sends no error through the weights: every hidden layer receives e @ Bᵀ directly and discards what arrives
    # from above (the analog backends send zeros backward). MLP 8 -> 6 -> 5 -> 4, B = 5, by hand:
    #   forward + weight gradient of each layer: 2·5·(48 + 30 + 20) = 980; no input gradient, no backward MVM;
    #   the feedback products e @ Bᵀ of the two hidden layers: 5·6·4 + 5·5·4 = 220.
    cfg = _cfg(backend="digital", optimizer="sgd").replace(rule="dfa", hidden=(6, 5))
    net = build_network(cfg, (8,), 4, "cpu")
    _train_step(net, *_batch())
    per = net.cost_summary()["per_step"]
    assert per["forward_mvms"] == 15 and per["backward_mvms"] == 0
    assert per["digital_macs"] == 980 + 220


def test_cost_summary_records_the_converter_bits_its_energy_is_priced_at():
    # An ideal periphery is priced at the configured converters (here 6-bit ADC, 5-bit DAC): the summary alone
    # reproduces its energy. Per step (HAND): 86 ADC conversions · 0.005·2**6 + 98 DAC conversions · 0.001·2**5
    # + 528 array MACs · 0.001 + pulses · 1.
    net = build_network(_cfg(adc_bits=6, dac_bits=5), (8,), 4, "cpu")
    _train_step(net, *_batch())
    s = net.cost_summary()
    assert s["energy_table"]["converter_bits"] == {"adc": 6, "dac": 5}
    e = s["energy_pj"]["by_kind_per_step"]
    assert e["adc_conversions"] == pytest.approx(86 * 0.005 * 2 ** 6)
    assert e["dac_conversions"] == pytest.approx(98 * 0.001 * 2 ** 5)
    bits = s["energy_table"]["converter_bits"]
    again = energy_breakdown(s["per_step"], s["energy_table"]["pj"], bits["adc"], bits["dac"])
    assert again["total"] == pytest.approx(s["energy_pj_per_step"])
    digital = build_network(_cfg(backend="digital"), (8,), 4, "cpu").cost_summary()
    assert digital["energy_table"]["converter_bits"] == {"adc": 0, "dac": 0}


def _padded_step(backend: str, hidden: tuple[int, ...], importance: str, n: int = 2) -> dict[str, float]:
    """One training step of an MLP 5 -> hidden -> 2 on 4 x 4 tiles, batch ``n``."""
    cfg = _cfg(backend=backend, importance=importance, tile_size=4,
               ideal_periphery=backend == "crossbar").replace(hidden=hidden)
    net = build_network(cfg, (5,), 2, "cpu")
    g = torch.Generator().manual_seed(0)
    _train_step(net, torch.randn(n, 5, generator=g), torch.randint(0, 2, (n,), generator=g))
    return net.cost_summary()["per_step"]


def test_padded_tile_grid_counts_logical_lines_by_hand():
    """MLP 5 -> 3 -> 2 on 4 x 4 tiles, B = 2, GRAPES with the ``array`` importance. Layer 0 (3 x 5) is a 1 x 2 grid
    of 3 x 3 tiles whose second tile column has 2 logical input lines and one padding line; layer 1 (2 x 3) is one
    2 x 3 tile. The padding carries no signal and is neither driven nor converted nor multiplied (as in aihwkit's
    uneven 3 + 2 split). Per step, by hand:

    * forward: passes 2·2 + 2·1 = 6; DAC 2·5 + 2·3 = 16 (was 2·2·3 + 2·3 = 18, the padding line driven);
      ADC 2·(3 + 3) + 2·2 = 16; MACs 2·15 + 2·6 = 42 (was 2·2·9 + 12 = 48);
    * backward (layer 1 only, layer 0's input needs no gradient): passes 2, DAC 2·2 = 4, ADC 2·3 = 6, MACs 12;
    * the array read of layer 0's row sums (one pass per tile): DAC 5 (was 6), ADC 3 + 3 = 6, MACs 15 (was 18);
    * totals: DAC 25 (was 28), ADC 28, array MACs 69 (was 78); updates 2 (one call per layer);
    * GRAPES ops: refresh of layer 0 (max 3, scale 3, clip 2·3, the 2 tiles' partial sums 3 adds = 15) + error
      scaling B·3 = 6 -> 21.
    """
    per = _padded_step("crossbar", (3,), "array")
    hand = {"forward_mvms": 4, "backward_mvms": 2, "forward_passes": 6, "backward_passes": 2, "importance_reads": 1,
            "dac_conversions": 25, "adc_conversions": 28, "array_macs": 69, "updates": 2, "grapes_ops": 21}
    assert {k: per[k] for k in hand} == hand


@pytest.mark.parametrize("hidden", [(3,), (5, 5)])
def test_crossbar_and_aihwkit_count_a_padded_grid_alike(hidden):
    """The same padded network costs the same on both backends: aihwkit splits 5 lines into tiles of 3 + 2 without
    padding, the crossbar grid pads the last block to 3 and does not count the padding line. 5 -> 3 -> 2 pads the
    inputs of layer 0 (crossbar counted 22 DAC conversions per step against aihwkit's 20); 5 -> 5 -> 5 -> 2 pads
    both sides of the 5 x 5 layers and runs a backward through one (crossbar counted DAC 92, ADC 92, MACs 264
    against aihwkit's 78, 78, 190). ``updates`` differ by design (aihwkit: one call per tile); pulses are aihwkit's
    expected count."""
    pytest.importorskip("aihwkit")
    cb, ak = _padded_step("crossbar", hidden, "exact"), _padded_step("aihwkit", hidden, "exact")
    kinds = ("forward_mvms", "backward_mvms", "forward_passes", "backward_passes", "adc_conversions",
             "dac_conversions", "array_macs", "importance_reads", "importance_digital_adds", "grapes_ops")
    assert {k: cb[k] for k in kinds} == {k: ak[k] for k in kinds}
    if hidden == (3,):
        assert cb["dac_conversions"] == 20 and cb["adc_conversions"] == 22 and cb["array_macs"] == 54


@pytest.mark.parametrize("frozen", [0, 1])
def test_digital_frozen_layer_counts_no_weight_gradient_and_no_grapes_scaling(frozen):
    # MLP 8 -> 6 -> 4, B = 5, GRAPES (BP, propagated: layer 0's output gradient scaled, B·6 = 30 per step), by hand:
    #   layer 0 frozen: layer 0 forward 5·48 only; layer 1 forward + weight gradient 2·5·24, no input gradient (its
    #     input, from a frozen layer fed by data, needs none): 240 + 240 = 480 MACs, no backward MVM; layer 0's
    #     output sends no gradient, so GRAPES scales nothing: only the refresh, 24 ops;
    #   layer 1 frozen: layer 0 forward + weight gradient 2·5·48; layer 1 forward + input gradient 2·5·24:
    #     480 + 240 = 720 MACs, 5 backward MVMs; GRAPES: refresh 24 + scaling 30 = 54 ops.
    net = build_network(_cfg(backend="digital"), (8,), 4, "cpu")
    list(net.weight_layers.values())[frozen].requires_grad_(False)
    _train_step(net, *_batch())
    per = net.cost_summary()["per_step"]
    assert per["digital_macs"] == (480 if frozen == 0 else 720)
    assert per["backward_mvms"] == (0 if frozen == 0 else 5)
    assert per["grapes_ops"] == (24 if frozen == 0 else 54)


@pytest.mark.parametrize("optimizer", ["grapes", "grapes-local"])
def test_frozen_analog_layer_counts_no_grapes_scaling(optimizer):
    # Crossbar, GRAPES on layer 0 (propagated: its output gradient scaled; local: the d of its pulsed update), B·6 =
    # 30 multiplies per step, plus the refresh (max 6, scale 6, clip 12 = 24). Frozen, layer 0 is neither updated nor
    # sends an output gradient (its input is data), so nothing is scaled; the refresh still runs.
    for freeze, ops, updates in ((False, 54, 2), (True, 24, 1)):
        net = build_network(_cfg(optimizer=optimizer, importance="exact"), (8,), 4, "cpu")
        if freeze:
            list(net.analog_layers.values())[0].requires_grad_(False)
        _train_step(net, *_batch())
        per = net.cost_summary()["per_step"]
        assert per["grapes_ops"] == ops and per["updates"] == updates, freeze


def test_digital_dfa_grapes_counts_the_synapse_factor_and_the_gradient_scaling():
    # DFA + GRAPES on the digital backend, MLP 8 -> 6 -> 5 -> 4, B = 5: layer 1 (5×6) is modulated; its weight
    # gradient g_ij is multiplied by p_post_i·p_pre_j: 30 multiplies for the factors, 30 for the scaling. The
    # refresh of its p_pre (n = n_in = 6): max 6 + scale 6 = 12, and Σ|w| over its 30 weights (exact importance).
    cfg = _cfg(backend="digital").replace(rule="dfa", hidden=(6, 5))
    net = build_network(cfg, (8,), 4, "cpu")
    _train_step(net, *_batch())
    per = net.cost_summary()["per_step"]
    assert per["grapes_ops"] == 12 + 2 * 30
    assert per["importance_digital_adds"] == 30


@pytest.mark.parametrize("backend", ["crossbar", "aihwkit"])
def test_an_empty_batch_costs_no_mvm_and_no_update(backend):
    # A batch of 0 vectors sends nothing through the arrays and updates no device: both backends count 0 MVMs,
    # conversions, pulses and updates (aihwkit used to count one update call per tile).
    if backend == "aihwkit":
        pytest.importorskip("aihwkit")
    net = build_network(_cfg(backend=backend, optimizer="sgd", importance="exact"), (8,), 4, "cpu")
    w0 = net.read_weights()
    net.zero_grad()
    F.cross_entropy(net.model(torch.zeros(0, 8)), torch.zeros(0, dtype=torch.long), reduction="sum").backward()
    net.step()
    counts = net.cost_summary()["counts"]
    assert all(v == 0 for v in counts.values()), counts
    assert all(torch.equal(w0[k], w) for k, w in net.read_weights().items())


def _eval_mode_steps(backend: str, optimizer: str = "grapes", n_steps: int = 2) -> dict[str, float]:
    """``n_steps`` training steps of the 8 -> 6 -> 4 net with the model in ``eval()`` mode (grad enabled); the
    counts summed over the steps."""
    net = build_network(_cfg(backend=backend, optimizer=optimizer, importance="exact",
                             ideal_periphery=backend == "crossbar"), (8,), 4, "cpu")
    net.model.eval()
    for i in range(n_steps):
        _train_step(net, *_batch(seed=i))
    assert net.cost_summary()["steps"] == n_steps
    return net.cost_summary()["counts"]


@pytest.mark.parametrize("backend", ["crossbar", "aihwkit", "digital"])
def test_training_in_eval_mode_is_counted_as_in_training_mode(backend):
    """Training with ``model.eval()`` (e.g. dropout off) does the same work and is counted alike; only GRAPES's
    refresh follows its own rule — on training-mode forwards only — so over two steps the factors are computed once
    (lazily, at the first forward) and reused. By hand (module docstring; exact importance): per step forward 10 and
    backward 5 MVMs, 2 updates; the refresh of layer 0 once: 24 GRAPES ops and Σ|w| over 48 weights; the error
    scaling B·6 = 30 per step. Crossbar: ADC 2·80, DAC 2·90 (a step without the read). Digital: 2·(2·5·48 + 3·5·24)
    MACs."""
    if backend == "aihwkit":
        pytest.importorskip("aihwkit")
    c = _eval_mode_steps(backend)
    assert c["forward_mvms"] == 2 * 10 and c["backward_mvms"] == 2 * 5
    assert c["grapes_ops"] == 24 + 2 * 30 and c["importance_digital_adds"] == 48
    if backend == "digital":
        assert c["digital_macs"] == 2 * (2 * 5 * 48 + 3 * 5 * 24) and c["updates"] == 0
    else:
        assert c["updates"] == 2 * 2 and c["pulses"] > 0 and c["importance_reads"] == 0
        assert c["adc_conversions"] == 2 * (86 - 6) and c["dac_conversions"] == 2 * (98 - 8)
        assert c["array_macs"] == 2 * (528 - 48)


def test_training_in_eval_mode_counts_the_sgd_update_pulses_by_hand():
    """SGD in ``eval()`` mode, B = 1 on an ideal device: the pulses counted are Σ|ΔW| / dw_min (as in training
    mode: ``test_pulses_equal_total_weight_change_for_one_sample_on_an_ideal_device``), not 0."""
    net = build_network(_cfg(optimizer="sgd"), (8,), 4, "cpu")
    net.model.eval()
    w0 = net.read_weights()
    _train_step(net, *_batch(n=1))
    w1 = net.read_weights()
    n = sum(int(torch.round((w1[k] - w0[k]).abs() / 1e-3).sum()) for k in w0)
    assert n > 0 and net.cost_summary()["counts"]["pulses"] == n


def _biased_network(monkeypatch, cfg: TrainConfig):
    """``build_network`` of ``cfg`` with biases in every layer (the config's models are bias-free)."""
    import imc_grapes.backends.network as network_mod
    from imc_grapes.models import build_model

    monkeypatch.setattr(network_mod, "build_model", lambda *a, **k: build_model(*a, **k, bias=True))
    net = build_network(cfg, (8,), 4, "cpu")
    assert all(layer.bias is not None for layer in net.weight_layers.values())
    return net


@pytest.mark.parametrize("backend, optimizer, hand", [
    # crossbar, local: the refresh 24 + the d scaling B·6 = 30 + layer 0's bias gradient 6
    ("crossbar", "grapes-local", 24 + 30 + 6),
    # digital, local: the refresh 24 + layer 0's weight gradient 6·8 = 48 + its bias gradient 6
    ("digital", "grapes-local", 24 + 48 + 6),
    # propagated: the bias gradient comes from the scaled output gradient, no multiply of its own
    ("crossbar", "grapes", 24 + 30), ("digital", "grapes", 24 + 30)])
def test_local_grapes_counts_the_bias_gradient_scaling_by_hand(monkeypatch, backend, optimizer, hand):
    """MLP 8 -> 6 -> 4 with biases, B = 5, exact importance: only layer 0 is modulated. In the local modes GRAPES's
    parameter hook multiplies the digital bias gradient ``[6]`` by ``M``: 6 multiplies per step; a frozen bias gets
    no gradient, so none."""
    cfg = _cfg(backend=backend, optimizer=optimizer, importance="exact")
    net = _biased_network(monkeypatch, cfg)
    _train_step(net, *_batch())
    assert net.cost_summary()["per_step"]["grapes_ops"] == hand
    net = _biased_network(monkeypatch, cfg)
    list(net.weight_layers.values())[0].bias.requires_grad_(False)
    _train_step(net, *_batch())
    assert net.cost_summary()["per_step"]["grapes_ops"] == hand - (6 if optimizer == "grapes-local" else 0)


def test_digital_dfa_grapes_counts_the_bias_gradient_scaling_by_hand(monkeypatch):
    """DFA + GRAPES, MLP 8 -> 6 -> 5 -> 4 with biases, B = 5: layer 1's bias gradient ``[5]`` is multiplied by its
    ``p_post`` (5 multiplies, no per-synapse factor) on top of the bias-free count 12 + 2·30
    (``test_digital_dfa_grapes_counts_the_synapse_factor_and_the_gradient_scaling``)."""
    net = _biased_network(monkeypatch, _cfg(backend="digital").replace(rule="dfa", hidden=(6, 5)))
    _train_step(net, *_batch())
    assert net.cost_summary()["per_step"]["grapes_ops"] == 12 + 2 * 30 + 5


@pytest.mark.parametrize("backend, hand", [("crossbar", 24 + 30 + 6), ("digital", 24 + 48 + 6)])
def test_a_bias_unfrozen_after_grapes_is_attached_is_scaled_and_counted(monkeypatch, backend, hand):
    """Local GRAPES, MLP 8 -> 6 -> 4 with biases, B = 5, exact importance, the biases frozen when ``build_network``
    attaches GRAPES. Layer 0's bias unfrozen afterwards gets its gradient multiplied by ``M`` (= clip(2F/max F, 1,
    2), F the row sums of |W| of layer 0, by hand) and those 6 multiplies are counted, as for a bias trainable
    from the start (``test_local_grapes_counts_the_bias_gradient_scaling_by_hand``); left frozen, it gets neither
    a gradient nor a count."""
    import imc_grapes.backends.network as network_mod

    attach = network_mod.attach_grapes

    def attach_with_frozen_biases(model, *args, **kwargs):
        frozen = [p for name, p in model.named_parameters() if name.endswith("bias")]
        assert len(frozen) == 2
        for p in frozen:
            p.requires_grad_(False)
        return attach(model, *args, **kwargs)

    cfg = _cfg(backend=backend, optimizer="grapes-local", importance="exact")
    x, y = _batch()
    twin = _biased_network(monkeypatch, cfg.replace(optimizer="sgd"))    # no GRAPES: the unscaled gradient
    twin_bias = list(twin.weight_layers.values())[0].bias
    F.cross_entropy(twin.model(x), y).backward()
    monkeypatch.setattr(network_mod, "attach_grapes", attach_with_frozen_biases)
    for unfreeze in (False, True):
        net = _biased_network(monkeypatch, cfg)
        w0 = net.read_weights()
        assert all(torch.equal(w0[k], w) for k, w in twin.read_weights().items())
        name0 = next(iter(net.weight_layers))
        bias = net.weight_layers[name0].bias
        bias.requires_grad_(unfreeze)
        net.zero_grad()
        F.cross_entropy(net.model(x), y).backward()
        net.step()
        assert net.cost_summary()["per_step"]["grapes_ops"] == (hand if unfreeze else hand - 6)
        if not unfreeze:
            assert bias.grad is None
            continue
        f = w0[name0].abs().sum(1)
        m = (2 * f / f.max()).clamp(1, 2)
        assert not torch.allclose(m, torch.ones_like(m))
        torch.testing.assert_close(bias.grad, m * twin_bias.grad)


@pytest.mark.parametrize("optimizer", ["sgd", "grapes"])
def test_digital_macs_leave_out_the_bias_adds_by_definition(monkeypatch, optimizer):
    """``digital_macs`` counts multiply-accumulates of the weight products only (costs.py's definition): MLP 8 -> 6
    -> 4 with biases, B = 5, by hand: layer 0 forward 5·48 and weight gradient 5·48 (its input is data: no input
    gradient), layer 1 forward, weight gradient and input gradient 3·5·24 = 840 — the bias-free count. The biases'
    adds (5·6 + 5·4 forward) and their gradients' batch sums (4·6 + 4·4) are additions and are not in it; the bias
    gradients are really computed (the biases train)."""
    cfg = _cfg(backend="digital", optimizer=optimizer)
    net = _biased_network(monkeypatch, cfg)
    biases = [layer.bias for layer in net.weight_layers.values()]
    b0 = [b.detach().clone() for b in biases]
    net.zero_grad()
    F.cross_entropy(net.model(_batch()[0]), _batch()[1]).backward()
    assert all(b.grad is not None and bool(b.grad.abs().sum() > 0) for b in biases)
    net.step()
    assert all(not torch.equal(b, b_0) for b, b_0 in zip(biases, b0))
    assert net.cost_summary()["per_step"]["digital_macs"] == 2 * 5 * 48 + 3 * 5 * 24


# GRAPES's added work per layer and batch, checked against docs grapes.md §4 and the documented energy table: one
# array read (all-ones input, every row sum in one parallel read), one max over N_out values, one per-row scaling
# of the error (plus, as costs.py documents, the scaling by 2/max and, under BP, the clip to [1, 2]: 2·N_out
# compares); with the digital ``exact`` importance, one addition per weight instead of the read. Every count and
# energy below is worked out by hand from that list and from the table's documented values: 2.56 pJ per 9-bit ADC
# conversion (0.005 pJ · 2⁹), 0.128 pJ per 7-bit DAC conversion (0.001 pJ · 2⁷), 0.001 pJ per analog MAC, 0.9 pJ
# per digital operation.
ADC9_PJ, DAC7_PJ, MAC_PJ, OP_PJ = 2.56, 0.128, 0.001, 0.9


def _grapes_step(optimizer: str, importance: str, tile_size: int = 16, model: str = "mlp",
                 hidden: tuple[int, ...] = (5, 4), rule: str = "bp") -> dict[str, object]:
    """The cost summary of one training step on the crossbar (ideal periphery priced at a 9-bit ADC and a 7-bit
    DAC), batch 2: an MLP 6 -> ``hidden`` -> 3, or (``model="cnn"``) a conv net on 1×4×4 inputs with 3 classes."""
    cfg = _cfg(optimizer=optimizer, importance=importance, tile_size=tile_size, adc_bits=9, dac_bits=7)
    cfg = cfg.replace(model=model, hidden=hidden, rule=rule)
    shape = (6,) if model == "mlp" else (1, 4, 4)
    net = build_network(cfg, shape, 3, "cpu")
    g = torch.Generator().manual_seed(0)
    _train_step(net, torch.randn(2, *shape, generator=g), torch.randint(0, 3, (2,), generator=g))
    return net.cost_summary()


# MLP 6 -> 5 -> 4 -> 3, B = 2, one tile per layer; GRAPES modulates the hidden layers L0 (5×6) and L1 (4×5).
#   refresh, per layer: max N_out + scale N_out + clip 2·N_out: L0 4·5 = 20, L1 4·4 = 16 -> 36; the layer-mean
#     control adds one mean per layer (N_out adds): + 5 + 4 -> 45;
#   error scaling: B·N_out per modulated layer, 2·(5 + 4) = 18 (propagated: the output gradient; local: the d of
#     the pulsed update; layer-mean: as propagated);
#   ``array``: one read per layer, DAC over its input lines 6 + 5 = 11, ADC over its output lines 5 + 4 = 9,
#     MACs 30 + 20 = 50; ``exact``: no read, Σ|w| over 30 + 20 = 50 weights.
# SGD on the same net, per step: forward 2·(6 + 5 + 4) = 30 DAC, 2·(5 + 4 + 3) = 24 ADC, 2·(30 + 20 + 12) = 124 MACs;
# backward through L2 and L1 (L0's input is data): DAC 2·(3 + 4) = 14, ADC 2·(4 + 5) = 18, MACs 2·(12 + 20) = 64.
SGD_6543 = {"dac_conversions": 44, "adc_conversions": 42, "array_macs": 188, "importance_reads": 0,
            "grapes_ops": 0, "importance_digital_adds": 0, "forward_mvms": 6, "backward_mvms": 4}
READ_6543 = {"dac_conversions": 11, "adc_conversions": 9, "array_macs": 50, "importance_reads": 2}


@pytest.mark.parametrize("optimizer, refresh", [("grapes", 36), ("grapes-local", 36), ("layer-mean", 45)])
@pytest.mark.parametrize("importance", ["array", "exact"])
def test_grapes_costs_per_step_match_the_spec_list_by_hand(optimizer, importance, refresh):
    """Counts and energy per step of GRAPES (each mode, each importance) over SGD on the 6-5-4-3 MLP (above)."""
    sgd, gr = _grapes_step("sgd", importance), _grapes_step(optimizer, importance)
    hand = dict(SGD_6543, grapes_ops=refresh + 18)
    if importance == "array":
        hand.update({k: hand[k] + v for k, v in READ_6543.items()})
    else:
        hand["importance_digital_adds"] = 50
    assert {k: gr["per_step"][k] for k in hand} == hand
    assert {k: sgd["per_step"][k] for k in SGD_6543} == SGD_6543
    # GRAPES's energy over SGD's, every kind but the pulses (the updates differ), from the table by hand
    extra = (9 * ADC9_PJ + 11 * DAC7_PJ + 50 * MAC_PJ if importance == "array" else 50 * OP_PJ) + (refresh + 18) * OP_PJ
    e_gr, e_sgd = gr["energy_pj"]["by_kind_per_step"], sgd["energy_pj"]["by_kind_per_step"]
    assert e_gr["total"] - e_gr["pulses"] - (e_sgd["total"] - e_sgd["pulses"]) == pytest.approx(extra)
    assert e_gr["grapes_ops"] == pytest.approx((refresh + 18) * 0.9)
    # the unweighted op count: conversions + GRAPES ops + exact-importance additions + pulses (no digital MACs)
    ops = hand["dac_conversions"] + hand["adc_conversions"] + hand["grapes_ops"] + hand["importance_digital_adds"]
    assert gr["ops_per_step"] - gr["per_step"]["pulses"] == pytest.approx(ops)
    assert gr["grapes_ops_per_step"] == refresh + 18


def test_array_importance_on_a_tile_grid_reads_every_tile_and_adds_the_partial_sums_by_hand():
    """The 6-5-4-3 MLP on 4×4 tiles: L0 (5×6) is a 2×2 grid, L1 (4×5) a 1×2 grid, L2 (3×4) one tile. The row-sum read
    drives every tile once (all-ones input): each tile converts its logical output lines and drives its logical
    input lines, so a read of an R×C grid costs R·in DAC and C·out ADC conversions and out·in MACs, and the C tiles
    of a row give C partial sums: (C − 1)·out digital adds. By hand, per step (B = 2):

    * SGD forward: DAC 2·(2·6 + 1·5 + 1·4) = 42, ADC 2·(2·5 + 2·4 + 1·3) = 42; backward (L2, L1; rows driven):
      DAC 2·(1·3 + 2·4) = 22, ADC 2·(1·4 + 1·5) = 18 -> DAC 64, ADC 60;
    * the reads: L0 DAC 2·6 = 12, ADC 2·5 = 10, MACs 30; L1 DAC 1·5 = 5, ADC 2·4 = 8, MACs 20 -> DAC 17, ADC 18, 50;
    * GRAPES ops: refresh 36 + partial sums 1·5 + 1·4 = 9 + error scaling 18 = 63.
    """
    per = _grapes_step("grapes", "array", tile_size=4)["per_step"]
    hand = {"dac_conversions": 64 + 17, "adc_conversions": 60 + 18, "array_macs": 188 + 50, "importance_reads": 2,
            "grapes_ops": 36 + 9 + 18, "importance_digital_adds": 0}
    assert {k: per[k] for k in hand} == hand
    exact = _grapes_step("grapes", "exact", tile_size=4)["per_step"]     # no read and no partial sums
    assert exact["grapes_ops"] == 36 + 18 and exact["importance_digital_adds"] == 50
    assert exact["dac_conversions"] == 64 and exact["adc_conversions"] == 60


@pytest.mark.parametrize("importance", ["array", "exact"])
def test_grapes_costs_of_a_conv_layer_by_hand(importance):
    """CNN on 1×4×4 inputs, one conv block of 2 channels (3×3 kernel, same padding: L = 16 output positions), then
    2×2 pooling and a linear 8 -> 3; B = 2. GRAPES modulates the conv, a 2 × 9 matrix (N_out = C_out = 2,
    in = C_in·kh·kw = 9): refresh max 2 + scale 2 + clip 4 = 8; the error scaled per output channel at every
    position, B·L·C_out = 64; ``array``: one read, DAC 9, ADC 2, MACs 18; ``exact``: Σ|w| over 18 weights."""
    sgd = _grapes_step("sgd", importance, model="cnn", hidden=(2,))["per_step"]
    per = _grapes_step("grapes", importance, model="cnn", hidden=(2,))["per_step"]
    assert per["forward_mvms"] == 2 * 16 + 2
    assert per["grapes_ops"] == 8 + 64
    read = {"dac_conversions": 9, "adc_conversions": 2, "array_macs": 18, "importance_reads": 1}
    for kind, value in read.items():
        assert per[kind] - sgd[kind] == (value if importance == "array" else 0), kind
    assert per["importance_digital_adds"] == (0 if importance == "array" else 18)


def test_dfa_array_importance_reads_the_column_sums_through_the_backward_periphery_by_hand():
    """DFA, MLP 6 -> 5 -> 5 -> 3 on 4×4 tiles, B = 2: hidden layer 0 is unmodulated, layer 1 (5×5, a 2×2 grid) is
    scaled per synapse by p_post·p_pre, p_pre from its own column sums (N = in = 5). The column-sum read drives the
    output lines of every tile (backward periphery): DAC C·out = 2·5 = 10, ADC R·in = 2·5 = 10, MACs 25, and the R
    tiles of a column give (R − 1)·in = 5 digital adds. GRAPES ops: max 5 + scale 5 (no clip under DFA) + partial
    sums 5 + the update's d and x scaled, B·(out + in) = 2·(5 + 5) = 20 -> 35."""
    sgd = _grapes_step("sgd", "array", tile_size=4, hidden=(5, 5), rule="dfa")["per_step"]
    per = _grapes_step("grapes", "array", tile_size=4, hidden=(5, 5), rule="dfa")["per_step"]
    assert per["importance_reads"] == 1 and per["grapes_ops"] == 35 and per["importance_digital_adds"] == 0
    read = {"dac_conversions": 10, "adc_conversions": 10, "array_macs": 25}
    assert {k: per[k] - sgd[k] for k in read} == read
