"""The loader's compact samples (uint8 images, bit-packed masks) give exactly what float images and dense
masks give: the same normalised batch, the same masks, losses and detections."""

import numpy as np
import pytest
import torch

from datnet.contract import pack_masks, unpack_target
from datnet.models import DATNetTransform

from .conftest import small_model


def compact(images: list[torch.Tensor], targets: list[dict]) -> tuple[list[torch.Tensor], list[dict]]:
    """uint8 images (0..255) and targets with `masks_packed` instead of `masks`, as the data loaders send."""
    packed = [
        {
            **{k: v for k, v in t.items() if k != "masks"},
            "masks_packed": torch.from_numpy(pack_masks(t["masks"].numpy())),
        }
        for t in targets
    ]
    return [image.mul(255).round().to(torch.uint8) for image in images], packed


def quantised(images: list[torch.Tensor]) -> list[torch.Tensor]:
    """Float images in [0, 1] on the uint8 grid, so that compact(images) loses nothing."""
    return [image.mul(255).round().div(255) for image in images]


@pytest.mark.parametrize("width", [1, 7, 8, 9, 13, 64, 1333])
@pytest.mark.parametrize("count", [0, 1, 3])
def test_packed_masks_unpack_exactly(width, count):
    rng = np.random.default_rng(width * 10 + count)
    masks = (rng.random((count, 11, width)) < 0.4).astype(np.uint8)
    packed = torch.from_numpy(pack_masks(masks))
    assert packed.shape == (count, 11, -(-width // 8)) and packed.dtype == torch.uint8
    target = {"masks_packed": packed, "labels": torch.ones(count, dtype=torch.int64)}
    unpacked = unpack_target(target, width)
    assert set(unpacked) == {"masks", "labels"} and "masks_packed" in target  # the caller's dict is kept
    assert unpacked["masks"].dtype == torch.uint8 and unpacked["masks"].is_contiguous()
    assert torch.equal(unpacked["masks"], torch.from_numpy(masks))
    dense = {"masks": torch.from_numpy(masks)}
    assert unpack_target(dense, width) is dense


@pytest.mark.parametrize("resize_images", [False, True])
def test_uint8_images_normalise_exactly_as_float_images(resize_images):
    transform = DATNetTransform(
        96, 160, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225], resize_images=resize_images
    )
    torch.manual_seed(0)
    images = quantised([torch.rand(3, 70, 90), torch.rand(3, 64, 100)])
    as_uint8, _ = compact(images, [])
    assert torch.equal(as_uint8[0].float().div(255), images[0])
    float_batch, _ = transform(images)
    uint8_batch, _ = transform(as_uint8)
    assert torch.equal(uint8_batch.tensors, float_batch.tensors)
    assert uint8_batch.image_sizes == float_batch.image_sizes


def test_compact_batch_trains_and_detects_exactly_as_the_float_dense_one(batch):
    images, targets = batch
    images = quantised(images)
    small, packed = compact(images, targets)
    model = small_model("light").train()
    losses = []
    for imgs, tgts in ((images, targets), (small, packed)):
        torch.manual_seed(3)  # the RPN and ROI samplers draw the same examples
        losses.append(model(imgs, tgts))
    assert losses[0].keys() == losses[1].keys() and "loss_mask" in losses[0]
    assert all(torch.equal(losses[0][k], losses[1][k]) for k in losses[0])
    assert "masks_packed" in packed[0] and "masks" not in packed[0]  # the model does not modify its inputs
    model.eval()
    with torch.no_grad():
        detections = [model(imgs)[0] for imgs in (images, small)]
    assert all(torch.equal(detections[0][k], detections[1][k]) for k in detections[0])
