"""The non-finite-loss check: recorded on the device at every step, checked by all ranks together only
every ``finite_check_every`` steps, at the last step and before checkpoints; every rank stops with the
same error."""

from datetime import timedelta
from functools import partial
from pathlib import Path

import pytest
import torch
from pytorch_lightning import Trainer
from torch import nn

from datnet.lightning.checkpoints import LastCheckpoint
from datnet.lightning.module import DATNetModule
from datnet.lightning.schedule import Recipe


class ScalarDetector(nn.Module):
    """A one-parameter stand-in for the detector: its loss is NaN on the batches whose image is NaN."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(()))
        self.roi_heads = nn.Module()

    def forward(self, images, targets) -> dict[str, torch.Tensor]:
        return {"loss_a": (self.weight * images[0]).pow(2)}


def batches(num_steps: int, nan_step: int | None, nan_rank: int = 0) -> list:
    """One batch per step (an image, no targets, nothing skipped); NaN at ``nan_step`` on ``nan_rank``."""
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    nan = {nan_step} if rank == nan_rank else set()
    return [([torch.tensor(float("nan") if i in nan else 1.0)], [{}], []) for i in range(num_steps)]


class Data(torch.utils.data.IterableDataset):
    """``batches`` built in the worker (after the DDP process group exists, to know the rank)."""

    def __init__(self, num_steps: int, nan_step: int | None, nan_rank: int = 0) -> None:
        self.args = num_steps, nan_step, nan_rank

    def __iter__(self):
        return iter(batches(*self.args))


def module(every: int, max_steps: int) -> DATNetModule:
    recipe = Recipe(lr=0.01, max_steps=max_steps, milestones=(), warmup_steps=0)
    return DATNetModule(ScalarDetector(), partial(torch.optim.SGD), recipe, finite_check_every=every)


def trainer(max_steps: int, callbacks=(), **kwargs) -> Trainer:
    return Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=any(isinstance(c, LastCheckpoint) for c in callbacks),
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=list(callbacks),
        **kwargs,
    )


def count_reductions(monkeypatch, fit_trainer: Trainer) -> list[int]:
    """The global steps at which the strategy reduces anything (the only collective of the check)."""
    steps: list[int] = []
    reduce = fit_trainer.strategy.reduce

    def counting(*args, **kwargs):
        steps.append(fit_trainer.global_step)
        return reduce(*args, **kwargs)

    monkeypatch.setattr(fit_trainer.strategy, "reduce", counting)
    return steps


def loader(data: Data) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(data, batch_size=None)


def test_finite_run_reduces_only_every_n_steps_and_at_the_last(monkeypatch):
    fit_trainer = trainer(12)
    steps = count_reductions(monkeypatch, fit_trainer)
    fit_trainer.fit(module(5, 12), loader(Data(12, None)))
    assert steps == [4, 9, 11] and fit_trainer.global_step == 12


def test_nan_loss_stops_at_the_next_check_naming_the_step(monkeypatch):
    fit_trainer = trainer(20)
    steps = count_reductions(monkeypatch, fit_trainer)
    with pytest.raises(FloatingPointError, match=r"non-finite loss at step 7 .*steps 5-9 checked together"):
        fit_trainer.fit(module(5, 20), loader(Data(20, 7)))
    assert steps == [4, 9]  # no reduction on the steps in between


def test_nan_loss_never_reaches_a_checkpoint(tmp_path):
    """The step-6 ``last.ckpt`` save checks first: the run stops there, the step-3 file is kept."""
    checkpoint = LastCheckpoint(dirpath=tmp_path, every_n_train_steps=3)
    fit_trainer = trainer(20, [checkpoint])
    with pytest.raises(FloatingPointError, match="non-finite loss at step 4 "):
        fit_trainer.fit(module(50, 20), loader(Data(20, 4)))
    saved = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=False)
    assert saved["global_step"] == 3 and torch.isfinite(saved["state_dict"]["model.weight"])


class RecordingModule(DATNetModule):
    """Writes the error of a failed check into ``directory/rank<r>.txt`` and waits for the other rank to
    do the same before raising it (a rank that raises first would otherwise get the other killed by the
    spawn launcher before it writes; a rank that does not raise makes the barrier time out)."""

    directory: Path

    def check_finite_losses(self) -> None:
        try:
            super().check_finite_losses()
        except FloatingPointError as error:
            (self.directory / f"rank{self.global_rank}.txt").write_text(f"{type(error).__name__}: {error}")
            torch.distributed.monitored_barrier(timeout=timedelta(seconds=60))
            raise


def test_nan_on_one_rank_stops_both_ranks_with_the_same_error(tmp_path):
    """Two gloo ranks; only rank 1 has a NaN loss (step 3): both raise at the step-4 check."""
    recipe = Recipe(lr=0.01, max_steps=10, milestones=(), warmup_steps=0)
    ddp_module = RecordingModule(ScalarDetector(), partial(torch.optim.SGD), recipe, finite_check_every=5)
    ddp_module.directory = tmp_path
    with pytest.raises(Exception, match="non-finite loss at step 3 "):
        trainer(10, strategy="ddp_spawn", devices=2).fit(ddp_module, loader(Data(10, 3, nan_rank=1)))
    errors = [(tmp_path / f"rank{r}.txt").read_text() for r in range(2)]
    assert errors[0] == errors[1] and errors[0].startswith("FloatingPointError: non-finite loss at step 3 ")
