"""Train R seeds of one analog MLP in one batched pass (the crossbar engine's replica dimension).

:func:`train_replicas` takes configs that differ only in ``seed`` and trains them together: every analog layer is a
:class:`crossbar.ReplicaLinear` holding all replicas (``x: [E, B, in] -> [E, B, out]``), so one forward, one
backward and one pulsed update per layer serve all ``E`` runs. Each replica has

* the initial weights :func:`~imc_grapes.backends.build_network` gives for its seed (same model draw, programmed
  into its own devices: clipped into bounds drawn from its own stream, so a weight beyond its device's bound is
  clipped to another value than in a plain run), its own device-to-device spread and noise streams (seeded by
  :func:`~imc_grapes.backends.network.layer_seed`, one counter stream per replica: see :mod:`devices.rng`);
* its own batch order (the permutations :class:`~imc_grapes.data.BatchLoader` draws for its seed), and its own
  data when the data set depends on the seed (``synthetic``);
* the loss ``Σ_e mean_b CE(e)``, so its gradients stay its own; GRAPES (propagated, or the layer-mean control)
  from its own importance ``Σ_j |w_ij|`` (exact, or read from its array: ``analog.importance = "array"``),
  refreshed every ``analog.importance_every`` batches.

Results: one folder per replica with ``metrics.csv`` and ``results.json`` in :func:`~imc_grapes.train.train`'s
format (the same history keys — the saturation probe ``sat/<layer>`` on every ``analog.sat_probe_every``-th step and
the array-vs-exact importance diagnostics ``M_corr`` / ``M_err`` on every
:data:`~imc_grapes.backends.importance.COMPARE_EVERY`-th read, as a plain run takes them — except the hardware cost
diagnostics, which the replica engine does not record; ``"engine": "replicas"`` and ``"replicas": E`` in
``results.json``). Timings are the whole batch's (the replicas run as one computation; there is no per-replica
time): a row's ``time_s`` is the batch's time since the epoch began, its ``elapsed_s`` since training began, and
``wall_time_s`` the batch's time from the start to the end of training, for a diverged replica too (not the time at
which it diverged).

Divergence: every replica's training loss is checked at every step, before the update and on the device (a mask,
no host synchronisation); from the first step where a replica's loss is NaN/Inf on, its updates are masked off, so
its devices keep the states they had before that step (bit for bit) and no NaN reaches them. At the loss checks
(:func:`~imc_grapes.train.loss_check_every`: every step on the CPU; every 25th and every evaluation step on a GPU)
it is recorded as ``diverged``, with the step and loss where that happened, in
:func:`~imc_grapes.train.train`'s message (its rows so far are kept); the others go on exactly as without it,
and training stops once every replica has diverged. At each evaluation a replica whose evaluation loss or
accuracy is NaN/Inf is recorded as ``diverged`` too (:func:`~imc_grapes.train.check_evaluation`, as a plain run).

Same seeds, same numbers: a replica gives bit-identical results whether it is trained alone (``E = 1``) or with
others. Against :func:`~imc_grapes.train.train` with the same seed the results are statistically equivalent but not
identical (the crossbar noise comes from a different generator).
"""
from __future__ import annotations

import math
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor

import crossbar

from .backends.hardware import crossbar_config_from
from .backends.importance import COMPARE_EVERY, pearson
from .backends.network import layer_seed
from .capacity import check_model_fits
from .config import TrainConfig
from .data import Dataset, DatasetCache
from .grapes import BP_CLIP, layer_mean, modulation
from .interrupts import raise_if_stop_requested, stop_handled
from .models import build_model
from .train import (DivergenceError, RunResult, accuracy_name, check_evaluation, eval_points, loss_check_every,
                    progress_bar_disabled, split_for, stopped_status, train_loader, write_run_files)

__all__ = ["REPLICA_OPTIMIZERS", "check_replica_configs", "replica_key", "ReplicaMLP", "train_replicas"]

#: optimizers the replica engine implements (GRAPES propagated, its layer-mean control, plain SGD)
REPLICA_OPTIMIZERS: tuple[str, ...] = ("sgd", "grapes", "layer-mean")


def replica_key(cfg: TrainConfig) -> str | None:
    """Why ``cfg`` cannot run on the replica engine (a sentence), or None when it can."""
    if cfg.backend != "crossbar":
        return f"backend {cfg.backend!r} (replicas need backend 'crossbar')"
    if cfg.model != "mlp":
        return f"model {cfg.model!r} (replicas need model 'mlp')"
    if cfg.rule != "bp":
        return f"rule {cfg.rule!r} (replicas need rule 'bp')"
    if cfg.optimizer not in REPLICA_OPTIMIZERS:
        return f"optimizer {cfg.optimizer!r} (replicas support {', '.join(REPLICA_OPTIMIZERS)})"
    if cfg.dropout > 0:
        return f"dropout {cfg.dropout} (replicas need dropout 0)"
    if cfg.inference_times:
        return "inference_times (replicas do not run the drift evaluation)"
    if cfg.cuda_graph:
        return "cuda_graph (the replica engine runs its steps eagerly)"
    return None


def check_replica_configs(cfgs: Sequence[TrainConfig]) -> None:
    """Raise ``ValueError`` unless ``cfgs`` (at least one) can train together: eligible (:func:`replica_key`) and
    equal except for ``seed`` (the message names the differing fields)."""
    if not cfgs:
        raise ValueError("train_replicas: need at least one config, got none")
    reason = replica_key(cfgs[0])
    if reason is not None:
        raise ValueError(f"train_replicas: not supported by the replica engine: {reason}; run it with train()")
    base = {k: v for k, v in cfgs[0].to_dict().items() if k != "seed"}
    differing: set[str] = set()
    for cfg in cfgs[1:]:
        d = cfg.to_dict()
        differing |= {k for k, v in base.items() if d[k] != v}
    if differing:
        raise ValueError(f"train_replicas: the configs must differ only in 'seed', but they also differ in "
                         f"{sorted(differing)}")


class ReplicaMLP(torch.nn.Module):
    """The bias-free MLP of :class:`~imc_grapes.models.MLP` for ``E`` replicas on :class:`crossbar.ReplicaLinear`.

    Args:
        cfgs: the replicas' configs (checked by :func:`check_replica_configs`).
        input_shape: one sample's shape. n_classes: output width. device, dtype: where the states live.

    Shapes: ``x: [E, B, *input_shape] -> logits [E, B, n_classes]``. GRAPES factors ``M: [E, out]`` per hidden
    layer are set by :meth:`refresh_grapes` and applied to the gradient at each hidden layer's pre-activation.
    """

    def __init__(self, cfgs: Sequence[TrainConfig], input_shape: tuple[int, ...], n_classes: int,
                 device: torch.device, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        cfg = cfgs[0]
        self.cfg = cfg
        self.n_replicas = len(cfgs)
        check_model_fits(cfg, input_shape, n_classes, device, copies=len(cfgs))
        sizes = [math.prod(input_shape), *cfg.hidden, n_classes]
        xcfg = crossbar_config_from(cfg.analog)
        self.layers = torch.nn.ModuleList([
            crossbar.ReplicaLinear([layer_seed(c.seed, k) for c in cfgs], n_in, n_out, xcfg, device=device,
                                   dtype=dtype)
            for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:]))])
        # initial weights: the digital model of each seed, exactly as build_network draws it
        per_replica = []
        for c in cfgs:
            model = build_model(c.model, input_shape=tuple(input_shape), n_classes=n_classes, hidden=list(c.hidden),
                                activation=c.activation, dropout=c.dropout, rule=c.rule, seed=c.seed)
            layers = cast(torch.nn.ModuleList, model.layers)
            per_replica.append([cast(Tensor, layer.weight).detach() for layer in layers])
        for k, layer in enumerate(self.replica_layers):
            layer.set_weights(torch.stack([w[k] for w in per_replica]).to(device))
        self.act = torch.relu if cfg.activation == "relu" else torch.tanh
        self.names = [f"layers.{k}" for k in range(len(self.layers) - 1)]   # as MLP.named_modules() names them
        self.modulations: list[Tensor] | None = None
        self.compare_every = COMPARE_EVERY
        self._array_reads = 0
        self._compared: dict[str, Tensor] = {}   # "M_corr/<layer>" / "M_err/<layer>" -> [E] sums over reads
        self._n_compared = 0
        self._sat: dict[str, tuple[Tensor, Tensor]] = {}   # "sat/<layer>" -> ([E] sums, [E] counts) over probes

    @property
    def replica_layers(self) -> list[crossbar.ReplicaLinear]:
        """The layers, forward order (the last one is the output layer)."""
        return [layer for layer in self.layers if isinstance(layer, crossbar.ReplicaLinear)]

    @torch.no_grad()
    def refresh_grapes(self) -> None:
        """Recompute every hidden layer's factors ``M: [E, out]`` from its importance ``Σ_j |w_ij|``: exact, or with
        ``analog.importance = "array"`` one all-ones read of the array through its periphery (differential pairs
        with their idle devices at ``analog.importance_g_offset``, minus its nominal ``2·g_offset·in`` with
        ``analog.importance_offset_correction``; a noisy sum below 0 read as 0), as
        :class:`~imc_grapes.backends.importance.ImportanceSource` reads it for a plain run."""
        mode = self.cfg.grapes_mode
        hidden = self.replica_layers[:-1]
        if self.cfg.analog.importance == "exact":
            sums = [layer.row_sums("exact") for layer in hidden]
        else:
            g = self.cfg.analog.importance_g_offset
            reads = [layer.row_sums("hardware", g_offset=g) for layer in hidden]
            if self.cfg.analog.subtracts_importance_offset:             # the nominal offset, subtracted digitally
                reads = [f.sub_(crossbar.pair_offset(g, layer.in_features)) for f, layer in zip(reads, hidden)]
            sums = [f.clamp_min_(0) for f in reads]
        ms = [modulation(f, BP_CLIP) for f in sums]
        if self.cfg.analog.importance == "array":
            if self.compare_every and self._array_reads % self.compare_every == 0:
                self._compare(hidden, ms)
            self._array_reads += 1
        self.modulations = [layer_mean(m) for m in ms] if mode == "layer-mean" else ms

    def _compare(self, hidden: Sequence[crossbar.ReplicaLinear], ms: Sequence[Tensor]) -> None:
        """Add each replica's ``M_corr`` (Pearson correlation) and ``M_err`` (mean |difference|) of the array-read
        factors ``ms`` and the exact ones (``Σ_j |w_ij|``, no offset) of every hidden layer, as
        :class:`~imc_grapes.backends.importance.ImportanceSource` samples them for a plain run (on the device)."""
        for name, layer, m_arr in zip(self.names, hidden, ms):
            m_arr = m_arr.to(torch.float64)
            m_ex = modulation(layer.row_sums("exact"), BP_CLIP).to(torch.float64)
            for key, v in ((f"M_corr/{name}", pearson(m_arr, m_ex)), (f"M_err/{name}", (m_arr - m_ex).abs().mean(-1))):
                self._compared[key] = self._compared[key] + v if key in self._compared else v
        self._n_compared += 1

    def importance_stats(self) -> dict[str, Tensor]:
        """``M_corr/<layer>`` and ``M_err/<layer>`` of every replica (``[E]`` each), averaged over the reads compared
        since the last call (then reset); empty without the array importance or without a compared read."""
        out = {k: v / self._n_compared for k, v in self._compared.items()}
        self._compared.clear()
        self._n_compared = 0
        return out

    def forward(self, x: Tensor) -> Tensor:
        h = x.flatten(2)
        factors = self.modulations if torch.is_grad_enabled() else None
        for k, layer in enumerate(self.layers[:-1]):
            a = layer(h)
            if factors is not None and a.requires_grad:
                m = factors[k].to(a.dtype).unsqueeze(1)                    # [E, 1, out]
                a.register_hook(lambda g, m=m: g * m)
            h = self.act(a)
        return self.layers[-1](h)

    def zero_grad_analog(self) -> None:
        """Drop pending updates (the stashed ``(x, d)`` of every layer)."""
        crossbar.analog_zero_grad(self)

    def step(self, lr: float, probe: bool = False, mask: Tensor | None = None) -> None:
        """The pulsed in-memory update of every layer with its stashed ``(x, d)``.

        ``mask``: optional ``[E]`` bool tensor; the replicas where it is ``False`` are not updated (their devices
        keep their states bit for bit; see :meth:`crossbar.ReplicaTileArray.update`), sync-free.
        ``probe``: also measure each replica's realised / intended weight change of every layer,
        ``⟨ΔW_real, ΔW_int⟩ / ‖ΔW_int‖²`` with ``ΔW_int = −lr Σ_b d_b x_bᵀ`` and ``ΔW_real`` the change of the (hidden)
        device states, as a plain run's saturation probe (``analog.sat_probe_every``); see :meth:`saturation_stats`.
        """
        if not probe:
            for layer in self.replica_layers:
                layer.analog_update(lr, mask)
            return
        for k, layer in enumerate(self.replica_layers):
            pairs = layer.pending_pairs()
            if not pairs:
                continue
            before = layer.tile.read(hidden=True)                               # [E, out, in]
            intended = torch.zeros_like(before)
            for x, d in pairs:                                                  # x: [E, B, in], d: [E, B, out]
                intended += torch.einsum("ebo,ebi->eoi", d.to(before.dtype), x.to(before.dtype))
            intended *= -lr
            layer.analog_update(lr, mask)
            num = ((layer.tile.read(hidden=True) - before) * intended).sum((1, 2))
            den = intended.square().sum((1, 2))
            valid = (den > 0).to(torch.float64)
            ratio = torch.where(den > 0, num / den.clamp_min(1e-300), 0.0).to(torch.float64)
            key = f"sat/layers.{k}"
            total, count = self._sat.get(key, (torch.zeros_like(ratio), torch.zeros_like(valid)))
            self._sat[key] = (total + ratio, count + valid)

    def saturation_stats(self) -> dict[str, Tensor]:
        """``sat/<layer>`` of every replica (``[E]``, NaN where no probe had an intended change), averaged over the
        probed steps since the last call (then reset); empty when no step was probed."""
        out = {k: torch.where(n > 0, total / n.clamp_min(1), torch.nan) for k, (total, n) in self._sat.items()}
        self._sat.clear()
        return out


def _stack_splits(splits: Sequence[Any]) -> tuple[Tensor, Tensor]:
    """``(x: [E|1, n, ...], y: [E|1, n])``: one shared copy when every replica has the same split tensors."""
    if all(s.x is splits[0].x and s.y is splits[0].y for s in splits):
        return splits[0].x.unsqueeze(0), splits[0].y.unsqueeze(0)
    return torch.stack([s.x for s in splits]), torch.stack([s.y for s in splits])


def _gather(xs: Tensor, ys: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
    """Samples ``idx: [E, B]`` of each replica's split (``xs: [E|1, n, ...]``) -> ``([E, B, ...], [E, B])``."""
    rows = torch.arange(idx.shape[0], device=idx.device).unsqueeze(1) if xs.shape[0] > 1 else \
        torch.zeros(1, 1, dtype=torch.int64, device=idx.device)
    return xs[rows, idx], ys[rows, idx]


class _LossWatch:
    """Which replicas diverged, tracked on the training device without host reads (sync-free on a GPU).

    ``first: [E]`` float64: the 1-based global training step (over all epochs) at which a replica's training loss
    first was NaN/Inf, 0 while it has stayed finite; ``loss: [E]`` float64: that loss. :meth:`observe` runs at every
    step before the update and gives the update's mask; :meth:`read` (one host read) runs at the loss checks.
    """

    def __init__(self, n_replicas: int, device: torch.device) -> None:
        self.first = torch.zeros(n_replicas, dtype=torch.float64, device=device)
        self.loss = torch.zeros(n_replicas, dtype=torch.float64, device=device)
        self.live = torch.ones(n_replicas, dtype=torch.bool, device=device)

    def observe(self, per: Tensor, step: int) -> Tensor:
        """Take the training losses ``per: [E]`` of global step ``step`` (1-based), before its update; returns the
        replicas to update (``[E]`` bool): those whose loss has been finite at every step so far."""
        finite = torch.isfinite(per)
        newly = self.live & ~finite
        self.first = torch.where(newly, float(step), self.first)
        self.loss = torch.where(newly, per.to(torch.float64), self.loss)
        self.live = self.live & finite
        return self.live

    def read(self) -> list[tuple[int, float] | None]:
        """Per replica ``(global step, loss)`` of its first non-finite training loss, None for a live one."""
        first, loss = torch.stack([self.first, self.loss]).tolist()
        return [None if at == 0 else (int(at), v) for at, v in zip(first, loss)]


def _train_step(model: ReplicaMLP, x: Tensor, y: Tensor, lr: float, probe: bool, watch: _LossWatch,
                step: int) -> tuple[Tensor, Tensor]:
    """One training step of every replica on ``(x: [E, B, ...], y: [E, B])``: forward, each replica's mean
    cross-entropy, its NaN/Inf check (``watch``, global step ``step``; before the update, sync-free), backward and
    the pulsed update of the replicas whose loss has stayed finite (a diverging replica's devices keep the states of
    its last finite step). ``probe``: the saturation probe (:meth:`ReplicaMLP.step`).
    Returns ``(logits [E, B, classes], loss [E])``, detached."""
    model.zero_grad_analog()
    out = model(x)                                                       # [E, B, classes]
    per = F.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="none").view_as(y).mean(1)   # [E]
    live = watch.observe(per.detach(), step)
    per.sum().backward()
    model.step(lr, probe=probe, mask=live)
    return out.detach(), per.detach()


@torch.no_grad()
def _evaluate(model: ReplicaMLP, xs: Tensor, ys: Tensor, n_replicas: int, batch_size: int = 1000
              ) -> tuple[Tensor, Tensor]:
    """Mean cross-entropy and accuracy per replica (``[E]`` each) on the evaluation split(s); a replica with a NaN
    or ±Inf output gets accuracy NaN (as :func:`~imc_grapes.train.evaluate`)."""
    n = xs.shape[1]
    loss_sum = torch.zeros(n_replicas, dtype=torch.float64, device=xs.device)
    correct = torch.zeros(n_replicas, dtype=torch.float64, device=xs.device)
    finite = torch.ones(n_replicas, dtype=torch.bool, device=xs.device)
    for i in range(0, n, batch_size):
        x = xs[:, i:i + batch_size].expand(n_replicas, -1, *xs.shape[2:])
        y = ys[:, i:i + batch_size].expand(n_replicas, -1)
        out = model(x)
        loss_sum += F.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="none").view_as(y).sum(1)
        correct += (out.argmax(-1) == y).sum(1)
        finite &= torch.isfinite(out).flatten(1).all(1)
    return loss_sum / n, torch.where(finite, correct / n, torch.full_like(correct, math.nan))


def train_replicas(cfgs: Sequence[TrainConfig], run_dirs: Sequence[str | Path | None] | None = None,
                   dataset: Dataset | None = None, *, dtype: torch.dtype | None = None, progress: bool | None = False,
                   log: Callable[[str], None] = print) -> list[RunResult]:
    """Train the configs ``cfgs`` (equal except ``seed``) together; write each one's files into its folder.

    Args:
        cfgs: ``E`` configs, eligible for the replica engine (:func:`replica_key`) and differing only in ``seed``.
        run_dirs: one folder per config (None entries / None: write nothing).
        dataset: an already loaded data set used by every replica (default: loaded per config as ``train`` does;
            ``synthetic`` data depends on the seed).
        dtype: dtype of the device states (default ``torch.get_default_dtype()``).
        progress: show a progress bar per epoch (None: only when stderr is a terminal). log: where one-line epoch
            summaries go.

    Returns:
        One :class:`~imc_grapes.train.RunResult` per config, status ``completed`` or ``diverged`` (no exception
        for a diverging replica). ``wall_time_s`` is the whole batch's training time for every replica, a
        diverged one included (see the module docstring).

    Raises:
        ValueError: configs that differ in anything but ``seed``, or that the replica engine does not support.

    Any exception during training (out of memory, Ctrl-C, ...) propagates, each replica still training recorded
    with status ``failed`` or ``interrupted`` (:func:`~imc_grapes.train.stopped_status`; a diverged one keeps
    ``diverged``) and its rows so far.
    """
    from tqdm.auto import tqdm

    cfgs = list(cfgs)
    check_replica_configs(cfgs)
    e = len(cfgs)
    dirs: list[Path | None] = [None] * e if run_dirs is None else [None if d is None else Path(d) for d in run_dirs]
    if len(dirs) != e:
        raise ValueError(f"train_replicas: need one run_dir per config ({e}), got {len(dirs)}")
    cfg = cfgs[0]
    device = cfg.resolved_device()
    if dataset is not None:
        datas = [dataset] * e
    else:
        cache = DatasetCache()      # one set per seed for the synthetic one (generated from it), else one
        datas = [cache.get(c.dataset, c.data_root, device, c.seed) for c in cfgs]
    splits = [split_for(c, d) for c, d in zip(cfgs, datas)]
    eval_split = splits[0][2]
    train_splits = [s[0].to(device) for s in splits]
    test_splits = [s[1].to(device) for s in splits]
    # the same split object for every replica whose data is shared (one copy in memory)
    if all(d is datas[0] for d in datas):
        train_splits = [train_splits[0]] * e
        test_splits = [test_splits[0]] * e
    xs, ys = _stack_splits(train_splits)
    xt, yt = _stack_splits(test_splits)

    model = ReplicaMLP(cfgs, tuple(train_splits[0].x.shape[1:]), datas[0].n_classes, device, dtype)
    loaders = [train_loader(s, c) for s, c in zip(train_splits, cfgs)]
    n_train, n_batches = len(train_splits[0]), len(loaders[0])
    results = [RunResult(c, run_dir=d, eval_split=eval_split, train_samples=len(s), eval_samples=len(t))
               for c, d, s, t in zip(cfgs, dirs, train_splits, test_splits)]
    for r in results:
        r.extra.update({"engine": "replicas", "replicas": e})
    alive = [True] * e                       # on the host, as of the last loss check
    watch = _LossWatch(e, device)
    t_start = time.perf_counter()
    check_every = loss_check_every(device)
    every = cfg.analog.importance_every
    sat_every = cfg.analog.sat_probe_every
    lr = float(cfg.lr)

    def save(which: Sequence[int]) -> None:
        for i in which:
            r = results[i]
            r.wall_time_s = time.perf_counter() - t_start
            if r.run_dir is not None:
                r.run_dir.mkdir(parents=True, exist_ok=True)
                write_run_files(r)

    def diverge(i: int, msg: str) -> None:
        alive[i] = False
        results[i].status, results[i].message = "diverged", msg
        save([i])

    save(range(e))
    try:
        evals = eval_points(n_batches, cfg.evals_per_epoch)                   # the steps train evaluates after
        train_batches = 0
        t_first = time.perf_counter()
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            t0 = time.perf_counter()
            loss_sum = torch.zeros(e, dtype=torch.float64, device=device)
            correct = torch.zeros(e, dtype=torch.float64, device=device)
            seen = 0
            # each replica's permutation, drawn from its loader's generator exactly as BatchLoader does
            order = torch.stack([torch.randperm(n_train, generator=ld.generator) for ld in loaders]).to(device)
            bar = tqdm(range(1, n_batches + 1), desc=f"replicas x{e} epoch {epoch}/{cfg.epochs}",
                       disable=progress_bar_disabled(progress), leave=False, dynamic_ncols=True, mininterval=0.5)
            for step in bar:
                raise_if_stop_requested()   # a swallowed stop (imc_grapes.interrupts): honoured within a batch
                x, y = _gather(xs, ys, order[:, (step - 1) * cfg.batch_size: step * cfg.batch_size])
                if cfg.grapes_mode and train_batches % every == 0:
                    model.refresh_grapes()
                train_batches += 1
                out, per = _train_step(model, x, y, lr, sat_every > 0 and (train_batches - 1) % sat_every == 0, watch,
                                       train_batches)
                loss_sum += per.to(torch.float64) * y.shape[1]
                correct += (out.argmax(-1) == y).sum(1)
                seen += y.shape[1]
                if step % check_every == 0 or step in evals:                     # as train_batches checks
                    for i, bad in enumerate(watch.read()):
                        if alive[i] and bad is not None:
                            at, v = bad
                            diverge(i, f"loss became {v} at epoch {(at - 1) // n_batches + 1}, step "
                                       f"{(at - 1) % n_batches + 1} (lr={cfg.lr}); lower the lr")
                    if not any(alive):
                        break                                                    # every replica diverged: stop
                if step not in evals:
                    continue
                raise_if_stop_requested()   # before the evaluation
                train_loss = (loss_sum / seen).tolist()
                test_loss, test_acc = (t.tolist() for t in _evaluate(model, xt, yt, e))
                for i in range(e):              # the update of this step is checked here only (as train does)
                    if alive[i]:
                        try:
                            check_evaluation(test_loss[i], test_acc[i], f"epoch {epoch}, step {step}", cfg.lr)
                        except DivergenceError as exc:
                            diverge(i, str(exc))
                acc = (correct / seen).tolist()
                ms = [m.float().mean(-1).tolist() for m in model.modulations] if model.modulations else []
                diag = {k: v.tolist() for k, v in {**model.saturation_stats(), **model.importance_stats()}.items()}
                for i in range(e):
                    if not alive[i]:            # (a live replica's losses were all finite: checked at every step)
                        continue
                    now = time.perf_counter()
                    row: dict[str, Any] = {"epoch": round(epoch - 1 + step / n_batches, 4), "step": step,
                                           "global_step": (epoch - 1) * n_batches + step,
                                           "train_loss": train_loss[i], "train_acc": acc[i],
                                           "test_loss": test_loss[i], "test_acc": test_acc[i],
                                           "time_s": now - t0, "elapsed_s": now - t_first}
                    for name, m in zip(model.names, ms):
                        row[f"M_mean/{name}"] = m[i]
                    row.update({k: v[i] for k, v in diag.items() if not math.isnan(v[i])})
                    results[i].history.append(row)
                loss_sum.zero_(), correct.zero_()
                seen = 0
                save([i for i in range(e) if alive[i]])
                if not any(alive):
                    break
            bar.close()
            live = [i for i in range(e) if alive[i]]
            if not live:
                break                                                            # nothing left to train
            accs = ", ".join(f"{100 * results[i].history[-1]['test_acc']:.2f}%" for i in live)
            log(f"[{cfg.optimizer} x{e} replicas] epoch {epoch}/{cfg.epochs}: {accuracy_name(eval_split)} {accs}")
        for i in range(e):
            if alive[i]:
                results[i].status = "completed"
    except BaseException as exc:         # not a divergence: the replicas still training get failed/interrupted
        status, message = stopped_status(exc)
        if isinstance(exc, KeyboardInterrupt):
            stop_handled()      # recorded below: the cleanup that follows is not stopped again
        stopped = [i for i in range(e) if results[i].status == "running"]
        for i in stopped:
            results[i].status, results[i].message = status, message
            if status == "failed":
                results[i].extra["traceback"] = traceback.format_exc()
        try:
            save(stopped)
        except Exception:   # noqa: BLE001 - e.g. the disk is full: the exception that stopped the run matters
            pass
        raise
    save(range(e))
    return results
