"""Running sweeps: results per point, failures recorded, resume after kill -9 or half-finished points, the
local and Ray executors agreeing, --status and --report."""
from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from imc_grapes.io import read_json
from imc_grapes.sweep import (LocalExecutor, SpecError, SweepLockedError, SweepStore, load_spec, run_sweep,
                              sweep_status)
from imc_grapes.sweep.cli import main as sweep_main
from imc_grapes.sweep.spec import SweepSpec
from imc_grapes.sweep.report import format_summary, summary_rows, write_report
from imc_grapes.sweep.store import metrics_of

REPO = Path(__file__).resolve().parents[2]
TINY = """
[base]
dataset = "synthetic"
hidden = [8]
train_subset = 100
test_subset = 60
batch_size = 25
"""


def write_spec(folder: Path, body: str, name: str = "s", base: str = TINY, sweep: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(f'[sweep]\nout = "{folder / "out"}"\n{sweep}\n{base}\n{body}')
    return path


class Counting:
    """Wraps an executor and records the ids of the tasks it was given."""

    def __init__(self, inner):
        self.inner, self.ids = inner, []
        self.name, self.ships_files = inner.name, inner.ships_files

    def run(self, tasks, on_start, on_result):
        self.ids += [t["id"] for t in tasks]
        self.inner.run(tasks, on_start, on_result)


def quiet(_msg: str) -> None:
    pass


def point_files(out: Path) -> dict[str, bytes]:
    return {p.parent.name: p.read_bytes() for p in sorted((out / "points").glob("*/point.json"))}


MAIN_AXES = """
[axes]
lr = [1e12, 0.1]            # the first value diverges (NaN/Inf loss): recorded as failed, the sweep goes on
hidden = [[8], [12]]
optimizer = ["sgd", "grapes"]
seed = [0, 1]
"""


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, SweepSpec]:
    """A finished 16-point sweep (8 diverging), run in this process."""
    folder = tmp_path_factory.mktemp("main")
    spec_path = write_spec(folder, MAIN_AXES)
    spec = load_spec(spec_path)
    status = run_sweep(spec, executor=LocalExecutor(jobs=1, threads=1), log=quiet)
    assert status.complete
    return spec_path, spec


def test_every_point_gets_one_result_and_failures_are_recorded(finished):
    spec_path, spec = finished
    out = spec.out_dir
    status = sweep_status(spec)
    assert (status.count("done"), status.count("failed"), status.count("pending", "half-finished")) == (8, 8, 0)
    points = spec.points()
    assert set(point_files(out)) == {p.id for p in points}
    for p in points:
        res = read_json(out / "points" / p.id / "point.json")
        assert res["params"] == {"lr": p.config.lr, "hidden": list(p.config.hidden), "optimizer": p.config.optimizer,
                                 "seed": p.config.seed}
        if p.config.lr == 1e12:
            assert res["status"] == "failed" and res["reason"].startswith("diverged: loss became")
            assert res["failure"] == read_json(out / "points" / p.id / "run.json")["failure"] == "diverged"
            assert res["metrics"] == {}
            continue
        assert res["status"] == "done" and res["reason"] == "" and res["failure"] == ""
        # the training run's own files (written by train()) agree with the recorded result
        run = read_json(out / "points" / p.id / "run" / "results.json")
        assert run["status"] == "completed"
        assert res["metrics"]["final_test_acc"] == run["history"][-1]["test_acc"]
        assert 0.0 <= res["metrics"]["final_test_acc"] <= 1.0
        with open(out / "points" / p.id / "run" / "metrics.csv") as f:
            assert len(list(csv.DictReader(f))) == len(res["history"]) == 1
        assert not {"time_s", "elapsed_s"} & set(res["history"][0])  # timings live in run.json, not the result
        assert read_json(out / "points" / p.id / "run.json")["wall_time_s"] > 0


def test_rerun_skips_finished_points_and_retry_diverged_redoes_only_diverged(finished, tmp_path):
    """The 8 failed points diverged (lr = 1e12): --retry-failed (crashed points) leaves them, --retry-diverged
    redoes them, and they diverge again byte for byte (deterministic for their seed)."""
    spec_path, spec = finished
    out = tmp_path / "copy"
    shutil.copytree(spec.out_dir, out)
    before = point_files(out)
    ex = Counting(LocalExecutor(jobs=1, threads=1))
    run_sweep(spec, out, ex, log=quiet)
    assert ex.ids == [] and point_files(out) == before
    ex = Counting(LocalExecutor(jobs=1, threads=1))
    run_sweep(spec, out, ex, retry_failed=True, log=quiet)
    assert ex.ids == [] and point_files(out) == before  # none crashed: nothing to redo
    ex = Counting(LocalExecutor(jobs=1, threads=1))
    run_sweep(spec, out, ex, retry_diverged=True, log=quiet)
    failed = {p.id for p in spec.points() if p.config.lr == 1e12}
    assert set(ex.ids) == failed and len(ex.ids) == 8
    assert point_files(out) == before  # deterministic: the same failures, byte for byte


def test_half_finished_and_corrupt_points_are_redone(finished, tmp_path):
    spec_path, spec = finished
    out = tmp_path / "copy"
    shutil.copytree(spec.out_dir, out)
    before = point_files(out)
    done = [p for p in spec.points() if p.config.lr != 1e12]
    half, corrupt = done[0].id, done[5].id
    (out / "points" / half / "point.json").unlink()  # killed after training, before the result was written
    (out / "points" / half / "run" / "metrics.csv").write_text("epoch,test_acc\n0.5,0.1")
    (out / "points" / corrupt / "point.json").write_text('{"status": "do')  # not JSON any more
    status = sweep_status(spec, out)
    assert status.count("half-finished") == 2 and "2 half-finished, will be redone" in status.summary_line()
    ex = Counting(LocalExecutor(jobs=1, threads=1))
    status = run_sweep(spec, out, ex, log=quiet)
    assert sorted(ex.ids) == sorted([half, corrupt]) and status.complete
    assert point_files(out) == before  # redone from scratch: the same result as the first time
    assert "0.5,0.1" not in (out / "points" / half / "run" / "metrics.csv").read_text()


def test_status_while_resuming_counts_as_running_only_the_points_handed_out(finished, tmp_path):
    """Resuming a killed sweep with two half-finished points and one worker: while the first is redone, --status said
    "2 running now" (the second's leftover folder looked like a running point). The runner now discards the leftovers
    it will redo before it starts: at each start exactly the handed-out point is running, the rest pending."""
    spec_path, spec = finished
    out = tmp_path / "copy"
    shutil.copytree(spec.out_dir, out)
    first, second = [p for p in spec.points() if p.config.lr != 1e12][:2]
    for p in (first, second):
        (out / "points" / p.id / "point.json").unlink()            # killed: two folders without a result
    assert sweep_status(spec, out).summary_line().endswith("2 pending (2 half-finished, will be redone)")
    seen: list[tuple[str, str, list[str]]] = []

    class Watching(LocalExecutor):
        def run(self, tasks, on_start, on_result):
            def start(task):
                on_start(task)
                st = sweep_status(spec, out)
                seen.append((task["id"], st.summary_line().split(": ", 1)[1],
                             [ps.point.id for ps in st.points if ps.state == "half-finished"]))
            super().run(tasks, start, on_result)

    run_sweep(spec, out, Watching(jobs=1, threads=1), log=quiet)
    assert seen == [(first.id, "16 points — 6 done, 8 failed, 2 pending (1 running now)", [first.id]),
                    (second.id, "16 points — 7 done, 8 failed, 1 pending (1 running now)", [second.id])]
    assert sweep_status(spec, out).count("done") == 8


@pytest.mark.parametrize("damaged", ['{"status": "done", "metrics": "x"}', '{"status": "done", "history": 5}',
                                     '{"status": "failed", "history": [1, 2]}'])
def test_a_result_of_the_wrong_shape_is_redone_and_status_and_report_still_work(finished, tmp_path, capsys, damaged):
    """Valid JSON whose metrics / history are not an object / a list of rows ended --status and --report in a
    traceback ('dictionary update sequence element #0 ...'); it is now unreadable like a truncated one."""
    spec_path, spec = finished
    out = tmp_path / "copy"
    shutil.copytree(spec.out_dir, out)
    pid = next(p.id for p in spec.points() if p.config.lr != 1e12)
    (out / "points" / pid / "point.json").write_text(damaged)
    assert SweepStore(out).read_result(pid) is None and SweepStore(out).state(pid) == "half-finished"
    assert sweep_main([str(spec_path), "--status", "--out", str(out)]) == 0
    assert "16 points — 7 done, 8 failed, 1 pending (1 half-finished, will be redone)" in capsys.readouterr().out
    assert sweep_main([str(spec_path), "--report", "--out", str(out)]) == 0


def _without_metrics(res):
    del res["metrics"]


def _set_metric(key, value):
    return lambda res: res["metrics"].__setitem__(key, value)


@pytest.mark.parametrize("damage", [_without_metrics, lambda res: res.__setitem__("metrics", {}),
                                    lambda res: res["metrics"].pop("final_test_acc"),
                                    _set_metric("final_test_acc", "0.9"), _set_metric("final_test_acc", None),
                                    _set_metric("final_test_acc", [0.9]), _set_metric("final_test_acc", True),
                                    _set_metric("best_test_acc", {"v": 0.9}), _set_metric("final_test_acc", "NaN")],
                         ids=["no-metrics", "empty", "no-final-acc", "acc-text", "acc-null", "acc-list", "acc-bool",
                              "best-object", "acc-NaN-spelled-otherwise"])
def test_a_done_point_whose_metrics_are_missing_or_not_numbers_is_redone(finished, tmp_path, damage):
    """A done ``point.json`` without its metrics, or with a metric that is no number (edited by hand, or written
    partly by a tool), counted as done and was then left out of every mean as "no finite accuracy"; it is now
    half-finished like a truncated file, and resuming redoes it (the same result as the first time)."""
    spec_path, spec = finished
    out = tmp_path / "copy"
    shutil.copytree(spec.out_dir, out)
    before = point_files(out)
    pid = next(p.id for p in spec.points() if p.config.lr != 1e12)
    res = json.loads(before[pid])
    assert isinstance(res["metrics"]["final_test_acc"], float)      # the untouched file: a done point
    damage(res)
    (out / "points" / pid / "point.json").write_text(json.dumps(res))
    assert SweepStore(out).read_result(pid) is None and SweepStore(out).state(pid) == "half-finished"
    assert sweep_status(spec, out).summary_line().endswith("1 pending (1 half-finished, will be redone)")
    ex = Counting(LocalExecutor(jobs=1, threads=1))
    status = run_sweep(spec, out, ex, log=quiet)
    assert ex.ids == [pid] and status.complete and status.count("done") == 8
    assert point_files(out) == before


@pytest.mark.parametrize("acc", [math.nan, math.inf])
def test_a_done_point_whose_run_ended_without_a_finite_accuracy_stays_done(tmp_path, acc):
    """The store writes a done point's NaN / Inf accuracy as the string ``"nan"`` / ``"inf"`` (strict JSON has no
    such number): that is a metric, not a damaged file; resuming leaves the point done and does not run it."""
    spec = load_spec(write_spec(tmp_path, "[axes]\nlr = [0.1]\n"))
    p, = spec.points()
    store = SweepStore(spec.out_dir)
    store.record(p, {"status": "done", "history": [{"epoch": 1.0, "test_acc": acc, "train_loss": 0.5}]})
    text = (spec.out_dir / "points" / p.id / "point.json").read_text()
    assert f'"final_test_acc": "{acc}"' in text
    assert store.state(p.id) == "done"
    ex = Counting(LocalExecutor(jobs=1, threads=1))
    status = run_sweep(spec, executor=ex, log=quiet)
    assert ex.ids == [] and [ps.state for ps in status.points] == ["done"]
    assert (spec.out_dir / "points" / p.id / "point.json").read_text() == text


def test_status_command_lists_done_failed_pending(finished, tmp_path, capsys):
    spec_path, spec = finished
    out = tmp_path / "copy"
    shutil.copytree(spec.out_dir, out)
    pending = spec.points()[-1]
    shutil.rmtree(out / "points" / pending.id)
    assert sweep_main([str(spec_path), "--status", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "16 points — 7 done, 8 failed, 1 pending" in text
    failed_lines = [line for line in text.splitlines() if "diverged: loss became" in line]
    assert len(failed_lines) == 8 and all("lr=1e+12" in line for line in failed_lines)
    assert f"pending:\n  {pending.id}  {pending.label()}" in text
    assert sweep_main([str(spec_path), "--status", "--out", str(out), "--verbose"]) == 0
    assert "test acc" in capsys.readouterr().out  # done points with their accuracy


def test_report_writes_summary_and_png_plots(finished, capsys):
    spec_path, spec = finished
    out = spec.out_dir
    assert sweep_main([str(spec_path), "--report"]) == 0
    with open(out / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 16
    assert {"point", "status", "reason", "lr", "hidden", "optimizer", "seed", "final_test_acc", "wall_time_s",
            "dataset", "analog.adc_bits", "batch_size"} <= set(rows[0])
    for row in rows:
        res = read_json(out / "points" / row["point"] / "point.json")
        assert row["status"] == res["status"]
        if res["status"] == "done":
            assert float(row["final_test_acc"]) == res["metrics"]["final_test_acc"]
        else:
            assert row["final_test_acc"] == "" and row["reason"].startswith("diverged")
    plots = {p.name for p in (out / "plots").glob("*.png")}
    # GRAPES records its mean factor: a diagnostics plot against the numeric axis (hidden is a list: none)
    assert plots == {"acc_vs_lr.png", "acc_vs_hidden.png", "heatmap_lr__hidden.png", "diagnostics_vs_lr.png"}
    for name in plots:
        assert (out / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = capsys.readouterr().out
    assert "summary.csv" in text and "test acc (%)" in text


def test_analog_points_with_digital_reference_and_report(tmp_path):
    spec_path = write_spec(tmp_path, '[axes]\ndevice.dw_min = [0.002, 0.02]\noptimizer = ["sgd", "grapes"]\n',
                           base=TINY + 'backend = "crossbar"\n[base.analog]\npreset = "Idealized"\ntile_size = 16\n',
                           sweep="reference = true")
    spec = load_spec(spec_path)
    status = run_sweep(spec, executor=LocalExecutor(jobs=1, threads=1), log=quiet)
    assert status.complete and status.count("done") == 6, status.format()  # 4 analog + 2 digital twins
    for ps in status.points:
        cfg = json.loads((spec.out_dir / "points" / ps.point.id / "config.json").read_text())["config"]
        if ps.point.config.backend == "crossbar":
            assert cfg["analog"]["device_overrides"]["dw_min"] == ps.point.params["device.dw_min"]
        else:
            assert cfg["analog"]["device_overrides"] == {} and ps.point.reference
    assert sweep_main([str(spec_path), "--report"]) == 0
    assert (spec.out_dir / "plots" / "acc_vs_device.dw_min.png").read_bytes()[:4] == b"\x89PNG"
    # the final per-layer diagnostics, where a point has them: GRAPES's mean factor (1..2 with the BP clip) and the
    # pulsed updates' realised/intended weight change on the analog points; empty for the others
    with open(spec.out_dir / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert {"final_M_mean/layers.0", "final_sat/layers.0", "final_sat/layers.1"} <= set(rows[0])
    for row in rows:
        point = read_json(spec.out_dir / "points" / row["point"] / "point.json")
        history_last = read_json(spec.out_dir / "points" / row["point"] / "run" / "results.json")["history"][-1]
        assert (row["final_M_mean/layers.0"] != "") == (row["optimizer"] == "grapes")
        assert (row["final_sat/layers.0"] != "") == (row["backend"] == "crossbar")
        for key in ("M_mean/layers.0", "sat/layers.0"):
            if key in history_last:
                assert float(row[f"final_{key}"]) == history_last[key] == point["metrics"][f"final_{key}"]
        if row["optimizer"] == "grapes":
            assert 1.0 <= float(row["final_M_mean/layers.0"]) <= 2.0
    assert (spec.out_dir / "plots" / "diagnostics_vs_device.dw_min.png").read_bytes()[:4] == b"\x89PNG"


def test_tail_evals_report_the_mean_of_the_last_evaluations_without_rerunning(tmp_path):
    """``[sweep] tail_evals = K``: the report's accuracy of a point is the mean of its last K evaluations
    (``tail_test_acc`` in summary.csv, the plots and the text summary); the points keep their ids, so setting it on a
    finished sweep re-reports it without running anything."""
    body = '[axes]\nlr = [0.05, 0.2]\nseed = [0, 1]\n'
    base = TINY + "epochs = 2\nevals_per_epoch = 2\n"
    plain = load_spec(write_spec(tmp_path, body, base=base))
    status = run_sweep(plain, executor=LocalExecutor(jobs=1, threads=1), log=quiet)
    assert status.complete and status.count("done") == 4
    tailed = load_spec(write_spec(tmp_path, body, base=base, sweep="tail_evals = 3"))
    assert tailed.tail_evals == 3 and [p.id for p in tailed.points()] == [p.id for p in plain.points()]
    counting = Counting(LocalExecutor(jobs=1, threads=1))
    assert run_sweep(tailed, executor=counting, log=quiet).complete and counting.ids == []     # nothing re-run
    rows = summary_rows(tailed)
    for row in rows:
        history = read_json(tailed.out_dir / "points" / row["point"] / "point.json")["history"]
        assert len(history) == 4
        assert row["tail_test_acc"] == pytest.approx(sum(h["test_acc"] for h in history[-3:]) / 3)
        assert row["final_test_acc"] == history[-1]["test_acc"]
    assert "tail_test_acc" not in summary_rows(plain)[0]
    assert "test acc, last 3 evals (%)" in format_summary(tailed)
    write_report(tailed)
    assert (tailed.out_dir / "plots" / "acc_vs_lr.png").read_bytes()[:4] == b"\x89PNG"
    with open(tailed.out_dir / "summary.csv") as f:
        assert "tail_test_acc" in next(csv.reader(f))
    with pytest.raises(SpecError, match=r"\[sweep\] tail_evals must be an integer ≥ 1"):
        load_spec(write_spec(tmp_path / "bad", body, base=base, sweep="tail_evals = 0"))


def test_an_epochs_axis_keeps_its_values_in_summary_csv(tmp_path):
    """``epochs`` is a TrainConfig field and a metric column of summary.csv: swept, the column must hold each point's
    swept value — also for failed and pending points, which have no metrics."""
    run_sweep(load_spec(write_spec(tmp_path, "[axes]\nepochs = [1, 2]\nlr = [1e12, 0.1]\n")),
              executor=LocalExecutor(jobs=1, threads=1), log=quiet)
    spec = load_spec(write_spec(tmp_path, "[axes]\nepochs = [1, 2, 3]\nlr = [1e12, 0.1]\n"))   # epochs 3: pending
    write_report(spec)
    epochs = {p.id: p.config.epochs for p in spec.points()}
    with open(spec.out_dir / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["status"] for r in rows) == ["done", "done", "failed", "failed", "pending", "pending"]
    for r in rows:
        assert r["epochs"] == str(epochs[r["point"]]), r
        # how far each point got: all its epochs when done, nothing for the lr = 1e12 points that diverged in their
        # first batch (before any evaluation) and for the pending ones
        assert r["epochs_run"] == (f"{float(r['epochs'])}" if r["status"] == "done" else ""), r


def test_the_printed_table_shows_a_swept_backend_once(tmp_path):
    """With ``backend`` a sweep axis the table has one backend column (the axis, where its digital twins say
    ``digital``), not the axis and the fixed backend column side by side; without the axis the fixed column stays."""
    spec = load_spec(write_spec(tmp_path, '[axes]\nbackend = ["crossbar", "aihwkit"]\n'
                                          'device.dw_min = [0.002, 0.02]\nseed = [0, 1]\n', sweep="reference = true"))
    store = SweepStore(spec.out_dir)
    acc = {"crossbar": 0.6, "aihwkit": 0.2, "digital": 0.7}           # + 0.2 for seed 1
    for p in spec.points():
        store.record(p, {"status": "done",
                         "history": [{"epoch": 1, "test_acc": acc[p.config.backend] + 0.2 * p.config.seed}]})
    table = [re.split(r" {2,}", line) for line in format_summary(spec).splitlines()]
    std = f"{100 * (0.02 ** 0.5):.2f}"                                    # two runs 20 points apart: 14.14
    assert table[0] == ["backend", "device.dw_min", "runs", "failed", "test acc (%)"]
    assert table[2:] == [
        ["crossbar", "0.002", "2", "0", f"70.00 ± {std}"], ["crossbar", "0.02", "2", "0", f"70.00 ± {std}"],
        ["aihwkit", "0.002", "2", "0", f"30.00 ± {std}"], ["aihwkit", "0.02", "2", "0", f"30.00 ± {std}"],
        ["digital", "n/a", "2", "0", f"80.00 ± {std}"],
        [""], ["mean ± std over the seeds of a cell: sample std (n − 1); one run: the mean alone"]]
    plain = load_spec(write_spec(tmp_path / "plain", "[axes]\nseed = [0]\n", base=TINY + 'backend = "crossbar"\n'))
    assert format_summary(plain).splitlines()[0].split() == ["backend", "runs", "failed", "pending", "test", "acc",
                                                             "(%)"]   # nothing has run yet


def test_final_metrics_take_each_diagnostics_latest_recorded_value():
    """The accuracies come from the last row; a diagnostic from the latest row that recorded it (``M_corr``/``M_err``
    are sampled on every 10th importance read, so a run's last rows can lack them)."""
    history = [
        {"epoch": 0.5, "test_acc": 0.5, "test_loss": 1.5, "M_mean/l0": 1.4, "M_corr/l0": 0.90, "M_err/l0": 0.08},
        {"epoch": 1.0, "test_acc": 0.7, "test_loss": 1.1, "M_mean/l0": 1.5, "M_corr/l0": 0.95, "M_err/l0": 0.05},
        {"epoch": 1.5, "test_acc": 0.6, "test_loss": 1.2, "M_mean/l0": 1.6, "sat/l0": 0.9},
    ]
    assert metrics_of(history) == {
        "final_test_acc": 0.6, "final_test_loss": 1.2, "best_test_acc": 0.7, "epochs_run": 1.5,
        "final_M_mean/l0": 1.6, "final_M_corr/l0": 0.95, "final_M_err/l0": 0.05, "final_sat/l0": 0.9}
    assert metrics_of([]) == {}


@pytest.mark.parametrize("accs, best", [([math.nan, 0.4, 0.7], 0.7), ([0.4, math.nan, 0.7], 0.7),
                                        ([0.7, 0.4, math.nan], 0.7), ([math.nan, math.nan], None)])
def test_best_test_acc_leaves_a_nan_evaluation_out_wherever_it_stands(accs, best):
    """``max`` returns a NaN that stands first and skips it elsewhere: the best is the highest finite accuracy
    (hand-picked), and a history without one has no ``best_test_acc`` (as ``results.json``'s is None)."""
    metrics = metrics_of([{"epoch": k + 1.0, "test_acc": a} for k, a in enumerate(accs)])
    assert metrics.get("best_test_acc") == best


def _session_pids(sid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":  # field 6 of stat: session id
                pids.append(int(entry.name))
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and PR_SET_PDEATHSIG")
def _sweep_with_a_point_done(tmp_path):
    """A sweep of 8 points heavy enough to be caught midway, started as a subprocess (2 workers, its own session,
    this checkout's code whichever copy of the package the interpreter has installed); returns
    ``(spec path, out folder, process)`` once its first point is finished (or after 60 s)."""
    base = TINY.replace("train_subset = 100", "train_subset = 600").replace("hidden = [8]", "hidden = [32]") + \
        "epochs = 2\n"
    spec_path = write_spec(tmp_path, "[axes]\nlr = [0.05, 0.1]\nseed = [0, 1, 2, 3]\n", base=base)
    out = load_spec(spec_path).out_dir
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.Popen([sys.executable, "-m", "imc_grapes.sweep", str(spec_path), "--jobs", "2", "--no-report"],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    while not list((out / "points").glob("*/point.json")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    return spec_path, out, proc


def _assert_workers_end(proc: subprocess.Popen, what: str) -> None:
    """No process of ``proc``'s session is left within 10 s (the workers follow the sweep process)."""
    deadline = time.monotonic() + 10
    while _session_pids(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _session_pids(proc.pid) == [], f"worker processes outlived {what}"


def test_kill_9_mid_sweep_loses_only_running_points_and_rerun_completes(tmp_path):
    spec_path, out, proc = _sweep_with_a_point_done(tmp_path)
    spec = load_spec(spec_path)
    os.kill(proc.pid, signal.SIGKILL)  # the sweep process only: its workers must follow it
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    _assert_workers_end(proc, "the killed sweep")

    finished = point_files(out)
    assert 1 <= len(finished) < 8, "the kill came after the sweep had finished: make the points heavier"
    for blob in finished.values():
        assert json.loads(blob)["status"] == "done"  # every result that exists is whole
    status = sweep_status(spec)
    assert status.count("done") == len(finished) and status.count("pending", "half-finished") == 8 - len(finished)

    ex = Counting(LocalExecutor(jobs=1, threads=1))
    status = run_sweep(spec, executor=ex, log=quiet)
    assert status.complete and status.count("done") == 8
    assert sorted(ex.ids) == sorted(p.id for p in spec.points() if p.id not in finished)
    after = point_files(out)
    assert set(after) == {p.id for p in spec.points()}  # exactly one result per point, nothing else
    assert {k: after[k] for k in finished} == finished  # finished points were not touched
    for d in (out / "points").iterdir():
        assert sorted(f.name for f in d.iterdir()) == ["config.json", "point.json", "run", "run.json"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and PR_SET_PDEATHSIG")
def test_sigterm_mid_sweep_ends_it_like_ctrl_c(tmp_path):
    """``kill`` (SIGTERM) of a running sweep ends it as Ctrl-C does: the workers are ended, the points finished so
    far are kept whole, and it says how to resume; exit code 143 (it was killed silently by the signal)."""
    spec_path, out, proc = _sweep_with_a_point_done(tmp_path)
    os.kill(proc.pid, signal.SIGTERM)  # the sweep process only
    err = proc.communicate(timeout=60)[1].decode()
    assert proc.returncode == 143, err
    assert "interrupted: finished points are kept; run the same command again to resume" in err
    assert f"imc-grapes sweep {spec_path} --status" in err and "Traceback" not in err
    # the workers it killed held no semaphore of the resource tracker (tqdm's lock): it has nothing to warn about
    assert "leaked semaphore" not in err, err
    _assert_workers_end(proc, "the terminated sweep")
    finished = point_files(out)
    assert 1 <= len(finished) < 8, "the signal came after the sweep had finished: make the points heavier"
    assert all(json.loads(blob)["status"] == "done" for blob in finished.values())


def _children(pid: int, marker: bytes = b"spawn_main") -> list[int]:
    """Processes whose parent is ``pid`` and whose command line holds ``marker`` (multiprocessing spawn workers)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid and \
                        marker in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                pass
    return pids


def _signal_status(pid: int) -> tuple[str, int, int] | None:
    """``(state, ignored, blocked)`` of process ``pid`` (its state letter and the SigIgn / SigBlk masks of its main
    thread), or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                      if ":\t" in line)
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0], int(fields["SigIgn"], 16), int(fields["SigBlk"], 16)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and PR_SET_PDEATHSIG")
def test_sigterm_to_the_process_group_leaves_running_points_to_be_redone_not_failed(tmp_path):
    """SIGTERM sent to the whole process group (Slurm, systemd, ``kill -- -PGID``) reaches the workers too. Even
    when a worker gets it before the sweep process has handled its own (forced here: the workers are signalled
    first, and a worker that dies of it is given time to be recorded), the points that were running are left
    half-finished, not recorded failed: the next plain run redoes them and the sweep completes."""
    spec_path, out, proc = _sweep_with_a_point_done(tmp_path)
    spec = load_spec(spec_path)
    workers = _children(proc.pid)
    assert workers, "no worker process found"
    for pid in workers:
        os.kill(pid, signal.SIGTERM)        # the workers first ...
    term = 1 << (signal.SIGTERM - 1)
    deadline = time.monotonic() + 30
    died = 0
    for pid in workers:                     # ... each one ignores it (or holds it blocked) or dies of it
        while time.monotonic() < deadline:
            st = _signal_status(pid)
            if st is None or st[0] in "ZX":
                died += 1
                break
            if st[1] & term or st[2] & term:
                break
            time.sleep(0.01)

    def failed() -> int:
        return sum(json.loads(blob)["status"] == "failed" for blob in point_files(out).values())

    while failed() < died and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)                    # a dead worker: let the sweep record its point before it is stopped
    os.killpg(proc.pid, signal.SIGTERM)     # ... then the whole group
    err = proc.communicate(timeout=60)[1].decode()
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    _assert_workers_end(proc, "the terminated sweep")
    finished = point_files(out)
    assert 1 <= len(finished) < 8, "the signal came after the sweep had finished: make the points heavier"
    assert [json.loads(blob)["status"] for blob in finished.values()] == ["done"] * len(finished), \
        "a point running when the group was terminated was recorded failed"
    status = sweep_status(spec)
    assert status.count("half-finished") >= 1 and status.count("failed") == 0

    ex = Counting(LocalExecutor(jobs=1, threads=1))
    status = run_sweep(spec, executor=ex, log=quiet)    # a plain resume, no --retry-failed
    assert status.complete and status.count("done") == 8
    assert sorted(ex.ids) == sorted(p.id for p in spec.points() if p.id not in finished)
    assert {k: v for k, v in point_files(out).items() if k in finished} == finished


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")
def test_workers_cannot_die_of_sigint_or_sigterm_even_while_starting(tmp_path):
    """A worker is started with SIGINT and SIGTERM blocked (its parent's mask while starting it) until it ignores
    them: a signal to the process group while it imports torch cannot kill it either."""
    spec = load_spec(write_spec(tmp_path, "[axes]\nseed = [0, 1]\n"))
    store = SweepStore(spec.out_dir)
    tasks = [{"id": p.id, "config": p.config.to_dict(), "run_dir": str(store.run_dir(p.id))} for p in spec.points()]
    stop = (1 << (signal.SIGINT - 1)) | (1 << (signal.SIGTERM - 1))
    seen: dict[int, int] = {}

    def on_start(task):
        deadline = time.monotonic() + 60
        while len(_children(os.getpid())) <= len(seen) and time.monotonic() < deadline:
            time.sleep(0.005)               # until the new worker runs Python (exec done)
        for pid in set(_children(os.getpid())) - set(seen):
            st = _signal_status(pid)
            assert st is not None
            seen[pid] = (st[1] | st[2]) & stop  # ignored or blocked, from its start on

    outcomes: dict[str, dict] = {}
    LocalExecutor(jobs=2).run(tasks, on_start, lambda t, o: outcomes.__setitem__(t["id"], o))
    assert len(seen) == 2 and set(seen.values()) == {stop}
    assert [o["status"] for o in outcomes.values()] == ["done", "done"]


class _KillsItsProcess:
    """A point's run folder that SIGKILLs the worker process which opens it: the worker dies running the point."""

    def __fspath__(self) -> str:
        os.kill(os.getpid(), signal.SIGKILL)
        return ""


class _ExitsWhenReceived:
    """Ends the worker process that unpickles it (exit code 3): the worker dies before it starts its point."""

    def __reduce__(self):
        return os._exit, (3,)


def _tasks(spec: SweepSpec) -> list[dict]:
    store = SweepStore(spec.out_dir)
    return [{"id": p.id, "config": p.config.to_dict(), "run_dir": str(store.run_dir(p.id))} for p in spec.points()]


def test_a_worker_that_dies_running_its_point_has_it_recorded_failed_and_the_others_go_on(tmp_path):
    """A worker killed while it runs a point (here by the point itself): that point is recorded failed (it may be
    what kills its worker: --retry-failed redoes it), a fresh worker runs the points left."""
    spec = load_spec(write_spec(tmp_path, "[axes]\nseed = [0, 1, 2]\n"))
    tasks = _tasks(spec)
    tasks[0]["run_dir"] = _KillsItsProcess()
    outcomes: dict[str, dict] = {}
    started: list[str] = []
    LocalExecutor(jobs=2).run(tasks, lambda t: started.append(t["id"]),
                              lambda t, o: outcomes.__setitem__(t["id"], o))
    assert sorted(started) == sorted(t["id"] for t in tasks)             # each handed out once: no retry
    dead = outcomes[tasks[0]["id"]]
    assert dead["status"] == "failed" and "worker process died (signal SIGKILL) while running" in dead["reason"]
    assert [outcomes[t["id"]]["status"] for t in tasks[1:]] == ["done", "done"]


def test_workers_that_keep_dying_before_starting_a_point_end_the_run_with_a_clear_error(tmp_path):
    """Workers that die before they start the point handed to them (a broken environment) are not taken for points
    that failed: each time the point goes to a fresh worker, and after MAX_EARLY_DEATHS such deaths in a row the
    run stops with an error that says so; no point is recorded."""
    from imc_grapes.sweep import WorkerStartError
    from imc_grapes.sweep.executors import MAX_EARLY_DEATHS

    spec = load_spec(write_spec(tmp_path, "[axes]\nseed = [0, 1]\n"))
    tasks = [{**t, "poison": _ExitsWhenReceived()} for t in _tasks(spec)]
    started: list[str] = []
    outcomes: list[dict] = []
    with pytest.raises(WorkerStartError, match=rf"{MAX_EARLY_DEATHS + 1} sweep worker processes in a row died "
                                               r"before they could start a point \(the last: exit code 3\)"):
        LocalExecutor(jobs=2).run(tasks, lambda t: started.append(t["id"]), lambda t, o: outcomes.append(o))
    assert outcomes == []
    assert len(started) == len(tasks) + MAX_EARLY_DEATHS                 # every early death: handed out again


def _wait_dead(pid: int) -> None:
    """Wait until this process's child ``pid`` has ended with all its threads (so its pipes are closed; a
    zombie leader alone is not enough), leaving it to be reaped by whoever started it."""
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")
def test_a_point_handed_to_a_worker_found_dead_goes_to_a_fresh_worker(tmp_path):
    """A worker that dies right after sending a result (here: killed as its result arrives): handing it the next
    point finds a broken pipe. That point never started: it is not recorded failed but run by a fresh worker,
    which also takes the points left; the sweep does not end with a BrokenPipeError."""
    spec = load_spec(write_spec(tmp_path, "[axes]\nseed = [0, 1, 2, 3]\n"))
    points = spec.points()
    tasks = _tasks(spec)
    outcomes: dict[str, dict] = {}
    started: list[str] = []

    def on_result(task, outcome):
        if not outcomes:                     # the first result: its worker dies before it gets the next point
            os.kill(outcome["pid"], signal.SIGKILL)
            _wait_dead(outcome["pid"])
        outcomes[task["id"]] = outcome

    LocalExecutor(jobs=2).run(tasks, lambda t: started.append(t["id"]), on_result)
    ids = [p.id for p in points]
    assert started[:3] == ids[:3]            # points[2] handed to the dead worker, then again to a fresh one
    assert sorted(started) == sorted(ids + [ids[2]])
    assert [outcomes[i]["status"] for i in ids] == ["done"] * 4
    assert outcomes[ids[2]]["pid"] not in (outcomes[ids[0]]["pid"], outcomes[ids[1]]["pid"])   # a fresh worker


def test_a_relative_data_root_is_recorded_as_given_and_as_an_absolute_folder(finished, tmp_path, monkeypatch):
    """``data_root = "data"`` names another folder once the sweep folder moves: config.json and point.json keep it
    as given in the config (part of the point's id) and record the absolute folder it named for the sweep process.
    Run again from another folder, the ids are the same, nothing is rerun and the records keep the folder they were
    run with. The data are the synthetic set standing in for MNIST (only the recorded folder matters here); the
    synthetic set itself is read from no folder: null."""
    from collections import OrderedDict

    import imc_grapes.sweep.runner as runner_mod
    import imc_grapes.sweep.worker as worker_mod
    from imc_grapes.data import make_synthetic

    synthetic = make_synthetic(n_train=100, n_test=60, seed=0)
    monkeypatch.setattr(worker_mod, "load_dataset", lambda *a, **k: synthetic)
    monkeypatch.setattr(worker_mod, "_data_cache", OrderedDict())
    monkeypatch.setattr(runner_mod, "check_data", lambda points: None)
    first_cwd, second_cwd = tmp_path / "a", tmp_path / "b"
    first_cwd.mkdir()
    second_cwd.mkdir()
    base = TINY.replace('dataset = "synthetic"', 'dataset = "mnist"\ndata_root = "data"')
    spec_path = write_spec(tmp_path, "[axes]\nseed = [0, 1]\n", base=base)
    monkeypatch.chdir(first_cwd)
    spec = load_spec(spec_path)
    ids = [p.id for p in spec.points()]
    assert run_sweep(spec, executor=LocalExecutor(jobs=1, threads=1), log=quiet).count("done") == 2
    expected = os.path.join(os.path.realpath(tmp_path), "a", "data")
    plan = read_json(tmp_path / "out" / "plan.json")
    assert plan["spec"]["base"]["data_root"] == "data" and plan["data_root_resolved"] == expected
    assert [(p["id"], p["data_root_resolved"]) for p in plan["points"]] == [(pid, expected) for pid in ids]
    for pid in ids:
        for name in ("config.json", "point.json"):
            saved = read_json(tmp_path / "out" / "points" / pid / name)
            assert saved["config"]["data_root"] == "data" and saved["data_root_resolved"] == expected, name
    monkeypatch.chdir(second_cwd)
    again = load_spec(spec_path)
    assert [p.id for p in again.points()] == ids
    counting = Counting(LocalExecutor(jobs=1, threads=1))
    assert run_sweep(again, executor=counting, log=quiet).count("done") == 2
    assert counting.ids == []
    assert all(read_json(tmp_path / "out" / "points" / pid / "point.json")["data_root_resolved"] == expected
               for pid in ids)
    moved = os.path.join(os.path.realpath(tmp_path), "b", "data")      # plan.json: rewritten by the latest run
    plan = read_json(tmp_path / "out" / "plan.json")
    assert plan["data_root_resolved"] == moved and [p["id"] for p in plan["points"]] == ids
    assert all(p["data_root_resolved"] == moved for p in plan["points"])
    synthetic_points = point_files(finished[1].out_dir).values()
    assert synthetic_points and all(json.loads(text)["data_root_resolved"] is None for text in synthetic_points)


def test_plan_json_records_each_points_data_folder_and_keeps_the_ids(tmp_path, monkeypatch):
    """A ``dataset`` axis over a synthetic base with ``data_root = "data"``: plan.json records the base's folder
    (None: the base is synthetic) and each point's own (None for synthetic, the absolute ``<cwd>/data`` for MNIST),
    keeps ``data_root`` as given in the spec, and lists the points under the ids the spec gives them."""
    monkeypatch.chdir(tmp_path)
    base = TINY.replace('dataset = "synthetic"', 'dataset = "synthetic"\ndata_root = "data"')
    spec = load_spec(write_spec(tmp_path, '[axes]\ndataset = ["synthetic", "mnist"]\n', base=base))
    points = spec.points()
    SweepStore(tmp_path / "out").write_plan(spec, points)
    plan = read_json(tmp_path / "out" / "plan.json")
    assert plan["spec"]["base"]["data_root"] == "data" and plan["data_root_resolved"] is None
    folder = os.path.join(os.path.realpath(tmp_path), "data")
    assert [(p["id"], p["params"]["dataset"], p["data_root_resolved"]) for p in plan["points"]] == [
        (pt.id, pt.config.dataset, None if pt.config.dataset == "synthetic" else folder) for pt in points]
    assert sorted(p["params"]["dataset"] for p in plan["points"]) == ["mnist", "synthetic"]


def test_a_sweep_stopped_before_its_first_point_is_still_told_a_sweep_and_kept_from_other_commands(tmp_path, capsys):
    """A sweep writes its plan.json first (under its lock), then the points' folders; one stopped in between (killed,
    or a point's data check failing) left a folder without points/, which io.folder_command took for no command's,
    so `train --out` would have written into it. Its plan.json now marks it; --status reads it as a sweep."""
    from imc_grapes.cli import main
    from imc_grapes.io import folder_command

    spec = load_spec(write_spec(tmp_path, "[axes]\nlr = [0.1, 0.2]\n"))
    store = SweepStore(tmp_path / "out")
    with store.lock():
        store.write_plan(spec, spec.points())         # as run_sweep does, before any point starts
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [".lock", "plan.json"]
    assert folder_command(out) == "sweep"
    assert main(["train", "--dataset", "synthetic", "--hidden", "8", "--no-progress", "--out", str(out)]) == 2
    assert capsys.readouterr().err == (f"imc-grapes train: error: --out: {out} holds the output of `imc-grapes "
                                       "sweep`, whose files `imc-grapes train` would overwrite or mix its own with: "
                                       "give another --out\n")
    assert sorted(p.name for p in out.iterdir()) == [".lock", "plan.json"]
    assert sweep_main([str(tmp_path / "s.toml"), "--status"]) == 0
    assert "2 pending" in capsys.readouterr().out


def test_status_of_a_folder_that_does_not_exist_says_so_and_creates_nothing(tmp_path, capsys):
    """`--status` on a folder that does not exist (a mistyped --out, or a sweep not run yet) counted every point
    pending as if the folder held them: it now says plainly that no sweep has run there and how many points would
    run (exit 0), still lists them, and creates nothing; an existing folder keeps the usual count."""
    spec_path = write_spec(tmp_path, "[axes]\nlr = [0.1, 0.2, 0.4]\n")
    typo = tmp_path / "typo" / "o"
    for args, folder in [(["--out", str(typo)], typo), ([], tmp_path / "out")]:
        assert sweep_main([str(spec_path), "--status", *args]) == 0
        out, err = capsys.readouterr()
        lines = out.splitlines()
        assert lines[0] == f"sweep 's': no sweep has run in {folder} yet (it does not exist): 3 points would run"
        assert lines[1] == "pending:" and [line.split()[1] for line in lines[2:]] == ["lr=0.1", "lr=0.2", "lr=0.4"]
        assert err == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]
    (tmp_path / "out").mkdir()                                   # exists, nothing in it: counted as before
    assert sweep_main([str(spec_path), "--status"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == (f"sweep 's' in {tmp_path / 'out'}: 3 points — 0 done, "
                                                       "0 failed, 3 pending")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []


def test_report_refuses_a_folder_that_does_not_exist_and_creates_nothing(tmp_path, capsys):
    """`--report` with a mistyped --out (or before the sweep ever ran) created the folder and a summary.csv of
    pending points. It is refused (exit 2, naming the option and the folder) and nothing is created; a file in the
    folder's place is the folder error, as before."""
    spec_path = write_spec(tmp_path, "[axes]\nlr = [0.1, 0.2]\n")
    for args, option, folder in [(["--out", str(tmp_path / "typo" / "o")], "--out", tmp_path / "typo" / "o"),
                                 ([], "[sweep] out", tmp_path / "out")]:
        assert sweep_main([str(spec_path), "--report", *args]) == 2
        assert capsys.readouterr().err == (
            f"imc-grapes sweep: error: {option}: {folder} does not exist, so no point of this sweep has run there and "
            f"there is nothing to report: give the folder the sweep ran in (--out), or run it first (imc-grapes sweep "
            f"{spec_path})\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]
    (tmp_path / "file").write_text("not a folder")                      # exists: the folder error, as before
    assert sweep_main([str(spec_path), "--report", "--out", str(tmp_path / "file")]) == 2
    assert "does not exist" not in capsys.readouterr().err


def test_status_of_a_file_or_a_dangling_link_in_the_folders_place_is_the_folder_error(tmp_path, capsys):
    """`--status --out <a file>` (or a dangling symbolic link, or a path under a file) listed every point pending and
    exited 0, as if a sweep folder were there (and `--dry-run` listed the points of a run that refuses the folder).
    It is the folder error that the run and --report give (exit 2,
    naming the option and the path, nothing printed on stdout, nothing created); a folder that does not exist keeps
    its own message (exit 0)."""
    spec_path = write_spec(tmp_path, "[axes]\nlr = [0.1, 0.2]\n")
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    give = "give a folder (an existing one, or a new one to create)"
    cases = [(tmp_path / "file", f"--out {tmp_path / 'file'}: is a file, not a folder; {give}"),
             (tmp_path / "dangling", f"--out {tmp_path / 'dangling'}: exists and is not a folder; {give}"),
             (tmp_path / "file" / "o", f"--out {tmp_path / 'file' / 'o'}: {tmp_path / 'file'} is a file, not a "
                                       "folder, so no folder can be created under it; give a folder that is not "
                                       "under a file")]
    for mode in ("--status", "--report", "--dry-run"):
        for path, message in cases:
            assert sweep_main([str(spec_path), mode, "--out", str(path)]) == 2, (mode, path)
            out, err = capsys.readouterr()
            assert (out, err) == ("", f"imc-grapes sweep: error: {message}\n"), (mode, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling", "file", "s.toml"]
    assert (tmp_path / "file").read_text() == "not a folder" and not (tmp_path / "nowhere").exists()
    assert sweep_main([str(spec_path), "--status", "--out", str(tmp_path / "new")]) == 0
    assert capsys.readouterr().out.splitlines()[0] == (f"sweep 's': no sweep has run in {tmp_path / 'new'} yet "
                                                       "(it does not exist): 2 points would run")


def test_report_refuses_a_folder_where_no_point_of_this_sweep_has_finished(tmp_path, capsys):
    """`--report` on an existing folder where nothing of this sweep has finished (an empty folder, one of no sweep,
    a sweep stopped before its first point, one of another spec, one whose first point is running) wrote a
    summary.csv of pending points only. It is refused like a folder that does not exist (exit 2, naming the option
    and the folder, saying why there is nothing to report) and writes nothing; once one point has finished (here a
    failed one: a result too) the report is written as before, the other point pending. No point is trained."""
    spec_path = write_spec(tmp_path, "[axes]\nlr = [0.1, 0.2]\n")
    spec = load_spec(spec_path)
    out = tmp_path / "out"

    def refused(args: list[str]) -> str:
        before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
        assert sweep_main([str(spec_path), "--report", *args]) == 2
        assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before   # nothing written
        stdout, err = capsys.readouterr()
        assert stdout == ""
        return err

    never_ran = ("so no point of this sweep has run there and there is nothing to report: give the folder the sweep "
                 f"ran in (--out), or run it first (imc-grapes sweep {spec_path})\n")
    (tmp_path / "empty").mkdir()
    assert refused(["--out", str(tmp_path / "empty")]) == (
        f"imc-grapes sweep: error: --out: {tmp_path / 'empty'} holds no sweep, {never_ran}")
    out.mkdir()
    (out / "notes.txt").write_text("mine")                          # a folder of no command
    assert refused([]) == f"imc-grapes sweep: error: [sweep] out: {out} holds no sweep, {never_ran}"
    (out / "notes.txt").unlink()
    store = SweepStore(out)
    store.write_plan(spec, spec.points())                           # a sweep stopped before its first point
    not_finished = (f"imc-grapes sweep: error: [sweep] out: no point of this sweep has finished in {out}, so there "
                    "is nothing to report: give the folder the sweep ran in (--out), or run it (imc-grapes sweep "
                    f"{spec_path}; it resumes there)\n")
    assert refused([]) == not_finished
    other = load_spec(write_spec(tmp_path / "other", "[axes]\nlr = [0.3]\n"))
    store.record(other.points()[0], {"status": "done", "history": [{"epoch": 1, "test_acc": 0.5}]})   # not ours
    assert refused([]) == not_finished
    first = spec.points()[0]
    store.prepare(first)                                            # handed out, not finished ...
    with store.lock():                                              # ... by a sweep process running now
        assert refused([]) == (f"imc-grapes sweep: error: [sweep] out: no point of this sweep has finished in {out} "
                               "yet, so there is nothing to report: a sweep process is running there now; report "
                               f"when a point has finished (imc-grapes sweep {spec_path} --status shows where it "
                               "stands)\n")
    assert refused([]) == not_finished                              # killed: half-finished, not finished
    store.record(first, {"status": "failed", "reason": "diverged: loss became nan (by hand)", "history": []})
    assert sweep_main([str(spec_path), "--report"]) == 0
    with open(out / "summary.csv") as f:
        assert sorted((row["lr"], row["status"]) for row in csv.DictReader(f)) == [("0.1", "failed"),
                                                                                   ("0.2", "pending")]


@pytest.mark.slow
def test_local_and_ray_executors_write_identical_results(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    from imc_grapes.sweep import RayExecutor

    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # embedded Ray on this machine only
    spec = load_spec(write_spec(tmp_path, "[axes]\nlr = [0.1, 1e12]\noptimizer = ['sgd', 'grapes']\nseed = [0, 1]\n"))
    a, b = tmp_path / "local", tmp_path / "ray"
    run_sweep(spec, a, LocalExecutor(jobs=1, threads=1), log=quiet)  # in this process, one torch thread per point
    status = run_sweep(spec, b, RayExecutor(num_cpus=2), log=quiet)
    assert not ray.is_initialized()  # the embedded instance was stopped again
    assert status.complete and status.count("done") == 4 and status.count("failed") == 4
    la, lb = point_files(a), point_files(b)
    assert set(la) == set(lb) == {p.id for p in spec.points()}
    assert la == lb  # byte-identical results
    for pid in la:
        if json.loads(la[pid])["status"] != "done":
            continue
        rows = [list(csv.DictReader(open(d / "points" / pid / "run" / "metrics.csv"))) for d in (a, b)]
        for r in rows:
            for row in r:
                row.pop("time_s"), row.pop("elapsed_s")
        assert rows[0] == rows[1]  # the run files shipped back by Ray match the local ones
        assert read_json(b / "points" / pid / "run.json")["executor"] == "ray"


def test_lock_and_cli_errors(finished, tmp_path, capsys):
    spec_path, spec = finished
    store = SweepStore(spec.out_dir)
    with store.lock():
        assert store.is_running()
        with pytest.raises(SweepLockedError, match="another process"):
            run_sweep(spec, log=quiet)
        assert sweep_main([str(spec_path)]) == 3
        assert sweep_main([str(spec_path), "--status"]) == 0
        assert "running in this folder now" in capsys.readouterr().out
    assert not store.is_running()
    bad = write_spec(tmp_path, "[axes]\nlr = [0.1, -1.0]\n")
    assert sweep_main([str(bad)]) == 2
    err = capsys.readouterr().err
    assert "lr must be > 0" in err and "1 of 2 point(s) are invalid" in err
    assert not (tmp_path / "out").exists()
    assert sweep_main([str(spec_path), "--jobs", "0"]) == 2
    assert "--jobs must be ≥ 1" in capsys.readouterr().err
    assert sweep_main([str(tmp_path / "missing.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_x_axis_scale_rule():
    """Log x for positive values spanning >= 10x (also at two points: 0.001 and 0.01 were drawn on a linear axis);
    symmetric-log (linear up to the smallest positive value) when 0 is among them (e.g. an offset swept from 0);
    linear otherwise. A log axis has a tick at each value, labelled with it, and no other labelled tick."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from imc_grapes.sweep.report import _x_scale

    cases = [([0.001, 0.004, 0.064], "log"), ([0.001, 0.01], "log"), ([1, 10], "log"), ([1, 9.9], "linear"),
             ([0.0, 0.0013, 0.013, 0.14], "symlog"), ([1, 2, 4], "linear"), ([0.0, 1.0], "linear"),
             ([-1.0, 0.1, 10.0], "linear")]
    for values, scale in cases:
        fig, ax = plt.subplots()
        ax.plot(values, [1.0] * len(values), "o")
        assert _x_scale(ax, values) == scale == ax.get_xscale(), values
        if scale == "symlog":
            assert ax.xaxis.get_transform().linthresh == 0.0013
        if scale != "linear":
            fig.canvas.draw()
            assert list(ax.get_xticks()) == sorted(float(v) for v in values)
            assert [t.get_text() for t in ax.get_xticklabels()] == [f"{float(v):g}" for v in sorted(values)]
            assert not any(t.get_text() for t in ax.get_xticklabels(minor=True))
        plt.close(fig)
    fig, ax = plt.subplots()                    # many values: matplotlib's own ticks (powers of ten), not one each
    values = [10.0 ** (k / 3) for k in range(12)]
    assert _x_scale(ax, values) == "log" and len(ax.get_xticks()) != len(values)
    plt.close(fig)


def test_pending_points_are_neither_failed_nor_counted_as_runs(finished, tmp_path, monkeypatch):
    """A sweep reported before all its points ran (an axis value added, or stopped): a value whose points are all
    pending is not drawn as "all runs failed" (its points did not run), and the table's runs column counts only
    the points that ran."""
    import matplotlib.axes

    from imc_grapes.sweep import sweep_status
    from imc_grapes.sweep.report import plot_axis

    spec_path, spec = finished
    out = tmp_path / "copy"
    shutil.copytree(spec.out_dir, out)
    dropped = [p for p in spec.points() if list(p.params["hidden"]) == [12]]
    for p in dropped:                                           # every point of hidden = [12]: not run yet
        shutil.rmtree(out / "points" / p.id)
    status = sweep_status(spec, out)
    assert status.count("pending") == len(dropped) == 8
    labels: list[str] = []
    original = matplotlib.axes.Axes.plot

    def plot(self, *args, **kwargs):
        labels.append(kwargs.get("label", ""))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", plot)
    plot_axis(spec, status.points, "hidden", tmp_path / "acc_vs_hidden.png")
    assert not any(str(lb).startswith("all runs failed") for lb in labels)   # [8] has results, [12] has not run
    plot_axis(spec, status.points, "lr", tmp_path / "acc_vs_lr.png")
    assert "all runs failed: diverged" in labels            # lr = 1e12 ran and diverged everywhere: still marked
    table = format_summary(spec, out).split("\n\n")[0]
    rows = [line.split() for line in table.splitlines()[2:]]
    ran = [int(cols[cols.index("crossbar" if "crossbar" in cols else "digital") + 1]) for cols in rows]
    assert sum(ran) == status.count("done") + status.count("failed") == 8
    pending = [int(cols[cols.index("crossbar" if "crossbar" in cols else "digital") + 3]) for cols in rows]
    assert table.splitlines()[0].split()[-6:] == ["runs", "failed", "pending", "test", "acc", "(%)"]
    assert sum(pending) == 8 and sorted(pending) == [0, 0, 0, 0, 2, 2, 2, 2]   # hidden = [12]: 2 seeds, not run


def test_digital_reference_is_drawn_per_lr_on_an_lr_axis_and_flat_on_a_hardware_axis(tmp_path, monkeypatch):
    """``reference = true`` runs a digital twin of every analog point, at that point's lr: on an ``lr`` axis each
    lr's analog accuracy is drawn against the digital accuracy at the same lr, not one mean over all lrs. A hardware
    axis (``device.dw_min``), which digital twins do not have, keeps one horizontal reference line."""
    import matplotlib.axes

    from imc_grapes.sweep.report import plot_axis
    from imc_grapes.sweep.runner import PointStatus

    spec = load_spec(write_spec(tmp_path, '[axes]\nlr = [0.01, 0.1, 1.0]\ndevice.dw_min = [0.002, 0.02]\n'
                                          'optimizer = ["sgd"]\n',
                                base=TINY + 'backend = "crossbar"\n', sweep="reference = true"))
    points = spec.points()
    digital_acc = {0.01: 0.30, 0.1: 0.80, 1.0: 0.50}                 # the digital runs differ from lr to lr
    status = [PointStatus(p, "done", metrics={"final_test_acc": digital_acc[p.params["lr"]]
                                              if p.config.backend == "digital" else 0.4}) for p in points]
    assert sum(p.config.backend == "digital" for p in points) == 3   # one digital twin per lr
    calls: list[tuple[str, object, str]] = []
    plot, axhline = matplotlib.axes.Axes.plot, matplotlib.axes.Axes.axhline

    def spy_plot(self, *args, **kwargs):
        calls.append(("plot", args, kwargs.get("label", "")))
        return plot(self, *args, **kwargs)

    def spy_axhline(self, y=0, *args, **kwargs):
        calls.append(("axhline", y, kwargs.get("label", "")))
        return axhline(self, y, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", spy_plot)
    monkeypatch.setattr(matplotlib.axes.Axes, "axhline", spy_axhline)
    plot_axis(spec, status, "lr", tmp_path / "acc_vs_lr.png")
    ref = [c for c in calls if "ideal digital" in c[2]]
    assert [c[0] for c in ref] == ["plot"] and ref[0][2] == "sgd, ideal digital at the same lr (n=1 per point)"
    xs, ys = ref[0][1][:2]
    assert list(xs) == [0.01, 0.1, 1.0] and list(ys) == pytest.approx([30.0, 80.0, 50.0])
    calls.clear()
    plot_axis(spec, status, "device.dw_min", tmp_path / "acc_vs_dw.png")
    ref = [c for c in calls if "ideal digital" in c[2]]
    assert [c[0] for c in ref] == ["axhline"] and ref[0][1] == pytest.approx(100 * (0.3 + 0.8 + 0.5) / 3)
    assert ref[0][2] == "sgd, ideal digital (no device.dw_min; n=3)"
    status[0 if points[0].config.backend == "digital" else 1].state = "failed"     # lr 0.01's digital twin
    calls.clear()
    plot_axis(spec, status, "device.dw_min", tmp_path / "acc_vs_dw.png")
    ref = [c for c in calls if "ideal digital" in c[2]]
    assert ref[0][1] == pytest.approx(100 * (0.8 + 0.5) / 2)
    assert ref[0][2] == "sgd, ideal digital (no device.dw_min; n=2; left out: 1 failed)"
    calls.clear()
    plot_axis(spec, status, "lr", tmp_path / "acc_vs_lr.png")
    ref = [c for c in calls if "ideal digital" in c[2]]
    assert list(ref[0][1][0]) == [0.1, 1.0] and list(ref[0][1][1]) == pytest.approx([80.0, 50.0])
    assert ref[0][2] == "sgd, ideal digital at the same lr (n=1 per point; left out: 1 failed)"


def test_points_of_different_analog_backends_are_plotted_apart(tmp_path, monkeypatch):
    """A ``backend = ["crossbar", "aihwkit"]`` axis compares two simulators: every plot draws each backend's points
    on their own line / panel / bar (named by the backend), never one mean over both."""
    import matplotlib.axes

    from imc_grapes.sweep.report import plot_axis, plot_diagnostics, plot_heatmap, plot_optimizers
    from imc_grapes.sweep.runner import PointStatus

    acc = {"crossbar": 0.8, "aihwkit": 0.2}
    sat = {"crossbar": 0.9, "aihwkit": 0.5}

    def statuses(spec):
        return [PointStatus(p, "done", metrics={"final_test_acc": acc[p.config.backend],
                                                "final_sat/layers.0": sat[p.config.backend]})
                for p in spec.points()]

    spec = load_spec(write_spec(tmp_path, '[axes]\nbackend = ["crossbar", "aihwkit"]\n'
                                          'device.dw_min = [0.002, 0.02]\nperiphery.adc_bits = [6, 8]\n'))
    status = statuses(spec)
    calls: list[tuple[str, tuple, dict]] = []
    originals = {name: getattr(matplotlib.axes.Axes, name) for name in ("errorbar", "imshow", "bar", "set")}

    def spy(name):
        def f(self, *args, **kwargs):
            calls.append((name, args, kwargs))
            return originals[name](self, *args, **kwargs)
        return f

    for name in originals:
        monkeypatch.setattr(matplotlib.axes.Axes, name, spy(name))

    plot_axis(spec, status, "device.dw_min", tmp_path / "a.png")
    lines = {kw["label"].split(" (")[0]: list(args[1]) for name, args, kw in calls if name == "errorbar"}
    assert lines == {"sgd, crossbar": pytest.approx([80.0, 80.0]), "sgd, aihwkit": pytest.approx([20.0, 20.0])}

    calls.clear()
    plot_heatmap(spec, status, "device.dw_min", "periphery.adc_bits", tmp_path / "h.png")
    grids = [args[0] for name, args, _ in calls if name == "imshow"]
    titles = [kw["title"] for name, _, kw in calls if name == "set" and "title" in kw]
    assert titles == ["sgd, crossbar", "sgd, aihwkit"]
    assert [float(g.mean()) for g in grids] == pytest.approx([80.0, 20.0])

    calls.clear()
    plot_diagnostics(spec, status, "device.dw_min", tmp_path / "d.png")
    lines = {kw["label"]: list(args[1]) for name, args, kw in calls if name == "errorbar"}
    assert lines == {"sgd, crossbar, layers.0 (n=2 per point)": pytest.approx([0.9, 0.9]),
                     "sgd, aihwkit, layers.0 (n=2 per point)": pytest.approx([0.5, 0.5])}

    only = load_spec(write_spec(tmp_path / "only", '[axes]\nbackend = ["crossbar", "aihwkit"]\n'))
    calls.clear()
    plot_optimizers(only, statuses(only), tmp_path / "o.png")
    bars = {kw["label"]: list(args[1]) for name, args, kw in calls if name == "bar"}
    assert bars == {"crossbar (n=1 per bar)": pytest.approx([80.0]), "aihwkit (n=1 per bar)": pytest.approx([20.0])}


def test_wrap_title_keeps_every_word_and_line_break_within_the_width():
    from imc_grapes.plotting import wrap_title

    text = "dw_min_and_adc_bits_of_the_grapes_paper_runs: accuracy vs device.dw_min\n(mean ± std over seeds and lr)"
    wrapped = wrap_title(text, 30)
    assert wrapped.split("\n") == ["dw_min_and_adc_bits_of_the_gra",   # a word longer than a line is split
                                    "pes_paper_runs: accuracy vs",
                                    "device.dw_min",
                                    "(mean ± std over seeds and lr)"]   # 30 characters: fits, on its own line
    assert "".join(wrapped.split()) == "".join(text.split())
    assert wrap_title("short\ntitle", 30) == "short\ntitle"


def test_long_plot_titles_are_wrapped_to_stay_inside_the_figure(tmp_path, monkeypatch):
    """A long sweep name (and many swept axes) made titles wider than the figure, cut at its edges: every plot's
    title is wrapped; drawn, each title line lies inside the figure, and no word is lost."""
    from imc_grapes.sweep import report
    from imc_grapes.sweep.runner import PointStatus

    name = "effect_of_device_granularity_and_periphery_resolution_on_grapes_training_of_a_small_analog_mlp"
    spec = load_spec(write_spec(tmp_path, '[axes]\ndevice.dw_min = [0.002, 0.02]\nperiphery.adc_bits = [6, 8]\n'
                                          'periphery.dac_bits = [6, 8]\n', base=TINY + 'backend = "crossbar"\n',
                                sweep=f'name = "{name}"'))
    status = [PointStatus(p, "done", metrics={"final_test_acc": 0.5, "final_sat/layers.0": 0.9})
              for p in spec.points()]
    titles: list[tuple[str, float, float]] = []          # (text, widest extent beyond the figure, unwrapped width)
    save = report._save

    def checked_save(plt, fig, path):
        fig.canvas.draw()
        for text in [fig._suptitle] + [ax.title for ax in fig.axes]:
            if text is None or name[:20] not in text.get_text():
                continue
            box = text.get_window_extent()
            one_line = fig.text(0, 0, " ".join(text.get_text().split("\n")), fontsize=text.get_fontsize())
            titles.append((text.get_text(), max(-box.x0, box.x1 - fig.bbox.width),
                           one_line.get_window_extent().width / fig.bbox.width))
        return save(plt, fig, path)

    monkeypatch.setattr(report, "_save", checked_save)
    report.plot_axis(spec, status, "device.dw_min", tmp_path / "a.png", others=["periphery.adc_bits",
                                                                                "periphery.dac_bits"])
    report.plot_heatmap(spec, status, "device.dw_min", "periphery.adc_bits", tmp_path / "h.png")
    report.plot_optimizers(spec, status, tmp_path / "o.png")
    report.plot_diagnostics(spec, status, "device.dw_min", tmp_path / "d.png")
    assert len(titles) == 4
    for text, beyond, unwrapped in titles:
        assert unwrapped > 1.0                            # on one line it would not fit
        assert beyond <= 0.0, text                        # wrapped, it does
        assert "".join(text.split()).startswith(name + ":")   # the name whole (split across lines at most)


@pytest.mark.parametrize("device, cuda, jobs", [("cpu", True, 3), ("auto", False, 3), ("auto", True, 1),
                                                ("cuda", True, 1)])
def test_default_jobs_is_one_when_the_points_train_on_a_gpu(monkeypatch, device, cuda, jobs):
    """docs/sweeps.md: the default is one worker per usable core, never more than points, and 1 when the points train
    on a GPU — also with ``device = "auto"`` on a machine with CUDA (they then share the one GPU)."""
    import torch

    from imc_grapes.sweep import executors

    used: list[int] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(executors, "available_cpus", lambda: 8)
    monkeypatch.setattr(executors, "execute_task", lambda task: {"id": task["id"], "status": "done"})
    monkeypatch.setattr(executors.LocalExecutor, "_run_pool",
                        staticmethod(lambda tasks, n, threads, on_start, on_result: used.append(n)))
    tasks = [{"id": str(i), "config": {"device": device}} for i in range(3)]
    results: list[str] = []
    LocalExecutor().run(tasks, lambda task: None, lambda task, outcome: results.append(outcome["id"]))
    assert (used or [1]) == [jobs]
    assert results == (["0", "1", "2"] if jobs == 1 else [])


def test_a_heatmap_of_equal_accuracies_gets_a_readable_colour_range(tmp_path, monkeypatch):
    """Every cell 50 %: the colour range was [50, 50 + 1e-9] (a colour bar labelled "1e-10 + 5e1"); it is now one
    point around the value, [49.5, 50.5], and each cell's label still reads 50.0."""
    import matplotlib.axes

    from imc_grapes.sweep.report import plot_heatmap
    from imc_grapes.sweep.runner import PointStatus

    spec = load_spec(write_spec(tmp_path, '[axes]\ndevice.dw_min = [0.002, 0.02]\nperiphery.adc_bits = [6, 8]\n',
                                base=TINY + 'backend = "crossbar"\n'))
    status = [PointStatus(p, "done", metrics={"final_test_acc": 0.5}) for p in spec.points()]
    seen: list[dict] = []
    texts: list[str] = []
    imshow, text = matplotlib.axes.Axes.imshow, matplotlib.axes.Axes.text
    monkeypatch.setattr(matplotlib.axes.Axes, "imshow", lambda self, *a, **k: seen.append(k) or imshow(self, *a, **k))
    monkeypatch.setattr(matplotlib.axes.Axes, "text", lambda self, x, y, s, *a, **k: texts.append(s)
                        or text(self, x, y, s, *a, **k))
    plot_heatmap(spec, status, "device.dw_min", "periphery.adc_bits", tmp_path / "h.png")
    assert [(k["vmin"], k["vmax"]) for k in seen] == [pytest.approx((49.5, 50.5))]
    assert texts == ["50.0"] * 4


class _Scripted:
    """An executor that runs nothing: every task is done with one evaluation at test accuracy 0.75 (the ids handed
    out are recorded), or the i-th task at ``results[i]``'s (accuracy, reason) when given."""

    name, ships_files = "scripted", False

    def __init__(self, results: list[tuple[float, str]] | None = None) -> None:
        self.ids: list[str] = []
        self.results = results

    def run(self, tasks, on_start, on_result):
        for i, t in enumerate(tasks):
            self.ids.append(t["id"])
            on_start(t)
            acc, reason = (0.75, "") if self.results is None else self.results[i]
            on_result(t, {"id": t["id"], "status": "done", "reason": reason, "wall_time_s": 0.25, "files": {},
                          "history": [{"epoch": 1.0, "test_acc": acc, "test_loss": 0.5}]})


def test_the_log_line_of_a_point_without_a_finite_accuracy_says_nan_and_why(tmp_path):
    """Each finished point's log line gave 'test acc nan%' for a NaN accuracy (as if a percentage): it now says
    'test acc nan' and why, the point's reason where it has one, else the short form of the NaN note; a finite
    accuracy is in % as before, and a failed point (no accuracy) gives its reason."""
    from imc_grapes.report import NAN_ACCURACY_SHORT
    from imc_grapes.sweep.runner import result_line

    assert NAN_ACCURACY_SHORT == "weights or outputs not finite (NaN/Inf)"
    assert result_line({"metrics": {"final_test_acc": 0.912}, "reason": ""}) == "test acc 91.20%"
    assert result_line({"metrics": {"final_test_acc": math.nan}, "reason": ""}) == (
        "test acc nan (weights or outputs not finite (NaN/Inf))")
    assert result_line({"metrics": {"final_test_acc": math.inf}}) == (
        "test acc inf (weights or outputs not finite (NaN/Inf))")
    assert result_line({"metrics": {"final_test_acc": math.nan}, "reason": "outputs overflowed after drift"}) == (
        "test acc nan — outputs overflowed after drift")
    assert result_line({"metrics": {}, "reason": "diverged: loss became nan"}) == "diverged: loss became nan"

    spec = load_spec(write_spec(tmp_path, "[axes]\nlr = [0.1, 0.2, 0.3]\n"))
    said: list[str] = []
    ex = _Scripted([(0.912, ""), (math.nan, ""), (math.nan, "outputs overflowed after drift")])
    run_sweep(spec, executor=ex, log=said.append)
    labels = {p.id: p.label() for p in spec.points()}
    lines = [line for line in said if line.startswith("[")]
    assert lines == [f"[1/3] done   {labels[ex.ids[0]]}: test acc 91.20% (0.2 s)",
                     f"[2/3] done   {labels[ex.ids[1]]}: test acc nan (weights or outputs not finite (NaN/Inf)) "
                     "(0.2 s)",
                     f"[3/3] done   {labels[ex.ids[2]]}: test acc nan — outputs overflowed after drift (0.2 s)"]


def test_the_status_listing_says_a_done_points_nan_accuracy_as_the_log_line_does(tmp_path):
    """`--status --verbose` listed a done point whose accuracy is NaN (stored as "nan" in point.json) with nothing
    after its label, or only its reason: it says `test acc nan` and why, as the run's log line
    (:func:`result_line`); a finite accuracy is in % as before."""
    spec = load_spec(write_spec(tmp_path, "[axes]\nlr = [0.1, 0.2, 0.3]\n"))
    ex = _Scripted([(0.912, ""), (math.nan, ""), (math.nan, "outputs overflowed after drift")])
    run_sweep(spec, executor=ex, log=lambda line: None)
    labels = {p.id: p.label() for p in spec.points()}
    listed = sweep_status(spec).format(verbose=True).splitlines()
    assert listed[listed.index("done:") + 1:] == [
        f"  {ex.ids[0]}  {labels[ex.ids[0]]}  test acc 91.20%",
        f"  {ex.ids[1]}  {labels[ex.ids[1]]}  test acc nan (weights or outputs not finite (NaN/Inf))",
        f"  {ex.ids[2]}  {labels[ex.ids[2]]}  test acc nan — outputs overflowed after drift"]


LEGACY_SPEC = '[axes]\ndevice.dw_min = [0.002, 0.02]\n'
"""Two crossbar points on ReRamSB, whose own dw_min is 0.002: the first point's override changes nothing."""
CROSSBAR = TINY + 'backend = "crossbar"\n'


def _write_as_before(store: SweepStore, point, status: str = "done", acc: float = 0.5, folder: str = "") -> str:
    """Write ``point``'s result as versions before the redundant override was left out did: under its earlier id
    (the id kept the override), or in ``folder`` when given, with the store's own writes; returns that folder's
    name."""
    from imc_grapes.sweep.spec import Point, legacy_config_id

    old = Point(folder or legacy_config_id(point.config), point.params, point.config, point.reference)
    store.prepare(old)
    history = [{"epoch": 1.0, "test_acc": acc, "test_loss": 0.7}]
    store.record(old, {"status": status, "failure": "diverged" if status == "failed" else "",
                       "reason": "diverged: loss became nan" if status == "failed" else "", "wall_time_s": 1.5,
                       "history": history, "files": {}})
    return old.id


def test_a_point_done_under_the_id_of_an_earlier_version_is_read_there_and_not_rerun(tmp_path):
    """A sweep folder written before device overrides at the preset's value were left out of the ids holds the point
    device.dw_min = 0.002 (ReRamSB's own) under its earlier id: --status, the run and the report find it there, in
    place (nothing is run, renamed or copied), and plan.json names that folder."""
    spec = load_spec(write_spec(tmp_path, LEGACY_SPEC, base=CROSSBAR))
    at_default, other = spec.points()
    assert at_default.config.analog.device_overrides == {"dw_min": 0.002}   # the config keeps what the spec says
    assert other.legacy_ids == () and len(at_default.legacy_ids) == 1
    store = SweepStore(spec.out_dir)
    old = _write_as_before(store, at_default)
    assert old == at_default.legacy_ids[0] != at_default.id
    _write_as_before(store, other, acc=0.25)    # an id no version changed: written under its one id
    assert sorted(store.folder_ids()) == sorted([old, other.id])

    status = sweep_status(spec)
    assert (status.count("done"), status.count("pending"), status.other_points) == (2, 0, 0)
    assert status.points[0].metrics["final_test_acc"] == 0.5
    ex = _Scripted()
    run_sweep(spec, executor=ex, log=quiet)
    assert ex.ids == []                                              # nothing rerun
    assert sorted(store.folder_ids()) == sorted([old, other.id])     # nothing renamed or added
    plan = read_json(spec.out_dir / "plan.json")
    assert [(p["id"], p.get("folder")) for p in plan["points"]] == [(at_default.id, old), (other.id, None)]
    rows = summary_rows(spec)
    assert [(r["point"], r["status"], r["final_test_acc"], r["wall_time_s"]) for r in rows] == [
        (at_default.id, "done", 0.5, 1.5), (other.id, "done", 0.25, 1.5)]


def test_a_points_own_folder_comes_before_the_one_of_its_earlier_id(tmp_path):
    """With a folder of its own (here half-finished: a run killed after this version started it) a point is what
    that folder says, not the earlier result; the earlier folder then belongs to no point of the spec."""
    spec = load_spec(write_spec(tmp_path, LEGACY_SPEC, base=CROSSBAR))
    at_default = spec.points()[0]
    store = SweepStore(spec.out_dir)
    _write_as_before(store, at_default)
    store.prepare(at_default)               # config.json only: half-finished
    status = sweep_status(spec)
    assert [ps.state for ps in status.points] == ["half-finished", "pending"] and status.other_points == 1
    ex = _Scripted()
    run_sweep(spec, executor=ex, log=quiet)
    assert ex.ids == [at_default.id, spec.points()[1].id]
    assert read_json(store.point_dir(at_default.id) / "point.json")["metrics"]["final_test_acc"] == 0.75


def test_a_point_failed_under_its_earlier_id_is_kept_and_redone_in_its_own_folder(tmp_path):
    """A point that diverged under its earlier id counts as failed (diverged) as any other: a plain run keeps it,
    --retry-diverged redoes it in the point's own folder and leaves the earlier one as it was."""
    spec = load_spec(write_spec(tmp_path, LEGACY_SPEC, base=CROSSBAR))
    at_default, other = spec.points()
    store = SweepStore(spec.out_dir)
    old = _write_as_before(store, at_default, status="failed")
    before = (store.root / "points" / old / "point.json").read_bytes()
    status = sweep_status(spec)
    assert [(ps.state, ps.failure) for ps in status.points] == [("failed", "diverged"), ("pending", "")]
    ex = _Scripted()
    run_sweep(spec, executor=ex, log=quiet)
    assert ex.ids == [other.id]
    ex = _Scripted()
    status = run_sweep(spec, executor=ex, retry_diverged=True, log=quiet)
    assert ex.ids == [at_default.id]
    assert read_json(store.root / "points" / at_default.id / "point.json")["metrics"]["final_test_acc"] == 0.75
    assert (store.root / "points" / old / "point.json").read_bytes() == before
    assert [ps.state for ps in status.points] == ["done", "done"] and status.other_points == 1


def test_summary_csv_and_status_name_the_folder_of_a_point_read_under_its_earlier_id(tmp_path, capsys):
    """A point read in the folder of the id an earlier version gave it was shown in summary.csv and --status under
    its new id only, though points/<new id> does not exist. summary.csv's folder column names the folder its files
    are in (the earlier id; a point's own id otherwise; empty for a pending point, which has none) and --status
    lists the point with '(in points/<earlier id>)' and a note counting such points."""
    spec_path = write_spec(tmp_path, '[axes]\ndevice.dw_min = [0.002, 0.02, 0.05]\n', base=CROSSBAR)
    spec = load_spec(spec_path)
    at_default, failed, pending = spec.points()
    store = SweepStore(spec.out_dir)
    old = _write_as_before(store, at_default)                       # done (50 %), under its earlier id
    _write_as_before(store, failed, status="failed")                # an id no version changed: its own folder
    assert sorted(store.folder_ids()) == sorted([old, failed.id]) and old != at_default.id
    assert sweep_main([str(spec_path), "--report"]) == 0
    capsys.readouterr()
    with open(spec.out_dir / "summary.csv") as f:
        reader = csv.DictReader(f)
        rows = [(r["point"], r["folder"], r["status"]) for r in reader]
    assert reader.fieldnames[:3] == ["point", "folder", "status"]
    assert rows == [(at_default.id, old, "done"), (failed.id, failed.id, "failed"), (pending.id, "", "pending")]
    assert not (spec.out_dir / "points" / at_default.id).exists()
    note = ("  note: 1 point(s) are read in the folder of the id an earlier version gave them (which kept a device "
            "override at the preset's own value in the id): listed with '(in points/<that id>)', as summary.csv's "
            "folder column names it")
    assert sweep_main([str(spec_path), "--status", "--verbose"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == [f"sweep 's' in {spec.out_dir}: 3 points — 1 done, 1 failed, 1 pending", note]
    assert f"  {at_default.id}  device.dw_min=0.002  test acc 50.00%  (in points/{old})" in lines
    assert f"  {failed.id}  device.dw_min=0.02  — diverged: loss became nan" in lines      # its own folder
    assert f"  {pending.id}  device.dw_min=0.05" in lines
    assert sweep_main([str(spec_path), "--status"]) == 0                # without --verbose: the note says it
    assert capsys.readouterr().out.splitlines()[1] == note


SPELT = '[axes]\nanalog.device_overrides = [{dw_min = 0.002}, {dw_min = 0.02}]\n'
"""Two crossbar points on ReRamSB, the first spelt with ReRamSB's own dw_min (0.002): an override that changes
nothing, part of the id of earlier versions."""
UNSPELT = '[axes]\nanalog.device_overrides = [{}, {dw_min = 0.02}]\n'
"""The same two points, the redundant override taken out of the spec."""


def _spelt_then_unspelt(tmp_path):
    """The points of :data:`SPELT` and of :data:`UNSPELT` (the same spec file and sweep folder, rewritten): the
    redundant override's point has one id in both and an earlier id only while the spec writes the override."""
    spelt = load_spec(write_spec(tmp_path, SPELT, base=CROSSBAR)).points()
    spec_path = write_spec(tmp_path, UNSPELT, base=CROSSBAR)
    spec = load_spec(spec_path)
    unspelt = spec.points()
    assert spelt[0].config.analog.device_overrides == {"dw_min": 0.002}
    assert unspelt[0].config.analog.device_overrides == {}
    assert [p.id for p in spelt] == [p.id for p in unspelt]
    assert len(spelt[0].legacy_ids) == 1 and unspelt[0].legacy_ids == () == spelt[1].legacy_ids
    return spec_path, spec, spelt, unspelt


def test_a_point_found_under_its_earlier_id_is_still_found_once_the_spec_drops_the_redundant_override(tmp_path,
                                                                                                      capsys):
    """A folder written by an earlier version under the id that counted a redundant override (dw_min = 0.002 on
    ReRamSB) was found while the spec kept the override; once the override was taken out of the spec (the same
    point) the point was pending and rerun. The folder's point.json recorded the config, whose id is the point's:
    --status shows it done in that folder (and writes nothing), the run reruns nothing, the report includes it."""
    spec_path, spec, spelt, unspelt = _spelt_then_unspelt(tmp_path)
    store = SweepStore(spec.out_dir)
    old = _write_as_before(store, spelt[0])                         # done (50 %) under the id with the override
    _write_as_before(store, spelt[1], acc=0.25)                     # an id no version changed
    assert old == spelt[0].legacy_ids[0] and old not in (unspelt[0].id, unspelt[1].id)
    assert sorted(store.folder_ids()) == sorted([old, unspelt[1].id])
    files = sorted(spec.out_dir.rglob("*"))

    status = sweep_status(spec)
    assert [(ps.state, ps.folder, ps.metrics["final_test_acc"]) for ps in status.points] == [
        ("done", old, 0.5), ("done", "", 0.25)]
    assert status.other_points == 0
    assert sweep_main([str(spec_path), "--status", "--verbose"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"sweep 's' in {spec.out_dir}: 2 points — 2 done, 0 failed, 0 pending"
    assert f"  {unspelt[0].id}  analog.device_overrides={{}}  test acc 50.00%  (in points/{old})" in lines
    assert sorted(spec.out_dir.rglob("*")) == files                 # --status reads only

    ex = _Scripted()
    run_sweep(spec, executor=ex, log=quiet)
    assert ex.ids == []                                             # nothing rerun, renamed or added
    assert sorted(store.folder_ids()) == sorted([old, unspelt[1].id])
    plan = read_json(spec.out_dir / "plan.json")
    assert [(p["id"], p.get("folder")) for p in plan["points"]] == [(unspelt[0].id, old), (unspelt[1].id, None)]

    assert sweep_main([str(spec_path), "--report"]) == 0
    capsys.readouterr()
    with open(spec.out_dir / "summary.csv") as f:
        rows = [(r["point"], r["folder"], r["status"], r["final_test_acc"], r["wall_time_s"])
                for r in csv.DictReader(f)]
    assert rows == [(unspelt[0].id, old, "done", "0.5", "1.5"), (unspelt[1].id, unspelt[1].id, "done", "0.25", "1.5")]


def test_an_orphan_folder_of_another_config_or_damaged_is_not_taken_for_a_point(tmp_path):
    """Folders of no point are read for the config their result recorded: one of another config (dw_min = 0.05) and
    one whose point.json is no JSON (the point's earlier folder, damaged) stand for no point; both points are run,
    each in its own folder, and those folders are left as they were (counted as folders of no point)."""
    spec_path, spec, spelt, unspelt = _spelt_then_unspelt(tmp_path)
    store = SweepStore(spec.out_dir)
    third = load_spec(write_spec(tmp_path / "other", '[axes]\ndevice.dw_min = [0.05]\n', base=CROSSBAR)).points()[0]
    foreign = _write_as_before(store, third)            # no override at the preset's value: its id is its one id
    assert foreign == third.id not in (unspelt[0].id, unspelt[1].id)
    damaged = _write_as_before(store, spelt[0])
    (store.root / "points" / damaged / "point.json").write_text('{"status": "done", "metr')
    before = {name: (store.root / "points" / name / "point.json").read_bytes() for name in (foreign, damaged)}

    status = sweep_status(spec)
    assert [(ps.state, ps.folder) for ps in status.points] == [("pending", ""), ("pending", "")]
    assert status.other_points == 2
    ex = _Scripted()
    run_sweep(spec, executor=ex, log=quiet)
    assert ex.ids == [unspelt[0].id, unspelt[1].id]
    assert sorted(store.folder_ids()) == sorted([foreign, damaged, unspelt[0].id, unspelt[1].id])
    assert {name: (store.root / "points" / name / "point.json").read_bytes() for name in before} == before


def test_of_two_orphan_folders_of_a_point_the_first_by_name_is_read_and_its_own_folder_before_both(tmp_path):
    """Two folders of no point that recorded the config of the point without the override (a copy under another
    name): the first in sorted order is the point's; a point with a folder of its own is that folder, whatever
    orphan recorded its config."""
    spec_path, spec, spelt, unspelt = _spelt_then_unspelt(tmp_path)
    store = SweepStore(spec.out_dir)
    old = _write_as_before(store, spelt[0])                                     # 50 %
    first = _write_as_before(store, spelt[0], acc=0.125, folder="0" * 12)       # sorts before any hex id but 0…0
    _write_as_before(store, spelt[1], acc=0.25)                                 # its own folder
    _write_as_before(store, spelt[1], acc=0.875, folder="f" * 12)               # an orphan of the same config
    assert sorted([first, old]) == [first, old]
    status = sweep_status(spec)
    assert [(ps.state, ps.folder, ps.metrics["final_test_acc"]) for ps in status.points] == [
        ("done", first, 0.125), ("done", "", 0.25)]
    assert status.other_points == 2
