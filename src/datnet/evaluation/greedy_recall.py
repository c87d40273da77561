"""maskrcnn-benchmark's proposal recall (Table 5), beside COCOeval's (``coco_metrics``).

maskrcnn-benchmark [23] (and Detectron before it) reports RPN recall with its own ``evaluate_box_proposals``
(``maskrcnn_benchmark/data/datasets/evaluation/coco/coco_eval.py``), "a much faster alternative to the
official COCO API recall evaluation code. However, it produces slightly different results". Per image and
area range:

- the objects are the image's non-crowd annotations whose annotated ``area`` lies in the range (both ends
  included; COCO's all/small/medium/large ranges); crowd regions and objects outside the range are dropped,
  not ignored as in COCOeval (where a proposal on them is neither a hit nor a miss);
- the first ``limit`` proposals by objectness are matched one to one, greedily by IoU over all pairs:
  min(P, G) times the pair of highest IoU among the unmatched proposals and objects is taken and its IoU
  recorded as that object's overlap (0 for an object left unmatched). COCOeval matches per IoU threshold,
  proposals in score order;
- recall at t is the fraction of the objects whose overlap is >= t, t in 0.50:0.05:0.95 (float32, as there);
  AR is the mean over the thresholds.

IoU is taken in continuous coordinates (COCO's ``[x, y, w, h]`` to ``x + w``, torchvision's ``box_iou``), the
convention of our boxes; maskrcnn-benchmark adds 1 to every width and height (``TO_REMOVE = 1``), the
convention of its own box coder. The counts add up over images like COCOeval's (``RecallCounts``), reported
as ``rpn_mb/AR@100`` ... ``rpn_mb/AR_L@1000``.
"""

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from faster_coco_eval import COCO
from torchvision.ops import box_iou

from datnet.evaluation.coco_metrics import PROPOSAL_AREAS, RecallCounts

PREFIX = "rpn_mb"
THRESHOLDS = torch.arange(0.5, 0.95 + 1e-5, 0.05, dtype=torch.float32).numpy()
"""maskrcnn-benchmark's IoU thresholds, as its ``torch.arange`` gives them (NumPy's float32 ``arange`` drifts
above: 0.9500001)."""
AREA_RANGES = dict(
    zip(PROPOSAL_AREAS, [(0.0, 1e5**2), (0.0, 32.0**2), (32.0**2, 96.0**2), (96.0**2, 1e5**2)], strict=True)
)
"""maskrcnn-benchmark's ``area_ranges`` of all, small, medium and large objects, by ``PROPOSAL_AREAS``."""


def greedy_overlaps(iou: np.ndarray) -> np.ndarray:
    """The overlap of each object (column of the proposals x objects ``iou``) under maskrcnn-benchmark's
    one-to-one greedy matching (module docstring), 0 for an object left unmatched."""
    iou = iou.copy()
    overlaps = np.zeros(iou.shape[1], dtype=iou.dtype)
    for _ in range(min(iou.shape)):
        best_proposal = iou.argmax(axis=0)
        best = iou[best_proposal, np.arange(iou.shape[1])]
        obj = int(best.argmax())
        overlaps[obj] = best[obj]
        iou[best_proposal[obj], :] = -1
        iou[:, obj] = -1
    return overlaps


def image_objects(coco_gt: COCO, image_id: int) -> tuple[np.ndarray, np.ndarray]:
    """The non-crowd objects of ``image_id``: boxes (Nx4 float32, xyxy) and annotated areas (N)."""
    anns = [a for a in coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=[image_id])) if not a.get("iscrowd", 0)]
    boxes = np.array([a["bbox"] for a in anns], dtype=np.float32).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]
    return boxes, np.array([a["area"] for a in anns], dtype=np.float64)


def greedy_recall_counts(
    coco_gt: COCO, proposals: Mapping[int, np.ndarray], max_dets: Sequence[int]
) -> RecallCounts:
    """maskrcnn-benchmark's recall counts of ``proposals`` (image id -> Mx4 float32 xyxy boxes by decreasing
    objectness) at ``max_dets`` proposals per image, for the areas of ``PROPOSAL_AREAS``."""
    counts = RecallCounts.zeros(max_dets)
    for image_id, image_proposals in proposals.items():
        boxes, areas = image_objects(coco_gt, image_id)
        for a, (low, high) in enumerate(AREA_RANGES.values()):
            objects = boxes[(areas >= low) & (areas <= high)]
            counts.total[a] += len(objects)
            if not len(objects):
                continue
            iou = box_iou(torch.from_numpy(image_proposals), torch.from_numpy(objects)).numpy()
            for m, limit in enumerate(counts.max_dets):
                overlaps = greedy_overlaps(iou[:limit])
                counts.matched[:, a, m] += (overlaps[None, :] >= THRESHOLDS[:, None]).sum(axis=1)
    return counts


def greedy_proposal_recall(
    coco_gt: COCO, proposals: Mapping[int, np.ndarray], max_dets: Sequence[int]
) -> dict[str, float]:
    """maskrcnn-benchmark's average recall of ``proposals`` (see ``greedy_recall_counts``):
    ``rpn_mb/AR@100``, ``rpn_mb/AR_S@100``, ... (``nan`` for an area range without objects)."""
    return greedy_recall_counts(coco_gt, proposals, max_dets).metrics(PREFIX)
