"""COCO evaluation (box/mask AP, RPN proposal recall, per-category AP, precision-recall curves, confusion
matrices), COCO results export and the auxiliary heads' metrics, DDP-aware."""

from datnet.evaluation.aux_metrics import AuxHeadMetrics
from datnet.evaluation.coco_evaluator import CocoEvaluator, merge_image_results
from datnet.evaluation.coco_metrics import (
    RecallCounts,
    detection_metrics,
    evaluate_detections,
    proposal_recall,
    proposal_recall_counts,
    summary_metrics,
)
from datnet.evaluation.coco_results import ImageResults, encode_masks
from datnet.evaluation.per_class import ClassPrecision, PerClassTable

__all__ = [
    "AuxHeadMetrics",
    "ClassPrecision",
    "CocoEvaluator",
    "ImageResults",
    "PerClassTable",
    "RecallCounts",
    "detection_metrics",
    "encode_masks",
    "evaluate_detections",
    "merge_image_results",
    "proposal_recall",
    "proposal_recall_counts",
    "summary_metrics",
]
