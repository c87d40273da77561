"""The ROI heads (Sec. 3.2-3.3, Fig. 4): torchvision's ``RoIHeads`` with float32 box coding, and the Heavy
heads, whose box and mask branches share one MSPwA pooler and one res5 (Sec. 3.3, Fig. 4 right).

Heavy pools every ROI once (MSPwA, k = 14) and runs one res5 whose maps feed both the box head (average
pool) and the mask head (deconv + 1x1). In training, torchvision's ``RoIHeads.forward`` pools the positive
ROIs and runs res5 on them a second time for the mask branch. ``SharedRes5RoIHeads`` takes the positives'
rows of the box branch's res5 maps instead, as maskrcnn-benchmark does for its shared res5 heads
(``SHARE_BOX_FEATURE_EXTRACTOR``): the same losses with frozen BatchNorm (with trainable BatchNorm the mask
branch now sees the statistics of all sampled ROIs), without pooling and running res5 again on up to a
quarter of the ROIs. Inference is torchvision's path unchanged: the mask branch pools the final, regressed
boxes, which are not the proposals.

The box regression loss is smooth L1 with ``beta = 1/9`` in torchvision's ``fastrcnn_loss`` (the RPN's beta
in both code bases) and ``beta = 1`` in maskrcnn-benchmark's box head (``roi_heads/box_head/loss.py``), with
the same normalisation, the sum over the positives divided by the number of sampled ROIs: the heads take it
as ``box_smooth_l1_beta`` (``model.detector.box_smooth_l1_beta``).
"""

from itertools import accumulate
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss, maskrcnn_loss

from datnet.models.mixed_precision import Float32BoxCoder
from datnet.models.roi_feature_extractors import Res5BoxHead

TORCHVISION_BOX_BETA = 1 / 9
"""The smooth-L1 beta of torchvision's ``fastrcnn_loss``."""


def box_head_loss(
    class_logits: Tensor,
    box_regression: Tensor,
    labels: list[Tensor],
    regression_targets: list[Tensor],
    beta: float = TORCHVISION_BOX_BETA,
) -> tuple[Tensor, Tensor]:
    """torchvision's ``fastrcnn_loss`` (classification, box regression) with the regression's smooth L1 at
    ``beta``. Since ``smooth_l1(x; beta) = s * smooth_l1(x / s; 1/9)`` with ``s = 9 beta``, it is
    torchvision's loss of the regression and its targets divided by ``s``, times ``s``; at ``beta = 1/9``
    (``s = 1``) torchvision's bit for bit."""
    scale = beta / TORCHVISION_BOX_BETA
    loss_classifier, loss_box_reg = fastrcnn_loss(
        class_logits, box_regression / scale, labels, [t / scale for t in regression_targets]
    )
    return loss_classifier, loss_box_reg * scale


def positive_rows(labels: list[Tensor]) -> list[Tensor]:
    """The indices of each image's positive (object) ROIs among its sampled ones."""
    return [torch.where(image_labels > 0)[0] for image_labels in labels]


class Float32RoIHeads(RoIHeads):
    """torchvision's ``RoIHeads`` (same arguments, settings and state dict) encoding the sampled ROIs'
    regression targets and decoding the detected boxes in at least float32 (``Float32BoxCoder``, with the
    ``bbox_reg_weights`` and clipping torchvision's would have; ``datnet.models.mixed_precision``), and
    taking the box regression loss at ``box_smooth_l1_beta`` (torchvision's 1/9 by default; 1 is
    maskrcnn-benchmark's). Inference is torchvision's; training runs torchvision's steps (sampling, box
    branch, mask branch on the positives) with ``box_head_loss``. At beta 1/9 in float32 it is torchvision's
    bit for bit."""

    def __init__(self, *args: Any, box_smooth_l1_beta: float = TORCHVISION_BOX_BETA, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.box_coder = Float32BoxCoder(self.box_coder.weights, self.box_coder.bbox_xform_clip)
        self.box_smooth_l1_beta = box_smooth_l1_beta

    def forward(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]] | None = None,
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        """Inference: torchvision's detections of ``proposals``. Training: no detections, and the losses of
        the ROIs sampled from ``proposals`` for ``targets`` (``loss_classifier``, ``loss_box_reg``,
        ``loss_mask`` with a mask branch)."""
        if not self.training:
            return super().forward(features, proposals, image_shapes, targets)
        proposals, matched_idxs, labels, regression_targets = self.select_training_samples(proposals, targets)
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        losses = self.box_losses(box_features, labels, regression_targets)
        if self.has_mask():
            positives = positive_rows(labels)
            mask_proposals = [p[pos] for p, pos in zip(proposals, positives, strict=True)]
            mask_features = self.mask_head(self.mask_roi_pool(features, mask_proposals, image_shapes))
            losses["loss_mask"] = self.mask_loss(
                mask_features, mask_proposals, positives, matched_idxs, targets
            )
        return [], losses

    def box_losses(
        self, box_features: Tensor, labels: list[Tensor], regression_targets: list[Tensor]
    ) -> dict[str, Tensor]:
        """``loss_classifier`` and ``loss_box_reg`` of the sampled ROIs' box features (``box_head_loss`` at
        ``box_smooth_l1_beta``)."""
        class_logits, box_regression = self.box_predictor(box_features)
        loss_classifier, loss_box_reg = box_head_loss(
            class_logits, box_regression, labels, regression_targets, self.box_smooth_l1_beta
        )
        return {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg}

    def mask_loss(
        self,
        mask_features: Tensor,
        mask_proposals: list[Tensor],
        positives: list[Tensor],
        matched_idxs: list[Tensor],
        targets: list[dict[str, Tensor]],
    ) -> Tensor:
        """torchvision's ``maskrcnn_loss`` of the positive ROIs' (``positives`` of each image's sampled ROIs,
        ``mask_proposals``) mask features."""
        return maskrcnn_loss(
            self.mask_predictor(mask_features),
            mask_proposals,
            [t["masks"] for t in targets],
            [t["labels"] for t in targets],
            [m[pos] for m, pos in zip(matched_idxs, positives, strict=True)],
        )


class SharedRes5RoIHeads(Float32RoIHeads):
    """The Heavy ROI heads (Sec. 3.3, Fig. 4 right): ``box_roi_pool`` and the res5 of ``box_head`` are also
    the mask branch's pooler and head (registered under both names, so the state dict is that of
    torchvision's ``RoIHeads`` holding the same modules twice), and ``mask_predictor`` (deconv + 1x1) turns
    res5 maps into 14x14 mask logits. ``box_settings`` are ``RoIHeads``'s (``fg_iou_thresh`` ...
    ``detections_per_img``); ``box_smooth_l1_beta`` is ``Float32RoIHeads``'s.

    Training computes ``loss_classifier``, ``loss_box_reg`` and ``loss_mask`` with one pooling and one res5
    pass over the sampled ROIs; inference is torchvision's ``RoIHeads.forward``."""

    def __init__(
        self,
        box_roi_pool: nn.Module,
        box_head: Res5BoxHead,
        box_predictor: nn.Module,
        *box_settings: Any,
        mask_predictor: nn.Module,
        box_smooth_l1_beta: float = TORCHVISION_BOX_BETA,
    ) -> None:
        super().__init__(
            box_roi_pool,
            box_head,
            box_predictor,
            *box_settings,
            mask_roi_pool=box_roi_pool,
            mask_head=box_head.res5,
            mask_predictor=mask_predictor,
            box_smooth_l1_beta=box_smooth_l1_beta,
        )

    def forward(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]] | None = None,
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        """Inference: torchvision's detections of ``proposals``. Training: no detections, and the losses of
        the ROIs sampled from ``proposals`` for ``targets``: the box branch's on the pooled ROIs' res5 maps,
        the mask branch's on the positives' rows of those maps."""
        if not self.training:
            return super().forward(features, proposals, image_shapes, targets)
        proposals, matched_idxs, labels, targets_reg = self.select_training_samples(proposals, targets)
        maps = self.box_head.res5(self.box_roi_pool(features, proposals, image_shapes))
        losses = self.box_losses(self.box_head.pool(maps), labels, targets_reg)

        positives = positive_rows(labels)
        starts = accumulate((len(p) for p in proposals[:-1]), initial=0)
        rows = torch.cat([pos + start for pos, start in zip(positives, starts, strict=True)])
        mask_proposals = [p[pos] for p, pos in zip(proposals, positives, strict=True)]
        losses["loss_mask"] = self.mask_loss(maps[rows], mask_proposals, positives, matched_idxs, targets)
        return [], losses
