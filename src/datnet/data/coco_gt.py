"""COCO-format ground truth of a split, for evaluation with (faster-)COCO eval and for result files.

Built from the cleaned records, so evaluation sees exactly the annotations the loader accepted. Images keep
their original ids and sizes; categories their original ids. Crowd regions, and VOC `difficult` objects when
`difficult_as_crowd`, are exported with iscrowd=1, which COCO evaluation ignores (a detection matched to
them is neither a true nor a false positive). Pure ignore regions without a category (VOC void) are omitted.
Annotation ids are renumbered from 1: pycocotools treats a ground-truth id of 0 as "unmatched".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from datnet.data.masks import to_rle
from datnet.data.records import Category, ImageRecord


def _segmentation(inst, rec: ImageRecord) -> Any:
    if isinstance(inst.segmentation, list):
        return inst.segmentation
    rle = to_rle(inst.segmentation, inst.bbox, rec.height, rec.width)
    counts = rle["counts"]
    return {
        "size": list(rle["size"]),
        "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
    }


def records_to_coco(
    records: Sequence[ImageRecord], categories: list[Category], difficult_as_crowd: bool = True
) -> dict[str, Any]:
    """The `{"images", "annotations", "categories"}` dict of the records (see module docstring)."""
    images, annotations = [], []
    for rec in records:
        images.append(
            {"id": rec.image_id, "file_name": rec.file_name, "width": rec.width, "height": rec.height}
        )
        for inst in rec.instances:
            if inst.category_id is None:
                continue
            x1, y1, x2, y2 = inst.bbox
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": rec.image_id,
                    "category_id": inst.category_id,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": inst.area,
                    "iscrowd": int(inst.iscrowd or (inst.difficult and difficult_as_crowd)),
                    "segmentation": _segmentation(inst, rec),
                }
            )
    return {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c.id, "name": c.name} for c in categories],
    }
