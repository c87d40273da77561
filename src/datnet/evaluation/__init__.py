"""COCO evaluation (box/mask AP, RPN proposal recall) and COCO results export, DDP-aware."""

from datnet.evaluation.coco_evaluator import CocoEvaluator, ImageResults, merge_image_results
from datnet.evaluation.coco_metrics import detection_metrics, proposal_recall
from datnet.evaluation.coco_results import encode_masks, instances_to_coco_results, proposals_to_coco_results

__all__ = [
    "CocoEvaluator",
    "ImageResults",
    "detection_metrics",
    "encode_masks",
    "instances_to_coco_results",
    "merge_image_results",
    "proposal_recall",
    "proposals_to_coco_results",
]
