"""The public API of each package: every name its ``__all__`` exports exists (``from package import *`` would fail
otherwise), is exported once, and each exported class and function has a docstring of its own (a dataclass without
one gets only its generated signature, ``Name(field: type, ...)``, as ``__doc__``). The same holds for every
module of the three packages that declares ``__all__``."""
from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

import pytest

PACKAGES = ["devices", "crossbar", "imc_grapes", "imc_grapes.grapes", "imc_grapes.backends", "imc_grapes.data",
            "imc_grapes.sweep", "imc_grapes.experiments"]


def _modules_with_all() -> list[str]:
    """Every importable module of devices, crossbar and imc_grapes that declares ``__all__``."""
    names = []
    for top in ("devices", "crossbar", "imc_grapes"):
        pkg = importlib.import_module(top)
        for info in pkgutil.walk_packages(pkg.__path__, prefix=f"{top}."):
            if info.name.endswith("__main__"):
                continue
            module = importlib.import_module(info.name)
            if hasattr(module, "__all__"):
                names.append(info.name)
    return names


def _own_docstring(obj: object) -> str:
    """``obj``'s own docstring (for a class: not inherited and not a dataclass's generated signature)."""
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__   # type: ignore[union-attr]
    doc = (doc or "").strip()
    if inspect.isclass(obj) and doc.startswith(f"{obj.__name__}("):
        return ""                                                      # dataclass: generated from the fields
    return doc


@pytest.mark.parametrize("package", PACKAGES)
def test_package_all_names_exist_once_with_docstrings(package: str) -> None:
    module = importlib.import_module(package)
    exported = list(module.__all__)
    assert len(exported) == len(set(exported)), f"{package}.__all__ repeats {sorted(exported)}"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{package}.__all__ names what the package does not define: {missing}"
    undocumented = [n for n in exported
                    if (inspect.isclass(getattr(module, n)) or inspect.isfunction(getattr(module, n)))
                    and not _own_docstring(getattr(module, n))]
    assert not undocumented, f"{package} exports classes/functions without a docstring: {undocumented}"


def test_every_module_all_names_exist_with_docstrings() -> None:
    modules = _modules_with_all()
    assert {"devices.base", "crossbar.tiles", "imc_grapes.grapes.core"} <= set(modules)
    missing: dict[str, list[str]] = {}
    undocumented: dict[str, list[str]] = {}
    for name in modules:
        module: ModuleType = importlib.import_module(name)
        absent = [n for n in module.__all__ if not hasattr(module, n)]
        if absent:
            missing[name] = absent
        bare = [n for n in module.__all__ if n not in absent
                and (inspect.isclass(getattr(module, n)) or inspect.isfunction(getattr(module, n)))
                and not _own_docstring(getattr(module, n))]
        if bare:
            undocumented[name] = bare
    assert not missing, f"__all__ names that the module does not define: {missing}"
    assert not undocumented, f"exported classes/functions without a docstring: {undocumented}"
