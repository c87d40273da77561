"""DATNet: torchvision's Mask R-CNN with dense auxiliary tasks fused before the RPN (Sec. 3, Fig. 2)."""

from collections import OrderedDict
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes

from datnet.contract import HEAD_STRIDE, grid_shape, unpack_target
from datnet.models.auxiliary import DenseAuxiliaryTasks

PIXEL_RANGES = (1, 255)
CHANNEL_ORDERS = ("rgb", "bgr")


class DATNetTransform(GeneralizedRCNNTransform):
    """torchvision's normalise/resize/batch transform, with resizing optional, taking compact samples.

    The data pipeline resizes images itself (so that auxiliary targets are computed in its workers on exactly
    the image the model sees); it then sets ``resize_images=False``. When the transform does resize (raw
    images), dense ``dt``/``sem`` target maps, at ``aux_stride`` of the image (the auxiliary loss's stride;
    1: pixel level), are resized with nearest neighbour to that stride of the resized image (an
    approximation of the targets of the resized masks).

    Loader workers send compact samples, expanded here on the device: a uint8 image (0..255) becomes the
    float32 image ``image.float() / 255`` in [0, 1] before torchvision's normalisation (float images in
    [0, 1] pass unchanged), and a target's bit-packed ``masks_packed`` (``datnet.contract.pack_masks``)
    becomes the uint8 ``masks`` that the mask loss needs (``datnet.contract.unpack_target``).

    The normalisation is ``(image - image_mean) / image_std`` on the image as the backbone's weights expect
    it: ``pixel_range`` 1 (torchvision's ImageNet weights: RGB in [0, 1]) or 255 (Caffe2 / maskrcnn-benchmark
    weights: pixels 0..255, uint8 images taken as they are), in ``channel_order`` ``rgb`` or ``bgr`` (images
    arrive RGB; Caffe2's ``R-50.pkl`` was trained on BGR); ``image_mean``/``image_std`` are in those units
    and that order.
    """

    def __init__(
        self,
        *args,
        resize_images: bool = True,
        aux_stride: int = HEAD_STRIDE,
        pixel_range: int = 1,
        channel_order: str = "rgb",
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.aux_stride = aux_stride
        if pixel_range not in PIXEL_RANGES:
            raise ValueError(
                f"model.transform.pixel_range must be one of {PIXEL_RANGES}; got {pixel_range!r}"
            )
        if channel_order not in CHANNEL_ORDERS:
            raise ValueError(
                f"model.transform.channel_order must be one of {CHANNEL_ORDERS}; got {channel_order!r}"
            )
        self.resize_images = resize_images
        self.pixel_range = pixel_range
        self.channel_order = channel_order

    def forward(
        self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None
    ) -> tuple[ImageList, list[dict[str, Tensor]] | None]:
        """torchvision's transform on ``images`` after unpacking the targets' ``masks_packed`` (the callers'
        target dicts are left as they are)."""
        if targets is not None:
            targets = [
                unpack_target(target, int(image.shape[-1]))
                for image, target in zip(images, targets, strict=True)
            ]
        return super().forward(images, targets)

    def normalize(self, image: Tensor) -> Tensor:
        """torchvision's mean/std normalisation of a float RGB image in [0, 1] or a uint8 RGB image (0..255),
        brought first to ``pixel_range`` and ``channel_order``."""
        if image.dtype == torch.uint8:
            image = image.float() if self.pixel_range == 255 else image.float().div_(255)
        elif self.pixel_range == 255:
            image = image * 255
        if self.channel_order == "bgr":
            image = image.flip(-3)
        return super().normalize(image)

    def resize(self, image: Tensor, target: dict[str, Tensor] | None = None):
        if not self.resize_images:
            return image, target
        image, target = super().resize(image, target)
        if target is not None:
            h, w = image.shape[-2:]
            size = grid_shape(h, w, self.aux_stride)
            for key in ("dt", "sem"):
                if key in target and tuple(target[key].shape[-2:]) != size:
                    dense = target[key][None, None].float()
                    target[key] = F.interpolate(dense, size=size, mode="nearest")[0, 0].to(target[key].dtype)
        return image, target


class DATNet(GeneralizedRCNN):
    """Mask R-CNN whose pyramid is fused with the features of dense auxiliary heads before the RPN (Fig. 2).

    Assembled as torchvision assembles ``MaskRCNN`` (``GeneralizedRCNN``), from parts built by
    ``datnet.models.build_datnet``: the input ``transform``, the ``backbone`` (ResNet-FPN, Fig. 2a), the
    ``rpn`` (torchvision's or the batch top-N one, float32 box geometry: ``datnet.models.rpn``), the
    ``roi_heads`` (FPN pooling or MSPwA; 2fc, 4conv1fc or res5; Light mask heads, Heavy shared-res5 heads or
    none for Faster R-CNN, Fig. 4: ``datnet.models.roi_heads``) and ``auxiliary`` (the DT/semantic heads with
    fusion, Fig. 2b; ``None`` for plain Mask R-CNN). With ``auxiliary=None`` and torchvision's default heads
    the model is torchvision's ``MaskRCNN``: same modules, same state dict, same outputs.

    The dense part (backbone, auxiliary heads and losses, fusion) is one method, ``dense_features``, which
    ``datnet.models.compile_dense_`` compiles as one graph into ``_compiled_dense_features``; ``forward`` uses
    that when it is set. The RPN and ROI heads (data-dependent shapes, NMS) always run eagerly.
    """

    _compiled_dense_features: Callable | None = None

    def __init__(
        self,
        backbone: nn.Module,
        rpn: RegionProposalNetwork,
        roi_heads: RoIHeads,
        transform: DATNetTransform,
        auxiliary: DenseAuxiliaryTasks | None = None,
    ) -> None:
        if auxiliary is not None and transform.aux_stride != auxiliary.loss_stride:
            raise ValueError(
                f"the transform resizes dense targets to stride {transform.aux_stride}, the auxiliary loss "
                f"is taken at stride {auxiliary.loss_stride}"
            )
        super().__init__(backbone, rpn, roi_heads, transform)
        self.auxiliary = auxiliary

    def dense_features(
        self,
        tensors: Tensor,
        targets: dict[str, Tensor] | None = None,
        return_aux_maps: bool = False,
    ) -> tuple["OrderedDict[str, Tensor]", dict[str, Tensor], dict[str, Tensor]]:
        """The dense part of Fig. 2 on a padded image batch ``(B, 3, H, W)``: the pyramid ``P2..P6`` of the
        backbone (Fig. 2a), the DT and semantic heads with their weighted losses ``w1 * L_DT``,
        ``w2 * L_seg`` when ``targets`` are given (Sec. 3.1, eqs. 1-3) and their softmax maps if asked, and
        the fusion of their features into the pyramid (Sec. 3.3, Fig. 2b). Returns the fused pyramid (an
        ordered dict, finest first), the losses and the maps; without auxiliary heads, the backbone's pyramid
        and two empty dicts. ``targets`` come from ``batched_aux_targets``."""
        features = self.backbone(tensors)
        if self.auxiliary is None:
            return features, {}, {}
        return self.auxiliary(features, targets, return_aux_maps)

    def batched_aux_targets(
        self,
        targets: list[dict[str, Tensor]] | None,
        image_sizes: list[tuple[int, int]],
        padded_size: torch.Size,
    ) -> dict[str, Tensor] | None:
        """The auxiliary heads' targets for ``dense_features``: in training, each head's dense maps (``dt``,
        ``sem``) of the images of ``image_sizes`` stacked to ``(B, H/s, W/s)`` of the padded batch
        ``padded_size`` (H, W) at the auxiliary loss's stride ``s`` (``model.aux.loss_stride``; 1: the padded
        image, where the heads' logits are upsampled to), the padding filled with the ignore label (Sec. 3.1);
        ``None`` in inference or without heads. Built eagerly, so that a compiled dense part sees one tensor
        per head whatever the number and sizes of the images in the batch."""
        if not self.training or self.auxiliary is None or targets is None:
            return None
        return self.auxiliary.batch_targets(targets, image_sizes, padded_size)

    @property
    def dense_part(self) -> Callable:
        """``dense_features``, or its compiled form once ``datnet.models.compile_dense_`` was applied: what
        ``forward`` (and test-time augmentation) runs."""
        return self._compiled_dense_features or self.dense_features

    def __getstate__(self) -> dict:
        """Pickled and deep-copied without the compiled dense part (as ``nn.Module.compile`` does): it is
        bound to this instance, so a copy runs eagerly until it is compiled again."""
        state = super().__getstate__()
        state.pop("_compiled_dense_features", None)
        return state

    def forward(
        self,
        images: list[Tensor],
        targets: list[dict[str, Tensor]] | None = None,
        *,
        return_proposals: bool = False,
        return_aux_maps: bool = False,
        output_sizes: list[tuple[int, int]] | None = None,
    ):
        """Training: the loss dict (Mask R-CNN terms plus ``loss_dt``/``loss_seg``, already weighted, so their
        sum is eq. 3). Inference: torchvision's list of detection dicts; ``return_proposals`` adds the RPN
        ``proposals`` (in input-image coordinates, by objectness) and ``return_aux_maps`` the softmax maps
        ``dt``/``sem`` at stride 4 of the (transformed) image. Boxes, masks and proposals are given for images
        of ``output_sizes`` (default: the input sizes), e.g. the original files' sizes when the data pipeline
        has resized them, so that masks are pasted once at the resolution the evaluation needs."""
        if self.training and targets is None:
            raise ValueError("targets are required in training mode")
        if output_sizes is None:
            output_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        output_sizes = [(int(h), int(w)) for h, w in output_sizes]
        image_list, targets = self.transform(images, targets)
        dense_features = self.dense_part
        aux_targets = self.batched_aux_targets(targets, image_list.image_sizes, image_list.tensors.shape[-2:])
        features, aux_losses, aux_maps = dense_features(image_list.tensors, aux_targets, return_aux_maps)
        proposals, proposal_losses = self.rpn(image_list, features, targets)
        detections, detector_losses = self.roi_heads(features, proposals, image_list.image_sizes, targets)
        if self.training:
            return {**detector_losses, **proposal_losses, **aux_losses}
        detections = self.transform.postprocess(detections, image_list.image_sizes, output_sizes)
        for i, (det, size, output_size) in enumerate(zip(detections, image_list.image_sizes, output_sizes)):
            if return_proposals:
                det["proposals"] = resize_boxes(proposals[i], size, output_size)
            for key, value in aux_maps.items():
                h, w = grid_shape(*size, HEAD_STRIDE)
                det[key] = value[i, :, :h, :w]
        return detections
