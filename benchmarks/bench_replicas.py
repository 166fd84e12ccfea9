"""Points per second of the replica engine (``--replicas R``) against running the same points one by one.

A point is one training run of a small analog MLP (default 784-64-10, crossbar backend, ReRamSB preset, GRAPES,
batch 32, ``--steps`` steps on synthetic data, one evaluation on 100 test samples). For R = 1, 4, 16, 64 the
replica trainer (:func:`imc_grapes.replicas.train_replicas`) trains R seeds in one batched pass; the baselines run
points one by one in the same process: the plain ``train`` path and the replica trainer at E = 1. All ratios come
from the same invocation. A script, not a test::

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_replicas.py [--device cpu|cuda] [--out results.json]

Options: ``--replicas 1,4,16,64``, ``--steps 24``, ``--hidden 64``, ``--batch 32``, ``--one-by-one 4`` (points
timed per baseline), ``--optimizer grapes``, ``--quick`` (R = 1,4,16, 8 steps), ``--eval-samples 1000`` and
``--eval-rounds 5`` (the evaluation timing, 0: none). The default CPU run takes about 1-3 minutes.

Evaluation: the points/s above include one evaluation of 100 samples per point; a sweep evaluates more. So the
script also times one evaluation (up to ``--eval-samples`` test samples; synthetic data has 500) of a plain network
and of the replica MLP at each R (median of ``--eval-rounds`` interleaved rounds, models built beforehand) and
prints the milliseconds per replica against the plain network's. On the CPU the replica MVMs compute bound
management's round 0 alone unless a vector saturates (:func:`crossbar.periphery._round_zero_exact`; measured on
the 2-core box, 784-64-10, 500 samples, 1 thread, shared: 14.1 -> 7.7 ms per replica at R = 1, 29 -> 8.3 at
R = 16, plain 3.4 ms).

Reading it: on a GPU the batched pass keeps the device busy and points/second grow with R. On a CPU the replica
path computes only what can matter while keeping every number position-addressed (pulse trains only for the slots
each sample uses, the device update in cache-sized blocks, see :mod:`crossbar.replicas`), so it is about as fast
per point as plain one-by-one runs from R = 4 on. Measured on the 2-core CPU box (1 torch thread, other jobs
sharing it, so +-10 %)::

                 plain 1-by-1   replica E=1     R=1     R=4    R=16    R=64   (points/s)
    before           6.7            2.1         2.1     2.1     1.6     1.2
    after            5.8            4.6         4.6     6.8     7.9     7.9   (R >= 16: 1.35x plain)
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from imc_grapes.backends.settings import AnalogSettings  # noqa: E402
from imc_grapes.config import TrainConfig  # noqa: E402
from imc_grapes.data import load_dataset  # noqa: E402
from imc_grapes.backends import build_network  # noqa: E402
from imc_grapes.replicas import ReplicaMLP, _evaluate, _stack_splits, train_replicas  # noqa: E402
from imc_grapes.runtime import tune_malloc  # noqa: E402
from imc_grapes.suggest import SuggestingArgumentParser  # noqa: E402
from imc_grapes.train import evaluate, split_for, train  # noqa: E402


def _quiet(_msg: str) -> None:
    pass


def _timed(fn: Callable[[], Any], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def base_config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(dataset="synthetic", backend="crossbar", model="mlp", hidden=(args.hidden,), rule="bp",
                       optimizer=args.optimizer, lr=0.05, batch_size=args.batch, epochs=1,
                       train_subset=args.steps * args.batch, test_subset=100, evals_per_epoch=1, device=args.device,
                       analog=AnalogSettings(preset="ReRamSB", sat_probe_every=0))


def time_evaluations(args: argparse.Namespace, cfg: TrainConfig, data: Any, seeds: list[int],
                     device: torch.device) -> dict[str, Any]:
    """Seconds of one evaluation (``--eval-samples`` test samples, batches of 1000 as the trainers evaluate) of a
    plain network and of the replica MLP at each R, the median of ``--eval-rounds`` interleaved rounds (not
    counting the models' construction)."""
    ecfg = cfg.replace(test_subset=args.eval_samples)
    train_split, test_split, _ = split_for(ecfg, data)
    test_split = test_split.to(device)
    shape, n_classes = tuple(train_split.x.shape[1:]), data.n_classes
    plain = build_network(ecfg.replace(seed=seeds[0]), shape, n_classes, device)
    xt, yt = _stack_splits([test_split])
    models = {r: ReplicaMLP([ecfg.replace(seed=s) for s in seeds[:r]], shape, n_classes, device)
              for r in args.replicas}
    evaluate(plain.model, test_split)                                    # warm-up
    for r, m in models.items():
        _evaluate(m, xt, yt, r)
    plain_s: list[float] = []
    rep_s: dict[int, list[float]] = {r: [] for r in models}
    for _ in range(args.eval_rounds):
        plain_s.append(_timed(lambda: evaluate(plain.model, test_split), device))
        for r, m in models.items():
            rep_s[r].append(_timed(lambda: _evaluate(m, xt, yt, r), device))
    med = {r: sorted(v)[len(v) // 2] for r, v in rep_s.items()}
    plain_med = sorted(plain_s)[len(plain_s) // 2]
    return {"samples": len(test_split), "rounds": args.eval_rounds, "plain_seconds": plain_med,
            "rows": [{"replicas": r, "seconds": med[r], "seconds_per_replica": med[r] / r,
                      "vs_plain": plain_med / (med[r] / r)} for r in models]}


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    cfg = base_config(args)
    data = load_dataset("synthetic", device=device, seed=0)        # one data set for every point (not timed)
    if args.steps * args.batch > len(data.train):
        raise SystemExit(f"--steps x --batch must be <= {len(data.train)} synthetic training samples")
    seeds = list(range(1000, 1000 + max(max(args.replicas), args.one_by_one)))
    # warm-up (allocators, lazy imports, kernels)
    train_replicas([cfg.replace(seed=1, train_subset=2 * args.batch)], dataset=data, log=_quiet)
    train(cfg.replace(seed=1, train_subset=2 * args.batch), dataset=data, progress=False, log=_quiet)

    n = args.one_by_one
    t_plain = _timed(lambda: [train(cfg.replace(seed=s), dataset=data, progress=False, log=_quiet)
                              for s in seeds[:n]], device)
    t_e1 = _timed(lambda: [train_replicas([cfg.replace(seed=s)], dataset=data, log=_quiet) for s in seeds[:n]],
                  device)
    plain_pps, e1_pps = n / t_plain, n / t_e1
    rows = []
    for r in args.replicas:
        secs = _timed(lambda: train_replicas([cfg.replace(seed=s) for s in seeds[:r]], dataset=data, log=_quiet),
                      device)
        pps = r / secs
        rows.append({"replicas": r, "seconds": secs, "points_per_s": pps, "vs_plain_one_by_one": pps / plain_pps,
                     "vs_replica_e1_one_by_one": pps / e1_pps})
    evals = time_evaluations(args, cfg, data, seeds, device) if args.eval_rounds > 0 else None
    return {
        "evaluation": evals,
        "device": str(device), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "malloc": tune_malloc(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "model": f"{28 * 28}-{args.hidden}-10 mlp, crossbar ReRamSB, {args.optimizer}",
        "steps_per_point": args.steps, "batch": args.batch,
        "plain_one_by_one": {"points": n, "seconds": t_plain, "points_per_s": plain_pps},
        "replica_e1_one_by_one": {"points": n, "seconds": t_e1, "points_per_s": e1_pps},
        "rows": rows,
    }


def format_table(res: dict[str, Any]) -> str:
    lines = [f"replica engine vs one-by-one runs: {res['model']}, {res['steps_per_point']} steps of batch "
             f"{res['batch']} per point, device {res['device']}"
             + (f" ({res['gpu']})" if res["gpu"] else f", {res['torch_threads']} torch threads"),
             f"  one by one, plain train:      {res['plain_one_by_one']['points_per_s']:8.2f} points/s",
             f"  one by one, replicas at E=1:  {res['replica_e1_one_by_one']['points_per_s']:8.2f} points/s",
             "",
             f"  {'R':>4}  {'seconds':>8}  {'points/s':>9}  {'x plain':>8}  {'x E=1':>7}"]
    for row in res["rows"]:
        lines.append(f"  {row['replicas']:>4}  {row['seconds']:8.2f}  {row['points_per_s']:9.2f}  "
                     f"{row['vs_plain_one_by_one']:8.2f}  {row['vs_replica_e1_one_by_one']:7.2f}")
    ev = res.get("evaluation")
    if ev:
        lines += ["", f"  evaluation of {ev['samples']} test samples (median of {ev['rounds']} rounds): plain "
                      f"{1e3 * ev['plain_seconds']:.1f} ms",
                  f"  {'R':>4}  {'ms':>8}  {'ms/replica':>10}  {'x plain':>8}"]
        for row in ev["rows"]:
            lines.append(f"  {row['replicas']:>4}  {1e3 * row['seconds']:8.1f}  "
                         f"{1e3 * row['seconds_per_replica']:10.1f}  {row['vs_plain']:8.2f}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The script's command-line options (checked by :func:`parse_args`; a function of its own so that
    tests/test_docs_commands.py can check the documented command lines without running anything)."""
    p = SuggestingArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default %(default)s)")
    p.add_argument("--replicas", default="1,4,16,64", help="comma-separated R values (default %(default)s)")
    p.add_argument("--steps", type=int, default=24, help="training steps per point (default %(default)s)")
    p.add_argument("--batch", type=int, default=32, help="batch size (default %(default)s)")
    p.add_argument("--hidden", type=int, default=64, help="hidden width (default %(default)s)")
    p.add_argument("--optimizer", default="grapes", choices=("sgd", "grapes", "layer-mean"))
    p.add_argument("--one-by-one", type=int, default=4,
                   help="points timed per one-by-one baseline (default %(default)s)")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: R = 1,4,16, 8 steps, 2 points per baseline (seconds, not minutes)")
    p.add_argument("--eval-samples", type=int, default=1000,
                   help="test samples of the timed evaluations (default %(default)s)")
    p.add_argument("--eval-rounds", type=int, default=5,
                   help="interleaved rounds of the evaluation timing, 0: none (default %(default)s)")
    p.add_argument("--out", default=None, help="also write the results as JSON here")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The options of ``argv`` (``None``: the process's): --quick applied, --replicas as a list of ints, the
    ranges checked."""
    p = build_parser()
    args = p.parse_args(argv)
    if args.quick:
        args.replicas, args.steps, args.one_by_one = "1,4,16", 8, 2
    args.replicas = [int(v) for v in str(args.replicas).split(",") if v.strip()]
    if not args.replicas or min(args.replicas) < 1 or args.one_by_one < 1 or args.steps < 1:
        p.error("--replicas, --one-by-one and --steps must be >= 1")
    if args.eval_samples < 1 or args.eval_rounds < 0:
        p.error("--eval-samples must be >= 1 and --eval-rounds >= 0")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    tune_malloc()
    res = run(args)
    print(format_table(res))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2))
        print(f"\nwrote {args.out}")
    return res


if __name__ == "__main__":
    main()
