"""What is exported: a DATNet model's inference on one image, from raw pixels to pasted masks, returning
plain tensors (what ONNX and TorchScript take and give)."""

from collections.abc import Callable

from torch import Tensor, nn
from torchvision.models.detection.image_list import ImageList

from datnet.deploy.resize import eval_resize
from datnet.models import DATNet

OUTPUTS = ("boxes", "labels", "scores", "masks")

Runner = Callable[[Tensor], tuple[Tensor, ...]]
"""An exported detector loaded into its runtime: one float RGB image (3, H, W) in, the output tensors out."""


class SingleImageDetector(nn.Module):
    """``model``'s detections of one float RGB image ``(3, H, W)`` in [0, 1], of any size.

    The model's own normalisation and resizing (``DATNetTransform``), the dense part (backbone, auxiliary
    heads, fusion), the RPN, the ROI heads (box score threshold, NMS, detections per image as configured) and
    the postprocessing to the input's size: the tuple ``boxes`` (N, 4) xyxy in input pixels, ``labels``
    (N,) int64, ``scores`` (N,) and, for a model with a mask head, ``masks`` (N, 1, H, W) probabilities
    (``output_names``).

    This is the inference path of ``DATNet.forward`` without its extras (proposals, auxiliary maps, other
    output sizes), written out for tracing: the output size is the input's traced shape (``DATNet.forward``
    turns it into Python ints, which tracing would freeze to the example image's size), and the resize
    computes its size as eager PyTorch does (``datnet.deploy.resize``), so that the exported model takes any
    size and resamples it to the same pixels as the eager one.
    """

    def __init__(self, model: DATNet) -> None:
        super().__init__()
        if model.training:
            raise ValueError("export needs the model in eval mode: call model.eval() first")
        self.model = model
        self.eval()  # a new module is in training mode, which the exporters restore afterwards, model too
        self.output_names = OUTPUTS if model.roi_heads.has_mask() else OUTPUTS[:3]

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        model, transform = self.model, self.model.transform
        input_size = image.shape[-2:]
        image = transform.normalize(image)
        if transform.resize_images:
            image = eval_resize(image, transform.min_size[-1], transform.max_size)
        size = image.shape[-2:]
        images = ImageList(transform.batch_images([image], transform.size_divisible), [(size[0], size[1])])
        features, _, _ = model.dense_features(images.tensors)
        proposals, _ = model.rpn(images, features)
        detections, _ = model.roi_heads(features, proposals, images.image_sizes)
        output_sizes = [(input_size[0], input_size[1])]
        detection = transform.postprocess(detections, images.image_sizes, output_sizes)[0]
        return tuple(detection[name] for name in self.output_names)
