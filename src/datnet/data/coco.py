"""COCO instance annotation files (polygons, RLE, iscrowd) and image-info files (test-dev) to records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from datnet.data.masks import check_rle, clean_polygons
from datnet.data.records import (
    Category,
    ImageRecord,
    Instance,
    SkipCounter,
    SourceData,
    require_path,
    sanitize_box,
)


def _field(entry: dict[str, Any], name: str, where: str) -> Any:
    if name not in entry:
        raise ValueError(f"{where}: missing field '{name}'")
    return entry[name]


def _read_json(ann_file: Path) -> dict[str, Any]:
    require_path(ann_file, "annotation file")
    try:
        with open(ann_file) as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{ann_file}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{ann_file}: expected a JSON object with 'images', 'annotations', 'categories'")
    return data


def _categories(data: dict[str, Any], ann_file: Path) -> list[Category]:
    cats = []
    for k, c in enumerate(_field(data, "categories", str(ann_file))):
        where = f"{ann_file}: categories[{k}]"
        cats.append(Category(int(_field(c, "id", where)), str(c.get("name", _field(c, "id", where)))))
    ids = [c.id for c in cats]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{ann_file}: duplicate ids in field 'categories'")
    return sorted(cats, key=lambda c: c.id)


def _images(
    data: dict[str, Any], ann_file: Path, img_dir: Path, skips: SkipCounter
) -> dict[int, ImageRecord]:
    records: dict[int, ImageRecord] = {}
    for k, im in enumerate(_field(data, "images", str(ann_file))):
        where = f"{ann_file}: images[{k}]"
        image_id = int(_field(im, "id", where))
        width, height = int(_field(im, "width", where)), int(_field(im, "height", where))
        if width <= 0 or height <= 0:
            raise ValueError(f"{where}: fields 'width'/'height' must be positive, got {width}x{height}")
        if image_id in records:
            skips.add("duplicate_image_id", f"{where}: id={image_id} (kept the first entry)")
            continue
        records[image_id] = ImageRecord(
            image_id, img_dir / str(_field(im, "file_name", where)), width, height
        )
    return records


def _segmentation(ann: dict[str, Any], rec: ImageRecord, skips: SkipCounter, where: str):
    """The annotation's polygons or RLE after validation; None (box proxy) when nothing usable is left."""
    seg = ann.get("segmentation")
    if isinstance(seg, list):
        seg = clean_polygons(seg, skips, where) or None
    elif isinstance(seg, dict):
        seg = seg if check_rle(seg, rec.width, rec.height, skips, where) else None
    if seg is None:
        skips.add("segmentation_replaced_by_box", f"{where}: no usable 'segmentation'")
    return seg


def _instance(ann: dict[str, Any], rec: ImageRecord, skips: SkipCounter, where: str) -> Instance | None:
    bbox = ann.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4 or "category_id" not in ann:
        skips.add("malformed_annotation", f"{where}: needs 'bbox' [x, y, w, h] and 'category_id'")
        return None
    x, y, w, h = (float(v) for v in bbox)
    box = sanitize_box((x, y, x + w, y + h), rec.width, rec.height, skips, where)
    if box is None:
        return None
    area = float(ann.get("area") or (box[2] - box[0]) * (box[3] - box[1]))
    return Instance(
        ann_id=int(ann["id"]),
        bbox=box,
        category_id=int(ann["category_id"]),
        segmentation=_segmentation(ann, rec, skips, where),
        area=area,
        iscrowd=bool(ann.get("iscrowd", 0)),
    )


def load_coco(ann_file: Path, img_dir: Path, name: str = "coco") -> SourceData:
    """Parse a COCO instances file (or an image-info file without 'annotations', e.g. test-dev) into records.

    Images without annotations are kept. Problems are counted, never silently dropped: duplicate image or
    annotation ids (the first is kept), annotations of unknown images, malformed entries, zero-size boxes,
    boxes outside the image (clipped or dropped), polygon parts with fewer than 3 points, RLEs of the wrong
    size. Category ids stay the original ones; the dataset maps them to contiguous labels.
    """
    ann_file, img_dir = Path(ann_file), Path(img_dir)
    data = _read_json(ann_file)
    require_path(img_dir, "image directory")
    skips = SkipCounter(f"{name} ({ann_file})")
    records = _images(data, ann_file, img_dir, skips)
    categories = _categories(data, ann_file)
    annotated = "annotations" in data
    if annotated and not data["annotations"]:
        skips.add("no_annotations", f"{ann_file}: field 'annotations' is empty, every image is a negative")

    seen: set[int] = set()
    for k, ann in enumerate(data.get("annotations") or []):
        where = f"{ann_file}: annotations[{k}] (id={ann.get('id')})"
        if "id" not in ann:
            skips.add("malformed_annotation", f"{where}: missing field 'id'")
            continue
        if int(ann["id"]) in seen:
            skips.add("duplicate_annotation_id", f"{where} (kept the first)")
            continue
        seen.add(int(ann["id"]))
        rec = records.get(int(ann.get("image_id", -1)))
        if rec is None:
            skips.add("annotation_of_unknown_image", f"{where}: image_id={ann.get('image_id')}")
            continue
        inst = _instance(ann, rec, skips, where)
        if inst is not None:
            rec.instances.append(inst)
    return SourceData(list(records.values()), categories, skips, annotated)
