"""``model.backbone.weights``: ``imagenet`` through torchvision's weights and the torch hub cache,
``scratch``, or a local path; a missing ImageNet file stops the build at once with an error that says what
to do."""

import time
import urllib.error
import warnings
from pathlib import Path

import pytest
import torch
from torchvision.models import ResNet18_Weights, resnet18

from datnet.configs import compose_config
from datnet.models.backbone import (
    WeightsUnavailableError,
    backbone_for_checkpoint,
    build_resnet_fpn_backbone,
    imagenet_file,
)
from datnet.models.mixed_precision import AutocastFrozenBatchNorm2d


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    """An empty ``TORCH_HOME``: the hub cache is ``<it>/hub/checkpoints``."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


@pytest.fixture
def no_download(monkeypatch) -> list[str]:
    """``torch.hub.load_state_dict_from_url`` fails as without a network; the URLs asked for."""
    asked: list[str] = []

    def fail(url, *args, **kwargs):
        asked.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fail)
    return asked


def test_imagenet_file_is_torchvisions_name_in_the_hub_cache(torch_home):
    expected = torch_home / "hub" / "checkpoints" / Path(ResNet18_Weights.IMAGENET1K_V1.url).name
    assert imagenet_file("resnet18") == expected
    assert imagenet_file("resnext101_32x8d").name.startswith("resnext101_32x8d-")


def test_imagenet_loads_from_the_hub_cache(torch_home, no_download):
    torch.manual_seed(0)
    imagenet = resnet18()
    path = imagenet_file("resnet18")
    path.parent.mkdir(parents=True)
    torch.save(imagenet.state_dict(), path)
    backbone, stage5 = build_resnet_fpn_backbone("resnet18", weights="imagenet")
    body = backbone.body
    assert not no_download  # read from the cache, nothing downloaded
    torch.testing.assert_close(body.conv1.weight, imagenet.conv1.weight)
    torch.testing.assert_close(body.layer3[1].bn2.running_var, imagenet.layer3[1].bn2.running_var)
    torch.testing.assert_close(stage5["1.conv2.weight"], imagenet.layer4[1].conv2.weight)
    assert isinstance(body.bn1, AutocastFrozenBatchNorm2d)  # frozen BN, as torchvision with weights
    assert not body.layer1[0].conv1.weight.requires_grad and body.layer2[0].conv1.weight.requires_grad


def test_missing_imagenet_file_is_an_immediate_clear_error(torch_home, no_download):
    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as error:
        build_resnet_fpn_backbone("resnet18", weights="imagenet")
    assert time.monotonic() - start < 5
    message = str(error.value)
    assert "model.backbone.weights" in message and str(imagenet_file("resnet18")) in message
    for alternative in ("model.backbone.weights=/path/to/file.pth", "model.backbone.weights=scratch"):
        assert alternative in message
    assert no_download == [ResNet18_Weights.IMAGENET1K_V1.url]  # tried, as torchvision does


def test_paper_config_defaults_to_imagenet_and_fails_without_it(torch_home, no_download):
    from hydra.utils import instantiate

    cfg = compose_config(["+model=light", "model.backbone.name=resnet18"])
    assert cfg.model.backbone.weights == "imagenet"
    with pytest.raises(Exception, match="model.backbone.weights=scratch"):
        instantiate(cfg.model)


def test_scratch_warns_once_and_trains_everything():
    with pytest.warns(UserWarning, match="weights=scratch") as caught:
        backbone, stage5 = build_resnet_fpn_backbone("resnet18", weights="scratch")
    assert len([w for w in caught if "weights=scratch" in str(w.message)]) == 1
    assert stage5 == {} and isinstance(backbone.body.bn1, torch.nn.BatchNorm2d)
    assert all(p.requires_grad for p in backbone.parameters())


@pytest.mark.parametrize("weights", [None, ""])
def test_null_is_an_error_naming_the_choices(weights):
    with pytest.raises(ValueError, match="imagenet.*scratch.*path"):
        build_resnet_fpn_backbone("resnet18", weights=weights)


def test_local_path_loads(tmp_path, no_download):
    torch.manual_seed(1)
    imagenet = resnet18()
    torch.save(imagenet.state_dict(), tmp_path / "r18.pth")
    backbone, _ = build_resnet_fpn_backbone("resnet18", weights=str(tmp_path / "r18.pth"))
    torch.testing.assert_close(backbone.body.layer4[0].conv1.weight, imagenet.layer4[0].conv1.weight)
    assert not no_download


def test_checkpoint_backbone_keeps_the_modules_and_needs_no_file(torch_home, no_download):
    built = backbone_for_checkpoint({"name": "resnet18", "weights": "imagenet", "norm": "auto"})
    assert built == {"name": "resnet18", "weights": "scratch", "norm": "frozen_bn", "trainable_layers": 3}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        backbone, _ = build_resnet_fpn_backbone(**built)
    assert isinstance(backbone.body.bn1, AutocastFrozenBatchNorm2d) and not no_download
    assert backbone_for_checkpoint({"weights": "scratch"})["norm"] == "bn"


def test_whole_model_checkpoint_of_an_imagenet_run_loads_offline(tmp_path, monkeypatch, no_download):
    """``model.checkpoint`` (and eval.py / predict.py through ``backbone_for_checkpoint``) never looks for
    the ImageNet file, and builds the frozen BatchNorm the checkpoint was trained with (strict load)."""
    from datnet.models import build_datnet
    from datnet.training.run import for_checkpoint

    seeded = tmp_path / "seeded"
    monkeypatch.setenv("TORCH_HOME", str(seeded))
    imagenet_file("resnet18").parent.mkdir(parents=True)
    torch.save(resnet18().state_dict(), imagenet_file("resnet18"))
    kwargs = dict(num_classes=3, pooler="mspwa", box_head="res5", aux=dict(dt=True, seg=True))
    trained = build_datnet(backbone=dict(name="resnet18", weights="imagenet", out_channels=64), **kwargs)
    torch.save(trained.state_dict(), tmp_path / "model.pt")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    backbone = dict(name="resnet18", weights="imagenet", out_channels=64)
    loaded = build_datnet(backbone=backbone, checkpoint=str(tmp_path / "model.pt"), **kwargs)
    torch.testing.assert_close(loaded.backbone.body.conv1.weight, trained.backbone.body.conv1.weight)
    assert not no_download

    cfg = for_checkpoint(compose_config(["experiment=table1/light_r50", "ckpt_path=x"], config_name="eval"))
    assert (cfg.model.backbone.weights, cfg.model.backbone.norm) == ("scratch", "frozen_bn")
