"""SIGTERM handled like Ctrl-C by the long-running commands (``train``, ``compare``, ``experiment``, ``sweep``).

A batch scheduler's stop or a plain ``kill`` sends SIGTERM, whose default action ends the process on the spot: a
run's results.json would keep status ``running`` and a sweep's workers would be left to their own devices. Within
:func:`sigterm_as_interrupt` a SIGTERM raises :class:`Terminated`, a ``KeyboardInterrupt``, so the same code that
handles Ctrl-C handles it (runs record ``interrupted``, sweeps end their workers) and the command exits with
:func:`exit_status` (143 for SIGTERM, 130 for Ctrl-C, as a shell reports a process ended by either signal).

A signal's handler runs between two bytecodes of the main thread, wherever it is: inside a ``__del__`` or a weakref
callback its exception is printed ("Exception ignored in: ... Terminated") and discarded, and the command would run
on to the end and exit 0. So the handlers (SIGTERM's, and Ctrl-C's when Python's own is in place) also record the
request, and :func:`raise_if_stop_requested`, called at safe points (each training batch and evaluation point,
each batch of an evaluation and each time of the accuracy after drift, between the runs of ``compare`` /
``experiment`` and the points of a sweep, and when the block ends), raises it
again when it was lost that way. :func:`stop_handled` forgets it once the stop was recorded (a run's status
``interrupted``), so the cleanup that follows is not stopped twice.
"""
from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["Terminated", "exit_status", "raise_if_stop_requested", "sigterm_as_interrupt", "stop_handled"]


class Terminated(KeyboardInterrupt):
    """A SIGTERM received within :func:`sigterm_as_interrupt`, raised as a ``KeyboardInterrupt``."""


#: the stop signal (SIGTERM or SIGINT) received within :func:`sigterm_as_interrupt` and not yet handled: set by its
#: handler before it raises, cleared by :func:`raise_if_stop_requested`, :func:`stop_handled` and the block's ends
_requested: int | None = None


def _stop_exception(signum: int) -> KeyboardInterrupt:
    """What a stop signal raises: :class:`Terminated` for SIGTERM, a plain ``KeyboardInterrupt`` for Ctrl-C."""
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    """The handler of SIGTERM (and of SIGINT in place of Python's own): record the request, then raise it."""
    global _requested
    _requested = signum
    raise _stop_exception(signum)


def raise_if_stop_requested() -> None:
    """Raise the stop (:class:`Terminated`, or ``KeyboardInterrupt`` for Ctrl-C) received within
    :func:`sigterm_as_interrupt` whose exception was swallowed (raised inside a ``__del__`` or a weakref callback);
    once: the request is then forgotten. Nothing to do otherwise, outside the block or in another thread than the
    main one (a Python flag check: cheap enough for once per training batch)."""
    global _requested
    signum = _requested
    if signum is None or threading.current_thread() is not threading.main_thread():
        return
    _requested = None
    raise _stop_exception(signum)


def stop_handled() -> None:
    """Forget the stop request: the ``KeyboardInterrupt`` it raised has been caught and recorded (a run's status
    ``interrupted``), and the code that follows (the command shutting down) must not raise it a second time."""
    global _requested
    _requested = None


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block a SIGTERM raises :class:`Terminated` (in the main thread only: elsewhere no handler can be
    set, and the block runs unchanged); the previous handler is restored when the block is left.

    Both SIGTERM and Ctrl-C (when SIGINT has Python's own handler: an ignored SIGINT stays ignored) record the
    request too (:func:`raise_if_stop_requested`); it is forgotten when the (outermost) block is entered and when a
    block is left, and one still pending when the block ends normally (swallowed after the last safe point) is
    raised then."""
    global _requested
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if signal.getsignal(signal.SIGTERM) is not _raise_stop:     # not within another such block: its request stays
        _requested = None
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    own_sigint = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if own_sigint:
        signal.signal(signal.SIGINT, _raise_stop)
    try:
        yield
        raise_if_stop_requested()
    finally:
        if own_sigint:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
        _requested = None


def exit_status(exc: KeyboardInterrupt) -> int:
    """The exit status of a command stopped by ``exc``: 143 for a SIGTERM (:class:`Terminated`), 130 for Ctrl-C."""
    return 143 if isinstance(exc, Terminated) else 130
