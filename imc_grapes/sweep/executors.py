"""Where the points of a sweep run: in local worker processes, or as tasks on a Ray cluster.

Every executor takes the tasks of :mod:`imc_grapes.sweep.worker` and calls back the runner:
``on_start(task)`` right before a task is handed out (the runner prepares the point's folder) and
``on_result(task, outcome)`` as each one finishes (the runner writes its result at once, so a killed sweep
loses only the points that were running). Each point is deterministic given its config; with more than one
worker each runs torch on ``threads`` threads (default 1), so results do not depend on the executor.
"""
from __future__ import annotations

import contextlib
import ctypes
import multiprocessing as mp
import multiprocessing.connection as mpc
import os
import signal
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..interrupts import raise_if_stop_requested
from ..runtime import available_cpus
from .store import CRASHED
from .worker import execute_task

Task = dict[str, Any]
Outcome = dict[str, Any]
OnStart = Callable[[Task], None]
OnResult = Callable[[Task, Outcome], None]
EXECUTORS = ("local", "ray")
#: signals a local worker ignores: sent to the whole process group (Ctrl-C in a terminal; SIGTERM from Slurm,
#: systemd or ``kill -- -PGID``) they are the sweep process's to handle, which then kills its workers
_STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})
#: what a local worker sends back when it takes a point, before running it: a point whose worker dies before
#: sending this never started, and goes back to the queue for a fresh worker
_STARTED = "started"
#: local workers in a row that may die before starting the point handed to them (each time the point goes to a
#: fresh worker); one more ends the run with :class:`WorkerStartError`
MAX_EARLY_DEATHS = 3


class WorkerStartError(RuntimeError):
    """Local worker processes keep dying before they start a point (e.g. a broken environment): the run stops,
    the points not run are left to the next one."""


def default_jobs(n_tasks: int | None = None, uses_cuda: bool = False) -> int:
    """Workers a sweep uses by default: one per usable core (one in all when the points train on a GPU, which
    they would share), never more than there are points to run."""
    jobs = 1 if uses_cuda else available_cpus()
    return max(1, min(jobs, n_tasks)) if n_tasks else jobs


def _on_local_gpu(task: Task) -> bool:
    """True when the task's point trains on a GPU of this machine (``cuda``, ``cuda:N``, or ``auto`` where CUDA is
    available: :meth:`~imc_grapes.config.TrainConfig.resolved_device`)."""
    device = str(task["config"].get("device", "cpu"))
    if device == "auto":
        import torch

        return torch.cuda.is_available()
    return device.startswith("cuda")


def _shipping(task: Task, threads: int) -> Task:
    """The task for a worker that may not see the sweep folder: no run folders (files come back in the outcome)."""
    out = {**task, "run_dir": None, "threads": threads}
    if "group" in task:
        out["group"] = [{**sub, "run_dir": None} for sub in task["group"]]
    return out


def _crash_outcome(task: Task, reason: str) -> Outcome:
    """A failed outcome for a task whose worker died or whose Ray task was lost: a crash, not a divergence."""
    return {"id": task["id"], "status": "failed", "failure": CRASHED, "reason": reason, "history": [], "files": {},
            "wall_time_s": None, "host": None, "pid": None, "traceback": ""}


class Executor(Protocol):
    """Runs tasks and reports each outcome as soon as it is there."""

    name: str
    ships_files: bool  # True: workers may not see the sweep folder, run files come back in the outcome

    def run(self, tasks: Sequence[Task], on_start: OnStart, on_result: OnResult) -> None: ...


# ------------------------------------------------------------------------------------------------- local


def _die_with_parent() -> None:
    """Make this worker end when the sweep process ends, even by kill -9 (Linux: PR_SET_PDEATHSIG; elsewhere a
    thread that watches the parent pid)."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:
        os._exit(1)

    def watch() -> None:
        import time

        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


@contextlib.contextmanager
def _stop_signals_blocked() -> Iterator[None]:
    """Block :data:`_STOP_SIGNALS` in this thread while the block runs (starting a worker): the worker inherits
    the mask, so it cannot die of one before :func:`_worker_main` ignores them; one sent to this process meanwhile
    stays pending and is handled when the block ends. (As ``multiprocessing.resource_tracker`` starts its
    process.)"""
    if not hasattr(signal, "pthread_sigmask"):  # Windows
        yield
        return
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()  # first: starting it unblocks these signals (SIG_UNBLOCK, not a restore)
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _thread_lock_for_tqdm() -> None:
    """Give tqdm (whose bar a training run creates, disabled or not) a thread lock instead of its default, which
    holds a ``multiprocessing.RLock``: in a spawned worker that is a named semaphore registered with the sweep
    process's resource tracker, and a worker killed while running (Ctrl-C or SIGTERM to the sweep, a worker ended
    by hand) never unregisters it, so the tracker warned of "leaked semaphore objects" as the sweep ended. A worker
    writes no bar another process shares, so a thread lock is all it needs."""
    from tqdm.std import tqdm

    tqdm.set_lock(threading.RLock())     # tqdm.auto's class inherits it


def _worker_main(conn: mpc.Connection, threads: int) -> None:
    """A local worker: receive tasks over ``conn``, send :data:`_STARTED` as it takes each, then its outcome; None
    or a closed pipe ends it.

    It ignores SIGINT and SIGTERM (:data:`_STOP_SIGNALS`): sent to the process group they are handled by the sweep
    process, which kills its workers and leaves their points half-finished (redone by the next run); a worker that
    died of one before the sweep process handled its own would have its point recorded failed."""
    for sig in _STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)  # blocked while it started: see _run_pool
    _die_with_parent()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    import torch

    from ..runtime import tune_malloc

    tune_malloc()
    _thread_lock_for_tqdm()

    torch.set_num_threads(threads)
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        try:
            conn.send(_STARTED)
        except (BrokenPipeError, OSError):
            return
        outcome = execute_task({**task, "threads": threads})
        try:
            conn.send(outcome)
        except (BrokenPipeError, OSError):
            return


@dataclass
class _Slot:
    """A local worker process, its end of the pipe, the task handed to it and whether it has started that task."""

    proc: Any
    conn: mpc.Connection
    task: Task | None = None
    started: bool = False


def _receive(conn: mpc.Connection) -> Any:
    """The next message of a worker (:data:`_STARTED` or an outcome), None when it has none: it died."""
    try:
        return conn.recv() if conn.poll() else None
    except (EOFError, OSError):
        return None


def _exit_description(proc: Any) -> str:
    """How a dead worker ended, e.g. ``signal SIGKILL`` or ``exit code 1`` (waits up to 5 s for its exit)."""
    proc.join(timeout=5)
    code = proc.exitcode
    return f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"


@dataclass
class LocalExecutor:
    """Worker processes on this machine.

    Attributes:
        jobs: worker processes (None: :func:`default_jobs`). With 1 the points run in this process.
        threads: torch threads per point (None: 1 with several workers, torch's default with one).
    """

    jobs: int | None = None
    threads: int | None = None
    name: str = "local"
    ships_files: bool = False

    def __post_init__(self) -> None:
        if self.jobs is not None and (not isinstance(self.jobs, int) or self.jobs < 1):
            raise ValueError(f"LocalExecutor.jobs must be an integer ≥ 1, got {self.jobs!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"LocalExecutor.threads must be an integer ≥ 1, got {self.threads!r}")

    def run(self, tasks: Sequence[Task], on_start: OnStart, on_result: OnResult) -> None:
        if not tasks:
            return
        jobs = min(self.jobs, len(tasks)) if self.jobs else default_jobs(len(tasks), any(map(_on_local_gpu, tasks)))
        if jobs == 1:
            for task in tasks:
                on_start(task)
                on_result(task, execute_task({**task, "threads": self.threads}))
            return
        self._run_pool(tasks, jobs, self.threads or 1, on_start, on_result)

    @staticmethod
    def _run_pool(tasks: Sequence[Task], jobs: int, threads: int, on_start: OnStart, on_result: OnResult) -> None:
        """Run ``tasks`` on ``jobs`` worker processes, a fresh one replacing each that dies.

        A worker that dies while running its point has that point recorded failed; one that dies before it
        started the point handed to it (it sent no :data:`_STARTED`: it had died already, e.g. right after its
        last result, or died starting up) gives the point back to the queue, for a fresh worker. After
        :data:`MAX_EARLY_DEATHS` such deaths in a row the next one raises :class:`WorkerStartError`."""
        ctx = mp.get_context("spawn")  # fork after torch has started its thread pools can deadlock
        queue = deque(tasks)
        slots: list[_Slot] = []
        early_deaths = 0  # workers in a row that died before starting the point handed to them

        def spawn() -> None:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker_main, args=(child, threads), daemon=True, name="imc-grapes-sweep")
            with _stop_signals_blocked():  # until the worker ignores them (it starts with this thread's mask)
                proc.start()
            child.close()
            slot = _Slot(proc, parent)
            slots.append(slot)
            hand_out(slot)

        def hand_out(slot: _Slot) -> None:
            slot.task, slot.started = (queue.popleft() if queue else None), False
            if slot.task is not None:
                on_start(slot.task)
            try:
                slot.conn.send(slot.task)
            except OSError:  # it died after its last result (broken pipe): the loop finds it dead as usual
                pass

        def on_death(slot: _Slot, task: Task) -> None:
            """``slot``'s worker was found dead with ``task``: record it failed if it had started it, else queue it
            again; a fresh worker takes the queue."""
            nonlocal early_deaths
            how = _exit_description(slot.proc)
            slots.remove(slot)
            slot.conn.close()
            if slot.started:
                on_result(task, _crash_outcome(task, f"worker process died ({how}) while running this point; "
                                                     "rerun with --retry-failed to try it again"))
            else:
                early_deaths += 1
                if early_deaths > MAX_EARLY_DEATHS:
                    raise WorkerStartError(
                        f"{early_deaths} sweep worker processes in a row died before they could start a point "
                        f"(the last: {how}); the environment may be broken: with --jobs 1 (LocalExecutor(jobs=1)) "
                        "the points run in this process and show the error. The points not run are left to the "
                        "next run")
                queue.appendleft(task)
            if queue:
                spawn()

        try:
            for _ in range(jobs):
                spawn()
            while any(s.task is not None for s in slots):
                raise_if_stop_requested()   # a stop swallowed in a callback (imc_grapes.interrupts): not after a wait
                busy = [s for s in slots if s.task is not None]
                ready = mpc.wait([s.conn for s in busy] + [s.proc.sentinel for s in busy])
                for slot in busy:
                    if slot.task is None or (slot.conn not in ready and slot.proc.sentinel not in ready):
                        continue
                    message = _receive(slot.conn)
                    if message is None:
                        on_death(slot, slot.task)
                    elif message == _STARTED:
                        slot.started, early_deaths = True, 0
                    else:
                        on_result(slot.task, message)
                        hand_out(slot)
        finally:
            for slot in slots:
                if slot.task is not None and slot.proc.is_alive():
                    slot.proc.kill()  # interrupted (Ctrl-C, SIGTERM or an error in a callback); it ignores SIGTERM
            for slot in slots:
                slot.proc.join(timeout=10)
                if slot.proc.is_alive():
                    slot.proc.kill()
                slot.conn.close()


# ------------------------------------------------------------------------------------------------- ray


@dataclass
class RayExecutor:
    """Tasks on a Ray cluster (``pip install 'imc-grapes[sweep]'`` or ``pip install ray``).

    Attributes:
        address: a running cluster (``ray://host:10001`` or ``host:6379``; every node needs imc-grapes and the
            data sets installed). None starts Ray embedded on this machine only (``address="local"``), stopped
            again when the sweep ends.
        num_cpus: CPUs of the embedded instance (None: :func:`available_cpus`); ignored with an address.
        threads: torch threads per point (each task reserves that many CPUs; a point on ``cuda`` also one GPU).
        max_retries: times Ray reruns a task whose worker process or node died.
    """

    address: str | None = None
    num_cpus: int | None = None
    threads: int = 1
    max_retries: int = 1
    name: str = "ray"
    ships_files: bool = True

    def __post_init__(self) -> None:
        if self.num_cpus is not None and (not isinstance(self.num_cpus, int) or self.num_cpus < 1):
            raise ValueError(f"RayExecutor.num_cpus must be an integer ≥ 1, got {self.num_cpus!r}")
        if not isinstance(self.threads, int) or self.threads < 1:
            raise ValueError(f"RayExecutor.threads must be an integer ≥ 1, got {self.threads!r}")

    @staticmethod
    def _import_ray() -> Any:
        try:
            import ray
        except ImportError:
            raise RuntimeError("the ray executor needs Ray: pip install 'imc-grapes[sweep]' (or pip install ray); "
                               "or use --executor local") from None
        return ray

    def run(self, tasks: Sequence[Task], on_start: OnStart, on_result: OnResult) -> None:
        if not tasks:
            return
        ray = self._import_ray()
        started_here = not ray.is_initialized()
        if started_here:
            if self.address:
                ray.init(address=self.address, log_to_driver=False)
            else:  # never a cluster found through the environment: a fresh instance on this machine
                ray.init(address="local", num_cpus=self.num_cpus or available_cpus(), include_dashboard=False,
                         log_to_driver=False)
        try:
            self._run(ray, tasks, on_start, on_result)
        finally:
            if started_here:
                ray.shutdown()

    def _run(self, ray: Any, tasks: Sequence[Task], on_start: OnStart, on_result: OnResult) -> None:
        uses_cuda = any(str(t["config"].get("device", "cpu")).startswith("cuda") for t in tasks)
        remote = ray.remote(num_cpus=self.threads, num_gpus=1 if uses_cuda else 0,  # a GPU point gets a GPU
                            max_retries=self.max_retries)(execute_task)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        window = max(2, 2 * cpus // self.threads)  # tasks in flight: keep the cluster busy, the folder tidy
        queue = deque(tasks)
        running: dict[Any, Task] = {}

        def submit() -> None:
            while queue and len(running) < window:
                task = queue.popleft()
                on_start(task)
                running[remote.remote(_shipping(task, self.threads))] = task

        try:
            submit()
            while running:
                raise_if_stop_requested()   # as in the local pool
                done, _ = ray.wait(list(running), num_returns=1)
                for ref in done:
                    task = running.pop(ref)
                    try:
                        outcome = ray.get(ref)
                    except Exception as exc:  # noqa: BLE001 - worker/node died, task cancelled, ...
                        outcome = _crash_outcome(task, f"Ray task failed ({type(exc).__name__}: "
                                                       f"{str(exc).splitlines()[0] if str(exc) else ''}); "
                                                       "rerun with --retry-failed to try it again")
                    on_result(task, outcome)
                submit()
        finally:
            for ref in running:
                ray.cancel(ref, force=True)
