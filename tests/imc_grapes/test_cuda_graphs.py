"""CUDA-graph training (``imc_grapes/cuda_graphs.py``), the parts a CPU can check: the host bookkeeping that a
replayed step repeats equals what an eager step does, the step kinds follow their schedules, every random generator
of a model is found for registration, and the limits are rejected with errors that name the field.

The replay itself — graph-trained runs equal to eagerly trained ones, number for number — needs a GPU:
``benchmarks/check_graph_training_cuda.py`` (run by ``benchmarks/run_gpu.sh``)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import crossbar
from imc_grapes.backends import AnalogSettings, build_network, make_optimizer
from imc_grapes.backends.importance import COMPARE_EVERY
from imc_grapes.cli import main
from imc_grapes.config import ConfigError, TrainConfig, graph_safe_base_optimizers
from imc_grapes.cuda_graphs import GraphedSteps, model_generators


def _cfg(backend: str = "crossbar", rule: str = "bp", optimizer: str = "grapes", **kw: object) -> TrainConfig:
    analog = dict(tile_size=32, sat_probe_every=4)
    analog.update(kw.pop("analog", {}))   # type: ignore[arg-type]
    return TrainConfig(dataset="synthetic", hidden=(10, 6, 5), rule=rule, optimizer=optimizer, lr=0.05,
                       backend=backend, seed=3, analog=AnalogSettings(**analog), **kw)   # type: ignore[arg-type]


def _step(net, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g)
    net.zero_grad()
    F.cross_entropy(net.model(x), y).backward()
    net.step()


def _host_state(net) -> dict[str, object]:
    """Everything on the host that a training step advances."""
    g, imp = net.grapes, net.importance
    return {"steps": net.steps, "steps_since": net._steps_since, "last_refresh": net._last_refresh,
            "train_batches": g.train_batches if g else None, "refreshes": g.refresh_count if g else None,
            "reads": imp.reads if imp else None, "layer_reads": dict(imp._layer_reads) if imp else None}


@pytest.mark.parametrize("backend,rule,optimizer,importance", [
    ("crossbar", "bp", "grapes", "array"), ("crossbar", "dfa", "grapes-local", "array"),
    ("crossbar", "fa", "grapes", "exact"), ("crossbar", "bp", "sgd", "exact"), ("digital", "bp", "grapes", "exact"),
    ("digital", "dfa", "grapes", "exact")])
def test_a_replayed_steps_bookkeeping_is_an_eager_steps(backend, rule, optimizer, importance):
    """One eager step then :meth:`count_replayed_step` leaves the host state of two eager steps (the second step of a
    run is plain: no probe — every 4th —, no comparison sample — every 10th)."""
    eager = build_network(_cfg(backend, rule, optimizer, analog={"importance": importance}), (1, 8, 8), 10, "cpu")
    replayed = build_network(_cfg(backend, rule, optimizer, analog={"importance": importance}), (1, 8, 8), 10, "cpu")
    _step(eager, 0)
    _step(replayed, 0)
    assert eager.step_kind() == replayed.step_kind() == (False, False)
    _step(eager, 1)
    replayed.count_replayed_step()
    assert _host_state(replayed) == _host_state(eager)
    assert eager.steps == 2
    if eager.importance is not None and importance == "array":
        n_read = 2 if rule == "dfa" else 3            # dfa reads the outgoing sums of the layers after the first
        assert eager.importance.reads == 2 * n_read and set(eager.importance._layer_reads.values()) == {2}


@pytest.mark.parametrize("importance", ["array", "exact"])
def test_replayed_steps_refresh_grapes_every_kth_batch_as_eager_steps_do(importance):
    """``analog.importance_every = 3``: GRAPES refreshes its factors (and reads the arrays) at batches 0 and 3 of 6, so
    2 refreshes, whether steps 1–5 run eagerly or are replayed (:meth:`count_replayed_step`); the host state agrees
    after every step (a replay that counted a refresh at every batch would give 6)."""
    analog = {"importance": importance, "importance_every": 3, "sat_probe_every": 0}
    eager = build_network(_cfg(analog=analog), (1, 8, 8), 10, "cpu")
    replayed = build_network(_cfg(analog=analog), (1, 8, 8), 10, "cpu")
    _step(eager, 0)
    _step(replayed, 0)
    for s in range(1, 6):
        _step(eager, s)
        replayed.count_replayed_step()
        assert _host_state(replayed) == _host_state(eager), s
    assert eager.grapes.train_batches == 6 and eager.grapes.refresh_count == 2


def test_step_kinds_follow_the_probe_and_comparison_schedules():
    """``step_kind()`` before each step says what that step then does: a saturation probe every 4th step from the
    first (``sat_probe_every``), an array-vs-exact comparison sample every ``COMPARE_EVERY``-th (the sampled pairs
    the importance source collects)."""
    net = build_network(_cfg(analog={"importance": "array"}), (1, 8, 8), 10, "cpu")
    kinds, probed, sampled = [], [], []
    for s in range(2 * COMPARE_EVERY + 1):
        kinds.append(net.step_kind())
        pending = sum(len(arrays) for _, _, arrays, _ in net.importance._sampled.values())
        _step(net, s)
        probed.append(bool(net.sat.means()))
        net.sat.reset()
        sampled.append(sum(len(arrays) for _, _, arrays, _ in net.importance._sampled.values()) > pending)
    n = len(kinds)
    assert [k[0] for k in kinds] == probed == [s % 4 == 0 for s in range(n)]
    assert [k[1] for k in kinds] == sampled == [s % COMPARE_EVERY == 0 for s in range(n)]


def test_digital_and_exact_steps_are_all_plain():
    for cfg in (_cfg("digital"), _cfg("crossbar", analog={"sat_probe_every": 0})):
        net = build_network(cfg, (1, 8, 8), 10, "cpu")
        for s in range(12):
            assert net.step_kind() == (False, False)
            _step(net, s)


def test_every_generator_of_the_model_is_found():
    """Each tile's generator and dropout's (created at its first training forward), once each."""
    net = build_network(_cfg(dropout=0.2), (1, 8, 8), 10, "cpu")
    _step(net, 0)
    tiles = [m.generator for m in net.model.modules() if isinstance(m, crossbar.TileArray)]
    drops = [g for m in net.model.modules() for g in getattr(m, "_generators", {}).values()]
    found = model_generators(net.model, torch.device("cpu"))
    assert len(tiles) == 3 + 1 and len(drops) >= 1
    assert sorted(map(id, found)) == sorted(map(id, tiles + drops))
    assert model_generators(net.model, torch.device("cuda")) == []


@pytest.mark.parametrize("changes,message", [
    ({"device": "cpu"}, "TrainConfig.cuda_graph needs a CUDA device, but TrainConfig.device is 'cpu'"),
    ({"backend": "aihwkit"}, "TrainConfig.cuda_graph works with the digital and crossbar backends, not aihwkit"),
    ({"analog": AnalogSettings(importance_every=2)},
     "TrainConfig.cuda_graph needs AnalogSettings.importance_every = 1"),
    ({"base_optimizer": "adagrad"}, "TrainConfig.cuda_graph needs a base optimizer that runs inside a CUDA graph"),
    ({"cuda_graph": "yes"}, "TrainConfig.cuda_graph must be true or false, got 'yes'"),
])
def test_limits_are_rejected_with_the_field(changes, message):
    kw = dict(device="cuda", cuda_graph=True, backend="crossbar", optimizer="grapes")
    kw.update(changes)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TrainConfig(**kw)   # type: ignore[arg-type]


def test_the_limits_allow_what_they_should():
    TrainConfig(device="auto", cuda_graph=True, backend="digital", analog=AnalogSettings(importance_every=3))
    TrainConfig(device="cuda", cuda_graph=True, backend="crossbar", optimizer="sgd",
                analog=AnalogSettings(importance_every=3))      # no GRAPES: the refresh interval does not matter
    assert {"sgd", "adam", "adamw", "rmsprop"} <= set(graph_safe_base_optimizers())
    assert not {"adagrad", "muon", "adafactor"} & set(graph_safe_base_optimizers())


def test_capturable_is_turned_on_for_the_optimizers_that_have_it():
    p = [torch.nn.Parameter(torch.zeros(3))]
    cfg = TrainConfig(device="cuda", cuda_graph=True, base_optimizer="adam")
    assert make_optimizer(cfg, p).defaults["capturable"] is True
    assert make_optimizer(cfg.replace(cuda_graph=False), p).defaults["capturable"] is False
    assert "capturable" not in make_optimizer(cfg.replace(base_optimizer="sgd"), p).defaults


@pytest.mark.parametrize("name", ["adam", "adamw", "rmsprop"])
def test_capturable_is_also_on_for_eager_cuda_runs_so_graphs_change_no_number(name):
    """On a real H200 an eager Adam run and its CUDA-graph replay differed by ~1e-6 (capturable Adam rounds its bias
    corrections on the device): the option now follows the parameters' device too, so both runs use the same path;
    CPU parameters keep the host-side path (torch refuses capturable there)."""
    from imc_grapes.backends.optim import optimizer_class, wants_capturable

    cls = optimizer_class(name)
    assert wants_capturable(cls, False, {"cuda"}) and wants_capturable(cls, True, {"cuda"})
    assert wants_capturable(cls, False, {"cpu", "cuda"})
    assert not wants_capturable(cls, False, {"cpu"})
    assert not wants_capturable(optimizer_class("sgd"), False, {"cuda"})     # no such option


def test_a_network_off_cuda_is_refused_when_the_run_starts(tmp_path, capsys):
    net = build_network(_cfg(), (1, 8, 8), 10, "cpu")
    with pytest.raises(ConfigError, match="needs a CUDA device, but the run is on cpu"):
        GraphedSteps(net)
    code = main(["train", "--dataset", "synthetic", "--hidden", "8", "--train-subset", "128", "--test-subset", "64",
                 "--no-progress", "--optimizer", "sgd", "--cuda-graph", "--device", "cpu", "--out", str(tmp_path)])
    assert code == 2
    assert "TrainConfig.cuda_graph needs a CUDA device" in capsys.readouterr().err


def _emulated_run(cfg: TrainConfig, data, monkeypatch, warmup: int):
    """``train(cfg)`` with its steps through :class:`graph_emulator.EmulatedSteps` (``warmup=NEVER``: all eager)."""
    import functools
    import sys

    import imc_grapes.cuda_graphs as cg

    from .graph_emulator import EmulatedSteps, sync_free_training_step

    monkeypatch.setattr(cg, "training_step", sync_free_training_step)
    monkeypatch.setattr(cg, "GraphedSteps", functools.partial(EmulatedSteps, warmup=warmup))
    train_mod = sys.modules["imc_grapes.train"]       # (the package's attribute ``train`` is the function)
    monkeypatch.setattr(train_mod, "check_graph_device", lambda device: None)
    result = train_mod.train(cfg, dataset=data, progress=False, log=lambda s: None)
    return result


@pytest.mark.parametrize("case", ["crossbar", "crossbar-cnn", "digital"])
def test_replayed_training_equals_eager_training_under_an_emulated_graph(case, monkeypatch):
    """Training with each plain step replayed (``graph_emulator``: the step's operations again, none of its Python)
    gives the learning curve and costs of eager training, number for number (crossbar MLP and CNN, digital MLP) —
    with saturation probes (every 7th step) and array-vs-exact comparison samples (every 10th) run eagerly between
    replays, a partial last batch
    captured as a second graph once it has been warmed up (epoch 4), evaluations, GRAPES factors (``M_mean``) and
    the metrics read between steps."""
    from imc_grapes.data.datasets import make_synthetic

    from .graph_emulator import NEVER

    data = make_synthetic(n_train=200, n_test=60, image_shape=(1, 8, 8), seed=0)
    common = dict(dataset="synthetic", device="auto", cuda_graph=True, hidden=(24, 16), lr=0.05, seed=3,
                  batch_size=32, drop_last=False, epochs=5, evals_per_epoch=2)
    if case.startswith("crossbar"):
        cfg = TrainConfig(backend="crossbar", optimizer="grapes", momentum=0.9, **common,
                          analog=AnalogSettings(tile_size=16, sat_probe_every=7, importance="array"))
        if case == "crossbar-cnn":                      # conv layers of 4 channels: a few seconds
            cfg = cfg.replace(model="cnn", hidden=(4, 4))
    else:
        cfg = TrainConfig(backend="digital", optimizer="grapes", dropout=0.2, momentum=0.9, **common)
    eager = _emulated_run(cfg, data, monkeypatch, NEVER)
    replayed = _emulated_run(cfg, data, monkeypatch, 3)
    info = replayed.extra["cuda_graph"]
    assert eager.extra["cuda_graph"] == {"replayed_steps": 0, "eager_steps": 5 * 7, "graphs": 0}
    assert info["graphs"] == 2 and info["replayed_steps"] + info["eager_steps"] == 5 * 7
    assert info["replayed_steps"] >= (20 if case.startswith("crossbar") else 25)
    assert len(eager.history) == len(replayed.history) == 10
    for a, b in zip(eager.history, replayed.history):
        a, b = dict(a), dict(b)
        for key in ("time_s", "elapsed_s"):
            a.pop(key), b.pop(key)
        assert a == b
    assert eager.extra["costs"]["counts"] == replayed.extra["costs"]["counts"]
    if case.startswith("crossbar"):
        assert sum(any(k.startswith("sat/") for k in row) for row in replayed.history) >= 4
        assert sum(any(k.startswith("M_corr/") for k in row) for row in replayed.history) >= 3
