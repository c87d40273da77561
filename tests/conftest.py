"""Fixtures shared by every test folder."""

import os
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data_dir() -> Callable[[str], Path]:
    """``shared_data_dir(name)``: a real dataset under $DATNET_SHARED_DATA (default
    ``<repo>/../shared/data``); the test is skipped, saying where it looked, when it is absent."""

    def find(name: str) -> Path:
        root = Path(os.environ.get("DATNET_SHARED_DATA", REPO.parent / "shared" / "data")) / name
        if not root.exists():
            pytest.skip(f"shared dataset '{name}' not found at {root} (set DATNET_SHARED_DATA)")
        return root

    return find
