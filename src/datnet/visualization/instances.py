"""Drawing detections and ground-truth instances as uint8 images, for predict.py, browse_dataset.py and the
loggers: masks and boxes in their class's colour, readable captions (``datnet.visualization.captions``)."""

import colorsys

import torch
from torch import Tensor
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from datnet.contract import unpack_target
from datnet.visualization.captions import draw_captions

MASK_THRESHOLD = 0.5


def class_colors(num_classes: int) -> list[tuple[int, int, int]]:
    """A fixed, well-spread colour per label (golden-ratio hues); black for the background."""
    colors = [(0, 0, 0)]
    for label in range(1, num_classes):
        rgb = colorsys.hsv_to_rgb((label * 0.618034) % 1.0, 0.75, 1.0)
        colors.append(tuple(round(255 * c) for c in rgb))
    return colors


def to_uint8_image(image: Tensor) -> Tensor:
    """A 3xHxW image as uint8: a uint8 image (as the data loaders give) as it is, a float image in [0, 1]
    scaled to 0..255, rounded and clamped."""
    return image if image.dtype == torch.uint8 else image.mul(255).round().clamp_(0, 255).to(torch.uint8)


def draw_detections(
    image: Tensor, detection: dict[str, Tensor], names: list[str], colors: list, threshold: float
) -> Tensor:
    """``image`` (3xHxW, uint8 or float in [0, 1]) as uint8 with the masks and labelled boxes of detections
    scoring ``>= threshold``, the best-scoring captions placed first."""
    keep = (detection["scores"] >= threshold).nonzero()[:, 0]
    keep = keep[detection["scores"][keep].argsort(descending=True)]
    labels = detection["labels"][keep].tolist()
    masks = detection["masks"][keep][:, 0] >= MASK_THRESHOLD if "masks" in detection else None
    scores = detection["scores"][keep].tolist()
    captions = [f"{names[label]} {score:.2f}" for label, score in zip(labels, scores)]
    return draw_instances(image, detection["boxes"][keep], labels, captions, colors, masks)


def draw_targets(image: Tensor, target: dict[str, Tensor], names: list[str], colors: list) -> Tensor:
    """``image`` (3xHxW) as uint8 with a data loader target's instances: masks (``masks`` NxHxW, or
    ``masks_packed`` as the loaders send them), boxes and class names."""
    target = unpack_target(target, int(image.shape[-1]))
    labels = target["labels"].tolist()
    masks = target["masks"].bool() if "masks" in target else None
    return draw_instances(image, target["boxes"], labels, [names[label] for label in labels], colors, masks)


def draw_instances(
    image: Tensor, boxes: Tensor, labels: list[int], captions: list[str], colors: list, masks: Tensor | None
) -> Tensor:
    """``image`` (3xHxW, uint8 or float in [0, 1]) as uint8 with binary ``masks`` (NxHxW, or None) and
    ``boxes`` (Nx4 xyxy), each in its label's colour, lines scaled to the image, and the captions."""
    image = to_uint8_image(image)
    if not labels:
        return image
    label_colors = [tuple(colors[label]) for label in labels]
    if masks is not None:
        image = draw_segmentation_masks(image, masks, alpha=0.45, colors=label_colors)
    width = max(2, round(min(image.shape[-2:]) / 200))
    image = draw_bounding_boxes(image, boxes, colors=label_colors, width=width)
    return draw_captions(image, boxes, captions, label_colors)
