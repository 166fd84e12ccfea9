import os

import pytest

from imc_grapes.data import DatasetError, get_spec, verify


def require_real(name: str) -> None:
    """Skip when the real data set is absent, unless IMC_GRAPES_REQUIRE_DATA=1 (CI), where absence fails."""
    try:
        verify(get_spec(name))
    except DatasetError as exc:
        if os.environ.get("IMC_GRAPES_REQUIRE_DATA") == "1":
            pytest.fail(f"real data set required in CI but unavailable: {exc}")
        pytest.skip(f"{name} not fetched (run `imc-grapes data fetch {name}`)")
