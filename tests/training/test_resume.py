"""Resuming a killed run: no lost or repeated optimizer step, the same LR schedule position, and (killed at
an epoch boundary) the very same weights as an uninterrupted run."""

from pathlib import Path

import pytest
import torch
from pytorch_lightning import Callback

from datnet.runs.tasks import train


class Kill(Callback):
    """Stops the process-like run with an exception before optimizer step ``step + 1``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            raise KeyboardInterrupt  # what a killed job looks like to Lightning: no clean shutdown


RUN = [
    "model=maskrcnn",  # the mechanism is the model's own; the smallest preset keeps the test quick
    "trainer.max_steps=4",
    "trainer.limit_train_batches=2",  # 2 steps per epoch
    "trainer.limit_val_batches=0",
    "schedule.checkpoint_every=1",
    "schedule.reference_batch_size=2",  # the total batch: the schedule's steps are not rescaled
    "schedule.val_every=100",
    "schedule.warmup_steps=2",
    "schedule.milestones=[3]",  # warm-up, then a decay, inside the 4 steps
    "data.hflip_prob=0",
    "data.color_jitter=0",
    "callbacks.best_checkpoint=null",
]


def last_checkpoint(directory: Path) -> dict:
    return torch.load(directory / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)


@pytest.mark.parametrize(("kill_at", "same_weights"), [(2, True), (3, False)])
def test_resume_continues_the_same_schedule(tiny_config, shapes_overrides, tmp_path, kill_at, same_weights):
    uninterrupted = tmp_path / "a"
    cfg = tiny_config([*shapes_overrides, *RUN, f"paths.output_dir={uninterrupted}"])
    train(cfg)

    killed = tmp_path / "b"
    cfg = tiny_config(
        [
            *shapes_overrides,
            *RUN,
            f"paths.output_dir={killed}",
            "+callbacks.kill._target_=" + f"{__name__}.Kill",
            f"+callbacks.kill.step={kill_at}",
        ]
    )
    with pytest.raises(SystemExit):  # Lightning turns the interrupt into a graceful exit: no step after it
        train(cfg)
    assert last_checkpoint(killed)["global_step"] == kill_at

    resumed = tmp_path / "c"
    cfg = tiny_config(
        [
            *shapes_overrides,
            *RUN,
            f"paths.output_dir={resumed}",
            f"ckpt_path={killed / 'checkpoints' / 'last.ckpt'}",
        ]
    )
    train(cfg)

    a, c = last_checkpoint(uninterrupted), last_checkpoint(resumed)
    assert a["global_step"] == c["global_step"] == 4
    assert a["lr_schedulers"][0]["last_epoch"] == c["lr_schedulers"][0]["last_epoch"] == 4
    lr_a = [g["lr"] for g in a["optimizer_states"][0]["param_groups"]]
    lr_c = [g["lr"] for g in c["optimizer_states"][0]["param_groups"]]
    assert lr_a == lr_c
    steps_a = {int(s["step"]) for s in a["optimizer_states"][0]["state"].values()}
    steps_c = {int(s["step"]) for s in c["optimizer_states"][0]["state"].values()}
    assert steps_a == steps_c == {4}  # every parameter updated exactly 4 times: none lost, none repeated
    if same_weights:
        for key, value in a["state_dict"].items():
            torch.testing.assert_close(c["state_dict"][key], value, msg=key)
