"""Dense auxiliary targets (Sec. 3.1), per pixel, against straightforward full-image scipy references."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from scipy.ndimage import distance_transform_edt

from datnet.configs import compose_config
from datnet.contract import IGNORE
from datnet.data.aux_targets import dense_aux_targets, sample_cell_centres
from datnet.data.coco import load_coco
from datnet.data.dataset import DetectionDataset
from datnet.data.transforms import AugmentConfig, build_transforms

from .conftest import dense_masks


def reference_targets(masks, labels, crowd):
    """Sec. 3.1 done the obvious way, per pixel: the full-image EDT of each instance (beyond the image is
    outside), divided by its maximum, max over instances, binned at 0.2 and 0.4; semantic labels painted from
    the largest to the smallest instance; crowd pixels that no instance covers are ignored."""
    h, w = (masks if len(masks) else crowd).shape[1:]
    d = np.zeros((h, w))
    sem = np.zeros((h, w), dtype=np.uint8)
    for k in sorted(range(len(masks)), key=lambda k: -int(masks[k].sum())):
        if masks[k].any():
            dk = distance_transform_edt(np.pad(masks[k], 1))[1:-1, 1:-1]
            d = np.maximum(d, dk / dk.max())
            sem[masks[k] > 0] = labels[k]
    dt = np.select([d > 0.4, d > 0.2, d > 0], [3, 2, 1], 0).astype(np.uint8)
    for m in crowd:
        region = (m > 0) & (dt == 0)
        dt[region] = IGNORE
        sem[region] = IGNORE
    return dt, sem


def centre_pixels(length: int, stride: int = 4) -> np.ndarray:
    """Pixel index of the centre of each stride cell along one axis, the last clamped into the image."""
    return np.minimum(np.arange(-(-length // stride)) * stride + stride // 2, length - 1)


def no_crowd(h: int, w: int) -> np.ndarray:
    return np.zeros((0, h, w), np.uint8)


def square(h, w, y0, x0, size):
    m = np.zeros((h, w), dtype=np.uint8)
    m[y0 : y0 + size, x0 : x0 + size] = 1
    return m


@pytest.fixture(scope="module")
def coco_masks(shared):
    """Masks of 4 real tiny_coco val images, resized to short side 800 (the model's input scale): the two
    images with crowd regions that have the fewest annotations (14 and 17) and the first two without."""
    root = shared("tiny_coco")
    data = json.loads((root / "annotations" / "instances_val2017.json").read_text())
    images = {im["id"]: im for im in data["images"]}
    by_image: dict[int, list] = {}
    for a in data["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    crowded = sorted(
        (i for i in by_image if any(a["iscrowd"] for a in by_image[i])), key=lambda i: len(by_image[i])
    )
    ids = crowded[:2] + sorted(i for i in by_image if i not in crowded)[:2]
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


def test_pixel_level_targets_match_scipy_reference_on_real_masks(coco_masks):
    """>= 99.9 % of the DT bins as scipy's float EDT gives them (ours decides the bins on exact squared
    distances, scipy's ratios can fall either side of an edge they meet exactly); semantics identical."""
    equal = total = 0
    assert any(len(crowd) for _, _, crowd in coco_masks)
    for masks, labels, crowd in coco_masks:
        dt, sem = dense_aux_targets(masks, labels, crowd, stride=1)
        ref_dt, ref_sem = reference_targets(masks, labels, crowd)
        assert dt.shape == ref_dt.shape == masks.shape[1:] and dt.dtype == sem.dtype == np.uint8
        assert np.array_equal(sem, ref_sem)
        equal += (dt == ref_dt).sum()
        total += dt.size
        assert set(np.unique(dt)) <= {0, 1, 2, 3, IGNORE}
    assert equal / total >= 0.999


@pytest.mark.parametrize(
    ("size", "bins"),
    [
        # an n px square: a pixel's distance is its ring d = 1..n/2 (to the nearest side), the peak n/2, and
        # ring d holds (n - 2d + 2)^2 - (n - 2d)^2 pixels. n = 16: D = d/8, bin 1 is d = 1 (60 px), bin 2
        # d = 2, 3 (14^2 - 10^2 = 96), bin 3 the 10x10 core (100): bins 2 and 3 share the square about
        # equally (the stride-4 cells of the former targets made it all bin 3).
        (16, {1: 60, 2: 96, 3: 100}),
        # n = 32: D = d/16, bin 1 is d <= 3.2 (32^2 - 26^2 = 348), bin 2 d <= 6.4 (26^2 - 20^2 = 276), bin 3
        # the 20x20 core (400): bin 1 exists (the former stride-4 targets had none below ~40 px).
        (32, {1: 348, 2: 276, 3: 400}),
    ],
)
def test_small_squares_get_the_papers_bins(size, bins):
    mask = square(64, 64, 5, 7, size)
    dt, sem = dense_aux_targets(mask[None], np.array([2]), no_crowd(64, 64), stride=1)
    ref_dt, _ = reference_targets(mask[None], np.array([2]), no_crowd(64, 64))
    assert np.array_equal(dt, ref_dt)
    assert {k: int((dt == k).sum()) for k in (1, 2, 3)} == bins
    assert (sem == 2).sum() == size * size and (dt[mask == 0] == 0).all()


def test_shapes_with_holes_and_diagonals_match_scipy():
    """A disk, a rotated ellipse, a ring (the hole is outside) and a thin bar, one image."""
    h, w = 120, 160
    masks = np.zeros((4, h, w), np.uint8)
    cv2.circle(masks[0], (40, 40), 30, 1, -1)
    cv2.ellipse(masks[1], (110, 70), (40, 18), 33, 0, 360, 1, -1)
    cv2.circle(masks[2], (60, 90), 25, 1, -1)
    cv2.circle(masks[2], (60, 90), 10, 0, -1)
    masks[3, 5:9, 80:150] = 1
    labels = np.array([1, 2, 3, 4])
    dt, sem = dense_aux_targets(masks, labels, no_crowd(h, w), stride=1)
    ref_dt, ref_sem = reference_targets(masks, labels, no_crowd(h, w))
    assert (dt == ref_dt).mean() >= 0.999 and np.array_equal(sem, ref_sem)
    assert dt[90, 60] == 0  # the ring's hole


def test_overlap_smaller_instance_wins_semantics_and_dt_takes_max():
    big, small = square(64, 64, 0, 0, 48), square(64, 64, 16, 16, 16)
    dt, sem = dense_aux_targets(np.stack([small, big]), np.array([2, 1]), no_crowd(64, 64), stride=1)
    assert (sem[16:32, 16:32] == 2).all() and sem[0, 0] == 1 and (sem[:48, :48] > 0).all()
    assert dt[24, 24] == 3  # centre of the small instance: D = 1 there
    assert dt[16, 16] == 3  # the small square's corner is 1/8 of its peak but near the big one's centre


def test_crowd_is_ignored_except_under_instances():
    inst, crowd = square(64, 64, 0, 0, 32), square(64, 64, 16, 16, 48)
    dt, sem = dense_aux_targets(inst[None], np.array([1]), crowd[None], stride=1)
    assert (dt[32:, 32:] == IGNORE).all() and (sem[32:, 32:] == IGNORE).all()
    assert (sem[:32, :32] == 1).all() and (dt[:32, :32] != IGNORE).all() and (dt[:16, 32:] == 0).all()


def test_image_border_is_an_instance_boundary():
    """A 60x41 image wholly inside one instance: the peak distance is 21 (the middle column), and the
    4-pixel band along the image border (d <= 4 <= 0.2 * 21) is bin 1."""
    dt, _ = dense_aux_targets(np.ones((1, 60, 41), np.uint8), np.array([1]), no_crowd(60, 41), stride=1)
    assert (dt[:, :4] == 1).all() and (dt[:4, :] == 1).all() and (dt[-4:, :] == 1).all()
    assert (dt[4:-4, 4] == 2).all() and dt[30, 20] == 3


def test_no_instances_gives_background():
    for stride, shape in ((1, (17, 9)), (4, (5, 3))):
        dt, sem = dense_aux_targets(np.zeros((0, 17, 9), np.uint8), np.zeros(0), no_crowd(17, 9), stride)
        assert dt.shape == sem.shape == shape and dt.max() == 0 and sem.max() == 0


def test_stride_4_targets_are_the_pixel_bins_at_the_cell_centres(coco_masks):
    """loss_stride=4: cell (i, j) takes the pixel-level bin at (4i + 2, 4j + 2), clamped into the image on a
    17x9 image (cells (ceil(17/4), ceil(9/4)) = (5, 3); the last row's centre 18 falls outside: row 16)."""
    ramp = np.arange(17 * 9).reshape(17, 9)
    assert np.array_equal(sample_cell_centres(ramp, 4), ramp[np.ix_([2, 6, 10, 14, 16], [2, 6, 8])])
    assert sample_cell_centres(ramp, 1) is ramp
    masks, labels, crowd = coco_masks[0]
    dt1, sem1 = dense_aux_targets(masks, labels, crowd, stride=1)
    dt4, sem4 = dense_aux_targets(masks, labels, crowd, stride=4)
    rows, cols = centre_pixels(dt1.shape[0]), centre_pixels(dt1.shape[1])
    assert dt4.shape == (-(-dt1.shape[0] // 4), -(-dt1.shape[1] // 4))
    assert np.array_equal(dt4, dt1[np.ix_(rows, cols)]) and np.array_equal(sem4, sem1[np.ix_(rows, cols)])


def test_stride_4_keeps_the_thin_bin_1_ring_of_a_32px_square():
    """Centre sampling keeps each bin roughly in proportion to its pixels: the 32 px square's 3 px bin-1 ring
    (34 % of its pixels) is 28 of its 64 cells, where the former stride-4 cell EDT had none."""
    dt, _ = dense_aux_targets(square(64, 64, 8, 8, 32)[None], np.array([1]), no_crowd(64, 64), stride=4)
    assert {k: int((dt == k).sum()) for k in (1, 2, 3)} == {1: 28, 2: 11, 3: 25}


@pytest.mark.parametrize("stride", [1, 4])
def test_dataset_targets_match_the_returned_masks(tiny_coco, stride):
    """dt/sem of a dataset item are those of its own (resized, flipped) masks, at the dataset's stride."""
    source = load_coco(tiny_coco / "annotations" / "instances_val2017.json", tiny_coco / "val2017")
    cfg = AugmentConfig(min_size=240, max_size=400, hflip_prob=1.0, color_jitter=0.0)
    ds = DetectionDataset(source, build_transforms(cfg, train=True), aux_stride=stride)
    checked = 0
    for i in range(len(ds)):
        if any(inst.iscrowd for inst in ds.records[i].instances) or checked == 3:
            continue
        image, target = ds[i]
        masks = dense_masks(image, target).numpy()
        ref_dt, ref_sem = reference_targets(masks, target["labels"].numpy(), no_crowd(*masks.shape[1:]))
        cells = np.ix_(centre_pixels(ref_dt.shape[0], stride), centre_pixels(ref_dt.shape[1], stride))
        assert target["dt"].dtype == target["sem"].dtype == torch.uint8
        assert (target["dt"].numpy() == ref_dt[cells]).mean() >= 0.999
        assert np.array_equal(target["sem"].numpy(), ref_sem[cells])
        checked += 1
    assert checked == 3


def test_bad_stride_is_a_clear_error():
    with pytest.raises(ValueError, match="data.aux_stride"):
        dense_aux_targets(np.zeros((0, 8, 8), np.uint8), np.zeros(0), no_crowd(8, 8), stride=0)


@pytest.mark.parametrize(
    ("overrides", "stride"),
    [
        ([], 1),  # train.yaml's default: DATNet Light on COCO, the paper's recipe
        (["experiment=table1/heavy_r50"], 1),
        (["experiment=table2/dt_seg"], 1),
        (["model.aux.loss_stride=4"], 4),
        (["experiment=demo"], 1),
        (["experiment=ablation/tiny_coco", "ablation=dt_seg"], 1),
    ],
)
def test_data_aux_stride_follows_model_loss_stride(overrides, stride):
    cfg = compose_config(overrides, config_name="train")
    assert cfg.model.aux.loss_stride == cfg.data.aux_stride == stride
