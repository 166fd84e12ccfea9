"""``imc-grapes compare --redraw``: a compare report's figures drawn again from its ``results.json`` alone (no
training), with the summary recomputed from the stored runs — it must give the summary the training job stored."""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from imc_grapes.cli import main
from imc_grapes.compare import cells_from_results, redraw_report, summarise_cells
from imc_grapes.config import ConfigError
from imc_grapes.io import read_json, write_json_atomic

DOCS = Path(__file__).resolve().parents[2] / "docs"
#: a stored report with analog runs evaluated after drift (inference.png) and three seeds per cell
STORED = DOCS / "compare-mnist-reramsb-array"


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15) or (math.isnan(a) and math.isnan(b))
    return a == b


@pytest.mark.parametrize("folder", sorted(p.parent.name for p in DOCS.glob("*/results.json")
                                          if "tuning" in read_json(p)))
def test_the_cells_rebuilt_from_a_stored_report_give_the_summary_it_stored(folder):
    """Every stored compare report in docs/: the rows recomputed from its stored runs equal, key by key, the
    summary the training job wrote next to them (and add the spread of the inference accuracies)."""
    result = read_json(DOCS / folder / "results.json")
    cells = cells_from_results(result)
    assert [(c.hardware, c.optimizer, c.lr) for c in cells] == [(r["hardware"], r["optimizer"], r["lr"])
                                                               for r in result["summary"]]
    rows = summarise_cells(cells, result["spec"]["target_acc"], result["spec"].get("tail_evals", 1))
    for new, old in zip(rows, result["summary"], strict=True):
        assert [(k, v, new.get(k)) for k, v in old.items() if not _same(new.get(k), v)] == []
        times = [k.split("@")[1] for k in old if k.startswith("inference_acc@")]
        assert all(new[f"inference_n@{t}"] == new["completed"] for t in times)


def test_redraw_writes_the_figures_from_results_json_and_leaves_the_files_of_the_job(tmp_path, monkeypatch):
    import imc_grapes.compare as compare_mod

    out = tmp_path / "report"
    shutil.copytree(STORED, out)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.suffix != ".png"}
    for png in out.glob("*.png"):
        png.unlink()
    assert main(["compare", "--redraw", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["accuracy.png", "curves.png", "inference.png"]
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.suffix != ".png"} == before
    figures: dict[str, object] = {}
    monkeypatch.setattr(compare_mod, "write_figure_atomic", lambda path, fig, **kw: figures.update({path.name: fig}))
    assert redraw_report(out) == ["curves.png", "accuracy.png", "inference.png"]
    summary = read_json(out / "results.json")["summary"]
    bars = figures["accuracy.png"].axes[0].patches                          # type: ignore[attr-defined]
    assert [p.get_height() for p in bars] == pytest.approx([100 * r["final_test_acc_mean"] for r in summary])
    inference = figures["inference.png"].axes[0]                            # type: ignore[attr-defined]
    analog = [r for r in summary if r["hardware"] == "analog"]
    assert len(inference.collections) == len(analog)                        # a band per analog cell (3 seeds)
    for line, row in zip(inference.get_lines(), analog):
        assert list(line.get_ydata()) == pytest.approx([100 * row[f"inference_acc@{t}"]
                                                        for t in ("1", "3600", "86400", "31536000")])


def test_redraw_refuses_a_folder_without_a_compare_report(tmp_path, capsys):
    assert main(["compare", "--redraw", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--redraw" in err and "results.json: no such file" in err
    write_json_atomic(tmp_path / "results.json", {"rows": []})               # e.g. a sweep's or a summary's
    with pytest.raises(ConfigError, match="'runs' must be a list"):
        redraw_report(tmp_path)
    write_json_atomic(tmp_path / "results.json", {"runs": [{"hardware": "analog"}]})
    with pytest.raises(ConfigError, match=r"runs\[0\] must be a mapping with hardware, optimizer and config"):
        redraw_report(tmp_path)
    assert main(["compare", "--redraw", "--out", str(tmp_path)]) == 2
    assert "runs[0]" in capsys.readouterr().err


def _assert_redraw_refuses(tmp_path, capsys, damage, message: str) -> None:
    """A copy of the stored report without its figures, ``damage`` applied to its results.json: --redraw exits 2
    with ``message`` after the file's name and draws nothing."""
    out = tmp_path / "report"
    shutil.copytree(STORED, out)
    for png in out.glob("*.png"):
        png.unlink()
    saved = read_json(out / "results.json")
    damage(saved)
    write_json_atomic(out / "results.json", saved)
    assert main(["compare", "--redraw", "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"imc-grapes compare: error: --redraw: {out / 'results.json'}: {message}\n"
    assert not list(out.glob("*.png"))


@pytest.mark.parametrize("damage, message", [
    (lambda d: d["runs"][1].update(hardware=3), "runs[1] must be a mapping with hardware, optimizer and config (the "
                                                "first two names, the last a mapping)"),
    (lambda d: d["runs"][0].update(optimizer=None), "runs[0] must be a mapping with hardware, optimizer and config "
                                                    "(the first two names, the last a mapping)"),
    (lambda d: d.update(tuning=5), "'tuning' must be a list of the cells' tuning records, got 5"),
])
def test_redraw_refuses_a_run_or_tuning_record_of_the_wrong_type(tmp_path, capsys, damage, message):
    """A hand-edited hardware that is no name ended --redraw in an AttributeError (wrapping the figure's title), a
    tuning record that is no list in a TypeError; an optimizer null was drawn as a cell named None. Nothing is
    drawn now."""
    _assert_redraw_refuses(tmp_path, capsys, damage, message)


_RUN0 = "runs[0] (analog/sgd, seed 0)"


@pytest.mark.parametrize("damage, message", [
    (lambda d: d.update(spec="analog"), "'spec' must be a mapping (the settings the compare job ran with), got "
                                        "'analog'"),
    (lambda d: d["spec"].update(target_acc="x"), "spec.target_acc must be a number in (0, 1], got 'x'"),
    (lambda d: d["spec"].update(target_acc=None), "spec.target_acc must be a number in (0, 1], got None"),
    (lambda d: d["spec"].update(tail_evals=0), "spec.tail_evals must be an integer ≥ 1 (1 = the final evaluation), "
                                               "got 0"),
    (lambda d: d["spec"].update(tail_evals="2"), "spec.tail_evals must be an integer ≥ 1 (1 = the final "
                                                 "evaluation), got '2'"),
    (lambda d: d["tuning"].__setitem__(1, "x"), "tuning[1] must be a mapping with hardware, optimizer and "
                                                "chosen_lr, got 'x'"),
    (lambda d: d["tuning"][0].update(chosen_lr="x"), "tuning[0]: chosen_lr must be a number (NaN allowed) or null, "
                                                     "got 'x'"),
    (lambda d: d["runs"][0].update(status=5), f"{_RUN0}: status must be one of completed, diverged, failed, "
                                              "interrupted, running, got 5"),
    (lambda d: d["runs"][0].update(status="done"), f"{_RUN0}: status must be one of completed, diverged, failed, "
                                                   "interrupted, running, got 'done'"),
    (lambda d: d["runs"][0].update(inference="x"), f"{_RUN0}: inference must be a mapping of times (s) to "
                                                   "accuracies, got 'x'"),
    (lambda d: d["runs"][0].update(inference=[0.7]), f"{_RUN0}: inference must be a mapping of times (s) to "
                                                     "accuracies, got [0.7]"),
    (lambda d: d["runs"][0]["inference"].update({"3600": "x"}), f"{_RUN0}: inference.3600 must be a number (NaN "
                                                               "allowed) or null, got 'x'"),
    (lambda d: d["runs"][0].update(costs="x"), f"{_RUN0}: costs must be a mapping, got 'x'"),
    (lambda d: d["runs"][0].update(run_dir=5), f"{_RUN0}: run_dir must be a path (a string) or null, got 5"),
    (lambda d: d.update(tuning={}), "'tuning' must be a list of the cells' tuning records, got {}"),
    (lambda d: d["runs"][1]["config"].update(epochs="x"), "runs[1] (analog/sgd): config: TrainConfig.epochs must be "
                                                          "an integer ≥ 1, got 'x'"),
])
def test_redraw_refuses_a_spec_tuning_record_or_run_field_of_the_wrong_type(tmp_path, capsys, damage, message):
    """A damaged field that --redraw reads ended it in a traceback (a TypeError of float(None), an AttributeError of
    a list's .get, os.fspath(5)), in a bare float()/int() error naming no file or field, or was drawn silently
    wrong: a spec that is no mapping or a tail_evals of 0 drew the bars at other evaluations than the job, a status
    that is no run status left the run out of every mean, an inference accuracy 'x' was dropped, a tuning {} read
    as none; a run's config that TrainConfig refuses named neither the file nor the run. Each is refused now, naming
    the file and the field; nothing is drawn."""
    _assert_redraw_refuses(tmp_path, capsys, damage, message)


def test_redraw_of_a_report_without_runs_says_so(tmp_path, capsys):
    """A results.json whose 'runs' list is empty ended --redraw with matplotlib's "Number of columns must be a
    positive integer, not 0"; nothing is drawn."""
    write_json_atomic(tmp_path / "results.json", {"spec": {}, "summary": [], "runs": []})
    with pytest.raises(ConfigError, match=r"results\.json: its 'runs' list is empty: the report has no run to draw"):
        redraw_report(tmp_path)
    assert main(["compare", "--redraw", "--out", str(tmp_path)]) == 2
    assert "'runs' list is empty" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


@pytest.mark.parametrize("value, field", [("x", "history[1].test_acc must be a number (NaN allowed), got 'x'"),
                                          (None, "history[1].test_acc must be a number (NaN allowed), got None")])
def test_redraw_refuses_a_hand_edited_accuracy_naming_the_file_the_run_and_the_field(tmp_path, capsys, value, field):
    """A history entry such as "test_acc": "x" ended --redraw in a TypeError ('>=' not supported between 'str'
    and 'float'); nothing is drawn. A NaN accuracy, stored as the string "nan", is a number and is drawn."""
    out = tmp_path / "report"
    shutil.copytree(STORED, out)
    for png in out.glob("*.png"):
        png.unlink()
    saved = read_json(out / "results.json")
    run = saved["runs"][2]
    saved["runs"][2]["history"][1]["test_acc"] = value
    write_json_atomic(out / "results.json", saved)
    where = f"runs[2] ({run['hardware']}/{run['optimizer']}, seed {run['config']['seed']})"
    with pytest.raises(ConfigError) as info:
        redraw_report(out)
    assert str(info.value) == f"{out / 'results.json'}: {where}: {field}"
    assert main(["compare", "--redraw", "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"imc-grapes compare: error: --redraw: {out / 'results.json'}: {where}: {field}\n"
    assert not list(out.glob("*.png"))
    saved["runs"][2]["history"][1]["test_acc"] = math.nan              # written as "nan" (write_json_atomic)
    write_json_atomic(out / "results.json", saved)
    assert redraw_report(out) == ["curves.png", "accuracy.png", "inference.png"]


@pytest.mark.usefixtures("one_torch_thread")
def test_redraw_of_an_experiment_groups_folder_draws_its_tail_accuracies_as_the_experiment_did(tmp_path, monkeypatch):
    """A group's folder of an experiment report holds a compare-style report whose spec is under ``group`` (not at
    the top): --redraw read no tail_evals and drew each bar at the final evaluation. With ``tail_evals = 2`` the
    bars are each cell's mean over its seeds of the mean of a run's last 2 evaluations, as the experiment drew
    them, worked out here from the stored histories."""
    import imc_grapes.compare as compare_mod
    from imc_grapes.experiments import ExperimentOptions, run_experiment

    opts = ExperimentOptions(size="tiny", optimizers=("sgd", "grapes"), lr_grid=(0.05,), seeds=(0, 1), epochs=3,
                             tail_evals=2)
    run_experiment("mlp", opts, tmp_path / "report", progress=False, log=lambda s: None)
    figures: dict[str, object] = {}
    monkeypatch.setattr(compare_mod, "write_figure_atomic", lambda path, fig, **kw: figures.update({path.name: fig}))
    moved = 0
    for group in sorted((tmp_path / "report" / "groups").iterdir()):
        if not group.is_dir():
            continue
        saved = read_json(group / "results.json")
        tails: dict[str, list[float]] = {}
        finals: dict[str, list[float]] = {}
        for run in saved["runs"]:
            accs = [h["test_acc"] for h in run["history"]]
            assert len(accs) == 3 and run["status"] == "completed"
            tails.setdefault(run["optimizer"], []).append((accs[1] + accs[2]) / 2)
            finals.setdefault(run["optimizer"], []).append(accs[2])
        assert redraw_report(group) == ["curves.png", "accuracy.png"]
        bars = figures["accuracy.png"].axes[0].patches                      # type: ignore[attr-defined]
        assert [p.get_height() for p in bars] == pytest.approx([100 * sum(tails[o]) / 2 for o in ("sgd", "grapes")])
        moved += sum(tails[o] != finals[o] for o in tails)
    assert moved       # a run's accuracy moved over its last two evaluations: the final one would draw other bars


def test_redraw_names_the_command_of_an_experiment_report_its_groups_folder_or_a_sweep(tmp_path, capsys):
    """``compare --redraw`` on an experiment's report folder said "'runs' must be a list of runs", on its groups/
    folder "results.json: no such file": both name the command that redraws them now, and a sweep's folder names the
    sweep; nothing is written. A group's own folder is a compare-style report and redraws (the test above)."""
    from imc_grapes.experiments import ExperimentOptions, run_experiment

    report = tmp_path / "report"
    run_experiment("mlp", ExperimentOptions(size="tiny", optimizers=("sgd",), lr_grid=(0.05,)), report,
                   progress=False, log=lambda s: None)
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert main(["compare", "--redraw", "--out", str(report)]) == 2
    assert capsys.readouterr().err == (
        f"imc-grapes compare: error: --redraw: {report} holds an `imc-grapes experiment` report, no compare report: "
        f"redraw it with `imc-grapes experiment --redraw --out {report}`, or one of its groups with `imc-grapes "
        f"compare --redraw --out {report / 'groups' / '<group>'}`\n")
    groups = report / "groups"
    assert main(["compare", "--redraw", "--out", str(groups)]) == 2
    assert capsys.readouterr().err == (
        f"imc-grapes compare: error: --redraw: {groups} is the groups/ folder of an `imc-grapes experiment` report, "
        f"no compare report: redraw one group with `imc-grapes compare --redraw --out {groups / '<group>'}`, or the "
        f"whole report with `imc-grapes experiment --redraw --out {report}`\n")
    sweep = tmp_path / "sweep"
    (sweep / "points").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"holds the output of `imc-grapes sweep`, no compare report: give the "
                                          r"folder of an `imc-grapes compare` report"):
        redraw_report(sweep)
    after = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert [p for p in after if not p.startswith("sweep")] == before
