"""DATNet end to end: loss terms, inference format, presets, torchvision equivalence, weights."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torchvision.models import resnet18
from torchvision.models.detection import maskrcnn_resnet50_fpn

from datnet.configs import compose_config
from datnet.models import DATNetTransform, build_datnet, dense_focal_loss
from datnet.models.mixed_precision import AutocastFrozenBatchNorm2d
from datnet.paper_tables import TABLE7

from .conftest import NUM_CLASSES, SMALL_DETECTOR, make_target, small_model

MASK_RCNN_LOSSES = {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("aux", "extra"),
    [
        (dict(dt=False, seg=False), set()),
        (dict(dt=True, seg=False), {"loss_dt"}),
        (dict(dt=False, seg=True), {"loss_seg"}),
        (dict(dt=True, seg=True), {"loss_dt", "loss_seg"}),
    ],
)
def test_train_mode_loss_terms(batch, aux, extra):
    model = small_model("maskrcnn", aux=aux)
    model.train()
    losses = model(*batch)
    assert set(losses) == MASK_RCNN_LOSSES | extra
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()


@pytest.mark.parametrize("preset", ["light", "heavy"])
def test_fused_features_feed_the_rpn_and_roi_heads(batch, preset):
    """Sec. 3.3: "The fused features are used by the standard Mask R-CNN RPN, box, and mask heads": the
    pyramid the RPN and the ROI heads receive is the fusion's output P2'..P6', not the backbone's."""
    model = small_model(preset).train()
    seen = {}

    def keep(name: str, value) -> None:
        seen[name] = value

    model.backbone.register_forward_hook(lambda m, i, o: keep("backbone", o))
    model.auxiliary.fusion.register_forward_hook(lambda m, i, o: keep("fused", o))
    model.rpn.register_forward_pre_hook(lambda m, args: keep("rpn", args[1]))
    model.roi_heads.register_forward_pre_hook(lambda m, args: keep("roi_heads", args[0]))
    model(*batch)
    fused, backbone = seen["fused"], seen["backbone"]
    assert list(fused) == list(backbone) == ["0", "1", "2", "3", "pool"]
    for consumer in ("rpn", "roi_heads"):
        assert list(seen[consumer]) == list(fused)
        for name, level in fused.items():
            assert seen[consumer][name] is level
            assert not torch.equal(level, backbone[name])


def test_aux_losses_are_weighted(batch):
    torch.manual_seed(1)
    model = small_model("light", aux=dict(dt_weight=0.25, seg_weight=0.25))
    torch.manual_seed(1)
    doubled = small_model("light", aux=dict(dt_weight=0.5, seg_weight=0.5))
    model.train(), doubled.train()
    a, b = model(*batch), doubled(*batch)
    assert b["loss_dt"].item() == pytest.approx(2 * a["loss_dt"].item(), rel=1e-5)
    assert b["loss_seg"].item() == pytest.approx(2 * a["loss_seg"].item(), rel=1e-5)


def test_training_without_aux_targets_is_a_clear_error(batch):
    images, targets = batch
    for t in targets:
        del t["dt"]
    model = small_model("light").train()
    with pytest.raises(KeyError, match="'dt' map"):
        model(images, targets)


def test_image_resolution_aux_loss_upsamples_the_logits_to_the_padded_image():
    """loss_stride=1 (the paper presets): the DT head's stride-4 logits upsampled x4 to the padded batch
    (bilinear) and eq. 2 over its pixels, against the pixel-level targets; the padding is ignored."""
    torch.manual_seed(0)
    model = small_model("maskrcnn", aux=dict(dt=True, seg=False, loss_stride=1), resize_images=False).train()
    sizes = [(128, 160), (100, 140)]  # padded to 128x160 (multiples of 32)
    images = [torch.rand(3, h, w) for h, w in sizes]
    targets = []
    for h, w in sizes:
        target = make_target(h, w, with_aux=False)
        target["dt"] = torch.randint(0, 4, (h, w), dtype=torch.uint8)
        targets.append(target)
    logits = []
    model.auxiliary.heads["dt"].predictor.register_forward_hook(lambda m, i, o: logits.append(o))
    losses = model(images, targets)
    assert logits[0].shape[-2:] == (32, 40)
    padded = torch.full((2, 128, 160), 255)
    for i, (h, w) in enumerate(sizes):
        padded[i, :h, :w] = targets[i]["dt"]
    upsampled = F.interpolate(logits[0], size=(128, 160), mode="bilinear", align_corners=False)
    expected = 0.25 * dense_focal_loss(upsampled, padded)
    torch.testing.assert_close(losses["loss_dt"], expected)


def test_aux_targets_of_another_stride_are_a_clear_error(batch):
    """Stride-4 maps given to a model whose loss is at stride 1 are refused, never padded into place."""
    model = small_model("light", aux=dict(loss_stride=1), resize_images=False).train()
    with pytest.raises(ValueError, match="data.aux_stride must equal model.aux.loss_stride"):
        model(*batch)
    with pytest.raises(ValueError, match="model.aux.loss_stride"):
        small_model("light", aux=dict(loss_stride=3))


@pytest.mark.parametrize(("stride", "size"), [(1, (64, 96)), (4, (16, 24))])
def test_transform_resizes_dense_targets_at_the_loss_stride(stride, size):
    transform = DATNetTransform(64, 96, [0.0] * 3, [1.0] * 3, aux_stride=stride)
    dense = torch.randint(0, 4, (-(-32 // stride), -(-48 // stride)), dtype=torch.uint8)
    target = {"boxes": torch.zeros(0, 4), "dt": dense, "sem": dense.clone()}
    _, (out,) = transform([torch.rand(3, 32, 48)], [target])
    assert out["dt"].shape == out["sem"].shape == size and out["dt"].dtype == torch.uint8
    assert set(out["dt"].unique().tolist()) <= set(dense.unique().tolist())


@pytest.mark.parametrize("preset", ["maskrcnn", "light", "heavy"])
def test_eval_returns_torchvision_format_without_aux_logits(batch, preset):
    model = small_model(preset).eval()
    calls = []
    if model.auxiliary is not None:
        for head in model.auxiliary.heads.values():
            head.predictor.register_forward_hook(lambda *_: calls.append(1))
    images = batch[0]
    with torch.no_grad():
        out = model(images)
    assert calls == []
    assert len(out) == 2
    for det, img in zip(out, images):
        assert set(det) == {"boxes", "labels", "scores", "masks"}
        assert det["masks"].shape[1:] == (1, *img.shape[-2:])
        assert det["boxes"].shape[1] == 4 and det["labels"].dtype == torch.int64


def test_aux_maps_and_proposals_on_request(batch):
    model = small_model("light").eval()
    with torch.no_grad():
        out = model(batch[0], return_proposals=True, return_aux_maps=True)
    det = out[0]
    assert det["dt"].shape[0] == 4 and det["sem"].shape[0] == NUM_CLASSES
    torch.testing.assert_close(det["dt"].sum(0), torch.ones_like(det["dt"][0]))  # softmax probabilities
    assert (
        det["proposals"].shape[1] == 4 and len(det["proposals"]) <= SMALL_DETECTOR["rpn_post_nms_top_n_test"]
    )


def test_outputs_in_requested_sizes(batch):
    """Detections of a resized image are mapped to the original file's size (boxes, masks, proposals)."""
    model = small_model("maskrcnn").eval()
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.bias[1:] = 5.0
    image = batch[0][0]
    with torch.no_grad():
        same = model([image], return_proposals=True)[0]
        doubled = model([image], return_proposals=True, output_sizes=[(256, 320)])[0]
    assert doubled["masks"].shape[-2:] == (256, 320)
    torch.testing.assert_close(doubled["boxes"], same["boxes"] * 2)
    torch.testing.assert_close(doubled["proposals"], same["proposals"] * 2)


@pytest.mark.parametrize(("preset", "resolution"), [("light", 28), ("heavy", 14)])
def test_mask_head_resolution(batch, preset, resolution):
    model = small_model(preset).eval()
    logits = []
    model.roi_heads.mask_predictor.register_forward_hook(lambda m, i, o: logits.append(o))
    with torch.no_grad():
        model(batch[0])
    assert logits[0].shape[-2:] == (resolution, resolution)


def test_heavy_shares_pooler_and_res5_between_box_and_mask():
    model = small_model("heavy")
    heads = model.roi_heads
    assert heads.mask_roi_pool is heads.box_roi_pool
    assert heads.mask_head is heads.box_head.res5
    assert heads.box_roi_pool.output_size == (14, 14)


def test_faster_rcnn_variant_has_no_mask_branch(batch):
    model = small_model("maskrcnn", mask_head="none")
    assert not model.roi_heads.has_mask()
    model.train()
    assert "loss_mask" not in model(*batch)
    model.eval()
    with torch.no_grad():
        assert "masks" not in model(batch[0])[0]


def test_bad_switches_are_clear_errors():
    with pytest.raises(ValueError, match="model.pooler"):
        small_model("light", pooler="max")
    with pytest.raises(ValueError, match="model.mask_head=res5"):
        small_model("maskrcnn", mask_head="res5")
    with pytest.raises(ValueError, match="model.fusion=sum2conv"):
        small_model("maskrcnn", fusion="sum2conv")


def test_maskrcnn_preset_is_torchvision_maskrcnn():
    """Same state dict (strict) and identical outputs on the same input."""
    torch.manual_seed(0)
    reference = maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=81, min_size=128, max_size=160
    )
    cfg = compose_config(
        [
            "+model=maskrcnn",
            "model.backbone.weights=scratch",  # torchvision's random init (trainable BN)
            "model.detector.min_size=128",
            "model.detector.max_size=160",
            "model.num_classes=81",
        ]
    )
    ours = instantiate(cfg.model)
    ours.load_state_dict(reference.state_dict(), strict=True)
    assert set(ours.state_dict()) == set(reference.state_dict())
    reference.eval(), ours.eval()
    # a trained-looking detector: make the classifier fire so that detections are not empty
    with torch.no_grad():
        for m in (reference, ours):
            m.roi_heads.box_predictor.cls_score.bias[1:] = 5.0
    images = [torch.rand(3, 120, 150), torch.rand(3, 100, 140)]
    with torch.no_grad():
        expected, got = reference(images), ours(images)
    for e, g in zip(expected, got):
        assert set(e) == set(g) and len(e["boxes"]) > 0
        for key in e:
            torch.testing.assert_close(g[key], e[key], rtol=0, atol=0)


def test_backbone_and_res5_from_local_imagenet_state_dict(tmp_path):
    torch.manual_seed(0)
    imagenet = resnet18()
    path = tmp_path / "resnet18_imagenet.pth"
    torch.save(imagenet.state_dict(), path)
    model = small_model("light", backbone=dict(name="resnet18", weights=str(path)))
    body = model.backbone.body
    torch.testing.assert_close(body.conv1.weight, imagenet.conv1.weight)
    torch.testing.assert_close(body.layer3[1].bn2.running_mean, imagenet.layer3[1].bn2.running_mean)
    assert isinstance(body.bn1, AutocastFrozenBatchNorm2d)  # norm=auto with weights
    assert not body.layer1[0].conv1.weight.requires_grad  # 3 trainable stages with weights
    res5 = model.roi_heads.box_head.res5
    # ResNet-18's stage 5 takes 256 channels, MSPwA gives 1024: blocks after the first match and are copied
    torch.testing.assert_close(res5[1].conv1.weight, imagenet.layer4[1].conv1.weight)


def test_res5_fully_initialised_from_resnet50_stage5(tmp_path):
    from torchvision.models import resnet50

    imagenet = resnet50()
    path = tmp_path / "r50.pth"
    torch.save(imagenet.state_dict(), path)
    model = build_datnet(
        num_classes=3,
        backbone=dict(name="resnet50", weights=str(path)),
        pooler="mspwa",
        box_head="res5",
        aux=dict(dt=False, seg=False),
    )
    res5 = model.roi_heads.box_head.res5
    reference = imagenet.layer4.state_dict()
    for key, value in res5.state_dict().items():  # frozen BN: weights and statistics, no batch counter
        torch.testing.assert_close(value, reference[key])


@pytest.mark.parametrize(("init", "gain"), [("torchvision", 1 / 3), ("maskrcnn_benchmark", 1.0)])
def test_fpn_res5_head_starts_its_first_block_convolutions_at_random(init, gain):
    """Table 3 "no MSPwA, res5": res5 takes FPN's 256 channels, not stage 4's 1024, so its first block's
    ``conv1`` and ``downsample`` convolution cannot take ImageNet's tensors: PyTorch's default init
    (``model.init=torchvision``, std sqrt(1 / (3 fan_in))) or maskrcnn-benchmark's ResNet
    ``kaiming_uniform_(a=1)`` (std sqrt(1 / fan_in)); every other tensor is ImageNet's."""
    from torchvision.models import resnet50

    from datnet.models.backbone import AutocastFrozenBatchNorm2d as FrozenBN
    from datnet.models.roi_feature_extractors import build_res5

    imagenet = resnet50().layer4.state_dict()
    torch.manual_seed(0)
    res5 = build_res5("resnet50", 256, FrozenBN, imagenet, init)
    random = {"0.conv1.weight", "0.downsample.0.weight"}
    for key, value in res5.state_dict().items():
        if key in random:
            assert value.shape[1] == 256 and value.shape != imagenet[key].shape
            assert abs(value.std().item() / (gain / 256) ** 0.5 - 1) < 0.05, key
        else:
            torch.testing.assert_close(value, imagenet[key], rtol=0, atol=0, msg=key)


def test_wrong_weights_file_is_a_clear_error(tmp_path):
    path = tmp_path / "not_resnet.pth"
    torch.save({"foo": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="not_resnet.pth"):
        small_model("light", backbone=dict(name="resnet18", weights=str(path)))
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        small_model("light", backbone=dict(name="resnet18", weights=str(tmp_path / "missing.pth")))


@pytest.mark.parametrize("lightning_format", [False, True])
def test_whole_model_checkpoint_loads(tmp_path, lightning_format):
    torch.manual_seed(0)
    source = small_model("heavy")
    state = source.state_dict()
    if lightning_format:
        state = {"state_dict": {f"model.{k}": v for k, v in state.items()}, "epoch": 3}
    path = tmp_path / "model.ckpt"
    torch.save(state, path)
    torch.manual_seed(1)
    loaded = small_model("heavy", checkpoint=str(path))
    for (name, a), b in zip(source.state_dict().items(), loaded.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)


def test_model_report_matches_table7():
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "paper" / "model_report.py"), "--json"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rows = json.loads(out.strip().splitlines()[-1])
    assert {(r["model"], r["backbone"]) for r in rows} == set(TABLE7)
    for row in rows:
        assert row["num_classes"] == 81
        paper = TABLE7[(row["model"], row["backbone"])][1] * 1e6
        assert abs(row["params"] / paper - 1) < 0.0025, row  # within 0.22 % (ResNeXt-101 Mask R-CNN)
