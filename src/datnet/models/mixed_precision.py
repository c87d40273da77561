"""Mixed precision (``bf16-mixed`` / ``16-mixed`` autocast) without low-precision box geometry.

torchvision's anchor generator takes the feature maps' dtype and its box coder the regression output's
dtype, so under autocast anchors, proposals and boxes are bfloat16 (or float16): on an 800 x 1216 image
bfloat16 keeps only multiples of 8 past x = 1024, anchors are off by up to 7 px, and the RPN matching, the
ROI sampling's IoUs, the regression targets and the final boxes inherit the error. Here the box geometry is
at least float32 whatever the activations' dtype; in float32 (and float64) every result is torchvision's,
bit for bit. The model is built with them (``datnet.models.build``): a ``Float32AnchorGenerator`` in the RPN,
and a ``Float32BoxCoder`` in the RPN (``datnet.models.rpn``) and in the ROI heads
(``datnet.models.roi_heads``).

Everything downstream then follows in float32: the RPN's anchor matching (``box_iou`` of float32 ground
truth and anchors), its regression targets, the proposals ``filter_proposals`` returns, the ROI sampling's
matching and targets (ground-truth boxes are cast to the proposals' dtype), the detections of
``postprocess_detections``; the smooth-L1 regression losses get float32 targets and are computed in float32
(autocast runs ``smooth_l1_loss`` in float32). None of them holds state: the state dict is torchvision's.

torchvision's ``FrozenBatchNorm2d`` multiplies by its float32 buffers and so turns low-precision
activations back into float32 under autocast: every convolution after it re-casts its input, undoing the
precision saving of a backbone with frozen (ImageNet) BatchNorm. ``AutocastFrozenBatchNorm2d`` keeps the
input's dtype.
"""

import torch
from torch import Tensor
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops.misc import FrozenBatchNorm2d


def geometry_dtype(*tensors: Tensor) -> torch.dtype:
    """The dtype box arithmetic runs in: the tensors' promoted dtype, at least float32."""
    dtype = torch.float32
    for tensor in tensors:
        dtype = torch.promote_types(dtype, tensor.dtype)
    return dtype


class Float32AnchorGenerator(AnchorGenerator):
    """torchvision's ``AnchorGenerator`` whose anchors are at least float32, whatever the dtype of the
    feature maps (torchvision's takes theirs: bfloat16 anchors under ``bf16-mixed``)."""

    def set_cell_anchors(self, dtype: torch.dtype, device: torch.device) -> None:
        super().set_cell_anchors(torch.promote_types(dtype, torch.float32), device)


class Float32BoxCoder(BoxCoder):
    """torchvision's ``BoxCoder`` encoding and decoding in at least float32: regression targets from boxes,
    and boxes from regression deltas (torchvision's decodes in the deltas' dtype: bfloat16 under
    ``bf16-mixed``)."""

    def encode_single(self, reference_boxes: Tensor, proposals: Tensor) -> Tensor:
        dtype = geometry_dtype(reference_boxes, proposals)
        return super().encode_single(reference_boxes.to(dtype), proposals.to(dtype))

    def decode_single(self, rel_codes: Tensor, boxes: Tensor) -> Tensor:
        dtype = geometry_dtype(rel_codes, boxes)
        return super().decode_single(rel_codes.to(dtype), boxes.to(dtype))


class AutocastFrozenBatchNorm2d(FrozenBatchNorm2d):
    """torchvision's ``FrozenBatchNorm2d`` (same buffers and state-dict keys) returning its input's dtype.

    It computes ``x * scale + shift`` with ``scale = weight / sqrt(running_var + eps)`` and
    ``shift = bias - running_mean * scale`` in float32, cast to the input's dtype: bfloat16 activations stay
    bfloat16 under autocast (as with ``nn.BatchNorm2d``); for float32 input it is torchvision's layer bit
    for bit."""

    def forward(self, x: Tensor) -> Tensor:
        weight, bias = self.weight.reshape(1, -1, 1, 1), self.bias.reshape(1, -1, 1, 1)
        mean, var = self.running_mean.reshape(1, -1, 1, 1), self.running_var.reshape(1, -1, 1, 1)
        scale = weight * (var + self.eps).rsqrt()
        shift = bias - mean * scale
        return x * scale.to(x.dtype) + shift.to(x.dtype)
