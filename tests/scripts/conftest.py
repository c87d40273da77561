"""Fixtures for the tests of ``scripts/**/*.py``: the scripts loaded as modules, and tiny image files."""

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


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


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    """A folder with two small RGB images of different sizes (JPEG and PNG) and one corrupt JPEG."""
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(folder / "a.jpg")
    Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(folder / "b.png")
    (folder / "broken.jpg").write_bytes(b"not an image")
    return folder
