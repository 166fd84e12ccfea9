import os

import pytest
import torch

from imc_grapes.data import DatasetError, get_spec, verify


def require_real(name: str) -> None:
    """Skip when the real data set is absent, unless IMC_GRAPES_REQUIRE_DATA=1 (CI), where absence fails."""
    try:
        verify(get_spec(name))
    except DatasetError as exc:
        if os.environ.get("IMC_GRAPES_REQUIRE_DATA") == "1":
            pytest.fail(f"real data set required in CI but unavailable: {exc}")
        pytest.skip(f"{name} not fetched (run `imc-grapes data fetch {name}`)")


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``): on shared
    cores, torch's thread pool spin-waits and tiny ops get 100× slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
