"""The sweep report's numbers under awkward points — a failed point, one not run yet, a finished point whose accuracy
is NaN or missing, one seed left, an axis with one value: the means are over the points that have an accuracy, and
the printed table, the plots' legends and the heat maps say which points each mean leaves out and why.

Every expectation is computed by hand from the accuracies the tests write (no training: ``SweepStore.record``)."""
from __future__ import annotations

import csv
import math
import re
import statistics
from pathlib import Path
from typing import Any

import matplotlib.axes
import matplotlib.figure
import pytest

from imc_grapes.io import read_json
from imc_grapes.sweep import SweepStore, load_spec, sweep_status
from imc_grapes.sweep.report import format_summary, plot_axis, plot_diagnostics, plot_heatmap, write_report
from imc_grapes.sweep.spec import SweepSpec

from .test_sweep_run import TINY, write_spec

NAN = math.nan
MISSING = None      # a finished point whose history has no test accuracy (no final_test_acc metric)


def record(spec: SweepSpec, outcomes: dict[tuple[Any, ...], Any], key: tuple[str, ...],
           m_mean: dict[tuple[Any, ...], float] | None = None) -> None:
    """Write the points of ``spec`` whose values of ``key`` (axis names) are in ``outcomes``: a float = done with
    that final test accuracy (NaN kept), :data:`MISSING` = done without a test accuracy, ``"failed"`` = failed by
    divergence, ``"crashed"`` = failed by an exception; the points not listed stay pending. ``m_mean``: GRAPES's
    mean factor of layer 0 where a point records it."""
    store = SweepStore(spec.out_dir)
    for p in spec.points():
        k = tuple(p.params[name] for name in key)
        if k not in outcomes:
            continue
        acc = outcomes[k]
        if acc == "failed":
            store.record(p, {"status": "failed", "reason": "diverged: loss became nan (by hand)", "history": []})
            continue
        if acc == "crashed":
            store.record(p, {"status": "failed", "reason": "RuntimeError: boom (by hand)", "history": []})
            continue
        row: dict[str, Any] = {"epoch": 1, "train_loss": 0.5}
        if acc is not MISSING:
            row["test_acc"] = acc
        if m_mean and k in m_mean:
            row["M_mean/layers.0"] = m_mean[k]
        store.record(p, {"status": "done", "history": [row]})


def spy(monkeypatch, *names: str) -> list[tuple[str, tuple, dict]]:
    """Record the calls of the named ``matplotlib.axes.Axes`` methods (still drawing)."""
    calls: list[tuple[str, tuple, dict]] = []
    for name in names:
        original = getattr(matplotlib.axes.Axes, name)

        def f(self, *args, _name=name, _original=original, **kwargs):
            calls.append((_name, args, kwargs))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(matplotlib.axes.Axes, name, f)
    return calls


@pytest.fixture
def awkward(tmp_path: Path) -> SweepSpec:
    """lr 0.1: three seeds done (50, 60, 70 %); lr 0.2: seed 0 done (80 %), seed 1 failed, seed 2 not run yet;
    lr 0.3: seed 0 done (40 %), seed 1 done with a NaN accuracy, seed 2 done without one. ``hidden`` has one value.
    GRAPES's mean factor: 1.2, 1.4, NaN at lr 0.1; 1.5 at lr 0.2; 1.1, 1.7, none at lr 0.3."""
    spec = load_spec(write_spec(tmp_path, '[axes]\nlr = [0.1, 0.2, 0.3]\nhidden = [[8]]\noptimizer = ["sgd"]\n'
                                          'seed = [0, 1, 2]\n', base=TINY))
    record(spec, {(0.1, 0): 0.5, (0.1, 1): 0.6, (0.1, 2): 0.7, (0.2, 0): 0.8, (0.2, 1): "failed",
                  (0.3, 0): 0.4, (0.3, 1): NAN, (0.3, 2): MISSING}, ("lr", "seed"),
           m_mean={(0.1, 0): 1.2, (0.1, 1): 1.4, (0.1, 2): NAN, (0.2, 0): 1.5, (0.3, 0): 1.1, (0.3, 1): 1.7})
    return spec


def test_the_printed_table_says_which_seeds_each_mean_leaves_out(awkward):
    """A cell averaged over fewer seeds than it has said nothing: lr 0.2 read "runs 2, failed 1, 80.00" (its seed 2
    not run yet, unsaid) and lr 0.3 "runs 3, failed 0, 40.00" (the mean of one of three finished seeds). The table
    now has a pending column (when points have not run), marks such means ``(n=k of N)`` and lists their seeds."""
    text = format_summary(awkward)
    table, notes = text.split("\n\n")
    rows = [re.split(r" {2,}", line) for line in table.splitlines()]
    assert rows[0] == ["lr", "hidden", "optimizer", "backend", "runs", "failed", "pending", "test acc (%)"]
    assert rows[2:] == [["0.1", "[8]", "sgd", "digital", "3", "0", "0", "60.00 ± 10.00"],   # 50, 60, 70: std 10
                        ["0.2", "[8]", "sgd", "digital", "2", "1", "1", "80.00 (n=1 of 3)"],
                        ["0.3", "[8]", "sgd", "digital", "3", "0", "0", "40.00 (n=1 of 3)"]]
    assert notes.splitlines() == [
        "mean ± std over the seeds of a cell: sample std (n − 1); one run: the mean alone",
        "2 cell(s) average only some of their seeds (n=k of N): compare cells over the same seeds",
        "  lr=0.2 hidden=[8] optimizer=sgd backend=digital: mean over seed(s) 0; left out: seed 1 (failed: "
        "diverged), seed 2 (not run yet)",
        "  lr=0.3 hidden=[8] optimizer=sgd backend=digital: mean over seed(s) 0; left out: seed 1 (no finite "
        "accuracy), seed 2 (no finite accuracy)"]


def test_a_cell_of_finished_points_without_an_accuracy_says_so(tmp_path):
    """A cell whose points all finished without a finite accuracy is "—" like a failed one, but its runs and failed
    columns (1, 0) cannot tell why: the cell says it; no pending column when every point has run."""
    spec = load_spec(write_spec(tmp_path, "[axes]\nlr = [0.1, 0.2]\n", base=TINY))
    record(spec, {(0.1,): 0.25, (0.2,): NAN}, ("lr",))
    rows = [re.split(r" {2,}", line) for line in format_summary(spec).split("\n\n")[0].splitlines()]
    assert rows[0] == ["lr", "backend", "runs", "failed", "test acc (%)"]
    assert rows[2:] == [["0.1", "digital", "1", "0", "25.00"], ["0.2", "digital", "1", "0",
                                                                "— (1 done, no finite accuracy)"]]
    write_report(spec)
    with open(spec.out_dir / "summary.csv") as f:
        assert [r["final_test_acc"] for r in csv.DictReader(f)] == ["0.25", "nan"]


def test_accuracy_plots_state_n_and_what_each_line_leaves_out(awkward, monkeypatch):
    calls = spy(monkeypatch, "errorbar")
    status = sweep_status(awkward).points
    plot_axis(awkward, status, "lr", awkward.out_dir / "lr.png", ["hidden"])
    (_, args, kwargs), = calls
    assert list(args[0]) == [0.1, 0.2, 0.3]
    assert list(args[1]) == pytest.approx([60.0, 80.0, 40.0])
    assert list(kwargs["yerr"]) == pytest.approx([10.0, 0.0, 0.0])
    assert kwargs["label"] == ("sgd (n=1–3 per point; left out: 1 failed: diverged, 1 not run yet, 2 without a "
                               "finite acc)")
    calls.clear()
    plot_axis(awkward, status, "hidden", awkward.out_dir / "hidden.png", ["lr"])   # one value: every point there
    (_, args, kwargs), = calls
    # 50, 60, 70, 80, 40: mean 60, squared deviations 100 + 0 + 100 + 400 + 400 = 1000, sample std √(1000 / 4)
    assert list(args[1]) == pytest.approx([60.0]) and list(kwargs["yerr"]) == pytest.approx([math.sqrt(250.0)])
    assert kwargs["label"] == ("sgd (n=5 per point; left out: 1 failed: diverged, 1 not run yet, 2 without a "
                               "finite acc)")


def test_the_legends_name_each_failed_points_failure_as_the_table_notes_do(tmp_path, monkeypatch):
    """The table's notes said "failed: diverged" / "failed: crashed" per seed while the plots' legends said only
    "2 failed". Now the legends count the failed points by why, in the notes' words. lr 0.1: seed 0 done (50 %),
    seed 1 diverged, seeds 2 and 3 crashed; lr 0.2: seeds 0 and 1 done (70, 90 %), seed 2 crashed, seed 3 not run."""
    spec = load_spec(write_spec(tmp_path, "[axes]\nlr = [0.1, 0.2]\nseed = [0, 1, 2, 3]\n", base=TINY))
    record(spec, {(0.1, 0): 0.5, (0.1, 1): "failed", (0.1, 2): "crashed", (0.1, 3): "crashed", (0.2, 0): 0.7,
                  (0.2, 1): 0.9, (0.2, 2): "crashed"}, ("lr", "seed"))
    legends: list[list[str]] = []
    original = matplotlib.axes.Axes.legend

    def legend(self, *args, **kwargs):
        made = original(self, *args, **kwargs)
        legends.append([t.get_text() for t in made.get_texts()])
        return made

    monkeypatch.setattr(matplotlib.axes.Axes, "legend", legend)
    plot_axis(spec, sweep_status(spec).points, "lr", spec.out_dir / "lr.png")
    assert legends == [["sgd (n=1–2 per point; left out: 1 failed: diverged, 3 failed: crashed, 1 not run yet)"]]
    notes = format_summary(spec).split("\n\n")[1].splitlines()
    assert notes[2:] == [
        "  lr=0.1 backend=digital: mean over seed(s) 0; left out: seed 1 (failed: diverged), seed 2 (failed: "
        "crashed), seed 3 (failed: crashed)",
        "  lr=0.2 backend=digital: mean over seed(s) 0, 1; left out: seed 2 (failed: crashed), seed 3 (not run yet)"]


def test_heatmap_cells_and_crosses_name_the_kind_of_failure(tmp_path, monkeypatch):
    """A cell and a ✕ whose every run failed said "failed" / "all runs failed" without the kind the table's notes
    give. Now: "failed: diverged", "failed: crashed" or both kinds, and the ✕ of each kind its own marker and legend
    entry. Cells (lr 0.1 / 0.2 / 0.3 at momentum 0, 0.5): momentum 0 — diverged (both seeds), crashed (both), one
    of each; momentum 0.5 — 50 %, crashed and not run yet, 70 %."""
    spec = load_spec(write_spec(tmp_path, "[axes]\nlr = [0.1, 0.2, 0.3]\nmomentum = [0.0, 0.5]\nseed = [0, 1]\n",
                                base=TINY))
    record(spec, {(0.1, 0.0, 0): "failed", (0.1, 0.0, 1): "failed",
                  (0.2, 0.0, 0): "crashed", (0.2, 0.0, 1): "crashed",
                  (0.3, 0.0, 0): "crashed", (0.3, 0.0, 1): "failed",
                  (0.1, 0.5, 0): 0.5, (0.1, 0.5, 1): 0.5,
                  (0.2, 0.5, 0): "crashed",
                  (0.3, 0.5, 0): 0.7, (0.3, 0.5, 1): 0.7}, ("lr", "momentum", "seed"))
    texts: list[str] = []
    original = matplotlib.axes.Axes.text
    monkeypatch.setattr(matplotlib.axes.Axes, "text",
                        lambda self, x, y, s, *a, **k: texts.append(s) or original(self, x, y, s, *a, **k))
    plot_heatmap(spec, sweep_status(spec).points, "lr", "momentum", tmp_path / "h.png")
    assert texts == ["failed:\ndiverged", "failed:\ncrashed", "failed:\ndiverged, crashed",   # momentum 0
                     "50.0", "failed:\ncrashed", "70.0"]                                     # momentum 0.5

    calls = spy(monkeypatch, "plot")
    plot_axis(spec, sweep_status(spec).points, "lr", tmp_path / "lr.png")
    crosses = [(list(args[0]), args[2], kwargs["label"]) for _, args, kwargs in calls if list(args[1]) == [0.0] *
               len(args[0])]
    # the lr plot groups over momentum: lr 0.1 and 0.3 have a mean (50 %, 70 %); lr 0.2 has none (3 crashed)
    assert crosses == [([0.2], "+", "all runs failed: crashed")]
    calls.clear()
    plot_axis(spec, sweep_status(spec).points, "momentum", tmp_path / "m.png")
    crosses = [(list(args[0]), args[2], kwargs["label"]) for _, args, kwargs in calls if list(args[1]) == [0.0] *
               len(args[0])]
    assert crosses == [([0.0], "X", "all runs failed: diverged, crashed")]     # momentum 0: 3 diverged, 3 crashed


def test_the_crosses_of_each_kind_get_one_legend_entry(tmp_path, monkeypatch):
    """Two optimizers, each with a value of ``lr`` whose runs all diverged and one whose runs all crashed: four
    marks, but one legend entry per kind (the second optimizer's marks are not listed again). The two optimizers'
    marks at one value would hide each other: they stand 0.04 × the 0.1 spacing of the lr values left and right of
    it (:data:`~imc_grapes.plotting.DODGE_SHARE` = 0.08 apart)."""
    spec = load_spec(write_spec(tmp_path, '[axes]\nlr = [0.1, 0.2, 0.3]\noptimizer = ["sgd", "grapes"]\n'
                                          'seed = [0]\n', base=TINY))
    outcomes = {0.1: "failed", 0.2: "crashed", 0.3: 0.6}
    record(spec, {(lr, o, 0): out for lr, out in outcomes.items() for o in ("sgd", "grapes")},
           ("lr", "optimizer", "seed"))
    calls = spy(monkeypatch, "plot")
    plot_axis(spec, sweep_status(spec).points, "lr", tmp_path / "lr.png")
    crosses = [(pytest.approx(list(args[0])), args[2], kwargs["label"]) for _, args, kwargs in calls
               if list(args[1]) == [0.0]]
    assert crosses == [([0.096], "x", "all runs failed: diverged"), ([0.196], "+", "all runs failed: crashed"),
                       ([0.104], "x", "_nolegend_"), ([0.204], "+", "_nolegend_")]


def test_diagnostics_plot_states_n_and_the_points_without_the_value(awkward, monkeypatch):
    calls = spy(monkeypatch, "errorbar")
    plot_diagnostics(awkward, sweep_status(awkward).points, "lr", awkward.out_dir / "d.png")
    (_, args, kwargs), = calls
    assert list(args[0]) == [0.1, 0.2, 0.3]
    assert list(args[1]) == pytest.approx([1.3, 1.5, 1.4])          # (1.2 + 1.4) / 2, 1.5, (1.1 + 1.7) / 2
    assert list(kwargs["yerr"]) == pytest.approx([0.2 / math.sqrt(2), 0.0, 0.6 / math.sqrt(2)])
    assert kwargs["label"] == "sgd, layers.0 (n=1–2 per point; left out: 2 without a finite value)"


def test_heatmap_cells_say_how_many_runs_their_mean_covers(tmp_path, monkeypatch):
    """A cell averaged over some of its runs showed the mean alone; one whose points finished without a finite
    accuracy read "failed". Now: ``n=k/N`` under a partial mean, "no finite acc", "failed:\ndiverged" (the kind, as
    the table's notes name it), and "—" (not run)."""
    spec = load_spec(write_spec(tmp_path, "[axes]\nlr = [0.1, 0.2]\nmomentum = [0.0, 0.5, 0.9]\nseed = [0, 1]\n",
                                base=TINY))
    record(spec, {(0.1, 0.0, 0): 0.5, (0.1, 0.0, 1): 0.7,                # 60.0
                  (0.2, 0.0, 0): 0.9, (0.2, 0.0, 1): "failed",           # 90.0, n=1/2
                  (0.1, 0.5, 0): NAN, (0.1, 0.5, 1): MISSING,            # no finite acc
                  (0.2, 0.5, 0): "failed"},                              # failed (seed 1 not run yet)
           ("lr", "momentum", "seed"))                                   # momentum 0.9: not run yet
    texts: list[str] = []
    original = matplotlib.axes.Axes.text
    monkeypatch.setattr(matplotlib.axes.Axes, "text",
                        lambda self, x, y, s, *a, **k: texts.append(s) or original(self, x, y, s, *a, **k))
    calls = spy(monkeypatch, "imshow")
    plot_heatmap(spec, sweep_status(spec).points, "lr", "momentum", tmp_path / "h.png")
    grid = calls[0][1][0]
    assert grid.filled(-1).ravel().tolist() == pytest.approx([60.0, 90.0, -1, -1, -1, -1])
    assert texts == ["60.0", "90.0\nn=1/2", "no finite acc", "failed:\ndiverged", "—", "—"]   # momentum 0, 0.5, 0.9


def test_summary_csv_tells_the_epochs_asked_for_from_the_epochs_run(tmp_path):
    """``epochs`` (the config field) is what each point was asked to train, ``epochs_run`` how far it got: the epoch
    of its last evaluation, also for a point that diverged in its 2nd epoch after two evaluations of the 1st
    (1.0, where the summary used to show the configured 2); empty before any evaluation and for a pending point."""
    spec = load_spec(write_spec(tmp_path, "[axes]\nseed = [0, 1, 2, 3]\n",
                                base=TINY + "epochs = 2\nevals_per_epoch = 2\n"))
    store = SweepStore(spec.out_dir)
    rows = [{"epoch": e, "test_acc": 0.5, "train_loss": 0.5} for e in (0.5, 1.0, 1.5, 2.0)]
    done, diverged, early = spec.points()[:3]
    store.record(done, {"status": "done", "history": rows})
    store.record(diverged, {"status": "failed", "reason": "diverged: loss became nan in epoch 2", "history": rows[:2]})
    store.record(early, {"status": "failed", "reason": "diverged: loss became nan in epoch 1", "history": []})
    write_report(spec)
    with open(spec.out_dir / "summary.csv") as f:
        table = list(csv.DictReader(f))
    assert [(r["status"], r["epochs"], r["epochs_run"]) for r in table] == [
        ("done", "2", "2.0"), ("failed", "2", "1.0"), ("failed", "2", ""), ("pending", "2", "")]
    assert read_json(spec.out_dir / "points" / done.id / "point.json")["metrics"]["epochs_run"] == 2.0


def test_a_nan_among_the_tail_evaluations_makes_the_points_tail_accuracy_nan(tmp_path):
    """``tail_evals = 3``: a NaN test accuracy (``"nan"`` in ``point.json``) among a point's last 3 evaluations makes
    its ``tail_test_acc`` NaN, as compare's tail accuracy is, instead of the mean of the other two (0.75 here,
    which covered fewer evaluations than asked); the cell's mean leaves the point out and says so. A NaN before
    the tail does not count."""
    spec = load_spec(write_spec(tmp_path, "[axes]\nlr = [0.1]\nseed = [0, 1, 2]\n",
                                base=TINY + "evals_per_epoch = 4\n", sweep="tail_evals = 3"))
    accs = {0: [0.1, 0.5, 0.6, 0.7], 1: [NAN, 0.7, 0.8, 0.9], 2: [0.5, 0.6, NAN, 0.9]}
    store = SweepStore(spec.out_dir)
    for p in spec.points():
        history = [{"epoch": (i + 1) / 4, "test_acc": a, "train_loss": 0.5}
                   for i, a in enumerate(accs[p.params["seed"]])]
        store.record(p, {"status": "done", "history": history})
    assert '"test_acc": "nan"' in (spec.out_dir / "points" / spec.points()[2].id / "point.json").read_text()
    tails = {ps.point.params["seed"]: ps.metrics["tail_test_acc"] for ps in sweep_status(spec).points}
    assert tails[0] == pytest.approx(0.6) and tails[1] == pytest.approx(0.8) and math.isnan(tails[2])
    table, notes = format_summary(spec).split("\n\n")
    row = re.split(r" {2,}", table.splitlines()[2])
    assert row[-1] == f"70.00 ± {100 * statistics.stdev([0.6, 0.8]):.2f} (n=2 of 3)", row  # seeds 0, 1
    assert notes.splitlines()[-1].endswith("left out: seed 2 (no finite accuracy)")
    write_report(spec)
    with open(spec.out_dir / "summary.csv") as f:
        written = [float(r["tail_test_acc"]) for r in csv.DictReader(f)]
    assert written[:2] == pytest.approx([0.6, 0.8]) and math.isnan(written[2])


def test_a_report_made_while_a_sweep_runs_shows_its_points_in_progress_as_running(tmp_path):
    """``--report`` during a run counted the point being trained (a folder without a result) as "pending"; while a
    process holds the folder's lock it is now "running" (its own column, its status in summary.csv, the notes),
    and "pending" again (a leftover of a killed run) once the lock is free. The means and counts do not change."""
    spec = load_spec(write_spec(tmp_path, "[axes]\nlr = [0.1, 0.2]\nseed = [0, 1, 2]\n", base=TINY))
    record(spec, {(0.1, 0): 0.5, (0.1, 1): 0.7, (0.1, 2): "failed", (0.2, 0): 0.9}, ("lr", "seed"))
    store = SweepStore(spec.out_dir)
    in_progress = next(p for p in spec.points() if p.params == {"lr": 0.2, "seed": 1})
    store.prepare(in_progress)                              # handed out: config.json, no result yet
    assert store.state(in_progress.id) == "half-finished"

    def table() -> tuple[list[list[str]], list[str]]:
        text = format_summary(spec)
        head, notes = text.split("\n\n")
        return [re.split(r" {2,}", line) for line in head.splitlines()], notes.splitlines()[2:]

    def statuses() -> dict[tuple[float, int], str]:
        write_report(spec)
        with open(spec.out_dir / "summary.csv") as f:
            return {(float(r["lr"]), int(r["seed"])): r["status"] for r in csv.DictReader(f)}

    # 0.1: 50 and 70 % (sample std √((10² + 10²) / 1) = 14.14), seed 2 diverged; 0.2: 90 %, seed 1 in progress
    rows, notes = table()                                   # no sweep process: a leftover, to be redone
    assert rows[0] == ["lr", "backend", "runs", "failed", "pending", "test acc (%)"]
    assert rows[2:] == [["0.1", "digital", "3", "1", "0", "60.00 ± 14.14 (n=2 of 3)"],
                        ["0.2", "digital", "1", "0", "2", "90.00 (n=1 of 3)"]]
    assert notes[1] == "  lr=0.2 backend=digital: mean over seed(s) 0; left out: seed 1 (not run yet), seed 2 (not " \
                       "run yet)"
    assert statuses()[(0.2, 1)] == "half-finished"
    with store.lock():                                      # a sweep process runs in the folder
        rows, notes = table()
        assert rows[0] == ["lr", "backend", "runs", "failed", "running", "pending", "test acc (%)"]
        assert rows[2:] == [["0.1", "digital", "3", "1", "0", "0", "60.00 ± 14.14 (n=2 of 3)"],
                            ["0.2", "digital", "1", "0", "1", "1", "90.00 (n=1 of 3)"]]
        assert notes == ["  lr=0.1 backend=digital: mean over seed(s) 0, 1; left out: seed 2 (failed: diverged)",
                         "  lr=0.2 backend=digital: mean over seed(s) 0; left out: seed 1 (running), seed 2 (not "
                         "run yet)"]
        got = statuses()
        assert got == {(0.1, 0): "done", (0.1, 1): "done", (0.1, 2): "failed", (0.2, 0): "done",
                       (0.2, 1): "running", (0.2, 2): "pending"}
    assert statuses()[(0.2, 1)] == "half-finished"


def test_the_plots_of_a_report_made_while_a_sweep_runs_count_its_points_in_progress_as_running(tmp_path,
                                                                                              monkeypatch):
    """The table and summary.csv said "running" for a point in progress while a sweep process holds the lock, but
    the plots' legends still counted it "not run yet" and its heat-map cell read "—" (the plots were not told the
    lock's state). Now the legends, the bar chart and the cells agree with the table: "running" under the lock,
    "not run yet" / "—" once it is free (a leftover of a killed run). Counts by hand from the points written."""
    spec = load_spec(write_spec(tmp_path, "[axes]\nlr = [0.1, 0.2]\nmomentum = [0.0, 0.5]\nseed = [0, 1]\n",
                                base=TINY))
    # lr 0.1, momentum 0: 50 and 70 %; lr 0.2, momentum 0: 90 % and seed 1 in progress; lr 0.1, momentum 0.5: seed 0
    # diverged, seed 1 pending; lr 0.2, momentum 0.5: seed 0 in progress, seed 1 pending
    record(spec, {(0.1, 0.0, 0): 0.5, (0.1, 0.0, 1): 0.7, (0.2, 0.0, 0): 0.9, (0.1, 0.5, 0): "failed"},
           ("lr", "momentum", "seed"))
    store = SweepStore(spec.out_dir)
    for p in spec.points():
        if (p.params["lr"], p.params["momentum"], p.params["seed"]) in ((0.2, 0.0, 1), (0.2, 0.5, 0)):
            store.prepare(p)                                # handed out: config.json, no result yet
    texts: list[str] = []
    original = matplotlib.axes.Axes.text
    monkeypatch.setattr(matplotlib.axes.Axes, "text",
                        lambda self, x, y, s, *a, **k: texts.append(s) or original(self, x, y, s, *a, **k))
    calls = spy(monkeypatch, "errorbar")

    def report() -> tuple[dict[str, str], list[str], list[str]]:
        calls.clear()
        texts.clear()
        write_report(spec)
        labels = [kwargs["label"] for _, _, kwargs in calls]       # acc_vs_lr, then acc_vs_momentum
        table = [re.split(r" {2,}", line) for line in format_summary(spec).split("\n\n")[0].splitlines()]
        return dict(zip(["lr", "momentum"], labels)), list(texts), table[0]

    with store.lock():                                      # a sweep process runs in the folder
        labels, cells, head = report()
        assert head == ["lr", "momentum", "backend", "runs", "failed", "running", "pending", "test acc (%)"]
        # lr: 60 % (n=2) at 0.1, 90 % (n=1) at 0.2; momentum: 70 % (n=3) at 0, ✕ at 0.5
        assert labels == {"lr": "sgd (n=1–2 per point; left out: 1 failed: diverged, 2 running, 2 not run yet)",
                          "momentum": "sgd (n=3 per point; left out: 1 failed: diverged, 2 running, 2 not run yet)"}
        assert cells == ["60.0", "90.0\nn=1/2", "failed:\ndiverged", "running"]     # rows: momentum 0, 0.5; cols: lr
    labels, cells, head = report()                          # the lock is free: leftovers of a killed run
    assert head == ["lr", "momentum", "backend", "runs", "failed", "pending", "test acc (%)"]
    assert labels == {"lr": "sgd (n=1–2 per point; left out: 1 failed: diverged, 4 not run yet)",
                      "momentum": "sgd (n=3 per point; left out: 1 failed: diverged, 4 not run yet)"}
    assert cells == ["60.0", "90.0\nn=1/2", "failed:\ndiverged", "—"]


def test_the_bar_chart_of_a_report_made_while_a_sweep_runs_counts_its_points_in_progress_as_running(tmp_path,
                                                                                                    monkeypatch):
    """``accuracy.png`` (nothing but the seed swept): the bar's legend counts the point in progress as running while
    a sweep process holds the lock, and as not run yet once it is free."""
    spec = load_spec(write_spec(tmp_path, "[axes]\nseed = [0, 1, 2]\n", base=TINY))
    record(spec, {(0,): 0.4}, ("seed",))
    store = SweepStore(spec.out_dir)
    store.prepare(spec.points()[1])
    calls = spy(monkeypatch, "bar")
    with store.lock():
        write_report(spec)
    write_report(spec)
    assert [kwargs["label"] for _, _, kwargs in calls] == ["all (n=1 per bar; left out: 1 running, 1 not run yet)",
                                                           "all (n=1 per bar; left out: 2 not run yet)"]


def _saved_figures(monkeypatch) -> dict[str, Any]:
    """The figures the sweep report writes, by file name (still written)."""
    import imc_grapes.sweep.report as report_mod

    figures: dict[str, Any] = {}
    write = report_mod.write_figure_atomic

    def keep(path, fig, **kw):
        figures[Path(path).name] = fig
        return write(path, fig, **kw)

    monkeypatch.setattr(report_mod, "write_figure_atomic", keep)
    return figures


def _colours(ax) -> dict[str, str]:
    """An errorbar line's label (up to " (") -> its colour, as hex."""
    from matplotlib.colors import to_hex

    return {c.get_label().split(" (")[0]: to_hex(c.lines[0].get_color()) for c in ax.containers
            if hasattr(c, "has_yerr")}


def test_sweep_plots_colour_each_optimizer_as_every_report_and_put_a_long_legend_below(tmp_path, monkeypatch):
    """GRAPES listed first took matplotlib's first colour (blue, SGD's in the other reports); now SGD is blue and
    GRAPES orange in the accuracy and diagnostics plots whatever the order, a diagnostic's layers differ by marker
    and line style, not colour, and a legend of more than three entries stands below the axes (inside it covered
    points), clear of the x label."""
    from matplotlib.colors import to_hex

    spec = load_spec(write_spec(tmp_path, '[axes]\nlr = [0.1, 0.2]\noptimizer = ["grapes", "sgd"]\nseed = [0, 1]\n',
                                base=TINY))
    outcomes = {(lr, opt, s): 0.5 + lr + s / 100 for lr in (0.1, 0.2) for opt in ("grapes", "sgd") for s in (0, 1)}
    record(spec, outcomes, ("lr", "optimizer", "seed"), m_mean={k: 1.5 for k in outcomes})
    figures = _saved_figures(monkeypatch)
    status = sweep_status(spec).points
    plot_axis(spec, status, "lr", spec.out_dir / "lr.png")
    ax = figures["lr.png"].axes[0]
    assert _colours(ax) == {"grapes": to_hex("tab:orange"), "sgd": to_hex("tab:blue")}
    assert ax.get_legend() is not None
    plot_diagnostics(spec, status, "lr", spec.out_dir / "d.png")
    (dax,) = figures["d.png"].axes
    assert _colours(dax) == {"grapes, layers.0": to_hex("tab:orange"), "sgd, layers.0": to_hex("tab:blue")}

    many = load_spec(write_spec(tmp_path / "many", '[axes]\nlr = [0.1, 0.2]\noptimizer = ["sgd", "grapes"]\n'
                                                   'seed = [0]\n', base=TINY + 'backend = "crossbar"\n',
                                sweep="reference = true"))
    record(many, {(lr, opt, 0): 0.6 for lr in (0.1, 0.2) for opt in ("sgd", "grapes")}, ("lr", "optimizer", "seed"))
    plot_axis(many, sweep_status(many).points, "lr", many.out_dir / "lr.png")
    fig = figures["lr.png"]
    ax = fig.axes[0]
    fig.canvas.draw()
    legend, label = ax.get_legend().get_window_extent(), ax.xaxis.label.get_window_extent()
    assert len(ax.get_legend().get_texts()) == 4                 # 2 optimizers × (analog, ideal digital)
    assert legend.y1 <= label.y0 and legend.y0 >= 0              # below the x label, inside the figure


def test_the_optimizer_bar_chart_colours_bars_by_optimizer_and_hatches_the_digital_reference(tmp_path, monkeypatch):
    from matplotlib.colors import to_hex

    spec = load_spec(write_spec(tmp_path, '[axes]\noptimizer = ["grapes", "sgd"]\nseed = [0, 1]\n',
                                base=TINY + 'backend = "crossbar"\n', sweep="reference = true"))
    record(spec, {(o, s): 0.5 for o in ("grapes", "sgd") for s in (0, 1)}, ("optimizer", "seed"))
    figures = _saved_figures(monkeypatch)
    write_report(spec)
    ax = figures["accuracy.png"].axes[0]
    bars = [(to_hex(p.get_facecolor()), p.get_hatch() or "") for p in ax.patches]
    assert bars == [(to_hex("tab:orange"), ""), (to_hex("tab:blue"), ""), (to_hex("tab:orange"), "//"),
                    (to_hex("tab:blue"), "//")]                 # analog: plain; ideal digital: hatched
    assert [t.get_text().split(" (")[0] for t in ax.get_legend().get_texts()] == ["analog", "ideal digital"]
    assert ax.get_ylim()[0] == 0.0


def test_equal_diagnostic_lines_are_dodged_in_log_space_and_others_stay_on_their_values(tmp_path, monkeypatch):
    """SGD's and the layer-mean control's ``layers.1`` mean factor are equal (1.0 at every lr: GRAPES leaves the
    last layer alone): drawn at the same x the later line hid the earlier one. On the log lr axis (0.01, 0.1, 1:
    one decade between neighbours) the two stand 0.04 decade left and right of each value; the lines that differ
    (``layers.0``: 0.9 and 1.3) stay on their values."""
    from imc_grapes.sweep.runner import PointStatus

    spec = load_spec(write_spec(tmp_path, '[axes]\nlr = [0.01, 0.1, 1.0]\noptimizer = ["sgd", "layer-mean"]\n'
                                          'seed = [0]\n', base=TINY))
    layer0 = {"sgd": 0.9, "layer-mean": 1.3}
    status = [PointStatus(p, "done", metrics={"final_test_acc": 0.5, "final_M_mean/layers.0": layer0[
        p.config.optimizer], "final_M_mean/layers.1": 1.0}) for p in spec.points()]
    figures = _saved_figures(monkeypatch)
    plot_diagnostics(spec, status, "lr", spec.out_dir / "d.png")
    (ax,) = figures["d.png"].axes
    assert ax.get_xscale() == "log"
    xs = {c.get_label().split(" (")[0]: list(c.lines[0].get_xdata()) for c in ax.containers}
    values = [0.01, 0.1, 1.0]
    assert xs["sgd, layers.0"] == values and xs["layer-mean, layers.0"] == values
    assert xs["sgd, layers.1"] == pytest.approx([v * 10 ** -0.04 for v in values])
    assert xs["layer-mean, layers.1"] == pytest.approx([v * 10 ** 0.04 for v in values])
    assert [list(c.lines[0].get_ydata()) for c in ax.containers if "layers.1" in c.get_label()] == [[1.0] * 3] * 2


def test_equal_horizontal_references_take_turns_in_their_dashes(tmp_path, monkeypatch):
    """On a hardware axis each optimizer's ideal-digital reference is one horizontal line; SGD's and the layer-mean
    control's are equal (80 %), and a sideways shift cannot separate horizontal lines: their dashes alternate
    (4 pt dash, 4 pt gap, the second line's pattern 4 pt on), so both colours show along the line. A reference
    that differs (GRAPES, 90 %) stays plainly dashed."""
    from imc_grapes.sweep.runner import PointStatus

    spec = load_spec(write_spec(tmp_path, '[axes]\ndevice.dw_min = [0.002, 0.02]\n'
                                          'optimizer = ["sgd", "layer-mean", "grapes"]\n',
                                base=TINY + 'backend = "crossbar"\n', sweep="reference = true"))
    digital, analog = {"sgd": 0.8, "layer-mean": 0.8, "grapes": 0.9}, {"sgd": 0.4, "layer-mean": 0.5, "grapes": 0.6}
    status = [PointStatus(p, "done", metrics={"final_test_acc": (digital if p.config.backend == "digital" else
                                                                 analog)[p.config.optimizer]})
              for p in spec.points()]
    calls = spy(monkeypatch, "axhline")
    plot_axis(spec, status, "device.dw_min", tmp_path / "acc.png")
    styles = {kwargs["label"].split(",")[0]: kwargs["linestyle"] for _, _, kwargs in calls}
    assert styles == {"sgd": (0.0, (4.0, 4.0)), "layer-mean": (4.0, (4.0, 4.0)), "grapes": "--"}


def test_heatmap_cells_of_values_no_sampled_point_has_are_blank_not_not_run_yet(tmp_path, monkeypatch):
    """A random design draws few of the pairs of values the heat map's grid crosses: 3 draws of two sampled axes give
    a 3 × 3 grid with 3 points. Its other 6 cells read "—" ("not run yet", which they never will be); now they are
    left blank and the title says what a blank cell means (and no longer explains a "—" that no cell shows)."""
    path = write_spec(tmp_path, "[axes]\nlr = { log_uniform = [0.01, 0.1] }\nmomentum = { uniform = [0.0, 0.9] }\n"
                                "[sample]\nn = 3\nseed = 0\n", base=TINY)
    spec = load_spec(path)
    points = spec.points()
    assert len(points) == 3
    assert len({p.params["lr"] for p in points}) == len({p.params["momentum"] for p in points}) == 3
    record(spec, {(p.params["lr"], p.params["momentum"]): acc for p, acc in zip(points, (0.5, 0.6, 0.7))},
           ("lr", "momentum"))
    texts: list[str] = []
    original = matplotlib.axes.Axes.text
    monkeypatch.setattr(matplotlib.axes.Axes, "text",
                        lambda self, x, y, s, *a, **k: texts.append(s) or original(self, x, y, s, *a, **k))
    titles: list[str] = []
    suptitle = matplotlib.figure.Figure.suptitle
    monkeypatch.setattr(matplotlib.figure.Figure, "suptitle",
                        lambda self, t, *a, **k: titles.append(t) or suptitle(self, t, *a, **k))
    calls = spy(monkeypatch, "imshow")
    plot_heatmap(spec, sweep_status(spec).points, "lr", "momentum", tmp_path / "h.png")
    assert sorted(texts) == ["50.0", "60.0", "70.0"]          # one text per point; the 6 empty cells have none
    grid = calls[0][1][0]
    assert sorted(grid.compressed().tolist()) == pytest.approx([50.0, 60.0, 70.0])
    assert int(grid.mask.sum()) == 6
    (title,) = titles
    assert "blank = no point of the sweep has these values" in title.replace("\n", " ")
    assert "not run yet" not in title

    texts.clear()
    titles.clear()
    (spec.out_dir / "points" / points[2].id / "point.json").unlink()   # half-finished (not run yet): "—" again
    plot_heatmap(spec, sweep_status(spec).points, "lr", "momentum", tmp_path / "h.png")
    assert sorted(texts) == ["50.0", "60.0", "—"]
    assert "— = not run yet; blank = no point of the sweep has these values" in titles[0].replace("\n", " ")


def test_a_report_without_any_plot_says_why(tmp_path, capsys):
    """Every point failed (or ended without a finite accuracy): the report wrote summary.csv and no plot, and said
    only "wrote .../summary.csv", as if the plots had been forgotten. Now it says why there are none; once a point
    has an accuracy, its plot is listed and the note is gone."""
    from imc_grapes.sweep.cli import main

    path = write_spec(tmp_path, "[axes]\nlr = [0.1, 0.2]\n", base=TINY)
    spec = load_spec(path)
    record(spec, {(0.1,): "failed", (0.2,): NAN}, ("lr",))
    assert main([str(path), "--report"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-2:] == [f"wrote {spec.out_dir / 'summary.csv'}",
                        "no plots: no point has finished with a finite accuracy (yet)"]
    record(spec, {(0.2,): 0.5}, ("lr",))
    assert main([str(path), "--report"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == f"wrote {spec.out_dir / 'summary.csv'}, {spec.out_dir / 'plots' / 'acc_vs_lr.png'}"


def test_write_report_refuses_a_folder_where_no_point_has_finished_as_the_command_does(tmp_path):
    """``write_report`` (the Python call) wrote a summary.csv of pending points where nothing of the sweep had
    finished, into a folder it created, while ``--report`` refused. It raises :class:`NothingToReportError` (a
    ValueError) with the command's check (``nothing_to_report``), naming ``out_dir`` and the folder and what to
    do from Python, and writes or creates nothing; once a point has finished the report is written."""
    from imc_grapes.sweep import NothingToReportError

    spec = load_spec(write_spec(tmp_path, "[axes]\nlr = [0.1, 0.2]\n", base=TINY))
    out = spec.out_dir
    never_ran = ("so no point of this sweep has run there and there is nothing to report: give the folder the sweep "
                 "ran in (out_dir), or run it first (run_sweep)")
    typo = tmp_path / "typo" / "o"
    for folder, message in [(typo, f"out_dir: {typo} does not exist, {never_ran}"),
                            (out, f"out_dir: {out} does not exist, {never_ran}")]:
        with pytest.raises(NothingToReportError) as info:
            write_report(spec, folder if folder == typo else None)
        assert str(info.value) == message and isinstance(info.value, ValueError)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]
    out.mkdir()
    with pytest.raises(NothingToReportError, match=re.escape(f"out_dir: {out} holds no sweep, {never_ran}")):
        write_report(spec)
    store = SweepStore(out)
    store.write_plan(spec, spec.points())                  # a sweep stopped before its first point
    with pytest.raises(NothingToReportError) as info:
        write_report(spec)
    assert str(info.value) == (f"out_dir: no point of this sweep has finished in {out}, so there is nothing to "
                               "report: give the folder the sweep ran in (out_dir), or run it (run_sweep; it resumes "
                               "there)")
    first = spec.points()[0]
    store.prepare(first)                                   # handed out by a sweep process running now
    with store.lock(), pytest.raises(NothingToReportError) as info:
        write_report(spec)
    assert str(info.value) == (f"out_dir: no point of this sweep has finished in {out} yet, so there is nothing to "
                               "report: a sweep process is running there now; report when a point has finished "
                               "(sweep_status shows where it stands)")
    assert sorted(p.name for p in out.iterdir()) == [".lock", "plan.json", "points"]
    store.record(first, {"status": "done", "history": [{"epoch": 1, "test_acc": 0.75}]})
    assert [p.name for p in write_report(spec)] == ["summary.csv", "acc_vs_lr.png"]
    with open(out / "summary.csv") as f:
        assert [(r["lr"], r["status"], r["final_test_acc"]) for r in csv.DictReader(f)] == [
            ("0.1", "done", "0.75"), ("0.2", "pending", "")]
