"""The aihwkit backend and this project's crossbar backend train the same small task to the same accuracy.

Task: the synthetic 10-class 8×8 data set (512 training and 512 test samples, pixel noise 1.0), MLP 64-32-10,
batch 32, 5 epochs, lr 0.1, device preset GokmenVlasov (constant step, ~1,200 states) with the default
periphery (7-bit DAC, 9-bit ADC, output noise 0.06) and pulsed update (BL 31, update management). The same
initial weights and data order on both backends; 3 seeds. Tolerances: the mean test accuracies over the seeds
agree within 4 points (measured differences were 0.3–2 points), both backends are far above chance (10 %)
and within 8 points of the digital network. Checked for SGD and for GRAPES (propagated).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from imc_grapes.backends import AnalogSettings, build_network
from imc_grapes.config import TrainConfig
from imc_grapes.data import make_synthetic

pytest.importorskip("aihwkit")

DATA = make_synthetic(n_train=512, n_test=512, image_shape=(1, 8, 8), noise=1.0)
SEEDS = (0, 1, 2)


def _accuracy(backend: str, optimizer: str, seed: int) -> float:
    cfg = TrainConfig(dataset="synthetic", model="mlp", hidden=(32,), optimizer=optimizer, lr=0.1, backend=backend,
                      seed=seed, batch_size=32, analog=AnalogSettings(preset="GokmenVlasov", sat_probe_every=0))
    net = build_network(cfg, (1, 8, 8), 10, "cpu")
    g = torch.Generator().manual_seed(seed)
    for _ in range(5):
        order = torch.randperm(512, generator=g)
        for start in range(0, 512, 32):
            idx = order[start:start + 32]
            net.zero_grad()
            F.cross_entropy(net.model(DATA.train.x[idx]), DATA.train.y[idx]).backward()
            net.step()
    net.model.eval()
    with torch.no_grad():
        return float((net.model(DATA.test.x).argmax(1) == DATA.test.y).float().mean())


@pytest.mark.parametrize("optimizer", ["sgd", "grapes"])
def test_aihwkit_and_crossbar_backends_reach_the_same_accuracy(optimizer):
    acc = {b: np.mean([_accuracy(b, optimizer, s) for s in SEEDS]) for b in ("digital", "crossbar", "aihwkit")}
    assert acc["crossbar"] > 0.5 and acc["aihwkit"] > 0.5, acc
    assert abs(acc["crossbar"] - acc["aihwkit"]) < 0.04, acc
    assert acc["digital"] - acc["crossbar"] < 0.08 and acc["digital"] - acc["aihwkit"] < 0.08, acc
