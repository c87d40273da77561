"""Checkpoints: ``last.ckpt`` every N steps and at the end whatever the monitor (``LastCheckpoint``), the best
saved by Lightning's own ``ModelCheckpoint`` when a validation ends and scored with that validation's AP
(never with a previous validation's), as ``conf/callbacks/default.yaml`` configures it."""

from pathlib import Path

import pytest
import torch
from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.callbacks import Checkpoint, ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from datnet.runs.loggers import instantiate_callbacks

AP_AT_STEP = {2: 0.005, 4: 0.027, 6: 0.009}  # validations every 2 steps: up, then down


class ScriptedAP(LightningModule):
    """A linear layer whose validations log the scripted ``val/bbox/AP`` of their step."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx) -> None:
        pass

    def on_validation_epoch_end(self) -> None:
        self.log("val/bbox/AP", AP_AT_STEP[self.global_step])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def default_callbacks(tiny_config, *overrides: str) -> list:
    """The callbacks of ``conf/callbacks/default.yaml`` (writing into ``<tmp_path>/checkpoints``),
    ``last.ckpt`` every 3 steps."""
    return instantiate_callbacks(tiny_config(["schedule.checkpoint_every=3", *overrides]).callbacks)


def fit(callbacks: list, max_steps: int = 6) -> None:
    """Fits ``ScriptedAP`` with validation every 2 steps (4 steps per epoch)."""
    data = DataLoader(TensorDataset(torch.randn(4, 2)), batch_size=1)
    trainer = Trainer(
        max_steps=max_steps,
        val_check_interval=2,
        check_val_every_n_epoch=None,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        callbacks=[c for c in callbacks if isinstance(c, Checkpoint)],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(ScriptedAP(), data, data)


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def saved_score(path: Path) -> float:
    """The score that the checkpoint's own callback state gives the file."""
    state = next(v for k, v in load(path)["callbacks"].items() if k.startswith("ModelCheckpoint"))
    return float(state["best_k_models"][str(path)])


def test_best_is_the_best_validation_scored_with_its_own_ap(tiny_config, tmp_path):
    callbacks = default_callbacks(tiny_config)
    fit(callbacks)
    directory = tmp_path / "checkpoints"
    assert sorted(p.name for p in directory.iterdir()) == ["best-step4-ap0.0270.ckpt", "last.ckpt"]
    best = directory / "best-step4-ap0.0270.ckpt"
    (checkpoint,) = [c for c in callbacks if isinstance(c, ModelCheckpoint)]
    assert checkpoint.best_model_path == str(best)
    assert float(checkpoint.best_model_score) == pytest.approx(0.027)
    assert load(best)["global_step"] == 4 and saved_score(best) == pytest.approx(0.027)
    assert load(directory / "last.ckpt")["global_step"] == 6


def test_every_validation_is_scored_with_its_own_ap(tiny_config, tmp_path):
    fit(default_callbacks(tiny_config, "callbacks.best_checkpoint.save_top_k=-1"))
    best = sorted((tmp_path / "checkpoints").glob("best-*.ckpt"))
    assert [p.name for p in best] == [f"best-step{s}-ap{ap:.4f}.ckpt" for s, ap in AP_AT_STEP.items()]
    for path, (step, ap) in zip(best, AP_AT_STEP.items()):
        assert load(path)["global_step"] == step and saved_score(path) == pytest.approx(ap)


def test_last_checkpoint_follows_the_steps_and_the_end_without_a_monitor(tiny_config, tmp_path):
    fit(default_callbacks(tiny_config, "callbacks.best_checkpoint=null"), max_steps=5)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["last.ckpt"]
    assert load(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 5  # the final step: 5 % 3 != 0


def test_lightnings_own_last_checkpoint_misses_the_final_step(tmp_path):
    """Why ``LastCheckpoint`` exists: the stock callback's ``save_last`` writes ``last.ckpt`` at the end of
    training only when it never wrote one, so the final step 5 is lost after the step-3 save. When this
    fails, Lightning saves the final step itself and ``LastCheckpoint`` can go (docs/design.md)."""
    stock = ModelCheckpoint(dirpath=tmp_path, save_top_k=0, save_last=True, every_n_train_steps=3)
    fit([stock], max_steps=5)
    assert load(tmp_path / "last.ckpt")["global_step"] == 3


def test_a_fresh_run_overwrites_last_checkpoint_without_a_version_counter(tiny_config, tmp_path):
    fit(default_callbacks(tiny_config, "callbacks.best_checkpoint=null"), max_steps=5)
    fit(default_callbacks(tiny_config, "callbacks.best_checkpoint=null"), max_steps=4)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["last.ckpt"]
    assert load(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 4
