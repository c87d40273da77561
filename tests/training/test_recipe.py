"""The paper's schedule and the linear scaling rule."""

import pytest

from datnet.configs import compose_config
from datnet.training.recipe import scale_recipe


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
