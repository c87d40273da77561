"""Fixtures shared by every test folder."""

from collections.abc import Callable
from pathlib import Path

import pytest

from datnet.configs import shared_data_root


@pytest.fixture(scope="session")
def shared_data_dir() -> Callable[[str], Path]:
    """``shared_data_dir(name)``: a real dataset under $DATNET_SHARED_DATA (default
    ``<repo>/../shared/data``); the test is skipped, saying where it looked, when it is absent."""

    def find(name: str) -> Path:
        root = shared_data_root() / name
        if not root.exists():
            pytest.skip(f"shared dataset '{name}' not found at {root} (set DATNET_SHARED_DATA)")
        return root

    return find
