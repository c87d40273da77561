"""Dense auxiliary heads: distance transform and semantic segmentation (Sec. 3.1, 3.3, Fig. 2b)."""

from collections import OrderedDict

import torch.nn.functional as F
from torch import Tensor, nn


def _conv_relu(channels: int) -> list[nn.Module]:
    return [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True)]


class _UpsampleStage(nn.Module):
    """3x3 conv, ReLU, then bilinear upsampling to the next finer pyramid level's size (nominally x2)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(*_conv_relu(channels))

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        return F.interpolate(self.conv(x), size=size, mode="bilinear", align_corners=False)


class DenseAuxHead(nn.Module):
    """Panoptic-FPN-like dense head shared in architecture by the DT and semantic branches (Sec. 3.3).

    Takes the pyramid ``P2..P6`` (an ordered dict, finest first). ``P2`` is taken as is; every coarser level
    ``P_l`` goes through ``l - 2`` stages of (3x3 conv 256, ReLU, x2 bilinear upsampling) down to the 1/4
    resolution of ``P2``. The maps are summed and refined by two 3x3 conv + ReLU, giving the features ``F``
    (256 channels at 1/4 resolution) that are fused into the pyramid. ``predict`` applies the final 3x3 conv
    that gives per-pixel logits; it is run only where the auxiliary loss (or a visualisation) needs it.
    """

    def __init__(self, out_channels: int, channels: int = 256, num_levels: int = 5) -> None:
        super().__init__()
        self.scale_stages = nn.ModuleList(
            nn.ModuleList(_UpsampleStage(channels) for _ in range(level)) for level in range(num_levels)
        )
        self.refine = nn.Sequential(*_conv_relu(channels), *_conv_relu(channels))
        self.predictor = nn.Conv2d(channels, out_channels, 3, padding=1)

    def forward(self, features: "OrderedDict[str, Tensor]") -> Tensor:
        levels = list(features.values())
        if len(levels) != len(self.scale_stages):
            raise ValueError(f"expected {len(self.scale_stages)} pyramid levels, got {len(levels)}")
        sizes = [tuple(x.shape[-2:]) for x in levels]
        total = levels[0]
        for level in range(1, len(levels)):
            x = levels[level]
            for step, stage in enumerate(self.scale_stages[level]):
                x = stage(x, sizes[level - step - 1])
            total = total + x
        return self.refine(total)

    def predict(self, aux_features: Tensor) -> Tensor:
        """Per-pixel logits (B, out_channels, H/4, W/4) from the features ``F``."""
        return self.predictor(aux_features)


class DistanceTransformHead(DenseAuxHead):
    """Class-agnostic head predicting the distance transform binned into K bins (K = 4 in the paper)."""

    def __init__(self, num_bins: int = 4, channels: int = 256, num_levels: int = 5) -> None:
        super().__init__(num_bins, channels, num_levels)


class SemanticHead(DenseAuxHead):
    """Semantic segmentation head predicting one logit per class, background included."""

    def __init__(self, num_classes: int, channels: int = 256, num_levels: int = 5) -> None:
        super().__init__(num_classes, channels, num_levels)
