"""Drawing detections, ground-truth instances and the dense auxiliary maps and targets (Sec. 3.1) as uint8
images, for predict.py, browse_dataset.py and loggers."""

import colorsys

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from datnet.contract import IGNORE, unpack_target
from datnet.data.aux_targets import DT_BIN_EDGES

MASK_THRESHOLD = 0.5
IGNORE_COLOR = (255, 255, 255)
DT_GREY_MAX = 192  # grey level of the top DT bin: below the white of ignored target pixels
DT_TARGET_BINS = len(DT_BIN_EDGES) + 2  # K = 4 of Sec. 3.1: background and three distance bins


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
    scoring ``>= threshold``."""
    keep = detection["scores"] >= threshold
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
    ``boxes`` (Nx4 xyxy) captioned, each in its label's colour."""
    image = to_uint8_image(image)
    if not labels:
        return image
    label_colors = [colors[label] for label in labels]
    if masks is not None:
        image = draw_segmentation_masks(image, masks, alpha=0.45, colors=label_colors)
    return draw_bounding_boxes(image, boxes, captions, label_colors, width=2)


def dt_image(dt: Tensor) -> Tensor:
    """The DT softmax map (K, h, w) as a grey uint8 image: the expected bin scaled to 0..DT_GREY_MAX."""
    bins = torch.arange(dt.shape[0], dtype=dt.dtype, device=dt.device).view(-1, 1, 1)
    level = (dt * bins).sum(0) / max(dt.shape[0] - 1, 1)
    return (level * DT_GREY_MAX).round().to(torch.uint8).expand(3, -1, -1)


def semantic_image(sem: Tensor, colors: list) -> Tensor:
    """The semantic softmax map (C, h, w) as the colour of the most likely class per pixel."""
    palette = torch.tensor(colors, dtype=torch.uint8, device=sem.device)
    return palette[sem.argmax(0)].permute(2, 0, 1)


def aux_panels(detection: dict[str, Tensor], size: tuple[int, int], colors: list) -> list[Tensor]:
    """The DT and semantic maps present in ``detection``, each resized (nearest) to the image ``size``."""
    panels = []
    if "dt" in detection:
        panels.append(dt_image(detection["dt"]))
    if "sem" in detection:
        panels.append(semantic_image(detection["sem"], colors))
    return [resize_panel(p, size) for p in panels]


def resize_panel(panel: Tensor, size: tuple[int, int]) -> Tensor:
    """A uint8 3xhxw map resized (nearest) to ``size``, to sit beside the image it belongs to."""
    return F.interpolate(panel[None].float(), size=size, mode="nearest")[0].to(torch.uint8)


def dense_target_image(
    target: Tensor, colors: list, num_bins: int | None = None, ignore_index: int = IGNORE
) -> Tensor:
    """A ``dt`` (``num_bins`` given: grey levels like :func:`dt_image`) or ``sem`` target map, at whatever
    resolution it has, as a uint8 image, ignored pixels white."""
    target = target.long()
    ignored = target == ignore_index
    safe = torch.where(ignored, torch.zeros_like(target), target)
    if num_bins is not None:
        levels = safe.float() * DT_GREY_MAX / max(num_bins - 1, 1)
        image = levels.round().to(torch.uint8).expand(3, -1, -1).clone()
    else:
        image = torch.tensor(colors, dtype=torch.uint8)[safe].permute(2, 0, 1)
    image[:, ignored] = torch.tensor(IGNORE_COLOR, dtype=torch.uint8).view(3, 1)
    return image


def target_panels(target: dict[str, Tensor], size: tuple[int, int], colors: list) -> list[Tensor]:
    """The ``dt`` and ``sem`` targets present in a data loader ``target`` (stride 4 or image resolution), each
    drawn by :func:`dense_target_image` and resized (nearest) to the image ``size``."""
    panels = []
    if "dt" in target:
        panels.append(dense_target_image(target["dt"], colors, DT_TARGET_BINS))
    if "sem" in target:
        panels.append(dense_target_image(target["sem"], colors))
    return [resize_panel(p, size) for p in panels]
