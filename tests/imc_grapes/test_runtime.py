"""imc_grapes.runtime: glibc malloc thresholds for the simulations (what is set, when not, and its effect)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap

import pytest

from imc_grapes import runtime


class FakeLibc:
    def __init__(self, ok: bool = True) -> None:
        self.calls: list[tuple[int, int]] = []
        self.ok = ok

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return 1 if self.ok else 0


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> FakeLibc:
    """A not-yet-tuned module whose C library is a recorder (the test process's malloc is left alone)."""
    monkeypatch.setattr(runtime, "_mode", None)
    for name in ("IMC_GRAPES_MALLOC", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                 "MALLOC_ARENA_MAX"):
        monkeypatch.delenv(name, raising=False)
    libc = FakeLibc()
    monkeypatch.setattr(runtime.ctypes, "CDLL", lambda *a, **k: libc)
    monkeypatch.setattr(runtime.platform, "system", lambda: "Linux")
    monkeypatch.setattr(runtime.platform, "libc_ver", lambda: ("glibc", "2.36"))
    return libc


def test_tuned_by_default_with_glibc_parameter_numbers(fresh: FakeLibc) -> None:
    assert runtime.malloc_mode() == "default (not tuned)"
    assert runtime.tune_malloc() == "tuned" == runtime.malloc_mode()
    # glibc's malloc.h: M_TRIM_THRESHOLD -1, M_TOP_PAD -2, M_MMAP_THRESHOLD -3
    assert sorted(fresh.calls) == sorted([(-3, 32 * 2**20), (-1, 256 * 2**20), (-2, 64 * 2**20)])
    runtime.tune_malloc()                                                   # once per process
    assert len(fresh.calls) == 3


def test_left_alone_when_asked_or_when_the_user_set_glibc_variables(fresh: FakeLibc,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMC_GRAPES_MALLOC", "default")
    assert runtime.tune_malloc() == "default (IMC_GRAPES_MALLOC=default)"
    monkeypatch.setattr(runtime, "_mode", None)
    monkeypatch.setenv("IMC_GRAPES_MALLOC", "tuned")
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    assert runtime.tune_malloc().startswith("default (glibc MALLOC_* environment")
    monkeypatch.setattr(runtime, "_mode", None)
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    monkeypatch.setattr(runtime.platform, "libc_ver", lambda: ("", ""))
    assert runtime.tune_malloc() == "default (not glibc)"
    assert fresh.calls == []


def test_refused_settings_are_reported(fresh: FakeLibc) -> None:
    fresh.ok = False
    assert runtime.tune_malloc().startswith("partly tuned (mallopt refused M_MMAP_THRESHOLD")


def test_invalid_setting_names_the_variable_and_the_valid_values(fresh: FakeLibc,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMC_GRAPES_MALLOC", "fast")
    with pytest.raises(ValueError, match=r"IMC_GRAPES_MALLOC must be 'tuned' or 'default', got 'fast'"):
        runtime.tune_malloc()


def test_the_command_line_rejects_an_invalid_setting() -> None:
    env = {**os.environ, "IMC_GRAPES_MALLOC": "fast"}
    proc = subprocess.run([sys.executable, "-m", "imc_grapes", "doctor", "--skip-aihwkit"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "IMC_GRAPES_MALLOC must be 'tuned' or 'default'" in proc.stderr


_FAULTS = textwrap.dedent("""
    import resource, torch
    from imc_grapes.runtime import tune_malloc
    mode = tune_malloc()

    def cycle():  # the temporaries of one elementwise device update: 30 live arrays of 0.2M floats
        ts = [torch.empty(200_000).fill_(1.0) for _ in range(30)]
        del ts

    cycle()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        cycle()
    print(mode, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20, sep="|")
""")


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="the malloc thresholds are a glibc setting")
def test_tuning_keeps_freed_tensor_memory_in_the_process() -> None:
    """The effect itself, in fresh processes: the same allocation pattern page-faults far less once tuned."""
    faults = {}
    for setting in ("default", "tuned"):
        env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
        env["IMC_GRAPES_MALLOC"] = setting
        out = subprocess.run([sys.executable, "-c", _FAULTS], env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        mode, n = out.stdout.strip().splitlines()[-1].rsplit("|", 1)
        assert mode.startswith(setting), mode
        faults[setting] = float(n)
    assert faults["tuned"] < 0.5 * faults["default"], faults
