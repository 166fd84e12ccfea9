"""GPU check of CUDA-graph training (``TrainConfig.cuda_graph``, ``imc_grapes/cuda_graphs.py``): a script for a
CUDA machine, not a test.

Each case is trained twice from the same seed on the synthetic MNIST-shaped set — eagerly, then with
``cuda_graph=True`` — and the two runs are compared: every value of every learning-curve row (losses, accuracies,
saturation probes, GRAPES factors, array-vs-exact comparisons, per-step hardware counts and energy) and the run's
cumulative cost counts must be equal, number for number; the wall times give the speed-up. The cases cover the
crossbar and digital backends, BP/DFA, propagated/local GRAPES, array importance (with its comparison samples and the
saturation probes: eager steps between replays), a partial last batch (a second graph), dropout (its generator
registered), Adam (capturable) and two CNNs (16/32 channels, launch-bound; 256/256, bound by GPU arithmetic).
Prints a table and one JSON object; exit status 1 if a case differs.

Usage: ``python benchmarks/check_graph_training_cuda.py [--out graph_training.json] [--train N]``
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from imc_grapes.backends import AnalogSettings  # noqa: E402
from imc_grapes.config import TrainConfig  # noqa: E402
from imc_grapes.data.datasets import make_synthetic  # noqa: E402
from imc_grapes.suggest import SuggestingArgumentParser  # noqa: E402
from imc_grapes.train import RunResult, train  # noqa: E402


def cases() -> dict[str, tuple[TrainConfig, int]]:
    """``name -> (config, graphs it must capture)``."""
    base = TrainConfig(dataset="synthetic", device="cuda", epochs=2, evals_per_epoch=2, lr=0.05, seed=1)
    analog = AnalogSettings(preset="ReRamSB")
    return {
        "crossbar mlp grapes array b64": (base.replace(
            backend="crossbar", optimizer="grapes", analog=AnalogSettings(preset="ReRamSB", importance="array")), 1),
        "crossbar mlp sgd b256": (base.replace(backend="crossbar", optimizer="sgd", batch_size=256, analog=analog), 1),
        # batch 48 leaves a partial last batch (6400 = 133·48 + 16), warmed up for 3 epochs, captured in the 4th
        "crossbar mlp dfa grapes-local partial batch": (base.replace(
            backend="crossbar", rule="dfa", optimizer="grapes-local", drop_last=False, momentum=0.9, batch_size=48,
            epochs=4, analog=AnalogSettings(preset="EcRam", importance="array")), 2),
        # hidden = the CNN's channels: 16/32 (SmallCNN's own, launch-bound: the graph pays) and 256/256 (the MLP's
        # widths, which this case kept until the twenty-eighth session: GPU-bound, 1.0x, a test of the bf16 counts)
        "crossbar cnn 16/32 grapes b64": (base.replace(backend="crossbar", model="cnn", hidden=(16, 32),
                                                       optimizer="grapes", analog=analog), 1),
        "crossbar cnn 256/256 grapes b64": (base.replace(backend="crossbar", model="cnn", hidden=(256, 256),
                                                         optimizer="grapes", analog=analog), 1),
        "digital mlp grapes adam dropout": (base.replace(backend="digital", optimizer="grapes", base_optimizer="adam",
                                                         lr=1e-3, dropout=0.1), 1),
    }


def differences(a: RunResult, b: RunResult) -> dict[str, float]:
    """``key -> max |a - b|`` over the learning-curve rows (wall times left out) and the cumulative cost counts, for
    the keys that differ; a key present in one run only counts as infinitely different."""
    out: dict[str, float] = {}

    def compare(key: str, x: Any, y: Any) -> None:
        if isinstance(x, (int, float)) and isinstance(y, (int, float)):
            d = 0.0 if x == y or (math.isnan(x) and math.isnan(y)) else abs(x - y)
        else:
            d = 0.0 if x == y else math.inf
        if d:
            out[key] = max(out.get(key, 0.0), d)

    if len(a.history) != len(b.history):
        out["history rows"] = math.inf
    for ra, rb in zip(a.history, b.history):
        for key in set(ra) | set(rb):
            if key not in ("time_s", "elapsed_s"):
                compare(key, ra.get(key), rb.get(key))
    ca, cb = a.extra["costs"]["counts"], b.extra["costs"]["counts"]
    for key in set(ca) | set(cb):
        compare(f"costs/{key}", ca.get(key), cb.get(key))
    return out


def build_parser() -> argparse.ArgumentParser:
    """The script's command-line options, parsed by :func:`main` (a function of its own so that
    tests/test_docs_commands.py can check the documented command lines without running anything)."""
    ap = SuggestingArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=None, help="JSON file to write")
    ap.add_argument("--train", type=int, default=6400,
                    help="training samples (default %(default)s: 100 batches of 64; keep it a multiple of 256, not of "
                         "48, for the partial-batch case)")
    return ap


def main() -> int:
    args = build_parser().parse_args()
    if not torch.cuda.is_available():
        print("check_graph_training_cuda: no CUDA device", file=sys.stderr)
        return 1
    data = make_synthetic(n_train=args.train, n_test=1000, device="cuda")
    report: dict[str, Any] = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(0), "cases": {}}
    ok = True
    print(f"{'case':48s} {'same':>5s} {'eager s':>8s} {'graph s':>8s} {'×':>6s}  replayed / eager steps, graphs")
    for name, (cfg, n_graphs) in cases().items():
        try:
            runs = []
            for graph in (False, True):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                res = train(cfg.replace(cuda_graph=graph), dataset=data, progress=False, log=lambda s: None)
                torch.cuda.synchronize()
                runs.append((res, time.perf_counter() - t0))
            (eager, t_eager), (graphed, t_graph) = runs
            diff = differences(eager, graphed)
            info = graphed.extra.get("cuda_graph", {})
            if info.get("graphs") != n_graphs:
                diff["graphs captured"] = math.inf
            same = not diff and eager.status == graphed.status == "completed"
            ok &= same
            report["cases"][name] = {"identical": same, "differences": diff, "eager_s": t_eager, "graph_s": t_graph,
                                     "speedup": t_eager / t_graph, "cuda_graph": info,
                                     "final_test_acc": [eager.final_test_acc, graphed.final_test_acc],
                                     "config": cfg.to_dict()}
            print(f"{name:48s} {str(same):>5s} {t_eager:8.2f} {t_graph:8.2f} {t_eager / t_graph:6.2f}  "
                  f"{info.get('replayed_steps')} / {info.get('eager_steps')}, {info.get('graphs')}")
            if diff:
                print("   differs:", ", ".join(f"{k} {v:.3g}" for k, v in sorted(diff.items())[:8]))
        except Exception:  # noqa: BLE001 - report and go on with the next case
            ok = False
            report["cases"][name] = {"error": traceback.format_exc()}
            print(f"{name:48s} ERROR\n{traceback.format_exc()}")
    report["all_identical"] = ok
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps({"all_identical": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
