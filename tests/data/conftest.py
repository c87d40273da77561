"""Fixtures for the data tests: the shared real datasets (skipped when absent) and tiny COCO/VOC directories
written into tmp_path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from datnet.contract import unpack_target


@pytest.fixture(scope="session")
def shared(shared_data_dir):
    """`shared(name)`: path of a shared real dataset, or skip (the root conftest's `shared_data_dir`)."""
    return shared_data_dir


@pytest.fixture
def tiny_coco(shared_data_dir) -> Path:
    return shared_data_dir("tiny_coco")


def dense_masks(image: torch.Tensor, target: dict) -> torch.Tensor:
    """The uint8 NxHxW masks of a dataset sample, unpacked from its `masks_packed` as the model does."""
    return unpack_target(target, image.shape[-1])["masks"]


@pytest.fixture
def image_file():
    """`image_file(path, width, height, mode, seed)`: write a random image file."""
    return write_image


def write_image(path: Path, width: int = 64, height: int = 48, mode: str = "RGB", seed: int = 0) -> Path:
    """A random image file of the given PIL mode (format from the suffix)."""
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    (img.convert(mode) if mode != "RGB" else img).save(path)
    return path


def box_ann(ann_id: int, image_id: int, bbox: list[float], category_id: int = 1, **extra: Any) -> dict:
    """A COCO annotation whose polygon is its box (xywh)."""
    x, y, w, h = bbox
    seg = [[x, y, x + w, y, x + w, y + h, x, y + h]]
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": bbox,
        "area": w * h,
        "iscrowd": 0,
        "segmentation": seg,
        **extra,
    }


class CocoDir:
    """Builds a small COCO directory (annotations/instances_val2017.json + val2017/) in tmp_path."""

    ann = staticmethod(box_ann)
    write_image = staticmethod(write_image)

    def __init__(self, root: Path) -> None:
        self.root = root
        self.images: list[dict] = []
        self.annotations: list[dict] = []
        self.categories = [{"id": 1, "name": "thing"}, {"id": 7, "name": "other"}]

    def image(self, image_id: int, width: int = 64, height: int = 48, write: bool = True, **kw: Any) -> Path:
        path = self.root / "val2017" / f"{image_id:04d}.png"
        if write:
            write_image(path, width, height, **kw)
        self.images.append({"id": image_id, "file_name": path.name, "width": width, "height": height})
        return path

    def write(self) -> Path:
        (self.root / "val2017").mkdir(parents=True, exist_ok=True)
        ann_dir = self.root / "annotations"
        ann_dir.mkdir(parents=True, exist_ok=True)
        data = {"images": self.images, "annotations": self.annotations, "categories": self.categories}
        (ann_dir / "instances_val2017.json").write_text(json.dumps(data))
        return ann_dir / "instances_val2017.json"


@pytest.fixture
def coco_dir(tmp_path: Path) -> CocoDir:
    return CocoDir(tmp_path / "coco")
