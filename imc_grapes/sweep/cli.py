"""``imc-grapes sweep SPEC.toml``: run, resume, inspect and report a device-parameter sweep.

Hooked into the main command by :func:`add_sweep_parser` and :func:`run_sweep_command`; also runnable alone as
``python -m imc_grapes.sweep SPEC.toml ...``.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ..interrupts import exit_status, sigterm_as_interrupt
from ..runtime import DEFAULT_THREADS

EPILOG = """examples:
  imc-grapes sweep examples/sweeps/dw_min.toml               # run (or resume) with one worker per core
  imc-grapes sweep examples/sweeps/dw_min.toml --status      # done / failed / pending points
  imc-grapes sweep examples/sweeps/dw_min.toml --report      # summary.csv and plots from what is finished
  imc-grapes sweep examples/sweeps/dw_min.toml --dry-run     # validate and list the points, run nothing
  imc-grapes sweep SPEC.toml --executor ray                  # Ray embedded on this machine
  imc-grapes sweep SPEC.toml --executor ray --address HOST:6379   # spread over a Ray cluster
  imc-grapes sweep SPEC.toml --replicas 16                   # seeds of a small analog MLP, 16 per batched pass
  imc-grapes sweep SPEC.toml --retry-failed                  # also redo the points that crashed
A re-run of the same spec skips finished points and redoes half-finished ones; kill it at any time.
A failed point either crashed (an exception, out of memory, a dead worker: often transient; --retry-failed
redoes it) or diverged (NaN/Inf loss or evaluated output: deterministic for its seed, a rerun diverges again;
--retry-diverged redoes it, e.g. after a fix); --status lists them apart.
Exit codes: 0 ok (failed points are results, listed by --status), 1 points left pending,
2 invalid spec, missing data, workers that keep dying before they start a point, a sweep folder that cannot be
written (full disk; a file in its place, also for --status and --dry-run) or that holds another command's output
(a train job's, a compare report), --report on a folder where no point of this sweep has finished (one that does
not exist or holds no sweep: a mistyped --out; nothing is written), 3 another process is running this sweep,
130 interrupted (Ctrl-C), 143 terminated (SIGTERM, e.g. kill), 141 the reader of the output went away
(e.g. | head)."""


def add_sweep_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``sweep`` command to the ``imc-grapes`` sub-commands; return its parser."""
    from .executors import EXECUTORS

    p = subparsers.add_parser(
        "sweep", help="sweep device / periphery / training parameters (resumable, parallel, with plots)",
        description="Run every point of a sweep spec (a base experiment plus axes over any config field, as a "
                    "grid or random samples), each in its own folder under the output folder; show its status; "
                    "write summary.csv and accuracy plots. See docs/sweeps.md and examples/sweeps/.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", metavar="SPEC.toml", help="the sweep spec")
    act = p.add_mutually_exclusive_group()
    act.add_argument("--status", action="store_true", help="show done / failed / pending points and exit")
    act.add_argument("--report", action="store_true",
                     help="write summary.csv and plots from the finished points (into the sweep's existing folder)")
    act.add_argument("--dry-run", action="store_true", help="validate every point, list them, run nothing")
    p.add_argument("--out", default=None, help="sweep folder (default: [sweep] out, else runs/sweeps/<name>)")
    p.add_argument("--executor", default="local", choices=EXECUTORS,
                   help="local worker processes or a Ray cluster (default %(default)s)")
    p.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="local: worker processes (default: one per usable core, 1 for GPU points; 1 runs in this "
                        "process); ray without --address: CPUs of the embedded Ray")
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS, metavar="T",
                   help="torch threads per point, 1 to 4 per CPU core of this machine (of a worker's with --address) "
                        "(default %(default)s)")
    p.add_argument("--address", default=None, help="Ray cluster address (ray executor; default: Ray embedded "
                                                   "on this machine)")
    p.add_argument("--replicas", type=int, default=1, metavar="R",
                   help="train up to R pending points that differ only in seed together in one batched pass "
                        "(crossbar backend, mlp, bp, sgd/grapes/layer-mean, no dropout; other points run alone). "
                        "Results are statistically equivalent to, not bit-identical with, plain runs (another "
                        "random generator); finished points are not re-run (default %(default)s: off)")
    p.add_argument("--retry-failed", action="store_true",
                   help="also redo the failed points that crashed (an exception, out of memory, a dead worker); "
                        "points that diverged are kept (see --retry-diverged)")
    p.add_argument("--retry-diverged", action="store_true",
                   help="also redo the failed points that diverged (NaN/Inf loss or evaluated output: deterministic "
                        "for a seed, so useful after a change to the code); with --retry-failed: every failed "
                        "point")
    p.add_argument("--no-report", action="store_true", help="do not write summary.csv and plots after running")
    p.add_argument("-v", "--verbose", action="store_true", help="--status/--dry-run: list every point")
    return p


def _executor(args: argparse.Namespace):  # -> Executor
    from ..runtime import check_threads
    from .executors import LocalExecutor, RayExecutor

    if args.jobs is not None and args.jobs < 1:
        raise ValueError(f"--jobs must be ≥ 1, got {args.jobs}")
    # the workers set it: an unusable value is reported now
    check_threads(args.threads, local=args.executor != "ray" or not args.address)
    if getattr(args, "replicas", 1) < 1:
        raise ValueError(f"--replicas must be ≥ 1, got {args.replicas}")
    if args.executor == "ray":
        return RayExecutor(address=args.address, num_cpus=args.jobs, threads=args.threads)
    if args.address:
        raise ValueError("--address is for --executor ray")
    return LocalExecutor(jobs=args.jobs, threads=args.threads)


def _wrote(paths: Sequence[Path]) -> str:
    """The report's last line: the files it wrote (``summary.csv``, the plots), and why there is no plot when there
    is none (:func:`~imc_grapes.sweep.report.write_report` draws nothing before a point has a finite accuracy: every
    point failed, ended without one, or has not run yet)."""
    text = "\nwrote " + ", ".join(str(p) for p in paths)
    if not any(p.suffix == ".png" for p in paths):
        text += "\nno plots: no point has finished with a finite accuracy (yet)"
    return text


def _not_a_sweep_folder(out: Path, option: str, read_only: bool = False) -> str | None:
    """Why ``imc-grapes sweep`` must not use ``out`` (set by ``option``: ``--out``, ``[sweep] out`` or the default
    sweep folder): it holds the output of another command (:func:`~imc_grapes.io.folder_command`; e.g. a train job's,
    whose summary.csv the sweep's report would replace), or None (a sweep's folder, a new one, or no command's).
    ``read_only`` (``--status``, which writes nothing): the message says the folder holds no sweep, instead of what
    would be overwritten. Reads only."""
    from ..io import folder_command, other_command_folder

    if not read_only:
        theirs = other_command_folder(out, "sweep", "--out (or [sweep] out)" if option == "[sweep] out" else "--out")
        return None if theirs is None else f"{option}: {theirs}"
    owner = folder_command(out)
    if owner is None or owner == "sweep":
        return None
    return (f"{option}: {out} holds the output of `imc-grapes {owner}`, not a sweep: give the folder of this "
            "sweep (--out)")


def run_sweep_command(args: argparse.Namespace) -> int:
    """Carry out ``imc-grapes sweep`` (parsed by :func:`add_sweep_parser`); return the exit code (2 for a usage
    error, e.g. ``--out ''``, which would otherwise write into the current folder)."""
    from ..data import DatasetError
    from ..runtime import check_environment
    from .paths import SpecError
    from .report import NothingToReportError, format_summary, nothing_to_report, write_report
    from .runner import resolve_out, run_sweep, sweep_status
    from .spec import load_spec
    from .store import SweepLockedError

    def fail(msg: str, code: int = 2) -> int:
        print(f"imc-grapes sweep: error: {msg}", file=sys.stderr)
        return code

    def write_failed(exc: OSError, what: str) -> int:
        """A write into the sweep folder failed (a full disk, a quota, permissions): a message, not a traceback."""
        if isinstance(exc, BrokenPipeError):    # the reader of our output went away: imc_grapes.pipes handles it
            raise exc
        return fail(f"{what} in {out}: {exc}. Finished points are kept (each result is written atomically); "
                    "fix the cause (e.g. free some space, or make the folder writable) and run the same command again")

    if args.out == "":      # e.g. --out "$UNSET" (python -m imc_grapes.sweep; imc-grapes checks it before)
        return fail("--out '': give a folder, or leave the option out for the default")
    if args.report and args.no_report:
        return fail("--no-report: --report only writes the report (summary.csv and plots), so --no-report "
                    "contradicts it: give one of them")
    try:
        check_environment()     # a no-op after imc-grapes' own check; for python -m imc_grapes.sweep
        spec = load_spec(args.spec)
        points = spec.points()
        executor = _executor(args)
        if args.dry_run or not (args.status or args.report or (args.executor == "ray" and args.address)):
            for analog in {p.config.analog.energy_table: p.config.analog for p in points}.values():
                analog.check_energy_table()     # a missing table fails now, not in every point
    except (SpecError, ValueError) as exc:
        return fail(str(exc))
    out = resolve_out(spec, args.out)
    option = "--out" if args.out is not None else "[sweep] out" if spec.out else "the sweep folder"
    refused = _not_a_sweep_folder(out, option, read_only=args.status)
    if refused is not None:     # before any point runs, and before --dry-run lists a folder the run would refuse
        return fail(refused)
    if args.status or args.report or args.dry_run:
        from ..io import file_in_the_way, folder_error

        # a file or a dangling link in the folder's place (or above it) holds no sweep: --status would list every
        # point pending in it, --report could write nothing there, --dry-run would list points the run refuses to
        # write; the run reports it through writable_folder
        if file_in_the_way(out) is not None:
            return fail(folder_error(option, out))
        try:
            os.stat(out)
        except FileNotFoundError:   # a new folder: --status lists every point pending, --report refuses below
            pass
        except OSError as exc:      # e.g. a name longer than the file system allows: no sweep can be there
            return fail(folder_error(option, out, exc))
    # --report where nothing of this sweep has finished (e.g. a mistyped --out) would write a summary of pending
    # points, into a junk folder it created
    if args.report and (nothing := nothing_to_report(sweep_status(spec, out, points), option, args.spec)):
        return fail(nothing)
    if not (args.dry_run or args.status):
        from ..io import folder_error, writable_folder

        try:
            writable_folder(out)    # before any point runs: a bad folder is reported now
        except OSError as exc:
            return fail(folder_error(option, out, exc))
    if args.dry_run:
        from .spec import merged_values, merged_values_note, repeated_draws_note, repeated_points, repeated_points_note

        print(f"sweep {spec.name!r}: {len(points)} valid points; folder {out}")
        swept_backend = any(ax.name == "backend" for ax in spec.axes)   # then the label names it already
        for p in points if args.verbose or len(points) <= 50 else points[:50]:
            print(f"  {p.id}  {'' if swept_backend else f'{p.config.backend:<8} '}{p.label()}")
        if len(points) > 50 and not args.verbose:
            print(f"  ... and {len(points) - 50} more (--verbose lists all)")
        if repeated := repeated_points(points):     # a full-factorial design may hold them: a note, not an error
            print(f"note: {repeated_points_note(len(repeated), len(points))}")
        if draws := spec.repeated_draws():       # a discrete random design: fewer points than draws
            print(f"note: {repeated_draws_note(draws, spec.n_samples)}")
        for axis, groups in merged_values(points).items():     # spellings of one device: fewer points than values
            print(f"note: {merged_values_note(axis, groups)}")
        return 0
    if args.status:
        print(sweep_status(spec, out, points).format(verbose=args.verbose))
        return 0
    if args.report:
        try:
            paths = write_report(spec, out, points)
        except NothingToReportError as exc:    # checked above: only if the folder changed since (e.g. removed)
            return fail(str(exc))
        except OSError as exc:
            return write_failed(exc, "cannot write the report")
        print(format_summary(spec, out, points))
        print(_wrote(paths))
        return 0
    try:
        with sigterm_as_interrupt():    # SIGTERM (kill, a batch scheduler's stop) ends the run like Ctrl-C
            status = run_sweep(spec, out, executor, retry_failed=args.retry_failed,
                               retry_diverged=args.retry_diverged, replicas=args.replicas,
                               verify_data=not (args.executor == "ray" and args.address))
    except SweepLockedError as exc:
        return fail(str(exc), 3)
    except (DatasetError, RuntimeError) as exc:     # SweepStorageError too: a point could not write its files
        return fail(str(exc))
    except OSError as exc:      # the sweep process's own writes (plan.json, a point's config.json or point.json)
        return write_failed(exc, "cannot write the sweep's files")
    except KeyboardInterrupt as exc:
        print(f"\ninterrupted: finished points are kept; run the same command again to resume "
              f"(`imc-grapes sweep {args.spec} --status` shows where it stands)", file=sys.stderr)
        return exit_status(exc)
    print(status.summary_line())
    if not args.no_report and not nothing_to_report(status):    # a point has finished: there is a report
        try:
            paths = write_report(spec, out, points)
        except OSError as exc:
            return write_failed(exc, "the points ran, but the report could not be written")
        print(format_summary(spec, out, points))
        print(_wrote(paths))
    from .store import CRASHED, DIVERGED

    crashed, diverged = status.count_failed(CRASHED), status.count_failed(DIVERGED)
    if crashed:
        print(f"{crashed} point(s) failed (crashed: an exception or a dead worker): `imc-grapes sweep {args.spec} "
              "--status` lists the reasons; --retry-failed redoes them")
    if diverged:
        print(f"{diverged} point(s) diverged (NaN/Inf loss or evaluated output; a rerun of the same seed diverges "
              "again): --retry-diverged redoes them")
    return 0 if status.complete else 1


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m imc_grapes.sweep SPEC.toml ...``: run it with ``argv`` (default ``sys.argv[1:]``) and return
    its exit status; output piped into a reader that closes early (``| head``) ends it quietly with status 141
    (:mod:`imc_grapes.pipes`), as in ``imc-grapes sweep``."""
    from ..pipes import exit_quietly_on_broken_pipe

    return exit_quietly_on_broken_pipe(_main, argv)


def _main(argv: Sequence[str] | None) -> int:
    """:func:`main` without the broken-pipe handling."""
    from ..suggest import SuggestingArgumentParser

    parser = SuggestingArgumentParser(prog="imc-grapes")
    sub = parser.add_subparsers(dest="command", required=True)
    add_sweep_parser(sub)
    args = parser.parse_args(["sweep", *(sys.argv[1:] if argv is None else argv)])
    return run_sweep_command(args)
