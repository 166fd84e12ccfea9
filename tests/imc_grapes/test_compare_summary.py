"""compare-summary: one table across compare reports, with differences paired by seed (hand values)."""
from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest

from imc_grapes.cli import main
from imc_grapes.compare import paired_by_seed
from imc_grapes.compare_summary import format_summary, summarize, write_summary
from imc_grapes.config import ConfigError


def _run(hw: str, opt: str, seed: int, accs: list[float], status: str = "completed", split: str = "test") -> dict:
    return {"hardware": hw, "optimizer": opt, "status": status, "eval_split": split, "config": {"seed": seed},
            "history": [{"test_acc": a} for a in accs]}


def _report(tmp: Path, name: str, preset: str = "EcRam", backend: str = "crossbar", tail: int = 1,
            overrides: dict | None = None) -> Path:
    """A compare report: digital + analog; the analog cells' final runs on seeds 0-2 (grapes diverged on seed 2),
    tuning runs (validation split) that must not count, and the report's own summary rows."""
    runs = [_run("analog", "sgd", 0, [0.50, 0.90]), _run("analog", "sgd", 1, [0.60, 0.80]),
            _run("analog", "sgd", 2, [0.70, 0.85]),
            _run("analog", "grapes", 0, [0.40, 0.92]), _run("analog", "grapes", 1, [0.80, 0.79]),
            _run("analog", "grapes", 2, [0.10], status="diverged"),
            _run("analog", "grapes", 0, [0.99], split="validation"),
            _run("analog", "layer-mean", 0, [0.30, 0.91]), _run("analog", "layer-mean", 1, [0.50, 0.81]),
            _run("analog", "layer-mean", 2, [0.60, 0.86]),
            _run("digital", "sgd", 0, [0.97]), _run("digital", "grapes", 0, [0.98])]
    summary = [{"hardware": "analog", "optimizer": o, "lr": lr, "final_test_acc_mean": m, "final_test_acc_std": s,
                "saturation_mean": sat, "cost_overhead_vs_sgd": e}
               for o, lr, m, s, sat, e in (("sgd", 0.3, 0.85, 0.05, 0.97, 1.0),
                                           ("grapes", 0.1, 0.855, 0.0919, 0.99, 1.7),
                                           ("layer-mean", 0.1, 0.86, 0.05, 0.98, 1.72))]
    summary += [{"hardware": "digital", "optimizer": "sgd", "lr": 0.1, "final_test_acc_mean": 0.97,
                 "final_test_acc_std": 0.0},
                {"hardware": "digital", "optimizer": "grapes", "lr": 0.03, "final_test_acc_mean": 0.98,
                 "final_test_acc_std": 0.0}]
    spec = {"optimizers": ["sgd", "grapes", "layer-mean"], "hardware": ["digital", "analog"],
            "analog_backend": backend, "tail_evals": tail,
            "base": {"analog": {"preset": preset, "device_overrides": overrides or {}}}}
    folder = tmp / name
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps({"spec": spec, "summary": summary, "runs": runs}))
    return folder


def test_paired_by_seed_hand_values() -> None:
    p = paired_by_seed({0: 0.92, 1: 0.79, 2: None, 3: 0.5}, {0: 0.90, 1: 0.80, 2: 0.85})
    assert p is not None and p["n"] == 2 and p["positive"] == 1 and p["negative"] == 1
    assert p["mean"] == pytest.approx(0.005) and p["std"] == pytest.approx(statistics.stdev([0.02, -0.01]))
    assert paired_by_seed({0: 0.5}, {1: 0.5}) is None
    assert paired_by_seed({0: 0.5}, {0: 0.25}) == {"mean": 0.25, "std": 0.0, "n": 1, "positive": 1, "negative": 0}


def test_summary_rows_pair_the_final_runs_by_seed(tmp_path: Path) -> None:
    rows = summarize([_report(tmp_path, "a"), _report(tmp_path, "b", preset="ReRamSB", backend="aihwkit", tail=2)])
    assert [(r["label"], r["hardware"]) for r in rows] == [("digital", "digital"), ("EcRam", "analog"),
                                                          ("digital", "digital"), ("ReRamSB (aihwkit)", "analog")]
    ecram = rows[1]
    assert (ecram["sgd/lr"], ecram["grapes/acc_mean"], ecram["layer-mean/acc_std"]) == (0.3, 0.855, 0.05)
    # last evaluations: grapes 0.92, 0.79 (seed 2 diverged: left out; the validation run never counts)
    assert ecram["grapes-sgd"]["mean"] == pytest.approx((0.02 - 0.01) / 2) and ecram["grapes-sgd"]["n"] == 2
    assert ecram["grapes-layer-mean"]["mean"] == pytest.approx((0.01 - 0.02) / 2)
    # tail_evals = 2: the mean of the last two evaluations of each run
    tail = rows[3]["grapes-sgd"]
    assert tail["mean"] == pytest.approx(((0.66 - 0.70) + (0.795 - 0.70)) / 2)
    assert rows[0]["grapes-layer-mean"] is None and rows[0]["layer-mean/acc_mean"] is None   # no such digital cell
    assert rows[0]["grapes-sgd"]["mean"] == pytest.approx(0.01)
    table = format_summary(rows)   # both reports have a digital row: a report column tells them apart
    assert table.startswith("| report | hardware | sgd |")
    # grapes diverged on one of its three seeds: said as the report's own table says it
    assert "| a | EcRam | 85.00 ± 5.00 (lr 0.3) | 85.50 ± 9.19 (1/3 diverged) (lr 0.1) | 86.00 ± 5.00 (lr 0.1) " \
           "| +0.50 ± 2.12 (1/2) " \
           "| -0.50 ± 2.12 (1/2) | 0.97 | 1.70 |" in table
    # one seed: no seed-to-seed spread, so no std (it was shown as ± 0.00)
    assert ("| a | digital | 97.00 ± — (lr 0.1) | 98.00 ± — (lr 0.03) | — | +1.00 ± — (1/1) | — | — "
            "| — |") in table
    assert (ecram["sgd/completed"], ecram["grapes/completed"], rows[0]["sgd/completed"]) == (3, 2, 1)
    # the final runs (the validation run is a tuning run) and the stopped ones; the digital row has no layer-mean
    assert (ecram["grapes/runs"], ecram["grapes/diverged"], ecram["grapes/failed"], ecram["sgd/diverged"]) == (3, 1, 0,
                                                                                                              0)
    assert (rows[0]["layer-mean/runs"], rows[0]["layer-mean/diverged"]) == (0, 0)
    assert "| b | digital |" in table
    # without a repeated label, no report column
    assert format_summary(rows[1:2]).startswith("| hardware | sgd |")
    assert "| EcRam | 85.00 ± 5.00 (lr 0.3) |" in format_summary(rows[1:2])


def test_reports_with_the_same_label_get_distinguishable_rows(tmp_path: Path) -> None:
    from imc_grapes.compare_summary import report_names

    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    a, b, c = _report(tmp_path / "x", "cmp"), _report(tmp_path / "y", "cmp"), _report(tmp_path, "other")
    rows = summarize([a, b / "results.json", c])
    # the shortest end of each path that tells the reports apart (a results.json stands for its folder)
    assert report_names(rows) == ["x/cmp", "x/cmp", "y/cmp", "y/cmp", "other", "other"]
    assert report_names(summarize([a, c])) == ["cmp", "cmp", "other", "other"]
    table = format_summary(rows).splitlines()
    assert [line.split(" | ")[:2] for line in table[2:]] == [
        ["| x/cmp", "digital"], ["| x/cmp", "EcRam"], ["| y/cmp", "digital"], ["| y/cmp", "EcRam"],
        ["| other", "digital"], ["| other", "EcRam"]]
    assert write_summary(rows, tmp_path / "out")[-1] == "paired.png"


def test_a_report_with_device_params_is_labelled_by_the_changed_fields(tmp_path: Path) -> None:
    """Reports of one preset with different ``--device-param`` values are rows of their own device, not repeats."""
    rows = summarize([_report(tmp_path, "a", preset="GokmenVlasov", overrides={"dw_min": 0.008}),
                      _report(tmp_path, "b", preset="GokmenVlasov", overrides={"up_down": 0.2, "dw_min_std": 3.0}),
                      _report(tmp_path, "c", preset="GokmenVlasov", backend="aihwkit",
                              overrides={"dw_min_dtod_log_normal": True})])
    assert [r["label"] for r in rows if r["hardware"] == "analog"] == [
        "GokmenVlasov dw_min=0.008", "GokmenVlasov up_down=0.2, dw_min_std=3",
        "GokmenVlasov dw_min_dtod_log_normal=true (aihwkit)"]
    assert "| a | GokmenVlasov dw_min=0.008 |" in format_summary(rows)


def test_the_same_report_given_twice_is_rejected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _report(tmp_path, "a")
    with pytest.raises(ConfigError, match="is the same report as"):
        summarize([a, a / "results.json"])
    assert main(["compare-summary", str(a), str(tmp_path / "." / "a"), "--out", str(tmp_path / "out")]) == 2
    # the command's prefix once (it was "imc-grapes compare-summary: error: compare-summary: ...")
    assert capsys.readouterr().err == (f"imc-grapes compare-summary: error: {tmp_path / '.' / 'a'} is the same report "
                                       f"as {a}; give each report once\n")
    assert not (tmp_path / "out").exists()


def test_a_results_file_that_is_not_utf8_is_a_usage_error_naming_it(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A binary results.json ended compare-summary in a UnicodeDecodeError traceback."""
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "results.json").write_bytes(b"\xff\xfe{}")
    assert main(["compare-summary", str(tmp_path / "a"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"imc-grapes compare-summary: error: {tmp_path / 'a' / 'results.json'} "
                          "is not valid JSON ('utf-8' codec can't decode")
    assert not (tmp_path / "out").exists()


def test_written_files_and_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = _report(tmp_path, "a"), _report(tmp_path, "b", preset="Capacitor")
    out = tmp_path / "out"
    assert main(["compare-summary", str(a), str(b / "results.json"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| Capacitor |" in printed and "wrote" in printed
    assert {p.name for p in out.iterdir()} == {"summary.md", "summary.csv", "summary.json", "paired.png"}
    with open(out / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["label"] for r in rows] == ["digital", "EcRam", "digital", "Capacitor"]
    assert float(rows[1]["grapes-sgd/mean"]) == pytest.approx(0.005) and rows[1]["grapes-sgd/n"] == "2"
    assert (out / "paired.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "summary.json").read_text())["rows"][1]["label"] == "EcRam"
    assert write_summary([], tmp_path / "empty") == ["summary.md", "summary.csv", "summary.json", "paired.png"]

    assert main(["compare-summary", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith(f"imc-grapes compare-summary: error: no compare results at "
                                              f"{tmp_path / 'missing'} ")
    (tmp_path / "bad.json").write_text("{}")
    assert main(["compare-summary", str(tmp_path / "bad.json")]) == 2
    assert "needs 'spec', 'summary' and 'runs'" in capsys.readouterr().err
    assert main(["compare-summary", str(a), "--method", "adam"]) == 2
    assert "must be optimizers" in capsys.readouterr().err


@pytest.mark.parametrize("names", [("grapes", "sgd", "grapes"), ("grapes", "grapes", "layer-mean"),
                                   ("grapes", "sgd", "sgd")])
def test_method_reference_and_control_must_differ(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  names: tuple[str, str, str]) -> None:
    """A method compared with itself is a difference of 0 by construction, and a repeated column says nothing:
    the three must be different optimizers, on the command line and in the API."""
    a = _report(tmp_path, "a")
    with pytest.raises(ConfigError, match="must be three different optimizers"):
        summarize([a], *names)
    method, reference, control = names
    assert main(["compare-summary", str(a), "--method", method, "--reference", reference, "--control", control,
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("imc-grapes compare-summary: error: method, reference and control (--method, --reference, "
                          "--control) must be three different optimizers")
    assert not (tmp_path / "out").exists()


def test_a_summary_without_any_paired_difference_plots_without_warnings(tmp_path: Path) -> None:
    """GRAPES diverged on the only seed: no paired difference, an empty paired.png that says so (no legend
    warning), and the table shows "—" for both differences."""
    import warnings

    spec = {"optimizers": ["sgd", "grapes"], "hardware": ["digital"], "tail_evals": 1, "base": {}}
    runs = [_run("digital", "sgd", 0, [0.9]), _run("digital", "grapes", 0, [0.2], status="diverged")]
    summary = [{"hardware": "digital", "optimizer": "sgd", "lr": 0.1, "final_test_acc_mean": 0.9,
                "final_test_acc_std": 0.0, "completed": 1}]
    folder = tmp_path / "r"
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps({"spec": spec, "summary": summary, "runs": runs}))
    rows = summarize([folder])
    assert rows[0]["grapes-sgd"] is None and rows[0]["grapes/completed"] == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_summary(rows, tmp_path / "out")
    # the grapes cell: its one run diverged (not "—", which is a cell the report does not have, as layer-mean here)
    text = (tmp_path / "out" / "summary.md").read_text()
    assert "| digital | 90.00 ± — (lr 0.1) | diverged | — | — | — |" in text


DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.mark.parametrize("folder", sorted(p.parent.name for p in DOCS.glob("*/summary.json")
                                          if "method" in json.loads(p.read_text())))
def test_every_stored_summary_is_what_its_recorded_command_writes_now(folder, tmp_path, monkeypatch):
    """Every compare-summary folder in docs/: its recorded command, run again on the stored reports, writes the same
    rows and table (so a stored summary cannot go stale when the summary gains a column or the reports change)."""
    stored = json.loads((DOCS / folder / "summary.json").read_text())
    args = stored["command"].split()
    assert args[:2] == ["imc-grapes", "compare-summary"] and args[-2:] == ["--out", f"docs/{folder}"]
    monkeypatch.chdir(DOCS.parent)  # the command names the reports relative to the repository root
    assert main([*args[1:-1], str(tmp_path)]) == 0
    fresh = json.loads((tmp_path / "summary.json").read_text())
    assert fresh["rows"] == stored["rows"]
    assert (tmp_path / "summary.csv").read_text() == (DOCS / folder / "summary.csv").read_text()
    fresh_md, stored_md = (tmp_path / "summary.md").read_text(), (DOCS / folder / "summary.md").read_text()
    assert fresh_md[fresh_md.index("| hardware"):] == stored_md[stored_md.index("| hardware"):]  # below the command


@pytest.mark.parametrize("damage, field", [
    (lambda d: d.update(spec=None), "'spec' must be a mapping"),
    (lambda d: d["spec"].update(hardware="analog"), "spec.hardware must be a list of names, got 'analog'"),
    (lambda d: d["spec"].update(tail_evals=0),
     "spec.tail_evals must be an integer ≥ 1 (1 = the final evaluation), got 0"),
    (lambda d: d["spec"].update(base="ReRamSB"), "spec.base and spec.base.analog must be mappings"),
    (lambda d: d.update(summary=None), "'summary' must be a list of mappings"),
    (lambda d: d["runs"][3].pop("config"), "runs[3] must have a hardware, an optimizer and a config with an integer "
                                           "seed"),
    (lambda d: d["runs"][0]["config"].update(seed="0"), "runs[0] must have"),
    # a hand-edited accuracy: its Δ columns were silently "—" (the run left out of the pairing)
    (lambda d: d["runs"][4]["history"][1].update(test_acc="x"),
     "runs[4] (analog/grapes, seed 1): history[1].test_acc must be a number (NaN allowed), got 'x'"),
    (lambda d: d["runs"][0].update(history={"test_acc": 0.5}),
     "runs[0] (analog/sgd, seed 0): history must be a list of mappings (one per evaluation), got {'test_acc': 0.5}"),
    # a hand-edited summary cell: the table's formatting ended in a traceback (Unknown format code 'f' ...)
    (lambda d: d["summary"][1].update(final_test_acc_mean="x"),
     "summary[1].final_test_acc_mean must be a number (NaN allowed) or null, got 'x'"),
    (lambda d: d["summary"][0].update(lr=[0.1]), "summary[0].lr must be a number (NaN allowed) or null, got [0.1]"),
    (lambda d: d["summary"][0].update(optimizer=None),
     "summary[0] must name its hardware and optimizer, got 'analog', None"),
])
def test_a_results_file_of_the_wrong_shape_is_a_usage_error_naming_the_field(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], damage, field: str) -> None:
    """A damaged or hand-edited results.json (valid JSON with the three keys) ended compare-summary in a traceback
    (spec null, a run without config, summary null), or — spec.hardware a string — in one row per letter."""
    a = _report(tmp_path, "a")
    data = json.loads((a / "results.json").read_text())
    damage(data)
    (a / "results.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="is not the results.json of an imc-grapes compare report: "):
        summarize([a])
    assert main(["compare-summary", str(a), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"imc-grapes compare-summary: error: {a / 'results.json'} is not the "
                          "results.json of an imc-grapes compare report: ") and field in err
    assert not (tmp_path / "out").exists()


def test_a_cell_without_a_completed_run_says_why_as_the_report_does() -> None:
    """A cell whose runs all diverged was "—" in the summary, as a cell the report does not have (the report's own
    table says "diverged"); runs lost on some seeds were not said at all."""
    from imc_grapes.compare import accuracy_text

    assert accuracy_text(None, None, 0, 2, diverged=2) == "diverged"
    assert accuracy_text(None, None, 0, 2, diverged=1, failed=1) == "no completed run"
    assert accuracy_text(0.855, 0.0919, 2, 4, diverged=1, failed=1) == "85.50 ± 9.19 (1/4 diverged, 1/4 failed)"
    assert accuracy_text(0.9, None, 1, 1) == "90.00 ± —"
    row = {"label": "EcRam", "grapes/acc_mean": None, "grapes/lr": 0.1, "grapes/completed": 0, "grapes/runs": 3,
           "grapes/diverged": 1, "grapes/failed": 2, "sgd/acc_mean": None, "sgd/runs": 2, "sgd/diverged": 2,
           "sgd/lr": 1.0}
    assert "| EcRam | diverged (lr 1) | no completed run (lr 0.1) | — |" in format_summary([row])


def _respec(folder: Path, **changes: object) -> Path:
    """``folder``'s report with spec fields changed (dotted names: ``base.epochs``)."""
    data = json.loads((folder / "results.json").read_text())
    for key, value in changes.items():
        *parents, last = key.split("__")
        node = data["spec"]
        for parent in parents:
            node = node.setdefault(parent, {})
        node[last] = value
    (folder / "results.json").write_text(json.dumps(data))
    return folder


def test_reports_run_differently_are_labelled_with_what_differs(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Reports of another data set, network or periphery were put side by side with nothing to say so (the rows
    named only the device): the summary now lists each spec field that differs beyond the label, with the reports
    of each value. The device preset and its changed fields (the label), and the analog fields of a digital-only
    report (unused), are no difference."""
    from imc_grapes.compare_summary import setup_differences

    a = _respec(_report(tmp_path, "a"), base__dataset="mnist", base__epochs=2, base__analog__adc_bits=9)
    b = _respec(_report(tmp_path, "b", preset="Capacitor", overrides={"dw_min": 0.01}), base__dataset="mnist",
                base__epochs=2, base__analog__adc_bits=9)
    assert setup_differences([a, b]) == []      # only the devices differ: like with like
    c = _respec(_report(tmp_path, "c"), base__dataset="fashion-mnist", base__epochs=2, base__analog__adc_bits=6,
                lr_grid=[0.1])
    d = _respec(_report(tmp_path, "d"), hardware=["digital"], base__dataset="mnist", base__epochs=5,
                base__analog__adc_bits=4)
    assert setup_differences([a, b, c, d]) == [
        "base.analog.adc_bits: 9 (a, b), 6 (c)",            # d has no analog run: its adc_bits is no difference
        'base.dataset: "mnist" (a, b, d), "fashion-mnist" (c)',
        "base.epochs: 2 (a, b, c), 5 (d)",
        "lr_grid: (not recorded) (a, b, d), [0.1] (c)"]
    out = tmp_path / "out"
    assert main(["compare-summary", str(a), str(b), str(d), "--out", str(out)]) == 0
    note = ("The reports differ in more than their devices (compare their rows with care):\n\n"
            "- base.epochs: 2 (a, b), 5 (d)")
    assert note in capsys.readouterr().out and note in (out / "summary.md").read_text()
    assert json.loads((out / "summary.json").read_text())["setup_differences"] == ["base.epochs: 2 (a, b), 5 (d)"]
    assert main(["compare-summary", str(a), str(b), "--out", str(tmp_path / "same")]) == 0
    assert "differ in more" not in capsys.readouterr().out
    assert "setup_differences" not in json.loads((tmp_path / "same" / "summary.json").read_text())


def test_an_unfinished_compare_job_is_named_as_such(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An interrupted compare job leaves runs/ and no results.json (written when the job ends): compare-summary and
    compare --redraw said only "no compare results" / "no such file", as for a folder of no job at all."""
    job = tmp_path / "job"
    (job / "runs" / "digital" / "sgd").mkdir(parents=True)
    unfinished = "has not finished: the report's results.json is written when the job ends; run the same command"
    for given in (job, job / "results.json"):
        assert main(["compare-summary", str(given), "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert f"no compare results at {job / 'results.json'} (its runs/ folder" in err and unfinished in err
    assert main(["compare", "--redraw", "--out", str(job)]) == 2
    err = capsys.readouterr().err
    assert f"--redraw: {job / 'results.json'}: no such file (its runs/ folder" in err and unfinished in err
    (tmp_path / "empty").mkdir()      # no job began there: the message as before
    assert main(["compare-summary", str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 2
    assert "(give a report folder with results.json)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("files, dirs, theirs", [
    ({"summary.csv": "optimizer,final_test_acc_mean\n", "summary.json": '{"group_by": "optimizer", "runs": []}'}, [],
     "train"),
    ({"summary.csv": "point,status\n"}, ["points"], "sweep"),
    ({"summary.csv": "experiment,group\n", "results.json": '{"experiment": "mlp"}'}, ["groups"], "experiment"),
    ({"results.json": '{"spec": {}, "runs": []}'}, [], "compare"),
])
def test_an_out_folder_of_another_command_is_not_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                             files: dict[str, str], dirs: list[str],
                                                             theirs: str) -> None:
    """--out given a train job's folder (summary.csv, summary.json), a sweep's or an experiment's (summary.csv) or a
    compare report overwrote their summaries with compare-summary's, or mixed its files with theirs; it is refused
    (exit 2, naming the folder and the command whose output it holds, as train and compare refuse such a folder),
    before the table is printed, and the files are left as they were; write_summary, called from Python, refuses it
    too, naming its out_dir argument instead of the command's --out. A folder of an earlier compare-summary (also
    one stopped before its summary.json, told by its summary.md) is written again."""
    from imc_grapes.io import folder_command

    a = _report(tmp_path, "a")
    out = tmp_path / "theirs"
    out.mkdir()
    for d in dirs:
        (out / d).mkdir()
    for name, text in files.items():
        (out / name).write_text(text)
    message = (f"--out: {out} holds the output of `imc-grapes {theirs}`, whose files `imc-grapes compare-summary` "
               "would overwrite or mix its own with: give another --out")
    assert main(["compare-summary", str(a), "--out", str(out)]) == 2
    assert capsys.readouterr() == ("", f"imc-grapes compare-summary: error: {message}\n")
    assert {p.name: p.read_text() for p in out.iterdir() if p.is_file()} == files
    assert sorted(p.name for p in out.iterdir()) == sorted([*files, *dirs])
    with pytest.raises(ConfigError) as raised:      # from Python: no --out to give, its argument named instead
        write_summary(summarize([a]), out)
    assert str(raised.value) == (f"out_dir: {out} holds the output of `imc-grapes {theirs}`, whose files "
                                 "`imc-grapes compare-summary` would overwrite or mix its own with: give another "
                                 "folder")
    again = tmp_path / "again"
    assert main(["compare-summary", str(a), "--out", str(again)]) == 0
    assert main(["compare-summary", str(a), "--out", str(again)]) == 0     # its own summary: written again
    (again / "summary.json").unlink()                                      # stopped before summary.json
    assert folder_command(again) == "compare-summary", "told by its summary.md, so train would not overwrite it"
    assert main(["compare-summary", str(a), "--out", str(again)]) == 0
    assert json.loads((again / "summary.json").read_text())["method"] == "grapes"


def test_a_nan_accuracy_stored_as_a_string_is_nan_not_left_out_of_the_tail(tmp_path: Path) -> None:
    """results.json holds a NaN accuracy as "nan"; compare-summary skipped it, so with tail_evals 2 a run whose last
    evaluation was NaN counted as its previous one (0.40 for grapes seed 0, a Δ of −0.30 against SGD's 0.70). It is
    NaN, as the report's own mean has it, and the pairing leaves the seed out."""
    a = _report(tmp_path, "a", tail=2)
    data = json.loads((a / "results.json").read_text())
    data["runs"][3]["history"][1]["test_acc"] = "nan"                  # analog grapes seed 0: [0.40, NaN]
    (a / "results.json").write_text(json.dumps(data))
    row = summarize([a])[1]
    assert row["label"] == "EcRam"
    # seed 1 only: grapes (0.80 + 0.79) / 2 = 0.795, sgd (0.60 + 0.80) / 2 = 0.70, layer-mean (0.50 + 0.81) / 2
    assert row["grapes-sgd"] == pytest.approx({"mean": 0.095, "std": 0.0, "n": 1, "positive": 1, "negative": 0})
    assert row["grapes-layer-mean"]["n"] == 1
    assert row["grapes-layer-mean"]["mean"] == pytest.approx(0.795 - 0.655)


def test_a_report_is_older_than_its_runs_only_when_a_later_job_was_marked_there(tmp_path: Path) -> None:
    """runs/job.json (written when a compare job begins) naming another job than results.json's 'job' — or a
    report written before jobs were marked, which records none — makes the report older than its runs. Without a
    marker (a report copied without runs/, or from before), or with one that cannot be read, nothing is said."""
    from imc_grapes.io import start_job, superseded_report_note

    a = _report(tmp_path, "a")                   # written before jobs were marked: no 'job', no runs/job.json
    assert superseded_report_note(a, json.loads((a / "results.json").read_text()), "compare") == ""
    assert summarize([a])
    job = start_job(a, None)                     # a later job began, and has not ended
    assert len(job) == 16 and json.loads((a / "runs" / "job.json").read_text())["command"] is None
    with pytest.raises(ConfigError, match=rf"results\.json: the report is older than its runs: a later `imc-grapes "
                                          rf"compare` job began in {a} at .* run the same command again to finish"):
        summarize([a])
    data = json.loads((a / "results.json").read_text())
    assert superseded_report_note(a, {**data, "job": job}, "compare") == "", "the job that wrote it: up to date"
    assert superseded_report_note(a, {**data, "job": "0" * 16}, "compare").startswith("the report is older")
    (a / "runs" / "job.json").write_text("{not json")          # damaged: as no marker
    assert summarize([a])
    (a / "runs" / "job.json").unlink()
    assert summarize([a])


def test_a_nan_mean_of_a_report_reads_nan_with_a_note_and_is_stored_as_before(tmp_path: Path,
                                                                               capsys: pytest.CaptureFixture[str]
                                                                               ) -> None:
    """A report whose grapes cell has a completed run without a finite final accuracy stores its mean and std as
    "nan" (write_json_atomic); compare-summary formatted that string as a number and stopped with a ValueError
    (Unknown format code 'f' for object of type 'str'). The cell now reads ``nan ± nan``, summary.md says why
    under the table, and summary.json stores the mean as "nan", as the report does."""
    a = _report(tmp_path, "a")
    data = json.loads((a / "results.json").read_text())
    grapes = next(s for s in data["summary"] if (s["hardware"], s["optimizer"]) == ("analog", "grapes"))
    grapes.update(final_test_acc_mean="nan", final_test_acc_std="nan")
    data["runs"][3]["history"][1]["test_acc"] = "nan"                  # analog grapes seed 0: [0.40, NaN]
    (a / "results.json").write_text(json.dumps(data))
    out = tmp_path / "out"
    assert main(["compare-summary", str(a), "--out", str(out)]) == 0
    note = ("nan: the model's outputs (logits) or weights were not finite (NaN/Inf) at that evaluation, so it has no "
            "accuracy (e.g. outputs beyond the float32 range after drift); a mean over runs is nan when one of its "
            "runs' is")
    md = (out / "summary.md").read_text()
    assert "| EcRam | 85.00 ± 5.00 (lr 0.3) | nan ± nan (1/3 diverged) (lr 0.1) | 86.00 ± 5.00 (lr 0.1) |" in md
    assert f" |\n\n{note}\n\nAccuracy: test %, " in md
    assert json.loads((out / "summary.json").read_text())["rows"][1]["grapes/acc_mean"] == "nan"
    assert note not in format_summary(summarize([_report(tmp_path, "fine")]))


@pytest.mark.usefixtures("one_torch_thread")
def test_an_experiment_groups_folder_is_read_as_a_compare_report(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A group's folder of an experiment report holds a compare report of that group (summary, tuning, runs), its
    spec under ``group``: it was refused ("needs 'spec', 'summary' and 'runs'"). It is now read as one, its row
    labelled by the group's key, a run's accuracy the mean of its last ``tail_evals`` (2, from the group's spec)
    evaluations, worked out here from the stored histories. The experiment's own report folder and its groups/
    folder are refused, naming the group folders to give instead."""
    from imc_grapes.experiments import ExperimentOptions, run_experiment

    report = tmp_path / "report"
    opts = ExperimentOptions(size="tiny", lr_grid=(0.05,), seeds=(0, 1), epochs=2, tail_evals=2)
    run_experiment("mlp", opts, report, progress=False, log=lambda s: None)
    groups = sorted(p for p in (report / "groups").iterdir() if p.is_dir())
    assert len(groups) == 2
    rows = summarize(groups)
    assert [(r["label"], r["hardware"], r["tail_evals"]) for r in rows] == [(g.name, "digital", 2) for g in groups]
    for row, group in zip(rows, groups):
        saved = json.loads((group / "results.json").read_text())
        tail = {(r["optimizer"], r["config"]["seed"]): (r["history"][-2]["test_acc"] + r["history"][-1]["test_acc"]) / 2
                for r in saved["runs"]}
        for other in ("sgd", "layer-mean"):
            diffs = [tail["grapes", s] - tail[other, s] for s in (0, 1)]
            assert row[f"grapes-{other}"]["n"] == 2
            assert row[f"grapes-{other}"]["mean"] == pytest.approx(sum(diffs) / 2)
            assert row[f"grapes-{other}"]["std"] == pytest.approx(statistics.stdev(diffs))
        for opt in ("sgd", "grapes", "layer-mean"):
            assert row[f"{opt}/lr"] == 0.05 and row[f"{opt}/runs"] == row[f"{opt}/completed"] == 2
            assert row[f"{opt}/acc_mean"] == pytest.approx((tail[opt, 0] + tail[opt, 1]) / 2)
    # a group folder beside a compare report: one table
    assert len(summarize([groups[0], _report(tmp_path, "cmp")])) == 3
    assert main(["compare-summary", *map(str, groups), "--out", str(tmp_path / "summary")]) == 0
    assert f"| {groups[0].name} | " in capsys.readouterr().out
    assert main(["compare-summary", str(report), "--out", str(tmp_path / "s2")]) == 2
    assert capsys.readouterr().err == (
        f"imc-grapes compare-summary: error: {report / 'results.json'} is the results.json of an imc-grapes experiment "
        "report, not of a compare report: give its groups' folders instead, each a compare-style report of one "
        f"group: {groups[0]}, {groups[1]}\n")
    with pytest.raises(ConfigError) as info:
        summarize([report / "groups"])
    assert str(info.value) == (f"no compare results at {report / 'groups' / 'results.json'} (it is the groups/ folder "
                               "of an `imc-grapes experiment` report: give the group folders in it, each a "
                               "compare-style report of one group)")
    assert not (tmp_path / "s2").exists()
    (groups[1] / "results.json").unlink()        # a group begun and not finished: the experiment finishes it
    with pytest.raises(ConfigError, match=r"it is a group's folder of an `imc-grapes experiment` report that has not "
                                          r"finished: run the experiment again to finish it\)$"):
        summarize([groups[1]])


@pytest.mark.parametrize("empty", ["", "  "])
def test_an_empty_report_path_is_named_as_such(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch,
                                               empty: str) -> None:
    """`compare-summary ""` (an unset shell variable) said "no compare results at results.json", as if a folder
    had been given: the argument is named and said to be empty, before anything is read or written (--out ''
    of every command is refused so too); the API says the path is empty."""
    a = _report(tmp_path, "a")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=f"^an empty report path \\({empty!r}\\) names no report: give a compare "
                                          "report folder \\(or its results.json\\)$"):
        summarize([a, empty])
    assert main(["compare-summary", str(a), empty, "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr() == ("", f"imc-grapes compare-summary: error: REPORT {empty!r}: an empty path names "
                                       "no report: give a compare report folder (or its results.json)\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
