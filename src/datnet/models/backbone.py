"""ResNet / ResNeXt FPN backbones producing P2..P5 and P6 (Fig. 2a), from torchvision's builders.

Nothing is downloaded: weights are either random or an ImageNet state dict read from a local path.
"""

from pathlib import Path

import torch
from torch import nn
from torchvision.models import get_model
from torchvision.models.detection.backbone_utils import BackboneWithFPN, _resnet_fpn_extractor
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

from datnet.models.mixed_precision import AutocastFrozenBatchNorm2d

BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnext50_32x4d", "resnext101_32x8d")
NORMS = {"bn": nn.BatchNorm2d, "frozen_bn": AutocastFrozenBatchNorm2d}


def resolve_norm(norm: str, weights: str | None) -> type[nn.Module]:
    """``auto`` follows torchvision: frozen BatchNorm with pretrained weights, trainable BatchNorm without."""
    if norm == "auto":
        norm = "frozen_bn" if weights else "bn"
    if norm not in NORMS:
        raise ValueError(f"model.backbone.norm must be auto, bn or frozen_bn; got {norm!r}")
    return NORMS[norm]


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict saved with ``torch.save`` at a local path (a bare dict or one under ``state_dict``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict (found {type(state).__name__})")
    return state


def build_resnet_fpn_backbone(
    name: str = "resnet50",
    weights: str | None = None,
    norm: str = "auto",
    trainable_layers: int | None = None,
    out_channels: int = 256,
) -> tuple[BackboneWithFPN, dict[str, torch.Tensor]]:
    """ResNet-FPN with ``P6 = maxpool_stride2(P5)`` as in torchvision's Mask R-CNN.

    ``out_channels`` is the pyramid width (256 in the paper and torchvision); a narrower pyramid makes every
    head that works on it (auxiliary heads, RPN, MSPwA, ROI heads) proportionally cheaper, for CPU runs.

    Returns the backbone and the ImageNet state of its stage 5 (empty without ``weights``), used to initialise
    ``res5`` ROI heads. ``trainable_layers`` defaults to 3 with weights and 5 without, as in torchvision.
    """
    if name not in BACKBONES:
        raise ValueError(f"model.backbone.name must be one of {BACKBONES}; got {name!r}")
    net = get_model(name, weights=None, norm_layer=resolve_norm(norm, weights))
    stage5_state: dict[str, torch.Tensor] = {}
    if weights:
        state = load_state_dict_file(weights)
        missing, unexpected = net.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("fc.")]
        if missing or unexpected:
            raise ValueError(
                f"{weights} is not a torchvision {name} state dict: "
                f"missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        stage5_state = {
            k[len("layer4.") :]: v for k, v in net.state_dict().items() if k.startswith("layer4.")
        }
    if trainable_layers is None:
        trainable_layers = 3 if weights else 5
    backbone = _resnet_fpn_extractor(net, trainable_layers)
    if out_channels != backbone.out_channels:
        in_channels = [block[0].in_channels for block in backbone.fpn.inner_blocks]
        backbone.fpn = FeaturePyramidNetwork(in_channels, out_channels, extra_blocks=LastLevelMaxPool())
        backbone.out_channels = out_channels
    return backbone, stage5_state
