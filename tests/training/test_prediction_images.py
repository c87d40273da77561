"""Prediction images reach W&B (offline): predictions, DT and semantic maps beside their targets."""

from PIL import Image

from .conftest import QUIET, TINY


def test_prediction_panels_are_logged_to_wandb_offline(tmp_path, shapes_overrides, run_script):
    run_script(
        "src/train.py",
        [
            "experiment=demo",
            *TINY,
            *QUIET,
            *shapes_overrides,
            "logger=wandb",
            "model=light",
            "trainer.max_steps=1",
            "schedule.val_every=1",
            "trainer.limit_val_batches=1",
            "callbacks.best_checkpoint=null", "callbacks.last_checkpoint=null",
            "callbacks.prediction_images.every_n_batches=1",
            "callbacks.prediction_images.score_threshold=0.0",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
    )
    images = list(tmp_path.glob("run/wandb/offline-run-*/files/media/images/val/predictions_*.png"))
    assert len(images) == 2  # max_images of the first validation batch
    width, height = Image.open(images[0]).size
    # image | DT prediction | DT target | semantic prediction | semantic target, each 96..128 px (data sizes)
    assert 96 <= height <= 128 and 5 * 96 <= width <= 5 * 128 and width % 5 == 0
