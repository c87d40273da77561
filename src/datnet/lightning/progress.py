"""The training progress bar of a run bounded by steps: Lightning's Rich bar names the epoch ``N/M`` with
``M = max_epochs - 1``, which for our runs (``max_epochs = -1``, the schedule counts optimizer steps) reads
``Epoch 0/-2``. This bar names the epoch alone and the step budget beside it."""

import pytorch_lightning as pl
from pytorch_lightning.callbacks import RichProgressBar


class StepProgressBar(RichProgressBar):
    """``RichProgressBar`` whose training description is ``Epoch N · step budget S`` when the run has no
    epoch limit, and Lightning's own otherwise."""

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        unbounded = trainer.max_epochs is None or trainer.max_epochs < 0
        if unbounded and self.progress is not None and self.train_progress_bar_id is not None:
            description = f"Epoch {trainer.current_epoch} · step budget {trainer.max_steps}"
            self.progress.update(self.train_progress_bar_id, description=description)
            self.refresh()
