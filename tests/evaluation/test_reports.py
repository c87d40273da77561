"""Per-category AP, precision-recall curves and confusion matrices of CocoEvaluator.write_reports."""

import copy
import csv
import json
import math
import sys

import numpy as np
import pytest
from faster_coco_eval import COCO, COCOeval_faster

from datnet.evaluation import CocoEvaluator, plots
from datnet.evaluation.plots import confusion_matrix


def updated_evaluator(gt: dict, labels: dict[int, int], predictions: dict) -> CocoEvaluator:
    evaluator = CocoEvaluator(gt, labels, iou_types=("bbox", "segm"))
    evaluator.update(list(predictions.values()), list(predictions))
    return evaluator


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_per_class_ap_is_cocoeval_precision_of_the_category(
    hand_gt, label_to_category_id, imperfect_predictions, iou_type
):
    """A category's AP and AP50 are the means of COCOeval's precision[T, R, k, area all, 100 dets] (all
    IoUs, IoU 0.50) of an independent evaluation, and the categories' mean AP is the overall AP."""
    evaluator = updated_evaluator(hand_gt, label_to_category_id, imperfect_predictions(hand_gt, 3))
    metrics = evaluator.compute()
    table = evaluator.per_class_table()
    rows = {row[0]: dict(zip(table.columns, row, strict=True)) for row in table.rows}

    coco_gt = COCO(copy.deepcopy(hand_gt))
    coco_eval = COCOeval_faster(coco_gt, coco_gt.loadRes(evaluator.results(iou_type)), iou_type)
    coco_eval.evaluate()
    coco_eval.accumulate()
    k = coco_eval.params.catIds.index(90)
    precision = coco_eval.eval["precision"][:, :, k, 0, -1]
    assert rows[90][f"{iou_type}_AP"] == pytest.approx(precision[precision > -1].mean())
    assert rows[90][f"{iou_type}_AP50"] == pytest.approx(precision[0][precision[0] > -1].mean())
    assert 0 < rows[90][f"{iou_type}_AP"] < 1
    mean_ap = np.nanmean([row[f"{iou_type}_AP"] for row in rows.values()])
    assert mean_ap == pytest.approx(metrics[f"{iou_type}/AP"])
    assert {cat: row["instances"] for cat, row in rows.items()} == {1: 3, 3: 2, 90: 2}  # crowd not counted


def test_reports_of_perfect_predictions(hand_gt, label_to_category_id, hand_predictions, tmp_path):
    """Perfect predictions: every AP is 1, the confusion matrix is the instance counts on its diagonal
    (the crowd region is not a missed object), and the curves are at precision 1 up to recall 1."""
    evaluator = updated_evaluator(hand_gt, label_to_category_id, hand_predictions)
    evaluator.compute()
    table = evaluator.write_reports(tmp_path)
    with (tmp_path / "per_class_ap.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [row["category"] for row in rows] == ["class1", "class3", "class90"]
    assert all(float(row[column]) == 1 for row in rows for column in table.columns[3:])
    markdown = (tmp_path / "per_class_ap.md").read_text()
    assert markdown.splitlines()[0] == "| category | instances | bbox AP | segm AP | bbox AP50 | segm AP50 |"
    assert "| class90 | 2 | 1.000 | 1.000 | 1.000 | 1.000 |" in markdown
    for iou_type in ("bbox", "segm"):
        with (tmp_path / f"confusion_matrix_{iou_type}.csv").open() as file:
            matrix = list(csv.reader(file))
        assert matrix[0] == ["ground_truth", "class1", "class3", "class90", "fp", "fn"]
        assert [row[1:] for row in matrix[1:]] == [
            ["3", "0", "0", "0", "0"],
            ["0", "2", "0", "0", "0"],
            ["0", "0", "2", "0", "0"],
        ]
        curves = json.loads((tmp_path / f"pr_curves_{iou_type}.json").read_text())
        assert [c["category"] for c in curves["categories"]] == ["class1", "class3", "class90"]
        assert all(p == 1 for c in curves["categories"] for p in c["precision"])
        for name in (f"pr_curves_{iou_type}.png", f"confusion_matrix_{iou_type}.png"):
            assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_confusion_counts_a_wrong_label(hand_gt, label_to_category_id, hand_predictions):
    """A detection of a class-1 object labelled as category 90 moves one count off the diagonal."""
    predictions = copy.deepcopy(hand_predictions)
    predictions[2]["labels"][0] = 3  # image 2's first object (category 1) predicted as category 90
    evaluator = updated_evaluator(hand_gt, label_to_category_id, predictions)
    evaluator.compute()
    matrix, names = confusion_matrix(
        evaluator.coco_gt, evaluator.results("bbox"), "bbox", evaluator.image_ids
    )
    assert names == ["class1", "class3", "class90"]
    assert matrix.tolist() == [[2, 0, 1, 0, 0], [0, 2, 0, 0, 0], [0, 0, 2, 0, 0]]


def test_no_ground_truth_objects_write_nothing(hand_gt, label_to_category_id, hand_predictions, tmp_path):
    gt = {**hand_gt, "annotations": []}
    evaluator = updated_evaluator(gt, label_to_category_id, hand_predictions)
    assert math.isnan(evaluator.compute()["bbox/AP"])
    assert evaluator.write_reports(tmp_path) is None and not list(tmp_path.iterdir())


def test_without_matplotlib_only_data_files(
    hand_gt, label_to_category_id, hand_predictions, tmp_path, monkeypatch, caplog
):
    evaluator = updated_evaluator(hand_gt, label_to_category_id, hand_predictions)
    evaluator.compute()
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import fails
    plots._figure_class.cache_clear()
    try:
        evaluator.write_reports(tmp_path)
    finally:
        plots._figure_class.cache_clear()
    assert "matplotlib is not installed" in caplog.text
    assert not list(tmp_path.glob("*.png"))
    assert {path.name for path in tmp_path.iterdir()} == {
        "per_class_ap.csv",
        "per_class_ap.md",
        *(
            f"{name}_{kind}.{ext}"
            for kind in ("bbox", "segm")
            for name, ext in [("pr_curves", "json"), ("confusion_matrix", "csv")]
        ),
    }
