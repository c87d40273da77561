"""Whole-detector checkpoints (``model.checkpoint``): ours strictly; torchvision's COCO detectors (91 category
indices) mapped onto the dataset's labels, giving torchvision's own detections; anything else non-strictly,
every key left out listed; and ``src/eval.py model.checkpoint=...`` evaluating such a file."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from torch import nn
from torchvision.models import resnet50
from torchvision.models.detection import MaskRCNN, maskrcnn_resnet50_fpn
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops.misc import FrozenBatchNorm2d

from datnet.configs import compose_config
from datnet.models import load_model_checkpoint
from datnet.runs.config import for_checkpoint
from datnet.runs.tasks import evaluate

from .conftest import small_model

REPO = Path(__file__).resolve().parents[2]
SIZES = dict(  # small images, few ROIs: the box and mask heads dominate on the CPU
    min_size=128,
    max_size=160,
    rpn_pre_nms_top_n_test=200,
    rpn_post_nms_top_n_test=100,
    box_detections_per_img=10,
)
UNUSED_COCO_IDS = [12, 26, 29, 30, 45, 66, 68, 69, 71, 83]  # torchvision's "N/A" indices


def coco_label_space(root: Path) -> tuple[dict[int, int], list[str]]:
    """The COCO data module's ``label_to_category_id`` and ``class_names``."""
    datamodule = instantiate(compose_config(["+data=coco", f"data.root={root}"]).data)
    return datamodule.label_to_category_id, datamodule.class_names


def torchvision_coco_detector() -> nn.Module:
    """torchvision's ``maskrcnn_resnet50_fpn`` as its COCO weights are built (frozen BatchNorm, three
    trainable stages, 91 classes), random, with a classifier that fires on a few categories (1 person,
    3 car, 18 dog, 44 bottle, 90 toothbrush) and never on the ten unused indices, as trained weights do."""
    torch.manual_seed(0)
    body = resnet50(norm_layer=FrozenBatchNorm2d)
    model = MaskRCNN(_resnet_fpn_extractor(body, 3), num_classes=91, **SIZES)
    with torch.no_grad():
        bias = model.roi_heads.box_predictor.cls_score.bias
        bias[[1, 3, 18, 44, 90]] = 3.0
        bias[UNUSED_COCO_IDS] = -1e4
    return model.eval()


def test_torchvision_coco_checkpoint_gives_torchvision_detections(tmp_path, shared_data_dir):
    """The ``maskrcnn`` preset loaded from a torchvision COCO state dict (91 indices) for the 81 labels of a
    COCO data module: the same boxes, scores and masks as torchvision's model, with labels that map to
    torchvision's indices (= COCO category ids)."""
    reference = torchvision_coco_detector()
    torch.save(reference.state_dict(), tmp_path / "maskrcnn_coco.pth")
    label_to_category_id, class_names = coco_label_space(shared_data_dir("tiny_coco"))
    # as eval.py builds it: the preset's ImageNet backbone (frozen BatchNorm), no ImageNet file looked for
    cfg = for_checkpoint(
        compose_config(["+model=maskrcnn", *(f"++model.detector.{k}={v}" for k, v in SIZES.items())])
    )
    ours = instantiate(cfg.model, num_classes=len(label_to_category_id) + 1).eval()
    path = tmp_path / "maskrcnn_coco.pth"
    not_coco = ["__background__", "aeroplane", *class_names[2:]]  # e.g. VOC: its id 1 is no person
    with pytest.raises(ValueError, match=r"not COCO's: 1 'aeroplane' \(id 1: 'person'\)"):
        load_model_checkpoint(ours, path, True, label_to_category_id, not_coco)
    report = load_model_checkpoint(ours, path, True, label_to_category_id, class_names)
    assert report.complete and report.category_mapped
    torch.manual_seed(1)
    images = [torch.rand(3, 120, 150), torch.rand(3, 100, 140)]
    with torch.no_grad():
        expected, got = reference(images), ours(images)
    for e, g in zip(expected, got, strict=True):
        assert len(e["boxes"]) == 10
        assert [label_to_category_id[label] for label in g["labels"].tolist()] == e["labels"].tolist()
        torch.testing.assert_close(g["boxes"], e["boxes"])
        torch.testing.assert_close(g["scores"], e["scores"])
        torch.testing.assert_close(g["masks"], e["masks"])
    # as train.py builds it for fine-tuning: model.checkpoint and the data module's label space
    cfg.model.checkpoint = str(path)
    built = instantiate(
        cfg.model,
        num_classes=len(label_to_category_id) + 1,
        label_to_category_id=label_to_category_id,
        class_names=class_names,
    )
    built_state = built.state_dict()
    for key, value in ours.state_dict().items():
        assert torch.equal(built_state[key], value), key


def test_non_strict_loads_what_matches_and_lists_the_rest(tmp_path, caplog):
    torch.manual_seed(0)
    source = small_model("maskrcnn")  # 5 classes, 2fc box head, no auxiliary heads
    torch.save({"state_dict": {f"model.{k}": v for k, v in source.state_dict().items()}}, tmp_path / "a.ckpt")
    target = small_model("light", num_classes=3)  # MSPwA, res5 box head, auxiliary heads, 3 classes
    with pytest.raises(ValueError, match="model.checkpoint_strict=false") as error:
        load_model_checkpoint(target, tmp_path / "a.ckpt")
    assert "roi_heads.box_head.fc6.weight" in str(error.value)
    with caplog.at_level(logging.WARNING, logger="datnet.models.checkpoint"):
        report = load_model_checkpoint(target, tmp_path / "a.ckpt", strict=False)
    torch.testing.assert_close(target.backbone.body.conv1.weight, source.backbone.body.conv1.weight)
    torch.testing.assert_close(target.rpn.head.conv[0][0].weight, source.rpn.head.conv[0][0].weight)
    assert "roi_heads.box_head.fc6.weight" in report.unexpected
    assert "roi_heads.box_head.res5.0.conv1.weight" in report.missing
    assert "roi_heads.box_predictor.cls_score.weight: (5, 1024) -> (3, 512)" in report.mis_shaped
    weights = [
        k for k in source.state_dict() if not k.endswith("num_batches_tracked")
    ]  # counters: no weights
    assert report.loaded == len(weights) - len(report.unexpected) - len(report.mis_shaped)
    for key in [*report.missing, *report.unexpected, *report.mis_shaped]:
        assert f"\n  {key}" in caplog.text  # every key left out, in the log

    same = small_model("maskrcnn")  # ours, same architecture: strict, everything loaded
    assert load_model_checkpoint(same, tmp_path / "a.ckpt").complete
    torch.testing.assert_close(same.roi_heads.box_head.fc7.weight, source.roi_heads.box_head.fc7.weight)


def test_eval_cli_evaluates_a_torchvision_state_dict(tmp_path, shared_data_dir):
    """``python src/eval.py model=maskrcnn model.checkpoint=PATH data=coco data.root=DIR`` (no ckpt_path) on
    torchvision's ``maskrcnn_resnet50_fpn`` state dict (random, trainable-BatchNorm layout) prints METRICS
    for the tiny COCO set, no ImageNet file looked for."""
    torch.manual_seed(0)
    tv = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)
    with torch.no_grad():
        tv.roi_heads.box_predictor.cls_score.bias[1:] = 3.0  # detections to score
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    args = [
        "model=maskrcnn",
        f"model.checkpoint={tmp_path / 'tv.pth'}",
        "data=coco",
        f"data.root={shared_data_dir('tiny_coco')}",
        "data.num_workers=0",
        "data.min_size=64",
        "data.max_size=96",
        "data.val_batch_size=4",
        "trainer.limit_val_batches=1",  # 4 of the 50 images, scored on those 4
        "+model.detector.rpn_post_nms_top_n_test=100",
        "+model.detector.box_detections_per_img=10",
        f"hydra.run.dir={tmp_path / 'eval'}",
    ]
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "no_torch_home")}
    out = subprocess.run(
        [sys.executable, "src/eval.py", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [line for line in out.stdout.splitlines() if line.startswith("METRICS ")]
    metrics = json.loads(lines[0][len("METRICS ") :])
    assert metrics["checkpoint"] == str(tmp_path / "tv.pth")
    assert metrics["val/bbox/AP"] is not None and metrics["val/segm/AP"] is not None  # detections scored
    assert "val/rpn/AR@100" in metrics


@pytest.mark.parametrize("given", [[], ["ckpt_path=a.ckpt", "model.checkpoint=b.pth"]])
def test_eval_needs_exactly_one_checkpoint(given):
    with pytest.raises(ValueError, match="ckpt_path=PATH .* or model.checkpoint=PATH"):
        evaluate(compose_config(["experiment=demo", *given], config_name="eval"))
