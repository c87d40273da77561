"""The objects of a run, built from its plan (``datnet.runs.plan``) with their final settings as constructor
arguments: the data module, the model, the callbacks and loggers, the Trainer and the LightningModule."""

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.accelerators import CPUAccelerator
from torch import nn

from datnet.lightning.checkpoints import RunConfigInCheckpoint
from datnet.lightning.module import DATNetModule
from datnet.lightning.requeue import RequeueOnSignal
from datnet.models import load_model_checkpoint
from datnet.models.tta import TestTimeAugmentation
from datnet.runs.launch import check_world_size, enable_nccl_error_handling, warn_cpu_processes
from datnet.runs.loggers import instantiate_callbacks, instantiate_loggers
from datnet.runs.plan import RunPlan
from datnet.runs.sweep import prepare_ddp_relaunch


def build_model(
    cfg: DictConfig,
    datamodule: pl.LightningDataModule,
    resize_images: bool = False,
    checkpoint: str | None = None,
    strict: bool = True,
) -> nn.Module:
    """``cfg.model`` for the label space of ``datamodule`` (its classes, and the category ids and names that
    map a torchvision COCO detector's 91 indices), with the weights of a whole-model ``checkpoint`` when given
    (``datnet.models.checkpoint``: a run's, ours or torchvision's; evaluation and prediction, whose config
    went through ``datnet.runs.config.for_checkpoint``). Training and evaluation leave resizing to the data
    pipeline, which computes the auxiliary targets on the resized image; prediction on raw images resizes in
    the model (``resize_images``)."""
    with open_dict(cfg):  # the config records the number the model is built with (config_tree.log)
        cfg.model.num_classes = datamodule.num_classes
    model = instantiate(
        cfg.model,
        resize_images=resize_images,
        label_to_category_id=datamodule.label_to_category_id,
        class_names=datamodule.class_names,
    )
    if checkpoint:
        labels, names = datamodule.label_to_category_id, datamodule.class_names
        load_model_checkpoint(model, checkpoint, strict, labels, names)
    return model


def build_data_and_model(
    cfg: DictConfig, checkpoint: str | None = None, strict: bool = True
) -> tuple[pl.LightningDataModule, nn.Module]:
    """The data module of ``cfg.data`` and the model for it, with ``checkpoint``'s weights when given
    (:func:`build_model`)."""
    datamodule = instantiate(cfg.data)
    return datamodule, build_model(cfg, datamodule, checkpoint=checkpoint, strict=strict)


def training_callbacks(plan: RunPlan) -> list[pl.Callback]:
    """The ``callbacks`` group (the checkpoint interval scaled to the total batch), the run's config in every
    checkpoint, and ``resume.requeue_signal``: ``last.ckpt`` and a SLURM requeue at that signal."""
    cfg = plan.cfg
    callbacks = instantiate_callbacks(cfg.get("callbacks"), plan.checkpoint_every)
    callbacks.append(RunConfigInCheckpoint(plan.identity))
    if signal_name := OmegaConf.select(cfg, "resume.requeue_signal"):
        check_every = OmegaConf.select(cfg, "resume.check_every", default=10)
        callbacks.append(RequeueOnSignal(signal_name, check_every))
    return callbacks


def build_trainer(plan: RunPlan, callbacks: list[pl.Callback]) -> pl.Trainer:
    """The Trainer of ``cfg.trainer`` with the plan's settings, its loggers (the W&B run's config is the whole
    resolved config); raises when the launcher gives another world size than the plan's (``trainer.devices``
    x ``trainer.num_nodes``), whose LR and schedule would then be wrong (``datnet.runs.launch``)."""
    prepare_ddp_relaunch()
    enable_nccl_error_handling()
    loggers = instantiate_loggers(plan.cfg.get("logger"), run_config=plan.cfg, wandb_id=plan.wandb_id)
    trainer = instantiate(plan.cfg.trainer, callbacks=callbacks, logger=loggers, **plan.trainer_kwargs)
    check_world_size(plan, trainer)
    warn_cpu_processes(plan, isinstance(trainer.accelerator, CPUAccelerator))
    return trainer


def build_tta(cfg: DictConfig) -> TestTimeAugmentation | None:
    """The test-time augmentation of ``cfg.tta`` (conf/eval.yaml, docs/tta.md) for images the data pipeline
    resized to ``data.min_size``; None when it is off (``tta.flip`` false and ``tta.scales`` null, or no
    ``tta`` node: training)."""
    tta = cfg.get("tta")
    if tta is None or (not tta.flip and tta.scales is None):
        return None
    return TestTimeAugmentation(cfg.data.min_size, tta.scales, tta.flip)


def build_module(plan: RunPlan, model: nn.Module) -> DATNetModule:
    """The LightningModule: with the optimizer and the plan's scaled recipe for training, without for
    evaluation (through ``cfg.tta``'s test-time augmentation when it is on); its reports go to
    ``<output dir>/results``."""
    cfg = plan.cfg
    optimizer = instantiate(cfg.optimizer, lr=plan.recipe.lr) if plan.recipe is not None else None
    results_dir = str(plan.output_dir / "results")
    return DATNetModule(
        model, optimizer, plan.recipe, results_dir=results_dir, tta=build_tta(cfg), **cfg.get("module", {})
    )
