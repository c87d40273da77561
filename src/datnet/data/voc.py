"""Pascal VOC detection XML (Annotations/, JPEGImages/, ImageSets/Main/<split>.txt) to records.

VOC has boxes only: instances carry no segmentation, so the dataset uses the filled box as a coarse proxy
instance mask (paper Sec. 4.4). `difficult` objects are flagged; the dataset treats them as ignore regions and
the COCO ground-truth export marks them iscrowd=1, so that COCO evaluation ignores them.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from datnet.data.records import (
    Category,
    ImageRecord,
    Instance,
    SkipCounter,
    SourceData,
    require_path,
    sanitize_box,
)

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip


def read_split(root: Path, subdir: str, split: str) -> list[str]:
    """Image ids listed in ROOT/ImageSets/<subdir>/<split>.txt (first token of each non-empty line)."""
    split_file = require_path(Path(root) / "ImageSets" / subdir / f"{split}.txt", f"split '{split}'")
    return [line.split()[0] for line in split_file.read_text().splitlines() if line.strip()]


def _size(tree: ET.Element, image_path: Path, skips: SkipCounter, where: str) -> tuple[int, int] | None:
    """(width, height) from <size>, or from the image header when the XML lacks it."""
    try:
        w, h = int(tree.findtext("size/width", "")), int(tree.findtext("size/height", ""))
        if w > 0 and h > 0:
            return w, h
    except ValueError:
        pass
    try:
        with Image.open(image_path) as img:
            skips.add("size_read_from_image", f"{where}: no valid <size>/<width>,<height>")
            return img.size
    except OSError:
        skips.add(
            "missing_size", f"{where}: no valid <size> and image {image_path} unreadable (image dropped)"
        )
        return None


def _parse_object(obj: ET.Element, rec: ImageRecord, cat_ids: dict[str, int], skips: SkipCounter, where: str):
    name = (obj.findtext("name") or "").strip()
    if name not in cat_ids:
        skips.add("unknown_category", f"{where}: <name>{name}</name>")
        return None
    try:
        x1, y1, x2, y2 = (float(obj.findtext(f"bndbox/{k}", "")) for k in ("xmin", "ymin", "xmax", "ymax"))
    except ValueError:
        skips.add("malformed_object", f"{where}: <bndbox> needs numeric xmin, ymin, xmax, ymax")
        return None
    if x2 <= x1 or y2 <= y1:  # a point or line (in inclusive indices this would be a 1 px box)
        skips.add("degenerate_box", f"{where}: (xmin, ymin, xmax, ymax)=({x1:g}, {y1:g}, {x2:g}, {y2:g})")
        return None
    # VOC boxes are 1-based inclusive pixel indices: to 0-based continuous xyxy as in detectron2.
    box = sanitize_box((x1 - 1, y1 - 1, x2, y2), rec.width, rec.height, skips, where)
    if box is None:
        return None
    return Instance(
        ann_id=0,
        bbox=box,
        category_id=cat_ids[name],
        area=(box[2] - box[0]) * (box[3] - box[1]),
        difficult=(obj.findtext("difficult") or "0").strip() == "1",
    )


def load_voc(sets: Sequence[tuple[Path, str]], class_names: Sequence[str], name: str = "voc") -> SourceData:
    """Parse and concatenate VOC (root, split) pairs, e.g. VOC2007 trainval + VOC2012 trainval.

    Image and annotation ids are assigned sequentially from 1 in the order of `sets` and the split files.
    Category ids are 1..C in the order of `class_names`. Unknown class names, malformed boxes, zero-size or
    outside boxes, missing/unparseable XML files are counted; XML files without objects give negatives.
    """
    categories = [Category(k + 1, n) for k, n in enumerate(class_names)]
    cat_ids = {c.name: c.id for c in categories}
    skips = SkipCounter(f"{name} ({', '.join(f'{r}:{s}' for r, s in sets)})")
    records: list[ImageRecord] = []
    ann_id = 0
    for root, split in sets:
        root = require_path(Path(root), "VOC root")
        for image_name in read_split(root, "Main", split):
            xml_path = root / "Annotations" / f"{image_name}.xml"
            try:
                tree = ET.parse(xml_path).getroot()
            except (OSError, ET.ParseError) as e:
                skips.add("unreadable_xml", f"{xml_path}: {e} (image dropped)")
                continue
            image_path = root / "JPEGImages" / (tree.findtext("filename") or f"{image_name}.jpg").strip()
            size = _size(tree, image_path, skips, str(xml_path))
            if size is None:
                continue
            rec = ImageRecord(len(records) + 1, image_path, *size)
            objects = tree.findall("object")
            if not objects:
                skips.add("xml_without_objects", f"{xml_path} (kept as a negative image)")
            for k, obj in enumerate(objects):
                inst = _parse_object(obj, rec, cat_ids, skips, f"{xml_path}: object[{k}]")
                if inst is not None:
                    ann_id += 1
                    inst.ann_id = ann_id
                    rec.instances.append(inst)
            records.append(rec)
    return SourceData(records, categories, skips)
