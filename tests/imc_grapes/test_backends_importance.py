"""GRAPES importance read from the array (one all-ones read through DAC/ADC) against the exact Σ|w|.

* Ideal periphery: the array read equals the exact importance (rows and, for DFA, columns), M_corr = 1.
* Finite ADC: the read error of each tile is bounded by half an ADC step times the bound-management
  reduction (hand bound below), and the factor error grows as the ADC bits drop.
* A differential pair whose idle device sits at g_offset reads Σ|w| + 2·g_offset·n_in; subtracting that nominal
  offset digitally gives Σ|w| back, read with a coarser resolution.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from imc_grapes.backends import AnalogSettings, build_network, pearson
from imc_grapes.config import TrainConfig
from imc_grapes.data import make_synthetic

DATA = make_synthetic(n_train=96, n_test=8, image_shape=(1, 8, 8), seed=2)


def _net(rule: str = "bp", **analog: object):
    settings: dict[str, object] = dict(preset="Ideal", tile_size=16, importance="array", sat_probe_every=0)
    settings.update(analog)
    cfg = TrainConfig(dataset="synthetic", model="mlp", hidden=(24, 20), rule=rule, optimizer="grapes", lr=0.1,
                      backend="crossbar", seed=4, analog=AnalogSettings(**settings))
    return build_network(cfg, (1, 8, 8), 10, "cpu")


def _train(net, steps: int = 3) -> None:
    for i in range(steps):
        x, y = DATA.train.x[32 * i: 32 * (i + 1)], DATA.train.y[32 * i: 32 * (i + 1)]
        net.zero_grad()
        F.cross_entropy(net.model(x), y).backward()
        net.step()


@pytest.mark.parametrize("rule", ["bp", "dfa"])
def test_ideal_periphery_array_read_equals_exact(rule):
    net = _net(rule, ideal_periphery=True)
    for layer in net.analog_layers.values():
        torch.testing.assert_close(layer.row_importance("array"), layer.row_importance("exact"))
        torch.testing.assert_close(layer.col_importance("array"), layer.col_importance("exact"))
        w = layer.get_weights()
        torch.testing.assert_close(layer.row_importance("exact"), w.abs().sum(1))
        torch.testing.assert_close(layer.col_importance("exact"), w.abs().sum(0))
    _train(net)
    m = net.metrics()
    keys = [k for k in m if k.startswith("M_corr/")]
    assert keys                                      # recorded for the modulated layers
    for k in keys:
        assert m[k] == pytest.approx(1.0)
        assert m[k.replace("M_corr", "M_err")] == pytest.approx(0.0, abs=1e-6)


def test_ideal_periphery_array_read_of_a_convolution_sums_each_channels_kernels():
    """A crossbar convolution (one row per output channel, ``C_in·kh·kw`` columns, spread over a grid of tiles):
    its array read through an ideal periphery is each output channel's ``Σ |w|`` over its input channels and
    kernel positions, and the column read each (input channel, position)'s sum over the output channels — by hand
    from the 4-D weights."""
    cfg = TrainConfig(dataset="synthetic", model="cnn", hidden=(5,), optimizer="grapes", lr=0.1, backend="crossbar",
                      seed=4, analog=AnalogSettings(preset="Ideal", tile_size=16, importance="array",
                                                    ideal_periphery=True, sat_probe_every=0))
    net = build_network(cfg, (3, 8, 8), 10, "cpu")
    convs = [layer for layer in net.analog_layers.values() if layer.kind == "conv"]
    assert convs
    for layer in convs:
        w = layer.get_weights()                                       # [C_out, C_in, kh, kw]
        assert w.dim() == 4
        torch.testing.assert_close(layer.row_importance("array"), w.abs().sum(dim=(1, 2, 3)))
        torch.testing.assert_close(layer.col_importance("array"), w.abs().sum(dim=0).flatten())


@pytest.mark.parametrize("bits", [9, 6, 4])
def test_adc_read_error_within_hand_bound(bits):
    # all-ones input, no output noise: each tile's row current F_t is quantized with step 2*12/(2^bits - 2) after
    # dividing the input by the bound-management reduction r (a power of two with F_t / r <= 12, doubled once
    # more at most when rounding crosses the bound); tiles of a row add digitally.
    net = _net(adc_bits=bits, dac_bits=0, out_noise=0.0)
    step = 2 * 12.0 / (2 ** bits - 2)
    for layer in net.analog_layers.values():
        exact = layer.row_importance("exact")
        array = layer.row_importance("array")
        grid = layer.inner.tile.grid
        f_max = float(exact.max())
        r = 2.0 * 2.0 ** max(0, math.ceil(math.log2(max(f_max / 12.0, 1e-12))))
        bound = grid.n_col_tiles * r * step / 2
        assert float((array - exact).abs().max()) <= bound + 1e-6


def test_factor_error_grows_as_adc_bits_drop():
    errs, corrs = [], []
    for bits in (12, 8, 6, 4):
        net = _net(adc_bits=bits, dac_bits=0, out_noise=0.0)
        _train(net)
        m = net.metrics()
        errs.append(np.mean([v for k, v in m.items() if k.startswith("M_err/")]))
        corrs.append(np.mean([v for k, v in m.items() if k.startswith("M_corr/")]))
    assert errs[0] < 1e-3 and corrs[0] > 0.999
    assert all(a < b for a, b in zip(errs, errs[1:])), errs
    assert corrs[-1] < corrs[0] - 0.05, corrs


def test_differential_pair_offset_reads_a_different_importance():
    g = 0.02
    net = _net(ideal_periphery=True, importance_g_offset=g)
    layer = net.analog_layers["layers.0"]
    torch.testing.assert_close(layer.row_importance("array", g), layer.row_importance("exact") + 2 * g * 64)
    _train(net, 1)
    m = net.metrics()
    assert m["M_err/layers.0"] > 0.01                 # the offset compresses M towards 2


def test_offset_correction_subtracts_the_nominal_offset_and_keeps_the_coarser_read():
    """``importance_offset_correction``: the array read minus ``2·g_offset·n_in``. With an exact periphery that is
    the exact Σ|w| again (factors equal); through the DAC/ADC the offset's larger currents make bound management
    scale the read down, so the corrected read keeps a larger error than the read without offset, yet far smaller
    than the uncorrected offset (measured on the two hidden layers, one 64-line tile each: mean |F error| / mean F
    0.7-1.7 % at g_offset 0, 3-4 % corrected at 0.14, 100-170 % uncorrected)."""
    g = 0.14
    ideal = _net(ideal_periphery=True, importance_g_offset=g, importance_offset_correction=True)
    _train(ideal, 1)
    m = ideal.metrics()
    assert m["M_err/layers.0"] == pytest.approx(0.0, abs=1e-6) and m["M_corr/layers.0"] == pytest.approx(1.0)

    def rel_errors(**analog: object) -> list[float]:
        net = _net(preset="ReRamSB", tile_size=64, **analog)
        source = net.importance
        assert source is not None
        out = []
        for layer in (net.analog_layers["layers.0"], net.analog_layers["layers.1"]):   # GRAPES's hidden layers
            exact = layer.row_importance("exact")
            reads = torch.stack([source.rows(layer) for _ in range(10)])     # the factors' input, as GRAPES reads it
            out.append(float((reads - exact).abs().mean() / exact.mean()))
        return out

    plain = rel_errors()
    corrected = rel_errors(importance_g_offset=g, importance_offset_correction=True)
    raw = rel_errors(importance_g_offset=g)
    for p, c, r in zip(plain, corrected, raw):
        assert p < c < 0.1 and r > 0.5, (plain, corrected, raw)


def test_array_importance_is_crossbar_only_and_aihwkit_is_cpu_only():
    kw = {"dataset": "synthetic", "model": "mlp", "hidden": (8,), "backend": "aihwkit"}
    with pytest.raises(ValueError, match=r"^AnalogSettings\.importance 'array' works with the crossbar backend only"):
        TrainConfig(**kw, optimizer="grapes", analog=AnalogSettings(importance="array"))   # the config decides it
    TrainConfig(**kw, optimizer="sgd", analog=AnalogSettings(importance="array"))           # no GRAPES: no read
    with pytest.raises(ValueError, match="CPU only"):
        build_network(TrainConfig(**kw, optimizer="grapes"), (1, 8, 8), 10, "cuda")


def test_pearson_hand_values():
    a = torch.tensor([1.0, 2.0, 3.0])
    assert float(pearson(a, 2 * a + 1)) == pytest.approx(1.0)
    assert float(pearson(a, a.flip(0))) == pytest.approx(-1.0)
    assert float(pearson(torch.ones(3), torch.ones(3))) == 1.0
    assert float(pearson(torch.ones(3), 2 * torch.ones(3))) == 0.0


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.floats(-10, 10), st.floats(-10, 10)), min_size=3, max_size=20))
def test_pearson_matches_numpy(pairs):
    a = np.array([p[0] for p in pairs])
    b = np.array([p[1] for p in pairs])
    if a.std() < 1e-6 or b.std() < 1e-6:
        return
    expected = np.corrcoef(a, b)[0, 1]
    assert float(pearson(torch.tensor(a), torch.tensor(b))) == pytest.approx(expected, abs=1e-9)


def test_array_vs_exact_comparison_is_sampled_every_k_reads():
    from imc_grapes.backends.importance import ImportanceSource

    class Layer(torch.nn.Module):
        exact_reads = 0

        def row_importance(self, source: str, g_offset: float = 0.0) -> torch.Tensor:
            if source == "exact":
                Layer.exact_reads += 1
                return torch.tensor([1.0, 2.0, 4.0])
            return torch.tensor([1.1, 2.0, 3.9])

    layer = Layer()
    src = ImportanceSource("array", compare_every=3, names={layer: "l"})
    for _ in range(7):                                  # reads 0..6: compared on 0, 3, 6
        torch.testing.assert_close(src.rows(layer), torch.tensor([1.1, 2.0, 3.9]))
    assert Layer.exact_reads == 3 and src.reads == 7
    assert set(src.stats()) == {"M_corr/l", "M_err/l"}
    Layer.exact_reads = 0
    never = ImportanceSource("array", compare_every=0)
    never.rows(layer)
    assert Layer.exact_reads == 0 and never.stats() == {}
    with pytest.raises(ValueError, match="compare_every"):
        ImportanceSource("array", compare_every=-1)


@pytest.mark.parametrize("batch", [1, 2, 32])
def test_sampled_comparisons_average_the_per_read_values(batch: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """M_corr / M_err are the means over the compared reads of numpy's correlation and mean absolute difference
    of the two BP factor vectors, whether the sampled pairs are compared one by one, in batches of 2 (a partial
    batch left for stats()) or all at stats()."""
    from imc_grapes.backends.importance import ImportanceSource

    rng = np.random.default_rng(0)
    exact = rng.uniform(0.5, 3.0, size=(5, 6))
    noisy = exact + rng.normal(0.0, 0.3, size=(5, 6))
    noisy[2, 1] = -0.2                                   # a negative array read is clamped to 0

    class Layer(torch.nn.Module):
        k = 0

        def row_importance(self, source: str, g_offset: float = 0.0) -> torch.Tensor:
            if source == "exact":
                return torch.tensor(exact[Layer.k - 1])
            Layer.k += 1
            return torch.tensor(noisy[Layer.k - 1])

    def m_np(f: np.ndarray) -> np.ndarray:
        return np.clip(2 * f / f.max(), 1.0, 2.0)

    monkeypatch.setattr(ImportanceSource, "COMPARE_BATCH", batch)
    layer = Layer()
    src = ImportanceSource("array", compare_every=1, names={layer: "l"})
    for _ in range(5):
        src.rows(layer)
    pairs = [(m_np(np.maximum(noisy[k], 0)), m_np(exact[k])) for k in range(5)]
    stats = src.stats()
    assert stats["M_corr/l"] == pytest.approx(np.mean([np.corrcoef(a, b)[0, 1] for a, b in pairs]), abs=1e-12)
    assert stats["M_err/l"] == pytest.approx(np.mean([np.abs(a - b).mean() for a, b in pairs]), abs=1e-12)
    assert src.stats() == {}                             # reset, nothing left pending


def test_pearson_along_the_last_dim() -> None:
    a = torch.tensor([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0], [0.0, 5.0, 1.0]])
    b = torch.tensor([[2.0, 4.0, 7.0], [1.0, 1.0, 1.0], [1.0, 0.0, 2.0]])
    want = [np.corrcoef(a[0], b[0])[0, 1], 1.0, np.corrcoef(a[2], b[2])[0, 1]]
    torch.testing.assert_close(pearson(a, b), torch.tensor(want, dtype=torch.float64))


@pytest.mark.parametrize("source", ["array", "exact"])
def test_grapes_reads_all_layers_at_once_with_the_numbers_of_reads_one_by_one(source: str,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A GRAPES refresh reads the importance of all its layers with one ``rows.many`` call (the crossbar layers'
    array reads batched, :func:`crossbar.hardware_sums`); the reads, the factors and the sampled array-vs-exact
    comparison are those of reading the layers one by one (two networks built alike, generators in step)."""
    from imc_grapes.backends.importance import _Reads

    together, alone = _net(preset="ReRamSB", importance=source), _net(preset="ReRamSB", importance=source)
    calls = {"many": 0, "one": 0}
    real_many, real_call = _Reads.many, _Reads.__call__

    def many(self, layers):
        calls["many"] += 1
        return real_many(self, layers)

    def one(self, layer):
        calls["one"] += 1
        return real_call(self, layer)
    monkeypatch.setattr(_Reads, "many", many)
    monkeypatch.setattr(_Reads, "__call__", one)
    _train(together)
    assert calls == {"many": 3, "one": 0}                # one call per refresh (3 steps), no single reads
    assert len(together.grapes.layers) == 2
    monkeypatch.setattr(alone.grapes, "importance_fn", lambda layer: one(alone.importance.rows, layer))
    _train(alone)
    assert calls == {"many": 3, "one": 6}                # two single reads per refresh
    for name in together.grapes.names:
        assert torch.equal(together.grapes.importances[name], alone.grapes.importances[name])
        assert torch.equal(together.grapes.modulations[name], alone.grapes.modulations[name])
    stats = together.importance.stats()
    assert stats == alone.importance.stats() and bool(stats) == (source == "array")
    for a, b in zip(together.analog_layers.values(), alone.analog_layers.values()):
        assert torch.equal(a.get_weights(), b.get_weights())


def test_the_offset_is_subtracted_only_from_an_array_read_of_pairs_with_an_offset() -> None:
    from crossbar import pair_offset

    assert pair_offset(0.05, 784) == pytest.approx(78.4) and pair_offset(0.05) == pytest.approx(0.1)
    on = dict(importance="array", importance_g_offset=0.05, importance_offset_correction=True)
    assert AnalogSettings(**on).subtracts_importance_offset
    for change in (dict(importance="exact"), dict(importance_g_offset=0.0), dict(importance_offset_correction=False)):
        assert not AnalogSettings(**{**on, **change}).subtracts_importance_offset


def test_the_read_plan_is_kept_and_rebuilt_when_a_layer_changes() -> None:
    """The array reads of a set of layers reuse their read plan from one read to the next, and give exactly the
    reads (and counters) of a fresh source on twin layers (generators in step) after each change that the plan
    depends on: a layer's states cast to float64, its tile's configuration replaced, its tile array replaced (the
    old one no longer read), the source's ``g_offset`` changed."""
    import copy
    import dataclasses

    from crossbar import IOParameters, TileArray
    from imc_grapes.backends import ImportanceSource

    layers = list(_net(preset="ReRamSB").grapes.layers)
    twins = copy.deepcopy(layers)
    source = ImportanceSource("array", compare_every=0)

    def same_reads(g_offset: float = 0.0) -> list[torch.Tensor]:
        source.g_offset = g_offset
        got = source.rows.many(layers)
        want = ImportanceSource("array", compare_every=0, g_offset=g_offset).rows.many(twins)
        for f, w in zip(got, want):
            assert f.dtype == w.dtype and torch.equal(f, w)
        for a, b in zip(layers, twins):
            assert torch.equal(a.counts(), b.counts())
        return got

    same_reads()
    plan = source._plan(layers, "row")
    same_reads()
    assert source._plan(layers, "row") is plan                 # kept while nothing changed
    for layer in (layers[0], twins[0]):
        layer.inner.tile.to(torch.float64)
    assert same_reads()[0].dtype == torch.float64
    tile = layers[1].inner.tile
    other = dataclasses.replace(tile.config, forward=IOParameters(out_bound=3.0, out_res=1 / 30, out_noise=0.02))
    for layer in (layers[1], twins[1]):
        layer.inner.tile.config = other
    same_reads()
    new = TileArray(tile.out_features, tile.in_features, tile.config, seed=5)
    new.program(torch.rand(tile.out_features, tile.in_features, generator=torch.Generator().manual_seed(5)) - 0.5)
    reads_before = int(tile.counters["importance_reads"])
    layers[1].inner.tile, twins[1].inner.tile = new, copy.deepcopy(new)
    same_reads()
    assert int(tile.counters["importance_reads"]) == reads_before and int(new.counters["importance_reads"]) == 1
    same_reads(g_offset=0.05)
    assert source._plan(layers, "row") is not plan


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copied_network_records_the_importance_under_the_layer_names(how):
    """The importance source named its records by the layers' ``id()``: a copy of the network (``copy.deepcopy``,
    pickle) has new layers, so its records were named ``layer3``, ``layer4`` by first use instead of
    ``layers.0``, ``layers.1``. Keyed by the layers themselves, the copy keeps the names and, trained on as the
    original is, records what the original records (same names, same values: the copy continues the original's
    seeded state and its read count, compared on every 10th read, the first included)."""
    import copy
    import pickle

    net = _net()
    _train(net, 1)                                      # read 1 of each layer: compared
    assert "M_corr/layers.0" in net.metrics()           # (and the meters reset)
    assert sorted(net.importance.names.values()) == ["layers.0", "layers.1", "layers.2"]   # the output layer too
    twin = copy.deepcopy(net) if how == "deepcopy" else pickle.loads(pickle.dumps(net))
    assert sorted(twin.importance.names.values()) == ["layers.0", "layers.1", "layers.2"]
    assert set(twin.importance.names) == set(twin.analog_layers.values())   # the copy's own layers
    records = []
    for n in (net, twin):
        for steps in (3, 3, 3, 1):                      # reads 2..11: the 11th is compared
            _train(n, steps)
        records.append({k: v for k, v in n.metrics().items() if k.startswith("M_")})
    assert sorted(records[1]) == ["M_corr/layers.0", "M_corr/layers.1", "M_err/layers.0", "M_err/layers.1"]
    assert records[1] == records[0]


def test_importance_names_must_map_layers_to_names():
    from imc_grapes.backends.importance import ImportanceSource

    with pytest.raises(ValueError, match=r"ImportanceSource.names must map layers \(nn.Module\) to names \(str\), "
                                         r"got int -> str"):
        ImportanceSource("array", names={12345: "l"})
