"""Dense auxiliary targets of paper Sec. 3.1 (distance-transform bins and semantic labels), per pixel.

Definitions (all on the pixels of the image the model sees, H x W):

* D_i is the Euclidean distance transform of instance i's mask: the distance of each inside pixel to the
  nearest outside pixel (pixel centres; a pixel next to the boundary is at 1), where everything beyond the
  image border is outside (a truncated object has its boundary at the image edge). D = max_i D_i / max(D_i).
* `dt` bins D with K=4: 0 background, 1 for 0 < D <= 0.2, 2 for 0.2 < D <= 0.4, 3 for D > 0.4.
* `sem` is the contiguous class label (0 background). Where instances overlap, the SMALLEST instance (fewest
  pixels) wins, i.e. instances are painted in order of decreasing area; ties keep the later instance.
* Ignore regions (crowd annotations, VOC void, excluded difficult objects) get the ignore label
  (``datnet.contract.IGNORE``, 255) in both maps, except on pixels that a regular instance covers.

The transform is computed per instance on its bounding-box crop padded by one outside pixel, which is exact
(the nearest outside pixel of an inside pixel is never farther than the padding ring), so the cost scales with
the object area, not with the image area times the number of instances. The distances are OpenCV's exact
Euclidean transform (``DIST_MASK_PRECISE``); the bins are decided on the integer squared distances
(D <= 0.2 is 25 d^2 <= max(d)^2), so that no rounding moves a pixel across a bin edge (d = 1 of a peak of 5,
d = sqrt(5) of sqrt(125), ...). Since the bins grow with D, the bin of max_i D_i is the max of the bins.

`stride > 1` gives the maps of the cheaper stride-`s` auxiliary loss (``model.aux.loss_stride=4``): the
pixel-level maps sampled at each cell's centre, pixel (s*i + s//2, s*j + s//2) of cell (i, j) (nearest
sampling, as torch's ``nearest-exact``; clamped to the last pixel for a cell that the image border cuts
before its centre). Why the centre and not the cell's majority: under the image-resolution loss a stride-4
logit is upsampled (bilinear, align_corners=False) onto its 4x4 block, weighing most on the block's two
central pixel rows and columns (7/8 of it there), so the stride-4 loss is the image-resolution loss
subsampled at one pixel per cell. A subsample keeps each bin's share of the pixels in expectation over the
objects' sub-cell positions; a majority vote of the 4x4 blocks is biased against thin regions, such as the
bin-1 ring of objects under ~64 px (1-3 px wide) and objects under a few pixels, which it drops wherever
they fill less than half a block. The cell grid is (ceil(H/s), ceil(W/s)) (``datnet.contract.grid_shape``),
the heads' logits on the image.
"""

from __future__ import annotations

from fractions import Fraction

import cv2
import numpy as np

from datnet.contract import IGNORE, check_stride, grid_shape

DT_BIN_EDGES = (0.2, 0.4)
"""Upper edges of DT bins 1 and 2 (bin 3 is everything above 0.4), Sec. 3.1."""
_SQUARED_EDGES = tuple((f.numerator, f.denominator) for f in (Fraction(str(e)) ** 2 for e in DT_BIN_EDGES))
"""DT_BIN_EDGES squared as exact fractions, (1, 25) and (4, 25): D > 0.2 <=> 25 d^2 > 1 max(d)^2, D > 0.4 <=>
25 d^2 > 4 max(d)^2, decided on integer squared distances."""


def _crop(mask: np.ndarray) -> tuple[np.ndarray, int, int] | None:
    """The mask on its bounding box, with the box's top-left pixel (row, column); None for an empty mask."""
    x, y, w, h = cv2.boundingRect(mask)
    if w == 0 or h == 0:
        return None
    return mask[y : y + h, x : x + w], y, x


def instance_dt_bins(crop: np.ndarray) -> np.ndarray:
    """The DT bins (uint8, 0..3) of one instance from its mask (uint8, nonzero inside) on a crop that holds
    the whole instance; beyond the crop is outside."""
    padded = cv2.copyMakeBorder(crop, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    # exact squared distances: integers below 2**21 for images under ~2800 px, where the float32 square of
    # the float32 distance (a rounded square root) is within 0.4 of the integer
    squared = np.rint(np.square(dist))
    peak = squared.max()
    bins = (squared > 0).astype(np.uint8)
    for num, den in _SQUARED_EDGES:
        bins += den * squared > num * peak
    return bins


def pixel_aux_targets(
    masks: np.ndarray, labels: np.ndarray, ignore_masks: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Compute (dt, sem), each uint8 HxW, from NxHxW instance masks with labels 1..C and MxHxW ignore
    masks, all in the pixels of the image the model sees. See the module docstring."""
    height, width = masks.shape[1:] if masks.ndim == 3 else ignore_masks.shape[1:]
    dt = np.zeros((height, width), dtype=np.uint8)
    sem = np.zeros((height, width), dtype=np.uint8)

    crops = [_crop(np.ascontiguousarray(m, dtype=np.uint8)) for m in masks]
    present = [(c, int(lab)) for c, lab in zip(crops, labels, strict=True) if c is not None]
    present.sort(key=lambda item: -cv2.countNonZero(item[0][0]))  # stable: decreasing area, later wins ties
    for (crop, r0, c0), label in present:
        window = np.s_[r0 : r0 + crop.shape[0], c0 : c0 + crop.shape[1]]
        np.maximum(dt[window], instance_dt_bins(crop), out=dt[window])
        sem[window][crop > 0] = label

    for cropped in (_crop(np.ascontiguousarray(m, dtype=np.uint8)) for m in ignore_masks):
        if cropped is None:
            continue
        crop, r0, c0 = cropped
        window = np.s_[r0 : r0 + crop.shape[0], c0 : c0 + crop.shape[1]]
        region = (crop > 0) & (dt[window] == 0)
        dt[window][region] = IGNORE
        sem[window][region] = IGNORE
    return dt, sem


def sample_cell_centres(dense: np.ndarray, stride: int) -> np.ndarray:
    """A pixel-level HxW map brought to the stride-`stride` grid (ceil(H/s), ceil(W/s)) by taking each
    cell's centre pixel (s*i + s//2, s*j + s//2), clamped to the image (module docstring); the map itself
    for stride 1."""
    if stride == 1:
        return dense
    height, width = dense.shape
    gh, gw = grid_shape(height, width, stride)
    rows = np.minimum(np.arange(gh) * stride + stride // 2, height - 1)
    cols = np.minimum(np.arange(gw) * stride + stride // 2, width - 1)
    return np.ascontiguousarray(dense[np.ix_(rows, cols)])


def dense_aux_targets(
    masks: np.ndarray, labels: np.ndarray, ignore_masks: np.ndarray, stride: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """(dt, sem), each uint8 (ceil(H/stride), ceil(W/stride)): the pixel-level targets of
    ``pixel_aux_targets`` at stride 1 (the paper's image-resolution loss), sampled at the cell centres
    otherwise (the cheaper stride-4 loss). See the module docstring."""
    check_stride(stride, "data.aux_stride")
    return tuple(sample_cell_centres(m, stride) for m in pixel_aux_targets(masks, labels, ignore_masks))
