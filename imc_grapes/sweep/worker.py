"""One sweep point, run: the function every executor calls (in this process, a worker process or a Ray task).

A task is a plain dict so that it pickles anywhere::

    {"id": "3f2a...", "config": TrainConfig.to_dict(), "run_dir": "<folder>" | None, "threads": 1 | None}

With ``run_dir`` the run writes its ``metrics.csv`` / ``results.json`` there as it goes (a worker that sees the
sweep folder); with None it trains in a temporary folder and ships those files back in the outcome (a Ray
worker on another machine). The outcome is a plain dict too::

    {"id", "status": "done" | "failed", "reason", "history": [rows], "files": {name: text},
     "wall_time_s", "host", "pid", "traceback"}

A diverging run (NaN/Inf loss) or any exception becomes ``status = "failed"`` with the reason; nothing raises
except ``KeyboardInterrupt`` / ``SystemExit``.
"""
from __future__ import annotations

import os
import socket
import tempfile
import time
import traceback
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from ..config import TrainConfig
from ..data import Dataset, load_dataset
from ..io import read_json
from ..train import DivergenceError, train

#: files of a run folder shipped back when the worker cannot write into the sweep folder
RUN_FILES: tuple[str, ...] = ("metrics.csv", "results.json")
_CACHE_SIZE = 2
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


def _history(run_dir: Path) -> list[dict[str, Any]]:
    try:
        return list(read_json(run_dir / "results.json").get("history", []))
    except (OSError, ValueError):
        return []


def _run(cfg: TrainConfig, run_dir: Path) -> tuple[str, str, list[dict[str, Any]], str]:
    try:
        result = train(cfg, run_dir, dataset=_dataset(cfg), progress=False, log=lambda _msg: None)
        return "done", "", result.history, ""
    except DivergenceError as exc:
        return "failed", f"diverged: {exc}", _history(run_dir), ""
    except Exception as exc:  # noqa: BLE001 - a point that raises is recorded, the sweep goes on
        return "failed", f"{type(exc).__name__}: {exc}", _history(run_dir), traceback.format_exc()


def execute_point(task: dict[str, Any]) -> dict[str, Any]:
    """Train one point; never raises for a failing run (see the module docstring for task/outcome)."""
    t0 = time.perf_counter()
    threads = task.get("threads")
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    files: dict[str, str] = {}
    try:
        cfg = TrainConfig.from_dict(task["config"])
        if task.get("run_dir"):
            status, reason, history, tb = _run(cfg, Path(task["run_dir"]))
        else:
            with tempfile.TemporaryDirectory(prefix="imc-grapes-point-") as tmp:
                status, reason, history, tb = _run(cfg, Path(tmp))
                files = {name: (Path(tmp) / name).read_text() for name in RUN_FILES if (Path(tmp) / name).exists()}
    except Exception as exc:  # noqa: BLE001 - e.g. a config this worker's version rejects
        status, reason, history, tb = "failed", f"{type(exc).__name__}: {exc}", [], traceback.format_exc()
    finally:
        if threads:
            torch.set_num_threads(previous)
    return {"id": task["id"], "status": status, "reason": reason, "history": history, "files": files,
            "wall_time_s": time.perf_counter() - t0, "host": socket.gethostname(), "pid": os.getpid(),
            "traceback": tb}
