"""ROI feature extractors of the box and mask branches (Sec. 3.2-3.3, Fig. 4, Table 3).

``2fc`` and ``4conv1fc`` are torchvision's ``TwoMLPHead`` and ``FastRCNNConvFCHead``; ``res5`` is the fifth
ResNet stage (stride 2 in its first block) applied to each pooled ROI, built here from torchvision's ResNet.
"""

import torch
from torch import Tensor, nn
from torchvision.models import get_model
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, TwoMLPHead

from datnet.models.init import resnet_conv_init_

RES5_PLANES = 512


def build_res5(
    arch: str,
    in_channels: int,
    norm_layer: type[nn.Module],
    init_state: dict | None = None,
    init: str = "torchvision",
) -> nn.Sequential:
    """Stage 5 (``layer4``) of torchvision's ``arch`` taking ``in_channels`` input channels.

    ``init_state`` is the backbone's ImageNet ``layer4`` state; tensors whose shapes match are copied (all of
    them when ``in_channels`` equals the backbone's stage-4 width, 1024 for ResNet-50 and ResNeXt-101; all
    but the first block's ``conv1`` and ``downsample`` convolution with FPN's 256 channels). The
    convolutions it does not fill keep PyTorch's default initialisation (``_make_layer`` runs after
    ``ResNet``'s own initialisation) with ``init=torchvision``, and take maskrcnn-benchmark's ResNet rule
    with ``init=maskrcnn_benchmark`` (``datnet.models.init``).
    """
    net = get_model(arch, weights=None, norm_layer=norm_layer)
    block = type(net.layer4[0])
    net.inplanes = in_channels
    res5 = net._make_layer(block, RES5_PLANES, len(net.layer4), stride=2)
    own = res5.state_dict()
    matching = {k: v for k, v in (init_state or {}).items() if k in own and own[k].shape == v.shape}
    res5.load_state_dict(matching, strict=False)
    if init == "maskrcnn_benchmark":
        for name, module in res5.named_modules():
            if isinstance(module, nn.Conv2d) and f"{name}.weight" not in matching:
                resnet_conv_init_(module)
    return res5


def res5_out_channels(res5: nn.Sequential) -> int:
    last = res5[-1]
    return (last.conv3 if hasattr(last, "conv3") else last.conv2).out_channels


class Res5BoxHead(nn.Module):
    """Box feature extractor ``res5`` followed by global average pooling (Light and Heavy heads)."""

    def __init__(self, res5: nn.Sequential) -> None:
        super().__init__()
        self.res5 = res5
        self.out_channels = res5_out_channels(res5)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.res5(x))

    @staticmethod
    def pool(maps: Tensor) -> Tensor:
        """The box representation of res5 maps: global average pool, flattened to (N, C)."""
        return torch.flatten(nn.functional.adaptive_avg_pool2d(maps, 1), 1)


def build_box_head(
    name: str, in_channels: int, pool_size: int, res5: nn.Sequential | None = None, representation: int = 1024
) -> tuple[nn.Module, int]:
    """The box feature extractor named ``name`` and the width of its output vectors."""
    if name == "2fc":
        return TwoMLPHead(in_channels * pool_size**2, representation), representation
    if name == "4conv1fc":
        return FastRCNNConvFCHead(
            (in_channels, pool_size, pool_size), [256] * 4, [representation]
        ), representation
    if name == "res5":
        if res5 is None:
            raise ValueError("box_head=res5 needs a res5 stage")
        head = Res5BoxHead(res5)
        return head, head.out_channels
    raise ValueError(f"model.box_head must be one of 2fc, 4conv1fc, res5; got {name!r}")
