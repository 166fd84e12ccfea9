"""The suite's hypothesis profiles (tests/conftest.py): CI draws the same examples in every run, other runs new ones.

Each case runs a one-property test file twice in fresh pytest processes (with this suite's conftest beside it) and
compares the examples the property was called with."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

_PROPERTY = '''
import os
from hypothesis import given, settings, strategies as st

@settings(max_examples=20)
@given(st.integers(-10**9, 10**9))
def test_record(x):
    with open(os.environ["DRAWN"], "a") as f:
        f.write(f"{x}\\n")
'''


def _drawn(tmp_path: Path, run: int, env_overrides: dict[str, str]) -> list[str]:
    folder = tmp_path / f"run{run}"
    folder.mkdir()
    shutil.copy(Path(__file__).parent / "conftest.py", folder / "conftest.py")
    (folder / "test_property.py").write_text(_PROPERTY)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "HYPOTHESIS_PROFILE")}
    env.update(env_overrides, DRAWN=str(folder / "drawn.txt"))
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(folder)],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return (folder / "drawn.txt").read_text().split()


@pytest.mark.parametrize("env", [{"CI": "true"}, {"HYPOTHESIS_PROFILE": "ci"}])
def test_ci_draws_the_same_examples_in_every_run(tmp_path: Path, env: dict[str, str]) -> None:
    first, second = _drawn(tmp_path, 1, env), _drawn(tmp_path, 2, env)
    assert len(first) >= 20
    assert first == second


def test_other_runs_draw_new_examples(tmp_path: Path) -> None:
    first, second = _drawn(tmp_path, 1, {}), _drawn(tmp_path, 2, {})
    assert len(first) >= 20
    assert first != second  # 20+ integers from 2·10⁹ + 1 values each, drawn anew: equal lists ≈ never
