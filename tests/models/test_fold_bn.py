"""BatchNorm folded into convolutions for inference: same features, no BatchNorm left."""

import pytest
import torch
from torch import nn

from datnet.models import fold_batchnorm_
from datnet.models.fold_bn import BATCH_NORMS

from .conftest import small_model


def randomise_batchnorm(model: nn.Module) -> int:
    """Non-trivial statistics and affine parameters in every BatchNorm (fresh ones are the identity)."""
    generator = torch.Generator().manual_seed(0)
    layers = [m for m in model.modules() if isinstance(m, BATCH_NORMS)]
    for bn in layers:
        n = bn.running_mean.numel()
        with torch.no_grad():
            bn.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
            bn.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            bn.weight.copy_(torch.rand(n, generator=generator) + 0.5)
            bn.bias.copy_(torch.randn(n, generator=generator) * 0.1)
    return len(layers)


@pytest.mark.parametrize("norm", ["bn", "frozen_bn"])
@pytest.mark.parametrize("preset", ["maskrcnn", "light", "heavy"])
def test_folding_keeps_features_and_leaves_no_batchnorm(preset, norm):
    torch.manual_seed(0)
    model = small_model(preset, backbone=dict(name="resnet18", norm=norm)).eval()
    num_bn = randomise_batchnorm(model)
    image = torch.rand(1, 3, 128, 160)
    heads = model.roi_heads
    boxes = [torch.tensor([[8.0, 12.0, 90.0, 100.0], [40.0, 30.0, 150.0, 120.0]])]
    with torch.inference_mode():
        features = model.backbone(image)
        box_features = heads.box_head(heads.box_roi_pool(features, boxes, [(128, 160)]))
        assert fold_batchnorm_(model) == num_bn > 0
        folded = model.backbone(image)
        folded_box_features = heads.box_head(heads.box_roi_pool(folded, boxes, [(128, 160)]))
    assert not [m for m in model.modules() if isinstance(m, BATCH_NORMS)]
    for name in features:
        torch.testing.assert_close(folded[name], features[name], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(folded_box_features, box_features, rtol=1e-4, atol=1e-4)
    with torch.inference_mode():
        assert len(model([image[0]])) == 1  # the folded model still runs end to end


def test_folding_a_model_in_training_mode_is_refused():
    with pytest.raises(ValueError, match="model.eval"):
        fold_batchnorm_(small_model("light").train())
