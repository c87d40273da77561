"""Sources with instance masks stored as indexed PNGs: Penn-Fudan (PedMasks/) and VOC SegmentationObject.

Both store one label image per photo whose pixel value k > 0 marks instance k; VOC additionally marks 'void'
(object borders, unlabelled) with 255 and gives classes in SegmentationClass/. Masks are read once at
construction and kept as compressed RLE, so the dataset decodes them like COCO RLEs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from datnet.data.masks import instance_from_mask, read_label_png
from datnet.data.records import Category, ImageRecord, SkipCounter, SourceData, require_path
from datnet.data.voc import read_split

VOID = 255


def split_ids(names: list[str], split: str, num_val: int, seed: int = 0) -> list[str]:
    """Deterministic train/val partition of a dataset without split files: a seeded permutation of the sorted
    names, the first `num_val` of which are 'val'; 'all' returns every name."""
    names = sorted(names)
    if split == "all":
        return names
    order = np.random.default_rng(seed).permutation(len(names))
    chosen = order[:num_val] if split == "val" else order[num_val:] if split == "train" else None
    if chosen is None:
        raise ValueError(f"unknown split '{split}': expected 'train', 'val' or 'all'")
    return [names[i] for i in sorted(chosen)]


def load_pennfudan(root: Path, split: str, num_val: int = 50, name: str = "pennfudan") -> SourceData:
    """Penn-Fudan pedestrians: PNGImages/<n>.png with PedMasks/<n>_mask.png (0 background, k instance k).

    One category (id 1, 'pedestrian'). Boxes are the tight boxes of the masks. `split` is 'train', 'val' or
    'all'; 'val' is a fixed seeded choice of `num_val` images.
    """
    root = require_path(Path(root), "PennFudan root")
    image_dir = require_path(root / "PNGImages", "PennFudan image directory")
    skips = SkipCounter(f"{name} ({root}:{split})")
    records, ann_id = [], 0
    for stem in split_ids([p.stem for p in image_dir.glob("*.png")], split, num_val):
        mask_path = root / "PedMasks" / f"{stem}_mask.png"
        try:
            label = read_label_png(mask_path)
        except OSError as e:
            skips.add("unreadable_mask", f"{mask_path}: {e} (image dropped)")
            continue
        rec = ImageRecord(len(records) + 1, image_dir / f"{stem}.png", label.shape[1], label.shape[0])
        for k in np.unique(label[label > 0]):
            ann_id += 1
            rec.instances.append(instance_from_mask(label == k, ann_id, 1))
        records.append(rec)
    return SourceData(records, [Category(1, "pedestrian")], skips)


def _class_names(root: Path, default: Sequence[str]) -> list[str]:
    """Class names from ROOT/class_names.txt (labelme export; first line is the background) or `default`."""
    path = root / "class_names.txt"
    if not path.exists():
        return list(default)
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return names[1:] if names and names[0].lstrip("_") == "background_" else names


def load_voc_instseg(
    root: Path, split: str, class_names: Sequence[str], name: str = "voc_instseg"
) -> SourceData:
    """VOC SegmentationObject + SegmentationClass PNGs (JPEGImages/<id>.jpg) to instance records.

    `split` names ImageSets/Segmentation/<split>.txt, or 'all' for every PNG in SegmentationObject/. An
    instance's class is the majority SegmentationClass value under its mask. Void pixels (255) become one
    ignore region per image. Category ids are 1..C in the order of ROOT/class_names.txt when present, else
    `class_names`.
    """
    root = require_path(Path(root), "VOC root")
    obj_dir = require_path(root / "SegmentationObject", "SegmentationObject directory")
    names = _class_names(root, class_names)
    categories = [Category(k + 1, n) for k, n in enumerate(names)]
    ids = (
        sorted(p.stem for p in obj_dir.glob("*.png"))
        if split == "all"
        else read_split(root, "Segmentation", split)
    )
    skips = SkipCounter(f"{name} ({root}:{split})")
    records, ann_id = [], 0
    for image_name in ids:
        try:
            objects = read_label_png(obj_dir / f"{image_name}.png")
            classes = read_label_png(root / "SegmentationClass" / f"{image_name}.png")
        except OSError as e:
            skips.add(
                "unreadable_mask", f"{obj_dir / image_name}.png or its SegmentationClass: {e} (dropped)"
            )
            continue
        if objects.shape != classes.shape:
            skips.add("mask_size_mismatch", f"{image_name}: SegmentationObject and SegmentationClass differ")
            continue
        rec = ImageRecord(len(records) + 1, root / "JPEGImages" / f"{image_name}.jpg", *objects.shape[::-1])
        for k in np.unique(objects[(objects > 0) & (objects != VOID)]):
            mask = objects == k
            votes = np.bincount(classes[mask & (classes > 0) & (classes <= len(names))], minlength=1)
            if votes.sum() == 0:
                skips.add(
                    "instance_without_class", f"{image_name}: instance {k} has no SegmentationClass label"
                )
                continue
            ann_id += 1
            rec.instances.append(instance_from_mask(mask, ann_id, int(votes.argmax())))
        if (objects == VOID).any():
            ann_id += 1
            rec.instances.append(instance_from_mask(objects == VOID, ann_id, None))
        records.append(rec)
    return SourceData(records, categories, skips)
