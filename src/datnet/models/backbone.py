"""ResNet / ResNeXt FPN backbones producing P2..P5 and P6 (Fig. 2a), from torchvision's builders.

``weights`` (``model.backbone.weights``) is one of:

- ``imagenet`` (the paper's setting): torchvision's ``IMAGENET1K_V1`` weights of the backbone
  (``ResNet50_Weights.IMAGENET1K_V1``, ``ResNeXt101_32X8D_Weights.IMAGENET1K_V1``, ...), read from the torch
  hub cache (``$TORCH_HOME/hub/checkpoints/<torchvision's file name>``) and downloaded there on first use
  where there is a network, as torchvision does; where the file can be had neither way the build stops at
  once with an error saying where it looked and what else to pass;
- ``c2``: maskrcnn-benchmark's Caffe2 ImageNet weights (the paper's start, ``R-50.pkl``, ``X-101-32x8d.pkl``)
  as ``scripts/convert_c2_weights.py`` writes them, read from the hub cache
  (``$TORCH_HOME/hub/checkpoints/<name>-c2.pth``, ``c2_file``); without that file the build stops at once
  with an error naming the conversion command. The model then takes the file's conventions
  (``datnet.models.build``): BGR pixels in 0..255 minus the Caffe2 mean, and the stride of each stage in its
  first 1x1 convolution for MSRA's ResNets (``C2_WEIGHTS``);
- ``scratch``: random initialisation (trainable BatchNorm, every stage trained), with a warning;
- a local path to a torchvision-format state dict.
"""

import os
import socket
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision.models import get_model, get_model_weights
from torchvision.models.detection.backbone_utils import BackboneWithFPN, _resnet_fpn_extractor
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

from datnet.models.mixed_precision import AutocastFrozenBatchNorm2d

BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnext50_32x4d", "resnext101_32x8d")
NORMS = {"bn": nn.BatchNorm2d, "frozen_bn": AutocastFrozenBatchNorm2d}


IMAGENET = "imagenet"
C2 = "c2"
SCRATCH = "scratch"


class C2Weights(NamedTuple):
    """One of maskrcnn-benchmark's Caffe2 ImageNet pickles (``paths_catalog.py``, ``ImageNetPretrained/...``)
    and where its ResNet strides (its configs' ``RESNETS.STRIDE_IN_1X1``)."""

    pickle: str
    stride_in_1x1: bool


C2_WEIGHTS = {
    "resnet50": C2Weights("R-50.pkl", True),  # MSRA
    "resnet101": C2Weights("R-101.pkl", True),  # MSRA
    "resnext101_32x8d": C2Weights("X-101-32x8d.pkl", False),  # FAIR
}
# the input they expect (``INPUT.TO_BGR255``, ``PIXEL_MEAN``, ``PIXEL_STD``), as ``model.transform``
C2_TRANSFORM = {
    "image_mean": [102.9801, 115.9465, 122.7717],
    "image_std": [1.0, 1.0, 1.0],
    "pixel_range": 255,
    "channel_order": "bgr",
}
DOWNLOAD_TIMEOUT_S = 10.0  # per socket operation: no network fails in seconds, a slow one still downloads


class WeightsUnavailableError(RuntimeError):
    """``model.backbone.weights=imagenet`` where the file is neither in the hub cache nor downloadable, or
    ``c2`` where the converted file is not in the hub cache."""


def check_weights(weights: Any) -> str:
    """``weights`` if it is ``imagenet``, ``c2``, ``scratch`` or a path; ``null`` (formerly random init) is an
    error naming the choices, so that an old config does not silently change meaning."""
    if not isinstance(weights, str | os.PathLike) or not str(weights):
        raise ValueError(
            f"model.backbone.weights must be imagenet (torchvision's ImageNet weights, the paper's setting), "
            f"c2 (maskrcnn-benchmark's Caffe2 ImageNet weights, converted), scratch (random init) or a path "
            f"to a local state dict; got {weights!r}"
        )
    return str(weights)


def is_pretrained(weights: Any) -> bool:
    """Whether ``weights`` loads pretrained weights (``imagenet`` or a path), i.e. not ``scratch``."""
    return check_weights(weights) != SCRATCH


def resolve_norm(norm: str, weights: Any) -> type[nn.Module]:
    """``auto`` follows torchvision: frozen BatchNorm with pretrained weights, trainable BatchNorm without."""
    if norm == "auto":
        norm = "frozen_bn" if is_pretrained(weights) else "bn"
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


def imagenet_weights(name: str):
    """torchvision's ``IMAGENET1K_V1`` weights enum of backbone ``name`` (e.g. ``ResNet50_Weights``)."""
    return get_model_weights(name).IMAGENET1K_V1


def imagenet_file(name: str) -> Path:
    """Where torchvision keeps the ImageNet weights of ``name``: ``torch.hub.get_dir()/checkpoints/<file>``,
    the file named as in the weights' URL (``$TORCH_HOME/hub/checkpoints/resnet50-0676ba61.pth``)."""
    url = imagenet_weights(name).url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def load_imagenet_state_dict(name: str) -> dict[str, torch.Tensor]:
    """The ImageNet state dict of ``name`` from the hub cache, or downloaded into it (as torchvision does),
    each socket operation of the download limited to ``DOWNLOAD_TIMEOUT_S``; ``WeightsUnavailableError``
    naming the file and the alternatives when neither works."""
    weights = imagenet_weights(name)
    path = imagenet_file(name)
    if path.is_file():
        return load_state_dict_file(path)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        return torch.hub.load_state_dict_from_url(
            weights.url, map_location="cpu", progress=True, check_hash=True, weights_only=True
        )
    except Exception as error:  # no network, DNS failure, timeout, HTTP error, bad hash
        raise WeightsUnavailableError(
            f"model.backbone.weights=imagenet: torchvision's ImageNet weights of {name} "
            f"({type(weights).__name__}.{weights.name}) are not at {path} and could not be downloaded from "
            f"{weights.url} ({type(error).__name__}: {error}). Put that file there (TORCH_HOME sets the "
            f"cache), or pass model.backbone.weights=/path/to/file.pth (a torchvision-format {name} state "
            f"dict) or model.backbone.weights=scratch (random init, trainable BatchNorm)."
        ) from error
    finally:
        socket.setdefaulttimeout(previous)


def c2_weights(name: str) -> C2Weights:
    """maskrcnn-benchmark's Caffe2 ImageNet weights of backbone ``name``; ``ValueError`` for one without."""
    if name not in C2_WEIGHTS:
        raise ValueError(
            f"model.backbone.weights=c2: Caffe2 weights exist for {sorted(C2_WEIGHTS)}, not {name}"
        )
    return C2_WEIGHTS[name]


def c2_file(name: str) -> Path:
    """Where ``model.backbone.weights=c2`` reads the converted Caffe2 weights of ``name`` and
    ``scripts/convert_c2_weights.py`` writes them by default:
    ``torch.hub.get_dir()/checkpoints/<name>-c2.pth`` (``$TORCH_HOME/hub/checkpoints/resnet50-c2.pth``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / f"{name}-c2.pth"


def load_c2_state_dict(name: str) -> dict[str, torch.Tensor]:
    """The converted Caffe2 state dict of ``name`` from the hub cache (``c2_file``);
    ``WeightsUnavailableError`` naming the conversion command when it is not there."""
    pickle = c2_weights(name).pickle
    path = c2_file(name)
    if not path.is_file():
        raise WeightsUnavailableError(
            f"model.backbone.weights=c2: the converted Caffe2 weights of {name} are not at {path}. Convert "
            f"maskrcnn-benchmark's {pickle} (its catalog's ImageNetPretrained file) there with "
            f"`python scripts/convert_c2_weights.py {pickle}` (TORCH_HOME sets the cache)."
        )
    return load_state_dict_file(path)


def backbone_for_checkpoint(backbone: Mapping[str, Any]) -> dict[str, Any]:
    """The backbone config of a model whose weights all come from a whole-model checkpoint: the same modules
    (BatchNorm kind and trainable stages resolved from the original ``weights``, so that the checkpoint's
    state dict matches) with ``weights=scratch``, so that no ImageNet file is looked for."""
    backbone = dict(backbone)
    weights = backbone.get("weights", SCRATCH)
    if backbone.get("norm", "auto") == "auto":
        backbone["norm"] = "frozen_bn" if is_pretrained(weights) else "bn"
    if backbone.get("trainable_layers") is None:
        backbone["trainable_layers"] = 3 if is_pretrained(weights) else 5
    backbone["weights"] = SCRATCH
    return backbone


def move_stride_to_1x1_(stage: nn.Sequential) -> None:
    """Moves the stride of ``stage``'s first bottleneck from its 3x3 convolution (torchvision, "ResNet v1.5")
    to its first 1x1 convolution (MSRA's original ResNet, Caffe2 and maskrcnn-benchmark's
    ``STRIDE_IN_1X1``); the weights are unchanged, only where the subsampling happens. In place."""
    block = stage[0]
    if not hasattr(block, "conv3"):
        raise ValueError(
            "model.backbone.stride_in_1x1=true needs bottleneck blocks (resnet50, resnet101, resnext*); "
            f"got {type(block).__name__}"
        )
    block.conv1.stride, block.conv2.stride = block.conv2.stride, block.conv1.stride


def build_resnet_fpn_backbone(
    name: str = "resnet50",
    weights: str = SCRATCH,
    norm: str = "auto",
    trainable_layers: int | None = None,
    out_channels: int = 256,
    stride_in_1x1: bool = False,
) -> tuple[BackboneWithFPN, dict[str, torch.Tensor]]:
    """ResNet-FPN with ``P6 = maxpool_stride2(P5)`` as in torchvision's Mask R-CNN.

    ``out_channels`` is the pyramid width (256 in the paper and torchvision); a narrower pyramid makes every
    head that works on it (auxiliary heads, RPN, MSPwA, ROI heads) proportionally cheaper, for CPU runs.
    ``stride_in_1x1`` subsamples in the first 1x1 convolution of each stage (``move_stride_to_1x1_``), as the
    Caffe2 ``R-50.pkl`` weights were trained (maskrcnn-benchmark's ResNet-50 default, the paper's start).

    ``weights``: ``imagenet``, ``c2``, ``scratch`` or a local path (module docstring).
    Returns the backbone and the ImageNet state of its stage 5 (empty from scratch), used to initialise
    ``res5`` ROI heads. ``trainable_layers`` defaults to 3 with weights and 5 without, as in torchvision.
    """
    if name not in BACKBONES:
        raise ValueError(f"model.backbone.name must be one of {BACKBONES}; got {name!r}")
    weights = check_weights(weights)
    pretrained = is_pretrained(weights)
    # the file first: a missing one stops the run before anything is built
    state = None
    if weights == IMAGENET:
        state = load_imagenet_state_dict(name)
    elif weights == C2:
        state = load_c2_state_dict(name)
    net = get_model(name, weights=None, norm_layer=resolve_norm(norm, weights))
    if stride_in_1x1:
        for stage in (net.layer1, net.layer2, net.layer3, net.layer4):
            move_stride_to_1x1_(stage)
    stage5_state: dict[str, torch.Tensor] = {}
    if pretrained:
        if state is None:
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
    else:
        warnings.warn(
            "model.backbone.weights=scratch: the backbone starts from random initialisation, not ImageNet "
            "weights (the paper's setting), unless a whole-model checkpoint is loaded next",
            UserWarning,
            stacklevel=2,
        )
    if trainable_layers is None:
        trainable_layers = 3 if pretrained else 5
    backbone = _resnet_fpn_extractor(net, trainable_layers)
    if out_channels != backbone.out_channels:
        in_channels = [block[0].in_channels for block in backbone.fpn.inner_blocks]
        backbone.fpn = FeaturePyramidNetwork(in_channels, out_channels, extra_blocks=LastLevelMaxPool())
        backbone.out_channels = out_channels
    return backbone, stage5_state
