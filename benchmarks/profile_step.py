"""Where the time of one training step goes (a script, not a test): one case of ``bench_suite.py`` profiled with
torch's profiler, every aten operation's own (self) time sorted into random draws, matrix products and the
other tensor operations; what is left of the profiled wall time is spent outside tensor operations (the
engine's Python code, autograd, torch's bindings and dispatch). Printed: the median step time without the
profiler, the shares of the profiled step, the analog phases (MVMs of the forward and backward pass, the
optimizer step with the pulsed updates), the operations that take the most time, and the wall time of each tile
array's forward, backward and update calls per step (timed without the profiler: how much of a layer's cost
does not grow with its size)::

    OPENBLAS_NUM_THREADS=1 python benchmarks/profile_step.py [--kind mlp] [--impl native] [--batch 64]
        [--preset ReRamSB (grapes)] [--size 1024 --tile 256 --err ce (layer)] [--steps 200] [--top 15]
        [--json out.json]

The profiler adds a fixed cost to every operation (about a microsecond on the reference machine), so the
profiled step is slower than the median printed first and the share outside tensor operations includes that
cost: compare shares between engine versions measured the same way, not with the unprofiled step time.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_suite as bs  # noqa: E402
from crossbar import TileArray  # noqa: E402  (bench_suite put the project on the path)
from imc_grapes.runtime import tune_malloc  # noqa: E402
from imc_grapes.suggest import SuggestingArgumentParser  # noqa: E402

RANDOM_OPS = frozenset({"uniform_", "normal", "normal_", "bernoulli", "bernoulli_", "random_", "randperm",
                        "exponential_", "geometric_", "cauchy_", "log_normal_", "multinomial"})
"""aten operations (without the ``aten::`` prefix) that draw random numbers."""
MATMUL_OPS = frozenset({"mm", "bmm", "addmm", "baddbmm", "addbmm", "_int_mm", "mv", "dot", "addmv",
                        "mkldnn_convolution", "_mkldnn_convolution", "convolution_backward", "_convolution",
                        "cudnn_convolution", "_slow_conv2d_forward", "_slow_conv2d_backward"})
"""aten operations that are matrix products (or convolutions)."""
PHASES = {"analog forward MVMs": "AnalogFunction", "analog backward MVMs": "AnalogFunctionBackward",
          "optimizer step (pulsed updates)": "Optimizer.step#"}
"""Profiler ranges of the native engine's phases: printed name -> event name (prefix for the optimizer)."""


def category(op: str) -> str:
    """``"random"``, ``"matmul"`` or ``"other ops"`` for an aten operation name (``aten::`` prefix or not)."""
    name = op.split("::", 1)[-1]
    if name in RANDOM_OPS:
        return "random"
    if name in MATMUL_OPS:
        return "matmul"
    return "other ops"


def median_step_ms(step: Any, steps: int) -> float:
    """Median wall time of ``step()`` in ms over ``steps`` calls (after the caller's warm-up)."""
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def breakdown(events: Any, wall_us: float, steps: int) -> dict[str, Any]:
    """Shares of the profiled wall time ``wall_us`` (µs, ``steps`` steps) from the profiler's averaged events."""
    per_cat: dict[str, float] = defaultdict(float)
    ops: list[dict[str, Any]] = []
    phases: dict[str, float] = defaultdict(float)
    for e in events:
        if e.key.startswith("aten::"):
            per_cat[category(e.key)] += e.self_cpu_time_total
            ops.append({"op": e.key, "category": category(e.key), "calls_per_step": e.count / steps,
                        "us_per_step": e.self_cpu_time_total / steps, "share": e.self_cpu_time_total / wall_us})
        for label, name in PHASES.items():
            if e.key == name or (name.endswith("#") and e.key.startswith(name)):
                phases[label] += e.cpu_time_total
    in_ops = sum(per_cat.values())
    shares = {k: per_cat.get(k, 0.0) / wall_us for k in ("random", "matmul", "other ops")}
    shares["outside tensor ops"] = max(wall_us - in_ops, 0.0) / wall_us
    ops.sort(key=lambda o: -o["us_per_step"])
    return {"profiled_step_us": wall_us / steps, "shares": shares,
            "ops_per_step": sum(o["calls_per_step"] for o in ops),
            "phases_share": {k: v / wall_us for k, v in phases.items()}, "top_ops": ops}


TILE_CALLS = ("forward", "backward", "update")
"""The :class:`crossbar.TileArray` methods :func:`tile_calls` times."""


def tile_calls(step: Any, steps: int) -> list[dict[str, Any]]:
    """Median wall time per step (ms) of each tile array's :data:`TILE_CALLS` over ``steps`` calls of ``step``,
    in the model's module order (``None`` for a method a step does not call, e.g. the first layer's backward);
    also the array's shape, tile grid and number of devices. Each array's bound methods are wrapped by a timer
    for these steps only (no profiler: each call pays the timer's ~1 µs)."""
    arrays = [(name, m) for name, m in step.model.named_modules() if isinstance(m, TileArray)]
    times: dict[tuple[int, str], list[float]] = {(i, c): [] for i in range(len(arrays)) for c in TILE_CALLS}
    per_step: dict[tuple[int, str], float] = {}

    def timed(i: int, call: str, fn: Any) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                per_step[(i, call)] = per_step.get((i, call), 0.0) + time.perf_counter() - t0
        return run

    for i, (_, a) in enumerate(arrays):
        for call in TILE_CALLS:
            setattr(a, call, timed(i, call, getattr(a, call)))        # an instance attribute shadows the method
    try:
        for _ in range(steps):
            per_step.clear()
            step()
            for key in times:
                times[key].append(per_step.get(key, float("nan")))
    finally:
        for _, a in arrays:
            for call in TILE_CALLS:
                a.__dict__.pop(call, None)
    out = []
    for i, (name, a) in enumerate(arrays):
        g = a.grid
        row: dict[str, Any] = {"module": name, "shape": [a.out_features, a.in_features],
                               "tiles": [g.n_row_tiles, g.n_col_tiles], "devices": int(a.weight_tiles.numel())}
        for call in TILE_CALLS:
            called = [t for t in times[(i, call)] if t == t]          # NaN: not called in that step
            row[f"{call}_ms"] = 1e3 * statistics.median(called) if called else None
        out.append(row)
    return out


def build_parser() -> argparse.ArgumentParser:
    """The script's command-line options (checked by :func:`parse_args`; a function of its own so that
    tests/test_docs_commands.py can check the documented command lines without running anything)."""
    ap = SuggestingArgumentParser(description=__doc__.split("::")[0].strip(),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", default="mlp", choices=("mlp", "cnn", "grapes", "layer"),
                    help="the bench_suite case kind (default %(default)s)")
    ap.add_argument("--impl", default=None,
                    help="the case's implementation: native, native-float, torch, ... (grapes: sgd, grapes-exact, "
                         "grapes-array); default native (grapes: grapes-exact)")
    ap.add_argument("--batch", type=int, default=64, help="batch size (default %(default)s)")
    ap.add_argument("--size", type=int, default=1024, help="layer size of a 'layer' case (default %(default)s)")
    ap.add_argument("--tile", type=int, default=256, help="tile size of a 'layer' case (default %(default)s)")
    ap.add_argument("--err", default="ce", choices=("ce", "small"),
                    help="error regime of a 'layer' case (see bench_suite.build_step; default %(default)s)")
    ap.add_argument("--preset", default="ReRamSB", help="device preset of a 'grapes' case (default %(default)s)")
    ap.add_argument("--steps", type=int, default=200, help="steps timed and profiled, after as many warm-up "
                    "steps (default %(default)s)")
    ap.add_argument("--top", type=int, default=15, help="operations listed (default %(default)s)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default %(default)s)")
    ap.add_argument("--json", default=None, help="also write the breakdown to this JSON file")
    return ap


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The options of ``argv`` (``None``: the process's), with the ranges of --steps, --top, --threads checked."""
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.steps < 1 or args.top < 0 or args.threads < 1:
        ap.error("--steps and --threads must be >= 1 and --top >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    tune_malloc()                      # as the imc-grapes command line and bench_suite.py do
    impl = args.impl or ("grapes-exact" if args.kind == "grapes" else "native")
    extra = {"preset": args.preset} if args.kind == "grapes" else {}
    if args.kind == "layer":
        extra = {"size": args.size, "tile": args.tile, "err": args.err}
    try:
        case = bs.Case(args.kind, impl, args.batch, **extra)
    except (TypeError, ValueError) as exc:
        ap.error(str(exc))
    step = bs.build_step(case, torch.device("cpu"))
    for _ in range(args.steps):
        step()
    median_ms = median_step_ms(step, args.steps)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        wall_us = 1e6 * (time.perf_counter() - t0)
    res = breakdown(prof.key_averages(), wall_us, args.steps)
    res.update({"case": case.label, "median_step_ms": median_ms, "tile_calls": tile_calls(step, args.steps),
                "steps": args.steps, "threads": args.threads, "torch": torch.__version__})

    print(f"{res['case']}: median step {median_ms:.3f} ms; profiled step {res['profiled_step_us'] / 1e3:.3f} ms, "
          f"{res['ops_per_step']:.0f} aten operations per step (views included)")
    print("share of the profiled step:")
    for k, v in res["shares"].items():
        print(f"  {k:22s} {100 * v:5.1f} %")
    if res["phases_share"]:
        print("analog phases (inclusive):")
        for k, v in res["phases_share"].items():
            print(f"  {k:32s} {100 * v:5.1f} %")
    if args.top:
        print(f"top {args.top} operations (self time):")
        print(f"  {'operation':28s} {'category':10s} {'calls/step':>10s} {'µs/step':>9s} {'share':>6s}")
        for o in res["top_ops"][:args.top]:
            print(f"  {o['op']:28s} {o['category']:10s} {o['calls_per_step']:10.1f} {o['us_per_step']:9.1f} "
                  f"{100 * o['share']:5.1f}%")
    if res["tile_calls"]:
        print("tile arrays, median ms per step (timed without the profiler):")
        width = max(len(r["module"]) for r in res["tile_calls"]) + 1
        print(f"  {'module':{width}s} {'shape':>11s} {'tiles':>6s} {'devices':>9s} "
              + " ".join(f"{c:>9s}" for c in TILE_CALLS))
        for r in res["tile_calls"]:
            cells = " ".join("        —" if r[f"{c}_ms"] is None else f"{r[f'{c}_ms']:9.3f}" for c in TILE_CALLS)
            print(f"  {r['module'] or '(model)':{width}s} {'×'.join(map(str, r['shape'])):>11s} "
                  f"{'×'.join(map(str, r['tiles'])):>6s} {r['devices']:9d} {cells}")
        inside = sum(r[f"{c}_ms"] or 0.0 for r in res["tile_calls"] for c in TILE_CALLS)
        print(f"  the rest of the step (autograd, loss, optimizer, GRAPES; the median step minus the sum of these "
              f"medians): {median_ms - inside:.3f} ms of {median_ms:.3f} ms")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
