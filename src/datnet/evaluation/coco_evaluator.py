"""COCO evaluation of Mask R-CNN style predictions, accumulated image by image (DDP-aware).

Modelled on torchvision's detection reference ``CocoEvaluator`` and detectron2's ``COCOEvaluator``: the
predictions of each image are converted to COCO result records as soon as they arrive (masks become RLE,
so memory stays small), merged across processes by image id, and scored by faster-coco-eval.
"""

import copy
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from faster_coco_eval import COCO
from torch import Tensor

from datnet.evaluation.coco_metrics import IouType, detection_metrics, proposal_recall
from datnet.evaluation.coco_results import instances_to_coco_results, proposals_to_coco_results
from datnet.evaluation.distributed import all_gather_object

logger = logging.getLogger(__name__)

IOU_TYPES: tuple[IouType, ...] = ("bbox", "segm")


@dataclass
class ImageResults:
    """COCO result records of one image: detections (``bbox`` and, for segm, ``segmentation``) and
    class-agnostic RPN proposals (``bbox`` scored by rank, no ``category_id``)."""

    detections: list[dict]
    proposals: list[dict]


def merge_image_results(target: dict[int, ImageResults], image_id: int, results: ImageResults) -> None:
    """Add ``results`` of ``image_id`` to ``target`` so that each image is counted once: an identical
    repeat is dropped with a warning, a repeat with different predictions raises ``ValueError``."""
    known = target.get(image_id)
    if known is None:
        target[image_id] = results
    elif known == results:
        logger.warning(
            "image %d was evaluated more than once with identical predictions: counted once", image_id
        )
    else:
        raise ValueError(
            f"image {image_id} was evaluated more than once with different predictions; every image must "
            "reach the evaluator exactly once (e.g. no padding DistributedSampler for evaluation)"
        )


class CocoEvaluator:
    """Accumulates per-image predictions and computes COCO box/mask AP and RPN proposal recall.

    Args:
        ground_truth: COCO-format dict (``images``, ``annotations``, ``categories``) with the dataset's
            original category ids. Objects to ignore (e.g. VOC ``difficult``) carry ``iscrowd=1``.
            ``annotations`` may be missing or empty (test-dev): results can then still be written.
        label_to_category_id: the model's contiguous labels (1..C) -> original category ids.
        iou_types: any of ``"bbox"`` and ``"segm"``; ``"segm"`` needs ``masks`` in the predictions.
        evaluate_proposals: also compute class-agnostic recall of the ``proposals`` in the predictions.

    Metrics are computed on the images passed to :meth:`update` (on any process), so a partial pass over a
    dataset is scored on the images it saw.
    """

    def __init__(
        self,
        ground_truth: Mapping,
        label_to_category_id: Mapping[int, int],
        iou_types: Sequence[IouType] = ("bbox",),
        evaluate_proposals: bool = False,
    ) -> None:
        unknown = set(iou_types) - set(IOU_TYPES)
        if unknown:
            raise ValueError(f"unsupported iou_types {sorted(unknown)}; expected a subset of {IOU_TYPES}")
        self.iou_types = tuple(iou_types)
        self.evaluate_proposals = evaluate_proposals
        self.label_to_category_id = {int(label): int(cat) for label, cat in label_to_category_id.items()}
        # Copied: faster-coco-eval annotates the ground-truth records in place.
        dataset = copy.deepcopy(dict(ground_truth))
        dataset.setdefault("annotations", [])
        self.coco_gt = COCO(dataset)
        unknown_categories = set(self.label_to_category_id.values()) - set(self.coco_gt.getCatIds())
        if unknown_categories:
            raise ValueError(
                f"label_to_category_id maps to category ids {sorted(unknown_categories)} absent from GT"
            )
        self._image_results: dict[int, ImageResults] = {}

    def reset(self) -> None:
        """Forget all accumulated predictions."""
        self._image_results = {}

    @property
    def image_ids(self) -> list[int]:
        """Sorted ids of the images accumulated so far (on this process, or all after synchronize)."""
        return sorted(self._image_results)

    def update(self, predictions: Sequence[Mapping[str, Tensor]], image_ids: Iterable[int | Tensor]) -> None:
        """Add the predictions of a batch of images.

        Args:
            predictions: one torchvision Mask R-CNN output dict per image, in original image coordinates:
                ``boxes`` (Nx4 xyxy), ``scores`` (N), ``labels`` (N, contiguous), ``masks`` (Nx1xHxW
                probabilities; needed for segm) and ``proposals`` (Mx4 xyxy RPN boxes ordered by
                objectness; needed when ``evaluate_proposals``).
            image_ids: the COCO image id of each prediction.
        """
        image_ids = [int(image_id) for image_id in image_ids]
        if len(image_ids) != len(predictions):
            raise ValueError(f"{len(predictions)} predictions for {len(image_ids)} image ids")
        for prediction, image_id in zip(predictions, image_ids, strict=True):
            if image_id not in self.coco_gt.imgs:
                raise KeyError(f"image id {image_id} is not an image of the ground truth")
            detections = instances_to_coco_results(
                prediction, image_id, self.label_to_category_id, with_masks="segm" in self.iou_types
            )
            proposals = (
                proposals_to_coco_results(prediction["proposals"], image_id)
                if self.evaluate_proposals
                else []
            )
            merge_image_results(self._image_results, image_id, ImageResults(detections, proposals))

    def synchronize(self) -> None:
        """Merge the predictions of all processes so that every process holds every image once (no-op
        without torch.distributed). Collective: all processes must call it."""
        gathered = all_gather_object(self._image_results)
        if len(gathered) == 1:
            return
        merged: dict[int, ImageResults] = {}
        for part in gathered:
            for image_id, results in part.items():
                merge_image_results(merged, image_id, results)
        self._image_results = merged

    def results(self, kind: Literal["bbox", "segm", "rpn"]) -> list[dict]:
        """Fresh COCO result records of the accumulated images, by image id: ``"bbox"`` boxes,
        ``"segm"`` RLE masks (without ``bbox``, so COCO computes mask areas) or ``"rpn"`` proposals.
        Under DDP, call :meth:`synchronize` first to get every process's images."""
        if kind in IOU_TYPES and kind not in self.iou_types:
            raise ValueError(f"{kind!r} results were not accumulated (iou_types={self.iou_types})")
        if kind == "rpn" and not self.evaluate_proposals:
            raise ValueError("proposals were not accumulated (evaluate_proposals=False)")
        records = []
        for image_id in self.image_ids:
            image_results = self._image_results[image_id]
            if kind == "rpn":
                records += [
                    {**proposal, "bbox": list(proposal["bbox"])} for proposal in image_results.proposals
                ]
                continue
            for detection in image_results.detections:
                record = {key: detection[key] for key in ("image_id", "category_id", "score")}
                if kind == "bbox":
                    record["bbox"] = list(detection["bbox"])
                else:
                    record["segmentation"] = dict(detection["segmentation"])
                records.append(record)
        return records

    def write_results(self, output_dir: str | Path) -> dict[str, Path]:
        """Write ``{iou_type}_results.json`` (COCO results format, original category ids) for each iou
        type into ``output_dir``, e.g. for a test-dev submission; return the paths by iou type. Needs no
        ground-truth annotations. Under DDP, call :meth:`synchronize` first and write on one process."""
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        paths = {}
        for iou_type in self.iou_types:
            paths[iou_type] = output_dir / f"{iou_type}_results.json"
            paths[iou_type].write_text(json.dumps(self.results(iou_type)))
        return paths

    def compute(self) -> dict[str, float]:
        """Synchronize across processes (collective), then return the metrics of all accumulated images:
        ``{iou_type}/AP``, ``/AP50``, ``/AP75``, ``/AP_S``, ``/AP_M``, ``/AP_L`` per iou type and, with
        proposals, ``rpn/AR@100``, ``rpn/AR_S@100``, ... ``rpn/AR_L@1000``. Values are fractions; a metric
        without ground truth to measure it is ``nan``; no predictions at all give 0 where GT exists."""
        self.synchronize()
        metrics = {}
        for iou_type in self.iou_types:
            metrics.update(detection_metrics(self.coco_gt, self.results(iou_type), iou_type, self.image_ids))
        if self.evaluate_proposals:
            metrics.update(proposal_recall(self.coco_gt, self.results("rpn"), self.image_ids))
        return metrics
