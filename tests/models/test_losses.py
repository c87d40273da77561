"""The focal variant of eq. (1)-(2) against values computed by hand."""

import math

import pytest
import torch

from datnet.models import dense_focal_loss
from datnet.models.losses import upsample_logits


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


def test_image_resolution_loss_matches_hand_computed_value():
    """Eq. 2 over the image's pixels: stride-4 logits of one image (2 classes, 1x2 cells) upsampled x4 to
    4x8 pixels (bilinear, align_corners=False: pixel column x samples cell coordinate (x + 0.5) / 4 - 0.5,
    clamped to [0, 1], so columns 0..7 weigh cell 1 by t = 0, 0, 1/8, 3/8, 5/8, 7/8, 1, 1; rows all equal),
    against a 4x8 target whose ignored pixels (row 2, two pixels of row 3) are left out of the average."""
    logits = torch.tensor([[[[0.0, 0.0]], [[-2.0, 2.0]]]])  # class-1 margin -2 and 2 on the two cells
    rows = [[0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1, 1, 1], [255] * 8, [0, 0, 1, 1, 1, 1, 255, 255]]
    target = torch.tensor([rows])
    margins = [-2 + 4 * t for t in (0, 0, 1 / 8, 3 / 8, 5 / 8, 7 / 8, 1, 1)]
    total, count = 0.0, 0
    for row in rows:
        for label, margin in zip(row, margins):
            if label == 255:
                continue
            p = 1 / (1 + math.exp(-margin if label == 1 else margin))  # softmax of the target class
            total += -(1.0 if label else 0.2) * (1 - p) ** 2 * math.log(p)
            count += 1
    assert count == 22
    upsampled = upsample_logits(logits, (4, 8))
    assert upsampled.shape == (1, 2, 4, 8)
    assert dense_focal_loss(upsampled, target).item() == pytest.approx(total / count, rel=1e-6)
