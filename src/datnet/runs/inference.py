"""A trained run's model for inference on raw images (``scripts/predict.py``, ``scripts/export.py``): its
config (the run's model and data configs, as ``src/eval.py`` takes them), its data module (the label space)
and the model with the checkpoint's weights, resizing raw images itself, BatchNorm folded."""

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from datnet.configs import compose_config
from datnet.data.datamodule import DetectionDataModule
from datnet.models import fold_batchnorm_
from datnet.runs.build import build_model
from datnet.runs.config import for_checkpoint, with_run_config

EVAL_SIZES = ("min_size", "max_size")


class DataConfigError(ValueError):
    """The data config (which gives the class names and category ids) cannot be read."""


def run_config(overrides: list[str], checkpoint: str | None) -> tuple[DictConfig, bool]:
    """The config to predict with, and whether its model and data come from the training run that wrote
    ``checkpoint`` (``overrides`` on top); its detector resizes raw images to the data's evaluation size
    unless ``model.detector.min_size``/``max_size`` are overridden, and its backbone is built for a
    whole-model checkpoint (no ImageNet file is looked for)."""
    composed = compose_config(overrides, config_name="train")
    cfg = composed
    if checkpoint:
        composed.ckpt_path = checkpoint
        cfg = with_run_config(composed, overrides)
    keys = {o.key_or_group for o in OverridesParser.create().parse_overrides(overrides)}
    for size in EVAL_SIZES:
        if f"model.detector.{size}" not in keys:
            OmegaConf.update(cfg, f"model.detector.{size}", cfg.data[size], force_add=True)
    return for_checkpoint(cfg), cfg is not composed


def build_data(cfg: DictConfig) -> DetectionDataModule:
    """The data module of ``cfg.data`` (its label space: class names and category ids); raises
    ``DataConfigError`` naming the data config's target when it cannot be read."""
    try:
        return instantiate(cfg.data)
    except InstantiationException as error:
        raise DataConfigError(
            f"the data config ({cfg.data._target_}) gives the class names and category ids, and it cannot "
            f"be read: {error.__cause__ or error}\npoint it at the dataset with an override (data.root=...)"
        ) from error


def build_inference_model(
    cfg: DictConfig, data: DetectionDataModule, checkpoint: str | None, device: str
) -> nn.Module:
    """``cfg.model`` for the classes of ``data`` with the checkpoint's weights (random without one; a
    torchvision COCO detector's 91 indices mapped to the data's category ids), resizing raw images itself, in
    eval mode with BatchNorm folded into the convolutions, on ``device``."""
    strict = cfg.model.get("checkpoint_strict", True)
    model = build_model(cfg, data, resize_images=True, checkpoint=checkpoint, strict=strict)
    model.eval()
    fold_batchnorm_(model)
    return model.to(device)
