"""Plain-format, crash-safe result files: every write goes to a temporary file, is fsync'd, then renamed."""
from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any


_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
_TEMP_TOKEN_BYTES = 6    # the random part of a temporary file's name: 12 hex digits


def create_temp(folder: str | os.PathLike[str], name: str) -> tuple[int, str]:
    """Create a new, empty temporary file ``folder/.<name>.<random>`` for writing; return its descriptor and path.

    Unlike :func:`tempfile.mkstemp` (always mode 0600), the file is created with mode 0666 and the kernel applies
    the process's umask (and a default ACL of the folder) as it does for any ``open(path, "w")``, so the file that
    is renamed into place gets the same permissions as a plainly written one (0644 under the usual umask 0022).
    Nothing reads or changes the umask, so this is also right in threads and when the umask changes at run time.
    ``O_EXCL`` and a random name keep it from ever opening an existing file."""
    for _ in range(100):
        tmp = os.path.join(folder, f".{name}.{secrets.token_hex(_TEMP_TOKEN_BYTES)}")
        try:
            return os.open(tmp, _TEMP_FLAGS, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file for {name} in {folder}")


def temp_name_pattern(names: Iterable[str]) -> re.Pattern[str]:
    """The names :func:`create_temp` gives the temporary files of any of ``names`` (``.<name>.<12 hex digits>``),
    as a pattern to ``fullmatch`` a file name against: to find the ones a killed process left behind."""
    alternatives = "|".join(re.escape(n) for n in names)
    return re.compile(rf"\.(?:{alternatives})\.[0-9a-f]{{{2 * _TEMP_TOKEN_BYTES}}}")


def writable_folder(path: str | os.PathLike[str]) -> Path:
    """Create the folder ``path`` (with its parents) if needed and check that a file can be written in it, by
    creating and removing a temporary one; return it. The command line calls this on an output folder before any
    work starts, so that a bad ``--out`` is reported at once (and not after a training run).

    Raises:
        OSError: the folder cannot be created (e.g. a parent is a file), or no file can be written in it.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    fd, tmp = create_temp(path, "write-test")
    os.close(fd)
    os.unlink(tmp)
    return path


def file_in_the_way(path: str | os.PathLike[str]) -> Path | None:
    """What keeps the folder ``path`` from being created: ``path`` itself or the nearest of its parents that exists
    and is no folder (a file, a broken link, a device), or None when the nearest existing one is a folder (or
    nothing of ``path`` exists). Reads only: nothing is created."""
    for p in (Path(path), *Path(path).parents):
        if os.path.isdir(p):
            return None
        if os.path.lexists(p):
            return p
    return None


def folder_error(option: str, path: str | os.PathLike[str], exc: OSError | None = None) -> str:
    """The command line's message for an output folder that :func:`writable_folder` rejected (``exc``, its error)
    or that :func:`file_in_the_way` found blocked (``exc`` None): one line naming ``option``, ``path`` and why. A
    ``path`` that exists and is no folder (the "File exists" of ``mkdir``) is said to be a file (a broken link, a
    device or a socket: to exist and be no folder); a parent that is one is named (the "Not a directory" of
    ``mkdir``)."""
    blocker = file_in_the_way(path)
    if blocker is not None:
        what = _no_folder(blocker)
        if blocker == Path(path):
            return f"{option} {os.fspath(path)}: {what}; give a folder (an existing one, or a new one to create)"
        return (f"{option} {os.fspath(path)}: {blocker} {what}, so no folder can be created under it; give a "
                "folder that is not under a file")
    if exc is None:
        raise ValueError(f"folder_error: nothing is in the way of {os.fspath(path)!r}, and no error was given")
    why = exc.strerror or str(exc)
    where = f" ({exc.filename})" if exc.filename and os.fspath(exc.filename) != os.fspath(path) else ""
    return f"{option} {os.fspath(path)}: cannot create or write to this folder: {why}{where}"


def _no_folder(blocker: Path) -> str:
    """What ``blocker`` (a path :func:`file_in_the_way` returned) is, for a message: a file, or something else that
    exists and is no folder (a broken link, a device, a socket)."""
    return "is a file, not a folder" if os.path.isfile(blocker) else "exists and is not a folder"


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, rename, fsync of the folder so that
    the rename itself survives a power loss). The file gets the usual permissions of a new file, 0666 less the umask
    (see :func:`create_temp`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = create_temp(path.parent, path.name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_folder(path.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _fsync_folder(folder: Path) -> None:
    """Flush a folder's entries (a rename in it) to disk, where the platform allows opening a folder (POSIX)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:     # some file systems do not sync folders
        pass
    finally:
        os.close(fd)


def write_figure_atomic(path: str | os.PathLike[str], fig: Any, **savefig_kw: Any) -> Path:
    """Save a matplotlib figure to ``path`` atomically (rendered in memory, then :func:`write_bytes_atomic`): an
    interrupted plot never leaves a truncated image. The format is the file's suffix; ``savefig_kw`` go to
    ``fig.savefig`` (e.g. ``dpi``)."""
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip(".") or None, **savefig_kw)
    return write_bytes_atomic(path, buf.getvalue())


#: how :func:`write_json_atomic` writes the floats that JSON has no number for (``str`` of the float)
NONFINITE_STRINGS: dict[str, float] = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)  # JSON has no NaN/Inf; keep them readable (restore_nonfinite reads them back)
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):
        return _jsonable(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    return obj


def restore_nonfinite(obj: Any) -> Any:
    """``obj`` (a value read from a file of :func:`write_json_atomic`) with the strings that stand for NaN and
    ±Inf there (:data:`NONFINITE_STRINGS`: ``"nan"``, ``"inf"``, ``"-inf"``) turned back into those floats, in
    nested dicts and lists too; a new object, ``obj`` is left as it is. Only for values that hold numbers (a run's
    history, its inference accuracies): a text field that reads ``"nan"`` would become a float as well."""
    if isinstance(obj, str):
        return NONFINITE_STRINGS.get(obj, obj)
    if isinstance(obj, dict):
        return {k: restore_nonfinite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [restore_nonfinite(v) for v in obj]
    return obj


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented, strict JSON, atomically. NaN/Inf become the strings ``"nan"``, ``"inf"``,
    ``"-inf"`` (strict JSON has no such numbers; :func:`restore_nonfinite` reads them back)."""
    text = json.dumps(_jsonable(obj), indent=2, sort_keys=False, allow_nan=False)
    return write_bytes_atomic(path, (text + "\n").encode())


def write_csv_atomic(path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]],
                     fieldnames: Sequence[str] | None = None) -> Path:
    """Write a list of dict rows as CSV (header = union of keys in first-seen order), atomically."""
    if fieldnames is None:
        seen: dict[str, None] = {}
        for r in rows:
            seen.update(dict.fromkeys(r))
        fieldnames = list(seen)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(fieldnames), extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    return write_bytes_atomic(path, buf.getvalue().encode())


def read_report_json(out_dir: str | os.PathLike[str], command: str, runs: str = "runs") -> Any:
    """The ``results.json`` of the report folder ``out_dir`` that ``imc-grapes <command>`` wrote (:func:`read_json`),
    for the commands' ``--redraw`` (``runs``: the report's subfolder of runs, :func:`unfinished_job_note`).

    Raises:
        NotADirectoryError: ``out_dir``, or a folder above it, is a file (:func:`file_in_the_way`; the message names
            that file).
        FileNotFoundError: ``out_dir`` has no ``results.json`` (the message names the command's report).
        ValueError: it is not valid JSON.
    """
    blocker = file_in_the_way(out_dir)
    if blocker is not None:     # not "X/run1/results.json: no such file" when X is a file: name X
        report = f"give the folder of an `imc-grapes {command}` report (the one that holds its results.json)"
        if blocker == Path(out_dir):
            raise NotADirectoryError(f"{os.fspath(out_dir)}: {_no_folder(blocker)}; {report}")
        raise NotADirectoryError(f"{os.fspath(out_dir)}: {blocker} {_no_folder(blocker)}, so no report can be "
                                 f"under it; {report}")
    path = Path(out_dir) / "results.json"
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file " + (unfinished_job_note(out_dir, command, runs)
                                                             or f"(the folder of an `imc-grapes {command}` report?)"))
    return read_json(path)


def unfinished_job_note(out_dir: str | os.PathLike[str], command: str, runs: str = "runs") -> str:
    """For a report folder ``out_dir`` without its ``results.json``: when it holds a ``runs`` folder (the subfolder
    of the command's runs: ``runs`` for compare, ``groups`` for an experiment), a job of ``imc-grapes <command>``
    began there and did not end (it writes results.json last; e.g. it was interrupted), and the note says so and
    how to finish it; "" otherwise."""
    if not os.path.isdir(Path(out_dir) / runs):
        return ""
    return (f"(its {runs}/ folder holds the runs of an `imc-grapes {command}` job that has not finished: the "
            "report's results.json is written when the job ends; run the same command again to resume it)")


#: the file in a report's ``runs/`` folder (an experiment's: ``groups/``) that a job writes when it starts
#: (:func:`start_job`): the job's id, which the report's ``results.json`` records (``job``) when the job ends
#: (:func:`superseded_report_note`)
JOB_MARKER = "job.json"

#: the subfolder of an experiment's report folder that holds its groups' folders and its :data:`JOB_MARKER`
#: (``imc_grapes.experiments.report.GROUPS``, which imports this module)
EXPERIMENT_GROUPS = "groups"


def start_job(out_dir: str | os.PathLike[str], command: str | None, runs: str = "runs") -> str:
    """Mark the report folder ``out_dir`` as holding a job that has begun (before its first run): write
    ``<runs>/job.json`` (:data:`JOB_MARKER`; ``runs``: the subfolder that holds the job's runs, ``runs`` for a
    compare report, ``groups`` for an experiment's) with a new job id, the time (UTC) and ``command`` (the command
    line, or None); return the id, for the job's ``results.json`` to record when it ends. An earlier job's
    ``results.json`` is left as it is (an interrupted job loses nothing), but until the new job ends it is older
    than the runs beside it, and :func:`superseded_report_note` says so. No random stream of the runs is used (the
    id comes from the operating system's, :mod:`secrets`)."""
    from datetime import datetime, timezone

    job = secrets.token_hex(8)
    folder = Path(out_dir) / runs
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / JOB_MARKER, {"job": job, "started": datetime.now(timezone.utc).isoformat(
        timespec="seconds"), "command": command})
    return job


def superseded_report_note(out_dir: str | os.PathLike[str], result: Any, command: str, runs: str = "runs") -> str:
    """For the report folder ``out_dir`` whose ``results.json`` holds ``result``: when a later ``imc-grapes
    <command>`` job began there (``<runs>/job.json``, :func:`start_job` with the same ``runs``, names another job
    than ``result``'s ``job``) and has not ended, its ``<runs>/`` may hold newer runs than the report: a note that
    says so and how to finish the job; "" otherwise — the job that wrote ``result`` is the last one begun there, or
    no job was marked (a report written before jobs were, or copied without its ``<runs>/``; an unreadable marker
    counts as none)."""
    marker_path = Path(out_dir) / runs / JOB_MARKER
    try:
        marker = read_json(marker_path)
    except (OSError, ValueError):
        return ""
    if not isinstance(marker, dict) or not isinstance(marker.get("job"), str) \
            or (isinstance(result, dict) and result.get("job") == marker["job"]):
        return ""
    started = f" at {marker['started']}" if isinstance(marker.get("started"), str) else ""
    again = f" ({marker['command']})" if isinstance(marker.get("command"), str) else ""
    return (f"the report is older than its runs: a later `imc-grapes {command}` job began in {os.fspath(out_dir)}"
            f"{started} and has not finished (the report's results.json is written when the job ends), so its {runs}/ "
            f"folder may hold newer runs than results.json; run the same command again{again} to finish it (it "
            f"resumes the finished runs), or remove {marker_path} to use the earlier report as it is")


def _json_object(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; empty when it is missing, unreadable or no object."""
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _json_keys(path: Path) -> set[str]:
    """The top-level keys of the JSON object in ``path`` (:func:`_json_object`)."""
    return set(_json_object(path))


def _starts_with(path: Path, text: str) -> bool:
    """Whether the file ``path`` begins with ``text`` (read as UTF-8); False when it is missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read(len(text)) == text
    except (OSError, ValueError):       # ValueError: not UTF-8
        return False


#: the first line of the ``summary.md`` that ``imc-grapes compare-summary`` writes first (before its summary.csv and
#: summary.json): :func:`folder_command` tells its folder by it, also when the command stopped before the others
COMPARE_SUMMARY_HEADING = "# imc-grapes compare-summary\n"


def folder_command(out_dir: str | os.PathLike[str]) -> str | None:
    """The ``imc-grapes`` command whose output folder ``out_dir`` is, told by what only that command writes there:
    ``compare`` (its ``runs/job.json``, :data:`JOB_MARKER`, or a ``results.json`` with its ``spec``),
    ``experiment`` (``groups/``, or a ``results.json`` with its ``experiment``; also the ``groups/`` folder of
    its report and each group's folder in it, :func:`experiment_part`), ``sweep`` (``points/``, or a
    ``plan.json`` with its ``spec`` and ``points``, which it writes first: a sweep stopped before any point began),
    ``compare-summary`` (a ``summary.json`` with its ``method`` and ``rows``, or a ``summary.md`` that begins with
    :data:`COMPARE_SUMMARY_HEADING`, which it writes first: a compare-summary stopped before its summary.json) or
    ``train`` (a ``summary.json`` with its ``group_by``); None for a folder of none of them (a new one, a train job
    of one run, which writes only its run's folder, or anything else). Reads only, with :mod:`os.path`'s checks,
    which raise no ``OSError``: a path that cannot be looked at (a name longer than the file system allows) holds
    no command's output, and the caller's write check (:func:`writable_folder`) reports it."""
    out = Path(out_dir)
    results, summary, plan = (_json_keys(out / name) for name in ("results.json", "summary.json", "plan.json"))
    if os.path.isfile(out / "runs" / JOB_MARKER) or "spec" in results:
        return "compare"
    if os.path.isdir(out / EXPERIMENT_GROUPS) or "experiment" in results or experiment_part(out) is not None:
        return "experiment"
    if os.path.isdir(out / "points") or {"spec", "points"} <= plan:
        return "sweep"
    if {"method", "rows"} <= summary or _starts_with(out / "summary.md", COMPARE_SUMMARY_HEADING):
        return "compare-summary"
    if "group_by" in summary:
        return "train"
    return None


def experiment_part(out_dir: str | os.PathLike[str]) -> str | None:
    """What part of an ``imc-grapes experiment`` report folder ``out_dir`` is: ``"the groups"`` for its ``groups/``
    folder (one named so that holds the :data:`JOB_MARKER` the experiment writes before its first group begins),
    ``"a group"`` for one group's folder in it (a folder in such a ``groups/``, begun or finished, or a folder with
    a group's ``results.json``, which holds its ``group``: a finished group copied elsewhere); None for anything
    else, the report folder itself included. Each group's folder holds the files of a compare report
    (``results.json``, ``report.md``, ``runs/``, ...), which no command may overwrite or mix its own with, the
    experiment included. Reads only."""
    out = Path(out_dir).resolve()
    if out.name == EXPERIMENT_GROUPS and os.path.isfile(out / JOB_MARKER):
        return "the groups"
    if (out.parent.name == EXPERIMENT_GROUPS and os.path.isfile(out.parent / JOB_MARKER)) \
            or "group" in _json_keys(out / "results.json"):
        return "a group"
    return None


def experiment_report_of(out_dir: str | os.PathLike[str]) -> Path | None:
    """The report folder of the ``imc-grapes experiment`` report whose ``groups/`` folder, or one group's folder in
    it, ``out_dir`` is (:func:`experiment_part`): the folder above ``groups/`` (``out_dir``'s parent, or for a
    group its parent's parent), as a path the user can type (``out_dir``'s own spelling, relative when it was;
    not resolved). None for a group's folder copied out of its ``groups/`` (no report around it) and for anything
    that is no part of an experiment report. Reads only."""
    part = experiment_part(out_dir)
    if part is None:
        return None
    up = 1 if part == "the groups" else 2
    if up == 2 and Path(out_dir).resolve().parent.name != EXPERIMENT_GROUPS:
        return None
    return _folder_above(out_dir, up)


def _folder_above(out_dir: str | os.PathLike[str], levels: int) -> Path:
    """The folder ``levels`` (≥ 1) above ``out_dir``, spelt from ``out_dir`` as given (relative stays relative;
    not resolved), for the messages that name it."""
    return Path(os.path.normpath(os.path.join(os.fspath(out_dir), *[os.pardir] * levels)))


#: the subfolder of a command's output folder (:func:`folder_command`) that holds its runs, which its job writes,
#: resumes and builds its report from: ``compare``'s ``runs/``, ``sweep``'s ``points/`` (an experiment's are its
#: :data:`EXPERIMENT_GROUPS` folder and each group's ``runs/``, :func:`experiment_part`); no other job may write in
#: one (:func:`enclosing_runs_folder`)
RUNS_FOLDERS: dict[str, str] = {"compare": "runs", "sweep": "points"}


def enclosing_runs_folder(out_dir: str | os.PathLike[str]) -> tuple[Path, str] | None:
    """The runs folder (:data:`RUNS_FOLDERS`, an experiment's groups/ or a group's runs/) of a command's output
    folder that ``out_dir`` is, or lies anywhere under (e.g. ``<report>/runs/analog``, a compare run's own folder,
    a sweep point's ``run/``, a folder in an experiment group's ``runs/``): that folder, spelt from ``out_dir`` as
    given (:func:`_folder_above`), and whose it is (``"the `imc-grapes compare` report in <folder>"``), for the
    nearest such output folder above ``out_dir`` (:func:`folder_command`, :func:`experiment_part`); None when there
    is none: ``out_dir`` is itself an output folder, or lies elsewhere in one (e.g. ``<report>/notes``), or in
    none. A folder above counts only by the files its command writes first, not by a subfolder's name alone (a
    folder that merely holds one named ``points`` or ``groups`` is no sweep or experiment here): a compare report
    by its ``runs/job.json`` or ``results.json``, a sweep by its ``plan.json``, an experiment's ``groups/`` by its
    :data:`JOB_MARKER` and a group by its place in one or its ``results.json``. A folder above that cannot be read
    counts as no command's. Reads only."""
    out = Path(out_dir).resolve()
    for levels, folder in enumerate(out.parents, start=1):
        try:
            part = experiment_part(folder)
            owner = folder_command(folder) if part is None else None
            if owner == "sweep" and not {"spec", "points"} <= _json_keys(folder / "plan.json"):
                continue
        except OSError:         # e.g. a folder above that may not be searched: nothing of a command's to tell
            continue
        typed = _folder_above(out_dir, levels)
        if part == "the groups":    # every folder in it is a group's or in one: all of them the experiment's
            return typed, f"the `imc-grapes experiment` report in {_folder_above(out_dir, levels + 1)}"
        runs = "runs" if part == "a group" else RUNS_FOLDERS.get(owner or "")
        if runs is None or out.relative_to(folder).parts[0] != runs:    # an experiment's report: by its groups/
            continue
        if part == "a group":
            report = experiment_report_of(typed)
            whose = (f"the group in {typed} of the `imc-grapes experiment` report in {report}" if report is not None
                     else f"the group of an `imc-grapes experiment` report in {typed}")
        else:
            whose = f"the `imc-grapes {owner}` {'report ' if owner == 'compare' else ''}in {typed}"
        return typed / runs, whose
    return None


#: the statuses a run's ``results.json`` records (``imc_grapes.train.RUN_STATUSES``, which is this): ``running``
#: while it trains, then one of the others; :func:`enclosing_run_folder` tells a run's folder by it
RUN_STATUSES: tuple[str, ...] = ("completed", "diverged", "failed", "interrupted", "running")


def _is_run_folder(folder: Path) -> bool:
    """Whether ``folder`` holds one training run's files: a ``results.json`` (:func:`read_json`) that records a
    run's ``status`` (:data:`RUN_STATUSES`) and its ``config``, as ``imc-grapes train`` writes one per run (so do
    compare, sweep and experiment in their runs folders). Unreadable or another file: False."""
    data = _json_object(folder / "results.json")
    return data.get("status") in RUN_STATUSES and isinstance(data.get("config"), dict)


def run_status_problem(status: object) -> str | None:
    """Why ``status`` is not a run's status as a job writes it (one of :data:`RUN_STATUSES`), as the end of a
    message (the caller names the file and the run); None when it is."""
    if isinstance(status, str) and status in RUN_STATUSES:
        return None
    return f"status must be one of {', '.join(RUN_STATUSES)}, got {status!r}"


def enclosing_run_folder(out_dir: str | os.PathLike[str]) -> Path | None:
    """The folder of one training run (:func:`_is_run_folder`: e.g. ``runs/train/<run>`` of a train job, which
    writes only that folder for one run) that ``out_dir`` is, or lies anywhere under, the nearest one: spelt from
    ``out_dir`` as given (:func:`_folder_above`; ``out_dir`` itself normalised); None when there is none. A folder
    that cannot be read counts as no run's. Reads only."""
    out = Path(out_dir).resolve()
    for levels, folder in enumerate((out, *out.parents)):
        if _is_run_folder(folder):
            return _folder_above(out_dir, levels) if levels else Path(os.path.normpath(os.fspath(out_dir)))
    return None


def other_command_folder(out_dir: str | os.PathLike[str], command: str, option: str | None = None) -> str | None:
    """Why ``imc-grapes <command>`` must not write into ``out_dir``: it is the output folder of another command
    (:func:`folder_command`), whose files (``results.json``, ``summary.csv``, ``curves.png``, ...) it would
    overwrite or mix its own with; a message naming ``out_dir`` and that command, ending in what to change:
    ``give another <option>`` (a command line's, e.g. ``--out``), or without ``option`` (a Python caller's, which
    has no such option) ``give another folder``. None when the folder is ``command``'s own or no command's. The
    ``groups/`` folder of an experiment's report and each group's folder in it (:func:`experiment_part`) are no
    command's to write into, another experiment's neither: the message names them. Nor is a new folder (or one
    of no command's) in the runs folder of an output folder, or anywhere under it (:func:`enclosing_runs_folder`:
    e.g. ``train --out <report>/runs/analog``, ``sweep --out <report>/runs/analog``, ``compare --out
    <sweep>/points/p``, also ``compare --out <report>/runs/x``): the message names that runs folder and the output
    folder whose it is, and says to give a folder outside it. An output folder of ``command``'s own in such a
    place (made before this was refused) stays its own: it is resumed or redrawn there. Nor, to any command but
    train, is the folder of one training run or a folder under it (:func:`enclosing_run_folder`: e.g. ``compare
    --out runs/train/<run>``, whose results.json compare would replace): the message names that run's folder. Nor
    to train (whose job folder holds one folder per run: ``train --out runs/train/<run>`` would nest its runs, and
    its summary, in that run's): the message names the run's folder and the folder that holds it."""
    owner = folder_command(out_dir)
    part = experiment_part(out_dir) if owner == "experiment" else None
    if owner is None or (owner == command and part is None):
        inside = enclosing_runs_folder(out_dir) if owner is None else None    # its own output: resumed, redrawn
        if inside is None:
            run = enclosing_run_folder(out_dir) if owner is None else None
            if run is None:
                return None
            where = "is" if Path(out_dir).resolve() == run.resolve() else f"is in {run},"
            if command == "train":      # it would nest its runs (and a job's summary.csv, curves.png) in this one
                return (f"{os.fspath(out_dir)} {where} the folder of a training run ({run / 'results.json'} records "
                        f"its status): `imc-grapes train` writes each run into a folder of its own in "
                        f"{option or 'the folder it is given'} and would nest them in this run's; give the folder "
                        f"that holds the runs (e.g. {run.parent}) or another {option or 'folder'}, outside {run}")
            return (f"{os.fspath(out_dir)} {where} the folder of a training run ({run / 'results.json'} records its "
                    "status; `imc-grapes train` writes one such folder per run): `imc-grapes "
                    f"{command}` would overwrite or mix its own files with the run's; give another "
                    f"{option or 'folder'}, outside {run}")
        runs, whose = inside
        where = "is" if Path(out_dir).resolve() == runs.resolve() else f"is in {runs},"
        return (f"{os.fspath(out_dir)} {where} the {runs.name}/ folder of {whose}, which holds that job's runs (it "
                f"writes, resumes and reports them there): `imc-grapes {command}` would mix its own files with them; "
                f"give another {option or 'folder'}, outside {runs}")
    whose = f"{part} of an `imc-grapes experiment` report" if part else f"the output of `imc-grapes {owner}`"
    return (f"{os.fspath(out_dir)} holds {whose}, whose files `imc-grapes {command}` would overwrite or mix its own "
            f"with: give another {option or 'folder'}")


def read_json(path: str | os.PathLike[str]) -> Any:
    """The JSON value in ``path`` (UTF-8, as this module writes it).

    Raises:
        OSError: the file cannot be read.
        ValueError: it is not valid JSON (the message names the file).
    """
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a valid JSON file ({exc}); it is damaged or was not written by "
                         "imc-grapes") from exc
