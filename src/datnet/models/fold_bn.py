"""Folding BatchNorm into the preceding convolution, for inference (Table 7 timing, ``scripts/predict.py``).

In eval mode a BatchNorm layer (torchvision's ``FrozenBatchNorm2d``, used with ImageNet weights, or a trained
``BatchNorm2d``) is a fixed per-channel affine map, ``x * scale + shift``, applied as two extra passes over
its input. Folded into the convolution before it (``W' = W * scale``, ``b' = shift + b * scale``), it costs
nothing. That matters most for the ``res5`` ROI heads, which run on every proposal: 1000 ROIs of
``1024 x 14 x 14`` for Heavy, where the unfolded BatchNorm passes took about a quarter of the head's time on
CPU. Outputs are equal up to float rounding.

``torch.ao.quantization.fuse_modules`` needs every pair named by hand and knows only ``BatchNorm2d``, not
``FrozenBatchNorm2d``; so the pairs are found here from torchvision's naming (``convN`` followed by ``bnN``
in ResNet blocks, a ``Conv2d`` followed by a BatchNorm in a ``Sequential``, such as a block's
``downsample``) and the arithmetic is torch's ``fuse_conv_bn_weights``.
"""

from collections.abc import Iterator

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights
from torchvision.ops.misc import FrozenBatchNorm2d

BATCH_NORMS = (FrozenBatchNorm2d, nn.BatchNorm2d)


def conv_bn_pairs(module: nn.Module) -> Iterator[tuple[str, str]]:
    """Names of the (convolution, BatchNorm) children of ``module`` where the BatchNorm directly follows the
    convolution in torchvision's blocks: ``convN``/``bnN`` siblings, or neighbours in a ``Sequential``."""
    children = dict(module.named_children())
    if isinstance(module, nn.Sequential):
        names = list(children)
        for conv, bn in zip(names, names[1:]):
            if isinstance(children[conv], nn.Conv2d) and isinstance(children[bn], BATCH_NORMS):
                yield conv, bn
    for name, child in children.items():
        if name.startswith("conv") and isinstance(child, nn.Conv2d):
            bn = "bn" + name[len("conv") :]
            if isinstance(children.get(bn), BATCH_NORMS):
                yield name, bn


def fold_batchnorm_(model: nn.Module) -> int:
    """Folds every BatchNorm that follows a convolution into it, replacing the BatchNorm by ``Identity``, in
    place; returns how many were folded. For inference only: the model must be in eval mode (a trainable
    BatchNorm then uses its running statistics) and must not be trained afterwards."""
    if model.training:
        raise ValueError("fold_batchnorm_ is for inference: call model.eval() first")
    folded = 0
    for module in list(model.modules()):
        for conv_name, bn_name in list(conv_bn_pairs(module)):
            conv, bn = getattr(module, conv_name), getattr(module, bn_name)
            conv.weight, conv.bias = fuse_conv_bn_weights(
                conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
            )
            setattr(module, bn_name, nn.Identity())
            folded += 1
    return folded
