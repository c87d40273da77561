"""Initialisation of the layers that do not start from ImageNet weights (``model.init``).

``torchvision`` keeps what the modules set when built: torchvision's initialisation of its detection heads and
PyTorch's defaults elsewhere. ``maskrcnn_benchmark`` (the paper presets) re-initialises, after the build, the
layers that maskrcnn-benchmark [23] initialises otherwise, and gives DATNet's own layers the rule of the
maskrcnn-benchmark layer of the same kind:

- box predictor (``roi_heads/box_head/roi_box_predictors.py``, ``FPNPredictor`` and ``FastRCNNPredictor``):
  class scores from N(0, 0.01), box deltas from N(0, 0.001), biases 0 (torchvision: PyTorch's ``Linear``);
- fully connected layers (``make_layers.py`` ``make_fc``: the 2fc head's ``fc6``/``fc7``, the 4conv1fc head's
  ``fc6``): ``kaiming_uniform_(a=1)``, bias 0 (torchvision: PyTorch's ``Linear``);
- the 4conv1fc head's convolutions (``roi_box_feature_extractors.py`` ``FPNXconv1fcFeatureExtractor``):
  N(0, 0.01), bias 0 (torchvision: ``kaiming_normal_`` fan-out);
- the mask predictor (``roi_heads/mask_head/roi_mask_predictors.py`` ``MaskRCNNC4Predictor``): biases 0 (its
  ``kaiming_normal_`` fan-out weights are torchvision's too; torchvision keeps PyTorch's default biases);
- DATNet's 3x3 convolutions (auxiliary heads, their final layer included, and the fusion convolutions of
  ``sum2conv``/``sum4conv``): ``make_conv3x3``'s ``kaiming_normal_`` fan-out (ReLU), bias 0,
  maskrcnn-benchmark's rule for its 3x3 head convolutions (and detectron2's for the Panoptic FPN semantic
  head the auxiliary heads follow [15]);
- the SE layer of MSPwA, two 1x1 convolutions that are its fully connected layers [14]: ``make_fc``'s
  ``kaiming_uniform_(a=1)``, bias 0;
- the convolutions of a res5 head that do not come from ImageNet (the first block's ``conv1`` and
  ``downsample`` when res5 takes FPN's 256 channels, Table 3's "no MSPwA, res5"; all of them from scratch):
  its ResNet rule (``backbone/resnet.py``, ``Bottleneck``), ``kaiming_uniform_(a=1)`` (torchvision:
  PyTorch's default, as ``ResNet._make_layer`` builds them after ``ResNet``'s own initialisation); applied by
  ``datnet.models.roi_feature_extractors.build_res5``, which knows which tensors it filled.

Already maskrcnn-benchmark's in torchvision, and left alone: the FPN (``kaiming_uniform_(a=1)``, bias 0), the
RPN head (N(0, 0.01), bias 0), the FPN mask head's convolutions and the mask predictor's weights
(``kaiming_normal_`` fan-out). A backbone from scratch (``weights=scratch``, not a paper setting) keeps
torchvision's ResNet initialisation.
"""

from torch import nn
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor
from torchvision.ops import SqueezeExcitation

from datnet.models.aux_heads import DenseAuxHead
from datnet.models.fusion import FeatureFusion

INIT_SCHEMES = ("torchvision", "maskrcnn_benchmark")


def make_fc_init_(layer: nn.Linear | nn.Conv2d) -> None:
    """maskrcnn-benchmark's ``make_fc``: ``kaiming_uniform_(a=1)`` weights, zero bias."""
    nn.init.kaiming_uniform_(layer.weight, a=1)
    nn.init.zeros_(layer.bias)


def resnet_conv_init_(conv: nn.Conv2d) -> None:
    """maskrcnn-benchmark's ResNet convolutions (``backbone/resnet.py``): ``kaiming_uniform_(a=1)``."""
    nn.init.kaiming_uniform_(conv.weight, a=1)


def make_conv3x3_init_(conv: nn.Conv2d) -> None:
    """maskrcnn-benchmark's ``make_conv3x3`` (``kaiming_init=True``): ``kaiming_normal_`` fan-out weights for
    a ReLU, zero bias."""
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    nn.init.zeros_(conv.bias)


def normal_init_(layer: nn.Module, std: float) -> None:
    """Weights from N(0, ``std``), zero bias (maskrcnn-benchmark's predictors and 4conv1fc convolutions)."""
    nn.init.normal_(layer.weight, std=std)
    nn.init.zeros_(layer.bias)


def maskrcnn_benchmark_init_(model: nn.Module) -> None:
    """Re-initialise the layers of ``model`` (a built DATNet) as the module docstring lists. In place."""
    for module in model.modules():
        if isinstance(module, FastRCNNPredictor):
            normal_init_(module.cls_score, 0.01)
            normal_init_(module.bbox_pred, 0.001)
        elif isinstance(module, TwoMLPHead):
            make_fc_init_(module.fc6)
            make_fc_init_(module.fc7)
        elif isinstance(module, FastRCNNConvFCHead):
            for layer in module.modules():
                if isinstance(layer, nn.Conv2d):
                    normal_init_(layer, 0.01)
                elif isinstance(layer, nn.Linear):
                    make_fc_init_(layer)
        elif isinstance(module, MaskRCNNPredictor):
            nn.init.zeros_(module.conv5_mask.bias)
            nn.init.zeros_(module.mask_fcn_logits.bias)
        elif isinstance(module, DenseAuxHead | FeatureFusion):
            for layer in module.modules():
                if isinstance(layer, nn.Conv2d):
                    make_conv3x3_init_(layer)
        elif isinstance(module, SqueezeExcitation):
            make_fc_init_(module.fc1)
            make_fc_init_(module.fc2)


def initialise_(model: nn.Module, scheme: str) -> None:
    """Initialise ``model``'s new layers by ``scheme`` (``model.init``: ``torchvision`` leaves them as built,
    ``maskrcnn_benchmark`` applies ``maskrcnn_benchmark_init_``). In place."""
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"model.init must be one of {INIT_SCHEMES}; got {scheme!r}")
    if scheme == "maskrcnn_benchmark":
        maskrcnn_benchmark_init_(model)
