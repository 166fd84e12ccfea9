"""Sweeps under the mishaps of a shared machine: a full disk mid-sweep, a point that raises, a second sweep process
on the same folder, a spec edited between runs, damaged or foreign files in the folder, huge seeds and unicode
folder names."""
from __future__ import annotations

import contextlib
import csv
import errno
import importlib
import json
import os
import subprocess
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import imc_grapes.io as io_mod
import imc_grapes.sweep.store as store_mod
import imc_grapes.sweep.worker as worker_mod
from imc_grapes.config import TrainConfig
from imc_grapes.io import read_json
from imc_grapes.sweep import SpecError, SweepStore, load_spec, sweep_status
from imc_grapes.sweep.cli import main as sweep_main
from imc_grapes.sweep.worker import storage_error
from imc_grapes.train import train

from .test_sweep_run import REPO, TINY


def write_spec(path: Path, out: Path, axes: str, base: str = TINY) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'[sweep]\nout = "{out}"\n{base}\n[axes]\n{axes}\n', encoding="utf-8")
    return path


def results(out: Path) -> dict[str, bytes]:
    return {p.parent.name: p.read_bytes() for p in sorted((out / "points").glob("*/point.json"))}


def temp_files(out: Path) -> list[Path]:
    """Leftover temporary files of the atomic writes (``.<name>.<random hex>``)."""
    return [p for p in out.rglob(".*") if p.name != ".lock"]


def no_space_for(monkeypatch: pytest.MonkeyPatch, hit: Callable[[str], bool]) -> list[str]:
    """Make every atomic write whose path ``hit`` selects fail as on a full disk (OSError ENOSPC); returns the
    paths refused so far. The training run (``train``) and the sweep's store write through
    :func:`imc_grapes.io.write_bytes_atomic`."""
    real = io_mod.write_bytes_atomic
    refused: list[str] = []

    def write(path, data):
        if hit(str(path)):
            refused.append(str(path))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, data)

    monkeypatch.setattr(io_mod, "write_bytes_atomic", write)
    monkeypatch.setattr(store_mod, "write_bytes_atomic", write)
    return refused


def test_storage_errors_are_told_apart_from_a_points_own_errors():
    for code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        assert storage_error(OSError(code, os.strerror(code)))
    try:    # raised while handling one, or from one: still the disk
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("could not save") from inner
    except RuntimeError as exc:
        assert storage_error(exc)
    assert not storage_error(PermissionError(errno.EACCES, "Permission denied"))
    assert not storage_error(FileNotFoundError(errno.ENOENT, "No such file"))
    assert not storage_error(ValueError("bad value"))


def test_a_full_disk_while_a_point_trains_stops_the_sweep_and_the_rerun_completes(tmp_path, monkeypatch, capsys):
    """Before: every point after the disk filled up was recorded *failed* (OSError), the sweep went on through
    all of them and exited 0; a plain rerun then ran nothing."""
    out = tmp_path / "out"
    spec_path = write_spec(tmp_path / "s.toml", out, "lr = [0.1, 0.05, 0.02]")
    first, second, third = (p.id for p in load_spec(spec_path).points())
    refused = no_space_for(monkeypatch, lambda path: f"/{second}/run/" in path or f"/{third}/run/" in path)
    assert sweep_main([str(spec_path), "--jobs", "1", "--no-report"]) == 2
    err = capsys.readouterr().err
    assert f"point {second} (lr=0.05) could not write its files" in err and "No space left on device" in err
    assert "the sweep stopped after 1 of 3 point(s)" in err and "run the same command again" in err
    assert len(refused) == 1 and third not in refused[0]      # it stopped at once: the third point never ran
    spec = load_spec(spec_path)
    states = {ps.point.id: ps.state for ps in sweep_status(spec).points}
    assert states == {first: "done", second: "half-finished", third: "pending"}   # nothing recorded failed
    assert not (out / "points" / second / "point.json").exists() and temp_files(out) == []
    kept = results(out)[first]
    monkeypatch.undo()      # space freed
    assert sweep_main([str(spec_path), "--jobs", "1", "--no-report"]) == 0
    assert "1 half-finished to redo; running 2" in capsys.readouterr().out
    assert {ps.state for ps in sweep_status(spec).points} == {"done"}
    assert results(out)[first] == kept


def test_a_full_disk_while_writing_a_result_leaves_nothing_half_written(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    spec_path = write_spec(tmp_path / "s.toml", out, "lr = [0.1, 0.05]")
    no_space_for(monkeypatch, lambda path: path.endswith("point.json"))
    assert sweep_main([str(spec_path), "--jobs", "1"]) == 2     # before: a traceback, exit code 1
    err = capsys.readouterr().err
    assert err.startswith("imc-grapes sweep: error: cannot write the sweep's files in ") and "Traceback" not in err
    assert "No space left on device" in err and "Finished points are kept" in err
    assert results(out) == {} and temp_files(out) == []
    spec = load_spec(spec_path)
    assert [ps.state for ps in sweep_status(spec).points] == ["half-finished", "pending"]
    monkeypatch.undo()
    assert sweep_main([str(spec_path), "--jobs", "1", "--no-report"]) == 0
    assert [ps.state for ps in sweep_status(spec).points] == ["done", "done"]


def test_a_report_that_cannot_be_written_is_a_clear_error(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    spec_path = write_spec(tmp_path / "s.toml", out, "lr = [0.1]")
    assert sweep_main([str(spec_path), "--jobs", "1", "--no-report"]) == 0
    capsys.readouterr()
    no_space_for(monkeypatch, lambda path: path.endswith("summary.csv"))
    assert sweep_main([str(spec_path), "--report"]) == 2
    err = capsys.readouterr().err
    assert "cannot write the report in" in err and "No space left on device" in err and "Traceback" not in err


def test_a_point_that_raises_is_recorded_failed_with_its_traceback_and_retried_only_on_request(tmp_path, monkeypatch,
                                                                                             capsys):
    out = tmp_path / "out"
    spec_path = write_spec(tmp_path / "s.toml", out, "lr = [0.1, 0.05]")
    bad = load_spec(spec_path).points()[1].id
    real_train = worker_mod.train

    def flaky(cfg, run_dir, **kw):
        if cfg.lr == 0.05:
            raise ValueError("boom in the model")
        return real_train(cfg, run_dir, **kw)

    monkeypatch.setattr(worker_mod, "train", flaky)
    assert sweep_main([str(spec_path), "--jobs", "1", "--no-report"]) == 0   # a failed point is a result
    printed = capsys.readouterr().out
    assert "1 point(s) failed" in printed and "--retry-failed redoes them" in printed
    res = read_json(out / "points" / bad / "point.json")
    assert (res["status"], res["reason"], res["metrics"]) == ("failed", "ValueError: boom in the model", {})
    run = read_json(out / "points" / bad / "run.json")
    assert "Traceback" in run["traceback"] and "boom in the model" in run["traceback"]
    assert sweep_main([str(spec_path), "--jobs", "1", "--no-report"]) == 0      # a plain rerun keeps it
    assert "0 pending" in capsys.readouterr().out and read_json(out / "points" / bad / "point.json") == res
    monkeypatch.undo()
    assert sweep_main([str(spec_path), "--jobs", "1", "--no-report", "--retry-failed"]) == 0
    assert read_json(out / "points" / bad / "point.json")["status"] == "done"


def test_diverged_and_crashed_points_are_told_apart_and_retried_by_their_own_option(tmp_path, monkeypatch,
                                                                                    capsys):
    """A diverged point (NaN/Inf loss: the same again on a rerun) and a crashed one (an exception: often transient)
    were both ``failed`` and both redone by --retry-failed. Now point.json, run.json, summary.csv and --status say
    which; --retry-failed redoes the crashed point only, --retry-diverged the diverged one only."""
    out = tmp_path / "out"
    spec_path = write_spec(tmp_path / "s.toml", out, "lr = [0.1, 0.05, 1e12]")   # 1e12: the loss becomes NaN/Inf
    ok, crashed, diverged = (p.id for p in load_spec(spec_path).points())
    real_train = worker_mod.train
    calls: list[float] = []

    def counting(cfg, run_dir, **kw):
        calls.append(cfg.lr)
        return real_train(cfg, run_dir, **kw)

    def flaky(cfg, run_dir, **kw):
        if cfg.lr == 0.05:
            calls.append(cfg.lr)
            raise MemoryError("out of memory (by hand)")
        return counting(cfg, run_dir, **kw)

    monkeypatch.setattr(worker_mod, "train", flaky)
    assert sweep_main([str(spec_path), "--jobs", "1"]) == 0
    printed = capsys.readouterr().out
    assert "1 point(s) failed (crashed" in printed and "--retry-failed redoes them" in printed
    assert "1 point(s) diverged" in printed and "--retry-diverged redoes them" in printed
    want = {ok: ("done", ""), crashed: ("failed", "crashed"), diverged: ("failed", "diverged")}
    for pid, (status, failure) in want.items():
        res, run = read_json(out / "points" / pid / "point.json"), read_json(out / "points" / pid / "run.json")
        assert (res["status"], res["failure"], run["failure"]) == (status, failure, failure)
    assert read_json(out / "points" / crashed / "point.json")["reason"] == "MemoryError: out of memory (by hand)"
    assert read_json(out / "points" / diverged / "point.json")["reason"].startswith("diverged: ")
    with open(out / "summary.csv", encoding="utf-8") as f:
        assert {r["point"]: (r["status"], r["failure"]) for r in csv.DictReader(f)} == want
    assert sweep_main([str(spec_path), "--status"]) == 0
    text = capsys.readouterr().out
    assert "3 points — 1 done, 2 failed, 0 pending" in text
    crashed_part = text.split("failed, crashed")[1].split("failed, diverged")[0]
    diverged_part = text.split("failed, diverged")[1]
    assert crashed in crashed_part and diverged not in crashed_part and "MemoryError" in crashed_part
    assert diverged in diverged_part and crashed not in diverged_part and "diverged: " in diverged_part
    kept = results(out)

    calls.clear()
    monkeypatch.setattr(worker_mod, "train", counting)      # the memory is back
    assert sweep_main([str(spec_path), "--jobs", "1", "--no-report", "--retry-failed"]) == 0
    assert "1 done, 2 failed already (1 diverged, 1 crashed); running 1" in capsys.readouterr().out
    assert calls == [0.05]                                  # the crashed point only
    assert read_json(out / "points" / crashed / "point.json")["status"] == "done"
    assert results(out)[diverged] == kept[diverged]

    calls.clear()
    assert sweep_main([str(spec_path), "--jobs", "1", "--no-report", "--retry-diverged"]) == 0
    assert "2 done, 1 failed already (1 diverged, 0 crashed); running 1" in capsys.readouterr().out
    assert calls == [1e12]                                  # the diverged point only: it diverges again
    assert results(out)[diverged] == kept[diverged]


def test_a_non_finite_evaluation_is_a_divergence_and_the_sweep_says_so(tmp_path, monkeypatch, capsys):
    """An evaluation whose accuracy is NaN over a finite loss (a NaN/Inf evaluated output) stops the run as diverged
    (:func:`~imc_grapes.train.check_evaluation`): the point is recorded as ``diverged``, not ``crashed``, and the
    sweep's lines about diverged points (run summary, --status, --help) say "NaN/Inf loss or evaluated output", not
    only "NaN/Inf loss"."""
    train_mod = importlib.import_module("imc_grapes.train")      # (the package's ``train`` is the function)

    out = tmp_path / "out"
    spec_path = write_spec(tmp_path / "s.toml", out, "lr = [0.1, 0.05]")
    ok, bad = (p.id for p in load_spec(spec_path).points())
    real_train, real_evaluate = worker_mod.train, train_mod.evaluate
    poisoned = {"on": False}

    def evaluate(model, split, batch_size=1000):
        loss, acc = real_evaluate(model, split, batch_size)
        return (loss, float("nan")) if poisoned["on"] else (loss, acc)

    def train(cfg, run_dir, **kw):
        poisoned["on"] = cfg.lr == 0.05
        try:
            return real_train(cfg, run_dir, **kw)
        finally:
            poisoned["on"] = False

    monkeypatch.setattr(train_mod, "evaluate", evaluate)
    monkeypatch.setattr(worker_mod, "train", train)
    assert sweep_main([str(spec_path), "--jobs", "1", "--no-report"]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    res = read_json(out / "points" / bad / "point.json")
    assert (res["status"], res["failure"]) == ("failed", "diverged")
    assert res["reason"].startswith("diverged: evaluation accuracy became nan after epoch 1"), res["reason"]
    assert read_json(out / "points" / ok / "point.json")["status"] == "done"
    assert "1 point(s) diverged (NaN/Inf loss or evaluated output; a rerun of the same seed diverges again)" in printed
    assert sweep_main([str(spec_path), "--status"]) == 0
    assert "failed, diverged (NaN/Inf loss or evaluated output: a rerun diverges again" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        sweep_main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "diverged (NaN/Inf loss or evaluated output: deterministic for its seed" in help_text     # the epilog
    assert "that diverged (NaN/Inf loss or evaluated output: deterministic for a seed" in help_text  # --retry-diverged
    assert "(NaN/Inf loss)" not in help_text and "(NaN/Inf loss:" not in help_text


def test_a_point_json_without_a_failure_field_is_classified_by_its_reason(tmp_path, capsys):
    """A sweep folder written before the ``failure`` field existed: its failed points load, the reason decides
    (``diverged: ...`` diverged, anything else crashed), and the retry options follow that classification."""
    out = tmp_path / "out"
    spec_path = write_spec(tmp_path / "s.toml", out, "lr = [0.1, 0.05, 0.02]")
    spec = load_spec(spec_path)
    done, div, crash = spec.points()
    store = SweepStore(out)
    old = [(div, "diverged: loss became nan at epoch 1, batch 3"),
           (crash, "worker process died (killed by signal 9: SIGKILL) while running this point; rerun with "
                   "--retry-failed to try it again")]
    store.record(done, {"status": "done", "history": [{"epoch": 1, "test_acc": 0.5}]})
    for p, reason in old:       # as the previous version wrote them: no "failure" key
        (store.point_dir(p.id)).mkdir(parents=True)
        (store.point_dir(p.id) / "point.json").write_text(json.dumps(
            {"id": p.id, "status": "failed", "reason": reason, "params": p.params, "reference": False,
             "metrics": {}, "config": p.config.to_dict(), "data_root_resolved": None, "history": []}))
    failures = {ps.point.id: (ps.state, ps.failure) for ps in sweep_status(spec).points}
    assert failures == {done.id: ("done", ""), div.id: ("failed", "diverged"), crash.id: ("failed", "crashed")}
    assert store.read_result(div.id)["failure"] == "diverged"

    class Recording:
        name, ships_files = "recording", False

        def __init__(self):
            self.ids = []

        def run(self, tasks, on_start, on_result):    # no training: every task comes back done
            for t in tasks:
                self.ids.append(t["id"])
                on_start(t)
                on_result(t, {"id": t["id"], "status": "done", "history": [{"epoch": 1, "test_acc": 0.25}]})

    from imc_grapes.sweep import run_sweep

    ex = Recording()
    run_sweep(spec, executor=ex, retry_failed=True, log=lambda _m: None)
    assert ex.ids == [crash.id]
    ex = Recording()
    run_sweep(spec, executor=ex, retry_failed=True, log=lambda _m: None)
    assert ex.ids == []
    ex = Recording()
    run_sweep(spec, executor=ex, retry_failed=True, retry_diverged=True, log=lambda _m: None)
    assert ex.ids == [div.id]
    assert {ps.state for ps in sweep_status(spec).points} == {"done"}


LOCK_HOLDER = """
import sys, time
from imc_grapes.sweep import SweepStore
with SweepStore(sys.argv[1]).lock():
    print("locked", flush=True)
    time.sleep(120)
"""


@contextlib.contextmanager
def lock_held(out: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the sweep lock of ``out`` (:data:`LOCK_HOLDER`) while the block runs, then killed
    with SIGKILL (the OS releases its flock; its lock file stays)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(out)], stdout=subprocess.PIPE, text=True,
                              env=env)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        holder.kill()
        holder.wait(timeout=10)
        assert holder.stdout is not None
        holder.stdout.close()


def test_a_second_sweep_process_on_the_same_folder_is_refused_until_the_first_dies(tmp_path, capsys):
    out = tmp_path / "out"
    spec_path = write_spec(tmp_path / "s.toml", out, "lr = [0.1]")
    with lock_held(out) as holder:
        assert sweep_main([str(spec_path), "--jobs", "1"]) == 3
        assert f"another process (pid {holder.pid}) is running the sweep in {out}" in capsys.readouterr().err
        assert not (out / "points").exists() and not (out / "plan.json").exists()     # it touched nothing
        assert sweep_main([str(spec_path), "--status"]) == 0
        assert "a sweep process is running in this folder now" in capsys.readouterr().out
        assert sweep_main([str(spec_path), "--report"]) == 2       # no point has finished: nothing to report
        assert "a sweep process is running there now" in capsys.readouterr().err
        assert sorted(p.name for p in out.iterdir()) == [".lock"]
    assert sweep_main([str(spec_path), "--jobs", "1", "--no-report"]) == 0    # kill -9 released the lock
    assert [ps.state for ps in sweep_status(load_spec(spec_path)).points] == ["done"]


def test_report_on_a_folder_holding_only_the_lock_of_a_dead_sweep_says_a_sweep_stopped_before_its_first_point(
        tmp_path, capsys):
    """A sweep killed after it locked its folder but before it wrote plan.json leaves the lock file alone: an flock
    on ``.lock`` (released by the OS at the kill) in a file holding the process id. --report called such a folder
    "holds no sweep"; it now gives the message of a sweep stopped before its first point (exit 2, nothing written),
    also for the empty file of a process killed before it wrote its id. A ``.lock`` of other content, or a folder
    by that name, is no sweep's: "holds no sweep" as before. --status counts the points pending (no sweep running)."""
    out = tmp_path / "out"
    spec_path = write_spec(tmp_path / "s.toml", out, "lr = [0.1]")
    with lock_held(out) as holder:
        pass                                            # then kill -9: the lock is released, its file stays
    assert sorted(p.name for p in out.iterdir()) == [".lock"]
    assert (out / ".lock").read_text() == str(holder.pid)
    store = SweepStore(out)
    assert not store.is_running() and store.has_lock_file()
    stopped = (f"imc-grapes sweep: error: [sweep] out: no point of this sweep has finished in {out}, so there is "
               "nothing to report: give the folder the sweep ran in (--out), or run it (imc-grapes sweep "
               f"{spec_path}; it resumes there)\n")
    no_sweep = (f"imc-grapes sweep: error: [sweep] out: {out} holds no sweep, so no point of this sweep has run "
                "there and there is nothing to report: give the folder the sweep ran in (--out), or run it first "
                f"(imc-grapes sweep {spec_path})\n")

    def report() -> str:
        assert sweep_main([str(spec_path), "--report"]) == 2
        stdout, err = capsys.readouterr()
        assert stdout == ""
        return err

    assert report() == stopped
    assert sweep_main([str(spec_path), "--status"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"sweep 's' in {out}: 1 points — 0 done, 0 failed, 1 pending"
    (out / ".lock").write_text("")                      # killed before it wrote its pid
    assert store.has_lock_file() and report() == stopped
    (out / ".lock").write_text("not a pid\n")           # no sweep's file
    assert not store.has_lock_file() and report() == no_sweep
    (out / ".lock").unlink()
    (out / ".lock").mkdir()
    assert not store.has_lock_file() and report() == no_sweep
    assert sorted(p.name for p in out.iterdir()) == [".lock"] and not any((out / ".lock").iterdir())


def test_an_edited_spec_reuses_unchanged_points_and_ignores_the_others(tmp_path, capsys):
    """Points are found by the hash of their config: an edited spec reuses the points whose config it still has,
    runs the new ones, and never mixes the old ones into its status or report (they stay on disk, counted by a
    note); plots of axes it no longer has are removed from plots/, other files there kept."""
    out = tmp_path / "out"
    spec_path = write_spec(tmp_path / "s.toml", out, "lr = [0.1, 0.05]\nseed = [0, 1]")
    assert sweep_main([str(spec_path), "--jobs", "1"]) == 0
    assert (out / "plots" / "acc_vs_lr.png").exists()
    (out / "plots" / "mine.png").write_bytes(b"not the report's")
    old = results(out)
    capsys.readouterr()
    # edited: the lr axis taken out (lr = 0.05 in the base), one seed dropped, a batch_size axis added
    spec_path = write_spec(tmp_path / "s.toml", out, "batch_size = [25, 50]\nseed = [0]",
                           base=TINY.replace("batch_size = 25", "lr = 0.05"))
    spec = load_spec(spec_path)
    new_ids = [p.id for p in spec.points()]
    reused = [pid for pid in new_ids if pid in old]
    assert len(reused) == 1      # batch_size 25, seed 0, lr 0.05: the same config as before
    assert sweep_main([str(spec_path), "--jobs", "1"]) == 0
    printed = capsys.readouterr().out
    assert "2 points — 1 done, 0 failed already; running 1" in printed
    assert "note: 3 folder(s) in points/ belong to no point of this spec" in printed
    assert results(out)[reused[0]] == old[reused[0]]
    assert set(old) <= set(results(out))            # the old points are kept on disk
    with open(out / "summary.csv", newline="") as f:
        assert [r["point"] for r in csv.DictReader(f)] == new_ids       # and only this spec's are reported
    assert sorted(p.name for p in (out / "plots").iterdir()) == ["acc_vs_batch_size.png", "mine.png"]
    assert sweep_main([str(spec_path), "--status"]) == 0
    status = capsys.readouterr().out
    assert "2 points — 2 done, 0 failed, 0 pending" in status
    assert "3 folder(s) in points/ belong to no point" in status


def test_damaged_or_foreign_files_in_the_folder_do_not_break_status_report_or_resume(tmp_path, capsys):
    out = tmp_path / "out"
    spec_path = write_spec(tmp_path / "s.toml", out, "lr = [0.1, 0.05, 0.02]")
    a, b, c = (p.id for p in load_spec(spec_path).points())
    assert sweep_main([str(spec_path), "--jobs", "1", "--no-report"]) == 0
    (out / "points" / a / "run.json").write_text("[1, 2]")     # not an object (before: the report crashed)
    (out / "points" / "notes.txt").write_text("mine")
    (out / "points" / c).rename(out / "elsewhere")          # c's folder replaced by a link to another place
    (out / "points" / c).symlink_to(tmp_path / "missing")
    (out / "points" / b / "point.json").unlink()            # b half-finished, then a file in its folder's place
    shutil.rmtree(out / "points" / b)
    (out / "points" / b).write_text("a file where the folder should be")
    capsys.readouterr()
    assert sweep_main([str(spec_path), "--status"]) == 0
    assert "1 done, 0 failed, 2 pending" in capsys.readouterr().out
    assert sweep_main([str(spec_path), "--report"]) == 0
    with open(out / "summary.csv", newline="") as f:
        rows = {r["point"]: r for r in csv.DictReader(f)}
    assert rows[a]["status"] == "done" and rows[a]["wall_time_s"] == ""
    assert sweep_main([str(spec_path), "--jobs", "1", "--no-report"]) == 0   # before: NotADirectoryError
    assert [ps.state for ps in sweep_status(load_spec(spec_path)).points] == ["done"] * 3
    assert (out / "points" / b).is_dir() and not (out / "points" / c).is_symlink()
    assert (out / "elsewhere" / "point.json").exists() and (out / "points" / "notes.txt").read_text() == "mine"


def test_seeds_equal_modulo_2_32_train_the_same_network_so_a_seed_axis_rejects_them(tmp_path):
    cfg = dict(dataset="synthetic", hidden=[8], train_subset=60, test_subset=30, batch_size=20)
    runs = [train(TrainConfig(seed=s, **cfg), tmp_path / str(i), progress=False, log=lambda _m: None).history
            for i, s in enumerate((0, 2 ** 32, 1))]
    timings = ("time_s", "elapsed_s", "wall_time_s")
    strip = [[{k: v for k, v in row.items() if k not in timings} for row in h] for h in runs]
    assert strip[0] == strip[1] and strip[0] != strip[2]    # torch's CPU generator: the seed's low 32 bits
    for seeds, pair in (("[0, 1, 4294967296]", "0 and 4294967296"), ("[-1, 4294967295]", "-1 and 4294967295")):
        path = write_spec(tmp_path / "s.toml", tmp_path / "o", f"seed = {seeds}")
        with pytest.raises(SpecError, match=f"axis 'seed' lists the seeds {pair}, which give the same run"):
            load_spec(path)


def test_one_point_with_extreme_seeds_in_a_unicode_folder(tmp_path, capsys):
    """Degenerate grids (one value per axis; no axis at all) with the extreme seeds, in a folder named in unicode."""
    folder = tmp_path / "über ñ" / "日本"
    for i, axes in enumerate((f"seed = [{2 ** 64 - 1}]", f"seed = [{-2 ** 63}]\nlr = [0.1]", "")):
        out = folder / f"o{i}"
        spec_path = write_spec(folder / f"s{i}.toml", out, axes)
        assert sweep_main([str(spec_path), "--jobs", "1"]) == 0
        (point,) = load_spec(spec_path).points()
        res = json.loads((out / "points" / point.id / "point.json").read_text(encoding="utf-8"))
        assert res["status"] == "done" and res["config"]["seed"] == point.config.seed
        assert sweep_main([str(spec_path), "--status"]) == 0
        assert "1 points — 1 done, 0 failed, 0 pending" in capsys.readouterr().out
        assert (out / "summary.csv").exists() and list((out / "plots").glob("*.png"))


def test_status_of_a_folder_without_points_dir_has_no_foreign_note(tmp_path):
    spec = load_spec(write_spec(tmp_path / "s.toml", tmp_path / "none", "lr = [0.1]"))
    status = sweep_status(spec)
    assert status.other_points == 0 and "belong to no point" not in status.format()
    assert SweepStore(tmp_path / "none").folder_ids() == []


@pytest.mark.parametrize("files, theirs", [
    ({"summary.json": {"group_by": "optimizer", "summary": [], "runs": []}, "summary.csv": "optimizer\n"}, "train"),
    ({"results.json": {"spec": {}, "runs": []}, "report.md": "# compare"}, "compare"),
])
@pytest.mark.parametrize("given", [True, False])
def test_a_folder_of_another_command_is_refused_before_any_point_runs(tmp_path, monkeypatch, capsys, files, theirs,
                                                                       given):
    """A sweep into a train job's folder replaced its summary.csv with the sweep's (and filled it with points/): the
    folder, --out or [sweep] out, is refused as train, compare, experiment and compare-summary refuse it (exit 2,
    naming it and the command whose output it holds), by --report and --dry-run too; --status (which writes nothing)
    says that the folder holds no sweep. Nothing is written there."""
    out = tmp_path / "theirs"
    out.mkdir()
    for name, data in files.items():
        (out / name).write_text(data if isinstance(data, str) else json.dumps(data))
    spec_path = write_spec(tmp_path / "s.toml", out if not given else tmp_path / "unused", "lr = [0.1]")

    def no_run(*args, **kwargs):
        raise AssertionError("the sweep ran")

    monkeypatch.setattr("imc_grapes.sweep.runner.run_sweep", no_run)
    option = "--out" if given else "[sweep] out"
    argv = [str(spec_path), "--jobs", "1", *(["--out", str(out)] if given else [])]
    for mode in ([], ["--report"], ["--dry-run"]):
        assert sweep_main([*argv, *mode]) == 2
        assert capsys.readouterr() == ("", f"imc-grapes sweep: error: {option}: {out} holds the output of "
                                           f"`imc-grapes {theirs}`, whose files `imc-grapes sweep` would overwrite "
                                           "or mix its own with: give another --out"
                                           f"{'' if given else ' (or [sweep] out)'}\n")
    assert sweep_main([*argv, "--status"]) == 2
    assert capsys.readouterr() == ("", f"imc-grapes sweep: error: {option}: {out} holds the output of `imc-grapes "
                                       f"{theirs}`, not a sweep: give the folder of this sweep (--out)\n")
    assert sorted(p.name for p in out.iterdir()) == sorted(files)
    assert not (tmp_path / "unused").exists()


def test_a_sweep_folder_and_a_new_one_are_not_refused(tmp_path, capsys):
    """The check leaves a sweep its own folder (a rerun resumes it) and a new one; --status on a new folder lists
    the points as pending (the folder is not created)."""
    out = tmp_path / "out"
    spec_path = write_spec(tmp_path / "s.toml", out, "lr = [0.1]")
    assert sweep_main([str(spec_path), "--status"]) == 0 and not out.exists()
    assert sweep_main([str(spec_path), "--jobs", "1", "--no-report"]) == 0
    assert sweep_main([str(spec_path), "--jobs", "1", "--no-report"]) == 0     # its own folder: resumed
    assert sweep_main([str(spec_path), "--report"]) == 0 and (out / "summary.csv").is_file()
