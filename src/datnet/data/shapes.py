"""The embedded default dataset: a seeded generator of filled shapes with real instance masks, written as a
standard COCO directory (annotations/instances_{train,val}2017.json, train2017/, val2017/) and then read
through the `coco` code path like real data.

Images are 128-192 px with a smoothly textured background and 1-4 objects of 24-80 px (circle, square,
triangle; rotated, varied colour). Colours are biased by class but overlap, so shape is the reliable cue.
Later objects occlude earlier ones; instance masks are the visible parts (COCO convention) and an object
stays at least half visible. Category ids are deliberately non-contiguous (10, 20, 30) so that the default
run exercises the label <-> category id mapping.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np

CLASSES = ((10, "circle"), (20, "square"), (30, "triangle"))
_HUES = (0.0, 120.0, 240.0)  # class hue centres in degrees; +-jitter overlaps the neighbours
GENERATOR_VERSION = 1
MARKER = "GENERATED.json"


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Low-saturation base colour + smooth low-frequency blotches + fine noise, float32 HxWx3 in 0..255."""
    base = rng.uniform(60, 200) + rng.uniform(-25, 25, size=3)
    coarse = rng.normal(0, 18, size=(max(2, height // 24), max(2, width // 24), 3)).astype(np.float32)
    smooth = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    return base + smooth + rng.normal(0, 5, size=(height, width, 3))


def _colour(rng: np.random.Generator, class_index: int, avoid: np.ndarray) -> np.ndarray:
    """An RGB colour with a class-biased hue that stands out from the background colour `avoid`."""
    for _ in range(20):
        hue = (_HUES[class_index] + rng.normal(0, 45)) % 360
        hsv = np.uint8([[[hue / 2, rng.uniform(120, 255), rng.uniform(110, 255)]]])
        rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)
        if np.abs(rgb - avoid).sum() > 120:
            break
    return rgb


def _shape_mask(rng: np.random.Generator, class_index: int, height: int, width: int) -> np.ndarray:
    """A filled shape of extent 24..80 px, rotated, fully inside the image."""
    size = rng.uniform(24, min(80, height - 4, width - 4))
    r = size / 2
    cx, cy = rng.uniform(r + 1, width - r - 1), rng.uniform(r + 1, height - r - 1)
    mask = np.zeros((height, width), dtype=np.uint8)
    if CLASSES[class_index][1] == "circle":
        cv2.circle(mask, (round(cx * 16), round(cy * 16)), round(r * 16), 1, -1, cv2.LINE_8, shift=4)
        return mask
    n = 4 if CLASSES[class_index][1] == "square" else 3
    angles = rng.uniform(0, 2 * np.pi) + 2 * np.pi * np.arange(n) / n
    # squares are inscribed with half-diagonal r, triangles likewise in the circle of radius r
    pts = np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], axis=1)
    cv2.fillPoly(mask, [np.round(pts * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)
    return mask


def _polygons(mask: np.ndarray) -> list[list[float]]:
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]


def _image(rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """One image and its (class index, visible mask) objects."""
    height, width = (int(v) for v in rng.integers(128, 193, size=2))
    canvas = _background(rng, height, width)
    objects: list[tuple[int, np.ndarray, int]] = []  # class, visible mask, full area
    for _ in range(int(rng.integers(1, 5))):
        for _attempt in range(20):
            cls = int(rng.integers(len(CLASSES)))
            shape = _shape_mask(rng, cls, height, width)
            if all(np.count_nonzero(vis & ~shape.astype(bool)) * 2 >= full for _, vis, full in objects):
                break
        else:
            continue
        inside = shape.astype(bool)
        colour = _colour(rng, cls, canvas[inside].mean(axis=0))
        shading = rng.normal(0, 6, size=(int(inside.sum()), 3))
        canvas[inside] = colour + shading
        objects = [(c, vis & ~inside, full) for c, vis, full in objects]
        objects.append((cls, inside, int(inside.sum())))
    image = np.clip(canvas, 0, 255).astype(np.uint8)
    return image, [(c, vis.astype(np.uint8)) for c, vis, _ in objects]


def _write_split(out: Path, split: str, num_images: int, seed: int) -> None:
    img_dir = out / f"{split}2017"
    img_dir.mkdir(parents=True)
    images, annotations = [], []
    for k in range(num_images):
        rng = np.random.default_rng([seed, 0 if split == "train" else 1, k])
        image, objects = _image(rng)
        image_id = k + 1
        file_name = f"{image_id:06d}.jpg"
        cv2.imwrite(
            str(img_dir / file_name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95]
        )
        images.append(
            {"id": image_id, "file_name": file_name, "height": image.shape[0], "width": image.shape[1]}
        )
        for cls, mask in objects:
            x, y, w, h = cv2.boundingRect(mask)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": CLASSES[cls][0],
                    "bbox": [x, y, w, h],
                    "area": int(np.count_nonzero(mask)),
                    "iscrowd": 0,
                    "segmentation": _polygons(mask),
                }
            )
    categories = [{"id": cid, "name": name, "supercategory": "shape"} for cid, name in CLASSES]
    with open(out / "annotations" / f"instances_{split}2017.json", "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)


def ensure_shapes(root: Path, num_train: int = 300, num_val: int = 60, seed: int = 0) -> Path:
    """Generate the dataset under `root` unless an identical one (same marker parameters) is already there.

    Generation goes to a temporary sibling directory that replaces `root` at the end, so an interrupted run
    never leaves a half-written dataset behind (it is regenerated on the next call).
    """
    root = Path(root)
    params: dict[str, Any] = {
        "version": GENERATOR_VERSION,
        "num_train": num_train,
        "num_val": num_val,
        "seed": seed,
    }
    marker = root / MARKER
    if marker.exists() and json.loads(marker.read_text()) == params:
        return root
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "annotations").mkdir(parents=True)
    _write_split(tmp, "train", num_train, seed)
    _write_split(tmp, "val", num_val, seed)
    (tmp / MARKER).write_text(json.dumps(params))
    shutil.rmtree(root, ignore_errors=True)
    try:
        os.rename(tmp, root)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
        if not (marker.exists() and json.loads(marker.read_text()) == params):
            raise
    return root
