"""The dense auxiliary heads' maps and targets (Sec. 3.1) as uint8 images: the distance-transform bins as grey
levels (black = background, brighter = nearer an object's centre), the semantic labels in their class colours,
ignored target pixels white."""

import torch
import torch.nn.functional as F
from torch import Tensor

from datnet.contract import IGNORE
from datnet.data.aux_targets import DT_BIN_EDGES

IGNORE_COLOR = (255, 255, 255)
DT_GREY_MAX = 192  # grey level of the top DT bin: below the white of ignored target pixels
DT_TARGET_BINS = len(DT_BIN_EDGES) + 2  # K = 4 of Sec. 3.1: background and three distance bins


def dt_image(dt: Tensor) -> Tensor:
    """The DT softmax map (K, h, w) as a grey uint8 image: the expected bin scaled to 0..DT_GREY_MAX."""
    bins = torch.arange(dt.shape[0], dtype=dt.dtype, device=dt.device).view(-1, 1, 1)
    level = (dt * bins).sum(0) / max(dt.shape[0] - 1, 1)
    return (level * DT_GREY_MAX).round().to(torch.uint8).expand(3, -1, -1)


def semantic_image(sem: Tensor, colors: list) -> Tensor:
    """The semantic softmax map (C, h, w) as the colour of the most likely class per pixel."""
    palette = torch.tensor(colors, dtype=torch.uint8, device=sem.device)
    return palette[sem.argmax(0)].permute(2, 0, 1)


def aux_panels(
    detection: dict[str, Tensor], size: tuple[int, int], colors: list
) -> list[tuple[str, Tensor]]:
    """The DT and semantic maps present in ``detection`` with their titles, each resized (nearest) to the
    image ``size``."""
    panels = []
    if "dt" in detection:
        panels.append(("DT prediction", dt_image(detection["dt"])))
    if "sem" in detection:
        panels.append(("semantic prediction", semantic_image(detection["sem"], colors)))
    return [(title, resize_panel(panel, size)) for title, panel in panels]


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


def target_panels(
    target: dict[str, Tensor], size: tuple[int, int], colors: list
) -> list[tuple[str, Tensor]]:
    """The ``dt`` and ``sem`` targets present in a data loader ``target`` (stride 4 or image resolution) with
    their titles, each drawn by :func:`dense_target_image` and resized (nearest) to the image ``size``."""
    panels = []
    if "dt" in target:
        panels.append(("DT target", dense_target_image(target["dt"], colors, DT_TARGET_BINS)))
    if "sem" in target:
        panels.append(("semantic target", dense_target_image(target["sem"], colors)))
    return [(title, resize_panel(panel, size)) for title, panel in panels]
