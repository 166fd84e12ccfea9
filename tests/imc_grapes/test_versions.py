"""What every saved result records about the code and the machine (imc_grapes.versions)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from devices.fusion import COMPILE_MODES, get_compile, set_compile
from imc_grapes.versions import versions

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="not a git checkout")
def test_records_the_commit_of_the_checkout() -> None:
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert versions()["git_commit"] == head.stdout.strip()


def test_settings_that_change_at_run_time_are_read_on_every_call() -> None:
    """The process-constant part is read once; the device-model fusion mode is set at run time and steers the
    numbers, so each call records the mode in force."""
    before = get_compile()
    first = versions()
    try:
        other = "on" if before != "on" else "off"
        set_compile(other)
        second = versions()
    finally:
        set_compile(before if before in COMPILE_MODES else "off")
    assert first["device_model_fusion"] == before and second["device_model_fusion"] == other
    assert {k: v for k, v in first.items() if k != "device_model_fusion"} == \
           {k: v for k, v in second.items() if k != "device_model_fusion"}
    assert second["torch"] == torch.__version__ and second["cpu_capability"]
