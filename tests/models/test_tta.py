"""Test-time augmentation (``datnet.models.tta``): one native view is the model itself; flipped views' boxes
map back mirrored; the merge (NMS per class, the best N) and the mask averaging of synthetic views; the
``tta.*`` config checks."""

import pytest
import torch

from datnet.configs import compose_config
from datnet.models.tta import (
    TestTimeAugmentation,
    View,
    average_mask_probs,
    merge_detections,
    output_to_view,
    view_to_output,
)
from datnet.runs.build import build_tta

from .conftest import SMALL_DETECTOR, small_model

TINY_DETECTOR = {**SMALL_DETECTOR, "min_size": 64, "max_size": 96, "box_detections_per_img": 20}


def tiny_model(preset: str, resize_images: bool) -> torch.nn.Module:
    """A random model with a 64-channel pyramid, resizing (if at all) to 64..96 px, 20 detections."""
    torch.manual_seed(0)
    backbone = dict(name="resnet18", out_channels=64)
    return small_model(preset, backbone=backbone, resize_images=resize_images, detector=TINY_DETECTOR).eval()


@pytest.mark.parametrize(("preset", "resize_images"), [("light", False), ("heavy", True)])
def test_one_native_view_without_flip_is_the_model_itself(preset, resize_images):
    """Light (FPN mask head) on images the data pipeline resized, Heavy (shared res5) resizing raw images:
    every output of the one-view TTA, proposals and auxiliary maps included, is the model's bit for bit."""
    torch.manual_seed(1)
    model = tiny_model(preset, resize_images)
    images = [torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8), torch.rand(3, 60, 80)]
    options = dict(return_proposals=True, return_aux_maps=True, output_sizes=[(128, 192), (120, 160)])
    with torch.inference_mode():
        expected = model(images, **options)
        merged = TestTimeAugmentation(model.transform.min_size[-1])(model, images, **options)
    assert expected[0]["masks"].shape[0] > 0
    for got, want in zip(merged, expected, strict=True):
        assert list(got) == list(want)
        for key in want:
            assert torch.equal(got[key], want[key]), key


def test_flipped_view_boxes_map_back_mirrored():
    """On a left-right symmetric image (width a multiple of the padding, so the batch stays symmetric) the
    flipped view sees the same pixels: its detections, mapped back, are the model's mirrored about the
    centre; merged by NMS, every kept detection is one of the model's or its mirror, with its score."""
    torch.manual_seed(2)
    model = tiny_model("maskrcnn", resize_images=False)
    half = torch.rand(3, 64, 48)
    image = torch.cat([half, half.flip(-1)], dim=-1)
    with torch.inference_mode():
        plain = model([image])[0]
        merged = TestTimeAugmentation(64, flip=True)(model, [image])[0]
    mirrored = view_to_output(plain["boxes"], True, (64, 96), (64, 96))
    assert torch.equal(mirrored[:, [0, 2]], 96 - plain["boxes"][:, [2, 0]])
    candidates = torch.cat([plain["boxes"], mirrored])
    scores = torch.cat([plain["scores"], plain["scores"]])
    assert len(merged["boxes"]) > 0
    for box, score in zip(merged["boxes"], merged["scores"], strict=True):
        match = (candidates - box).abs().amax(dim=1) < 1e-4
        assert match.any() and torch.isclose(scores[match], score).all()
    assert merged["masks"].shape[-2:] == (64, 96)


def test_scales_without_the_native_one_keep_the_models_proposals_and_maps():
    """Two other scales: at most detections_per_img merged detections inside the output image,
    each with a mask of its size; the proposals and auxiliary maps are the model's own (its view is run
    for them)."""
    torch.manual_seed(3)
    model = tiny_model("light", resize_images=False)
    images = [torch.rand(3, 64, 80)]
    options = dict(return_proposals=True, return_aux_maps=True, output_sizes=[(128, 160)])
    with torch.inference_mode():
        plain = model(images, **options)[0]
        merged = TestTimeAugmentation(64, [48, 80])(model, images, **options)[0]
    assert list(merged) == list(plain)
    for key in ("proposals", "dt", "sem"):
        assert torch.equal(merged[key], plain[key]), key
    boxes = merged["boxes"]
    assert 0 < len(boxes) <= model.roi_heads.detections_per_img
    assert boxes.min() >= 0 and (boxes[:, [2, 3]] <= torch.tensor([160, 128])).all()
    assert merged["masks"].shape == (len(boxes), 1, 128, 160)


def test_boxes_map_between_a_scaled_flipped_view_and_the_output():
    """A view at twice the output's size, flipped: x mirrored in the view's width, then halved."""
    boxes = torch.tensor([[10.0, 4.0, 50.0, 20.0]])
    output = view_to_output(boxes, True, view_size=(100, 200), output_size=(50, 100))
    assert torch.equal(output, torch.tensor([[75.0, 2.0, 95.0, 10.0]]))
    assert torch.allclose(output_to_view(output, True, (100, 200), (50, 100)), boxes)


def test_merge_keeps_the_best_of_overlapping_boxes_per_class():
    """Two views' detections: the same object found twice (class 1) merges into the higher score; an
    overlapping box of another class is kept; detections_per_img cuts the rest, best first."""
    boxes = torch.tensor(
        [[10, 10, 50, 50], [11, 10, 51, 50], [10, 10, 50, 50], [80, 80, 90, 90]], dtype=torch.float32
    )
    scores = torch.tensor([0.6, 0.9, 0.8, 0.3])
    labels = torch.tensor([1, 1, 2, 1])
    assert merge_detections(boxes, scores, labels, 0.5, 100).tolist() == [1, 2, 3]
    assert merge_detections(boxes, scores, labels, 0.5, 2).tolist() == [1, 2]


def test_mask_probabilities_are_averaged_over_views_flipped_back():
    """A kept box's mask over three views, the third flipped: its grid is mirrored back before the mean."""
    left = torch.zeros(2, 1, 4, 4)
    left[..., :2] = 1.0  # the left half of each box
    right = left.flip(-1)
    averaged = average_mask_probs([left, left * 0.5, right], [False, False, True])
    assert torch.allclose(averaged[..., :2], torch.full((2, 1, 4, 2), 2.5 / 3))
    assert torch.equal(averaged[..., 2:], torch.zeros(2, 1, 4, 2))


def test_views_are_every_scale_and_its_flip():
    tta = TestTimeAugmentation(96, [80, 96], flip=True)
    assert tta.views == [View(80, False), View(80, True), View(96, False), View(96, True)]
    assert TestTimeAugmentation(96).views == [View(96, False)]


@pytest.mark.parametrize(
    ("scales", "message"),
    [([], "tta.scales is empty"), ([96, 0], "positive"), ([96, 96], "twice"), (96, "list of short sides")],
)
def test_bad_scales_name_the_config_key(scales, message):
    with pytest.raises(ValueError, match=message) as error:
        TestTimeAugmentation(96, scales)
    assert "tta.scales" in str(error.value)


def test_a_resizing_model_needs_its_own_min_size():
    model = tiny_model("maskrcnn", resize_images=True)
    with pytest.raises(ValueError, match="resizes images to a short side of 64"):
        TestTimeAugmentation(96)(model, [torch.rand(3, 64, 64)])


def test_eval_config_builds_tta_only_when_asked():
    """conf/eval.yaml: off by default; ``tta.flip=true`` alone: the data's min_size, flipped or not."""
    eval_cfg = ["experiment=demo", "ckpt_path=x"]
    assert build_tta(compose_config(eval_cfg, config_name="eval")) is None
    assert build_tta(compose_config(["experiment=demo"], config_name="train")) is None
    cfg = compose_config([*eval_cfg, "tta.flip=true"], config_name="eval")
    assert build_tta(cfg).views == [View(cfg.data.min_size, False), View(cfg.data.min_size, True)]
    cfg = compose_config([*eval_cfg, "tta.scales=[128,192]"], config_name="eval")
    assert build_tta(cfg).views == [View(128, False), View(192, False)]
