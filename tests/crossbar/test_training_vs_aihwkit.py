"""End to end: a small MLP trained with pulsed in-memory updates, this engine against aihwkit's C++ tile.

Task: 4 Gaussian blobs in 20-D (made here, seeded), 20-32-4 MLP with ReLU, both layers analog with a digital
bias, ConstantStep device (aihwkit's defaults), default periphery and update (BL 31, update and BL
management). Same initial weights, same data order, same learning rate; 3 seeds each. The mean final test
accuracies must agree within 2 points, and both must have learned (far above chance).
"""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from crossbar import AnalogLinear, AnalogSGD, CrossbarConfig, to_aihwkit_rpu_config
from devices import ConstantStepDevice

pytest.importorskip("aihwkit")

N_TRAIN, N_TEST, DIM, CLASSES, HIDDEN = 1000, 4000, 20, 4, 32
EPOCHS, BATCH, LR = 6, 16, 0.1
SEEDS = (0, 1, 2)
CONFIG = CrossbarConfig(device=ConstantStepDevice(), tile_rows=256, tile_cols=256)


def make_blobs(seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(1000 + seed)
    centers = torch.randn(CLASSES, DIM, generator=g) * 0.55          # overlapping: Bayes accuracy ~ 0.9

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, CLASSES, (n,), generator=g)
        return centers[y] + torch.randn(n, DIM, generator=g) * 0.8, y

    x_tr, y_tr = draw(N_TRAIN)
    x_te, y_te = draw(N_TEST)
    return x_tr, y_tr, x_te, y_te


def initial_weights(seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(seed)
    layers = [nn.Linear(DIM, HIDDEN), nn.Linear(HIDDEN, CLASSES)]
    return [(lin.weight.detach().clone() * 0.5, lin.bias.detach().clone()) for lin in layers]


def ours(seed: int) -> tuple[nn.Module, torch.optim.Optimizer]:
    l1 = AnalogLinear(DIM, HIDDEN, rpu_config=CONFIG, seed=10 * seed + 1)
    l2 = AnalogLinear(HIDDEN, CLASSES, rpu_config=CONFIG, seed=10 * seed + 2)
    for layer, (w, b) in zip((l1, l2), initial_weights(seed)):
        layer.set_weights(w)
        with torch.no_grad():
            layer.bias.copy_(b)
    model = nn.Sequential(l1, nn.ReLU(), l2)
    return model, AnalogSGD(model.parameters(), lr=LR)


def aihwkit_model(seed: int) -> tuple[nn.Module, torch.optim.Optimizer]:
    from aihwkit.nn import AnalogLinear as AIHWLinear
    from aihwkit.optim import AnalogSGD as AIHWSGD

    rpu = to_aihwkit_rpu_config(CONFIG)
    l1 = AIHWLinear(DIM, HIDDEN, bias=True, rpu_config=rpu)
    l2 = AIHWLinear(HIDDEN, CLASSES, bias=True, rpu_config=rpu)
    for layer, (w, b) in zip((l1, l2), initial_weights(seed)):
        layer.set_weights(w, b)
    model = nn.Sequential(l1, nn.ReLU(), l2)
    opt = AIHWSGD(model.parameters(), lr=LR)
    opt.regroup_param_groups(model)
    return model, opt


def train_and_test(model: nn.Module, opt: torch.optim.Optimizer, seed: int) -> float:
    x_tr, y_tr, x_te, y_te = make_blobs(seed)
    g = torch.Generator().manual_seed(seed)
    for _ in range(EPOCHS):
        order = torch.randperm(N_TRAIN, generator=g)
        for start in range(0, N_TRAIN, BATCH):
            idx = order[start:start + BATCH]
            opt.zero_grad()
            F.cross_entropy(model(x_tr[idx]), y_tr[idx]).backward()
            opt.step()
    with torch.no_grad():
        return (model(x_te).argmax(1) == y_te).float().mean().item()


@pytest.fixture()
def one_thread():
    """Both simulators on one intra-op thread (aihwkit's C++ tile is single-threaded with
    OPENBLAS_NUM_THREADS=1; torch's OpenMP threads crawl when the 2 cores are shared)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_training_accuracy_matches_aihwkit(one_thread: None) -> None:
    start = time.perf_counter()
    acc_ours = [train_and_test(*ours(s), s) for s in SEEDS]
    acc_aihwkit = [train_and_test(*aihwkit_model(s), s) for s in SEEDS]
    mean_ours = sum(acc_ours) / len(SEEDS)
    mean_aihwkit = sum(acc_aihwkit) / len(SEEDS)
    msg = f"ours {acc_ours} (mean {mean_ours:.4f}) vs aihwkit {acc_aihwkit} (mean {mean_aihwkit:.4f}), " \
          f"{time.perf_counter() - start:.1f} s"
    print(msg)
    assert min(acc_ours) > 0.6 and min(acc_aihwkit) > 0.6, msg        # chance is 0.25
    assert abs(mean_ours - mean_aihwkit) < 0.02, msg
