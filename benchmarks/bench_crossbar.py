"""Step-time benchmark of the crossbar engine (a script, not a test).

Measures the median time of one training step (forward + backward + update) of

1. a 784-256-256-10 MLP at batch 64 (ReLU, cross-entropy, random data) with
   (a) plain torch ``nn.Linear`` + ``torch.optim.SGD``,
   (b) aihwkit ``AnalogLinear`` with ``SingleRPUConfig(ConstantStepDevice)`` + aihwkit ``AnalogSGD``
       (C++ tiles, CPU only; the config is built with ``crossbar.to_aihwkit_rpu_config`` from the same
       ``CrossbarConfig`` as (c)),
   (c) this engine (``crossbar.AnalogLinear`` + ``crossbar.AnalogSGD``), same device and periphery;
   and prints the ratios c/a and c/b;
2. one 2048x2048 analog layer at batch 64 on 256x256 tiles (64 tiles) and as one 2048x2048 tile
   (this engine; aihwkit too unless ``--skip-aihwkit``/``--skip-big-aihwkit``).

Usage::

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_crossbar.py [--device cuda] [--out results.json]

``OPENBLAS_NUM_THREADS=1`` is set by the script itself before numpy/torch/aihwkit load (aihwkit's C++ tiles
are ~2x faster with it on 2 cores), and torch's intra-op threads default to 1 (``--threads``) so that all
three rows run single-threaded on the CPU. aihwkit rows are skipped cleanly when aihwkit cannot load; they
always run on the CPU (the PyPI wheel has no CUDA), also with ``--device cuda``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crossbar import AnalogLinear, AnalogSGD, CrossbarConfig, to_aihwkit_rpu_config  # noqa: E402
from devices import ConstantStepDevice  # noqa: E402

SIZES = (784, 256, 256, 10)
BATCH = 64


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_step_ms(step: Callable[[], None], device: torch.device, steps: int, warmup: int) -> dict[str, float]:
    """Median / min / max wall time of ``step`` in ms after ``warmup`` untimed calls."""
    for _ in range(warmup):
        step()
    _sync(device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        _sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times), "steps": steps}


def mlp(make_layer: Callable[[int, int], nn.Module]) -> nn.Module:
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(SIZES[:-1], SIZES[1:])):
        layers.append(make_layer(n_in, n_out))
        if i < len(SIZES) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def training_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor
                  ) -> Callable[[], None]:
    def step() -> None:
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return step


def layer_step(layer: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        opt.zero_grad()
        layer(x).square().mean().backward()
        opt.step()
    return step


def load_aihwkit() -> tuple[Any, Any] | str:
    """aihwkit's AnalogLinear and AnalogSGD, or the reason why they cannot be used."""
    try:
        from aihwkit.nn import AnalogLinear as AIHWLinear
        from aihwkit.optim import AnalogSGD as AIHWSGD
        probe = AIHWLinear(4, 2, rpu_config=to_aihwkit_rpu_config(CrossbarConfig()))
        probe(torch.randn(1, 4))
    except Exception as exc:  # noqa: BLE001 - any failure means "no aihwkit row"
        return f"{type(exc).__name__}: {exc}"
    return AIHWLinear, AIHWSGD


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", help="torch device of rows (a) and (c): cpu or cuda")
    ap.add_argument("--steps", type=int, default=50, help="timed steps of the MLP rows")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--big-steps", type=int, default=15, help="timed steps of the 2048x2048 rows")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (CPU)")
    ap.add_argument("--skip-aihwkit", action="store_true")
    ap.add_argument("--skip-big-aihwkit", action="store_true", help="skip only the aihwkit 2048x2048 rows")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = CrossbarConfig(device=ConstantStepDevice())
    env = {"torch": torch.__version__, "device": str(device), "torch_threads": torch.get_num_threads(),
           "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"), "python": platform.python_version(),
           "machine": platform.machine(), "cpu_count": os.cpu_count()}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    print(f"OPENBLAS_NUM_THREADS={env['OPENBLAS_NUM_THREADS']} (set by this script), torch threads "
          f"{env['torch_threads']}, device {device}, torch {torch.__version__}")
    results: dict[str, Any] = {"env": env, "config": repr(cfg), "mlp": {}, "big_layer": {}}

    x = torch.randn(BATCH, SIZES[0], device=device)
    y = torch.randint(0, SIZES[-1], (BATCH,), device=device)

    # (a) plain torch
    model = mlp(lambda i, o: nn.Linear(i, o, bias=False)).to(device)
    results["mlp"]["a_torch"] = median_step_ms(
        training_step(model, torch.optim.SGD(model.parameters(), lr=0.05), x, y), device, args.steps, args.warmup)

    # (b) aihwkit (CPU)
    aihwkit = None if args.skip_aihwkit else load_aihwkit()
    if isinstance(aihwkit, tuple):
        AIHWLinear, AIHWSGD = aihwkit
        rpu = to_aihwkit_rpu_config(cfg)
        model = mlp(lambda i, o: AIHWLinear(i, o, bias=False, rpu_config=rpu))
        opt = AIHWSGD(model.parameters(), lr=0.05)
        opt.regroup_param_groups(model)
        results["mlp"]["b_aihwkit_cpu"] = median_step_ms(training_step(model, opt, x.cpu(), y.cpu()),
                                                         torch.device("cpu"), args.steps, args.warmup)
    else:
        results["mlp"]["b_aihwkit_cpu"] = {"skipped": aihwkit or "--skip-aihwkit"}

    # (c) this engine
    model = mlp(lambda i, o: AnalogLinear(i, o, bias=False, rpu_config=cfg, device=device))
    results["mlp"]["c_crossbar"] = median_step_ms(
        training_step(model, AnalogSGD(model.parameters(), lr=0.05), x, y), device, args.steps, args.warmup)

    a = results["mlp"]["a_torch"]["median_ms"]
    c = results["mlp"]["c_crossbar"]["median_ms"]
    results["mlp"]["ratio_c_over_a"] = c / a
    b_row = results["mlp"]["b_aihwkit_cpu"]
    if "median_ms" in b_row:
        results["mlp"]["ratio_c_over_b"] = c / b_row["median_ms"]

    # 2048 x 2048 layer: 64 tiles of 256 x 256 vs one tile
    xb = torch.randn(BATCH, 2048, device=device)
    for name, tile in (("tiles_256", 256), ("one_tile_2048", 2048)):
        tcfg = cfg.replace(tile_rows=tile, tile_cols=tile)
        layer = AnalogLinear(2048, 2048, bias=False, rpu_config=tcfg, device=device)
        results["big_layer"][f"crossbar_{name}"] = median_step_ms(
            layer_step(layer, AnalogSGD(layer.parameters(), lr=0.05), xb), device, args.big_steps, 2)
        if isinstance(aihwkit, tuple) and not args.skip_big_aihwkit:
            AIHWLinear, AIHWSGD = aihwkit
            a_layer = AIHWLinear(2048, 2048, bias=False, rpu_config=to_aihwkit_rpu_config(tcfg))
            opt = AIHWSGD(a_layer.parameters(), lr=0.05)
            opt.regroup_param_groups(a_layer)
            results["big_layer"][f"aihwkit_cpu_{name}"] = median_step_ms(
                layer_step(a_layer, opt, xb.cpu()), torch.device("cpu"), args.big_steps, 2)

    print("\nMLP 784-256-256-10, batch 64, median step (forward + backward + update):")
    for key, row in results["mlp"].items():
        if isinstance(row, dict):
            print(f"  {key:24s} " + (f"{row['median_ms']:9.2f} ms" if "median_ms" in row else f"skipped ({row['skipped']})"))
    print(f"  ratio c/a (crossbar / torch)   {results['mlp']['ratio_c_over_a']:.1f}x")
    if "ratio_c_over_b" in results["mlp"]:
        print(f"  ratio c/b (crossbar / aihwkit) {results['mlp']['ratio_c_over_b']:.2f}x")
    big = results["big_layer"]
    for who in ("crossbar", "aihwkit_cpu"):
        if f"{who}_tiles_256" in big and f"{who}_one_tile_2048" in big:
            big[f"ratio_{who}_tiles_over_one_tile"] = (big[f"{who}_tiles_256"]["median_ms"]
                                                       / big[f"{who}_one_tile_2048"]["median_ms"])
    print("\n2048x2048 layer, batch 64, median step:")
    for key, row in big.items():
        if isinstance(row, dict):
            print(f"  {key:30s} {row['median_ms']:9.1f} ms")
    for who in ("crossbar", "aihwkit_cpu"):
        if f"ratio_{who}_tiles_over_one_tile" in big:
            ratio = big[f"ratio_{who}_tiles_over_one_tile"]
            print(f"  ratio {who} 64 tiles / one tile  {ratio:.2f}x")

    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
        print(f"\nwrote {args.out}")
    return results


if __name__ == "__main__":
    main()
