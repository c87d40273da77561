"""The LightningModule that trains DATNet with eq. (3) and evaluates it with COCO metrics (Sec. 4)."""

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from datnet.evaluation import CocoEvaluator
from datnet.models import compile_dense_
from datnet.training.recipe import Recipe

Batch = tuple[list[Tensor], list[dict[str, Tensor]], list]
NO_STEP = 2**62  # "no non-finite loss" in the device-side record of the first step with one


class DATNetModule(pl.LightningModule):
    """Wraps a DATNet model (constructor injection) with the optimisation recipe and COCO evaluation.

    Training logs every term of eq. (3) separately (``train/loss_classifier`` ... ``train/loss_dt``,
    ``train/loss_seg``) and their sum ``train/loss``; the LR follows ``recipe`` per optimizer step.
    Validation and test map predictions to the original image sizes and compute box/mask AP and RPN recall
    (``val/bbox/AP``, ``val/segm/AP_S``, ``val/rpn/AR@100``, ...). A test split without annotations
    (test-dev) writes COCO result files into ``results_dir`` instead.

    Args:
        model: the detector (``datnet.models.DATNet``).
        optimizer: a factory taking the parameters (Hydra ``_partial_``), e.g. SGD momentum 0.9, wd 1e-4;
            its LR is replaced by ``recipe.lr``.
        recipe: the (already batch-scaled) LR schedule.
        iou_types: COCO metrics to compute (``bbox``, ``segm``).
        evaluate_proposals: also compute RPN proposal recall (Table 5).
        channels_last: use the channels-last memory format (faster convolutions on recent GPUs).
        compile: compile the model's dense part (backbone, auxiliary heads and losses, fusion) as one graph
            with dynamic shapes (``datnet.models.compile_dense_``), for training and evaluation alike; the
            RPN and ROI heads stay eager and the state dict keeps its keys.
        compile_mode: ``torch.compile``'s ``mode`` (``None``: the default, ``max-autotune``, ...).
        results_dir: where test result files go.
        finite_check_every: how often (in optimizer steps) the ranks check together for a non-finite loss
            (:meth:`check_finite_losses`); also at the last step, before every checkpoint and validation.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: Callable[[Iterable[nn.Parameter]], Optimizer],
        recipe: Recipe,
        iou_types: Sequence[str] = ("bbox", "segm"),
        evaluate_proposals: bool = True,
        channels_last: bool = False,
        compile: bool = False,
        compile_mode: str | None = None,
        results_dir: str | None = None,
        finite_check_every: int = 50,
    ) -> None:
        super().__init__()
        self.model = model
        self.optimizer_factory = optimizer
        self.recipe = recipe
        has_mask = getattr(model.roi_heads, "has_mask", lambda: False)()
        self.iou_types = tuple(t for t in iou_types if t != "segm" or has_mask)
        self.evaluate_proposals = evaluate_proposals
        self.results_dir = results_dir
        self.skipped: Counter[str] = Counter()
        self.evaluator: CocoEvaluator | None = None
        self.last_metrics: dict[str, float] = {}
        self.last_eval_step = -1
        if finite_check_every < 1:
            raise ValueError(f"finite_check_every must be >= 1, got {finite_check_every}")
        self.finite_check_every = finite_check_every
        self._unchecked_steps: tuple[int, int] | None = None  # first and last step since the last check
        self._first_nonfinite_step: Tensor | None = None  # on the device: NO_STEP, or that step
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        if compile:
            compile_dense_(self.model, mode=compile_mode)

    # --- training -------------------------------------------------------------------------------------------
    def training_step(self, batch: Batch, batch_idx: int) -> Tensor | None:
        images, targets, skipped = batch
        self._count_skipped(skipped)
        loss = None
        if images:
            losses = self.model(images, targets)
            loss = sum(losses.values())
            batch_size = len(images)
            self.log_dict({f"train/{k}": v.detach() for k, v in losses.items()}, batch_size=batch_size)
            self.log("train/loss", loss.detach(), prog_bar=True, batch_size=batch_size)
            self.log("lr", self.optimizers().param_groups[0]["lr"], prog_bar=True, batch_size=batch_size)
        self._record_finite(loss)
        return loss

    def _record_finite(self, loss: Tensor | None) -> None:
        """Notes on the device, without waiting for it, whether this step's loss is finite; every
        ``finite_check_every`` steps and at the last step, checks with the other ranks. Every rank runs
        this at every step (also without a loss: an empty batch), so all ranks agree on when to check."""
        step = self.global_step
        self._unchecked_steps = (self._unchecked_steps or (step, step))[0], step
        if loss is not None:
            first = torch.where(torch.isfinite(loss.detach()), NO_STEP, step)
            previous = self._first_nonfinite_step
            self._first_nonfinite_step = first if previous is None else torch.minimum(previous, first)
        if (step + 1) % self.finite_check_every == 0 or step + 1 == self.trainer.max_steps:
            self.check_finite_losses()

    def check_finite_losses(self) -> None:
        """Raises ``FloatingPointError`` on every rank together when any rank had a non-finite loss since
        the last check: one all-reduce (MIN of the first such step) and one host sync, instead of both on
        every step. A collective: every rank calls it at the same points (nothing happens when no step
        was trained since the last check).

        Between two checks a non-finite loss is back-propagated and applied as before (the optimizer step
        is not skipped): the run stops at the next check, and every checkpoint save and validation during
        fit checks first, so no checkpoint or validation ever sees weights that such a step touched.
        Skipping it device-side was rejected: zeroing the loss leaves NaN gradients (0 * inf in
        backward); the loss flag is per rank while DDP averages gradients over ranks; and masking
        gradients costs a kernel per parameter on every step and still moves the weights (momentum,
        weight decay)."""
        if self._unchecked_steps is None:
            return
        (start, end), self._unchecked_steps = self._unchecked_steps, None
        first = self._first_nonfinite_step
        self._first_nonfinite_step = None
        if first is None:
            first = torch.tensor(NO_STEP, device=self.device)
        step = int(self.trainer.strategy.reduce(first, reduce_op="min"))
        if step != NO_STEP:
            raise FloatingPointError(
                f"non-finite loss at step {step} (first on any rank; steps {start}-{end} checked together,"
                f" every module.finite_check_every={self.finite_check_every} steps)"
            )

    def _count_skipped(self, skipped: list) -> None:
        for sample in skipped:
            self.skipped[getattr(sample, "reason", str(sample))] += 1

    def on_train_epoch_end(self) -> None:
        total = sum(self.skipped.values())
        self.log("data/skipped", float(total), reduce_fx="sum", sync_dist=True)
        if total:
            rank_zero_info(
                f"epoch {self.current_epoch}: skipped {total} samples on rank 0: {dict(self.skipped)}"
            )
        self.skipped.clear()

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params)
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] = self.recipe.lr
        scheduler = LambdaLR(optimizer, self.recipe.lr_factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_train_end(self) -> None:
        self.check_finite_losses()  # a run ending on max_epochs

    def on_validation_start(self) -> None:
        self.check_finite_losses()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Checks for non-finite losses first (every rank builds the checkpoint); also saves torch's RNG
        states (the RPN/ROI samplers draw from them), as tensors so that the checkpoint still loads with
        ``weights_only=True``: a resumed run continues the same random stream."""
        self.check_finite_losses()
        checkpoint["torch_rng_state"] = torch.get_rng_state()
        if torch.cuda.is_available():
            checkpoint["cuda_rng_states"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "torch_rng_state" in checkpoint:
            torch.set_rng_state(checkpoint["torch_rng_state"])
        if "cuda_rng_states" in checkpoint and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(checkpoint["cuda_rng_states"])

    # --- evaluation -----------------------------------------------------------------------------------------
    def _start_evaluation(self, split: str) -> None:
        datamodule = self.trainer.datamodule
        self.evaluator = CocoEvaluator(
            datamodule.coco_gt(split),
            datamodule.label_to_category_id,
            self.iou_types,
            self.evaluate_proposals,
        )

    def _evaluation_step(self, batch: Batch) -> None:
        images, targets, skipped = batch
        self._count_skipped(skipped)
        if not images:
            return
        sizes = [tuple(int(v) for v in t["orig_size"]) for t in targets]
        # no proposals where the evaluator keeps none (recall not evaluated, or a split without annotations)
        outputs = self.model(images, return_proposals=self.evaluator.max_proposals > 0, output_sizes=sizes)
        self.evaluator.update(outputs, [t["image_id"] for t in targets])

    def _finish_evaluation(self, prefix: str) -> dict[str, float]:
        metrics = self.evaluator.compute()
        self.last_metrics, self.last_eval_step = metrics, self.global_step
        # computed on rank 0 and broadcast by the evaluator: identical on every rank, no further reduction
        self.log_dict({f"{prefix}/{k}": v for k, v in metrics.items()})
        skipped = sum(self.skipped.values())
        if skipped:
            rank_zero_info(f"{prefix}: skipped {skipped} samples on rank 0: {dict(self.skipped)}")
        self.skipped.clear()
        return metrics

    def on_validation_epoch_start(self) -> None:
        self._start_evaluation("val")

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluation_step(batch)

    def on_validation_epoch_end(self) -> None:
        self._finish_evaluation("val")

    def on_test_epoch_start(self) -> None:
        self._start_evaluation("test")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluation_step(batch)

    def on_test_epoch_end(self) -> None:
        self._finish_evaluation("test")
        if self.results_dir and self.trainer.is_global_zero:  # after compute, rank 0 holds every image
            self.evaluator.write_results(Path(self.results_dir))
