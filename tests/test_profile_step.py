"""Smoke test of ``benchmarks/profile_step.py``: a short run on the CPU, its JSON (op shares, tile-array calls)
and the op categories."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "profile_step.py"


def test_short_run_accounts_for_the_whole_profiled_step(tmp_path: Path) -> None:
    out = tmp_path / "p.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--steps", "3", "--top", "4", "--json", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["case"] == "mlp b64 native" and res["steps"] == 3
    # the four shares partition the profiled wall time (the fourth is what the ops leave)
    assert sum(res["shares"].values()) == pytest.approx(1.0, abs=1e-9)
    assert res["shares"]["random"] > 0 and res["shares"]["matmul"] > 0     # noisy MVMs, stochastic pulse trains
    assert set(res["phases_share"]) == {"analog forward MVMs", "analog backward MVMs",
                                        "optimizer step (pulsed updates)"}
    assert all(0 < v < 1 for v in res["phases_share"].values())
    us = [o["us_per_step"] for o in res["top_ops"]]
    assert us == sorted(us, reverse=True) and "top 4 operations" in proc.stdout
    # the MLP's three tile arrays in model order: 784 -> 256 on a 1x4 grid of 256x196 tiles, 256 -> 256, 256 -> 10
    calls = res["tile_calls"]
    assert [(r["shape"], r["tiles"], r["devices"]) for r in calls] == [
        ([256, 784], [1, 4], 256 * 784), ([256, 256], [1, 1], 256 * 256), ([10, 256], [1, 1], 2560)]
    assert calls[0]["backward_ms"] is None                  # no error is propagated below the first layer
    timed = [r[f"{c}_ms"] for r in calls for c in ("forward", "backward", "update") if r[f"{c}_ms"] is not None]
    assert len(timed) == 8 and all(t > 0 for t in timed)
    assert "the rest of the step" in proc.stdout


def test_operation_categories() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from profile_step import category

    assert category("aten::uniform_") == category("aten::normal") == category("normal_") == "random"
    assert category("aten::bmm") == category("aten::_int_mm") == category("aten::mkldnn_convolution") == "matmul"
    assert category("aten::add_") == category("aten::index_add_") == "other ops"


def test_bad_arguments_are_rejected() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--steps", "0"], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert proc.returncode == 2 and "--steps and --threads must be >= 1" in proc.stderr
