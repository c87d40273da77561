"""The focal variant of eq. (1)-(2) against values computed by hand."""

import math

import pytest
import torch

from datnet.models import dense_focal_loss


def test_focal_loss_matches_hand_computed_value():
    # One image, 2 classes, 1x2 pixels: pixel a is background with p0 = e^2/(e^2+1), pixel b is class 1
    # with p1 = 1/(1+e^1).
    logits = torch.tensor([[[[2.0, 1.0]], [[0.0, 0.0]]]])  # (B=1, K=2, H=1, W=2)
    target = torch.tensor([[[0, 1]]])
    p_a = math.exp(2) / (math.exp(2) + 1)
    p_b = 1 / (1 + math.exp(1))
    expected = (-0.2 * (1 - p_a) ** 2 * math.log(p_a) - 1.0 * (1 - p_b) ** 2 * math.log(p_b)) / 2
    assert dense_focal_loss(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_ignored_pixels_do_not_count():
    logits = torch.tensor([[[[2.0, 1.0, 5.0]], [[0.0, 0.0, -5.0]]]])
    target = torch.tensor([[[0, 1, 255]]])
    full = dense_focal_loss(logits[..., :2], target[..., :2])
    assert dense_focal_loss(logits, target).item() == pytest.approx(full.item(), rel=1e-6)


def test_gamma_zero_alpha_one_is_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5, 6)
    target = torch.randint(0, 4, (2, 5, 6))
    ce = torch.nn.functional.cross_entropy(logits, target)
    assert dense_focal_loss(logits, target, background_alpha=1.0, gamma=0.0).item() == pytest.approx(
        ce.item()
    )


def test_all_ignored_gives_zero_with_gradient():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = dense_focal_loss(logits, torch.full((1, 2, 2), 255))
    loss.backward()
    assert loss.item() == 0.0 and logits.grad is not None
