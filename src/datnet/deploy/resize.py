"""The evaluation resize of torchvision's detection transform, traceable with eager PyTorch's output size.

Eager, torchvision scales an image by ``s = min(min_size / short side, max_size / long side)`` in Python
floats (double precision) and ``interpolate`` makes it ``floor(side * s)`` pixels. Under tracing, torchvision
computes ``s`` and the size in float32, which for some sizes is one pixel off (a 161 x 185 image at
``min_size`` 64: 63 x 73 eager, 64 x 73 traced); the whole image is then resampled differently, and so are
the detections. Here the size is computed from the traced shape in double precision, the eager arithmetic,
and the image resampled to that size (``interpolate`` with ``recompute_scale_factor=True``, as
torchvision's, samples from the sizes, so the pixels are the same).
"""

import torch
import torch.nn.functional as F
from torch import Tensor


def eval_size(
    height: Tensor | int, width: Tensor | int, min_size: int, max_size: int
) -> tuple[Tensor, Tensor]:
    """The resized (height, width), as int64 scalars, of an image of (``height``, ``width``) (traced or
    plain sizes) for a short side of ``min_size`` and a long side of at most ``max_size``. Tensor by tensor
    division, as Python divides (``number / tensor`` multiplies by a rounded reciprocal)."""
    sides = torch.stack([torch.as_tensor(height), torch.as_tensor(width)]).to(torch.float64)
    limits = torch.tensor([min_size, max_size], dtype=torch.float64)
    scale = (limits / torch.stack([sides.min(), sides.max()])).min()
    resized = torch.floor(sides * scale).to(torch.int64)
    return resized[0], resized[1]


def eval_resize(image: Tensor, min_size: int, max_size: int) -> Tensor:
    """``image`` (C, H, W) resized bilinearly to ``eval_size`` of its size, as torchvision's transform does
    in evaluation."""
    size = eval_size(image.shape[-2], image.shape[-1], min_size, max_size)
    return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
