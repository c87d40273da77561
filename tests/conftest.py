"""Fixtures shared by every test folder."""

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from datnet.configs import PROJECT_ROOT, shared_data_root

SCRIPTS = PROJECT_ROOT / "scripts"


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


@pytest.fixture(scope="session")
def load_script() -> Callable[[str], ModuleType]:
    """``load_script("paper/table7")``: ``scripts/paper/table7.py`` imported as a module (scripts are not a
    package). Its folder goes on ``sys.path`` as when it runs, so that it imports the modules beside it."""

    def load(name: str) -> ModuleType:
        path = SCRIPTS / f"{name}.py"
        if str(path.parent) not in sys.path:
            sys.path.append(str(path.parent))
        spec = importlib.util.spec_from_file_location(f"scripts_{name.replace('/', '_')}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
