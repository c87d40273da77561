"""Masks made on their windows at the augmented image's size (`rasterise`) against decoding at the file's
size and resizing (the former path), and the crop-based `InstanceMasks` against the dense arrays it stands
for."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from datnet.contract import pack_masks, unpack_masks
from datnet.data.instance_masks import InstanceMasks
from datnet.data.masks import mask_to_rle, to_rle
from datnet.data.rasterise import nearest_sources, rasterise
from datnet.data.records import Instance

SRC = (240, 320)  # height, width of the annotated image
F = 2.5  # the shapes below are drawn on a 96 x 128 grid, scaled by F


def dense(masks: InstanceMasks) -> np.ndarray:
    """The uint8 NxHxW masks, through the bit-packed form that loader workers send."""
    return unpack_masks(torch.from_numpy(masks.packed()), masks.width).numpy()


def resized_reference(instances: list[Instance], out_size: tuple[int, int], flipped: bool) -> np.ndarray:
    """The former path: every mask decoded at the file's size, flipped, resized with nearest neighbour."""
    full = [mask_utils.decode(to_rle(i.segmentation, i.bbox, *SRC)) for i in instances]
    full = [m[:, ::-1] if flipped else m for m in full]
    size = (out_size[1], out_size[0])
    return np.stack(
        [cv2.resize(np.ascontiguousarray(m), size, interpolation=cv2.INTER_NEAREST) for m in full]
    )


def instances() -> list[Instance]:
    """A rotated square, a two-part polygon, a disc with a hole (compressed RLE), an ellipse (uncompressed
    RLE), a box-only object and a polygon that leaves the image."""
    disc = np.zeros(SRC, np.uint8)
    cv2.circle(disc, (round(90 * F), round(60 * F)), round(22 * F), 1, -1)
    cv2.circle(disc, (round(90 * F), round(60 * F)), round(7 * F), 0, -1)
    ellipse = np.zeros(SRC, np.uint8)
    cv2.ellipse(ellipse, (round(40 * F), round(30 * F)), (round(25 * F), round(12 * F)), 20, 0, 360, 1, -1)
    polygons = [
        [[38, 50.5, 56, 68, 38.2, 85.7, 20.4, 68]],
        [[60, 5, 80, 5, 80, 20], [100.5, 20, 120, 40, 95, 38]],
        [[100, 60, 140, 70, 135, 110]],
    ]
    square, two_parts, leaving = ([[v * F for v in part] for part in p] for p in polygons)

    def box(x1, y1, x2, y2):
        return tuple(min(v * F, SRC[1 - k % 2]) for k, v in enumerate((x1, y1, x2, y2)))

    return [
        Instance(1, box(20, 50, 56, 86), 1, square),
        Instance(2, box(60, 5, 120, 40), 1, two_parts),
        Instance(3, box(68, 38, 113, 83), 1, mask_to_rle(disc)),
        Instance(4, box(15, 18, 66, 43), 1, {"size": list(SRC), "counts": rle_counts(ellipse)}),
        Instance(5, box(3.5, 70.25, 17.75, 93), 1, None),
        Instance(6, box(100, 60, 128, 96), 1, leaving),
    ]


def rle_counts(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO RLE counts (column-major runs, starting with zeros) of a binary mask."""
    flat = mask.ravel(order="F")
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.r_[0, edges, flat.size])
    return ([0] if flat[0] else []) + runs.tolist()


@pytest.mark.parametrize("flipped", [False, True])
@pytest.mark.parametrize("out_size", [(400, 533), (180, 240)])  # short side 800 of 480 px; a downscale
def test_masks_on_windows_agree_with_decoding_then_resizing(out_size, flipped):
    """>= 99.5 % of the image's pixels per mask (in fact all but a few boundary pixels, where moving a
    polygon into its window changes pycocotools' rounding of a vertex); RLE masks are identical."""
    insts = instances()
    new = dense(rasterise(insts, SRC, out_size, flipped))
    ref = resized_reference(insts, out_size, flipped)
    assert new.shape == ref.shape == (len(insts), *out_size) and new.dtype == np.uint8 and new.max() == 1
    assert (new == ref).mean(axis=(1, 2)).min() >= 0.995
    assert (new != ref).sum(axis=(1, 2)).max() <= 12
    assert np.array_equal(new[2:4], ref[2:4])  # the RLE instances


def test_filled_box_scaled_by_two_is_exact():
    """A box-only instance on whole pixels, scaled by 2 and flipped: exactly the doubled, mirrored box."""
    box = (8.0, 10.0, 40.0, 30.0)
    masks = rasterise([Instance(1, box, 1)], (60, 100), (120, 200), flipped=True)
    expected = np.zeros((120, 200), np.uint8)
    expected[20:60, 200 - 80 : 200 - 16] = 1
    assert np.array_equal(dense(masks)[0], expected)
    assert masks.origins == ((20, 120),) and masks.areas.tolist() == [40 * 64]


def test_nearest_sources_are_opencvs():
    """The source pixel of each output pixel, as OpenCV's INTER_NEAREST resize picks it."""
    for src, dst in ((480, 800), (640, 1067), (800, 480), (427, 1200), (7, 3), (3, 7)):
        picked = cv2.resize(np.arange(src, dtype=np.float32)[None], (dst, 1), interpolation=cv2.INTER_NEAREST)
        assert np.array_equal(nearest_sources(dst, src), picked[0].astype(np.int64))


def test_packed_areas_and_windows_match_the_dense_masks():
    rng = np.random.default_rng(0)
    masks = np.zeros((5, 37, 61), np.uint8)
    for k, (y, x, h, w) in enumerate(
        [(0, 0, 37, 61), (3, 5, 9, 1), (30, 55, 7, 6), (10, 13, 20, 17), (0, 0, 0, 0)]
    ):
        masks[k, y : y + h, x : x + w] = rng.random((h, w)) < 0.6
    crops = InstanceMasks.from_dense(masks)
    assert np.array_equal(crops.packed(), pack_masks(masks))
    assert crops.areas.tolist() == masks.sum(axis=(1, 2)).tolist() and crops.crops[4].shape == (0, 0)
    for k, (crop, window) in enumerate(zip(crops.crops, crops.windows, strict=True)):
        assert np.array_equal(masks[k][window], crop) and masks[k].sum() == crop.sum()
    assert np.array_equal(dense(crops.select(np.array([True, False, True, False, False]))), masks[[0, 2]])
