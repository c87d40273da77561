"""Mid-epoch resume is exact in the data: the training loader's position is part of the checkpoint
(Lightning's stateful-loader mechanism, ``ResumableLoader``), so the resumed run trains on the rest of the
interrupted epoch, then the next epochs, in the very order of an uninterrupted run, with loader workers."""

import json
from pathlib import Path

import pytest
import torch
from pytorch_lightning import Callback

from datnet.runs.tasks import train


class RecordImageIds(Callback):
    """Test-only: appends ``[global step after the batch, image ids of the batch]`` per training batch to a
    JSON-lines file."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        ids = [int(t["image_id"]) for t in batch[1]]
        with self.path.open("a") as f:
            f.write(json.dumps([trainer.global_step, ids]) + "\n")


class Kill(Callback):
    """Stops the run with an interrupt before optimizer step ``step + 1`` (no clean shutdown)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            raise KeyboardInterrupt


RUN = [
    "model=maskrcnn",  # the mechanism is the loop's and the loader's; the smallest preset keeps it quick
    "data.num_workers=1",  # workers prefetch batches: the position must count what the loop got
    "trainer.max_steps=5",  # 4 batches per epoch: killed inside epoch 0, resumed into epoch 1
    "trainer.limit_val_batches=0",
    "schedule.checkpoint_every=2",
    "schedule.reference_batch_size=2",
    "schedule.val_every=100",
    "callbacks.best_checkpoint=null",
]


def records(path: Path) -> list[tuple[int, list[int]]]:
    return [tuple(json.loads(line)) for line in path.read_text().splitlines()]


def test_resumed_mid_epoch_sees_the_uninterrupted_runs_images(tiny_config, shapes_overrides, tmp_path):
    def run(name: str, *extra: str) -> Path:
        ids = tmp_path / f"{name}.jsonl"
        overrides = [*shapes_overrides, *RUN, f"paths.output_dir={tmp_path / name}", *extra]
        record = [f"+callbacks.ids._target_={__name__}.RecordImageIds", f"+callbacks.ids.path={ids}"]
        train(tiny_config([*overrides, *record]))
        return ids

    uninterrupted = records(run("a"))
    assert [step for step, _ in uninterrupted] == [1, 2, 3, 4, 5]

    with pytest.raises(SystemExit):  # Lightning's graceful exit after the interrupt
        run("b", f"+callbacks.kill._target_={__name__}.Kill", "+callbacks.kill.step=3")
    killed = records(tmp_path / "b.jsonl")
    checkpoint = torch.load(
        tmp_path / "b" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False
    )
    assert checkpoint["global_step"] == 2 and len(killed) == 3  # a batch after the checkpoint, lost
    (loader_state,) = checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert loader_state["epoch"] == 0 and loader_state["batches"] == 2

    resumed = records(run("c", f"ckpt_path={tmp_path / 'b' / 'checkpoints' / 'last.ckpt'}"))
    assert [step for step, _ in resumed] == [3, 4, 5]
    # the interrupted epoch continues after its first 2 batches (not from its start), then epoch 1 as before
    assert killed[:2] + resumed == uninterrupted
