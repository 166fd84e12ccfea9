"""What the documentation points at exists: links, repository paths, Python names and the Python examples.

:mod:`tests.test_docs_commands` checks the command lines the docs show; this module checks the rest of what a reader
follows from them:

* every relative Markdown link (``[text](path#anchor)``, images too) of README.md and of every ``.md`` under docs/
  (the pages and the stored reports) names a file that exists and, for a ``#anchor`` into a Markdown file, a heading
  of it (GitHub's anchor of the heading's text, :func:`github_anchor`); the one known exception is
  :data:`UNSTORED_LINKS`;
* every repository path in an inline code span of README.md and docs/*.md (``imc_grapes/backends/costs.py``,
  ``tests/crossbar/test_sync_free.py``; ``<placeholder>`` and ``*`` are globs that must match) exists;
* every dotted Python name in an inline code span (``crossbar.to_aihwkit_rpu_config``, ``devices.no_host_reads()``)
  imports;
* every ``python`` code block runs as written, as a module that is not ``__main__`` (so an example that guards
  its expensive part with ``if __name__ == "__main__":``, as a script that spawns worker processes must, runs only
  its imports and definitions here);
* every long option (``--no-drop-last``) named anywhere in README.md and docs/*.md, prose included, is one that a
  program of the project takes (:func:`project_options`): a renamed or removed option is caught even where no
  command line shows it; the known exceptions are :data:`FOREIGN_OPTIONS`;
* every commit abbreviation README.md and docs/*.md cite (``f247ece``: where a fix or a measured number came from)
  is a commit of the repository's history (skipped in a clone without full history).
* every table of README.md that quotes a compare report's rows (``| analog | grapes | 0.1 | 74.03 ± 3.52 | ...``)
  quotes them, to the digit, from one stored ``docs/compare-*/report.md``.
"""
from __future__ import annotations

import importlib
import re
import subprocess
import unicodedata
from pathlib import Path
from typing import Iterator

import pytest

from imc_grapes import cli

from .test_docs_commands import _subparsers

ROOT = Path(__file__).resolve().parents[1]
PAGES = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))
"""The pages a reader reads: their code spans and Python blocks are checked."""
MARKDOWN = (ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")))
"""Every Markdown file of the documentation, stored reports included: their links are checked."""
UNSTORED_LINKS = {"docs/results/": "groups/"}
"""Links that may lead nowhere: a report under the key folder linking into the value folder. The experiment
reports link to their per-group folders, which were not stored (docs/results.md says so)."""
REPO_DIRS = ("devices", "crossbar", "imc_grapes", "tests", "examples", "benchmarks", "scripts", "docs", ".ci")
PATH_WORD = re.compile(rf"(?<![\w./<>-])((?:{'|'.join(re.escape(d) for d in REPO_DIRS)})/[\w./<>*-]*)")
DOTTED_NAME = re.compile(r"(?:devices|crossbar|imc_grapes)(?:\.\w+)+(?:\(\))?")
LINK = re.compile(r"!?\[[^\]]*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^\s*```")
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
QUOTED_OPTION = re.compile(r"""["'](--[a-z][a-z0-9-]*)["']""")
COMMIT = re.compile(r"(?<![\w./#-])[0-9a-f]{7,40}(?![\w-])")
"""A word of 7 to 40 lower-case hex digits; one with both a letter and a digit is read as a commit abbreviation
(a number such as 4294967296 has no letter, a word such as ``defaced`` no digit)."""
SCRIPT_GLOBS = ("benchmarks/*.py", "examples/*.py", "scripts/*.sh")
"""The project's scripts: the options their sources quote (``add_argument("--tiny", ...)``, ``== "--dev"``) count as
options of the project."""
FOREIGN_OPTIONS = {
    "--hid": "README.md: the abbreviation of --hidden that the parsers refuse",
    "--learning-rate": "docs/sweeps.md: another name of --lr, which the parsers refuse with a did-you-mean",
    "--no-deps": "docs/install.md: pip's option",
}
"""Options the docs name that no program of the project takes, each with where and why."""


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: its rendered text (code marks and link targets dropped) lower-cased,
    every character but letters, digits, marks, ``_``, ``-`` and spaces removed, spaces made ``-``."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    kept = (c for c in text if c in " -_" or unicodedata.category(c)[0] in "LNM")
    return "".join(kept).replace(" ", "-")


def _prose_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) of a Markdown file outside its fenced code blocks."""
    in_fence = False
    for no, line in enumerate(path.read_text().splitlines(), 1):
        if FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence:
            yield no, line


def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings; a repeated anchor gets ``-1``, ``-2``, ... as on GitHub."""
    seen: dict[str, int] = {}
    for _, line in _prose_lines(path):
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            slug = github_anchor(m.group(1))
            seen[slug] = seen.get(slug, -1) + 1
            if seen[slug]:
                seen[f"{slug}-{seen[slug]}"] = 0
    return set(seen)


def links(path: Path, root: Path = ROOT) -> Iterator[tuple[str, str]]:
    """(``file:line``, target) of every relative link of a Markdown file (code spans left out); the file is named
    relative to ``root``."""
    rel = path.relative_to(root)
    for no, line in _prose_lines(path):
        for m in LINK.finditer(re.sub(r"`[^`]*`", "", line)):
            if not re.match(r"^[a-z][a-z0-9+.-]*:", m.group(1)):   # http:, https:, mailto:
                yield f"{rel}:{no}", m.group(1)


def link_error(path: Path, target: str) -> str | None:
    """Why ``target``, linked from ``path``, leads nowhere (None if it leads somewhere)."""
    file, _, anchor = target.partition("#")
    dest = (path.parent / file).resolve() if file else path
    if not dest.exists():
        return f"no such file {file}"
    if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
        return f"no heading with the anchor #{anchor} in {file or path.name}"
    return None


def _code_spans(path: Path) -> Iterator[tuple[str, str]]:
    """(``file:line``, text) of the inline code spans of a Markdown file (one line each)."""
    rel = path.relative_to(ROOT)
    for no, line in _prose_lines(path):
        for m in re.finditer(r"(`+)(.+?)\1", line):
            yield f"{rel}:{no}", m.group(2).strip()


def path_error(word: str) -> str | None:
    """Why a repository path named in the docs does not exist (None if it does); ``<x>`` and ``*`` are globs."""
    word = word.rstrip(".,;:")
    pattern = re.sub(r"<[^>]*>", "*", word).rstrip("/")
    found = list(ROOT.glob(pattern)) if "*" in pattern else [ROOT / pattern] if (ROOT / pattern).exists() else []
    return None if found else f"no such path {word}"


def name_error(name: str) -> str | None:
    """Why a dotted Python name named in the docs does not resolve (None if it does)."""
    parts = name.removesuffix("()").split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return f"{'.'.join(parts[:i])} has no {'.'.join(parts[i:])}"
            obj = getattr(obj, attr)
        return None
    return f"no module {parts[0]}"


def python_blocks(path: Path) -> Iterator[tuple[str, str]]:
    """(``file:line``, code) of every fenced ``python`` block of a Markdown file."""
    rel = path.relative_to(ROOT)
    lines = path.read_text().splitlines()
    start = None
    for no, line in enumerate(lines, 1):
        if start is None and re.match(r"^\s*```python\s*$", line):
            start = no
        elif start is not None and FENCE.match(line):
            yield f"{rel}:{start}", "\n".join(lines[start:no - 1])
            start = None


# ---------------------------------------------------------------------------------------------------- tests
def test_github_anchor_matches_hand_written_anchors() -> None:
    # the anchors these headings get on GitHub, written out by hand
    assert github_anchor("Two kinds of CPU: AVX-512 VNNI and AVX2 (thirteenth session)") == \
        "two-kinds-of-cpu-avx-512-vnni-and-avx2-thirteenth-session"
    assert github_anchor('`mlp` — fully connected networks; "helps more as networks grow"') == \
        "mlp--fully-connected-networks-helps-more-as-networks-grow"
    assert github_anchor("The main job's crossbar setting trained for 20 epochs (ReRamSB)") == \
        "the-main-jobs-crossbar-setting-trained-for-20-epochs-reramsb"
    assert github_anchor("Replicas: many seeds in one pass (`--replicas R`)") == \
        "replicas-many-seeds-in-one-pass---replicas-r"
    assert github_anchor("dw_min × 2 [see here](x.md)") == "dw_min--2-see-here"


def test_anchors_number_repeated_headings(tmp_path: Path) -> None:
    page = tmp_path / "p.md"
    page.write_text("# A b\n\n```\n# not a heading\n```\n\n## A b\n### A b ###\n## C\n")
    assert anchors(page) == {"a-b", "a-b-1", "a-b-2", "c"}


def test_every_relative_link_leads_somewhere() -> None:
    failures, used_exception, n = [], set(), 0
    for path in MARKDOWN:
        rel = str(path.relative_to(ROOT))
        for where, target in links(path):
            n += 1
            error = link_error(path, target)
            allowed = [k for k, v in UNSTORED_LINKS.items() if rel.startswith(k) and target.startswith(v)]
            if error and allowed:
                used_exception.update(allowed)
            elif error:
                failures.append(f"{where}: ({target}): {error}")
    assert not failures, f"{len(failures)} of {n} links lead nowhere:\n" + "\n".join(failures)
    assert n >= 200, n                                    # the extraction finds the docs' links
    assert used_exception == set(UNSTORED_LINKS), "UNSTORED_LINKS entries no link needs any more"


def test_a_broken_link_or_anchor_is_reported(tmp_path: Path) -> None:
    page = tmp_path / "p.md"
    page.write_text("# Top\n[ok](#top) [gone](missing.md) [bad](#nowhere) `[not a link](x.md)`\n"
                    "```\n[in code](y.md)\n```\n")
    found = list(links(page, root=tmp_path))
    assert [where for where, _ in found] == ["p.md:2"] * 3
    assert {t: link_error(page, t) for _, t in found} == {
        "#top": None, "missing.md": "no such file missing.md",
        "#nowhere": "no heading with the anchor #nowhere in p.md"}


def test_every_repository_path_named_in_a_code_span_exists() -> None:
    failures, n = [], 0
    for path in PAGES:
        for where, span in _code_spans(path):
            for word in PATH_WORD.findall(span):
                n += 1
                if (error := path_error(word)) is not None:
                    failures.append(f"{where}: `{span}`: {error}")
    assert not failures, f"{len(failures)} of {n} paths do not exist:\n" + "\n".join(failures)
    assert n >= 40, n
    assert path_error("docs/compare-mnist-<preset>/") is None and path_error("examples/exp_*.py") is None
    assert path_error("docs/no-such-page.md") == "no such path docs/no-such-page.md"


def test_every_python_name_named_in_a_code_span_imports() -> None:
    failures, n = [], 0
    for path in PAGES:
        for where, span in _code_spans(path):
            if DOTTED_NAME.fullmatch(span):
                n += 1
                if (error := name_error(span)) is not None:
                    failures.append(f"{where}: `{span}`: {error}")
    assert not failures, f"{len(failures)} of {n} names do not resolve:\n" + "\n".join(failures)
    assert n >= 20, n
    assert name_error("crossbar.periphery.no_such_function") == "crossbar.periphery has no no_such_function"
    assert name_error("devices.no_host_reads()") is None


BLOCKS = [b for path in PAGES for b in python_blocks(path)]


def _unguarded_sweep(*args: object, **kwargs: object) -> None:
    raise AssertionError("the example runs a sweep when it is imported: a script that spawns the local executor's "
                         "workers must guard it with if __name__ == '__main__' (they import the script again)")


@pytest.mark.parametrize("where,code", BLOCKS, ids=[w for w, _ in BLOCKS])
def test_python_example_runs(where: str, code: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import imc_grapes.sweep

    monkeypatch.chdir(ROOT)                 # the examples name repository files (examples/sweeps/...)
    monkeypatch.setattr(imc_grapes.sweep, "run_sweep", _unguarded_sweep)   # no sweep trains inside the tests
    exec(compile(code, where, "exec"), {"__name__": "docs_example"})   # noqa: S102  (the docs' own code)


def test_the_python_examples_are_found() -> None:
    assert {w.split(":")[0] for w, _ in BLOCKS} == {"README.md", "docs/sweeps.md"}


def project_options() -> set[str]:
    """Every long option a program of the project takes: those of ``imc-grapes`` and all its sub-commands (from
    :func:`imc_grapes.cli.build_parser`) and those quoted in the sources of :data:`SCRIPT_GLOBS`."""
    parsers = [cli.build_parser(), *(sub for _, sub in _subparsers(cli.build_parser(), "imc-grapes"))]
    found = {o for parser in parsers for action in parser._actions for o in action.option_strings}
    for pattern in SCRIPT_GLOBS:
        for script in ROOT.glob(pattern):
            found.update(QUOTED_OPTION.findall(script.read_text()))
    return {o for o in found if o.startswith("--")}


def unknown_options(path: Path, known: set[str], root: Path = ROOT) -> Iterator[tuple[str, str]]:
    """(``file:line``, option) of every long option a Markdown file names (prose, code spans and code blocks) that
    is not in ``known``; the file is named relative to ``root``."""
    rel = path.relative_to(root)
    for no, line in enumerate(path.read_text().splitlines(), 1):
        for option in OPTION.findall(line):
            if option not in known:
                yield f"{rel}:{no}", option


def test_every_option_named_in_the_docs_is_taken_by_a_program() -> None:
    known = project_options()
    assert {"--no-drop-last", "--tune-score", "--replicas", "--tiny", "--dev"} <= known   # parsers and scripts
    failures, used = [], set()
    for path in PAGES:
        for where, option in unknown_options(path, known):
            if option in FOREIGN_OPTIONS:
                used.add(option)
            else:
                failures.append(f"{where}: {option}")
    assert not failures, "options no program of the project takes:\n" + "\n".join(failures)
    assert used == set(FOREIGN_OPTIONS), "FOREIGN_OPTIONS entries no page names any more"


def test_an_unknown_option_is_reported(tmp_path: Path) -> None:
    page = tmp_path / "p.md"
    page.write_text("Use `--tail-evals 2`; --lr and --no-such-option in prose.\n```\nimc-grapes train --lrr 1\n```\n"
                    "an em dash--not an option, a-b--c neither\n")
    assert list(unknown_options(page, {"--tail-evals", "--lr"}, root=tmp_path)) == [
        ("p.md:1", "--no-such-option"), ("p.md:3", "--lrr")]


def commit_words(path: Path, root: Path = ROOT) -> Iterator[tuple[str, str]]:
    """(``file:line``, abbreviation) of every commit abbreviation a Markdown file names (:data:`COMMIT`; prose,
    code spans and code blocks); the file is named relative to ``root``."""
    rel = path.relative_to(root)
    for no, line in enumerate(path.read_text().splitlines(), 1):
        for word in COMMIT.findall(line):
            if re.search("[a-f]", word) and re.search("[0-9]", word):
                yield f"{rel}:{no}", word


def _git(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``git ARGS`` run in the repository (``stdin`` its input); never raises on a failing exit status."""
    return subprocess.run(["git", *args], cwd=ROOT, input=stdin, capture_output=True, text=True, check=False)


def missing_commits(words: set[str]) -> set[str]:
    """Those of ``words`` that name no commit of the repository (an ambiguous abbreviation counts as missing)."""
    names = sorted(words)
    found = _git("cat-file", "--batch-check", stdin="".join(f"{w}^{{commit}}\n" for w in names))
    return {line.split()[0].removesuffix("^{commit}") for line in found.stdout.splitlines()
            if line.endswith(" missing") or line.endswith(" ambiguous")}


def _full_history() -> None:
    """Skip the calling test unless the repository is a git checkout with its full history."""
    try:
        shallow = _git("rev-parse", "--is-shallow-repository")
    except OSError:
        pytest.skip("no git command")
    if shallow.returncode != 0 or shallow.stdout.strip() != "false":
        pytest.skip("not a git checkout with its full history")


def test_every_commit_the_docs_cite_is_in_the_history() -> None:
    _full_history()
    cited = [(where, word) for path in PAGES for where, word in commit_words(path)]
    assert len(cited) >= 30, len(cited)                    # the extraction finds the docs' citations
    missing = missing_commits({word for _, word in cited})
    failures = [f"{where}: {word}" for where, word in cited if word in missing]
    assert not failures, "commits the docs cite that the history does not have:\n" + "\n".join(failures)


def test_a_commit_not_in_the_history_is_reported() -> None:
    _full_history()
    head = _git("rev-parse", "HEAD").stdout.strip()
    first = _git("rev-list", "--max-parents=0", "HEAD").stdout.split()[0]
    # 40 digits that are no commit: HEAD's with its last digit changed
    fake = head[:-1] + ("0" if head[-1] != "0" else "1")
    assert missing_commits({head[:7], first[:9], fake}) == {fake}


def test_commit_words_are_told_from_numbers_and_words(tmp_path: Path) -> None:
    page = tmp_path / "p.md"
    page.write_text("fixed in `f247ece`, measured on 736302d; 4294967296 steps, a defaced page,\n"
                    "docs/compare-mnist-reramsb-avx2, #a1b2c3d4, sha 0123456789abcdef0123456789abcdef01234567\n")
    assert list(commit_words(page, root=tmp_path)) == [
        ("p.md:1", "f247ece"), ("p.md:1", "736302d"), ("p.md:2", "0123456789abcdef0123456789abcdef01234567")]


REPORT_ROW = re.compile(r"^\|\s*(?:digital|analog)\s*\|")
"""A table row of a compare report (its Results or learning-rate-tuning table): ``| digital | sgd | ...``."""


def quoted_report_tables(path: Path, root: Path = ROOT) -> Iterator[tuple[str, list[str]]]:
    """(``file:line``, rows) of the compare-report rows of every Markdown table of a page (the table's
    header and separator lines left out), outside code blocks; the file is named relative to ``root``."""
    rel, rows, start = path.relative_to(root), [], 0
    for no, line in [*_prose_lines(path), (-1, "")]:
        if REPORT_ROW.match(line.strip()):
            start = start or no
            rows.append(line.strip())
        elif rows and not line.strip().startswith("|"):
            yield f"{rel}:{start}", rows
            rows, start = [], 0


def reports_holding(rows: list[str], reports: list[Path]) -> list[Path]:
    """The reports that hold every one of ``rows`` as a line of their own."""
    return [r for r in reports if set(rows) <= {line.strip() for line in r.read_text().splitlines()}]


def test_readme_tables_quote_a_stored_report_to_the_digit() -> None:
    # the README's full-MNIST tables are copied from stored reports: a rerun that rewrites the report but not the
    # README (or an edit of one digit) leaves the README quoting numbers no stored result has
    reports = sorted((ROOT / "docs").glob("compare-*/report.md"))
    tables = list(quoted_report_tables(ROOT / "README.md"))
    assert len(tables) >= 3, tables                         # results, tuning and array tables of the full-MNIST job
    failures = [f"{where}: {len(rows)} rows, no single docs/compare-*/report.md holds them all"
                for where, rows in tables if not reports_holding(rows, reports)]
    assert not failures, "\n".join(failures)


def test_a_table_no_report_holds_is_found(tmp_path: Path) -> None:
    report = tmp_path / "report.md"
    report.write_text("| hardware | optimizer |\n|---|---|\n| digital | sgd | 97.00 |\n| analog | sgd | 71.91 |\n")
    page = tmp_path / "p.md"
    page.write_text("text\n\n| a | b |\n|---|---|\n| digital | sgd | 97.00 |\n  | analog | sgd | 71.91 |\n\n"
                    "```\n| analog | sgd | 1.00 |\n```\n| analog | sgd | 71.92 |\n")
    tables = list(quoted_report_tables(page, root=tmp_path))
    assert tables == [("p.md:5", ["| digital | sgd | 97.00 |", "| analog | sgd | 71.91 |"]),
                      ("p.md:11", ["| analog | sgd | 71.92 |"])]
    assert [reports_holding(rows, [report]) for _, rows in tables] == [[report], []]
