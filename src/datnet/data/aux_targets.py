"""Dense auxiliary targets of paper Sec. 3.1 (distance-transform bins and semantic labels), per pixel.

Definitions (all on the pixels of the image the model sees, H x W):

* D_i is the Euclidean distance transform of instance i's mask: the distance of each inside pixel to the
  nearest outside pixel (pixel centres; a pixel next to the boundary is at 1), where everything beyond the
  image border is outside (a truncated object has its boundary at the image edge; our choice, the paper is
  silent: `image_border_is_boundary`, `model.aux.image_border_is_boundary`). With it off, beyond the image
  is not outside: the distance is to the nearest outside pixel of the image, as OpenCV's and scipy's
  transforms of the whole mask give. D = max_i D_i / max(D_i).
* `dt` bins D with K=4: 0 background, 1 for 0 < D <= 0.2, 2 for 0.2 < D <= 0.4, 3 for D > 0.4.
* `sem` is the contiguous class label (0 background). Where instances overlap, the SMALLEST instance (fewest
  pixels) wins, i.e. instances are painted in order of decreasing area; ties keep the later instance.
* Ignore regions (crowd annotations, VOC void, excluded difficult objects) get the ignore label
  (``datnet.contract.IGNORE``, 255) in both maps, except on pixels that a regular instance covers.

The transform is computed per instance on its bounding-box crop (``datnet.data.instance_masks``, as the
dataset rasterised it) padded by one outside pixel, which is exact (the nearest outside pixel of an inside
pixel is never farther than the padding ring), so the cost scales with the object area, not with the image
area times the number of instances. The distances are OpenCV's exact Euclidean transform
(``DIST_MASK_PRECISE``); the bins are decided on the integer squared distances (D <= 0.2 is
25 d^2 <= max(d)^2), so that no rounding moves a pixel across a bin edge (d = 1 of a peak of 5, d = sqrt(5)
of sqrt(125), ...). Since the bins grow with D, the bin of max_i D_i is the max of the bins.

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
from datnet.data.instance_masks import InstanceMasks

DT_BIN_EDGES = (0.2, 0.4)
"""Upper edges of DT bins 1 and 2 (bin 3 is everything above 0.4), Sec. 3.1."""
_SQUARED_EDGES = tuple((f.numerator, f.denominator) for f in (Fraction(str(e)) ** 2 for e in DT_BIN_EDGES))
"""DT_BIN_EDGES squared as exact fractions, (1, 25) and (4, 25): D > 0.2 <=> 25 d^2 > 1 max(d)^2, D > 0.4 <=>
25 d^2 > 4 max(d)^2, decided on integer squared distances."""


NO_SIDES = (False, False, False, False)


def border_sides(window: tuple[slice, slice], height: int, width: int) -> tuple[bool, bool, bool, bool]:
    """Which sides (top, bottom, left, right) of the crop at ``window`` lie on the border of the image."""
    rows, cols = window
    return rows.start == 0, rows.stop == height, cols.start == 0, cols.stop == width


def instance_dt_bins(crop: np.ndarray, open_sides: tuple[bool, bool, bool, bool] = NO_SIDES) -> np.ndarray:
    """The DT bins (uint8, 0..3) of one instance from its mask (uint8, nonzero inside) on a crop that holds
    the whole instance; beyond the crop is outside, except beyond its ``open_sides`` (top, bottom, left,
    right): sides on an image border that is not a boundary."""
    padded = cv2.copyMakeBorder(crop, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    for is_open, ring in zip(open_sides, (np.s_[0], np.s_[-1], np.s_[:, 0], np.s_[:, -1]), strict=True):
        if is_open:
            padded[ring] = 1
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    # a distance is the float32 square root of an integer squared distance q, below 2**21 for objects
    # under ~2800 px, where float32 rounding moves squares by less than 1/2: q >= k exactly when
    # dist > sqrt(k - 1/2)
    peak = round(cv2.minMaxLoc(dist)[1] ** 2)
    bins = (dist > 0).view(np.uint8)
    for num, den in _SQUARED_EDGES:
        smallest_above = num * peak // den + 1  # the least integer q with den * q > num * peak
        bins += (dist > np.float32(np.sqrt(smallest_above - 0.5))).view(np.uint8)
    return bins


def pixel_aux_targets(
    masks: InstanceMasks, labels: np.ndarray, ignore: InstanceMasks, image_border_is_boundary: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Compute (dt, sem), each uint8 HxW, from the instance masks with labels 1..C and the ignore-region
    masks, all on the pixels of the image the model sees. See the module docstring."""
    dt = np.zeros((masks.height, masks.width), dtype=np.uint8)
    sem = np.zeros_like(dt)
    # stable sort: decreasing area, the later instance wins ties
    for k in sorted(range(len(masks)), key=lambda k: -masks.areas[k]):
        crop, window = masks.crops[k], masks.windows[k]
        if crop.size:
            sides = NO_SIDES if image_border_is_boundary else border_sides(window, masks.height, masks.width)
            np.maximum(dt[window], instance_dt_bins(crop, sides), out=dt[window])
            sem[window][crop.view(bool)] = labels[k]
    for crop, window in zip(ignore.crops, ignore.windows, strict=True):
        region = crop.view(bool) & (dt[window] == 0)
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


def aux_targets(
    masks: InstanceMasks,
    labels: np.ndarray,
    ignore: InstanceMasks,
    stride: int = 4,
    image_border_is_boundary: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """(dt, sem), each uint8 (ceil(H/stride), ceil(W/stride)): the pixel-level targets of
    ``pixel_aux_targets`` at stride 1 (the paper's image-resolution loss), sampled at the cell centres
    otherwise (the cheaper stride-4 loss). See the module docstring."""
    check_stride(stride, "data.aux_stride")
    dense = pixel_aux_targets(masks, labels, ignore, image_border_is_boundary)
    return tuple(sample_cell_centres(m, stride) for m in dense)


def dense_aux_targets(
    masks: np.ndarray, labels: np.ndarray, ignore_masks: np.ndarray, stride: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """``aux_targets`` of NxHxW instance masks and MxHxW ignore masks (nonzero inside)."""
    return aux_targets(
        InstanceMasks.from_dense(masks), labels, InstanceMasks.from_dense(ignore_masks), stride
    )
