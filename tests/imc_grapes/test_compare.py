"""The compare job end to end on the synthetic set: every promised file, lr tuned on validation, resume."""
import csv
import dataclasses
import json
import math
import os
import warnings

import numpy as np
import pytest

import imc_grapes.compare as compare_mod
from imc_grapes.backends import AnalogSettings
from imc_grapes.cli import main
from imc_grapes.compare import CompareSpec, findings, run_compare
from imc_grapes.config import ConfigError, TrainConfig
from imc_grapes.data import make_synthetic
from imc_grapes.inference_eval import time_key

BASE = TrainConfig(dataset="synthetic", hidden=(24,), epochs=1, batch_size=32, train_subset=320, test_subset=160,
                   evals_per_epoch=2, inference_times=(1.0, 31536000.0),
                   analog=AnalogSettings(preset="ReRamSB", tile_size=64))


def test_spec_validation_errors():
    with pytest.raises(ConfigError, match="optimizers must be one or more of sgd, grapes"):
        CompareSpec(optimizers=("adam",))
    with pytest.raises(ConfigError, match="hardware must be one or more of digital, analog"):
        CompareSpec(hardware=("quantum",))
    with pytest.raises(ConfigError, match="lr_grid must be one or more learning rates > 0"):
        CompareSpec(lr_grid=(0.1, -1.0))
    with pytest.raises(ConfigError, match="analog_backend must be crossbar or aihwkit"):
        CompareSpec(analog_backend="spice")
    with pytest.raises(ConfigError, match="tune_score must be one of final, best, got 'max'"):
        CompareSpec(tune_score="max")
    with pytest.raises(ConfigError, match="tune_seeds must name one or more distinct seeds"):
        CompareSpec(tune_seeds=())
    with pytest.raises(ConfigError, match=r"tune_seeds must name one or more distinct seeds, got \[1, 1\]"):
        CompareSpec(tune_seeds=(1, 1))
    with pytest.raises(ConfigError, match=r"tail_evals must be an integer ≥ 1 \(1 = the final evaluation\), got 0"):
        CompareSpec(tail_evals=0)


def test_tail_evals_beyond_a_runs_evaluations_is_rejected():
    """``--tail-evals 5`` on runs of 1 epoch × 2 evaluations was accepted: each run's accuracy was the mean of its
    2 evaluations, while the report's table and text said 'last 5 evals'."""
    assert BASE.epochs * BASE.evals_per_epoch == 2
    with pytest.raises(ConfigError, match=r"^tail_evals must be at most the evaluations of a run, epochs × "
                                          r"evals_per_epoch = 1 × 2 = 2, got 3$"):
        CompareSpec(base=BASE, tail_evals=3)
    assert CompareSpec(base=BASE, tail_evals=2).tail_evals == 2


def test_a_cell_config_the_base_cannot_make_is_rejected_before_any_run(tmp_path, capsys):
    """aihwkit with the array importance works for sgd but not for grapes: the grapes cell's config was built (and
    rejected) only after the sgd runs had trained, and the CLI's train ended in a ValueError traceback."""
    base = TrainConfig(dataset="synthetic", hidden=(8,), analog=AnalogSettings(importance="array"))
    with pytest.raises(ConfigError, match=r"importance 'array' works with the crossbar backend only .* optimizer "
                                          r"'grapes' use importance 'exact'"):
        CompareSpec(base=base, optimizers=("sgd", "grapes"), hardware=("analog",), analog_backend="aihwkit")
    CompareSpec(base=base, optimizers=("sgd", "grapes"), hardware=("analog",))                   # crossbar: fine
    CompareSpec(base=base, optimizers=("sgd",), hardware=("digital", "analog"), analog_backend="aihwkit")
    for command in (["train", "--optimizer", "sgd", "grapes"], ["compare", "--optimizers", "sgd", "grapes"]):
        assert main([*command, "--dataset", "synthetic", "--backend", "aihwkit", "--importance", "array",
                     "--out", str(tmp_path / "out")]) == 2
        assert "works with the crossbar backend only" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()



@pytest.mark.parametrize("field,value,shown", [
    ("seeds", (0, 0), r"\[0, 0\] \(0 more than once\)"),
    ("seeds", (0, 1, 2, 1), r"\[0, 1, 2, 1\] \(1 more than once\)"),
    ("optimizers", ("sgd", "sgd"), r"\['sgd', 'sgd'\] \('sgd' more than once\)"),
    ("optimizers", ("sgd", "grapes", "grapes"), r"\[.*\] \('grapes' more than once\)"),
    ("hardware", ("digital", "digital"), r"\['digital', 'digital'\]"),
    ("lr_grid", (0.1, 0.3, 0.1), r"\[0\.1, 0\.3, 0\.1\] \(0\.1 more than once\)"),
])
def test_spec_rejects_repeated_values(field, value, shown):
    """A repeated seed, optimizer, hardware or lr would train the same cell again and count it twice."""
    with pytest.raises(ConfigError, match=rf"^{field} must not repeat a value, got {shown}"):
        CompareSpec(**{field: value})


@pytest.mark.parametrize("field,value,message", [
    ("seeds", (0.5,), r"seeds must name one or more seeds \(integers\), got \[0\.5\]"),
    ("seeds", (True,), r"seeds must name one or more seeds \(integers\)"),
    ("seeds", (), r"seeds must name one or more seeds"),
    ("seeds", 0, r"seeds must be a list, got 0"),
    ("optimizers", "sgd", r"optimizers must be a list, got 'sgd'"),
    ("tune_seeds", ("0",), r"tune_seeds must name one or more distinct seeds"),
    ("tune_seeds", (0.0,), r"tune_seeds must name one or more distinct seeds, got \[0\.0\]"),
    ("tune_seeds", (False,), r"tune_seeds must name one or more distinct seeds"),
    ("tune_seeds", 3, r"tune_seeds must be a list, got 3"),
    ("tune_seeds", (0, 2 ** 64), r"tune_seeds must be integers in \[-2\^63, 2\^64\) \(what torch\.manual_seed "
                                 r"takes\), got \[0, 18446744073709551616\]"),
    ("tune_seeds", (-2 ** 63 - 1,), r"tune_seeds must be integers in \[-2\^63, 2\^64\)"),
    ("seeds", (2 ** 64,), r"seeds must be integers in \[-2\^63, 2\^64\)"),
    ("lr_grid", ("0.1",), r"lr_grid must be one or more learning rates > 0"),
    ("lr_grid", (True,), r"lr_grid must be one or more learning rates > 0"),
    ("target_acc", "0.9", r"target_acc must be a number in \(0, 1\]"),
    ("val_holdout", 1.5, r"val_holdout must be an integer ≥ 0, got 1\.5"),
    ("base", {}, r"base must be a TrainConfig"),
])
def test_spec_field_types_are_checked(field, value, message):
    with pytest.raises(ConfigError, match=rf"^{message}"):
        CompareSpec(**{field: value})


def test_seeds_in_torchs_range_are_accepted_with_or_without_an_lr_grid():
    """The seeds a run takes, negative ones and the ends of torch.manual_seed's range included, are valid tune and
    final seeds (seeds out of that range are rejected above, before any run starts). -1 and 2^64 - 1 are not both
    here: torch takes them as one seed (two's complement), and seeds equal modulo 2^32 are refused together
    (tests/imc_grapes/test_config.py)."""
    edge = (-2 ** 63, -2, 2 ** 64 - 1)
    for lr_grid in ((0.1,), (0.1, 0.3)):
        spec = CompareSpec(lr_grid=lr_grid, tune_seeds=edge, seeds=edge, val_holdout=100)
        assert spec.tune_seeds == edge and spec.seeds == edge
        assert [spec.cell_config("digital", "sgd", 0.1, s, tuning=True).seed for s in edge] == list(edge)


def test_cli_compare_rejects_repeated_options(tmp_path, capsys):
    common = ["compare", "--dataset", "synthetic", "--no-progress", "--out", str(tmp_path)]
    for option, values in [("--seeds", ["0", "0"]), ("--optimizers", ["sgd", "sgd"]),
                           ("--hardware", ["digital", "digital"]), ("--lr", ["0.1", "0.1"])]:
        assert main([*common, option, *values]) == 2
        err = capsys.readouterr().err
        assert "must not repeat a value" in err and "Traceback" not in err
    assert not any(tmp_path.iterdir()), "nothing is run"


def _fake_runs(curves):
    """A ``run(cfg, folder)`` for ``tune_and_run`` that trains nothing: the history of a (lr, seed) run is
    ``curves[(lr, seed)]`` (test accuracies per evaluation; None: the run diverged). Records the folders."""
    folders = []

    def run(cfg, folder):
        folders.append((cfg.lr, cfg.seed, cfg.val_holdout, folder.name))
        accs = curves.get((cfg.lr, cfg.seed), [0.5])
        if accs is None:
            return compare_mod.RunResult(cfg, [], "diverged")
        return compare_mod.RunResult(cfg, [{"epoch": k + 1, "test_acc": a} for k, a in enumerate(accs)], "completed")
    return run, folders


def test_tuning_scores_final_or_best_and_averages_the_tune_seeds(tmp_path):
    """The lr is chosen by the score the spec names: lr 0.3 peaks higher but ends lower than lr 0.1."""
    curves = {(0.1, 0): [0.60, 0.70], (0.3, 0): [0.80, 0.50], (0.1, 1): [0.62, 0.74], (0.3, 1): [0.78, 0.55]}
    for score, chosen, scores in (("final", 0.1, {0.1: 0.70, 0.3: 0.50}), ("best", 0.3, {0.1: 0.70, 0.3: 0.80})):
        spec = CompareSpec(base=BASE, lr_grid=(0.1, 0.3), tune_score=score, val_holdout=100)
        run, folders = _fake_runs(curves)
        cell = compare_mod.tune_and_run(spec, "digital", "sgd", run, tmp_path / "tune", tmp_path / "final", "x",
                                        lambda s: None)
        assert cell.lr == chosen and cell.tuning == scores
        assert [f[3] for f in folders] == ["lr0.1", "lr0.3", f"lr{chosen:g}_seed0"]     # one tune seed: lr<lr>
        assert [f[2] for f in folders] == [100, 100, 0], "tuning on the validation split, final runs on the test set"
    # two tune seeds: each lr scores the mean; one seed's divergence rules its lr out
    spec = CompareSpec(base=BASE, lr_grid=(0.1, 0.3), tune_seeds=(0, 1), val_holdout=100)
    run, folders = _fake_runs(curves)
    cell = compare_mod.tune_and_run(spec, "digital", "sgd", run, tmp_path / "t2", tmp_path / "f2", "x",
                                    lambda s: None)
    assert cell.tuning == pytest.approx({0.1: 0.72, 0.3: 0.525}) and cell.lr == 0.1
    assert cell.tuning_by_seed == {0.1: {0: 0.70, 1: 0.74}, 0.3: {0: 0.50, 1: 0.55}}
    assert [f[3] for f in folders[:4]] == ["lr0.1_seed0", "lr0.1_seed1", "lr0.3_seed0", "lr0.3_seed1"]
    run, _ = _fake_runs({**curves, (0.1, 1): None})
    cell = compare_mod.tune_and_run(spec, "digital", "sgd", run, tmp_path / "t3", tmp_path / "f3", "x",
                                    lambda s: None)
    assert cell.tuning[0.1] is None and cell.lr == 0.3
    record = compare_mod.tuning_record(cell, "final")
    assert record["validation_acc_by_lr_and_seed"]["0.1"] == {"0": 0.70, "1": None}
    assert record["tune_score"] == "final" and record["chosen_lr"] == 0.3


@pytest.mark.parametrize("accs, best", [
    ([math.nan, 0.4, 0.7], 0.7), ([0.4, math.nan, 0.7], 0.7), ([0.4, 0.7, math.nan], 0.7),
    ([0.7, math.nan, 0.4], 0.7), ([math.nan, 0.2, math.nan], 0.2), ([0.3], 0.3)])
def test_best_tuning_score_leaves_a_nan_evaluation_out_wherever_it_stands(accs, best):
    """``max`` over a list with a NaN returns the NaN when it stands first and skips it elsewhere: the ``best`` score
    is the highest finite accuracy (hand-picked) whatever the NaN's place; ``final`` keeps its NaN (the last one)."""
    run = compare_mod.RunResult(BASE, [{"epoch": k + 1, "test_acc": a} for k, a in enumerate(accs)], "completed")
    assert compare_mod.tune_score(run, "best") == best
    assert math.isnan(compare_mod.tune_score(run, "final")) == math.isnan(accs[-1])


def test_best_tuning_score_without_a_finite_evaluation_is_nan_and_never_chosen(tmp_path):
    """A completed run whose every evaluation is NaN scores NaN (not None: it completed); an lr with a NaN score is
    never chosen, listed first or last in the grid, and with every lr NaN the smallest is used, as when all fail."""
    run = compare_mod.RunResult(BASE, [{"epoch": 1, "test_acc": math.nan}, {"epoch": 2, "test_acc": math.nan}],
                                "completed")
    assert math.isnan(compare_mod.tune_score(run, "best"))
    nan2 = [math.nan, math.nan]
    for grid, curves, chosen in (((0.1, 0.3), {(0.1, 0): nan2, (0.3, 0): [0.2, 0.3]}, 0.3),
                                 ((0.1, 0.3), {(0.1, 0): [0.2, 0.3], (0.3, 0): nan2}, 0.1),
                                 ((0.3, 0.1), {(0.1, 0): nan2, (0.3, 0): nan2}, 0.1)):
        spec = CompareSpec(base=BASE, lr_grid=grid, tune_score="best", val_holdout=100)
        said = []
        cell = compare_mod.tune_and_run(spec, "digital", "sgd", _fake_runs(curves)[0], tmp_path / "t",
                                        tmp_path / "f", "x", said.append)
        assert cell.lr == chosen, (grid, curves)
        assert any("no finite validation accuracy" in s for s in said) == all(c is nan2 for c in curves.values())


def test_tail_evals_average_the_last_evaluations_for_tuning_and_the_table(tmp_path):
    """``tail_evals = K``: a run's accuracy is the mean of its last K evaluations, for the ``final`` tuning score (here
    it changes the chosen lr: lr 0.1 ends low after a high evaluation) and for the reported accuracy."""
    curves = {(0.1, 0): [0.50, 0.90, 0.62], (0.3, 0): [0.70, 0.70, 0.66]}
    for tail, chosen, scores in ((1, 0.3, {0.1: 0.62, 0.3: 0.66}), (2, 0.1, {0.1: 0.76, 0.3: 0.68})):
        spec = CompareSpec(base=BASE, lr_grid=(0.1, 0.3), val_holdout=100, tail_evals=tail)
        run, _ = _fake_runs(curves)
        cell = compare_mod.tune_and_run(spec, "digital", "sgd", run, tmp_path / f"t{tail}", tmp_path / f"f{tail}",
                                        "x", lambda s: None)
        assert cell.lr == chosen and cell.tuning == pytest.approx(scores)
    # the table: seeds' tail means 0.70 (0.6, 0.8) and 0.50 (0.4, 0.6) -> 60 ± 14.14 %
    runs = [compare_mod.RunResult(BASE, [{"epoch": k + 1, "test_acc": a} for k, a in enumerate(accs)], "completed")
            for accs in ([0.9, 0.6, 0.8], [0.1, 0.4, 0.6])]
    cell = compare_mod.Cell("digital", "sgd", 0.1, runs)
    row = compare_mod.summarise_cells([cell], 0.5, tail=2)[0]
    assert row["final_test_acc_mean"] == pytest.approx(0.60)
    assert row["final_test_acc_std"] == pytest.approx(0.1414, 1e-3)
    assert compare_mod.summarise_cells([cell], 0.5)[0]["final_test_acc_mean"] == pytest.approx(0.70)   # final only
    assert "test acc % (last 2 evals, mean ± std)" in compare_mod.format_table([row], 0.5)
    md = compare_mod.render_markdown(CompareSpec(base=BASE, lr_grid=(0.1, 0.3), tail_evals=2), [row], [], [], None)
    assert "its mean validation accuracy over its last 2 evaluations" in md
    assert "* a run's test accuracy: the mean of its last 2 evaluations" in md


def test_learning_rates_that_print_alike_are_rejected():
    """The tuning runs' folders and the validation table are named by ``f"{lr:g}"``: two grid values that print
    alike would overwrite each other's runs."""
    with pytest.raises(ConfigError, match="lr_grid values must differ in their first 6 significant digits"):
        CompareSpec(base=BASE, lr_grid=(0.1, 0.1000001), val_holdout=100)
    CompareSpec(base=BASE, lr_grid=(0.1, 0.100001), val_holdout=100)                   # 0.1 and 0.100001: fine


def test_diverged_runs_are_counted_not_averaged_and_one_completed_seed_is_not_judged():
    """A cell whose runs diverged after some evaluations: its accuracy is the mean over the completed runs only (the
    last evaluation a diverged run reached is not a result at that lr), the table says how many diverged, and a
    comparison resting on one completed run per cell is not called a clear difference."""
    def run(accs, status):
        return compare_mod.RunResult(BASE, [{"epoch": k + 1, "test_acc": a} for k, a in enumerate(accs)], status)

    sgd = compare_mod.Cell("digital", "sgd", 0.1, [run([0.6, 0.70], "completed"), run([0.5, 0.1], "diverged"),
                                                    run([0.4], "diverged")])
    grapes = compare_mod.Cell("digital", "grapes", 0.1, [run([0.7, 0.85], "completed"), run([0.2], "diverged"),
                                                          run([], "diverged")])
    rows = compare_mod.summarise_cells([sgd, grapes], 0.8)
    assert rows[0]["final_test_acc_mean"] == pytest.approx(0.70) and rows[0]["final_test_acc_std"] == 0.0
    assert rows[1]["final_test_acc_mean"] == pytest.approx(0.85)
    assert (rows[0]["completed"], rows[0]["diverged"], rows[0]["runs"]) == (1, 2, 3)
    assert rows[0]["reached_target"] == "0/1" and rows[1]["reached_target"] == "1/1"
    table = compare_mod.format_table(rows, 0.8)
    # one completed run: no seed-to-seed spread, so no std (it was shown as ± 0.00)
    assert "70.00 ± — (2/3 diverged)" in table and "85.00 ± — (2/3 diverged)" in table
    text = compare_mod.findings(rows)[0]
    assert "GRAPES +15.00 points vs SGD (a single seed" in text and "more than twice" not in text
    gone = compare_mod.summarise_cells([compare_mod.Cell("digital", "sgd", 0.1, [run([0.5], "diverged")])], 0.8)
    assert "| diverged | — |" in compare_mod.format_table(gone, 0.8, markdown=True)     # not "(0/0)" to target


@pytest.mark.slow
def test_compare_writes_every_promised_file(tmp_path, capsys):
    out = tmp_path / "report"
    spec = CompareSpec(base=BASE, optimizers=("sgd", "grapes", "layer-mean"), hardware=("digital", "analog"),
                       lr_grid=(0.1,), seeds=(0, 1), target_acc=0.5)
    res = run_compare(spec, out, progress=False, command="imc-grapes compare ...")
    for name in ("results.json", "results.csv", "report.md", "curves.png", "accuracy.png", "inference.png"):
        assert (out / name).is_file(), name
    for name in ("curves.png", "accuracy.png", "inference.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    saved = json.loads((out / "results.json").read_text())
    assert saved["spec"]["optimizers"] == ["sgd", "grapes", "layer-mean"]
    assert len(saved["summary"]) == 6 and len(saved["runs"]) == 12
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 12 and {r["hardware"] for r in rows} == {"digital", "analog"}
    analog = [r for r in saved["summary"] if r["hardware"] == "analog"]
    assert all(r["final_test_acc_mean"] is not None for r in analog)
    assert all("inference_acc@31536000" in r for r in analog), "analog runs are evaluated after drift"
    assert all(r["cost_overhead_vs_sgd"] is not None for r in analog)
    assert [r for r in analog if r["optimizer"] == "sgd"][0]["cost_overhead_vs_sgd"] == 1.0
    md = (out / "report.md").read_text()
    assert "![curves.png](curves.png)" in md and "| analog | grapes |" in md
    assert "batch 32 (partial last batch left out), 1 epoch(s)" in md
    # every column of the table is explained below it, at the job's target (0.5 here) and with the inference times
    assert "| epochs to 50% |" in md and "*epochs to 50%*: the first evaluation point" in md and "(k/n)" in md
    assert "| acc % @1y |" in md and "*acc % @t*: test accuracy of the trained analog network" in md
    said = md.split("## What the numbers say\n\n")[1].split("\n\n")
    assert said[0].count("\n* ") == 1 and said[0].startswith("* **digital**: GRAPES ")     # one line per hardware
    assert said[1].startswith("(Combined seed spread: √(std₁² + std₂²)")
    assert "grapes" in capsys.readouterr().out
    assert res["summary"] == saved["summary"]


def test_lr_is_tuned_on_validation_and_resume_skips_finished_runs(tmp_path, monkeypatch):
    spec = CompareSpec(base=BASE, optimizers=("sgd", "grapes"), hardware=("digital",), lr_grid=(0.001, 0.3),
                       val_holdout=200, seeds=(0,))
    calls = []
    real_train = compare_mod.train

    def counting_train(cfg, *a, **k):
        calls.append(cfg)
        return real_train(cfg, *a, **k)

    monkeypatch.setattr(compare_mod, "train", counting_train)
    res = run_compare(spec, tmp_path, progress=False, log=lambda s: None)
    tuning_runs = [c for c in calls if c.val_holdout]
    assert len(tuning_runs) == 4 and all(c.val_holdout == 200 for c in tuning_runs)
    assert all(c.val_holdout == 0 for c in calls if c not in tuning_runs), "final runs use the test set"
    for t in res["tuning"]:
        accs = t["validation_acc_by_lr"]
        assert t["chosen_lr"] == max((float(k) for k in accs), key=lambda k: accs[f"{k:g}"])
    # a tiny lr learns nothing in one epoch on this task: tuning must pick 0.3
    assert all(t["chosen_lr"] == 0.3 for t in res["tuning"])
    n_first = len(calls)
    run_compare(spec, tmp_path, progress=False, log=lambda s: None)
    assert len(calls) == n_first, "a second run of the same spec redoes nothing"
    run_compare(spec, tmp_path, progress=False, resume=False, log=lambda s: None)
    assert len(calls) == 2 * n_first


def test_a_tuning_runs_log_lines_name_the_validation_accuracy_and_a_final_runs_the_test_accuracy(tmp_path):
    """The tuning runs are scored on the validation split, but their epoch lines said "test acc": they now say
    "val acc", with the validation accuracy the tuning record holds; the final runs keep "test acc", with the test
    accuracy of their results."""
    spec = CompareSpec(base=BASE.replace(inference_times=()), optimizers=("sgd",), hardware=("digital",),
                       lr_grid=(0.001, 0.3), val_holdout=200, seeds=(0,))
    lines: list[str] = []
    res = run_compare(spec, tmp_path, progress=False, log=lines.append)
    epochs = [(i, line) for i, line in enumerate(lines) if line.startswith("[sgd] epoch 1/1: train loss ")]
    assert len(epochs) == 3                             # two tuning runs (one per lr), then the final run
    by_lr = res["tuning"][0]["validation_acc_by_lr"]
    final = res["runs"][0]["final"]["test_acc"]
    for (i, line), (run, acc) in zip(epochs, [("== tune digital/sgd lr=0.001 (validation split)", by_lr["0.001"]),
                                              ("== tune digital/sgd lr=0.3 (validation split)", by_lr["0.3"]),
                                              ("== digital/sgd lr=0.3 seed=0", final)]):
        assert lines[i - 1] == run
        name = "val acc" if "tune" in run else "test acc"
        assert line.endswith(f", {name} {100 * acc:.2f}%"), line


def test_digital_runs_are_reused_under_other_analog_settings(tmp_path, monkeypatch):
    """A compare job on digital hardware run again with another device preset (and other analog settings) reuses
    its finished runs, also those recorded by earlier versions with the job's analog settings."""
    import dataclasses

    spec = CompareSpec(base=BASE, optimizers=("sgd",), hardware=("digital",), seeds=(0, 1))
    calls = []
    real_train = compare_mod.train
    monkeypatch.setattr(compare_mod, "train", lambda cfg, *a, **k: calls.append(cfg) or real_train(cfg, *a, **k))
    first = run_compare(spec, tmp_path, progress=False, log=lambda s: None)
    assert len(calls) == 2 and all(c.analog == AnalogSettings() for c in calls)   # recorded with the defaults
    run_file = tmp_path / "runs" / "digital" / "sgd" / "lr0.1_seed0" / "results.json"
    assert json.loads(run_file.read_text())["config"]["analog"] == AnalogSettings().to_dict()
    ecram = AnalogSettings(preset="EcRam", tile_size=32, dac_bits=4, adc_bits=6, importance="array")
    said = []
    second = run_compare(dataclasses.replace(spec, base=BASE.replace(analog=ecram)), tmp_path, progress=False,
                         log=said.append)
    assert len(calls) == 2 and sum("(resumed:" in s for s in said) == 2
    assert second["summary"] == first["summary"] and second["spec"]["base"]["analog"]["preset"] == "EcRam"
    # a run saved by an earlier version, with the job's analog settings in its config, is reused as well
    saved = json.loads(run_file.read_text())
    saved["config"]["analog"] = ecram.to_dict()
    run_file.write_text(json.dumps(saved))
    run_compare(spec, tmp_path, progress=False, log=lambda s: None)
    assert len(calls) == 2


def test_cli_compare_bad_arguments(tmp_path, capsys):
    assert main(["compare", "--dataset", "synthetic", "--optimizers", "sgd", "rmsprop", "--out",
                 str(tmp_path)]) == 2
    assert "optimizers must be one or more of" in capsys.readouterr().err
    assert main(["compare", "--dataset", "synthetic", "--preset", "Unobtainium", "--out", str(tmp_path)]) == 2
    assert "AnalogSettings.preset must be one of" in capsys.readouterr().err
    assert main(["compare", "--dataset", "synthetic", "--tune-seeds", "3", "3", "--out", str(tmp_path)]) == 2
    assert "tune_seeds must name one or more distinct seeds" in capsys.readouterr().err
    assert main(["compare", "--dataset", "synthetic", "--tail-evals", "0", "--out", str(tmp_path)]) == 2
    assert "tail_evals must be an integer ≥ 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["compare", "--dataset", "synthetic", "--tune-score", "max", "--out", str(tmp_path)])
    assert exc.value.code == 2 and "invalid choice: 'max'" in capsys.readouterr().err
    # known only once the data set is loaded: the synthetic set has 2000 training samples
    assert main(["compare", "--dataset", "synthetic", "--lr", "0.1", "0.3", "--val-holdout", "5000",
                 "--no-progress", "--out", str(tmp_path)]) == 2
    assert ("val_holdout must be smaller than the training set (2000 samples of synthetic), got 5000"
            in capsys.readouterr().err)
    # a holdout that leaves less than one batch to train on: a clear error, not a traceback (2000 - 1950 = 50 < 64
    # samples), naming the options that change it (it named the config field batch_size alone). The holdout is the
    # last samples of the whole training set, taken before --train-subset (which is ≥ one batch): not named
    assert main(["compare", "--dataset", "synthetic", "--optimizers", "sgd", "--hardware", "digital", "--lr", "0.1",
                 "0.3", "--val-holdout", "1950", "--epochs", "1", "--no-progress", "--out", str(tmp_path / "b")]) == 2
    assert capsys.readouterr().err == (
        "imc-grapes compare: error: --val-holdout, --batch-size: val_holdout 1950 leaves 50 of the 2000 training "
        "samples to train on (the holdout is taken from the whole training set, before train_subset), fewer than one "
        "batch (TrainConfig.batch_size 64), so drop_last leaves no batch: hold out fewer samples or use a smaller "
        "batch, or set drop_last false (--no-drop-last)\n")
    # a larger batch and a smaller subset typed: 2000 - 1901 = 99 < 100 samples, whatever --train-subset says
    assert main(["compare", "--dataset", "synthetic", "--optimizers", "sgd", "--hardware", "digital", "--lr", "0.1",
                 "0.3", "--val-holdout", "1901", "--train-subset", "500", "--batch-size", "100", "--epochs", "1",
                 "--no-progress", "--out", str(tmp_path / "c")]) == 2
    assert capsys.readouterr().err.startswith(
        "imc-grapes compare: error: --val-holdout, --batch-size: val_holdout 1901 leaves 99 of the 2000 training "
        "samples to train on (the holdout is taken from the whole training set, before train_subset), fewer than one "
        "batch (TrainConfig.batch_size 100), so drop_last")


def _row(hw, opt, mean, std, runs=3, sat=None):
    return {"hardware": hw, "optimizer": opt, "runs": runs, "final_test_acc_mean": mean, "final_test_acc_std": std,
            "saturation_mean": sat}


def test_findings_judge_differences_against_twice_the_combined_spread():
    # analog: Δ = +5 points, combined spread √(3² + 4²) = 5 points -> the threshold is 10 points: not clear
    # digital: Δ = +1.5 points, combined spread √(0.6² + 0.8²) = 1 point -> threshold 2 points: not clear;
    # vs layer-mean Δ = +3, spread √(0.8² + 0.6²) = 1 -> clear, the per-neuron factors add to the boost
    rows = [_row("digital", "sgd", 0.90, 0.006), _row("digital", "grapes", 0.915, 0.008),
            _row("digital", "layer-mean", 0.885, 0.006),
            _row("analog", "sgd", 0.50, 0.03, sat=0.97), _row("analog", "grapes", 0.55, 0.04, sat=0.90),
            _row("single", "sgd", 0.5, 0.0, runs=1), _row("single", "grapes", 0.7, 0.0, runs=1)]
    digital, analog, single = findings(rows)
    assert digital.startswith("**digital**: GRAPES +1.50 points vs SGD (within twice the combined seed spread, "
                              "|Δ| ≤ 2.00 points: not a clear difference); vs the layer-mean control +3.00 points — "
                              "the per-neuron modulation adds")
    assert analog == ("**analog**: GRAPES +5.00 points vs SGD (within twice the combined seed spread, |Δ| ≤ 10.00 "
                      "points: not a clear difference). Realised/intended weight change: SGD 0.97, GRAPES 0.90 (the "
                      "pulse budget clips part of the modulated updates).")
    assert "a single seed, so no seed-to-seed spread is available" in single
    rows[4] = _row("analog", "grapes", 0.62, 0.04, sat=0.97)     # Δ = 12 > 10
    assert "more than twice the combined seed spread: |Δ| > 10.00 points" in findings(rows)[1]


def test_report_header_names_dropout_and_the_analog_hardware_only_when_there_is_some():
    digital = CompareSpec(base=BASE.replace(dropout=0.1), hardware=("digital",), lr_grid=(0.1,))
    md = compare_mod.render_markdown(digital, [], [], [], None)
    assert "relu, dropout 0.1, rule bp" in md and "analog hardware" not in md
    both = CompareSpec(base=BASE, hardware=("digital", "analog"), lr_grid=(0.1,))
    md = compare_mod.render_markdown(both, [], [], [], None)
    assert "dropout" not in md and "* analog hardware: backend `crossbar`, device preset `ReRamSB`, DAC" in md
    from imc_grapes.backends import AnalogSettings

    changed = BASE.replace(analog=AnalogSettings(preset="GokmenVlasov", device_overrides={"dw_min": 0.008,
                                                                                         "up_down": 0.2}))
    md = compare_mod.render_markdown(CompareSpec(base=changed, hardware=("analog",), lr_grid=(0.1,)), [], [], [], None)
    assert "device preset `GokmenVlasov` with dw_min=0.008, up_down=0.2, DAC 7 bits" in md


def test_results_csv_rows_name_the_settings_they_were_run_with(tmp_path, monkeypatch):
    """Each results.csv row carries its settings (data set, model, epochs, preset, lr grid, ...) after the
    results columns, so that a row read on its own, or pooled with other jobs' rows, can be told apart."""
    def fake_train(cfg, run_dir, **kw):
        extra = {"inference": {"1.0": 0.4}} if cfg.backend != "digital" else {}
        return compare_mod.RunResult(cfg, [{"epoch": 1, "test_acc": 0.5, "train_loss": 1.0}], "completed",
                                     run_dir=run_dir, extra=extra)

    monkeypatch.setattr(compare_mod, "train", fake_train)
    spec = CompareSpec(base=BASE.replace(momentum=0.9), optimizers=("sgd", "grapes"), hardware=("digital", "analog"),
                       lr_grid=(0.1,), seeds=(3, 4))
    run_compare(spec, tmp_path, progress=False, log=lambda s: None)
    with (tmp_path / "results.csv").open() as f:
        header = next(csv.reader(f))
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    results = ["hardware", "optimizer", "backend", "lr", "seed", "status", "final_test_acc", "final_train_loss",
               "epochs_to_target", "saturation", "cost_per_step", "wall_time_s", "run_dir", "inference_acc@1.0"]
    assert header[:len(results)] == results                              # the results columns first, as before
    assert len(rows) == 8
    for r in rows:
        analog = r["hardware"] == "analog"
        assert (r["dataset"], r["model"], r["hidden"], r["rule"], r["base_optimizer"]) == (
            "synthetic", "mlp", "[24]", "bp", "sgd")
        assert (r["epochs"], r["batch_size"], r["momentum"], r["train_subset"], r["test_subset"]) == (
            "1", "32", "0.9", "320", "160")
        assert r["device_preset"] == ("ReRamSB" if analog else "")         # digital hardware has no device
        assert r["analog_backend"] == ("crossbar" if analog else "")
        assert (r["lr_grid"], r["tune_seeds"], r["tune_score"], r["n_seeds"]) == ("[0.1]", "[0]", "final", "2")


def test_an_lr_tie_goes_to_the_lr_listed_first_and_the_help_says_so(tmp_path, capsys):
    """Two lrs with the same validation score: the one given first in the grid is chosen, whichever is larger;
    the --lr help and the report say so."""
    curves = {(0.1, 0): [0.6, 0.7], (0.3, 0): [0.5, 0.7], (0.03, 0): [0.2, 0.4]}
    for grid in ((0.1, 0.3, 0.03), (0.3, 0.1, 0.03), (0.03, 0.3, 0.1)):
        spec = CompareSpec(base=BASE, lr_grid=grid, val_holdout=100)
        run, _ = _fake_runs(curves)
        cell = compare_mod.tune_and_run(spec, "digital", "sgd", run, tmp_path / "t", tmp_path / "f", "x",
                                        lambda s: None)
        assert cell.tuning[0.1] == cell.tuning[0.3] == 0.7
        assert cell.lr == next(lr for lr in grid if lr != 0.03)
    md = compare_mod.render_markdown(CompareSpec(base=BASE, lr_grid=(0.1, 0.3), val_holdout=100), [], [], [], None)
    assert "the lr with the highest mean score chosen (of equal scores, the one listed first)" in md
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    assert "of equal scores the one given first" in " ".join(capsys.readouterr().out.split())


def test_a_damaged_run_record_is_trained_again_on_resume_not_a_traceback(tmp_path, monkeypatch):
    spec = CompareSpec(base=BASE, optimizers=("sgd",), hardware=("digital",), seeds=(0,))
    calls = []
    real_train = compare_mod.train
    monkeypatch.setattr(compare_mod, "train", lambda cfg, *a, **k: calls.append(cfg) or real_train(cfg, *a, **k))
    first = run_compare(spec, tmp_path, progress=False, log=lambda s: None)
    run_file = tmp_path / "runs" / "digital" / "sgd" / "lr0.1_seed0" / "results.json"
    run_file.write_text('{"status": "compl')            # cut short, e.g. by a tool that wrote it in place
    said = []
    second = run_compare(spec, tmp_path, progress=False, log=said.append)
    assert len(calls) == 2, "the damaged run is trained again"
    assert any(f"{run_file}: not a valid JSON file" in s and "trained again" in s for s in said), said
    assert json.loads(run_file.read_text())["status"] == "completed"
    assert second["summary"] == first["summary"]



def test_a_finished_run_of_other_options_in_the_same_folder_is_said_to_be_replaced(tmp_path):
    """The same --out with other options (here epochs 1, then 2): the earlier job's finished run of the same folder
    name is trained again, as before, and the log now says so and why (the fields that differ, with the saved and
    the new value), instead of replacing it silently; the job again with the same options resumes it."""
    spec = CompareSpec(base=BASE, optimizers=("sgd",), hardware=("digital",), seeds=(0,))
    run_compare(spec, tmp_path, progress=False, log=lambda s: None)
    run_dir = tmp_path / "runs" / "digital" / "sgd" / "lr0.1_seed0"
    longer = dataclasses.replace(spec, base=dataclasses.replace(BASE, epochs=BASE.epochs + 1))
    said: list[str] = []
    run_compare(longer, tmp_path, progress=False, log=said.append)
    assert BASE.epochs == 1
    assert (f"   note: {run_dir} holds a completed run of another configuration (epochs: 1 -> 2); it is trained "
            "again and replaced") in said
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["config"]["epochs"] == BASE.epochs + 1
    assert len(saved["history"]) == (BASE.epochs + 1) * BASE.evals_per_epoch
    said.clear()
    run_compare(longer, tmp_path, progress=False, log=said.append)
    assert f"   (resumed: {run_dir} is finished)" in said and not any("note:" in s for s in said)


def test_differences_shown_gives_each_field_with_its_saved_and_new_value():
    """The replaced-run note of resume and train's refusal show the differing fields with both values: the repr,
    the device a run used in brackets where it is not the one written, a value cut at 60 characters, and (train's)
    only the first `most` fields, then ', ...'."""
    from imc_grapes.compare import differences_shown

    saved = {"device": "auto", "epochs": 1, "hidden": [24], "tag": "x" * 70}
    new = {"device": "cpu", "epochs": 2, "hidden": [24, 24], "tag": "y"}
    ran = ({**saved, "device": "cuda:0"}, new)
    fields = ["device", "epochs", "hidden", "tag"]
    assert differences_shown(fields, (saved, new), ran, "{key}: {saved} -> {new}") == (
        "device: 'auto' (cuda:0) -> 'cpu', epochs: 1 -> 2, hidden: [24] -> [24, 24], tag: '" + "x" * 56 + "... -> 'y'")
    assert differences_shown(fields, (saved, new), ran, "{key}: {saved} there, {new} here", most=3) == (
        "device: 'auto' (cuda:0) there, 'cpu' here, epochs: 1 there, 2 here, hidden: [24] there, [24, 24] here, ...")
    assert differences_shown(["epochs"], (saved, new), ran, "{key}: {saved} -> {new}", most=3) == "epochs: 1 -> 2"


def test_differences_shown_names_a_differing_analog_setting_by_its_dotted_path(tmp_path):
    """A difference inside the analog settings was shown as the whole analog dict's repr cut at 60 characters, which
    hid the setting that differs. Each differing entry is now shown by its dotted path with its saved and new value;
    an override at the preset's own value (ReRamSB's dw_min is 0.002: the same device as no override) is no
    difference and not shown; a digital run against a crossbar one with the same analog settings written shows only
    the backend (which is why the analog settings differ as runs). Resume's note says the same."""
    from imc_grapes.compare import configs_as_run, differences_shown, finished_run
    from imc_grapes.config import config_differences

    def shown(saved_cfg: TrainConfig, new_cfg: TrainConfig, pattern: str = "{key}: {saved} -> {new}",
              most: int | None = None) -> str:
        given = (saved_cfg.to_dict(), new_cfg.to_dict())
        ran = configs_as_run({"config": given[0]}, given[1])
        return differences_shown(config_differences(*ran), given, ran, pattern, most=most)

    base = TrainConfig(backend="crossbar", device="cpu", analog=AnalogSettings(preset="ReRamSB", adc_bits=9))
    fewer_bits = base.replace(analog=dataclasses.replace(base.analog, adc_bits=7))
    assert shown(base, fewer_bits) == "analog.adc_bits: 9 -> 7"
    overridden = base.replace(analog=dataclasses.replace(base.analog, device_overrides={"dw_min": 0.008}))
    assert shown(base, overridden) == "analog.device_overrides: {} -> {'dw_min': 0.008}"
    both = fewer_bits.replace(analog=dataclasses.replace(fewer_bits.analog, device_overrides={"dw_min": 0.008}),
                              epochs=base.epochs + 1)
    assert shown(base, both) == (f"analog.adc_bits: 9 -> 7, analog.device_overrides: {{}} -> {{'dw_min': 0.008}}, "
                                 f"epochs: {base.epochs} -> {base.epochs + 1}")
    assert shown(base, both, "{key}: {saved} there, {new} here", most=1) == "analog.adc_bits: 9 there, 7 here, ..."
    at_preset = base.replace(analog=dataclasses.replace(base.analog, device_overrides={"dw_min": 0.002}))
    assert shown(at_preset, fewer_bits) == "analog.adc_bits: 9 -> 7"
    assert shown(base.replace(backend="digital"), base) == "backend: 'digital' -> 'crossbar'"

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "results.json").write_text(json.dumps({"status": "completed", "config": base.to_dict()}))
    said: list[str] = []
    assert finished_run(fewer_bits, run_dir, ("completed",), (), said.append) is None
    assert said == [f"   note: {run_dir} holds a completed run of another configuration (analog.adc_bits: 9 -> 7); "
                    "it is trained again and replaced"]


def test_differences_shown_gives_a_field_a_saved_config_lacks_at_the_value_its_run_used():
    """A config saved before a field existed lacks it (cuda_graph, analog.importance_offset_correction: the
    LATER_FIELDS, whose values there reproduce those runs): the note showed it as None; it shows the value that run
    used, False (the earlier behaviour), against the new one."""
    from imc_grapes.compare import configs_as_run, differences_shown
    from imc_grapes.config import config_differences

    new = TrainConfig(backend="crossbar", device="cpu", cuda_graph=False,
                      analog=AnalogSettings(importance_offset_correction=True)).to_dict()
    saved = {**new, "cuda_graph": False, "analog": dict(new["analog"])}
    del saved["cuda_graph"]
    del saved["analog"]["importance_offset_correction"]
    ran = configs_as_run({"config": saved}, new)
    assert config_differences(*ran) == ["analog"]
    assert differences_shown(config_differences(*ran), (saved, new), ran, "{key}: {saved} -> {new}") == (
        "analog.importance_offset_correction: False -> True")


def test_resume_compares_a_saved_runs_device_as_the_run_used_it(tmp_path, monkeypatch):
    """Resume (compare's and experiment's: finished_run) compared the device literally, so a job with device auto,
    on a machine without CUDA (auto resolves to cpu), trained a finished cpu run again. It now counts the device as
    the run used it, as `imc-grapes train` does: the cpu run is resumed; a saved cuda run (made where CUDA was
    available) is another configuration, trained again and replaced; as is a saved auto run made with CUDA."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    calls: list[TrainConfig] = []
    real_train = compare_mod.train
    monkeypatch.setattr(compare_mod, "train", lambda cfg, *a, **k: calls.append(cfg) or real_train(cfg, *a, **k))
    spec = CompareSpec(base=BASE, optimizers=("sgd",), hardware=("digital",), seeds=(0,))
    auto = dataclasses.replace(spec, base=dataclasses.replace(BASE, device="auto"))
    run_compare(spec, tmp_path, progress=False, log=lambda s: None)
    assert [c.device for c in calls] == ["cpu"]
    run_file = tmp_path / "runs" / "digital" / "sgd" / "lr0.1_seed0" / "results.json"
    said: list[str] = []
    run_compare(auto, tmp_path, progress=False, log=said.append)
    assert len(calls) == 1, "the finished cpu run is resumed, not trained again"
    assert f"   (resumed: {run_file.parent} is finished)" in said and not any("note:" in s for s in said)

    for device, cuda_available, shown in [("cuda", True, "'cuda' -> 'auto' (cpu)"),
                                          ("auto", True, "'auto' (cuda) -> 'auto' (cpu)")]:
        saved = json.loads(run_file.read_text())
        saved["config"]["device"] = device
        saved["versions"]["cuda_available"] = cuda_available
        run_file.write_text(json.dumps(saved))
        said.clear()
        trained = len(calls)
        run_compare(auto, tmp_path, progress=False, log=said.append)
        assert len(calls) == trained + 1, f"a saved {device} run made with CUDA is trained again"
        assert (f"   note: {run_file.parent} holds a completed run of another configuration (device: {shown}); it "
                "is trained again and replaced") in said
        assert json.loads(run_file.read_text())["config"]["device"] == "auto"


def test_resume_takes_two_names_of_the_same_gpu_for_the_same_device(tmp_path, monkeypatch):
    """A run saved with device cuda:0, resumed with device cuda on a machine with CUDA (torch's cuda: the current
    GPU, here GPU 0), was another configuration, trained again and replaced. It is now resumed; a run saved on
    cuda:1 is still another device. (CUDA is only pretended: finished_run reads the saved run and trains nothing.)"""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)    # GPU 0 is current
    cfg = CompareSpec(base=BASE).cell_config("digital", "sgd", 0.1, 0).normalised().replace(device="cuda")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    said: list[str] = []
    for saved_device, resumed in [("cuda:0", True), ("cuda", True), ("cuda:1", False)]:
        saved = {"status": "completed", "config": {**cfg.to_dict(), "device": saved_device},
                 "versions": {"cuda_available": True}, "history": [{"epoch": 1, "test_acc": 0.5}]}
        (run_dir / "results.json").write_text(json.dumps(saved))
        said.clear()
        done = compare_mod.finished_run(cfg, run_dir, ("completed",), (), said.append)
        assert (done is not None) == resumed, saved_device
        assert said == ([f"   (resumed: {run_dir} is finished)"] if resumed else
                        [f"   note: {run_dir} holds a completed run of another configuration (device: 'cuda:1' -> "
                         "'cuda' (cuda:0)); it is trained again and replaced"])


@pytest.mark.parametrize("exc, status", [(KeyboardInterrupt(), "interrupted"), (RuntimeError("boom"), "failed")])
def test_an_interrupted_or_failed_run_is_trained_again_on_resume(tmp_path, monkeypatch, exc, status):
    """A run stopped by Ctrl-C or an error records that status (before: ``running``, indistinguishable from a run
    still training); the job stops with the exception, and a resumed job trains that run again (not reported as
    finished), giving the summary of a job never stopped."""
    import sys

    train_mod = sys.modules["imc_grapes.train"]
    spec = CompareSpec(base=BASE, optimizers=("sgd",), hardware=("digital",), seeds=(0,))
    clean = run_compare(spec, tmp_path / "clean", progress=False, log=lambda s: None)
    step, steps = train_mod.training_step, {"n": 0}

    def stopping(*args, **kwargs):
        steps["n"] += 1
        if steps["n"] == 3:
            raise exc
        return step(*args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(train_mod, "training_step", stopping)
        with pytest.raises(type(exc)):
            run_compare(spec, tmp_path / "job", progress=False, log=lambda s: None)
    run_file = tmp_path / "job" / "runs" / "digital" / "sgd" / "lr0.1_seed0" / "results.json"
    assert json.loads(run_file.read_text())["status"] == status
    calls = []
    real_train = compare_mod.train
    monkeypatch.setattr(compare_mod, "train", lambda cfg, *a, **k: calls.append(cfg) or real_train(cfg, *a, **k))
    said = []
    second = run_compare(spec, tmp_path / "job", progress=False, log=said.append)
    assert len(calls) == 1 and not any("(resumed:" in s for s in said), "the stopped run is trained again"
    assert json.loads(run_file.read_text())["status"] == "completed"
    assert second["summary"] == clean["summary"]


def test_a_relative_data_root_is_recorded_as_given_and_as_an_absolute_folder(tmp_path, monkeypatch):
    """``--data-root data`` names another folder once the report moves: results.json keeps it as given (the
    config, part of a run's identity) and records the absolute folder it named when the job ran, in the report
    and in every run's record; a run resumed from another folder keeps the folder it was trained with. The data
    themselves are the synthetic set in an MNIST config (only the recorded folder matters here)."""
    synthetic = make_synthetic(seed=0)
    import imc_grapes.data.datasets as datasets_mod

    monkeypatch.setattr(datasets_mod, "load_dataset", lambda *a, **k: synthetic)    # DatasetCache's loads
    first_cwd, second_cwd = tmp_path / "a", tmp_path / "b"
    first_cwd.mkdir()
    second_cwd.mkdir()
    base = BASE.replace(dataset="mnist", data_root="data", inference_times=())
    spec = CompareSpec(base=base, optimizers=("sgd",), hardware=("digital",), seeds=(0,))
    out = tmp_path / "report"
    monkeypatch.chdir(first_cwd)
    run_compare(spec, out, progress=False, log=lambda s: None)
    expected = os.path.join(os.path.realpath(tmp_path), "a", "data")
    saved = json.loads((out / "results.json").read_text())
    assert saved["spec"]["base"]["data_root"] == "data"
    assert saved["data_root_resolved"] == expected
    assert [r["data_root_resolved"] for r in saved["runs"]] == [expected]
    run = json.loads((out / "runs" / "digital" / "sgd" / "lr0.1_seed0" / "results.json").read_text())
    assert run["config"]["data_root"] == "data" and run["data_root_resolved"] == expected
    monkeypatch.chdir(second_cwd)
    said: list[str] = []
    run_compare(spec, out, progress=False, log=said.append)
    assert sum("(resumed:" in s for s in said) == 1
    saved = json.loads((out / "results.json").read_text())
    assert saved["data_root_resolved"] == os.path.join(os.path.realpath(tmp_path), "b", "data")
    assert [r["data_root_resolved"] for r in saved["runs"]] == [expected]


@pytest.mark.parametrize("times, scale", [((1.0, 3600.0), "log"), ((0.0, 1.0, 3600.0), "symlog")])
def test_the_inference_plot_shows_every_time_including_zero(tmp_path, monkeypatch, times, scale):
    """A time of 0 (the read right after programming) has no place on a log axis: the axis becomes symmetric-log
    and the point is drawn at x = 0 like the others at their times."""
    figures = {}
    monkeypatch.setattr(compare_mod, "write_figure_atomic", lambda path, fig, **kw: figures.update({path.name: fig}))
    row = {"hardware": "analog", "optimizer": "sgd", "final_test_acc_mean": 0.9, "final_test_acc_std": 0.0,
           **{f"inference_acc@{time_key(t)}": 0.9 - 0.01 * i for i, t in enumerate(times)}}
    compare_mod.plot_report([compare_mod.Cell("analog", "sgd", 0.1, [])], [row], tmp_path)
    ax = figures["inference.png"].axes[0]
    assert ax.get_xscale() == scale
    (line,) = ax.get_lines()
    assert list(line.get_xdata()) == list(times)
    shown = ax.transData.transform(np.column_stack([line.get_xdata(), line.get_ydata()]))
    assert np.isfinite(shown).all() and (np.diff(shown[:, 0]) > 0).all()   # every point drawn, left to right


def test_mean_std_and_paired_differences_leave_out_missing_and_non_finite_values():
    """Hand values: the mean and sample std (n − 1) of 0.5 and 0.7 are 0.6 and 0.1·√2; None, NaN, ±Inf, a "nan"
    string (how results.json holds a NaN) and a bool are not values. Paired: only seeds finite in both count."""
    m, s = compare_mod.mean_std([0.5, None, math.nan, "nan", math.inf, 0.7, True])
    assert m == pytest.approx(0.6) and s == pytest.approx(0.1 * math.sqrt(2))
    assert compare_mod.mean_std([0.8]) == (0.8, 0.0) and compare_mod.mean_std([None, "nan"]) == (None, None)
    p = compare_mod.paired_by_seed({0: 0.7, 1: math.nan, 2: 0.5, 3: 0.9, 4: None}, {0: 0.6, 1: 0.5, 2: 0.6, 4: 0.1})
    assert p["mean"] == pytest.approx(0.0) and p["std"] == pytest.approx(0.1 * math.sqrt(2))
    assert (p["n"], p["positive"], p["negative"]) == (2, 1, 1)
    assert compare_mod.paired_by_seed({0: math.nan}, {0: 0.5}) is None


def _strict_json(path):
    def reject(name):
        raise ValueError(f"{path}: not strict JSON ({name})")
    return json.loads(path.read_text(), parse_constant=reject)


def test_a_nan_metric_is_strict_json_and_the_job_resumes_with_the_same_summary(tmp_path, monkeypatch):
    """A run whose inference accuracy (the weights were NaN) and test loss are NaN: the files stay strict JSON
    (NaN as "nan"), the summary's inference accuracy at 1 s is NaN (a completed run's network broke: a mean of seed
    0's 0.4 alone would cover one of the two completed runs), and a second job resumes the runs (it raised a
    TypeError on the "nan" string) with the same summary and the NaN as a float again."""
    calls = []

    def fake_train(cfg, run_dir, **kw):
        calls.append(cfg.seed)
        nan = cfg.seed == 1
        hist = [{"epoch": 1.0, "test_acc": 0.5 + 0.1 * cfg.seed, "test_loss": math.nan if nan else 1.0,
                 "train_loss": 1.0}]
        res = compare_mod.RunResult(cfg, hist, "completed", run_dir=run_dir,
                                    extra={"inference": {"1": math.nan if nan else 0.4}})
        compare_mod.write_json_atomic(run_dir / "results.json", res.to_dict())
        return res

    monkeypatch.setattr(compare_mod, "train", fake_train)
    spec = CompareSpec(base=BASE, optimizers=("sgd",), hardware=("analog",), seeds=(0, 1), target_acc=0.55)
    first = run_compare(spec, tmp_path, progress=False, log=lambda s: None)
    row = first["summary"][0]
    assert row["final_test_acc_mean"] == pytest.approx(0.55) and row["final_test_acc_std"] == pytest.approx(
        0.1 / math.sqrt(2))
    assert math.isnan(row["inference_acc@1"]) and row["reached_target"] == "1/2"
    saved = _strict_json(tmp_path / "results.json")
    assert saved["runs"][1]["inference"] == {"1": "nan"} and saved["runs"][1]["history"][0]["test_loss"] == "nan"
    _strict_json(tmp_path / "runs" / "analog" / "sgd" / "lr0.1_seed1" / "results.json")
    second = run_compare(spec, tmp_path, progress=False, log=lambda s: None)
    assert calls == [0, 1], "both runs resumed"
    assert json.dumps(second["summary"]) == json.dumps(first["summary"])     # (NaN == NaN is False in a dict)
    assert math.isnan(second["runs"][1]["history"][0]["test_loss"]) and math.isnan(second["runs"][1]["inference"]["1"])
    assert "| nan |" in (tmp_path / "report.md").read_text()


def _hist(accs):
    return [{"epoch": k + 1.0, "test_acc": a} for k, a in enumerate(accs)]


def test_report_plots_leave_out_stopped_runs_and_draw_empty_cells_without_warnings(tmp_path, monkeypatch):
    """The curves are over completed runs (a diverged run's one evaluation cut the other seeds' curves to one
    point), a cell without a completed run gets no bar (it was drawn as 0.0 %) and no legend warning, and an
    inference plot with only NaN gets a note instead of an empty legend. The curves' legend says on how many runs
    each line rests, and names the cell without a completed run instead of leaving it out in silence."""
    figures = {}
    monkeypatch.setattr(compare_mod, "write_figure_atomic", lambda path, fig, **kw: figures.update({path.name: fig}))
    run = compare_mod.RunResult
    sgd = compare_mod.Cell("analog", "sgd", 0.1, [run(BASE.replace(seed=0), _hist([0.5, 0.6, 0.7]), "completed"),
                                                   run(BASE.replace(seed=1), _hist([0.3, 0.5, 0.9]), "completed"),
                                                   run(BASE.replace(seed=2), _hist([0.2]), "diverged")])
    gone = compare_mod.Cell("analog", "grapes", 0.1, [run(BASE, _hist([0.4]), "diverged")])
    rows = compare_mod.summarise_cells([sgd, gone], 0.9)
    rows[0]["inference_acc@1"] = None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compare_mod.plot_report([gone], rows[1:], tmp_path)      # nothing completed at all
        compare_mod.plot_report([sgd, gone], rows, tmp_path)
    (line,) = [line for line in figures["curves.png"].axes[0].get_lines() if len(line.get_xdata())]
    assert [t.get_text() for t in figures["curves.png"].axes[0].get_legend().get_texts()] == [
        "sgd (lr 0.1, n=2 of 3)", "grapes (lr 0.1): no completed run of 1"]
    assert list(line.get_xdata()) == [1.0, 2.0, 3.0] and list(line.get_ydata()) == pytest.approx([40.0, 55.0, 80.0])
    bars = figures["accuracy.png"].axes[0].patches
    assert len(bars) == 1 and bars[0].get_height() == pytest.approx(80.0)       # (0.7 + 0.9) / 2
    assert "no completed\nrun" in [t.get_text() for t in figures["accuracy.png"].axes[0].texts]


def test_findings_say_when_two_cells_completed_different_seeds():
    """GRAPES diverged on seed 2: its mean (0.75, seeds 0-1) and SGD's (0.6, seeds 0-2) are over different seeds;
    the statement gives the paired difference over seeds 0 and 1 by hand: (0.7 − 0.6, 0.8 − 0.5) = (0.1, 0.3),
    mean +20.00, std 0.1·√2 = 14.14 points, higher on 2 of 2."""
    run = compare_mod.RunResult
    sgd = compare_mod.Cell("digital", "sgd", 0.1, [run(BASE.replace(seed=s), _hist([a]), "completed")
                                                    for s, a in ((0, 0.6), (1, 0.5), (2, 0.7))])
    gr = compare_mod.Cell("digital", "grapes", 0.1, [run(BASE.replace(seed=0), _hist([0.7]), "completed"),
                                                      run(BASE.replace(seed=1), _hist([0.8]), "completed"),
                                                      run(BASE.replace(seed=2), _hist([0.1]), "diverged")])
    lm = compare_mod.Cell("digital", "layer-mean", 0.1, [run(BASE.replace(seed=s), _hist([0.7]), "completed")
                                                          for s in (0, 1)])
    rows = compare_mod.summarise_cells([sgd, gr, lm], 0.9)
    (text,) = findings(rows, [sgd, gr, lm])
    assert text.startswith("**digital**: GRAPES +15.00 points vs SGD (")
    assert ("[the means are over different seeds: GRAPES completed 2, SGD 3 of 3; paired over the 2 seed(s) both "
            "completed: +20.00 ± 14.14 points, GRAPES higher on 2 of 2]") in text
    assert text.count("different seeds") == 1, "GRAPES and the layer-mean control completed the same seeds"
    assert "different seeds" not in findings(rows)[0], "without the cells: the rows' statement only"


def test_column_notes_explain_the_inference_columns_only_when_the_table_has_them():
    """A digital-only job has no ``acc % @t`` columns, so its legend does not describe them."""
    digital = [{"hardware": "digital", "optimizer": "sgd"}]
    analog = digital + [{"hardware": "analog", "optimizer": "sgd", "inference_acc@1.0": 0.5}]
    assert compare_mod.column_notes(digital, 0.9).startswith("*epochs to 90%*: ")
    assert "*acc % @t*" not in compare_mod.column_notes(digital, 0.9)
    assert "*acc % @t*" in compare_mod.column_notes(analog, 0.97)
    assert compare_mod.column_notes(analog, 0.97).startswith("*epochs to 97%*: ")


def _cells(rows):
    return [compare_mod.Cell(r["hardware"], r["optimizer"], 0.1, []) for r in rows]


def _acc_row(hw, opt, mean, std, runs, completed, **extra):
    return {"hardware": hw, "optimizer": opt, "final_test_acc_mean": mean, "final_test_acc_std": std, "runs": runs,
            "completed": completed, **extra}


def test_accuracy_plot_labels_two_decimals_and_draws_no_error_bar_for_a_single_seed(tmp_path, monkeypatch):
    """The bar labels have the table's two decimals (0.8885 → "88.85", not "88.8"); with one seed the title says
    so and no error bar is drawn (a single run has no seed spread; its stored std 0 drew a zero-width bar)."""
    figures = {}
    monkeypatch.setattr(compare_mod, "write_figure_atomic", lambda path, fig, **kw: figures.update({path.name: fig}))
    rows = [_acc_row("digital", "sgd", 0.8885, 0.0, 1, 1), _acc_row("analog", "grapes", 0.41234, 0.0, 1, 1)]
    compare_mod.plot_report(_cells(rows), rows, tmp_path)
    ax = figures["accuracy.png"].axes[0]
    assert [t.get_text() for t in ax.texts] == ["88.85", "41.23"]
    assert [p.get_height() for p in ax.patches] == pytest.approx([88.85, 41.234])
    assert ax.get_title() == "Final test accuracy (one seed)"
    assert not ax.lines and not ax.collections          # no error bar (neither its line segments nor its caps)
    assert "mean ± std" not in ax.get_title()


def test_accuracy_plot_error_bars_are_the_seed_std_and_absent_for_a_cell_with_one_completed_run(tmp_path,
                                                                                                  monkeypatch):
    """With 3 seeds the title names them and each cell with ≥ 2 completed runs gets an error bar of ± its std (in
    points); a cell where 2 of 3 runs diverged has one completed run: no bar of spread, and its label says so."""
    figures = {}
    monkeypatch.setattr(compare_mod, "write_figure_atomic", lambda path, fig, **kw: figures.update({path.name: fig}))
    rows = [_acc_row("digital", "sgd", 0.90, 0.02, 3, 3), _acc_row("digital", "grapes", 0.95, 0.0, 3, 1, diverged=2),
            _acc_row("analog", "sgd", 0.50, 0.05, 3, 2, diverged=1)]
    compare_mod.plot_report(_cells(rows), rows, tmp_path)
    ax = figures["accuracy.png"].axes[0]
    assert ax.get_title() == "Final test accuracy (mean ± std over 3 seeds)"
    (bars,) = [c for c in ax.collections if len(c.get_segments()) == 2]   # the vertical error-bar segments
    segs = sorted((s[0][0], s[0][1], s[1][1]) for s in bars.get_segments())
    assert segs == [pytest.approx((0, 88.0, 92.0)), pytest.approx((2, 45.0, 55.0))]   # cells 0 and 2; not cell 1
    assert [t.get_text() for t in ax.texts] == ["90.00", "95.00\n(1 run)", "50.00"]
    top = {round(t.get_position()[0]): t.get_position()[1] for t in ax.texts}
    assert top[0] == pytest.approx(92.3) and top[2] == pytest.approx(55.3)   # labels above their error bars


def test_inference_legend_stands_outside_the_axes_and_covers_no_point(tmp_path, monkeypatch):
    """The legend of inference.png covered GRAPES's point at 1 s (upper left of the data); it now stands right of
    the axes: no drawn point falls inside its box."""
    figures = {}
    monkeypatch.setattr(compare_mod, "write_figure_atomic", lambda path, fig, **kw: figures.update({path.name: fig}))
    times = (1.0, 3600.0, 86400.0, 31536000.0)
    rows = [_acc_row("analog", opt, 0.9, 0.0, 1, 1, **{f"inference_acc@{time_key(t)}": a for t, a in zip(times, accs)})
            for opt, accs in (("sgd", (0.85, 0.84, 0.80, 0.70)), ("grapes", (0.90, 0.88, 0.85, 0.80)),
                              ("layer-mean", (0.88, 0.86, 0.83, 0.75)))]
    compare_mod.plot_report(_cells(rows), rows, tmp_path)
    fig = figures["inference.png"]
    ax = fig.axes[0]
    fig.canvas.draw()
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["analog sgd (n=1)", "analog grapes (n=1)",
                                                          "analog layer-mean (n=1)"]
    box, axes_box = legend.get_window_extent(), ax.get_window_extent()
    assert box.x0 >= axes_box.x1                                          # right of the axes
    assert box.x1 <= fig.bbox.x1                                          # and inside the figure
    for line in ax.get_lines():
        for x, y in ax.transData.transform(np.column_stack([line.get_xdata(), line.get_ydata()])):
            assert not box.contains(x, y)


def test_a_reused_run_is_reported_with_the_versions_it_was_trained_with(tmp_path):
    """A resumed job reports, for each run it reuses, the code and versions recorded in that run's own
    results.json (here a made-up commit), not those of the process that resumed it; a run it trains again is
    reported with the versions of its training."""
    from imc_grapes.versions import versions

    spec = CompareSpec(base=BASE, optimizers=("sgd",), hardware=("digital",), seeds=(0, 1))
    run_compare(spec, tmp_path, progress=False, log=lambda s: None)
    reused = tmp_path / "runs" / "digital" / "sgd" / "lr0.1_seed0" / "results.json"
    saved = json.loads(reused.read_text())
    fake = {**saved["versions"], "git_commit": "0123456789abcdef0123456789abcdef01234567", "torch": "0.0.fake"}
    saved["versions"] = fake
    reused.write_text(json.dumps(saved))
    (tmp_path / "runs" / "digital" / "sgd" / "lr0.1_seed1" / "results.json").unlink()     # trained again
    said = []
    result = run_compare(spec, tmp_path, progress=False, log=said.append)
    assert sum("(resumed:" in s for s in said) == 1
    by_seed = {r["config"]["seed"]: r for r in result["runs"]}
    assert by_seed[0]["versions"] == fake
    now = versions()
    assert by_seed[1]["versions"]["git_commit"] == now["git_commit"] and by_seed[1]["versions"]["torch"] == now["torch"]
    on_disk = {r["config"]["seed"]: r for r in json.loads((tmp_path / "results.json").read_text())["runs"]}
    assert on_disk[0]["versions"]["git_commit"] == "0123456789abcdef0123456789abcdef01234567"
    assert on_disk[1]["versions"]["git_commit"] == now["git_commit"]
    # a reused run whose results.json recorded no versions claims none (not the resuming process's)
    del saved["versions"]
    reused.write_text(json.dumps(saved))
    assert run_compare(spec, tmp_path, progress=False, log=lambda s: None)["runs"][0]["versions"] == {}


@pytest.mark.parametrize("second, inference", [(0.7, 0.3), (math.nan, 0.3), (0.7, math.nan)])
def test_compare_and_report_summaries_agree_on_a_nan_accuracy(second, inference):
    """Two completed runs of one optimizer (final accuracy 0.5 and ``second``; inference accuracy at 1 s 0.4 and
    ``inference``) and a diverged one: compare's cell row and report's summary row give the same means over the two
    completed runs — by hand 0.6 and 0.35 — or NaN where a completed run's value is NaN, in both."""
    from imc_grapes.report import summarise

    run = compare_mod.RunResult

    def hist(accs):
        return [{**h, "train_loss": 1.0} for h in _hist(accs)]

    runs = [run(BASE.replace(seed=0), hist([0.2, 0.5]), "completed", extra={"inference": {"1": 0.4}}),
            run(BASE.replace(seed=1), hist([0.3, second]), "completed", extra={"inference": {"1": inference}}),
            run(BASE.replace(seed=2), hist([0.1]), "diverged")]
    (cell,) = compare_mod.summarise_cells([compare_mod.Cell("analog", "sgd", 0.1, runs)], 0.9)
    (rep,) = summarise(runs)
    want_acc = math.nan if math.isnan(second) else 0.6
    want_inf = math.nan if math.isnan(inference) else 0.35
    for row in (cell, rep):
        assert row["final_test_acc_mean"] == pytest.approx(want_acc, nan_ok=True)
        assert row["inference_acc@1"] == pytest.approx(want_inf, nan_ok=True)
        assert row["final_test_acc_std"] == pytest.approx(math.nan if math.isnan(second) else 0.1 * math.sqrt(2),
                                                          nan_ok=True)
        assert row["inference_acc_std@1"] == pytest.approx(math.nan if math.isnan(inference) else 0.05 * math.sqrt(2),
                                                           nan_ok=True)
    assert cell["completed"] == 2


def test_findings_do_not_judge_a_nan_mean():
    """A NaN mean accuracy (a completed run broke) is not compared: the statement says so instead of printing a
    "nan points" difference judged against the spread."""
    rows = [{"hardware": "analog", "optimizer": "sgd", "runs": 2, "completed": 2, "final_test_acc_mean": 0.6,
             "final_test_acc_std": 0.01},
            {"hardware": "analog", "optimizer": "grapes", "runs": 2, "completed": 2, "final_test_acc_mean": math.nan,
             "final_test_acc_std": math.nan}]
    assert findings(rows) == ["**analog**: GRAPES vs SGD not compared: a completed run of GRAPES has no finite "
                              "accuracy (its mean is NaN)."]
    rows[1].update(final_test_acc_mean=0.7, final_test_acc_std=0.01)
    rows.append({"hardware": "analog", "optimizer": "layer-mean", "runs": 2, "completed": 2,
                 "final_test_acc_mean": math.nan, "final_test_acc_std": math.nan})
    (text,) = findings(rows)
    assert text.startswith("**analog**: GRAPES +10.00 points vs SGD (more than twice")
    assert "; vs the layer-mean control: not compared (a completed run of it has no finite accuracy" in text
    assert "nan" not in text


def test_a_report_without_inference_results_removes_an_earlier_jobs_inference_png(tmp_path):
    """A job rerun into the same folder without the drift evaluation (``--inference-times`` with no times, or
    digital only) left the earlier job's inference.png beside the new report, which has no such results."""
    (tmp_path / "inference.png").write_bytes(b"an earlier job's figure")
    (tmp_path / "other.png").write_bytes(b"not the report's")
    rows = [_acc_row("analog", "sgd", 0.5, 0.0, 1, 1)]
    assert compare_mod.plot_report(_cells(rows), rows, tmp_path) == ["curves.png", "accuracy.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["accuracy.png", "curves.png", "other.png"]
    rows = [_acc_row("analog", "sgd", 0.5, 0.0, 1, 1, **{"inference_acc@1.0": 0.48})]
    assert compare_mod.plot_report(_cells(rows), rows, tmp_path) == ["curves.png", "accuracy.png", "inference.png"]
    assert (tmp_path / "inference.png").read_bytes()[:4] == b"\x89PNG"      # drawn again when there are results


def test_a_job_interrupted_in_a_finished_report_folder_makes_the_report_read_as_older_than_its_runs(tmp_path,
                                                                                                     monkeypatch,
                                                                                                     capsys):
    """A compare job started again in a finished report's folder (here with a second seed) and interrupted left the
    earlier results.json, which compare-summary and --redraw then used as if it were the report of the runs beside
    it. The earlier results.json is kept as it was, but both refuse it and say to run the same command again; that
    resumes every finished run and writes the report, which both read again."""
    from imc_grapes.io import read_json

    job = tmp_path / "job"
    one = CompareSpec(base=BASE, optimizers=("sgd",), hardware=("digital",), seeds=(0,))
    first = run_compare(one, job, progress=False, command="imc-grapes compare --seeds 0", log=lambda s: None)
    marker = read_json(job / "runs" / "job.json")
    assert first["job"] == marker["job"] == read_json(job / "results.json")["job"]
    assert marker["command"] == "imc-grapes compare --seeds 0"
    assert main(["compare-summary", str(job), "--out", str(tmp_path / "s1")]) == 0
    assert main(["compare", "--redraw", "--out", str(job)]) == 0
    before = (job / "results.json").read_bytes()
    capsys.readouterr()

    two = dataclasses.replace(one, seeds=(0, 1))
    real_train = compare_mod.train
    trained: list[int] = []

    def train_until_seed_1(cfg, *a, **k):
        if cfg.seed == 1:
            raise KeyboardInterrupt
        trained.append(cfg.seed)
        return real_train(cfg, *a, **k)

    monkeypatch.setattr(compare_mod, "train", train_until_seed_1)
    with pytest.raises(KeyboardInterrupt):
        run_compare(two, job, progress=False, command="imc-grapes compare --seeds 0 1", log=lambda s: None)
    assert trained == [], "seed 0 was resumed, not trained again"
    assert (job / "results.json").read_bytes() == before, "the earlier report is kept as it was"
    started = read_json(job / "runs" / "job.json")
    assert started["job"] != first["job"] and started["command"] == "imc-grapes compare --seeds 0 1"
    note = (f"the report is older than its runs: a later `imc-grapes compare` job began in {job} at "
            f"{started['started']} and has not finished (the report's results.json is written when the job ends), so "
            "its runs/ folder may hold newer runs than results.json; run the same command again (imc-grapes compare "
            f"--seeds 0 1) to finish it (it resumes the finished runs), or remove {job / 'runs' / 'job.json'} to use "
            "the earlier report as it is")
    assert main(["compare-summary", str(job), "--out", str(tmp_path / "s2")]) == 2
    assert capsys.readouterr().err == f"imc-grapes compare-summary: error: {job / 'results.json'}: {note}\n"
    assert not (tmp_path / "s2").exists()
    assert main(["compare", "--redraw", "--out", str(job)]) == 2
    assert capsys.readouterr().err == f"imc-grapes compare: error: --redraw: {job / 'results.json'}: {note}\n"

    monkeypatch.setattr(compare_mod, "train", lambda cfg, *a, **k: trained.append(cfg.seed) or real_train(cfg, *a,
                                                                                                           **k))
    done = run_compare(two, job, progress=False, log=lambda s: None)      # the same job again: it finishes
    assert trained == [1], "only the run the interruption stopped is trained"
    assert done["job"] == read_json(job / "runs" / "job.json")["job"] != started["job"]
    assert [r["config"]["seed"] for r in done["runs"]] == [0, 1]
    assert main(["compare-summary", str(job), "--out", str(tmp_path / "s3")]) == 0
    assert main(["compare", "--redraw", "--out", str(job)]) == 0


#: the line under a table that shows a NaN accuracy, written out here (not read from the code under test)
NAN_NOTE = ("nan: the model's outputs (logits) or weights were not finite (NaN/Inf) at that evaluation, so it has no "
            "accuracy (e.g. outputs beyond the float32 range after drift); a mean over runs is nan when one of its "
            "runs' is")


def _drifted_cells():
    """Two analog cells of two completed runs each, evaluated after drift at 1 s and 1 y: sgd's second run has no
    accuracy at 1 y (NaN: its outputs overflowed), grapes's runs none at any time."""
    def run(seed, acc, inference):
        return compare_mod.RunResult(dataclasses.replace(BASE, seed=seed), [{"epoch": 1, "test_acc": acc}],
                                     "completed", extra={"inference": inference})

    nan = float("nan")
    return [compare_mod.Cell("analog", "sgd", 0.1, [run(0, 0.75, {"1": 0.75, "31536000": 0.5}),
                                                     run(1, 0.5, {"1": 0.25, "31536000": nan})]),
            compare_mod.Cell("analog", "grapes", 0.1, [run(0, 0.75, {"1": nan, "31536000": nan}),
                                                        run(1, 0.75, {"1": nan, "31536000": nan})])]


def test_a_nan_accuracy_after_drift_reads_nan_and_the_tables_say_why():
    """The mean over a cell's runs at a time where one run has no accuracy is NaN (nan_propagates): the table shows
    ``nan`` there (sgd at 1 y; grapes at both times), the finite means as before (sgd at 1 s: (75 + 25) / 2 = 50.00),
    and below the table why: its last line in plain text, a paragraph after a blank line in Markdown (a line
    right under a Markdown table would be read as one of its rows). A table without a NaN has no such line."""
    rows = compare_mod.summarise_cells(_drifted_cells(), 0.9)
    assert math.isnan(rows[0]["inference_acc@31536000"]) and rows[0]["inference_acc@1"] == pytest.approx(0.5)
    plain = compare_mod.format_table(rows, 0.9).splitlines()
    assert plain[2].split()[-2:] == ["50.00", "nan"] and plain[3].split()[-2:] == ["nan", "nan"]
    assert plain[-1] == NAN_NOTE and len(plain) == 5
    markdown = compare_mod.format_table(rows, 0.9, markdown=True).split("\n")
    assert markdown[2].endswith("| 50.00 | nan |") and markdown[3].endswith("| nan | nan |")
    assert markdown[4:] == ["", NAN_NOTE]
    fine = [dict(rows[0], **{"inference_acc@31536000": 0.5})]
    assert "nan" not in compare_mod.format_table(fine, 0.9) + compare_mod.format_table(fine, 0.9, markdown=True)


def test_inference_plot_says_why_a_point_or_a_cell_has_no_accuracy(tmp_path, monkeypatch):
    """inference.png: sgd's line has no point at 1 y (NaN), its legend entry says so; grapes, without a finite
    accuracy at any time, is not left out in silence but named (a cross, no line); a caption under the axes says
    what nan means. Without any row evaluated, the note in the empty axes names both causes."""
    figures = {}
    monkeypatch.setattr(compare_mod, "write_figure_atomic", lambda path, fig, **kw: figures.update({path.name: fig}))
    cells = _drifted_cells()
    rows = compare_mod.summarise_cells(cells, 0.9)
    compare_mod.plot_report(cells, rows, tmp_path)
    fig = figures["inference.png"]
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "analog sgd (n=2; nan at 1y)", "analog grapes: nan at every time"]
    assert [t.get_text() for t in fig.texts] == [
        "nan: weights or outputs not finite (NaN/Inf) at that time, so no accuracy; a mean over runs is nan when one "
        "of its runs' is"]
    (sgd, grapes) = ax.get_lines()
    assert list(grapes.get_xdata()) == [] and grapes.get_marker() == "x"
    assert list(sgd.get_ydata()[:1]) == [50.0] and math.isnan(sgd.get_ydata()[1])
    figures.clear()
    empty = [dict(r, **{"inference_acc@1": None, "inference_acc@31536000": None}) for r in rows]
    compare_mod.plot_report(cells, empty, tmp_path)
    fig = figures["inference.png"]
    assert fig.axes[0].get_legend() is None and not fig.texts
    assert [t.get_text() for t in fig.axes[0].texts] == [
        "no finite accuracy\n(no completed run, or weights or outputs not finite (NaN/Inf))"]


def test_report_md_says_why_a_table_or_a_tuning_score_is_nan():
    """report.md: the results table with a NaN mean after drift is followed by the note as a paragraph of its own;
    the lr-tuning table with a NaN score (a completed tuning run without a finite validation accuracy) too."""
    cells = _drifted_cells()
    rows = compare_mod.summarise_cells(cells, 0.9)
    cells[0].tuning_by_seed.update({0.1: {0: 0.5}, 0.3: {0: float("nan")}})
    md = compare_mod.render_markdown(CompareSpec(base=BASE, lr_grid=(0.1, 0.3)), rows, cells, [], None)
    assert f"| nan | nan |\n\n{NAN_NOTE}\n\n*mean ± std*: " in md
    assert f"| analog | sgd | 50.00 | nan | 0.1 |\n\n{NAN_NOTE}\n" in md


@pytest.mark.parametrize("base, optimizers, hardware, caveat", [
    ("adam", ("sgd", "grapes", "layer-mean"), ("digital", "analog"), "layer-mean"),
    ("rmsprop", ("sgd", "grapes-local", "layer-mean"), ("digital",), "grapes-local and layer-mean"),
    ("sgd", ("sgd", "grapes-local", "layer-mean"), ("digital",), None),        # SGD keeps the factors
    ("adam", ("sgd", "grapes"), ("digital",), None),                            # propagated: not divided out
    ("adam", ("sgd", "layer-mean"), ("analog",), None),                         # analog weights: pulsed SGD steps
])
def test_report_header_names_the_base_optimizer_and_the_adaptive_caveat(base, optimizers, hardware, caveat):
    """The header names the base optimizer (its momentum where it takes one); with an adaptive one (Adam, RMSprop:
    the step divided by a running scale of the gradient) it warns that grapes-local's and layer-mean's digital rows
    barely differ from sgd's (tests/imc_grapes/test_grapes_hooks.py measures that against plain Adam)."""
    spec = CompareSpec(base=BASE.replace(base_optimizer=base, momentum=0.9 if base != "adam" else 0.0),
                       optimizers=optimizers, hardware=hardware, lr_grid=(0.1,))
    md = compare_mod.render_markdown(spec, [], [], [], None)
    momentum = "momentum 0.9, " if base != "adam" else ""
    assert f"* base optimizer: {base} ({momentum}weight decay 0) for the digital parameters" in md
    if caveat is None:
        assert "caveat" not in md
    else:
        assert f"* caveat: {base} divides each weight's step by a running scale" in md
        assert f"the digital rows of {caveat} barely differ from the `sgd` row" in md


def test_the_adaptive_base_optimizers_are_base_optimizers():
    """Every name of ADAPTIVE_BASE_OPTIMIZERS (the report's caveat) is a usable base optimizer: no typo."""
    from imc_grapes.backends.optim import ADAPTIVE_BASE_OPTIMIZERS, base_optimizer_names

    assert set(ADAPTIVE_BASE_OPTIMIZERS) <= set(base_optimizer_names())


def test_the_adaptive_caveat_of_a_report_without_sgd_names_no_sgd_row():
    """A report of grapes-local and layer-mean alone under Adam has no `sgd` row: its caveat said their rows "barely
    differ from the `sgd` row" all the same. It now says what they barely differ from: `sgd` under the same base
    optimizer, not run in this report."""
    spec = CompareSpec(base=BASE.replace(base_optimizer="adam", momentum=0.0),
                       optimizers=("grapes-local", "layer-mean"), hardware=("digital",), lr_grid=(0.1,))
    md = compare_mod.render_markdown(spec, [], [], [], None)
    assert "the `sgd` row" not in md
    assert ("the digital rows of grapes-local and layer-mean barely differ from what `sgd` (no modulation under the "
            "same base optimizer; not run in this report) would give (README") in md


def test_grapes_ops_share_leaves_the_exact_importance_additions_out_and_the_report_says_so():
    """*GRAPES ops %* is ``grapes_ops_per_step / ops_per_step``: the ``exact`` importance's Σ|w| additions
    (``importance_digital_adds``, counted apart in costs.py) are in the step's total, not in the share. A run of the
    6-5-4-3 MLP of test_costs (propagated, exact): 54 GRAPES ops and 50 additions in a step of 1,000 operations ->
    5.4 % (not 10.4 %); the report's column note says what the share holds."""
    costs = {"grapes_ops_per_step": 54.0, "ops_per_step": 1000.0, "per_step": {"importance_digital_adds": 50.0}}
    run = compare_mod.RunResult(BASE, [{"epoch": 1, "test_acc": 0.5}], "completed", extra={"costs": costs})
    assert compare_mod._grapes_ops_share(run) == pytest.approx(0.054)
    md = compare_mod.render_markdown(CompareSpec(base=BASE, lr_grid=(0.1,)), [], [], [], None)
    assert "the `exact` importance's Σ|w| additions are in the total but not in the share" in md


def test_a_compare_run_gives_the_numbers_train_gives_for_its_recorded_config(tmp_path):
    """Same config, same numbers: the synthetic set is generated from the run's seed (as ``train`` and ``sweep``
    generate it), so a compare run of seed 1 has the history that ``train`` gives the config it recorded, and one
    of another base seed is not resumed from data of the first (it was trained on seed 0's set before)."""
    from imc_grapes.train import train

    spec = CompareSpec(base=BASE, optimizers=("sgd",), hardware=("digital",), lr_grid=(0.1,), seeds=(1,))
    res = run_compare(spec, tmp_path / "c", progress=False, log=lambda s: None)
    saved = json.loads((tmp_path / "c" / "runs" / "digital" / "sgd" / "lr0.1_seed1" / "results.json").read_text())
    cfg = TrainConfig.from_dict(saved["config"])
    assert cfg.seed == 1
    alone = train(cfg, tmp_path / "t", progress=False, log=lambda s: None)
    keys = ("train_loss", "test_acc", "test_loss")
    assert [[row[k] for k in keys] for row in saved["history"]] == [[row[k] for k in keys] for row in alone.history]
    assert res["runs"][0]["history"][-1]["test_acc"] == alone.history[-1]["test_acc"]
