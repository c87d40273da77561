"""Conversion of torchvision Mask R-CNN outputs into COCO result records.

A COCO result record is the per-detection dict of the COCO results format
(https://cocodataset.org/#format-results): ``image_id``, ``category_id`` (the dataset's original id),
``score`` and either ``bbox`` (``[x, y, w, h]``) or ``segmentation`` (compressed RLE whose ``counts`` is a
``str`` so the record is JSON-serialisable).
"""

from collections.abc import Mapping

import numpy as np
import pycocotools.mask as mask_util
import torch
from torch import Tensor

MASK_THRESHOLD = 0.5


def xyxy_to_xywh(boxes: Tensor) -> list[list[float]]:
    """Return ``boxes`` (Nx4, ``x1, y1, x2, y2``) as COCO ``[x, y, width, height]`` lists."""
    boxes = boxes.detach().to(device="cpu", dtype=torch.float64).reshape(-1, 4)
    return torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()


def encode_masks(masks: Tensor) -> list[dict]:
    """Binarise mask probabilities at 0.5 and encode each mask as a compressed COCO RLE.

    ``masks`` is Nx1xHxW (torchvision Mask R-CNN output, pasted into the image) or NxHxW. The ``counts`` of
    each returned RLE is decoded to ``str`` so that the record can be written to JSON.
    """
    if masks.dim() == 4:
        masks = masks[:, 0]
    binary = (masks.detach() > MASK_THRESHOLD).cpu()  # threshold first: moves 1 byte per pixel, not 4
    rles = mask_util.encode(np.asfortranarray(binary.permute(1, 2, 0).numpy().astype(np.uint8)))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("utf-8")
    return rles


def instances_to_coco_results(
    prediction: Mapping[str, Tensor],
    image_id: int,
    label_to_category_id: Mapping[int, int],
    with_masks: bool,
) -> list[dict]:
    """Convert one image's detections into COCO result records carrying ``bbox`` and, if ``with_masks``,
    ``segmentation``.

    ``prediction`` holds ``boxes`` (Nx4 xyxy, original image coordinates), ``scores`` (N), ``labels``
    (N, contiguous training labels mapped to the dataset's category ids by ``label_to_category_id``) and,
    if ``with_masks``, ``masks`` (Nx1xHxW probabilities).
    """
    boxes = xyxy_to_xywh(prediction["boxes"])
    scores = prediction["scores"].detach().cpu().tolist()
    labels = prediction["labels"].detach().cpu().tolist()
    unknown = sorted(set(labels) - set(label_to_category_id))
    if unknown:
        raise KeyError(f"labels {unknown} of image {image_id} have no entry in label_to_category_id")
    records = [
        {"image_id": image_id, "category_id": label_to_category_id[label], "bbox": box, "score": score}
        for box, score, label in zip(boxes, scores, labels, strict=True)
    ]
    if with_masks and records:
        for record, rle in zip(records, encode_masks(prediction["masks"]), strict=True):
            record["segmentation"] = rle
    return records


def proposals_to_coco_results(proposals: Tensor, image_id: int) -> list[dict]:
    """Convert one image's class-agnostic RPN proposals (Mx4 xyxy, ordered by decreasing objectness)
    into COCO box records without ``category_id``, scored by rank: the first proposal scores M, the last 1.
    """
    boxes = xyxy_to_xywh(proposals)
    return [
        {"image_id": image_id, "bbox": box, "score": float(len(boxes) - rank)}
        for rank, box in enumerate(boxes)
    ]
