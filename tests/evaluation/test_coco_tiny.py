"""CocoEvaluator on real COCO annotations (shared ``tiny_coco`` val subset): ground truth as predictions."""

from collections.abc import Callable

import pytest

from datnet.evaluation import CocoEvaluator


def test_ground_truth_as_predictions_is_perfect(tiny_coco_gt: dict, perfect_predictions: Callable) -> None:
    """80 non-contiguous COCO categories, polygons and crowd RLEs, images without objects: every metric
    defined on this subset is 1.0."""
    category_ids = sorted(category["id"] for category in tiny_coco_gt["categories"])
    label_to_category_id = {label: category_id for label, category_id in enumerate(category_ids, start=1)}
    predictions = perfect_predictions(tiny_coco_gt, label_to_category_id)
    evaluator = CocoEvaluator(tiny_coco_gt, label_to_category_id, ("bbox", "segm"), evaluate_proposals=True)
    for image_id, prediction in predictions.items():
        evaluator.update([prediction], [image_id])
    metrics = evaluator.compute()
    assert len(evaluator.image_ids) == len(tiny_coco_gt["images"]) == 50
    assert metrics == {key: pytest.approx(1.0) for key in metrics}
    assert {record["category_id"] for record in evaluator.results("bbox")} <= set(category_ids)
