"""The ROI heads: float32 box coding; Heavy training with one res5 pass, giving the losses and gradients of
torchvision's two-pass path."""

import pytest
import torch

from datnet.models.mixed_precision import Float32BoxCoder
from datnet.models.roi_heads import Float32RoIHeads, SharedRes5RoIHeads

from .conftest import small_model


def test_only_the_heavy_heads_share_res5():
    assert type(small_model("heavy").roi_heads) is SharedRes5RoIHeads
    for preset in ("light", "maskrcnn"):
        heads = small_model(preset).roi_heads
        assert type(heads) is Float32RoIHeads and isinstance(heads.box_coder, Float32BoxCoder)
    assert type(small_model("maskrcnn", mask_head="none").roi_heads) is Float32RoIHeads


def losses_and_res5_grads(model, batch, seed: int) -> tuple[dict, list[torch.Tensor]]:
    model.zero_grad()
    torch.manual_seed(seed)  # same RPN and ROI sampling in both paths
    losses = model(*batch)
    sum(losses.values()).backward()
    grads = [p.grad.clone() for p in model.roi_heads.mask_head.parameters()]
    return {k: v.detach() for k, v in losses.items()}, grads


def test_one_res5_pass_gives_the_two_pass_losses_and_gradients(batch, monkeypatch):
    torch.manual_seed(0)
    model = small_model("heavy", backbone=dict(name="resnet18", norm="frozen_bn")).train()
    shared, shared_grads = losses_and_res5_grads(model, batch, seed=3)
    monkeypatch.setattr(SharedRes5RoIHeads, "forward", Float32RoIHeads.forward)  # torchvision's two passes
    reference, reference_grads = losses_and_res5_grads(model, batch, seed=3)
    assert set(shared) == set(reference)
    assert shared["loss_mask"] > 0  # positives reached the mask branch
    for key in reference:
        torch.testing.assert_close(shared[key], reference[key], rtol=1e-5, atol=1e-6)
    for got, expected in zip(shared_grads, reference_grads):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


def test_images_without_objects_give_a_zero_mask_loss(batch):
    images, targets = batch
    for target in targets:  # negatives only: no ROI is positive
        target["boxes"] = target["boxes"][:0]
        target["labels"] = target["labels"][:0]
        target["masks"] = target["masks"][:0]
    model = small_model("heavy").train()
    losses = model(images, targets)
    assert losses["loss_mask"].item() == pytest.approx(0.0)
    sum(losses.values()).backward()
