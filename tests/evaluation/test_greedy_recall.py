"""maskrcnn-benchmark's proposal recall (``evaluate_box_proposals``) beside COCOeval's, on hand-built cases
where the two protocols agree and where they differ."""

import numpy as np
import pytest
import torch
from faster_coco_eval import COCO

from datnet.evaluation import CocoEvaluator
from datnet.evaluation.greedy_recall import greedy_overlaps, greedy_recall_counts

# Image 1: o0 (40 x 40, medium), o1 (its top 40 x 22, small), a crowd region; image 2: one small object.
GT = {
    "images": [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100}],
    "categories": [{"id": 1, "name": "thing"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 40, 40], "area": 1600, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [0, 0, 40, 22], "area": 880, "iscrowd": 0},
        {"id": 3, "image_id": 1, "category_id": 1, "bbox": [60, 60, 30, 30], "area": 900, "iscrowd": 1},
        {"id": 4, "image_id": 2, "category_id": 1, "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0},
    ],
}
# p0 (ranked first): IoU 0.625 with o0, 0.25 with o1; p1: 0.95 with o0, 0.579 with o1.
P0, P1 = [0.0, 10.0, 40.0, 48.0], [0.0, 0.0, 40.0, 38.0]


def prediction(proposals: list[list[float]]) -> dict[str, torch.Tensor]:
    return {
        "boxes": torch.zeros(0, 4),
        "scores": torch.zeros(0),
        "labels": torch.zeros(0, dtype=torch.int64),
        "proposals": torch.tensor(proposals).reshape(-1, 4),
    }


def recall(predictions: dict[int, list[list[float]]], protocols=("cocoeval", "maskrcnn_benchmark")) -> dict:
    evaluator = CocoEvaluator(GT, {1: 1}, evaluate_proposals=True, proposal_protocols=protocols)
    evaluator.update([prediction(p) for p in predictions.values()], list(predictions))
    return evaluator.compute()


def test_greedy_matching_takes_the_best_pair_first_one_to_one():
    iou = np.array([[0.625, 0.25], [0.95, 0.579]], dtype=np.float32)  # proposals x objects
    np.testing.assert_array_equal(greedy_overlaps(iou), np.float32([0.95, 0.25]))
    np.testing.assert_array_equal(greedy_overlaps(iou[:1]), np.float32([0.625, 0.0]))  # one proposal
    assert greedy_overlaps(np.zeros((0, 3), np.float32)).tolist() == [0, 0, 0]


def test_where_the_protocols_differ():
    """COCOeval matches per threshold in score order: at t <= 0.55 p0 takes o0 and p1 o1 (recall 1), above
    one object (0.5): AR 0.6. maskrcnn-benchmark pairs p1-o0 (0.95) first, leaving p0-o1 (0.25): AR 0.5.
    The crowd region is no object in either; S and M agree (one object each)."""
    metrics = recall({1: [P0, P1]})
    assert metrics["rpn/AR@100"] == pytest.approx(0.6)
    assert metrics["rpn_mb/AR@100"] == pytest.approx(0.5)
    for size, expected in (("_S", 0.2), ("_M", 1.0)):
        assert metrics[f"rpn/AR{size}@100"] == metrics[f"rpn_mb/AR{size}@100"] == pytest.approx(expected)
    assert np.isnan(metrics["rpn_mb/AR_L@100"]) and np.isnan(metrics["rpn/AR_L@100"])


def test_images_without_proposals_count_their_objects_as_missed_and_the_limit_cuts():
    """Image 2's object, never proposed, is missed; at 100 proposals only p0 is seen when 99 junk boxes come
    before p1 (o0 at 0.625: thresholds 0.50-0.60 of 10)."""
    junk = [[90.0, 90.0, 92.0, 92.0]] * 99
    metrics = recall({1: [P0, *junk, P1], 2: []}, protocols=("maskrcnn_benchmark",))
    assert metrics["rpn_mb/AR@1000"] == pytest.approx(0.5 * 2 / 3)
    assert metrics["rpn_mb/AR@100"] == pytest.approx(0.3 * 1 / 3)
    assert not any(key.startswith("rpn/") for key in metrics)


def test_area_ranges_include_both_ends_and_use_the_annotated_area():
    """An object of area exactly 32^2 is small and medium (maskrcnn-benchmark's ``>= low & <= high``)."""
    gt = {**GT, "annotations": [{**GT["annotations"][3], "area": 1024}]}
    counts = greedy_recall_counts(COCO(gt), {2: np.float32([[10, 10, 30, 30]])}, (100,))
    assert counts.total.tolist() == [1, 1, 1, 0]
    assert counts.matched[:, :, 0].sum(axis=0).tolist() == [10, 10, 10, 0]


def test_cocoeval_alone_by_default():
    metrics = recall({1: [P0, P1]}, protocols=("cocoeval",))
    assert "rpn/AR@100" in metrics and not any(key.startswith("rpn_mb/") for key in metrics)
    with pytest.raises(ValueError, match="proposal protocols"):
        CocoEvaluator(GT, {1: 1}, proposal_protocols=("detectron",))
