"""Run a named experiment end to end: plan its groups, run each (resumable), write the report folder."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..data import DatasetCache
from ..io import start_job
from .definitions import EXPERIMENTS, plan_experiment
from .groups import GroupResult, run_group
from .options import ExperimentOptions
from .report import GROUPS, write_experiment_report

__all__ = ["default_out_dir", "run_experiment"]


def default_out_dir(name: str, options: ExperimentOptions) -> Path:
    """``reports/experiments/<name>-<size>`` (the CLI's default output folder)."""
    return Path("reports") / "experiments" / f"{name}-{options.size}"


def _note_unsuffixed(groups_dir: Path, key: str, opts: ExperimentOptions, log: Callable[[str], None]) -> None:
    """Tell the user when an analog group of a non-default preset (``...-crossbar-EcRam``) has no folder yet but
    the same group without the preset (how earlier versions named it for every preset) has one: its runs are not
    reused unless that folder is renamed."""
    suffix = f"-{opts.preset}"
    old = groups_dir / key.removesuffix(suffix)
    if key.endswith(suffix) and not (groups_dir / key).exists() and (old / "results.json").exists():
        log(f"   note: {old} (named without the device preset by earlier versions) is not reused; if it holds "
            f"{opts.preset} runs, rename it to {groups_dir / key} and run again to resume them")


def run_experiment(name: str, options: ExperimentOptions | None = None, out_dir: str | Path | None = None, *,
                   progress: bool | None = False, resume: bool = True, command: str | None = None,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run experiment ``name`` (a key of :data:`~imc_grapes.experiments.EXPERIMENTS`) and write its report.

    Args:
        name: ``mlp``, ``fa-dfa``, ``cnn``, ``rnn``, ``snn`` or ``forgetting``.
        options: size, backends, device preset, optimizers, seeds, lr grid, data sets (default: ``full``,
            digital).
        out_dir: report folder (default :func:`default_out_dir`); each group writes ``groups/<key>/``. Before
            the first run the job marks its start in ``groups/job.json`` (:func:`~imc_grapes.io.start_job`; its
            ``results.json`` records that job, ``job``), so that a later run interrupted there makes the earlier
            ``results.json`` read as older than its groups (``--redraw`` refuses it,
            :func:`~imc_grapes.io.superseded_report_note`).
        progress: progress bars per epoch (None: only when stderr is a terminal,
            :func:`~imc_grapes.train.progress_bar_disabled`). resume: skip runs already finished with the same
            config.
        command: the command line, recorded in the report. log: where progress lines go.

    Returns:
        The contents of the experiment's ``results.json``.

    Raises:
        ValueError: unknown experiment or invalid options. DatasetError: a real data set is not in the cache.
    """
    opts = options if options is not None else ExperimentOptions()
    groups = plan_experiment(name, opts)
    out = Path(out_dir) if out_dir is not None else default_out_dir(name, opts)
    t0 = time.perf_counter()
    datasets = DatasetCache()   # each run's own (a synthetic set is generated from the run's seed, as train does)
    results: list[GroupResult] = []
    job: str | None = None
    for group in groups:
        datasets.for_config(group.spec.base)    # a missing data set: an error before the group's first run
        if job is None:     # before the first run (a first data set that is missing changes nothing): an earlier
            # job's results.json stays, but reads as older than groups/ until this job ends
            job = start_job(out, command, runs=GROUPS)
        log(f"=== {name}: group {group.key} ({len(results) + 1}/{len(groups)})")
        _note_unsuffixed(out / GROUPS, group.key, opts, log)
        results.append(run_group(group, out / GROUPS / group.key, datasets, progress=progress, resume=resume,
                                 command=command, log=log))
    data = write_experiment_report(EXPERIMENTS[name], opts, results, out, command, time.perf_counter() - t0, job=job)
    log(f"\nreport: {out / 'report.md'}")
    return data
