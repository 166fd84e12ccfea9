"""Catastrophic forgetting on permuted MNIST (grapes.md §6): tasks are fixed pixel permutations of the same
images, trained one after the other (``cfg.epochs`` epochs each) by one network, which is evaluated on every
task after each one.

* :func:`task_permutations`: the tasks' permutations (task 0 is the identity, the plain data set).
* :func:`forgetting_metrics`: from the accuracy matrix ``R[i][j]`` = accuracy on task ``i`` after training
  task ``j`` (task × after-task, T × T):

  * average accuracy ``A = (1/T) Σ_i R[i][T-1]`` (after the last task);
  * forgetting (Chaudhry et al., 2018) ``f_i = max_{j ∈ [i, T-2]} R[i][j] − R[i][T-1]`` for ``i < T-1``, and
    ``F = mean_i f_i``;
  * backward transfer (Lopez-Paz & Ranzato, 2017) ``BWT = (1/(T-1)) Σ_{i<T-1} (R[i][T-1] − R[i][i])``.

* :func:`train_permuted`: the trainer (``imc_grapes.train.train``'s signature; ``cfg.extra["tasks"]``,
  ``cfg.extra["permutation_seed"]``). Its history has one row per task: ``epoch`` = tasks trained so far,
  ``test_acc`` = mean accuracy over the tasks trained so far (the last row: ``A``), ``acc/task<i>`` for every
  task; ``extra["forgetting"]`` holds the matrix and the metrics.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..backends import build_network
from ..config import TrainConfig
from ..cuda_graphs import graphed_steps
from ..data import Dataset, Split
from ..grapes.initializers import make_generator
from ..train import RunFiles, RunResult, check_evaluation, evaluate, prepare_run, train_batches, train_loader

__all__ = ["forgetting_metrics", "permute", "task_permutations", "train_permuted"]


def task_permutations(n_tasks: int, n_features: int, seed: int = 0) -> Tensor:
    """``[n_tasks, n_features]`` pixel permutations: row 0 the identity, the others drawn from a generator
    seeded with ``seed`` (the same tasks for every optimizer and every run seed)."""
    if n_tasks < 1 or n_features < 1:
        raise ValueError(f"task_permutations: n_tasks and n_features must be >= 1, got {n_tasks}, {n_features}")
    g = make_generator(seed)
    perms = [torch.arange(n_features)] + [torch.randperm(n_features, generator=g) for _ in range(n_tasks - 1)]
    return torch.stack(perms)


def permute(split: Split, perm: Tensor) -> Split:
    """The split with every sample's features reordered by ``perm: [C·H·W]`` (shape kept: ``[n, C, H, W]``)."""
    x = split.x.flatten(1)[:, perm.to(split.x.device)].reshape(split.x.shape)
    return Split(x, split.y)


def forgetting_metrics(matrix: Sequence[Sequence[float]] | Tensor) -> dict[str, Any]:
    """Average accuracy, forgetting and backward transfer of an accuracy matrix ``R: [T, T]``.

    ``R[i][j]`` is the accuracy on task ``i`` after training task ``j`` (entries with ``j < i`` — tasks not yet
    trained — are allowed and ignored). Returns ``{"avg_acc", "forgetting", "bwt", "per_task_forgetting"}``;
    with one task, ``forgetting`` and ``bwt`` are None.
    """
    r = torch.as_tensor(matrix, dtype=torch.float64)
    if r.dim() != 2 or r.shape[0] != r.shape[1] or r.shape[0] < 1:
        raise ValueError(f"forgetting_metrics: the accuracy matrix must be square T×T, got shape {tuple(r.shape)}")
    t = r.shape[0]
    last = r[:, -1]
    out: dict[str, Any] = {"avg_acc": float(last.mean()), "forgetting": None, "bwt": None,
                           "per_task_forgetting": []}
    if t > 1:
        j = torch.arange(t)
        seen = (j.unsqueeze(0) >= j.unsqueeze(1)) & (j.unsqueeze(0) < t - 1)  # [i, j]: i <= j <= T-2
        best = torch.where(seen, r, torch.full_like(r, -torch.inf)).amax(dim=1)[:-1]
        per_task = best - last[:-1]
        out["per_task_forgetting"] = per_task.tolist()
        out["forgetting"] = float(per_task.mean())
        out["bwt"] = float((last[:-1] - torch.diagonal(r)[:-1]).mean())
    return out


def train_permuted(cfg: TrainConfig, out_dir: str | Path | None = None, dataset: Dataset | None = None,
                   progress: bool | None = True, log: Callable[[str], None] = print) -> RunResult:
    """Train ``cfg``'s model (``build_network``: MLP/CNN on any backend, GRAPES per ``cfg.optimizer``) on
    ``cfg.extra["tasks"]`` (default 5) permuted versions of the data set in sequence, ``cfg.epochs`` epochs per
    task, evaluating every task after each one (on the test set, or on the validation holdout of the same
    permutation when ``cfg.val_holdout > 0``).

    The optimizer (and its momentum) carries over from task to task; batch order per task: ``BatchLoader``
    seeded with ``cfg.seed + 1000·task``. Raises :class:`~imc_grapes.train.DivergenceError` on a NaN/Inf training
    loss, or a NaN/Inf evaluation loss or accuracy on any task's test set after a task
    (:func:`~imc_grapes.train.check_evaluation`: that point gets no history row and the run's ``results.json``
    records status ``diverged``).
    """
    n_tasks = int(cfg.extra.get("tasks", 5))
    if n_tasks < 1:
        raise ValueError(f"train_permuted: extra['tasks'] must be >= 1, got {n_tasks}")
    device, data, train_split, test_split, eval_split = prepare_run(cfg, dataset)
    perms = task_permutations(n_tasks, train_split.x[0].numel(), int(cfg.extra.get("permutation_seed", 0)))
    tests = [permute(test_split, p) for p in perms]
    net = build_network(cfg, tuple(train_split.x.shape[1:]), data.n_classes, device)
    result = RunResult(cfg, run_dir=Path(out_dir) if out_dir is not None else None, eval_split=eval_split,
                       train_samples=len(train_split), eval_samples=len(test_split))
    files = RunFiles(result)
    matrix = [[float("nan")] * n_tasks for _ in range(n_tasks)]
    with files.finishing(net), graphed_steps(net, cfg, result.extra) as graphed:
        t_first = time.perf_counter()
        for task, perm in enumerate(perms):
            t0 = time.perf_counter()
            loader = train_loader(permute(train_split, perm), cfg, seed=cfg.seed + 1000 * task)
            last = len(loader)
            stats: dict[str, float] = {}
            for epoch in range(1, cfg.epochs + 1):
                net.model.train()
                train_batches(net, loader, cfg, f"{cfg.optimizer} task {task + 1}/{n_tasks} epoch {epoch}",
                              progress, lambda s, l, a: stats.update(train_loss=l, train_acc=a), {last},
                              graphed=graphed)
            evals = [evaluate(net.model, t) for t in tests]
            for i, (loss, acc) in enumerate(evals):  # as train(): the last update is checked by no training loss
                check_evaluation(loss, acc, f"task {task + 1}, epoch {cfg.epochs}, step {last} (on the test set of "
                                            f"task {i + 1})", cfg.lr)
            accs = [a for _, a in evals]
            for i, a in enumerate(accs):
                matrix[i][task] = a
            now = time.perf_counter()
            row: dict[str, Any] = {"epoch": task + 1, "step": last * cfg.epochs,
                                   "global_step": (task + 1) * last * cfg.epochs, **stats,
                                   "test_acc": sum(accs[:task + 1]) / (task + 1),
                                   **{f"acc/task{i}": a for i, a in enumerate(accs)},
                                   "time_s": now - t0, "elapsed_s": now - t_first}
            row.update(net.metrics())
            result.history.append(row)
            files.save()
            log(f"[{cfg.optimizer}] task {task + 1}/{n_tasks}: acc on tasks so far "
                + " ".join(f"{100 * a:.1f}" for a in accs[:task + 1]) + " %")
        result.extra["forgetting"] = {"matrix": matrix, **forgetting_metrics(matrix)}
        result.extra["costs"] = net.cost_summary()
    return result
