"""Test-suite defaults shared by every test (and the subprocesses the tests start, through the environment)."""
from __future__ import annotations

import os

from hypothesis import settings

# Eager device models (also the library's default; set here so that a developer's IMC_GRAPES_COMPILE does not
# leak in): hundreds of small models would each pay torch.compile's start-up time; the compiled kernels are tested
# on their own (tests/devices/test_fusion.py).
os.environ["IMC_GRAPES_COMPILE"] = "off"

# Hypothesis: CI (CI=true, as `.ci/run` runs) draws the same examples in every run (`derandomize`: a property test
# cannot pass in one CI run and fail in the next on the same code); elsewhere every run explores new examples, as
# hypothesis does by default, which is how edge cases keep being found. HYPOTHESIS_PROFILE=ci|explore chooses
# either anywhere.
_in_ci = os.environ.get("CI", "").lower() in ("1", "true")
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("explore", print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if _in_ci else "explore"))
