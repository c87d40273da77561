"""Builds DATNet from the values of ``conf/model/*.yaml``: every switch of the paper is an argument here."""

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign

from datnet.models.aux_heads import DistanceTransformHead, SemanticHead
from datnet.models.auxiliary import DenseAuxiliaryTasks
from datnet.models.backbone import (
    SCRATCH,
    backbone_for_checkpoint,
    build_resnet_fpn_backbone,
    move_stride_to_1x1_,
    resolve_norm,
)
from datnet.models.checkpoint import load_model_checkpoint
from datnet.models.datnet import DATNet
from datnet.models.fusion import FeatureFusion
from datnet.models.mixed_precision import use_float32_box_geometry_
from datnet.models.mspwa import MultiScaleAttentionPooler
from datnet.models.roi_feature_extractors import build_box_head, build_res5
from datnet.models.rpn import BatchTopNRegionProposalNetwork

POOLED_LEVELS = ["0", "1", "2", "3"]
MASK_HEADS = ("fpn", "res5", "none")


def build_pooler(
    kind: str, pool_size: int, sampling_ratio: int = 2, channels: int = 256
) -> tuple[nn.Module, int]:
    """FPN level assignment (``fpn``) or MSPwA (``mspwa``) over P2..P5 of ``channels`` channels, and its
    output channels."""
    if kind == "fpn":
        return MultiScaleRoIAlign(POOLED_LEVELS, pool_size, sampling_ratio), channels
    if kind == "mspwa":
        pooler = MultiScaleAttentionPooler(POOLED_LEVELS, pool_size, sampling_ratio, channels)
        return pooler, pooler.out_channels
    raise ValueError(f"model.pooler must be fpn or mspwa; got {kind!r}")


def build_auxiliary(
    num_classes: int,
    dt: bool = True,
    seg: bool = True,
    dt_weight: float = 0.25,
    seg_weight: float = 0.25,
    dt_bins: int = 4,
    background_alpha: float = 0.2,
    gamma: float = 2.0,
    ignore_index: int = 255,
    loss_stride: int = 4,
    fusion: str = "sum",
    channels: int = 256,
) -> DenseAuxiliaryTasks | None:
    """The auxiliary branch for the enabled heads, or ``None`` when both are off (plain Mask R-CNN).
    ``loss_stride``: 1 takes the auxiliary loss at the image's resolution (the paper presets), 4 at the
    heads' (``DenseAuxiliaryTasks``)."""
    heads = {}
    if dt:
        heads["dt"] = DistanceTransformHead(dt_bins, channels)
    if seg:
        heads["sem"] = SemanticHead(num_classes, channels)
    if not heads:
        if fusion != "sum":
            raise ValueError(f"model.fusion={fusion} needs model.aux.dt or model.aux.seg enabled")
        return None
    return DenseAuxiliaryTasks(
        heads,
        FeatureFusion(fusion, channels),
        {"dt": dt_weight, "sem": seg_weight},
        background_alpha,
        gamma,
        ignore_index,
        loss_stride,
    )


def build_datnet(
    num_classes: int = 81,
    backbone: Mapping[str, Any] | None = None,
    aux: Mapping[str, Any] | None = None,
    fusion: str = "sum",
    pooler: str = "fpn",
    box_head: str = "2fc",
    mask_head: str = "fpn",
    box_pool_size: int = 7,
    mask_pool_size: int = 14,
    sampling_ratio: int = 2,
    resize_images: bool = True,
    checkpoint: str | None = None,
    checkpoint_strict: bool = True,
    transform: Mapping[str, Any] | None = None,
    detector: Mapping[str, Any] | None = None,
    label_to_category_id: Mapping[int, int] | None = None,
    class_names: Sequence[str] | None = None,
) -> DATNet:
    """DATNet from config values.

    Light (Fig. 4 left): ``pooler=mspwa, box_head=res5, mask_head=fpn, box_pool_size=7, mask_pool_size=14``.
    Heavy (Fig. 4 right): ``pooler=mspwa, box_head=res5, mask_head=res5, box_pool_size=14`` - one MSPwA and
    one res5 shared by the box and mask branches; the mask is a deconv + 1x1 conv giving 14x14.
    All off (``aux.dt=aux.seg=false, pooler=fpn, box_head=2fc, mask_head=fpn``) is torchvision's Mask R-CNN.
    ``detector`` passes torchvision ``MaskRCNN`` keyword arguments (``min_size``,
    ``box_batch_size_per_image``, ...), and ``rpn_post_nms_per_batch``: the RPN's training top N counts over
    the batch (``datnet.models.rpn``). ``backbone["weights"]`` is ``imagenet``, ``scratch`` (the default
    here) or a local path (``datnet.models.backbone``); ``backbone["stride_in_1x1"]`` moves each stage's
    stride into its first 1x1 convolution (Caffe2 weights), in the backbone and in a res5 head alike.
    ``transform`` sets the input normalisation: ``image_mean``, ``image_std``, ``pixel_range`` (1 or 255)
    and ``channel_order`` (``rgb`` or ``bgr``) (``DATNetTransform``). ``checkpoint`` loads a whole-model
    state dict from a local file (``datnet.models.checkpoint``: strictly, or with ``checkpoint_strict=False``
    every matching tensor, logging the others); the backbone is then built from scratch, with the BatchNorm
    kind that ``weights`` implies. ``label_to_category_id`` and ``class_names`` (the data module's) map a
    torchvision COCO detector's 91 category indices onto the model's labels.
    """
    backbone_cfg = dict(backbone or {})
    if checkpoint:  # every weight comes from the checkpoint: no ImageNet file is looked for
        backbone_cfg = backbone_for_checkpoint(backbone_cfg)
    arch = backbone_cfg.get("name", "resnet50")
    fpn, stage5_state = build_resnet_fpn_backbone(**backbone_cfg)
    norm_layer = resolve_norm(backbone_cfg.get("norm", "auto"), backbone_cfg.get("weights", SCRATCH))
    if mask_head not in MASK_HEADS:
        raise ValueError(f"model.mask_head must be one of {MASK_HEADS}; got {mask_head!r}")

    channels = fpn.out_channels
    box_pool, pooled_channels = build_pooler(pooler, box_pool_size, sampling_ratio, channels)
    res5 = build_res5(arch, pooled_channels, norm_layer, stage5_state) if box_head == "res5" else None
    if res5 is not None and backbone_cfg.get("stride_in_1x1", False):
        move_stride_to_1x1_(res5)
    box_extractor, representation = build_box_head(box_head, pooled_channels, box_pool_size, res5)
    heads: dict[str, Any] = {
        "box_roi_pool": box_pool,
        "box_head": box_extractor,
        "box_predictor": FastRCNNPredictor(representation, num_classes),
    }
    if mask_head == "res5":
        if res5 is None:
            raise ValueError(
                "model.mask_head=res5 (Heavy) shares the box head's res5: set model.box_head=res5"
            )
        heads.update(
            mask_roi_pool=box_pool,
            mask_head=res5,
            mask_predictor=MaskRCNNPredictor(representation, channels, num_classes),
        )
    elif mask_head == "fpn":
        mask_pool, mask_channels = build_pooler(pooler, mask_pool_size, sampling_ratio, channels)
        heads.update(
            mask_roi_pool=mask_pool,
            mask_head=MaskRCNNHeads(mask_channels, [channels] * 4, 1),
            mask_predictor=MaskRCNNPredictor(channels, channels, num_classes),
        )
    else:
        heads["mask_roi_pool"] = False

    detector = dict(detector or {})
    rpn_post_nms_per_batch = detector.pop("rpn_post_nms_per_batch", False)
    model = DATNet(
        fpn,
        auxiliary=build_auxiliary(num_classes, fusion=fusion, channels=channels, **dict(aux or {})),
        resize_images=resize_images,
        **heads,
        **transform_kwargs(transform, detector),
        **dict(detector or {}),
    )
    if rpn_post_nms_per_batch:
        model.rpn = BatchTopNRegionProposalNetwork.from_rpn(model.rpn)
    use_float32_box_geometry_(model)
    if checkpoint:
        load_model_checkpoint(model, checkpoint, checkpoint_strict, label_to_category_id, class_names)
    return model


def transform_kwargs(
    transform: Mapping[str, Any] | None, detector: Mapping[str, Any] | None
) -> dict[str, Any]:
    """``DATNet`` keyword arguments of the input normalisation ``transform`` (``image_mean``, ``image_std``,
    ``pixel_range``, ``channel_order``); the mean and std belong there, not in ``detector``."""
    for key in ("image_mean", "image_std"):
        if key in (detector or {}):
            raise ValueError(f"set model.transform.{key}, not model.detector.{key}")
    return dict(transform or {})
