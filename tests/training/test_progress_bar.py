"""The progress bar of a step-bounded run names a real epoch, not ``Epoch 0/-2`` (issue 21)."""

import pytorch_lightning as pl
from pytorch_lightning.demos.boring_classes import BoringModel

from datnet.lightning.progress import StepProgressBar


class Descriptions(pl.Callback):
    """Records the training bar's description after each epoch start (callbacks run after the bar's)."""

    def __init__(self, bar: StepProgressBar) -> None:
        self.bar, self.seen = bar, []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seen.append(self.bar.progress.tasks[self.bar.train_progress_bar_id].description)


def test_a_step_bounded_run_shows_its_epoch_and_step_budget(tmp_path) -> None:
    bar = StepProgressBar()
    seen = Descriptions(bar)
    trainer = pl.Trainer(
        max_steps=3, max_epochs=-1, limit_train_batches=2, limit_val_batches=0, callbacks=[bar, seen],
        logger=False, enable_checkpointing=False, enable_model_summary=False, default_root_dir=tmp_path,
    )
    trainer.fit(BoringModel())
    assert seen.seen == ["Epoch 0 · step budget 3", "Epoch 1 · step budget 3"]
