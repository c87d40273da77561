"""Dense auxiliary targets (Sec. 3.1) against straightforward full-image scipy references on real masks."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from scipy.ndimage import distance_transform_edt

from datnet.data.aux_targets import IGNORE, dense_aux_targets
from datnet.data.coco import load_coco
from datnet.data.dataset import DetectionDataset
from datnet.data.transforms import AugmentConfig, build_transforms

from .conftest import dense_masks


def reference_cells(mask: np.ndarray, stride: int = 4) -> np.ndarray:
    """Full-image stride-cell occupancy: a cell is inside when at least half of its pixels are."""
    h, w = mask.shape
    gh, gw = -(-h // stride), -(-w // stride)
    padded = np.zeros((gh * stride, gw * stride), dtype=np.int64)
    padded[:h, :w] = mask
    return padded.reshape(gh, stride, gw, stride).sum(axis=(1, 3)) * 2 >= stride * stride


def reference_targets(masks, labels, crowd, stride: int = 4):
    """Sec. 3.1 done the obvious way: full-image EDT per instance, normalise, max, bin; semantic painted from
    the largest to the smallest instance; crowd cells not covered by an instance are ignored."""
    h, w = (masks if len(masks) else crowd).shape[1:]
    shape = (-(-h // stride), -(-w // stride))
    d = np.zeros(shape)
    sem = np.zeros(shape, dtype=np.uint8)
    cells = [reference_cells(m, stride) for m in masks]
    for k in sorted(range(len(cells)), key=lambda k: -cells[k].sum()):
        if cells[k].any():
            dk = distance_transform_edt(np.pad(cells[k], 1))[1:-1, 1:-1]
            d = np.maximum(d, dk / dk.max())
            sem[cells[k]] = labels[k]
    dt = np.select([d > 0.4, d > 0.2, d > 0], [3, 2, 1], 0).astype(np.uint8)
    for m in crowd:
        region = reference_cells(m, stride) & (dt == 0)
        dt[region] = IGNORE
        sem[region] = IGNORE
    return dt, sem


def full_resolution_dt(masks, stride: int = 4):
    """DT bins computed at full resolution, sampled at the cell centres."""
    d = np.zeros(masks.shape[1:])
    for m in masks:
        if m.any():
            dk = distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1]
            d = np.maximum(d, dk / dk.max())
    dt = np.select([d > 0.4, d > 0.2, d > 0], [3, 2, 1], 0)
    return dt[stride // 2 :: stride, stride // 2 :: stride]


@pytest.fixture(scope="module")
def coco_masks(shared):
    """Masks of 12 real tiny_coco val images, resized to short side 800 (the model's input scale)."""
    root = shared("tiny_coco")
    data = json.loads((root / "annotations" / "instances_val2017.json").read_text())
    images = {im["id"]: im for im in data["images"]}
    by_image: dict[int, list] = {}
    for a in data["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    # all images with crowd regions first, then others
    ids = sorted(by_image, key=lambda i: (-max(a["iscrowd"] for a in by_image[i]), i))[:12]
    out = []
    for image_id in ids:
        h, w = images[image_id]["height"], images[image_id]["width"]
        rles = [mask_utils.frPyObjects(a["segmentation"], h, w) for a in by_image[image_id]]
        rles = [mask_utils.merge(r) if isinstance(r, list) else r for r in rles]
        masks = mask_utils.decode(rles).transpose(2, 0, 1)
        scale = 800 / min(h, w)
        size = (round(w * scale), round(h * scale))
        masks = np.stack([cv2.resize(m, size, interpolation=cv2.INTER_NEAREST) for m in masks])
        crowd = np.array([a["iscrowd"] for a in by_image[image_id]], dtype=bool)
        labels = np.array([a["category_id"] for a in by_image[image_id]])[~crowd]
        out.append((masks[~crowd], labels, masks[crowd]))
    return out


def test_matches_full_image_reference_on_real_masks(coco_masks):
    equal = total = 0
    assert any(len(crowd) for _, _, crowd in coco_masks)
    for masks, labels, crowd in coco_masks:
        dt, sem = dense_aux_targets(masks, labels, crowd)
        ref_dt, ref_sem = reference_targets(masks, labels, crowd)
        assert dt.shape == ref_dt.shape == (-(-masks.shape[1] // 4), -(-masks.shape[2] // 4))
        equal += (dt == ref_dt).sum() + (sem == ref_sem).sum()
        total += 2 * dt.size
        assert set(np.unique(dt)) <= {0, 1, 2, 3, IGNORE}
    assert equal / total >= 0.999


def test_close_to_full_resolution_distance_transform(coco_masks):
    equal = total = 0
    for masks, labels, crowd in coco_masks[:4]:
        dt, _ = dense_aux_targets(masks, labels, crowd)
        full = full_resolution_dt(masks)
        h, w = min(dt.shape[0], full.shape[0]), min(dt.shape[1], full.shape[1])
        valid = dt[:h, :w] != IGNORE
        equal += ((dt[:h, :w] == full[:h, :w]) & valid).sum()
        total += valid.sum()
    assert equal / total >= 0.97


def test_dataset_targets_match_the_returned_masks(tiny_coco):
    """dt/sem of a dataset item are those of its own (resized, flipped) masks: they match the image."""
    source = load_coco(tiny_coco / "annotations" / "instances_val2017.json", tiny_coco / "val2017")
    cfg = AugmentConfig(min_size=480, max_size=800, hflip_prob=1.0, color_jitter=0.0)
    ds = DetectionDataset(source, build_transforms(cfg, train=True))
    checked = 0
    for i in range(len(ds)):
        if any(inst.iscrowd for inst in ds.records[i].instances) or checked == 4:
            continue
        image, target = ds[i]
        masks = dense_masks(image, target).numpy()
        assert masks.shape[1:] == image.shape[1:]
        ref_dt, ref_sem = reference_targets(masks, target["labels"].numpy(), np.zeros((0, *masks.shape[1:])))
        assert np.array_equal(target["dt"].numpy(), ref_dt) and np.array_equal(target["sem"].numpy(), ref_sem)
        checked += 1
    assert checked == 4


def square(h, w, y0, x0, size):
    m = np.zeros((h, w), dtype=np.uint8)
    m[y0 : y0 + size, x0 : x0 + size] = 1
    return m


def test_single_square_bins():
    """A 40x40 px square at stride 4 is a 10x10 cell square: D = (distance to the outside) / 5."""
    dt, sem = dense_aux_targets(
        square(64, 64, 8, 8, 40)[None], np.array([3]), np.zeros((0, 64, 64), np.uint8)
    )
    inner = dt[2:12, 2:12]
    ring = np.minimum.reduce(np.indices((10, 10)).tolist() + (9 - np.indices((10, 10))).tolist()) + 1
    expected = np.select([ring / 5 > 0.4, ring / 5 > 0.2], [3, 2], 1)
    assert np.array_equal(inner, expected)
    assert dt.sum() == inner.sum() and (sem[2:12, 2:12] == 3).all() and sem.sum() == 300


def test_overlap_smaller_instance_wins_semantics_and_dt_takes_max():
    big, small = square(64, 64, 0, 0, 48), square(64, 64, 16, 16, 16)
    dt, sem = dense_aux_targets(np.stack([small, big]), np.array([2, 1]), np.zeros((0, 64, 64), np.uint8))
    assert (sem[4:8, 4:8] == 2).all() and sem[0, 0] == 1
    assert dt[5, 5] == 3  # centre of the small instance: D = 1 there


def test_crowd_is_ignored_except_under_instances():
    inst, crowd = square(64, 64, 0, 0, 32), square(64, 64, 16, 16, 48)
    dt, sem = dense_aux_targets(inst[None], np.array([1]), crowd[None])
    assert (dt[12:, 12:] == IGNORE).all() and (sem[12:, 12:] == IGNORE).all()
    assert (sem[4:8, 4:8] == 1).all() and (dt[4:8, 4:8] != IGNORE).all()


def test_image_border_is_an_instance_boundary_and_odd_sizes_round_up():
    full = np.ones((1, 60, 41), np.uint8)
    dt, _ = dense_aux_targets(full, np.array([1]), np.zeros((0, 60, 41), np.uint8))
    assert dt.shape == (15, 11)
    # the last cell column holds 1 of 4 pixel columns: outside; the 15x10 inside cells peak at distance 5,
    # so the ring along the image border (distance 1 -> D = 0.2) is bin 1
    assert (dt[:, 10] == 0).all() and dt.max() == 3
    assert (dt[0, :10] == 1).all() and (dt[14, :10] == 1).all() and (dt[:, 0] == 1).all()


def test_no_instances_gives_background():
    dt, sem = dense_aux_targets(np.zeros((0, 17, 9), np.uint8), np.zeros(0), np.zeros((0, 17, 9), np.uint8))
    assert dt.shape == sem.shape == (5, 3) and dt.max() == 0 and sem.max() == 0
