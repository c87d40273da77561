"""Tiny-run settings for the experiment configs: ResNet-18, the embedded shapes data, few ROIs, one step."""

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig
from torchvision.models import get_model

from datnet.configs import compose_config
from datnet.models.backbone import imagenet_file

TINY = [
    "model.backbone.name=resnet18",
    "model.detector.box_batch_size_per_image=16",
    "++model.detector.rpn_pre_nms_top_n_train=100",
    "++model.detector.rpn_post_nms_top_n_train=50",
    "++model.detector.rpn_pre_nms_top_n_test=100",
    "++model.detector.rpn_post_nms_top_n_test=50",
    "++model.detector.box_detections_per_img=20",
    "model.backbone.out_channels=64",
    "data=shapes",
    "data.num_train=8",
    "data.num_val=4",
    "data.batch_size=2",
    "data.val_batch_size=2",
    "data.num_workers=0",
    "data.min_size=96",
    "data.max_size=128",
    "data.multiscale=false",
    "trainer.fast_dev_run=true",
    "logger=csv",
    "callbacks.best_checkpoint=null",
    "callbacks.last_checkpoint=null",
    "callbacks.rich_progress_bar=null",
    "callbacks.rich_model_summary=null",
]


@pytest.fixture(scope="session")
def shapes_root(tmp_path_factory) -> Path:
    """One generated shapes data set for every tiny run of the session."""
    return tmp_path_factory.mktemp("shapes")


@pytest.fixture(scope="session")
def seeded_torch_home(tmp_path_factory) -> Path:
    """A ``TORCH_HOME`` whose hub cache holds a random ResNet-18 state dict under torchvision's file name of
    its ImageNet weights: the paper configurations (``model.backbone.weights=imagenet``) take the real path,
    offline."""
    home = tmp_path_factory.mktemp("torch_home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(home))
        path = imagenet_file("resnet18")
    path.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(get_model("resnet18", weights=None).state_dict(), path)
    return home


@pytest.fixture
def tiny_experiment(
    tmp_path: Path, shapes_root: Path, seeded_torch_home: Path, monkeypatch
) -> Callable[[str], DictConfig]:
    """``tiny_experiment(name)``: ``experiment=name`` shrunk to a 1-step run writing into ``tmp_path``; the
    ImageNet weights (ResNet-18's, random) come from a seeded hub cache."""
    monkeypatch.setenv("TORCH_HOME", str(seeded_torch_home))

    def compose(name: str) -> DictConfig:
        return compose_config(
            [
                f"experiment={name}",
                *TINY,
                f"data.root={shapes_root}",
                f"paths.output_dir={tmp_path}",
                f"paths.data_dir={tmp_path}/data",
            ],
            config_name="train",
        )

    return compose
