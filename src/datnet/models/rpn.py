"""torchvision's RPN with maskrcnn-benchmark's training-time proposal budget: the top N of the whole batch.

The paper trains "with the settings from [10]" in maskrcnn-benchmark [23]. Its RPN post-processing
(``modeling/rpn/inference.py``, ``RPNPostProcessor.select_over_all_levels``) keeps, in training, the
``FPN_POST_NMS_TOP_N_TRAIN = 2000`` proposals of highest objectness over all the images of a GPU's batch
together (its comment: per batch "to be consistent with Detectron"); at test, 1000 per image. torchvision
keeps ``rpn_post_nms_top_n_train = 2000`` per image. With the paper's 2 images per GPU, the batch rule gives
about 1000 proposals per image, and more to the image with more confident objects.
"""

import torch
from torch import Tensor
from torchvision.models.detection.rpn import RegionProposalNetwork


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


class BatchTopNRegionProposalNetwork(RegionProposalNetwork):
    """A ``RegionProposalNetwork`` whose post-NMS top N counts over the batch in training and per image at
    test, as maskrcnn-benchmark; everything else is torchvision's (per-level pre-NMS top N,
    clipping, small-box and score filtering, NMS per level, the losses), and so is the state dict.

    Per image, torchvision's ``filter_proposals`` already keeps the ``post_nms_top_n`` best after NMS; no
    image can contribute more than that to the batch's top ``post_nms_top_n``, so the batch's top N of those
    is maskrcnn-benchmark's selection.
    """

    @classmethod
    def from_rpn(cls, rpn: RegionProposalNetwork) -> "BatchTopNRegionProposalNetwork":
        """The same RPN (the same anchor generator, head, box coder and settings: the modules are shared, not
        copied) with the batch rule."""
        matcher, sampler = rpn.proposal_matcher, rpn.fg_bg_sampler
        new = cls(
            rpn.anchor_generator,
            rpn.head,
            matcher.high_threshold,
            matcher.low_threshold,
            sampler.batch_size_per_image,
            sampler.positive_fraction,
            dict(rpn._pre_nms_top_n),
            dict(rpn._post_nms_top_n),
            rpn.nms_thresh,
            rpn.score_thresh,
        )
        new.box_coder, new.min_size = rpn.box_coder, rpn.min_size
        return new

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
