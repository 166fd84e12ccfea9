"""imc_grapes.io: atomic result files with the usual permissions."""
from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest

from imc_grapes.io import create_temp, read_json, write_bytes_atomic, write_csv_atomic, write_json_atomic


@pytest.fixture
def umask():
    """Set the process umask for one test, and restore it afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077, 0o002])
def test_result_files_get_0666_less_the_umask_not_0600(tmp_path, umask, mask):
    umask(mask)
    files = [write_json_atomic(tmp_path / "results.json", {"a": 1}),
             write_csv_atomic(tmp_path / "metrics.csv", [{"x": 1}]),
             write_bytes_atomic(tmp_path / "sub" / "plan.json", b"{}\n")]
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~mask, f
    # the same as a file written plainly under this umask
    (tmp_path / "plain.txt").write_text("x")
    assert stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == 0o666 & ~mask
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["metrics.csv", "plain.txt", "plan.json", "results.json",
                                                            "sub"], "no temporary file is left behind"


def test_overwrite_is_atomic_and_replaces_a_0600_file_with_the_usual_mode(tmp_path, umask):
    umask(0o022)
    target = tmp_path / "results.json"
    target.write_text("old")
    target.chmod(0o600)
    write_json_atomic(target, {"new": True})
    assert read_json(target) == {"new": True}
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_create_temp_never_opens_an_existing_file(tmp_path, monkeypatch):
    import imc_grapes.io as io_mod

    (tmp_path / ".x.aaaaaaaaaaaa").write_text("keep")
    names = iter(["aaaaaaaaaaaa", "bbbbbbbbbbbb"])
    monkeypatch.setattr(io_mod.secrets, "token_hex", lambda n: next(names))
    fd, tmp = create_temp(tmp_path, "x")
    os.close(fd)
    assert tmp.endswith(".x.bbbbbbbbbbbb") and (tmp_path / ".x.aaaaaaaaaaaa").read_text() == "keep"


def test_concurrent_writers_leave_one_complete_file(tmp_path):
    target = tmp_path / "point.json"

    def write(i: int) -> None:
        for _ in range(20):
            write_json_atomic(target, {"writer": i, "data": list(range(200))})

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert read_json(target)["data"] == list(range(200))
    assert [p.name for p in tmp_path.iterdir()] == ["point.json"]


def test_read_json_names_the_damaged_file(tmp_path):
    bad = tmp_path / "results.json"
    bad.write_text("{")
    with pytest.raises(ValueError, match=f"^{bad}: not a valid JSON file"):
        read_json(bad)


def test_an_atomic_write_syncs_the_file_and_then_its_folder(tmp_path, monkeypatch):
    """The data is synced before the rename and the folder after it (else a power loss can undo the rename and
    leave the previous version)."""
    import os
    import stat

    from imc_grapes.io import write_bytes_atomic

    synced = []
    real_fsync = os.fsync

    def spy(fd):
        synced.append(("folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file",
                       (tmp_path / "r.json").exists()))
        real_fsync(fd)
    monkeypatch.setattr(os, "fsync", spy)
    write_bytes_atomic(tmp_path / "r.json", b"{}")
    assert synced == [("file", False), ("folder", True)]
    assert (tmp_path / "r.json").read_bytes() == b"{}"


def test_nan_and_inf_are_written_as_strict_json_strings_and_read_back_as_floats(tmp_path):
    """Python's json writes NaN/Infinity, which strict JSON parsers reject: they are written as "nan", "inf",
    "-inf" and ``restore_nonfinite`` turns those strings back into floats (other strings are kept)."""
    import json
    import math

    import numpy as np

    from imc_grapes.io import restore_nonfinite

    path = write_json_atomic(tmp_path / "r.json", {"h": [{"acc": math.nan, "loss": math.inf}], "t": -math.inf,
                                                   "np": np.float32("nan"), "ok": 0.5, "s": "x"})
    text = path.read_text()

    def strict(name):
        raise ValueError(f"not strict JSON: {name}")

    saved = json.loads(text, parse_constant=strict)
    assert saved == {"h": [{"acc": "nan", "loss": "inf"}], "t": "-inf", "np": "nan", "ok": 0.5, "s": "x"}
    back = restore_nonfinite(saved)
    assert math.isnan(back["h"][0]["acc"]) and back["h"][0]["loss"] == math.inf and back["t"] == -math.inf
    assert math.isnan(back["np"]) and back["ok"] == 0.5 and back["s"] == "x"
    assert saved["h"][0]["acc"] == "nan", "the value read is left as it is"


def test_read_report_json_names_what_keeps_the_folder_from_holding_a_report(tmp_path):
    """A file or a broken link where the report folder or a folder above it should be is named as such (not "no
    such file" for the results.json under it); a folder without one is still "no such file"."""
    from imc_grapes.io import read_report_json

    (tmp_path / "f").write_text("")
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    with pytest.raises(NotADirectoryError, match=f"^{tmp_path / 'f' / 'a' / 'b'}: {tmp_path / 'f'} is a file, not a "
                       "folder, so no report can be under it; give the folder of an `imc-grapes compare` report"):
        read_report_json(tmp_path / "f" / "a" / "b", "compare")
    with pytest.raises(NotADirectoryError, match=f"^{tmp_path / 'link'}: exists and is not a folder; give the folder "
                       "of an `imc-grapes experiment` report"):
        read_report_json(tmp_path / "link", "experiment")
    with pytest.raises(FileNotFoundError, match=f"^{tmp_path / 'results.json'}: no such file"):
        read_report_json(tmp_path, "compare")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f", "link"]


@pytest.mark.parametrize("files, dirs, owner", [
    ({}, [], None),                                                   # a new folder
    ({"results.json": {"spec": {}, "runs": []}}, [], "compare"),
    ({}, ["runs"], None),                                             # a runs/ folder alone is no compare job's
    ({"runs/job.json": {"job": "ab"}}, ["runs"], "compare"),          # a compare job begun, not finished
    ({"results.json": {"experiment": "mlp"}}, [], "experiment"),
    ({}, ["groups"], "experiment"),
    ({}, ["points"], "sweep"),
    # a sweep stopped after its plan.json (written first, under its lock) and before its first point's folder
    ({"plan.json": {"spec": {"name": "s"}, "data_root_resolved": None, "points": []}, ".lock": "123"}, [], "sweep"),
    ({".lock": "123"}, [], None),                                     # a lock file alone: anybody's
    ({"plan.json": {"spec": {}}}, [], None),                          # a plan.json of no sweep's (no points)
    ({"summary.json": {"method": "grapes", "rows": []}}, [], "compare-summary"),
    # a compare-summary stopped after its summary.md (written first) and summary.csv, before its summary.json
    ({"summary.md": "# imc-grapes compare-summary\n\n| hardware |", "summary.csv": "report,label\n"}, [],
     "compare-summary"),
    ({"summary.md": "# imc-grapes compare-summary (notes)\n"}, [], None),   # not its first line
    ({"summary.md": b"\xff\xfe not UTF-8"}, [], None),
    ({"summary.json": {"group_by": "optimizer", "summary": []}}, [], "train"),
    ({"summary.json": {"other": 1}, "results.json": [1, 2]}, [], None),   # nobody's files
])
def test_folder_command_tells_whose_output_a_folder_holds(tmp_path, files, dirs, owner):
    from imc_grapes.io import folder_command, other_command_folder

    for d in dirs:
        (tmp_path / d).mkdir()
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            (tmp_path / name).write_bytes(data)
        else:
            (tmp_path / name).write_text(data if isinstance(data, str) else json.dumps(data))
    assert folder_command(tmp_path) == owner
    for command in ("train", "compare", "experiment", "compare-summary"):
        note = other_command_folder(tmp_path, command)                  # a Python caller's: no option to name
        on_the_command_line = other_command_folder(tmp_path, command, "--out")
        if owner in (None, command):
            assert note is None and on_the_command_line is None
        else:
            said = (f"{tmp_path} holds the output of `imc-grapes {owner}`, whose files `imc-grapes {command}` would "
                    "overwrite or mix its own with: give another ")
            assert note == said + "folder"
            assert on_the_command_line == said + "--out"


@pytest.mark.parametrize("layout, target, part", [
    # an experiment's groups/ folder: it holds the job marker, written before the first group begins
    ({"report/groups/job.json": {"job": "ab"}}, "report/groups", "the groups"),
    # a group begun (its runs only, no results.json yet) in a report's groups/
    ({"report/groups/job.json": {"job": "ab"}, "report/groups/g/runs/tune/x.txt": "run"}, "report/groups/g",
     "a group"),
    # a finished group, also copied out of its report: its results.json holds its group
    ({"g/results.json": {"command": None, "group": {"key": "g"}, "summary": [], "runs": []}}, "g", "a group"),
    ({"groups/x.txt": "any"}, "groups", None),                          # a folder named groups, of nobody
    ({"groups/g/x.txt": "any"}, "groups/g", None),                      # ... and a folder in it
    ({"report/groups/job.json": {"job": "ab"}}, "report", None),        # the report folder itself: the experiment's
])
def test_the_groups_of_an_experiment_are_no_commands_to_write_into(tmp_path, monkeypatch, layout, target, part):
    """A group's folder of an experiment holds a compare report's files (results.json, report.md, runs/) but no
    marker of the compare command: `compare --out` a group replaced its results.json and report.md, `train` and
    `experiment` mixed their files in. The groups/ folder and each group's are told an experiment's
    (:func:`~imc_grapes.io.folder_command`) and refused to every command, to another experiment too, with a message
    that names what they are; the report folder stays the experiment's own (a second run resumes there)."""
    from imc_grapes.io import experiment_part, folder_command, other_command_folder

    for name, data in layout.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(data if isinstance(data, str) else json.dumps(data))
    monkeypatch.chdir(tmp_path)     # a relative folder is told by its absolute parent
    for folder in (tmp_path / target, target):
        assert experiment_part(folder) == part
        expected_owner = "experiment" if part or target == "report" else None
        assert folder_command(folder) == expected_owner
        for command in ("train", "compare", "experiment", "compare-summary", "sweep"):
            note = other_command_folder(folder, command, "--out")
            if expected_owner is None or (part is None and command == "experiment"):
                assert note is None
            elif part is None:
                assert note.startswith(f"{folder} holds the output of `imc-grapes experiment`, whose files"), note
            else:
                assert note == (f"{folder} holds {part} of an `imc-grapes experiment` report, whose files `imc-grapes "
                                f"{command}` would overwrite or mix its own with: give another --out")


@pytest.mark.parametrize("layout, target, report", [
    ({"r/groups/job.json": {"job": "ab"}}, "r/groups", "r"),
    ({"r/groups/job.json": {"job": "ab"}, "r/groups/g/runs/x.txt": "run"}, "r/groups/g", "r"),
    ({"r/groups/job.json": {"job": "ab"}, "r/groups/g/runs/x.txt": "run"}, "r/groups/g/", "r"),
    ({"r/groups/job.json": {"job": "ab"}, "r/groups/g/runs/x.txt": "run"}, "r/groups/g/../g", "r"),
    ({"g/results.json": {"group": {"key": "g"}, "summary": [], "runs": []}}, "g", None),   # copied out: no report
    ({"r/groups/job.json": {"job": "ab"}}, "r", None),                                     # the report itself
    ({"groups/g/x.txt": "any"}, "groups/g", None),                                         # nobody's
])
def test_the_report_folder_of_an_experiments_groups_is_named_as_typed(tmp_path, monkeypatch, layout, target, report):
    """:func:`~imc_grapes.io.experiment_report_of`: the folder above groups/ (a group's: two levels up), spelt from
    the folder as given (relative stays relative, also from inside the group), for the messages that name it."""
    from imc_grapes.io import experiment_report_of

    for name, data in layout.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(data if isinstance(data, str) else json.dumps(data))
    monkeypatch.chdir(tmp_path)
    assert experiment_report_of(target) == (None if report is None else Path(report))
    assert experiment_report_of(tmp_path / target) == (None if report is None else tmp_path / report)
    if report is not None:
        monkeypatch.chdir(tmp_path / target)
        assert experiment_report_of(".") == Path(".." if target == "r/groups" else "../..")


@pytest.mark.parametrize("layout, target, runs, whose", [
    # a compare report: its runs/ and anything under it; relative spellings stay relative
    ({"r/runs/job.json": {"job": "ab"}}, "r/runs/analog/sgd", "r/runs", "the `imc-grapes compare` report in r"),
    ({"r/results.json": {"spec": {}, "runs": []}}, "r/runs", "r/runs", "the `imc-grapes compare` report in r"),
    ({"r/runs/job.json": {"job": "ab"}}, "r/runs/x/../y", "r/runs", "the `imc-grapes compare` report in r"),
    # a sweep's points/ (also before its first point began: plan.json alone marks it)
    ({"s/plan.json": {"spec": {}, "points": []}}, "s/points/p/run", "s/points", "the `imc-grapes sweep` in s"),
    # an experiment: a folder deep in a group's runs/ (the group's folder, nearest, owns it), elsewhere in groups/
    ({"e/groups/job.json": {"job": "ab"}}, "e/groups/g/runs/analog", "e/groups/g/runs",
     "the group in e/groups/g of the `imc-grapes experiment` report in e"),
    ({"e/groups/job.json": {"job": "ab"}}, "e/groups/g/notes", "e/groups", "the `imc-grapes experiment` report in e"),
    ({"g/results.json": {"group": {"key": "g"}, "summary": [], "runs": []}}, "g/runs/x", "g/runs",
     "the group of an `imc-grapes experiment` report in g"),                   # a group copied out of its report
    # no runs folder of anybody's: beside the runs, a runs/ of no report, a train job's folder, the report itself
    ({"r/runs/job.json": {"job": "ab"}}, "r/notes", None, None),
    ({"r/runs/x.txt": "any"}, "r/runs/analog", None, None),
    ({"t/summary.json": {"group_by": "optimizer"}}, "t/x", None, None),
    ({"r/runs/job.json": {"job": "ab"}}, "r", None, None),
    ({"e/groups/job.json": {"job": "ab"}}, "e/notes", None, None),
    ({"x/points/y.txt": "any"}, "x/points/p", None, None),          # a folder named points, of no sweep
    ({"x/groups/y.txt": "any"}, "x/groups/g/runs/a", None, None),   # ... groups, of no experiment
])
def test_a_folder_in_the_runs_folder_of_a_report_is_no_commands_to_write_into(tmp_path, monkeypatch, layout, target,
                                                                              runs, whose):
    """:func:`~imc_grapes.io.enclosing_runs_folder` finds the runs folder (compare's runs/, sweep's points/, an
    experiment's groups/ and each group's runs/) that a folder lies in, however deep, spelt as the folder was
    given; :func:`~imc_grapes.io.other_command_folder` refuses it to every command, the owner's own included (a
    compare report nested in another's runs/ would be mixed with them too)."""
    from imc_grapes.io import enclosing_runs_folder, other_command_folder

    for name, data in layout.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(data if isinstance(data, str) else json.dumps(data))
    monkeypatch.chdir(tmp_path)
    assert enclosing_runs_folder(target) == (None if runs is None else (Path(runs), whose))
    if runs is not None:
        absolute = enclosing_runs_folder(tmp_path / target)
        assert absolute is not None and absolute[0] == tmp_path / runs
    for command in ("train", "compare", "experiment", "compare-summary", "sweep"):
        note = other_command_folder(target, command)
        if runs is None:
            assert note is None or target == "r" and note.startswith("r holds the output of `imc-grapes compare`")
        else:
            where = "is" if os.path.normpath(target) == runs else f"is in {runs},"
            assert note == (f"{target} {where} the {Path(runs).name}/ folder of {whose}, which holds that job's runs "
                            f"(it writes, resumes and reports them there): `imc-grapes {command}` would mix its own "
                            f"files with them; give another folder, outside {runs}")


def test_an_output_folder_of_its_own_inside_a_runs_folder_stays_its_own(tmp_path):
    """A sweep made in a compare report's runs/ before that was refused is resumed there (its own folder); any other
    command is refused, by the folder's own owner as before."""
    from imc_grapes.io import other_command_folder

    (tmp_path / "r" / "runs").mkdir(parents=True)
    (tmp_path / "r" / "runs" / "job.json").write_text(json.dumps({"job": "ab"}))
    sweep = tmp_path / "r" / "runs" / "s"
    (sweep / "points").mkdir(parents=True)
    assert other_command_folder(sweep, "sweep") is None
    assert other_command_folder(sweep, "train") == (f"{sweep} holds the output of `imc-grapes sweep`, whose files "
                                                    "`imc-grapes train` would overwrite or mix its own with: give "
                                                    "another folder")


def test_a_folder_above_that_cannot_be_read_counts_as_no_commands(tmp_path, monkeypatch):
    """An OSError while reading a folder above (e.g. one that may not be searched) is no traceback: that folder
    counts as no command's, and the folders above it are still read."""
    import imc_grapes.io as io_mod

    (tmp_path / "r" / "runs").mkdir(parents=True)
    (tmp_path / "r" / "runs" / "job.json").write_text(json.dumps({"job": "ab"}))
    real = io_mod.folder_command

    def unreadable(folder):
        if Path(folder) == tmp_path / "r" / "runs" / "x":
            raise PermissionError(13, "Permission denied", str(folder))
        return real(folder)

    monkeypatch.setattr(io_mod, "folder_command", unreadable)
    assert io_mod.enclosing_runs_folder(tmp_path / "r" / "runs" / "x" / "y") == (
        tmp_path / "r" / "runs", f"the `imc-grapes compare` report in {tmp_path / 'r'}")


@pytest.mark.parametrize("results, target, run", [
    ({"status": "completed", "config": {"seed": 0}, "history": []}, "t/r", "t/r"),       # the run's folder itself
    ({"status": "running", "config": {}}, "t/r/x/y", "t/r"),                            # deep under a run begun
    ({"status": "interrupted", "config": {}}, "t/r/../r/x", "t/r"),                     # spelt with ..
    ({"status": "done", "config": {}}, "t/r", None),                                    # no run's status
    ({"status": "completed"}, "t/r", None),                                             # no config
    ({"status": "completed", "config": "x"}, "t/r", None),
    ([1, 2], "t/r", None),
])
def test_the_folder_of_a_training_run_is_no_other_commands_to_write_into(tmp_path, monkeypatch, results, target,
                                                                          run):
    """:func:`~imc_grapes.io.enclosing_run_folder` finds the folder of one training run (a results.json with a run's
    status and config, as `imc-grapes train` writes one per run) that a folder is or lies under, spelt as given;
    :func:`~imc_grapes.io.other_command_folder` refuses it to every command, naming the run's folder
    (`compare --out runs/train/<run>` replaced the run's results.json with its report's; train nested its runs)."""
    from imc_grapes.io import enclosing_run_folder, other_command_folder

    (tmp_path / "t" / "r").mkdir(parents=True)
    (tmp_path / "t" / "r" / "results.json").write_text(json.dumps(results))
    monkeypatch.chdir(tmp_path)
    assert enclosing_run_folder(target) == (None if run is None else Path(run))
    assert enclosing_run_folder(tmp_path / target) == (None if run is None else tmp_path / run)
    train_note = other_command_folder(target, "train", "--out")          # it would nest its runs in this one
    assert train_note is None if run is None else train_note == (
        f"{target} {'is' if os.path.normpath(target) == run else f'is in {run},'} the folder of a training run "
        f"({run}/results.json records its status): `imc-grapes train` writes each run into a folder of its own in "
        f"--out and would nest them in this run's; give the folder that holds the runs (e.g. {Path(run).parent}) or "
        f"another --out, outside {run}")
    for command in ("compare", "experiment", "compare-summary", "sweep"):
        note = other_command_folder(target, command, "--out")
        if run is None:
            assert note is None
        else:
            where = "is" if os.path.normpath(target) == run else f"is in {run},"
            assert note == (f"{target} {where} the folder of a training run ({run}/results.json records its status; "
                            f"`imc-grapes train` writes one such folder per run): `imc-grapes {command}` would "
                            f"overwrite or mix its own files with the run's; give another --out, outside {run}")
            assert other_command_folder(target, command).endswith(f"give another folder, outside {run}")
