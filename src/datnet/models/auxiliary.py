"""The dense auxiliary branch of Fig. 2b: DT and semantic heads, their losses, and feature fusion."""

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from datnet.contract import HEAD_STRIDE, IGNORE, check_stride, grid_shape
from datnet.models.aux_heads import DenseAuxHead
from datnet.models.fusion import FeatureFusion
from datnet.models.losses import dense_focal_loss, upsample_logits

LOSS_STRIDES = (1, 2, 4)
"""``model.aux.loss_stride`` values: the strides that divide the heads' stride 4 (1: the image, the paper)."""


def batch_dense_targets(
    targets: list[dict[str, Tensor]],
    key: str,
    image_sizes: Sequence[tuple[int, int]],
    padded_size: Sequence[int],
    stride: int,
    ignore_index: int,
) -> Tensor:
    """Stack per-image stride-``stride`` target maps into ``(B, ceil(H/s), ceil(W/s))`` of the padded batch
    ``padded_size`` (H, W), the padding filled with ``ignore_index``. Each image's map must have the size of
    its image (``image_sizes``) at that stride: a map of another stride is an error, never padded."""
    size = grid_shape(*padded_size, stride)
    batch = torch.full(
        (len(targets), *size), ignore_index, dtype=torch.long, device=targets[0]["boxes"].device
    )
    for i, (target, image_size) in enumerate(zip(targets, image_sizes, strict=True)):
        if key not in target:
            raise KeyError(
                f"target {i} has no {key!r} map: the auxiliary {key} head is enabled, so the data pipeline "
                "must compute dense auxiliary targets"
            )
        dense = target[key]
        expected = grid_shape(*image_size, stride)
        if tuple(dense.shape[-2:]) != expected:
            raise ValueError(
                f"target {i} {key!r} map is {tuple(dense.shape[-2:])}; the auxiliary loss at "
                f"model.aux.loss_stride={stride} needs {expected} for its {tuple(image_size)} image: "
                "the data pipeline's data.aux_stride must equal model.aux.loss_stride"
            )
        batch[i, : expected[0], : expected[1]] = dense
    return batch


class DenseAuxiliaryTasks(nn.Module):
    """Runs the enabled auxiliary heads on ``P2..P6``, fuses their features into the pyramid, and in
    training returns their weighted losses ``w1 * L_DT`` and ``w2 * L_seg`` (eq. 3).

    ``heads`` maps a target key (``"dt"``, ``"sem"``) to its head, ``weights`` the same keys to the loss
    weights. Logits are computed only when a loss is (or when maps are asked for), never otherwise.

    ``loss_stride`` is where eqs. 1-2 are evaluated. 1 (the paper): the heads' stride-4 logits are upsampled
    x4 (bilinear, ``upsample_logits``) to the padded image and the loss averages over its pixels, against
    pixel-level targets. 4: the loss is taken on the logits as they are, against targets sampled at the
    cells' centres (``datnet.data.aux_targets``): the same loss subsampled at one pixel per cell, 16x less
    memory and arithmetic for the loss. Either way the ignore label is excluded from the average.
    """

    LOSS_NAMES = {"dt": "loss_dt", "sem": "loss_seg"}

    def __init__(
        self,
        heads: dict[str, DenseAuxHead],
        fusion: FeatureFusion,
        weights: dict[str, float],
        background_alpha: float = 0.2,
        gamma: float = 2.0,
        ignore_index: int = IGNORE,
        loss_stride: int = HEAD_STRIDE,
    ) -> None:
        super().__init__()
        if not heads:
            raise ValueError("DenseAuxiliaryTasks needs at least one head")
        check_stride(loss_stride, "model.aux.loss_stride", LOSS_STRIDES)
        self.heads = nn.ModuleDict(heads)
        self.fusion = fusion
        self.weights = dict(weights)
        self.background_alpha = background_alpha
        self.gamma = gamma
        self.ignore_index = ignore_index
        self.loss_stride = loss_stride

    def batch_targets(
        self,
        targets: list[dict[str, Tensor]],
        image_sizes: Sequence[tuple[int, int]],
        padded_size: Sequence[int],
    ) -> dict[str, Tensor]:
        """Every enabled head's per-image target maps (at ``loss_stride`` of images of ``image_sizes``)
        stacked to ``(B, ceil(H/s), ceil(W/s))`` of the padded batch ``padded_size`` (H, W), the padding
        ignored. Done before ``forward``, outside any compiled graph, so that the per-image loop is never
        traced."""
        return {
            key: batch_dense_targets(
                targets, key, image_sizes, padded_size, self.loss_stride, self.ignore_index
            )
            for key in self.heads
        }

    def forward(
        self,
        features: "OrderedDict[str, Tensor]",
        targets: dict[str, Tensor] | None = None,
        return_maps: bool = False,
    ) -> tuple["OrderedDict[str, Tensor]", dict[str, Tensor], dict[str, Tensor]]:
        """Returns the fused pyramid, the losses (training, with ``targets`` from ``batch_targets``) and, if
        asked, softmax maps."""
        aux_features = {key: head(features) for key, head in self.heads.items()}
        losses: dict[str, Tensor] = {}
        maps: dict[str, Tensor] = {}
        if targets is not None or return_maps:
            for key, head in self.heads.items():
                logits = head.predict(aux_features[key])
                if targets is not None:
                    target = targets[key]
                    scores = (
                        logits
                        if self.loss_stride == HEAD_STRIDE
                        else upsample_logits(logits, target.shape[-2:])
                    )
                    loss = dense_focal_loss(
                        scores, target, self.background_alpha, self.gamma, self.ignore_index
                    )
                    losses[self.LOSS_NAMES[key]] = self.weights[key] * loss
                if return_maps:
                    maps[key] = logits.softmax(dim=1)
        return self.fusion(features, list(aux_features.values())), losses, maps
