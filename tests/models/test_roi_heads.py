"""The ROI heads: float32 box coding; Heavy training with one res5 pass, giving the losses and gradients of
torchvision's two-pass path; the box regression loss at torchvision's or maskrcnn-benchmark's beta."""

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.detection import maskrcnn_resnet50_fpn
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss

from datnet.models.mixed_precision import Float32BoxCoder
from datnet.models.roi_heads import Float32RoIHeads, SharedRes5RoIHeads, box_head_loss

from .conftest import SMALL_DETECTOR, make_target, small_model


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
    monkeypatch.setattr(SharedRes5RoIHeads, "forward", RoIHeads.forward)  # torchvision's two passes
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


def test_box_head_loss_is_smooth_l1_at_its_beta():
    """beta 1 (maskrcnn-benchmark's box head): sum over the positives of smooth L1 with beta 1 over the
    sampled ROIs; beta 1/9 is torchvision's ``fastrcnn_loss`` bit for bit."""
    torch.manual_seed(0)
    logits, regression = torch.randn(6, 3), torch.randn(6, 12)
    labels = [torch.tensor([1, 0, 2]), torch.tensor([0, 2, 0])]
    targets = [torch.randn(3, 4) * 2, torch.randn(3, 4) * 2]
    classifier, box = box_head_loss(logits, regression, labels, targets, beta=1.0)
    flat_labels, flat_targets = torch.cat(labels), torch.cat(targets)
    positive = torch.where(flat_labels > 0)[0]
    deltas = regression.reshape(6, 3, 4)[positive, flat_labels[positive]]
    diff = (deltas - flat_targets[positive]).abs()
    expected = torch.where(diff < 1, 0.5 * diff**2, diff - 0.5).sum() / 6
    torch.testing.assert_close(box, expected)
    torch.testing.assert_close(classifier, F.cross_entropy(logits, flat_labels))
    theirs = fastrcnn_loss(logits, regression, labels, targets)
    ours = box_head_loss(logits, regression, labels, targets)
    for got, want in zip(ours, theirs, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert not torch.allclose(box, theirs[1])


def test_training_losses_and_gradients_are_torchvisions_maskrcnn():
    """``model=maskrcnn`` in training (its own training path, torchvision's box beta): torchvision's Mask
    R-CNN's losses and gradients, bit for bit, on the same weights and sampling."""
    torch.manual_seed(0)
    reference = maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=5, min_size=128, max_size=160
    )
    ours = small_model(
        "maskrcnn", backbone=dict(name="resnet50"), detector=dict(min_size=128, max_size=160)
    ).train()
    ours.load_state_dict(reference.state_dict(), strict=True)
    reference.train()
    images = [torch.rand(3, 120, 150), torch.rand(3, 100, 140)]
    targets = [make_target(120, 150, with_aux=False), make_target(100, 140, with_aux=False)]
    results = []
    for model in (reference, ours):
        torch.manual_seed(3)
        losses = model(images, targets)
        sum(losses.values()).backward()
        grads = [p.grad.clone() for p in model.roi_heads.parameters() if p.grad is not None]
        results.append((losses, grads))
    (theirs, their_grads), (got, our_grads) = results
    assert set(got) == set(theirs) and got["loss_mask"] > 0
    for key, value in theirs.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=0, msg=key)
    assert len(our_grads) == len(their_grads)
    for a, b in zip(our_grads, their_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("preset", ["maskrcnn", "light", "heavy"])
def test_config_box_beta_changes_only_the_box_regression_loss(batch, preset):
    torch.manual_seed(0)
    default = small_model(preset).train()
    torch.manual_seed(0)
    ours = small_model(preset, detector={**SMALL_DETECTOR, "box_smooth_l1_beta": 1.0}).train()
    assert (default.roi_heads.box_smooth_l1_beta, ours.roi_heads.box_smooth_l1_beta) == (1 / 9, 1.0)
    outputs = []
    for model in (default, ours):
        torch.manual_seed(5)
        outputs.append(model(*batch))
    before, after = outputs
    assert after["loss_box_reg"] != before["loss_box_reg"]
    for key in set(before) - {"loss_box_reg"}:
        torch.testing.assert_close(after[key], before[key], rtol=0, atol=0, msg=key)
