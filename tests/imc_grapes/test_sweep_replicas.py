"""``imc-grapes sweep --replicas R``: seed siblings run as one replica batch, each point still gets its own
folder and result, with the metrics the replica trainer gives when called directly; unsupported points run alone;
a failing batch marks all its points failed."""
from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import torch

from imc_grapes.config import TrainConfig
from imc_grapes.replicas import train_replicas
from imc_grapes.sweep import SweepStore, execute_group, load_spec, replica_groups, run_sweep
from imc_grapes.sweep.cli import main as sweep_main

SPEC = """
[base]
dataset = "synthetic"
backend = "crossbar"
hidden = [8]
train_subset = 100
test_subset = 60
batch_size = 25
evals_per_epoch = 2
analog = {{tile_size = 16}}

[axes]
optimizer = ["grapes", "grapes-local"]
seed = [0, 1, 2]
"""


def write_spec(folder: Path) -> Path:
    path = folder / "seeds.toml"
    path.write_text(f'[sweep]\nout = "{folder / "out"}"\n' + SPEC.format())
    return path


def no_time(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in ("time_s", "elapsed_s", "wall_time_s")} for row in history]


def test_grouping_even_batches_and_singles(tmp_path) -> None:
    spec = load_spec(write_spec(tmp_path))
    points = spec.points()
    batches = replica_groups(points, 2)
    grouped = [[p.config.seed for p in b] for b, g in batches if g]
    alone = [(p.config.optimizer, p.config.seed) for b, g in batches if not g for p in b]
    assert grouped == [[0, 1], [2]]                                  # 3 grapes seeds in batches of <= 2
    assert sorted(alone) == [("grapes-local", s) for s in (0, 1, 2)]  # not supported: one by one
    assert [len(b) for b, g in replica_groups(points, 4) if g] == [3]
    assert all(not g for b, g in replica_groups(points, 1))           # default: every point alone
    lone = [p for p in points if p.config.optimizer == "grapes"][2]   # e.g. the one seed left to run on a resume
    assert replica_groups([lone], 16) == [([lone], True)]               # still a replica: the same numbers


def test_sweep_with_replicas_matches_the_replica_trainer(tmp_path) -> None:
    spec_path = write_spec(tmp_path)
    assert sweep_main([str(spec_path), "--replicas", "2", "--jobs", "1", "--no-report"]) == 0
    spec = load_spec(spec_path)
    store = SweepStore(tmp_path / "out")
    points = spec.points()
    assert len(list((tmp_path / "out" / "points").glob("*/point.json"))) == len(points) == 6
    for p in points:
        result = store.read_result(p.id)
        assert result is not None and result["status"] == "done", result
        run = json.loads((store.point_dir(p.id) / "run.json").read_text())
        run_results = json.loads((store.run_dir(p.id) / "results.json").read_text())
        if p.config.optimizer == "grapes":
            assert run["engine"] == "replicas" and run_results["engine"] == "replicas"
            direct = train_replicas([p.config], log=lambda _m: None)[0]    # a replica's numbers are its own
            assert result["history"] == no_time(direct.history)
            assert result["metrics"]["final_test_acc"] == direct.history[-1]["test_acc"]
        else:
            assert run["engine"] == "train" and "engine" not in run_results
    # resumed: nothing left to run
    assert sweep_main([str(spec_path), "--replicas", "2", "--jobs", "1", "--no-report"]) == 0


class Crashing:
    """An executor whose workers die: every task comes back as a crash outcome (as executors report it)."""

    name, ships_files = "crashing", False

    def run(self, tasks, on_start, on_result):
        for t in tasks:
            on_start(t)
            on_result(t, {"id": t["id"], "status": "failed", "reason": "worker process died", "history": [],
                          "files": {}, "wall_time_s": None, "host": None, "pid": None, "traceback": ""})


def test_a_failing_batch_marks_all_its_points_failed(tmp_path) -> None:
    spec = load_spec(write_spec(tmp_path))
    status = run_sweep(spec, executor=Crashing(), replicas=3, log=lambda _m: None)
    assert status.complete and status.count("failed") == 6
    assert {p.reason for p in status.points} == {"worker process died"}
    assert {p.failure for p in status.points} == {"crashed"}        # not a divergence: --retry-failed redoes them


def test_group_outcome_ships_files_without_a_run_dir() -> None:
    cfgs = [TrainConfig(dataset="synthetic", backend="crossbar", hidden=(8,), train_subset=50, test_subset=20,
                        batch_size=25, analog={"tile_size": 16}, seed=s) for s in (0, 1)]
    task = {"id": "g", "config": cfgs[0].to_dict(),
            "group": [{"id": f"p{s}", "config": c.to_dict(), "run_dir": None} for s, c in enumerate(cfgs)]}
    out = execute_group(task)
    assert [o["id"] for o in out["outcomes"]] == ["p0", "p1"]
    for o in out["outcomes"]:
        assert o["status"] == "done" and o["engine"] == "replicas"
        assert set(o["files"]) == {"metrics.csv", "results.json"}
        assert json.loads(o["files"]["results.json"])["history"] == o["history"]
    bad = {**task, "group": [{**task["group"][0]}, {**task["group"][1], "config": {**cfgs[1].to_dict(), "lr": 1.0}}]}
    failed = execute_group(bad)["outcomes"]
    assert all(o["status"] == "failed" and "differ only in 'seed'" in o["reason"] for o in failed)
    assert {o["failure"] for o in failed} == {"crashed"}            # the batch raised: a crash


def test_a_diverged_replica_is_recorded_diverged_the_others_done(monkeypatch) -> None:
    """train_replicas reports a replica whose loss became NaN/Inf with status ``diverged`` (no exception): its
    point fails as ``diverged`` (kept by --retry-failed), its batch siblings are done. (The bounded crossbar weights
    keep a tiny run's loss finite even at a huge lr, so the trainer's result is given here.)"""
    import imc_grapes.replicas as replicas_mod

    def fake(cfgs, dirs, **kw):
        return [SimpleNamespace(status="diverged" if c.seed == 1 else "completed", history=[{"epoch": 1.0}],
                                message="loss became nan at epoch 1") for c in cfgs]

    monkeypatch.setattr(replicas_mod, "train_replicas", fake)
    cfgs = [TrainConfig(dataset="synthetic", backend="crossbar", hidden=(8,), analog={"tile_size": 16}, seed=s)
            for s in (0, 1)]
    task = {"id": "g", "config": cfgs[0].to_dict(),
            "group": [{"id": f"p{s}", "config": c.to_dict(), "run_dir": None} for s, c in enumerate(cfgs)]}
    out = execute_group(task)["outcomes"]
    assert [(o["status"], o["failure"], o["reason"]) for o in out] == [
        ("done", "", ""), ("failed", "diverged", "diverged: loss became nan at epoch 1")]


def test_a_replica_that_diverged_before_its_batch_raised_stays_diverged(tmp_path, monkeypatch) -> None:
    """A batch that raised (out of memory, a bug) recorded every point ``crashed`` with the batch's reason, also a
    replica that had diverged before: --retry-failed then redid it, and it diverged again. Now that one stays
    ``diverged`` with its own reason and rows (train_replicas wrote them into its results.json when it diverged),
    the others are ``crashed``. The real trainer runs; only the divergence (seed 1's loss NaN from global step 3,
    after the first evaluation at step 2 of 4) and the exception (the second evaluation raises) are forced: the
    bounded crossbar weights keep a tiny run's loss finite even at a huge lr."""
    import imc_grapes.replicas as replicas_mod

    observe, evaluate = replicas_mod._LossWatch.observe, replicas_mod._evaluate
    evals = []

    def nan_from_step_3(self, per, step):
        return observe(self, torch.where(torch.tensor([False, step >= 3]), math.nan, per), step)

    def second_eval_raises(*args, **kwargs):
        evals.append(1)
        if len(evals) == 2:
            raise RuntimeError("out of memory (by hand)")
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(replicas_mod._LossWatch, "observe", nan_from_step_3)
    monkeypatch.setattr(replicas_mod, "_evaluate", second_eval_raises)
    cfgs = [TrainConfig(dataset="synthetic", backend="crossbar", hidden=(8,), train_subset=100, test_subset=20,
                        batch_size=25, evals_per_epoch=2, analog={"tile_size": 16}, seed=s) for s in (0, 1)]
    for run_dir in (tmp_path, None):                 # a worker that writes into the sweep folder, one that ships
        task = {"id": "g", "config": cfgs[0].to_dict(),
                "group": [{"id": f"p{s}", "config": c.to_dict(), "run_dir": run_dir and str(run_dir / f"p{s}")}
                          for s, c in enumerate(cfgs)]}
        evals.clear()
        crashed, diverged = execute_group(task)["outcomes"]
        assert (crashed["status"], crashed["failure"], crashed["reason"]) == (
            "failed", "crashed", "RuntimeError: out of memory (by hand)")
        assert "out of memory (by hand)" in crashed["traceback"]
        assert (diverged["status"], diverged["failure"], diverged["traceback"]) == ("failed", "diverged", "")
        # 4 steps of 25 per epoch: step 3 is the first of the second half, epoch 1
        assert diverged["reason"] == f"diverged: loss became nan at epoch 1, step 3 (lr={cfgs[1].lr}); lower the lr"
        # both got their evaluation at step 2 (epoch 0.5) before the divergence and the exception, nothing after
        assert [row["epoch"] for row in crashed["history"]] == [row["epoch"] for row in diverged["history"]] == [0.5]
        assert not crashed["storage_error"] and not diverged["storage_error"]


def test_a_dead_worker_keeps_a_replica_that_had_diverged_diverged(tmp_path) -> None:
    """A batch whose worker died comes back without per-point outcomes: its points are ``crashed`` with the
    executor's reason, except one whose results.json (in the sweep folder) says that the replica had diverged
    before: ``diverged`` with its own reason and rows."""
    spec = load_spec(write_spec(tmp_path))
    store = SweepStore(tmp_path / "out")

    class DiesAfterADivergence(Crashing):
        def run(self, tasks, on_start, on_result):
            for t in tasks:
                on_start(t)
                for sub in t.get("group", [])[1:2]:          # the batch's 2nd replica diverged, then the worker died
                    run_dir = Path(sub["run_dir"])
                    run_dir.mkdir(parents=True)
                    (run_dir / "results.json").write_text(json.dumps(
                        {"status": "diverged", "message": "loss became inf at epoch 1, step 2 (lr=0.01); lower the lr",
                         "history": [{"epoch": 0.5, "test_acc": 0.25}]}))
                on_result(t, {"id": t["id"], "status": "failed", "reason": "worker process died", "history": [],
                              "files": {}, "wall_time_s": None, "host": None, "pid": None, "traceback": ""})

    status = run_sweep(spec, executor=DiesAfterADivergence(), replicas=3, log=lambda _m: None)
    got = {(p.point.config.optimizer, p.point.config.seed): (p.failure, p.reason) for p in status.points}
    died = ("crashed", "worker process died")
    assert got == {("grapes", 0): died, ("grapes", 1): ("diverged", "diverged: loss became inf at epoch 1, step 2 "
                                                                    "(lr=0.01); lower the lr"),
                   ("grapes", 2): died, ("grapes-local", 0): died, ("grapes-local", 1): died, ("grapes-local", 2): died}
    p1 = next(p for p in status.points if p.point.config.optimizer == "grapes" and p.point.config.seed == 1)
    assert store.read_result(p1.point.id)["history"] == [{"epoch": 0.5, "test_acc": 0.25}]
