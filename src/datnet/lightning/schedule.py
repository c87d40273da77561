"""The paper's optimisation recipe (Sec. 4 "Training details") and the linear scaling rule [9].

A schedule is written for a reference total batch (16 images for COCO 1x: LR 0.02, 90k iterations, decays at
60k and 80k). For another total batch ``B`` the LR is multiplied by ``B / 16`` and every iteration count by
``16 / B`` (Goyal et al.), so ``trainer.devices=8`` and ``=1`` run the same recipe.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Recipe:
    """An LR schedule: linear warm-up from ``lr * warmup_factor`` then x``gamma`` at each milestone.

    ``lr`` is the weights' LR; biases train at ``lr * bias_lr_factor`` with weight decay ``bias_weight_decay``
    (``None``: the optimizer's), see ``datnet.lightning.param_groups``. The warm-up and the decays multiply
    both alike (maskrcnn-benchmark's ``WarmupMultiStepLR``: ``WARMUP_ITERS=500``, ``WARMUP_FACTOR=1/3``,
    linear).
    """

    lr: float
    max_steps: int
    milestones: tuple[int, ...]
    warmup_steps: int
    warmup_factor: float = 0.001
    gamma: float = 0.1
    bias_lr_factor: float = 1.0
    bias_weight_decay: float | None = None

    def lr_factor(self, step: int) -> float:
        """Multiplier of ``lr`` for optimizer step ``step`` (0-based)."""
        factor = self.gamma ** sum(step >= m for m in self.milestones)
        if step < self.warmup_steps:
            alpha = step / self.warmup_steps
            factor *= self.warmup_factor * (1 - alpha) + alpha
        return factor


def scale_steps(n: int, reference_batch_size: int, total_batch_size: int) -> int:
    """An iteration count written for ``reference_batch_size`` images per step, at ``total_batch_size``:
    ``ceil(n * reference / total)``, at least 1 (0 stays 0)."""
    if total_batch_size <= 0 or reference_batch_size <= 0:
        raise ValueError(f"batch sizes must be positive, got {total_batch_size} and {reference_batch_size}")
    return max(1, int(-(-n * reference_batch_size // total_batch_size))) if n > 0 else 0  # exact ceil


@dataclass(frozen=True)
class Intervals:
    """How often a run validates and writes ``last.ckpt``, in optimizer steps of the actual total batch."""

    val_every: int
    checkpoint_every: int


def scale_intervals(
    val_every: int, checkpoint_every: int, reference_batch_size: int, total_batch_size: int
) -> Intervals:
    """``schedule.val_every`` / ``schedule.checkpoint_every`` scaled like the recipe's iteration counts, so
    that a run validates and checkpoints at the same points of training (images seen) whatever the number
    of GPUs: COCO 1x validates every 10k steps of 16 images, i.e. every 20k steps of 8 or 1250 of 128."""
    return Intervals(
        scale_steps(val_every, reference_batch_size, total_batch_size),
        scale_steps(checkpoint_every, reference_batch_size, total_batch_size),
    )


def scale_recipe(
    lr: float,
    max_steps: int,
    milestones: list[int],
    warmup_steps: int,
    reference_batch_size: int,
    total_batch_size: int,
    warmup_factor: float = 0.001,
    gamma: float = 0.1,
    bias_lr_factor: float = 1.0,
    bias_weight_decay: float | None = None,
) -> Recipe:
    """The recipe written for ``reference_batch_size`` images per step, scaled to ``total_batch_size``
    (the bias factor and decay are ratios and absolute values: they do not scale)."""
    if total_batch_size <= 0 or reference_batch_size <= 0:
        raise ValueError(f"batch sizes must be positive, got {total_batch_size} and {reference_batch_size}")
    k = total_batch_size / reference_batch_size

    def steps(n: int) -> int:
        return scale_steps(n, reference_batch_size, total_batch_size)

    return Recipe(
        lr=lr * k,
        max_steps=steps(max_steps),
        milestones=tuple(steps(m) for m in milestones),
        warmup_steps=steps(warmup_steps),
        warmup_factor=warmup_factor,
        gamma=gamma,
        bias_lr_factor=bias_lr_factor,
        bias_weight_decay=bias_weight_decay,
    )
