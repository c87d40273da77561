"""The binary instance masks of one image, held as crops on their boxes in the image the model sees.

A mask is the tight crop of its pixels (uint8 {0, 1}) and the crop's top-left pixel; outside the crop the
mask is 0. Rasterising at that size (``datnet.data.rasterise``) makes one crop per instance, and everything
the sample needs reads the same crops: the pixel areas (``target["area"]``, and the painting order of the
semantic target), the crops that the dense auxiliary targets of paper Sec. 3.1 work on
(``datnet.data.aux_targets``) and the bit-packed NxHxW masks that loader workers send
(``datnet.contract.pack_masks``'s layout, written crop by crop). The cost follows the instances' areas, not
the image area times the number of instances.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

EMPTY_CROP = np.zeros((0, 0), dtype=np.uint8)
"""The crop of an empty mask."""


def _tight_crop(mask: np.ndarray, row: int = 0, col: int = 0) -> tuple[np.ndarray, int, int]:
    """The part of `mask` (uint8, nonzero inside) on its bounding box, with that box's top-left pixel when
    `mask` itself starts at (`row`, `col`); a 0x0 crop at (0, 0) for an empty mask."""
    x, y, w, h = cv2.boundingRect(mask) if mask.size else (0, 0, 0, 0)
    if w == 0 or h == 0:
        return EMPTY_CROP, 0, 0
    return mask[y : y + h, x : x + w], row + y, col + x


@dataclass(frozen=True)
class InstanceMasks:
    """N masks of an image `height` x `width`: `crops[k]` (uint8 {0, 1}, tight, 0x0 when empty) has its
    top-left pixel at `origins[k]` (row, column)."""

    height: int
    width: int
    crops: tuple[np.ndarray, ...] = ()
    origins: tuple[tuple[int, int], ...] = ()

    @classmethod
    def from_crops(
        cls, height: int, width: int, crops: Sequence[tuple[np.ndarray, int, int]]
    ) -> InstanceMasks:
        """Masks from (crop, row, col) triples of crops inside the image, each cut down to its pixels."""
        tight = [_tight_crop(np.ascontiguousarray(c, dtype=np.uint8), r, col) for c, r, col in crops]
        return cls(height, width, tuple(c for c, _, _ in tight), tuple((r, col) for _, r, col in tight))

    @classmethod
    def from_dense(cls, masks: np.ndarray) -> InstanceMasks:
        """Masks from an NxHxW array (nonzero inside)."""
        height, width = masks.shape[1:]
        return cls.from_crops(height, width, [((m != 0).view(np.uint8), 0, 0) for m in masks])

    def __len__(self) -> int:
        return len(self.crops)

    @functools.cached_property
    def windows(self) -> tuple[tuple[slice, slice], ...]:
        """The window of each crop: `image[windows[k]]` is the part of an HxW map under `crops[k]`."""
        return tuple(
            np.s_[row : row + c.shape[0], col : col + c.shape[1]]
            for c, (row, col) in zip(self.crops, self.origins, strict=True)
        )

    def select(self, index: np.ndarray) -> InstanceMasks:
        """The masks at `index` (integer positions or a boolean selector), in that order."""
        picked = np.arange(len(self))[index]
        return InstanceMasks(
            self.height,
            self.width,
            tuple(self.crops[k] for k in picked),
            tuple(self.origins[k] for k in picked),
        )

    @functools.cached_property
    def areas(self) -> np.ndarray:
        """Pixels of each mask (float32 N)."""
        return np.array([cv2.countNonZero(c) if c.size else 0 for c in self.crops], dtype=np.float32)

    def packed(self) -> np.ndarray:
        """The N x H x ceil(W/8) bit-packed masks of ``datnet.contract.pack_masks``, written crop by crop:
        each crop is padded to whole bytes of the image's rows and packed alone."""
        out = np.zeros((len(self), self.height, -(-self.width // 8)), dtype=np.uint8)
        for k, (crop, (row, col)) in enumerate(zip(self.crops, self.origins, strict=True)):
            if not crop.size:
                continue
            shift = col % 8
            height, width = crop.shape
            nbytes = -(-(shift + width) // 8)
            padded = np.zeros((height, 8 * nbytes), dtype=np.uint8)
            padded[:, shift : shift + width] = crop
            out[k, row : row + height, col // 8 : col // 8 + nbytes] = np.packbits(padded, axis=1)
        return out
