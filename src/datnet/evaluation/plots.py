"""Precision-recall curves and the detection confusion matrix of an evaluation, as data files and PNGs.

The data come from faster-coco-eval: the curves are the per-category precision at IoU 0.50 of the
evaluation that gives the metrics (``ClassPrecision``: COCOeval's ``eval["precision"]``, the points whose
mean is each category's AP50), and the confusion matrix is ``faster_coco_eval.extra.PreviewResults``'s:
detections scoring at least ``min_score`` matched class-agnostically to the ground truth at IoU 0.50,
ground-truth category by predicted category, plus a column of unmatched detections (false positives, by
predicted category) and one of unmatched objects (false negatives, by ground-truth category).

faster-coco-eval draws them with plotly, which is not installed, and exports PNGs only through kaleido,
which needs a Chrome browser; the PNGs are drawn here with matplotlib (in the ``dev`` extras, as ``make``
installs). Without matplotlib only the data files (JSON, CSV) are written, with a warning.
"""

import copy
import csv
import functools
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from faster_coco_eval import COCO
from faster_coco_eval.extra import PreviewResults

from datnet.evaluation.coco_metrics import IouType
from datnet.evaluation.per_class import ClassPrecision

logger = logging.getLogger(__name__)

CURVE_IOU = 0.5
CONFUSION_IOU = 0.5
CONFUSION_MIN_SCORE = 0.5  # as the default threshold of scripts/predict.py's drawings
MAX_LABELLED_CATEGORIES = 20  # more (COCO's 80): no per-category legend entries nor counts in the cells


@functools.cache
def _figure_class() -> type | None:
    """matplotlib's ``Figure`` (used without pyplot: no global state, any thread), or None (warned once)
    without matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        logger.warning(
            "matplotlib is not installed (pip install matplotlib, or the project's [dev] extras): "
            "precision-recall curves and confusion matrices are written as JSON/CSV only, without PNGs"
        )
        return None
    return Figure


def _figure(**kwargs):
    """A new matplotlib figure, or None without matplotlib."""
    figure_class = _figure_class()
    return None if figure_class is None else figure_class(**kwargs)


def write_pr_curves(
    precision: ClassPrecision, names: Mapping[int, str], iou_type: IouType, output_dir: Path
) -> list[Path]:
    """``pr_curves_{iou_type}.json`` (recall thresholds; per category its AP50, precision and score at
    each; categories without ground truth left out) and ``pr_curves_{iou_type}.png``: the curve of every
    category at IoU 0.50 and, in black, their mean (whose area is AP50)."""
    t = precision.iou_index(CURVE_IOU)
    recall = precision.recall_thresholds
    ap50 = precision.average_precision(CURVE_IOU)
    curves = [
        {
            "category_id": cat_id,
            "category": names[cat_id],
            "AP50": float(ap50[k]),
            "precision": precision.precision[t, :, k].tolist(),
            "scores": precision.scores[t, :, k].tolist(),
        }
        for k, cat_id in enumerate(precision.category_ids)
        if precision.precision[t, 0, k] > -1
    ]
    data_path = output_dir / f"pr_curves_{iou_type}.json"
    data_path.write_text(
        json.dumps({"iou_type": iou_type, "iou": CURVE_IOU, "recall": recall.tolist(), "categories": curves})
    )
    figure = _figure(figsize=(7, 5), layout="constrained")
    if figure is None:
        return [data_path]
    axes = figure.subplots()
    labelled = len(curves) <= MAX_LABELLED_CATEGORIES
    for curve in curves:
        label = f"{curve['category']} ({curve['AP50']:.3f})" if labelled else None
        axes.plot(recall, curve["precision"], linewidth=1, label=label)
    if curves:
        mean = np.mean([curve["precision"] for curve in curves], axis=0)
        axes.plot(recall, mean, color="black", linewidth=2.5, label=f"mean ({float(np.nanmean(ap50)):.3f})")
        axes.legend(title="category (AP50)", fontsize="small", loc="center left", bbox_to_anchor=(1, 0.5))
    axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    axes.set_title(f"{iou_type}: precision-recall at IoU {CURVE_IOU:.2f}")
    axes.grid(alpha=0.3)
    image_path = output_dir / f"pr_curves_{iou_type}.png"
    figure.savefig(image_path, dpi=100)
    return [data_path, image_path]


def _matching_ground_truth(coco_gt: COCO, image_ids: Sequence[int]) -> COCO:
    """The ground truth of ``image_ids`` without crowd regions: PreviewResults evaluates every image of
    its ground truth, and would count an unmatched crowd region (or VOC difficult object) as missed."""
    annotations = coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=list(image_ids)))
    dataset = {
        "images": coco_gt.loadImgs(list(image_ids)),
        "annotations": [ann for ann in annotations if not ann.get("iscrowd", 0)],
        "categories": list(coco_gt.cats.values()),
    }
    return COCO(copy.deepcopy(dataset))


def confusion_matrix(
    coco_gt: COCO,
    results: list[dict],
    iou_type: IouType,
    image_ids: Sequence[int],
) -> tuple[np.ndarray, list[str]]:
    """faster-coco-eval's confusion matrix (K, K + 2) of ``results`` (COCO result records, modified: pass
    fresh ones) on ``image_ids``, and the K category names (rows and first K columns, in ``coco_gt``'s
    order); the last two columns count false positives and false negatives (see the module docstring)."""
    ground_truth = _matching_ground_truth(coco_gt, image_ids)
    detections = ground_truth.loadRes(
        [record for record in results if record["score"] >= CONFUSION_MIN_SCORE]
    )
    preview = PreviewResults(ground_truth, detections, iouType=iou_type, iou_tresh=CONFUSION_IOU)
    return preview.compute_confusion_matrix(), [cat["name"] for cat in ground_truth.cats.values()]


def write_confusion_matrix(
    matrix: np.ndarray, names: list[str], iou_type: IouType, output_dir: Path
) -> list[Path]:
    """``confusion_matrix_{iou_type}.csv`` (rows: ground truth; columns: prediction, ``fp``, ``fn``) and
    ``confusion_matrix_{iou_type}.png`` (counts, each row's colour normalised by its sum)."""
    columns = [*names, "fp", "fn"]
    data_path = output_dir / f"confusion_matrix_{iou_type}.csv"
    with data_path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["ground_truth", *columns])
        writer.writerows([name, *(int(v) for v in row)] for name, row in zip(names, matrix, strict=True))
    size = 2 + 0.45 * len(columns)
    figure = _figure(figsize=(size + 1.5, size), layout="constrained")
    if figure is None:
        return [data_path]
    axes = figure.subplots()
    normalised = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    image = axes.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axes, label="fraction of the row")
    axes.set_xticks(range(len(columns)), columns, rotation=90)
    axes.set_yticks(range(len(names)), names)
    axes.set(xlabel="predicted", ylabel="ground truth")
    axes.set_title(f"{iou_type}: confusion at IoU {CONFUSION_IOU:.2f}, score >= {CONFUSION_MIN_SCORE}")
    if len(columns) <= MAX_LABELLED_CATEGORIES + 2:
        for (row, column), count in np.ndenumerate(matrix):
            if count:
                color = "white" if normalised[row, column] > 0.5 else "black"
                axes.text(column, row, int(count), ha="center", va="center", fontsize=8, color=color)
    image_path = output_dir / f"confusion_matrix_{iou_type}.png"
    figure.savefig(image_path, dpi=100)
    return [data_path, image_path]
