"""The engine's GPU path makes no host synchronisation, and gives the CPU path's distributions.

``devices.no_host_reads`` runs a block on the sync-free path (the one every non-CPU device takes) on the CPU
and raises at the first host read (``.item()``, ``float(t)``, ``nonzero``, a boolean mask, ...), each of which
would stall a GPU. Every engine operation of a training step runs inside it here: forward, backward and
pulsed update of tile arrays for every device preset and periphery option, analog layers with their
optimizer, the replica engine, and whole GRAPES networks (every rule, importance source and mode). Whole training
steps also run with torch's default device set to ``meta``, so that a tensor created without ``device=`` (on a GPU:
a CPU tensor mixed with CUDA ones) fails here too. The last part checks that this path is the same physics as the
CPU path: statistics of outputs and weight changes agree within sampling error.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

from crossbar import AnalogConv2d, AnalogLinear, AnalogSGD, CrossbarConfig, IOParameters, TileArray
from crossbar.replicas import ReplicaLinear
from crossbar.update import UpdateParameters
from devices import PRESETS, ConstantStepDevice, get_preset, no_host_reads
from devices.host import HostReadError
from imc_grapes.backends import AnalogSettings, build_network
from imc_grapes.config import TrainConfig
from imc_grapes.replicas import ReplicaMLP


def _step_tile_array(arr: TileArray, x: torch.Tensor, d: torch.Tensor, lr: float | torch.Tensor) -> None:
    arr.forward(x)
    arr.backward(d)
    arr.update(x, d, lr)
    arr.row_sums("hardware")
    arr.col_sums("hardware")


@pytest.mark.parametrize("preset", list(PRESETS))
def test_tile_array_step_is_sync_free_for_every_preset(preset):
    cfg = CrossbarConfig(device=get_preset(preset), tile_rows=32, tile_cols=48)
    arr = TileArray(70, 100, cfg, seed=1)                          # 3 x 3 tiles
    arr.program(torch.rand(70, 100) * 0.4 - 0.2)
    x, d = torch.randn(8, 100), torch.randn(8, 70) * 0.3
    before = arr.tiles.clone()
    with no_host_reads():
        _step_tile_array(arr, x, d, 0.1)
    assert torch.isfinite(arr.tiles).all() and not torch.equal(arr.tiles, before)


PERIPHERY = {
    "saturating, all noise": IOParameters(out_bound=2.0, inp_noise=0.02, w_noise=0.01,
                                          w_noise_type="additive_constant", inp_sto_round=True,
                                          out_sto_round=True),
    "no management": IOParameters(noise_management="none", bound_management="none", inp_bound=math.inf),
    "constant nm, one-sided bm": IOParameters(noise_management="constant", nm_thres=2.0,
                                              bm_test_negative_bound=False, out_bound=3.0),
    "perfect": IOParameters(is_perfect=True),
}


@pytest.mark.parametrize("periphery", list(PERIPHERY))
@pytest.mark.parametrize("update", ["stochastic_compressed", "stochastic", "none", "fixed_bl"])
def test_tile_array_step_is_sync_free_for_every_periphery_and_update(periphery, update):
    io = PERIPHERY[periphery]
    upd = (UpdateParameters(update_bl_management=False, update_management=False, desired_bl=5)
           if update == "fixed_bl" else UpdateParameters(pulse_type=update))
    cfg = CrossbarConfig(device=get_preset("ReRamSB"), forward=io, backward=io, update=upd, tile_rows=16,
                         tile_cols=16)
    arr = TileArray(20, 40, cfg, seed=2)
    arr.program(torch.rand(20, 40) * 2 - 1)                       # large weights: bound management rounds
    x = torch.randn(6, 40)
    x[2] = 0.0                                                     # an all-zero input (noise management)
    with no_host_reads():
        _step_tile_array(arr, x, torch.randn(6, 20), torch.tensor(0.05))
    assert torch.isfinite(arr.tiles).all()


@pytest.mark.parametrize("lr", [0.1, torch.tensor(0.1)], ids=["float-lr", "tensor-lr"])
@pytest.mark.parametrize("value", [math.inf, -math.inf], ids=["inf", "-inf"])
@pytest.mark.parametrize("operand", ["x", "d"])
def test_sync_free_update_treats_an_inf_as_a_nan(operand, value, lr):
    """The sync-free path checks nothing on the host (a NaN or an Inf is left to the loss check): an Inf (either
    sign) in one input or error gives, without a host read, bit for bit the states and pulse count a NaN there gives,
    which are those of the update with that sample's whole input (error) block zero: no pulse from it, the rest as
    usual (the dense trains draw every slot, so the draws are the same)."""
    cfg = CrossbarConfig(device=get_preset("ReRamSB"), tile_rows=16, tile_cols=16)   # 2 x 2 tiles of 16 x 16

    def run(v: float | None, zero_block: bool = False) -> tuple[torch.Tensor, torch.Tensor, int]:
        arr = TileArray(32, 32, cfg, seed=3)
        arr.program(torch.linspace(-0.3, 0.3, 1024).reshape(32, 32))
        g = torch.Generator().manual_seed(4)
        x, d = torch.randn(6, 32, generator=g), torch.randn(6, 32, generator=g) * 0.1
        t = x if operand == "x" else d
        if v is not None:
            t[3, 4] = v
        if zero_block:
            t[3, :16] = 0.0                                        # block 0 of sample 3
        with no_host_reads():
            arr.update(x, d, lr)
        return arr.read(hidden=True), arr.read(), int(arr.counter_pulses)

    got, nan, zero, clean = run(value), run(math.nan), run(None, zero_block=True), run(None)
    for a, b, c in zip(got[:2], nan[:2], zero[:2]):
        assert torch.equal(a.view(torch.int32), b.view(torch.int32)) and torch.equal(a, c)
    assert got[2] == nan[2] == zero[2] < clean[2]

def test_analog_layers_and_optimizer_step_are_sync_free():
    cfg = CrossbarConfig(device=get_preset("EcRam"), tile_rows=32, tile_cols=32)
    model = torch.nn.Sequential(AnalogConv2d(1, 4, 3, rpu_config=cfg), torch.nn.ReLU(), torch.nn.Flatten(),
                                AnalogLinear(4 * 6 * 6, 10, rpu_config=cfg))
    opt = AnalogSGD(model.parameters(), lr=0.05)
    x, y = torch.randn(5, 1, 8, 8), torch.randint(0, 10, (5,))
    for _ in range(2):
        with no_host_reads():
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()


def test_replica_layer_step_is_sync_free():
    layer = ReplicaLinear([3, 4, 5], 30, 12, CrossbarConfig(device=get_preset("ReRamSB"), tile_rows=16,
                                                              tile_cols=16))
    opt = AnalogSGD(layer.parameters(), lr=0.1)
    x = torch.randn(3, 7, 30)
    with no_host_reads():
        opt.zero_grad()
        layer(x).square().sum().backward()
        opt.step()
        layer.row_sums("hardware", g_offset=0.01)          # GRAPES's array importance on the replica engine


@pytest.mark.parametrize("optimizer", ["grapes", "layer-mean"])
def test_replica_mlp_grapes_step_is_sync_free(optimizer):
    """A replica MLP's GRAPES step with the array importance, including the sampled array-vs-exact comparison and
    the saturation probe."""
    cfgs = [TrainConfig(dataset="synthetic", hidden=(24, 20), optimizer=optimizer, backend="crossbar", seed=s,
                        analog=AnalogSettings(preset="ReRamSB", tile_size=16, importance="array"))
            for s in (1, 2)]
    model = ReplicaMLP(cfgs, (1, 8, 8), 10, torch.device("cpu"))
    x, y = torch.rand(2, 12, 1, 8, 8), torch.randint(0, 10, (2, 12))
    for _ in range(11):                                 # reads 0 and 10 are compared with the exact importance
        with no_host_reads():
            model.zero_grad_analog()
            model.refresh_grapes()
            F.cross_entropy(model(x).flatten(0, 1), y.flatten()).backward()
            model.step(0.1, probe=True)
    assert set(model.importance_stats()) == {f"M_{k}/layers.{i}" for k in ("corr", "err") for i in (0, 1)}
    assert set(model.saturation_stats()) == {f"sat/layers.{i}" for i in (0, 1, 2)}


@pytest.mark.parametrize("rule,optimizer,importance", [
    ("bp", "grapes", "array"),
    ("bp", "grapes-local", "exact"),
    ("fa", "grapes", "array"),
    ("dfa", "grapes", "array"),
    ("bp", "layer-mean", "array"),
    ("bp", "sgd", "exact"),
])
def test_grapes_network_step_is_sync_free(rule, optimizer, importance):
    cfg = TrainConfig(dataset="synthetic", model="mlp", hidden=(24, 20), rule=rule, optimizer=optimizer, lr=0.1,
                      backend="crossbar", seed=3,
                      analog=AnalogSettings(preset="ReRamSB", tile_size=16, importance=importance,
                                            sat_probe_every=2))
    net = build_network(cfg, (1, 8, 8), 10, "cpu")
    x, y = torch.rand(12, 1, 8, 8), torch.randint(0, 10, (12,))
    for _ in range(11):                                 # includes the every-10th importance diagnostics
        with no_host_reads():
            net.zero_grad()
            F.cross_entropy(net.model(x), y).backward()
            net.step()
    net.metrics()                                       # the host reads happen here, once, when asked


@pytest.mark.parametrize("lr", [0.3, torch.tensor(0.3)], ids=["float-lr", "tensor-lr"])
def test_free_bl_update_is_sync_free_with_a_number_lr(lr):
    """Without fixed BL and BL management the trains are ``ceil(|lr| / dw_min)`` slots long (aihwkit's
    learning-rate-driven branch, taken here: 0.3 > 0.01 * 5): their length, a shape, depends on ``lr``'s value. A
    Python number (the training loops pass one) is read for free; a tensor would have to be read on the host, a GPU
    synchronisation, which the sync-free path reports instead of hiding (``UpdateParameters.free_bl``)."""
    dev = ConstantStepDevice(dw_min=0.01, dw_min_dtod=0.0, dw_min_std=0.0, up_down=0.0, up_down_dtod=0.0)
    upd = UpdateParameters(update_bl_management=False, update_management=False, fixed_bl=False, desired_bl=5)
    arr = TileArray(1, 1, CrossbarConfig.perfect(device=dev, update=upd), seed=0)
    arr.program(torch.zeros(1, 1))
    one = torch.ones(1, 1)
    if isinstance(lr, torch.Tensor):
        with pytest.raises(HostReadError, match="__float__"), no_host_reads():
            arr.update(one, one, lr)
        return
    with no_host_reads():
        arr.update(one, one, lr)
    # x = d = 1 fire in every one of the ceil(0.3f / 0.01f) = 31 slots: 31 pulses down, as on the CPU path
    assert int(arr.counter_pulses) == 31
    assert arr.read().item() == pytest.approx(-0.31, abs=1e-6)


# ---------------------------------------------------------------- placement: no tensor made off the device
@contextlib.contextmanager
def _off_device_creation_fails() -> Iterator[None]:
    """:func:`no_host_reads` with torch's default device set to ``meta``: a tensor the step creates without
    ``device=`` (``torch.zeros(n)``, ``torch.tensor(v)``, ``torch.arange(k)``, ...) lands on ``meta``, and the first
    operation mixing it with the model's (CPU) tensors raises, as a CPU tensor mixed with CUDA tensors fails on a
    GPU (or, a 0-d one copied over, synchronises). Host arithmetic must name its device (``device="cpu"``)."""
    with no_host_reads(), torch.device("meta"):
        yield


def test_the_placement_check_catches_a_tensor_made_without_device():
    x = torch.ones(3)
    with pytest.raises(RuntimeError, match="device"), _off_device_creation_fails():
        torch.zeros(3) + x
    with pytest.raises((RuntimeError, NotImplementedError)), _off_device_creation_fails():
        x.mul(torch.tensor(2.0)).sum().add(torch.arange(3))


@pytest.mark.parametrize("model,rule,optimizer,importance,extra", [
    ("mlp", "bp", "grapes", "array", {}),
    ("mlp", "fa", "grapes", "exact", {}),
    ("mlp", "dfa", "grapes-local", "array", {}),
    ("mlp", "bp", "sgd", "exact", {"base_optimizer": "adam"}),
    ("cnn", "bp", "grapes", "array", {}),
    ("cnn", "bp", "layer-mean", "exact", {}),
    ("mlp", "bp", "grapes", "exact", {"backend": "digital", "dropout": 0.2, "momentum": 0.9}),
])
def test_network_steps_make_no_tensor_off_the_device(model, rule, optimizer, importance, extra):
    """Whole training steps from the very first (the lazily built caches included) — forward, backward, the
    pulsed update, the GRAPES refresh with its importance reads and comparison samples, saturation probes —
    create every tensor on the model's device and read nothing on the host."""
    kw = dict(dataset="synthetic", model=model, hidden=(24, 20), rule=rule, optimizer=optimizer, lr=0.1,
              backend="crossbar", seed=3)
    kw.update(extra)
    cfg = TrainConfig(**kw, analog=AnalogSettings(preset="ReRamSB", tile_size=16, importance=importance,
                                                  sat_probe_every=2))
    net = build_network(cfg, (1, 8, 8), 10, "cpu")
    x, y = torch.rand(12, 1, 8, 8), torch.randint(0, 10, (12,))
    before = {k: v.clone() for k, v in net.model.state_dict().items()
              if isinstance(v, torch.Tensor) and v.is_floating_point()}
    for _ in range(11):                                 # includes the every-10th importance comparison
        with _off_device_creation_fails():
            net.zero_grad()
            F.cross_entropy(net.model(x), y).backward()
            net.step()
    after = net.model.state_dict()
    assert all(torch.isfinite(after[k]).all() for k in before)
    assert sum(not torch.equal(after[k], v) for k, v in before.items()) >= 3     # the weights of every layer moved
    assert net.metrics()                                # read afterwards, on the host


def test_replica_and_layer_steps_make_no_tensor_off_the_device():
    """The replica engine (a GRAPES replica MLP with probes and a replica mask) and the analog layers with
    AnalogSGD and a tensor learning rate on the device."""
    cfgs = [TrainConfig(dataset="synthetic", hidden=(24, 20), optimizer="grapes", backend="crossbar", seed=s,
                        analog=AnalogSettings(preset="ReRamSB", tile_size=16, importance="array"))
            for s in (1, 2)]
    replicas = ReplicaMLP(cfgs, (1, 8, 8), 10, torch.device("cpu"))
    xr, yr = torch.rand(2, 12, 1, 8, 8), torch.randint(0, 10, (2, 12))
    mask = torch.tensor([True, False])
    cfg = CrossbarConfig(device=get_preset("EcRam"), tile_rows=32, tile_cols=32)
    layers = torch.nn.Sequential(AnalogConv2d(1, 4, 3, rpu_config=cfg), torch.nn.ReLU(), torch.nn.Flatten(),
                                 AnalogLinear(4 * 6 * 6, 10, rpu_config=cfg))
    opt = AnalogSGD(layers.parameters(), lr=torch.tensor(0.05))
    x, y = torch.randn(5, 1, 8, 8), torch.randint(0, 10, (5,))
    for k in range(11):
        with _off_device_creation_fails():
            replicas.zero_grad_analog()
            replicas.refresh_grapes()
            F.cross_entropy(replicas(xr).flatten(0, 1), yr.flatten()).backward()
            replicas.step(0.1, probe=True, mask=mask if k % 2 else None)
            opt.zero_grad()
            F.cross_entropy(layers(x), y).backward()
            opt.step()
    assert set(replicas.saturation_stats()) == {f"sat/layers.{i}" for i in (0, 1, 2)}


# ---------------------------------------------------------------- same distributions on both paths
def _two_paths(make, run):
    """``run(make())`` on the CPU path and on the sync-free path (same seed, so same device parameters). Both arrays
    are built and programmed outside ``no_host_reads``, as a model is (programming checks the weights on the host):
    only ``run``, the engine's step, takes the sync-free path."""
    cpu = run(make())
    arr = make()
    with no_host_reads():
        free = run(arr)
    return cpu, free


def _assert_same_mean_and_std(a: torch.Tensor, b: torch.Tensor, rel_std: float = 0.05) -> None:
    """Two samples of i.i.d. draws: means within 5 standard errors, standard deviations within ``rel_std``."""
    se = math.sqrt(a.var().item() / a.numel() + b.var().item() / b.numel())
    assert abs(a.mean().item() - b.mean().item()) < 5 * se + 1e-12
    assert b.std().item() == pytest.approx(a.std().item(), rel=rel_std)


def test_sync_free_forward_has_the_cpu_paths_noise_and_saturation():
    # saturating outputs: the CPU path tries one bound-management round first, the GPU path runs all at once
    cfg = CrossbarConfig(tile_rows=64, tile_cols=64, forward=IOParameters(out_bound=4.0))
    g = torch.Generator().manual_seed(11)              # seeded inputs: the statistical check is deterministic
    w = torch.rand(64, 64, generator=g) * 0.2
    x = torch.rand(400, 64, generator=g)

    def make():
        arr = TileArray(64, 64, cfg, seed=5)
        arr.program(w)
        return arr
    cpu, free = _two_paths(make, lambda arr: arr.forward(x) - x @ w.T)
    _assert_same_mean_and_std(cpu.flatten(), free.flatten())


@pytest.mark.parametrize("preset", ["ReRamSB", "ConstantStep"])
def test_sync_free_update_has_the_cpu_paths_weight_changes(preset):
    # all inputs and errors equal: every device sees the same pulse statistics, so the weight changes over
    # the devices are i.i.d. given the (identical, same-seed) device parameters
    dev = ConstantStepDevice() if preset == "ConstantStep" else get_preset(preset)
    cfg = CrossbarConfig(device=dev, tile_rows=128, tile_cols=128)
    x, d = torch.full((16, 256), 0.5), torch.full((16, 256), 0.02)
    d[:, ::2] *= -1

    def make():
        arr = TileArray(256, 256, cfg, seed=7)
        arr.program(torch.zeros(256, 256))
        return arr

    def run(arr):
        before = arr.tiles.clone()
        arr.update(x, d, 0.5)
        return arr.tiles - before
    cpu, free = _two_paths(make, run)
    _assert_same_mean_and_std(cpu[:, ::2].flatten(), free[:, ::2].flatten())
    _assert_same_mean_and_std(cpu[:, 1::2].flatten(), free[:, 1::2].flatten())
