"""Builds DATNet from the values of ``conf/model/*.yaml``: every switch of the paper is an argument here."""

import difflib
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn
from torchvision.models import ResNet50_Weights
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign

from datnet.contract import HEAD_STRIDE
from datnet.models.aux_heads import DistanceTransformHead, SemanticHead
from datnet.models.auxiliary import DenseAuxiliaryTasks
from datnet.models.backbone import (
    C2,
    C2_TRANSFORM,
    SCRATCH,
    backbone_for_checkpoint,
    build_resnet_fpn_backbone,
    c2_weights,
    move_stride_to_1x1_,
    resolve_norm,
)
from datnet.models.checkpoint import load_model_checkpoint
from datnet.models.datnet import DATNet, DATNetTransform
from datnet.models.fusion import FeatureFusion
from datnet.models.init import initialise_
from datnet.models.mixed_precision import Float32AnchorGenerator
from datnet.models.mspwa import MultiScaleAttentionPooler
from datnet.models.roi_feature_extractors import build_box_head, build_res5
from datnet.models.roi_heads import TORCHVISION_BOX_BETA, Float32RoIHeads, SharedRes5RoIHeads
from datnet.models.rpn import BatchTopNRegionProposalNetwork, Float32RegionProposalNetwork

POOLED_LEVELS = ["0", "1", "2", "3"]
MASK_HEADS = ("fpn", "res5", "none")
# ``model.detector``: torchvision's ``MaskRCNN`` keyword arguments with its defaults, less the modules (built
# here) and ``image_mean``/``image_std`` (``model.transform``); and the settings of its transform
# (``size_divisible``, ``fixed_size``), which ``MaskRCNN`` passes on to ``GeneralizedRCNNTransform``.
BUILT_HERE = {"num_classes", "image_mean", "image_std", "rpn_anchor_generator", "rpn_head"} | {
    f"{branch}_{part}" for branch in ("box", "mask") for part in ("roi_pool", "head", "predictor")
}
DETECTOR_DEFAULTS = {
    name: p.default
    for name, p in inspect.signature(MaskRCNN.__init__).parameters.items()
    if p.default is not p.empty and name not in BUILT_HERE
}
# ``model.detector`` settings of our RPN and ROI heads beyond ``MaskRCNN``'s, at torchvision's behaviour:
# maskrcnn-benchmark's batch top N (``datnet.models.rpn``), its straddling anchors (``RPN.STRADDLE_THRESH``,
# 0 there) and its box head's smooth-L1 beta (1 there; ``datnet.models.roi_heads``).
EXTRA_DETECTOR_DEFAULTS = {
    "rpn_post_nms_per_batch": False,
    "rpn_straddle_thresh": -1.0,
    "box_smooth_l1_beta": TORCHVISION_BOX_BETA,
}
# ``model.aux`` settings of the targets, which the data pipeline reads (``data.aux_image_border_is_boundary``
# follows ``model.aux.image_border_is_boundary``, ``datnet.data.aux_targets``), not the model
DATA_AUX_SETTINGS = ("image_border_is_boundary",)
TRANSFORM_SETTINGS = tuple(
    name
    for name, p in inspect.signature(GeneralizedRCNNTransform.__init__).parameters.items()
    if p.default is not p.empty
)
# FPN's anchors (Lin et al., CVPR 2017, Sec. 4.1), those of the paper's maskrcnn-benchmark settings [10, 23]
# (RPN.ANCHOR_SIZES, RPN.ASPECT_RATIOS): one size per level P2..P6, 32 to 512 px, ratios 1:2, 1:1, 2:1.
# torchvision's MaskRCNN has the same default, under a private name only (``faster_rcnn._default_anchorgen``):
# tests/models/test_rpn.py pins the equality.
ANCHOR_SIZES = ((32,), (64,), (128,), (256,), (512,))
ANCHOR_ASPECT_RATIOS = ((0.5, 1.0, 2.0),) * len(ANCHOR_SIZES)


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


# the ``model.aux`` settings of the model: ``build_auxiliary``'s, but those build_datnet gives it itself
AUX_SETTINGS = tuple(
    name
    for name in inspect.signature(build_auxiliary).parameters
    if name not in ("num_classes", "fusion", "channels")
)


def build_datnet(
    num_classes: int | None = 81,
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
    init: str = "torchvision",
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
    ``detector`` overrides torchvision ``MaskRCNN``'s keyword settings (``min_size``,
    ``box_batch_size_per_image``, ..., ``size_divisible``; an unknown name is an error), and sets
    ``rpn_post_nms_per_batch`` (the RPN's training top N counts over the batch), ``rpn_straddle_thresh`` (the
    anchors crossing the image border left out of its loss; ``datnet.models.rpn``) and ``box_smooth_l1_beta``
    (the box regression loss, ``datnet.models.roi_heads``). The
    RPN and ROI heads are built with those settings as ``MaskRCNN`` builds them, with float32 box geometry
    (``datnet.models.mixed_precision``), Heavy's as ``SharedRes5RoIHeads`` (``datnet.models.roi_heads``).
    ``backbone["weights"]`` is ``imagenet``, ``c2``, ``scratch`` (the default here) or a local path
    (``datnet.models.backbone``); ``backbone["stride_in_1x1"]`` moves each stage's stride into its first 1x1
    convolution (Caffe2 weights), in the backbone and in a res5 head alike.
    ``transform`` sets the input normalisation: ``image_mean``, ``image_std``, ``pixel_range`` (1 or 255)
    and ``channel_order`` (``rgb`` or ``bgr``) (``DATNetTransform``); ``weights=c2`` (maskrcnn-benchmark's
    Caffe2 ImageNet file) sets them, and ``stride_in_1x1``, as that file was trained
    (``with_weights_conventions``).
    ``init`` initialises the layers that do not come from ImageNet (``datnet.models.init``: ``torchvision``
    or ``maskrcnn_benchmark``). ``aux["image_border_is_boundary"]`` is the data pipeline's (the DT targets'
    border rule) and is not used here. ``checkpoint`` loads a whole-model state dict from a local file
    (``datnet.models.checkpoint``: strictly, or with ``checkpoint_strict=False`` every matching tensor,
    logging the others); the backbone is then built from scratch, with the BatchNorm
    kind that ``weights`` implies. ``label_to_category_id`` and ``class_names`` (the data module's) map a
    torchvision COCO detector's 91 category indices onto the model's labels.
    """
    settings, transform_settings = detector_settings(detector)
    backbone_cfg, transform = with_weights_conventions(dict(backbone or {}), transform)
    if checkpoint:  # every weight comes from the checkpoint: no ImageNet file is looked for
        backbone_cfg = backbone_for_checkpoint(backbone_cfg)
    arch = backbone_cfg.get("name", "resnet50")
    fpn, stage5_state = build_resnet_fpn_backbone(**backbone_cfg)
    norm_layer = resolve_norm(backbone_cfg.get("norm", "auto"), backbone_cfg.get("weights", SCRATCH))
    if mask_head not in MASK_HEADS:
        raise ValueError(f"model.mask_head must be one of {MASK_HEADS}; got {mask_head!r}")

    channels = fpn.out_channels
    box_pool, pooled_channels = build_pooler(pooler, box_pool_size, sampling_ratio, channels)
    res5 = build_res5(arch, pooled_channels, norm_layer, stage5_state, init) if box_head == "res5" else None
    if res5 is not None and backbone_cfg.get("stride_in_1x1", False):
        move_stride_to_1x1_(res5)
    box_extractor, representation = build_box_head(box_head, pooled_channels, box_pool_size, res5)
    if num_classes is None:
        raise ValueError(
            "model.num_classes is null: the run sets it from the data (its categories + background); "
            "building the model alone needs it, e.g. model.num_classes=81 (COCO)"
        )
    box = (box_pool, box_extractor, FastRCNNPredictor(representation, num_classes), *box_settings(settings))
    beta = settings["box_smooth_l1_beta"]
    if mask_head == "res5":
        if res5 is None:
            raise ValueError(
                "model.mask_head=res5 (Heavy) shares the box head's res5: set model.box_head=res5"
            )
        predictor = MaskRCNNPredictor(representation, channels, num_classes)
        roi_heads: Float32RoIHeads = SharedRes5RoIHeads(
            *box, mask_predictor=predictor, box_smooth_l1_beta=beta
        )
    elif mask_head == "fpn":
        mask_pool, mask_channels = build_pooler(pooler, mask_pool_size, sampling_ratio, channels)
        roi_heads = Float32RoIHeads(
            *box,
            mask_roi_pool=mask_pool,
            mask_head=MaskRCNNHeads(mask_channels, [channels] * 4, 1),
            mask_predictor=MaskRCNNPredictor(channels, channels, num_classes),
            box_smooth_l1_beta=beta,
        )
    else:
        roi_heads = Float32RoIHeads(*box, box_smooth_l1_beta=beta)

    aux_settings = {k: v for k, v in (aux or {}).items() if k not in DATA_AUX_SETTINGS}
    check_settings("model.aux", aux_settings, AUX_SETTINGS)
    auxiliary = build_auxiliary(num_classes, fusion=fusion, channels=channels, **aux_settings)
    model = DATNet(
        fpn,
        build_rpn(channels, settings),
        roi_heads,
        build_transform(
            settings,
            transform_settings,
            transform,
            resize_images,
            auxiliary.loss_stride if auxiliary is not None else HEAD_STRIDE,
        ),
        auxiliary,
    )
    initialise_(model, init)
    if checkpoint:
        load_model_checkpoint(model, checkpoint, checkpoint_strict, label_to_category_id, class_names)
    return model


def with_weights_conventions(
    backbone: dict[str, Any], transform: Mapping[str, Any] | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``model.backbone`` and ``model.transform`` as the backbone's weights need them: for ``weights=c2``,
    maskrcnn-benchmark's Caffe2 file, the stride placement (``C2Weights.stride_in_1x1``) and the input
    (``C2_TRANSFORM``) it was trained with, over the configured ones; otherwise as configured."""
    transform = dict(transform or {})
    if backbone.get("weights") != C2:
        return backbone, transform
    stride_in_1x1 = c2_weights(backbone.get("name", "resnet50")).stride_in_1x1
    return {**backbone, "stride_in_1x1": stride_in_1x1}, {**transform, **C2_TRANSFORM}


def detector_settings(detector: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``model.detector`` over torchvision's defaults (``DETECTOR_DEFAULTS``, ``EXTRA_DETECTOR_DEFAULTS``),
    and its transform settings (``TRANSFORM_SETTINGS``)."""
    detector = dict(detector or {})
    for key in ("image_mean", "image_std"):
        if key in detector:
            raise ValueError(f"set model.transform.{key}, not model.detector.{key}")
    transform = {key: detector.pop(key) for key in TRANSFORM_SETTINGS if key in detector}
    settings = {**DETECTOR_DEFAULTS, **EXTRA_DETECTOR_DEFAULTS}
    check_settings("model.detector", detector, settings)
    return {**settings, **detector}, transform


def check_settings(section: str, given: Mapping[str, Any], known: Sequence[str] | Mapping[str, Any]) -> None:
    """Raises ``ValueError`` naming each setting of ``section`` (a config key) that is not ``known``, with
    the closest known ones (a ``+model.aux.dtt=true`` on the command line ends here)."""
    unknown = sorted(set(given) - set(known))
    if not unknown:
        return
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(key, list(known), n=2, cutoff=0.6)
        hints.append(
            f"{section}.{key}"
            + (f" (did you mean {', '.join(f'{section}.{c}' for c in close)}?)" if close else "")
        )
    raise ValueError(f"unknown settings: {'; '.join(hints)}; known: {sorted(known)}")


def box_settings(settings: Mapping[str, Any]) -> tuple[Any, ...]:
    """The box branch's ``RoIHeads`` arguments after the modules (``fg_iou_thresh`` ...
    ``detections_per_img``), as ``MaskRCNN`` passes them: ROI sampling, box coding, post-processing."""
    names = ("fg_iou_thresh", "bg_iou_thresh", "batch_size_per_image", "positive_fraction")
    return (
        *(settings[f"box_{name}"] for name in names),
        settings["bbox_reg_weights"],
        settings["box_score_thresh"],
        settings["box_nms_thresh"],
        settings["box_detections_per_img"],
    )


def build_rpn(channels: int, settings: Mapping[str, Any]) -> Float32RegionProposalNetwork:
    """The RPN over pyramid levels of ``channels`` channels as ``MaskRCNN`` builds it from ``settings``
    (``rpn_*``), with float32 anchors and box coding (``datnet.models.mixed_precision``), keeping in training
    the ``rpn_post_nms_top_n_train`` best proposals of the batch if ``rpn_post_nms_per_batch``, of each image
    otherwise, and leaving the anchors that cross the image border by more than ``rpn_straddle_thresh``
    pixels out of the loss when it is >= 0 (``datnet.models.rpn``)."""
    anchors = Float32AnchorGenerator(ANCHOR_SIZES, ANCHOR_ASPECT_RATIOS)
    per_batch = settings["rpn_post_nms_per_batch"]
    rpn = BatchTopNRegionProposalNetwork if per_batch else Float32RegionProposalNetwork
    return rpn(
        anchors,
        RPNHead(channels, anchors.num_anchors_per_location()[0]),
        settings["rpn_fg_iou_thresh"],
        settings["rpn_bg_iou_thresh"],
        settings["rpn_batch_size_per_image"],
        settings["rpn_positive_fraction"],
        {"training": settings["rpn_pre_nms_top_n_train"], "testing": settings["rpn_pre_nms_top_n_test"]},
        {"training": settings["rpn_post_nms_top_n_train"], "testing": settings["rpn_post_nms_top_n_test"]},
        settings["rpn_nms_thresh"],
        score_thresh=settings["rpn_score_thresh"],
        straddle_thresh=settings["rpn_straddle_thresh"],
    )


def build_transform(
    settings: Mapping[str, Any],
    transform_settings: Mapping[str, Any],
    transform: Mapping[str, Any] | None,
    resize_images: bool,
    aux_stride: int,
) -> DATNetTransform:
    """The input transform: ``MaskRCNN``'s resizing to ``settings`` ``min_size``/``max_size`` (if
    ``resize_images``) and batching (``transform_settings``: ``size_divisible``, ``fixed_size``), the
    normalisation of ``transform`` (``image_mean``, ``image_std``, ``pixel_range``, ``channel_order``; the
    mean and std default to those torchvision's ImageNet weights were trained with, ``MaskRCNN``'s defaults),
    dense targets resized at ``aux_stride`` (``DATNetTransform``)."""
    options = dict(transform or {})
    imagenet = ResNet50_Weights.IMAGENET1K_V1.transforms()
    mean, std = options.pop("image_mean", None), options.pop("image_std", None)
    return DATNetTransform(
        settings["min_size"],
        settings["max_size"],
        imagenet.mean if mean is None else mean,
        imagenet.std if std is None else std,
        **transform_settings,
        resize_images=resize_images,
        aux_stride=aux_stride,
        **options,
    )
