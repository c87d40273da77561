"""The RPN (Sec. 3, Fig. 2): torchvision's, with float32 box coding and, as options, two details of
maskrcnn-benchmark's: the training-time proposal budget, the top N of the whole batch, and the anchors that
cross the image border left out of the loss.

The paper trains "with the settings from [10]" in maskrcnn-benchmark [23]. Its RPN post-processing
(``modeling/rpn/inference.py``, ``RPNPostProcessor.select_over_all_levels``) keeps, in training, the
``FPN_POST_NMS_TOP_N_TRAIN = 2000`` proposals of highest objectness over all the images of a GPU's batch
together (its comment: per batch "to be consistent with Detectron"); at test, 1000 per image. torchvision
keeps ``rpn_post_nms_top_n_train = 2000`` per image. With the paper's 2 images per GPU, the batch rule gives
about 1000 proposals per image, and more to the image with more confident objects.

maskrcnn-benchmark's anchor generator (``modeling/rpn/anchor_generator.py``, ``add_visibility_to``) marks an
anchor visible when it lies inside the image (the resized image, before padding) within
``RPN.STRADDLE_THRESH = 0`` pixels, and its RPN loss (``modeling/rpn/loss.py``, ``prepare_targets``) labels
every other anchor -1, ignored by the sampler, after matching (a ground truth's best anchor may be one of
them).
torchvision (and detectron2, ``BOUNDARY_THRESH = -1``) trains on every anchor.
"""

from typing import Any

import torch
from torch import Tensor
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork

from datnet.models.mixed_precision import Float32BoxCoder

IMAGE_SIZE = "image_size"
"""The key under which ``Float32RegionProposalNetwork`` hands a target's image size (H, W) to the matching."""


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


def straddling(anchors: Tensor, image_size: tuple[int, int], thresh: float) -> Tensor:
    """Which of ``anchors`` (Nx4 xyxy) are not inside the ``image_size`` (H, W) image within ``thresh``
    pixels: maskrcnn-benchmark's anchors without "visibility" (module docstring)."""
    height, width = image_size
    inside = (
        (anchors[:, 0] >= -thresh)
        & (anchors[:, 1] >= -thresh)
        & (anchors[:, 2] < width + thresh)
        & (anchors[:, 3] < height + thresh)
    )
    return ~inside


class Float32RegionProposalNetwork(RegionProposalNetwork):
    """torchvision's ``RegionProposalNetwork`` (same arguments, settings and state dict) encoding its
    regression targets and decoding its proposals in at least float32 (``Float32BoxCoder``, with
    torchvision's weights ``(1, 1, 1, 1)`` and clipping): under autocast the anchor matching's targets and
    the proposals are not bfloat16 (``datnet.models.mixed_precision``); in float32 it is torchvision's RPN
    bit for bit. Give it a ``Float32AnchorGenerator`` for float32 anchors.

    ``straddle_thresh`` >= 0 (``model.detector.rpn_straddle_thresh``; maskrcnn-benchmark: 0) leaves the
    anchors that cross the image border by more than that many pixels out of the loss (label -1, as the
    anchors between the IoU thresholds); -1 (torchvision) trains on every anchor.
    """

    def __init__(self, *args: Any, straddle_thresh: float = -1.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.box_coder = Float32BoxCoder(self.box_coder.weights, self.box_coder.bbox_xform_clip)
        self.straddle_thresh = straddle_thresh

    def forward(
        self,
        images: ImageList,
        features: dict[str, Tensor],
        targets: list[dict[str, Tensor]] | None = None,
    ) -> tuple[list[Tensor], dict[str, Tensor]]:
        """torchvision's RPN; with a straddle threshold, each target carries its image's size
        (``IMAGE_SIZE``) to ``assign_targets_to_anchors``."""
        if targets is not None and self.straddle_thresh >= 0:
            targets = [{**t, IMAGE_SIZE: size} for t, size in zip(targets, images.image_sizes, strict=True)]
        return super().forward(images, features, targets)

    def assign_targets_to_anchors(
        self, anchors: list[Tensor], targets: list[dict[str, Tensor]]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """torchvision's labels (1 object, 0 background, -1 ignored) and matched boxes; with a straddle
        threshold, the anchors crossing the image border are relabelled -1."""
        labels, matched_gt_boxes = super().assign_targets_to_anchors(anchors, targets)
        if self.straddle_thresh >= 0:
            for image_labels, image_anchors, target in zip(labels, anchors, targets, strict=True):
                image_labels[straddling(image_anchors, target[IMAGE_SIZE], self.straddle_thresh)] = -1.0
        return labels, matched_gt_boxes


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
