"""Accuracy after programming noise and drift: restores the trained weights, ideal model changes nothing,
real drift degrades a trained classifier."""
import copy
import math
from collections.abc import Callable, Mapping

import pytest
import torch
from torch import nn

from devices import GenericDriftModel, NoDrift
from imc_grapes.inference_eval import accuracy_after_drift


def digital_weights(model: nn.Module) -> tuple[Callable[[], dict[str, torch.Tensor]],
                                               Callable[[Mapping[str, torch.Tensor]], None]]:
    """``read_weights`` / ``write_weights`` for a digital torch model (its ``*.weight`` parameters)."""
    params = {n: p for n, p in model.named_parameters() if n.endswith("weight") and p.dim() >= 2}

    def read() -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in params.items()}

    @torch.no_grad()
    def write(ws: Mapping[str, torch.Tensor]) -> None:
        for n, w in ws.items():
            params[n].copy_(w)

    return read, write


def _toy():
    torch.manual_seed(0)
    x = torch.randn(400, 10)
    w_true = torch.randn(3, 10)
    y = (x @ w_true.T).argmax(1)
    model = nn.Linear(10, 3, bias=False)
    with torch.no_grad():
        model.weight.copy_(w_true)  # a perfect classifier of its own labels
    return model, x, y


def test_ideal_model_keeps_accuracy_and_weights_are_restored():
    model, x, y = _toy()
    read, write = digital_weights(model)
    before = model.weight.detach().clone()

    def acc():
        return float((model(x).argmax(1) == y).float().mean())

    out = accuracy_after_drift(read, write, acc, [1.0, 3600.0], model=NoDrift())
    assert out == {"1": 1.0, "3600": 1.0}
    assert torch.equal(model.weight, before)


def test_noise_degrades_accuracy_and_more_with_more_noise():
    model, x, y = _toy()
    read, write = digital_weights(model)
    before = model.weight.detach().clone()

    def acc():
        return float((model(x).argmax(1) == y).float().mean())

    mild = accuracy_after_drift(read, write, acc, [1.0], model=GenericDriftModel(prog_noise_std=0.5), seed=1)
    strong = accuracy_after_drift(read, write, acc, [1.0], model=GenericDriftModel(prog_noise_std=8.0), seed=1)
    assert 0.5 < strong["1"] < mild["1"] <= 1.0
    assert torch.equal(model.weight, before)
    again = accuracy_after_drift(read, write, acc, [1.0], model=GenericDriftModel(prog_noise_std=8.0), seed=1)
    assert again == strong  # seeded


def _trained_reramsb_network():
    """A crossbar network on ReRamSB (write noise: the MVMs see the device states plus a draw made at each
    update), trained a few steps so that the apparent weights differ from the states."""
    import torch.nn.functional as F

    from imc_grapes.backends import AnalogSettings, build_network
    from imc_grapes.config import TrainConfig

    cfg = TrainConfig(dataset="synthetic", model="mlp", hidden=(10, 6), optimizer="sgd", lr=0.05, backend="crossbar",
                      seed=7, analog=AnalogSettings(tile_size=32, preset="ReRamSB"))
    net = build_network(cfg, (1, 8, 8), 10, "cpu")
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 1, 8, 8, generator=g), torch.randint(0, 10, (32,), generator=g)
    for _ in range(3):
        net.zero_grad()
        F.cross_entropy(net.model(x), y).backward()
        net.step()
    return net, x


def test_a_network_with_write_noise_is_evaluated_on_the_inference_weights_and_restored_exactly():
    """The ideal model on a device with write noise: every evaluation sees the trained weights (the ones the MVMs
    used) and nothing else — no second write-noise draw of the training device on top —, and afterwards every
    tile's device states, apparent states and generator are those of before, bit for bit."""
    from imc_grapes.inference_eval import network_accuracy_after_drift

    net, x = _trained_reramsb_network()
    tiles = {name: layer.inner.tile for name, layer in net.analog_layers.items()}
    assert all(t.has_write_noise for t in tiles.values())
    trained = net.read_weights()
    hidden = {name: t.read(hidden=True) for name, t in tiles.items()}
    assert any(not torch.equal(trained[n], hidden[n]) for n in tiles)           # write noise is there
    gens = {name: t.generator.get_state() for name, t in tiles.items()}
    seen = []

    def evaluate():
        seen.append(net.read_weights())
        return 0.5

    assert network_accuracy_after_drift(net, evaluate, [1.0, 3600.0], model=NoDrift()) == {"1": 0.5, "3600": 0.5}
    assert len(seen) == 2
    for weights in seen:
        for name, w in weights.items():
            torch.testing.assert_close(w, trained[name], rtol=1e-6, atol=1e-6)
    for name, t in tiles.items():
        assert torch.equal(t.read(), trained[name]) and torch.equal(t.read(hidden=True), hidden[name])
        assert torch.equal(t.generator.get_state(), gens[name])


def test_a_network_without_write_noise_is_evaluated_on_the_inference_weights_unclipped():
    """On a device without write noise (Capacitor) the evaluation sees exactly the weights the inference model
    produced — programming noise, drift and the digital drift compensation included — even where they lie
    beyond the training device's bounds (those bounds are not the inference device's; aihwkit's own inference
    tiles do not clip programmed weights into them). Afterwards the network is restored exactly."""
    from imc_grapes.backends import AnalogSettings, build_network
    from imc_grapes.config import TrainConfig
    from imc_grapes.inference_eval import network_accuracy_after_drift

    cfg = TrainConfig(dataset="synthetic", model="mlp", hidden=(12,), optimizer="sgd", lr=0.05, backend="crossbar",
                      seed=3, analog=AnalogSettings(tile_size=32, preset="Capacitor"))
    net = build_network(cfg, (1, 8, 8), 10, "cpu")
    tiles = {name: layer.inner.tile for name, layer in net.analog_layers.items()}
    assert not any(t.has_write_noise for t in tiles.values())
    # half of the weights saturated at their device's bound, as after training towards large weights
    start = net.read_weights()
    net.write_weights({n: torch.where(torch.rand_like(w) < 0.5, 10.0 * torch.sign(w), w) for n, w in start.items()})
    trained = net.read_weights()
    model, times = GenericDriftModel(prog_noise_std=1.0, nu_mean=0.05, nu_std=0.02), [1.0, 86400.0]
    produced: list[dict[str, torch.Tensor]] = []
    accuracy_after_drift(net.read_weights, lambda w: produced.append({k: v.clone() for k, v in w.items()}),
                         lambda: 0.5, times, seed=4, model=model)
    produced = produced[:len(times)]  # the last write is the restore of the trained weights
    seen = []

    def evaluate():
        seen.append(net.read_weights())
        return 0.5

    network_accuracy_after_drift(net, evaluate, times, seed=4, model=model)
    assert len(seen) == len(times)
    for want, got in zip(produced, seen):
        for name in trained:
            assert torch.equal(got[name], want[name])
    # the check is not vacuous: writing the same weights with the device bounds applied changes many of them
    with net.state_kept():
        net.write_weights(produced[0])
        changed = sum(int((net.read_weights()[n] != produced[0][n]).sum()) for n in trained)
    assert changed > 0.1 * sum(w.numel() for w in trained.values())
    for name, t in tiles.items():
        assert torch.equal(t.read(), trained[name])


def _assert_identical(got, want, where="state_dict"):
    """``got`` equals ``want`` bit for bit: tensors of the same dtype and values, nested dicts (a tile's extra
    state: its generator) entry by entry, anything else by ``==``."""
    if isinstance(want, torch.Tensor):
        assert isinstance(got, torch.Tensor) and got.dtype == want.dtype and torch.equal(got, want), where
    elif isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), where
        for k in want:
            _assert_identical(got[k], want[k], f"{where}[{k!r}]")
    else:
        assert got == want, where


@pytest.mark.parametrize("backend", ["crossbar", "digital"])
def test_the_network_state_after_the_evaluation_is_that_of_before_bit_for_bit(backend, monkeypatch):
    """After a real (noisy, drifting) inference evaluation every entry of the network's ``state_dict`` — weights,
    device states and apparent states, tile generators, counters — equals its value before, bit for bit, and so do
    the weights the network reads; the weights are written once per time and never a second time to restore them
    (the network's own state restore does that)."""
    from imc_grapes.inference_eval import network_accuracy_after_drift

    if backend == "crossbar":
        net, x = _trained_reramsb_network()
    else:
        from imc_grapes.backends import build_network
        from imc_grapes.config import TrainConfig

        net = build_network(TrainConfig(dataset="synthetic", hidden=(10, 6), seed=7), (1, 8, 8), 10, "cpu")
        x = torch.randn(32, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    outputs = net.model(x)
    before = copy.deepcopy(net.model.state_dict())
    weights = net.read_weights()
    writes = []
    real_write = net.write_weights
    monkeypatch.setattr(net, "write_weights", lambda w, **kw: writes.append(w) or real_write(w, **kw))
    seen = []

    def evaluate():
        seen.append(net.read_weights())
        return 0.5

    times = [1.0, 86400.0, 31536000.0]
    network_accuracy_after_drift(net, evaluate, times, seed=3)
    assert len(writes) == len(times)
    # not vacuous: the evaluation ran on other weights than the trained ones
    assert all(any(not torch.equal(s[n], weights[n]) for n in weights) for s in seen)
    _assert_identical(net.model.state_dict(), before)
    for n, w in net.read_weights().items():
        assert torch.equal(w, weights[n]), n
    if backend == "digital":
        assert torch.equal(net.model(x), outputs)


@pytest.mark.parametrize("times, why", [
    ([1.0, -1.0], r"must be times ≥ 0 s \(each finite\), got \[1\.0, -1\.0\]"),
    ([float("nan")], r"must be times ≥ 0 s \(each finite\), got \[nan\]"),
    ([float("inf")], r"must be times ≥ 0 s \(each finite\), got \[inf\]"),
    ([True], r"must be times ≥ 0 s \(each finite\), got \[True\]"),
    ([3600, 1.0, 3600.0], r"must not give a time twice \(each result is keyed by its time\), got \[3600, 1\.0, "
                          r"3600\.0\]"),
    ([0.0, -0.0], r"must not give a time twice .*, got \[0\.0, -0\.0\]"),
])
def test_bad_times_are_rejected_before_anything_is_written(times, why):
    """A repeated time would have overwritten its first result under the same key, after drawing its noise."""
    model, x, y = _toy()
    read, write = digital_weights(model)
    calls = []
    with pytest.raises(ValueError, match=rf"^accuracy_after_drift\.times_s {why}$"):
        accuracy_after_drift(read, lambda w: calls.append("write"), lambda: calls.append("eval") or 1.0, times)
    assert calls == []


def test_time_zero_reads_the_programmed_weights_and_drift_follows_the_power_law():
    """Drift only (no programming or read noise, ν = 0.05 for every device, no compensation): at t = 0 the weights
    read back are the trained ones; at t = t_0 = 20 s each is scaled by ((20 + 20)/20)^(−0.05) = 2^(−0.05)."""
    model, x, y = _toy()
    read, write = digital_weights(model)
    trained = model.weight.detach().clone()
    seen = []
    out = accuracy_after_drift(read, write, lambda: seen.append(model.weight.detach().clone()) or 1.0, [20.0, 0.0],
                               model=GenericDriftModel(nu_mean=0.05, t_0=20.0), compensate_drift=False)
    assert list(out) == ["0", "20"]
    torch.testing.assert_close(seen[0], trained, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(seen[1], trained * 2.0 ** -0.05, rtol=1e-6, atol=1e-6)


def test_the_order_the_times_are_given_in_does_not_change_the_numbers():
    """Noisy programming, drift and read noise: ``[86400, 1, 3600]`` gives, time for time, what ``[1, 3600, 86400]``
    gives (the times are evaluated in ascending order), keyed in ascending time."""
    model, x, y = _toy()
    read, write = digital_weights(model)

    def weight_sum():       # a number that tells the weights of each time apart (an accuracy could tie)
        return float(model.weight.detach().sum())

    noise = GenericDriftModel(prog_noise_std=0.5, nu_mean=0.05, nu_std=0.02, read_noise_std=0.05)
    ordered = accuracy_after_drift(read, write, weight_sum, [1.0, 3600.0, 86400.0], seed=2, model=noise)
    shuffled = accuracy_after_drift(read, write, weight_sum, [86400.0, 1.0, 3600.0], seed=2, model=noise)
    assert list(shuffled) == ["1", "3600", "86400"] and shuffled == ordered
    assert len(set(ordered.values())) == 3          # not vacuous: each time read other weights


def test_a_model_without_weights_has_the_same_accuracy_at_every_time():
    """Nothing to program means nothing drifts: one plain evaluation stands for every time (not an empty result)."""
    evaluations = []
    out = accuracy_after_drift(dict, lambda w: None, lambda: evaluations.append(1) or 0.75, [3600.0, 1.0])
    assert out == {"1": 0.75, "3600": 0.75} and evaluations == [1]
    assert accuracy_after_drift(dict, lambda w: None, lambda: 0.75, []) == {}


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_diverged_model_reports_nan_at_every_time_and_is_left_as_it_was(bad):
    """A NaN or infinite weight makes the accuracy undefined: NaN at every time (not the share of the class that
    argmax picks from NaN outputs), without writing or evaluating anything."""
    model, x, y = _toy()
    with torch.no_grad():
        model.weight[1, 2] = bad
    before = model.weight.detach().clone()
    read, write = digital_weights(model)
    calls = []
    out = accuracy_after_drift(read, lambda w: calls.append("write"), lambda: calls.append("eval") or 0.3,
                               [1.0, 3600.0])
    assert list(out) == ["1", "3600"] and all(math.isnan(a) for a in out.values())
    assert calls == [] and torch.equal(model.weight.nan_to_num(7.0), before.nan_to_num(7.0))


def test_finite_weights_whose_drifted_outputs_overflow_give_nan_not_argmax_of_inf():
    """Finite weights of 1e37, −1e37 and 5e36 per class (a float32 holds up to 3.4e38) on inputs of 100: each output
    is a sum of 10 terms of one sign, each of magnitude 1e39 or 5e38, beyond float32 on its own: ±inf. Programming
    noise, drift and read noise (seed 0) scale each weight by 0.8–1.6 here, so after drift every term is still
    beyond 3.4e38 (at least 0.8·5e38 = 4e38) and every output ±inf. Classes 0 and 2 read +inf, class 1 −inf: argmax
    picks class 0 for every sample, which would score the 2 of 4 labels that are 0; the accuracy is NaN instead
    (train.evaluate), at every time, and every weight written was finite (the outputs overflowed, not the
    weights)."""
    from imc_grapes.data import Split
    from imc_grapes.train import evaluate

    model = nn.Linear(10, 3, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1e37] * 10, [-1e37] * 10, [0.5e37] * 10]))
    split = Split(torch.full((4, 10), 100.0), torch.tensor([0, 1, 2, 0]))
    assert torch.isinf(model(split.x)).all() and (model(split.x).argmax(1) == split.y).float().mean() == 0.5
    read, write = digital_weights(model)
    written = []

    def record(ws):
        written.append(all(bool(torch.isfinite(w).all()) for w in ws.values()))
        write(ws)

    out = accuracy_after_drift(read, record, lambda: evaluate(model, split)[1], [1.0, 31536000.0])
    assert list(out) == ["1", "31536000"] and all(math.isnan(a) for a in out.values())
    assert written == [True, True, True]        # two noisy sets, then the trained weights back: all finite


def test_a_diverged_crossbar_network_reports_nan_and_keeps_its_state():
    from imc_grapes.inference_eval import network_accuracy_after_drift

    net, x = _trained_reramsb_network()
    weights = net.read_weights()
    name = next(iter(weights))
    tile = net.weight_layers[name].inner.tile
    with torch.no_grad():     # NaN states, as a diverged update leaves them (programming refuses NaN weights)
        nan_tiles = tile.grid.to_tiles(torch.full_like(weights[name], float("nan")))
        tile.weight_tiles.copy_(nan_tiles)
        tile.apparent_tiles.copy_(nan_tiles)
    assert torch.isnan(net.read_weights()[name]).all()
    before = copy.deepcopy(net.model.state_dict())
    out = network_accuracy_after_drift(net, lambda: float((net.model(x).argmax(1) == 0).float().mean()), [1.0])
    assert list(out) == ["1"] and math.isnan(out["1"])
    after = net.model.state_dict()
    for k, v in before.items():
        if isinstance(v, torch.Tensor):
            assert torch.equal(after[k].nan_to_num(7.0), v.nan_to_num(7.0)), k


def test_training_after_an_evaluation_continues_as_without_it():
    """The evaluation puts back every state that training uses — device states and write noise, the tiles'
    generators, GRAPES, dropout's global generator, the counters: three more steps after it give, bit for bit,
    the weights, metrics and outputs of three more steps without it."""
    import torch.nn.functional as F

    from imc_grapes.backends import AnalogSettings, build_network
    from imc_grapes.config import TrainConfig
    from imc_grapes.data import Split
    from imc_grapes.inference_eval import network_accuracy_after_drift
    from imc_grapes.train import evaluate

    def run(with_evaluation: bool):
        torch.manual_seed(0)
        cfg = TrainConfig(dataset="synthetic", hidden=(10, 6), optimizer="grapes", lr=0.05, backend="crossbar",
                          seed=7, dropout=0.2, analog=AnalogSettings(tile_size=32, preset="ReRamSB"))
        net = build_network(cfg, (1, 8, 8), 10, "cpu")
        g = torch.Generator().manual_seed(0)
        x, y = torch.randn(32, 1, 8, 8, generator=g), torch.randint(0, 10, (32,), generator=g)

        def steps():
            net.model.train()
            for _ in range(3):
                net.zero_grad()
                F.cross_entropy(net.model(x), y).backward()
                net.step()

        steps()
        if with_evaluation:
            out = network_accuracy_after_drift(net, lambda: evaluate(net.model, Split(x, y))[1], [1.0, 86400.0])
            assert list(out) == ["1", "86400"]
        steps()
        net.model.eval()
        return copy.deepcopy(net.model.state_dict()), net.metrics(), net.model(x).detach()

    (state_a, metrics_a, out_a), (state_b, metrics_b, out_b) = run(True), run(False)
    _assert_identical(state_a, state_b)
    assert metrics_a == metrics_b and torch.equal(out_a, out_b)
