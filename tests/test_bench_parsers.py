"""The benchmark scripts' command lines take no abbreviated option, as ``imc-grapes`` takes none: each script's
parser is a :class:`~imc_grapes.suggest.SuggestingArgumentParser`, so ``--step 5`` is refused with "did you mean
'--steps'?" instead of being read as ``--steps 5`` (a documented or scripted command line keeps meaning what it
spells when a script gains an option that the abbreviation also begins). Nothing is run: only the parsers."""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from imc_grapes.suggest import SuggestingArgumentParser
from tests.test_docs_commands import _script_module

ROOT = Path(__file__).resolve().parents[1]
#: every script of benchmarks/ that parses its own command line (bench_crossbar.py hands its to bench_suite.py)
PARSING = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "benchmarks").glob("*.py")
                 if "argparse" in p.read_text(encoding="utf-8"))


def _abbreviations(parser: argparse.ArgumentParser) -> list[tuple[str, str]]:
    """(``--option`` less its last letter, ``--option``) for each long option shown in the help whose shortened
    spelling begins no other option and is none itself: what argparse with ``allow_abbrev`` would read as it."""
    options = [s for a in parser._actions if a.help != argparse.SUPPRESS for s in a.option_strings
               if s.startswith("--")]
    every = [s for a in parser._actions for s in a.option_strings]
    return [(o[:-1], o) for o in options if len(o) > 3 and [s for s in every if s.startswith(o[:-1])] == [o]]


def test_the_scripts_that_parse_a_command_line_are_found() -> None:
    """The list the parametrized test walks is the benchmark scripts (a glob that found nothing would pass it)."""
    assert {"benchmarks/bench_suite.py", "benchmarks/bench_malloc.py", "benchmarks/bench_replicas.py",
            "benchmarks/check_crossbar_cuda.py", "benchmarks/check_graph_training_cuda.py",
            "benchmarks/profile_step.py"} <= set(PARSING)
    assert "benchmarks/bench_crossbar.py" not in PARSING


@pytest.mark.parametrize("script", PARSING)
def test_every_benchmark_parser_refuses_an_abbreviation_and_names_the_option(
        script: str, capsys: pytest.CaptureFixture[str]) -> None:
    module = _script_module(script)
    assert hasattr(module, "build_parser"), f"{script}: factor its parser out of main() into build_parser()"
    parser = module.build_parser()
    assert isinstance(parser, SuggestingArgumentParser) and parser.allow_abbrev is False
    pairs = _abbreviations(parser)
    assert pairs, f"{script}: no option to abbreviate"
    for short, option in pairs:
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args([short])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.splitlines()[-1]
        assert err.endswith(f"error: unrecognized arguments: {short}; did you mean {option!r}?"), (script, err)


def test_an_abbreviation_given_to_a_script_is_refused_before_it_runs() -> None:
    """The brief's example, end to end: ``--step 5`` was read as ``--steps 5``; now exit status 2, no run."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_malloc.py"), "--step", "5"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines()[-1] == ("bench_malloc.py: error: unrecognized arguments: --step 5; did you mean "
                                            "'--steps'?")


def test_bench_crossbar_passes_its_options_to_the_suites_strict_parser(capsys: pytest.CaptureFixture[str]) -> None:
    module = _script_module("benchmarks/bench_crossbar.py")
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--skip-aih"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(
        "error: unrecognized arguments: --skip-aih; did you mean '--skip-aihwkit'?")
