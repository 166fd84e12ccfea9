"""Optional kernel fusion of the device models' elementwise closed forms (``torch.compile``).

The count-based device responses — :func:`devices._closed_forms.linear_moments` for the linear-step / soft-bounds
family (ReRamSB, EcRam, EcRamMO, Capacitor) and the exp-step flow of :mod:`devices.exp_step` (ReRamES, PCM) — are
chains of one to several hundred elementwise operations per device. In eager mode each is one pass over every
device of a layer (most of an analog training step); ``torch.compile`` fuses the chain into one loop (7–11× and
5× faster per call, ``benchmarks/bench_fusion.py``), which makes a 784-256-256-10 training step 1.2–3.3× faster
(``docs/performance.md``; most for the exp-step models, whose responses are the longest chains). The compiled
kernel computes the same formulas; results agree with eager mode to float rounding (a few ulps: fused
multiply-adds, vectorized transcendental functions) and do not depend on a device's position in the tensor, so
everything that is bit-identical in eager mode (replicas vs single runs, sparse vs dense update paths) stays
bit-identical when compiled. A training run's numbers do depend on the mode (rounding differences grow along the
trajectory), so the mode is recorded with every result (``versions()['device_model_fusion']``).

Modes (:func:`set_compile`, or the environment variable ``IMC_GRAPES_COMPILE`` read at import; an invalid value
raises ``ValueError`` at the first use, :func:`check_env`):

* ``"off"`` (default): always eager. Compiling costs ≈ 17 s per process for the linear-step kernel and ≈ 64 s
  for the exp-step one on a cold cache (less when torch's on-disk cache already holds the kernel), which the small
  default jobs and the test suite would not earn back.
* ``"auto"``: compile on first use; if compiling fails (no C++ compiler for the CPU backend, no Triton for
  CUDA, an unsupported torch), warn once and run eagerly from then on. Worth it for runs of more than a few
  thousand analog training steps (a full-MNIST comparison, long sweeps, the paper experiments at full size).
* ``"on"``: compile, and raise if that fails.

Only pure tensor functions without random draws are fused: the random numbers keep coming from the engine's
generators, so seeds and streams are unchanged.
"""

from __future__ import annotations

import functools
import os
import warnings
from typing import Any, Callable, TypeVar

import torch

from devices.suggest import did_you_mean

__all__ = ["COMPILE_ENV", "COMPILE_MODES", "Scalar", "check_env", "set_compile", "get_compile", "fusion_active",
           "constants", "expm1", "fused"]

COMPILE_MODES = ("auto", "on", "off")
"""Valid values of :func:`set_compile` and of ``IMC_GRAPES_COMPILE``."""

COMPILE_ENV = "IMC_GRAPES_COMPILE"
"""The environment variable read at import (see the module docstring)."""

F = TypeVar("F", bound=Callable[..., Any])

Scalar = float | torch.Tensor
"""A constant argument of a :func:`fused` function: a number (eager) or a 0-d tensor (compiled), see
:func:`constants`."""


def _check_mode(mode: str, where: str) -> str:
    if mode not in COMPILE_MODES:
        raise ValueError(f"{where} must be one of {', '.join(COMPILE_MODES)}, got {mode!r}"
                         f"{did_you_mean(mode, COMPILE_MODES)}")
    return mode


def _mode_from_env() -> tuple[str | None, str | None]:
    """The mode ``IMC_GRAPES_COMPILE`` asks for (``off`` when unset) and ``None``; or ``None`` and why its value is
    invalid. An invalid value does not fail the import (so that ``imc-grapes --help`` works and the command line
    reports it as a usage error, :func:`check_env`); the first fused call raises it instead."""
    try:
        return _check_mode(os.environ.get(COMPILE_ENV, "off").strip().lower(), COMPILE_ENV), None
    except ValueError as exc:
        return None, str(exc)


_ENV_MODE, _ENV_ERROR = _mode_from_env()
_STATE: dict[str, Any] = {"mode": _ENV_MODE, "failed": None, "env_error": _ENV_ERROR}


def check_env() -> None:
    """Raise the error of an invalid ``IMC_GRAPES_COMPILE`` (read at import), unless :func:`set_compile` chose a
    mode since. The ``imc-grapes`` command calls it before any work; library code gets the same error from the
    first :func:`fusion_active` / :func:`fused` call.

    Raises:
        ValueError: ``IMC_GRAPES_COMPILE`` is not one of :data:`COMPILE_MODES` (the message names it and them).
    """
    if _STATE["mode"] is None:
        raise ValueError(_STATE["env_error"])


def set_compile(mode: str) -> None:
    """Choose how :func:`fused` functions run: ``"auto"``, ``"on"`` or ``"off"`` (see the module docstring).

    Raises:
        ValueError: ``mode`` is not one of :data:`COMPILE_MODES`.
    """
    _STATE["mode"] = _check_mode(mode, "set_compile(mode)")
    _STATE["failed"] = None


def get_compile() -> str:
    """The current mode; ``"off (compile failed: …)"`` after a failed ``"auto"`` attempt; ``"invalid (…)"`` while
    an invalid ``IMC_GRAPES_COMPILE`` stands (:func:`check_env`; recorded as it is, never raises)."""
    if _STATE["mode"] is None:
        return f"invalid ({_STATE['env_error']})"
    failed = _STATE["failed"]
    return _STATE["mode"] if failed is None else f"off (compile failed: {failed})"


def _flat_args(args: tuple[Any, ...]) -> tuple[tuple[Any, ...], torch.Size] | None:
    """The arguments as the compiled kernel takes them, and the common shape; ``None`` to run eagerly.

    Tensors of the common shape become contiguous 1-D tensors that are not views (so that one kernel serves every
    layer shape, and no guard watches a base tensor or a stride: packed or gathered per-device parameters would
    otherwise recompile it); 0-d tensors pass as they are. Broadcasting arguments and fewer than two elements
    (sizes 0 and 1 would each get a kernel of their own) run eagerly."""
    shaped = [a for a in args if isinstance(a, torch.Tensor) and a.dim() > 0]
    if not shaped:
        return None
    shape = shaped[0].shape
    if shaped[0].numel() < 2 or any(t.shape != shape for t in shaped):
        return None
    flat = tuple(a.contiguous().view(-1).detach() if isinstance(a, torch.Tensor) and a.dim() > 0
                 else a.detach() if isinstance(a, torch.Tensor) else a for a in args)
    return flat, shape


def fusion_active() -> bool:
    """Whether :func:`fused` functions run compiled now (mode ``auto``/``on`` and no failed attempt). Callers pass
    tile-wide constants as 0-d tensors then, as numbers otherwise (so eager results stay those of plain code).

    Raises:
        ValueError: ``IMC_GRAPES_COMPILE`` was invalid at import and no :func:`set_compile` followed.
    """
    mode = _STATE["mode"]
    if mode is None:
        check_env()
    return mode != "off" and _STATE["failed"] is None


def constants(like: torch.Tensor, *values: float) -> tuple[Scalar, ...]:
    """``values`` as :func:`fused` functions should receive them: 0-d tensors of ``like``'s dtype and device while
    fusion is active (one compiled kernel then serves every value), the plain numbers otherwise (so eager results
    stay exactly those of plain code)."""
    if fusion_active():
        return tuple(like.new_full((), v) for v in values)
    return values


def expm1(x: torch.Tensor) -> torch.Tensor:
    """``torch.expm1``, accurate also inside ``torch.compile``: inductor's CPU kernel evaluates ``exp(x) − 1``,
    which loses every digit for ``|x| ≪ 1`` (the tiny slopes of the device models), so compiled code uses Kahan's
    ``(u − 1)·x / log(u)`` with ``u = exp(x)`` (a few ulps; ``x`` where ``u`` rounds to 1). Fused functions call
    this instead of ``torch.expm1``."""
    if not torch.compiler.is_compiling():
        return torch.expm1(x)
    u = torch.exp(x)
    um1 = u - 1
    return torch.where(um1 == 0, x, torch.where((um1 == -1) | torch.isinf(u), um1, um1 * x / torch.log(u)))


def fused(fn: F) -> F:
    """Decorator: run ``fn`` through ``torch.compile(dynamic=True)`` according to the current mode; eager otherwise.

    ``fn`` must be a pure *elementwise* tensor function (every tensor argument of one shape, or 0-d; results of
    that shape), without random draws or host reads. Non-tensor arguments (flags, Python numbers) specialise the
    compiled kernel, so pass values that vary between calls (noise levels) as 0-d tensors. The CPU kernel runs on
    as many threads as torch had at the first call (``torch.get_num_threads()``, set before it). The original
    function stays available as ``.eager``."""
    compiled: list[Callable[..., Any]] = []

    @functools.wraps(fn)
    def wrapper(*args: Any) -> Any:
        if not fusion_active() or torch.compiler.is_compiling():
            return fn(*args)
        prepared = _flat_args(args)
        if prepared is None:
            return fn(*args)
        if not compiled:
            # the thread count in inductor's config, so part of its cache key: a CPU kernel is compiled for one
            # (`omp parallel num_threads(k)`), and one cached by a process with more threads ran 2.1x slower in
            # a 1-thread process (docs/performance.md)
            compiled.append(torch.compile(fn, dynamic=True, fullgraph=True,
                                          options={"cpp.threads": torch.get_num_threads()}))
        flat, shape = prepared
        try:
            out = compiled[0](*flat)
        except Exception as exc:   # compiler missing or unsupported: eager from now on (or raise with "on")
            if _STATE["mode"] == "on":
                raise
            _STATE["failed"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            warnings.warn(f"devices.fusion: torch.compile failed, running the device models eagerly "
                          f"({_STATE['failed']}); set IMC_GRAPES_COMPILE=off to skip the attempt", RuntimeWarning,
                          stacklevel=2)
            return fn(*args)
        if isinstance(out, tuple):
            return tuple(o.view(shape) if isinstance(o, torch.Tensor) else o for o in out)
        return out.view(shape) if isinstance(out, torch.Tensor) else out

    wrapper.eager = fn  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]
