"""Walk every field of a config dataclass with values that no field of its type may take.

:func:`invalid_values` maps a field's annotation (the string that ``from __future__ import annotations`` leaves in
``dataclasses.fields``) to values invalid for *every* field of that type: NaN, a bool or a string where a number is
expected, a float where an integer is, a finite number beyond float32's range (the simulator's tensors), an unknown
choice for a string field that names one. An annotation without an entry raises ``KeyError``: a new field of a new
type must get its invalid values here before the walk passes, so no field escapes validation unnoticed.

:func:`walk_errors` builds the config once per (field, value) and returns what went wrong: a value accepted, an
exception other than ``ValueError``/``TypeError``, or a message that does not name the field.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

NAN = math.nan
BEYOND_FLOAT32 = 1e300          # finite in Python, inf as a float32
UNKNOWN = "no-such-choice"

_NUMBER = [NAN, True, "0.5", None, [0.5], BEYOND_FLOAT32, -BEYOND_FLOAT32]
_INT = [2.5, True, "3", NAN, [3]]
_INT_OR_NONE = [2.5, True, "3", NAN, [3]]
_BOOL = [1, 0, "yes", None, NAN]
_CHOICE = [UNKNOWN, 3, None, True]
_OPTIONAL_TEXT = [3, True, [1]]
_FLOATS = [3, "0.5", (NAN,), (True,), ("0.5",), (BEYOND_FLOAT32,)]
_INTS = [3, "3", (2.5,), (True,), ("3",)]
_CHOICES = [3, (UNKNOWN,), (3,)]
_MAPPING = [3, "x", [1]]
_OBJECT = [3, "x", [1]]

INVALID: dict[str, list[Any]] = {
    "float": _NUMBER,
    "int": _INT,
    "int | None": _INT_OR_NONE,
    "bool": _BOOL,
    "str": _CHOICE,                              # a field naming one of a set of choices
    "str | None": _OPTIONAL_TEXT,                # a path or name: any text may be valid
    "tuple[float, ...]": _FLOATS,
    "tuple[float, float]": [*_FLOATS, (0.0,)],
    "tuple[float, ...] | None": _FLOATS,
    "tuple[int, ...]": _INTS,
    "tuple[int, ...] | None": _INTS,
    "tuple[str, ...]": _CHOICES,
    "tuple[str, ...] | None": _CHOICES,
    "tuple[Any, ...]": [3, None],
    "tuple[Axis, ...]": [3, "x", (3,)],
    "dict[str, float]": _MAPPING,
    "dict[str, float | bool]": _MAPPING,
    "dict[str, Any]": _MAPPING,
    "PulsedDevice": _OBJECT,
    "IOParameters": _OBJECT,
    "UpdateParameters": _OBJECT,
    "AnalogSettings": _OBJECT,
    "TrainConfig": _OBJECT,
}


def invalid_values(annotation: str, free_text: bool = False) -> list[Any]:
    """Values invalid for every field annotated ``annotation``. ``free_text``: a ``str`` field that takes any
    non-empty text (a name), so that an unknown choice is valid there."""
    if annotation == "str" and free_text:
        return [3, None, True, ""]
    return INVALID[annotation]


def walk_errors(cls: type, make: Callable[..., Any] | None = None, *, skip: Iterable[str] = (),
                free_text: Iterable[str] = (), names: Mapping[str, str] | None = None) -> list[str]:
    """What is wrong with the validation of ``cls``'s fields: one line per (field, invalid value) that ``make``
    (default ``cls``) accepted, rejected with another exception than ``ValueError``/``TypeError``, or rejected with
    a message that does not contain the field's name as the user knows it (``names[field]``, default
    ``"<Class>.<field>"``). ``skip``: fields not walked (the caller says why); ``free_text``: ``str`` fields that
    take any text."""
    make = make or cls
    names = dict(names or {})
    skip, free_text = set(skip), set(free_text)
    problems: list[str] = []
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        want = names.get(f.name, f"{cls.__name__}.{f.name}")
        for value in invalid_values(str(f.type), f.name in free_text):
            try:
                make(**{f.name: value})
            except (ValueError, TypeError) as exc:
                if want not in str(exc):
                    problems.append(f"{cls.__name__}.{f.name} = {value!r}: message without {want!r}: {exc}")
                continue
            except Exception as exc:  # noqa: BLE001 - the point is to report any other exception
                problems.append(f"{cls.__name__}.{f.name} = {value!r}: {type(exc).__name__}: {exc}")
                continue
            problems.append(f"{cls.__name__}.{f.name} = {value!r}: accepted")
    return problems
