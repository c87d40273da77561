"""Compact per-image predictions (``ImageResults``) and the COCO result records made from them."""

import json

import numpy as np
import pytest
import torch
from faster_coco_eval.core import mask as mask_util

from datnet.evaluation import ImageResults, encode_masks
from datnet.evaluation.coco_results import xyxy_to_xywh

LABELS = {1: 1, 2: 3, 3: 90}


def test_xyxy_to_xywh() -> None:
    boxes = np.array([[10.0, 20.0, 30.5, 60.0], [0.0, 0.0, 1.0, 1.0]], dtype=np.float32)
    assert xyxy_to_xywh(boxes) == [[10.0, 20.0, 20.5, 40.0], [0.0, 0.0, 1.0, 1.0]]
    assert xyxy_to_xywh(np.zeros((0, 4), dtype=np.float32)) == []


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


@pytest.fixture
def prediction() -> dict[str, torch.Tensor]:
    masks = torch.zeros(2, 1, 8, 10)
    masks[0, 0, 1:4, 2:6] = 0.9
    masks[1, 0, 5:8, 0:3] = 0.6
    return {
        "boxes": torch.tensor([[2.0, 1.0, 6.0, 4.0], [0.0, 5.0, 3.0, 8.0]]),
        "scores": torch.tensor([0.75, 0.25]),
        "labels": torch.tensor([2, 3]),
        "masks": masks,
        "proposals": torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 5.0, 3.0], [4.0, 4.0, 6.0, 9.0]]),
    }


def test_records_map_labels_to_original_ids(prediction: dict) -> None:
    results = ImageResults.from_prediction(prediction, LABELS, with_masks=True, max_proposals=0)
    assert results.boxes.dtype == results.scores.dtype == np.float32 and results.mask_size == (8, 10)
    boxes = results.records(42, "bbox")
    assert [(r["image_id"], r["category_id"], r["score"]) for r in boxes] == [(42, 3, 0.75), (42, 90, 0.25)]
    assert boxes[0]["bbox"] == [2.0, 1.0, 4.0, 3.0] and set(boxes[0]) == {
        "image_id",
        "category_id",
        "score",
        "bbox",
    }
    masks = results.records(42, "segm")
    assert all(set(r) == {"image_id", "category_id", "score", "segmentation"} for r in masks)
    segmentation = masks[1]["segmentation"]
    assert segmentation["size"] == [8, 10]
    assert mask_util.area({**segmentation, "counts": segmentation["counts"].encode()}) == 9
    json.dumps(boxes + masks)
    without_masks = ImageResults.from_prediction(prediction, LABELS, with_masks=False, max_proposals=0)
    assert without_masks.mask_counts == [] and without_masks.mask_size == (0, 0)


def test_unknown_labels_are_rejected(prediction: dict) -> None:
    with pytest.raises(KeyError, match="label_to_category_id"):
        ImageResults.from_prediction(prediction, {1: 1, 2: 3}, with_masks=False, max_proposals=0)


def test_proposals_are_kept_up_to_max_and_scored_by_rank(prediction: dict) -> None:
    results = ImageResults.from_prediction(prediction, LABELS, with_masks=False, max_proposals=1000)
    records = results.records(7, "rpn")
    assert [r["score"] for r in records] == [3.0, 2.0, 1.0]
    assert records[1] == {"image_id": 7, "bbox": [1.0, 1.0, 4.0, 2.0], "score": 2.0}
    cut = ImageResults.from_prediction(prediction, LABELS, with_masks=False, max_proposals=2)
    assert cut.proposals.shape == (2, 4) and cut.proposals.dtype == np.float32
    none = ImageResults.from_prediction(prediction, LABELS, with_masks=False, max_proposals=0)
    assert none.proposals.shape == (0, 4) and none.records(7, "rpn") == []


def test_bfloat16_predictions_become_float32_arrays(prediction: dict) -> None:
    """Under CPU bf16 autocast boxes, scores and proposals leave the model in bfloat16, which NumPy lacks."""
    low = {k: v.bfloat16() if k in ("boxes", "scores", "proposals") else v for k, v in prediction.items()}
    results = ImageResults.from_prediction(low, LABELS, with_masks=False, max_proposals=1000)
    assert results.boxes.dtype == results.scores.dtype == results.proposals.dtype == np.float32
    assert results.scores.tolist() == [0.75, 0.25] and results.proposals.shape == (3, 4)


def test_equality_compares_every_array(prediction: dict) -> None:
    def compact(**changes: torch.Tensor) -> ImageResults:
        return ImageResults.from_prediction({**prediction, **changes}, LABELS, True, 1000)

    assert compact() == compact()
    assert compact() != compact(scores=prediction["scores"] * 0.5)
    assert compact() != compact(proposals=prediction["proposals"][:2])
    assert compact() != compact(masks=prediction["masks"].flip(-1))
