"""Benchmark suite of the crossbar engine and GRAPES (a script, not a test; issue 7).

Sections (``--only mlp,cnn,scaling,grapes,replicas,fusion``; all by default):

* ``mlp``: one training step (forward + backward + update, cross-entropy, random data) of a bias-free
  784-256-256-10 ReLU MLP at batch 64 (on CUDA also 256 and 1024), as
  ``torch`` (``nn.Linear`` + ``torch.optim.SGD``, digital),
  ``native`` (``crossbar.AnalogLinear`` + ``crossbar.AnalogSGD``, pulsed update, ConstantStep device, aihwkit's
  default periphery, 256x256 tiles),
  ``aihwkit-cpp`` (aihwkit ``AnalogLinear`` + ``AnalogSGD`` with ``SingleRPUConfig`` built by
  ``crossbar.to_aihwkit_rpu_config`` from the *same* ``CrossbarConfig``; C++ tiles, CPU only),
  ``native-float`` (this engine with a perfect backward pass and an exact float update: hardware-aware training,
  no pulses) and ``aihwkit-torchinf`` (aihwkit ``TorchInferenceRPUConfig`` with the same forward periphery:
  pure-torch tiles whose training step is hardware-aware training with a float update, *not* pulsed);
* ``cnn``: the same rows for ``imc_grapes.models.SmallCNN`` (conv 1->16 3x3, pool, conv 16->32 3x3, pool,
  linear 1568->10) on 28x28 inputs at batch 64 (32 with ``--quick``);
* ``scaling``: one NxN analog layer (native, 256x256 tiles) for N = 256 ... 4096 (1 ... 256 tiles) at batch
  64, and N = 1024 for batch 16 ... 1024 (``--quick`` on the CPU: up to 2048² and batch 256), each next to
  ``torch``, in two error regimes (below); multi-tile vs one tile for 1024² (16 tiles) and 2048² (64 tiles),
  aihwkit's 1024² too (CPU); log-log slopes of the cost vs weights and vs batch;
* ``grapes``: a training step of the 784-256-256-10 MLP built by ``imc_grapes.backends.build_network`` on the
  crossbar backend (the project's reference hardware: ``ReRamSB`` soft bounds, 7-bit DAC, 9-bit ADC), with
  SGD vs GRAPES (importance ``exact`` and ``array``), exactly as ``imc_grapes/train.py`` wires it
  (saturation probes off in all three), for the ``ReRamSB`` and ``Idealized`` (constant-step) presets; the
  overhead is ``GRAPES step / SGD step - 1`` (paired per round), next to the device pulses per step;
* ``fusion``: the same network's SGD step with the device models eager vs compiled (:mod:`devices.fusion`,
  ``torch.compile`` of the linear-step and exp-step closed forms) for the presets of ``--fusion-presets``; the
  compile time falls in the warm-up; the ``×base`` column is compiled / eager (paired per round);
* ``replicas``: runs ``benchmarks/bench_replicas.py`` (vectorized sweep replicas) in a subprocess when that
  file exists, passing the flags it accepts among ``--device``, ``--out`` and (``--quick``) ``--quick`` or
  ``--replicas 1,4,16``; skipped cleanly otherwise.

Data: the classifiers (MLP, CNN, GRAPES) cycle through 32 random batches with random labels, so that they
cannot fit them during the timed steps (the pulsed update's cost depends on the size of the errors; one
repeated batch would be learnt and its errors, hence pulses, would vanish); a single layer is trained on a
loss whose error does not depend on the weights (``sum(y * r) * scale``, ``r`` random signs), in two regimes
(``--regimes``): ``ce`` (error ±1/batch per output, as a cross-entropy error: most devices get pulses every
step) and ``small`` (±1/(batch·N), as a mean-reduced loss: ~1000x fewer pulses, on ~4 % of the devices).

Timing: rows of one group are built together and timed interleaved, in ``--rounds`` rounds of
``steps / rounds`` steps each (so that load changes on a shared machine hit all rows alike); each row's median
over all its timed steps is reported with the min, and ratios are taken between rows of the same run. The
ratios that decide a target (GRAPES overhead, tiles vs one tile) are *paired*: the median over rounds of the
ratio of the two rows' medians in that round. Next to every ratio decided by rounds (those two, and native /
aihwkit C++ on the MLP, whose value is the ratio of the two medians) the suite gives the quartiles of the
round-by-round ratios, and its verdict says ``borderline`` when the target's threshold lies between them (the
ratio moves with the machine's load and, for the training rows, with the training phase: the GRAPES rows fire
many more pulses than SGD in their first rounds and about as many later).

Peak memory of every row: on CUDA ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``
(minus what was allocated before the row was built), measured in-process after the timing (build + 4 steps);
for rows on the CPU the growth of the peak RSS of a *fresh subprocess* that imports everything, runs the same
row twice at batch 1 (to load lazily initialised libraries; the freed memory is handed back with
``malloc_trim``), resets the kernel's RSS high-water mark (``/proc/self/clear_refs``; else ``ru_maxrss``
growth), then builds the row and runs 5 steps: peak ``VmHWM`` minus the ``VmRSS`` before the build.
``--no-memory`` skips this; the table says which method each number comes from.

Usage::

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_suite.py [--quick] [--device cuda] [--only mlp,grapes]
        [--out results.json] [--skip-aihwkit] [--steps N] [--aihwkit-ref cpu_results.json]

``OPENBLAS_NUM_THREADS=1`` is set by the script itself before numpy/torch/aihwkit load, and torch's intra-op
threads default to 1 (``--threads``). aihwkit is imported lazily; its rows are skipped cleanly (with the
reason) when it cannot load, e.g. next to another torch on a GPU machine. aihwkit's C++ rows always run on
the CPU (the PyPI wheel has no CUDA). With ``--device cuda`` the suite computes the CUDA targets: native MLP
step vs aihwkit C++ on the CPU (same run, or ``--aihwkit-ref`` = the JSON of an earlier CPU run when aihwkit
cannot load here; marked "cross-run") and native vs digital torch at batch >= 256. The JSON is rewritten
after every section, so a run cut short by a timeout keeps what it measured.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import datetime  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, replace  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from crossbar import (AnalogConv2d, AnalogLinear, AnalogSGD, CrossbarConfig, IOParameters,  # noqa: E402
                      UpdateParameters, to_aihwkit_io_parameters, to_aihwkit_rpu_config)
from devices import ConstantStepDevice  # noqa: E402
from devices.fusion import COMPILE_MODES, get_compile, set_compile  # noqa: E402
from devices.suggest import did_you_mean, did_you_mean_each  # noqa: E402
from imc_grapes.experiments.report import machine_info as experiment_machine_info  # noqa: E402
from imc_grapes.runtime import tune_malloc  # noqa: E402
from imc_grapes.suggest import SuggestingArgumentParser  # noqa: E402

SECTIONS = ("mlp", "cnn", "scaling", "grapes", "replicas", "fusion")   # fusion last: it compiles
MLP_SIZES = (784, 256, 256, 10)
IMPLS = ("torch", "native", "aihwkit-cpp", "native-float", "aihwkit-torchinf", "native-graph")
IMPL_NOTES = {
    "torch": "digital torch, SGD",
    "native": "this engine, pulsed update",
    "native-graph": "this engine, pulsed update; the whole training step captured once as a CUDA graph and "
                    "replayed (CUDA only; on one fixed batch)",
    "aihwkit-cpp": "aihwkit C++ SingleRPUConfig, pulsed update (CPU)",
    "native-float": "this engine, perfect backward + float update (HWA training)",
    "aihwkit-torchinf": "aihwkit TorchInferenceRPUConfig: HWA training, float update, not pulsed",
}
#: the aihwkit row each native row is compared with (same device / periphery config)
AIHWKIT_PARTNER = {"native": "aihwkit-cpp", "native-float": "aihwkit-torchinf"}
REPLICAS_SCRIPT = ROOT / "benchmarks" / "bench_replicas.py"


# ---------------------------------------------------------------------------------------------- cases
@dataclass(frozen=True)
class Case:
    """One benchmark row: what to build and how to step it (JSON-able, so a subprocess can rebuild it).

    Attributes:
        kind: ``mlp`` (784-256-256-10), ``cnn`` (SmallCNN on 28x28), ``layer`` (one ``size`` x ``size``
            layer, see :func:`build_step`) or ``grapes`` (``build_network`` MLP, crossbar backend).
        impl: one of :data:`IMPLS` (``mlp``/``cnn``/``layer``), or for ``grapes`` the optimizer
            ``sgd`` / ``grapes-exact`` / ``grapes-array``.
        batch: samples per step.
        size: layer width N (``layer`` only).
        tile: tile rows = columns (native and aihwkit mapping).
        preset: device preset of a ``grapes`` case (``AnalogSettings.preset``, e.g. ``ReRamSB``).
        err: error regime of a ``layer`` case, a key of :data:`ERROR_REGIMES` (``ce`` or ``small``).
        fusion: ``""`` (the suite's :mod:`devices.fusion` mode) or a mode set before every step of this row
            (``"off"``: eager device models, ``"on"``: compiled).
    """

    kind: str
    impl: str
    batch: int
    size: int = 0
    tile: int = 256
    preset: str = ""
    err: str = "ce"
    fusion: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("mlp", "cnn", "layer", "grapes"):
            raise ValueError(f"Case.kind must be mlp, cnn, layer or grapes, got {self.kind!r}")
        valid = ("sgd", "grapes-exact", "grapes-array") if self.kind == "grapes" else IMPLS
        if self.impl not in valid:
            raise ValueError(f"Case.impl must be one of {valid} for kind {self.kind!r}, got {self.impl!r}"
                             f"{did_you_mean(self.impl, valid)}")
        if self.err not in ERROR_REGIMES:
            raise ValueError(f"Case.err must be one of {tuple(ERROR_REGIMES)}, got {self.err!r}"
                             f"{did_you_mean(self.err, ERROR_REGIMES)}")
        if self.batch < 1 or self.tile < 1 or (self.kind == "layer" and self.size < 1):
            raise ValueError(f"Case.batch, tile (and size for a layer) must be >= 1, got {self}")
        if self.fusion not in ("", "off", "on"):
            raise ValueError(f"Case.fusion must be '', 'off' or 'on', got {self.fusion!r}")

    @property
    def label(self) -> str:
        shape = (f" {self.size}² tile {self.tile} {self.err}" if self.kind == "layer" else
                 f" {self.preset}" if self.kind == "grapes" else "")
        fusion = {"off": " eager", "on": " compiled"}.get(self.fusion, "")
        return f"{self.kind}{shape} b{self.batch} {self.impl}{fusion}"

    def runs_on(self, device: torch.device) -> torch.device:
        """aihwkit's C++ tiles run on the CPU whatever ``--device`` says."""
        return torch.device("cpu") if self.impl == "aihwkit-cpp" else device


def crossbar_config(tile: int) -> CrossbarConfig:
    """The pulsed config of the native and aihwkit-cpp rows: ConstantStep, aihwkit default periphery."""
    return CrossbarConfig(device=ConstantStepDevice(), tile_rows=tile, tile_cols=tile)


def float_config(tile: int) -> CrossbarConfig:
    """The HWA config of ``native-float``: same forward periphery, perfect backward, exact float update
    (what aihwkit's ``InferenceRPUConfig`` / ``TorchInferenceRPUConfig`` train with)."""
    return crossbar_config(tile).replace(backward=IOParameters(is_perfect=True),
                                         update=UpdateParameters(pulse_type="none"))


_AIHWKIT: dict[str, Any] = {}


def load_aihwkit() -> dict[str, Any] | str:
    """aihwkit's classes (cached), or the reason why they cannot be used (probe: one C++ tile forward)."""
    if _AIHWKIT:
        return _AIHWKIT
    try:
        import aihwkit
        from aihwkit.nn import AnalogConv2d as AConv
        from aihwkit.nn import AnalogLinear as ALinear
        from aihwkit.optim import AnalogSGD as ASGD
        from aihwkit.simulator.configs import TorchInferenceRPUConfig
        from aihwkit.simulator.parameters.mapping import MappingParameter

        probe = ALinear(4, 2, rpu_config=to_aihwkit_rpu_config(CrossbarConfig()))
        probe(torch.randn(1, 4))
    except Exception as exc:  # noqa: BLE001 - any failure means "no aihwkit rows"
        return f"{type(exc).__name__}: {str(exc)[:200]}"
    _AIHWKIT.update(version=getattr(aihwkit, "__version__", "?"), Linear=ALinear, Conv2d=AConv, SGD=ASGD,
                    TorchInf=TorchInferenceRPUConfig, Mapping=MappingParameter)
    return _AIHWKIT


def _aihwkit_rpu(impl: str, tile: int) -> Any:
    a = _AIHWKIT
    if impl == "aihwkit-cpp":
        return to_aihwkit_rpu_config(crossbar_config(tile))
    return a["TorchInf"](forward=to_aihwkit_io_parameters(crossbar_config(tile).forward),
                         mapping=a["Mapping"](digital_bias=True, max_input_size=tile, max_output_size=tile))


def _factories(case: Case, dev: torch.device) -> tuple[Callable[..., nn.Module], Callable[..., nn.Module]]:
    """``linear(n_in, n_out, bias)`` and ``conv(c_in, c_out, k, padding, bias)`` of ``case.impl`` on ``dev``."""
    impl, tile = case.impl, case.tile
    counter = iter(range(1_000))
    if impl == "torch":
        return (lambda i, o, b=False: nn.Linear(i, o, bias=b, device=dev),
                lambda ci, co, k, p, b=False: nn.Conv2d(ci, co, k, padding=p, bias=b, device=dev))
    if impl in ("native", "native-float"):
        cfg = crossbar_config(tile) if impl == "native" else float_config(tile)
        return (lambda i, o, b=False: AnalogLinear(i, o, bias=b, rpu_config=cfg, device=dev, seed=next(counter)),
                lambda ci, co, k, p, b=False: AnalogConv2d(ci, co, k, padding=p, bias=b, rpu_config=cfg,
                                                           device=dev, seed=next(counter)))
    a = load_aihwkit()
    if isinstance(a, str):
        raise RuntimeError(f"aihwkit unavailable: {a}")
    rpu = _aihwkit_rpu(impl, tile)
    return (lambda i, o, b=False: a["Linear"](i, o, bias=b, rpu_config=rpu).to(dev),
            lambda ci, co, k, p, b=False: a["Conv2d"](ci, co, k, padding=p, bias=b, rpu_config=rpu).to(dev))


def _optimizer(case: Case, model: nn.Module) -> torch.optim.Optimizer:
    if case.impl == "torch":
        return torch.optim.SGD(model.parameters(), lr=0.05)
    if case.impl.startswith("native"):
        return AnalogSGD(model.parameters(), lr=0.05)
    opt = _AIHWKIT["SGD"](model.parameters(), lr=0.05)
    opt.regroup_param_groups(model)
    return opt


#: distinct random batches (random labels) a classifier row cycles through, so that it cannot fit them in the
#: timed steps: the errors, hence the number of update pulses, stay at their early-training size
N_BATCHES = 32


def _batches(case: Case, shape: tuple[int, ...], dev: torch.device, gen: torch.Generator
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """``x: [N_BATCHES, batch, *shape]`` standard normal, ``y: [N_BATCHES, batch]`` uniform labels in [0, 10)."""
    x = torch.randn(N_BATCHES, case.batch, *shape, generator=gen).to(dev)
    y = torch.randint(0, MLP_SIZES[-1], (N_BATCHES, case.batch), generator=gen).to(dev)
    return x, y


def _cycling_step(model: nn.Module, zero_grad: Callable[[], None], step: Callable[[], None], x: torch.Tensor,
                  y: torch.Tensor) -> Callable[[], None]:
    """One cross-entropy training step per call, on batch ``i % N_BATCHES`` of ``x``/``y`` at call ``i``."""
    count = [0]

    def run() -> None:
        i = count[0] % x.shape[0]
        count[0] += 1
        zero_grad()
        F.cross_entropy(model(x[i]), y[i]).backward()
        step()
    run.model = model  # type: ignore[attr-defined]  # keep the model alive with the closure
    return run


def build_step(case: Case, device: torch.device) -> Callable[[], None]:
    """Build ``case`` (model, optimizer, seeded random data) and return one training step as a closure.

    ``mlp``/``cnn``/``grapes``: cross-entropy on :data:`N_BATCHES` cycled random batches with random labels.
    ``layer``: loss ``sum(y * r) * scale`` with a fixed random sign matrix ``r`` (``[batch, size]``), so the
    error ``d = r * scale`` and the pulse statistics do not change as the weights move; ``scale`` is
    ``1/batch`` (``err="ce"``, a cross-entropy-sized error) or ``1/(batch * size)`` (``err="small"``).

    Raises whatever the build raises (the caller turns it into a skipped row).
    """
    dev = case.runs_on(device)
    gen = torch.Generator(device="cpu").manual_seed(0)
    if case.fusion:
        set_compile(case.fusion)
        inner = build_step(replace(case, fusion=""), device)

        def in_mode() -> None:
            set_compile(case.fusion)
            inner()
        for name in ("model", "extra"):
            if hasattr(inner, name):
                setattr(in_mode, name, getattr(inner, name))
        return in_mode
    if case.kind == "grapes":
        return _grapes_step(case, dev, gen)
    if case.impl == "native-graph":
        return _graphed(build_step(replace(case, impl="native"), device), dev)
    linear, conv = _factories(case, dev)
    if case.kind == "layer":
        layer = linear(case.size, case.size)
        opt = _optimizer(case, layer)
        x = torch.randn(case.batch, case.size, generator=gen).to(dev)
        r = (torch.randint(0, 2, (case.batch, case.size), generator=gen) * 2 - 1).to(dev, torch.float32)
        scale = 1.0 / case.batch if case.err == "ce" else 1.0 / (case.batch * case.size)

        def step() -> None:
            opt.zero_grad()
            ((layer(x) * r).sum() * scale).backward()
            opt.step()
        step.model = layer  # type: ignore[attr-defined]
        return step
    if case.kind == "mlp":
        layers: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(zip(MLP_SIZES[:-1], MLP_SIZES[1:])):
            layers.append(linear(n_in, n_out))
            if i < len(MLP_SIZES) - 2:
                layers.append(nn.ReLU())
        model: nn.Module = nn.Sequential(*layers)
        x, y = _batches(case, (MLP_SIZES[0],), dev, gen)
    else:
        from imc_grapes.models import SmallCNN

        model = SmallCNN(channels=(16, 32), conv_factory=conv, linear_factory=linear, seed=0, device=dev)
        x, y = _batches(case, (1, 28, 28), dev, gen)
    opt = _optimizer(case, model)
    return _cycling_step(model, opt.zero_grad, opt.step, x, y)


def _graphed(step: Callable[[], None], dev: torch.device) -> Callable[[], None]:
    """``step`` (a training step without host synchronisation) captured as a CUDA graph: a few steps on a side
    stream, then one captured with every tile's generator registered (each replay draws new numbers); returns the
    replay. The step's batch is the one it used when captured."""
    if dev.type != "cuda":
        raise RuntimeError("native-graph: CUDA graphs need a CUDA device")
    from imc_grapes.cuda_graphs import model_generators

    model = getattr(step, "model")
    side = torch.cuda.Stream(dev)
    side.wait_stream(torch.cuda.current_stream(dev))
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream(dev).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    for g in model_generators(model, dev):
        graph.register_generator_state(g)
    with torch.cuda.graph(graph):
        step()

    def replay() -> None:
        graph.replay()
    replay.model = model  # type: ignore[attr-defined]
    replay.graph = graph  # type: ignore[attr-defined]
    replay.captured = step  # type: ignore[attr-defined]  # keeps the batches the graph reads alive
    return replay


def _grapes_step(case: Case, dev: torch.device, gen: torch.Generator) -> Callable[[], None]:
    """The MLP on ``build_network``'s crossbar backend, stepped as ``imc_grapes/train.py`` does."""
    from imc_grapes.backends import AnalogSettings, build_network
    from imc_grapes.config import TrainConfig

    importance = case.impl.split("-")[1] if case.impl.startswith("grapes") else "exact"
    cfg = TrainConfig(dataset="synthetic", backend="crossbar", hidden=MLP_SIZES[1:-1], lr=0.05,
                      optimizer="grapes" if case.impl.startswith("grapes") else "sgd",
                      analog=AnalogSettings(preset=case.preset or "ReRamSB", tile_size=case.tile,
                                            importance=importance, sat_probe_every=0))
    net = build_network(cfg, (MLP_SIZES[0],), MLP_SIZES[-1], dev)
    x, y = _batches(case, (MLP_SIZES[0],), dev, gen)
    # GRAPES's own work is its per-batch refresh (importance read of every hidden layer + modulation); the
    # error scaling in the backward is one elementwise product per hidden layer. On the CPU (no asynchronous
    # kernels) the refresh's wall time is its cost, measured in place.
    own = {"s": 0.0, "calls": 0}
    if net.grapes is not None and dev.type == "cpu":
        refresh = net.grapes.refresh

        def timed_refresh() -> None:
            t0 = time.perf_counter()
            refresh()
            own["s"] += time.perf_counter() - t0
        net.grapes.refresh = timed_refresh  # type: ignore[method-assign]
    inner = _cycling_step(net.model, net.zero_grad, net.step, x, y)

    def run() -> None:
        own["calls"] += 1
        inner()

    def extra() -> dict[str, float]:
        per_step = net.cost_summary()["per_step"]
        counts = {k: per_step[k] for k in ("pulses", "forward_passes", "backward_passes", "importance_reads",
                                           "grapes_ops")}
        if net.grapes is not None and dev.type == "cpu":
            counts["grapes_refresh_ms"] = 1e3 * own["s"] / max(own["calls"], 1)
        return counts
    run.model = inner.model  # type: ignore[attr-defined]
    run.extra = extra  # type: ignore[attr-defined]  # hardware counts per step, from the Network's counters
    return run


# ---------------------------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def paired_ratios(a_rounds: list[float], b_rounds: list[float]) -> dict[str, float]:
    """Round-by-round ratios of two rows timed interleaved (``a_rounds[i] / b_rounds[i]``: both medians of round
    ``i``, so both saw the same load): their median and quartiles (``statistics.quantiles``, inclusive method)
    and the number of rounds. The quartiles say how much the ratio moves from round to round — with the load on the
    machine, and for training rows with the training phase (the pulses per step follow the size of the errors, and
    GRAPES's larger errors fire more of them early on): a target whose threshold lies between them is not decided
    by one number of this run."""
    ratios = [a / b for a, b in zip(a_rounds, b_rounds)]
    if not ratios:
        raise ValueError("paired_ratios: no rounds to pair")
    q = statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) >= 2 else [ratios[0]] * 3
    return {"median": statistics.median(ratios), "p25": q[0], "p75": q[2], "rounds": len(ratios)}


def verdict(value: float, threshold: float, upper: bool = True, p25: float | None = None,
            p75: float | None = None) -> str:
    """``"met"`` / ``"NOT met"`` for a target ``value <= threshold`` (``upper``; else ``>=``); with the round
    quartiles, ``"borderline"`` when the threshold lies between them (the middle half of the rounds falls on both
    sides), and ``"met"`` / ``"NOT met"`` only when the whole middle half is on one side."""
    if p25 is None or p75 is None:
        return "met" if (value <= threshold if upper else value >= threshold) else "NOT met"
    low, high = min(p25, p75), max(p25, p75)
    if (high <= threshold) if upper else (low >= threshold):
        return "met"
    if (low > threshold) if upper else (high < threshold):
        return "NOT met"
    return "borderline"


def _stats(times: list[float]) -> dict[str, float]:
    q = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
    return {"median_ms": statistics.median(times), "min_ms": min(times), "p25_ms": q[0], "p75_ms": q[2],
            "max_ms": max(times), "steps": len(times)}


def time_group(cases: list[Case], device: torch.device, steps: int, rounds: int, warmup: int
               ) -> dict[Case, dict[str, Any]]:
    """Build every case, warm each up, then time them interleaved: ``rounds`` x ``ceil(steps/rounds)`` steps.

    Returns ``case -> stats`` (``median_ms``, ``min_ms``, ``p25_ms``, ``p75_ms``, ``max_ms``, ``steps``,
    ``device``, ``round_medians_ms``: the median of each round; ``per_step_counts`` where the row has hardware
    counters) or ``case -> {"skipped": reason}`` when the case could not be built or stepped.
    """
    built: dict[Case, Callable[[], None]] = {}
    out: dict[Case, dict[str, Any]] = {}
    for case in cases:
        try:
            fn = build_step(case, device)
            for _ in range(warmup):
                fn()
            _sync(case.runs_on(device))
            built[case] = fn
        except Exception as exc:  # noqa: BLE001 - a row that cannot run is skipped with its reason
            out[case] = {"skipped": f"{type(exc).__name__}: {str(exc)[:200]}"}
    per_round = max(1, math.ceil(steps / max(rounds, 1)))
    times: dict[Case, list[float]] = {c: [] for c in built}
    round_medians: dict[Case, list[float]] = {c: [] for c in built}
    for _ in range(max(rounds, 1)):
        for case, fn in list(built.items()):
            dev = case.runs_on(device)
            try:
                for _ in range(per_round):
                    start = time.perf_counter()
                    fn()
                    _sync(dev)
                    times[case].append((time.perf_counter() - start) * 1e3)
                round_medians[case].append(statistics.median(times[case][-per_round:]))
            except Exception as exc:  # noqa: BLE001 - an engine error ends this row, not the suite
                out[case] = {"skipped": f"failed after {len(times[case])} timed steps: "
                                        f"{type(exc).__name__}: {str(exc)[:200]}"}
                del built[case]
    for case, fn in built.items():
        out[case] = {**_stats(times[case]), "device": str(case.runs_on(device)),
                     "round_medians_ms": round_medians[case]}
        if hasattr(fn, "extra"):
            out[case]["per_step_counts"] = fn.extra()
    del built
    gc.collect()
    return {case: out[case] for case in cases}


# ---------------------------------------------------------------------------------------------- memory
def _cuda_peak_mb(case: Case, device: torch.device, warmup: int) -> dict[str, Any]:
    gc.collect()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn = build_step(case, device)
    for _ in range(warmup + 3):
        fn()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - base
    del fn
    gc.collect()
    return {"peak_mb": peak / 2**20, "method": "cuda-alloc"}


def _subprocess_rss_mb(case: Case, device: torch.device, threads: int, timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-case", json.dumps(dataclasses.asdict(case)),
           "--device", str(device), "--threads", str(threads)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "OPENBLAS_NUM_THREADS": os.environ["OPENBLAS_NUM_THREADS"]})
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not line:
            last = (proc.stderr.strip().splitlines() or [""])[-1]
            return {"skipped": f"subprocess rc {proc.returncode}: {last[-200:]}"}
        return json.loads(line[-1])
    except subprocess.TimeoutExpired:
        return {"skipped": f"subprocess timed out after {timeout:.0f} s"}


def _proc_status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field}")


def memory_case_main(spec: str, device: torch.device) -> None:
    """Subprocess entry point: peak RSS growth of one case over a baseline taken after the imports and a
    batch-1 warm-up of the same row (prints one JSON line)."""
    case = Case(**json.loads(spec))
    if case.impl.startswith("aihwkit"):
        load_aihwkit()
    if case.kind in ("cnn", "grapes"):
        import imc_grapes.backends  # noqa: F401
        import imc_grapes.models  # noqa: F401
    # warm-up with the same row at batch 1 (and at most 64 wide): loads the lazily initialised libraries and
    # kernels (BLAS, autograd, aihwkit's tiles), so that the baseline below holds them and the growth is the row's
    tiny = dataclasses.replace(case, batch=1, size=min(case.size, 64), tile=min(case.tile, 64))
    try:
        warm = build_step(tiny, device)
        warm()
        warm()
        del warm
    except Exception:  # noqa: BLE001 - the warm-up only loads libraries; the row itself is measured below
        pass
    gc.collect()
    try:  # give the warm-up's freed memory back to the OS, so that the row cannot reuse it unseen
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    method, detail = "cpu-rss-subprocess", "VmHWM after clear_refs"
    try:  # reset the kernel's RSS high-water mark to the current RSS (Linux)
        Path("/proc/self/clear_refs").write_text("5")
        before_kb = _proc_status_kb("VmRSS")
    except OSError:
        detail = "ru_maxrss growth"
        before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn = build_step(case, device)
    for _ in range(5):
        fn()
    after_kb = (_proc_status_kb("VmHWM") if "clear_refs" in detail
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    print(json.dumps({"peak_mb": (after_kb - before_kb) / 1024, "method": method, "detail": detail,
                      "baseline_rss_mb": before_kb / 1024}))


def measure_memory(cases: list[Case], ctx: "Ctx") -> dict[Case, dict[str, Any]]:
    """Peak memory of every case (CUDA: allocator peak in-process; CPU: RSS growth of a fresh subprocess)."""
    out: dict[Case, dict[str, Any]] = {}
    for case in cases:
        if ctx.args.no_memory:
            out[case] = {"skipped": "--no-memory"}
            continue
        dev = case.runs_on(ctx.device)
        try:
            if dev.type == "cuda":
                out[case] = _cuda_peak_mb(case, dev, 1)
            else:
                out[case] = _subprocess_rss_mb(case, dev, ctx.args.threads, ctx.args.memory_timeout)
        except Exception as exc:  # noqa: BLE001
            out[case] = {"skipped": f"{type(exc).__name__}: {str(exc)[:200]}"}
    return out


# ---------------------------------------------------------------------------------------------- sections
@dataclass
class Ctx:
    """What every section needs: the parsed arguments, the device and whether aihwkit can load."""

    args: argparse.Namespace
    device: torch.device
    aihwkit: str | None  # None: loadable; else why not

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def steps(self, full: int, quick: int) -> int:
        return self.args.steps if self.args.steps else (quick if self.args.quick else full)


def _rows(timed: dict[Case, dict[str, Any]], mem: dict[Case, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for case, t in timed.items():
        m = mem.get(case, {"skipped": "not measured"})
        rows.append({"label": case.label, **dataclasses.asdict(case), "note": IMPL_NOTES.get(case.impl, ""),
                     **t, "memory": m})
    return rows


def _median(rows: list[dict[str, Any]], **match: Any) -> float | None:
    for r in rows:
        if all(r.get(k) == v for k, v in match.items()) and "median_ms" in r:
            return float(r["median_ms"])
    return None


def _add_ratios(rows: list[dict[str, Any]]) -> None:
    """``x_torch`` (row / digital torch of the same kind, size, batch) and ``x_aihwkit`` (native row / its
    aihwkit partner) on every row where both were measured."""
    for r in rows:
        if "median_ms" not in r:
            continue
        key = {"kind": r["kind"], "batch": r["batch"], "size": r["size"], "err": r["err"]}
        t = _median(rows, impl="torch", **key)
        if t and r["impl"] != "torch":
            r["x_torch"] = r["median_ms"] / t
        partner = AIHWKIT_PARTNER.get(r["impl"])
        a = _median(rows, impl=partner, tile=r["tile"], **key) if partner else None
        if a:
            r["x_aihwkit"] = r["median_ms"] / a
            p = _row(rows, impl=partner, tile=r["tile"], **key)
            if p and len(p.get("round_medians_ms", [])) == len(r.get("round_medians_ms", [])) > 0:
                pr = paired_ratios(r["round_medians_ms"], p["round_medians_ms"])
                r["x_aihwkit_p25"], r["x_aihwkit_p75"] = pr["p25"], pr["p75"]


def _aihwkit_impls(ctx: Ctx) -> list[str]:
    return [] if ctx.aihwkit is not None else ["aihwkit-cpp", "aihwkit-torchinf"]


def section_mlp(ctx: Ctx) -> dict[str, Any]:
    batches = ctx.args.mlp_batches or ([64, 256, 1024] if ctx.cuda else [64])
    steps = ctx.steps(100, 30)
    cases = []
    for b in batches:
        impls = ["torch", "native", "native-float"] + (["native-graph"] if ctx.cuda else []) + [
            i for i in _aihwkit_impls(ctx) if b == batches[0] or (i == "aihwkit-torchinf" and ctx.cuda)]
        cases += [Case("mlp", i, b) for i in impls]
    timed: dict[Case, dict[str, Any]] = {}
    for b in batches:  # one interleaved group per batch size
        timed.update(time_group([c for c in cases if c.batch == b], ctx.device, steps, ctx.args.rounds,
                                ctx.args.warmup))
    rows = _rows(timed, measure_memory(list(timed), ctx))
    _add_ratios(rows)
    return {"rows": rows, "notes": _skip_notes(ctx)}


def section_cnn(ctx: Ctx) -> dict[str, Any]:
    batch = 32 if ctx.args.quick else 64
    steps = ctx.steps(30, 8)
    cases = [Case("cnn", i, batch) for i in ["torch", "native", "native-float"] + _aihwkit_impls(ctx)]
    timed = time_group(cases, ctx.device, steps, ctx.args.rounds, ctx.args.warmup)
    rows = _rows(timed, measure_memory(list(timed), ctx))
    _add_ratios(rows)
    return {"rows": rows, "notes": _skip_notes(ctx) + [f"SmallCNN(channels=(16, 32)) on 1x28x28, batch {batch}"]}


def _loglog_slope(xs: list[float], ys: list[float]) -> float | None:
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y and y > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx if sxx > 0 else None


#: error regimes of the single-layer rows: ``d = r * scale`` with random signs ``r``
ERROR_REGIMES = {
    "ce": "d = ±1/batch per output (a cross-entropy-sized error: most devices get pulses every step)",
    "small": "d = ±1/(batch·N) (a mean-reduced loss: ~1000x fewer pulses, one each on ~4 % of the devices; "
             "forward/backward, pulse planning and a sparse update)",
}


def section_scaling(ctx: Ctx) -> dict[str, Any]:
    capped = ctx.args.quick and not ctx.cuda  # quick CPU run: at most 2048² and batch 256
    sizes = ctx.args.sizes or ([256, 512, 1024, 2048] if capped else [256, 512, 1024, 2048, 4096])
    batches = ctx.args.batches or ([16, 64, 256] if capped else [16, 64, 256, 1024])
    steps = ctx.steps(30, 8)
    timed: dict[Case, dict[str, Any]] = {}
    n_b = 1024
    for err in ctx.args.regimes:
        for n in sizes:  # size sweep at batch 64 (+ one tile for 1024 and 2048)
            group = [Case("layer", "torch", 64, n, err=err), Case("layer", "native", 64, n, err=err)]
            if n in (1024, 2048):
                group.append(Case("layer", "native", 64, n, tile=n, err=err))
            if n == 1024 and ctx.aihwkit is None and not (ctx.cuda and not ctx.args.scaling_aihwkit):
                group += [Case("layer", "aihwkit-cpp", 64, n, err=err),
                          Case("layer", "aihwkit-cpp", 64, n, tile=n, err=err)]
            timed.update(time_group(group, ctx.device, steps, ctx.args.rounds, ctx.args.warmup))
        for b in batches:  # batch sweep at 1024²
            if b == 64 and n_b in sizes:
                continue
            group = [Case("layer", "torch", b, n_b, err=err), Case("layer", "native", b, n_b, err=err)]
            timed.update(time_group(group, ctx.device, max(3, steps * 64 // max(b, 64)), ctx.args.rounds,
                                    ctx.args.warmup))
    # memory does not depend on the error size: measured for the first regime's rows only
    first = ctx.args.regimes[0]
    mem = measure_memory([c for c in timed if c.err == first], ctx)
    rows = _rows(timed, {c: mem.get(c, {"skipped": f"see the {first!r} row"}) for c in timed})
    _add_ratios(rows)
    return {"rows": rows, "summary": scaling_summary(rows, sizes, batches, ctx.args.regimes),
            "notes": _skip_notes(ctx) + [
                "layer loss = sum(y * r) * scale (r: fixed random signs); error regimes: " +
                "; ".join(f"{k}: {v}" for k, v in ERROR_REGIMES.items() if k in ctx.args.regimes),
                "native tiles 256x256 unless tile says otherwise; batch sweep at 1024²; fewer timed steps for "
                "larger batches; memory measured for the first regime only; tiles/one tile: paired estimate "
                "(median over rounds of the ratio of the round medians), also the ratio of the overall medians"]
            + ([f"--quick on the CPU: sizes capped at {max(sizes)}², batches at {max(batches)}"] if capped else [])}


def _row(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in match.items()) and "median_ms" in r), None)


def scaling_summary(rows: list[dict[str, Any]], sizes: list[int], batches: list[int], regimes: list[str],
                    n_b: int = 1024) -> dict[str, Any]:
    """Tiles-vs-one-tile ratios (paired per round, and of the medians) and log-log slopes of the scaling rows."""
    summary: dict[str, Any] = {}
    for err in regimes:
        sel = {"kind": "layer", "err": err}
        for impl in ("native", "aihwkit-cpp"):
            for n in (1024, 2048):
                tiles = _row(rows, impl=impl, batch=64, size=n, tile=256, **sel)
                one = _row(rows, impl=impl, batch=64, size=n, tile=n, **sel)
                if tiles and one:
                    key = f"{impl}_{n}_tiles{(n // 256) ** 2}_over_one_tile_{err}"
                    pr = paired_ratios(tiles["round_medians_ms"], one["round_medians_ms"])
                    summary[key], summary[key + "_p25"], summary[key + "_p75"] = pr["median"], pr["p25"], pr["p75"]
                    summary[key + "_of_medians"] = tiles["median_ms"] / one["median_ms"]
        for impl in ("native", "torch"):
            ns = [n for n in sizes if _median(rows, impl=impl, batch=64, size=n, tile=256, **sel)]
            ts = [_median(rows, impl=impl, batch=64, size=n, tile=256, **sel) for n in ns]
            if len(ns) >= 2:
                summary[f"{impl}_{err}_exponent_vs_weights"] = _loglog_slope([n * n for n in ns], ts)
                summary[f"{impl}_{err}_exponent_vs_weights_n>=1024"] = _loglog_slope(
                    [n * n for n in ns if n >= 1024], [t for n, t in zip(ns, ts) if n >= 1024])
                summary[f"{impl}_{err}_ns_per_weight_per_sample_at_{ns[-1]}"] = ts[-1] * 1e6 / (ns[-1] ** 2 * 64)
            bs = [b for b in batches if _median(rows, impl=impl, batch=b, size=n_b, tile=256, **sel)]
            tb = [_median(rows, impl=impl, batch=b, size=n_b, tile=256, **sel) for b in bs]
            if len(bs) >= 2:
                summary[f"{impl}_{err}_exponent_vs_batch_at_{n_b}"] = _loglog_slope(bs, tb)
                summary[f"{impl}_{err}_exponent_vs_batch_at_{n_b}_b>=64"] = _loglog_slope(
                    [b for b in bs if b >= 64], [t for b, t in zip(bs, tb) if b >= 64])
    return summary


def section_grapes(ctx: Ctx) -> dict[str, Any]:
    steps = ctx.steps(400, 120)
    timed: dict[Case, dict[str, Any]] = {}
    for preset in ctx.args.grapes_presets:  # one interleaved group per device preset
        cases = [Case("grapes", i, 64, preset=preset) for i in ("sgd", "grapes-exact", "grapes-array")]
        timed.update(time_group(cases, ctx.device, steps, max(ctx.args.rounds, steps // 10), ctx.args.warmup))
    rows = _rows(timed, measure_memory(list(timed), ctx))
    return {"rows": rows, "summary": grapes_summary(rows),
            "notes": ["784-256-256-10 via imc_grapes.backends.build_network (as train.py), backend crossbar, "
                      "7/9-bit DAC/ADC, out_noise 0.06, tiles 256, batch 64, sat_probe_every=0, GRAPES "
                      "propagated (bp); 32 cycled random batches with random labels; rounds of 10 steps per row, "
                      "interleaved; own = wall time of GRAPES's per-batch refresh (importance reads + modulation; CPU) "
                      "per step / the GRAPES step median; overhead (×SGD) = median over rounds of (GRAPES round "
                      "median / SGD round median) - 1 (with the quartiles of the rounds, and the median of the first "
                      "quarter of the rounds and of the last half: the overhead follows the training phase); also "
                      "from the overall medians and from the minima"]}


def grapes_summary(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The ``grapes`` section's summary from its rows (each GRAPES row against the SGD row of its preset): pulses
    per step over SGD's, the paired overhead in % (median over rounds, its quartiles, and the median of the first
    quarter and of the last half of the rounds), the overhead from the overall medians and minima, and GRAPES's own
    refresh as a share of its step."""
    summary: dict[str, float] = {}
    for r in rows:
        sgd = next((q for q in rows if q["impl"] == "sgd" and q["preset"] == r["preset"] and "median_ms" in q),
                   None)
        if sgd is not None and "median_ms" in r and r["impl"] != "sgd" and "per_step_counts" in sgd:
            summary[f"pulses_{r['impl']}_{r['preset']}_over_sgd"] = (
                r["per_step_counts"]["pulses"] / max(sgd["per_step_counts"]["pulses"], 1.0))
        if sgd is not None and "median_ms" in r and r["impl"] != "sgd":
            # paired: each round's GRAPES median over the same round's SGD median (both saw the same load)
            pr = paired_ratios(r["round_medians_ms"], sgd["round_medians_ms"])
            r["x_sgd"] = pr["median"]
            name = f"overhead_{r['impl']}_{r['preset']}_pct"
            summary[name] = (pr["median"] - 1) * 100
            summary[name + "_p25"], summary[name + "_p75"] = (pr["p25"] - 1) * 100, (pr["p75"] - 1) * 100
            # the overhead follows the training phase (GRAPES's larger early errors fire more pulses): the paired
            # median of the first quarter of the rounds and of the last half
            n = len(r["round_medians_ms"])
            if n >= 4:
                for part, sl in (("first_quarter", slice(0, n // 4)), ("last_half", slice(n - n // 2, n))):
                    summary[f"{name}_{part}"] = (paired_ratios(r["round_medians_ms"][sl],
                                                               sgd["round_medians_ms"][sl])["median"] - 1) * 100
            summary[f"overhead_{r['impl']}_{r['preset']}_pct_of_medians"] = (
                r["median_ms"] / sgd["median_ms"] - 1) * 100
            summary[f"overhead_{r['impl']}_{r['preset']}_pct_of_min"] = (r["min_ms"] / sgd["min_ms"] - 1) * 100
        own_ms = (r.get("per_step_counts") or {}).get("grapes_refresh_ms")
        if own_ms is not None and "median_ms" in r:
            # GRAPES's own computation (importance reads + modulation) as a share of the GRAPES step
            summary[f"own_{r['impl']}_{r['preset']}_pct_of_step"] = 100 * own_ms / r["median_ms"]
    return summary


def section_fusion(ctx: Ctx) -> dict[str, Any]:
    """The training step of the ``--fusion-presets`` with eager vs compiled device models (``devices.fusion``)."""
    steps = ctx.steps(200, 60)
    timed: dict[Case, dict[str, Any]] = {}
    mode = get_compile()
    try:
        for preset in ctx.args.fusion_presets:
            cases = [Case("grapes", "sgd", 64, preset=preset, fusion=f) for f in ("off", "on")]
            timed.update(time_group(cases, ctx.device, steps, max(ctx.args.rounds, steps // 10), ctx.args.warmup))
    finally:
        set_compile(mode if mode in COMPILE_MODES else "off")
    rows = _rows(timed, {})
    summary = {}
    for preset in ctx.args.fusion_presets:
        eager = next((r for r in rows if r["preset"] == preset and r["label"].endswith("eager")
                      and "median_ms" in r), None)
        comp = next((r for r in rows if r["preset"] == preset and r["label"].endswith("compiled")
                     and "median_ms" in r), None)
        if eager is not None and comp is not None:
            paired = paired_ratios(comp["round_medians_ms"], eager["round_medians_ms"])["median"]
            comp["x_eager"] = paired
            summary[f"compiled_over_eager_{preset}"] = paired
    return {"rows": rows, "summary": summary,
            "notes": ["784-256-256-10 SGD via build_network (as the grapes section), device models eager "
                      "(IMC_GRAPES_COMPILE=off) vs compiled (on); compile time is in the warm-up, not timed; "
                      "x_eager = median over rounds of (compiled round median / eager round median)"]}


def section_replicas(ctx: Ctx) -> dict[str, Any]:
    if not REPLICAS_SCRIPT.exists():
        return {"skipped": f"{REPLICAS_SCRIPT.relative_to(ROOT)} does not exist"}
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": str(ctx.args.threads)}   # the suite's torch threads, not torch's default
    try:
        helptext = subprocess.run([sys.executable, str(REPLICAS_SCRIPT), "--help"], capture_output=True, text=True,
                                  timeout=max(5, min(60, ctx.args.replicas_timeout)), env=env).stdout
    except subprocess.TimeoutExpired:
        helptext = ""
    cmd = [sys.executable, str(REPLICAS_SCRIPT)]
    if "--device" in helptext:
        cmd += ["--device", str(ctx.device)]
    if ctx.args.quick:  # its own quick switch, else fewer replica counts
        cmd += ["--quick"] if "--quick" in helptext else (["--replicas", "1,4,16"] if "--replicas" in helptext
                                                          else [])
    out_json = Path(ctx.args.out).with_suffix(".replicas.json") if ctx.args.out else None
    if out_json is not None and "--out" in helptext:
        cmd += ["--out", str(out_json)]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=ctx.args.replicas_timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"skipped": f"timed out after {ctx.args.replicas_timeout} s", "command": cmd}
    res: dict[str, Any] = {"command": cmd, "returncode": proc.returncode, "wall_s": time.perf_counter() - start,
                           "stdout_tail": proc.stdout[-4000:], "stderr_tail": proc.stderr[-1000:]}
    if out_json is not None and out_json.exists():
        try:
            res["results"] = json.loads(out_json.read_text())
        except ValueError:
            pass
    return res


def _skip_notes(ctx: Ctx) -> list[str]:
    return [] if ctx.aihwkit is None else [f"aihwkit rows skipped: {ctx.aihwkit}"]


SECTION_FNS: dict[str, Callable[[Ctx], dict[str, Any]]] = {
    "mlp": section_mlp, "cnn": section_cnn, "scaling": section_scaling, "grapes": section_grapes,
    "fusion": section_fusion, "replicas": section_replicas}


# ---------------------------------------------------------------------------------------------- targets
def _target(value: float, threshold: float, goal: str, p25: float | None = None, p75: float | None = None,
            note: str = "") -> dict[str, Any]:
    """A ``<=`` target's entry: ``value``, ``goal``, ``met`` (the value against the threshold), and where the round
    quartiles of a paired ratio are known their ``range`` and the :func:`verdict` they give."""
    out: dict[str, Any] = {"value": value, "target": goal, "met": value <= threshold}
    if p25 is not None and p75 is not None:
        out["range"] = [p25, p75]
    out["verdict"] = verdict(value, threshold, True, p25, p75)
    if note:
        out["note"] = note
    return out


def targets(results: dict[str, Any], device: torch.device, aihwkit_ref: dict[str, Any] | None) -> dict[str, Any]:
    """The issue's targets that this run can decide: ``{name: {value, target, met, verdict[, range][, note]}}``
    (``range``: the quartiles of the round-by-round ratios, see :func:`paired_ratios`)."""
    out: dict[str, Any] = {}
    secs = results["sections"]
    mlp = secs.get("mlp", {}).get("rows", [])
    if device.type == "cpu":   # the issue's target names the MLP; the SmallCNN is an analog training step too
        for kind in ("mlp", "cnn"):
            r = next((r for r in secs.get(kind, {}).get("rows", [])
                      if r["impl"] == "native" and r["batch"] == 64 and "x_aihwkit" in r), None)
            if r:
                out[f"cpu_native_over_aihwkit_cpp_{kind}"] = _target(r["x_aihwkit"], 0.5, "<= 0.5",
                                                                     r.get("x_aihwkit_p25"), r.get("x_aihwkit_p75"))
    summ = secs.get("scaling", {}).get("summary", {})
    for err in ERROR_REGIMES:
        key = f"native_1024_tiles16_over_one_tile_{err}"
        if key in summ:
            out[f"native_16_tiles_over_one_tile_1024_{err}"] = _target(summ[key], 1.3, "<= 1.3",
                                                                        summ.get(key + "_p25"), summ.get(key + "_p75"))
    g = secs.get("grapes", {}).get("summary", {})
    for k, v in g.items():
        if k.endswith("_pct"):  # overhead_grapes-<importance>_<preset>_pct
            name = k[len("overhead_"):-len("_pct")].replace("-", "_")
            out[f"{name}_overhead_pct"] = _target(v, 5.0, "<= 5 %", g.get(k + "_p25"), g.get(k + "_p75"),
                                                  "whole step, GRAPES vs SGD (includes the extra pulses)")
        elif k.endswith("_pct_of_step") and k.startswith("own_"):  # own_grapes-<importance>_<preset>_pct_of_step
            name = k[len("own_"):-len("_pct_of_step")].replace("-", "_")
            out[f"{name}_own_compute_pct"] = _target(v, 5.0, "<= 5 %", note="GRAPES's own refresh (importance + "
                                                                        "modulation) in its step")
    if device.type == "cuda":
        nat = _median(mlp, impl="native", batch=64)
        aih = _median(mlp, impl="aihwkit-cpp", batch=64)
        note = "same run"
        if aih is None and aihwkit_ref is not None:
            ref_rows = aihwkit_ref.get("sections", {}).get("mlp", {}).get("rows", [])
            aih = _median(ref_rows, impl="aihwkit-cpp", batch=64)
            note = "cross-run: aihwkit C++ time from --aihwkit-ref (another machine/run)"
        if nat and aih:
            v = aih / nat
            out["cuda_speedup_over_aihwkit_cpu_mlp_b64"] = {"value": v, "target": ">= 50", "met": v >= 50,
                                                            "verdict": verdict(v, 50, upper=False), "note": note}
        graph = _median(mlp, impl="native-graph", batch=64)
        if graph and aih:
            v = aih / graph
            out["cuda_graph_speedup_over_aihwkit_cpu_mlp_b64"] = {
                "value": v, "target": ">= 50", "met": v >= 50, "verdict": verdict(v, 50, upper=False),
                "note": note + "; the step replayed as a CUDA graph"}
        for r in mlp:
            if r["impl"] in ("native", "native-graph") and r["batch"] >= 256 and "x_torch" in r:
                name = "cuda_native" if r["impl"] == "native" else "cuda_graph_native"
                out[f"{name}_over_torch_mlp_b{r['batch']}"] = _target(
                    r["x_torch"], 3.0, "<= 3", note="" if r["impl"] == "native" else "the step replayed as a "
                    "CUDA graph, against an eager digital torch step")
    return out


# ---------------------------------------------------------------------------------------------- output
def _range_text(target: dict[str, Any]) -> str:
    """A target's round quartiles as ``"p25 to p75"`` (``"—"`` without them)."""
    r = target.get("range")
    return f"{r[0]:.3f} to {r[1]:.3f}" if r else "—"


def _fmt(v: Any, spec: str) -> str:
    return format(v, spec) if isinstance(v, (int, float)) else "—"


def print_rows(title: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n## {title}")
    head = (f"{'row':44s} {'device':7s} {'median ms':>10s} {'min ms':>9s} {'×torch':>8s} {'×aihwkit':>9s} "
            f"{'×base':>6s} {'peak MB':>9s} memory method")
    print(head)
    print("-" * len(head))
    for r in rows:
        m = r.get("memory", {})
        mem, how = (_fmt(m.get("peak_mb"), "9.1f"), m.get("method", "")) if "peak_mb" in m else \
            ("—".rjust(9), m.get("skipped", "")[:40])
        if "median_ms" not in r:
            print(f"{r['label']:44s} skipped: {r['skipped']}")
            continue
        print(f"{r['label']:44s} {r['device']:7s} {r['median_ms']:10.2f} {r['min_ms']:9.2f} "
              f"{_fmt(r.get('x_torch'), '8.2f'):>8s} {_fmt(r.get('x_aihwkit'), '9.2f'):>9s} "
              f"{_fmt(r.get('x_sgd', r.get('x_eager')), '6.3f'):>6s} {mem:>9s} {how}")


def print_section(name: str, res: dict[str, Any]) -> None:
    if "rows" in res:
        print_rows(name, res["rows"])
        for k, v in res.get("summary", {}).items():
            print(f"  {k}: {_fmt(v, '.3f')}")
        for n in res.get("notes", []):
            print(f"  note: {n}")
    else:
        print(f"\n## {name}")
        if "skipped" in res:
            print(f"  skipped: {res['skipped']}")
        else:
            print(f"  command: {' '.join(res.get('command', []))} -> rc {res.get('returncode')}, "
                  f"{res.get('wall_s', 0):.1f} s")
            print("  " + res.get("stdout_tail", "").strip().replace("\n", "\n  "))


def markdown(results: dict[str, Any]) -> str:
    """The tables of a results JSON as Markdown (for ``docs/performance.md``), after a line naming the machine and
    the engine's settings that change the numbers (CPU capability, pulse-count kernel, device-model fusion)."""
    m = results.get("machine", {})
    cores = m.get("logical_cores", m.get("cpu_count", "?"))          # cpu_count: JSON of earlier versions
    facts = [f"{m.get('cpu', '?')} ({cores} CPUs, capability {m.get('cpu_capability', '?')})",
             f"device {m.get('device', '?')}" + (f" ({m['gpu']})" if m.get("gpu") else ""),
             f"torch {m.get('torch', '?')}, {m.get('torch_threads', '?')} thread(s)",
             f"aihwkit {m.get('aihwkit', '?')}", f"CPU pulse counts: {m.get('cpu_pulse_counts', '?')}",
             f"device models: {m.get('device_model_fusion', '?')}",
             f"malloc {m.get('malloc', '?')}", f"commit {m.get('git_commit', '?')}", f"{m.get('date_utc', '?')}"]
    lines: list[str] = [f"*Machine*: {'; '.join(facts)}.\n"]
    for name, sec in results["sections"].items():
        lines.append(f"### {name}\n")
        if "rows" not in sec:
            lines.append(f"skipped: {sec.get('skipped', 'no rows')}\n" if "skipped" in sec else
                         f"`{' '.join(sec.get('command', []))}` -> rc {sec.get('returncode')}\n\n```\n"
                         f"{sec.get('stdout_tail', '').strip()}\n```\n")
            continue
        lines.append("| row | device | median ms | min ms | ×torch | ×aihwkit | ×base | peak MB | memory method |")
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for r in sec["rows"]:
            if "median_ms" not in r:
                lines.append(f"| {r['label']} | skipped: {r['skipped']} |||||||")
                continue
            m = r.get("memory", {})
            lines.append(f"| {r['label']} | {r['device']} | {r['median_ms']:.2f} | {r['min_ms']:.2f} | "
                         f"{_fmt(r.get('x_torch'), '.2f')} | {_fmt(r.get('x_aihwkit'), '.2f')} | "
                         f"{_fmt(r.get('x_sgd', r.get('x_eager')), '.3f')} | {_fmt(m.get('peak_mb'), '.1f')} | "
                         f"{m.get('method', m.get('skipped', ''))} |")
        if sec.get("summary"):
            lines.append("")
            lines.extend(f"* `{k}` = {_fmt(v, '.3f')}" for k, v in sec["summary"].items())
        lines.append("")
    if results.get("targets"):
        lines.append("### targets\n")
        lines.append("| target | value | rounds p25 to p75 | goal | verdict |")
        lines.append("|---|---|---|---|---|")
        for k, v in results["targets"].items():
            word = v.get("verdict", "met" if v["met"] else "NOT met")
            lines.append(f"| {k} | {v['value']:.3f} | {_range_text(v)} | {v['target']} | "
                         f"{'yes' if word == 'met' else '**no**' if word == 'NOT met' else word}"
                         + (f" ({v['note']})" if v.get("note") else "") + " |")
    return "\n".join(lines) + "\n"


def machine_info(device: torch.device, threads: int) -> dict[str, Any]:
    """What every experiment report records about the machine (CPU model, cores, OPENBLAS and torch threads, the
    software versions and the engine's settings: :func:`imc_grapes.experiments.report.machine_info`), and the
    suite's own facts: the date, the device, ``threads``, the load, the short commit and the uncommitted files of
    the engine and the benchmarks, the GPU."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = [ln[3:] for ln in subprocess.run(["git", "status", "--porcelain", "--", "crossbar", "devices",
                                                  "imc_grapes", "benchmarks"], cwd=ROOT, capture_output=True,
                                                 text=True, timeout=10).stdout.splitlines()]
    except (OSError, subprocess.TimeoutExpired):
        commit, dirty = "", []
    info: dict[str, Any] = {
        **experiment_machine_info(),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": str(device), "torch_threads": threads, "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
        "loadavg_start": os.getloadavg(), "git_commit": commit, "git_uncommitted": dirty}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def build_parser() -> argparse.ArgumentParser:
    """The suite's command-line options (checked by :func:`parse_args`; a function of its own so that
    tests/test_docs_commands.py can check the documented command lines without running anything)."""
    ap = SuggestingArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {SECTIONS}")
    ap.add_argument("--device", default="cpu", help="torch device of the torch and native rows: cpu or cuda")
    ap.add_argument("--quick", action="store_true",
                    help="fewer steps, CNN batch 32; on the CPU scaling capped at 2048² and batch 256")
    ap.add_argument("--steps", type=int, default=0, help="timed steps per row (0: the section's default)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds per group")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (CPU)")
    ap.add_argument("--skip-aihwkit", action="store_true", help="no aihwkit rows")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    ap.add_argument("--memory-timeout", type=float, default=180.0, help="seconds per memory subprocess")
    ap.add_argument("--mlp-batches", type=lambda s: [int(v) for v in s.split(",")], default=None,
                    help="MLP batch sizes (default 64; 64,256,1024 on CUDA)")
    ap.add_argument("--sizes", type=lambda s: [int(v) for v in s.split(",")], default=None,
                    help="scaling: layer sizes (default 256,512,1024,2048,4096)")
    ap.add_argument("--batches", type=lambda s: [int(v) for v in s.split(",")], default=None,
                    help="scaling: batch sizes at 1024² (default 16,64,256,1024)")
    ap.add_argument("--regimes", type=lambda s: s.split(","), default=["ce", "small"],
                    help="scaling: error regimes of the layer rows (ce,small)")
    ap.add_argument("--scaling-aihwkit", action="store_true", help="aihwkit 1024² rows also with --device cuda")
    ap.add_argument("--grapes-presets", type=lambda s: s.split(","), default=["ReRamSB", "Idealized"],
                    help="device presets of the GRAPES section (default ReRamSB,Idealized)")
    ap.add_argument("--fusion-presets", type=lambda s: s.split(","),
                    default=["ReRamSB", "EcRam", "Capacitor", "ReRamES"],
                    help="device presets of the fusion section: eager vs compiled device models "
                         "(default ReRamSB,EcRam,Capacitor,ReRamES)")
    ap.add_argument("--replicas-timeout", type=int, default=240)
    ap.add_argument("--aihwkit-ref", type=Path, default=None,
                    help="JSON of an earlier CPU run: its aihwkit C++ MLP time for the CUDA speed-up target "
                         "when aihwkit cannot load here")
    ap.add_argument("--out", type=Path, default=None, help="write all rows + machine info + config as JSON")
    ap.add_argument("--markdown", type=Path, default=None,
                    help="print the tables of this results JSON as Markdown and exit (nothing is measured)")
    ap.add_argument("--memory-case", default=None, help=argparse.SUPPRESS)
    return ap


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The options of ``argv`` (``None``: the process's), with the --only sections checked."""
    ap = build_parser()
    args = ap.parse_args(argv)
    bad = sorted(set(args.only.split(",")) - set(SECTIONS))
    if bad:
        ap.error(f"--only: unknown section(s) {bad}; valid: {','.join(SECTIONS)}{did_you_mean_each(bad, SECTIONS)}")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    tune_malloc()                      # as the imc-grapes command line does (imc_grapes.runtime)
    if args.markdown is not None:
        print(markdown(json.loads(args.markdown.read_text())))
        return {}
    if args.memory_case is not None:
        memory_case_main(args.memory_case, device)
        return {}
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch.cuda.is_available() is False on this machine; run with --device cpu")
    torch.manual_seed(0)
    aih = "--skip-aihwkit" if args.skip_aihwkit else load_aihwkit()
    ctx = Ctx(args, device, None if isinstance(aih, dict) else aih)
    machine = machine_info(device, torch.get_num_threads())
    machine["aihwkit"] = _AIHWKIT.get("version") if ctx.aihwkit is None else f"unavailable ({ctx.aihwkit})"
    ref = json.loads(args.aihwkit_ref.read_text()) if args.aihwkit_ref and args.aihwkit_ref.exists() else None
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
              if k != "memory_case" and not k.startswith("_")}   # not the parser's record of the options typed
    results: dict[str, Any] = {"machine": machine, "config": config, "sections": {}, "targets": {}}
    print(f"bench_suite: device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}, aihwkit {machine['aihwkit']}, "
          f"malloc {machine['malloc']}, load {machine['loadavg_start']}", flush=True)
    t0 = time.perf_counter()
    for name in [s for s in SECTIONS if s in args.only.split(",")]:
        start = time.perf_counter()
        res = SECTION_FNS[name](ctx)
        res["wall_s"] = time.perf_counter() - start
        results["sections"][name] = res
        print_section(f"{name} ({res['wall_s']:.0f} s)", res)
        results["targets"] = targets(results, device, ref)
        results["machine"]["loadavg_end"] = os.getloadavg()
        results["machine"]["wall_s"] = time.perf_counter() - t0
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=2, default=str))
        sys.stdout.flush()
    print("\n## targets")
    print(f"  {'':45s} {'value':>8s}  {'rounds p25 to p75':>18s}")
    for k, v in results["targets"].items():
        print(f"  {k:45s} {v['value']:8.3f}  {_range_text(v):>18s}  target {v['target']:7s} "
              f"{v.get('verdict', 'met' if v['met'] else 'NOT met')}" + (f"  ({v['note']})" if v.get("note") else ""))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s, load {os.getloadavg()}"
          + (f"; wrote {args.out}" if args.out else ""))
    return results


if __name__ == "__main__":
    main()
