"""Pictures made of panels: each panel under a title bar (image, DT target, semantic target, prediction, ...)
and, below them, a legend of the colours of the classes shown, so that a picture explains itself."""

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from datnet.visualization.captions import caption_font, font_size_for, text_color

BAR_COLOR = (40, 40, 40)  # title and legend bars: dark grey, white text


def bar_height(panel_width: int) -> int:
    """Height of a title or legend bar for panels ``panel_width`` wide: the caption font plus padding."""
    return font_size_for(panel_width, panel_width) * 3 // 2 + 4


def text_bar(width: int, height: int, font_size: int, items: list[tuple[str, tuple | None]]) -> Image.Image:
    """A ``width`` x ``height`` bar of ``items`` left to right: a text alone (colour None) in white, or a text
    on a chip of its colour in black or white."""
    bar = Image.new("RGB", (width, height), BAR_COLOR)
    draw, font = ImageDraw.Draw(bar), caption_font(font_size)
    x, pad = font_size // 2, max(1, font_size // 6)
    for text, color in items:
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        y = (height - (bottom - top)) // 2 - top
        if color is not None:
            chip = (x, y + top - pad, x + right - left + 2 * pad, y + bottom + pad)
            draw.rectangle(chip, fill=tuple(color))
            draw.text((x + pad - left, y), text, fill=text_color(tuple(color)), font=font)
            x += right - left + 2 * pad + font_size // 2
        else:
            draw.text((x - left, y), text, fill=(255, 255, 255), font=font)
            x += right - left + font_size
    return bar


def legend_rows(width: int, font_size: int, names: list[str]) -> list[list[str]]:
    """``names`` wrapped into rows of chips that fit ``width`` pixels."""
    font = caption_font(font_size)
    rows: list[list[str]] = [[]]
    used = font_size // 2
    for name in names:
        chip = font.getlength(name) + font_size // 3 + font_size // 2
        if rows[-1] and used + chip > width:
            rows.append([])
            used = font_size // 2
        rows[-1].append(name)
        used += chip
    return rows


def figure(panels: list[tuple[str, Tensor]], legend: dict[str, tuple[int, int, int]]) -> Tensor:
    """The panels (title, uint8 3xHxW, all of one size) side by side, each under its title bar, and a legend
    of ``legend`` (class name -> colour) below, wrapped over as many bars as it needs (none when empty)."""
    height, width = panels[0][1].shape[-2:]
    bar, font_size = bar_height(width), font_size_for(width, width)
    total = width * len(panels)
    titles = [np.asarray(text_bar(width, bar, font_size, [(title, None)])) for title, _ in panels]
    parts = [
        np.concatenate(titles, 1),
        torch.cat([panel for _, panel in panels], dim=2).permute(1, 2, 0).numpy(),
    ]
    for row in legend_rows(total, font_size, list(legend)) if legend else []:
        parts.append(np.asarray(text_bar(total, bar, font_size, [(name, legend[name]) for name in row])))
    return torch.from_numpy(np.concatenate(parts, 0).copy()).permute(2, 0, 1)


def classes_legend(labels: list[int], names: list[str], colors: list) -> dict[str, tuple[int, int, int]]:
    """Name -> colour of the distinct ``labels`` shown, in label order."""
    return {names[label]: tuple(colors[label]) for label in sorted(set(labels))}
