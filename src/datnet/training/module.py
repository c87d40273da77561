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
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        if compile:
            compile_dense_(self.model, mode=compile_mode)

    # --- training -------------------------------------------------------------------------------------------
    def training_step(self, batch: Batch, batch_idx: int) -> Tensor | None:
        images, targets, skipped = batch
        self._count_skipped(skipped)
        if not images:
            return None
        losses = self.model(images, targets)
        loss = sum(losses.values())
        batch_size = len(images)
        self.log_dict({f"train/{k}": v.detach() for k, v in losses.items()}, batch_size=batch_size)
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=batch_size)
        self.log("lr", self.optimizers().param_groups[0]["lr"], prog_bar=True, batch_size=batch_size)
        # decided by all ranks together, so that under DDP they stop as one instead of waiting on each other
        if not self.trainer.strategy.reduce_boolean_decision(bool(torch.isfinite(loss)), all=True):
            raise FloatingPointError(f"non-finite loss at step {self.global_step}: {losses}")
        return loss

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

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Also save torch's RNG states (the RPN/ROI samplers draw from them), as tensors so that the
        checkpoint still loads with ``weights_only=True``: a resumed run continues the same random stream."""
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
