"""Multi-scale pooling with attention, MSPwA (Sec. 3.2, 3.3, Fig. 3)."""

import torch
from torch import Tensor, nn
from torchvision.ops import MultiScaleRoIAlign, SqueezeExcitation, roi_align
from torchvision.ops.poolers import _convert_to_roi_format, _filter_input, _setup_scales


class MaxSqueezeExcitation(SqueezeExcitation):
    """Squeeze-and-excitation [14] whose squeeze is a global *max* pool, as MSPwA specifies (Sec. 3.3)."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__(channels, channels // reduction)
        self.avgpool = nn.AdaptiveMaxPool2d(1)

    def channel_weights(self, x: Tensor) -> Tensor:
        """The per-channel multiplicative weights in (0, 1), shape (N, C, 1, 1)."""
        return self._scale(x)


class MultiScaleAttentionPooler(MultiScaleRoIAlign):
    """ROIAlign of every ROI on *all* pyramid levels, concatenated and re-weighted by SE attention.

    Unlike FPN's level assignment (``MultiScaleRoIAlign``), each ROI is pooled to ``k x k x 256`` from each
    of ``P2..P5``; the four maps are concatenated channel-wise into ``k x k x 1024`` (finest level first) and
    an SE layer with max-pool squeeze and reduction 16 scales every channel (Fig. 3). Level scales are
    inferred as in torchvision's pooler. One instance per pooling size ``k``.
    """

    def __init__(
        self,
        featmap_names: list[str],
        output_size: int,
        sampling_ratio: int = 2,
        channels: int = 256,
        reduction: int = 16,
    ) -> None:
        super().__init__(featmap_names, output_size, sampling_ratio)
        self.out_channels = channels * len(featmap_names)
        self.attention = MaxSqueezeExcitation(self.out_channels, reduction)

    def pool_levels(
        self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]
    ) -> Tensor:
        """The concatenated multi-level ROI features before attention, (N, L*C, k, k)."""
        levels = _filter_input(x, self.featmap_names)
        if self.scales is None:
            self.scales, self.map_levels = _setup_scales(
                levels, image_shapes, self.canonical_scale, self.canonical_level
            )
        rois = _convert_to_roi_format(boxes)
        pooled = [
            roi_align(
                feature,
                rois,
                output_size=self.output_size,
                spatial_scale=scale,
                sampling_ratio=self.sampling_ratio,
                aligned=False,
            )
            for feature, scale in zip(levels, self.scales)
        ]
        return torch.cat(pooled, dim=1)

    def forward(
        self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]
    ) -> Tensor:
        return self.attention(self.pool_levels(x, boxes, image_shapes))
