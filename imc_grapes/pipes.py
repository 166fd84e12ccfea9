"""Command-line output into a pipe whose reader closes early (``imc-grapes sweep SPEC --status | head -1``).

Python ignores ``SIGPIPE``, so a write to such a pipe raises :class:`BrokenPipeError` instead of ending the
process quietly as the shell's own tools do; left alone, it ends the command with a traceback, or (when the
output is still buffered at exit, e.g. after ``--help``) with "Exception ignored ... BrokenPipeError" and exit
status 120. :func:`exit_quietly_on_broken_pipe` wraps a command's entry point the way Python's documentation
recommends (library/signal.html, "Note on SIGPIPE"): catch the error, point standard output at ``os.devnull`` so
that the interpreter's final flush has nowhere to fail, and return :data:`BROKEN_PIPE_EXIT`.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

__all__ = ["BROKEN_PIPE_EXIT", "exit_quietly_on_broken_pipe"]

BROKEN_PIPE_EXIT = 141
"""Exit status after the reader of standard output went away: 128 + SIGPIPE (13), what a shell reports for a
process that the default ``SIGPIPE`` action ended (``yes | head -1`` leaves ``${PIPESTATUS[0]}`` at 141), so
that scripts see the same status from ``imc-grapes`` as from any other command cut short by ``head``."""


def exit_quietly_on_broken_pipe(entry: Callable[[Sequence[str] | None], int],
                                argv: Sequence[str] | None) -> int:
    """Run ``entry(argv)`` and return its exit status; if standard output turns out to be a closed pipe (while it
    runs or when its buffered output is flushed afterwards, also after an argparse ``--help`` / usage error, which
    raise :class:`SystemExit`), print nothing more and return :data:`BROKEN_PIPE_EXIT` instead of a traceback.

    Whatever was left in the output buffer is dropped (the reader is gone); standard error is untouched, so an
    error the command reported there before the pipe broke is still seen."""
    try:
        try:
            return entry(argv)
        finally:    # flush now, inside the handler: a failure at the interpreter's exit could not be caught
            if sys.stdout is not None:
                sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
        return BROKEN_PIPE_EXIT


def _silence_stdout() -> None:
    """Point file descriptor 1 (and so ``sys.stdout``, whose buffer still holds the unwritten output) at
    ``os.devnull``: the interpreter flushes ``sys.stdout`` at exit, and would otherwise fail on the pipe again."""
    if sys.stdout is None:
        return
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):   # replaced by an object without a descriptor (e.g. a test's)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)
