"""COCO metrics computed by faster-coco-eval from a ground-truth ``COCO`` and result records.

Metric values are fractions in [0, 1]. A metric COCO leaves undefined (``-1``: no ground truth in the
evaluated images, or none in an area range) is reported as ``nan``, as detectron2 does.
"""

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from faster_coco_eval import COCO, COCOeval_faster

logger = logging.getLogger(__name__)

IouType = Literal["bbox", "segm"]

# Flat metric name -> key of ``COCOeval_faster.stats_as_dict``.
DETECTION_METRICS = {
    "AP": "AP_all",
    "AP50": "AP_50",
    "AP75": "AP_75",
    "AP_S": "AP_small",
    "AP_M": "AP_medium",
    "AP_L": "AP_large",
}
# Flat metric name suffix -> COCO area range label, for proposal recall.
PROPOSAL_AREAS = {"": "all", "_S": "small", "_M": "medium", "_L": "large"}
PROPOSAL_MAX_DETS = (100, 1000)
IOU_THRESHOLDS = 10  # COCO's 0.50:0.05:0.95


def _undefined_to_nan(value: float) -> float:
    """COCO marks undefined metrics with -1; report them as nan."""
    return float(value) if value >= 0 else math.nan


def _evaluate(
    coco_gt: COCO,
    results: list[dict],
    iou_type: IouType,
    image_ids: Sequence[int],
    max_dets: Sequence[int] | None = None,
) -> COCOeval_faster | None:
    """Run COCOeval (evaluate + accumulate) on ``image_ids``: per category, or class-agnostically
    (``useCats=0``) at ``max_dets`` detections per image when these are given. None when there is nothing
    to evaluate (no images, categories or ground-truth objects: every COCO metric would be undefined).

    ``results`` are handed to ``COCO.loadRes``, which modifies the records: pass fresh ones.
    """
    if not image_ids or not coco_gt.getCatIds() or not coco_gt.anns:
        return None
    coco_dt = coco_gt.loadRes(results)
    coco_eval = COCOeval_faster(coco_gt, coco_dt, iouType=iou_type, print_function=logger.debug)
    coco_eval.params.imgIds = sorted(image_ids)
    if max_dets is not None:
        coco_eval.params.useCats = 0
        coco_eval.params.maxDets = sorted(max_dets)
    coco_eval.evaluate()
    coco_eval.accumulate()
    return coco_eval


def evaluate_detections(
    coco_gt: COCO, results: list[dict], iou_type: IouType, image_ids: Sequence[int]
) -> COCOeval_faster | None:
    """COCOeval of ``results`` (box records for ``"bbox"``, RLE records without ``bbox`` for ``"segm"``) on
    ``image_ids``, per category, evaluated and accumulated: its ``eval["precision"]`` feeds both
    :func:`summary_metrics` and the per-category report (``datnet.evaluation.per_class``). None when there
    is nothing to evaluate.

    The records are modified (``COCO.loadRes`` adds ``id``, ``area``...): pass fresh ones.
    """
    return _evaluate(coco_gt, results, iou_type, image_ids)


def summary_metrics(coco_eval: COCOeval_faster | None, iou_type: IouType) -> dict[str, float]:
    """COCO AP, AP50, AP75 and AP for small/medium/large objects of an accumulated COCOeval (all ``nan``
    for None), keyed ``"{iou_type}/AP"``..."""
    if coco_eval is None:
        return {f"{iou_type}/{name}": math.nan for name in DETECTION_METRICS}
    coco_eval.summarize()
    stats = coco_eval.stats_as_dict
    return {f"{iou_type}/{name}": _undefined_to_nan(stats[key]) for name, key in DETECTION_METRICS.items()}


def detection_metrics(
    coco_gt: COCO, results: list[dict], iou_type: IouType, image_ids: Sequence[int]
) -> dict[str, float]:
    """COCO AP, AP50, AP75 and AP for small/medium/large objects of ``results`` on ``image_ids`` (see
    :func:`evaluate_detections` and :func:`summary_metrics`)."""
    return summary_metrics(evaluate_detections(coco_gt, results, iou_type, image_ids), iou_type)


@dataclass
class RecallCounts:
    """Proposal recall as counts, which add up over disjoint sets of images: ``matched[t, a, m]`` ground-truth
    objects of area range ``a`` (``PROPOSAL_AREAS`` order) found at IoU threshold ``t`` (0.50:0.05:0.95)
    by the first ``max_dets[m]`` proposals of their image, out of ``total[a]`` (COCO's non-ignored objects:
    not crowd, area within the range)."""

    max_dets: tuple[int, ...]
    matched: np.ndarray
    total: np.ndarray

    @classmethod
    def zeros(cls, max_dets: Sequence[int]) -> "RecallCounts":
        """Counts of no images."""
        max_dets = tuple(sorted(max_dets))
        areas = len(PROPOSAL_AREAS)
        return cls(
            max_dets, np.zeros((IOU_THRESHOLDS, areas, len(max_dets)), np.int64), np.zeros(areas, np.int64)
        )

    def __add__(self, other: "RecallCounts") -> "RecallCounts":
        """Counts of the union of both (disjoint) image sets."""
        return RecallCounts(self.max_dets, self.matched + other.matched, self.total + other.total)

    def metrics(self, prefix: str = "rpn") -> dict[str, float]:
        """Average recall over the IoU thresholds, ``{prefix}/AR{_S,_M,_L}@{max_dets}`` (as COCOeval's
        ``_summarize``); ``nan`` for an area range without objects."""
        return {
            f"{prefix}/AR{suffix}@{max_det}": (
                float(np.mean(self.matched[:, a, m] / self.total[a])) if self.total[a] else math.nan
            )
            for m, max_det in enumerate(self.max_dets)
            for a, suffix in enumerate(PROPOSAL_AREAS)
        }


def proposal_recall_counts(
    coco_gt: COCO,
    proposals: list[dict],
    image_ids: Sequence[int],
    max_dets: Sequence[int] = PROPOSAL_MAX_DETS,
) -> RecallCounts:
    """Class-agnostic recall counts (IoU 0.5:0.95) of RPN proposals on ``image_ids`` at ``max_dets``
    proposals per image, overall and for small/medium/large objects.

    ``proposals`` are box records without ``category_id`` whose score orders them within an image (they
    are modified: pass fresh ones). They are evaluated by COCOeval with ``useCats=0``; the category id they
    are given only has to exist in ``coco_gt``. COCOeval's recall is ``matched / total`` per IoU threshold,
    area range and number of proposals; ``total`` is counted here from the ground truth, with COCOeval's
    rule for ignored objects (crowd, or area outside the range), and checked against COCOeval's.
    """
    counts = RecallCounts.zeros(max_dets)
    category_ids = coco_gt.getCatIds()
    records = [{**proposal, "category_id": category_ids[0]} for proposal in proposals] if category_ids else []
    coco_eval = _evaluate(coco_gt, records, "bbox", image_ids, max_dets=counts.max_dets)
    if coco_eval is None:
        return counts
    params = coco_eval.params
    area_index = [params.areaRngLbl.index(label) for label in PROPOSAL_AREAS.values()]
    objects = np.array(
        [
            ann["area"]
            for ann in coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=list(image_ids)))
            if not ann.get("iscrowd", 0)
        ]
    )
    total = np.array(
        [
            np.count_nonzero((objects >= low) & (objects <= high))
            for low, high in np.array(params.areaRng)[area_index]
        ]
    )
    recall = coco_eval.eval["recall"][:, 0][:, area_index]  # [T, A, M]
    if not np.array_equal(recall[0] > -1, np.broadcast_to(total[:, None] > 0, recall[0].shape)):
        raise RuntimeError(f"proposal recall: COCOeval's recallable objects disagree with the counts {total}")
    counts.matched = np.where(recall > -1, np.rint(recall * total[None, :, None]), 0).astype(np.int64)
    counts.total = total
    return counts


def proposal_recall(
    coco_gt: COCO,
    proposals: list[dict],
    image_ids: Sequence[int],
    max_dets: Sequence[int] = PROPOSAL_MAX_DETS,
) -> dict[str, float]:
    """Class-agnostic average recall (IoU 0.5:0.95) of RPN proposals at ``max_dets`` (100 and 1000)
    proposals per image, overall and for small/medium/large objects: ``rpn/AR@100``, ``rpn/AR_S@100``, ...
    (see :func:`proposal_recall_counts`)."""
    return proposal_recall_counts(coco_gt, proposals, image_ids, max_dets).metrics()
