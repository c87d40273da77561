"""Every config group option and experiment composes; the defaults are the paper's recipe."""

import pytest

from datnet.configs import CONF_DIR, compose_config


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def test_defaults_are_the_paper_recipe():
    cfg = compose_config([], config_name="train")
    assert cfg.data._target_.endswith("CocoDataModule") and cfg.data.min_size == 800
    assert cfg.model.aux.dt and cfg.model.aux.seg and cfg.model.pooler == "mspwa"
    assert cfg.model.backbone.name == "resnet50" and cfg.model.detector.box_batch_size_per_image == 512
    assert cfg.optimizer._target_ == "torch.optim.SGD" and cfg.optimizer.momentum == 0.9
    assert cfg.optimizer.weight_decay == 1e-4 and cfg.schedule.lr == 0.02
    assert "wandb" in cfg.logger


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_composes(experiment):
    cfg = compose_config([f"experiment={experiment}"], config_name="train")
    assert cfg.model._target_ == "datnet.models.build_datnet"


@pytest.mark.parametrize(
    ("group", "option"),
    [
        (g, o)
        for g in ("model", "data", "trainer", "logger", "optimizer", "schedule", "debug")
        for o in options(g)
    ],
)
def test_every_group_option_composes(group, option):
    cfg = compose_config([f"{group}={option}"], config_name="train")
    assert cfg is not None


def test_users_command_lines_compose():
    cfg = compose_config(["model=heavy", "data=coco", "trainer.devices=8"], config_name="train")
    assert cfg.model.mask_head == "res5" and cfg.trainer.devices == 8
    cfg = compose_config(["model.aux.dt=false"], config_name="train")
    assert cfg.model.aux.dt is False
    cfg = compose_config(["ckpt_path=/tmp/x.ckpt", "experiment=demo"], config_name="eval")
    assert cfg.ckpt_path == "/tmp/x.ckpt"


def test_deterministic_true_warns_instead_of_failing(tiny_config, shapes_overrides):
    """``trainer.deterministic=true`` becomes Lightning's "warn": deterministic kernels where they exist, a
    warning (not an error, as on CUDA for roi_align's backward) where they do not."""
    import torch

    from datnet.runs.build import build_trainer
    from datnet.runs.plan import plan_training

    cfg = tiny_config([*shapes_overrides, "trainer.deterministic=true"])
    try:
        plan = plan_training(cfg)
        build_trainer(plan, callbacks=[])
        assert plan.cfg.trainer.deterministic == "warn"
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
