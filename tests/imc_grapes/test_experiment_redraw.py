"""``imc-grapes experiment --redraw``: an experiment report's figures drawn again from its ``results.json`` alone,
after its ``groups/`` folder is gone: the same figure data as the first drawing, the curves the mean of the runs'
own histories, and a report written before the runs were kept redraws what it can and says what it cannot."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import imc_grapes.experiments.report as report_mod
from imc_grapes.cli import main
from imc_grapes.config import ConfigError
from imc_grapes.experiments import EXPERIMENTS, TRAINERS, ExperimentOptions, run_experiment
from imc_grapes.experiments.redraw import Redrawn, redraw_experiment_report
from imc_grapes.io import write_json_atomic
from imc_grapes.train import RUN_STATUSES

pytestmark = pytest.mark.usefixtures("one_torch_thread")

QUIET = {"progress": False, "log": lambda s: None}
TEXT_FILES = ("results.json", "results.csv", "summary.csv", "report.md")


def _figure_data(fig) -> dict:
    """What a figure shows, as plain lists: per axes its lines' x/y data, bar heights, images' arrays, texts,
    the bands' outlines and the legend labels."""
    out = []
    for ax in fig.axes:
        out.append({
            "lines": [(np.asarray(ln.get_xdata(), float).tolist(), np.asarray(ln.get_ydata(), float).tolist())
                      for ln in ax.get_lines()],
            "bars": [(p.get_x(), p.get_height()) for p in ax.patches],
            "images": [np.ma.filled(np.ma.asarray(im.get_array(), float), np.nan).tolist() for im in ax.images],
            "texts": [t.get_text() for t in ax.texts],
            "bands": [[path.vertices.tolist() for path in c.get_paths()] for c in ax.collections],
            "legend": [t.get_text() for t in ax.get_legend().get_texts()] if ax.get_legend() else [],
            "title": ax.get_title(), "xlim": list(ax.get_xlim()), "ylim": list(ax.get_ylim()),
        })
    return {"axes": out, "suptitle": fig._suptitle.get_text() if fig._suptitle else None}


def _capture(monkeypatch) -> dict:
    """Record every figure the experiment report writes (file name -> its data), and still write it."""
    figures: dict = {}
    write = report_mod.write_figure_atomic

    def record(path, fig, **kw):
        figures[Path(path).name] = _figure_data(fig)
        return write(path, fig, **kw)

    monkeypatch.setattr(report_mod, "write_figure_atomic", record)
    return figures


@pytest.fixture(scope="module", params=["forgetting", "fa-dfa"])
def drawn(request, tmp_path_factory):
    """A tiny experiment run once (two optimizers, two seeds), the figures of its first drawing, and the runs'
    histories read from the groups' own folders; then its groups/ folder deleted."""
    out = tmp_path_factory.mktemp(request.param)
    with pytest.MonkeyPatch.context() as mp:
        first = _capture(mp)
        run_experiment(request.param, ExperimentOptions(size="tiny", optimizers=("sgd", "grapes"), seeds=(0, 1)),
                       out, **QUIET)
    saved = json.loads((out / "results.json").read_text())
    histories = {}
    for g in saved["groups"]:
        runs = json.loads((out / "groups" / g["key"] / "results.json").read_text())["runs"]
        for r in runs:
            histories.setdefault((g["key"], r["optimizer"]), []).append(r)
    shutil.rmtree(out / "groups")
    return out, first, histories


def test_redraw_without_the_groups_folder_gives_the_figures_of_the_first_drawing(drawn, tmp_path, monkeypatch):
    src, first, histories = drawn
    out = tmp_path / "copy"                      # e.g. a report copied into docs/results/
    shutil.copytree(src, out)
    before = {name: (out / name).read_bytes() for name in TEXT_FILES}
    pngs = sorted(p.name for p in out.glob("*.png"))
    for p in out.glob("*.png"):
        p.unlink()
    assert main(["experiment", "--redraw", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == pngs
    assert all((out / p).read_bytes()[:4] == b"\x89PNG" for p in pngs)
    assert {name: (out / name).read_bytes() for name in TEXT_FILES} == before
    again = _capture(monkeypatch)
    done = redraw_experiment_report(out)
    assert done.missing == {} and sorted(done.files) == pngs
    assert set(again) == set(first) == set(pngs)
    for name in pngs:
        np.testing.assert_equal(again[name], first[name], err_msg=name)      # NaN: an untrained task
    # independent of the drawing code: each curve is the mean over the cell's completed runs of their own
    # histories (read from groups/ before it was deleted), in %
    saved = json.loads((out / "results.json").read_text())
    curves = again["curves.png"]["axes"]
    for g, ax in zip(saved["groups"], curves):
        opts = [r["optimizer"] for r in g["summary"]]
        assert len(ax["lines"]) == len(opts)
        for (x, y), opt in zip(ax["lines"], opts):
            runs = [r for r in histories[(g["key"], opt)] if r["status"] == "completed"]
            assert len(runs) == 2
            assert x == [h["epoch"] for h in runs[0]["history"]]
            assert y == pytest.approx([100 * (a["test_acc"] + b["test_acc"]) / 2
                                       for a, b in zip(runs[0]["history"], runs[1]["history"])], rel=1e-12)
    if "matrix.png" in pngs:
        for (key, opt), runs in histories.items():
            mats = [r["forgetting"]["matrix"] for r in runs]
            assert len(mats) == 2
        images = [im for ax in again["matrix.png"]["axes"] for im in ax["images"]]
        expected = [100 * (np.array(runs[0]["forgetting"]["matrix"]) + np.array(runs[1]["forgetting"]["matrix"])) / 2
                    for runs in histories.values()]
        assert len(images) == len(expected)
        for im, m in zip(images, expected):
            shown = np.array(im)
            lower = np.tril(np.ones_like(m, dtype=bool), -1)       # tasks not trained yet: not shown
            assert np.isnan(shown[lower]).all()
            np.testing.assert_allclose(shown[~lower], m[~lower], rtol=1e-12)


def test_an_old_report_without_the_runs_redraws_what_it_can_and_names_what_is_missing(drawn, tmp_path, capsys):
    src, _, _ = drawn
    out = tmp_path / "old"
    shutil.copytree(src, out)
    for p in out.glob("*.png"):
        p.unlink()
    saved = json.loads((out / "results.json").read_text())
    for g in saved["groups"]:
        del g["runs"]                                                    # as written before they were kept
    write_json_atomic(out / "results.json", saved)
    forgetting = saved["experiment"] == "forgetting"
    assert main(["experiment", "--redraw", "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert sorted(p.name for p in out.glob("*.png")) == ["accuracy.png", "gain.png"]
    assert "accuracy.png" in captured.out and "gain.png" in captured.out
    missing = ["curves.png", *(["matrix.png", "forgetting.png"] if forgetting else [])]
    for figure in missing:
        assert f"--redraw: {figure} not drawn: results.json keeps no runs for group(s) " in captured.err
    assert "groups[].runs" in captured.err and saved["groups"][0]["key"] in captured.err
    done = redraw_experiment_report(out)
    assert done.files == ["accuracy.png", "gain.png"] and list(done.missing) == missing


def test_redraw_refuses_what_is_not_an_experiment_report(tmp_path, capsys):
    assert main(["experiment", "--redraw", "--out", str(tmp_path)]) == 2
    assert "--redraw" in capsys.readouterr().err
    assert main(["experiment", "--redraw"]) == 2
    assert "--redraw needs --out DIR" in capsys.readouterr().err
    assert main(["experiment", "--tiny"]) == 2
    assert "NAME is required" in capsys.readouterr().err
    write_json_atomic(tmp_path / "results.json", {"runs": [], "spec": {}})          # a compare report's
    with pytest.raises(ConfigError, match="'groups' must be a list of groups with a key and a summary"):
        redraw_experiment_report(tmp_path)
    group = {"key": "g", "trainer": "standard", "summary": [{"optimizer": "sgd", "lr": 0.1}]}
    write_json_atomic(tmp_path / "results.json", {"experiment": "mlp", "summary": [], "comparisons": [], "groups": [
        {**group, "runs": [{"optimizer": "sgd", "seed": 0, "status": "completed", "epoch": [1, 2],
                            "test_acc": [0.5]}]}]})
    with pytest.raises(ConfigError, match=r"groups\[0\].runs\[0\] is completed but has no 'epoch' and 'test_acc'"):
        redraw_experiment_report(tmp_path)
    # a hand-edited accuracy ended the curves in numpy's TypeError; the error names the file, the run and the entry
    row = {"group": "g", "optimizer": "sgd", "final_test_acc_mean": 0.5, "final_test_acc_std": 0.0, "runs": 1,
           "completed": 1}
    write_json_atomic(tmp_path / "results.json", {"experiment": "mlp", "summary": [row], "comparisons": [], "groups": [
        {**group, "runs": [{"optimizer": "sgd", "seed": 3, "status": "completed", "epoch": [1, 2],
                            "test_acc": [0.5, "x"]}]}]})
    assert main(["experiment", "--redraw", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (f"imc-grapes experiment: error: --redraw: {tmp_path / 'results.json'}: "
                                       "groups[0].runs[0] (sgd, seed 3): test_acc[1] must be a number (NaN allowed), "
                                       "got 'x'\n")
    assert not list(tmp_path.glob("*.png"))
    write_json_atomic(tmp_path / "results.json", {"experiment": "mlp", "summary": [], "comparisons": [], "groups": [
        {**group, "runs": [{"optimizer": "adam", "seed": 0, "status": "diverged"}]}]})
    with pytest.raises(ConfigError, match=r"names optimizer 'adam', which groups\[0\].summary has not"):
        redraw_experiment_report(tmp_path)
    write_json_atomic(tmp_path / "results.json", {"experiment": "mlp", "summary": [], "comparisons": [],
                                                  "groups": [{**group, "runs": []}]})
    assert main(["experiment", "cnn", "--redraw", "--out", str(tmp_path)]) == 2
    assert "the report is of experiment 'mlp', not 'cnn'" in capsys.readouterr().err


def test_redraw_of_the_groups_folder_or_a_groups_folder_names_the_report_folder(tmp_path, monkeypatch, capsys):
    """--redraw --out a group's folder said "'groups' must be a list of groups with a key and a summary" (a group's
    results.json is a compare-style report, not the experiment's), --out groups/ "no such file": both now say what
    the folder is and name the report folder (a group's: two levels up; a relative one as typed, from the folder
    the command runs in), a group's also the command that redraws its own figures, which works. Nothing is
    written."""
    report = tmp_path / "report"
    run_experiment("mlp", ExperimentOptions(size="tiny", optimizers=("sgd",)), report, **QUIET)
    group = next(p for p in sorted((report / "groups").iterdir()) if p.is_dir())
    copied = tmp_path / "copied"
    shutil.copytree(group, copied)
    before = {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}
    said = "is one group's folder of an `imc-grapes experiment` report (its results.json is the group's " \
           "compare-style report, not the experiment's): give its report folder, "
    groups = "is the groups/ folder of an `imc-grapes experiment` report (its groups' runs and reports), not the " \
             "report: give its report folder, "
    monkeypatch.chdir(report / "groups")
    cases = {str(group): f"{group} {said}{report} (two levels up), or redraw this group's own figures with "
                         f"`imc-grapes compare --redraw --out {group}`",
             group.name: f"{group.name} {said}.. (two levels up), or redraw this group's own figures with "
                         f"`imc-grapes compare --redraw --out {group.name}`",
             str(report / "groups"): f"{report / 'groups'} {groups}{report}",
             ".": f". {groups}..",
             str(copied): f"{copied} holds one group's folder of an `imc-grapes experiment` report (its results.json "
                          "is the group's compare-style report, not the experiment's): give the experiment's report "
                          "folder (the one that holds results.json beside groups/), or redraw this group's own "
                          f"figures with `imc-grapes compare --redraw --out {copied}`"}
    for out, message in cases.items():
        with pytest.raises(ConfigError) as info:
            redraw_experiment_report(out)
        assert str(info.value) == message
        assert main(["experiment", "--redraw", "--out", out]) == 2
        assert capsys.readouterr().err == f"imc-grapes experiment: error: --redraw: {message}\n"
    assert {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()} == before
    assert main(["experiment", "--redraw", "--out", ".."]) == 0                 # the folder it names: redrawn
    assert main(["compare", "--redraw", "--out", group.name]) == 0              # the group's own figures
    assert capsys.readouterr().out.splitlines()[-1] == (f"redrawn from {group.name}/results.json: {group.name}/"
                                                        f"curves.png, {group.name}/accuracy.png")


def test_an_experiment_interrupted_in_a_finished_report_folder_makes_redraw_refuse_the_earlier_report(
        tmp_path, monkeypatch, capsys):
    """An experiment started again in a finished report's folder (here with a second seed) and interrupted left the
    earlier results.json, which --redraw then drew as if it were the report of the groups beside it. The job marks
    its start in groups/job.json (where the experiment's runs live) and results.json records the job that wrote
    it: the earlier results.json is kept as it was, but --redraw refuses it and says to run the same command again;
    that resumes every finished run (only the interrupted seed is trained) and writes the report, drawn again."""
    import imc_grapes.experiments.groups as groups_mod
    from imc_grapes.io import read_json

    out = tmp_path / "mlp"
    one = ExperimentOptions(size="tiny", optimizers=("sgd",), lr_grid=(0.1,), seeds=(0,))
    first = run_experiment("mlp", one, out, command="imc-grapes experiment mlp --tiny --seeds 0", **QUIET)
    marker = read_json(out / "groups" / "job.json")
    assert first["job"] == marker["job"] == read_json(out / "results.json")["job"]
    assert len(first["job"]) == 16 and marker["command"] == "imc-grapes experiment mlp --tiny --seeds 0"
    assert not (out / "runs").exists(), "the marker lives with the experiment's runs, in groups/"
    assert main(["experiment", "--redraw", "--out", str(out)]) == 0
    before = (out / "results.json").read_bytes()
    capsys.readouterr()

    two = ExperimentOptions(size="tiny", optimizers=("sgd",), lr_grid=(0.1,), seeds=(0, 1))
    real_train = groups_mod.TRAINERS["standard"]
    trained: list[int] = []

    def train_until_seed_1(cfg, *a, **k):
        if cfg.seed == 1:
            raise KeyboardInterrupt
        trained.append(cfg.seed)
        return real_train(cfg, *a, **k)

    monkeypatch.setitem(groups_mod.TRAINERS, "standard", train_until_seed_1)
    with pytest.raises(KeyboardInterrupt):
        run_experiment("mlp", two, out, command="imc-grapes experiment mlp --tiny --seeds 0 1", **QUIET)
    assert trained == [], "seed 0 was resumed, not trained again"
    assert (out / "results.json").read_bytes() == before, "the earlier report is kept as it was"
    started = read_json(out / "groups" / "job.json")
    assert started["job"] != first["job"] and started["command"] == "imc-grapes experiment mlp --tiny --seeds 0 1"
    note = (f"the report is older than its runs: a later `imc-grapes experiment` job began in {out} at "
            f"{started['started']} and has not finished (the report's results.json is written when the job ends), so "
            "its groups/ folder may hold newer runs than results.json; run the same command again (imc-grapes "
            "experiment mlp --tiny --seeds 0 1) to finish it (it resumes the finished runs), or remove "
            f"{out / 'groups' / 'job.json'} to use the earlier report as it is")
    for p in out.glob("*.png"):
        p.unlink()
    assert main(["experiment", "--redraw", "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"imc-grapes experiment: error: --redraw: {out / 'results.json'}: {note}\n"
    assert not list(out.glob("*.png")), "nothing drawn from the earlier report"
    with pytest.raises(ConfigError, match="the report is older than its runs"):
        redraw_experiment_report(out, "mlp")

    monkeypatch.setitem(groups_mod.TRAINERS, "standard",
                        lambda cfg, *a, **k: trained.append(cfg.seed) or real_train(cfg, *a, **k))
    done = run_experiment("mlp", two, out, **QUIET)         # the same job again: it finishes
    assert trained == [1, 1], "only the runs the interruption stopped are trained (seed 1 of the two groups)"
    assert done["job"] == read_json(out / "groups" / "job.json")["job"] != started["job"]
    assert [[r["seed"] for r in g["runs"]] for g in done["groups"]] == [[0, 1], [0, 1]]
    assert main(["experiment", "--redraw", "--out", str(out)]) == 0
    (out / "groups" / "job.json").unlink()              # no marker (e.g. a report from before jobs were marked)
    assert main(["experiment", "--redraw", "--out", str(out)]) == 0


def test_redraw_of_an_experiment_interrupted_before_its_first_report_says_it_has_not_finished(tmp_path, monkeypatch,
                                                                                              capsys):
    """A first experiment interrupted in its folder leaves groups/ without results.json beside it: --redraw says
    an experiment began there and did not finish (its groups/ folder, where its runs live), as compare's does for
    runs/, not '(the folder of an `imc-grapes experiment` report?)'."""
    import imc_grapes.experiments.groups as groups_mod

    def interrupted(cfg, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setitem(groups_mod.TRAINERS, "standard", interrupted)
    out = tmp_path / "mlp"
    with pytest.raises(KeyboardInterrupt):
        run_experiment("mlp", ExperimentOptions(size="tiny", optimizers=("sgd",), lr_grid=(0.1,)), out, **QUIET)
    assert (out / "groups" / "job.json").is_file() and not (out / "results.json").exists()
    assert main(["experiment", "--redraw", "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"imc-grapes experiment: error: --redraw: {out / 'results.json'}: no such file (its groups/ folder holds the "
        "runs of an `imc-grapes experiment` job that has not finished: the report's results.json is written when the "
        "job ends; run the same command again to resume it)\n")
    assert main(["experiment", "--redraw", "--out", str(tmp_path / "none")]) == 2      # no groups/: as before
    assert capsys.readouterr().err.endswith("no such file (the folder of an `imc-grapes experiment` report?)\n")


def _hand_written_report() -> dict:
    """A small experiment results.json written by hand: one forgetting group, SGD vs GRAPES, one completed run each
    (2 tasks: a 2×2 accuracy matrix, NaN where task 1 was not trained yet) and their paired comparison."""
    def run(opt: str, accs: list) -> dict:
        return {"optimizer": opt, "seed": 0, "status": "completed", "epoch": [1, 2], "test_acc": accs,
                "matrix": [[accs[0], 0.4], ["nan", accs[1]]], "avg_acc": 0.5, "forgetting": 0.1, "bwt": -0.1}

    summary = [{"group": "g", "optimizer": o, "lr": 0.1, "runs": 1, "completed": 1, "final_test_acc_mean": acc,
                "final_test_acc_std": None} for o, acc in (("sgd", 0.6), ("grapes", 0.7))]
    return {"experiment": "forgetting", "options": {"tail_evals": 1}, "summary": summary,
            "comparisons": [{"group": "g", "a": "grapes", "b": "sgd",
                             "final_acc": {"mean": 0.1, "std": 0.0, "n": 1, "positive": 1, "negative": 0}}],
            "groups": [{"key": "g", "trainer": "permuted",
                        "summary": [{"optimizer": r["optimizer"], "lr": r["lr"]} for r in summary],
                        "runs": [run("sgd", [0.5, 0.6]), run("grapes", [0.6, 0.7])]}]}


def _set(data: dict, path: tuple, value) -> dict:
    """``data`` with the entry at ``path`` (keys and indices) replaced by ``value``."""
    at = data
    for key in path[:-1]:
        at = at[key]
    at[path[-1]] = value
    return data


@pytest.mark.parametrize("path, value, message", [
    (("summary",), [], "'summary' is empty: the report has no row to draw (an `imc-grapes experiment` report's "
                       "results.json has one per group and optimizer)"),
    (("summary", 1, "final_test_acc_mean"), "x",
     "summary[1] (g, grapes): final_test_acc_mean must be a number (NaN allowed) or null, got 'x'"),
    (("summary", 0, "final_test_acc_std"), [0.1],
     "summary[0] (g, sgd): final_test_acc_std must be a number (NaN allowed) or null, got [0.1]"),
    (("summary", 0, "completed"), "1", "summary[0] (g, sgd): completed must be an integer ≥ 0, got '1'"),
    (("summary", 0), ["g", "sgd"], "summary[0] must be a mapping with a group and an optimizer, got ['g', 'sgd']"),
    (("comparisons", 0, "final_acc", "mean"), "x",
     "comparisons[0] (grapes vs sgd, g): final_acc.mean must be a number (NaN allowed), got 'x'"),
    (("groups", 0, "summary", 1, "lr"), "x",
     "groups[0].summary[1] must be a mapping with an optimizer and a number lr, got {'optimizer': 'grapes', "
     "'lr': 'x'}"),
    (("groups", 0, "runs", 1, "matrix", 1, 1), "x", "groups[0].runs[1] (grapes, seed 0): matrix[1][1] must be a "
                                                    "number (NaN allowed), got 'x'"),
    (("groups", 0, "runs", 0, "matrix", 1), [0.5], "groups[0].runs[0] (sgd, seed 0): matrix must be a square "
     "accuracy matrix (one list per task, each with one accuracy per task trained)"),
    (("groups", 0, "runs", 0, "avg_acc"), "x",
     "groups[0].runs[0] (sgd, seed 0): avg_acc must be a number (NaN allowed) or null, got 'x'"),
    (("options", "tail_evals"), "2", "options.tail_evals must be an integer ≥ 1 (1 = the final evaluation), got '2'"),
])
def test_redraw_refuses_a_summary_or_forgetting_value_no_figure_can_draw(tmp_path, capsys, path, value, message):
    """An empty summary ended --redraw in a ZeroDivisionError of accuracy.png, and a summary, comparison or
    forgetting value that is not a number in a TypeError or float()'s ValueError naming no file (or a figure drawn
    from the letters of a string): each is a ConfigError naming the file and the field, and nothing is drawn."""
    write_json_atomic(tmp_path / "results.json", _set(_hand_written_report(), path, value))
    assert main(["experiment", "--redraw", "--out", str(tmp_path)]) == 2
    source = tmp_path / "results.json"
    assert capsys.readouterr().err == f"imc-grapes experiment: error: --redraw: {source}: {message}\n"
    assert not list(tmp_path.glob("*.png"))


@pytest.mark.parametrize("path, value, message", [
    (("experiment",), 5, "'experiment' must be the name of the experiment the report is of (a string, e.g. "
                         f"{', '.join(EXPERIMENTS)}), got 5"),
    (("experiment",), None, "'experiment' must be the name of the experiment the report is of (a string, e.g. "
                            f"{', '.join(EXPERIMENTS)}), got None"),
    (("options",), "x", "'options' must be a mapping (the options the experiment ran with), got 'x'"),
    (("options",), [1], "'options' must be a mapping (the options the experiment ran with), got [1]"),
    (("groups", 0, "trainer"), "bogus", f"groups[0].trainer must be one of {', '.join(TRAINERS)}, got 'bogus'"),
    (("groups", 0, "trainer"), 5, f"groups[0].trainer must be one of {', '.join(TRAINERS)}, got 5"),
    (("summary", 1, "group"), "h", "summary[1] names group 'h', which 'groups' has not (valid: g)"),
    (("comparisons", 0, "group"), "h", "comparisons[0] names group 'h', which 'groups' has not (valid: g)"),
    (("groups", 0, "runs", 0, "status"), "done", f"groups[0].runs[0]: status must be one of "
                                                 f"{', '.join(RUN_STATUSES)}, got 'done'"),
])
def test_redraw_refuses_a_top_level_field_or_group_of_the_wrong_type(tmp_path, capsys, path, value, message):
    """An "experiment" that is no name, "options" that are no mapping (drawn silently at tail_evals 1), a group's
    trainer that is none (a forgetting group's matrix figures silently named missing or not), a summary row or
    comparison of a group the report has not (silently left out of the figures) and a run status that is none (the
    run silently left out of the curves) all redrew with exit 0: each is refused now, naming the file and the field,
    and nothing is drawn."""
    write_json_atomic(tmp_path / "results.json", _set(_hand_written_report(), path, value))
    assert main(["experiment", "--redraw", "--out", str(tmp_path)]) == 2
    source = tmp_path / "results.json"
    assert capsys.readouterr().err == f"imc-grapes experiment: error: --redraw: {source}: {message}\n"
    assert not list(tmp_path.glob("*.png"))


def test_redraw_reads_a_nan_summary_value_stored_as_a_string_and_refuses_matrices_of_two_sizes(tmp_path):
    """The hand-written report (the one the refusals above change one field of) redraws every figure. A NaN stored
    as "nan" (how results.json writes it) is a number to the figures, as in the runs' histories; the accuracy
    matrices of one optimizer's runs, averaged entry by entry, must have one size."""
    write_json_atomic(tmp_path / "results.json", _hand_written_report())
    assert redraw_experiment_report(tmp_path) == Redrawn(["accuracy.png", "gain.png", "curves.png", "matrix.png",
                                                          "forgetting.png"], {})
    data = _set(_hand_written_report(), ("summary", 0, "final_test_acc_mean"), "nan")
    write_json_atomic(tmp_path / "results.json", data)
    assert redraw_experiment_report(tmp_path).missing == {}
    data["groups"][0]["runs"].append({**data["groups"][0]["runs"][0], "seed": 1, "matrix": [[0.5]]})
    write_json_atomic(tmp_path / "results.json", data)
    with pytest.raises(ConfigError, match=r"results\.json: groups\[0\]\.runs: the accuracy matrices of sgd's runs "
                                          r"must have one size \(one row per task\), got sizes \[1, 2\]$"):
        redraw_experiment_report(tmp_path)


@pytest.mark.parametrize("key, lines", [
    ("fashion-mnist-dfa-mlp256x2-digital", ["fashion-mnist", "dfa-mlp256x2", "digital"]),
    ("mnist-cnn16-32-digital", ["mnist", "cnn16-32", "digital"]),
    ("mnist-permuted5-mlp256x2-crossbar-EcRam", ["mnist", "permuted5-mlp256x2", "crossbar-EcRam"]),
    ("mnist-mlp256x2-crossbar-ReRamSB-dw_min=0.008-up_down=0.2",
     ["mnist", "mlp256x2", "crossbar-ReRamSB-dw_min=0.008-up_down=0.2"]),
    ("synthetic-snu8-rate-aihwkit", ["synthetic", "snu8-rate", "aihwkit"]),
    ("a-key-of-another-shape", ["a", "key", "of-another-shape"]),      # no known data set: its first two hyphens
])
def test_a_groups_tick_label_is_its_data_set_variant_and_hardware(key, lines):
    """Data sets and variants have hyphens of their own (``fashion-mnist``, ``cnn16-32``): the figures' x labels
    split a group key at the known names (``fashion-mnist-mlp256x2-digital`` read ``fashion / mnist /
    mlp256x2-digital`` when the first two hyphens were the line breaks)."""
    assert report_mod.group_tick_label(key).split("\n") == lines


@pytest.mark.parametrize("name", ["mlp", "fa-dfa", "cnn", "rnn", "snn", "forgetting"])
def test_every_planned_groups_tick_label_starts_with_its_data_set_and_ends_with_its_backend(name):
    """Against each experiment's own plan (quick size, every backend, a device override): the first line of the tick
    label is the group's ``dataset`` label and the last starts with its backend."""
    from imc_grapes.experiments import EXPERIMENTS

    opts = ExperimentOptions(size="quick", backends=("digital", "crossbar", "aihwkit"),
                             device_overrides={"dw_min": 0.008})
    groups = EXPERIMENTS[name].plan(opts)
    assert groups
    for g in groups:
        lines = report_mod.group_tick_label(g.key).split("\n")
        assert len(lines) == 3, g.key
        assert lines[0] == g.labels["dataset"], g.key
        backend = g.spec.analog_backend if g.spec.hardware == ("analog",) else "digital"
        assert lines[2].split("-")[0] == backend, g.key
