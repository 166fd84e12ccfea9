"""One fresh aihwkit draw more for the statistical comparisons with aihwkit (its C++ generator cannot be seeded
from Python, so each comparison is one draw of a test with a small false-alarm rate)."""
from __future__ import annotations

import functools
from typing import Any, Callable


def retry_once(test: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``test`` again once when it fails an assertion: a real disagreement fails on a fresh aihwkit draw as
    well; a false alarm (rate p) survives a second draw only with probability p²."""
    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return test(*args, **kwargs)
        except AssertionError:
            return test(*args, **kwargs)
    return wrapper
