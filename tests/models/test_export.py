"""``datnet.deploy``: a small DATNet of each preset (ResNet-18, 64-channel pyramid, random weights, 64-96 px)
exported to ONNX and TorchScript; its detections of images of other sizes than the tracing example against
the eager model's."""

import pytest
import torch

from datnet.deploy import FORMATS, SingleImageDetector, compare_detections
from datnet.deploy.resize import eval_size
from datnet.models import fold_batchnorm_

from .conftest import small_model

EXPORT_DETECTOR = dict(
    min_size=64,
    max_size=96,
    rpn_pre_nms_top_n_test=100,
    rpn_post_nms_top_n_test=20,
    box_detections_per_img=10,
)
EXAMPLE_SIZE = (80, 100)  # the tracing example; the checked images have other sizes and aspect ratios
# 161 x 185 -> 63 x 73 eager; torchvision's traced float32 size arithmetic gives 64 x 73
CHECK_SIZES = ((161, 185), (60, 120))


def exportable(preset: str) -> SingleImageDetector:
    torch.manual_seed(0)
    backbone = dict(name="resnet18", out_channels=64)
    model = small_model(preset, backbone=backbone, detector=EXPORT_DETECTOR).eval()
    fold_batchnorm_(model)
    return SingleImageDetector(model)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("preset", ["maskrcnn", "light", "heavy"])
def test_exported_detections_match_eager_at_other_sizes(preset, fmt, tmp_path):
    detector = exportable(preset)
    generator = torch.Generator().manual_seed(1)
    example, *images = (torch.rand(3, h, w, generator=generator) for h, w in (EXAMPLE_SIZE, *CHECK_SIZES))
    path = FORMATS[fmt].export(detector, example, tmp_path / f"model{FORMATS[fmt].suffix}")
    assert not detector.model.training  # the exporter restores the wrapper's mode, which must be eval
    run = FORMATS[fmt].load(path)
    exported = [dict(zip(detector.output_names, run(image), strict=True)) for image in images]
    with torch.inference_mode():
        eager = [detector.model([image])[0] for image in images]
    for image, detection in zip(images, exported, strict=True):
        assert detection["masks"].shape[-2:] == image.shape[-2:]
    summary = compare_detections(eager, exported)
    assert summary["detections_eager"] > 0
    assert summary["match"], summary


def test_counts_labels_and_boxes_beyond_the_tolerance_are_no_match():
    detection = {
        "boxes": torch.tensor([[1.0, 2.0, 30.0, 40.0]]),
        "labels": torch.tensor([1]),
        "scores": torch.tensor([0.9]),
    }
    assert compare_detections([detection], [detection])["match"]
    moved = {**detection, "boxes": detection["boxes"] + 0.02}
    summary = compare_detections([detection], [moved])
    assert not summary["match"] and summary["max_box_diff_px"] == pytest.approx(0.02, abs=1e-6)
    relabelled = {**detection, "labels": torch.tensor([2])}
    assert compare_detections([detection], [relabelled])["images_with_other_labels"] == 1
    nothing = {key: value[:0] for key, value in detection.items()}
    summary = compare_detections([detection], [nothing])
    assert not summary["match"] and summary["images_with_other_count"] == 1
    assert summary["max_mask_prob_diff"] is None


def test_resized_size_is_the_eager_transforms():
    """Sizes where float32 or reciprocal arithmetic would round the other way (e.g. 34 * 96/34)."""
    transform = small_model("maskrcnn", detector=EXPORT_DETECTOR).transform.eval()
    for height, width in ((161, 185), (164, 185), (20, 34), (20, 307), (300, 400), (40, 50), (97, 1000)):
        expected = transform([torch.empty(3, height, width)])[0].image_sizes[0]
        assert tuple(int(v) for v in eval_size(height, width, 64, 96)) == tuple(expected), (height, width)
