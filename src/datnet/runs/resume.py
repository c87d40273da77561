"""Resuming a training run: which checkpoint, and with the run's total batch whatever the number of devices
(README, "Long runs").

- ``ckpt_path=PATH`` resumes from PATH. When PATH is ``<run>/checkpoints/*.ckpt`` of a run that saved its
  config (``<run>/.hydra/config.yaml``), a single training run given it runs in ``<run>`` itself (Hydra's
  ``run.dir`` goes through ``datnet.runs.resolvers``, conf/hydra/default.yaml; this command's Hydra files go
  to ``<run>/.hydra/resume-<time>/`` so that the run's own config stays) and takes that config, the command
  line's overrides on top (``datnet.runs.config.with_run_config``).
- Without ``ckpt_path``, an output directory that already holds ``checkpoints/last.ckpt`` (the same command
  run again: a SLURM requeue, which submitit runs in the same job directory, or a fixed ``hydra.run.dir``)
  resumes from it when the checkpoint was written with the same config (``resume.auto``); a checkpoint of
  another config stops the run, naming the differences, instead of being overwritten from step 0.
- The run's total batch per optimizer step is kept on another number of devices by gradient accumulation
  (:func:`accumulation_for`), so the LR schedule and the step count are the run's; the RNG states of the
  devices that exist are restored and the others reported (``datnet.lightning.checkpoints``).
"""

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from datnet.lightning.checkpoints import LAST, RUN_CONFIG_KEY
from datnet.runs.config import config_differences, require_checkpoint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResumePlan:
    """Where a training run starts: ``checkpoint`` None is step 0; otherwise the step, total batch per
    optimizer step and number of ranks that the checkpoint was written with (None where it does not say)."""

    checkpoint: str | None = None
    step: int = 0
    total_batch_size: int | None = None
    world_size: int | None = None

    @property
    def resuming(self) -> bool:
        return self.checkpoint is not None


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A Lightning checkpoint, memory-mapped (the tensors stay on disk) for its bookkeeping entries."""
    path = require_checkpoint(path, "ckpt_path")
    return torch.load(path, map_location="cpu", mmap=True, weights_only=False)


def _plan(path: Path, checkpoint: dict[str, Any]) -> ResumePlan:
    return ResumePlan(
        str(path),
        int(checkpoint.get("global_step", 0)),
        checkpoint.get("total_batch_size"),
        checkpoint.get("world_size"),
    )


def requeued() -> bool:
    """Whether this process is a SLURM job started again by a requeue (``SLURM_RESTART_COUNT`` > 0)."""
    return int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0


def plan_resume(cfg: DictConfig, out: Path, config: dict[str, Any]) -> ResumePlan:
    """The checkpoint this run starts from: ``cfg.ckpt_path``, else (``resume.auto``, default true)
    ``out/checkpoints/last.ckpt`` when it exists and was written with the same ``config``
    (``datnet.runs.config.run_identity``). A requeued SLURM job (:func:`requeued`) re-runs its command,
    ``ckpt_path``
    included: it takes its own ``last.ckpt`` instead when that is further on (written since, e.g. at the
    requeue signal). Every rank decides the same from the same files. Raises ``ValueError`` naming the
    differences when ``last.ckpt`` belongs to another config."""
    auto, last = OmegaConf.select(cfg, "resume.auto", default=True), out / LAST
    if cfg.get("ckpt_path"):
        path = Path(cfg.ckpt_path)
        plan = _plan(path, read_checkpoint(path))
        if auto and requeued() and last.is_file() and last.resolve() != path.resolve():
            newer = _plan(last, read_checkpoint(last))
            if newer.step > plan.step:
                message = "requeued job: resuming from its %s (step %d), not ckpt_path (step %d)"
                log.info(message, last, newer.step, plan.step)
                return newer
        log.info("resuming from %s (step %d): ckpt_path", path, plan.step)
        return plan
    if not auto or not last.is_file():
        return ResumePlan()
    checkpoint = read_checkpoint(last)
    saved = checkpoint.get(RUN_CONFIG_KEY)
    if saved is not None and (differences := config_differences(saved, config)):
        raise ValueError(
            f"{out} holds {LAST} (step {checkpoint.get('global_step')}) of a run with another config: "
            + "; ".join(differences[:10])
            + (f" (and {len(differences) - 10} more)" if len(differences) > 10 else "")
            + f". Resume it with its own command (or ckpt_path={last}), start over elsewhere (another "
            "hydra.run.dir), or overwrite it with resume.auto=false"
        )
    plan = _plan(last, checkpoint)
    log.info("auto-resume: %s exists, resuming from it (step %d)", last, plan.step)
    if saved is None:
        log.warning("%s does not record its run's config: resuming it without checking the config", last)
    return plan


def accumulation_for(plan: ResumePlan, batch_size: int, world_size: int, accumulate: int) -> int:
    """Gradient accumulation that keeps the resumed run's images per optimizer step on another number of
    ranks (or another per-rank batch), so the scaled LR schedule, the step count, and the validation and
    checkpoint intervals stay the run's; ``accumulate`` (the config's) when nothing changed or the
    checkpoint does not say. Raises ``ValueError`` when it cannot (the run's total is no multiple of the
    per-rank batch x ranks)."""
    per_step = batch_size * world_size
    if plan.total_batch_size is None or per_step * accumulate == plan.total_batch_size:
        return accumulate
    if plan.total_batch_size % per_step:
        raise ValueError(
            f"the checkpoint {plan.checkpoint} was trained with {plan.total_batch_size} images per step; "
            f"{batch_size} per rank x {world_size} ranks cannot make that up by gradient "
            "accumulation: set data.batch_size (or the devices) so that it divides it"
        )
    accumulate = plan.total_batch_size // per_step
    log.warning(
        "resuming a run of %s ranks (%d images per step) on %d ranks: accumulating gradients over %d batches "
        "of %d per rank keeps its %d images per step and its schedule",
        plan.world_size,
        plan.total_batch_size,
        world_size,
        accumulate,
        batch_size,
        plan.total_batch_size,
    )
    return accumulate
