"""Device-parameter sweeps: a base experiment plus axes over any config field, run resumably in parallel.

Python in a few lines (what ``imc-grapes sweep SPEC.toml`` does)::

    from imc_grapes.sweep import LocalExecutor, load_spec, run_sweep, write_report

    spec = load_spec("examples/sweeps/dw_min.toml")       # every point validated here
    status = run_sweep(spec, executor=LocalExecutor(jobs=2))
    print(status.format())
    write_report(spec)                                     # summary.csv + plots/

See ``docs/sweeps.md`` for the spec format.
"""
from .executors import (EXECUTORS, Executor, LocalExecutor, RayExecutor, WorkerStartError, available_cpus,
                        default_jobs)
from .paths import PERIPHERY_FIELDS, FieldPath, SpecError, resolve_path
from .report import NothingToReportError, format_summary, plot_axis, plot_heatmap, summary_rows, write_report
from .runner import PointStatus, SweepStatus, replica_groups, run_sweep, sweep_status
from .spec import RANGE_KINDS, Axis, Point, Range, SweepSpec, config_id, load_spec, parse_spec
from .store import SweepLockedError, SweepStorageError, SweepStore
from .worker import execute_group, execute_point, execute_task

__all__ = [
    "EXECUTORS", "PERIPHERY_FIELDS", "RANGE_KINDS", "Axis", "Executor", "FieldPath", "LocalExecutor",
    "NothingToReportError", "Point", "PointStatus", "Range", "RayExecutor", "SpecError", "SweepLockedError",
    "SweepSpec", "SweepStatus", "SweepStorageError", "SweepStore", "WorkerStartError", "available_cpus", "config_id",
    "default_jobs", "execute_group", "execute_point", "execute_task", "format_summary", "load_spec", "parse_spec",
    "plot_axis", "plot_heatmap", "replica_groups", "resolve_path", "run_sweep", "summary_rows", "sweep_status",
    "write_report",
]
