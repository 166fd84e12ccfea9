"""The packages stay type-clean: ``python -m mypy`` with the configuration of ``pyproject.toml`` (``[tool.mypy]``:
devices, crossbar and imc_grapes) reports no error.

mypy is a dev dependency (``pip install -e ".[dev]"``), so a missing mypy fails this test instead of skipping it.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_mypy_reports_no_errors(tmp_path: Path) -> None:
    # a fresh cache in tmp_path: nothing is written into the repository (~10-15 s cold on one core)
    cmd = [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "mypy_cache")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    output = (proc.stdout + proc.stderr).strip()
    assert proc.returncode == 0, f"mypy failed (exit status {proc.returncode}):\n{output[-10000:]}"
    assert "Success: no issues found" in proc.stdout, output[-10000:]
