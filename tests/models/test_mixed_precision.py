"""Mixed precision: float32 box geometry and dtype-keeping frozen BatchNorm under bfloat16 autocast.

Each test also runs torchvision's component in the same setting, to document the fault it guards against.
"""

import pytest
import torch
from torch import Tensor, nn
from torchvision.models import resnet18
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops.misc import FrozenBatchNorm2d

from datnet.models.mixed_precision import AutocastFrozenBatchNorm2d, Float32BoxCoder

from .conftest import SMALL_DETECTOR, small_model

HEIGHT, WIDTH = 800, 1216  # bfloat16 keeps only multiples of 8 in [1024, 2048)
P2_STRIDE = 4


def bf16_autocast() -> torch.autocast:
    return torch.autocast("cpu", dtype=torch.bfloat16)


def centres_past_1024(anchors: Tensor, num_p2: int) -> int:
    """Distinct x centres of the P2 anchors (the first ``num_p2``) right of x = 1024."""
    centres = (anchors[:num_p2, 0] + anchors[:num_p2, 2]) / 2
    return centres[centres > 1024].unique().numel()


def all_multiples_of_8_past_1024(boxes: Tensor) -> bool:
    coordinates = boxes[boxes > 1024]
    assert coordinates.numel() > 0
    return bool((coordinates % 8 == 0).all())


def test_anchors_proposals_and_boxes_are_float32_under_autocast():
    """800 x 1216 image through a small Light model: anchors, the proposals handed to the ROI heads and
    returned, and the final boxes are float32; torchvision's anchors on the same inputs collapse."""
    torch.manual_seed(0)
    detector = dict(SMALL_DETECTOR, min_size=HEIGHT, max_size=1333, box_detections_per_img=20)
    model = small_model("light", backbone=dict(name="resnet18", out_channels=32), detector=detector).eval()
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.bias[1:] = 5.0  # make detections fire
    seen: dict[str, object] = {}
    model.rpn.anchor_generator.register_forward_hook(
        lambda _, args, anchors: seen.update(anchor_inputs=args, anchors=anchors[0])
    )
    model.roi_heads.register_forward_pre_hook(lambda _, args: seen.update(roi_proposals=args[1]))
    with torch.no_grad(), bf16_autocast():
        detections = model([torch.rand(3, HEIGHT, WIDTH)], return_proposals=True)[0]
        generator = model.rpn.anchor_generator
        stock = AnchorGenerator(generator.sizes, generator.aspect_ratios)(*seen["anchor_inputs"])[0]
    image_list, features = seen["anchor_inputs"]
    assert image_list.tensors.shape[-2:] == (HEIGHT, WIDTH) and features[0].dtype == torch.bfloat16
    reference = AnchorGenerator(generator.sizes, generator.aspect_ratios)(
        image_list, [f.float() for f in features]
    )[0]
    num_p2 = features[0].shape[-2] * features[0].shape[-1] * generator.num_anchors_per_location()[0]

    anchors = seen["anchors"]
    assert anchors.dtype == torch.float32
    torch.testing.assert_close(anchors, reference, rtol=0, atol=0)
    assert centres_past_1024(anchors, num_p2) == len(range(1024 + P2_STRIDE, WIDTH, P2_STRIDE)) == 47
    # torchvision's generator under the same autocast: bfloat16, 24 distinct centres, up to 7 px off
    assert stock.dtype == torch.bfloat16
    assert centres_past_1024(stock, num_p2) == 24
    assert (stock.float() - reference).abs().max() == 7

    assert all(p.dtype == torch.float32 for p in seen["roi_proposals"])
    for key in ("proposals", "boxes"):
        assert detections[key].dtype == torch.float32
        assert not all_multiples_of_8_past_1024(detections[key])


@pytest.mark.parametrize("preset", ["light", "heavy"])
def test_training_losses_are_float32_and_finite_under_autocast(batch, preset):
    images, targets = batch
    torch.manual_seed(0)
    backbone = dict(name="resnet18", norm="frozen_bn", trainable_layers=3, out_channels=32)  # as ImageNet's
    model = small_model(preset, backbone=backbone).train()
    with bf16_autocast():
        losses = model(images, targets)
    for name, loss in losses.items():
        assert loss.dtype == torch.float32, name
        assert torch.isfinite(loss), name
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def random_frozen_bn(channels: int) -> FrozenBatchNorm2d:
    generator = torch.Generator().manual_seed(0)
    bn = FrozenBatchNorm2d(channels)
    bn.weight.copy_(torch.rand(channels, generator=generator) + 0.5)
    bn.bias.copy_(torch.randn(channels, generator=generator))
    bn.running_mean.copy_(torch.randn(channels, generator=generator))
    bn.running_var.copy_(torch.rand(channels, generator=generator) + 0.1)
    return bn


def test_frozen_batchnorm_keeps_the_activation_dtype():
    stock = random_frozen_bn(16)
    ours = AutocastFrozenBatchNorm2d(16)
    ours.load_state_dict(stock.state_dict(), strict=True)
    x = torch.randn(2, 16, 9, 11)
    torch.testing.assert_close(ours(x), stock(x), rtol=0, atol=0)  # float32: torchvision's, bit for bit
    with bf16_autocast():
        assert stock(x.bfloat16()).dtype == torch.float32  # torchvision's: back to float32
        out = ours(x.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), stock(x.bfloat16().float()), rtol=2e-2, atol=2e-2)


def conv_input_dtypes(net: nn.Module) -> set[torch.dtype]:
    """Dtypes reaching the convolutions after the stem in a bfloat16-autocast forward pass of ``net``."""
    dtypes: set[torch.dtype] = set()
    for name, module in net.named_modules():
        if isinstance(module, nn.Conv2d) and name != "conv1":
            module.register_forward_pre_hook(lambda _, args: dtypes.add(args[0].dtype))
    with torch.no_grad(), bf16_autocast():
        net(torch.rand(1, 3, 64, 64))
    return dtypes


def test_imagenet_state_dict_loads_and_convolutions_get_bfloat16():
    imagenet = resnet18().state_dict()  # nn.BatchNorm2d keys, num_batches_tracked included
    ours = resnet18(norm_layer=AutocastFrozenBatchNorm2d)
    ours.load_state_dict(imagenet, strict=True)
    stock = resnet18(norm_layer=FrozenBatchNorm2d)
    stock.load_state_dict(imagenet, strict=True)
    assert ours.state_dict().keys() == stock.state_dict().keys()
    assert conv_input_dtypes(ours) == {torch.bfloat16}
    assert torch.float32 in conv_input_dtypes(stock)  # every conv after a frozen BN re-casts its input


def test_box_coder_round_trip_and_decode_in_float32_under_autocast():
    generator = torch.Generator().manual_seed(0)
    centres = torch.rand(500, 2, generator=generator) * torch.tensor([WIDTH - 200.0, HEIGHT - 200.0]) + 100
    sizes = 20 + torch.rand(500, 2, generator=generator) * 180
    gt = torch.cat([centres - sizes / 2, centres + sizes / 2], dim=1)
    proposals = gt + torch.randn(500, 4, generator=generator).clamp(-2, 2) * 4  # widths stay positive
    weights = (10.0, 10.0, 5.0, 5.0)  # the ROI heads'
    ours, stock = Float32BoxCoder(weights), BoxCoder(weights)
    with bf16_autocast():
        deltas = ours.encode_single(gt, proposals.bfloat16())
        round_trip = ours.decode_single(deltas, proposals.bfloat16())
        network_deltas = deltas.bfloat16()  # as the box predictor emits them
        decoded, stock_decoded = (
            ours.decode_single(network_deltas, proposals),
            stock.decode_single(network_deltas, proposals),
        )
    assert deltas.dtype == round_trip.dtype == decoded.dtype == torch.float32
    torch.testing.assert_close(round_trip, gt, rtol=0, atol=1e-3)
    float32_decoded = stock.decode_single(network_deltas.float(), proposals)
    torch.testing.assert_close(decoded, float32_decoded, rtol=0, atol=0)
    assert stock_decoded.dtype == torch.bfloat16
    assert (stock_decoded.float() - float32_decoded).abs().max() > 2  # torchvision's: pixels off
    torch.testing.assert_close(  # float32 without autocast: torchvision's, bit for bit
        ours.encode_single(gt, proposals), stock.encode_single(gt, proposals), rtol=0, atol=0
    )
