"""Permuted-MNIST continual learning: the metrics against a hand-computed accuracy matrix, the tasks, and the
trainer end to end on synthetic data."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from imc_grapes.config import TrainConfig
from imc_grapes.data import Split, make_synthetic
from imc_grapes.experiments import forgetting_metrics, permute, task_permutations, train_permuted


pytestmark = pytest.mark.usefixtures("one_torch_thread")

# R[i][j]: accuracy on task i after training task j (nan: task not trained yet)
NAN = float("nan")
R = [[0.90, 0.80, 0.70],
     [NAN, 0.95, 0.85],
     [NAN, NAN, 0.92]]


def test_metrics_of_a_hand_computed_matrix():
    m = forgetting_metrics(R)
    # A = (0.70 + 0.85 + 0.92) / 3 = 0.8233…
    assert m["avg_acc"] == pytest.approx((0.70 + 0.85 + 0.92) / 3)
    # f_0 = max(0.90, 0.80) - 0.70 = 0.20; f_1 = max(0.95) - 0.85 = 0.10; F = 0.15
    assert m["per_task_forgetting"] == pytest.approx([0.20, 0.10])
    assert m["forgetting"] == pytest.approx(0.15)
    # BWT = ((0.70 - 0.90) + (0.85 - 0.95)) / 2 = -0.15
    assert m["bwt"] == pytest.approx(-0.15)


def test_forgetting_uses_the_best_earlier_accuracy_not_the_diagonal():
    # task 0 improves after task 1 (0.6 -> 0.8) then drops to 0.5: f_0 = 0.8 - 0.5 = 0.3, BWT = 0.5 - 0.6 = -0.1
    m = forgetting_metrics([[0.6, 0.8, 0.5], [0.1, 0.9, 0.9], [0.1, 0.1, 0.7]])
    assert m["per_task_forgetting"] == pytest.approx([0.3, 0.0])
    assert m["bwt"] == pytest.approx((-0.1 + 0.0) / 2)
    assert m["avg_acc"] == pytest.approx((0.5 + 0.9 + 0.7) / 3)


def test_one_task_and_bad_shapes():
    assert forgetting_metrics([[0.9]]) == {"avg_acc": 0.9, "forgetting": None, "bwt": None, "per_task_forgetting": []}
    with pytest.raises(ValueError, match="square"):
        forgetting_metrics([[0.1, 0.2]])


@given(st.integers(1, 6), st.integers(1, 50), st.integers(0, 10))
@settings(max_examples=25, deadline=None)
def test_permutations_are_permutations_and_seeded(n_tasks, n, seed):
    p = task_permutations(n_tasks, n, seed)
    assert p.shape == (n_tasks, n)
    assert torch.equal(p[0], torch.arange(n))
    assert torch.equal(p.sort(dim=1).values, torch.arange(n).expand(n_tasks, n))
    assert torch.equal(p, task_permutations(n_tasks, n, seed))


def test_permute_moves_pixels():
    x = torch.arange(8.0).reshape(2, 1, 2, 2)
    out = permute(Split(x, torch.tensor([0, 1])), torch.tensor([3, 2, 1, 0]))
    assert out.x.shape == (2, 1, 2, 2)
    assert out.x[0].flatten().tolist() == [3.0, 2.0, 1.0, 0.0]
    assert out.y.tolist() == [0, 1]


def test_train_permuted_end_to_end(tmp_path):
    data = make_synthetic(300, 100, n_classes=4, image_shape=(1, 6, 6), seed=0)
    cfg = TrainConfig(dataset="synthetic", hidden=(12,), optimizer="grapes", lr=0.05, momentum=0.9, batch_size=30,
                      extra={"tasks": 3, "permutation_seed": 1})
    r = train_permuted(cfg, tmp_path, dataset=data, progress=False, log=lambda s: None)
    fg = r.extra["forgetting"]
    mat = fg["matrix"]
    assert r.status == "completed" and len(r.history) == 3 and len(mat) == 3
    # the history is read off the matrix: mean accuracy over the tasks trained so far
    for j, h in enumerate(r.history):
        assert h["test_acc"] == pytest.approx(sum(mat[i][j] for i in range(j + 1)) / (j + 1))
        assert [h[f"acc/task{i}"] for i in range(3)] == [mat[i][j] for i in range(3)]
    assert fg["avg_acc"] == pytest.approx(r.history[-1]["test_acc"])
    # one row per task: 300 samples in batches of 30 = 10 steps per task (1 epoch), counted on across the tasks
    assert [(h["step"], h["global_step"]) for h in r.history] == [(10, 10), (10, 20), (10, 30)]
    assert all(h["elapsed_s"] >= h["time_s"] > 0 for h in r.history)
    assert all(b["elapsed_s"] > a["elapsed_s"] + b["time_s"] for a, b in zip(r.history, r.history[1:]))
    assert fg["forgetting"] == pytest.approx(forgetting_metrics(mat)["forgetting"])
    assert mat[0][0] > 0.5, "the first task is learned"
    again = train_permuted(cfg, None, dataset=data, progress=False, log=lambda s: None)
    assert again.extra["forgetting"]["matrix"] == mat, "same seed, same numbers"
    assert (tmp_path / "results.json").is_file() and (tmp_path / "metrics.csv").is_file()


def test_matrix_plot_hides_untrained_tasks_only():
    """R[i, j] = accuracy on task i after training task j: the plot hides i > j (not trained yet) and keeps
    the diagonal and the forgetting entries above it (regression: the transposed triangle was hidden)."""
    import numpy as np

    from imc_grapes.experiments.report import trained_entries

    r = [[0.92, 0.90, 0.85], [0.08, 0.91, 0.90], [0.11, 0.09, 0.93]]
    shown = trained_entries(r)
    assert np.isnan(shown[1, 0]) and np.isnan(shown[2, 0]) and np.isnan(shown[2, 1])
    assert shown[0, 1] == 0.90 and shown[0, 2] == 0.85 and shown[1, 2] == 0.90
    assert [shown[k, k] for k in range(3)] == [0.92, 0.91, 0.93]


def test_non_finite_outputs_at_an_evaluation_stop_the_run_as_diverged(tmp_path, monkeypatch):
    """A permuted-task run whose model gives non-finite outputs when evaluated after a task (as weights made
    non-finite by a task's last update do: no training loss checks that update) was recorded as completed with NaN
    accuracies. Now, as train() does, the evaluation loss stops it with a DivergenceError naming the point; that
    point gets no history row, and the run records ``diverged`` — also when run by the jobs' run_one."""
    import json

    from imc_grapes.compare import run_one
    from imc_grapes.models import MLP
    from imc_grapes.train import DivergenceError

    data = make_synthetic(300, 100, n_classes=4, image_shape=(1, 6, 6), seed=0)
    cfg = TrainConfig(dataset="synthetic", hidden=(12,), optimizer="sgd", lr=0.05, batch_size=30,
                      extra={"tasks": 3, "permutation_seed": 1})
    forward, calls = MLP.forward, {"n": 0}

    def poisoned(self, x):          # evaluation forwards (no grad): one per task's test set (100 < batch 1000)
        out = forward(self, x)
        if not torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == 5:     # after task 2: the test set of task 2 (forwards 4, 5, 6)
                out = out * float("nan")
        return out
    monkeypatch.setattr(MLP, "forward", poisoned)
    with pytest.raises(DivergenceError) as err:
        train_permuted(cfg, tmp_path / "a", dataset=data, progress=False, log=lambda s: None)
    # 300 samples in batches of 30: 10 steps per task, 1 epoch
    assert str(err.value) == ("evaluation loss became nan after task 2, epoch 1, step 10 (on the test set of task 2) "
                              "(lr=0.05): the weights after that step's update give non-finite outputs; lower the lr")
    res = json.loads((tmp_path / "a" / "results.json").read_text())
    assert res["status"] == "diverged" and res["message"] == str(err.value)
    assert [h["epoch"] for h in res["history"]] == [1], "the point evaluated with NaN outputs gets no row"
    assert "forgetting" not in res
    calls["n"] = 0
    said = []
    r = run_one(cfg, tmp_path / "b", data, False, True, said.append, trainer=train_permuted)
    assert r.status == "diverged" and r.message == str(err.value) and len(r.history) == 1
    assert any("diverged: evaluation loss became nan" in s for s in said)


def test_a_nan_accuracy_over_a_finite_evaluation_loss_stops_the_run_as_diverged(tmp_path, monkeypatch):
    """Logits of -inf on a class that no test sample has keep the evaluation loss finite while the accuracy is NaN
    (``evaluate``); before, the run was recorded as completed with NaN accuracies. Now the evaluation after task 2
    stops it as diverged (train()'s policy: :func:`~imc_grapes.train.check_evaluation`)."""
    import json
    import math

    from imc_grapes.data import Dataset
    from imc_grapes.models import MLP
    from imc_grapes.train import DivergenceError

    data = make_synthetic(300, 100, n_classes=4, image_shape=(1, 6, 6), seed=0)
    keep = data.test.y != 3                                         # no test sample of class 3
    data = Dataset(data.name, data.train, Split(data.test.x[keep], data.test.y[keep]), data.n_classes)
    cfg = TrainConfig(dataset="synthetic", hidden=(12,), optimizer="sgd", lr=0.05, batch_size=30,
                      extra={"tasks": 3, "permutation_seed": 1})
    forward, calls = MLP.forward, {"n": 0}

    def poisoned(self, x):          # evaluation forwards (no grad): one per task's test set
        out = forward(self, x)
        if not torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == 5:     # after task 2: the test set of task 2 (forwards 4, 5, 6)
                out = out.index_fill(1, torch.tensor([3]), -math.inf)
        return out
    monkeypatch.setattr(MLP, "forward", poisoned)
    with pytest.raises(DivergenceError) as err:
        train_permuted(cfg, tmp_path, dataset=data, progress=False, log=lambda s: None)
    assert str(err.value).startswith("evaluation accuracy became nan after task 2, epoch 1, step 10 (on the test "
                                     "set of task 2) (lr=0.05)"), err.value
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["status"] == "diverged" and res["message"] == str(err.value)
    assert [h["epoch"] for h in res["history"]] == [1]


def test_a_huge_lr_diverges_the_run_at_the_evaluation_after_the_first_task(tmp_path):
    """No poisoning: lr = 1e30 with one step per task (batch = the 300 training samples). That step's loss, at the
    initial weights, is finite; its update leaves weights of order 1e28 whose outputs overflow to ±Inf (float32),
    so the loss on the test set of task 1 is NaN. The run stops there as diverged (no history row, no forgetting
    metrics), instead of completing with a matrix of NaN accuracies."""
    import json

    from imc_grapes.train import DivergenceError

    data = make_synthetic(300, 100, n_classes=4, image_shape=(1, 6, 6), seed=0)
    cfg = TrainConfig(dataset="synthetic", hidden=(12,), optimizer="sgd", lr=1e30, batch_size=300,
                      extra={"tasks": 3, "permutation_seed": 1})
    with pytest.raises(DivergenceError) as err:
        train_permuted(cfg, tmp_path, dataset=data, progress=False, log=lambda s: None)
    assert str(err.value) == ("evaluation loss became nan after task 1, epoch 1, step 1 (on the test set of task 1) "
                              "(lr=1e+30): the weights after that step's update give non-finite outputs; lower the lr")
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["status"] == "diverged" and res["message"] == str(err.value)
    assert res["history"] == [] and "forgetting" not in res
