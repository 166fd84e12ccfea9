"""Every named experiment end to end in its tiny size (synthetic data), the report folder, resume, and the
command line."""
import argparse
import csv
import json
import shutil
from pathlib import Path

import pytest

import imc_grapes.experiments.groups as groups_mod
from imc_grapes.experiments import EXPERIMENTS, ExperimentOptions, run_experiment
from imc_grapes.experiments.cli import add_experiment_parser, run_experiment_command

QUIET = {"progress": False, "log": lambda s: None}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _check_folder(out, n_groups, extra_png=()):
    for name in ("results.json", "results.csv", "summary.csv", "report.md", "accuracy.png", "gain.png",
                 "curves.png", *extra_png):
        assert (out / name).is_file(), name
    for name in ("accuracy.png", "curves.png", *extra_png):
        assert (out / name).read_bytes()[:4] == b"\x89PNG", name
    saved = json.loads((out / "results.json").read_text())
    assert len(saved["groups"]) == n_groups
    assert saved["data_root_resolved"] is None   # tiny: the synthetic set, read from no folder
    for g in saved["groups"]:
        folder = out / "groups" / g["key"]
        for name in ("results.json", "results.csv", "report.md", "curves.png", "accuracy.png"):
            assert (folder / name).is_file(), f"{g['key']}/{name}"
        assert json.loads((folder / "results.json").read_text())["data_root_resolved"] is None
    return saved


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_every_experiment_runs_tiny_and_writes_its_report(name, tmp_path):
    res = run_experiment(name, ExperimentOptions(size="tiny"), tmp_path, **QUIET)
    pngs = ("matrix.png", "forgetting.png") if name == "forgetting" else ()
    saved = _check_folder(tmp_path, len(res["groups"]), pngs)
    assert saved["experiment"] == name and saved["size"] == "tiny"
    assert {r["optimizer"] for r in saved["summary"]} == {"sgd", "grapes", "layer-mean"}
    assert all(r["final_test_acc_mean"] is not None for r in saved["summary"])
    assert all(g["spec"]["base"]["dataset"] == "synthetic" for g in saved["groups"])
    # one row per final run, each a finished run folder
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert len(rows) == sum(r["runs"] for r in saved["summary"])
    assert all(r["status"] == "completed" for r in rows)
    md = (tmp_path / "report.md").read_text()
    assert EXPERIMENTS[name].claim in md and "| grapes |" in md and "![curves.png](curves.png)" in md
    assert "(partial last batch left out)" in md
    # paired differences: every non-SGD optimizer against SGD, GRAPES against the layer-mean control
    pairs = {(c["a"], c["b"]) for c in saved["comparisons"]}
    assert pairs == {("grapes", "sgd"), ("layer-mean", "sgd"), ("grapes", "layer-mean")}
    if name == "forgetting":
        assert all("avg_acc_mean" in r and r["forgetting_mean"] is not None for r in saved["summary"])
        # the title and notes name what ran at tiny (3 tasks of synthetic data, 784-16-16-10, batch 32)
        assert md.startswith("# Experiment `forgetting` (tiny): Catastrophic forgetting on permuted synthetic data "
                             "(3 tasks, 1 epoch each)\n")
        assert "* 784-16-16-10 bias-free" in md and "batch 32, 1 epoch per task" in md and "5 tasks" not in md
        assert saved["title"] == EXPERIMENTS[name].texts_for(ExperimentOptions(size="tiny"))[0]
    # "epochs to target" would count tasks for forgetting (its evaluation points): only the other experiments have it
    header = next(line for line in md.splitlines() if line.startswith("| ") and "| optimizer |" in line)
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert ("epochs to target" in cols) == (name != "forgetting")
    assert len(cols) == md.split(header + "\n")[1].splitlines()[1].count("|") - 1     # rows as wide as the header
    if name == "fa-dfa":     # DFA modulates from the second hidden layer on: the tiny nets have two, so GRAPES acts
        for g in saved["groups"]:
            runs = json.loads((tmp_path / "groups" / g["key"] / "results.json").read_text())["runs"]
            loss = {r["optimizer"]: r["history"][-1]["train_loss"] for r in runs}
            assert len(g["spec"]["base"]["hidden"]) == 2
            assert loss["grapes"] != loss["sgd"] and loss["layer-mean"] != loss["sgd"], g["key"]


@pytest.mark.parametrize("name", ["rnn", "cnn"])
def test_analog_groups_run_on_the_crossbar_backend(name, tmp_path):
    opts = ExperimentOptions(size="tiny", backends=("crossbar",), preset="Idealized", optimizers=("sgd", "grapes"))
    res = run_experiment(name, opts, tmp_path, **QUIET)
    assert all(g["key"].endswith("-crossbar-Idealized") for g in res["groups"])  # a non-default preset is named
    assert all(g["labels"]["hardware"] == "crossbar Idealized" for g in res["groups"])
    run = json.loads(next((tmp_path / "groups").glob("*/runs/grapes/*/results.json")).read_text())
    assert run["config"]["backend"] == "crossbar" and run["config"]["analog"]["preset"] == "Idealized"
    assert run["costs"]["backend"] == "crossbar" and run["costs"]["grapes_ops"] > 0


def test_lr_grid_is_tuned_per_optimizer_and_a_second_run_resumes(tmp_path, monkeypatch):
    calls = []
    real = dict(groups_mod.TRAINERS)
    monkeypatch.setitem(groups_mod.TRAINERS, "standard",
                        lambda cfg, *a, **k: calls.append(cfg) or real["standard"](cfg, *a, **k))
    opts = ExperimentOptions(size="tiny", optimizers=("sgd", "grapes"), lr_grid=(0.001, 0.3), seeds=(0, 1))
    res = run_experiment("fa-dfa", opts, tmp_path, **QUIET)
    n = len(calls)
    assert n == 2 * 2 * (2 + 2)  # groups × optimizers × (lr grid + seeds)
    tune = [c for c in calls if c.val_holdout > 0]
    assert len(tune) == 8 and {c.lr for c in tune} == {0.001, 0.3}
    assert all(c.val_holdout == 0 for c in calls if c not in tune), "final runs are scored on the test set"
    for g in res["groups"]:
        saved = json.loads((tmp_path / "groups" / g["key"] / "results.json").read_text())
        for t in saved["tuning"]:
            accs = t["validation_acc_by_lr"]
            assert t["chosen_lr"] == max((float(k) for k in accs), key=lambda k: accs[f"{k:g}"])
    # lr 0.001 learns nothing in one tiny epoch: every cell must have chosen 0.3
    assert {r["lr"] for r in res["summary"]} == {0.3}
    run_experiment("fa-dfa", opts, tmp_path, **QUIET)
    assert len(calls) == n, "a second run of the same options trains nothing"


def test_digital_groups_are_reused_under_another_preset_and_analog_groups_are_not_overwritten(tmp_path,
                                                                                               monkeypatch):
    """The device preset takes no part in a digital run: a second run of the experiment with another preset trains
    only the analog groups, into their own folder (named with the preset unless it is the default one)."""
    calls = []
    real = dict(groups_mod.TRAINERS)
    monkeypatch.setitem(groups_mod.TRAINERS, "standard",
                        lambda cfg, *a, **k: calls.append(cfg) or real["standard"](cfg, *a, **k))
    kw = {"size": "tiny", "backends": ("digital", "crossbar"), "optimizers": ("sgd",), "lr_grid": (0.1,)}
    res = run_experiment("fa-dfa", ExperimentOptions(**kw), tmp_path, **QUIET)
    assert [c.backend for c in calls] == ["digital"] * 2 + ["crossbar"] * 2
    assert {g["key"] for g in res["groups"]} == {"synthetic-fa-mlp16x2-digital", "synthetic-dfa-mlp16x2-digital",
                                                "synthetic-fa-mlp16x2-crossbar", "synthetic-dfa-mlp16x2-crossbar"}
    saved = json.loads((tmp_path / "groups/synthetic-fa-mlp16x2-digital/runs/sgd/lr0.1_seed0/results.json")
                       .read_text())
    assert saved["config"]["analog"]["preset"] == "ReRamSB"   # a digital run records the default analog settings
    res = run_experiment("fa-dfa", ExperimentOptions(**kw, preset="EcRam"), tmp_path, **QUIET)
    assert [c.backend for c in calls[4:]] == ["crossbar"] * 2, "the digital runs are reused"
    assert all(c.analog.preset == "EcRam" for c in calls[4:])
    assert {g["key"] for g in res["groups"] if "crossbar" in g["key"]} == {"synthetic-fa-mlp16x2-crossbar-EcRam",
                                                                          "synthetic-dfa-mlp16x2-crossbar-EcRam"}
    for key, preset in (("synthetic-fa-mlp16x2-crossbar", "ReRamSB"), ("synthetic-fa-mlp16x2-crossbar-EcRam", "EcRam")):
        run = json.loads((tmp_path / "groups" / key / "runs/sgd/lr0.1_seed0/results.json").read_text())
        assert run["config"]["analog"]["preset"] == preset
    run_experiment("fa-dfa", ExperimentOptions(**kw), tmp_path, **QUIET)
    assert len(calls) == 6, "the default preset's analog groups resume from their folders"


def _parser():
    p = argparse.ArgumentParser(prog="imc-grapes")
    add_experiment_parser(p.add_subparsers(dest="command"))
    return p


def test_cli_runs_an_experiment_and_lists_them(tmp_path, capsys):
    p = _parser()
    args = p.parse_args(["experiment", "snn", "--tiny", "--optimizers", "sgd", "grapes", "--out", str(tmp_path),
                         "--threads", "1", "--no-drop-last", "-q"])
    assert run_experiment_command(args) == 0
    assert (tmp_path / "report.md").is_file()
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["options"]["optimizers"] == ["sgd", "grapes"] and saved["machine"]["torch_threads"] == 1
    assert saved["options"]["drop_last"] is False
    runs = [json.loads(f.read_text()) for f in tmp_path.glob("groups/*/runs/*/*/results.json")]
    assert runs and all(r["config"]["drop_last"] is False for r in runs)
    assert run_experiment_command(p.parse_args(["experiment", "list"])) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in EXPERIMENTS)


@pytest.mark.parametrize("argv, message", [
    (["--backend", "spice"], "backends must be distinct entries of digital, crossbar, aihwkit"),
    (["--device-preset", "Unobtainium"], "preset must be one of"),
    (["--optimizers", "adam"], "optimizers must be one or more of"),
    (["--lr", "-1"], "lr_grid must be learning rates > 0"),
    (["--datasets", "cifar"], "datasets must be one or more distinct entries of"),
    (["--threads", "0"], "--threads must be >= 1"),
    (["--tail-evals", "0"], "ExperimentOptions.tail_evals must be an integer ≥ 1 (1 = the final evaluation), got 0"),
    (["--epochs", "0"], "--epochs: ExperimentOptions.epochs must be an integer >= 1 (or None for the default), got 0"),
    (["--seeds", "0", "0"], "--seeds: ExperimentOptions.seeds must name at least one seed, distinct integers"),
])
def test_cli_rejects_bad_options_with_exit_code_2(argv, message, capsys, tmp_path):
    args = _parser().parse_args(["experiment", "mlp", "--tiny", "--out", str(tmp_path), *argv])
    assert run_experiment_command(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "report.md").exists()


def test_cli_help_states_the_valid_range_of_each_number(capsys):
    """--epochs, --seeds, --lr and --tail-evals named no valid values: the range showed only in the error (as
    train's and compare's --help state theirs)."""
    with pytest.raises(SystemExit):
        _parser().parse_args(["experiment", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for phrase in ("--seeds S [S ...] seeds of the final runs, distinct integers (default: per size)",
                   "for every group, each > 0 (default: per experiment)",
                   "--epochs N epochs per run (per task for forgetting), ≥ 1 (default: per size and experiment)",
                   "for noisy devices: from 1 to the evaluations of a run (default 1: the final one; not for "
                   "forgetting)"):
        assert phrase in text, phrase


@pytest.mark.parametrize("given, files, theirs", [
    (True, {"results.json": {"spec": {}, "runs": []}, "report.md": "# compare"}, "compare"),
    (False, {"summary.json": {"group_by": "optimizer", "runs": []}, "summary.csv": "optimizer\n"}, "train"),
])
def test_cli_refuses_a_report_folder_of_another_command(given, files, theirs, tmp_path, monkeypatch, capsys):
    """An experiment into a compare report's folder replaced its results.json and report.md (and into a train job's,
    its summary.csv): the folder, --out or the default one, is refused before anything runs (exit 2, naming it and
    the command whose output it holds, as train and compare refuse it), and left as it was."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "cmp" if given else Path("reports") / "experiments" / "mlp-tiny"
    out.mkdir(parents=True)
    for name, data in files.items():
        (out / name).write_text(data if isinstance(data, str) else json.dumps(data))

    def no_run(*args, **kwargs):
        raise AssertionError("the experiment ran")

    monkeypatch.setattr("imc_grapes.experiments.runner.run_experiment", no_run)
    argv = ["experiment", "mlp", "--tiny", "--optimizers", "sgd", *(["--out", str(out)] if given else [])]
    assert run_experiment_command(_parser().parse_args(argv)) == 2
    option = "--out" if given else "the report folder"
    assert capsys.readouterr().err == (f"imc-grapes experiment: error: {option}: {out} holds the output of "
                                       f"`imc-grapes {theirs}`, whose files `imc-grapes experiment` would overwrite "
                                       "or mix its own with: give another --out\n")
    assert sorted(p.name for p in out.iterdir()) == sorted(files)
    assert json.loads((out / next(iter(files))).read_text()) == next(iter(files.values()))


def test_no_command_writes_into_the_groups_of_an_experiment(tmp_path, monkeypatch, capsys):
    """A group's folder holds a compare report's files without the compare job's marker: `compare --out` it replaced
    the group's results.json and report.md, `train --out` mixed its runs and summary in, `experiment --out` put a
    report with its own groups/ over the group's. The groups/ folder, each group's folder and a finished group copied
    elsewhere are refused by every command (exit 2, naming what the folder is) before anything runs, and left as
    they were; the experiment's report folder stays its own (a second run resumes there)."""
    from imc_grapes.cli import main
    from imc_grapes.sweep.cli import main as sweep_main

    report = tmp_path / "report"
    run_experiment("mlp", ExperimentOptions(size="tiny", optimizers=("sgd",)), report, **QUIET)
    group = next(p for p in (report / "groups").iterdir() if p.is_dir())
    copied = tmp_path / "copied"
    shutil.copytree(group, copied)
    compare_report = tmp_path / "cmp"
    cmp_args = ["--dataset", "synthetic", "--hidden", "8", "--epochs", "1", "--seeds", "0", "--lr", "0.1",
                "--optimizers", "sgd", "--hardware", "digital", "--no-progress"]
    assert main(["compare", *cmp_args, "--out", str(compare_report)]) == 0
    spec = tmp_path / "s.toml"
    spec.write_text('[sweep]\nname = "s"\n[base]\ndataset = "synthetic"\nhidden = [8]\n[axes]\nlr = [0.1]\n')
    before = {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}
    capsys.readouterr()

    def no_run(*args, **kwargs):
        raise AssertionError("a job ran")

    monkeypatch.setattr("imc_grapes.experiments.runner.run_experiment", no_run)
    monkeypatch.setattr("imc_grapes.compare.run_compare", no_run)
    monkeypatch.setattr("imc_grapes.sweep.runner.run_sweep", no_run)
    commands = {"compare": ["compare", *cmp_args], "train": ["train", *cmp_args[:4], "--no-progress"],
                "experiment": ["experiment", "mlp", "--tiny", "--optimizers", "sgd"],
                "compare-summary": ["compare-summary", str(compare_report)]}
    for folder, part in ((report / "groups", "the groups"), (group, "a group"), (copied, "a group")):
        for command, argv in commands.items():
            assert main([*argv, "--out", str(folder)]) == 2, (command, folder)
            assert capsys.readouterr().err == (
                f"imc-grapes {command}: error: --out: {folder} holds {part} of an `imc-grapes experiment` report, "
                f"whose files `imc-grapes {command}` would overwrite or mix its own with: give another --out\n")
        assert sweep_main([str(spec), "--out", str(folder)]) == 2
        assert f"{folder} holds {part} of an `imc-grapes experiment` report" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()} == before
    monkeypatch.undo()
    # the report folder itself: a second run of the experiment resumes there
    assert main([*commands["experiment"], "--out", str(report), "-q"]) == 0
    assert capsys.readouterr().out == f"report: {report}/report.md\n"


@pytest.mark.filterwarnings("error::UserWarning")       # e.g. a legend without entries in the empty plots
def test_diverging_runs_are_reported_not_fatal(tmp_path):
    opts = ExperimentOptions(size="tiny", optimizers=("sgd", "grapes"), lr_grid=(1e6,))
    res = run_experiment("mlp", opts, tmp_path, **QUIET)
    rows = res["summary"]
    assert all(r["diverged"] == r["runs"] == 1 and r["final_test_acc_mean"] is None for r in rows)
    assert all(c["final_acc"] is None for c in res["comparisons"])
    md = (tmp_path / "report.md").read_text()
    assert "| no completed run (1/1 diverged) | — | — |" in md       # no curve, nor "(0/0 reached ...)"
    run = json.loads(next(tmp_path.glob("groups/*/runs/sgd/*/results.json")).read_text())
    assert run["status"] == "diverged" and "lower the lr" in run["message"]


def test_a_run_that_raises_is_recorded_as_failed_and_the_experiment_goes_on(tmp_path, monkeypatch):
    calls = []

    def broken(cfg, run_dir, **kw):
        calls.append(cfg.optimizer)
        if cfg.optimizer == "grapes":
            raise RuntimeError("simulated simulator bug")
        return groups_mod.train_custom(cfg, run_dir, **kw)

    monkeypatch.setitem(groups_mod.TRAINERS, "custom", broken)
    opts = ExperimentOptions(size="tiny", optimizers=("sgd", "grapes"))
    res = run_experiment("rnn", opts, tmp_path, **QUIET)
    rows = {(r["group"], r["optimizer"]): r for r in res["summary"]}
    assert all(r["failed"] == r["runs"] and r["final_test_acc_mean"] is None
               for (g, o), r in rows.items() if o == "grapes")
    assert all(r["failed"] == 0 and r["final_test_acc_mean"] is not None
               for (g, o), r in rows.items() if o == "sgd")
    run = json.loads(next(tmp_path.glob("groups/*/runs/grapes/*/results.json")).read_text())
    assert run["status"] == "failed" and run["message"] == "RuntimeError: simulated simulator bug"
    assert "Traceback" in run["traceback"]
    assert "1/1 failed" in (tmp_path / "report.md").read_text()
    n = len(calls)
    run_experiment("rnn", opts, tmp_path, **QUIET)
    assert len(calls) == n, "failed runs count as finished for resume"


def test_an_interrupted_run_is_recorded_so_and_trained_again_on_resume(tmp_path, monkeypatch):
    """Ctrl-C in the middle of a run stops the experiment; that run's results.json says ``interrupted`` (before:
    ``running``) and, unlike a ``failed`` run (above), a resumed experiment trains it again."""
    import sys

    train_mod = sys.modules["imc_grapes.train"]
    step, steps = train_mod.training_step, {"n": 0}

    def stopping(*args, **kwargs):
        steps["n"] += 1
        if steps["n"] == 3:
            raise KeyboardInterrupt
        return step(*args, **kwargs)

    opts = ExperimentOptions(size="tiny", optimizers=("sgd",))
    with monkeypatch.context() as m:
        m.setattr(train_mod, "training_step", stopping)
        with pytest.raises(KeyboardInterrupt):
            run_experiment("rnn", opts, tmp_path, **QUIET)
    runs = sorted(tmp_path.glob("groups/*/runs/*/*/results.json"))
    stopped = [p for p in runs if json.loads(p.read_text())["status"] == "interrupted"]
    assert len(runs) == len(stopped) == 1, [json.loads(p.read_text())["status"] for p in runs]
    calls = []
    real = groups_mod.TRAINERS["custom"]
    monkeypatch.setitem(groups_mod.TRAINERS, "custom", lambda cfg, run_dir, **kw: calls.append(run_dir)
                        or real(cfg, run_dir, **kw))
    res = run_experiment("rnn", opts, tmp_path, **QUIET)
    assert stopped[0].parent.resolve() in [Path(d).resolve() for d in calls], "the interrupted run is trained again"
    assert json.loads(stopped[0].read_text())["status"] == "completed"
    assert all(r["failed"] == r["diverged"] == 0 and r["final_test_acc_mean"] is not None for r in res["summary"])


def test_tail_evals_average_each_runs_last_evaluations(tmp_path):
    """With ``tail_evals = 2`` a run's accuracy — the summary's mean, the paired Δ and the per-run CSV column — is
    the mean of its last two evaluations (hand-checked from the saved histories); forgetting, whose rows are per
    task, refuses it."""
    opts = ExperimentOptions(size="tiny", optimizers=("sgd", "grapes"), epochs=3, tail_evals=2, seeds=(0, 1),
                             lr_grid=(0.03,))                    # still learning: the evaluations differ
    run_experiment("mlp", opts, tmp_path, **QUIET)
    saved = json.loads((tmp_path / "results.json").read_text())
    group = saved["groups"][0]
    runs = json.loads((tmp_path / "groups" / group["key"] / "results.json").read_text())["runs"]
    tail, finals = {}, []
    for r in runs:
        if r["eval_split"] == "test":
            accs = [h["test_acc"] for h in r["history"]]
            assert len(accs) == 3
            tail[(r["optimizer"], r["config"]["seed"])] = (accs[-2] + accs[-1]) / 2
            finals.append(accs[-1])
    assert sorted(finals) != pytest.approx(sorted(tail.values()))      # the tail mean is not the final value
    rows = {r["optimizer"]: r for r in saved["summary"] if r["group"] == group["key"]}
    for opt in ("sgd", "grapes"):
        assert rows[opt]["final_test_acc_mean"] == pytest.approx((tail[(opt, 0)] + tail[(opt, 1)]) / 2)
    diffs = [tail[("grapes", s)] - tail[("sgd", s)] for s in (0, 1)]
    assert rows["grapes"]["diff_vs_sgd_mean"] == pytest.approx(sum(diffs) / 2)
    with open(tmp_path / "results.csv") as f:
        csv_rows = list(csv.DictReader(f))
    assert sorted(float(r["tail_test_acc"]) for r in csv_rows if r["group"] == group["key"]) == \
        pytest.approx(sorted(tail.values()))
    assert "mean of its last 2 evaluations" in (tmp_path / "report.md").read_text()
    with pytest.raises(Exception, match="tail_evals must be 1 for forgetting"):
        run_experiment("forgetting", ExperimentOptions(size="tiny", tail_evals=2), tmp_path / "f", **QUIET)


def test_a_diverged_runs_tail_is_the_same_in_the_experiment_and_the_group_csv(tmp_path, monkeypatch):
    """A run that stopped (here: marked diverged after its evaluations) keeps the tail of its history in both
    per-run CSVs, as its final_test_acc does; the summary leaves it out (no completed run)."""
    def diverging(cfg, run_dir, **kw):
        res = groups_mod.train(cfg, run_dir, **kw)
        if cfg.optimizer == "grapes" and res.eval_split == "test":
            res.status, res.message = "diverged", "simulated divergence"
        return res

    monkeypatch.setitem(groups_mod.TRAINERS, "standard", diverging)
    opts = ExperimentOptions(size="tiny", optimizers=("sgd", "grapes"), epochs=2, tail_evals=2, seeds=(0,),
                             lr_grid=(0.03,))
    run_experiment("mlp", opts, tmp_path, **QUIET)
    with open(tmp_path / "results.csv") as f:
        top = {r["optimizer"]: r for r in csv.DictReader(f)}
    group_csv = next(tmp_path.glob("groups/*/results.csv"))
    with open(group_csv) as f:
        grp = {r["optimizer"]: r for r in csv.DictReader(f)}
    runs = json.loads((group_csv.parent / "results.json").read_text())["runs"]
    hist = {r["optimizer"]: [h["test_acc"] for h in r["history"]] for r in runs if r["eval_split"] == "test"}
    assert top["grapes"]["status"] == grp["grapes"]["status"] == "diverged"
    for opt in ("sgd", "grapes"):
        want = (hist[opt][-2] + hist[opt][-1]) / 2
        assert float(top[opt]["tail_test_acc"]) == pytest.approx(want) == float(grp[opt]["tail_test_acc"])
    summary = json.loads((tmp_path / "results.json").read_text())["summary"]
    assert next(r for r in summary if r["optimizer"] == "grapes")["final_test_acc_mean"] is None


def test_a_relative_data_root_is_recorded_as_given_and_as_an_absolute_folder(tmp_path, monkeypatch):
    """``--data-root data`` names another folder once the report moves: the experiment's results.json keeps it as
    given in the options and records the absolute folder it named (next to them), as every group's results.json
    does. The data are the synthetic set standing in for MNIST (only the recorded folder matters here)."""
    import os

    import imc_grapes.data.datasets as datasets_mod
    from imc_grapes.data import make_synthetic

    synthetic = make_synthetic(n_train=200, n_test=100, seed=0)
    monkeypatch.setattr(datasets_mod, "load_dataset", lambda *a, **k: synthetic)    # DatasetCache's loads
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    opts = ExperimentOptions(size="tiny", datasets=("mnist",), data_root="data", optimizers=("sgd",),
                             lr_grid=(0.1,), seeds=(0,))
    run_experiment("fa-dfa", opts, tmp_path / "out", **QUIET)
    expected = os.path.join(os.path.realpath(tmp_path), "cwd", "data")
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["options"]["data_root"] == "data" and saved["data_root_resolved"] == expected
    assert saved["groups"] and all(g["spec"]["base"]["data_root"] == "data" for g in saved["groups"])
    for g in saved["groups"]:
        group = json.loads((tmp_path / "out" / "groups" / g["key"] / "results.json").read_text())
        assert group["data_root_resolved"] == expected
        assert [r["data_root_resolved"] for r in group["runs"]] == [expected]


def test_an_experiment_run_gives_the_numbers_train_gives_for_its_recorded_config(tmp_path):
    """Same config, same numbers: a final run of seed 1 (synthetic data, generated from the run's seed as ``train``
    generates it) has the history that ``train`` gives the config recorded in its ``results.json``."""
    from imc_grapes.config import TrainConfig
    from imc_grapes.train import train

    opts = ExperimentOptions(size="tiny", optimizers=("sgd",), seeds=(1,), lr_grid=(0.1,))
    run_experiment("mlp", opts, tmp_path / "e", **QUIET)
    paths = sorted((tmp_path / "e" / "groups").glob("*/runs/sgd/*seed1/results.json"))
    assert len(paths) == 2      # the tiny mlp's two digital networks
    for i, path in enumerate(paths):
        saved = json.loads(path.read_text())
        cfg = TrainConfig.from_dict(saved["config"])
        assert cfg.seed == 1 and cfg.dataset == "synthetic"
        alone = train(cfg, tmp_path / f"t{i}", **QUIET)
        keys = ("train_loss", "test_acc", "test_loss")
        assert [[r[k] for k in keys] for r in saved["history"]] == [[r[k] for k in keys] for r in alone.history], path
