"""DATNet model components (Sec. 3 of the paper), composed on torchvision's Mask R-CNN."""

from datnet.models.aux_heads import DenseAuxHead, DistanceTransformHead, SemanticHead
from datnet.models.auxiliary import DenseAuxiliaryTasks
from datnet.models.build import build_datnet
from datnet.models.checkpoint import CheckpointReport, load_model_checkpoint
from datnet.models.compile import compile_dense_
from datnet.models.datnet import DATNet, DATNetTransform
from datnet.models.fold_bn import fold_batchnorm_
from datnet.models.fusion import FeatureFusion
from datnet.models.losses import dense_focal_loss
from datnet.models.mspwa import MaxSqueezeExcitation, MultiScaleAttentionPooler

__all__ = [
    "CheckpointReport",
    "DATNet",
    "DATNetTransform",
    "DenseAuxHead",
    "DenseAuxiliaryTasks",
    "DistanceTransformHead",
    "FeatureFusion",
    "MaxSqueezeExcitation",
    "MultiScaleAttentionPooler",
    "SemanticHead",
    "build_datnet",
    "compile_dense_",
    "dense_focal_loss",
    "fold_batchnorm_",
    "load_model_checkpoint",
]
