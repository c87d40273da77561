"""The dense auxiliary branch of Fig. 2b: DT and semantic heads, their losses, and feature fusion."""

from collections import OrderedDict

import torch
from torch import Tensor, nn

from datnet.models.aux_heads import DenseAuxHead
from datnet.models.fusion import FeatureFusion
from datnet.models.losses import dense_focal_loss


def batch_dense_targets(
    targets: list[dict[str, Tensor]], key: str, size: torch.Size, ignore_index: int
) -> Tensor:
    """Stack per-image stride-4 target maps into ``(B, H, W)``, the padding filled with ``ignore_index``."""
    batch = torch.full(
        (len(targets), *size), ignore_index, dtype=torch.long, device=targets[0]["boxes"].device
    )
    for i, target in enumerate(targets):
        if key not in target:
            raise KeyError(
                f"target {i} has no {key!r} map: the auxiliary {key} head is enabled, so the data pipeline "
                "must compute dense auxiliary targets"
            )
        dense = target[key]
        h, w = dense.shape[-2:]
        if h > size[0] or w > size[1]:
            raise ValueError(
                f"target {i} {key!r} map is {h}x{w}, larger than the head's output {tuple(size)}"
            )
        batch[i, :h, :w] = dense
    return batch


class DenseAuxiliaryTasks(nn.Module):
    """Runs the enabled auxiliary heads on ``P2..P6``, fuses their features into the pyramid, and in
    training returns their weighted losses ``w1 * L_DT`` and ``w2 * L_seg`` (eq. 3).

    ``heads`` maps a target key (``"dt"``, ``"sem"``) to its head, ``weights`` the same keys to the loss
    weights. Logits are computed only when a loss is (or when maps are asked for), never otherwise.
    """

    LOSS_NAMES = {"dt": "loss_dt", "sem": "loss_seg"}

    def __init__(
        self,
        heads: dict[str, DenseAuxHead],
        fusion: FeatureFusion,
        weights: dict[str, float],
        background_alpha: float = 0.2,
        gamma: float = 2.0,
        ignore_index: int = 255,
    ) -> None:
        super().__init__()
        if not heads:
            raise ValueError("DenseAuxiliaryTasks needs at least one head")
        self.heads = nn.ModuleDict(heads)
        self.fusion = fusion
        self.weights = dict(weights)
        self.background_alpha = background_alpha
        self.gamma = gamma
        self.ignore_index = ignore_index

    def batch_targets(self, targets: list[dict[str, Tensor]], size: torch.Size) -> dict[str, Tensor]:
        """Every enabled head's per-image target maps stacked to ``(B, *size)`` (``size``: the heads' logits,
        stride 4 of the padded batch), the padding ignored. Done before ``forward``, outside any compiled
        graph, so that the per-image loop is never traced."""
        return {key: batch_dense_targets(targets, key, size, self.ignore_index) for key in self.heads}

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
                    loss = dense_focal_loss(
                        logits, targets[key], self.background_alpha, self.gamma, self.ignore_index
                    )
                    losses[self.LOSS_NAMES[key]] = self.weights[key] * loss
                if return_maps:
                    maps[key] = logits.softmax(dim=1)
        return self.fusion(features, list(aux_features.values())), losses, maps
