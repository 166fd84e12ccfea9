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


_HEAP = textwrap.dedent("""
    import ctypes, torch
    from imc_grapes.runtime import tune_malloc
    mode = tune_malloc()

    def in_heap(addr):
        for line in open("/proc/self/maps"):
            if line.rstrip().endswith("[heap]"):
                lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
                return lo <= addr < hi
        return False

    libc = ctypes.CDLL("libc.so.6")
    libc.sbrk.restype = ctypes.c_void_p
    t = torch.empty(4 << 20).fill_(1.0)                  # a 16 MiB tensor
    heap = in_heap(t.data_ptr())
    brk = libc.sbrk(0)
    del t
    print(mode, heap, libc.sbrk(0) == brk, sep="|")
""")


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="the malloc thresholds are a glibc setting")
def test_tuned_process_serves_large_tensors_from_its_heap_and_keeps_them() -> None:
    """The setting in effect, in a fresh process: a 16 MiB tensor comes from the heap (glibc's default threshold,
    128 KiB until a large block has been freed, would map it from the kernel, and return it on free) and freeing it
    does not shrink the heap."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = {}
    for setting in ("default", "tuned"):
        proc = subprocess.run([sys.executable, "-c", _HEAP], env={**env, "IMC_GRAPES_MALLOC": setting},
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        mode, heap, kept = proc.stdout.strip().splitlines()[-1].split("|")
        assert mode.startswith(setting), mode
        out[setting] = (heap, kept)
    assert out["tuned"] == ("True", "True"), out
