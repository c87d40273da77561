"""Test-only faults for sweep jobs: a callback (``+callbacks.fault={_target_:sweep_faults.RankFault,...}``,
with ``tests/training`` on ``PYTHONPATH``) that makes one rank of a DDP job fail at a training step the way
ranks fail for real: an exception, SIGKILL (as the kernel's out-of-memory killer sends it), or a non-finite
loss (which ``module.check_finite_losses`` then raises on every rank)."""

import os
import signal

import pytorch_lightning as pl


class RankFault(pl.Callback):
    """On global rank ``rank``, at training step ``step``: ``raise``, ``sigkill`` or ``nan_loss``."""

    def __init__(self, rank: int, kind: str, step: int = 1) -> None:
        if kind not in ("raise", "sigkill", "nan_loss"):
            raise ValueError(f"kind must be raise, sigkill or nan_loss, got {kind!r}")
        self.rank, self.kind, self.step = rank, kind, step

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx
    ) -> None:
        if trainer.global_rank != self.rank or trainer.global_step != self.step:
            return
        if self.kind == "raise":
            raise RuntimeError(f"injected fault on rank {self.rank} at step {self.step}")
        if self.kind == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        forward = pl_module.model.forward
        pl_module.model.forward = lambda *args, **kwargs: {
            name: loss * float("nan") for name, loss in forward(*args, **kwargs).items()
        }
