"""Smoke test of ``benchmarks/bench_suite.py``: a minimal run on the CPU and the layout of its JSON."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "benchmarks" / "bench_suite.py"
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}


@pytest.mark.slow
def test_minimal_run_writes_rows_ratios_and_targets(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    cmd = [sys.executable, str(SUITE), "--only", "mlp,scaling,grapes,fusion,replicas", "--steps", "2", "--rounds",
           "1", "--warmup", "1", "--skip-aihwkit", "--no-memory", "--sizes", "256,1024", "--batches", "16",
           "--regimes", "small", "--grapes-presets", "Idealized", "--fusion-presets", "Capacitor",
           "--replicas-timeout", "5", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=ENV, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert set(res) == {"machine", "config", "sections", "targets"}
    assert res["config"]["steps"] == 2 and res["config"]["sizes"] == [256, 1024]   # the options, as parsed
    assert not [k for k in res["config"] if k.startswith("_")]    # not the parser's record of the options typed
    assert res["machine"]["torch_threads"] == 1 and res["machine"]["OPENBLAS_NUM_THREADS"] == "1"
    assert res["machine"]["aihwkit"].startswith("unavailable (--skip-aihwkit")
    assert set(res["sections"]) == {"mlp", "scaling", "grapes", "fusion", "replicas"}
    assert res["machine"]["device_model_fusion"] == ENV.get("IMC_GRAPES_COMPILE", "auto")
    assert res["machine"]["malloc"] in ("tuned", "default (not glibc)")     # as the command line sets it

    mlp = {r["impl"]: r for r in res["sections"]["mlp"]["rows"]}
    assert set(mlp) == {"torch", "native", "native-float"}  # no aihwkit rows with --skip-aihwkit
    for r in mlp.values():
        assert r["steps"] == 2 and 0 < r["min_ms"] <= r["median_ms"] <= r["max_ms"]
        assert r["memory"] == {"skipped": "--no-memory"}
    # the ratio is the quotient of the two medians of the same run
    assert abs(mlp["native"]["x_torch"] - mlp["native"]["median_ms"] / mlp["torch"]["median_ms"]) < 1e-9

    scaling = res["sections"]["scaling"]
    shapes = {(r["impl"], r["size"], r["batch"], r["tile"], r["err"]) for r in scaling["rows"]}
    assert shapes == {(impl, size, batch, tile, err) for err in ("small",) for impl, size, batch, tile in (
        ("torch", 256, 64, 256), ("native", 256, 64, 256), ("torch", 1024, 64, 256), ("native", 1024, 64, 256),
        ("native", 1024, 64, 1024), ("torch", 1024, 16, 256), ("native", 1024, 16, 256))}
    for err in ("small",):
        ratio = scaling["summary"][f"native_1024_tiles16_over_one_tile_{err}"]
        t = res["targets"][f"native_16_tiles_over_one_tile_1024_{err}"]
        assert t["value"] == ratio and t["met"] == (ratio <= 1.3)
        # one round: its quartiles are the ratio itself, and the verdict is the plain comparison
        assert t["range"] == [ratio, ratio] and t["verdict"] == ("met" if ratio <= 1.3 else "NOT met")

    grapes = {r["impl"]: r for r in res["sections"]["grapes"]["rows"]}
    assert set(grapes) == {"sgd", "grapes-exact", "grapes-array"}
    # one round: the paired overhead is the ratio of the two medians
    g = res["sections"]["grapes"]["summary"]["overhead_grapes-exact_Idealized_pct"]
    assert abs(g - 100 * (grapes["grapes-exact"]["median_ms"] / grapes["sgd"]["median_ms"] - 1)) < 1e-9
    t = res["targets"]["grapes_exact_Idealized_overhead_pct"]
    assert t["range"] == [g, g] and t["verdict"] == ("met" if g <= 5 else "NOT met")
    for r in grapes.values():  # the Network's hardware counters: GRAPES modulates errors, SGD does not
        assert r["per_step_counts"]["pulses"] > 0
        assert (r["per_step_counts"]["grapes_ops"] > 0) == (r["impl"] != "sgd")
    assert (grapes["grapes-array"]["per_step_counts"]["importance_reads"] > 0
            and grapes["grapes-exact"]["per_step_counts"]["importance_reads"] == 0)
    # GRAPES's own refresh time is measured for the GRAPES rows only, and is a share of their step
    for impl in ("grapes-exact", "grapes-array"):
        own_ms = grapes[impl]["per_step_counts"]["grapes_refresh_ms"]
        assert 0 < own_ms < grapes[impl]["max_ms"]
        share = res["sections"]["grapes"]["summary"][f"own_{impl}_Idealized_pct_of_step"]
        assert abs(share - 100 * own_ms / grapes[impl]["median_ms"]) < 1e-9
    assert "grapes_refresh_ms" not in grapes["sgd"]["per_step_counts"]
    own = res["targets"]["grapes_exact_Idealized_own_compute_pct"]
    assert "range" not in own and own["verdict"] == ("met" if own["value"] <= 5 else "NOT met")
    # fusion: the same step with eager and compiled device models; one round: the ratio of the two medians
    fusion = {r["label"]: r for r in res["sections"]["fusion"]["rows"]}
    assert set(fusion) == {"grapes Capacitor b64 sgd eager", "grapes Capacitor b64 sgd compiled"}
    eager, comp = fusion["grapes Capacitor b64 sgd eager"], fusion["grapes Capacitor b64 sgd compiled"]
    ratio = res["sections"]["fusion"]["summary"]["compiled_over_eager_Capacitor"]
    assert abs(ratio - comp["median_ms"] / eager["median_ms"]) < 1e-9 and comp["x_eager"] == ratio
    # the replicas section either ran the optional script or says why not
    rep = res["sections"]["replicas"]
    assert "skipped" in rep or "returncode" in rep
    # the Markdown tables name the machine and the settings that change the numbers, then every section
    md = subprocess.run([sys.executable, str(SUITE), "--markdown", str(out)], capture_output=True, text=True,
                        timeout=120, env=ENV, cwd=ROOT)
    assert md.returncode == 0, md.stderr[-2000:]
    header = md.stdout.splitlines()[0]
    assert header.startswith("*Machine*: ") and f"capability {res['machine']['cpu_capability']}" in header
    assert f"CPU pulse counts: {res['machine']['cpu_pulse_counts']}" in header
    assert all(f"### {name}" in md.stdout for name in res["sections"]) and "### targets" in md.stdout
    assert "| target | value | rounds p25 to p75 | goal | verdict |" in md.stdout


def _suite_module():
    sys.path.insert(0, str(SUITE.parent))
    try:
        import bench_suite
    finally:
        sys.path.remove(str(SUITE.parent))
    return bench_suite


def test_paired_ratios_and_verdicts_hand_computed() -> None:
    bs = _suite_module()
    # round ratios 1, 2, 3, 4 (in any order): median 2.5; inclusive quartiles 1.75 and 3.25
    pr = bs.paired_ratios([2.0, 8.0, 3.0, 4.0], [2.0, 2.0, 1.0, 2.0])
    assert pr == {"median": 2.5, "p25": 1.75, "p75": 3.25, "rounds": 4}
    assert bs.paired_ratios([3.0], [2.0]) == {"median": 1.5, "p25": 1.5, "p75": 1.5, "rounds": 1}
    with pytest.raises(ValueError, match="no rounds"):
        bs.paired_ratios([], [])
    # a '<=' target: the middle half of the rounds below, across or above the threshold
    assert bs.verdict(2.5, 4.0, True, 1.75, 3.25) == "met"
    assert bs.verdict(2.5, 3.0, True, 1.75, 3.25) == "borderline"
    assert bs.verdict(2.5, 1.5, True, 1.75, 3.25) == "NOT met"
    assert bs.verdict(2.5, 3.25, True, 1.75, 3.25) == "met"            # the threshold itself is allowed
    assert bs.verdict(2.5, 2.0) == "NOT met" and bs.verdict(2.5, 2.5) == "met"   # without quartiles
    # a '>=' target (the CUDA speed-up)
    assert bs.verdict(60.0, 50.0, False) == "met" and bs.verdict(40.0, 50.0, False) == "NOT met"
    assert bs.verdict(55.0, 50.0, False, 45.0, 58.0) == "borderline"
    # the entries of the targets table
    t = bs._target(4.6, 5.0, "<= 5 %", 3.1, 6.2, "note")
    assert t == {"value": 4.6, "target": "<= 5 %", "met": True, "range": [3.1, 6.2], "verdict": "borderline",
                 "note": "note"}
    assert bs._range_text(t) == "3.100 to 6.200" and bs._range_text({"value": 1.0}) == "—"


def test_memory_subprocess_sees_the_weights_and_gradients() -> None:
    """A digital 2048x2048 layer holds a float32 weight and its gradient: >= 2 * 16 MiB of peak RSS growth."""
    spec = json.dumps({"kind": "layer", "impl": "torch", "batch": 16, "size": 2048, "tile": 256, "preset": ""})
    proc = subprocess.run([sys.executable, str(SUITE), "--memory-case", spec], capture_output=True, text=True,
                          timeout=60, env=ENV, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    mem = json.loads(proc.stdout.strip().splitlines()[-1])
    assert mem["method"] == "cpu-rss-subprocess"
    assert 32.0 <= mem["peak_mb"] < 400.0


@pytest.mark.slow
def test_bench_fusion_prints_eager_and_compiled_times() -> None:
    script = ROOT / "benchmarks" / "bench_fusion.py"
    proc = subprocess.run([sys.executable, str(script), "--presets", "Capacitor", "--devices", "65536",
                           "--repeats", "2"], capture_output=True, text=True, timeout=300, env=ENV, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = next(line.split() for line in proc.stdout.splitlines() if line.startswith("Capacitor"))
    eager, compiled, faster, compile_s = map(float, row[1:])
    assert eager > 0 and compiled > 0 and compile_s >= 0
    # the printed ratio is the two medians' (each printed to 0.01 ms, the ratio to 0.1)
    assert (eager - 0.005) / (compiled + 0.005) - 0.051 <= faster <= (eager + 0.005) / (compiled - 0.005) + 0.051


@pytest.mark.slow
def test_bench_malloc_times_both_settings_in_separate_processes(tmp_path: Path) -> None:
    script = ROOT / "benchmarks" / "bench_malloc.py"
    out = tmp_path / "m.json"
    proc = subprocess.run([sys.executable, str(script), "--presets", "Idealized", "--steps", "2", "--repeats", "1",
                           "--out", str(out)], capture_output=True, text=True, timeout=300, env=ENV, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (row,) = json.loads(out.read_text())["rows"]
    assert row["preset"] == "Idealized" and row["default_ms"] > 0 and row["tuned_ms"] > 0
    assert abs(row["default_over_tuned"] - row["default_ms"] / row["tuned_ms"]) < 1e-12
    assert any(line.startswith("Idealized") for line in proc.stdout.splitlines())


def test_bench_device_update_prints_dense_and_sparse_times() -> None:
    script = ROOT / "benchmarks" / "bench_device_update.py"
    proc = subprocess.run([sys.executable, str(script), "--presets", "Capacitor", "--fractions", "0.5",
                           "--devices", "8192", "--repeats", "2"], capture_output=True, text=True, timeout=300,
                          env=ENV, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = next(line.split() for line in proc.stdout.splitlines() if line.startswith("Capacitor"))
    pulsed, per_dev, dense, sparse, ratio = map(float, row[1:])
    assert pulsed == 0.5 and 0.5 < per_dev < 1.5 and dense > 0 and sparse > 0
    assert abs(ratio - dense / sparse) <= 0.01 + 0.006 * (1 + ratio) / min(dense, sparse)


def test_bench_update_paths_times_both_counts_and_reports_the_model_pick(tmp_path: Path) -> None:
    script = ROOT / "benchmarks" / "bench_update_paths.py"
    out = tmp_path / "paths.json"
    proc = subprocess.run([sys.executable, str(script), "--presets", "Idealized", "--cases", "256x256x8r,300x40x4",
                           "--scales", "0.001", "--steps", "4", "--out", str(out)], capture_output=True, text=True,
                          timeout=300, env=ENV, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["case"] for r in rows] == ["256x256x8r", "300x40x4"]
    for r in rows:
        assert r["sparse_ms"] > 0 and r["dense_ms"] > 0 and r["auto"] in ("sparse", "dense")
        assert r["best"] == min(("sparse", "dense"), key=lambda p: r[f"{p}_ms"])
        assert abs(r["auto_loss"] - (r[f"{r['auto']}_ms"] / r[f"{r['best']}_ms"] - 1)) < 1e-12
        assert 0 < r["pairs_per_device"] < 1
    printed = [line.split() for line in proc.stdout.splitlines() if line.startswith("Idealized")]
    assert [p[1] for p in printed] == ["256x256x8r", "300x40x4"]
    assert "model picked the slower algorithm in" in proc.stdout


def test_cuda_check_script_runs_its_device_agnostic_checks_on_the_cpu() -> None:
    """``benchmarks/check_crossbar_cuda.py`` (part of ``run_gpu.sh``) only runs where a GPU is lent; its checks that
    do not need CUDA itself run here on the CPU, so that a change of the engine's API shows up before a GPU session
    (the CPU-vs-device comparisons then compare the CPU with itself, and must agree exactly)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import check_crossbar_cuda as check
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    import torch

    cpu = torch.device("cpu")
    same = check.check_noise_free_cpu_equals_gpu(cpu)
    assert all(v == 0.0 for k, v in same.items() if "diff" in k), same
    assert check.check_determinism(cpu) == "ok" and check.check_float64(cpu) == "ok"
    assert check.check_half_and_saved_states(cpu) == "ok"
    stats = check.check_cpu_gpu_statistics(cpu)
    assert stats["default_cpu_std"] == stats["default_cuda_std"] > 0, stats


def test_mlp_ratio_to_aihwkit_carries_its_round_quartiles() -> None:
    bs = _suite_module()
    common = {"kind": "mlp", "batch": 64, "size": 0, "err": "ce", "tile": 256}
    rows = [{**common, "impl": "native", "median_ms": 11.0, "round_medians_ms": [10.0, 12.0]},
            {**common, "impl": "aihwkit-cpp", "median_ms": 20.0, "round_medians_ms": [20.0, 20.0]}]
    bs._add_ratios(rows)
    native = rows[0]
    assert native["x_aihwkit"] == 11.0 / 20.0                       # the value: the ratio of the two medians
    assert (native["x_aihwkit_p25"], native["x_aihwkit_p75"]) == pytest.approx((0.525, 0.575))   # rounds 0.5, 0.6
    assert "x_aihwkit" not in rows[1]


def test_cpu_targets_compare_the_mlp_and_the_cnn_with_aihwkit() -> None:
    """The 0.5x-aihwkit target is read for both networks of the suite, with the round quartiles' verdict: a CNN at
    0.49 whose middle half of the rounds reaches 0.51 is borderline, an MLP at 0.8 is not met."""
    bs = _suite_module()

    def row(kind: str, x: float, p25: float, p75: float) -> dict:
        return {"kind": kind, "impl": "native", "batch": 64, "x_aihwkit": x, "x_aihwkit_p25": p25,
                "x_aihwkit_p75": p75}
    results = {"sections": {"mlp": {"rows": [row("mlp", 0.8, 0.79, 0.81)]},
                            "cnn": {"rows": [row("cnn", 0.49, 0.488, 0.51)]}}}
    got = bs.targets(results, torch.device("cpu"), None)
    assert got["cpu_native_over_aihwkit_cpp_mlp"] == {"value": 0.8, "target": "<= 0.5", "met": False,
                                                     "range": [0.79, 0.81], "verdict": "NOT met"}
    assert got["cpu_native_over_aihwkit_cpp_cnn"] == {"value": 0.49, "target": "<= 0.5", "met": True,
                                                     "range": [0.488, 0.51], "verdict": "borderline"}
    assert "cpu_native_over_aihwkit_cpp_cnn" not in bs.targets({"sections": {}}, torch.device("cpu"), None)


def test_grapes_summary_splits_the_overhead_by_training_phase() -> None:
    bs = _suite_module()
    sgd = {"impl": "sgd", "preset": "Idealized", "median_ms": 10.0, "min_ms": 9.0, "round_medians_ms": [10.0] * 8,
           "per_step_counts": {"pulses": 100.0}}
    grapes = {"impl": "grapes-exact", "preset": "Idealized", "median_ms": 11.0, "min_ms": 9.0,
              "round_medians_ms": [20.0, 20.0, 11.0, 11.0, 10.0, 10.0, 10.0, 10.0],
              "per_step_counts": {"pulses": 150.0, "grapes_refresh_ms": 0.3}}
    s = bs.grapes_summary([sgd, grapes])
    name = "overhead_grapes-exact_Idealized_pct"
    # round ratios 2, 2, 1.1, 1.1, 1, 1, 1, 1: median (1 + 1.1) / 2; inclusive quartiles 1 and 1.1 + 0.25 * 0.9
    assert s[name] == pytest.approx(5.0) and s[name + "_p25"] == pytest.approx(0.0)
    assert s[name + "_p75"] == pytest.approx(32.5)
    assert s[name + "_first_quarter"] == pytest.approx(100.0) and s[name + "_last_half"] == pytest.approx(0.0)
    assert s[name + "_of_medians"] == pytest.approx(10.0) and s[name + "_of_min"] == pytest.approx(0.0)
    assert s["pulses_grapes-exact_Idealized_over_sgd"] == pytest.approx(1.5)
    assert s["own_grapes-exact_Idealized_pct_of_step"] == pytest.approx(100 * 0.3 / 11.0)
    assert grapes["x_sgd"] == pytest.approx(1.05)
    # fewer than four rounds: no phases
    short = bs.grapes_summary([{**sgd, "round_medians_ms": [10.0] * 3}, {**grapes, "round_medians_ms": [20.0] * 3}])
    assert name + "_first_quarter" not in short and short[name] == pytest.approx(100.0)


def test_cuda_graph_rows_need_cuda_and_give_their_own_cuda_targets() -> None:
    """The ``native-graph`` row (the whole step replayed as a CUDA graph) cannot be built on the CPU — a skipped row,
    with the reason — and on CUDA it gets its own targets next to the eager ones: the ratio to a digital torch step
    at batch >= 256 and the speed-up over aihwkit's CPU step."""
    bs = _suite_module()
    with pytest.raises(RuntimeError, match="CUDA graphs need a CUDA device"):
        bs.build_step(bs.Case("mlp", "native-graph", 4), torch.device("cpu"))
    common = {"kind": "mlp", "size": 0, "err": "ce", "tile": 256}
    rows = [{**common, "impl": "native", "batch": 64, "median_ms": 10.0},
            {**common, "impl": "native-graph", "batch": 64, "median_ms": 1.0},
            {**common, "impl": "native", "batch": 256, "median_ms": 9.0, "x_torch": 9.0},
            {**common, "impl": "native-graph", "batch": 256, "median_ms": 2.0, "x_torch": 2.0},
            {**common, "impl": "aihwkit-cpp", "batch": 64, "median_ms": 20.0}]
    got = bs.targets({"sections": {"mlp": {"rows": rows}}}, torch.device("cuda"), None)
    assert got["cuda_speedup_over_aihwkit_cpu_mlp_b64"]["value"] == pytest.approx(2.0)
    assert got["cuda_graph_speedup_over_aihwkit_cpu_mlp_b64"]["value"] == pytest.approx(20.0)
    assert got["cuda_native_over_torch_mlp_b256"]["met"] is False
    assert got["cuda_graph_native_over_torch_mlp_b256"]["met"] is True


def test_case_and_section_names_suggest_the_close_name(capsys) -> None:
    bs = _suite_module()
    with pytest.raises(ValueError) as err:
        bs.Case("layer", "nativ", 4, size=8)
    assert str(err.value) == (f"Case.impl must be one of {bs.IMPLS} for kind 'layer', got 'nativ'; did you mean "
                              "'native'?")
    with pytest.raises(ValueError) as err:
        bs.Case("layer", "native", 4, size=8, err="smal")
    assert str(err.value) == "Case.err must be one of ('ce', 'small'), got 'smal'; did you mean 'small'?"
    with pytest.raises(ValueError) as err:
        bs.Case("layer", "native", 4, size=8, err="huge")
    assert str(err.value) == "Case.err must be one of ('ce', 'small'), got 'huge'"
    with pytest.raises(SystemExit):
        bs.parse_args(["--only", "mlp,grapse,zzz"])
    assert capsys.readouterr().err.rstrip().endswith(
        "--only: unknown section(s) ['grapse', 'zzz']; valid: mlp,cnn,scaling,grapes,replicas,fusion; did you "
        "mean 'grapes' for 'grapse'?")
