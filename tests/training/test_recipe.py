"""The paper's schedule and the linear scaling rule."""

import pytest

from datnet.configs import compose_config
from datnet.lightning.checkpoints import LastCheckpoint
from datnet.lightning.schedule import scale_intervals, scale_recipe, scale_steps
from datnet.runs.build import build_data_and_model, build_module, build_trainer, training_callbacks
from datnet.runs.plan import plan_training


def test_coco_1x_at_reference_batch_is_the_paper_schedule():
    s = compose_config(["+schedule=1x"]).schedule
    recipe = scale_recipe(s.lr, s.max_steps, list(s.milestones), s.warmup_steps, s.reference_batch_size, 16)
    assert recipe.lr == pytest.approx(0.02)
    assert (recipe.max_steps, recipe.milestones) == (90000, (60000, 80000))


@pytest.mark.parametrize(
    ("total", "lr", "steps", "milestones"),
    [(8, 0.01, 180000, (120000, 160000)), (32, 0.04, 45000, (30000, 40000))],
)
def test_linear_scaling_rule(total, lr, steps, milestones):
    recipe = scale_recipe(0.02, 90000, [60000, 80000], 1000, 16, total)
    assert recipe.lr == pytest.approx(lr)
    assert (recipe.max_steps, recipe.milestones) == (steps, milestones)
    # the same number of images is seen, and the LR x steps product is preserved
    assert recipe.max_steps * total == 90000 * 16


def test_warmup_then_step_decay():
    recipe = scale_recipe(0.02, 100, [60, 80], 10, 16, 16, warmup_factor=0.001, gamma=0.1)
    assert recipe.lr_factor(0) == pytest.approx(0.001)
    assert recipe.lr_factor(5) == pytest.approx(0.001 * 0.5 + 0.5)
    assert recipe.lr_factor(10) == recipe.lr_factor(59) == 1.0
    assert recipe.lr_factor(60) == pytest.approx(0.1)
    assert recipe.lr_factor(80) == pytest.approx(0.01)


@pytest.mark.parametrize("schedule", ["1x", "2x", "voc"])
def test_paper_schedules_are_maskrcnn_benchmarks_solver(schedule):
    """Warm-up 500 iterations linear from 1/3 (WARMUP_ITERS, WARMUP_FACTOR), biases at 2x the LR without
    weight decay (BIAS_LR_FACTOR, WEIGHT_DECAY_BIAS), at the schedule's reference batch."""
    s = compose_config([f"+schedule={schedule}"]).schedule
    recipe = scale_recipe(
        s.lr,
        s.max_steps,
        list(s.milestones),
        s.warmup_steps,
        s.reference_batch_size,
        s.reference_batch_size,
        s.warmup_factor,
        s.gamma,
        s.bias_lr_factor,
        s.bias_weight_decay,
    )
    assert [recipe.lr_factor(k) for k in (0, 250, 500)] == pytest.approx([1 / 3, 2 / 3, 1])
    assert (recipe.bias_lr_factor, recipe.bias_weight_decay) == (2.0, 0.0)


def test_cpu_schedules_keep_biases_like_weights():
    for experiment in ("demo", "ablation/pennfudan"):
        s = compose_config([f"experiment={experiment}"], config_name="train").schedule
        assert (s.bias_lr_factor, s.bias_weight_decay) == (1.0, None)


@pytest.mark.parametrize(
    ("total", "val_every", "checkpoint_every"), [(2, 80000, 40000), (16, 10000, 5000), (128, 1250, 625)]
)
def test_intervals_scale_like_the_recipe(total, val_every, checkpoint_every):
    """COCO 1x validates every 10k steps of 16 images: every 80k of 2 (1 GPU), 1250 of 128 (8 x 16)."""
    intervals = scale_intervals(10000, 5000, 16, total)
    assert (intervals.val_every, intervals.checkpoint_every) == (val_every, checkpoint_every)
    recipe = scale_recipe(0.02, 90000, [60000, 80000], 1000, 16, total)
    assert recipe.max_steps / intervals.val_every == 9  # the same 9 validations whatever the batch


def test_scale_steps_rounds_up_and_keeps_zero():
    assert scale_steps(450, 4, 8) == 225 and scale_steps(5, 4, 8) == 3 and scale_steps(1, 4, 64) == 1
    assert scale_steps(0, 16, 2) == 0
    with pytest.raises(ValueError, match="positive"):
        scale_steps(10, 16, 0)


@pytest.mark.parametrize(("devices", "val_every", "checkpoint_every"), [(1, 80000, 40000), (8, 10000, 5000)])
def test_trainer_and_checkpoint_get_the_scaled_intervals(tmp_path, devices, val_every, checkpoint_every):
    """Through the composed config, the run plan and the objects built from it: 1x with 2 images per rank on 1
    and 8 (CPU) ranks."""
    cfg = compose_config(
        [
            "trainer=cpu",
            f"trainer.devices={devices}",
            "data=shapes",
            f"data.root={tmp_path}/shapes",
            "data.batch_size=2",
            "model.backbone.name=resnet18",
            "model.backbone.weights=scratch",
            "logger=none",
            "callbacks.rich_progress_bar=null",
            "callbacks.rich_model_summary=null",
            "callbacks.prediction_images=null",
            f"paths.output_dir={tmp_path}",
        ],
        config_name="train",
    )
    assert cfg.schedule.val_every == 10000 and cfg.schedule.reference_batch_size == 16
    plan = plan_training(cfg)
    _, model = build_data_and_model(plan.cfg)
    trainer = build_trainer(plan, training_callbacks(plan))
    assert trainer.world_size == plan.world_size == devices
    assert trainer.val_check_interval == val_every
    (checkpoint,) = [c for c in trainer.callbacks if isinstance(c, LastCheckpoint)]
    assert checkpoint.every_n_train_steps == checkpoint_every
    module = build_module(plan, model)
    assert trainer.max_steps / trainer.val_check_interval == 9  # 9 validations, as at 16 images per step
    assert module.recipe.max_steps == trainer.max_steps
    assert module.recipe.warmup_steps == 500 * 16 // (2 * devices)  # scaled like every iteration count
    assert (module.recipe.bias_lr_factor, module.recipe.bias_weight_decay) == (2.0, 0.0)
