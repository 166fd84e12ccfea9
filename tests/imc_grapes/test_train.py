"""``train`` under edge cases: divergence at any step, the recorded history, and determinism under a seed."""
import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import imc_grapes.train  # noqa: F401  (the package exports a function ``train``: the module is reached by name)
from imc_grapes.config import TrainConfig
from imc_grapes.models import MLP
from imc_grapes.train import TIMING_COLUMNS

pytestmark = pytest.mark.usefixtures("one_torch_thread")
T = sys.modules["imc_grapes.train"]
TINY = dict(dataset="synthetic", hidden=(16,), optimizer="sgd", lr=0.05, batch_size=50, train_subset=200,
            test_subset=100)


def quiet(_message: str) -> None:
    pass


def saved(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def nan_logits_at(monkeypatch: pytest.MonkeyPatch, call: int) -> None:
    """The MLP's training forward pass number ``call`` (1-based, counted over the run) returns NaN logits."""
    forward, calls = MLP.forward, {"n": 0}

    def poisoned(self, x):
        out = forward(self, x)
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == call:
                out = out * float("nan")
        return out
    monkeypatch.setattr(MLP, "forward", poisoned)


# 200 samples / batch 50 = 4 steps per epoch, evaluated after steps 2 and 4 (evals_per_epoch 2), 2 epochs
@pytest.mark.parametrize("backend", ["digital", "crossbar"])
@pytest.mark.parametrize("call, epoch, step, kept", [
    (1, 1, 1, []),                                                 # the first step: no evaluation yet
    (3, 1, 3, [(0.5, 2)]),                                         # mid-epoch, between two evaluations
    (8, 2, 4, [(0.5, 2), (1.0, 4), (1.5, 2)]),                     # the run's last step
])
def test_a_nan_loss_stops_the_run_naming_the_step_and_keeps_the_history_so_far(tmp_path, monkeypatch, backend,
                                                                              call, epoch, step, kept):
    nan_logits_at(monkeypatch, call)
    cfg = TrainConfig(**TINY, epochs=2, evals_per_epoch=2, backend=backend)
    with pytest.raises(T.DivergenceError) as err:
        T.train(cfg, tmp_path, progress=False, log=quiet)
    assert str(err.value) == f"loss became nan at epoch {epoch}, step {step} (lr=0.05); lower the lr"
    res = saved(tmp_path)
    assert res["status"] == "diverged" and res["message"] == str(err.value)
    assert [(h["epoch"], h["step"]) for h in res["history"]] == kept
    accs = [h["test_acc"] for h in res["history"]]
    assert res["best_test_acc"] == (max(accs) if accs else None)
    assert res["final"] == (res["history"][-1] if kept else None)
    assert "costs" not in res, "a diverged run has no cost summary of a finished run"
    assert len((tmp_path / "metrics.csv").read_text().splitlines()) == 1 + len(kept)


def test_weights_made_non_finite_by_the_last_update_are_a_divergence_not_a_completed_run(tmp_path, monkeypatch):
    """The training loss is checked before each update, so an update that leaves non-finite weights at the run's last
    step was caught by no check: the run was recorded as ``completed`` with an infinite test loss and the accuracy of
    argmax over NaN logits (with lr 1e9 on 2 steps: test loss inf, accuracy 0). Now the evaluation after that step
    stops it as diverged, and that evaluation gets no history row."""
    step, calls = T.training_step, {"n": 0}

    def then_inf(net, x, y, before_update):
        out = step(net, x, y, before_update)
        calls["n"] += 1
        if calls["n"] == 4:                                    # the update of the 4th (last) step overflows
            with torch.no_grad():
                net.model.layers[0].weight.fill_(float("inf"))
        return out
    monkeypatch.setattr(T, "training_step", then_inf)
    with pytest.raises(T.DivergenceError) as err:
        T.train(TrainConfig(**TINY, evals_per_epoch=2), tmp_path, progress=False, log=quiet)
    assert str(err.value).startswith("evaluation loss became nan after epoch 1, step 4 (lr=0.05)")
    res = saved(tmp_path)
    assert res["status"] == "diverged" and res["message"] == str(err.value)
    assert [h["step"] for h in res["history"]] == [2]


def test_a_non_finite_evaluated_output_with_a_finite_loss_is_a_divergence(tmp_path, monkeypatch):
    """Logits of -inf on a class no evaluated sample has leave every cross-entropy finite (that class's softmax is
    0), so the evaluation loss is finite while the accuracy is NaN (``evaluate``: an argmax over non-finite outputs
    is no prediction). Before, only the loss was checked and such a run was recorded as ``completed`` with a NaN
    test accuracy; now the first evaluation stops it as diverged, naming the point, and gets no history row."""
    from imc_grapes.data import Dataset, Split, load_dataset

    data = load_dataset("synthetic", seed=0)
    last = data.n_classes - 1
    keep = data.test.y != last                                     # no evaluated sample of the last class
    data = Dataset(data.name, data.train, Split(data.test.x[keep], data.test.y[keep]), data.n_classes)
    forward = MLP.forward

    def minus_inf_on_last_class_in_evaluation(self, x):
        out = forward(self, x)
        return out if torch.is_grad_enabled() else out.index_fill(1, torch.tensor([last]), -math.inf)
    monkeypatch.setattr(MLP, "forward", minus_inf_on_last_class_in_evaluation)
    loss, acc = T.evaluate(MLP([data.test.x[0].numel(), 16, data.n_classes], seed=0), data.test.subset(100))
    assert math.isfinite(loss) and math.isnan(acc), "the case the check is for: a finite loss, a NaN accuracy"
    with pytest.raises(T.DivergenceError) as err:
        T.train(TrainConfig(**TINY, evals_per_epoch=2), tmp_path, dataset=data, progress=False, log=quiet)
    assert str(err.value).startswith("evaluation accuracy became nan after epoch 1, step 2 (lr=0.05)"), err.value
    assert str(err.value).endswith("lower the lr")
    res = saved(tmp_path)
    assert res["status"] == "diverged" and res["message"] == str(err.value)
    assert res["history"] == []


@pytest.mark.parametrize("loss, acc, starts", [
    (math.nan, math.nan, "evaluation loss became nan after"),          # the loss is checked (and named) first
    (math.inf, 0.5, "evaluation loss became inf after"),
    (0.1, math.nan, "evaluation accuracy became nan after"),
    (0.1, math.inf, "evaluation accuracy became inf after"),
    (0.1, 0.5, None),                                                # finite: nothing raised
])
def test_check_evaluation_treats_a_non_finite_loss_or_accuracy_as_a_divergence(loss, acc, starts):
    if starts is None:
        assert T.check_evaluation(loss, acc, "epoch 1, step 2", 0.05) is None
        return
    with pytest.raises(T.DivergenceError, match=rf"^{starts} epoch 1, step 2 \(lr=0.05\): .*; lower the lr$"):
        T.check_evaluation(loss, acc, "epoch 1, step 2", 0.05)


def raise_at_step(monkeypatch: pytest.MonkeyPatch, call: int, exc: BaseException) -> None:
    """The run's training step number ``call`` (1-based, counted over the run) raises ``exc`` before training."""
    step, calls = T.training_step, {"n": 0}

    def maybe_raise(net, x, y, before_update):
        calls["n"] += 1
        if calls["n"] == call:
            raise exc
        return step(net, x, y, before_update)
    monkeypatch.setattr(T, "training_step", maybe_raise)


@pytest.mark.parametrize("exc, status, message", [
    (KeyboardInterrupt(), "interrupted", "interrupted (KeyboardInterrupt)"),          # Ctrl-C
    (SystemExit(143), "interrupted", "interrupted (SystemExit: 143)"),
    (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "failed",
     "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"),
    (ValueError("a bug"), "failed", "ValueError: a bug"),
])
def test_a_run_stopped_by_any_exception_records_why_keeps_its_rows_and_re_raises(tmp_path, monkeypatch, exc, status,
                                                                                message):
    """Before, only a divergence was recorded: any other exception left ``results.json`` at ``running``, so a
    crashed or interrupted run looked like one still training. 4 steps per epoch, evaluated after steps 2 and 4;
    the exception comes at the 3rd step."""
    raise_at_step(monkeypatch, 3, exc)
    closed = []
    real_build = T.build_network

    def build(*a, **k):
        net = real_build(*a, **k)
        close = net.close
        net.close = lambda: closed.append(1) or close()
        return net
    monkeypatch.setattr(T, "build_network", build)
    with pytest.raises(type(exc)) as err:
        T.train(TrainConfig(**TINY, epochs=2, evals_per_epoch=2), tmp_path, progress=False, log=quiet)
    assert err.value is exc, "the exception itself propagates"
    res = saved(tmp_path)
    assert res["status"] == status and res["message"] == message
    assert [h["step"] for h in res["history"]] == [2] and res["final"] == res["history"][0]
    assert res["best_test_acc"] == res["history"][0]["test_acc"]
    assert ("traceback" in res) == (status == "failed")
    if status == "failed":
        assert res["traceback"].startswith("Traceback") and message in res["traceback"]
    assert "costs" not in res, "a stopped run has no cost summary of a finished run"
    assert len((tmp_path / "metrics.csv").read_text().splitlines()) == 2
    assert res["wall_time_s"] > 0 and closed == [1]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary file left"


def test_best_test_acc_leaves_a_nan_accuracy_out_wherever_it_stands():
    """``max`` over a list with a NaN returns the NaN when it comes first and ignores it otherwise."""
    cfg = TrainConfig(**TINY)
    for accs, best in [([float("nan"), 0.5, 0.75], 0.75), ([0.5, float("nan"), 0.25], 0.5),
                       ([float("nan")], None), ([], None)]:
        result = T.RunResult(cfg, [{"test_acc": a} for a in accs])
        assert result.to_dict()["best_test_acc"] == best, accs
        assert T.best_accuracy(result.history) == best


@pytest.mark.parametrize("n, batch, drop_last, per_epoch, steps", [
    (70, 10, True, 3, [2, 5, 7]),        # 7 batches: 7/3 = 2.33 -> 2, 14/3 = 4.67 -> 5, 7
    (75, 10, True, 3, [2, 5, 7]),        # the partial batch of 5 left out: the same 7 batches
    (7, 3, False, 3, [1, 2, 3]),         # batches of 3, 3, 1: every batch a point
    (30, 40, False, 1, [1]),             # a batch larger than the training set: one partial batch per epoch
])
def test_the_history_has_each_evaluation_once_at_its_fraction_of_the_epochs(tmp_path, n, batch, drop_last,
                                                                            per_epoch, steps):
    cfg = TrainConfig(**{**TINY, "train_subset": n, "batch_size": batch, "test_subset": 40}, drop_last=drop_last,
                      epochs=2, evals_per_epoch=per_epoch)
    result = T.train(cfg, tmp_path, progress=False, log=quiet)
    n_batches = steps[-1]
    assert [(h["epoch"], h["step"]) for h in result.history] == \
        [(round(e + s / n_batches, 4), s) for e in (0, 1) for s in steps]
    res = saved(tmp_path)
    assert res["status"] == "completed" and res["history"] == result.history
    assert res["final"] == result.history[-1]
    assert res["best_test_acc"] == max(h["test_acc"] for h in result.history)
    assert all(round(h["test_acc"] * 40) == h["test_acc"] * 40 for h in result.history), "a count of 40 samples"
    assert res["train_samples"] == n and res["eval_samples"] == 40


def test_metrics_csv_counts_steps_and_seconds_over_the_run_as_well_as_per_epoch(tmp_path):
    """``step`` and ``time_s`` restart every epoch; ``global_step`` and ``elapsed_s`` run on over the whole run.
    200 samples in batches of 50: 4 batches per epoch, evaluated after batches 2 and 4; 3 epochs give global steps
    2, 4 | 6, 8 | 10, 12. An epoch's clock starts after the previous epoch's last row was taken, so a row's
    ``elapsed_s`` exceeds the previous epoch's last ``elapsed_s`` by more than its own ``time_s``."""
    cfg = TrainConfig(**TINY, epochs=3, evals_per_epoch=2)
    T.train(cfg, tmp_path, progress=False, log=quiet)
    with open(tmp_path / "metrics.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames[:len(T.METRICS_COLUMNS)] == list(T.METRICS_COLUMNS)
    assert {"step", "time_s", "global_step", "elapsed_s"} <= set(T.METRICS_COLUMNS)
    assert [int(r["step"]) for r in rows] == [2, 4, 2, 4, 2, 4]
    assert [int(r["global_step"]) for r in rows] == [2, 4, 6, 8, 10, 12]
    assert [float(r["epoch"]) for r in rows] == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    time_s, elapsed = [float(r["time_s"]) for r in rows], [float(r["elapsed_s"]) for r in rows]
    assert all(e >= t > 0 for e, t in zip(elapsed, time_s))
    assert all(b > a for a, b in zip(elapsed, elapsed[1:]))                       # a running clock
    assert time_s[2] < time_s[1] and time_s[4] < time_s[3]                         # (the per-epoch one restarts)
    for k in (2, 3, 4, 5):                                                         # rows of epochs 2 and 3
        assert elapsed[k] > elapsed[2 * (k // 2) - 1] + time_s[k]


CASES = {"digital": dict(dropout=0.2), "crossbar": dict(backend="crossbar", optimizer="grapes",
                                                        analog={"tile_size": 16})}


def fingerprint(case: str, seed: int) -> dict:
    """The history (less wall times) and the final weights of a 2-epoch run of ``CASES[case]`` under ``seed``, as
    JSON-ready lists (float32 values are exact as Python floats)."""
    nets = []
    build = T.build_network

    def keep(*args, **kwargs):
        nets.append(build(*args, **kwargs))
        return nets[-1]
    T.build_network = keep
    try:
        cfg = TrainConfig(**{**TINY, "train_subset": 96, "batch_size": 32, "test_subset": 50, **CASES[case]}, epochs=2,
                          evals_per_epoch=2, seed=seed)
        result = T.train(cfg, progress=False, log=quiet)
    finally:
        T.build_network = build
    return {"history": [{k: v for k, v in h.items() if k not in TIMING_COLUMNS} for h in result.history],
            "weights": {k: w.flatten().tolist() for k, w in nets[0].read_weights().items()}}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_seed_gives_the_same_history_and_weights_in_one_process_and_in_another(case):
    first = fingerprint(case, 0)
    assert fingerprint(case, 0) == first
    other = subprocess.run([sys.executable, "-c", "import json, torch; torch.set_num_threads(1); from "
                            "tests.imc_grapes.test_train import fingerprint; "
                            f"print(json.dumps(fingerprint({case!r}, 0)))"],
                           capture_output=True, text=True, timeout=300, check=True,
                           cwd=Path(__file__).resolve().parents[2])
    assert json.loads(other.stdout.splitlines()[-1]) == json.loads(json.dumps(first))
    changed = fingerprint(case, 1)
    assert changed["weights"] != first["weights"]
    assert [h["test_loss"] for h in changed["history"]] != [h["test_loss"] for h in first["history"]]


@pytest.mark.parametrize("n_batches, per_epoch, points", [
    (5, 2, {2, 5}),                 # 2.5 -> 2 (a half goes to the even count)
    (7, 2, {4, 7}),                 # 3.5 -> 4
    (93, 4, {23, 46, 70, 93}),      # the quick start's compare: 23.25, 46.5 -> 46, 69.75, 93
    (10, 3, {3, 7, 10}),            # 3.33, 6.67, 10
    (4, 4, {1, 2, 3, 4}),           # every batch
    (1, 1, {1}),
])
def test_eval_points_follow_the_documented_rounding_rule(n_batches, per_epoch, points):
    assert T.eval_points(n_batches, per_epoch) == points


def test_evaluate_counts_hand_checked_predictions_and_gives_nan_accuracy_for_non_finite_outputs():
    """Logits ``[0, x]``: class 1 predicted when x > 0. A NaN or Inf output in any sample (here in the second batch
    of 4) makes the accuracy NaN: argmax over NaN logits picks the NaN's index, so before, such a model (e.g. in the
    inference evaluation, which keeps only the accuracy) had a finite accuracy."""
    from imc_grapes.data import Split

    model = torch.nn.Linear(1, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.0], [1.0]]))
        model.bias.zero_()
    xs = [-1.0, 2.0, -3.0, 4.0, 5.0, -6.0]
    y = torch.tensor([0, 1, 0, 1, 0, 0])
    loss, acc = T.evaluate(model, Split(torch.tensor(xs).reshape(6, 1), y), batch_size=4)
    ce = [math.log1p(math.exp(x)) - (x if t == 1 else 0.0) for x, t in zip(xs, y.tolist())]
    assert acc == 5 / 6 and loss == pytest.approx(sum(ce) / 6, rel=1e-6)
    for bad in (float("nan"), float("inf")):
        x = torch.tensor(xs).reshape(6, 1)
        x[4, 0] = bad
        loss, acc = T.evaluate(model, Split(x, y), batch_size=4)
        assert math.isnan(acc) and not math.isfinite(loss), bad
    assert model.training, "the model's mode is restored"


@pytest.mark.parametrize("sig, code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_the_train_command_stopped_by_a_signal_records_the_run_as_interrupted(tmp_path, sig, code):
    """``imc-grapes train`` in a child process, sent SIGTERM (kill, a scheduler's stop) or SIGINT (Ctrl-C) once its
    first evaluation row is written: it exits with 143 / 130 and its results.json says ``interrupted`` with the rows
    so far (before: a SIGTERM killed it with ``running`` left in the file). The child is always reaped."""
    import os
    import signal
    import time

    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "imc_grapes", "train", "--dataset", "synthetic", "--hidden", "16",
           "--optimizer", "sgd", "--train-subset", "2000", "--batch-size", "10", "--evals-per-epoch", "200",
           "--epochs", "1000", "--no-progress", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(Path(T.__file__).resolve().parents[1])}
    # a child inherits an ignored SIGINT (a test run started in the background by a non-interactive shell, `cmd &`),
    # and Python then installs no KeyboardInterrupt handler: give the child the default disposition, as a terminal's
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        files = []
        while time.monotonic() < deadline and proc.poll() is None:
            files = list(out.glob("*/results.json"))
            if files and json.loads(files[0].read_text() or "{}").get("history"):
                break
            time.sleep(0.05)
        assert proc.poll() is None and files, "the run did not start in time"
        proc.send_signal(getattr(signal, sig))
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, err.decode()
    res = json.loads(files[0].read_text())
    assert res["status"] == "interrupted"
    assert res["message"] == ("interrupted (Terminated)" if sig == "SIGTERM" else "interrupted (KeyboardInterrupt)")
    steps = [h["step"] for h in res["history"]][:200]             # 200 batches, evaluated after each
    assert steps == list(range(1, len(steps) + 1)) and steps        # the rows so far (the signal may come at row 1)
    assert b"the run in progress is recorded as interrupted" in err


# ------------------------------------------------------------------------ the training loop's own arithmetic
# Logits [0, x] of a 1-input linear model (weights (0, 1), no bias): class 1 predicted when x > 0, and the
# cross-entropy of a sample is log(1 + e^x) − x·[t = 1] (hand form, as in the evaluate test above).
def _logit_model() -> torch.nn.Linear:
    model = torch.nn.Linear(1, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.0], [1.0]]))
        model.bias.zero_()
    return model


def _ce(x: float, t: int) -> float:
    return math.log1p(math.exp(x)) - (x if t == 1 else 0.0)


class _FrozenNet:
    """What :func:`imc_grapes.train.train_batches` uses of a :class:`~imc_grapes.backends.Network`, with a step that
    changes nothing: every batch then sees the same model, so the window means have a hand value."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model, self.device = model, torch.device("cpu")

    def zero_grad(self) -> None:
        self.model.zero_grad(set_to_none=True)

    def step(self) -> None:
        pass


def test_the_train_loss_and_accuracy_of_a_point_are_per_sample_means_over_the_batches_since_the_last_point():
    """5 samples in batches of 2, 2, 1, evaluated after batches 2 and 3: each point's loss is the mean cross-entropy
    over the samples since the previous point (4, then 1) and its accuracy the fraction of them predicted right; both
    sums restart at each point (an accuracy count kept over the epoch would give the second point 3/1)."""
    from imc_grapes.data import BatchLoader, Split

    xs, ys = [-1.0, 2.0, -3.0, 4.0, 5.0], [0, 1, 1, 1, 0]             # correct, correct, wrong, correct, wrong
    split = Split(torch.tensor(xs).reshape(5, 1), torch.tensor(ys))
    got: list[tuple[int, float, float]] = []
    T.train_batches(_FrozenNet(_logit_model()), BatchLoader(split, 2, shuffle=False), TrainConfig(), "test", False,
                    lambda step, loss, acc: got.append((step, loss, acc)), {2, 3})
    ce = [_ce(x, t) for x, t in zip(xs, ys)]
    assert [(s, a) for s, _, a in got] == [(2, 3 / 4), (3, 0.0)]
    assert got[0][1] == pytest.approx(sum(ce[:4]) / 4, rel=1e-6)
    assert got[1][1] == pytest.approx(ce[4], rel=1e-6)


def test_batches_of_unequal_size_weigh_their_samples_alike_in_the_train_loss():
    """One point after batches of 2 and 1 samples: the train loss is the mean over the 3 samples, not the mean of the
    two batch means (which differ here: (ce0 + ce1)/2 and ce2)."""
    from imc_grapes.data import BatchLoader, Split

    xs, ys = [-1.0, 2.0, 3.0], [1, 1, 0]
    split = Split(torch.tensor(xs).reshape(3, 1), torch.tensor(ys))
    got: list[tuple[int, float, float]] = []
    T.train_batches(_FrozenNet(_logit_model()), BatchLoader(split, 2, shuffle=False), TrainConfig(), "test", False,
                    lambda step, loss, acc: got.append((step, loss, acc)), {2})
    ce = [_ce(x, t) for x, t in zip(xs, ys)]
    assert got[0][0] == 2 and got[0][2] == pytest.approx(1 / 3)
    assert got[0][1] == pytest.approx(sum(ce) / 3, rel=1e-6)
    assert abs(sum(ce) / 3 - ((ce[0] + ce[1]) / 2 + ce[2]) / 2) > 0.1     # the two means differ: not vacuous


def test_each_training_step_uses_its_own_batch_gradient_only():
    """Two SGD steps of the logit model through ``training_step``: the second update is lr times the second batch's
    gradient at the weights after the first (computed here by hand: ∂CE/∂logits = softmax − one-hot, ∂/∂W = that
    times x, mean over the batch), not the sum of both batches' gradients (a missing zero_grad accumulates them)."""
    from imc_grapes.cuda_graphs import training_step

    model, lr = _logit_model(), 0.5
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    net = _FrozenNet(model)
    net.zero_grad = lambda: opt.zero_grad(set_to_none=True)     # type: ignore[method-assign]
    net.step = opt.step                                          # type: ignore[method-assign]

    def by_hand(w: list[float], b: list[float], xs: list[float], ys: list[int]) -> tuple[list[float], list[float]]:
        gw, gb = [0.0, 0.0], [0.0, 0.0]
        for x, t in zip(xs, ys):
            z = [w[0] * x + b[0], w[1] * x + b[1]]
            p1 = 1.0 / (1.0 + math.exp(z[0] - z[1]))
            e = [1.0 - p1 - (t == 0), p1 - (t == 1)]
            for k in range(2):
                gw[k] += e[k] * x / len(xs)
                gb[k] += e[k] / len(xs)
        return [w[k] - lr * gw[k] for k in range(2)], [b[k] - lr * gb[k] for k in range(2)]

    batches = [([1.0, -2.0], [0, 1]), ([0.5, 3.0], [1, 0])]
    w, b = [0.0, 1.0], [0.0, 0.0]
    for xs, ys in batches:
        training_step(net, torch.tensor(xs).reshape(-1, 1), torch.tensor(ys))
        w, b = by_hand(w, b, xs, ys)
        torch.testing.assert_close(model.weight.detach().reshape(-1), torch.tensor(w), rtol=0, atol=1e-6)
        torch.testing.assert_close(model.bias.detach(), torch.tensor(b), rtol=0, atol=1e-6)


def test_evaluate_runs_the_model_in_eval_mode():
    """A training-mode model with dropout (90 %, so that most logits would be zeroed): ``evaluate`` gives the
    hand-computed loss and accuracy of the model without dropout, twice alike, and leaves the model training."""
    from imc_grapes.data import Split
    from imc_grapes.models import Dropout

    model = torch.nn.Sequential(_logit_model(), Dropout(0.9, seed=0))
    model.train()
    xs, ys = [-1.0, 2.0, -3.0, 4.0, 5.0, -6.0], [0, 1, 0, 1, 0, 0]
    split = Split(torch.tensor(xs).reshape(6, 1), torch.tensor(ys))
    ce = sum(_ce(x, t) for x, t in zip(xs, ys)) / 6
    for _ in range(2):
        loss, acc = T.evaluate(model, split, batch_size=4)
        assert acc == 5 / 6 and loss == pytest.approx(ce, rel=1e-6)
    assert model.training


class _Killed(BaseException):
    """Stands for a kill -9 at the moment it is raised (nothing after it runs: no handler catches it)."""


def test_a_run_killed_as_it_starts_over_a_finished_one_never_leaves_its_results_beside_other_metrics(tmp_path,
                                                                                                  monkeypatch):
    """A run trained again into the folder of a finished one (``compare --no-resume``, or a run of other options)
    and killed between its first two writes: the folder's ``results.json`` never still says ``completed`` beside a
    ``metrics.csv`` that the new run has already replaced (a resume would reuse that run, with rows that are not
    its history). The first save invalidates ``results.json`` (status ``running``) before it touches
    ``metrics.csv``."""
    train_mod = sys.modules["imc_grapes.train"]
    cfg = TrainConfig(**TINY)
    first = train_mod.train(cfg, tmp_path, progress=False, log=quiet)
    assert first.status == "completed" and len(first.history) >= 1

    real = train_mod.write_json_atomic

    def killed_at_results_json(path, *args, **kwargs):
        if Path(path).name == "results.json":
            raise _Killed
        return real(path, *args, **kwargs)

    monkeypatch.setattr(train_mod, "write_json_atomic", killed_at_results_json)
    with pytest.raises(_Killed):
        train_mod.train(cfg.replace(lr=0.1), tmp_path, progress=False, log=quiet)
    record = saved(tmp_path)
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    if record["status"] == "completed":     # the folder still reads as the finished run: its rows are whole
        assert [float(r["test_acc"]) for r in rows] == [h["test_acc"] for h in record["history"]]
