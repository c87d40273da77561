"""Compact per-image predictions of torchvision Mask R-CNN outputs, and their COCO result records.

The evaluator keeps (and gathers across processes) one :class:`ImageResults` per image: detections and
proposals as NumPy arrays, masks as compressed RLE; result records are made from them only when they are
scored or written. A COCO result record is the per-detection dict of the COCO results format
(https://cocodataset.org/#format-results): ``image_id``, ``category_id`` (the dataset's original id),
``score`` and either ``bbox`` (``[x, y, w, h]``) or ``segmentation`` (compressed RLE whose ``counts`` is a
``str`` so the record is JSON-serialisable).
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pycocotools.mask as mask_util
import torch
from torch import Tensor

MASK_THRESHOLD = 0.5
MASKS_PER_ENCODE = 16  # masks binarised and encoded at a time: buffers of 16 x H x W bytes

ResultKind = Literal["bbox", "segm", "rpn"]


def xyxy_to_xywh(boxes: np.ndarray) -> list[list[float]]:
    """Return ``boxes`` (Nx4, ``x1, y1, x2, y2``) as COCO ``[x, y, width, height]`` lists, in float64."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1).tolist()


def encode_masks(masks: Tensor) -> list[dict]:
    """Binarise mask probabilities at 0.5 and encode each mask as a compressed COCO RLE.

    ``masks`` is Nx1xHxW (torchvision Mask R-CNN output, pasted into the image) or NxHxW. The ``counts`` of
    each returned RLE is decoded to ``str`` so that the record can be written to JSON.
    """
    masks = (masks[:, 0] if masks.dim() == 4 else masks).detach()
    count, height, width = masks.shape
    # K x W x H in C order is the H x W x K Fortran order RLE encoding reads: each group of masks is
    # thresholded straight into that layout on the masks' device, then moves at 1 byte per pixel; both
    # buffers are reused from group to group
    binary = torch.empty((min(count, MASKS_PER_ENCODE), width, height), dtype=torch.bool, device=masks.device)
    host = binary if binary.device.type == "cpu" else torch.empty(binary.shape, dtype=torch.bool)
    rles = []
    for begin in range(0, count, MASKS_PER_ENCODE):
        group = masks[begin : begin + MASKS_PER_ENCODE].transpose(1, 2)
        torch.gt(group, MASK_THRESHOLD, out=binary[: len(group)])
        if host is not binary:
            host[: len(group)].copy_(binary[: len(group)])
        rles += mask_util.encode(host[: len(group)].numpy().view(np.uint8).transpose(2, 1, 0))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("utf-8")
    return rles


def _array(tensor: Tensor, dtype: type) -> np.ndarray:
    """``tensor`` (boxes, scores) as a NumPy array of ``dtype`` on the CPU, through float32: NumPy has no
    bfloat16, in which the model's outputs leave it under CPU bf16 autocast."""
    return tensor.detach().float().cpu().numpy().astype(dtype, copy=False)


@dataclass(eq=False)
class ImageResults:
    """One image's predictions in the compact form the evaluator keeps and gathers (~35 KB for 100 masked
    detections and 1000 proposals of a COCO image, against ~90 KB of result record dicts).

    ``boxes`` (Nx4 float32, xyxy), ``scores`` (N float32) and ``category_ids`` (N int64, original ids) are
    the detections; ``mask_counts`` the compressed RLE ``counts`` of their masks of ``mask_size``
    (height, width), empty when masks are not evaluated; ``proposals`` (Mx4 float32, xyxy) the RPN boxes by
    decreasing objectness, empty when proposals are not evaluated.
    """

    boxes: np.ndarray
    scores: np.ndarray
    category_ids: np.ndarray
    mask_counts: list[str] = field(default_factory=list)
    mask_size: tuple[int, int] = (0, 0)
    proposals: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), dtype=np.float32))

    @classmethod
    def from_prediction(
        cls,
        prediction: Mapping[str, Tensor],
        label_to_category_id: Mapping[int, int],
        with_masks: bool,
        max_proposals: int,
    ) -> "ImageResults":
        """Compact form of one image's torchvision output: ``boxes`` (Nx4 xyxy, original image
        coordinates), ``scores`` (N), ``labels`` (N, contiguous training labels mapped to the dataset's
        category ids by ``label_to_category_id``), if ``with_masks`` its ``masks`` (Nx1xHxW probabilities,
        binarised at 0.5) and, if ``max_proposals`` > 0, the first ``max_proposals`` of its ``proposals``
        (Mx4 xyxy by objectness)."""
        labels = prediction["labels"].detach().cpu().tolist()
        unknown = sorted(set(labels) - set(label_to_category_id))
        if unknown:
            raise KeyError(f"labels {unknown} have no entry in label_to_category_id")
        results = cls(
            boxes=_array(prediction["boxes"], np.float32).reshape(-1, 4),
            scores=_array(prediction["scores"], np.float32).reshape(-1),
            category_ids=np.array([label_to_category_id[label] for label in labels], dtype=np.int64),
        )
        if with_masks:
            masks = prediction["masks"]
            results.mask_size = (int(masks.shape[-2]), int(masks.shape[-1]))
            results.mask_counts = [rle["counts"] for rle in encode_masks(masks)]
        if max_proposals > 0:
            results.proposals = _array(prediction["proposals"][:max_proposals], np.float32).reshape(-1, 4)
        return results

    def __eq__(self, other: object) -> bool:
        """Whether ``other`` holds the same predictions (arrays compared element-wise)."""
        if not isinstance(other, ImageResults):
            return NotImplemented
        arrays = ("boxes", "scores", "category_ids", "proposals")
        return (
            all(np.array_equal(getattr(self, name), getattr(other, name)) for name in arrays)
            and self.mask_counts == other.mask_counts
            and self.mask_size == other.mask_size
        )

    def records(self, image_id: int, kind: ResultKind) -> list[dict]:
        """Fresh COCO result records of this image: ``"bbox"`` detection boxes, ``"segm"`` detection RLE
        masks (without ``bbox``, so that COCO measures mask areas) or ``"rpn"`` class-agnostic proposal
        boxes without ``category_id``, scored by rank (the first of M proposals scores M, the last 1)."""
        if kind == "rpn":
            count = len(self.proposals)
            return [
                {"image_id": image_id, "bbox": box, "score": float(count - rank)}
                for rank, box in enumerate(xyxy_to_xywh(self.proposals))
            ]
        heads = [
            {"image_id": image_id, "category_id": category_id, "score": score}
            for category_id, score in zip(self.category_ids.tolist(), self.scores.tolist(), strict=True)
        ]
        if kind == "bbox":
            return [{**head, "bbox": box} for head, box in zip(heads, xyxy_to_xywh(self.boxes), strict=True)]
        return [
            {**head, "segmentation": {"size": list(self.mask_size), "counts": counts}}
            for head, counts in zip(heads, self.mask_counts, strict=True)
        ]
