"""The train and eval tasks behind ``src/train.py`` and ``src/eval.py`` (Hydra configs in ``conf/``)."""

import json
import logging
import math
import signal
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.callbacks import ModelCheckpoint

from datnet.models import load_model_checkpoint
from datnet.models.backbone import backbone_for_checkpoint
from datnet.training.callbacks import RequeueOnSignal, RunConfigInCheckpoint
from datnet.training.loggers import instantiate_callbacks, instantiate_loggers, uses_wandb, wandb_run_id
from datnet.training.module import DATNetModule
from datnet.training.recipe import Intervals, scale_intervals, scale_recipe
from datnet.training.resume import ResumePlan, checkpoint_run_dir, keep_total_batch, plan_resume, run_config
from datnet.training.sweep import in_multirun, prepare_ddp_relaunch
from datnet.utils.config_tree import print_config_tree

log = logging.getLogger(__name__)


def output_dir(cfg: DictConfig) -> Path:
    """``paths.output_dir`` (Hydra's run or job directory unless set otherwise), created."""
    path = Path(cfg.paths.output_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def report_metrics(metrics: dict[str, Any], directory: Path) -> dict[str, Any]:
    """Prints ``METRICS {json}`` (NaN -> null) and writes the same JSON to ``directory/metrics.json``."""
    clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}
    line = json.dumps(clean, sort_keys=True)
    print(f"METRICS {line}", flush=True)
    (directory / "metrics.json").write_text(line + "\n")
    return clean


def logged_metrics(trainer: pl.Trainer, prefix: str) -> dict[str, float]:
    """The last logged metrics under ``prefix`` (also brought back from spawned DDP processes)."""
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(prefix)}


def build_components(
    cfg: DictConfig,
    with_callbacks: bool = True,
    resume: ResumePlan | None = None,
    run_config: dict[str, Any] | None = None,
    wandb_id: str | None = None,
):
    """Data module, model (classes from the data; resizing left to the data pipeline, which computes the
    auxiliary targets on the resized image), loggers, callbacks and trainer. For training (``run_config``):
    the run's config goes into its checkpoints and ``resume.requeue_signal`` writes ``last.ckpt`` and
    requeues the job; a ``resume``d run keeps its total batch (``datnet.training.resume``) and
    ``wandb_id`` is its W&B run."""
    prepare_ddp_relaunch()
    if cfg.trainer.get("deterministic") is True:
        # roi_align, bilinear upsampling and adaptive max-pool have no deterministic CUDA backward: with
        # `true` torch raises at their first backward; "warn" keeps every deterministic kernel that exists
        log.warning("trainer.deterministic=true runs as 'warn': some CUDA kernels have no deterministic form")
        with open_dict(cfg):
            cfg.trainer.deterministic = "warn"
    datamodule = instantiate(cfg.data)
    model = instantiate(
        cfg.model,
        num_classes=datamodule.num_classes,
        resize_images=False,
        label_to_category_id=datamodule.label_to_category_id,
        class_names=datamodule.class_names,
    )
    callbacks = instantiate_callbacks(cfg.get("callbacks")) if with_callbacks else []
    if with_callbacks and run_config is not None:
        callbacks.append(RunConfigInCheckpoint(run_config))
        if signal_name := OmegaConf.select(cfg, "resume.requeue_signal"):
            callbacks.append(
                RequeueOnSignal(signal_name, OmegaConf.select(cfg, "resume.check_every", default=10))
            )
    loggers = instantiate_loggers(cfg.get("logger"), run_config=cfg, wandb_id=wandb_id)
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
    if resume is not None:
        keep_total_batch(trainer, cfg.data.batch_size, resume)
    apply_scaled_intervals(cfg, trainer)
    return datamodule, model, trainer


def total_batch_size(cfg: DictConfig, trainer: pl.Trainer) -> int:
    """Images per optimizer step: per-rank batch x ranks (devices x nodes) x gradient accumulation."""
    return cfg.data.batch_size * trainer.world_size * trainer.accumulate_grad_batches


def apply_scaled_intervals(cfg: DictConfig, trainer: pl.Trainer) -> Intervals | None:
    """Validation (``trainer.val_check_interval``) and ``last.ckpt`` (``every_n_train_steps`` of the
    checkpoint callbacks) every ``schedule.val_every`` / ``schedule.checkpoint_every`` steps scaled to the
    total batch, like the LR and the other iteration counts (``make_module``).

    Done on the instantiated trainer because its ``world_size`` is the one the LR is scaled with, whatever
    ``trainer.devices`` says (``auto``, ``-1``, a list of ids): the config does not know it. A value set on
    the command line other than the schedule's (``trainer.val_check_interval=0.5``, a checkpoint callback
    with its own ``every_n_train_steps``) is left alone, and so is ``fast_dev_run``. None without a
    schedule."""
    schedule = cfg.get("schedule")
    if schedule is None or schedule.get("val_every") is None:
        return None
    total = total_batch_size(cfg, trainer)
    intervals = scale_intervals(
        schedule.val_every, schedule.checkpoint_every, schedule.reference_batch_size, total
    )
    if trainer.fast_dev_run:
        return intervals
    interval = trainer.val_check_interval
    if isinstance(interval, int) and not isinstance(interval, bool) and interval == schedule.val_every:
        # Lightning counts val_check_interval in training batches, the schedule in optimizer steps
        trainer.val_check_interval = intervals.val_every * trainer.accumulate_grad_batches
    for callback in trainer.callbacks:
        every = getattr(callback, "_every_n_train_steps", None)
        if isinstance(callback, ModelCheckpoint) and every == schedule.checkpoint_every:
            callback._every_n_train_steps = intervals.checkpoint_every
    log.info(
        "total batch %d (schedule written for %d): validation every %d steps, last.ckpt every %d steps",
        total,
        schedule.reference_batch_size,
        intervals.val_every,
        intervals.checkpoint_every,
    )
    return intervals


def make_module(cfg: DictConfig, model, trainer: pl.Trainer, results_dir: Path) -> DATNetModule:
    """The LightningModule with the schedule scaled to the trainer's total batch size."""
    schedule = cfg.schedule
    total_batch = total_batch_size(cfg, trainer)
    recipe = scale_recipe(
        schedule.lr,
        schedule.max_steps,
        list(schedule.milestones),
        schedule.warmup_steps,
        schedule.reference_batch_size,
        total_batch,
        schedule.warmup_factor,
        schedule.gamma,
        schedule.get("bias_lr_factor", 1.0),
        schedule.get("bias_weight_decay"),
    )
    optimizer = instantiate(cfg.optimizer, lr=recipe.lr)
    if cfg.trainer.get("max_steps", -1) in (None, -1) and not trainer.fast_dev_run:
        trainer.fit_loop.epoch_loop.max_steps = recipe.max_steps
    log.info(
        "total batch %d: lr %.5f, %d steps, milestones %s",
        total_batch,
        recipe.lr,
        trainer.max_steps,
        recipe.milestones,
    )
    return DATNetModule(model, optimizer, recipe, results_dir=str(results_dir), **cfg.get("module", {}))


def stop_ddp_processes(trainer: pl.Trainer) -> None:
    """Kill the DDP processes this one launched (Lightning's script launcher), so that a failing job does
    not leave ranks waiting forever on a collective."""
    launcher = getattr(trainer.strategy, "launcher", None)
    if launcher is not None and hasattr(launcher, "kill"):
        launcher.kill(signal.SIGKILL)


def start_training(cfg: DictConfig, out: Path) -> tuple[DictConfig, ResumePlan, dict[str, Any]]:
    """The config, starting checkpoint and identity (:func:`datnet.training.resume.run_config`) of a
    training run writing into ``out`` (``datnet.training.resume``). A single run given a checkpoint of the run
    in ``out`` (``ckpt_path=<run>/checkpoints/...``: Hydra's run dir is then ``<run>``) takes that run's saved
    config, the command line's overrides on top; a resumed model never looks for ImageNet weights."""
    if (
        cfg.get("ckpt_path")
        and checkpoint_run_dir(cfg.ckpt_path) == out.resolve()
        and HydraConfig.initialized()
        and not in_multirun()
    ):
        cfg = with_training_run_config(cfg, list(HydraConfig.get().overrides.task), groups=None)
    config = run_config(cfg)
    plan = plan_resume(cfg, out, config)
    return (for_checkpoint(cfg) if plan.resuming else cfg), plan, config


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fits the model (from step 0, or resuming a run: :func:`start_training`), evaluates the final weights
    on val (and test if ``cfg.test``), reports METRICS."""
    out = output_dir(cfg)
    cfg, plan, config = start_training(cfg, out)
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    wandb_id = wandb_run_id(out, plan.resuming) if uses_wandb(cfg.get("logger")) else None
    datamodule, model, trainer = build_components(cfg, resume=plan, run_config=config, wandb_id=wandb_id)
    if trainer.is_global_zero:
        print_config_tree(cfg, save_dir=str(out))
    module = make_module(cfg, model, trainer, out / "results")
    metrics: dict[str, Any] = {}
    try:
        if cfg.get("train", True):
            trainer.fit(module, datamodule=datamodule, ckpt_path=plan.checkpoint)
        if module.last_eval_step != trainer.global_step or not module.last_metrics:
            trainer.validate(module, datamodule=datamodule)
        metrics.update(logged_metrics(trainer, "val/"))
        if cfg.get("test"):
            trainer.test(module, datamodule=datamodule)
            metrics.update(logged_metrics(trainer, "test/"))
    except BaseException:
        stop_ddp_processes(trainer)
        raise
    metrics["step"] = trainer.global_step
    return report_metrics(metrics, out) if trainer.is_global_zero else metrics


RUN_CONFIG_GROUPS = ("model", "data")


def with_training_run_config(
    cfg: DictConfig, overrides: list[str], groups: tuple[str, ...] | None = RUN_CONFIG_GROUPS
) -> DictConfig:
    """``cfg`` whose ``groups`` (model and data; None: every top-level key of the run's config but
    ``hydra``, for a resumed training run) come from the config saved by the training run that wrote
    ``cfg.ckpt_path`` (``<run>/.hydra/config.yaml``), with the command line's value overrides applied on top
    (for ``groups``, those of keys under them; for the whole config, every override that is not a config
    group choice). Unchanged when there is no such file, or when the command line picks an option of its
    own: any ``model=``, ``data=`` or ``experiment=`` override for ``groups``; a config group option other
    than the run's (``<run>/.hydra/hydra.yaml``) for the whole config. Each group is taken whole: a top-level
    key the run's config lacks (added since) keeps this command's value, but a key added since inside a
    taken group (e.g. under ``model``) is absent from the result, not filled in from this command's
    config."""
    saved = Path(cfg.ckpt_path).resolve().parent.parent / ".hydra" / "config.yaml"
    parsed = OverridesParser.create().parse_overrides(overrides)
    if not saved.is_file():
        return cfg
    if groups is None:
        choices = OmegaConf.load(saved.parent / "hydra.yaml").hydra.runtime.choices
        picked = [o for o in parsed if o.key_or_group in choices and o.value() != choices[o.key_or_group]]
        values = [o for o in parsed if o.key_or_group not in choices]
    else:
        picked = [o for o in parsed if o.key_or_group in {*groups, "experiment"}]
        values = [o for o in parsed if o.key_or_group.split(".", 1)[0] in groups]
    if picked:
        log.info(
            "%s picked on the command line: the run's config (%s) is not used", picked[0].input_line, saved
        )
        return cfg
    run_cfg = OmegaConf.load(saved)
    cfg = cfg.copy()
    with open_dict(cfg):
        for group in groups or [key for key in run_cfg if key != "hydra"]:
            cfg[group] = run_cfg[group]
        for override in values:
            OmegaConf.update(cfg, override.key_or_group, override.value(), force_add=True)
    log.info("%s taken from %s", "model and data configs" if groups else "the run's config", saved)
    return cfg


def for_checkpoint(cfg: DictConfig) -> DictConfig:
    """``cfg`` whose model is built for a whole-model checkpoint loaded after it: the backbone with
    ``weights=scratch`` (the BatchNorm kind and trainable stages of the original ``weights``) and no
    ``model.checkpoint`` (a run fine-tuned from one does not load it again): evaluating, predicting or
    resuming never looks for ImageNet weights or the run's starting checkpoint, and works offline."""
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.model.backbone = backbone_for_checkpoint(OmegaConf.to_container(cfg.model.backbone, resolve=True))
        cfg.model.checkpoint = None
    return cfg


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluates one whole-model checkpoint on ``cfg.split`` and reports METRICS: ``ckpt_path``, a training
    run's checkpoint (loaded strictly, with the run's saved model and data configs), or ``model.checkpoint``,
    any whole-model state dict for the model config given: ours, or torchvision's COCO detectors, whose 91
    category indices are mapped to the dataset's category ids (``datnet.models.checkpoint``);
    ``model.checkpoint_strict=false`` loads what matches and logs the rest."""
    ckpt_path, checkpoint = cfg.get("ckpt_path"), cfg.model.get("checkpoint")
    if bool(ckpt_path) == bool(checkpoint):
        raise ValueError(
            "eval.py evaluates one checkpoint: ckpt_path=PATH (a training run's checkpoint) or "
            f"model.checkpoint=PATH (a whole-model state dict); got ckpt_path={ckpt_path}, "
            f"model.checkpoint={checkpoint}"
        )
    strict = True if ckpt_path else cfg.model.get("checkpoint_strict", True)
    if ckpt_path and HydraConfig.initialized():
        cfg = with_training_run_config(cfg, list(HydraConfig.get().overrides.task))
    cfg = for_checkpoint(cfg)  # the checkpoint is loaded below
    out = output_dir(cfg)
    datamodule, model, trainer = build_components(cfg, with_callbacks=False)
    if trainer.is_global_zero:
        print_config_tree(cfg, save_dir=str(out))
    load_model_checkpoint(
        model, ckpt_path or checkpoint, strict, datamodule.label_to_category_id, datamodule.class_names
    )
    module = make_module(cfg, model, trainer, out / "results")
    if cfg.split == "test":
        trainer.test(module, datamodule=datamodule)
    else:
        trainer.validate(module, datamodule=datamodule)
    if module.per_class_markdown:  # rank 0, with ground truth: also in results/per_class_ap.{csv,md}
        print(f"per-category AP ({cfg.split}):\n{module.per_class_markdown}", flush=True)
    metrics = logged_metrics(trainer, f"{cfg.split}/")
    metrics["checkpoint"] = str(ckpt_path or checkpoint)
    return report_metrics(metrics, out) if trainer.is_global_zero else metrics
