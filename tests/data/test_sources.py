"""Every source on real data (shared/data) and on the embedded shapes, end to end through the data modules."""

from __future__ import annotations

import json

import numpy as np
import torch
from faster_coco_eval import COCO, COCOeval_faster
from pycocotools import mask as mask_utils

from datnet.data.datamodule import (
    CocoDataModule,
    PennFudanDataModule,
    ShapesDataModule,
    VocDataModule,
    VocInstSegDataModule,
)
from datnet.data.voc import load_voc

from .conftest import dense_masks

SMALL = {"min_size": 320, "max_size": 512, "num_workers": 0}


def check_sample(image: torch.Tensor, target: dict, num_classes: int) -> None:
    """The sample contract the model and harness rely on."""
    assert image.dtype == torch.uint8 and image.shape[0] == 3
    h, w = image.shape[1:]
    n = len(target["labels"])
    assert target["boxes"].dtype == torch.float32 and target["boxes"].shape == (n, 4)
    assert (
        target["labels"].dtype == torch.int64
        and ((target["labels"] >= 1) & (target["labels"] < num_classes)).all()
    )
    assert target["masks_packed"].dtype == torch.uint8 and target["masks_packed"].shape == (n, h, -(-w // 8))
    masks = dense_masks(image, target)
    assert masks.dtype == torch.uint8 and masks.shape == (n, h, w) and (n == 0 or masks.max() <= 1)
    assert target["area"].tolist() == masks.flatten(1).sum(1).float().tolist()
    boxes = target["boxes"]
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
    assert isinstance(target["image_id"], int) and target["orig_size"].dtype == torch.int64
    assert target["iscrowd"].tolist() == [0] * n and target["area"].shape == (n,)
    grid = (-(-h // 4), -(-w // 4))
    for key in ("dt", "sem"):
        assert target[key].dtype == torch.uint8 and tuple(target[key].shape) == grid
    assert set(target["dt"].unique().tolist()) <= {0, 1, 2, 3, 255}
    assert set(target["sem"].unique().tolist()) <= set(range(num_classes)) | {255}


def test_tiny_coco_end_to_end_through_the_datamodule(tiny_coco):
    dm = CocoDataModule(tiny_coco, batch_size=2, **{**SMALL, "num_workers": 2})
    dm.setup("fit")
    assert dm.num_classes == 81 and dm.class_names[0] == "__background__" and dm.class_names[1] == "person"
    assert dm.label_to_category_id[80] == 90  # COCO ids are non-contiguous (1..90)
    seen = 0
    for images, targets, skipped in dm.train_dataloader():
        assert skipped == [] and len(images) == 2
        for image, target in zip(images, targets, strict=True):
            check_sample(image, target, dm.num_classes)
            assert min(image.shape[1:]) == 320 or max(image.shape[1:]) == 512
        seen += len(images)
    assert seen == 50
    val_ids = [t["image_id"] for _, targets, _ in dm.val_dataloader() for t in targets]
    original = json.loads((tiny_coco / "annotations" / "instances_val2017.json").read_text())
    assert sorted(val_ids) == sorted(im["id"] for im in original["images"])


def test_tiny_coco_ground_truth_and_targets_round_trip_to_ap_1(tiny_coco):
    """Targets mapped back to the original image and scored as detections give AP 1 against coco_gt."""
    dm = CocoDataModule(tiny_coco, train_ann_file=None, **SMALL)
    gt = dm.coco_gt("val")
    original = json.loads((tiny_coco / "annotations" / "instances_val2017.json").read_text())
    assert {(im["id"], im["width"], im["height"]) for im in gt["images"]} == {
        (im["id"], im["width"], im["height"]) for im in original["images"]
    }
    assert [c["id"] for c in gt["categories"]] == sorted(c["id"] for c in original["categories"])
    assert len(gt["annotations"]) == len(original["annotations"])
    assert sum(a["iscrowd"] for a in gt["annotations"]) == 5
    detections = []
    for images, targets, _ in dm.val_dataloader():
        for image, t in zip(images, targets, strict=True):
            scale = t["orig_size"].flip(0).repeat(2) / torch.tensor(image.shape[1:]).flip(0).repeat(2)
            for box, label in zip(t["boxes"] * scale, t["labels"], strict=True):
                x1, y1, x2, y2 = box.tolist()
                detections.append(
                    {
                        "image_id": t["image_id"],
                        "category_id": dm.label_to_category_id[int(label)],
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "score": 1.0,
                    }
                )
    coco_gt = COCO(gt)
    evaluator = COCOeval_faster(coco_gt, coco_gt.loadRes(detections), "bbox", print_function=lambda *a: None)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    assert evaluator.stats[1] > 0.99  # AP50
    assert evaluator.stats[0] > 0.9  # AP: boxes went through the resize and back


def test_voc_bccd_boxes_become_proxy_masks(shared):
    root = shared("BCCD_voc")
    dm = VocDataModule(
        root,
        train_sets=[["BCCD", "train"]],
        val_sets=[["BCCD", "val"]],
        class_names=["RBC", "WBC", "Platelets"],
        **SMALL,
    )
    ds = dm.dataset("train")
    assert len(ds) == 205
    image, target = ds[0]
    check_sample(image, target, dm.num_classes)
    for box, mask in zip(target["boxes"], dense_masks(image, target), strict=True):
        ys, xs = torch.nonzero(mask, as_tuple=True)
        assert abs(xs.min() - box[0]) <= 1 and abs(xs.max() + 1 - box[2]) <= 1
        assert mask.sum() >= 0.9 * (box[2] - box[0]) * (box[3] - box[1])  # a filled box
    both = load_voc([(root / "BCCD", "trainval"), (root / "BCCD", "test")], ["RBC", "WBC", "Platelets"])
    assert len(both.records) == 364 and both.skips.counts["degenerate_box"] == 2  # per SOURCE.txt
    assert [r.image_id for r in both.records] == list(range(1, 365))


def test_voc_difficult_is_ignored_in_training_and_crowd_in_ground_truth(tmp_path):
    from PIL import Image

    root = tmp_path / "VOC"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "Annotations").mkdir()
    (root / "ImageSets" / "Main").mkdir(parents=True)
    Image.new("RGB", (64, 48), (40, 80, 120)).save(root / "JPEGImages" / "a.jpg")
    obj = (
        "<object><name>{}</name><difficult>{}</difficult><bndbox><xmin>{}</xmin><ymin>1</ymin><xmax>{}</xmax>"
    )
    objects = obj.format("cat", 0, 1, 24) + "<ymax>40</ymax></bndbox></object>"
    objects += obj.format("dog", 1, 33, 64) + "<ymax>40</ymax></bndbox></object>"
    (root / "Annotations" / "a.xml").write_text(
        f"<annotation><filename>a.jpg</filename>{objects}</annotation>"
    )
    (root / "ImageSets" / "Main" / "train.txt").write_text("a\n")
    kwargs = dict(train_sets=[["VOC", "train"]], val_sets=[["VOC", "train"]], class_names=["cat", "dog"])
    dm = VocDataModule(tmp_path, min_size=48, max_size=64, num_workers=0, **kwargs)
    _, target = dm.dataset("val")[0]
    assert target["labels"].tolist() == [1]
    assert (target["dt"][1:10, 9:16] == 255).all() and (target["sem"][1:10, 9:16] == 255).all()
    assert [a["iscrowd"] for a in dm.coco_gt("val")["annotations"]] == [0, 1]
    assert dm.dataset("val").skip_counts["size_read_from_image"] == 1  # this XML has no <size>
    dm = VocDataModule(
        tmp_path, min_size=48, max_size=64, use_difficult=True, difficult_as_crowd=False, **kwargs
    )
    assert dm.dataset("val")[0][1]["labels"].tolist() == [1, 2]
    assert [a["iscrowd"] for a in dm.coco_gt("val")["annotations"]] == [0, 0]


def test_pennfudan_png_instance_masks(shared):
    root = shared("PennFudanPed")
    dm = PennFudanDataModule(root, **SMALL)
    train, val = dm.dataset("train"), dm.dataset("val")
    assert len(train) == 120 and len(val) == 50
    assert not {r.path for r in train.records} & {r.path for r in val.records}
    assert sum(len(r.instances) for r in [*train.records, *val.records]) == 423  # per SOURCE.txt
    image, target = val[0]
    check_sample(image, target, dm.num_classes)
    assert dm.num_classes == 2 and len(target["labels"]) == len(val.records[0].instances)


def test_voc_segmentation_object_matches_the_labelme_coco_export(shared):
    root = shared("labelme_voc2011_instseg")
    dm = VocInstSegDataModule(root / "data_dataset_voc", train_split="all", val_split="all", **SMALL)
    records = dm.dataset("val").records
    assert dm.class_names[1:] == [c.name for c in dm.categories] and len(dm.class_names) == 21
    assert sum(inst.category_id is not None for r in records for inst in r.instances) == 12
    assert all(inst.category_id is not None for r in records for inst in r.instances)  # no void here
    export = json.loads((root / "data_dataset_coco" / "annotations.json").read_text())
    names = {c["id"]: c["name"] for c in export["categories"]}
    for rec in records:
        image = next(im for im in export["images"] if im["file_name"].endswith(rec.path.name))
        anns = [a for a in export["annotations"] if a["image_id"] == image["id"]]
        ours = [i for i in rec.instances if i.category_id is not None]
        assert sorted(names[a["category_id"]] for a in anns) == sorted(
            dm.class_names[i.category_id] for i in ours
        )
        theirs = [
            mask_utils.merge(mask_utils.frPyObjects(a["segmentation"], rec.height, rec.width)) for a in anns
        ]
        ious = mask_utils.iou([i.segmentation for i in ours], theirs, [0] * len(theirs))
        assert (ious.max(axis=1) > 0.8).all()
    image, target = dm.dataset("val")[0]
    check_sample(image, target, dm.num_classes)


def test_voc_void_pixels_become_an_ignore_region(tmp_path):
    from PIL import Image

    objects = np.zeros((48, 64), np.uint8)
    objects[8:40, 8:40] = 255  # void border ...
    objects[12:36, 12:36] = 1  # ... around instance 1
    classes = np.where(objects == 1, 8, objects).astype(np.uint8)
    for sub, arr in (("SegmentationObject", objects), ("SegmentationClass", classes)):
        (tmp_path / sub).mkdir()
        Image.fromarray(arr, mode="L").convert("P").save(tmp_path / sub / "x.png")
    (tmp_path / "JPEGImages").mkdir()
    Image.new("RGB", (64, 48)).save(tmp_path / "JPEGImages" / "x.jpg")
    dm = VocInstSegDataModule(tmp_path, train_split="all", val_split="all", min_size=48, max_size=64)
    _, target = dm.dataset("val")[0]
    assert target["labels"].tolist() == [8] and dm.class_names[8] == "cat"
    assert target["sem"][2, 2] == 255 and target["sem"][5, 5] == 8 and target["sem"][0, 0] == 0
    assert len(dm.coco_gt("val")["annotations"]) == 1  # the void region is not ground truth


def test_shapes_generation_is_deterministic_idempotent_and_read_as_coco(tmp_path):
    small = dict(num_train=6, num_val=3, **SMALL)
    dm = ShapesDataModule(tmp_path / "a", **small)
    ShapesDataModule(tmp_path / "b", **small)
    for rel in (
        "annotations/instances_train2017.json",
        "annotations/instances_val2017.json",
        "val2017/000002.jpg",
    ):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    marker = tmp_path / "a" / "GENERATED.json"
    stamp = marker.stat().st_mtime_ns
    ShapesDataModule(tmp_path / "a", **small)
    assert marker.stat().st_mtime_ns == stamp  # not regenerated
    (tmp_path / "a" / "GENERATED.json").unlink()
    ShapesDataModule(tmp_path / "a", **small)  # an incomplete directory is regenerated
    assert marker.exists()
    assert dm.class_names == ["__background__", "circle", "square", "triangle"]
    assert dm.label_to_category_id == {1: 10, 2: 20, 3: 30}
    ds = dm.dataset("train")
    for i in range(len(ds)):
        image, target = ds[i]
        check_sample(image, target, dm.num_classes)
        assert 1 <= len(target["labels"]) <= 4
        assert (target["area"] > 0).all()


def test_shapes_objects_are_large_and_varied(tmp_path):
    ShapesDataModule(tmp_path / "s", num_train=40, num_val=2)
    data = json.loads((tmp_path / "s" / "annotations" / "instances_train2017.json").read_text())
    sides = np.array([max(a["bbox"][2:]) for a in data["annotations"]])
    assert np.median(sides) >= 30 and sides.max() <= 81
    per_class = np.bincount([a["category_id"] // 10 for a in data["annotations"]], minlength=4)[1:]
    assert per_class.min() >= 0.2 * per_class.sum()
    sizes = {(im["width"], im["height"]) for im in data["images"]}
    assert len(sizes) > 10 and all(128 <= s <= 192 for wh in sizes for s in wh)


def test_test_dev_image_info_file_gives_unannotated_samples(tiny_coco, tmp_path):
    info = json.loads((tiny_coco / "annotations" / "instances_val2017.json").read_text())
    info = {"images": info["images"][:3], "categories": info["categories"]}
    (tmp_path / "image_info_test.json").write_text(json.dumps(info))
    dm = CocoDataModule(
        tiny_coco,
        train_ann_file=None,
        test_ann_file=str(tmp_path / "image_info_test.json"),
        test_img_dir="val2017",
        **SMALL,
    )
    assert dm.num_classes == 81
    images, targets, _ = next(iter(dm.test_dataloader()))
    assert len(targets[0]["boxes"]) == 0 and (targets[0]["dt"] == 255).all()
    gt = dm.coco_gt("test")  # images and categories for result files, nothing to score
    assert "annotations" not in gt
    assert [im["id"] for im in gt["images"]] == [im["id"] for im in info["images"]]
    assert len(dm.dataset("val")) == 50
