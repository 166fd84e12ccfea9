"""Process-level CPU runtime settings for simulations: glibc's malloc thresholds, and torch's CPU threads
(:func:`set_torch_threads`, the ``--threads`` option of ``imc-grapes train``/``compare``/``experiment``).

The engine's CPU work is a stream of elementwise torch ops on arrays of 10^5-10^6 devices, each allocating its
output (0.1-10 MB) and freeing its inputs' temporaries. With glibc's defaults such blocks are often served by
fresh ``mmap`` pages (the threshold starts at 128 KiB and adapts only to the sizes freed so far) and freed heap
tops beyond twice that threshold go back to the kernel, so the same memory is zero-filled and faulted in again
op after op. :func:`tune_malloc` keeps it in the process instead (``mallopt``): blocks up to 32 MiB come from
the heap (``M_MMAP_THRESHOLD``), the heap keeps up to 256 MiB of free top (``M_TRIM_THRESHOLD``) and grows in
64 MiB steps (``M_TOP_PAD``). The numbers computed are unchanged; the process may hold up to ~300 MiB more
memory than it uses. Measured (``benchmarks/bench_malloc.py``, ``docs/performance.md``): the first training
steps of a 784-256-256-10 MLP on ReRamSB or EcRam, where most devices take the closed-form update, 1.7x faster;
small layers, where the number of operations dominates, unchanged.

The command-line entry points (``imc-grapes``, sweep workers) and the benchmark scripts call it;
``IMC_GRAPES_MALLOC=default`` keeps glibc's defaults, and any ``MALLOC_*_`` environment variable the user set
wins (glibc reads those at start).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

__all__ = ["MALLOC_ENV", "MALLOC_SETTINGS", "MAX_THREADS", "THREADS_PER_CPU", "available_cpus", "check_environment",
           "check_threads", "malloc_mode", "set_torch_threads", "tune_malloc", "DEFAULT_THREADS"]

MALLOC_ENV = "IMC_GRAPES_MALLOC"
"""Environment variable: ``tuned`` (the default) or ``default`` (leave glibc's malloc as it is)."""

MALLOC_SETTINGS: dict[str, tuple[int, int]] = {
    "M_MMAP_THRESHOLD": (-3, 32 << 20),
    "M_TRIM_THRESHOLD": (-1, 256 << 20),
    "M_TOP_PAD": (-2, 64 << 20),
}
"""``name -> (mallopt parameter number, value in bytes)`` applied by :func:`tune_malloc` (glibc's numbering;
32 MiB is the largest mmap threshold glibc accepts on 64-bit systems)."""

_USER_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_ARENA_MAX")

_mode: str | None = None


def malloc_mode() -> str:
    """How this process's malloc is set: ``"tuned"``, ``"default (<why>)"`` or ``"partly tuned (<why>)"``
    (``"default (not tuned)"`` before :func:`tune_malloc` ran). Recorded with results (``versions()['malloc']``)."""
    return _mode or "default (not tuned)"


def tune_malloc() -> str:
    """Apply :data:`MALLOC_SETTINGS` to this process (once; later calls return the first outcome).

    Returns :func:`malloc_mode`. Nothing is changed, with the reason in the mode, when ``IMC_GRAPES_MALLOC`` is
    ``default``, when the user set glibc's own ``MALLOC_*_`` variables, or when the C library is not glibc.

    Raises:
        ValueError: ``IMC_GRAPES_MALLOC`` is neither ``tuned`` nor ``default``.
    """
    global _mode
    if _mode is not None:
        return _mode
    choice = os.environ.get(MALLOC_ENV, "tuned").strip().lower() or "tuned"
    if choice not in ("tuned", "default"):
        raise ValueError(f"{MALLOC_ENV} must be 'tuned' or 'default', got {os.environ[MALLOC_ENV]!r}")
    if choice == "default":
        _mode = f"default ({MALLOC_ENV}=default)"
    elif any(name in os.environ for name in _USER_ENV):
        _mode = "default (glibc MALLOC_* environment variables set by the user)"
    elif platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        _mode = "default (not glibc)"
    else:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        failed = [name for name, (param, value) in MALLOC_SETTINGS.items() if libc.mallopt(param, value) != 1]
        _mode = "tuned" if not failed else f"partly tuned (mallopt refused {', '.join(failed)})"
    return _mode


def check_environment() -> None:
    """Check the environment variables that the engine reads at import, ``IMC_GRAPES_COMPILE``
    (:func:`devices.fusion.check_env`) and ``IMC_GRAPES_INT8_COUNTS``
    (:func:`crossbar._sparse_update.check_int8_counts_env`); the command line calls this first and reports the
    error as a usage error (library code gets it from the first use of the setting).

    Raises:
        ValueError: one of them has an invalid value (the message names the variable and its valid values).
    """
    from crossbar._sparse_update import check_int8_counts_env
    from devices.fusion import check_env

    check_env()
    check_int8_counts_env()


DEFAULT_THREADS = 1
"""Torch CPU threads of ``imc-grapes train``/``compare``/``experiment``/``sweep`` unless ``--threads`` says otherwise.
The engine's tensors are small, so a second thread gains little on a machine of its own and costs much on a shared
one: the quick start's main job took 16.5 s on one thread and 15.4 s on two (2 cores, nothing else running), but an
analog run of it 6.9 s on one thread and 40–81 s on two while another job used the second core (each of the step's
thousands of parallel regions then waits for a thread that has no core; measured on an Intel Xeon, 2026-12-02).
One thread also gives the same numbers whatever the machine's core count (torch's sums depend on the threads)."""

MAX_THREADS = 2**31 - 1
"""The most CPU threads torch takes (``torch.set_num_threads`` reads a C int)."""

THREADS_PER_CPU = 4
"""The most torch threads per usable CPU core that a process here may ask for: beyond the cores, threads only
oversubscribe them (one 512×512 matmul on 2 cores: 0.25 s with 64 threads, 9.6 s with 1,000, and 10,000 threads
did not finish it in 100 s), so a larger ``--threads`` is a typo or a setting of another machine."""


def available_cpus() -> int:
    """CPU cores this process may use (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def check_threads(threads: int, option: str = "--threads", local: bool = True) -> None:
    """Raise ``ValueError`` naming ``option`` unless ``threads`` is an integer in ``[1, MAX_THREADS]`` and, when
    the threads run on this machine (``local``; not for a Ray cluster's workers), at most
    :data:`THREADS_PER_CPU` per core this process may use (:func:`available_cpus`)."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"{option} must be >= 1, got {threads!r}")
    if threads > MAX_THREADS:
        raise ValueError(f"{option} must be at most 2^31 - 1 (what torch.set_num_threads takes), got {threads!r}")
    if local and threads > (limit := THREADS_PER_CPU * (cpus := available_cpus())):
        raise ValueError(f"{option} must be at most {limit} ({THREADS_PER_CPU} per CPU core this process may use, "
                         f"{cpus} here): more threads only oversubscribe the cores, and thousands stall torch; "
                         f"got {threads}")


def set_torch_threads(threads: int | None) -> None:
    """Set torch's CPU (intra-op) threads to ``threads``; ``None`` leaves torch's choice (one per core).

    Raises:
        ValueError: ``threads`` not an integer in ``[1, MAX_THREADS]``, or more than :data:`THREADS_PER_CPU` per
            usable core (the message names the ``--threads`` option).
    """
    if threads is None:
        return
    check_threads(threads)
    import torch

    torch.set_num_threads(threads)
