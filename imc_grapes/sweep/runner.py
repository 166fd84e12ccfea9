"""Running a sweep (resumable: finished points are skipped, half-finished ones redone) and its status."""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devices.base import is_finite_number, is_number

from ..interrupts import raise_if_stop_requested
from .executors import Executor, LocalExecutor, Outcome, Task
from .spec import (Point, SweepSpec, merged_values, merged_values_note, repeated_draws_note, repeated_points,
                   repeated_points_note)
from .store import (CRASHED, DIVERGED, DONE, FAILED, PARTIAL, PENDING, SweepStorageError, SweepStore, epochs_run,
                    failure_kind)
from .worker import diverged_replica


@dataclass
class PointStatus:
    """A point and where it stands: ``done``, ``failed`` (with ``reason``), ``half-finished`` or ``pending``.
    ``metrics``: a done point's final metrics (empty otherwise); ``epochs_run``: the epochs it had trained at its
    last evaluation (:func:`~imc_grapes.sweep.store.epochs_run`), for a failed point too (None before any);
    ``failure``: why a failed point failed, ``diverged`` (NaN/Inf loss or evaluated output, deterministic) or
    ``crashed`` (an exception or a dead worker) (:func:`~imc_grapes.sweep.store.failure_kind`; "" for any other
    state); ``folder``: the name of the folder in ``points/`` that holds the point's files when it is not the
    point's id (a result an earlier version wrote under the id it gave the point, read in place:
    :meth:`~imc_grapes.sweep.store.SweepStore.find_legacy`), else ""."""

    point: Point
    state: str
    reason: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    epochs_run: float | None = None
    failure: str = ""
    folder: str = ""


@dataclass
class SweepStatus:
    """Where a sweep stands (from its folder)."""

    name: str
    out_dir: Path
    points: list[PointStatus]
    running: bool = False  # another process holds the folder's lock right now
    #: entries of ``points/`` that are no point of this spec (of an earlier version of the spec, or of another spec
    #: run in this folder): kept on disk, left out of the status and the report
    other_points: int = 0
    #: points that repeat the run of another point (:func:`~imc_grapes.sweep.spec.repeated_points`): each one still
    #: runs as a point of its own; the status and the printed summary note how many
    repeated: int = 0
    #: whether the sweep folder exists: where it does not (no sweep has run there yet, or ``--out`` is mistyped) the
    #: summary line says so, and that the points would run, instead of counting them pending in a folder
    folder_exists: bool = True

    def count(self, *states: str) -> int:
        return sum(p.state in states for p in self.points)

    def count_failed(self, failure: str) -> int:
        """The failed points that ``diverged`` or ``crashed`` (``failure``)."""
        return sum(p.state == FAILED and p.failure == failure for p in self.points)

    @property
    def complete(self) -> bool:
        return self.count(PENDING, PARTIAL) == 0

    def summary_line(self) -> str:
        """One line: how many points are done, failed and pending (and half-finished: running now, or left by a
        killed run); for a folder that does not exist, that no sweep has run there yet and how many points would
        run."""
        if not self.folder_exists:
            return (f"sweep {self.name!r}: no sweep has run in {self.out_dir} yet (it does not exist): "
                    f"{len(self.points)} points would run")
        partial = self.count(PARTIAL)
        extra = ""
        if partial:
            extra = f" ({partial} {'running now' if self.running else 'half-finished, will be redone'})"
        return (f"sweep {self.name!r} in {self.out_dir}: {len(self.points)} points — {self.count(DONE)} done, "
                f"{self.count(FAILED)} failed, {self.count(PENDING, PARTIAL)} pending{extra}")

    def format(self, verbose: bool = False) -> str:
        """A summary line (and the notes: a sweep process running, folders of other points, points that repeat
        another point's run), then the failed points with their reasons (the crashed ones, then the diverged ones) and
        the pending ones (all with verbose)."""
        from ..io import restore_nonfinite

        lines = [self.summary_line()]
        if self.running:
            lines.append("  a sweep process is running in this folder now")
        if self.other_points:
            lines.append(f"  {other_points_note(self.other_points)}")
        if self.repeated:
            lines.append(f"  note: {repeated_points_note(self.repeated, len(self.points))}")
        if legacy := sum(bool(p.folder) for p in self.points):
            lines.append(f"  note: {legacy_folders_note(legacy)}")
        groups = ((FAILED, CRASHED, "failed, crashed (an exception or a dead worker; --retry-failed redoes them)"),
                  (FAILED, DIVERGED, "failed, diverged (NaN/Inf loss or evaluated output: a rerun diverges again; "
                                     "--retry-diverged redoes them)"),
                  (PARTIAL, "", "half-finished" if not self.running else "running"),
                  (PENDING, "", "pending"), (DONE, "", "done"))
        for state, failure, title in groups:
            items = [p for p in self.points if p.state == state and p.failure == failure]
            if not items or (state == DONE and not verbose):
                continue
            lines.append(f"{title}:")
            shown = items if verbose or len(items) <= 20 else items[:20]
            for p in shown:
                detail = f"  — {p.reason}" if p.reason else ""
                acc = restore_nonfinite(p.metrics.get("final_test_acc"))   # a NaN one is stored as "nan"
                if state == DONE and is_number(acc):    # as the run's log line says it (a NaN one: nan, and why)
                    detail = "  " + result_line({"metrics": {"final_test_acc": acc}, "reason": p.reason})
                where = f"  (in points/{p.folder})" if p.folder else ""
                lines.append(f"  {p.point.id}  {p.point.label()}{detail}{where}")
            if len(shown) < len(items):
                lines.append(f"  ... and {len(items) - len(shown)} more (--verbose lists all)")
        return "\n".join(lines)


def other_points_note(n: int) -> str:
    """The status's line about ``n`` point folders that belong to no point of the spec."""
    return (f"{n} folder(s) in points/ belong to no point of this spec (points of an earlier version of the spec, "
            "or of another spec run in this folder): kept, and left out of the status and the report")


def legacy_folders_note(n: int) -> str:
    """The status's note about ``n`` points whose files are in the folder of the id an earlier version gave them
    (:attr:`PointStatus.folder`), which the listing names after each such point."""
    return (f"{n} point(s) are read in the folder of the id an earlier version gave them (which kept a device "
            "override at the preset's own value in the id): listed with '(in points/<that id>)', as summary.csv's "
            "folder column names it")


def resolve_out(spec: SweepSpec, out_dir: str | os.PathLike[str] | None) -> Path:
    return Path(out_dir) if out_dir is not None else spec.out_dir


def sweep_status(spec: SweepSpec, out_dir: str | os.PathLike[str] | None = None,
                 points: Sequence[Point] | None = None) -> SweepStatus:
    """The state of every point of ``spec`` in its folder (read-only; works while the sweep runs).

    With ``[sweep] tail_evals`` = K > 1 a done point's metrics get ``tail_test_acc``, the mean test accuracy of
    its last K evaluations (:func:`~imc_grapes.train.tail_accuracy`) as ``compare`` computes it: a NaN accuracy
    among them (``"nan"`` in ``point.json``, read back as the float by :func:`~imc_grapes.io.restore_nonfinite`)
    makes it NaN, since the run had no finite accuracy at that evaluation; it is not a mean of the others. The
    reports then leave the point out of their means and say so ("without a finite acc")."""
    from ..io import restore_nonfinite

    store = SweepStore(resolve_out(spec, out_dir))
    rows = []
    points = points if points is not None else spec.points()
    store.find_legacy(points)
    for p in points:
        result = store.read_result(p.id)
        if result is not None:
            metrics = dict(result.get("metrics") or {})
            history = restore_nonfinite(result.get("history") or [])
            if spec.tail_evals > 1 and result["status"] == DONE:
                from ..train import tail_accuracy

                tail = tail_accuracy(history, spec.tail_evals)
                if tail is not None:
                    metrics["tail_test_acc"] = tail
            rows.append(PointStatus(p, result["status"], result.get("reason", ""), metrics, epochs_run(history),
                                    failure_kind(result), store.legacy.get(p.id, "")))
        else:
            rows.append(PointStatus(p, store.state(p.id), folder=store.legacy.get(p.id, "")))
    folders = {store.folder_name(p.id) for p in points}
    other = sum(name not in folders for name in store.folder_ids())
    return SweepStatus(spec.name, store.root, rows, running=store.is_running(), other_points=other,
                       repeated=len(repeated_points(points)), folder_exists=os.path.lexists(store.root))


def check_data(points: Sequence[Point]) -> None:
    """Fail before running when a real data set the points need is not in its cache folder."""
    from ..data import get_spec, verify

    for name, root in sorted({(p.config.dataset, p.config.data_root) for p in points}, key=str):
        if name != "synthetic":
            verify(get_spec(name), root)  # raises DatasetError saying how to fetch it


def replica_groups(points: Sequence[Point], replicas: int) -> list[tuple[list[Point], bool]]:
    """Batches of the points for the replica engine, ``(points, on_replica_engine)``: points it supports
    (:func:`imc_grapes.replicas.replica_key`) whose configs are equal except for ``seed`` are split into batches of
    at most ``replicas`` (as even as possible), all run by the replica engine — also a lone pending one (its
    siblings finished, or a single seed): a replica's numbers do not depend on its batch; every other point is a
    batch of its own, run by ``train``. Order kept."""
    from ..replicas import replica_key

    if replicas < 1:
        raise ValueError(f"run_sweep.replicas must be an integer ≥ 1, got {replicas!r}")
    families: dict[str, list[Point]] = {}
    order: list[str] = []
    for p in points:
        if replicas > 1 and replica_key(p.config) is None:
            rest = p.config.to_dict()
            rest.pop("seed")
            key = json.dumps(rest, sort_keys=True, default=str)
        else:
            key = f"single:{p.id}"
        if key not in families:
            families[key] = []
            order.append(key)
        families[key].append(p)
    batches: list[tuple[list[Point], bool]] = []
    for key in order:
        fam = families[key]
        if key.startswith("single:"):
            batches.append((fam, False))
            continue
        n = -(-len(fam) // replicas)                      # batches of this family
        size, extra = divmod(len(fam), n)
        start = 0
        for k in range(n):
            end = start + size + (1 if k < extra else 0)
            batches.append((fam[start:end], True))
            start = end
    return batches


def result_line(result: dict[str, Any]) -> str:
    """What the sweep's log line says of a finished point (``result``: its ``point.json``, as
    :meth:`SweepStore.record` returns it): ``test acc 91.20%``; for a NaN (or ±Inf) accuracy ``test acc nan`` and
    why, the point's reason where it has one, else :data:`~imc_grapes.report.NAN_ACCURACY_SHORT`
    (``test acc nan (weights or outputs not finite (NaN/Inf))``); without an accuracy (a failed point) its reason."""
    from ..report import NAN_ACCURACY_SHORT

    acc, reason = result["metrics"].get("final_test_acc"), result.get("reason") or ""
    if is_finite_number(acc):
        return f"test acc {100 * acc:.2f}%"
    if is_number(acc):     # no accuracy: the model's outputs or weights were not finite at the last evaluation
        return f"test acc {acc} — {reason}" if reason else f"test acc {acc} ({NAN_ACCURACY_SHORT})"
    return reason


def run_sweep(spec: SweepSpec, out_dir: str | os.PathLike[str] | None = None, executor: Executor | None = None,
              *, retry_failed: bool = False, retry_diverged: bool = False, verify_data: bool = True, replicas: int = 1,
              log: Callable[[str], None] = print) -> SweepStatus:
    """Run every point of ``spec`` that has no result yet; return the final status.

    Every point is validated first (:meth:`SweepSpec.points`); then points with a result (done or failed) are
    skipped, half-finished ones are redone from scratch, and each result is written atomically as soon as its
    point ends. A failing point is recorded as failed with its reason and why (``failure``: ``diverged`` for a
    NaN/Inf loss or evaluated output, ``crashed`` for an exception or a dead worker) and the sweep goes on — except
    for a storage error (:class:`SweepStorageError`), which stops it.

    Args:
        spec: the sweep.
        out_dir: its folder (None: ``spec.out_dir``).
        executor: :class:`LocalExecutor` (default) or :class:`RayExecutor`.
        retry_failed: also redo the failed points that crashed (an exception, a dead worker: often transient).
        retry_diverged: also redo the failed points that diverged (NaN/Inf loss or evaluated output: deterministic
            for a config and seed, so a rerun diverges again unless the code changed). Independent of
            ``retry_failed``; both: every failed point.
        verify_data: check that real data sets are present before starting (skip for a remote Ray cluster
            whose nodes hold their own copies).
        replicas: train up to this many pending points that differ only in ``seed`` (and that the replica engine
            supports: crossbar backend, MLP, BP, sgd / grapes / layer-mean, no dropout) together in one batched
            pass (:func:`imc_grapes.replicas.train_replicas`); 1 (default): every point alone.
            Replica results are statistically equivalent to, not bit-identical with, those of a plain run (the
            crossbar noise comes from another generator); points already finished are not re-run.
        log: where progress lines go.

    Raises:
        SpecError: an invalid spec or point (nothing has run).
        SweepLockedError: another process is running this sweep folder.
        DatasetError: a real data set is missing (nothing has run).
        SweepStorageError: a point could not write its files (a full disk, a quota, a read-only file system): the
            run stopped, that point and the points not run are left pending (its folder is redone).
        OSError: the sweep folder could not be written (the same, or its permissions); finished points are kept,
            each result being written atomically.
    """
    points = spec.points()
    executor = executor if executor is not None else LocalExecutor()
    store = SweepStore(resolve_out(spec, out_dir))
    with store.lock():
        store.find_legacy(points)       # results an earlier version wrote under another id: read in place
        found = {p.id: store.state_and_failure(p.id) for p in points}
        states = {pid: state for pid, (state, _) in found.items()}
        redo = {(PENDING, ""), (PARTIAL, "")} | ({(FAILED, CRASHED)} if retry_failed else set()) | (
            {(FAILED, DIVERGED)} if retry_diverged else set())
        todo = [p for p in points if found[p.id] in redo]
        for p in todo:      # a failed point found under its earlier id and redone: written in its own folder (the
            store.legacy.pop(p.id, None)    # earlier one is left as it is, a folder of no point)
        store.write_plan(spec, points)
        n_done = sum(s == DONE for s in states.values())
        n_failed = {kind: sum(f == (FAILED, kind) for f in found.values()) for kind in (DIVERGED, CRASHED)}
        n_partial = sum(states[p.id] == PARTIAL for p in todo)
        folders = {store.folder_name(pid) for pid in states}
        n_other = sum(name not in folders for name in store.folder_ids())
        failed = sum(n_failed.values())
        kinds = f" ({n_failed[DIVERGED]} diverged, {n_failed[CRASHED]} crashed)" if failed else ""
        log(f"sweep {spec.name!r}: {len(points)} points — {n_done} done, {failed} failed already{kinds}"
            f"{', ' + str(n_partial) + ' half-finished to redo' if n_partial else ''}; running {len(todo)} "
            f"with the {executor.name} executor; results in {store.root}")
        if n_other:
            log(f"  note: {other_points_note(n_other)}")
        if draws := spec.repeated_draws():
            log(f"  note: {repeated_draws_note(draws, spec.n_samples)}")
        for axis, groups in merged_values(points).items():
            log(f"  note: {merged_values_note(axis, groups)}")
        if todo and verify_data:
            check_data(todo)
        for p in todo:
            if states[p.id] == PARTIAL:     # redone from scratch anyway; until it starts again it is pending, not
                store.discard(p.id)         # "running now" (--status, while this run holds the lock)
        by_id = {p.id: p for p in points}
        finished = 0

        def on_start(task: Task) -> None:
            raise_if_stop_requested()   # a swallowed stop (imc_grapes.interrupts): no further point is started
            for sub in task.get("group", [task]):
                store.prepare(by_id[sub["id"]])

        def record(task: Task, outcome: Outcome) -> None:
            nonlocal finished
            point = by_id[task["id"]]
            if outcome.get("storage_error"):    # the disk, not the point: every later point would fail the same way
                host = f" on {outcome['host']}" if outcome.get("host") else ""
                raise SweepStorageError(
                    f"point {point.id} ({point.label()}) could not write its files{host}: {outcome.get('reason')}; "
                    f"the sweep stopped after {finished} of {len(todo)} point(s). Finished points are kept; this "
                    "point and those not run yet are left pending: free some space (or make the folder writable) "
                    "and run the same command again to resume")
            result = store.record(point, outcome, executor=executor.name)
            finished += 1
            what = result_line(result)
            secs = outcome.get("wall_time_s")
            took = f" ({secs:.1f} s)" if isinstance(secs, (int, float)) else ""
            group = outcome.get("_group") or []
            engine = f" [replicas x{len(group)}]" if group else ""
            log(f"[{finished}/{len(todo)}] {result['status']:<6} {point.label()}: {what}{took}{engine}")

        def on_result(task: Task, outcome: Outcome) -> None:
            if "group" not in task:
                record(task, outcome)
                return
            subs = task["group"]
            outcomes = {o["id"]: o for o in outcome.get("outcomes") or []}
            for sub in subs:
                # a dead worker / lost task: every point of the batch failed with the batch's reason, but a replica
                # that had diverged before (its results.json in the sweep folder says so) stays diverged
                out = outcomes.get(sub["id"])
                if out is None:
                    out = {**outcome, "id": sub["id"], "status": "failed", "failure": CRASHED, "reason":
                           outcome.get("reason") or "replica batch returned no outcome for this point",
                           "history": [], "files": {}}
                    diverged = diverged_replica(store.run_dir(sub["id"]))
                    if diverged is not None:
                        out.update(failure=DIVERGED, reason=diverged[0], history=diverged[1], traceback="")
                record(sub, {**out, "_group": subs})

        tasks: list[Task] = []
        for batch, grouped in replica_groups(todo, replicas):
            subs = [{"id": p.id, "config": p.config.to_dict(), "run_dir": str(store.run_dir(p.id))} for p in batch]
            if not grouped:
                tasks.append(subs[0])
            else:
                tasks.append({"id": "+".join(str(s["id"]) for s in subs), "config": subs[0]["config"], "group": subs})
        executor.run(tasks, on_start, on_result)
    return sweep_status(spec, store.root, points)
