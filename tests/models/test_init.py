"""``model.init``: torchvision's initialisation as built, or maskrcnn-benchmark's for the layers that do not
come from ImageNet (``datnet.models.init``)."""

import math

import pytest
import torch

from datnet.models.init import initialise_

from .conftest import small_model


def assert_std(weight: torch.Tensor, std: float) -> None:
    """``weight`` looks drawn from N(0, ``std``): its spread within 10 % (thousands of values)."""
    assert weight.numel() >= 1000
    assert abs(weight.std().item() / std - 1) < 0.1, (weight.std().item(), std)


def assert_kaiming_uniform_a1(weight: torch.Tensor) -> None:
    """``kaiming_uniform_(a=1)``: uniform on +-sqrt(3 / fan_in), so std sqrt(1 / fan_in)."""
    fan_in = weight[0].numel()
    assert weight.abs().max() <= math.sqrt(3 / fan_in)
    assert_std(weight, math.sqrt(1 / fan_in))


def assert_msra_fan_out(weight: torch.Tensor) -> None:
    """``kaiming_normal_(fan_out, relu)``: N(0, sqrt(2 / fan_out))."""
    fan_out = weight.shape[0] * weight[0, 0].numel()
    assert_std(weight, math.sqrt(2 / fan_out))


def zero_biases(*layers: torch.nn.Module) -> bool:
    return all(torch.all(layer.bias == 0) for layer in layers)


@pytest.mark.parametrize("box_head", ["2fc", "4conv1fc"])
def test_maskrcnn_benchmark_init_of_the_box_and_mask_heads(box_head):
    torch.manual_seed(0)
    model = small_model("maskrcnn", box_head=box_head, init="maskrcnn_benchmark")
    heads = model.roi_heads
    predictor = heads.box_predictor
    assert_std(predictor.cls_score.weight, 0.01)
    assert_std(predictor.bbox_pred.weight, 0.001)
    mask = heads.mask_predictor
    assert zero_biases(predictor.cls_score, predictor.bbox_pred, mask.conv5_mask, mask.mask_fcn_logits)
    fcs = [m for m in heads.box_head.modules() if isinstance(m, torch.nn.Linear)]
    convs = [m for m in heads.box_head.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(fcs) == (2 if box_head == "2fc" else 1) and len(convs) == (0 if box_head == "2fc" else 4)
    for fc in fcs:
        assert_kaiming_uniform_a1(fc.weight)
    for conv in convs:
        assert_std(conv.weight, 0.01)
    assert zero_biases(*fcs, *convs)


def test_maskrcnn_benchmark_init_of_datnets_own_layers():
    """Auxiliary heads (all their 3x3 convolutions) and fusion convolutions: make_conv3x3; SE: make_fc."""
    torch.manual_seed(0)
    model = small_model("light", fusion="sum2conv", init="maskrcnn_benchmark")
    convs = [m for m in model.auxiliary.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 2 * (1 + 2 + 3 + 4 + 2 + 1) + 2  # stages, refine, predictor per head; fusion
    for conv in convs:
        assert_msra_fan_out(conv.weight)
    assert zero_biases(*convs)
    for pooler in (model.roi_heads.box_roi_pool, model.roi_heads.mask_roi_pool):
        se = pooler.attention
        assert_kaiming_uniform_a1(se.fc1.weight)
        assert_kaiming_uniform_a1(se.fc2.weight)
        assert zero_biases(se.fc1, se.fc2)


def test_torchvision_init_is_the_model_as_built():
    """``init=torchvision`` changes nothing (the CPU presets' models); maskrcnn-benchmark's changes the
    predictors, not the backbone, FPN or RPN (the same in both)."""
    torch.manual_seed(0)
    built = small_model("light")
    torch.manual_seed(0)
    torchvision = small_model("light", init="torchvision")
    for key, value in built.state_dict().items():
        torch.testing.assert_close(torchvision.state_dict()[key], value, rtol=0, atol=0)
    assert not zero_biases(built.roi_heads.box_predictor.cls_score)  # PyTorch's Linear
    initialise_(built, "maskrcnn_benchmark")
    changed = {k for k, v in built.state_dict().items() if not torch.equal(v, torchvision.state_dict()[k])}
    assert "roi_heads.box_predictor.cls_score.weight" in changed
    assert not any(k.startswith(("backbone.", "rpn.")) for k in changed)


def test_unknown_init_is_a_clear_error():
    with pytest.raises(ValueError, match="model.init"):
        small_model("maskrcnn", init="detectron2")
