"""CocoEvaluator on the hand-built ground truth: known values, pycocotools cross-check, edge cases."""

import contextlib
import copy
import io
import json
import logging
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from faster_coco_eval.core import mask as mask_util
from pycocotools.coco import COCO as PyCOCO
from pycocotools.cocoeval import COCOeval as PyCOCOeval

from datnet.evaluation import CocoEvaluator, coco_evaluator, proposal_recall

Prediction = dict[str, torch.Tensor]
DETECTION_NAMES = ("AP", "AP50", "AP75", "AP_S", "AP_M", "AP_L")
PROPOSAL_NAMES = tuple(f"AR{area}@{n}" for n in (100, 1000) for area in ("", "_S", "_M", "_L"))


def evaluate(
    gt: dict, labels: dict[int, int], predictions: dict[int, Prediction], **kwargs
) -> dict[str, float]:
    evaluator = CocoEvaluator(gt, labels, **kwargs)
    evaluator.update(list(predictions.values()), list(predictions))
    return evaluator.compute()


def full_evaluator(gt: dict, labels: dict[int, int], predictions: dict[int, Prediction]) -> CocoEvaluator:
    """Evaluator of bbox, segm and proposals updated with ``predictions``."""
    evaluator = CocoEvaluator(gt, labels, iou_types=("bbox", "segm"), evaluate_proposals=True)
    evaluator.update(list(predictions.values()), list(predictions))
    return evaluator


def pycocotools_eval(gt: dict, results: list[dict], iou_type: str, use_cats: bool = True) -> PyCOCOeval:
    """Reference COCOeval of pycocotools (its printing silenced)."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = PyCOCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_eval = PyCOCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(results)), iou_type)
        coco_eval.params.useCats = int(use_cats)
        if not use_cats:
            coco_eval.params.maxDets = [100, 1000]
        coco_eval.evaluate()
        coco_eval.accumulate()
    return coco_eval


def test_perfect_predictions_score_one(
    label_to_category_id: dict[int, int], hand_gt: dict, hand_predictions: dict[int, Prediction]
) -> None:
    metrics = full_evaluator(hand_gt, label_to_category_id, hand_predictions).compute()
    expected = [f"{t}/{n}" for t in ("bbox", "segm") for n in DETECTION_NAMES] + [
        f"rpn/{n}" for n in PROPOSAL_NAMES
    ]
    assert list(metrics) == expected
    assert metrics == {key: 1.0 for key in expected}


def test_missed_small_object(
    label_to_category_id: dict[int, int], hand_gt: dict, hand_predictions: dict[int, Prediction]
) -> None:
    """Category 1 has 3 objects; missing one caps its recall at 2/3: precision 1 on 67 of the 101 recall
    thresholds. The missed object is small, as is one (found) object of category 3."""
    image = hand_predictions[2]
    hand_predictions[2] = {key: value[:1] for key, value in image.items()}
    metrics = evaluate(hand_gt, label_to_category_id, hand_predictions, iou_types=("bbox", "segm"))
    for iou_type in ("bbox", "segm"):
        assert metrics[f"{iou_type}/AP"] == pytest.approx((67 / 101 + 1 + 1) / 3)
        assert metrics[f"{iou_type}/AP50"] == pytest.approx((67 / 101 + 1 + 1) / 3)
        assert metrics[f"{iou_type}/AP_S"] == pytest.approx(0.5)
        assert metrics[f"{iou_type}/AP_M"] == metrics[f"{iou_type}/AP_L"] == 1.0


def test_shifted_box_changes_bbox_not_segm(
    label_to_category_id: dict[int, int], hand_gt: dict, hand_predictions: dict[int, Prediction]
) -> None:
    """Shifting the 150x150 box of category 90 by 24 px gives IoU 126/174 = 0.724: a match at the IoU
    thresholds 0.50..0.70 only. Above them category 90 finds 1 of its 2 objects, with precision 1
    (the shifted box has the lower score): AP 51/101."""
    hand_predictions[5]["boxes"][0] += torch.tensor([24.0, 0.0, 24.0, 0.0])
    hand_predictions[5]["scores"][0] = 0.5
    metrics = evaluate(hand_gt, label_to_category_id, hand_predictions, iou_types=("bbox", "segm"))
    category_90 = (5 * 1 + 5 * 51 / 101) / 10
    assert metrics["bbox/AP"] == pytest.approx((1 + 1 + category_90) / 3)
    assert metrics["bbox/AP50"] == 1.0
    assert metrics["bbox/AP75"] == pytest.approx((1 + 1 + 51 / 101) / 3)
    assert all(metrics[f"segm/{name}"] == 1.0 for name in DETECTION_NAMES)


def test_crowd_regions_are_ignored(
    label_to_category_id: dict[int, int], hand_gt: dict, hand_predictions: dict[int, Prediction]
) -> None:
    """A confident detection on the iscrowd region (like a VOC ``difficult`` object) is no false positive."""
    crowd = next(a for a in hand_gt["annotations"] if a["iscrowd"])
    x, y, w, h = crowd["bbox"]
    image = hand_predictions[5]
    image["boxes"] = torch.cat([torch.tensor([[x, y, x + w, y + h]]), image["boxes"]])
    image["scores"] = torch.cat([torch.tensor([2.0]), image["scores"]])
    image["labels"] = torch.cat([torch.tensor([1]), image["labels"]])
    crowd_mask = mask_util.decode(mask_util.frPyObjects(crowd["segmentation"], 300, 300))
    image["masks"] = torch.cat([torch.from_numpy(crowd_mask).float()[None, None], image["masks"]])
    metrics = evaluate(hand_gt, label_to_category_id, hand_predictions, iou_types=("bbox", "segm"))
    assert all(value == 1.0 for value in metrics.values())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_pycocotools(
    label_to_category_id: dict[int, int], hand_gt: dict, imperfect_predictions: Callable, seed: int
) -> None:
    evaluator = full_evaluator(hand_gt, label_to_category_id, imperfect_predictions(hand_gt, seed))
    metrics = evaluator.compute()
    assert 0 < metrics["bbox/AP"] < 1
    for iou_type in ("bbox", "segm"):
        reference = pycocotools_eval(hand_gt, evaluator.results(iou_type), iou_type)
        with contextlib.redirect_stdout(io.StringIO()):
            reference.summarize()
        ours = [metrics[f"{iou_type}/{name}"] for name in DETECTION_NAMES]
        np.testing.assert_allclose(ours, reference.stats[:6], atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_proposal_recall_matches_pycocotools(
    label_to_category_id: dict[int, int], hand_gt: dict, imperfect_predictions: Callable, seed: int
) -> None:
    evaluator = full_evaluator(hand_gt, label_to_category_id, imperfect_predictions(hand_gt, seed))
    metrics = evaluator.compute()
    proposals = [{**p, "category_id": 1} for p in evaluator.results("rpn")]
    recall = pycocotools_eval(hand_gt, proposals, "bbox", use_cats=False).eval["recall"]  # [T, K=1, A, M]
    for m, max_dets in enumerate((100, 1000)):
        for a, area in enumerate(("", "_S", "_M", "_L")):
            values = recall[:, 0, a, m]
            assert metrics[f"rpn/AR{area}@{max_dets}"] == pytest.approx(values[values > -1].mean(), abs=1e-6)


def test_proposal_recall_counts_proposals_by_rank(
    label_to_category_id: dict[int, int], hand_gt: dict, hand_predictions: dict[int, Prediction]
) -> None:
    """Each image's first object is proposed first, its other objects after 120 junk boxes: AR@100 sees
    objects 1 (large), 4 (medium) and 6 (large) of the 7, AR@1000 all of them."""
    junk = torch.tensor([[0.0, 0.0, 2.0, 2.0]]).repeat(120, 1)
    for image in hand_predictions.values():
        image["proposals"] = torch.cat([image["proposals"][:1], junk, image["proposals"][1:]])
    metrics = evaluate(hand_gt, label_to_category_id, hand_predictions, evaluate_proposals=True)
    assert metrics["rpn/AR@100"] == pytest.approx(3 / 7)
    assert (metrics["rpn/AR_S@100"], metrics["rpn/AR_M@100"], metrics["rpn/AR_L@100"]) == pytest.approx(
        (0, 1 / 3, 1)
    )
    assert all(metrics[f"rpn/AR{area}@1000"] == 1.0 for area in ("", "_S", "_M", "_L"))


@pytest.mark.parametrize("seed", [0, 1])
def test_proposal_recall_summed_over_chunks_equals_one_evaluation(
    label_to_category_id: dict[int, int],
    hand_gt: dict,
    imperfect_predictions: Callable,
    seed: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Recall counted image by image (COCO's small/medium/large ranges, a crowd region, an image without
    objects) and summed is recall of all images in one COCOeval."""
    monkeypatch.setattr(coco_evaluator, "PROPOSAL_RECORDS_PER_CHUNK", 1)
    evaluator = full_evaluator(hand_gt, label_to_category_id, imperfect_predictions(hand_gt, seed))
    chunked = {key: value for key, value in evaluator.compute().items() if key.startswith("rpn/")}
    whole = proposal_recall(evaluator.coco_gt, evaluator.results("rpn"), evaluator.image_ids)
    assert 0 < chunked["rpn/AR@100"] < 1
    assert chunked == pytest.approx(whole, abs=1e-12, nan_ok=True)


def test_only_the_proposals_recall_needs_are_kept(
    label_to_category_id: dict[int, int], hand_gt: dict, hand_predictions: dict[int, Prediction]
) -> None:
    """AR@100 alone keeps 100 proposals per image; a split without annotations (test-dev) keeps none."""
    junk = torch.tensor([[0.0, 0.0, 2.0, 2.0]]).repeat(150, 1)
    for image in hand_predictions.values():
        image["proposals"] = torch.cat([image["proposals"], junk])
    evaluator = CocoEvaluator(
        hand_gt, label_to_category_id, evaluate_proposals=True, proposal_max_dets=(100,)
    )
    evaluator.update(list(hand_predictions.values()), list(hand_predictions))
    assert evaluator.max_proposals == 100 and len(evaluator.results("rpn")) == 100 * len(hand_predictions)
    assert [key for key in evaluator.compute() if key.startswith("rpn/")] == [
        "rpn/AR@100",
        "rpn/AR_S@100",
        "rpn/AR_M@100",
        "rpn/AR_L@100",
    ]
    test_dev = {"images": hand_gt["images"], "categories": hand_gt["categories"]}
    evaluator = CocoEvaluator(test_dev, label_to_category_id, ("bbox", "segm"), evaluate_proposals=True)
    evaluator.update(list(hand_predictions.values()), list(hand_predictions))
    assert evaluator.max_proposals == 0 and evaluator.results("rpn") == []
    metrics = evaluator.compute()
    assert len(metrics) == 20 and all(math.isnan(value) for value in metrics.values())


def test_no_predictions_score_zero(
    label_to_category_id: dict[int, int], hand_gt: dict, hand_predictions: dict[int, Prediction]
) -> None:
    empty = {
        image_id: {key: value[:0] for key, value in p.items()} for image_id, p in hand_predictions.items()
    }
    metrics = full_evaluator(hand_gt, label_to_category_id, empty).compute()
    assert metrics == {key: 0.0 for key in metrics}


def test_undefined_metrics_are_nan(
    label_to_category_id: dict[int, int], hand_gt: dict, hand_predictions: dict[int, Prediction]
) -> None:
    """Without ground-truth objects (or without images) there is nothing to measure: nan, no crash."""
    no_objects = {**hand_gt, "annotations": []}
    metrics = full_evaluator(no_objects, label_to_category_id, hand_predictions).compute()
    assert len(metrics) == 20 and all(math.isnan(value) for value in metrics.values())
    metrics = full_evaluator(hand_gt, label_to_category_id, {}).compute()
    assert len(metrics) == 20 and all(math.isnan(value) for value in metrics.values())
    no_large_objects = {image_id: hand_predictions[image_id] for image_id in (2, 7)}
    metrics = evaluate(hand_gt, label_to_category_id, no_large_objects)
    assert metrics["bbox/AP_S"] == 1.0 and math.isnan(metrics["bbox/AP_L"])


def test_only_updated_images_are_evaluated(
    label_to_category_id: dict[int, int], hand_gt: dict, hand_predictions: dict[int, Prediction]
) -> None:
    """A partial pass (e.g. limited validation batches) is scored on the images it saw."""
    metrics = evaluate(
        hand_gt, label_to_category_id, {1: hand_predictions[1], 7: hand_predictions[7]}, iou_types=("segm",)
    )
    assert metrics["segm/AP"] == 1.0


def test_duplicate_images_are_counted_once(
    label_to_category_id: dict[int, int],
    hand_gt: dict,
    hand_predictions: dict[int, Prediction],
    caplog: pytest.LogCaptureFixture,
) -> None:
    evaluator = full_evaluator(hand_gt, label_to_category_id, hand_predictions)
    with caplog.at_level(logging.WARNING):
        evaluator.update([hand_predictions[2]], [torch.tensor(2)])
    assert "image 2 was evaluated more than once" in caplog.text
    assert evaluator.image_ids == [1, 2, 5, 7]
    assert len(evaluator.results("bbox")) == 7
    changed = {**hand_predictions[2], "scores": hand_predictions[2]["scores"] * 0.5}
    with pytest.raises(ValueError, match="image 2 .* different predictions"):
        evaluator.update([changed], [2])
    evaluator.reset()
    assert evaluator.image_ids == [] and evaluator.results("segm") == []


def test_invalid_inputs(
    label_to_category_id: dict[int, int], hand_gt: dict, hand_predictions: dict[int, Prediction]
) -> None:
    with pytest.raises(ValueError, match="iou_types"):
        CocoEvaluator(hand_gt, label_to_category_id, iou_types=("keypoints",))
    with pytest.raises(ValueError, match="absent from GT"):
        CocoEvaluator(hand_gt, {1: 2})
    evaluator = CocoEvaluator(hand_gt, label_to_category_id)
    with pytest.raises(KeyError, match="image id 3"):
        evaluator.update([hand_predictions[1]], [3])
    with pytest.raises(ValueError, match="1 predictions for 2 image ids"):
        evaluator.update([hand_predictions[1]], [1, 2])
    with pytest.raises(ValueError, match="segm"):
        evaluator.results("segm")
    with pytest.raises(ValueError, match="proposals"):
        evaluator.results("rpn")


def test_ground_truth_is_not_modified(
    label_to_category_id: dict[int, int], hand_gt: dict, hand_predictions: dict[int, Prediction]
) -> None:
    original = copy.deepcopy(hand_gt)
    full_evaluator(hand_gt, label_to_category_id, hand_predictions).compute()
    assert hand_gt == original


def test_results_json_round_trip(
    label_to_category_id: dict[int, int],
    tmp_path: Path,
    hand_gt: dict,
    hand_predictions: dict[int, Prediction],
) -> None:
    """Written results load back identically and decode to the predicted masks (original category ids)."""
    evaluator = full_evaluator(hand_gt, label_to_category_id, hand_predictions)
    paths = evaluator.write_results(tmp_path / "results")
    assert paths == {
        iou_type: tmp_path / "results" / f"{iou_type}_results.json" for iou_type in ("bbox", "segm")
    }
    boxes = json.loads(paths["bbox"].read_text())
    masks = json.loads(paths["segm"].read_text())
    assert boxes == evaluator.results("bbox") and masks == evaluator.results("segm")
    assert {r["category_id"] for r in boxes} == {1, 3, 90}
    assert all(set(r) == {"image_id", "category_id", "bbox", "score"} for r in boxes)
    assert all(set(r) == {"image_id", "category_id", "segmentation", "score"} for r in masks)
    by_image = {image_id: [r for r in masks if r["image_id"] == image_id] for image_id in hand_predictions}
    for image_id, prediction in hand_predictions.items():
        if by_image[image_id]:
            decoded = mask_util.decode([r["segmentation"] for r in by_image[image_id]])
            np.testing.assert_array_equal(decoded.transpose(2, 0, 1), prediction["masks"][:, 0].numpy() > 0.5)
    reference = pycocotools_eval(hand_gt, masks, "segm")
    with contextlib.redirect_stdout(io.StringIO()):
        reference.summarize()
    assert reference.stats[0] == 1.0


def test_results_without_annotations(
    label_to_category_id: dict[int, int],
    tmp_path: Path,
    hand_gt: dict,
    hand_predictions: dict[int, Prediction],
) -> None:
    """Test-dev: images and categories only; results are written with original category ids."""
    test_dev = {"images": hand_gt["images"], "categories": hand_gt["categories"]}
    evaluator = full_evaluator(test_dev, label_to_category_id, hand_predictions)
    paths = evaluator.write_results(tmp_path)
    assert len(json.loads(paths["bbox"].read_text())) == len(json.loads(paths["segm"].read_text())) == 7
