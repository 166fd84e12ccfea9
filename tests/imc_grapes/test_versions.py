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


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, capture_output=True,
                          text=True, check=True).stdout


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_the_commit_and_uncommitted_files_of_a_checkout_and_none_for_a_folder_inside_another_repository(tmp_path):
    from imc_grapes.versions import git_commit, git_uncommitted

    repo = tmp_path / "repo"
    (repo / "imc_grapes").mkdir(parents=True)
    (repo / "imc_grapes" / "a.py").write_text("x = 1\n")
    (repo / "notes.txt").write_text("")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "first")
    head = _git(repo, "rev-parse", "HEAD").strip()
    assert git_commit(repo) == head and git_uncommitted(repo) == ()
    (repo / "imc_grapes" / "a.py").write_text("x = 2\n")      # the code changed: the result must say so
    (repo / "imc_grapes" / "b.py").write_text("")
    (repo / "notes.txt").write_text("not code")
    assert git_commit(repo) == head and git_uncommitted(repo) == ("imc_grapes/a.py", "imc_grapes/b.py")
    # a package installed into a virtual environment that sits inside some project's repository is not that
    # project's code: no commit is claimed for it
    site = repo / ".venv" / "lib" / "site-packages"
    site.mkdir(parents=True)
    assert git_commit(site) is None and git_uncommitted(site) is None


def test_versions_record_the_uncommitted_files_as_a_list() -> None:
    info = versions()
    assert "git_uncommitted" in info
    if info["git_uncommitted"] is not None:
        assert isinstance(info["git_uncommitted"], list)
        info["git_uncommitted"].append("x")
        assert "x" not in versions()["git_uncommitted"], "each call gets its own list"


def test_records_the_torch_thread_count_in_force() -> None:
    """The number of torch CPU threads orders float sums (the same seed gave 87.90 % with one thread and 88.10 %
    with two on the quick start's digital SGD run), so every result records the count in force when it is saved."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = versions()["torch_threads"]
        torch.set_num_threads(2)
        two = versions()["torch_threads"]
    finally:
        torch.set_num_threads(before)
    assert (one, two) == (1, 2)
