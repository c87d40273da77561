"""``model.backbone.weights``: ``imagenet`` through torchvision's weights and the torch hub cache, ``c2``
(maskrcnn-benchmark's converted Caffe2 weights in the hub cache), ``scratch``, or a local path; a missing
file stops the build at once with an error that says what to do."""

import time
import urllib.error
import warnings
from pathlib import Path

import pytest
import torch
from torchvision.models import ResNet18_Weights, resnet18, resnet50

from datnet.configs import compose_config
from datnet.models.backbone import (
    C2_TRANSFORM,
    WeightsUnavailableError,
    backbone_for_checkpoint,
    build_resnet_fpn_backbone,
    c2_file,
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
    from datnet.runs.config import for_checkpoint

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


def test_stride_in_1x1_moves_each_stage_stride_into_its_first_1x1():
    """Caffe2 / MSRA ResNet-50 (``R-50.pkl``): stride 2 in ``branch2a`` (conv1), not the 3x3 (conv2)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c2, _ = build_resnet_fpn_backbone("resnet50", weights="scratch", stride_in_1x1=True, out_channels=32)
    for stage in (c2.body.layer2, c2.body.layer3, c2.body.layer4):
        first = stage[0]
        assert (first.conv1.stride, first.conv2.stride) == ((2, 2), (1, 1))
        assert first.downsample[0].stride == (2, 2)
    assert c2.body.layer1[0].conv1.stride == c2.body.layer1[0].conv2.stride == (1, 1)
    pyramid = c2(torch.rand(1, 3, 64, 96))  # P2..P6 at strides 4..64, as with the stride in the 3x3
    assert [tuple(f.shape[-2:]) for f in pyramid.values()] == [(16, 24), (8, 12), (4, 6), (2, 3), (1, 2)]
    with pytest.raises(ValueError, match="stride_in_1x1=true needs bottleneck blocks"):
        build_resnet_fpn_backbone("resnet18", weights="scratch", stride_in_1x1=True)


def test_transform_options_are_checked():
    from datnet.models import DATNetTransform, build_datnet

    for bad, field in ((dict(pixel_range=256), "pixel_range"), (dict(channel_order="gbr"), "channel_order")):
        with pytest.raises(ValueError, match=f"model.transform.{field}"):
            DATNetTransform(64, 96, [0.5] * 3, [0.2] * 3, **bad)
    with pytest.raises(ValueError, match="set model.transform.image_mean, not model.detector.image_mean"):
        build_datnet(num_classes=3, backbone=dict(name="resnet18"), detector=dict(image_mean=[0, 0, 0]))


def test_c2_file_is_read_from_the_hub_cache_with_its_conventions(torch_home, no_download):
    """``model.backbone.weights=c2``: the converted R-50 file under its name in the hub cache, and the model
    built as that file was trained (stride in each stage's first 1x1, BGR 0..255 minus the Caffe2 mean)."""
    from datnet.models import build_datnet

    torch.manual_seed(0)
    c2 = resnet50()
    path = c2_file("resnet50")
    assert path == torch_home / "hub" / "checkpoints" / "resnet50-c2.pth"
    path.parent.mkdir(parents=True)
    torch.save(c2.state_dict(), path)
    model = build_datnet(
        num_classes=3, backbone=dict(name="resnet50", weights="c2"), box_head="res5", pooler="mspwa"
    )
    body = model.backbone.body
    assert not no_download
    torch.testing.assert_close(body.layer3[2].conv2.weight, c2.layer3[2].conv2.weight, rtol=0, atol=0)
    assert isinstance(body.bn1, AutocastFrozenBatchNorm2d)
    for stage in (body.layer2[0], body.layer4[0], model.roi_heads.box_head.res5[0]):
        assert (stage.conv1.stride, stage.conv2.stride) == ((2, 2), (1, 1))
    transform = model.transform
    assert (transform.pixel_range, transform.channel_order) == (255, "bgr")
    assert transform.image_mean == C2_TRANSFORM["image_mean"] and transform.image_std == [1.0, 1.0, 1.0]


def test_missing_c2_file_names_the_conversion_command(torch_home, no_download):
    with pytest.raises(WeightsUnavailableError) as error:
        build_resnet_fpn_backbone("resnext101_32x8d", weights="c2")
    message = str(error.value)
    assert str(c2_file("resnext101_32x8d")) in message
    assert "`python scripts/convert_c2_weights.py X-101-32x8d.pkl`" in message
    assert not no_download
    with pytest.raises(ValueError, match="Caffe2 weights exist for"):
        build_resnet_fpn_backbone("resnet18", weights="c2")
