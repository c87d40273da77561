"""Test-time augmentation (TTA) of DATNet's detections, as detectron2's ``GeneralizedRCNNWithTTA`` does for
R-CNNs (docs/tta.md).

Each image is seen in several *views*: its short side at each of ``scales`` (pixels), and with ``flip``
also each of those flipped left-right. Every view runs the model's dense part, RPN and box branch; the
views' boxes are mapped back to the output image (un-flipped, rescaled), gathered per image and merged per
class by NMS at the box head's ``nms_thresh``, keeping its ``detections_per_img`` best. For a model with
masks, the mask branch then runs on the merged boxes in every view (mapped into that view), and the mask
probabilities of each kept box (a flipped view's flipped back) are averaged over the views and pasted.

Views are resampled (bilinear, after the model's normalisation) from the image at the model's own scale,
whose short side is ``min_size``: the image the data pipeline resized (evaluation, ``data.min_size``) or the
model's own resize of a raw image (``model.transform.resize_images``: predict.py). A view at scale ``s``
is that image scaled by ``s / min_size``, so the long side's cap scales with it; at ``s = min_size`` it is
that image itself, and without ``flip`` the one view gives the model's own detections exactly. As in
detectron2, views above ``min_size`` upsample the resized image rather than the original file.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads, maskrcnn_inference, paste_masks_in_image
from torchvision.models.detection.transform import resize_boxes
from torchvision.ops import batched_nms

from datnet.contract import HEAD_STRIDE, grid_shape
from datnet.models.datnet import DATNet


@dataclass(frozen=True)
class View:
    """One augmented view: the short side ``scale`` (pixels) and whether the image is flipped left-right."""

    scale: int
    flip: bool


@dataclass
class ViewPass:
    """A view of a batch through the dense part and the RPN: its batched images, the fused pyramid, the
    proposals and (when asked) the auxiliary heads' maps."""

    view: View
    images: ImageList
    features: dict[str, Tensor]
    proposals: list[Tensor]
    aux_maps: dict[str, Tensor]


@dataclass
class MergedDetections:
    """One image's detections merged over the views: boxes (in the output image of ``output_size``),
    labels and scores, and for each the index of the view it was detected in and its box there."""

    boxes: Tensor
    labels: Tensor
    scores: Tensor
    views: Tensor
    view_boxes: Tensor
    output_size: tuple[int, int]


def flip_boxes(boxes: Tensor, width: int) -> Tensor:
    """``boxes`` (N, 4, xyxy) of an image ``width`` pixels wide, mirrored left-right (its own inverse)."""
    return torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)


def view_to_output(
    boxes: Tensor, flip: bool, view_size: tuple[int, int], output_size: tuple[int, int]
) -> Tensor:
    """Boxes of a view (``view_size``, flipped or not) in the output image's coordinates."""
    boxes = flip_boxes(boxes, view_size[1]) if flip else boxes
    return resize_boxes(boxes, view_size, output_size)


def output_to_view(
    boxes: Tensor, flip: bool, view_size: tuple[int, int], output_size: tuple[int, int]
) -> Tensor:
    """Boxes of the output image in a view's coordinates (the inverse of :func:`view_to_output`)."""
    boxes = resize_boxes(boxes, output_size, view_size)
    return flip_boxes(boxes, view_size[1]) if flip else boxes


def merge_detections(
    boxes: Tensor, scores: Tensor, labels: Tensor, nms_thresh: float, detections_per_img: int
) -> Tensor:
    """The indices of the detections kept from the union of every view's (boxes in the output image's
    coordinates): NMS per class at ``nms_thresh``, the ``detections_per_img`` best, by decreasing score."""
    return batched_nms(boxes, scores, labels, nms_thresh)[:detections_per_img]


def average_mask_probs(probs: Sequence[Tensor], flips: Sequence[bool]) -> Tensor:
    """The mean over views of the mask probabilities (K, 1, M, M) of the same K boxes, a flipped view's
    flipped back (a box's mask grid spans the box left to right, mirrored in a flipped view)."""
    views = [p.flip(-1) if flip else p for p, flip in zip(probs, flips, strict=True)]
    return torch.stack(views).mean(dim=0)


def mask_probs(
    roi_heads: RoIHeads,
    features: dict[str, Tensor],
    boxes: list[Tensor],
    labels: list[Tensor],
    image_sizes: list[tuple[int, int]],
) -> list[Tensor]:
    """The mask branch of torchvision's ``RoIHeads`` inference on given ``boxes``: each image's
    probabilities (K, 1, M, M) of its boxes' ``labels``. The Heavy heads (``SharedRes5RoIHeads``) register
    their shared pooler and res5 as ``mask_roi_pool`` and ``mask_head``, so this is their path too."""
    pooled = roi_heads.mask_roi_pool(features, boxes, image_sizes)
    logits = roi_heads.mask_predictor(roi_heads.mask_head(pooled))
    return list(maskrcnn_inference(logits, labels))


class TestTimeAugmentation:
    """Detections of a ``DATNet`` merged over views (module docstring), called like the model in inference:
    ``tta(model, images, output_sizes=...)``.

    Args:
        min_size: the short side of the images the model sees without TTA: ``data.min_size`` when the data
            pipeline resizes them (evaluation), the model's ``min_size`` when it resizes raw images itself.
        scales: the views' short sides in pixels (``tta.scales``); None: ``min_size`` alone.
        flip: also each scale's view flipped left-right (``tta.flip``).
    """

    __test__ = False  # not a pytest test class

    def __init__(self, min_size: int, scales: Sequence[int] | None = None, flip: bool = False) -> None:
        if scales is None:
            scales = (min_size,)
        elif isinstance(scales, str) or not isinstance(scales, Sequence):
            raise ValueError(
                f"tta.scales must be a list of short sides in pixels, e.g. [128,160]; got {scales!r}"
            )
        scales = tuple(scales)
        if not scales:
            raise ValueError(
                "tta.scales is empty: give short sides in pixels, or null for data.min_size alone"
            )
        if any(not isinstance(s, int) or s <= 0 for s in (*scales, min_size)):
            raise ValueError(f"tta.scales must be positive short sides in pixels; got {list(scales)}")
        if len(set(scales)) != len(scales):
            raise ValueError(f"tta.scales lists a scale twice: {list(scales)}")
        self.min_size = min_size
        self.views = [View(s, f) for s in scales for f in ((False, True) if flip else (False,))]

    def __call__(
        self,
        model: DATNet,
        images: list[Tensor],
        *,
        return_proposals: bool = False,
        return_aux_maps: bool = False,
        output_sizes: list[tuple[int, int]] | None = None,
    ) -> list[dict[str, Tensor]]:
        """``model``'s detections of ``images`` merged over the views, as ``DATNet.forward`` gives them in
        inference (boxes, labels, scores and masks for images of ``output_sizes``). The RPN ``proposals``
        and the auxiliary maps asked for are the model's own (the unflipped view at ``min_size``, run for
        them when it is not a view)."""
        roi_heads = model.roi_heads
        if model.training:
            raise ValueError("test-time augmentation is for inference: call model.eval() first")
        if model.transform.resize_images and model.transform.min_size[-1] != self.min_size:
            raise ValueError(
                f"the model resizes images to a short side of {model.transform.min_size[-1]}, test-time "
                f"augmentation was given min_size {self.min_size}"
            )
        if roi_heads.has_keypoint():
            raise ValueError(
                "test-time augmentation merges boxes and masks; keypoint heads are not supported"
            )
        if output_sizes is None:
            output_sizes = [(int(image.shape[-2]), int(image.shape[-1])) for image in images]
        output_sizes = [(int(h), int(w)) for h, w in output_sizes]
        native = [model.transform.resize(model.transform.normalize(image))[0] for image in images]
        own = View(self.min_size, False)
        passes = [
            self._view_pass(model, native, view, return_aux_maps and view == own) for view in self.views
        ]
        merged = self._merge(roi_heads, passes, output_sizes)
        detections = [{"boxes": m.boxes, "labels": m.labels, "scores": m.scores} for m in merged]
        if roi_heads.has_mask():
            for det, masks in zip(detections, self._masks(roi_heads, passes, merged), strict=True):
                det["masks"] = masks
        if return_proposals or return_aux_maps:
            reference = next((p for p in passes if p.view == own), None)
            reference = reference or self._view_pass(model, native, own, return_aux_maps)
            sizes = reference.images.image_sizes
            for i, (det, size, output_size) in enumerate(zip(detections, sizes, output_sizes, strict=True)):
                if return_proposals:
                    det["proposals"] = resize_boxes(reference.proposals[i], size, output_size)
                for key, value in reference.aux_maps.items():
                    h, w = grid_shape(*size, HEAD_STRIDE)
                    det[key] = value[i, :, :h, :w]
        return detections

    def _view_pass(self, model: DATNet, native: list[Tensor], view: View, return_aux_maps: bool) -> ViewPass:
        """``view`` of the normalised images ``native`` (at ``min_size``) through the dense part and the
        RPN."""
        factor = view.scale / self.min_size
        images = []
        for image in native:
            h, w = image.shape[-2:]
            size = (round(h * factor), round(w * factor))
            if size != (h, w):
                image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
            images.append(image.flip(-1) if view.flip else image)
        tensors = model.transform.batch_images(images, size_divisible=model.transform.size_divisible)
        image_list = ImageList(tensors, [(int(i.shape[-2]), int(i.shape[-1])) for i in images])
        features, _, aux_maps = model.dense_part(tensors, None, return_aux_maps)  # compiled, if it was
        proposals, _ = model.rpn(image_list, features)
        return ViewPass(view, image_list, features, proposals, aux_maps)

    @staticmethod
    def _merge(
        roi_heads: RoIHeads, passes: list[ViewPass], output_sizes: list[tuple[int, int]]
    ) -> list[MergedDetections]:
        """Each image's detections merged over the views by ``merge_detections`` (a single view's, already
        NMS'd by the box head, as they are)."""
        per_view = []
        for p in passes:
            sizes = p.images.image_sizes
            features = roi_heads.box_head(roi_heads.box_roi_pool(p.features, p.proposals, sizes))
            class_logits, box_regression = roi_heads.box_predictor(features)
            boxes, scores, labels = roi_heads.postprocess_detections(
                class_logits, box_regression, p.proposals, sizes
            )
            per_view.append(list(zip(boxes, scores, labels, strict=True)))
        merged = []
        for i, output_size in enumerate(output_sizes):
            found = [view_detections[i] for view_detections in per_view]  # (boxes, scores, labels) per view
            view_boxes = torch.cat([found_boxes for found_boxes, _, _ in found])
            boxes = torch.cat(
                [
                    view_to_output(found_boxes, p.view.flip, p.images.image_sizes[i], output_size)
                    for p, (found_boxes, _, _) in zip(passes, found, strict=True)
                ]
            )
            scores = torch.cat([found_scores for _, found_scores, _ in found])
            labels = torch.cat([found_labels for _, _, found_labels in found])
            views = torch.cat(
                [torch.full_like(found_labels, v) for v, (_, _, found_labels) in enumerate(found)]
            )
            keep = torch.arange(len(boxes), device=boxes.device)
            if len(passes) > 1:
                keep = merge_detections(
                    boxes, scores, labels, roi_heads.nms_thresh, roi_heads.detections_per_img
                )
            merged.append(
                MergedDetections(
                    boxes[keep], labels[keep], scores[keep], views[keep], view_boxes[keep], output_size
                )
            )
        return merged

    @staticmethod
    def _masks(roi_heads: RoIHeads, passes: list[ViewPass], merged: list[MergedDetections]) -> list[Tensor]:
        """Each image's masks (K, 1, H, W) of its merged detections: the mask branch on each box in every view
        (the box it was detected with in its own view, else its box mapped into the view), the
        probabilities averaged over the views (``average_mask_probs``) and pasted into the output image."""
        labels = [m.labels for m in merged]
        probs = []
        for v, p in enumerate(passes):
            boxes = []
            for m, view_size in zip(merged, p.images.image_sizes, strict=True):
                in_view = output_to_view(m.boxes, p.view.flip, view_size, m.output_size)
                boxes.append(torch.where((m.views == v)[:, None], m.view_boxes, in_view))
            probs.append(mask_probs(roi_heads, p.features, boxes, labels, p.images.image_sizes))
        flips = [p.view.flip for p in passes]
        masks = []
        for i, m in enumerate(merged):
            averaged = average_mask_probs([view_probs[i] for view_probs in probs], flips)
            masks.append(paste_masks_in_image(averaged, m.boxes, m.output_size))
        return masks
