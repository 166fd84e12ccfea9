"""Versions and machine facts recorded with every result, without importing heavy optional packages."""
from __future__ import annotations

import functools
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from crossbar import CPU_PULSE_COUNTS
from devices.fusion import get_compile

from .runtime import malloc_mode


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


CODE_FOLDERS = ("crossbar", "devices", "imc_grapes")
"""The folders of the code that computes a result; their uncommitted files are recorded with it."""


def _source_root() -> Path:
    return Path(__file__).resolve().parent.parent


def _git(root: Path, *args: str) -> str | None:
    """Output of ``git args`` run in ``root`` when ``root`` is the top of a git checkout (not a folder inside some
    other repository, e.g. a ``site-packages`` within a project's virtual environment); None otherwise."""
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=root, capture_output=True, text=True,
                             timeout=5)
        if top.returncode != 0 or Path(top.stdout.strip()).resolve() != root.resolve():
            return None
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def git_commit(root: Path | None = None) -> str | None:
    """The commit of the source tree this package runs from (or of ``root``), if it is a git checkout."""
    out = _git(root or _source_root(), "rev-parse", "HEAD")
    return out.strip() or None if out is not None else None


def git_uncommitted(root: Path | None = None) -> tuple[str, ...] | None:
    """The files of :data:`CODE_FOLDERS` that differ from the commit (changed, added, deleted or untracked) in the
    source tree this package runs from (or ``root``): empty when the code is exactly ``git_commit``; None
    when it is not a git checkout."""
    out = _git(root or _source_root(), "status", "--porcelain", "--", *CODE_FOLDERS)
    return None if out is None else tuple(line[3:] for line in out.splitlines() if line.strip())


@functools.cache
def _process_versions() -> tuple[tuple[str, Any], ...]:
    """What cannot change while this process runs (its code was imported from one commit): read once, since every
    saved result records it (a ``git`` subprocess and the package metadata took ≈ 8 ms a call)."""
    return (("imc_grapes", _dist_version("imc-grapes")), ("python", platform.python_version()),
            ("platform", platform.platform()), ("torch", torch.__version__), ("numpy", _dist_version("numpy")),
            ("aihwkit", _dist_version("aihwkit")), ("cuda_available", torch.cuda.is_available()),
            ("git_commit", git_commit()), ("git_uncommitted", git_uncommitted()))


def versions() -> dict[str, Any]:
    """Python, platform, package versions (aihwkit read from its metadata, not imported), git commit and the code's
    uncommitted files (``git_uncommitted``: a result computed by a changed tree says so), the CPU instruction set
    and torch thread count that the float sums depend on, CUDA."""
    constant = dict(_process_versions())
    info: dict[str, Any] = {
        **constant,
        "git_uncommitted": None if constant["git_uncommitted"] is None else list(constant["git_uncommitted"]),
        "device_model_fusion": get_compile(),     # eager or compiled device models: the numbers depend on it
        "malloc": malloc_mode(),                  # glibc malloc thresholds (speed only, see imc_grapes.runtime)
        # the instruction set torch's CPU kernels use: float sums are ordered differently on AVX2 and AVX-512, so
        # the same seed gives (slightly) different numbers on the two
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        # torch's intra-op CPU threads (--threads, OMP_NUM_THREADS): a float sum split over another number of
        # threads is ordered differently, so the same seed gives (slightly) different digital numbers
        "torch_threads": torch.get_num_threads(),
        # int8 or float matmuls for the CPU pulse counts: the same counts, but the choice steers the cost model
        # of the sparse/dense update, hence the random stream (crossbar._sparse_update.int8_counts_mode)
        "cpu_pulse_counts": CPU_PULSE_COUNTS,
    }
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
    return info
