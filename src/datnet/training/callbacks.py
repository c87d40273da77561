"""Callbacks of the training harness."""

import logging
import os
import signal
import subprocess
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import torch
import torch.nn.functional as F
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_only
from torch import Tensor

from datnet.training.resume import LAST, RUN_CONFIG_KEY
from datnet.visualization import (
    class_colors,
    dense_target_image,
    draw_detections,
    dt_image,
    resize_panel,
    semantic_image,
)

log = logging.getLogger(__name__)


class LastAndBestCheckpoint(ModelCheckpoint):
    """``last.ckpt`` every ``every_n_train_steps`` optimizer steps and at the end of training (for resuming,
    whatever the monitor), and the best ``save_top_k`` by ``monitor``, saved only when a validation during
    fit ends: named (``filename``, e.g. ``best-step{step}-ap{val/bbox/AP:.4f}``) and scored with the value
    that this very validation logged. Takes ``ModelCheckpoint``'s arguments; ``monitor=None`` or
    ``save_top_k=0``: only ``last.ckpt``.

    Lightning's ``ModelCheckpoint(every_n_train_steps=N, monitor=...)`` instead saves its top-k in
    ``on_train_batch_end`` every N steps with the monitor's last logged value, i.e. a previous validation's
    (it defers to the validation only before the monitor was ever logged, or at an epoch's last batch); with
    step-based validation nearly every such save carries the wrong score.

    ``last.ckpt`` is always that name (no version counter): a run started afresh in a directory holding one
    (``resume.auto=false``) overwrites it rather than writing ``last-v1.ckpt`` beside it, so an automatic
    resume never takes the older file.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("enable_version_counter", False)
        super().__init__(**kwargs)
        if self.save_last == "link":  # would link to the newest file, which may be an older best
            raise ValueError("LastAndBestCheckpoint saves last.ckpt itself: save_last must be a bool")
        self._last_step_saved_as_last = 0  # like Lightning: nothing to save before the first step

    @staticmethod
    def _saving(trainer: Trainer) -> bool:
        """Whether this is a real fit (not fast_dev_run, a sanity check, or a validate/test call)."""
        fitting = trainer.state.fn == TrainerFn.FITTING
        return fitting and not trainer.fast_dev_run and not trainer.sanity_checking

    def write_last(self, trainer: Trainer) -> None:
        """Writes ``last.ckpt`` of this step, unless it already was (or this is no real fit)."""
        if self.save_last and self._saving(trainer) and self._last_step_saved_as_last != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
            self._last_step_saved_as_last = trainer.global_step

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """``last.ckpt`` every ``every_n_train_steps`` steps (before a validation due at the same step)."""
        if self._every_n_train_steps >= 1 and trainer.global_step % self._every_n_train_steps == 0:
            self.write_last(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Nothing: saves follow steps and validations, not epochs."""

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """The top-k save, with the monitor just logged by this validation (called after its
        ``on_validation_epoch_end``); identical on every rank when the metric is (as ``val/bbox/AP`` is)."""
        if self.monitor is not None and self.save_top_k != 0 and self._saving(trainer):
            self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """``last.ckpt`` of the final step too, when it is not a multiple of ``every_n_train_steps``."""
        self.write_last(trainer)


class RunConfigInCheckpoint(Callback):
    """Saves the run's config (``datnet.training.resume.run_config``) in every checkpoint, so that an
    automatic resume can tell a ``last.ckpt`` of this very run from one of another config."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict) -> None:
        checkpoint[RUN_CONFIG_KEY] = self.config


class Requeued(SystemExit):
    """Leaves a run that wrote ``last.ckpt`` at a requeue signal: exit status 0 when the job was requeued,
    1 when it was not (then the same command, run again, resumes)."""


def slurm_job_id() -> str | None:
    """The SLURM job to requeue (``<array job>_<task>`` for an array job), None outside SLURM."""
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array_job}_{task}" if array_job and task else os.environ.get("SLURM_JOB_ID")


class RequeueOnSignal(Callback):
    """At ``signal`` during fit, writes ``last.ckpt`` at a step boundary, requeues the SLURM job and leaves.

    SLURM sends the signal before the time limit when asked to (``#SBATCH --signal=USR2@120``; Hydra's
    submitit launcher asks for USR2 ``signal_delay_s`` seconds before, conf/hydra/launcher/slurm.yaml). The
    handler only notes it. Every ``check_every`` optimizer steps the ranks agree whether any rank got it (one
    all-reduce); then, at that step boundary, every rank writes ``last.ckpt`` (through the run's
    ``LastAndBestCheckpoint``), global rank 0 requeues the job, and every rank raises :class:`Requeued`: no
    validation or METRICS follow. The job that SLURM starts again runs the same command in the same directory
    and resumes from that ``last.ckpt`` (``resume.auto``, ``datnet.training.resume``).

    Requeueing goes through the handler that was installed before fit when there is one (submitit's: it
    requeues, counts the timeouts against ``max_num_timeout`` and exits), else ``scontrol requeue`` of
    ``$SLURM_JOB_ID``; a failed requeue (no ``scontrol``, an error) is logged and the run exits with status 1;
    outside SLURM nothing is requeued. Lightning's own SLURM requeue (``SLURMEnvironment``) is not used: it
    listens on USR1 and writes ``hpc_ckpt_<n>.ckpt`` from inside the signal handler, in the middle of a step.
    """

    def __init__(self, signal_name: str = "USR2", check_every: int = 10) -> None:
        if check_every < 1:
            raise ValueError(f"resume.check_every must be >= 1, got {check_every}")
        try:
            self.signum = signal.Signals[f"SIG{signal_name.upper().removeprefix('SIG')}"]
        except KeyError:
            raise ValueError(f"resume.requeue_signal: unknown signal {signal_name!r} (e.g. USR2)") from None
        self.check_every = check_every
        self.received = False
        self._previous: Any = None
        self._installed = False
        self._step = -1

    def _note(self, signum: int, frame: FrameType | None) -> None:
        self.received = True
        log.warning("received %s: last.ckpt and requeue at the next check", signal.Signals(signum).name)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.received, self._step = False, -1
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(self.signum, self._note)
            self._installed = True
        else:
            log.warning("not the main thread: %s will not write last.ckpt", self.signum.name)

    def _restore(self) -> None:
        if self._installed:
            signal.signal(self.signum, self._previous)
            self._installed = False

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._restore()

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step, previous = trainer.global_step, self._step
        self._step = step
        if step == previous or step % self.check_every:  # within an accumulation, or not a checking step
            return
        if not trainer.strategy.reduce_boolean_decision(self.received, all=False):
            return
        checkpoints = [c for c in trainer.checkpoint_callbacks if isinstance(c, LastAndBestCheckpoint)]
        for checkpoint in checkpoints:
            checkpoint.write_last(trainer)
        if not checkpoints:
            trainer.save_checkpoint(Path(trainer.default_root_dir) / LAST)
        log.warning("%s: wrote last.ckpt at step %d", self.signum.name, step)
        self._restore()
        raise Requeued(self.requeue(trainer))

    def requeue(self, trainer: Trainer) -> int:
        """Requeues the job (see the class docstring); the exit status."""
        if callable(self._previous):
            self._previous(self.signum, None)  # submitit's: exits on global rank 0 once requeued
            return 0
        if not trainer.is_global_zero:
            return 0
        job = slurm_job_id()
        if job is None:
            log.warning("not a SLURM job: nothing to requeue; the same command resumes from last.ckpt")
            return 1
        try:
            result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
        except (FileNotFoundError, subprocess.TimeoutExpired) as error:
            log.error(
                "requeue of SLURM job %s failed (%s); the same command resumes from last.ckpt", job, error
            )
            return 1
        if result.returncode:
            log.error("requeue of SLURM job %s failed: %s", job, (result.stderr or result.stdout).strip())
            return 1
        log.warning("requeued SLURM job %s", job)
        return 0


class PredictionImageLogger(Callback):
    """Every ``every_n_batches`` validation batches, until ``max_images`` images were drawn in this
    validation, logs for the batch's images a panel: the prediction (masks and labelled boxes scoring
    ``>= score_threshold``), then the predicted DT map beside its target and the predicted semantic map
    beside its target (stride 4, ignored pixels white), each at most ``max_size`` pixels on its longer side.
    To W&B (``log_image``) or TensorBoard; with other loggers it does nothing.

    Only rank 0 draws, and no collective runs during validation batches (the evaluator gathers at the end),
    so the other ranks wait only for rank 0's total drawing time, once, at that gather: the cap per
    validation and the downsampling (drawing is on the CPU, masks are pasted at full size) keep it short.
    """

    def __init__(
        self,
        every_n_batches: int = 50,
        max_images: int = 4,
        score_threshold: float = 0.5,
        max_size: int = 512,
    ) -> None:
        self.every_n_batches = every_n_batches
        self.max_images = max_images
        self.score_threshold = score_threshold
        self.max_size = max_size
        self.drawn = 0

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.drawn = 0

    @rank_zero_only
    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, (WandbLogger, TensorBoardLogger))]
        images, targets, _ = batch
        todo = list(zip(images, targets))[: self.max_images - self.drawn]
        if not loggers or not todo or batch_idx % self.every_n_batches:
            return
        panels = [self.panel(pl_module, trainer, image, target) for image, target in todo]
        self.drawn += len(panels)
        for logger in loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(
                    "val/predictions", [p.permute(1, 2, 0).numpy() for p in panels], step=trainer.global_step
                )
            else:
                for i, panel in enumerate(panels):
                    logger.experiment.add_image(
                        f"val/predictions/{batch_idx}_{i}", panel, trainer.global_step
                    )

    def panel(self, pl_module: LightningModule, trainer: Trainer, image: Tensor, target: dict) -> Tensor:
        """One uint8 image: prediction | DT prediction | DT target | semantic prediction | semantic target.
        Only the detections drawn leave the device, already downsampled."""
        names = trainer.datamodule.class_names
        colors = class_colors(len(names))
        with torch.no_grad():
            detection = pl_module.model([image], return_aux_maps=True)[0]
        scale = min(1.0, self.max_size / max(image.shape[-2:]))
        size = tuple(round(side * scale) for side in image.shape[-2:])
        keep = detection["scores"] >= self.score_threshold
        drawn = {k: detection[k][keep].cpu() for k in ("boxes", "scores", "labels")}
        drawn["boxes"] *= scale
        if "masks" in detection:
            drawn["masks"] = F.interpolate(detection["masks"][keep], size=size, mode="bilinear").cpu()
        pixels = image[None].float() / (1.0 if image.is_floating_point() else 255.0)  # [0, 1] or uint8
        small = F.interpolate(pixels, size=size, mode="bilinear", antialias=True)[0]
        picture = draw_detections(small.cpu(), drawn, names, colors, 0.0)
        maps = []
        if "dt" in detection:
            maps += [
                dt_image(detection["dt"].cpu()),
                dense_target_image(target["dt"].cpu(), colors, detection["dt"].shape[0]),
            ]
        if "sem" in detection:
            maps += [
                semantic_image(detection["sem"].cpu(), colors),
                dense_target_image(target["sem"].cpu(), colors),
            ]
        return torch.cat([picture, *(resize_panel(m, size) for m in maps)], dim=-1)
