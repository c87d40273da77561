"""Instance segmentations (COCO polygons / RLE, or none): validation at load time, COCO RLE to and from
binary masks with pycocotools, label PNGs (the masks a sample holds are made by ``datnet.data.rasterise``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from datnet.data.records import Instance, Segmentation, SkipCounter


def clean_polygons(polygons: list[Any], skips: SkipCounter, where: str) -> list[list[float]]:
    """Keep the polygon parts with at least 3 points and finite coordinates; count each dropped part."""
    kept = []
    for poly in polygons:
        if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
            n = len(poly) if isinstance(poly, list) else type(poly).__name__
            skips.add("polygon_too_few_points", f"{where}: segmentation part with {n} coordinates")
            continue
        if not np.all(np.isfinite(np.asarray(poly, dtype=np.float64))):
            skips.add("polygon_non_finite", where)
            continue
        kept.append([float(v) for v in poly])
    return kept


def check_rle(rle: dict[str, Any], width: int, height: int, skips: SkipCounter, where: str) -> bool:
    """An RLE is usable if it has `counts` and a `size` equal to the image's [height, width]."""
    if "counts" not in rle or list(rle.get("size", [])) != [height, width]:
        skips.add(
            "rle_size_mismatch", f"{where}: segmentation.size={rle.get('size')} for image {width}x{height}"
        )
        return False
    return True


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """Encode a HxW binary mask as a compressed COCO RLE with a JSON-serialisable `counts` string."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def box_proxy(segmentation: Segmentation, box: tuple[float, float, float, float]) -> list[list[float]] | dict:
    """The segmentation, or for None (box-only data) the filled box as a polygon: the proxy mask of
    Sec. 4.4."""
    if segmentation is not None:
        return segmentation
    x1, y1, x2, y2 = box
    return [[x1, y1, x2, y1, x2, y2, x1, y2]]


def to_rle(segmentation: Segmentation, box: tuple[float, float, float, float], height: int, width: int):
    """A single compressed RLE for polygons, any RLE, or (None) the filled box proxy mask of Sec. 4.4."""
    segmentation = box_proxy(segmentation, box)
    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation["counts"], list):
        return mask_utils.frPyObjects(segmentation, height, width)
    return segmentation


def read_label_png(path: Path) -> np.ndarray:
    """An indexed PNG (instance ids, class ids) as a HxW integer array of the raw indices, palette ignored."""
    with Image.open(path) as img:
        return np.asarray(img if img.mode in ("P", "L", "I", "I;16") else img.convert("L")).astype(np.int32)


def instance_from_mask(mask: np.ndarray, ann_id: int, category_id: int | None) -> Instance:
    """An Instance with the mask's tight box, pixel area and compressed RLE segmentation."""
    x, y, w, h = cv2.boundingRect(mask.astype(np.uint8))
    return Instance(
        ann_id=ann_id,
        bbox=(float(x), float(y), float(x + w), float(y + h)),
        category_id=category_id,
        segmentation=mask_to_rle(mask),
        area=float(np.count_nonzero(mask)),
    )
