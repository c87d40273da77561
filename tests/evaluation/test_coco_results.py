"""Conversion of torchvision predictions into COCO result records."""

import json

import numpy as np
import pytest
import torch
from faster_coco_eval.core import mask as mask_util

from datnet.evaluation import encode_masks, instances_to_coco_results, proposals_to_coco_results
from datnet.evaluation.coco_results import xyxy_to_xywh


def test_xyxy_to_xywh() -> None:
    boxes = torch.tensor([[10.0, 20.0, 30.5, 60.0], [0.0, 0.0, 1.0, 1.0]])
    assert xyxy_to_xywh(boxes) == [[10.0, 20.0, 20.5, 40.0], [0.0, 0.0, 1.0, 1.0]]
    assert xyxy_to_xywh(torch.zeros(0, 4)) == []


@pytest.mark.parametrize("with_channel", [True, False])
def test_encode_masks_binarises_at_half(with_channel: bool) -> None:
    probabilities = torch.rand(3, 17, 23, generator=torch.Generator().manual_seed(0))
    rles = encode_masks(probabilities[:, None] if with_channel else probabilities)
    assert len(rles) == 3
    for rle, probability in zip(rles, probabilities, strict=True):
        assert isinstance(rle["counts"], str) and rle["size"] == [17, 23]
        decoded = mask_util.decode(rle)
        np.testing.assert_array_equal(decoded, (probability > 0.5).numpy())
    json.dumps(rles)


def test_instances_to_coco_results_maps_labels_to_original_ids() -> None:
    masks = torch.zeros(2, 1, 8, 10)
    masks[0, 0, 1:4, 2:6] = 0.9
    masks[1, 0, 5:8, 0:3] = 0.6
    prediction = {
        "boxes": torch.tensor([[2.0, 1.0, 6.0, 4.0], [0.0, 5.0, 3.0, 8.0]]),
        "scores": torch.tensor([0.75, 0.25]),
        "labels": torch.tensor([2, 3]),
        "masks": masks,
    }
    records = instances_to_coco_results(prediction, 42, {1: 1, 2: 3, 3: 90}, with_masks=True)
    assert [(r["image_id"], r["category_id"], r["score"]) for r in records] == [(42, 3, 0.75), (42, 90, 0.25)]
    assert records[0]["bbox"] == [2.0, 1.0, 4.0, 3.0]
    assert (
        mask_util.area(
            {**records[1]["segmentation"], "counts": records[1]["segmentation"]["counts"].encode()}
        )
        == 9
    )
    without_masks = instances_to_coco_results(prediction, 42, {1: 1, 2: 3, 3: 90}, with_masks=False)
    assert all("segmentation" not in r for r in without_masks)


def test_instances_to_coco_results_rejects_unknown_labels() -> None:
    prediction = {"boxes": torch.zeros(1, 4), "scores": torch.ones(1), "labels": torch.tensor([4])}
    with pytest.raises(KeyError, match="label_to_category_id"):
        instances_to_coco_results(prediction, 1, {1: 1}, with_masks=False)


def test_proposals_are_scored_by_rank() -> None:
    proposals = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 5.0, 3.0], [4.0, 4.0, 6.0, 9.0]])
    records = proposals_to_coco_results(proposals, 7)
    assert [r["score"] for r in records] == [3.0, 2.0, 1.0]
    assert records[1] == {"image_id": 7, "bbox": [1.0, 1.0, 4.0, 2.0], "score": 2.0}
