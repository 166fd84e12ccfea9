"""SIGTERM handled like Ctrl-C by the long-running commands (``train``, ``compare``, ``experiment``, ``sweep``).

A batch scheduler's stop or a plain ``kill`` sends SIGTERM, whose default action ends the process on the spot: a
run's results.json would keep status ``running`` and a sweep's workers would be left to their own devices. Within
:func:`sigterm_as_interrupt` a SIGTERM raises :class:`Terminated`, a ``KeyboardInterrupt``, so the same code that
handles Ctrl-C handles it (runs record ``interrupted``, sweeps end their workers) and the command exits with
:func:`exit_status` (143 for SIGTERM, 130 for Ctrl-C, as a shell reports a process ended by either signal).
"""
from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["Terminated", "exit_status", "sigterm_as_interrupt"]


class Terminated(KeyboardInterrupt):
    """A SIGTERM received within :func:`sigterm_as_interrupt`, raised as a ``KeyboardInterrupt``."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block a SIGTERM raises :class:`Terminated` (in the main thread only: elsewhere no handler can be
    set, and the block runs unchanged); the previous handler is restored when the block is left."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def exit_status(exc: KeyboardInterrupt) -> int:
    """The exit status of a command stopped by ``exc``: 143 for a SIGTERM (:class:`Terminated`), 130 for Ctrl-C."""
    return 143 if isinstance(exc, Terminated) else 130
