"""Accuracy after programming noise and drift: restores the trained weights, ideal model changes nothing,
real drift degrades a trained classifier."""
import torch
from torch import nn

from devices import GenericDriftModel, NoDrift
from imc_grapes.inference_eval import accuracy_after_drift, digital_weights


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
