"""Bad input never crashes a run: a clear error naming file and field, or a counted skip (issue 3)."""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning_fabric.utilities.apply_func import move_data_to_device
from PIL import Image
from pycocotools import mask as mask_utils

from datnet.data.coco import load_coco
from datnet.data.datamodule import CocoDataModule, VocDataModule
from datnet.data.dataset import DetectionDataset, SkippedSample, collate
from datnet.data.image_io import ImageLoadError, read_rgb
from datnet.data.transforms import AugmentConfig, build_transforms
from datnet.data.voc import load_voc

EVAL = build_transforms(AugmentConfig(min_size=48, max_size=96), train=False)


def dataset(coco) -> DetectionDataset:
    return DetectionDataset(load_coco(coco.write(), coco.root / "val2017"), EVAL)


def test_missing_image_file_is_a_skipped_sample(coco_dir):
    coco_dir.image(1)
    missing = coco_dir.image(2, write=False)
    ds = dataset(coco_dir)
    item = ds[1]
    assert isinstance(item, SkippedSample)
    assert item.index == 1 and item.image_id == 2 and item.path == str(missing) and item.kind == "missing"
    assert "not found" in item.reason and str(missing) in item.reason
    images, targets, skipped = collate([ds[0], item])
    assert len(images) == len(targets) == 1 and skipped == [item]


def test_skipped_sample_goes_through_workers_and_the_batch_transfer(coco_dir):
    """What a loader worker pickles and Lightning's transfer to the device (the frozen dataclass it once was
    made that transfer raise) both keep it as it is."""
    coco_dir.image(1)
    coco_dir.image(2, write=False)
    ds = dataset(coco_dir)
    batch = collate([ds[0], ds[1]])
    moved = move_data_to_device(pickle.loads(pickle.dumps(batch)), torch.device("cpu"))
    assert moved[2] == batch[2] and isinstance(moved[2][0], SkippedSample)
    assert torch.equal(moved[0][0], batch[0][0])
    error = pickle.loads(pickle.dumps(ImageLoadError("a.jpg: image file not found", "missing")))
    assert str(error) == "a.jpg: image file not found" and error.kind == "missing"


def test_truncated_jpeg_is_a_skipped_sample(coco_dir, tmp_path):
    path = coco_dir.image(1, write=False)
    path = path.with_suffix(".jpg")
    coco_dir.images[-1]["file_name"] = path.name
    coco_dir.write_image(path, 64, 48)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    item = dataset(coco_dir)[0]
    assert isinstance(item, SkippedSample) and "cannot decode" in item.reason and str(path) in item.reason
    assert item.kind == "unreadable"


def test_garbage_bytes_image_is_a_skipped_sample(coco_dir):
    path = coco_dir.image(1)
    path.write_bytes(b"this is not an image")
    item = dataset(coco_dir)[0]
    assert isinstance(item, SkippedSample) and item.kind == "unreadable" and str(path) in item.reason


def test_empty_image_file_is_a_skipped_sample(coco_dir):
    path = coco_dir.image(1)
    path.write_bytes(b"")
    item = dataset(coco_dir)[0]
    assert isinstance(item, SkippedSample) and item.kind == "empty"
    assert item.reason == f"{path}: image file is empty (0 bytes)"


@pytest.mark.parametrize("bbox", [[10, 10, 0, 5], [10, 10, 5, -3], [10, 10, -4, -4]])
def test_zero_or_negative_size_box_is_dropped_and_counted(coco_dir, bbox):
    coco_dir.image(1)
    coco_dir.annotations = [coco_dir.ann(1, 1, bbox), coco_dir.ann(2, 1, [5, 5, 10, 10])]
    ds = dataset(coco_dir)
    assert ds.skip_counts["degenerate_box"] == 1
    assert len(ds[0][1]["boxes"]) == 1


def test_box_partly_outside_is_clipped_and_counted(coco_dir):
    coco_dir.image(1, width=64, height=48)
    coco_dir.annotations = [coco_dir.ann(1, 1, [50, 40, 30, 30])]
    ds = dataset(coco_dir)
    assert ds.skip_counts["box_clipped"] == 1
    assert ds.records[0].instances[0].bbox == (50.0, 40.0, 64.0, 48.0)
    _, target = ds[0]  # resized to short side 48 (scale 1): the box stays inside the image
    assert target["boxes"][0].tolist() == [50.0, 40.0, 64.0, 48.0]


def test_box_wholly_outside_is_dropped_and_counted(coco_dir):
    coco_dir.image(1, width=64, height=48)
    coco_dir.annotations = [coco_dir.ann(1, 1, [70, 10, 10, 10]), coco_dir.ann(2, 1, [-30, -30, 10, 10])]
    ds = dataset(coco_dir)
    assert ds.skip_counts["box_outside_image"] == 2
    assert ds.records[0].instances == []


def test_polygon_with_fewer_than_3_points_is_counted(coco_dir):
    coco_dir.image(1)
    ann = coco_dir.ann(1, 1, [4, 4, 20, 20])
    ann["segmentation"] = [[4, 4, 24, 4], ann["segmentation"][0]]  # a 2-point part and a valid part
    only_bad = coco_dir.ann(2, 1, [30, 4, 20, 20], segmentation=[[30, 4, 50, 24]])
    coco_dir.annotations = [ann, only_bad]
    ds = dataset(coco_dir)
    assert ds.skip_counts["polygon_too_few_points"] == 2
    assert ds.skip_counts["segmentation_replaced_by_box"] == 1  # nothing left of annotation 2: box proxy
    _, target = ds[0]
    assert target["masks_packed"].shape[0] == 2 and target["masks_packed"].sum() > 0


def test_crowd_rle_is_an_ignore_region_not_an_instance(coco_dir):
    coco_dir.image(1, width=64, height=48)
    crowd = np.zeros((48, 64), dtype=np.uint8)
    crowd[8:40, 32:64] = 1
    rle = mask_utils.encode(np.asfortranarray(crowd))
    uncompressed = {"size": [48, 64], "counts": _uncompressed_counts(crowd)}
    assert mask_utils.decode(mask_utils.frPyObjects(uncompressed, 48, 64)).sum() == crowd.sum()
    coco_dir.annotations = [
        coco_dir.ann(1, 1, [0, 8, 24, 32]),
        coco_dir.ann(2, 1, [32, 8, 32, 32], iscrowd=1, segmentation=uncompressed),
        coco_dir.ann(
            3, 1, [32, 8, 32, 32], iscrowd=1, segmentation={**rle, "counts": rle["counts"].decode()}
        ),
    ]
    ds = dataset(coco_dir)
    _, target = ds[0]
    assert len(target["boxes"]) == 1 and target["iscrowd"].tolist() == [0]
    assert (target["dt"][2:10, 8:16] == 255).all() and (target["sem"][2:10, 8:16] == 255).all()
    assert (target["sem"][2:10, 0:6] == 1).all()
    gt = CocoDataModule(coco_dir.root, train_ann_file=None, val_img_dir="val2017", min_size=48).coco_gt("val")
    assert [a["iscrowd"] for a in gt["annotations"]] == [0, 1, 1]


def _uncompressed_counts(mask: np.ndarray) -> list[int]:
    flat = mask.flatten(order="F")
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]]))
    return ([0] if flat[0] else []) + runs.tolist()


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "LA", "CMYK"])
def test_image_modes_are_converted_to_rgb(tmp_path, mode, image_file):
    suffix = ".jpg" if mode == "CMYK" else ".png"
    path = image_file(tmp_path / f"img{suffix}", 40, 30, mode=mode if mode != "I;16" else "L")
    if mode == "I;16":
        gray = np.asarray(Image.open(path)).astype(np.uint16) * 257  # full 16-bit range
        Image.fromarray(gray).save(path)
        assert Image.open(path).mode.startswith("I")
    rgb = read_rgb(path, (40, 30))
    assert rgb.shape == (30, 40, 3) and rgb.dtype == np.uint8
    if mode in ("L", "I;16", "LA"):
        expected = np.asarray(Image.open(image_file(tmp_path / "ref.png", 40, 30, mode="L")))
        assert np.array_equal(rgb[..., 0], expected) and np.array_equal(rgb[..., 0], rgb[..., 2])
    if mode in ("RGBA", "P"):
        expected = np.asarray(Image.open(path).convert("RGB"))
        assert np.array_equal(rgb, expected) and rgb.std() > 10


def test_16bit_image_uses_the_full_range(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 32).astype(np.uint16), (8, 1))
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    rgb = read_rgb(tmp_path / "ramp.png")
    assert rgb[0, 0, 0] == 0 and rgb[0, -1, 0] == 255 and 100 < rgb[0, 16, 0] < 155


def test_unknown_category_id_is_dropped_and_counted(coco_dir):
    coco_dir.image(1)
    coco_dir.annotations = [
        coco_dir.ann(1, 1, [4, 4, 10, 10], category_id=3),
        coco_dir.ann(2, 1, [4, 4, 10, 10], 7),
    ]
    ds = dataset(coco_dir)
    assert ds.skip_counts["unknown_category"] == 1
    assert ds[0][1]["labels"].tolist() == [2]  # category 7 is the second category


def test_image_size_in_json_differing_from_file_is_a_skipped_sample(coco_dir):
    path = coco_dir.image(1, width=64, height=48, write=False)
    coco_dir.write_image(path, 50, 48)
    item = dataset(coco_dir)[0]
    assert isinstance(item, SkippedSample) and item.kind == "size_mismatch"
    assert "width=64" in item.reason and "50x48" in item.reason and str(path) in item.reason


def test_duplicate_image_ids_are_counted(coco_dir):
    coco_dir.image(1)
    coco_dir.image(1, seed=1)
    ds = dataset(coco_dir)
    assert len(ds) == 1 and ds.skip_counts["duplicate_image_id"] == 1


def test_duplicate_annotation_ids_are_counted(coco_dir):
    coco_dir.image(1)
    coco_dir.annotations = [coco_dir.ann(5, 1, [4, 4, 10, 10]), coco_dir.ann(5, 1, [20, 4, 10, 10])]
    ds = dataset(coco_dir)
    assert ds.skip_counts["duplicate_annotation_id"] == 1 and len(ds.records[0].instances) == 1


def test_annotation_file_with_no_annotations_gives_negatives_and_a_warning(coco_dir, caplog):
    coco_dir.image(1)
    coco_dir.image(2)
    with caplog.at_level(logging.WARNING):
        ds = dataset(coco_dir)
    assert ds.skip_counts["no_annotations"] == 1 and "no_annotations" in caplog.text
    _, target = ds[1]
    assert target["boxes"].shape == (0, 4) and target["masks_packed"].shape[0] == 0
    assert target["dt"].max() == 0 and target["sem"].max() == 0


def test_missing_required_field_names_file_and_field(coco_dir):
    coco_dir.image(1)
    del coco_dir.images[0]["width"]
    with pytest.raises(ValueError, match=r"instances_val2017.json: images\[0\]: missing field 'width'"):
        dataset(coco_dir)


def write_voc(root: Path, objects_xml: dict[str, str], split: str = "train") -> Path:
    for name, objects in objects_xml.items():
        (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 48), (90, 120, 30)).save(root / "JPEGImages" / f"{name}.jpg")
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        (root / "Annotations" / f"{name}.xml").write_text(
            f"<annotation><filename>{name}.jpg</filename><size><width>64</width><height>48</height>"
            f"<depth>3</depth></size>{objects}</annotation>"
        )
    (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(objects_xml) + "\n")
    return root


def voc_object(name: str, box: tuple[int, int, int, int], difficult: int = 0) -> str:
    x1, y1, x2, y2 = box
    return (
        f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox><xmin>{x1}</xmin>"
        f"<ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
    )


def test_voc_xml_without_objects_is_a_counted_negative(tmp_path):
    root = write_voc(tmp_path / "VOC", {"a": "", "b": voc_object("cat", (5, 5, 20, 20))})
    source = load_voc([(root, "train")], ["cat", "dog"])
    ds = DetectionDataset(source, EVAL)
    assert ds.skip_counts["xml_without_objects"] == 1 and len(ds) == 2
    assert ds[0][1]["boxes"].shape == (0, 4) and ds[1][1]["labels"].tolist() == [1]


def test_voc_unknown_class_and_broken_box_are_counted(tmp_path):
    broken = "<object><name>cat</name><bndbox><xmin>1</xmin></bndbox></object>"
    root = write_voc(tmp_path / "VOC", {"a": voc_object("zebra", (5, 5, 20, 20)) + broken})
    source = load_voc([(root, "train")], ["cat"])
    assert source.skips.counts == {"unknown_category": 1, "malformed_object": 1}


def test_voc_unparseable_xml_is_counted(tmp_path):
    root = write_voc(tmp_path / "VOC", {"a": voc_object("cat", (5, 5, 20, 20)), "b": ""})
    (root / "Annotations" / "b.xml").write_text("<annotation><object>")
    source = load_voc([(root, "train")], ["cat"])
    assert len(source.records) == 1 and source.skips.counts["unreadable_xml"] == 1


def test_config_error_root_does_not_exist(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere")):
        CocoDataModule(tmp_path / "nowhere")


def test_config_error_annotation_file_missing(coco_dir):
    coco_dir.image(1)
    coco_dir.write()
    with pytest.raises(FileNotFoundError, match="instances_train2017.json"):
        CocoDataModule(coco_dir.root)


def test_config_error_split_missing(tmp_path):
    root = write_voc(tmp_path / "VOC", {"a": voc_object("cat", (5, 5, 20, 20))})
    with pytest.raises(FileNotFoundError, match=r"ImageSets/Main/trainval.txt"):
        VocDataModule(tmp_path, train_sets=[["VOC", "train"]], val_sets=[["VOC", "trainval"]])
    assert root.exists()


def test_invalid_json_names_the_file(coco_dir):
    coco_dir.image(1)
    ann_file = coco_dir.write()
    ann_file.write_text("{not json")
    with pytest.raises(ValueError, match="instances_val2017.json: not valid JSON"):
        load_coco(ann_file, coco_dir.root / "val2017")


def test_train_split_from_image_info_file_is_rejected(coco_dir):
    coco_dir.image(1)
    ann_file = coco_dir.write()
    data = json.loads(ann_file.read_text())
    del data["annotations"]
    ann_file.write_text(json.dumps(data))
    dm = CocoDataModule(
        coco_dir.root, train_ann_file=str(ann_file), train_img_dir="val2017", val_ann_file=None, min_size=48
    )
    with pytest.raises(ValueError, match="no 'annotations'"):
        dm.dataset("train")
