"""Image decoding to 8-bit RGB, whatever the file's mode (grayscale, RGBA, palette, 16-bit)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_PROBLEMS = ("missing", "empty", "unreadable", "size_mismatch")


class ImageLoadError(Exception):
    """An image file that cannot be used; `kind` (one of `IMAGE_PROBLEMS`) says why: the file does not exist,
    is empty, cannot be decoded (truncated, not an image, unsupported mode, unreadable), or is not the size
    that its annotation says."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind

    def __reduce__(self) -> tuple:  # picklable (e.g. out of a loader worker) with its kind
        return type(self), (str(self), self.kind)


_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def to_rgb_array(img: Image.Image) -> np.ndarray:
    """Convert a decoded PIL image to an HxWx3 uint8 RGB array.

    16-bit (and 32-bit integer) grayscale is rescaled from its full 0..65535 range (PIL's own conversion would
    clip at 255); palette images are expanded through the palette; alpha is dropped (as torchvision does).
    """
    if img.mode in _SIXTEEN_BIT_MODES:
        gray = np.asarray(img, dtype=np.float32) * (255.0 / 65535.0)
        gray = np.clip(np.rint(gray), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode == "F":
        gray = np.clip(np.rint(np.asarray(img, dtype=np.float32)), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return np.asarray(img if img.mode == "RGB" else img.convert("RGB"))


def read_rgb(path: Path, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB; raise ImageLoadError naming the file and the problem.

    `expected_size` is (width, height) from the annotation file; a different size on disk is an error because
    the annotations would not line up with the pixels. EXIF orientation is NOT applied (COCO/VOC annotations
    refer to the stored pixel grid).
    """
    try:
        with Image.open(path) as img:
            if expected_size is not None and img.size != tuple(expected_size):
                raise ImageLoadError(
                    f"{path}: image is {img.size[0]}x{img.size[1]} but the annotation says "
                    f"width={expected_size[0]}, height={expected_size[1]}",
                    "size_mismatch",
                )
            img.load()
            return to_rgb_array(img)
    except FileNotFoundError as e:
        raise ImageLoadError(f"{path}: image file not found", "missing") from e
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        if Path(path).is_file() and Path(path).stat().st_size == 0:
            raise ImageLoadError(f"{path}: image file is empty (0 bytes)", "empty") from e
        raise ImageLoadError(f"{path}: cannot decode image ({e})", "unreadable") from e
