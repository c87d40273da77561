"""Small DATNet builds and synthetic batches for the model tests (<= 256 px, few ROIs, ResNet-18)."""

import pytest
import torch

from datnet.models import build_datnet

NUM_CLASSES = 5
PRESETS = {
    "maskrcnn": dict(aux=dict(dt=False, seg=False)),
    "light": dict(pooler="mspwa", box_head="res5", mask_head="fpn"),
    "heavy": dict(pooler="mspwa", box_head="res5", mask_head="res5", box_pool_size=14),
}
SMALL_DETECTOR = dict(
    min_size=128,
    max_size=192,
    box_batch_size_per_image=16,
    rpn_pre_nms_top_n_train=200,
    rpn_post_nms_top_n_train=50,
    rpn_pre_nms_top_n_test=200,
    rpn_post_nms_top_n_test=50,
)


def small_model(preset: str = "light", **overrides) -> torch.nn.Module:
    kwargs = dict(num_classes=NUM_CLASSES, backbone=dict(name="resnet18"), detector=SMALL_DETECTOR)
    kwargs.update(PRESETS[preset])
    kwargs.update(overrides)
    return build_datnet(**kwargs)


def make_target(h: int, w: int, with_aux: bool = True) -> dict[str, torch.Tensor]:
    boxes = torch.tensor([[10.0, 20.0, 70.0, 90.0], [50.0, 40.0, 120.0, 100.0]])
    masks = torch.zeros(2, h, w, dtype=torch.uint8)
    for mask, (x1, y1, x2, y2) in zip(masks, boxes.int().tolist()):
        mask[y1:y2, x1:x2] = 1
    target = dict(boxes=boxes, labels=torch.tensor([1, 3]), masks=masks)
    if with_aux:
        size = (-(-h // 4), -(-w // 4))
        target["dt"] = torch.randint(0, 4, size, dtype=torch.uint8)
        target["sem"] = torch.randint(0, NUM_CLASSES, size, dtype=torch.uint8)
    return target


@pytest.fixture
def batch() -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    torch.manual_seed(0)
    sizes = [(128, 160), (120, 150)]
    return [torch.rand(3, h, w) for h, w in sizes], [make_target(h, w) for h, w in sizes]
