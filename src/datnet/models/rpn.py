"""The RPN (Sec. 3, Fig. 2): torchvision's, with float32 box coding and, as an option, maskrcnn-benchmark's
training-time proposal budget, the top N of the whole batch.

The paper trains "with the settings from [10]" in maskrcnn-benchmark [23]. Its RPN post-processing
(``modeling/rpn/inference.py``, ``RPNPostProcessor.select_over_all_levels``) keeps, in training, the
``FPN_POST_NMS_TOP_N_TRAIN = 2000`` proposals of highest objectness over all the images of a GPU's batch
together (its comment: per batch "to be consistent with Detectron"); at test, 1000 per image. torchvision
keeps ``rpn_post_nms_top_n_train = 2000`` per image. With the paper's 2 images per GPU, the batch rule gives
about 1000 proposals per image, and more to the image with more confident objects.
"""

from typing import Any

import torch
from torch import Tensor
from torchvision.models.detection.rpn import RegionProposalNetwork

from datnet.models.mixed_precision import Float32BoxCoder


def top_n_over_batch(boxes: list[Tensor], scores: list[Tensor], n: int) -> tuple[list[Tensor], list[Tensor]]:
    """Of every image's proposals ``boxes[i]`` with objectness ``scores[i]``, those among the ``n`` highest
    scores of the whole batch (all of them when the batch has at most ``n``), each image's in its own
    order."""
    sizes = [len(s) for s in scores]
    if sum(sizes) <= n:
        return boxes, scores
    all_scores = torch.cat(scores).detach()
    keep = torch.zeros(len(all_scores), dtype=torch.bool, device=all_scores.device)
    keep[all_scores.topk(n, sorted=False).indices] = True
    masks = keep.split(sizes)
    kept_boxes = [b[m] for b, m in zip(boxes, masks, strict=True)]
    return kept_boxes, [s[m] for s, m in zip(scores, masks, strict=True)]


class Float32RegionProposalNetwork(RegionProposalNetwork):
    """torchvision's ``RegionProposalNetwork`` (same arguments, settings and state dict) encoding its
    regression targets and decoding its proposals in at least float32 (``Float32BoxCoder``, with
    torchvision's weights ``(1, 1, 1, 1)`` and clipping): under autocast the anchor matching's targets and
    the proposals are not bfloat16 (``datnet.models.mixed_precision``); in float32 it is torchvision's RPN
    bit for bit. Give it a ``Float32AnchorGenerator`` for float32 anchors."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.box_coder = Float32BoxCoder(self.box_coder.weights, self.box_coder.bbox_xform_clip)


class BatchTopNRegionProposalNetwork(Float32RegionProposalNetwork):
    """The RPN whose post-NMS top N counts over the batch in training and per image at test, as
    maskrcnn-benchmark; everything else is torchvision's (per-level pre-NMS top N, clipping, small-box and
    score filtering, NMS per level, the losses), and so is the state dict.

    Per image, torchvision's ``filter_proposals`` already keeps the ``post_nms_top_n`` best after NMS; no
    image can contribute more than that to the batch's top ``post_nms_top_n``, so the batch's top N of those
    is maskrcnn-benchmark's selection.
    """

    def filter_proposals(
        self,
        proposals: Tensor,
        objectness: Tensor,
        image_shapes: list[tuple[int, int]],
        num_anchors_per_level: list[int],
    ) -> tuple[list[Tensor], list[Tensor]]:
        """torchvision's per-image proposals; in training, then only the batch's ``post_nms_top_n`` best."""
        boxes, scores = super().filter_proposals(proposals, objectness, image_shapes, num_anchors_per_level)
        if not self.training:
            return boxes, scores
        return top_n_over_batch(boxes, scores, self.post_nms_top_n())
