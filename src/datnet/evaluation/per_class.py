"""Per-category COCO AP (the per-class table of detectron2 and mmdetection), read from the accumulated
precision of the very evaluation that gives the summary metrics: nothing is evaluated a second time.

COCOeval's ``eval["precision"]`` is indexed (T, R, K, A, M): IoU thresholds 0.50:0.05:0.95, 101 recall
thresholds, categories, area ranges and numbers of detections per image, with -1 where a category has no
ground truth. A category's AP is the mean over T and R of its precision for the area range ``all`` at the
largest number of detections (100), as COCOeval's ``summarize`` computes the overall AP (which is the mean of
these over the categories with ground truth); its AP50 is the same mean at IoU 0.50 alone.
"""

import csv
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from faster_coco_eval import COCO, COCOeval_faster

# Columns of the table per IoU type, in this order: AP of every IoU type, then AP50 of every IoU type.
CLASS_METRICS = {"AP": None, "AP50": 0.5}
CSV_NAME = "per_class_ap.csv"
MARKDOWN_NAME = "per_class_ap.md"


@dataclass(frozen=True)
class ClassPrecision:
    """One IoU type's COCOeval precision for the area range ``all`` at the largest number of detections:
    ``precision[t, r, k]`` (-1: category ``k`` has no ground truth) and the detection score reached at that
    point, ``scores[t, r, k]``, for ``iou_thresholds[t]``, ``recall_thresholds[r]`` and
    ``category_ids[k]``."""

    category_ids: tuple[int, ...]
    iou_thresholds: np.ndarray
    recall_thresholds: np.ndarray
    precision: np.ndarray
    scores: np.ndarray

    @classmethod
    def from_cocoeval(cls, coco_eval: COCOeval_faster) -> "ClassPrecision":
        """The slice of an evaluated and accumulated per-category COCOeval (``useCats=1``)."""
        params = coco_eval.params
        if not params.useCats:
            raise ValueError("per-category precision needs a COCOeval with useCats=1")
        area = params.areaRngLbl.index("all")
        return cls(
            category_ids=tuple(int(c) for c in params.catIds),
            iou_thresholds=np.asarray(params.iouThrs, dtype=np.float64),
            recall_thresholds=np.asarray(params.recThrs, dtype=np.float64),
            precision=np.array(coco_eval.eval["precision"][:, :, :, area, -1]),
            scores=np.array(coco_eval.eval["scores"][:, :, :, area, -1]),
        )

    def iou_index(self, iou_threshold: float) -> int:
        """Index of ``iou_threshold`` among the evaluated IoU thresholds."""
        found = np.flatnonzero(np.isclose(self.iou_thresholds, iou_threshold))
        if not found.size:
            raise ValueError(f"IoU {iou_threshold} was not evaluated (thresholds {self.iou_thresholds})")
        return int(found[0])

    def average_precision(self, iou_threshold: float | None = None) -> np.ndarray:
        """AP of every category (K,), averaged over all IoU thresholds or at ``iou_threshold`` alone;
        ``nan`` for a category without ground truth."""
        precision = self.precision
        if iou_threshold is not None:
            precision = precision[[self.iou_index(iou_threshold)]]
        valid = precision > -1
        counts = valid.sum(axis=(0, 1))
        sums = np.where(valid, precision, 0.0).sum(axis=(0, 1))
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _format(value: float | int | str, digits: int) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


@dataclass(frozen=True)
class PerClassTable:
    """One row per ground-truth category: ``category_id``, ``category`` (name), ``instances`` (its
    non-crowd objects in the evaluated images), then ``{iou_type}_AP`` for every IoU type and
    ``{iou_type}_AP50`` for every IoU type (fractions, ``nan`` without ground truth)."""

    columns: tuple[str, ...]
    rows: tuple[tuple, ...]

    @classmethod
    def build(
        cls, coco_gt: COCO, precisions: Mapping[str, ClassPrecision], image_ids: Sequence[int]
    ) -> "PerClassTable":
        """The table of the categories of ``coco_gt`` from each IoU type's precision (``bbox``, ``segm``)."""
        objects = coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=list(image_ids)))
        instances = Counter(ann["category_id"] for ann in objects if not ann.get("iscrowd", 0))
        columns = ["category_id", "category", "instances"]
        values: list[dict[int, float]] = []
        for name, iou_threshold in CLASS_METRICS.items():
            for iou_type, precision in precisions.items():
                columns.append(f"{iou_type}_{name}")
                ap = precision.average_precision(iou_threshold)
                values.append(dict(zip(precision.category_ids, ap.tolist(), strict=True)))
        rows = tuple(
            (
                cat_id,
                coco_gt.cats[cat_id]["name"],
                instances[cat_id],
                *(v.get(cat_id, math.nan) for v in values),
            )
            for cat_id in sorted(coco_gt.cats)
        )
        return cls(tuple(columns), rows)

    def write_csv(self, path: str | Path) -> Path:
        """The table as CSV (full precision; an undefined AP is an empty field)."""
        path = Path(path)
        with path.open("w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(self.columns)
            for row in self.rows:
                writer.writerow(["" if isinstance(v, float) and math.isnan(v) else v for v in row])
        return path

    def to_markdown(self, digits: int = 3) -> str:
        """The table in markdown, APs to ``digits`` decimals, ``-`` where undefined."""
        header = ["category", "instances", *(c.replace("_AP", " AP") for c in self.columns[3:])]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in self.rows:
            lines.append("| " + " | ".join(_format(v, digits) for v in row[1:]) + " |")
        return "\n".join(lines)

    def write(self, output_dir: str | Path) -> list[Path]:
        """``per_class_ap.csv`` and ``per_class_ap.md`` in ``output_dir``."""
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        markdown = output_dir / MARKDOWN_NAME
        markdown.write_text(self.to_markdown() + "\n")
        return [self.write_csv(output_dir / CSV_NAME), markdown]
