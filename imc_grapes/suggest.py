""""Did you mean ...?" for a name chosen from a fixed set (a data set, device preset, optimizer, experiment, field).

Every message that rejects such a name lists the valid ones; :func:`did_you_mean` (one name) and
:func:`did_you_mean_each` (several unknown names, e.g. fields) give the text appended to it when one valid name is
close to what was typed (both from :mod:`devices.suggest`, re-exported here: one implementation for every layer),
and :class:`SuggestingArgumentParser` does the same for argparse's ``choices`` (commands, ``--tune-score``,
experiment names).
"""
from __future__ import annotations

import argparse
from typing import Any

from devices.suggest import CUTOFF, close_match, did_you_mean, did_you_mean_each

__all__ = ["CUTOFF", "SuggestingArgumentParser", "close_match", "did_you_mean", "did_you_mean_each"]


class SuggestingArgumentParser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser` whose "invalid choice" error (an option or positional with ``choices``,
    or an unknown command) ends with :func:`did_you_mean`; its subcommand parsers are of the same class."""

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        try:
            super()._check_value(action, value)  # type: ignore[misc]
        except argparse.ArgumentError as exc:
            hint = did_you_mean(value, action.choices) if action.choices is not None else ""
            if not hint:
                raise
            raise argparse.ArgumentError(action, f"{exc.message}{hint}") from None
