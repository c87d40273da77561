"""The data-model contract: what a loader worker sends and what the model expects.

A sample is ``(image, target)`` (``datnet.data.dataset`` lists every key):

* ``image``: uint8 3xHxW (0..255), RGB, the image the model sees (no resizing left to the model), scaled to
  float on the device by the model's transform.
* ``target["masks_packed"]``: the binary instance masks bit-packed along the width (``pack_masks``, an eighth
  of the bytes), expanded back to the uint8 NxHxW ``masks`` on the device (``unpack_target``).
* ``target["dt"]``, ``target["sem"]``: the dense auxiliary targets of paper Sec. 3.1, uint8 maps on the grid
  of the image at the auxiliary loss's stride (``grid_shape``; ``data.aux_stride`` of the data pipeline, which
  must equal the model's ``model.aux.loss_stride``), with ``IGNORE`` on the pixels left out of the loss.

The dense heads predict at ``HEAD_STRIDE`` of the (padded) image. Both sides validate their stride with
``check_stride``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

IGNORE = 255
"""Label of the dense target pixels excluded from the auxiliary losses and metrics (crowd, void, padding)."""

HEAD_STRIDE = 4
"""Output stride of the dense heads: the resolution of ``P2``, 1/4 of the (padded) image (Sec. 3.3)."""


def grid_shape(height: int, width: int, stride: int) -> tuple[int, int]:
    """Size ``(ceil(H/s), ceil(W/s))`` of the stride-``stride`` grid of a ``height x width`` image: that of
    its dense targets at that stride, and at ``HEAD_STRIDE`` that of the heads' logits on the image."""
    return -(-height // stride), -(-width // stride)


def check_stride(stride: int, key: str, choices: Sequence[int] | None = None) -> None:
    """A clear ``ValueError`` naming the config ``key`` for a stride that is not an integer >= 1 or, where
    ``choices`` are given, not one of them."""
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ValueError(f"{key} must be an integer >= 1 (1: pixel level), got {stride!r}")
    if choices is not None and stride not in choices:
        raise ValueError(
            f"{key} must be one of {tuple(choices)} (1: image resolution, the paper; "
            f"{HEAD_STRIDE}: the heads' stride); got {stride!r}"
        )


def pack_masks(masks: np.ndarray) -> np.ndarray:
    """NxHxW binary masks bit-packed along the width: N x H x ceil(W/8) uint8, most significant bit first
    (``np.packbits``), as loader workers send them; ``unpack_masks`` inverts it given the width."""
    return np.packbits(masks, axis=-1)


def unpack_masks(packed: Tensor, width: int) -> Tensor:
    """The uint8 {0, 1} masks (N, H, ``width``) of ``pack_masks``'s (N, H, ceil(width/8)), on ``packed``'s
    device."""
    shifts = torch.arange(7, -1, -1, dtype=torch.uint8, device=packed.device)
    return ((packed.unsqueeze(-1) >> shifts) & 1).flatten(-2)[..., :width].contiguous()


def unpack_target(target: dict[str, Tensor], width: int) -> dict[str, Tensor]:
    """A copy of ``target`` with its ``masks_packed`` replaced by the ``masks`` of an image ``width`` pixels
    wide (``unpack_masks``); a target without ``masks_packed`` is returned as it is."""
    if "masks_packed" not in target:
        return target
    target = dict(target)
    target["masks"] = unpack_masks(target.pop("masks_packed"), width)
    return target
