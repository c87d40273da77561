"""Training losses of the Heavy ROI heads, whose box and mask branches share a res5 (Sec. 3.3, Fig. 4 right).

Heavy pools every ROI once (MSPwA, k = 14) and runs one res5 whose maps feed both the box head (average
pool) and the mask head (deconv + 1x1). In training, torchvision's ``RoIHeads.forward`` pools the positive
ROIs and runs res5 on them a second time for the mask branch. Here the mask branch takes the positives' rows
of the box branch's res5 maps instead, as maskrcnn-benchmark does for its shared res5 heads
(``SHARE_BOX_FEATURE_EXTRACTOR``): the same losses with frozen BatchNorm (with trainable BatchNorm the mask
branch now sees the statistics of all sampled ROIs), without pooling and running res5 again on up to a
quarter of the ROIs. Inference is torchvision's path unchanged: the mask branch pools the final, regressed
boxes, which are not the proposals.
"""

from itertools import accumulate

import torch
from torch import Tensor
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss, maskrcnn_loss

from datnet.models.roi_feature_extractors import Res5BoxHead


def shares_res5(roi_heads: RoIHeads) -> bool:
    """Whether the mask branch is the box branch's pooler and res5 (the Heavy heads)."""
    box_head = roi_heads.box_head
    return (
        isinstance(box_head, Res5BoxHead)
        and roi_heads.has_mask()
        and roi_heads.mask_head is box_head.res5
        and roi_heads.mask_roi_pool is roi_heads.box_roi_pool
    )


def shared_res5_losses(
    roi_heads: RoIHeads,
    features: dict[str, Tensor],
    proposals: list[Tensor],
    image_shapes: list[tuple[int, int]],
    targets: list[dict[str, Tensor]],
) -> dict[str, Tensor]:
    """``loss_classifier``, ``loss_box_reg`` and ``loss_mask`` of ``roi_heads`` (which must share res5) on
    the ROIs it samples from ``proposals``, with one pooling and one res5 pass over them."""
    proposals, matched_idxs, labels, targets_reg = roi_heads.select_training_samples(proposals, targets)
    maps = roi_heads.box_head.res5(roi_heads.box_roi_pool(features, proposals, image_shapes))
    class_logits, box_regression = roi_heads.box_predictor(roi_heads.box_head.pool(maps))
    loss_classifier, loss_box_reg = fastrcnn_loss(class_logits, box_regression, labels, targets_reg)

    positives = [torch.where(image_labels > 0)[0] for image_labels in labels]
    starts = accumulate((len(p) for p in proposals[:-1]), initial=0)
    rows = torch.cat([pos + start for pos, start in zip(positives, starts)])
    loss_mask = maskrcnn_loss(
        roi_heads.mask_predictor(maps[rows]),
        [p[pos] for p, pos in zip(proposals, positives)],
        [t["masks"] for t in targets],
        [t["labels"] for t in targets],
        [m[pos] for m, pos in zip(matched_idxs, positives)],
    )
    return {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg, "loss_mask": loss_mask}
