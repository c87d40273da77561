"""COCO evaluation (box/mask AP, RPN proposal recall) and COCO results export, DDP-aware."""

from datnet.evaluation.coco_evaluator import CocoEvaluator, merge_image_results
from datnet.evaluation.coco_metrics import (
    RecallCounts,
    detection_metrics,
    proposal_recall,
    proposal_recall_counts,
)
from datnet.evaluation.coco_results import ImageResults, encode_masks

__all__ = [
    "CocoEvaluator",
    "ImageResults",
    "RecallCounts",
    "detection_metrics",
    "encode_masks",
    "merge_image_results",
    "proposal_recall",
    "proposal_recall_counts",
]
