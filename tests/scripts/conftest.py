"""Fixtures for the tests of ``scripts/**/*.py``: tiny image files, run directories of random models
(``load_script``: tests/conftest.py)."""

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
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


@pytest.fixture(scope="session")
def write_random_run() -> Callable[..., Path]:
    """``write_random_run(run_dir, cfg, global_step=None)``: ``run_dir`` as ``src/train.py`` leaves it,
    ``.hydra/config.yaml`` (``cfg``) and ``checkpoints/last.ckpt`` (a Lightning checkpoint of ``cfg.model``
    with seeded random weights, for the classes of ``cfg.data``); returns the checkpoint's path."""

    def write(run_dir: Path, cfg: DictConfig, global_step: int | None = None) -> Path:
        (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
        torch.manual_seed(0)
        model = instantiate(cfg.model, num_classes=instantiate(cfg.data).num_classes)
        checkpoint = run_dir / "checkpoints" / "last.ckpt"
        checkpoint.parent.mkdir()
        state: dict = {"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}
        if global_step is not None:
            state["global_step"] = global_step
        torch.save(state, checkpoint)
        return checkpoint

    return write
