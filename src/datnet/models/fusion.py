"""Feature fusion of the auxiliary features into the pyramid, before the RPN (Sec. 3.3, Table 5)."""

from collections import OrderedDict

import torch.nn.functional as F
from torch import Tensor, nn

FUSION_CONVS = {"sum": 0, "sum2conv": 2, "sum4conv": 4}


class FeatureFusion(nn.Module):
    """``P'_i = P_i + resize_i(F_DT) + resize_i(F_seg)`` for ``P2..P5``, then optional shared convs.

    ``sum`` has no parameters (the paper's default). ``sum2conv`` and ``sum4conv`` (Table 5) append 2 or 4
    3x3 Conv+ReLU layers after the sum, the same layers for every level. ``P6`` is not fused directly: it is
    re-derived from the fused ``P5'`` by the same stride-2 subsampling that FPN uses to make ``P6`` from
    ``P5`` (Fig. 2a), so the RPN sees fused features at every level.
    """

    def __init__(self, mode: str = "sum", channels: int = 256) -> None:
        super().__init__()
        if mode not in FUSION_CONVS:
            raise ValueError(f"model.fusion must be one of {sorted(FUSION_CONVS)}, got {mode!r}")
        self.mode = mode
        layers: list[nn.Module] = []
        for _ in range(FUSION_CONVS[mode]):
            layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
        self.convs = nn.Sequential(*layers)

    def forward(
        self, features: "OrderedDict[str, Tensor]", aux_features: list[Tensor]
    ) -> "OrderedDict[str, Tensor]":
        names = list(features.keys())
        # Bilinear resizing is linear: resize_i(F_DT) + resize_i(F_seg) = resize_i(F_DT + F_seg), so the
        # auxiliary features are summed once at 1/4 resolution and resized once per level.
        aux = sum(aux_features[1:], aux_features[0])
        fused: OrderedDict[str, Tensor] = OrderedDict()
        for name in names[:-1]:
            p = features[name]
            f = aux
            if f.shape[-2:] != p.shape[-2:]:
                f = F.interpolate(f, size=p.shape[-2:], mode="bilinear", align_corners=False)
            fused[name] = self.convs(p + f)
        fused[names[-1]] = F.max_pool2d(fused[names[-2]], kernel_size=1, stride=2)
        return fused
