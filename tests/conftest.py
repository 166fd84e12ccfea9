"""Test-suite defaults shared by every test (and the subprocesses the tests start, through the environment)."""
from __future__ import annotations

import os

# Eager device models (also the library's default; set here so that a developer's IMC_GRAPES_COMPILE does not
# leak in): hundreds of small models would each pay torch.compile's start-up time; the compiled kernels are tested
# on their own (tests/devices/test_fusion.py).
os.environ["IMC_GRAPES_COMPILE"] = "off"
