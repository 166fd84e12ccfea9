"""train_replicas / ReplicaMLP: E seeds trained in one batched pass give the same numbers as E separate replica
runs with those seeds (SGD, GRAPES, layer-mean), start from build_network's weights, write train()'s files, and
reject what they do not support."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from imc_grapes.backends import build_network
from imc_grapes.config import TrainConfig
from imc_grapes.data import BatchLoader, load_dataset
from imc_grapes.models import build_model
from imc_grapes.backends.importance import pearson
from imc_grapes.grapes import BP_CLIP, modulation
from imc_grapes.replicas import ReplicaMLP, replica_key, train_replicas
from imc_grapes.train import METRICS_COLUMNS, TIMING_COLUMNS

SEEDS = (1, 2, 3, 4)


def base_cfg(**kw) -> TrainConfig:
    d = dict(dataset="synthetic", backend="crossbar", hidden=(24,), batch_size=32, train_subset=160,
             test_subset=64, evals_per_epoch=2, lr=0.05, epochs=2, analog={"tile_size": 16})
    d.update(kw)
    return TrainConfig(**d)


def strip(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in history]


@pytest.fixture
def one_thread():
    """One torch thread (a sweep's points with several workers, or ``--threads 1``): with several, the batched matmul
    of the saturation probe's intended update (``sat/<layer>``, a diagnostic) is split across threads differently
    for E replicas than for one and can differ in the last bit (the training itself does not; seen with 2 threads;
    docs/sweeps.md)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("optimizer", ["sgd", "grapes", "layer-mean", "grapes-array"])
def test_batched_seeds_equal_separate_runs(optimizer: str, tmp_path, one_thread) -> None:
    # grapes-array: the importance read from the arrays (pairs' idle devices at g_offset), as in a plain run
    kw = (dict(optimizer="grapes", analog={"tile_size": 16, "importance": "array", "importance_g_offset": 0.002})
          if optimizer == "grapes-array" else dict(optimizer=optimizer))
    cfgs = [base_cfg(seed=s, **kw) for s in SEEDS]
    together = train_replicas(cfgs, [tmp_path / f"r{s}" for s in SEEDS], log=lambda _m: None)
    for cfg, res in zip(cfgs, together):
        alone = train_replicas([cfg], log=lambda _m: None)[0]
        assert res.status == alone.status == "completed"
        assert len(res.history) == 4                                     # 2 epochs x 2 evaluations
        assert strip(res.history) == strip(alone.history)                # exact equality, every metric
    assert len({r.history[-1]["test_loss"] for r in together}) == len(SEEDS)   # the seeds really differ
    # train()'s file format, plus the engine
    saved = json.loads((tmp_path / "r3" / "results.json").read_text())
    assert saved["status"] == "completed" and saved["engine"] == "replicas" and saved["replicas"] == 4
    assert saved["config"]["seed"] == 3 and saved["history"][-1]["test_acc"] == together[2].history[-1]["test_acc"]
    header = (tmp_path / "r3" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header[:len(METRICS_COLUMNS)] == list(METRICS_COLUMNS)                 # train()'s leading columns
    # 160 samples in batches of 32: 5 batches per epoch, evaluated after batches 2 (2.5 rounds to 2) and 5
    with open(tmp_path / "r3" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(int(r["step"]), int(r["global_step"])) for r in rows] == [(2, 2), (5, 5), (2, 7), (5, 10)]
    elapsed = [float(r["elapsed_s"]) for r in rows]
    assert all(b > a for a, b in zip(elapsed, elapsed[1:])) and elapsed[2] > elapsed[1] + float(rows[2]["time_s"])
    if optimizer != "sgd":
        assert "M_mean/layers.0" in header
        m = [row["M_mean/layers.0"] for row in together[0].history]
        assert all(1.0 <= v <= 2.0 for v in m)
    # the saturation probe on every 20th step (analog.sat_probe_every), as a plain run: step 0 of 10, in the first row
    assert {"sat/layers.0", "sat/layers.1"} <= set(header)
    assert [("sat/layers.0" in row) for row in together[0].history] == [True, False, False, False]
    assert all(0.5 < r.history[0][f"sat/layers.{k}"] < 1.5 for r in together for k in (0, 1))
    # the array-vs-exact diagnostics only where the importance is read from the arrays
    assert ("M_corr/layers.0" in header and "M_err/layers.0" in header) == (optimizer == "grapes-array")
    if optimizer == "grapes-array":   # reads 0-9 in 2 epochs of 5 batches: read 0 is compared, in the first row
        assert [("M_corr/layers.0" in row, "M_err/layers.0" in row) for row in together[0].history] == [
            (True, True), (False, False), (False, False), (False, False)]
        assert all(0.9 < row["M_corr/layers.0"] <= 1.0 and 0.0 < row["M_err/layers.0"] < 0.1
                   for r in together for row in r.history if "M_corr/layers.0" in row)


def test_drop_last_replicas_equal_separate_runs_and_skip_the_partial_batch(tmp_path) -> None:
    """With ``drop_last`` (150 samples, batch 32: 4 full batches and a dropped one of 22) the replicas still equal
    separate runs."""
    cfgs = [base_cfg(seed=s, train_subset=150, drop_last=True) for s in SEEDS[:2]]
    together = train_replicas(cfgs, log=lambda _m: None)
    for cfg, res in zip(cfgs, together):
        alone = train_replicas([cfg], log=lambda _m: None)[0]
        assert strip(res.history) == strip(alone.history)
        assert [row["step"] for row in res.history] == [2, 4, 2, 4]  # 4 batches per epoch, not 5
    kept = train_replicas([cfgs[0].replace(drop_last=False)], log=lambda _m: None)[0]
    assert [row["step"] for row in kept.history] == [2, 5, 2, 5]
    assert kept.history[-1]["test_loss"] != together[0].history[-1]["test_loss"]


def test_per_step_weights_equal_separate_models() -> None:
    """Step by step: the E=4 model's weights equal those of four E=1 models fed the same batches (GRAPES)."""
    cfgs = [base_cfg(optimizer="grapes", seed=s, hidden=(20, 12)) for s in SEEDS]
    data = load_dataset("synthetic", seed=0)
    shape = tuple(data.train.x.shape[1:])
    together = ReplicaMLP(cfgs, shape, 10, torch.device("cpu"))
    alone = [ReplicaMLP([c], shape, 10, torch.device("cpu")) for c in cfgs]
    gen = torch.Generator().manual_seed(0)
    for step in range(3):
        idx = torch.randint(0, len(data.train), (4, 16), generator=gen)
        x, y = data.train.x[idx], data.train.y[idx]                     # [4, 16, 1, 28, 28], [4, 16]
        for model, xs, ys in [(together, x, y)] + [(m, x[k:k + 1], y[k:k + 1]) for k, m in enumerate(alone)]:
            model.refresh_grapes()
            out = model(xs)
            F.cross_entropy(out.flatten(0, 1), ys.flatten(), reduction="none").view_as(ys).mean(1).sum().backward()
            model.step(0.05)
        for layer_k, layer in enumerate(together.layers):
            w = layer.tile.read(hidden=True)
            for k, m in enumerate(alone):
                assert torch.equal(w[k:k + 1], m.layers[layer_k].tile.read(hidden=True)), (step, layer_k, k)


@pytest.mark.parametrize("g_offset,correction", [(0.0, False), (0.002, False), (0.1, True)])
def test_array_importance_reads_the_exact_factors_through_the_periphery(g_offset: float, correction: bool) -> None:
    """``analog.importance = "array"``: each replica's factors come from one all-ones read per hidden layer (counted
    as importance reads) and agree with the factors of its exact sums ``Σ_j |w_ij| + 2·g_offset·in`` up to the
    read's ADC noise and quantization (measured: correlation ≥ 0.97, mean |ΔM| ≤ 0.03 on M ∈ [1, 2]); with
    ``importance_offset_correction`` the nominal offset is subtracted, so they agree with those of ``Σ_j |w_ij|``
    (uncorrected, g_offset 0.1 moves these factors by 0.05-0.14: see the diagnostics test below)."""
    cfgs = [base_cfg(optimizer="grapes", seed=s, hidden=(24, 16),
                     analog={"tile_size": 16, "importance": "array", "importance_g_offset": g_offset,
                             "importance_offset_correction": correction})
            for s in SEEDS[:3]]
    assert replica_key(cfgs[0]) is None
    model = ReplicaMLP(cfgs, (1, 28, 28), 10, torch.device("cpu"))
    model.refresh_grapes()
    assert model.modulations is not None
    for layer, m_arr in zip(model.replica_layers[:-1], model.modulations):
        assert int(layer.tile.counters["importance_reads"]) == 3                     # one read per replica
        m_ex = modulation(layer.row_sums("exact", g_offset=0.0 if correction else g_offset), BP_CLIP)   # [E, out]
        assert m_arr.shape == m_ex.shape == (3, layer.out_features)
        assert not torch.equal(m_arr, m_ex)                                         # really read, with noise
        for k in range(3):
            assert float(pearson(m_arr[k].double(), m_ex[k].double())) > 0.95
            assert float((m_arr[k] - m_ex[k]).abs().mean()) < 0.05


def _np_modulation(f: np.ndarray) -> np.ndarray:
    """GRAPES's BP factors in numpy: ``clip(2 F / max F, 1, 2)`` per replica (last dim)."""
    return np.clip(2.0 * f / f.max(axis=-1, keepdims=True), 1.0, 2.0)


def test_array_importance_diagnostics_sample_every_tenth_read_per_replica() -> None:
    """``M_corr`` / ``M_err`` of each replica: the Pearson correlation and mean |difference| of its array-read factors
    and those of its exact ``Σ_j |w_ij|`` (no offset), on reads 0, 10, 20, ... (as a plain run samples them),
    averaged until :meth:`ReplicaMLP.importance_stats` resets them — checked against numpy. With the pairs' idle
    devices at ``g_offset`` the read is ``Σ|w| + 2·g_offset·in``, so ``M_err`` is close to what that offset alone
    does to the factors (the rest is the read's ADC noise)."""
    g_offset = 0.1     # measured: the offset alone moves the factors by 0.05-0.14 here, the read's noise by < 0.01
    cfgs = [base_cfg(optimizer="grapes", seed=s, hidden=(24, 16),
                     analog={"tile_size": 16, "importance": "array", "importance_g_offset": g_offset})
            for s in SEEDS[:3]]
    model = ReplicaMLP(cfgs, (1, 28, 28), 10, torch.device("cpu"))
    hidden = model.replica_layers[:-1]
    exact = [layer.tile.read().abs().sum(-1).double().numpy() for layer in hidden]   # [E, out]; no training
    assert model.importance_stats() == {}
    read_ms = []
    for k in range(21):
        model.refresh_grapes()
        assert model.modulations is not None
        read_ms.append([m.double().numpy() for m in model.modulations])
        if k == 0:
            first = model.importance_stats()
        if k == 9:
            assert model.importance_stats() == {}                              # reads 1-9 are not compared
    stats = model.importance_stats()                                            # reads 10 and 20
    for got, reads in ((first, [0]), (stats, [10, 20])):
        assert set(got) == {f"M_{kind}/layers.{i}" for kind in ("corr", "err") for i in (0, 1)}
        for i, (name, f_ex) in enumerate(zip(model.names, exact)):
            m_ex = _np_modulation(f_ex)
            corr = np.mean([[np.corrcoef(read_ms[r][i][e], m_ex[e])[0, 1] for e in range(3)] for r in reads], 0)
            err = np.mean([np.abs(read_ms[r][i] - m_ex).mean(-1) for r in reads], 0)
            # (rtol: the model computes its factors in float32)
            np.testing.assert_allclose(got[f"M_corr/{name}"].numpy(), corr, rtol=1e-6)
            np.testing.assert_allclose(got[f"M_err/{name}"].numpy(), err, rtol=1e-6)
            # the offset's own effect on the factors, against what was read
            offset_err = np.abs(_np_modulation(f_ex + 2 * g_offset * hidden[i].in_features) - m_ex).mean(-1)
            assert offset_err.min() > 0.04
            np.testing.assert_allclose(err, offset_err, atol=0.02)
    assert model.importance_stats() == {}                                       # reset


def test_saturation_probe_is_the_realised_over_the_intended_weight_change_per_replica() -> None:
    """``step(lr, probe=True)``: each replica's ``⟨ΔW_real, ΔW_int⟩ / ‖ΔW_int‖²`` per layer, ``ΔW_int = −lr Σ_b d xᵀ``
    from the stashed pairs and ``ΔW_real`` the change of the hidden device states (checked against numpy), averaged
    over the probed steps; on the Idealized device the pulsed update realises the intended change on average
    (measured over 5 steps: 0.93-1.03)."""
    cfgs = [base_cfg(seed=s, hidden=(24, 16), analog={"tile_size": 16, "preset": "Idealized"}) for s in SEEDS[:3]]
    model = ReplicaMLP(cfgs, (1, 28, 28), 10, torch.device("cpu"))
    data = load_dataset("synthetic", seed=0)
    gen = torch.Generator().manual_seed(0)
    lr = 0.05

    def backward() -> None:
        idx = torch.randint(0, len(data.train), (3, 32), generator=gen)
        x, y = data.train.x[idx], data.train.y[idx]
        model.zero_grad_analog()
        out = model(x)
        F.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="none").view_as(y).mean(1).sum().backward()

    assert model.saturation_stats() == {}
    backward()
    layers = model.replica_layers
    pairs = [[(x.double().numpy(), d.double().numpy()) for x, d in layer.pending_pairs()] for layer in layers]
    before = [layer.tile.read(hidden=True).double().numpy() for layer in layers]
    model.step(lr, probe=True)
    stats = model.saturation_stats()
    assert set(stats) == {"sat/layers.0", "sat/layers.1", "sat/layers.2"}
    for k, layer in enumerate(layers):
        intended = -lr * sum(np.einsum("ebo,ebi->eoi", d, x) for x, d in pairs[k])
        real = layer.tile.read(hidden=True).double().numpy() - before[k]
        expected = (real * intended).sum((1, 2)) / (intended ** 2).sum((1, 2))
        np.testing.assert_allclose(stats[f"sat/layers.{k}"].numpy(), expected, rtol=1e-5)
    assert model.saturation_stats() == {}                                       # reset
    backward()
    model.step(lr)                                                              # not probed
    assert model.saturation_stats() == {}
    for _ in range(5):
        backward()
        model.step(lr, probe=True)
    for v in model.saturation_stats().values():
        assert ((0.85 < v) & (v < 1.15)).all(), v


def test_initial_weights_are_build_networks() -> None:
    cfgs = [base_cfg(seed=s) for s in (5, 6)]
    model = ReplicaMLP(cfgs, (1, 28, 28), 10, torch.device("cpu"))
    for k, cfg in enumerate(cfgs):
        ref = build_model("mlp", input_shape=(1, 28, 28), n_classes=10, hidden=[24], seed=cfg.seed)
        for layer, ref_layer in zip(model.layers, ref.layers):
            tile = layer.tile
            w = tile.read(hidden=True)[k]
            lo = torch.stack([tile.grid.from_tiles(t) for t in tile.params.w_min.chunk(2)])[k]
            hi = torch.stack([tile.grid.from_tiles(t) for t in tile.params.w_max.chunk(2)])[k]
            assert torch.equal(w, torch.minimum(torch.maximum(ref_layer.weight.detach(), lo), hi))
        # the same draw as build_network's crossbar model: equal wherever neither network's bounds clipped it
        net = build_network(cfg, (1, 28, 28), 10, "cpu")
        same = model.layers[0].tile.read(hidden=True)[k] == net.analog_layers["layers.0"].inner.tile.read(hidden=True)
        assert same.float().mean() > 0.95
        net.close()


def test_batch_order_is_batchloaders(tmp_path) -> None:
    """The replica trainer draws each replica's permutation as BatchLoader does for its seed."""
    cfg = base_cfg(seed=9)
    data = load_dataset("synthetic", seed=9)
    loader = BatchLoader(data.train.subset(160), 32, shuffle=True, seed=9)
    first = next(iter(loader))[1]
    perm = torch.randperm(160, generator=torch.Generator().manual_seed(9))
    assert torch.equal(first, data.train.y[:160][perm[:32]])
    assert replica_key(cfg) is None


def test_rejects_differing_or_unsupported_configs() -> None:
    with pytest.raises(ValueError, match=r"differ only in 'seed'.*\['batch_size', 'lr'\]"):
        train_replicas([base_cfg(seed=1), base_cfg(seed=2, lr=0.1, batch_size=16)])
    for bad, what in [(dict(rule="fa"), "rule"), (dict(backend="digital"), "backend"),
                      (dict(optimizer="grapes-local"), "optimizer"), (dict(dropout=0.1), "dropout"),
                      (dict(model="cnn"), "model")]:
        with pytest.raises(ValueError, match=what):
            train_replicas([base_cfg(**bad)])
    with pytest.raises(ValueError, match="one run_dir per config"):
        train_replicas([base_cfg(seed=1), base_cfg(seed=2)], ["a"])


def test_diverging_replica_is_recorded_and_the_others_go_on(tmp_path, monkeypatch) -> None:
    """Replica 1's logits become NaN from its 3rd training step on: it is recorded as diverged with the rows it
    finished, replica 0 completes with the same history as when trained alone."""
    forward = ReplicaMLP.forward
    calls = {"n": 0}

    def poisoned(self, x):
        out = forward(self, x)
        if self.n_replicas == 2 and torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] >= 3:
                out = torch.cat([out[:1], out[1:] * float("nan")])
        return out

    monkeypatch.setattr(ReplicaMLP, "forward", poisoned)
    cfgs = [base_cfg(seed=s, epochs=1) for s in (1, 2)]
    res = train_replicas(cfgs, [tmp_path / "a", tmp_path / "b"], log=lambda _m: None)
    assert res[1].status == "diverged" and "loss became nan at epoch 1, step 3" in res[1].message
    saved = json.loads((tmp_path / "b" / "results.json").read_text())
    assert saved["status"] == "diverged" and saved["message"] == res[1].message
    assert len(saved["history"]) == 1                                    # the evaluation after step 2 is kept
    assert res[0].status == "completed" and len(res[0].history) == 2
    assert strip(res[0].history) == strip(train_replicas(cfgs[:1], log=lambda _m: None)[0].history)


@pytest.mark.parametrize("exc, status, message", [
    (KeyboardInterrupt(), "interrupted", "interrupted (KeyboardInterrupt)"),
    (MemoryError("out of host memory"), "failed", "MemoryError: out of host memory"),
])
def test_an_exception_stops_the_live_replicas_as_failed_or_interrupted_and_a_diverged_one_stays_diverged(
        tmp_path, monkeypatch, exc, status, message) -> None:
    """Replica 1's logits become NaN at its 3rd step (diverged there); the 4th step raises ``exc``. Before, replica 0
    stayed ``running`` in its results.json; now it records why it stopped, with its row after step 2, and the
    exception propagates."""
    import imc_grapes.replicas as replicas

    forward, step = ReplicaMLP.forward, replicas._train_step
    calls = {"forward": 0, "step": 0}

    def poisoned(self, x):
        out = forward(self, x)
        if torch.is_grad_enabled():
            calls["forward"] += 1
            if calls["forward"] >= 3:
                out = torch.cat([out[:1], out[1:] * float("nan")])
        return out

    def stopping(*args, **kwargs):
        calls["step"] += 1
        if calls["step"] == 4:
            raise exc
        return step(*args, **kwargs)

    monkeypatch.setattr(ReplicaMLP, "forward", poisoned)
    monkeypatch.setattr(replicas, "_train_step", stopping)
    with pytest.raises(type(exc)) as err:
        train_replicas([base_cfg(seed=s) for s in (1, 2)], [tmp_path / "a", tmp_path / "b"], log=lambda _m: None)
    assert err.value is exc
    a = json.loads((tmp_path / "a" / "results.json").read_text())
    b = json.loads((tmp_path / "b" / "results.json").read_text())
    assert a["status"] == status and a["message"] == message
    assert ("traceback" in a) == (status == "failed")
    assert b["status"] == "diverged" and "loss became nan at epoch 1, step 3" in b["message"]
    assert "traceback" not in b
    assert [h["step"] for h in a["history"]] == [h["step"] for h in b["history"]] == [2]
    assert len((tmp_path / "a" / "metrics.csv").read_text().splitlines()) == 2


def test_a_nan_in_one_sample_of_the_first_replica_diverges_it_alone(tmp_path, monkeypatch, one_thread) -> None:
    """One sample's logit of replica 0 (the first in the stack) becomes NaN from its 3rd training step on, as when
    a single input overflows: replica 0 is recorded as diverged exactly as when trained alone with that NaN (same
    message, same rows), and replica 1 completes with the history it has alone. Before, the NaN's pulse trains
    (BL cast from NaN) broke the packing of all replicas' trains: the batch raised an IndexError and every point of
    it failed."""
    forward = ReplicaMLP.forward
    calls: dict[ReplicaMLP, int] = {}     # keyed by the model itself: a later model cannot reuse a freed id()

    def poisoned(self, x):
        out = forward(self, x)
        if torch.is_grad_enabled():
            calls[self] = calls.get(self, 0) + 1
            if calls[self] >= 3:
                out = out.clone()
                out[0, 3, 2] = float("nan")
        return out

    monkeypatch.setattr(ReplicaMLP, "forward", poisoned)
    cfgs = [base_cfg(seed=s, epochs=1, batch_size=25, train_subset=150, evals_per_epoch=3) for s in (1, 2)]
    res = train_replicas(cfgs, [tmp_path / "a", tmp_path / "b"], log=lambda _m: None)
    alone = train_replicas(cfgs[:1], log=lambda _m: None)[0]
    assert alone.status == res[0].status == "diverged"
    assert res[0].message == alone.message == "loss became nan at epoch 1, step 3 (lr=0.05); lower the lr"
    assert strip(res[0].history) == strip(alone.history) and len(alone.history) == 1
    monkeypatch.setattr(ReplicaMLP, "forward", forward)
    assert res[1].status == "completed"
    assert strip(res[1].history) == strip(train_replicas(cfgs[1:], log=lambda _m: None)[0].history)


def test_divergence_at_an_evaluation_step_is_reported_as_train_reports_it(monkeypatch) -> None:
    """With the loss checked every 25th step (what a GPU does) a NaN that appears at an evaluation step is caught by
    that step's check, in train() and in the replica engine alike: the same message, naming the step (before, the
    replica engine checked only every 25th step and reported it as "during epoch 1")."""
    import sys

    from imc_grapes.models import MLP
    from imc_grapes.train import DivergenceError, train

    for module in ("imc_grapes.train", "imc_grapes.replicas"):            # (the package exports a function train)
        monkeypatch.setattr(sys.modules[module], "loss_check_every", lambda device: 25)
    calls = {"n": 0}

    def poison(forward):
        def poisoned(self, x):
            out = forward(self, x)
            if torch.is_grad_enabled():
                calls["n"] += 1
                if calls["n"] >= 2:
                    out = out * float("nan")
            return out
        return poisoned

    cfg = base_cfg(seed=1, epochs=1)                                       # 5 batches, evaluated after 2 and 5
    monkeypatch.setattr(MLP, "forward", poison(MLP.forward))
    with pytest.raises(DivergenceError) as single:
        train(cfg, progress=False, log=lambda _m: None)
    calls["n"] = 0
    monkeypatch.setattr(ReplicaMLP, "forward", poison(ReplicaMLP.forward))
    res = train_replicas([cfg], log=lambda _m: None)[0]
    assert str(single.value) == "loss became nan at epoch 1, step 2 (lr=0.05); lower the lr"
    assert res.status == "diverged" and res.message == str(single.value)
    assert res.history == []


def test_training_stops_once_every_replica_has_diverged(tmp_path, monkeypatch) -> None:
    """Both replicas' training losses become NaN at their 3rd step (the gradients stay finite): each is recorded as
    diverged there, with the evaluation after step 2 kept, as before; then training stops instead of running the
    12 other steps of its 3 epochs."""
    import types

    import imc_grapes.replicas as replicas

    steps = {"n": 0}

    def cross_entropy(*args, **kwargs):
        loss = F.cross_entropy(*args, **kwargs)
        if torch.is_grad_enabled():                                       # a training step, not an evaluation
            steps["n"] += 1
            if steps["n"] >= 3:
                loss = loss + loss.detach() * float("nan")
        return loss

    monkeypatch.setattr(replicas, "F", types.SimpleNamespace(cross_entropy=cross_entropy))
    cfgs = [base_cfg(seed=s, epochs=3) for s in (1, 2)]
    logged: list[str] = []
    res = train_replicas(cfgs, [tmp_path / "a", tmp_path / "b"], log=logged.append)
    assert steps["n"] == 3                                               # 5 steps per epoch: not 15
    assert logged == []                                                  # no epoch ended with a live replica
    for r, d in zip(res, ("a", "b")):
        assert r.status == "diverged"
        assert r.message == "loss became nan at epoch 1, step 3 (lr=0.05); lower the lr"
        assert [row["step"] for row in r.history] == [2]                 # the evaluation after step 2 is kept
        saved = json.loads((tmp_path / d / "results.json").read_text())
        assert saved["status"] == "diverged" and saved["message"] == r.message
        assert strip(saved["history"]) == strip(r.history)


def _bits(t: torch.Tensor) -> torch.Tensor:
    """A float32/64 tensor's bit patterns (a bit-for-bit comparison: a NaN is caught, -0.0 differs from 0.0)."""
    return t.contiguous().view(torch.int64 if t.dtype == torch.float64 else torch.int32)


def _states(model: ReplicaMLP, k: int) -> list[torch.Tensor]:
    """Replica ``k``'s hidden and apparent device states of every layer (copies)."""
    return [t for layer in model.replica_layers for t in (layer.tile.read(hidden=True)[k], layer.tile.read()[k])]


@pytest.mark.parametrize("check_every", [1, 25], ids=["cpu-checks", "gpu-checks"])
def test_a_replica_whose_loss_becomes_nan_keeps_its_states_from_before_that_step(monkeypatch, check_every) -> None:
    """One logit of replica 1 becomes NaN at its 3rd training step and after (its loss is NaN, the other samples'
    gradients stay finite): its update is masked from that step on, so it ends with the device states it had before
    step 3, bit for bit (before, that step's pulses of the other samples were still applied); replica 0 ends with
    the device states and history of an E = 1 run. With the loss read every 25th step (a GPU) the mask still acts at
    step 3 (on the device) and the divergence, found at the evaluation after step 5, is reported at step 3."""
    import imc_grapes.replicas as replicas

    monkeypatch.setattr(replicas, "loss_check_every", lambda device: check_every)
    models: list[ReplicaMLP] = []
    before: list[list[torch.Tensor]] = []                 # replica 1's states before each training step (E = 2)
    init, forward = ReplicaMLP.__init__, ReplicaMLP.forward

    def capturing_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        models.append(self)

    def poisoned(self, x):
        pair = self.n_replicas == 2 and torch.is_grad_enabled()
        if pair:
            before.append(_states(self, 1))
        out = forward(self, x)
        if pair and len(before) >= 3:
            out = out.clone()
            out[1, 3, 2] = float("nan")
        return out

    monkeypatch.setattr(ReplicaMLP, "__init__", capturing_init)
    monkeypatch.setattr(ReplicaMLP, "forward", poisoned)
    cfgs = [base_cfg(seed=s, epochs=1) for s in (1, 2)]                 # 5 steps, evaluated after 2 and 5
    res = train_replicas(cfgs, log=lambda _m: None)
    alone = train_replicas(cfgs[:1], log=lambda _m: None)[0]
    pair, single = models
    assert res[1].status == "diverged"
    assert res[1].message == "loss became nan at epoch 1, step 3 (lr=0.05); lower the lr"
    assert [row["step"] for row in res[1].history] == [2]
    assert len(before) == 5                                             # the others trained on to the end
    final = _states(pair, 1)
    for a, b in zip(final, before[2]):
        assert torch.equal(_bits(a), _bits(b))                          # as before step 3, bit for bit
    assert any(not torch.equal(a, b) for a, b in zip(before[2], before[0]))   # it did train for 2 steps
    assert res[0].status == alone.status == "completed"
    assert strip(res[0].history) == strip(alone.history)
    for a, b in zip(_states(pair, 0), _states(single, 0)):
        assert torch.equal(_bits(a), _bits(b))


def test_the_step_masks_a_nan_replica_without_host_reads(monkeypatch) -> None:
    """The training step of the replica engine (forward, loss check, backward, masked update) on the sync-free
    path (no host read, as on a GPU): replica 1, one of whose logits is NaN from step 2 on, keeps its device states
    bit for bit from then on and is marked as diverged at step 2 with its loss; replica 0 gets exactly the states
    of an E = 1 model."""
    from devices import no_host_reads
    from imc_grapes.replicas import _LossWatch, _train_step

    forward, poison = ReplicaMLP.forward, {"on": False}

    def poisoned(self, x):
        out = forward(self, x)
        if poison["on"] and self.n_replicas == 2:
            out = torch.cat([out[:1], out[1:].index_fill(1, torch.tensor([5]), float("nan"))])
        return out

    monkeypatch.setattr(ReplicaMLP, "forward", poisoned)
    cfgs = [base_cfg(seed=s, optimizer="grapes", hidden=(20, 12)) for s in (1, 2)]
    pair = ReplicaMLP(cfgs, (1, 8, 8), 10, torch.device("cpu"))
    single = ReplicaMLP(cfgs[:1], (1, 8, 8), 10, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    watch, watch1 = _LossWatch(2, torch.device("cpu")), _LossWatch(1, torch.device("cpu"))
    for step in (1, 2, 3):
        x, y = torch.rand(2, 12, 1, 8, 8, generator=gen), torch.randint(0, 10, (2, 12), generator=gen)
        poison["on"] = step >= 2
        kept = _states(pair, 1)
        with no_host_reads():
            for model, w, xs, ys in ((pair, watch, x, y), (single, watch1, x[:1], y[:1])):
                model.refresh_grapes()
                _, per = _train_step(model, xs, ys, 0.05, step == 1, w, step)
        changed = [not torch.equal(a, b) for a, b in zip(_states(pair, 1), kept)]
        assert any(changed) if step == 1 else not any(changed), step
        if step >= 2:
            assert all(torch.equal(_bits(a), _bits(b)) for a, b in zip(_states(pair, 1), kept))
        assert all(torch.equal(a, b) for a, b in zip(_states(pair, 0), _states(single, 0))), step
    first = watch.read()
    assert first[0] is None and first[1] is not None and first[1][0] == 2 and math.isnan(first[1][1])
    assert watch1.read() == [None]


@pytest.mark.parametrize("optimizer,analog", [
    ("sgd", {}),
    ("grapes", {"importance_every": 2, "sat_probe_every": 3}),
    ("layer-mean", {"importance": "array", "importance_g_offset": 0.01, "importance_offset_correction": True}),
], ids=["sgd", "grapes", "layer-mean-array"])
def test_noise_free_replicas_equal_train_up_to_rounding(optimizer: str, analog: dict, monkeypatch, tmp_path) -> None:
    """Against the ordinary path (``train()``, an independent implementation of the loop): with every random effect
    off — ideal periphery, the exact (``pulse_type="none"``) update, no device-to-device spread of the bounds — a
    replica must give ``train()``'s run up to float rounding: the same initial weights, batch order, partial last
    batch (150 samples, batch 32, ``drop_last`` off: 4 batches of 32 and one of 22, each weighted by its size),
    GRAPES refresh / saturation-probe / importance-sample steps, evaluation split and history rows (every key but
    the hardware cost ``cost/...``, which the replica engine does not record), final device weights and
    ``results.json`` fields. (With noise the two differ by design: another generator; see the module docstring.)
    Found with it: nothing but rounding (the ReLU kink below); it guards the loop's bookkeeping against drifting
    apart from ``train()``'s."""
    import dataclasses
    import sys

    import imc_grapes.backends.hardware as hardware
    import imc_grapes.backends.network as network
    import imc_grapes.replicas as replicas

    train_module = sys.modules["imc_grapes.train"]          # (the package exports a function train)

    plain_config = hardware.crossbar_config_from

    def exact_update(settings):
        cfg = plain_config(settings)
        return dataclasses.replace(cfg, update=dataclasses.replace(cfg.update, pulse_type="none"))

    monkeypatch.setattr(network, "crossbar_config_from", exact_update)
    monkeypatch.setattr(replicas, "crossbar_config_from", exact_update)
    nets, models = [], []
    build, init = train_module.build_network, ReplicaMLP.__init__

    def capturing_build(*args, **kwargs):
        nets.append(build(*args, **kwargs))
        return nets[-1]

    def capturing_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        models.append(self)

    monkeypatch.setattr(train_module, "build_network", capturing_build)
    monkeypatch.setattr(ReplicaMLP, "__init__", capturing_init)
    analog = {"tile_size": 16, "ideal_periphery": True, "preset": "Idealized",
              "device_overrides": {"w_max_dtod": 0.0, "w_min_dtod": 0.0}, **analog}
    # tanh: with ReLU a pre-activation within rounding of 0 can end up on either side of the kink in the two runs
    # (seen: one error entry 0 in one, 0.036 in the other), a real but rounding-sized difference that then grows
    cfgs = [base_cfg(seed=s, optimizer=optimizer, hidden=(24, 12), activation="tanh", train_subset=150,
                     test_subset=70, drop_last=False, analog=analog) for s in (3, 4)]
    together = train_replicas(cfgs, [tmp_path / "r3", tmp_path / "r4"], log=lambda _m: None)
    for k, (cfg, rep) in enumerate(zip(cfgs, together)):
        plain = train_module.train(cfg, tmp_path / f"p{cfg.seed}", progress=False, log=lambda _m: None)
        assert rep.status == plain.status == "completed"
        assert [(r["epoch"], r["step"]) for r in rep.history] == [(r["epoch"], r["step"]) for r in plain.history] \
            == [(0.4, 2), (1.0, 5), (1.4, 2), (2.0, 5)]
        for row, ref in zip(rep.history, plain.history):
            assert set(row) == {key for key in ref if not key.startswith("cost/")}
            for key, v in row.items():
                if key in ("train_acc", "test_acc"):     # (a sample on a decision boundary could flip)
                    assert abs(v - ref[key]) <= 1 / 70 + 1e-12, key
                elif key not in TIMING_COLUMNS:
                    assert v == pytest.approx(ref[key], rel=1e-4, abs=1e-5), key
        assert sum(r["test_acc"] == p["test_acc"] for r, p in zip(rep.history, plain.history)) >= 3
        for layer, name in zip(models[0].replica_layers, ("layers.0", "layers.1", "layers.2")):
            ref_w = nets[k].analog_layers[name].inner.tile.read(hidden=True)
            torch.testing.assert_close(layer.tile.read(hidden=True)[k], ref_w, rtol=0, atol=1e-5)
        saved = json.loads((tmp_path / f"r{cfg.seed}" / "results.json").read_text())
        ref_saved = json.loads((tmp_path / f"p{cfg.seed}" / "results.json").read_text())
        assert set(saved) - set(ref_saved) == {"engine", "replicas"} and set(ref_saved) - set(saved) == {"costs"}
        for key in ("status", "eval_split", "train_samples", "eval_samples", "config"):
            assert saved[key] == ref_saved[key], key


def test_the_replica_evaluation_gives_nan_accuracy_to_a_replica_with_a_non_finite_output() -> None:
    """Replica 1's logits hold one NaN, replica 2's one Inf: their accuracies are NaN, replica 0's is its count."""
    import imc_grapes.replicas as replicas

    ys = torch.tensor([[0, 1, 1, 0, 1]])
    logits = torch.zeros(3, 5, 2)
    logits[:, :, 1] = torch.tensor([-1.0, 1.0, -1.0, -1.0, 1.0])       # predicts 0, 1, 0, 0, 1: 4 of 5 right
    logits[1, 3, 0] = float("nan")
    logits[2, 0, 1] = float("inf")
    loss, acc = replicas._evaluate(lambda x: logits[:, : x.shape[1]], torch.zeros(1, 5, 1), ys, 3, batch_size=5)
    assert acc[0].item() == 4 / 5 and math.isnan(acc[1].item()) and math.isnan(acc[2].item())
    assert math.isfinite(loss[0].item()) and not math.isfinite(loss[1].item())


def test_non_finite_outputs_at_the_last_evaluation_diverge_the_replica_as_train_does(tmp_path, monkeypatch) -> None:
    """The training losses are checked before each update, so the update of the last step shows only in the
    evaluation after it: a replica whose evaluation loss is NaN there is recorded as diverged (with train()'s
    message, that point without a history row), not as completed; the other replica completes unchanged."""
    from imc_grapes.models import MLP
    from imc_grapes.train import DivergenceError, train

    def poison(forward, replica_1_only):
        state = {"evals": 0}

        def poisoned(self, x):
            out = forward(self, x)
            if not torch.is_grad_enabled():
                state["evals"] += 1
                if state["evals"] >= 2:                                   # the second (last) evaluation
                    if replica_1_only:
                        return torch.cat([out[:1], out[1:] * float("nan")])
                    return out * float("nan")
            return out
        return poisoned

    cfg = base_cfg(seed=1, epochs=1)                                       # 5 batches, evaluated after 2 and 5
    with monkeypatch.context() as m:
        m.setattr(MLP, "forward", poison(MLP.forward, False))
        with pytest.raises(DivergenceError) as single:
            train(cfg, progress=False, log=lambda _m: None)
    cfgs = [base_cfg(seed=s, epochs=1) for s in (1, 2)]
    alone = train_replicas(cfgs[:1], log=lambda _m: None)[0]
    monkeypatch.setattr(ReplicaMLP, "forward", poison(ReplicaMLP.forward, True))
    res = train_replicas(cfgs, [tmp_path / "a", tmp_path / "b"], log=lambda _m: None)
    assert str(single.value).startswith("evaluation loss became nan after epoch 1, step 5 (lr=0.05)")
    assert res[1].status == "diverged" and res[1].message == str(single.value)
    assert len(res[1].history) == 1                                       # the point after step 2 only
    assert json.loads((tmp_path / "b" / "results.json").read_text())["status"] == "diverged"
    assert res[0].status == "completed" and strip(res[0].history) == strip(alone.history)


def test_a_nan_accuracy_over_a_finite_evaluation_loss_diverges_the_replica_as_train_does(tmp_path, monkeypatch):
    """Logits of -inf on a class no evaluated sample has keep the evaluation loss finite and make the accuracy NaN
    (``_evaluate``); such a replica was recorded as completed with a NaN test accuracy. Now it diverges at that
    evaluation with train()'s message (:func:`~imc_grapes.train.check_evaluation`); the other replica completes."""
    from imc_grapes.data import Dataset, Split, make_synthetic

    data = make_synthetic(seed=0)
    last = data.n_classes - 1
    keep = data.test.y != last
    data = Dataset(data.name, data.train, Split(data.test.x[keep], data.test.y[keep]), data.n_classes)
    forward, state = ReplicaMLP.forward, {"evals": 0}

    def poisoned(self, x):
        out = forward(self, x)                                            # [E, B, classes]
        if not torch.is_grad_enabled():
            state["evals"] += 1
            if state["evals"] >= 2:                                       # replica 1 at the second (last) evaluation
                return torch.cat([out[:1], out[1:].index_fill(2, torch.tensor([last]), -math.inf)])
        return out
    cfgs = [base_cfg(seed=s, epochs=1) for s in (1, 2)]                   # 5 batches, evaluated after 2 and 5
    alone = train_replicas(cfgs[:1], dataset=data, log=lambda _m: None)[0]
    monkeypatch.setattr(ReplicaMLP, "forward", poisoned)
    res = train_replicas(cfgs, [tmp_path / "a", tmp_path / "b"], dataset=data, log=lambda _m: None)
    assert res[1].status == "diverged", (res[1].status, res[1].history[-1]["test_acc"])
    assert res[1].message.startswith("evaluation accuracy became nan after epoch 1, step 5 (lr=0.05)")
    assert len(res[1].history) == 1                                       # the point after step 2 only
    assert json.loads((tmp_path / "b" / "results.json").read_text())["status"] == "diverged"
    assert res[0].status == "completed" and strip(res[0].history) == strip(alone.history)


def test_replicas_epoch_lines_name_the_split_they_are_evaluated_on(one_thread) -> None:
    """Replicas with a validation holdout (as tuning runs) are evaluated on the validation split: their epoch lines
    say "val acc" (they said "test acc"), with each replica's accuracy; without one, "test acc"."""
    for holdout, name in ((40, "val acc"), (0, "test acc")):
        lines: list[str] = []
        cfgs = [base_cfg(seed=s, epochs=1, val_holdout=holdout) for s in SEEDS[:2]]
        results = train_replicas(cfgs, log=lines.append)
        accs = ", ".join(f"{100 * r.history[-1]['test_acc']:.2f}%" for r in results)
        assert lines == [f"[sgd x2 replicas] epoch 1/1: {name} {accs}"]
        assert {r.eval_split for r in results} == {"validation" if holdout else "test"}
