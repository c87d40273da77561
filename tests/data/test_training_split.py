"""maskrcnn-benchmark's training data (the paper's code): 2 aspect-ratio groups, unannotated images out."""

import logging

import numpy as np
import pytest

from datnet.data.datamodule import CocoDataModule
from datnet.data.samplers import aspect_ratio_groups, training_batch_sampler


def test_group_factor_0_is_landscape_versus_portrait_or_square():
    """maskrcnn-benchmark quantises height / width at 1 (bisect_right): squares go with the portraits."""
    widths_over_heights = [1.5, 0.7, 1.0, 2.0, 0.5, 4 / 3]
    assert aspect_ratio_groups(widths_over_heights, 0).tolist() == [0, 1, 1, 0, 1, 0]
    assert aspect_ratio_groups(widths_over_heights, -1).tolist() == [0] * 6  # no grouping
    assert len(set(aspect_ratio_groups(widths_over_heights, 3).tolist())) == 5  # torchvision's 7 bins
    ratios = np.r_[np.full(10, 1.33), np.full(6, 0.75)]
    for batch in training_batch_sampler(ratios, 2, 0, rank=0, world_size=1):
        assert len({ratios[i] > 1 for i in batch}) == 1


@pytest.fixture
def mixed_coco(coco_dir):
    """Four images: annotated, none, crowd only, a 1 px wide box only."""
    for image_id in range(1, 5):
        coco_dir.image(image_id)
    coco_dir.annotations = [
        coco_dir.ann(1, 1, [5, 5, 20, 20]),
        coco_dir.ann(2, 3, [5, 5, 20, 20], iscrowd=1),
        coco_dir.ann(3, 4, [5, 5, 1, 20]),
    ]
    ann_file = coco_dir.write()
    return dict(
        root=coco_dir.root,
        train_ann_file=str(ann_file),
        train_img_dir="val2017",
        val_ann_file=str(ann_file),
        val_img_dir="val2017",
        min_size=48,
        max_size=64,
        num_workers=0,
    )


def test_images_without_annotations_are_left_out_of_training_and_counted(mixed_coco, caplog):
    """As maskrcnn-benchmark's COCODataset in training: no annotation, or only boxes of at most 1 px in width
    or height, leaves an image out; a crowd region counts as an annotation. Validation keeps every image."""
    dm = CocoDataModule(**mixed_coco, remove_images_without_annotations=True)
    with caplog.at_level(logging.WARNING):
        train = dm.dataset("train")
    assert [r.image_id for r in train.records] == [1, 3]
    assert train.skip_counts["image_without_annotations"] == 2
    assert "image_without_annotations: 2" in caplog.text and "0002.png" in caplog.text
    assert len(dm.dataset("val")) == 4
    assert len(CocoDataModule(**mixed_coco).dataset("train")) == 4  # the switch off: negatives train


def test_a_training_split_with_no_annotated_image_is_a_clear_error(coco_dir):
    coco_dir.image(1)
    ann_file = coco_dir.write()
    dm = CocoDataModule(
        coco_dir.root,
        train_ann_file=str(ann_file),
        train_img_dir="val2017",
        val_ann_file=None,
        remove_images_without_annotations=True,
    )
    with pytest.raises(ValueError, match="remove_images_without_annotations=false"):
        dm.dataset("train")
