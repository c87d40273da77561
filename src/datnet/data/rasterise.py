"""Instance segmentations made directly at the size and orientation of the augmented image, each on the
window of its box only.

The pipeline moves pixels only by a horizontal flip and a resize (``datnet.data.transforms``: paper Sec. 4
"Training details"). A mask is the annotation rasterised at the file's resolution, flipped with the image and
resized with nearest-neighbour sampling: output pixel (i, j) takes source pixel (rows[i], cols[j]), OpenCV's
``INTER_NEAREST`` rule (floor(j W/W'), torchvision's "nearest" too), with cols mirrored after a flip. Here
each instance is rasterised only on its window at the file's resolution (polygons and the filled box of
box-only data, Sec. 4.4, by pycocotools on the window; an RLE decoded once and cut to its box), and only
the output pixels whose source pixel lies in the window are sampled: the masks of decoding every instance
at the file's size and resizing it, without an image-sized array per instance. They differ from those only
where moving a polygon into its window changes pycocotools' rounding of a vertex (a few boundary pixels;
``tests/data/test_rasterise.py``), so the auxiliary targets of Sec. 3.1 stay as they were.
"""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

from datnet.data.instance_masks import EMPTY_CROP, InstanceMasks
from datnet.data.masks import box_proxy, to_rle
from datnet.data.records import Instance


def nearest_sources(out_len: int, src_len: int) -> np.ndarray:
    """The source pixel that each of `out_len` output pixels takes when `src_len` pixels are resized by
    OpenCV's ``INTER_NEAREST``: floor(j * (1 / (out_len / src_len))), in OpenCV's own arithmetic."""
    return np.minimum((np.arange(out_len) * (1.0 / (out_len / src_len))).astype(np.int64), src_len - 1)


def _polygon_window(polygons: list[list[float]], height: int, width: int) -> tuple[np.ndarray, int, int]:
    """The polygons rasterised by pycocotools on their window of a `height` x `width` image (their extent
    and a margin of one pixel, clipped to the image; pycocotools takes a pixel when its centre is inside),
    with the window's top-left pixel."""
    points = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in polygons]
    xy = np.concatenate(points)
    left, top = (max(0, int(np.floor(v)) - 1) for v in xy.min(axis=0))
    right = min(width, int(np.ceil(xy[:, 0].max())) + 1)
    bottom = min(height, int(np.ceil(xy[:, 1].max())) + 1)
    if right <= left or bottom <= top:
        return EMPTY_CROP, 0, 0
    shifted = [(p - (left, top)).ravel().tolist() for p in points]
    rle = mask_utils.merge(mask_utils.frPyObjects(shifted, bottom - top, right - left))
    return mask_utils.decode(rle), top, left


def _rle_window(rle: dict) -> tuple[np.ndarray, int, int]:
    """A compressed RLE decoded at the file's size and cut to its box, with the box's top-left pixel."""
    x, y, w, h = (int(v) for v in mask_utils.toBbox(rle))
    return mask_utils.decode(rle)[y : y + h, x : x + w], y, x


def _sample(
    window: np.ndarray, top: int, left: int, rows: np.ndarray, cols: np.ndarray
) -> tuple[np.ndarray, int, int]:
    """The output pixels whose source pixel (rows[i], cols[j]) lies in `window` (at `top`, `left` of the
    source), with the window's values there, and the first such output row and column (`rows` and `cols`
    are monotonic, so those pixels form a rectangle)."""
    r = np.flatnonzero((rows >= top) & (rows < top + window.shape[0]))
    c = np.flatnonzero((cols >= left) & (cols < left + window.shape[1]))
    if not (len(r) and len(c)):
        return EMPTY_CROP, 0, 0
    return window[rows[r] - top][:, cols[c] - left], int(r[0]), int(c[0])


def rasterise(
    instances: list[Instance], src_size: tuple[int, int], out_size: tuple[int, int], flipped: bool
) -> InstanceMasks:
    """The masks of `instances` (annotated on an image of `src_size` (height, width)) on the augmented image
    of `out_size`, flipped left-right before the resize when `flipped`. See the module docstring."""
    (src_h, src_w), (out_h, out_w) = src_size, out_size
    rows, cols = nearest_sources(out_h, src_h), nearest_sources(out_w, src_w)
    if flipped:
        cols = src_w - 1 - cols
    crops = []
    for inst in instances:
        segmentation = box_proxy(inst.segmentation, inst.bbox)
        if isinstance(segmentation, list):
            window = _polygon_window(segmentation, src_h, src_w)
        else:
            window = _rle_window(to_rle(segmentation, inst.bbox, src_h, src_w))
        crops.append(_sample(*window, rows, cols))
    return InstanceMasks.from_crops(out_h, out_w, crops)
