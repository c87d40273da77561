"""Fixtures for the tests of ``scripts/**/*.py``: tiny image files (``load_script``: tests/conftest.py)."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


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
