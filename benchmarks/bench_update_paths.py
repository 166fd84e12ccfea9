"""Sparse vs dense CPU pulse counting in whole tile updates: the measurement behind the cost model of
``crossbar._sparse_update`` (``_NS_*``; a script).

For each device preset, layer shape, batch and error scale, one :class:`crossbar.TileArray` (256x256 tiles,
weights ``N(0, 0.1²)``) is updated with 8 cycled random batches (inputs ``N(0, 1)``, ReLU'd for the ``r`` cases;
errors ``N(0, 1) * scale / batch``, learning rate 0.05), once with the coincidences always counted *sparsely*
(pair by pair, then only the devices with pulses updated) and once always *densely* (int8 or float matmuls as
``crossbar._sparse_update.int8_counts_mode`` chose, then the device model's own choice). Printed per case: the
expected coincidences per device, the median ms of each algorithm, which one the cost model picks (``auto``) and
which was faster; at the end how often the model picked the slower one and the time that cost::

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_update_paths.py [--presets ConstantStep,ReRamSB] [--out F.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import crossbar._sparse_update as sparse_update  # noqa: E402
from crossbar import CrossbarConfig, TileArray  # noqa: E402
from devices import ConstantStepDevice, PulsedDevice, get_preset  # noqa: E402
from imc_grapes.runtime import tune_malloc  # noqa: E402
from imc_grapes.suggest import SuggestingArgumentParser  # noqa: E402

CASES = "784x256x64,784x256x64r,256x256x64r,1024x1024x64,256x256x16r,784x256x256r,256x256x8r,512x512x32r"
LR = 0.05


def _device(name: str) -> PulsedDevice:
    return ConstantStepDevice() if name == "ConstantStep" else get_preset(name)


def _case(spec: str) -> tuple[int, int, int, bool]:
    """``"784x256x64r"`` -> ``(n_in, n_out, batch, relu)``."""
    relu = spec.endswith("r")
    n_in, n_out, batch = (int(v) for v in spec.rstrip("r").split("x"))
    return n_in, n_out, batch, relu


def time_case(preset: str, spec: str, scale: float, steps: int) -> dict[str, Any]:
    """Both algorithms on one case (see the module docstring); returns its row."""
    n_in, n_out, batch, relu = _case(spec)
    device = _device(preset)
    cfg = CrossbarConfig(device=device, tile_rows=256, tile_cols=256)
    tile = TileArray(n_out, n_in, cfg, seed=1)
    gen = torch.Generator().manual_seed(0)
    tile.program(torch.randn(n_out, n_in, generator=gen) * 0.1)
    xs = torch.randn(8, batch, n_in, generator=gen)
    xs = xs.relu() if relu else xs
    ds = torch.randn(8, batch, n_out, generator=gen) * scale / batch
    plan = sparse_update._plan_trains(tile.grid.split_inputs(xs[0]), tile.grid.split_outputs(ds[0]), LR,
                                      device.granularity, cfg.update, tile.generator, True)
    pairs = sparse_update._expected_pairs(plan)
    model = sparse_update._sparse_is_cheaper
    subset = device.SPARSE_PULSES_PER_DEVICE
    auto = "sparse" if model(plan, 0.0, subset) and model(plan, pairs, subset) else "dense"
    ms = {}
    try:
        for path in ("sparse", "dense"):
            sparse_update._sparse_is_cheaper = lambda *_a, _p=path: _p == "sparse"   # type: ignore[misc]
            t = copy.deepcopy(tile)
            times = []
            for i in range(steps):
                start = time.perf_counter()
                t.update(xs[i % 8], ds[i % 8], LR)
                times.append(time.perf_counter() - start)
            ms[path] = 1e3 * statistics.median(times[min(5, steps // 4):])
    finally:
        sparse_update._sparse_is_cheaper = model
    best = min(ms, key=ms.__getitem__)
    return {"preset": preset, "case": spec, "scale": scale, "devices": n_in * n_out,
            "pairs_per_device": pairs / (n_in * n_out), "sparse_ms": ms["sparse"], "dense_ms": ms["dense"],
            "auto": auto, "best": best, "auto_loss": ms[auto] / ms[best] - 1.0}


def build_parser() -> argparse.ArgumentParser:
    """The script's command-line options, parsed by :func:`main` (a function of its own so that
    tests/test_docs_commands.py can check the documented command lines without running anything)."""
    ap = SuggestingArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", default="ConstantStep,ReRamSB,EcRam",
                    help="comma-separated device presets (ConstantStep: the default ConstantStepDevice)")
    ap.add_argument("--cases", default=CASES, help="comma-separated IN x OUT x BATCH, 'r' = ReLU'd inputs")
    ap.add_argument("--scales", default="0.0003,0.001,0.003,0.01,0.03", help="error scales (x N(0,1)/batch)")
    ap.add_argument("--steps", type=int, default=40, help="timed updates per algorithm and case")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", help="write the rows as JSON here")
    return ap


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"bench_update_paths: {args.threads} thread(s), malloc {tune_malloc()}, dense counts by "
          f"{sparse_update.CPU_PULSE_COUNTS}")
    print(f"{'preset':12s} {'case':>13s} {'scale':>7s} {'pairs/dev':>9s} {'sparse ms':>9s} {'dense ms':>9s} "
          f"{'auto':>6s} {'best':>6s}")
    rows = []
    for preset in args.presets.split(","):
        for spec in args.cases.split(","):
            for scale in (float(s) for s in args.scales.split(",")):
                r = time_case(preset, spec, scale, args.steps)
                rows.append(r)
                print(f"{preset:12s} {spec:>13s} {scale:7.4f} {r['pairs_per_device']:9.3f} {r['sparse_ms']:9.3f} "
                      f"{r['dense_ms']:9.3f} {r['auto']:>6s} {r['best']:>6s}", flush=True)
    wrong = [r for r in rows if r["auto"] != r["best"]]
    lost = sum(r[f"{r['auto']}_ms"] - r[f"{r['best']}_ms"] for r in rows)
    print(f"model picked the slower algorithm in {len(wrong)}/{len(rows)} cases; time lost {lost:.2f} ms "
          f"(mean {100 * statistics.mean(r['auto_loss'] for r in rows):.2f} %, worst "
          f"{100 * max(r['auto_loss'] for r in rows):.1f} %)")
    if args.out:
        Path(args.out).write_text(json.dumps({"argv": sys.argv[1:] if argv is None else argv, "rows": rows},
                                             indent=1))
    return rows


if __name__ == "__main__":
    main()
