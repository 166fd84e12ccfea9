""""Did you mean ...?" for a name chosen from a fixed set (a data set, device preset, optimizer, experiment, field).

Every message that rejects such a name lists the valid ones; :func:`did_you_mean` (one name) and
:func:`did_you_mean_each` (several unknown names, e.g. fields) give the text appended to it when one valid name is
close to what was typed (both from :mod:`devices.suggest`, re-exported here: one implementation for every layer),
and :class:`SuggestingArgumentParser` does the same for argparse's ``choices`` (commands, ``--tune-score``,
experiment names) and for a mistyped option of a subcommand (``imc-grapes train --lrr 0.1``), which it reports
through that subcommand's parser (its usage and name) instead of the top-level one. It takes no abbreviated option
(argparse's ``allow_abbrev`` is off): ``imc-grapes train --hid 64`` is refused with "did you mean '--hidden'?"
rather than read as ``--hidden 64``, so that a script's command line means what it spells, and keeps meaning it
when a later version adds an option that the abbreviation also starts. It also records which options were typed
(:func:`typed_options`), so that a command can tell an option typed at its default value from one left out.
"""
from __future__ import annotations

import argparse
import functools
import re
from typing import Any

from devices.suggest import CUTOFF, close_match, did_you_mean, did_you_mean_each

__all__ = ["CUTOFF", "SuggestingArgumentParser", "close_match", "did_you_mean", "did_you_mean_each", "typed_options",
           "unrecognized_message"]

#: the attribute of a namespace parsed by a :class:`SuggestingArgumentParser` that holds the options typed on the
#: command line (:func:`typed_options`)
TYPED_ATTR = "_typed_options"


def typed_options(args: argparse.Namespace) -> dict[str, str]:
    """The options typed on the command line that ``args`` was parsed from (by a :class:`SuggestingArgumentParser`),
    as ``{dest: the option string last typed for it}`` (``{"seed": "--seeds", "drop_last": "--no-drop-last"}``), in
    the order first typed. An option left out, whose value is its default, is not in it; one typed at its default
    value is (``--out-noise 0.06``). Empty for a namespace made otherwise."""
    return dict(vars(args).get(TYPED_ATTR, {}))


class _RecordsTyped(argparse.Action):
    """Mixed into argparse's action classes by :class:`SuggestingArgumentParser`: the action, when its option is
    typed, does what it does and notes the option string in the namespace (:func:`typed_options`)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        super().__call__(parser, namespace, values, option_string)
        if option_string is not None:       # a positional is no option
            vars(namespace).setdefault(TYPED_ATTR, {})[self.dest] = option_string


@functools.cache
def _recording(action_class: type[argparse.Action]) -> type[argparse.Action]:
    """``action_class`` with :class:`_RecordsTyped` mixed in (one class per action class)."""
    return type(action_class.__name__, (_RecordsTyped, action_class), {"__doc__": action_class.__doc__})


#: the action names and classes whose options :class:`SuggestingArgumentParser` records when typed: every action
#: that sets a value (not help, version or the subcommands); ``None`` is argparse's default, store
_RECORDED_ACTIONS: tuple[str | type[argparse.Action] | None, ...] = (
    None, "store", "store_const", "store_true", "store_false", "append", "append_const", "count", "extend",
    argparse.BooleanOptionalAction)


def unrecognized_message(parser: argparse.ArgumentParser, extras: list[str]) -> str:
    """argparse's ``unrecognized arguments: ...`` for the leftover command-line words ``extras`` of ``parser``,
    ending with :func:`did_you_mean_each` for those that look like options (``--lrr`` or ``--lrr=0.1``; a negative
    number is a value) among ``parser``'s own option strings (those shown in its help); an abbreviation, which the
    parser refuses, is pointed to the one option it begins (``--hid`` -> ``--hidden``)."""
    valid = [s for a in parser._actions if a.help != argparse.SUPPRESS for s in a.option_strings]
    typed = [e.split("=", 1)[0] for e in extras
             if e[:1] in parser.prefix_chars and not parser._negative_number_matcher.match(e)]
    hint = did_you_mean_each(typed, valid, abbreviations=True) if typed else ""
    return f"unrecognized arguments: {' '.join(extras)}{hint}"


class _Subcommands(argparse._SubParsersAction):
    """The subcommands of a :class:`SuggestingArgumentParser`: the words the chosen subcommand's parser leaves over
    are an error of that parser (``imc-grapes train: error: unrecognized arguments: --lrr 0.1; did you mean
    '--lr'?`` under its usage, exit status 2), not handed back to the parser above (which named no subcommand and
    showed its own usage: argparse's default)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        super().__call__(parser, namespace, values, option_string)
        extras = vars(namespace).pop(argparse._UNRECOGNIZED_ARGS_ATTR, None)   # where argparse leaves them
        if extras:
            chosen = self.choices[values[0]]
            chosen.error(unrecognized_message(chosen, extras))


NEGATIVE_NUMBER = re.compile(r"^-(?:(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|inf|infinity|nan)$", re.IGNORECASE)
"""What :class:`SuggestingArgumentParser` reads as a negative number, an option's value, rather than an option:
argparse's own pattern (``-1``, ``-0.5``; Python 3.11) took ``--lr -1e-3`` or ``--lr -inf`` for an option and said
"expected one argument" instead of the option's own range check."""


class SuggestingArgumentParser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser` whose "invalid choice" error (an option or positional with ``choices``,
    or an unknown command) ends with :func:`did_you_mean`; its subcommand parsers are of the same class, and one's
    unrecognized arguments are its own error, with :func:`did_you_mean_each` for a mistyped option
    (:class:`_Subcommands`). Its own unrecognized arguments get the suggestion too (:meth:`parse_args`). Options
    must be spelled in full: ``allow_abbrev`` is False unless given (the subcommand parsers, made by this class,
    inherit it). The options typed are recorded in the namespace (:func:`typed_options`): its actions, named
    (``action="store_true"``) or :class:`argparse.BooleanOptionalAction`, are argparse's with the record added;
    defaults, and so the help's ``%(default)s``, are as given."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = NEGATIVE_NUMBER
        self.register("action", "parsers", _Subcommands)
        for action in _RECORDED_ACTIONS:
            self.register("action", action, _recording(self._registry_get("action", action, action)))

    def parse_args(self, args: Any = None, namespace: Any = None) -> Any:
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            self.error(unrecognized_message(self, extras))
        return parsed

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        try:
            super()._check_value(action, value)  # type: ignore[misc]
        except argparse.ArgumentError as exc:
            hint = did_you_mean(value, action.choices) if action.choices is not None else ""
            if not hint:
                raise
            raise argparse.ArgumentError(action, f"{exc.message}{hint}") from None
