"""COCO metrics computed by faster-coco-eval from a ground-truth ``COCO`` and result records.

Metric values are fractions in [0, 1]. A metric COCO leaves undefined (``-1``: no ground truth in the
evaluated images, or none in an area range) is reported as ``nan``, as detectron2 does.
"""

import logging
import math
from collections.abc import Sequence
from typing import Literal

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


def _undefined_to_nan(value: float) -> float:
    """COCO marks undefined metrics with -1; report them as nan."""
    return float(value) if value >= 0 else math.nan


def _evaluate(
    coco_gt: COCO, results: list[dict], iou_type: IouType, image_ids: Sequence[int], use_cats: bool
) -> COCOeval_faster | None:
    """Run COCOeval (evaluate + accumulate) on ``image_ids``; None when there is nothing to evaluate.

    ``results`` are handed to ``COCO.loadRes``, which modifies the records: pass fresh ones.
    """
    if not image_ids or not coco_gt.getCatIds():
        return None
    coco_dt = coco_gt.loadRes(results)
    coco_eval = COCOeval_faster(coco_gt, coco_dt, iouType=iou_type, print_function=logger.debug)
    coco_eval.params.imgIds = sorted(image_ids)
    coco_eval.params.useCats = int(use_cats)
    if not use_cats:
        coco_eval.params.maxDets = list(PROPOSAL_MAX_DETS)
    coco_eval.evaluate()
    coco_eval.accumulate()
    return coco_eval


def detection_metrics(
    coco_gt: COCO, results: list[dict], iou_type: IouType, image_ids: Sequence[int]
) -> dict[str, float]:
    """COCO AP, AP50, AP75 and AP for small/medium/large objects of ``results`` (box records for
    ``"bbox"``, RLE records without ``bbox`` for ``"segm"``) on ``image_ids``, keyed ``"{iou_type}/AP"``...

    The records are modified (``COCO.loadRes`` adds ``id``, ``area``...): pass fresh ones.
    """
    coco_eval = _evaluate(coco_gt, results, iou_type, image_ids, use_cats=True)
    if coco_eval is None:
        return {f"{iou_type}/{name}": math.nan for name in DETECTION_METRICS}
    coco_eval.summarize()
    stats = coco_eval.stats_as_dict
    return {f"{iou_type}/{name}": _undefined_to_nan(stats[key]) for name, key in DETECTION_METRICS.items()}


def proposal_recall(coco_gt: COCO, proposals: list[dict], image_ids: Sequence[int]) -> dict[str, float]:
    """Class-agnostic average recall (IoU 0.5:0.95) of RPN proposals at 100 and 1000 proposals per
    image, overall and for small/medium/large objects: ``rpn/AR@100``, ``rpn/AR_S@100``, ...

    ``proposals`` are box records without ``category_id`` whose score orders them within an image. They
    are evaluated with ``useCats=0``; the category id they are given only has to exist in ``coco_gt``.
    ``_summarize`` is COCOeval's own recall average for one area range and number of proposals (its
    ``stats`` give S/M/L recall at the largest number only).
    """
    category_ids = coco_gt.getCatIds()
    records = [{**proposal, "category_id": category_ids[0]} for proposal in proposals] if category_ids else []
    coco_eval = _evaluate(coco_gt, records, "bbox", image_ids, use_cats=False)
    return {
        f"rpn/AR{suffix}@{max_dets}": (
            math.nan
            if coco_eval is None
            else _undefined_to_nan(coco_eval._summarize(0, areaRng=area, maxDets=max_dets))
        )
        for max_dets in PROPOSAL_MAX_DETS
        for suffix, area in PROPOSAL_AREAS.items()
    }
