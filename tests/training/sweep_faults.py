"""Test-only faults for sweep jobs: a callback (``+callbacks.fault={_target_:sweep_faults.RankFault,...}``,
with ``tests/training`` on ``PYTHONPATH``) that makes one rank of a DDP job fail at a training step the way
ranks fail for real: an exception, SIGKILL (as the kernel's out-of-memory killer sends it), a non-finite
loss (which ``module.check_finite_losses`` then raises on every rank), or a rank that stops taking part
(``hang``: the others wait in their next collective, as they do for a dead rank under NCCL)."""

import os
import signal
import time

import pytorch_lightning as pl


class RankFault(pl.Callback):
    """On global rank ``rank``, at training step ``step``: ``raise``, ``sigkill``, ``nan_loss`` or
    ``hang``."""

    def __init__(self, rank: int, kind: str, step: int = 1) -> None:
        if kind not in ("raise", "sigkill", "nan_loss", "hang"):
            raise ValueError(f"kind must be raise, sigkill, nan_loss or hang, got {kind!r}")
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
        if self.kind == "hang":
            time.sleep(3600)
        forward = pl_module.model.forward
        pl_module.model.forward = lambda *args, **kwargs: {
            name: loss * float("nan") for name, loss in forward(*args, **kwargs).items()
        }
