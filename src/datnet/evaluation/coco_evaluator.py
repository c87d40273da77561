"""COCO evaluation of Mask R-CNN style predictions, accumulated image by image (DDP-aware).

Modelled on torchvision's detection reference ``CocoEvaluator`` and detectron2's ``COCOEvaluator``: the
predictions of each image are reduced to compact arrays as soon as they arrive (masks become RLE,
proposals are cut to the number the recall metrics need), gathered on rank 0 by image id, scored there by
faster-coco-eval, and the metrics are broadcast to every process.
"""

import copy
import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from faster_coco_eval import COCO
from torch import Tensor

from datnet.evaluation.coco_metrics import (
    PROPOSAL_MAX_DETS,
    IouType,
    RecallCounts,
    evaluate_detections,
    proposal_recall_counts,
    summary_metrics,
)
from datnet.evaluation.coco_results import ImageResults, ResultKind
from datnet.evaluation.distributed import broadcast_from_rank0, gather_to_rank0, rank_and_world_size
from datnet.evaluation.greedy_recall import greedy_proposal_recall
from datnet.evaluation.per_class import ClassPrecision, PerClassTable
from datnet.evaluation.plots import confusion_matrix, write_confusion_matrix, write_pr_curves

logger = logging.getLogger(__name__)

IOU_TYPES: tuple[IouType, ...] = ("bbox", "segm")
# Images per process sent to rank 0 in one gather round (~35 KB each on COCO: ~9 MB pickled per round).
GATHER_IMAGES_PER_ROUND = 256
# Proposal records scored by one COCOeval run (~1 KB each once loaded): recall is summed over such chunks.
PROPOSAL_RECORDS_PER_CHUNK = 200_000
# How proposal recall is computed: COCOeval with useCats=0 (``rpn/``) and maskrcnn-benchmark's greedy matching
# (``rpn_mb/``, ``datnet.evaluation.greedy_recall``)
PROPOSAL_PROTOCOLS = ("cocoeval", "maskrcnn_benchmark")


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
            ``annotations`` may be missing or empty (test-dev): results can then still be written, and
            proposals are not kept (their recall is ``nan``).
        label_to_category_id: the model's contiguous labels (1..C) -> original category ids.
        iou_types: any of ``"bbox"`` and ``"segm"``; ``"segm"`` needs ``masks`` in the predictions.
        evaluate_proposals: also compute class-agnostic recall of the ``proposals`` in the predictions.
        proposal_max_dets: the numbers of proposals per image recall is computed at; only the first
            ``max(proposal_max_dets)`` proposals of an image are kept.
        proposal_protocols: how recall is computed (``PROPOSAL_PROTOCOLS``): ``cocoeval`` (``rpn/AR@100``...)
            and/or ``maskrcnn_benchmark`` (``rpn_mb/AR@100``...).

    Metrics are computed on the images passed to :meth:`update` (on any process), so a partial pass over a
    dataset is scored on the images it saw. Under torch.distributed, :meth:`compute` gathers every image on
    rank 0, scores them there and hands the metrics to every process.
    """

    def __init__(
        self,
        ground_truth: Mapping,
        label_to_category_id: Mapping[int, int],
        iou_types: Sequence[IouType] = ("bbox",),
        evaluate_proposals: bool = False,
        proposal_max_dets: Sequence[int] = PROPOSAL_MAX_DETS,
        proposal_protocols: Sequence[str] = ("cocoeval",),
    ) -> None:
        unknown = set(iou_types) - set(IOU_TYPES)
        if unknown:
            raise ValueError(f"unsupported iou_types {sorted(unknown)}; expected a subset of {IOU_TYPES}")
        if set(proposal_protocols) - set(PROPOSAL_PROTOCOLS):
            raise ValueError(
                f"proposal protocols {proposal_protocols}: expected some of {PROPOSAL_PROTOCOLS}"
            )
        self.proposal_protocols = tuple(proposal_protocols)
        self.iou_types = tuple(iou_types)
        self.evaluate_proposals = evaluate_proposals
        self.proposal_max_dets = tuple(sorted(proposal_max_dets))
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
        self._class_precision: dict[IouType, ClassPrecision] = {}

    @property
    def max_proposals(self) -> int:
        """Proposals kept per image: the most recall is computed at, 0 when proposals are not evaluated
        or the ground truth has no objects to recall (test-dev)."""
        if not (self.evaluate_proposals and self.coco_gt.anns):
            return 0
        return self.proposal_max_dets[-1]

    def reset(self) -> None:
        """Forget all accumulated predictions."""
        self._image_results = {}
        self._class_precision = {}

    @property
    def image_ids(self) -> list[int]:
        """Sorted ids of the images accumulated so far (on this process; on rank 0 after :meth:`compute`,
        those of all processes)."""
        return sorted(self._image_results)

    def update(self, predictions: Sequence[Mapping[str, Tensor]], image_ids: Iterable[int | Tensor]) -> None:
        """Add the predictions of a batch of images.

        Args:
            predictions: one torchvision Mask R-CNN output dict per image, in original image coordinates:
                ``boxes`` (Nx4 xyxy), ``scores`` (N), ``labels`` (N, contiguous), ``masks`` (Nx1xHxW
                probabilities; needed for segm) and ``proposals`` (Mx4 xyxy RPN boxes ordered by
                objectness; needed when :attr:`max_proposals` > 0).
            image_ids: the COCO image id of each prediction.
        """
        image_ids = [int(image_id) for image_id in image_ids]
        if len(image_ids) != len(predictions):
            raise ValueError(f"{len(predictions)} predictions for {len(image_ids)} image ids")
        for prediction, image_id in zip(predictions, image_ids, strict=True):
            if image_id not in self.coco_gt.imgs:
                raise KeyError(f"image id {image_id} is not an image of the ground truth")
            try:
                results = ImageResults.from_prediction(
                    prediction, self.label_to_category_id, "segm" in self.iou_types, self.max_proposals
                )
            except KeyError as error:
                raise KeyError(f"image {image_id}: {error.args[0]}") from None
            merge_image_results(self._image_results, image_id, results)

    def _gather_to_rank0(self) -> ValueError | None:
        """Move the images of every process into rank 0's (collective; no-op with one process). Return,
        on rank 0, the first image found twice with different predictions (raised once the gather is over,
        so that no process is left waiting)."""
        rank, world_size = rank_and_world_size()
        if world_size == 1:
            return None
        conflict = None
        outgoing = [] if rank == 0 else list(self._image_results.items())
        if rank != 0:
            self._image_results = {}
        for image_id, results in gather_to_rank0(outgoing, GATHER_IMAGES_PER_ROUND):
            try:
                merge_image_results(self._image_results, image_id, results)
            except ValueError as error:
                conflict = conflict or error
        return conflict

    def _records(self, kind: ResultKind) -> Iterator[dict]:
        """Fresh COCO result records of the accumulated images, by image id (see :meth:`results`)."""
        if kind in IOU_TYPES and kind not in self.iou_types:
            raise ValueError(f"{kind!r} results were not accumulated (iou_types={self.iou_types})")
        if kind == "rpn" and not self.evaluate_proposals:
            raise ValueError("proposals were not accumulated (evaluate_proposals=False)")
        for image_id in self.image_ids:
            yield from self._image_results[image_id].records(image_id, kind)

    def results(self, kind: ResultKind) -> list[dict]:
        """Fresh COCO result records of the accumulated images, by image id: ``"bbox"`` boxes,
        ``"segm"`` RLE masks (without ``bbox``, so COCO computes mask areas) or ``"rpn"`` proposals.
        Under torch.distributed, every image is on rank 0 after :meth:`compute`."""
        return list(self._records(kind))

    def write_results(self, output_dir: str | Path) -> dict[str, Path]:
        """Write ``{iou_type}_results.json`` (COCO results format, original category ids) for each iou
        type into ``output_dir``, e.g. for a test-dev submission, record by record; return the paths by iou
        type. Needs no ground-truth annotations. Under torch.distributed, call :meth:`compute` first and
        write on rank 0."""
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        paths = {}
        for iou_type in self.iou_types:
            paths[iou_type] = output_dir / f"{iou_type}_results.json"
            with paths[iou_type].open("w") as file:
                file.write("[")
                for index, record in enumerate(self._records(iou_type)):
                    file.write((", " if index else "") + json.dumps(record))
                file.write("]")
        return paths

    def per_class_table(self) -> PerClassTable | None:
        """Box and mask AP and AP50 of every category, from the evaluation of the last :meth:`compute`
        (on rank 0 under torch.distributed); None before it, or without ground-truth objects."""
        if not self._class_precision:
            return None
        return PerClassTable.build(self.coco_gt, self._class_precision, self.image_ids)

    def write_reports(self, output_dir: str | Path) -> PerClassTable | None:
        """Write into ``output_dir``, after :meth:`compute` (on rank 0 under torch.distributed): the
        per-category table (``per_class_ap.csv``, ``per_class_ap.md``) and, for each IoU type, the
        precision-recall curves (``pr_curves_{iou_type}.json``/``.png``) and the confusion matrix
        (``confusion_matrix_{iou_type}.csv``/``.png``; see ``datnet.evaluation.plots``). Return the table;
        write nothing and return None when there was nothing to score (no ground-truth objects)."""
        table = self.per_class_table()
        if table is None:
            return None
        output_dir = Path(output_dir)
        written = table.write(output_dir)
        names = {cat_id: cat["name"] for cat_id, cat in self.coco_gt.cats.items()}
        for iou_type, precision in self._class_precision.items():
            written += write_pr_curves(precision, names, iou_type, output_dir)
            matrix, labels = confusion_matrix(self.coco_gt, self.results(iou_type), iou_type, self.image_ids)
            written += write_confusion_matrix(matrix, labels, iou_type, output_dir)
        logger.info("evaluation reports written: %s", ", ".join(str(path) for path in written))
        return table

    def _proposal_recall(self) -> dict[str, float]:
        """Proposal recall of the accumulated images, summed over chunks of images of at most
        PROPOSAL_RECORDS_PER_CHUNK proposals (so that COCOeval never holds all of them at once)."""
        if not self.max_proposals:
            return RecallCounts.zeros(self.proposal_max_dets).metrics()
        image_ids = self.image_ids
        step = max(1, PROPOSAL_RECORDS_PER_CHUNK // self.max_proposals)
        counts = RecallCounts.zeros(self.proposal_max_dets)
        for begin in range(0, len(image_ids), step):
            chunk = image_ids[begin : begin + step]
            records = [
                record
                for image_id in chunk
                for record in self._image_results[image_id].records(image_id, "rpn")
            ]
            counts += proposal_recall_counts(self.coco_gt, records, chunk, self.proposal_max_dets)
        return counts.metrics()

    def _metrics(self) -> dict[str, float]:
        """The metrics of the images accumulated on this process (see :meth:`compute`)."""
        metrics = {}
        self._class_precision = {}
        for iou_type in self.iou_types:
            coco_eval = evaluate_detections(self.coco_gt, self.results(iou_type), iou_type, self.image_ids)
            metrics.update(summary_metrics(coco_eval, iou_type))
            if coco_eval is not None:
                self._class_precision[iou_type] = ClassPrecision.from_cocoeval(coco_eval)
        if self.evaluate_proposals and "cocoeval" in self.proposal_protocols:
            metrics.update(self._proposal_recall())
        if self.evaluate_proposals and "maskrcnn_benchmark" in self.proposal_protocols:
            kept = self.image_ids if self.max_proposals else []  # none kept: no objects to recall
            proposals = {i: self._image_results[i].proposals for i in kept}
            metrics.update(greedy_proposal_recall(self.coco_gt, proposals, self.proposal_max_dets))
        return metrics

    def compute(self) -> dict[str, float]:
        """Gather every process's images on rank 0 (collective), score them there and return the metrics
        on every process: ``{iou_type}/AP``, ``/AP50``, ``/AP75``, ``/AP_S``, ``/AP_M``, ``/AP_L`` per iou
        type and, with proposals, ``rpn/AR@100``, ``rpn/AR_S@100``, ... ``rpn/AR_L@1000`` (``rpn_mb/...``
        for maskrcnn-benchmark's protocol). Values are
        fractions; a metric without ground truth to measure it is ``nan``; no predictions at all give 0
        where GT exists. Afterwards rank 0 holds every image and the other processes none. An error on
        rank 0 (e.g. an image evaluated twice with different predictions) is raised on every process."""
        conflict = self._gather_to_rank0()
        outcome = None
        if rank_and_world_size()[0] == 0:
            try:
                if conflict is not None:
                    raise conflict
                outcome = (self._metrics(), None)
            except Exception as error:
                broadcast_from_rank0((None, f"{type(error).__name__}: {error}"))
                raise
        metrics, error = broadcast_from_rank0(outcome)
        if error is not None:
            raise RuntimeError(f"COCO evaluation failed on rank 0: {error}")
        return metrics
