"""One fresh aihwkit draw more for the statistical comparisons with aihwkit (its C++ generator cannot be seeded
from Python, so each comparison is one draw of a test with a small false-alarm rate)."""
from __future__ import annotations

import functools
import warnings
from typing import Any, Callable


class RetriedComparison(UserWarning):
    """A statistical comparison with aihwkit failed its first draw and was run again (pytest's warnings summary
    lists each one, so that a rise in first-draw failures — a real but small disagreement fails a fraction q of
    first draws and the test only q² of the time — is seen, not hidden by the retry)."""


def retry_once(test: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``test`` again once when it fails an assertion: a real disagreement fails on a fresh aihwkit draw as
    well; a false alarm (rate p) survives a second draw only with probability p². The first failure is reported as
    a :class:`RetriedComparison` warning."""
    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return test(*args, **kwargs)
        except AssertionError as first:
            warnings.warn(f"{test.__name__}: first aihwkit draw failed, retried once: {str(first)[:300]}",
                          RetriedComparison, stacklevel=2)
            return test(*args, **kwargs)
    return wrapper
