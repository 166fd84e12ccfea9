"""The sweep folder: one sub-folder per point, results written atomically, a lock against two runners.

Layout of ``<out>/``::

    plan.json                  the spec and its points (id, params), rewritten at each run; the data folder
                               resolved (``data_root_resolved``) of the spec's base and of each point
    .lock                      held (flock) by the process running the sweep, which writes its pid in it; left
                               behind when the process ends (no lock then: the OS releases an flock)
    points/<id>/config.json    written when the point starts (its config and swept params, and the data
                               folder resolved: ``data_root_resolved``)
    points/<id>/run/           the training run's own files (metrics.csv, results.json)
    points/<id>/run.json       timing and where it ran (host, pid, executor, engine: train or replicas;
                               failure; traceback of a failure)
    points/<id>/point.json     THE result, written last (temp file + fsync + rename): status done/failed,
                               failure (diverged/crashed for a failed point, "" for a done one), reason,
                               params, metrics, config, history without timings, data_root_resolved
                               — identical whichever executor ran it

``data_root_resolved`` is the absolute folder the point's data set is read from as the sweep process resolves
the config's ``data_root`` (kept as given in ``config``: it is part of the point's id), the folder
:func:`~imc_grapes.sweep.runner.check_data` checked; ``None`` for the synthetic set
(:func:`imc_grapes.data.recorded_data_root`). A local worker reads that folder; the run's own
``run/results.json`` records the folder it read (on a Ray worker elsewhere, that machine's).

A point is *done* or *failed* when ``point.json`` exists and is readable (:meth:`SweepStore.read_result`); a
folder without it, or with one that is damaged (truncated, not JSON, of the wrong shape, or a done point without
metrics or with metrics that are not numbers: :func:`valid_metrics`), is *half-finished* (the point is running now,
or its process was killed, or its file was edited by hand) and is redone from scratch by the next run; no folder:
*pending*. A done point's NaN or ±Inf metric (an evaluation without a finite accuracy) is stored as the string
``"nan"`` / ``"inf"`` / ``"-inf"`` (:func:`~imc_grapes.io.write_json_atomic`): a number, the point stays done.

A point without a folder of its own whose id in an earlier version (:attr:`Point.legacy_ids`: a device override at
the preset's own value was part of the id then) names a folder with a result (done or failed) is that result, read
in place (:meth:`SweepStore.find_legacy`): folders written before keep counting, under any version. So is a folder
of no point whose result recorded a config that has the point's id now (the spec no longer writes the override).

A failed point's ``failure`` says why (:func:`failure_kind`): ``diverged`` (its loss or an evaluated output became
NaN/Inf: deterministic for its config and seed, a rerun diverges the same way) or ``crashed`` (its training raised
an exception, or its worker died: out of memory, a killed process, a bug — often transient). A ``point.json``
written before the field existed is classified by its reason (``diverged: ...`` for a divergence, ``ExceptionType:
...`` or a dead worker's message otherwise) when it is read.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from devices.base import is_number

from ..data import recorded_data_root
from ..io import NONFINITE_STRINGS, write_bytes_atomic, write_json_atomic
from ..train import TIMING_COLUMNS, best_accuracy
from .spec import Point, SweepSpec, _plain, config_dict_id

DONE, FAILED, PARTIAL, PENDING = "done", "failed", "half-finished", "pending"
#: the two kinds of a failed point (its ``failure``): a NaN/Inf loss or evaluated output (deterministic) or an
#: exception / a dead worker
DIVERGED, CRASHED = "diverged", "crashed"
FAILURES: tuple[str, ...] = (DIVERGED, CRASHED)
#: how a divergence's reason starts (:mod:`~imc_grapes.sweep.worker`), also in a ``point.json`` of an older version
DIVERGED_PREFIX = "diverged:"
RESULT_FILE = "point.json"
#: the file that a sweep process locks (:meth:`SweepStore.lock`), created before anything else in the folder
LOCK_FILE = ".lock"
#: most bytes of the process id that a sweep process writes into its :data:`LOCK_FILE` (Linux allows at most 2^22)
MAX_PID_BYTES = 20
#: history columns that measure time (they differ between runs of the same config: kept out of point.json)
TIMING_KEYS: tuple[str, ...] = (*TIMING_COLUMNS, "wall_time_s")


def _data_root_resolved(point: Point) -> str | None:
    """The absolute data folder of ``point`` as this process resolves it (see the module docstring)."""
    return recorded_data_root(point.config.dataset, point.config.data_root)


class SweepLockedError(RuntimeError):
    """Another process is running the sweep in this folder."""


class SweepStorageError(RuntimeError):
    """A point could not write its files for want of storage (a full disk, a quota, a read-only file system:
    :data:`~imc_grapes.sweep.worker.STORAGE_ERRNOS`): the sweep stops and the point is left to be redone, instead of
    being recorded failed (with every point after it)."""


#: per-layer diagnostics (history columns ``<name>/<layer>``) whose latest values a point keeps
#: (``final_<column>``), with their plot labels: GRAPES's mean factor, the agreement of the array-read factors with
#: the exact ones, and the realised/intended weight change of the pulsed updates
DIAGNOSTICS: dict[str, str] = {"M_mean": "mean GRAPES factor M", "M_err": "mean |M_array − M_exact|",
                               "M_corr": "corr(M_array, M_exact)", "sat": "realised / intended weight change"}
DIAGNOSTIC_PREFIXES: tuple[str, ...] = tuple(f"{name}/" for name in DIAGNOSTICS)


def epochs_run(history: Sequence[dict[str, Any]]) -> float | None:
    """How far a run got: the ``epoch`` of its last history row, i.e. the passes over the training set (a
    fraction with several evaluations per epoch) completed at its last evaluation; None without one. The
    configured ``epochs`` for a finished run; less for one that failed early (a run that diverged in epoch 2
    after its epoch-1 evaluation: 1.0)."""
    v = history[-1].get("epoch") if history else None
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def metrics_of(history: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Final metrics of a run from its history rows (empty dict for an empty history): the last evaluation's
    accuracies and losses, the best test accuracy, the epochs run (:func:`epochs_run`; named apart from the
    config field ``epochs``, the epochs asked for), and the per-layer diagnostics
    (:data:`DIAGNOSTIC_PREFIXES`, each as ``final_<column>``): each one's latest recorded value (a sampled
    diagnostic such as ``M_corr``, compared on every 10th importance read, can be missing from the last rows)."""
    if not history:
        return {}
    last = history[-1]
    out: dict[str, Any] = {f"final_{k}": last[k] for k in ("test_acc", "test_loss", "train_acc", "train_loss")
                           if k in last}
    best = best_accuracy(history)     # a NaN evaluation is never the best (max would depend on its place)
    if best is not None:
        out["best_test_acc"] = best
    out["epochs_run"] = epochs_run(history)
    for row in history:
        out.update({f"final_{k}": v for k, v in row.items() if k.startswith(DIAGNOSTIC_PREFIXES)})
    return out


def _metric_value(v: Any) -> bool:
    """Whether ``v`` can be a metric's value in ``point.json``: a real number (not a bool), the string that stands
    for NaN or ±Inf there (:data:`~imc_grapes.io.NONFINITE_STRINGS`), or None (``epochs_run`` before any
    evaluation)."""
    return v is None or is_number(v) or (isinstance(v, str) and v in NONFINITE_STRINGS)


def valid_metrics(result: dict[str, Any]) -> bool:
    """Whether the ``metrics`` of a ``point.json`` (``result``, a JSON object) are whole: an object whose every value
    is a number (:func:`_metric_value`: ``"nan"`` counts, it records a run that ended without a finite accuracy);
    for a done point also present and not empty (:func:`metrics_of` always gives ``epochs_run``), with a number for
    ``final_test_acc`` (not None) where the last history row has a ``test_acc``. A failed point's metrics are
    empty (a file without the key: ``{}``). False for a file partly written or edited by hand: a done point that
    would count as done but be left out of every mean, as if it had no finite accuracy; it is redone instead."""
    metrics = result.get("metrics", None if result.get("status") == DONE else {})
    if not isinstance(metrics, dict) or not all(_metric_value(v) for v in metrics.values()):
        return False
    if result.get("status") != DONE:
        return True
    history = result.get("history")
    last = history[-1] if isinstance(history, list) and history else None
    wants_acc = isinstance(last, dict) and "test_acc" in last
    return bool(metrics) and (not wants_acc or metrics.get("final_test_acc") is not None)


def failure_kind(result: dict[str, Any]) -> str:
    """Why a point failed: ``"diverged"`` or ``"crashed"`` (see the module docstring); ``""`` for a point that did
    not fail. ``result``: a ``point.json`` (or a worker's outcome) with ``status``, ``reason`` and, when written by
    this version, ``failure``; without a valid ``failure`` (an older file) the reason decides: ``diverged: ...`` is a
    divergence, anything else (``ExceptionType: message``, a dead worker) a crash."""
    if result.get("status") != FAILED:
        return ""
    kind = result.get("failure")
    if kind in FAILURES:
        return str(kind)
    return DIVERGED if str(result.get("reason") or "").startswith(DIVERGED_PREFIX) else CRASHED


class SweepStore:
    """Reads and writes one sweep folder (see the module docstring for the layout)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        #: point id -> the folder of ``points/`` that holds its result under an id of an earlier version
        #: (:meth:`find_legacy`); every path of such a point is in that folder
        self.legacy: dict[str, str] = {}

    # ---------------------------------------------------------------------------------------- paths
    def folder_name(self, pid: str) -> str:
        """The name of point ``pid``'s folder in ``points/``: ``pid``, or the earlier id it was found under
        (:meth:`find_legacy`)."""
        return self.legacy.get(pid, pid)

    def point_dir(self, pid: str) -> Path:
        return self.root / "points" / self.folder_name(pid)

    def run_dir(self, pid: str) -> Path:
        return self.point_dir(pid) / "run"

    # ---------------------------------------------------------------------------------------- state
    def read_result(self, pid: str) -> dict[str, Any] | None:
        """The point's ``point.json``, or None when missing or unreadable (an unreadable one is redone): not JSON,
        or JSON without a done/failed status, whose ``history`` is no list of rows or whose ``metrics`` are not
        whole (:func:`valid_metrics`: no object, a value that is no number, a done point's missing or empty)
        (damaged by hand or by a tool: status and report read them). Its ``failure`` is set as
        :func:`failure_kind` reads it (a file of an older version has none: classified by its reason)."""
        return self._read_result_in(self.point_dir(pid))

    @staticmethod
    def _read_result_in(folder: Path) -> dict[str, Any] | None:
        """:meth:`read_result` of the point folder ``folder``."""
        try:
            data = json.loads((folder / RESULT_FILE).read_text())
        except (OSError, ValueError):
            return None
        if not (isinstance(data, dict) and data.get("status") in (DONE, FAILED)):
            return None
        history = data.get("history", [])
        if not (isinstance(history, list) and all(isinstance(h, dict) for h in history)) or not valid_metrics(data):
            return None
        data["failure"] = failure_kind(data)
        return data

    def find_legacy(self, points: Sequence[Point]) -> dict[str, str]:
        """Find the points whose result an earlier version wrote under another id and read them there, in place: a
        point without a folder of its own is the finished result (done or failed, :meth:`read_result`) of

        * the folder of one of its earlier ids (:attr:`Point.legacy_ids`: its config as the spec writes it, with a
          device override at the preset's own value, which the ids now leave out), the first in that order; else
        * the first folder of ``points/`` (:meth:`folder_ids`, sorted) that is no point's id and whose result
          recorded a config (``point.json``'s ``config``) to which this version gives the point's id
          (:func:`~imc_grapes.sweep.spec.config_dict_id`): a folder written under an id that counted such an
          override, found after the override was taken out of the spec too. Only such orphan folders are read
          (one file each), and only while a point is still unfound; a damaged one counts for nothing.

        Every path of such a point (:meth:`point_dir`, :meth:`run_dir`) is in that folder from now on. A point's own
        folder, in any state, comes first. Reads only (``--status`` and ``--report`` use it on a folder another
        process is running); returns and sets :attr:`legacy`."""
        self.legacy = {}
        unfound: set[str] = set()
        tried: set[str] = set()         # folders read already (a legacy id's without a result: not read twice)
        for p in points:
            own = self.point_dir(p.id)
            if own.exists() or own.is_symlink():
                continue
            tried.update(p.legacy_ids)
            old = next((o for o in p.legacy_ids if self._read_result_in(self.root / "points" / o) is not None), None)
            if old is not None:
                self.legacy[p.id] = old
            else:
                unfound.add(p.id)
        ids = {p.id for p in points}
        for name in self.folder_ids() if unfound else []:
            if name in ids or name in tried:
                continue
            result = self._read_result_in(self.root / "points" / name)
            config = result.get("config") if result is not None else None
            pid = config_dict_id(config) if isinstance(config, dict) else None
            if pid is not None and pid in unfound:
                self.legacy[pid] = name
                unfound.discard(pid)
                if not unfound:
                    break
        return self.legacy

    def read_run_info(self, pid: str) -> dict[str, Any]:
        """The point's ``run.json`` (timing, host, traceback), or ``{}`` when missing, unreadable or not a JSON
        object (damaged by hand or by a tool: the report reads its ``wall_time_s``)."""
        try:
            data = json.loads((self.point_dir(pid) / "run.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def folder_ids(self) -> list[str]:
        """The names of the entries of ``points/`` (sorted; empty when it does not exist or cannot be read): the
        points this folder holds, of the current spec or not."""
        try:
            return sorted(e.name for e in (self.root / "points").iterdir())
        except OSError:
            return []

    def state(self, pid: str) -> str:
        """``done`` / ``failed`` (a result exists), ``half-finished`` (a folder, no result) or ``pending``."""
        return self.state_and_failure(pid)[0]

    def state_and_failure(self, pid: str) -> tuple[str, str]:
        """:meth:`state` and, for a failed point, why (:func:`failure_kind`: ``diverged`` / ``crashed``; else "")."""
        result = self.read_result(pid)
        if result is not None:
            return str(result["status"]), str(result["failure"])
        return (PARTIAL if self.point_dir(pid).exists() else PENDING), ""

    # ---------------------------------------------------------------------------------------- writes
    def write_plan(self, spec: SweepSpec, points: Sequence[Point]) -> Path:
        """Write ``plan.json``: the spec (its base's ``data_root`` as given), the absolute data folder that base
        names for this process (``data_root_resolved``, None for the synthetic set), and per point its id, params,
        reference flag and own ``data_root_resolved`` (a swept ``dataset`` or ``data_root`` differs from the
        base's), and for a point whose result is in the folder of an earlier id (:meth:`find_legacy`) that folder's
        name (``folder``). Rewritten at each run: it records the folders of the latest run, which a finished point's
        ``point.json`` may predate."""
        return write_json_atomic(self.root / "plan.json", {
            "spec": spec.to_dict(),
            "data_root_resolved": recorded_data_root(spec.base.dataset, spec.base.data_root),
            "points": [{"id": p.id, "params": _plain(p.params), "reference": p.reference,
                        "data_root_resolved": _data_root_resolved(p),
                        **({"folder": self.legacy[p.id]} if p.id in self.legacy else {})} for p in points],
        })

    def discard(self, pid: str) -> None:
        """Remove what an unfinished attempt at point ``pid`` left (its folder, if any): the point is pending again.
        The runner discards the half-finished points it is about to redo before it starts any, so that while it
        runs, a folder without a result is a point it has handed out (``--status``: *running now*), not a leftover
        of an earlier, killed run still waiting in the queue. A file or a symbolic link in the folder's place (not
        written by a sweep) is removed too (a link's target is left alone), so that the point can be written."""
        d = self.point_dir(pid)
        if d.is_symlink() or (d.exists() and not d.is_dir()):
            d.unlink()
        elif d.exists():
            shutil.rmtree(d)

    def prepare(self, point: Point) -> None:
        """Start a point afresh: remove what a previous, unfinished attempt left, write ``config.json``."""
        self.discard(point.id)
        d = self.point_dir(point.id)
        write_json_atomic(d / "config.json", {"id": point.id, "params": _plain(point.params),
                                              "reference": point.reference, "config": point.config.to_dict(),
                                              "data_root_resolved": _data_root_resolved(point)})

    def record(self, point: Point, outcome: dict[str, Any], executor: str = "") -> dict[str, Any]:
        """Write a finished point: shipped run files, ``run.json``, then ``point.json`` (last, atomically). A failed
        outcome's ``failure`` (``diverged`` / ``crashed``) is kept; one without it (an executor's dead-worker
        outcome) is classified by its reason (:func:`failure_kind`)."""
        failure = failure_kind(outcome)
        for name, text in (outcome.get("files") or {}).items():
            write_bytes_atomic(self.run_dir(point.id) / Path(name).name, text.encode())
        write_json_atomic(self.point_dir(point.id) / "run.json", {
            "id": point.id, "status": outcome["status"], "failure": failure, "wall_time_s": outcome.get("wall_time_s"),
            "host": outcome.get("host"), "pid": outcome.get("pid"), "executor": executor,
            "engine": outcome.get("engine", "train"),
            "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "traceback": outcome.get("traceback", ""),
        })
        history = [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in outcome.get("history") or []]
        result = {
            "id": point.id, "status": outcome["status"], "failure": failure, "reason": outcome.get("reason", ""),
            "params": _plain(point.params), "reference": point.reference,
            "metrics": metrics_of(history) if outcome["status"] == DONE else {},
            "config": point.config.to_dict(), "data_root_resolved": _data_root_resolved(point), "history": history,
        }
        write_json_atomic(self.point_dir(point.id) / RESULT_FILE, result)
        return result

    # ---------------------------------------------------------------------------------------- lock
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the folder's lock while running (released by the OS if the process dies, even by kill -9)."""
        import fcntl

        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
                raise SweepLockedError(f"another process (pid {holder}) is running the sweep in {self.root}; wait "
                                       "for it to finish, or watch it with --status") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def is_running(self) -> bool:
        """True while another process holds the lock (a sweep is running in this folder)."""
        import fcntl

        path = self.root / LOCK_FILE
        if not path.exists():
            return False
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except OSError:
            return True
        finally:
            os.close(fd)

    def has_lock_file(self) -> bool:
        """Whether a sweep process has locked this folder (:meth:`lock`), now or before: :data:`LOCK_FILE` is a
        regular file holding a process id, or nothing (its process died between creating it and writing its id).
        The lock is an ``flock`` on that file, which the OS releases when its process dies, so a file left by a
        dead process is no lock (:meth:`is_running` is False), but it says that a sweep was started here: one
        killed, or whose first write failed, before it wrote ``plan.json``. A link, a folder or a file of other
        content by that name is not a sweep's. Reads only."""
        path = self.root / LOCK_FILE
        if path.is_symlink() or not path.is_file():
            return False
        try:
            with open(path, "rb") as f:
                text = f.read(MAX_PID_BYTES + 1)
        except OSError:
            return False
        return len(text) <= MAX_PID_BYTES and (not text or (text.isascii() and text.isdigit()))
