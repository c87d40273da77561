"""Fixtures of the evaluation tests.

The hand-built ground truth has non-contiguous category ids (1, 3, 90), polygon and RLE masks, small,
medium and large objects, an ignored ``iscrowd`` region and an image without objects. Helpers are
exposed as fixtures (test modules cannot import this file under ``--import-mode=importlib``).
"""

import json
from collections.abc import Callable

import numpy as np
import pytest
import torch
from faster_coco_eval.core import mask as mask_util

from datnet.configs import shared_data_root

LABEL_TO_CATEGORY_ID = {1: 1, 2: 3, 3: 90}

Prediction = dict[str, torch.Tensor]


def rectangle(x: float, y: float, w: float, h: float) -> list[float]:
    """Polygon of an axis-aligned rectangle."""
    return [x, y, x + w, y, x + w, y + h, x, y + h]


def annotation_mask(annotation: dict, height: int, width: int) -> np.ndarray:
    """HxW uint8 mask of a COCO annotation (polygons, compressed or uncompressed RLE)."""
    segmentation = annotation["segmentation"]
    if isinstance(segmentation, list):
        rle = mask_util.merge(mask_util.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation["counts"], list):
        rle = mask_util.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return mask_util.decode(rle)


def _finish(images: list[dict], objects: list[tuple[int, int, object, int]]) -> dict:
    """COCO ground truth from ``(image_id, category_id, segmentation, iscrowd)`` objects: area and bbox
    are measured on the rasterised mask, annotation ids start at 1."""
    sizes = {image["id"]: (image["height"], image["width"]) for image in images}
    annotations = []
    for index, (image_id, category_id, segmentation, iscrowd) in enumerate(objects, start=1):
        annotation = {"id": index, "image_id": image_id, "category_id": category_id, "iscrowd": iscrowd}
        annotation["segmentation"] = segmentation
        rle = mask_util.encode(np.asfortranarray(annotation_mask(annotation, *sizes[image_id])))
        annotation["area"] = float(mask_util.area(rle))
        annotation["bbox"] = mask_util.toBbox(rle).tolist()
        annotations.append(annotation)
    categories = [{"id": cat, "name": f"class{cat}"} for cat in sorted(LABEL_TO_CATEGORY_ID.values())]
    return {"images": images, "annotations": annotations, "categories": categories}


def _compressed_rle(mask: np.ndarray) -> dict:
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("utf-8")}


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO crowd-style RLE: lengths of alternating 0/1 runs in column-major order, starting with 0s."""
    flat = mask.flatten(order="F")
    boundaries = np.flatnonzero(np.diff(flat)) + 1
    counts = np.diff(np.concatenate([[0], boundaries, [flat.size]])).tolist()
    return {"size": list(mask.shape), "counts": ([0] if flat[0] else []) + counts}


def build_hand_gt() -> dict:
    """Four images (ids 1, 2, 5, 7; 7 has no objects), eight objects, one of them crowd."""
    images = [
        {"id": 1, "height": 160, "width": 200},
        {"id": 2, "height": 200, "width": 120},
        {"id": 5, "height": 300, "width": 300},
        {"id": 7, "height": 100, "width": 100},
    ]
    disk = np.zeros((160, 200), dtype=np.uint8)
    yy, xx = np.mgrid[:160, :200]
    disk[(yy - 110) ** 2 + (xx - 150) ** 2 <= 25**2] = 1  # medium (area ~1960)
    crowd = np.zeros((300, 300), dtype=np.uint8)
    crowd[250:290, 10:290] = 1
    objects = [
        (1, 1, [rectangle(10, 10, 110, 100)], 0),  # large
        (1, 3, [[130, 10, 150, 10, 140, 28]], 0),  # small triangle
        (1, 90, _compressed_rle(disk), 0),  # medium, compressed RLE
        (2, 1, [rectangle(20, 30, 40, 40)], 0),  # medium
        (2, 1, [rectangle(70, 150, 20, 20)], 0),  # small
        (5, 90, [rectangle(20, 20, 150, 150)], 0),  # large
        (5, 3, [[180, 30, 260, 30, 260, 60, 210, 60, 210, 90, 180, 90]], 0),  # medium L-shape
        (5, 1, _uncompressed_rle(crowd), 1),  # ignored region
    ]
    return _finish(images, objects)


def predictions_from_gt(gt: dict, label_to_category_id: dict[int, int]) -> dict[int, Prediction]:
    """Perfect predictions: every non-crowd object as a detection with score 1 (its box, and its mask as
    Nx1xHxW float), and all of an image's objects as its RPN proposals."""
    category_to_label = {category: label for label, category in label_to_category_id.items()}
    images = {image["id"]: image for image in gt["images"]}
    predictions = {}
    for image_id, image in images.items():
        objects = [a for a in gt["annotations"] if a["image_id"] == image_id and not a.get("iscrowd", 0)]
        boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in objects)])
        prediction = {
            "boxes": boxes.reshape(-1, 4).float(),
            "scores": torch.ones(len(objects)),
            "labels": torch.tensor([category_to_label[a["category_id"]] for a in objects], dtype=torch.int64),
            "proposals": boxes.reshape(-1, 4).float(),
        }
        masks = [annotation_mask(a, image["height"], image["width"]) for a in objects]
        shape = (len(objects), 1, image["height"], image["width"])
        prediction["masks"] = (
            torch.from_numpy(np.stack(masks)).float().reshape(shape) if masks else torch.zeros(shape)
        )
        predictions[image_id] = prediction
    return predictions


def noisy_predictions(gt: dict, seed: int) -> dict[int, Prediction]:
    """Imperfect predictions: perfect ones with jittered boxes, shifted masks, random scores and some
    random labels, some objects missed and false positives (also on images without objects)."""
    generator = torch.Generator().manual_seed(seed)
    predictions = {}
    for image_id, perfect in predictions_from_gt(gt, LABEL_TO_CATEGORY_ID).items():
        n = len(perfect["boxes"])
        _, _, height, width = perfect["masks"].shape
        keep = torch.rand(n, generator=generator) > 0.2
        boxes = perfect["boxes"][keep] + torch.randn(int(keep.sum()), 4, generator=generator) * 3
        masks = torch.roll(perfect["masks"][keep], shifts=(2, -1), dims=(2, 3)) * 0.8
        labels = perfect["labels"][keep].clone()
        flip = torch.rand(len(labels), generator=generator) < 0.15
        labels[flip] = torch.randint(1, 4, (int(flip.sum()),), generator=generator)
        false_boxes = torch.rand(3, 2, generator=generator) * torch.tensor([width - 30, height - 30])
        false_boxes = torch.cat(
            [false_boxes, false_boxes + 5 + torch.rand(3, 2, generator=generator) * 25], 1
        )
        false_masks = torch.zeros(3, 1, height, width)
        for i, (x1, y1, x2, y2) in enumerate(false_boxes.round().int().tolist()):
            false_masks[i, 0, y1:y2, x1:x2] = 0.9
        predictions[image_id] = {
            "boxes": torch.cat([boxes, false_boxes]).clamp(min=0),
            "scores": torch.rand(len(boxes) + 3, generator=generator),
            "labels": torch.cat([labels, torch.randint(1, 4, (3,), generator=generator)]),
            "masks": torch.cat([masks, false_masks]),
            "proposals": torch.cat([false_boxes, boxes]).clamp(min=0),
        }
    return predictions


@pytest.fixture
def label_to_category_id() -> dict[int, int]:
    """Contiguous labels of the hand-built ground truth -> its category ids."""
    return dict(LABEL_TO_CATEGORY_ID)


@pytest.fixture
def hand_gt() -> dict:
    return build_hand_gt()


@pytest.fixture
def hand_predictions(hand_gt: dict) -> dict[int, Prediction]:
    """Perfect predictions for ``hand_gt``, by image id."""
    return predictions_from_gt(hand_gt, LABEL_TO_CATEGORY_ID)


@pytest.fixture
def perfect_predictions() -> Callable[[dict, dict[int, int]], dict[int, Prediction]]:
    """``(ground truth, label_to_category_id) -> perfect predictions by image id``."""
    return predictions_from_gt


@pytest.fixture
def imperfect_predictions() -> Callable[[dict, int], dict[int, Prediction]]:
    """``(ground truth with the hand-built categories, seed) -> imperfect predictions by image id``."""
    return noisy_predictions


@pytest.fixture
def tiny_coco_gt() -> dict:
    """COCO 2017 val annotations of the shared ``tiny_coco`` subset (50 images, original ids)."""
    path = shared_data_root() / "tiny_coco" / "annotations" / "instances_val2017.json"
    if not path.is_file():
        pytest.skip(f"shared tiny_coco data not found at {path} (set DATNET_SHARED_DATA)")
    return json.loads(path.read_text())
