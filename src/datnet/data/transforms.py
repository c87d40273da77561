"""Albumentations pipelines of paper Sec. 4 "Training details": colour jitter, horizontal flip and aspect-
preserving resize (short side 800, long side <= 1333), or multi-scale training (short side drawn from
400..1200, long side <= 1400). Evaluation pipelines only resize, deterministically.

The image and the boxes go through the pipeline; boxes carry their index (`ids`) so that the instances that
albumentations keeps are known. The masks are not resized here: the pipeline records whether it flipped
(`save_applied_params`), and `datnet.data.rasterise` makes the masks at the output size and orientation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.augmentations.geometric.resize import MaxSizeTransform


class ShortSideResize(MaxSizeTransform):
    """Scale so that the short side equals a size drawn uniformly from [min_short, max_short] (inclusive),
    unless that would make the long side exceed `max_long`; then the long side is set to `max_long`."""

    def __init__(self, min_short: int, max_short: int, max_long: int, p: float = 1.0) -> None:
        super().__init__(max_size=max_long, p=p)
        if not 0 < min_short <= max_short:
            raise ValueError(f"short side range must satisfy 0 < min <= max, got [{min_short}, {max_short}]")
        self.min_short, self.max_short, self.max_long = min_short, max_short, max_long

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, float]:
        height, width = params["shape"][:2]
        short = self.py_random.randint(self.min_short, self.max_short)
        return {"scale": min(short / min(height, width), self.max_long / max(height, width))}

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("min_short", "max_short", "max_long")


@dataclass(frozen=True)
class AugmentConfig:
    """Resize and augmentation settings shared by all sources (the `data.*` keys of the Hydra configs)."""

    min_size: int = 800
    max_size: int = 1333
    multiscale: bool = False
    multiscale_range: tuple[int, int] = (400, 1200)
    multiscale_max_size: int = 1400
    hflip_prob: float = 0.5
    color_jitter: float = 0.4
    """Strength of brightness/contrast/saturation jitter (hue gets a tenth of it); 0 disables jitter."""


def build_transforms(cfg: AugmentConfig, train: bool) -> A.Compose:
    """The training pipeline (jitter, flip, single- or multi-scale resize) or the deterministic resize."""
    steps: list[A.BasicTransform] = []
    if train:
        if cfg.color_jitter > 0:
            j = cfg.color_jitter
            steps.append(A.ColorJitter(brightness=j, contrast=j, saturation=j, hue=j / 10, p=0.8))
        if cfg.hflip_prob > 0:
            steps.append(A.HorizontalFlip(p=cfg.hflip_prob))
    if train and cfg.multiscale:
        lo, hi = cfg.multiscale_range
        steps.append(ShortSideResize(lo, hi, cfg.multiscale_max_size))
    else:
        steps.append(ShortSideResize(cfg.min_size, cfg.min_size, cfg.max_size))
    return A.Compose(
        steps, bbox_params=A.BboxParams(format="pascal_voc", label_fields=["ids"]), save_applied_params=True
    )


class Augmented(NamedTuple):
    """The pipeline's output: the image, the kept boxes (float32 Nx4 xyxy), the indices of the input
    instances they belong to, and whether the image was flipped left-right."""

    image: np.ndarray
    boxes: np.ndarray
    keep: np.ndarray
    flipped: bool


def apply_transforms(transforms: A.Compose, image: np.ndarray, boxes: np.ndarray) -> Augmented:
    """Run a `build_transforms` pipeline on an HxWx3 image and its Nx4 xyxy boxes."""
    out = transforms(image=image, bboxes=boxes.reshape(-1, 4), ids=np.arange(len(boxes)))
    flipped = any(name == A.HorizontalFlip.__name__ for name, _ in out["applied_transforms"])
    return Augmented(
        out["image"],
        np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4),
        np.asarray(out["ids"], dtype=np.int64),
        flipped,
    )


def image_to_uint8_tensor(image: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 RGB to a 3xHxW uint8 tensor, as loader workers send it (the model scales it to [0, 1]);
    OpenCV splits the channels straight into the tensor's planes."""
    planes = np.empty((3, *image.shape[:2]), dtype=np.uint8)
    cv2.split(image, list(planes))
    return torch.from_numpy(planes)


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 RGB to a 3xHxW float32 tensor in [0, 1]."""
    return image_to_uint8_tensor(image).float().div_(255.0)
