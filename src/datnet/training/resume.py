"""Resuming a training run: which checkpoint, in which directory, with which config, and with the run's total
batch and random streams whatever the number of devices (README, "Long runs").

- ``ckpt_path=PATH`` resumes from PATH. When PATH is ``<run>/checkpoints/*.ckpt`` of a run that saved its
  config (``<run>/.hydra/config.yaml``), a single training run given it runs in ``<run>`` itself (Hydra's
  ``run.dir`` goes through :func:`resume_run_dir`, conf/hydra/default.yaml; this command's Hydra files go to
  ``<run>/.hydra/resume-<time>/`` so that the run's own config stays) and takes that config, the command
  line's overrides on top (``run.with_training_run_config``).
- Without ``ckpt_path``, an output directory that already holds ``checkpoints/last.ckpt`` (the same command
  run again: a SLURM requeue, which submitit runs in the same job directory, or a fixed ``hydra.run.dir``)
  resumes from it when the checkpoint was written with the same config (``resume.auto``); a checkpoint of
  another config stops the run, naming the differences, instead of being overwritten from step 0.
- The run's total batch per optimizer step is kept on another number of devices by gradient accumulation
  (:func:`keep_total_batch`), so the LR schedule and the step count are the run's; the RNG states of the
  devices that exist are restored and the others reported (:func:`restore_rng_states`).
"""

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from datnet.training.loggers import resolved_config

log = logging.getLogger(__name__)

LAST = Path("checkpoints") / "last.ckpt"
RUN_CONFIG_KEY = "run_config"  # the run's resolved config, in every checkpoint (``RunConfigInCheckpoint``)
VOLATILE_KEYS = ("ckpt_path", "resume", "hydra")  # may differ between a run and its resumption


def checkpoint_run_dir(ckpt_path: str | Path | None) -> Path | None:
    """``<run>`` for a checkpoint ``<run>/checkpoints/NAME.ckpt`` of a run that saved its config
    (``<run>/.hydra/config.yaml``); None otherwise."""
    if not ckpt_path:
        return None
    run = Path(ckpt_path).resolve().parent.parent
    return run if (run / ".hydra" / "config.yaml").is_file() else None


def resume_run_dir(task_name: str, ckpt_path: str | None, default: str) -> str:
    """Hydra's ``run.dir``: a training run resuming another run's checkpoint runs in that run's directory."""
    run = checkpoint_run_dir(ckpt_path) if task_name == "train" else None
    return str(run) if run is not None else default


def resume_output_subdir(task_name: str, ckpt_path: str | None, output_dir: str, stamp: str) -> str:
    """Hydra's ``output_subdir``: ``.hydra``, or ``.hydra/resume-<stamp>`` when a training run resumes a
    checkpoint of the run in its ``output_dir``, whose own ``.hydra/config.yaml`` is the config it resumes
    with."""
    run = checkpoint_run_dir(ckpt_path) if task_name == "train" else None
    return f".hydra/resume-{stamp}" if run is not None and run == Path(output_dir).resolve() else ".hydra"


OmegaConf.register_new_resolver("datnet.resume_run_dir", resume_run_dir, replace=True)
OmegaConf.register_new_resolver("datnet.resume_output_subdir", resume_output_subdir, replace=True)


def run_config(cfg: DictConfig) -> dict[str, Any]:
    """What identifies a run's config: the resolved config without the keys that may change when it is
    resumed (``ckpt_path``, ``resume``, ``hydra``). Saved in its checkpoints; auto-resume compares it."""
    return {k: v for k, v in resolved_config(cfg).items() if k not in VOLATILE_KEYS}


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        return {k: v for key, value in tree.items() for k, v in _flat(value, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): tree}


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``key: saved -> current`` for every leaf that differs (a key missing on one side shows as None)."""
    a, b = _flat(saved), _flat(current)
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]


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
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path: checkpoint file {path} does not exist")
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
    (:func:`run_config`). A requeued SLURM job (:func:`requeued`) re-runs its command, ``ckpt_path``
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


def keep_total_batch(trainer: pl.Trainer, batch_size: int, plan: ResumePlan) -> None:
    """Keeps the resumed run's images per optimizer step on another number of ranks (or another per-rank
    batch): gradient accumulation makes up the difference, so the scaled LR schedule, the step count, and
    the validation and checkpoint intervals stay the run's. Raises ``ValueError`` when it cannot (the run's
    total is no multiple of the per-rank batch x ranks)."""
    if plan.total_batch_size is None:
        return
    per_step = batch_size * trainer.world_size
    total = per_step * trainer.accumulate_grad_batches
    if total == plan.total_batch_size:
        return
    if plan.total_batch_size % per_step:
        raise ValueError(
            f"the checkpoint {plan.checkpoint} was trained with {plan.total_batch_size} images per step; "
            f"{batch_size} per rank x {trainer.world_size} ranks cannot make that up by gradient "
            "accumulation: set data.batch_size (or the devices) so that it divides it"
        )
    trainer.accumulate_grad_batches = plan.total_batch_size // per_step
    log.warning(
        "resuming a run of %s ranks (%d images per step) on %d ranks: accumulating gradients over %d batches "
        "of %d per rank keeps its %d images per step and its schedule",
        plan.world_size,
        plan.total_batch_size,
        trainer.world_size,
        trainer.accumulate_grad_batches,
        batch_size,
        plan.total_batch_size,
    )


def save_rng_states(checkpoint: dict[str, Any]) -> None:
    """torch's CPU RNG state and one CUDA RNG state per visible device, as tensors (the checkpoint still
    loads with ``weights_only=True``). Only rank 0 writes the checkpoint, so these are rank 0's states: a
    resumed DDP run continues rank 0's random stream exactly, the other ranks start from rank 0's CPU state
    and from rank 0's copy of their device's generator (different from the stream they had)."""
    checkpoint["torch_rng_state"] = torch.get_rng_state()
    if torch.cuda.is_available():
        checkpoint["cuda_rng_states"] = torch.cuda.get_rng_state_all()


def restore_rng_states(checkpoint: dict[str, Any]) -> None:
    """Restores what :func:`save_rng_states` saved for the devices that exist here: the CUDA states of
    devices ``0..n-1`` for the ``n`` both the checkpoint and this machine have; the others are reported (a
    run saved on 8 GPUs resumed on 2 restores 2 and reports 6; on more devices than saved, the extra devices
    keep their seeded streams)."""
    if "torch_rng_state" in checkpoint:
        torch.set_rng_state(checkpoint["torch_rng_state"])
    saved = list(checkpoint.get("cuda_rng_states", []))
    here = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for device, state in enumerate(saved[:here]):
        torch.cuda.set_rng_state(state, device)
    if len(saved) != here and (saved or here):
        log.warning(
            "the checkpoint has CUDA RNG states for %d devices, this machine %d: restored %d, %s",
            len(saved),
            here,
            min(len(saved), here),
            f"not restored: devices {list(range(here, len(saved)))}"
            if len(saved) > here
            else f"devices {list(range(len(saved), here))} keep their seeded streams",
        )
