"""Shapes and behaviour of the DATNet building blocks: auxiliary heads, fusion, MSPwA, ROI heads."""

from collections import OrderedDict

import pytest
import torch

from datnet.models import (
    DistanceTransformHead,
    FeatureFusion,
    MultiScaleAttentionPooler,
    SemanticHead,
)
from datnet.models.build import build_pooler
from datnet.models.roi_feature_extractors import build_box_head, build_res5


def pyramid(h: int = 96, w: int = 128, channels: int = 256) -> "OrderedDict[str, torch.Tensor]":
    """P2..P5 at strides 4..32 of an h x w padded image and P6 = subsampled P5, as torchvision's FPN."""
    feats = OrderedDict(
        (str(i), torch.randn(1, channels, h // 2 ** (i + 2), w // 2 ** (i + 2))) for i in range(4)
    )
    feats["pool"] = torch.nn.functional.max_pool2d(feats["3"], 1, 2)
    return feats


@pytest.mark.parametrize("size", [(96, 128), (160, 224)])  # the second has odd P5 and P6 sizes
def test_aux_heads_give_quarter_resolution_features_and_logits(size):
    feats = pyramid(*size)
    dt_head, sem_head = DistanceTransformHead(4), SemanticHead(7)
    f_dt = dt_head(feats)
    assert f_dt.shape == (1, 256, size[0] // 4, size[1] // 4)
    assert dt_head.predict(f_dt).shape == (1, 4, size[0] // 4, size[1] // 4)
    assert sem_head.predict(sem_head(feats)).shape == (1, 7, size[0] // 4, size[1] // 4)


def test_aux_head_uses_one_upsampling_stage_per_octave():
    head = DistanceTransformHead(4)
    assert [len(stages) for stages in head.scale_stages] == [0, 1, 2, 3, 4]  # P2 as is ... P6 four stages


def test_sum_fusion_adds_resized_aux_features_and_rederives_p6():
    feats = pyramid()
    aux = [torch.randn(1, 256, 24, 32), torch.randn(1, 256, 24, 32)]
    fusion = FeatureFusion("sum")
    assert sum(p.numel() for p in fusion.parameters()) == 0
    fused = fusion(feats, aux)
    torch.testing.assert_close(fused["0"], feats["0"] + aux[0] + aux[1])
    resized = sum(torch.nn.functional.interpolate(a, size=(6, 8), mode="bilinear") for a in aux)
    torch.testing.assert_close(fused["2"], feats["2"] + resized)
    torch.testing.assert_close(fused["pool"], torch.nn.functional.max_pool2d(fused["3"], 1, 2))


@pytest.mark.parametrize(("mode", "convs"), [("sum2conv", 2), ("sum4conv", 4)])
def test_conv_fusion_layers_are_shared_across_levels(mode, convs):
    fusion = FeatureFusion(mode)
    assert sum(p.numel() for p in fusion.parameters()) == convs * (256 * 256 * 9 + 256)
    fused = fusion(pyramid(), [torch.randn(1, 256, 24, 32)])
    assert all((fused[k] >= 0).all() for k in ["0", "1", "2", "3"])  # each level ends in a ReLU


def test_unknown_fusion_is_a_clear_error():
    with pytest.raises(ValueError, match="model.fusion"):
        FeatureFusion("concat")


def test_mspwa_concatenates_all_levels_with_se_attention():
    pooler = MultiScaleAttentionPooler(["0", "1", "2", "3"], 7)
    boxes = [torch.tensor([[4.0, 4.0, 40.0, 30.0], [10.0, 20.0, 120.0, 90.0]])]
    out = pooler(pyramid(), boxes, [(96, 128)])
    assert out.shape == (2, 1024, 7, 7)
    se = pooler.attention
    assert isinstance(se.avgpool, torch.nn.AdaptiveMaxPool2d)  # max-pool squeeze
    assert se.fc1.out_channels == 1024 // 16  # reduction 16


@pytest.mark.parametrize("grad", [True, False])
def test_mspwa_reweights_each_channel_by_its_max_squeezed_se_weight(grad):
    """Fig. 3: the concatenated ROI maps times a per-channel weight in (0, 1), sigmoid(fc2(relu(fc1(max
    over the ROI's map)))), computed by hand; in training and in the in-place inference path alike."""
    torch.manual_seed(0)
    pooler = MultiScaleAttentionPooler(["0", "1", "2", "3"], 7)
    boxes = [torch.tensor([[4.0, 4.0, 40.0, 30.0], [10.0, 20.0, 120.0, 90.0]])]
    feats = pyramid()
    pooled = pooler.pool_levels(feats, boxes, [(96, 128)])
    se = pooler.attention
    squeezed = pooled.amax(dim=(-2, -1), keepdim=True)
    weights = torch.sigmoid(se.fc2(torch.relu(se.fc1(squeezed))))
    assert weights.shape == (2, 1024, 1, 1) and 0.05 < weights.min() and weights.max() < 0.95
    with torch.set_grad_enabled(grad):
        out = pooler(feats, boxes, [(96, 128)])
    torch.testing.assert_close(out, pooled * weights)


@pytest.mark.parametrize("level", ["0", "1", "2", "3"])
def test_mspwa_pools_every_level_for_every_box(level):
    torch.manual_seed(0)
    pooler = MultiScaleAttentionPooler(["0", "1", "2", "3"], 7)
    feats = pyramid()
    box = [torch.tensor([[8.0, 8.0, 40.0, 36.0]])]  # a small box: FPN would pool it from P2 only
    before = pooler(feats, box, [(96, 128)])
    feats[level] = feats[level] + 1.0
    after = pooler(feats, box, [(96, 128)])
    assert not torch.allclose(before, after)


def test_fpn_pooler_ignores_other_levels_for_small_box():
    """The contrast to MSPwA: level assignment takes a small box from a single level."""
    pooler, channels = build_pooler("fpn", 7)
    feats = pyramid()
    box = [torch.tensor([[8.0, 8.0, 40.0, 36.0]])]
    before = pooler(feats, box, [(96, 128)])
    feats["3"] = feats["3"] + 1.0
    assert channels == 256 and torch.allclose(before, pooler(feats, box, [(96, 128)]))


@pytest.mark.parametrize(("name", "out"), [("2fc", 1024), ("4conv1fc", 1024), ("res5", 512)])
def test_box_feature_extractors(name, out):
    res5 = build_res5("resnet18", 1024, torch.nn.BatchNorm2d) if name == "res5" else None
    head, width = build_box_head(name, 1024, 7, res5)
    assert width == out
    assert head(torch.randn(3, 1024, 7, 7)).shape == (3, out)


def test_res5_halves_resolution_and_matches_resnet50_stage5():
    res5 = build_res5("resnet50", 1024, torch.nn.BatchNorm2d)
    assert res5(torch.randn(2, 1024, 14, 14)).shape == (2, 2048, 7, 7)
    assert sum(p.numel() for p in res5.parameters()) == 14_964_736  # torchvision resnet50.layer4
