"""The training loop: one run = one model trained under one config, with its results written to a folder.

Files in the run folder (all written atomically, the CSV after every epoch, so a crash or a diverging run
keeps what was finished):

* ``metrics.csv`` — one row per evaluation point (``evals_per_epoch`` per epoch), with the columns
  :data:`METRICS_COLUMNS`: ``epoch`` (fractional: epochs trained so far), ``step`` (batches into the current epoch,
  restarting at each epoch), ``global_step`` (batches since the run began, counted across epochs), train loss
  (nats) / accuracy (fraction) since the previous point, test loss / accuracy, ``time_s`` (seconds since the
  current epoch began) and ``elapsed_s`` (seconds since the run's first epoch began, evaluations included); then
  the mean GRAPES factor of each hidden layer (when GRAPES is on) and the network's diagnostics;
* ``results.json`` — the full config, versions, per-epoch history, final metrics, the run's status and the
  absolute data folder (``data_root_resolved``).

The status is ``running`` while the run trains, then one of ``completed``, ``diverged``
(the loss, or an evaluation's loss or accuracy, became NaN/Inf: :func:`check_evaluation`; ``message`` says
where), ``failed`` (any other exception, e.g. out of memory or a bug: ``message`` is its type and text,
``traceback`` the traceback) or ``interrupted`` (Ctrl-C, a SIGTERM that the command line turns into one,
``SystemExit``). Only a process killed outright (SIGKILL, power loss) leaves
``running`` behind, so a ``running`` file whose process is gone is a run that died without a word. Resuming
(``compare``, ``experiment``) redoes a ``failed`` or ``interrupted`` run like a ``running`` one (``experiment``
keeps a ``failed`` one: :data:`imc_grapes.experiments.groups.FINISHED`).
"""
from __future__ import annotations

import functools
import math
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import ConfigError, TrainConfig
from .cuda_graphs import GraphedSteps, check_graph_device, graphed_steps, training_step
from .data import BatchLoader, Dataset, Split, load_dataset, recorded_data_root
from .backends import Network, build_network
from .inference_eval import network_accuracy_after_drift
from .interrupts import raise_if_stop_requested, stop_handled
# RUN_STATUSES: the statuses a run's results.json records (see the module docstring), defined in io, which tells a
# run's folder by them (io.enclosing_run_folder); kept importable from here
from .io import RUN_STATUSES, write_csv_atomic, write_json_atomic
from .versions import versions as current_versions


class DivergenceError(RuntimeError):
    """The training loss, or an evaluation's loss or accuracy (:func:`check_evaluation`), became NaN or infinite."""


def stopped_status(exc: BaseException) -> tuple[str, str]:
    """The ``(status, message)`` recorded for a run that ``exc`` stopped, other than by a divergence:
    ``("failed", "<type>: <text>")`` for an :class:`Exception` (out of memory, a bug, a full disk), and
    ``("interrupted", ...)`` for what stops a run from outside (``KeyboardInterrupt`` — Ctrl-C, or a SIGTERM that
    the command line raises as one — or ``SystemExit``)."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if isinstance(exc, Exception):
        return "failed", text
    return "interrupted", f"interrupted ({text})"


def best_accuracy(history: Sequence[dict[str, Any]]) -> float | None:
    """The highest ``test_acc`` of a run's ``history`` rows, NaN ones left out (a NaN is no accuracy, and
    ``max`` would return it or not depending on where it stands); None when no row has a number there."""
    accs = [h["test_acc"] for h in history
            if isinstance(h.get("test_acc"), (int, float)) and not math.isnan(h["test_acc"])]
    return max(accs, default=None)


@dataclass
class RunResult:
    """What a run produced: the config, per-epoch history (list of dict rows) and final metrics.

    ``train_samples`` / ``eval_samples``: the sizes of the splits the run trained and was evaluated on (None when
    not known, e.g. a run loaded from a ``results.json`` written before they were recorded): a ``train_subset`` or
    ``test_subset`` larger than the data set uses the whole split, and the config keeps the number as given.

    ``data_root_resolved``: the absolute folder the data set is read from (``config.data_root`` as given, or
    ``$IMC_GRAPES_DATA`` / the default cache, resolved against the current folder:
    :func:`~imc_grapes.data.recorded_data_root`), filled in when not given; None for the synthetic data set. A
    relative ``config.data_root`` is recorded as given too: it is part of the run's identity (resume, sweep ids).

    ``versions``: the code and software that produced the run (:func:`~imc_grapes.versions.versions`), recorded in
    its ``results.json`` and in every report that lists it. A fresh run takes them when it is created (at its
    training); a run loaded from its ``results.json`` (a resumed job reusing it) carries the ones recorded there,
    ``{}`` when that file recorded none, so a report never claims the code of the resuming process for a number
    trained by another.
    """

    config: TrainConfig
    history: list[dict[str, Any]] = field(default_factory=list)
    status: str = "running"
    message: str = ""
    run_dir: Path | None = None
    wall_time_s: float = 0.0
    eval_split: str = "test"
    extra: dict[str, Any] = field(default_factory=dict)
    train_samples: int | None = None
    eval_samples: int | None = None
    data_root_resolved: str | None = None
    versions: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.data_root_resolved is None:
            self.data_root_resolved = recorded_data_root(self.config.dataset, self.config.data_root)
        if self.versions is None:
            self.versions = current_versions()

    @property
    def final_test_acc(self) -> float | None:
        return self.history[-1]["test_acc"] if self.history else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "message": self.message,
            "final": self.history[-1] if self.history else None,
            "best_test_acc": best_accuracy(self.history),
            "wall_time_s": self.wall_time_s,
            "eval_split": self.eval_split,
            "train_samples": self.train_samples,
            "eval_samples": self.eval_samples,
            "data_root_resolved": self.data_root_resolved,
            **self.extra,
            "config": self.config.to_dict(),
            "versions": self.versions,
            "history": self.history,
        }


def tail_evals_error(value: object, name: str = "tail_evals", cfg: TrainConfig | None = None) -> str | None:
    """Why ``value`` is not a valid count of final evaluations to average (:func:`tail_accuracy`: an integer ≥ 1,
    and with ``cfg`` at most the ``epochs × evals_per_epoch`` evaluations a run of ``cfg`` makes: more would
    average all of them under a label that claims more), as a message naming ``name``; None when it is valid
    (each caller raises its own error type)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return f"{name} must be an integer ≥ 1 (1 = the final evaluation), got {value!r}"
    if cfg is not None and value > (evals := cfg.epochs * cfg.evals_per_epoch):
        return (f"{name} must be at most the evaluations of a run, epochs × evals_per_epoch = {cfg.epochs} × "
                f"{cfg.evals_per_epoch} = {evals}, got {value}")
    return None


def tail_accuracy(history: Sequence[dict[str, Any]], last: int = 1) -> float | None:
    """The mean ``test_acc`` (the test set, or a tuning run's validation split) over the last ``last`` evaluation
    rows of a run's ``history`` (all of them when it has fewer); None when it has none. A NaN accuracy among them
    makes the mean NaN: the run had no finite accuracy there, and a mean of the others would cover fewer. Rows
    without a numeric ``test_acc`` are skipped, so a history read from JSON, where non-finite numbers are strings,
    must go through :func:`~imc_grapes.io.restore_nonfinite` first."""
    accs = [h["test_acc"] for h in history[-last:] if isinstance(h.get("test_acc"), (int, float))]
    return math.fsum(accs) / len(accs) if accs else None


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, batch_size: int = 1000) -> tuple[float, float]:
    """Mean cross-entropy loss (nats) and accuracy (fraction) of ``model`` on ``split``.

    When any output (logit) is NaN or ±Inf the accuracy is NaN, as the loss then is: ``argmax`` over such a row is
    no prediction (it picks a NaN's index), and callers that keep only the accuracy (the inference evaluation, the
    forgetting matrix) would otherwise record a finite number for a broken model.

    Each batch starts at a safe point (:func:`~imc_grapes.interrupts.raise_if_stop_requested`: a stop swallowed
    during the evaluation of a large test set is honoured within a batch); the model is left in the mode it was in
    however the evaluation ends."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=split.x.device)
    correct = torch.zeros((), device=split.x.device)
    finite = torch.ones((), dtype=torch.bool, device=split.x.device)
    try:
        for x, y in BatchLoader(split, batch_size, shuffle=False):
            raise_if_stop_requested()   # a Python flag check, no device sync
            out = model(x)
            loss_sum += F.cross_entropy(out, y, reduction="sum")
            correct += (out.argmax(1) == y).sum()
            finite &= torch.isfinite(out).all()
    finally:
        model.train(was_training)
    n = len(split)
    correct = torch.where(finite, correct, torch.full_like(correct, math.nan))     # (one host read, as before)
    return float(loss_sum) / n, float(correct) / n


def train_loader(split: Split, cfg: TrainConfig, seed: int | None = None) -> BatchLoader:
    """The shuffled training batches of ``split`` as ``cfg`` asks for them (``batch_size``, ``drop_last``), in the
    order seeded by ``seed`` (default ``cfg.seed``): what every trainer iterates over.

    Raises :class:`ConfigError` when ``drop_last`` would leave no batch (``split`` smaller than one batch, e.g. a
    training set left small by ``val_holdout``: the message then begins with ``val_holdout`` and names the field
    ``TrainConfig.batch_size``, so that the command line names its options that change them,
    :func:`~imc_grapes.cli.name_the_option`), or when ``cfg.evals_per_epoch`` exceeds the batches per epoch (an
    evaluation point is the end of a batch: more points than batches would silently give fewer)."""
    if cfg.drop_last and len(split) < cfg.batch_size:
        if cfg.val_holdout > 0:     # split_for's: the whole training set less the holdout (train_subset ≥ a batch)
            raise ConfigError(f"val_holdout {cfg.val_holdout} leaves {len(split)} of the "
                              f"{len(split) + cfg.val_holdout} training samples to train on (the holdout is taken "
                              "from the whole training set, before train_subset), fewer than one batch "
                              f"(TrainConfig.batch_size {cfg.batch_size}), so drop_last leaves no batch: hold out "
                              "fewer samples or use a smaller batch, or set drop_last false (--no-drop-last)")
        raise ConfigError(f"drop_last leaves no batch: the training split has {len(split)} samples < batch_size "
                          f"{cfg.batch_size}; use a smaller batch_size or set drop_last false (--no-drop-last)")
    loader = BatchLoader(split, cfg.batch_size, shuffle=True, seed=cfg.seed if seed is None else seed,
                         drop_last=cfg.drop_last)
    if cfg.evals_per_epoch > len(loader):
        raise ConfigError(f"TrainConfig.evals_per_epoch must be ≤ the batches per epoch, {len(loader)} "
                          f"({len(split)} training samples, batch_size {cfg.batch_size}), got {cfg.evals_per_epoch}")
    return loader


def accuracy_name(eval_split: str) -> str:
    """How a run's log lines name its evaluation accuracy, by the split it is evaluated on (:func:`split_for`):
    ``val acc`` on the validation split (a learning-rate tuning run, ``val_holdout`` > 0), else ``test acc``."""
    return "val acc" if eval_split == "validation" else "test acc"


def split_for(cfg: TrainConfig, data: Dataset) -> tuple[Split, Split, str]:
    """(training split, evaluation split, its name) for ``cfg``: the test set, or with ``cfg.val_holdout`` the
    last N training samples (disjoint from the training samples used)."""
    if cfg.val_holdout <= 0:
        return data.train.subset(cfg.train_subset), data.test.subset(cfg.test_subset), "test"
    n = len(data.train)
    if cfg.val_holdout >= n:
        raise ConfigError(f"val_holdout must be smaller than the training set ({n} samples of {cfg.dataset}), "
                          f"got {cfg.val_holdout}")
    pool = Split(data.train.x[: n - cfg.val_holdout], data.train.y[: n - cfg.val_holdout])
    held = Split(data.train.x[n - cfg.val_holdout:], data.train.y[n - cfg.val_holdout:])
    return pool.subset(cfg.train_subset), held, "validation"


METRICS_COLUMNS: tuple[str, ...] = ("epoch", "step", "global_step", "train_loss", "train_acc", "test_loss",
                                     "test_acc", "time_s", "elapsed_s")
"""The leading columns of ``metrics.csv`` (every history row has them; GRAPES factors and ``net.metrics()``
follow; the module docstring says what each holds). A run without any evaluation point (e.g. diverged before its
first) still gets this header."""

#: the history columns that measure time: they differ between two runs of the same config (left out where runs are
#: compared for equality, or results are meant to be byte-identical)
TIMING_COLUMNS: tuple[str, ...] = ("time_s", "elapsed_s")


def write_metrics(path: str | Path, history: Sequence[dict[str, Any]]) -> Path:
    """Write a run's ``metrics.csv``: one row per history entry, or only the :data:`METRICS_COLUMNS` header when
    there is none (not an empty file)."""
    return write_csv_atomic(path, history, fieldnames=None if history else METRICS_COLUMNS)


def write_run_files(result: RunResult) -> None:
    """Write ``result``'s ``metrics.csv`` and ``results.json`` into its ``run_dir`` (nothing without one), each
    atomically. While the run is ``running``, ``results.json`` first: the first save, over the files of a finished
    run (trained again, or one of other options in the same folder), marks the folder unfinished before its
    ``metrics.csv`` is replaced, so a kill between the two writes never leaves a finished ``results.json`` (that a
    resume reuses) beside another run's rows. Once the run has ended (any other status), ``results.json`` last: it
    says so only when its ``metrics.csv`` is whole."""
    run_dir, running = result.run_dir, result.status == "running"
    if run_dir is None:
        return
    if running:
        write_json_atomic(run_dir / "results.json", result.to_dict())
    write_metrics(run_dir / "metrics.csv", result.history)
    if not running:
        write_json_atomic(run_dir / "results.json", result.to_dict())


class RunFiles:
    """Writes a run's ``metrics.csv`` and ``results.json`` (atomically) whenever :meth:`save` is called."""

    def __init__(self, result: RunResult) -> None:
        self.result = result
        self.t_start = time.perf_counter()
        if result.run_dir is not None:
            result.run_dir.mkdir(parents=True, exist_ok=True)
        self.save()

    @contextmanager
    def finishing(self, net: Network) -> Iterator[None]:
        """Around a run's training: on normal exit the status becomes ``completed`` and the files are saved; on a
        :class:`DivergenceError` the status becomes ``diverged``; on any other exception ``failed`` or
        ``interrupted`` (:func:`stopped_status`; a failure's traceback goes to ``traceback``); then the files are
        saved (atomically: a second interrupt leaves the previous ones whole) and the exception propagates. ``net``
        is closed either way."""
        try:
            yield
            self.result.status = "completed"
        except DivergenceError as exc:
            self.result.status, self.result.message = "diverged", str(exc)
            self.save()
            raise
        except BaseException as exc:
            self.result.status, self.result.message = stopped_status(exc)
            if isinstance(exc, KeyboardInterrupt):
                stop_handled()      # recorded: the cleanup that follows is not stopped again
            if self.result.status == "failed":
                self.result.extra["traceback"] = traceback.format_exc()
            try:
                self.save()
            except Exception:   # noqa: BLE001 - e.g. the disk is full: the exception that stopped the run matters
                pass
            raise
        finally:
            net.close()
        self.save()

    def save(self) -> None:
        self.result.wall_time_s = time.perf_counter() - self.t_start
        write_run_files(self.result)


def loss_check_every(device: torch.device) -> int:
    """Steps between two NaN/Inf checks of the training loss: every step on the CPU (a free host read), every 25th
    on a GPU (each check is a host synchronisation); the loss of every evaluation point's step is checked too."""
    return 1 if device.type == "cpu" else 25


def progress_bar_disabled(progress: bool | None) -> bool | None:
    """tqdm's ``disable`` for a ``progress`` setting: ``True`` draws the bars (on stderr), ``False`` draws none, and
    ``None`` draws them only when stderr is a terminal (tqdm's ``disable=None``), so that output sent to a log file
    gets no bar redrawn with ``\\r`` over and over."""
    return None if progress is None else not progress


def train_batches(net: Network, loader: BatchLoader, cfg: TrainConfig, desc: str, progress: bool | None,
                  on_point: Callable[[int, float, float], None], points: set[int], where: str | None = None,
                  graphed: GraphedSteps | None = None) -> None:
    """One pass over ``loader``: forward, cross-entropy, backward, ``net.step()`` per batch.

    After each batch whose 1-based index is in ``points``, ``on_point(step, train_loss, train_acc)`` gets the
    mean loss and accuracy since the previous point (one host sync per point; the loss is checked for NaN/Inf
    every step on CPU, every 25 steps on a GPU, and the mean at every point). ``where`` names the place in the
    divergence message (default ``desc``). With ``cfg.cuda_graph`` the steps go through ``graphed`` (the loss is
    then checked after its step's update, not before).

    Each batch, and each point before its evaluation, is a safe point of :mod:`imc_grapes.interrupts`: a stop
    (SIGTERM, Ctrl-C) whose exception Python swallowed is raised there.

    Raises:
        DivergenceError: the loss became NaN or infinite.
        KeyboardInterrupt: :func:`~imc_grapes.interrupts.raise_if_stop_requested` (a SIGTERM's
            :class:`~imc_grapes.interrupts.Terminated`).
    """
    from tqdm.auto import tqdm

    device = net.device
    check_every = loss_check_every(device)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    seen = 0
    bar = tqdm(loader, desc=desc, disable=progress_bar_disabled(progress), leave=False, dynamic_ncols=True,
               mininterval=0.5)

    def check(step: int, loss: Tensor) -> None:
        value = float(loss)
        if not math.isfinite(value):
            raise DivergenceError(f"loss became {value} at {where or desc}, step {step} (lr={cfg.lr}); lower the lr")
        if step % 50 == 0:
            bar.set_postfix(loss=f"{value:.3f}")

    for step, (x, y) in enumerate(bar, start=1):
        raise_if_stop_requested()   # a stop whose exception was swallowed (in a __del__): honoured within a batch
        due = step % check_every == 0 or step in points
        if graphed is not None:
            out, loss = graphed(x, y)
            if due:
                check(step, loss)
        else:
            try:       # checked before the update: a NaN error would reach the devices
                out, loss = training_step(net, x, y, functools.partial(check, step) if due else None)
            except FloatingPointError as exc:             # NaN errors in a hidden layer (crossbar engine, CPU)
                raise DivergenceError(f"{exc} at {where or desc}, step {step} (lr={cfg.lr})") from exc
        loss_sum += loss * y.shape[0]
        correct += (out.argmax(1) == y).sum()
        seen += y.shape[0]
        if step in points:
            raise_if_stop_requested()   # before the evaluation
            train_loss = float(loss_sum) / seen
            if not math.isfinite(train_loss):   # a NaN between two checks (GPU)
                raise DivergenceError(f"loss became {train_loss} during {where or desc} (lr={cfg.lr}); lower the lr")
            on_point(step, train_loss, float(correct) / seen)
            loss_sum.zero_(), correct.zero_()
            seen = 0
    bar.close()


def eval_points(n_batches: int, per_epoch: int) -> set[int]:
    """The 1-based batch counts after which an epoch is evaluated (the last one always at the epoch end): ``per_epoch``
    distinct counts when ``per_epoch ≤ n_batches`` (what :func:`train_loader` ensures).

    The k-th point (k = 1 … ``per_epoch``) comes after batch ``max(1, round(k · n_batches / per_epoch))``, with
    Python's ``round``, which sends a half to the even integer: 5 batches and 2 points give batches 2 and 5 (2.5 →
    2), 93 batches and 4 points (the quick start's ``compare``: 6,000 samples in batches of 64) give 23, 46, 70 and
    93 (46.5 → 46), 7 batches and 2 points give 4 and 7 (3.5 → 4). The points are thus as evenly spaced as whole
    batches allow, a half-way one falling either side; the rule is kept as it is because the recorded histories
    (and the quick start's epochs to 90 %) depend on it. :func:`imc_grapes.replicas.train_replicas` uses it too."""
    return {max(1, round(n_batches * k / per_epoch)) for k in range(1, per_epoch + 1)}


def prepare_run(cfg: TrainConfig, dataset: Dataset | None) -> tuple[torch.device, Dataset, Split, Split, str]:
    """Seed torch with ``cfg.seed``, load the data set (unless given) and split it (:func:`split_for`): returns
    ``(device, data, train split, evaluation split, its name)`` with both splits on ``cfg``'s device."""
    device = cfg.resolved_device()
    if cfg.cuda_graph:
        check_graph_device(device)      # before any run file is written (``auto`` may have resolved to the CPU)
    torch.manual_seed(cfg.seed)
    data = dataset if dataset is not None else load_dataset(cfg.dataset, cfg.data_root, device, cfg.seed)
    train_split, test_split, eval_split = split_for(cfg, data)
    return device, data, train_split.to(device), test_split.to(device), eval_split


def check_evaluation(loss: float, acc: float, where: str, lr: float) -> None:
    """Raise :class:`DivergenceError` when the evaluation of the point ``where`` (``"epoch E, step S"``) is not
    finite: its loss ``loss`` (mean cross-entropy, nats) or its accuracy ``acc`` (fraction) is NaN or infinite.

    Policy: a non-finite evaluation is a divergence, reported as a NaN/Inf training loss is (the run stops with
    status ``diverged``, the point gets no history row, the command line exits with status 3). :func:`evaluate`
    makes the accuracy NaN when any evaluated output (logit) is NaN or ±Inf, so this also stops a run whose loss
    stayed finite over non-finite outputs (e.g. logits of -inf on classes no sample has: their softmax is 0). The
    loss is checked first (its message is kept). The training losses are checked before each update, so the update
    of an evaluation step (the last step of a run above all) would otherwise go unnoticed and the run be recorded
    as completed with such weights. The training step's own outputs are not checked (that would be a host read on
    its hot path): only its loss is (:func:`train_batches`)."""
    if not math.isfinite(loss):
        raise DivergenceError(f"evaluation loss became {loss} after {where} (lr={lr}): the weights after that "
                              f"step's update give non-finite outputs; lower the lr")
    if not math.isfinite(acc):
        raise DivergenceError(f"evaluation accuracy became {acc} after {where} (lr={lr}): the weights after that "
                              f"step's update give non-finite outputs (logits), the loss {loss} being finite; "
                              f"lower the lr")


def train_epochs(net: Network, loader: BatchLoader, test_split: Split, cfg: TrainConfig, result: RunResult,
                 files: RunFiles, progress: bool | None, log: Callable[[str], None]) -> None:
    """``cfg.epochs`` passes over ``loader`` (:func:`train_batches`), evaluating on ``test_split``
    ``cfg.evals_per_epoch`` times per epoch: each point appends a history row (:data:`METRICS_COLUMNS`: epoch,
    step in the epoch and over the run, train/test loss and accuracy, time in the epoch and over the run; mean
    GRAPES factor per layer, ``net.metrics()``) and saves the files.

    Raises:
        DivergenceError: the training loss, or the evaluation loss or accuracy of a point
            (:func:`check_evaluation`; that point gets no history row), became NaN or infinite.
    """
    n_batches = len(loader)
    points = eval_points(n_batches, cfg.evals_per_epoch)
    with graphed_steps(net, cfg, result.extra) as graphed:
        t_first = time.perf_counter()
        for epoch in range(1, cfg.epochs + 1):
            net.model.train()
            t0 = time.perf_counter()

            def on_point(step: int, train_loss: float, train_acc: float) -> None:
                test_loss, test_acc = evaluate(net.model, test_split)
                check_evaluation(test_loss, test_acc, f"epoch {epoch}, step {step}", cfg.lr)
                now = time.perf_counter()
                row: dict[str, Any] = {"epoch": round(epoch - 1 + step / n_batches, 4), "step": step,
                                       "global_step": (epoch - 1) * n_batches + step,
                                       "train_loss": train_loss, "train_acc": train_acc,
                                       "test_loss": test_loss, "test_acc": test_acc,
                                       "time_s": now - t0, "elapsed_s": now - t_first}
                if net.grapes is not None:
                    for name, m in net.grapes.modulations.items():
                        row[f"M_mean/{name}"] = float(m.float().mean())
                row.update(net.metrics())
                result.history.append(row)
                files.save()

            train_batches(net, loader, cfg, f"{cfg.optimizer} epoch {epoch}/{cfg.epochs}", progress, on_point,
                          points, where=f"epoch {epoch}", graphed=graphed)
            log(f"[{cfg.optimizer}] epoch {epoch}/{cfg.epochs}: train loss {result.history[-1]['train_loss']:.4f}, "
                f"{accuracy_name(result.eval_split)} {100 * result.history[-1]['test_acc']:.2f}%")


NetworkBuilder = Callable[[TrainConfig, tuple[int, ...], int, torch.device], Network]
"""Builds the network a run trains: ``(cfg, input_shape, n_classes, device) -> Network``; ``input_shape`` is one
sample's shape, e.g. ``(1, 28, 28)``."""


def train(cfg: TrainConfig, out_dir: str | Path | None = None, dataset: Dataset | None = None,
          progress: bool | None = True, log: Callable[[str], None] = print,
          build: NetworkBuilder | None = None) -> RunResult:
    """Train one model under ``cfg``; write ``metrics.csv`` and ``results.json`` into ``out_dir`` if given.

    Args:
        cfg: the run's configuration.
        out_dir: run folder (created); None writes nothing.
        dataset: an already loaded data set (saves reloading when several runs share it); it is moved to
            the config's device.
        progress: show a progress bar per epoch (tqdm, to stderr); None: only when stderr is a terminal
            (:func:`progress_bar_disabled`).
        log: where one-line epoch summaries go.
        build: the network to train; None: :func:`~imc_grapes.backends.build_network` (``cfg.model`` on
            ``cfg.backend``); the experiments' recurrent and spiking models pass their own.

    Raises:
        DivergenceError: the training loss, or the evaluation loss or accuracy at an evaluation point
            (:func:`check_evaluation`), became NaN/Inf; the files written so far are kept and ``results.json``
            records status ``diverged``.

    Any other exception once the run folder is written (out of memory, Ctrl-C, ...) propagates too, with the files
    kept and status ``failed`` or ``interrupted`` (:meth:`RunFiles.finishing`).
    """
    device, data, train_split, test_split, eval_split = prepare_run(cfg, dataset)

    net = (build or build_network)(cfg, tuple(train_split.x.shape[1:]), data.n_classes, device)
    loader = train_loader(train_split, cfg)

    result = RunResult(cfg, run_dir=Path(out_dir) if out_dir is not None else None, eval_split=eval_split,
                       train_samples=len(train_split), eval_samples=len(test_split))
    files = RunFiles(result)
    with files.finishing(net):
        train_epochs(net, loader, test_split, cfg, result, files, progress, log)
        result.extra["costs"] = net.cost_summary(steps_per_epoch=len(loader))
        if cfg.inference_times and cfg.backend != "digital":
            log(f"[{cfg.optimizer}] inference after programming noise and drift at {list(cfg.inference_times)} s")
            result.extra["inference"] = network_accuracy_after_drift(
                net, lambda: evaluate(net.model, test_split)[1], cfg.inference_times, seed=cfg.seed)
    return result
