"""Optimizer parameter groups: maskrcnn-benchmark's rule for biases (the paper's training code).

Sec. 4 "Training details": "We use the settings from [10]", trained in maskrcnn-benchmark [23], whose
``make_optimizer`` gives every parameter whose name contains ``bias`` the LR ``BASE_LR * BIAS_LR_FACTOR``
(2) and the weight decay ``WEIGHT_DECAY_BIAS`` (0), Detectron's rule inherited from Caffe; every other
parameter gets the base LR and ``WEIGHT_DECAY`` (1e-4). torchvision's detection references put every
parameter in one group. Here the rule is ``bias_lr_factor`` / ``bias_weight_decay`` of the schedule
(``conf/schedule/*.yaml``); with ``1`` and ``None`` there is a single group, as in torchvision.
"""

from typing import Any

from torch import nn


def is_bias(name: str) -> bool:
    """Whether the parameter called ``name`` (as in ``named_parameters``) is a bias: maskrcnn-benchmark's
    test, ``"bias" in name``, restricted to the last name component so that a module named after biases
    does not turn its weights into biases. Trainable normalisation layers' biases count (as there)."""
    return "bias" in name.rsplit(".", 1)[-1]


def parameter_groups(
    model: nn.Module, lr: float, bias_lr_factor: float = 1.0, bias_weight_decay: float | None = None
) -> list[dict[str, Any]]:
    """The trainable parameters of ``model`` as optimizer parameter groups, each with its own ``lr``.

    The weights come first, at ``lr`` with the optimizer's weight decay; the biases second, at
    ``lr * bias_lr_factor`` with weight decay ``bias_weight_decay`` (``None``: the optimizer's). One group
    holds everything when biases are treated like weights (``bias_lr_factor=1``, ``bias_weight_decay=None``).
    An LR scheduler multiplies each group's own initial LR, so the biases keep their factor throughout.
    """
    if bias_lr_factor <= 0:
        raise ValueError(f"schedule.bias_lr_factor must be positive, got {bias_lr_factor}")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError(f"{type(model).__name__} has no trainable parameters")
    if bias_lr_factor == 1 and bias_weight_decay is None:
        return [{"params": [p for _, p in named], "lr": lr}]
    weights = {"params": [p for n, p in named if not is_bias(n)], "lr": lr}
    biases: dict[str, Any] = {"params": [p for n, p in named if is_bias(n)], "lr": lr * bias_lr_factor}
    if bias_weight_decay is not None:
        biases["weight_decay"] = bias_weight_decay
    return [group for group in (weights, biases) if group["params"]]
