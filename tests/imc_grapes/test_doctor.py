"""`imc-grapes doctor`: reports each part, exits non-zero with an explanation when a required part is broken."""
import builtins

from imc_grapes import doctor


def test_all_required_parts_work_here(capsys):
    checks = {c.name: c for c in doctor.run_checks()}
    assert checks["torch"].status == "OK"
    assert checks["engine"].status == "OK"
    assert checks["aihwkit"].status == "OK", checks["aihwkit"].detail  # the pinned torch/aihwkit pair works
    assert checks["cuda"].status in ("OK", "SKIP")
    assert doctor.main() == 0
    assert "All required parts work." in capsys.readouterr().out


def test_broken_aihwkit_fails_with_explanation(monkeypatch, capsys):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("aihwkit"):
            raise ImportError("undefined symbol: _ZNK3c1010TensorImpl15decref_pyobjectEv")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    checks = {c.name: c for c in doctor.run_checks()}
    assert checks["aihwkit"].status == "FAIL" and "torch==2.10.0" in checks["aihwkit"].detail
    assert checks["engine"].status == "OK", "the project's engine does not need aihwkit"
    assert doctor.main() == 1
    out = capsys.readouterr().out
    assert "A required part is broken" in out and "--skip-aihwkit" in out
    # on a machine where aihwkit cannot load, it can be made optional
    assert doctor.main(skip_aihwkit=True) == 0


def test_skip_aihwkit_neither_imports_nor_runs_aihwkit(monkeypatch, capsys):
    real_import = builtins.__import__
    attempted: list[str] = []

    def recording_import(name, *args, **kwargs):
        if name.startswith("aihwkit"):
            attempted.append(name)
            raise ImportError("aihwkit must not be imported with --skip-aihwkit")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", recording_import)
    checks = {c.name: c for c in doctor.run_checks(skip_aihwkit=True)}
    assert checks["aihwkit"].status == "SKIP" and "--skip-aihwkit" in checks["aihwkit"].detail
    assert not checks["aihwkit"].required
    assert doctor.main(skip_aihwkit=True) == 0
    assert attempted == []
    out = capsys.readouterr().out
    assert "[SKIP] aihwkit" in out and "skipped (--skip-aihwkit)" in out


def test_fusion_check_skips_when_off_and_compares_with_eager_when_on():
    import pytest

    from devices import fusion

    assert fusion.get_compile() == "off"                      # the suite's (and the library's) default
    checks = {c.name: c for c in doctor.run_checks(skip_aihwkit=True)}
    assert checks["fusion"].status == "SKIP" and "IMC_GRAPES_COMPILE=off" in checks["fusion"].detail
    assert not checks["fusion"].required
    fusion.set_compile("auto")
    try:
        check = {c.name: c for c in doctor.run_checks(skip_aihwkit=True)}["fusion"]
    finally:
        fusion.set_compile("off")
    if check.status != "OK":
        pytest.fail(check.detail)
    assert "match the eager ones" in check.detail


def test_fusion_check_reports_an_earlier_failed_compile_instead_of_crashing(monkeypatch):
    from devices import fusion

    monkeypatch.setitem(fusion._STATE, "mode", "auto")
    monkeypatch.setitem(fusion._STATE, "failed", "RuntimeError: no C++ compiler")
    check = {c.name: c for c in doctor.run_checks(skip_aihwkit=True)}["fusion"]
    assert check.status == "FAIL" and "compile failed: RuntimeError: no C++ compiler" in check.detail
    assert fusion.get_compile().startswith("off (compile failed")       # the process state is left as it was
