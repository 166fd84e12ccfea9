"""One sweep point, run: the function every executor calls (in this process, a worker process or a Ray task).

A task is a plain dict so that it pickles anywhere::

    {"id": "3f2a...", "config": TrainConfig.to_dict(), "run_dir": "<folder>" | None, "threads": 1 | None}

With ``run_dir`` the run writes its ``metrics.csv`` / ``results.json`` there as it goes (a worker that sees the
sweep folder); with None it trains in a temporary folder and ships those files back in the outcome (a Ray
worker on another machine). The outcome is a plain dict too::

    {"id", "status": "done" | "failed", "failure": "" | "diverged" | "crashed", "reason", "history": [rows],
     "files": {name: text}, "wall_time_s", "host", "pid", "traceback", "storage_error": bool}

A diverging run (NaN/Inf loss or evaluated output: the training loss, or an evaluation's loss or accuracy,
:func:`~imc_grapes.train.check_evaluation`) or any exception becomes ``status = "failed"`` with the reason, and
``failure`` says which: ``diverged`` (reason ``diverged: ...``; deterministic, a rerun diverges again) or
``crashed`` (reason ``ExceptionType: message``; often transient); nothing raises except ``KeyboardInterrupt`` /
``SystemExit``. A failure of the storage rather than of the point (an ``OSError`` with an errno in
:data:`STORAGE_ERRNOS`: a full disk, a quota, a read-only file system) is marked ``"storage_error": True`` in the
outcome: the runner then stops the sweep and leaves the point to be redone, instead of recording it (and every point
after it) as failed.

A *replica group* (``--replicas R``) is one task carrying several points that differ only in their seed, trained
together by :func:`imc_grapes.replicas.train_replicas`::

    {"id": "<group id>", "group": [point tasks as above], "config": <the first point's config>, "threads": ...}

Its outcome carries one outcome per point (each as above, plus ``"engine": "replicas"``)::

    {"id": "<group id>", "outcomes": [...], "wall_time_s", "host", "pid"}

A batch that raises fails its points as ``crashed`` with the batch's reason, except a replica that had diverged
before the exception (:func:`diverged_replica`): it stays ``diverged`` with its own reason and history.

:func:`execute_task` runs either kind; executors call it and stay unaware of groups.
"""
from __future__ import annotations

import errno
import os
import socket
import tempfile
import time
import traceback
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ..config import TrainConfig
from ..data import Dataset, load_dataset
from ..io import read_json
from ..train import DivergenceError, train
from .store import CRASHED, DIVERGED, DIVERGED_PREFIX

#: files of a run folder shipped back when the worker cannot write into the sweep folder
RUN_FILES: tuple[str, ...] = ("metrics.csv", "results.json")
_CACHE_SIZE = 2
#: errnos of a write that failed for want of storage, not because of the point: no space left, a quota exceeded,
#: a read-only file system (:func:`storage_error`)
STORAGE_ERRNOS: frozenset[int] = frozenset(
    e for e in (errno.ENOSPC, getattr(errno, "EDQUOT", None), errno.EROFS) if e is not None)
_data_cache: OrderedDict[tuple[Any, ...], Dataset] = OrderedDict()


def _dataset(cfg: TrainConfig) -> Dataset:
    """The config's data set, loaded once per worker (a small LRU cache keyed like ``train`` loads it)."""
    device = cfg.resolved_device()
    key = (cfg.dataset, cfg.data_root, str(device), cfg.seed if cfg.dataset == "synthetic" else None)
    if key in _data_cache:
        _data_cache.move_to_end(key)
        return _data_cache[key]
    data = load_dataset(cfg.dataset, cfg.data_root, device, cfg.seed)
    _data_cache[key] = data
    while len(_data_cache) > _CACHE_SIZE:
        _data_cache.popitem(last=False)
    return data


def storage_error(exc: BaseException) -> bool:
    """True when ``exc`` (or an exception it was raised from or while handling) is an ``OSError`` with an errno in
    :data:`STORAGE_ERRNOS`: the storage failed, not the point."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError) and e.errno in STORAGE_ERRNOS:
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


def _history(run_dir: Path) -> list[dict[str, Any]]:
    try:
        return list(read_json(run_dir / "results.json").get("history", []))
    except (OSError, ValueError):
        return []


def diverged_replica(run_dir: Path) -> tuple[str, list[dict[str, Any]]] | None:
    """``(reason, history)`` of a replica that had diverged before its batch stopped: ``run_dir/results.json`` as
    :func:`~imc_grapes.replicas.train_replicas` writes it when a replica diverges (a NaN/Inf loss or evaluated
    output; status ``diverged``, kept when the batch later raises), the reason ``diverged: <its message>`` as for a
    batch that ends normally; None when the file is missing, unreadable or records another status (the replica was
    still training: the batch's failure is its own)."""
    try:
        data = read_json(run_dir / "results.json")
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("status") != "diverged":
        return None
    history = data.get("history")
    rows = [h for h in history if isinstance(h, dict)] if isinstance(history, list) else []
    return f"{DIVERGED_PREFIX} {data.get('message') or ''}".rstrip(), rows


def _run(cfg: TrainConfig, run_dir: Path) -> tuple[str, str, str, list[dict[str, Any]], str, bool]:
    """Train ``cfg`` into ``run_dir``: ``(status, failure, reason, history, traceback, storage_error)``."""
    try:
        result = train(cfg, run_dir, dataset=_dataset(cfg), progress=False, log=lambda _msg: None)
        return "done", "", "", result.history, "", False
    except DivergenceError as exc:
        return "failed", DIVERGED, f"{DIVERGED_PREFIX} {exc}", _history(run_dir), "", False
    except Exception as exc:  # noqa: BLE001 - a point that raises is recorded, the sweep goes on
        return ("failed", CRASHED, f"{type(exc).__name__}: {exc}", _history(run_dir), traceback.format_exc(),
                storage_error(exc))


def execute_task(task: dict[str, Any]) -> dict[str, Any]:
    """Run a point task or a replica-group task (see the module docstring); never raises for a failing run."""
    return execute_group(task) if "group" in task else execute_point(task)


def _group_outcomes(subs: list[dict[str, Any]], dirs: list[Path]) -> list[dict[str, Any]]:
    from ..replicas import train_replicas

    try:
        cfgs = [TrainConfig.from_dict(s["config"]) for s in subs]
        data = _dataset(cfgs[0]) if cfgs[0].dataset != "synthetic" else None   # synthetic data depend on the seed
        results = train_replicas(cfgs, dirs, dataset=data, progress=False, log=lambda _msg: None)
    except Exception as exc:  # noqa: BLE001 - the whole group fails, each point with the reason
        # ... except a replica that had diverged before the exception: a rerun diverges again (not a crash, which
        # --retry-failed would redo); its own result, written when it diverged, is kept
        reason, tb, storage = f"{type(exc).__name__}: {exc}", traceback.format_exc(), storage_error(exc)
        outcomes = []
        for s, d in zip(subs, dirs):
            diverged = diverged_replica(d)
            if diverged is not None:
                outcomes.append({"id": s["id"], "status": "failed", "failure": DIVERGED, "reason": diverged[0],
                                 "history": diverged[1], "traceback": "", "storage_error": False})
            else:
                outcomes.append({"id": s["id"], "status": "failed", "failure": CRASHED, "reason": reason,
                                 "history": _history(d), "traceback": tb, "storage_error": storage})
        return outcomes
    # train_replicas returns only completed or diverged replicas (any other stop raises)
    return [{"id": s["id"], "status": "done" if r.status == "completed" else "failed",
             "failure": "" if r.status == "completed" else DIVERGED,
             "reason": "" if r.status == "completed" else f"{DIVERGED_PREFIX} {r.message}", "history": r.history,
             "traceback": "", "storage_error": False} for s, r in zip(subs, results)]


@contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` torch intra-op threads (unchanged when None/0), restoring them after."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        if threads:
            torch.set_num_threads(previous)


def execute_group(task: dict[str, Any]) -> dict[str, Any]:
    """Train a replica group (points equal but for the seed) in one batched pass; one outcome per point."""
    t0 = time.perf_counter()
    subs = list(task["group"])
    ship = not all(s.get("run_dir") for s in subs)
    with _torch_threads(task.get("threads")):
        if not ship:
            outcomes = _group_outcomes(subs, [Path(s["run_dir"]) for s in subs])
        else:
            with tempfile.TemporaryDirectory(prefix="imc-grapes-group-") as tmp:
                dirs = [Path(tmp) / s["id"] for s in subs]
                outcomes = _group_outcomes(subs, dirs)
                for out, d in zip(outcomes, dirs):
                    out["files"] = {name: (d / name).read_text() for name in RUN_FILES if (d / name).exists()}
    wall = time.perf_counter() - t0
    host, pid = socket.gethostname(), os.getpid()
    for out in outcomes:
        out.setdefault("files", {})
        out.update({"wall_time_s": wall, "host": host, "pid": pid, "engine": "replicas"})
    return {"id": task["id"], "outcomes": outcomes, "wall_time_s": wall, "host": host, "pid": pid}


def execute_point(task: dict[str, Any]) -> dict[str, Any]:
    """Train one point; never raises for a failing run (see the module docstring for task/outcome)."""
    t0 = time.perf_counter()
    files: dict[str, str] = {}
    with _torch_threads(task.get("threads")):
        try:
            cfg = TrainConfig.from_dict(task["config"])
            if task.get("run_dir"):
                status, failure, reason, history, tb, storage = _run(cfg, Path(task["run_dir"]))
            else:
                with tempfile.TemporaryDirectory(prefix="imc-grapes-point-") as tmp:
                    status, failure, reason, history, tb, storage = _run(cfg, Path(tmp))
                    files = {name: (Path(tmp) / name).read_text() for name in RUN_FILES
                             if (Path(tmp) / name).exists()}
        except Exception as exc:  # noqa: BLE001 - e.g. a config this worker's version rejects, a full temp folder
            status, failure, reason = "failed", CRASHED, f"{type(exc).__name__}: {exc}"
            history, tb = [], traceback.format_exc()
            storage = storage_error(exc)
    return {"id": task["id"], "status": status, "failure": failure, "reason": reason, "history": history,
            "files": files, "wall_time_s": time.perf_counter() - t0, "host": socket.gethostname(), "pid": os.getpid(),
            "traceback": tb, "storage_error": storage}
