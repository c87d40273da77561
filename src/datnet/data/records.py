"""Source-independent annotation records and the per-reason counter of rejected annotations.

Every source parser (COCO JSON, VOC XML, PNG instance masks) produces the same records: one `ImageRecord` per
image holding its `Instance`s with boxes in original image pixels and the original dataset category ids. The
dataset, the aspect-ratio sampler and the COCO ground-truth export all work from these records only.
"""

from __future__ import annotations

import logging
import pickle
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

Segmentation = list[list[float]] | dict[str, Any] | None
"""COCO polygons (list of flat xy lists), COCO RLE dict (compressed or uncompressed), or None (box proxy)."""


@dataclass(frozen=True)
class Category:
    """One object class: the original dataset id (used in result files) and its name."""

    id: int
    name: str


@dataclass
class Instance:
    """One annotated object (or ignore region) of an image, in original image pixels.

    `category_id` is the ORIGINAL dataset id; None marks a pure ignore region (e.g. VOC 'void' pixels).
    `segmentation` None means box-only data: the filled box is used as a coarse proxy mask (paper Sec. 4.4).
    `iscrowd` regions and `difficult` objects (VOC) are not training instances by default; both are ignored
    by COCO evaluation.
    """

    ann_id: int
    bbox: tuple[float, float, float, float]  # x1, y1, x2, y2
    category_id: int | None
    segmentation: Segmentation = None
    area: float = 0.0
    iscrowd: bool = False
    difficult: bool = False


@dataclass
class ImageRecord:
    """One image: its id in the original dataset, file path, original size and annotations."""

    image_id: int
    path: Path
    width: int
    height: int
    instances: list[Instance] = field(default_factory=list)

    @property
    def file_name(self) -> str:
        return self.path.name


@dataclass
class SourceData:
    """Everything a source parser found: the records, the category list and the counted rejections."""

    records: list[ImageRecord]
    categories: list[Category]
    skips: SkipCounter
    annotated: bool = True  # False for image-info files (COCO test-dev): no ground truth at all


class SerializedRecords(Sequence):
    """The records pickled into one NumPy byte buffer, unpickled one at a time on access (read-only).

    A list of Python objects is copied, page by page, into every forked loader worker as the workers read it
    (reference counting writes to every object touched): with full COCO (118k images, 860k polygons) that is
    one copy of the annotations per worker, per GPU. Two NumPy arrays hold no Python references, so the
    workers share them with the main process. Own code because the known fix (detectron2's
    ``DatasetFromList(serialize=True)``) lives in a library this project does not depend on; torch has none.
    """

    def __init__(self, records: list[ImageRecord]) -> None:
        blobs = [pickle.dumps(rec, protocol=pickle.HIGHEST_PROTOCOL) for rec in records]
        self._ends = np.cumsum([len(b) for b in blobs], dtype=np.int64)
        self._buffer = np.frombuffer(b"".join(blobs), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, index: int) -> ImageRecord:  # type: ignore[override]
        if not -len(self) <= index < len(self):
            raise IndexError(f"record {index} out of range ({len(self)} records)")
        index %= len(self)
        start = int(self._ends[index - 1]) if index else 0
        return pickle.loads(memoryview(self._buffer[start : int(self._ends[index])]))

    @property
    def nbytes(self) -> int:
        """Bytes held: the buffer and the offsets."""
        return self._buffer.nbytes + self._ends.nbytes


class SkipCounter:
    """Counts rejected or repaired annotations per reason; keeps each reason's first example for the log."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, str] = {}

    def add(self, reason: str, detail: str) -> None:
        self.counts[reason] += 1
        self.examples.setdefault(reason, detail)

    def log_summary(self) -> None:
        """Log one warning listing every reason with its count and first example (nothing if clean)."""
        if not self.counts:
            return
        lines = [
            f"  {reason}: {n} (first: {self.examples[reason]})" for reason, n in sorted(self.counts.items())
        ]
        log.warning("%s: annotation problems handled at load time:\n%s", self.source, "\n".join(lines))


def sanitize_box(
    box: tuple[float, float, float, float], width: int, height: int, skips: SkipCounter, where: str
) -> tuple[float, float, float, float] | None:
    """Validate an xyxy box against the image size: clip a box partly outside, drop (None) a box with zero or
    negative width/height, non-finite coordinates, or lying wholly outside the image. Every repair is
    counted."""
    x1, y1, x2, y2 = (float(v) for v in box)
    if not all(np.isfinite((x1, y1, x2, y2))):
        skips.add("non_finite_box", where)
        return None
    if x2 <= x1 or y2 <= y1:
        skips.add("degenerate_box", f"{where}: xyxy=({x1:g}, {y1:g}, {x2:g}, {y2:g})")
        return None
    cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
    cx2, cy2 = min(max(x2, 0.0), width), min(max(y2, 0.0), height)
    if cx2 <= cx1 or cy2 <= cy1:
        skips.add("box_outside_image", f"{where}: xyxy=({x1:g}, {y1:g}, {x2:g}, {y2:g}) in {width}x{height}")
        return None
    if (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2):
        skips.add("box_clipped", f"{where}: xyxy=({x1:g}, {y1:g}, {x2:g}, {y2:g}) in {width}x{height}")
    return cx1, cy1, cx2, cy2


def require_path(path: Path, what: str, hint: str = "") -> Path:
    """Fail at start-up (configuration error) when a configured file or directory does not exist; ``hint``
    (e.g. the expected layout) is added to the message in parentheses."""
    if not path.exists():
        raise FileNotFoundError(f"{what} does not exist: {path}" + (f" ({hint})" if hint else ""))
    return path
