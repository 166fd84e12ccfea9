"""Every command line the documentation shows still parses with the current command-line parsers.

Command lines are taken from the fenced code blocks and the inline code spans of README.md and docs/*.md and from
the ``examples:`` sections of the ``imc-grapes`` sub-commands' ``--help`` epilogs. A line is split like a shell
would (``\\`` continuations, ``$`` prompts, ``# comments``, ``VAR=value`` prefixes, ``;`` / ``&&`` / ``|`` chains,
a ``for`` loop's variable) and each command of it is checked with the parser that would read it:

* ``imc-grapes ...`` / ``python -m imc_grapes ...``: :func:`imc_grapes.cli.build_parser`, then the configuration
  the command would build from the options (``train_configs``, ``compare_spec``, the experiment's plan, the sweep
  spec's points; nothing is loaded or trained), so a wrong preset, optimizer or backend name fails too;
* ``python benchmarks/<script>.py ...``: the script's own ``build_parser()`` (and ``parse_args(argv)`` where the
  script checks more than argparse does);
* ``bash scripts/<script>.sh ...``: the script exists and takes the arguments (:data:`BASH_SCRIPTS`).

A mention rather than a command line (``imc-grapes experiment`` with nothing after the sub-command names, a bare
``benchmarks/x.py`` path) is checked for existence only: the sub-commands must exist, the script file too.

The other way round, every sub-command of ``imc-grapes`` (``data verify`` included) must appear in some command line
of README.md, so that a reader of the README can find it.

Placeholders (NAME, LR, ``<preset>``, ``...``) are replaced by valid values (:data:`PLACEHOLDER_WORDS`,
:data:`PLACEHOLDER_TEXT`, :func:`_fill_ellipses`); a line that is not meant to be run as it stands goes into
:data:`SKIP` with its reason (none now). All failing lines are reported at once as ``file:line: command: error``.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Callable, Iterator

import pytest

from imc_grapes import cli
from imc_grapes.config import OPTIMIZERS

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))

PLACEHOLDER_TEXT = {
    "DIR…": "docs/compare-mnist-reramsb docs/compare-mnist-ecram",  # compare-summary's report folders
    "<preset>": "reramsb",                                          # docs/compare-mnist-<preset>
    "[options]": "",                                                # "any options": the command without them
}
"""Placeholders written inside a word or standing for several words: replaced in the text before it is split."""
PLACEHOLDER_WORDS = {
    "NAME": "mlp",                              # imc-grapes experiment NAME
    "LR": "0.1",                                # --lr LR
    "PRESET": "ReRamSB",                        # --preset PRESET
    "COMMAND": "compare",                       # imc-grapes COMMAND --help
    "SPEC.toml": "examples/sweeps/dw_min.toml",  # imc-grapes sweep SPEC.toml
}
"""Placeholder words (whole shell words) and the valid value each is checked with."""
ELLIPSIS = "..."
"""``...`` (or ``…``) in a command: the value of the option before it, else "more options" (dropped)."""
SKIP: dict[str, str] = {}
"""Inline spans or lines (as written) that look like commands but are not meant to be run as they stand, each with
why (none at present: placeholders and mentions cover every doc line)."""
SHELL_WORDS = frozenset({"$", "do", "then", "else", "exec", "time", "nohup", "!"})
"""Shell words that may precede a command in a segment; dropped."""
OPERATORS = re.compile(r"^[;&|()]+$")
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
ALTERNATION = re.compile(r"\S*[\w-]\|[\w-]\S*")
"""A word like ``mlp|cnn|rnn`` (no spaces around ``|``: alternatives, not a pipe)."""
SCRIPT = re.compile(r"^(?:\./)?((?:benchmarks|examples)/[\w.-]+\.py)$")
BASH_SCRIPT = re.compile(r"^(?:\./)?(scripts/[\w.-]+\.sh)$")
PYTHON = re.compile(r"^(?:\S*/)?python3?$")


def _install_args(args: list[str]) -> str | None:
    return None if args in ([], ["--dev"]) else f"scripts/install.sh takes nothing or --dev, got {args}"


def _quickstart_args(args: list[str]) -> str | None:
    return _check_imc_grapes(["compare", *args])


BASH_SCRIPTS: dict[str, Callable[[list[str]], str | None]] = {
    "scripts/install.sh": _install_args,        # `[[ $1 == --dev ]]`: the dev extras
    "scripts/quickstart.sh": _quickstart_args,  # "$@" goes to `imc-grapes compare --out reports/quickstart`
    "scripts/test.sh": lambda args: None,       # "$@" goes to pytest
}
"""What each shell script does with its arguments: a check returning an error message or None."""


@dataclass(frozen=True)
class Command:
    """One documented command after splitting and placeholder substitution.

    Attributes:
        where: ``file:line`` of the doc (or ``imc-grapes X --help epilog``).
        text: the command's shell words after placeholder substitution, joined by spaces.
        kind: ``imc-grapes``, ``script`` (run by python, or given arguments), ``file`` (a bare script path: a
            mention) or ``bash``.
        program: ``imc-grapes`` or the script's path relative to the repository.
        args: the arguments after the program.
    """

    where: str
    text: str
    kind: str
    program: str
    args: tuple[str, ...]


# ---------------------------------------------------------------------------------------------------- extraction
def _logical_lines(lines: list[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    """Join ``\\``-continued lines: (first line number, joined text)."""
    start, parts = 0, []
    for no, line in lines:
        if not parts:
            start = no
        if line.rstrip().endswith("\\"):
            parts.append(line.rstrip()[:-1])
            continue
        parts.append(line)
        yield start, " ".join(p.strip() for p in parts)
        parts = []
    if parts:
        yield start, " ".join(p.strip() for p in parts)


def doc_snippets(path: Path) -> Iterator[tuple[str, str]]:
    """(``file:line``, text) of every fenced-code logical line and every inline code span of a Markdown file."""
    rel = path.relative_to(ROOT)
    lines = path.read_text().splitlines()
    prose, block, in_fence = [], [], False
    for no, line in enumerate(lines, 1):
        if line.lstrip().startswith("```"):
            if in_fence:
                yield from ((f"{rel}:{n}", t) for n, t in _logical_lines(block))
                block = []
            in_fence = not in_fence
            prose.append("")
        elif in_fence:
            block.append((no, line))
            prose.append("")
        else:
            prose.append(line)
    text = "\n".join(prose)
    for m in re.finditer(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", text, flags=re.DOTALL):
        if "\n\n" not in m.group(2):
            yield f"{rel}:{text.count(chr(10), 0, m.start()) + 1}", " ".join(m.group(2).split())


def epilog_snippets() -> Iterator[tuple[str, str]]:
    """(``imc-grapes X --help epilog``, text) of every line of the sub-commands' ``examples:`` sections. A
    continuation line that starts with ``...`` extends the example before it."""
    for name, parser in _subparsers(cli.build_parser(), "imc-grapes"):
        in_examples, previous = False, ""
        for line in (parser.epilog or "").splitlines():
            head = re.match(r"^examples?:\s*(.*)$", line)
            if head:
                in_examples, line = True, head.group(1)
                if not line:
                    continue
            elif not (in_examples and line.startswith("  ")):
                in_examples = False
                continue
            line = line.strip()
            if line.startswith("#"):            # a comment continued on the next line
                continue
            if line.startswith(ELLIPSIS):
                line = previous + line[len(ELLIPSIS):]
            previous = line.split(" #")[0].strip()
            yield f"{name} --help epilog", line


def _subparsers(parser: argparse.ArgumentParser, name: str) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every sub-command parser below ``parser`` (recursively), with its full command name."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield f"{name} {sub_name}", sub
                yield from _subparsers(sub, f"{name} {sub_name}")


def _variants(text: str) -> list[str]:
    """``a|b|c`` alternatives in a word expanded: one text per alternative (recursively)."""
    m = ALTERNATION.search(text)
    if m is None:
        return [text]
    return [v for alt in m.group(0).split("|")
            for v in _variants(text[:m.start()] + alt + text[m.end():])]


def _split(text: str) -> list[list[str]]:
    """Shell words of ``text`` (comments dropped), split into the segments of ``;``, ``&&``, ``|``."""
    lex = shlex.shlex(re.sub(r"\$\([^)]*\)", "SUBST", text), posix=True, punctuation_chars=";&|()")
    lex.whitespace_split, lex.commenters = True, "#"
    segments: list[list[str]] = [[]]
    for word in lex:
        if OPERATORS.match(word):
            segments.append([])
        else:
            segments[-1].append(word)
    return [s for s in segments if s]


def commands_in(where: str, text: str, skipped: dict[str, str]) -> list[Command]:
    """The commands of one doc snippet (none if it shows no command); a snippet of :data:`SKIP` is recorded in
    ``skipped`` (text -> where) instead."""
    text = text.strip()
    if text in SKIP:
        skipped[text] = where
        return []
    for old, new in PLACEHOLDER_TEXT.items():
        text = text.replace(old, new)
    text = text.replace("…", ELLIPSIS)
    out = []
    for variant in _variants(text):
        try:
            segments = _split(variant)
        except ValueError as exc:   # an unbalanced quote: only a failure if the snippet starts with a command
            if _classify(variant.split()) is not None:
                out.append(Command(where, variant, "unsplittable", "", (str(exc),)))
            continue
        loop_vars: dict[str, str] = {}
        for words in segments:
            while words and (words[0] in SHELL_WORDS or ASSIGNMENT.match(words[0])):
                words = words[1:]
            if len(words) >= 4 and words[0] == "for" and words[2] == "in":
                loop_vars[words[1]] = words[3]      # the loop's first value stands for every value
                continue
            words = [re.sub(r"\$(\w+)", lambda m: loop_vars.get(m.group(1), m.group(0)), w) for w in words]
            words = [PLACEHOLDER_WORDS.get(w, w) for w in words]
            found = _classify(words)
            if found is not None:
                out.append(Command(where, " ".join(words), *found))
    return out


def _classify(words: list[str]) -> tuple[str, str, tuple[str, ...]] | None:
    """(kind, program, args) of a segment's words if they are a command these tests check, else None."""
    if not words:
        return None
    first, rest = words[0], words[1:]
    if first.rsplit("/", 1)[-1] == "imc-grapes":
        return "imc-grapes", "imc-grapes", tuple(rest)
    if PYTHON.match(first) and rest[:1] == ["-m"] and len(rest) > 1:
        module = {"imc_grapes": (), "imc_grapes.sweep": ("sweep",)}.get(rest[1])
        return None if module is None else ("imc-grapes", "imc-grapes", (*module, *rest[2:]))
    if PYTHON.match(first) and rest:
        first, rest = rest[0], rest[1:]
    if SCRIPT.match(first):
        kind = "script" if rest or PYTHON.match(words[0]) else "file"
        return kind, SCRIPT.match(first).group(1), tuple(rest)   # type: ignore[union-attr]
    if first == "bash" and rest and BASH_SCRIPT.match(rest[0]):
        return "bash", BASH_SCRIPT.match(rest[0]).group(1), tuple(rest[1:])   # type: ignore[union-attr]
    return None


def all_commands() -> tuple[list[Command], dict[str, str]]:
    """Every documented command (docs, then the epilogs) and the :data:`SKIP` entries met (text -> where)."""
    skipped: dict[str, str] = {}
    snippets = [s for path in DOC_FILES for s in doc_snippets(path)] + list(epilog_snippets())
    return [c for where, text in snippets for c in commands_in(where, text, skipped)], skipped


# ---------------------------------------------------------------------------------------------------- checking
def _fill_ellipses(parser: argparse.ArgumentParser, args: list[str]) -> list[str]:
    """``...`` after an option that takes a value becomes a valid value of it (its first choice, 1 for a number,
    else ``x``); any other ``...`` (more options left out) is dropped."""
    out: list[str] = []
    for word in args:
        if word != ELLIPSIS:
            out.append(word)
            continue
        action = _leaf(parser, out)._option_string_actions.get(out[-1]) if out else None
        if action is not None and action.nargs != 0:
            out.append(str(next(iter(action.choices))) if action.choices
                       else "1" if action.type in (int, float) else "x")
    return out


def _leaf(parser: argparse.ArgumentParser, args: list[str]) -> argparse.ArgumentParser:
    """The sub-command parser that reads the options after ``args``' sub-command names."""
    for word in args:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction) and word in action.choices:
                parser = action.choices[word]
    return parser


def _parse(parse: Callable[[list[str]], argparse.Namespace], args: list[str]) -> tuple[argparse.Namespace | None,
                                                                                        str | None]:
    """(namespace, None), or (None, None) for ``--help``, or (None, argparse's error message)."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            return parse(args), None
    except SystemExit as exc:
        if exc.code in (0, None):
            return None, None
        return None, (err.getvalue().strip().splitlines() or [f"exit {exc.code}"])[-1]


def _check_values(ns: argparse.Namespace) -> None:
    """Build what the command would build from ``ns`` (raises ConfigError / ValueError on an invalid value)."""
    if ns.command == "train":
        cli.train_configs(ns)
    elif ns.command == "compare":
        cli.compare_spec(ns)
    elif ns.command == "experiment" and ns.name != "list" and not ns.redraw:   # --redraw: no options used
        from imc_grapes.experiments.cli import experiment_options
        from imc_grapes.experiments.definitions import plan_experiment

        plan_experiment(ns.name, experiment_options(ns))
    elif ns.command == "sweep":
        from imc_grapes.sweep.spec import load_spec

        load_spec(ROOT / ns.spec).points()
    elif ns.command == "compare-summary":
        bad = [n for n in (ns.method, ns.reference, ns.control) if n not in OPTIMIZERS]
        if bad:
            raise ValueError(f"--method/--reference/--control: not optimizers: {bad}")
    elif ns.command == "data":
        from imc_grapes.data import SOURCES, get_spec
        from imc_grapes.data.registry import SYNTHETIC

        for name in (n for n in ns.names if n != SYNTHETIC):
            get_spec(name)
        if getattr(ns, "source", "auto") not in SOURCES:
            raise ValueError(f"--source {ns.source!r} not in {SOURCES}")


def _names_subcommands(parser: argparse.ArgumentParser, args: list[str]) -> bool:
    """Whether ``args`` are only sub-command names, each one of the parser above it (a mention such as
    ``imc-grapes data fetch``; no args: the program itself)."""
    for word in args:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or word not in subs[0].choices:
            return False
        parser = subs[0].choices[word]
    return True


def _check_imc_grapes(args: list[str]) -> str | None:
    parser = cli.build_parser()
    args = _fill_ellipses(parser, args)
    if _names_subcommands(parser, args):
        return None
    ns, error = _parse(parser.parse_args, args)
    if ns is None:
        return error
    try:
        _check_values(ns)
    except Exception as exc:  # noqa: BLE001  (ConfigError, ValueError, SpecError, OSError: all are doc errors)
        return f"{type(exc).__name__}: {exc}"
    return None


_MODULES: dict[str, ModuleType] = {}


def _script_module(rel: str) -> ModuleType:
    """The script imported as a module (its ``main`` is not run), with its folder first on sys.path as when it is
    run as a script; sys.path is restored afterwards."""
    if rel not in _MODULES:
        saved = list(sys.path)
        try:
            sys.path.insert(0, str((ROOT / rel).parent))
            spec = importlib.util.spec_from_file_location(f"_doc_{Path(rel).stem}", ROOT / rel)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module     # its dataclasses look their module up while it runs
            spec.loader.exec_module(module)
        finally:
            sys.path[:] = saved
        _MODULES[rel] = module
    return _MODULES[rel]


def _check_script(rel: str, args: list[str]) -> str | None:
    if not (ROOT / rel).is_file():
        return f"no such script {rel}"
    module = _script_module(rel)
    if not hasattr(module, "build_parser"):
        return f"{rel} has no build_parser(): factor its argparse parser out of main() so that it can be checked"
    parser = module.build_parser()
    _, error = _parse(getattr(module, "parse_args", parser.parse_args), _fill_ellipses(parser, args))
    return error


def check(cmd: Command) -> str | None:
    """The error of one documented command, or None if it parses (and its values are valid)."""
    if cmd.kind == "imc-grapes":
        return _check_imc_grapes(list(cmd.args))
    if cmd.kind == "script":
        return _check_script(cmd.program, list(cmd.args))
    if cmd.kind == "file":
        return None if (ROOT / cmd.program).is_file() else f"no such script {cmd.program}"
    if cmd.kind == "bash":
        if not (ROOT / cmd.program).is_file():
            return f"no such script {cmd.program}"
        if cmd.program not in BASH_SCRIPTS:
            return f"{cmd.program}: add what it does with its arguments to BASH_SCRIPTS in this test"
        return BASH_SCRIPTS[cmd.program](list(cmd.args))
    return f"cannot split the line like a shell: {cmd.args[0]}"


# ---------------------------------------------------------------------------------------------------- tests
def test_every_documented_command_parses() -> None:
    commands, skipped = all_commands()
    failures = [f"{c.where}: {c.text}: {err}" for c in commands if (err := check(c)) is not None]
    assert not failures, f"{len(failures)} of {len(commands)} documented commands fail:\n" + "\n".join(failures)
    # the extraction finds what the docs show: both command kinds, every doc with commands, every epilog
    wheres = {c.where.split(":")[0] for c in commands}
    assert {"README.md", "docs/performance.md", "docs/results.md", "docs/sweeps.md", "docs/install.md"} <= wheres
    assert {f"imc-grapes {n} --help epilog" for n in ("train", "compare", "compare-summary", "sweep",
                                                       "experiment")} <= wheres
    assert {c.kind for c in commands} == {"imc-grapes", "script", "file", "bash"}
    assert len(commands) >= 60, len(commands)
    assert set(skipped) == set(SKIP), f"SKIP entries no doc line uses any more: {set(SKIP) - set(skipped)}"


def test_splitting_handles_prompts_continuations_comments_env_and_chains() -> None:
    lines = list(_logical_lines([(3, "$ imc-grapes train --epochs 2 \\"), (4, "    --seed 0 1   # two seeds")]))
    assert lines == [(3, "$ imc-grapes train --epochs 2 --seed 0 1   # two seeds")]
    skipped: dict[str, str] = {}
    [cmd] = commands_in("x.md:3", lines[0][1], skipped)
    assert (cmd.kind, cmd.args) == ("imc-grapes", ("train", "--epochs", "2", "--seed", "0", "1"))
    text = ("OPENBLAS_NUM_THREADS=1 TMP=$(mktemp -d) .venv/bin/python benchmarks/bench_suite.py --only mlp "
            "&& imc-grapes sweep SPEC.toml --report | tee log; for p in EcRam PCM; do imc-grapes compare "
            "--preset $p --out r/$p; done")
    got = [(c.kind, c.program, c.args) for c in commands_in("x.md:1", text, skipped)]
    assert got == [("script", "benchmarks/bench_suite.py", ("--only", "mlp")),
                   ("imc-grapes", "imc-grapes", ("sweep", "examples/sweeps/dw_min.toml", "--report")),
                   ("imc-grapes", "imc-grapes", ("compare", "--preset", "EcRam", "--out", "r/EcRam"))]
    got = [c.args for c in commands_in("x.md:1", "imc-grapes experiment mlp|cnn --quick", skipped)]
    assert got == [("experiment", "mlp", "--quick"), ("experiment", "cnn", "--quick")]
    assert commands_in("x.md:1", "python -m pytest -q", skipped) == []      # not a command of this project
    assert skipped == {}


def test_a_skip_entry_is_recorded_not_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(SKIP, "imc-grapes train --lr ${LR:-0.1}", "shell default syntax")
    skipped: dict[str, str] = {}
    assert commands_in("x.md:7", " imc-grapes train --lr ${LR:-0.1} ", skipped) == []
    assert skipped == {"imc-grapes train --lr ${LR:-0.1}": "x.md:7"}


def test_placeholders_and_ellipses_become_valid_values() -> None:
    parser = cli.build_parser()
    assert _fill_ellipses(parser, ["compare", "--out", ELLIPSIS, "--epochs", ELLIPSIS, ELLIPSIS, "--lr", "1"]) == [
        "compare", "--out", "x", "--epochs", "1", "--lr", "1"]
    assert _fill_ellipses(parser, ["compare", "--tune-score", ELLIPSIS]) == ["compare", "--tune-score", "final"]
    [cmd] = commands_in("x.md:1", "imc-grapes compare-summary DIR… --out …", {})
    assert cmd.args == ("compare-summary", "docs/compare-mnist-reramsb", "docs/compare-mnist-ecram", "--out", "...")
    assert check(cmd) is None


def test_drifted_commands_are_reported() -> None:
    def errors(text: str) -> list[str | None]:
        return [check(c) for c in commands_in("x.md:1", text, {})]

    [err] = errors("imc-grapes train --no-such-flag 1")
    assert err is not None and "--no-such-flag" in err
    [err] = errors("imc-grapes expriment mlp")                             # a wrong sub-command
    assert err is not None and "expriment" in err
    [err] = errors("imc-grapes compare --preset ReRamXX")                  # parses; the config rejects the value
    assert err is not None and "ReRamXX" in err
    [err] = errors("imc-grapes train --optimizer sgd adam-grapes")
    assert err is not None and "adam-grapes" in err
    [err] = errors("python benchmarks/profile_step.py --kind rnn")         # the script's own choices
    assert err is not None and "rnn" in err
    [err] = errors("python benchmarks/bench_suite.py --only mlp,gpu")      # the script's own extra check
    assert err is not None and "gpu" in err
    [err] = errors("bash scripts/install.sh --devel")
    assert err is not None and "--devel" in err
    [err] = errors("benchmarks/bench_nothing.py")                          # a mention of a script that is gone
    assert err is not None and "bench_nothing" in err
    [err] = errors("imc-grapes data fech")                                 # a mention of a wrong sub-command
    assert err is not None and "fech" in err
    assert errors("imc-grapes data fetch") == [None]                       # a mention of a command
    assert errors("imc-grapes train --help") == [None]                     # help is fine


def test_every_sub_command_is_shown_in_the_readme() -> None:
    # a sub-command the CLI has but the README's command list never shows is one a reader cannot find
    # (`imc-grapes data verify` was such a one)
    shown = {" ".join(("imc-grapes", *c.args[:2])) for c in all_commands()[0]
             if c.kind == "imc-grapes" and c.where.startswith("README.md:")}
    shown |= {" ".join(name.split()[:2]) for name in shown}
    missing = [name for name, _ in _subparsers(cli.build_parser(), "imc-grapes") if name not in shown]
    assert not missing, f"sub-commands no README command line shows: {missing}"
