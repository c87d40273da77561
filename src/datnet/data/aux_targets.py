"""Dense auxiliary targets of paper Sec. 3.1 (distance-transform bins and semantic labels) at stride 4.

Definitions (all on the stride-`s` grid of the auxiliary heads, output size (ceil(H/s), ceil(W/s))):

* Grid cell (i, j) covers image pixels [s*i, s*i+s) x [s*j, s*j+s); it belongs to an instance when at least
  half of its s*s pixels do (pixels beyond the image border count as outside).
* D_i is the Euclidean distance transform of instance i's cell mask: the distance of each inside cell to the
  nearest outside cell, where everything beyond the image border is outside (a truncated object has its
  boundary at the image edge). D = max_i D_i / max(D_i).
* `dt` bins D with K=4: 0 background, 1 for 0 < D <= 0.2, 2 for 0.2 < D <= 0.4, 3 for D > 0.4.
* `sem` is the contiguous class label (0 background). Where instances overlap, the SMALLEST instance (fewest
  cells) wins, i.e. instances are painted in order of decreasing area; ties keep the later instance.
* Ignore regions (crowd annotations, VOC void, excluded difficult objects) get IGNORE (255) in both maps,
  except on cells that a regular instance covers.

The transform is computed per instance on its bounding-box crop padded by one outside cell, which is exact
(the nearest outside cell of an inside cell is never farther than the padding ring), so the cost scales with
the object area, not with the image area times the number of instances.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy.ndimage import distance_transform_edt

IGNORE = 255
DT_BIN_EDGES = (0.2, 0.4)
"""Upper edges of DT bins 1 and 2 (bin 3 is everything above 0.4), Sec. 3.1."""


def grid_shape(height: int, width: int, stride: int) -> tuple[int, int]:
    """Size of the stride-`stride` target grid for an image of height x width pixels."""
    return -(-height // stride), -(-width // stride)


def _cell_mask(mask: np.ndarray, stride: int) -> tuple[np.ndarray, int, int] | None:
    """The instance's cells (>= half the pixels inside) on its stride-aligned bounding-box crop, with the
    crop's top-left cell; None for an empty mask."""
    x, y, w, h = cv2.boundingRect(mask)
    if w == 0 or h == 0:
        return None
    r0, c0 = y // stride, x // stride
    r1, c1 = -(-(y + h) // stride), -(-(x + w) // stride)
    crop = mask[r0 * stride : r1 * stride, c0 * stride : c1 * stride]
    rows, cols = r1 - r0, c1 - c0
    if crop.shape != (rows * stride, cols * stride):  # the crop touches the bottom/right border: pad outside
        crop = np.pad(crop, ((0, rows * stride - crop.shape[0]), (0, cols * stride - crop.shape[1])))
    counts = crop.reshape(rows, stride, cols, stride).sum(axis=(1, 3), dtype=np.int32)
    return counts * 2 >= stride * stride, r0, c0


def bin_distances(d: np.ndarray) -> np.ndarray:
    """Bin normalised distances D in [0, 1] into the K=4 DT classes of Sec. 3.1 (uint8)."""
    dt = (d > 0).astype(np.uint8)
    for edge in DT_BIN_EDGES:
        dt += d > edge
    return dt


def dense_aux_targets(
    masks: np.ndarray, labels: np.ndarray, ignore_masks: np.ndarray, stride: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """Compute (dt, sem), each uint8 (ceil(H/stride), ceil(W/stride)), from NxHxW instance masks with labels
    1..C and MxHxW ignore masks, all in the pixels of the image the model sees. See the module docstring."""
    height, width = masks.shape[1:] if masks.ndim == 3 else ignore_masks.shape[1:]
    gh, gw = grid_shape(height, width, stride)
    dist = np.zeros((gh, gw), dtype=np.float64)  # float64: ratios such as 1/5 must not cross a bin edge
    sem = np.zeros((gh, gw), dtype=np.uint8)

    cells = [_cell_mask(m, stride) for m in masks]
    present = [(c, int(lab)) for c, lab in zip(cells, labels, strict=True) if c is not None]
    present.sort(key=lambda item: -int(item[0][0].sum()))  # stable: decreasing area, later wins ties
    for (inside, r0, c0), label in present:
        d = distance_transform_edt(np.pad(inside, 1))[1:-1, 1:-1]
        peak = d.max()
        if peak == 0:  # all cells under half-covered: the object vanishes at this stride
            continue
        rows, cols = inside.shape
        np.maximum(dist[r0 : r0 + rows, c0 : c0 + cols], d / peak, out=dist[r0 : r0 + rows, c0 : c0 + cols])
        sem[r0 : r0 + rows, c0 : c0 + cols][inside] = label

    dt = bin_distances(dist)
    for cell in (_cell_mask(m, stride) for m in ignore_masks):
        if cell is None:
            continue
        inside, r0, c0 = cell
        rows, cols = inside.shape
        region = inside & (dt[r0 : r0 + rows, c0 : c0 + cols] == 0)
        dt[r0 : r0 + rows, c0 : c0 + cols][region] = IGNORE
        sem[r0 : r0 + rows, c0 : c0 + cols][region] = IGNORE
    return dt, sem
