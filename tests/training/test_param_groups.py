"""maskrcnn-benchmark's solver for biases (the paper's code): 2x LR, no weight decay, through the schedule."""

from functools import partial

import pytest
import torch
from torch import nn

from datnet.lightning.module import DATNetModule
from datnet.lightning.param_groups import is_bias, parameter_groups
from datnet.lightning.schedule import Recipe


class TinyDetector(nn.Module):
    """A conv, a trainable BatchNorm and a frozen linear layer: weights, biases and a frozen bias."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.norm = nn.BatchNorm2d(4)
        self.frozen = nn.Linear(4, 2).requires_grad_(False)
        self.roi_heads = nn.Identity()  # what DATNetModule asks about masks


def test_biases_get_their_own_group_with_twice_the_lr_and_no_decay():
    model = TinyDetector()
    weights, biases = parameter_groups(model, 0.02, bias_lr_factor=2.0, bias_weight_decay=0.0)
    assert weights["lr"] == 0.02 and "weight_decay" not in weights  # the optimizer's 1e-4
    assert biases["lr"] == pytest.approx(0.04) and biases["weight_decay"] == 0.0
    assert {id(p) for p in weights["params"]} == {id(model.conv.weight), id(model.norm.weight)}
    assert {id(p) for p in biases["params"]} == {id(model.conv.bias), id(model.norm.bias)}
    (single,) = parameter_groups(model, 0.02)  # torchvision: one group
    assert len(single["params"]) == 4 and single["lr"] == 0.02
    assert is_bias("rpn.head.conv.0.0.bias") and not is_bias("bias_head.conv.weight")
    with pytest.raises(ValueError, match="bias_lr_factor"):
        parameter_groups(model, 0.02, bias_lr_factor=0)


def test_lr_schedule_multiplies_each_groups_own_lr_and_biases_are_not_decayed():
    """configure_optimizers: warm-up 500 steps from 1/3 and the /10 decays apply to 0.02 and to 0.04; an SGD
    step with zero gradients shrinks the weights (decay 1e-4) and leaves the biases alone."""
    model = TinyDetector()
    recipe = Recipe(0.02, 1000, (600,), 500, 1 / 3, bias_lr_factor=2.0, bias_weight_decay=0.0)
    sgd = partial(torch.optim.SGD, lr=0.02, momentum=0.9, weight_decay=1e-4)
    config = DATNetModule(model, sgd, recipe).configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    lrs = {}
    for step in range(601):
        lrs[step] = [g["lr"] for g in optimizer.param_groups]
        if step == 0:
            weight, bias = model.conv.weight.detach().clone(), model.conv.bias.detach().clone()
            for p in model.parameters():
                p.grad = torch.zeros_like(p) if p.requires_grad else None
            optimizer.step()
            torch.testing.assert_close(model.conv.weight, weight * (1 - lrs[0][0] * 1e-4))
            torch.testing.assert_close(model.conv.bias, bias, rtol=0, atol=0)
        scheduler.step()
    assert lrs[0] == pytest.approx([0.02 / 3, 0.04 / 3])
    assert lrs[250] == pytest.approx([0.02 * 2 / 3, 0.04 * 2 / 3])
    assert lrs[500] == pytest.approx([0.02, 0.04])
    assert lrs[600] == pytest.approx([0.002, 0.004])
