"""The run plan: everything decided before a Trainer exists, once, up front (README "Long runs", Sec. 4).

A :class:`RunPlan` holds the config the run uses (a resumed, evaluated or predicted run's own config merged
in: ``datnet.runs.config``), its output directory and identity, the checkpoint it starts from, its world size
and total batch per optimizer step, and, for training, the LR recipe and the validation / ``last.ckpt``
intervals scaled to that total batch (``datnet.lightning.schedule``, the linear scaling rule). The Trainer,
its callbacks and the LightningModule are then built from it with their final settings as constructor
arguments (``datnet.runs.build``); the world size that the Trainer gets is checked against the plan's.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict
from pytorch_lightning.accelerators import Accelerator, CPUAccelerator, CUDAAccelerator, MPSAccelerator

from datnet.lightning.schedule import Intervals, Recipe, scale_intervals, scale_recipe
from datnet.runs.config import (
    checkpoint_run_dir,
    for_checkpoint,
    require_checkpoint,
    run_identity,
    with_run_config,
)
from datnet.runs.loggers import uses_wandb, wandb_run_id
from datnet.runs.resume import ResumePlan, accumulation_for, plan_resume
from datnet.runs.sweep import in_multirun

log = logging.getLogger(__name__)

ACCELERATORS: dict[str, type[Accelerator]] = {
    "cpu": CPUAccelerator,
    "gpu": CUDAAccelerator,
    "cuda": CUDAAccelerator,
    "mps": MPSAccelerator,
}


@dataclass(frozen=True)
class RunPlan:
    """What a run is, decided before anything is built. ``trainer_kwargs`` are the Trainer constructor
    arguments that the plan decides (on top of ``cfg.trainer``); ``checkpoint_every`` is ``(written,
    scaled)`` for the checkpoint callback's ``every_n_train_steps`` (None: as configured)."""

    cfg: DictConfig
    output_dir: Path
    world_size: int
    accumulate_grad_batches: int = 1
    resume: ResumePlan = field(default_factory=ResumePlan)
    identity: dict[str, Any] | None = None
    recipe: Recipe | None = None
    intervals: Intervals | None = None
    wandb_id: str | None = None

    @property
    def total_batch_size(self) -> int:
        """Images per optimizer step: per-rank batch x ranks (devices x nodes) x gradient accumulation."""
        return self.cfg.data.batch_size * self.world_size * self.accumulate_grad_batches

    @property
    def trainer_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"accumulate_grad_batches": self.accumulate_grad_batches}
        trainer, schedule = self.cfg.trainer, self.cfg.get("schedule")
        if self.recipe is None or trainer.get("fast_dev_run"):
            return kwargs
        if trainer.get("max_steps", -1) in (None, -1):
            kwargs["max_steps"] = self.recipe.max_steps
        interval = trainer.get("val_check_interval")
        if self.intervals is not None and type(interval) is int and interval == schedule.val_every:
            # Lightning counts val_check_interval in training batches, the schedule in optimizer steps
            kwargs["val_check_interval"] = self.intervals.val_every * self.accumulate_grad_batches
        return kwargs

    @property
    def checkpoint_every(self) -> tuple[int, int] | None:
        if self.intervals is None or self.cfg.trainer.get("fast_dev_run"):
            return None
        return self.cfg.schedule.checkpoint_every, self.intervals.checkpoint_every


def output_dir(cfg: DictConfig) -> Path:
    """``paths.output_dir`` (Hydra's run or job directory unless set otherwise), created."""
    path = Path(cfg.paths.output_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def command_line_overrides() -> list[str]:
    """This command's Hydra overrides."""
    return list(HydraConfig.get().overrides.task)


def planned_world_size(trainer: DictConfig) -> int:
    """Ranks = devices x nodes, from the trainer config as Lightning reads it (``accelerator`` auto/cpu/gpu,
    ``devices`` a count, ``-1``, ``auto`` or a list of ids), before any Trainer exists."""
    name = str(trainer.get("accelerator", "auto"))
    if name == "auto":
        accelerator = next((a for a in (CUDAAccelerator, MPSAccelerator) if a.is_available()), CPUAccelerator)
    elif name in ACCELERATORS:
        accelerator = ACCELERATORS[name]
    else:
        raise ValueError(f"trainer.accelerator={name}: the harness plans runs on {['auto', *ACCELERATORS]}")
    devices = trainer.get("devices", "auto")
    if devices == "auto":
        count = accelerator.auto_device_count()
    else:
        count = len(accelerator.get_parallel_devices(accelerator.parse_devices(devices)))
    return count * int(trainer.get("num_nodes", 1))


def deterministic_as_warn(cfg: DictConfig) -> DictConfig:
    """``trainer.deterministic=true`` as ``"warn"``: roi_align, bilinear upsampling and adaptive max-pool have
    no deterministic CUDA backward, and with ``true`` torch raises at their first backward; "warn" keeps every
    deterministic kernel that exists."""
    if cfg.trainer.get("deterministic") is not True:
        return cfg
    log.warning("trainer.deterministic=true runs as 'warn': some CUDA kernels have no deterministic form")
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.trainer.deterministic = "warn"
    return cfg


def scaled_schedule(cfg: DictConfig, total_batch: int) -> tuple[Recipe, Intervals | None]:
    """The schedule (``conf/schedule``) written for ``schedule.reference_batch_size`` images per step, scaled
    to ``total_batch``: the LR recipe and the validation / ``last.ckpt`` intervals."""
    schedule = cfg.schedule
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
    if schedule.get("val_every") is None:
        return recipe, None
    every = (schedule.val_every, schedule.checkpoint_every)
    return recipe, scale_intervals(*every, schedule.reference_batch_size, total_batch)


def plan_training(cfg: DictConfig) -> RunPlan:
    """A training run: from step 0, or resuming (``datnet.runs.resume``). A single run given a checkpoint of
    the run in its output directory (``ckpt_path=<run>/checkpoints/...``: Hydra's run dir is then ``<run>``)
    takes that run's saved config, the command line's overrides on top; a resumed model never looks for
    ImageNet weights."""
    out = output_dir(cfg)
    resumes_here = cfg.get("ckpt_path") and checkpoint_run_dir(cfg.ckpt_path) == out.resolve()
    if resumes_here and HydraConfig.initialized() and not in_multirun():
        cfg = with_run_config(cfg, command_line_overrides(), groups=None)
    identity = run_identity(cfg)
    resume = plan_resume(cfg, out, identity)
    cfg = deterministic_as_warn(for_checkpoint(cfg) if resume.resuming else cfg)
    world_size = planned_world_size(cfg.trainer)
    batch, accumulate = cfg.data.batch_size, cfg.trainer.accumulate_grad_batches
    accumulate = accumulation_for(resume, batch, world_size, accumulate)
    total = cfg.data.batch_size * world_size * accumulate
    recipe, intervals = scaled_schedule(cfg, total)
    wandb_id = wandb_run_id(out, resume.resuming) if uses_wandb(cfg.get("logger")) else None
    plan = RunPlan(cfg, out, world_size, accumulate, resume, identity, recipe, intervals, wandb_id)
    steps = plan.trainer_kwargs.get("max_steps", cfg.trainer.get("max_steps"))
    log.info("total batch %d: lr %.5f, %s steps, milestones %s", total, recipe.lr, steps, recipe.milestones)
    if intervals is not None and not cfg.trainer.get("fast_dev_run"):
        log.info(
            "total batch %d (schedule written for %d): validation every %d steps, last.ckpt every %d steps",
            total,
            cfg.schedule.reference_batch_size,
            intervals.val_every,
            intervals.checkpoint_every,
        )
    return plan


def plan_evaluation(cfg: DictConfig) -> tuple[RunPlan, str, bool]:
    """An evaluation of one whole-model checkpoint: ``ckpt_path`` (a training run's, with the run's saved
    model and data configs, loaded strictly) or ``model.checkpoint`` (any whole-model state dict for the model
    config given; ``model.checkpoint_strict``). No optimizer, no schedule. Returns the plan, the file to load
    and whether to load it strictly."""
    ckpt_path, checkpoint = cfg.get("ckpt_path"), cfg.model.get("checkpoint")
    if bool(ckpt_path) == bool(checkpoint):
        raise ValueError(
            "eval.py evaluates one checkpoint: ckpt_path=PATH (a training run's checkpoint) or "
            f"model.checkpoint=PATH (a whole-model state dict); got ckpt_path={ckpt_path}, "
            f"model.checkpoint={checkpoint}"
        )
    require_checkpoint(ckpt_path or checkpoint, "ckpt_path" if ckpt_path else "model.checkpoint")
    strict = True if ckpt_path else cfg.model.get("checkpoint_strict", True)
    if ckpt_path and HydraConfig.initialized():
        cfg = with_run_config(cfg, command_line_overrides())
    cfg = deterministic_as_warn(for_checkpoint(cfg))  # the checkpoint is loaded after the model is built
    plan = RunPlan(cfg, output_dir(cfg), planned_world_size(cfg.trainer), cfg.trainer.accumulate_grad_batches)
    return plan, str(ckpt_path or checkpoint), strict
