"""What a training run writes into its checkpoints, and when: ``last.ckpt`` for resuming, the run's config and
the random streams.

The best checkpoint is Lightning's stock ``ModelCheckpoint`` (``conf/callbacks/default.yaml``: saved when a
validation ends, named and scored with that validation's AP). ``last.ckpt`` is :class:`LastCheckpoint`,
because the stock callback cannot give one of its guarantees: Lightning 2.6's
``ModelCheckpoint(save_last=True)`` writes ``last.ckpt`` at the end of training only when it never wrote one
before, so a run whose final step is no multiple of ``every_n_train_steps`` would resume from an older step.
"""

import logging
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.callbacks import Checkpoint
from pytorch_lightning.trainer.states import TrainerFn

log = logging.getLogger(__name__)

LAST = Path("checkpoints") / "last.ckpt"  # in a run's output directory
RUN_CONFIG_KEY = "run_config"  # the run's resolved config, in every checkpoint (``RunConfigInCheckpoint``)


class LastCheckpoint(Checkpoint):
    """``dirpath/last.ckpt`` every ``every_n_train_steps`` optimizer steps and at the end of training,
    whatever the metrics (for resuming). Always that name (no version counter): a run started afresh in a
    directory holding one (``resume.auto=false``) overwrites it, so an automatic resume never takes an older
    file.
    Nothing is written outside a real fit (``fast_dev_run``, a sanity check, ``validate``/``test``).

    Every rank calls ``Trainer.save_checkpoint`` (rank 0 writes, the others wait at its barrier), at the same
    steps on every rank. A ``Checkpoint`` (Lightning's public base class), so Lightning runs it after the
    other callbacks and adds no default ``ModelCheckpoint`` beside it."""

    def __init__(self, dirpath: str | Path, every_n_train_steps: int = 0) -> None:
        if every_n_train_steps < 0:
            raise ValueError(
                f"every_n_train_steps must be >= 0 (0: at the end only), got {every_n_train_steps}"
            )
        self.path = Path(dirpath) / LAST.name
        self.every_n_train_steps = every_n_train_steps
        self.saved_step = 0  # nothing to save before the first step

    @staticmethod
    def fitting(trainer: Trainer) -> bool:
        """Whether this is a real fit (not fast_dev_run, a sanity check, or a validate/test call)."""
        real = trainer.state.fn == TrainerFn.FITTING
        return real and not trainer.fast_dev_run and not trainer.sanity_checking

    def save(self, trainer: Trainer) -> None:
        """Writes ``last.ckpt`` of this step, unless it already was (or this is no real fit)."""
        if self.fitting(trainer) and self.saved_step != trainer.global_step:
            trainer.save_checkpoint(self.path)
            self.saved_step = trainer.global_step

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Every ``every_n_train_steps`` steps (before a validation due at the same step)."""
        if self.every_n_train_steps and trainer.global_step % self.every_n_train_steps == 0:
            self.save(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """The final step too, when it is no multiple of ``every_n_train_steps``."""
        self.save(trainer)


class RunConfigInCheckpoint(Callback):
    """Saves the run's config (``datnet.runs.config.run_identity``) in every checkpoint, so that an automatic
    resume can tell a ``last.ckpt`` of this very run from one of another config."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict) -> None:
        checkpoint[RUN_CONFIG_KEY] = self.config


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
