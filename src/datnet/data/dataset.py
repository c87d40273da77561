"""The detection dataset shared by every source: record -> (image tensor, target dict) in the sample contract.

An item is `(image, target)`:

* `image`: uint8 3xHxW (0..255), RGB, already augmented and resized (the model does not resize again; its
  transform, `datnet.models.DATNetTransform`, scales it to float in [0, 1] on the device).
* `target`: `boxes` float32 Nx4 xyxy in pixels of `image`; `labels` int64 N in 1..C; `masks_packed` uint8
  N x H x ceil(W/8), the binary instance masks at the size of `image` bit-packed along the width
  (`datnet.contract.pack_masks`; for box-only data the filled box, paper Sec. 4.4), unpacked to the uint8
  NxHxW `masks` by the model's transform; `image_id` int (original dataset id); `orig_size` int64
  [H0, W0] of the file; `area` float32 N (mask pixels in `image`); `iscrowd` int64 N (zeros: crowd regions are
  never instances); `dt`, `sem` uint8 (ceil(H/s), ceil(W/s)) dense auxiliary targets of Sec. 3.1 at the
  stride s = `aux_stride` of the auxiliary loss (1: per pixel, the paper presets), with 255 = ignore
  (`datnet.contract.IGNORE`; see `aux_targets`). Unannotated data (COCO test-dev) has no instances and
  all-ignore `dt`/`sem`. `datnet.contract` states what of this the model relies on.

The masks are rasterised once, at the size and orientation of `image` (`datnet.data.rasterise`), as crops on
the instances' boxes (`datnet.data.instance_masks`) that the areas, the packed masks and the auxiliary
targets all read.

uint8 images and packed masks make a sample about a fifth of the bytes of float32 images with uint8 masks
(`scripts/bench/bench_data.py`: what workers pickle and the host copies to the device).

An image that cannot be read yields a `SkippedSample` instead of raising; `collate` sets those apart, and the
training module trains on the rest of the batch and counts them (`datnet.lightning.module`).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, NamedTuple

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset

from datnet.contract import IGNORE, grid_shape
from datnet.data.aux_targets import aux_targets
from datnet.data.image_io import ImageLoadError, read_rgb
from datnet.data.rasterise import rasterise
from datnet.data.records import Category, ImageRecord, Instance, SerializedRecords, SourceData
from datnet.data.transforms import apply_transforms, image_to_uint8_tensor

Sample = tuple[torch.Tensor, dict[str, Any]]


class SkippedSample(NamedTuple):
    """Stands in for an item whose image could not be loaded: `kind` is one of
    `datnet.data.image_io.IMAGE_PROBLEMS`, `reason` names the file and the problem.

    A named tuple of plain values, so that it goes through loader workers, `pin_memory` and Lightning's
    transfer of the batch to the device unchanged (which reject frozen dataclasses)."""

    index: int
    path: str
    kind: str
    reason: str
    image_id: int | None = None


def collate(
    batch: list[Sample | SkippedSample],
) -> tuple[list[torch.Tensor], list[dict], list[SkippedSample]]:
    """Batch as (images, targets, skipped): lists, as images differ in size; skipped items are set apart."""
    images, targets, skipped = [], [], []
    for item in batch:
        if isinstance(item, SkippedSample):
            skipped.append(item)
        else:
            images.append(item[0])
            targets.append(item[1])
    return images, targets, skipped


class DetectionDataset(Dataset):
    """Loads the records of one split, applies the transforms and builds the targets (module docstring).

    Args:
        source: parsed records, categories and annotation-problem counts of the split.
        transforms: albumentations pipeline from `build_transforms`.
        categories: the label space (label k = categories[k-1]); defaults to the source's own categories. Pass
            the training split's list to the other splits so that labels agree.
        aux_stride: stride of the dense auxiliary targets, that of the auxiliary loss (1: per pixel, the
            paper's image-resolution loss; 4: the heads' P2 resolution, targets sampled at cell centres).
        aux_image_border_is_boundary: whether the DT target treats the image border as a boundary of the
            objects it cuts (`aux_targets`).
        use_difficult: train on VOC `difficult` objects instead of treating them as ignore regions.
        remove_images_without_annotations: leave out the images without any annotation wider and taller
            than 1 px (crowd and ignore regions count), counted as `image_without_annotations`: the training
            set of maskrcnn-benchmark's `COCODataset`, the paper's code (and of torchvision's references).

    `records` holds the split's cleaned records serialised (`SerializedRecords`), so that loader workers share
    them with the main process instead of copying them; the records are moved out of `source`, which is left
    with none.
    """

    def __init__(
        self,
        source: SourceData,
        transforms: A.Compose,
        categories: list[Category] | None = None,
        aux_stride: int = 4,
        aux_image_border_is_boundary: bool = True,
        use_difficult: bool = False,
        remove_images_without_annotations: bool = False,
    ) -> None:
        records: list[ImageRecord] = source.records
        self.categories = list(categories if categories is not None else source.categories)
        if len(self.categories) >= IGNORE:
            raise ValueError(f"{len(self.categories)} classes do not fit the uint8 semantic target")
        self.category_to_label = {c.id: k + 1 for k, c in enumerate(self.categories)}
        self.annotated = source.annotated
        self.transforms = transforms
        self.aux_stride = aux_stride
        self.aux_image_border_is_boundary = aux_image_border_is_boundary
        self.use_difficult = use_difficult
        self.skip_counts: Counter[str] = source.skips.counts
        self._drop_unknown_categories(records, source)
        if remove_images_without_annotations:
            records = self._drop_images_without_annotations(records, source)
        source.skips.log_summary()
        self.records = SerializedRecords(records)
        source.records = []  # moved, not copied: no Python copy stays alive for forked workers to copy

    def _drop_unknown_categories(self, records: list[ImageRecord], source: SourceData) -> None:
        """Instances whose category is not in the label space are counted and removed."""
        for rec in records:
            kept = []
            for inst in rec.instances:
                if inst.category_id is None or inst.category_id in self.category_to_label:
                    kept.append(inst)
                else:
                    source.skips.add(
                        "unknown_category",
                        f"{rec.path}: annotation {inst.ann_id} category_id={inst.category_id}",
                    )
            rec.instances = kept

    @staticmethod
    def _drop_images_without_annotations(records: list[ImageRecord], source: SourceData) -> list[ImageRecord]:
        """The records with an annotation wider and taller than 1 px; the others are counted and left out."""
        kept = []
        for rec in records:
            if any(i.bbox[2] - i.bbox[0] > 1 and i.bbox[3] - i.bbox[1] > 1 for i in rec.instances):
                kept.append(rec)
            else:
                source.skips.add("image_without_annotations", f"{rec.path} (image_id={rec.image_id})")
        if not kept:
            raise ValueError(
                f"{source.skips.source}: no image has annotations (set data.remove_images_without_annotations"
                "=false to train on negatives only)"
            )
        return kept

    def __len__(self) -> int:
        return len(self.records)

    def aspect_ratios(self) -> np.ndarray:
        """Width / height of every image, from the annotations (no file is opened)."""
        return np.array([r.width / r.height for r in self.records], dtype=np.float64)

    def is_ignore_region(self, inst: Instance) -> bool:
        """Crowd regions, unlabelled (void) regions and, unless `use_difficult`, VOC difficult objects."""
        return inst.iscrowd or inst.category_id is None or (inst.difficult and not self.use_difficult)

    def __getitem__(self, index: int) -> Sample | SkippedSample:
        rec = self.records[index]
        try:
            image = read_rgb(rec.path, (rec.width, rec.height))
        except ImageLoadError as e:
            return SkippedSample(index, str(rec.path), e.kind, str(e), rec.image_id)

        objects = [i for i in rec.instances if not self.is_ignore_region(i)]
        ignored = [i for i in rec.instances if self.is_ignore_region(i)]
        instances = objects + ignored
        boxes = np.array([i.bbox for i in instances], dtype=np.float32).reshape(-1, 4)
        out = apply_transforms(self.transforms, image, boxes)
        masks = rasterise(
            [instances[k] for k in out.keep], (rec.height, rec.width), out.image.shape[:2], out.flipped
        )

        is_object = out.keep < len(objects)
        labels = np.array(
            [self.category_to_label[objects[k].category_id] for k in out.keep[is_object]], dtype=np.int64
        )
        obj_masks = masks.select(is_object)
        if self.annotated:
            border = self.aux_image_border_is_boundary
            dt, sem = aux_targets(obj_masks, labels, masks.select(~is_object), self.aux_stride, border)
        else:
            dt = np.full(grid_shape(*out.image.shape[:2], self.aux_stride), IGNORE, dtype=np.uint8)
            sem = dt.copy()
        target = {
            "boxes": torch.from_numpy(out.boxes[is_object]),
            "labels": torch.from_numpy(labels),
            "masks_packed": torch.from_numpy(obj_masks.packed()),
            "image_id": rec.image_id,
            "orig_size": torch.tensor([rec.height, rec.width], dtype=torch.int64),
            "area": torch.from_numpy(obj_masks.areas),
            "iscrowd": torch.zeros(len(labels), dtype=torch.int64),
            "dt": torch.from_numpy(dt),
            "sem": torch.from_numpy(sem),
        }
        return image_to_uint8_tensor(out.image), target
