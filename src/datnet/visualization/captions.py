"""Captions a person can read on a detection picture: a font scaled to the image, text in black or white on a
box of the instance's colour (whichever contrasts more), and places chosen so that no two captions overlap
(above the box, inside its top, below it, inside its bottom, then further down until free)."""

from functools import lru_cache

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

Rect = tuple[int, int, int, int]  # x1, y1, x2, y2 (exclusive)
MIN_FONT_PX, FONT_FRACTION = 11, 1 / 32  # caption height: 1/32 of the image's shorter side, at least 11 px


@lru_cache(maxsize=16)
def caption_font(size: int) -> ImageFont.FreeTypeFont:
    """Pillow's built-in scalable font at ``size`` pixels."""
    return ImageFont.load_default(size=size)


def font_size_for(height: int, width: int) -> int:
    """The caption font size for an image of ``height`` x ``width``."""
    return max(MIN_FONT_PX, round(min(height, width) * FONT_FRACTION))


def text_color(background: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black on light colours, white on dark ones (ITU-R BT.601 luma)."""
    r, g, b = background
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


def overlaps(a: Rect, b: Rect) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_caption(box: Rect, size: tuple[int, int], image: tuple[int, int], taken: list[Rect]) -> Rect:
    """Where a caption of ``size`` (w, h) for ``box`` goes in an image of ``image`` (h, w): the first of
    above / inside top / below / inside bottom of the box that overlaps no caption in ``taken``, else the
    first free place below the box's top, else above the box."""
    w, h = size
    height, width = image
    x = min(max(box[0], 0), max(width - w, 0))

    def at(y: int) -> Rect:
        y = min(max(y, 0), max(height - h, 0))
        return (x, y, x + w, y + h)

    candidates = [at(box[1] - h), at(box[1]), at(box[3]), at(box[3] - h)]
    candidates += [at(y) for y in range(box[1] + h, height - h + 1, h)]
    return next((c for c in candidates if not any(overlaps(c, t) for t in taken)), candidates[0])


def draw_captions(
    image: Tensor, boxes: Tensor, captions: list[str], colors: list[tuple[int, int, int]]
) -> Tensor:
    """``image`` (uint8 3xHxW) with each caption on a box of its colour at the place :func:`place_caption`
    gives, in order (the first captions get the best places: pass them by descending score)."""
    height, width = image.shape[-2:]
    font = caption_font(font_size_for(height, width))
    picture = Image.fromarray(image.permute(1, 2, 0).numpy())
    draw = ImageDraw.Draw(picture)
    pad = max(1, font.size // 6)
    taken: list[Rect] = []
    for box, caption, color in zip(boxes.round().int().tolist(), captions, colors):
        left, top, right, bottom = draw.textbbox((0, 0), caption, font=font)
        rect = place_caption(box, (right - left + 2 * pad, bottom - top + 2 * pad), (height, width), taken)
        taken.append(rect)
        draw.rectangle((rect[0], rect[1], rect[2] - 1, rect[3] - 1), fill=tuple(color))
        draw.text((rect[0] + pad - left, rect[1] + pad - top), caption, fill=text_color(color), font=font)
    return torch.from_numpy(np.asarray(picture).copy()).permute(2, 0, 1)
