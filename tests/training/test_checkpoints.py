"""Checkpoints: ``last.ckpt`` every N steps whatever the monitor, the best saved when a validation ends and
scored with that validation's AP (never with a previous validation's)."""

from pathlib import Path

import pytest
import torch
from pytorch_lightning import LightningModule, Trainer
from torch.utils.data import DataLoader, TensorDataset

from datnet.training.callbacks import LastAndBestCheckpoint
from datnet.training.loggers import instantiate_callbacks

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


def fit(directory: Path, max_steps: int = 6, **checkpoint_kwargs) -> LastAndBestCheckpoint:
    """Fits ``ScriptedAP`` with validation every 2 steps and ``last.ckpt`` every 3 (4 steps per epoch)."""
    kwargs = {"monitor": "val/bbox/AP", "mode": "max", **checkpoint_kwargs}
    checkpoint = LastAndBestCheckpoint(
        dirpath=directory,
        filename="best-step{step}-ap{val/bbox/AP:.4f}",
        save_last=True,
        auto_insert_metric_name=False,
        every_n_train_steps=3,
        **kwargs,
    )
    data = DataLoader(TensorDataset(torch.randn(4, 2)), batch_size=1)
    trainer = Trainer(
        max_steps=max_steps,
        val_check_interval=2,
        check_val_every_n_epoch=None,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        callbacks=[checkpoint],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(ScriptedAP(), data, data)
    return checkpoint


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def saved_score(path: Path) -> float:
    """The score that the checkpoint's own callback state gives the file."""
    state = next(v for k, v in load(path)["callbacks"].items() if k.startswith("LastAndBestCheckpoint"))
    return float(state["best_k_models"][str(path)])


def test_best_is_the_best_validation_scored_with_its_own_ap(tmp_path):
    checkpoint = fit(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best-step4-ap0.0270.ckpt", "last.ckpt"]
    best = tmp_path / "best-step4-ap0.0270.ckpt"
    assert checkpoint.best_model_path == str(best)
    assert float(checkpoint.best_model_score) == pytest.approx(0.027)
    assert load(best)["global_step"] == 4 and saved_score(best) == pytest.approx(0.027)
    assert load(tmp_path / "last.ckpt")["global_step"] == 6


def test_every_validation_is_scored_with_its_own_ap(tmp_path):
    fit(tmp_path, save_top_k=-1)
    best = sorted(tmp_path.glob("best-*.ckpt"))
    assert [p.name for p in best] == [f"best-step{s}-ap{ap:.4f}.ckpt" for s, ap in AP_AT_STEP.items()]
    for path, (step, ap) in zip(best, AP_AT_STEP.items()):
        assert load(path)["global_step"] == step and saved_score(path) == pytest.approx(ap)


def test_last_checkpoint_follows_the_steps_and_the_end_without_a_monitor(tmp_path):
    fit(tmp_path, max_steps=5, monitor=None, save_top_k=0)
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
    assert load(tmp_path / "last.ckpt")["global_step"] == 5  # the final step, though not a multiple of 3


def test_default_config_builds_it(tiny_config):
    cfg = tiny_config(["schedule.checkpoint_every=7"])
    (checkpoint,) = [c for c in instantiate_callbacks(cfg.callbacks) if isinstance(c, LastAndBestCheckpoint)]
    assert checkpoint.monitor == "val/bbox/AP" and checkpoint.save_top_k == 1 and checkpoint.save_last
    assert checkpoint._every_n_train_steps == 7
    name = checkpoint.format_checkpoint_name({"step": torch.tensor(4), "val/bbox/AP": torch.tensor(0.027)})
    assert Path(name).name == "best-step4-ap0.0270.ckpt"
