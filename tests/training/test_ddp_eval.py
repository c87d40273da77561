"""Under DDP every validation image is evaluated exactly once: 2 CPU processes (gloo) on a set of odd size
give the same metrics as 1 process."""

import pytest

from datnet.runs.tasks import train


@pytest.fixture
def odd_shapes(shapes_overrides) -> list[str]:
    return [*shapes_overrides, "data.num_val=5", "data.val_batch_size=1", "model=maskrcnn"]


def test_two_process_validation_equals_one_process(tiny_config, odd_shapes, tmp_path):
    no_checkpoints = ["callbacks.best_checkpoint=null", "callbacks.last_checkpoint=null"]
    common = [*odd_shapes, "train=false", *no_checkpoints, "seed=3"]
    single = train(tiny_config([*common, f"paths.output_dir={tmp_path / 'one'}"]))
    double = train(
        tiny_config(
            [
                *common,
                f"paths.output_dir={tmp_path / 'two'}",
                "trainer.accelerator=cpu",
                "trainer.devices=2",
                "trainer.strategy=ddp_spawn",
            ]
        )
    )
    keys = [k for k in single if k.startswith("val/")]
    assert "val/bbox/AP" in keys and single["val/rpn/AR@100"] > 0  # not a trivial all-zero comparison
    for key in keys:
        assert double[key] == pytest.approx(single[key], nan_ok=True), key
