"""The LightningModule that trains DATNet with eq. (3) and evaluates it with COCO metrics (Sec. 4)."""

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import RunningStage, TrainerFn
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from datnet.data.dataset import SkippedSample
from datnet.data.image_io import IMAGE_PROBLEMS
from datnet.evaluation import AuxHeadMetrics, CocoEvaluator
from datnet.lightning.checkpoints import restore_rng_states, save_rng_states
from datnet.lightning.param_groups import parameter_groups
from datnet.lightning.schedule import Recipe
from datnet.lightning.tables import log_wandb_table
from datnet.models import compile_dense_
from datnet.models.tta import TestTimeAugmentation

Batch = tuple[list[Tensor], list[dict[str, Tensor]], list]
NO_STEP = 2**62  # "no non-finite loss" in the device-side record of the first step with one
MAX_LISTED_SKIPS = 20  # unreadable images named per rank and epoch in the log (all are counted)
SUM_OVER_RANKS = {"sync_dist": True, "reduce_fx": "sum"}  # self.log of a count: one all-reduce per key

log = logging.getLogger(__name__)


class DATNetModule(pl.LightningModule):
    """Wraps a DATNet model (constructor injection) with the optimisation recipe and COCO evaluation.

    Training logs every term of eq. (3) separately (``train/loss_classifier`` ... ``train/loss_dt``,
    ``train/loss_seg``) and their sum ``train/loss``; the LR follows ``recipe`` per optimizer step.
    A rank whose whole batch of images could not be read trains on an exact zero loss connected to every
    trainable parameter (:meth:`training_step`); the unreadable images are counted (``data/skipped``).
    Validation and test map predictions to the original image sizes and compute box/mask AP and RPN recall
    (``val/bbox/AP``, ``val/segm/AP_S``, ``val/rpn/AR@100``, ...), the auxiliary heads' pixel metrics for a
    model that has them (``val/aux/dt_acc``, ``val/aux/dt_miou``, ``val/aux/seg_miou``) and the number of
    images that could not be read (``val/skipped``); rank 0 writes the per-category AP table,
    precision-recall curves and confusion matrices into ``results_dir`` (a test split's into
    ``results_dir/test``). A test split without annotations (test-dev) writes COCO result files into
    ``results_dir`` instead.

    Args:
        model: the detector (``datnet.models.DATNet``).
        optimizer: a factory taking the parameters (Hydra ``_partial_``), e.g. SGD momentum 0.9, wd 1e-4;
            its LR is replaced by ``recipe.lr``. None for a module that only evaluates.
        recipe: the (already batch-scaled) LR schedule; None for a module that only evaluates.
        iou_types: COCO metrics to compute (``bbox``, ``segm``).
        evaluate_proposals: also compute RPN proposal recall (Table 5).
        proposal_protocols: how (``CocoEvaluator``): ``cocoeval`` and/or ``maskrcnn_benchmark``.
        mid_run_reports: whether validations during training (before the last step) also compute proposal
            recall and write the reports (per-category AP, PR curves, confusion matrices); by default only
            the final validation and ``eval.py`` do, and the ranks waiting on rank 0 mid-run wait for boxes
            and masks only.
        channels_last: use the channels-last memory format (faster convolutions on recent GPUs).
        compile: compile the model's dense part (backbone, auxiliary heads and losses, fusion) as one graph
            with dynamic shapes (``datnet.models.compile_dense_``), for training and evaluation alike; the
            RPN and ROI heads stay eager and the state dict keeps its keys.
        compile_mode: ``torch.compile``'s ``mode`` (``None``: the default, ``max-autotune``, ...).
        compile_backend: ``torch.compile``'s ``backend`` (``inductor``; ``eager``/``aot_eager`` to debug).
        compile_cache_dir: Inductor's cache (e.g. the run's ``compile_cache``), reused by a requeued run.
        results_dir: where the evaluation reports (per-category AP, PR curves, confusion matrices) and the
            test result files go.
        finite_check_every: how often (in optimizer steps) the ranks check together for a non-finite loss
            (:meth:`check_finite_losses`); also at the last step, before every checkpoint and validation.
        tta: evaluate the detections merged over augmented views (``datnet.models.tta``, ``tta.*`` of
            conf/eval.yaml) instead of the model's own; None (the default): the model's own.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: Callable[[Iterable[nn.Parameter]], Optimizer] | None = None,
        recipe: Recipe | None = None,
        iou_types: Sequence[str] = ("bbox", "segm"),
        evaluate_proposals: bool = True,
        proposal_protocols: Sequence[str] = ("cocoeval",),
        mid_run_reports: bool = False,
        channels_last: bool = False,
        compile: bool = False,
        compile_mode: str | None = None,
        compile_backend: str = "inductor",
        compile_cache_dir: str | None = None,
        results_dir: str | None = None,
        finite_check_every: int = 50,
        tta: TestTimeAugmentation | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.optimizer_factory = optimizer
        self.recipe = recipe
        has_mask = getattr(model.roi_heads, "has_mask", lambda: False)()
        self.iou_types = tuple(t for t in iou_types if t != "segm" or has_mask)
        self.evaluate_proposals = evaluate_proposals
        self.proposal_protocols = tuple(proposal_protocols)
        self.mid_run_reports = mid_run_reports
        self.results_dir = results_dir
        self.skipped: defaultdict[str, list[SkippedSample]] = defaultdict(list)  # per trainer stage
        self.evaluator: CocoEvaluator | None = None
        self.aux_metrics = AuxHeadMetrics.for_model(model)  # None without auxiliary heads
        self.per_class_markdown: str | None = None  # the last evaluation's per-category AP table (rank 0)
        self.last_metrics: dict[str, float] = {}
        self.last_eval_step = -1
        if finite_check_every < 1:
            raise ValueError(f"finite_check_every must be >= 1, got {finite_check_every}")
        self.finite_check_every = finite_check_every
        self.tta = tta
        self._unchecked_steps: tuple[int, int] | None = None  # first and last step since the last check
        self._first_nonfinite_step: Tensor | None = None  # on the device: NO_STEP, or that step
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        if compile:
            compile_dense_(
                self.model, mode=compile_mode, backend=compile_backend, cache_dir=compile_cache_dir
            )

    # --- training -------------------------------------------------------------------------------------------
    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        """The loss of eq. (3) on the images of the batch that could be read (the others are counted).

        A rank whose whole batch was skipped returns an exact zero that reaches every trainable parameter
        (through empty slices, so even a NaN weight gives 0): it still runs the backward, whose zero
        gradients DDP all-reduces with the other ranks' as on any step (whatever ``find_unused_parameters``
        or ``static_graph``), and the finite-loss bookkeeping. The step is taken with DDP's average of the
        ranks' gradients, to which this rank adds zeros (with no image on any rank, only momentum and
        weight decay move the weights)."""
        images, targets, skipped = batch
        self._count_skipped(skipped)
        if images:
            losses = self.model(images, targets)
            loss = sum(losses.values())
            batch_size = len(images)
            self.log_dict({f"train/{k}": v.detach() for k, v in losses.items()}, batch_size=batch_size)
            self.log("train/loss", loss.detach(), prog_bar=True, batch_size=batch_size)
            self.log("lr", self.optimizers().param_groups[0]["lr"], prog_bar=True, batch_size=batch_size)
        else:
            loss = sum(p.unsqueeze(0)[:0].sum() for p in self.parameters() if p.requires_grad)
        self._record_finite(loss)
        return loss

    def _record_finite(self, loss: Tensor) -> None:
        """Notes on the device, without waiting for it, whether this step's loss is finite; every
        ``finite_check_every`` steps and at the last step, checks with the other ranks. Every rank runs
        this at every step (also one whose whole batch was skipped), so all ranks agree on when to check."""
        step = self.global_step
        self._unchecked_steps = (self._unchecked_steps or (step, step))[0], step
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

    def _count_skipped(self, skipped: list[SkippedSample]) -> None:
        """Keeps a batch's items that could not be read, per trainer stage: the training epoch's and those
        of a validation inside it are reported apart (``_report_skipped``)."""
        self.skipped[self.trainer.state.stage].extend(skipped)

    def _report_skipped(self, stage: str, what: str) -> dict[str, float]:
        """This rank's number of images of ``stage`` that could not be read, per problem
        (``IMAGE_PROBLEMS``), to log with ``SUM_OVER_RANKS``; warns naming the files and problems, then
        forgets them."""
        samples = self.skipped.pop(stage, [])
        if samples:
            listed = "".join(f"\n  {s.reason}" for s in samples[:MAX_LISTED_SKIPS])
            more = len(samples) - MAX_LISTED_SKIPS
            log.warning(
                "%s: rank %d skipped %d images that could not be read:%s%s",
                what,
                self.global_rank,
                len(samples),
                listed,
                f"\n  ... and {more} more" if more > 0 else "",
            )
        kinds = [s.kind for s in samples]
        return {k: float(kinds.count(k)) for k in IMAGE_PROBLEMS}

    def on_train_epoch_end(self) -> None:
        """Logs ``data/skipped`` and ``data/skipped/<problem>``: the epoch's unreadable images, all ranks."""
        counts = self._report_skipped(RunningStage.TRAINING, f"epoch {self.current_epoch}")
        self.log("data/skipped", sum(counts.values()), **SUM_OVER_RANKS)
        self.log_dict({f"data/skipped/{k}": n for k, n in counts.items()}, **SUM_OVER_RANKS)

    def configure_optimizers(self):
        """The optimizer over the trainable parameters in groups with their own base LR (the biases' is
        ``recipe.bias_lr_factor`` x ``recipe.lr``, with ``recipe.bias_weight_decay``:
        ``datnet.lightning.param_groups``), and the recipe's warm-up and decays per step, multiplying each
        group's base LR (``LambdaLR`` scales every group's ``initial_lr``)."""
        if self.optimizer_factory is None or self.recipe is None:
            raise ValueError("this DATNetModule only evaluates: it was built without an optimizer and recipe")
        groups = parameter_groups(
            self.model, self.recipe.lr, self.recipe.bias_lr_factor, self.recipe.bias_weight_decay
        )
        optimizer = self.optimizer_factory(groups)
        for group in optimizer.param_groups:
            group["initial_lr"] = group["lr"]
        scheduler = LambdaLR(optimizer, self.recipe.lr_factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_train_end(self) -> None:
        self.check_finite_losses()  # a run ending on max_epochs

    def on_validation_start(self) -> None:
        self.check_finite_losses()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Checks for non-finite losses first (every rank builds the checkpoint); also saves torch's RNG
        states (the RPN/ROI samplers draw from them; ``datnet.lightning.checkpoints.save_rng_states``) and the
        run's total batch per optimizer step and number of ranks, which a resumed run keeps
        (``datnet.runs.resume``). The training loader's position is saved by Lightning itself
        (``ResumableLoader``)."""
        self.check_finite_losses()
        save_rng_states(checkpoint)
        batch_size = getattr(self.trainer.datamodule, "batch_size", None)
        if batch_size is not None:
            world, accumulate = self.trainer.world_size, self.trainer.accumulate_grad_batches
            checkpoint["total_batch_size"] = batch_size * world * accumulate
        checkpoint["world_size"] = self.trainer.world_size

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Restores the RNG states of the devices that exist here, reporting the rest
        (``datnet.lightning.checkpoints.restore_rng_states``)."""
        restore_rng_states(checkpoint)

    # --- evaluation -----------------------------------------------------------------------------------------
    @property
    def _full_evaluation(self) -> bool:
        """Whether this evaluation computes proposal recall and writes the reports: not a validation in the
        middle of training (before the last step), unless ``mid_run_reports``."""
        fitting = self.trainer.state.fn == TrainerFn.FITTING
        return self.mid_run_reports or not fitting or self.global_step >= self.trainer.max_steps

    def _start_evaluation(self, split: str) -> None:
        datamodule = self.trainer.datamodule
        self.evaluator = CocoEvaluator(
            datamodule.coco_gt(split),
            datamodule.label_to_category_id,
            self.iou_types,
            self.evaluate_proposals and self._full_evaluation,
            proposal_protocols=self.proposal_protocols,
        )
        if self.aux_metrics is not None:
            self.aux_metrics.reset()

    @property
    def _evaluates_aux_heads(self) -> bool:
        """Whether this evaluation scores the auxiliary heads: the model has them and the split has
        annotations (an unannotated test split's dense targets are all ignored)."""
        return self.aux_metrics is not None and bool(self.evaluator.coco_gt.anns)

    def _evaluation_step(self, batch: Batch) -> None:
        images, targets, skipped = batch
        self._count_skipped(skipped)
        if not images:
            return
        sizes = [tuple(int(v) for v in t["orig_size"]) for t in targets]
        # no proposals where the evaluator keeps none (recall not evaluated, or a split without annotations)
        with_aux = self._evaluates_aux_heads
        detect = self.model if self.tta is None else partial(self.tta, self.model)
        outputs = detect(
            images,
            return_proposals=self.evaluator.max_proposals > 0,
            return_aux_maps=with_aux,
            output_sizes=sizes,
        )
        if with_aux:
            maps = [{key: output.pop(key) for key in self.aux_metrics.keys} for output in outputs]
            self.aux_metrics.update(maps, targets)
        self.evaluator.update(outputs, [t["image_id"] for t in targets])

    def _finish_evaluation(self, prefix: str) -> dict[str, float]:
        metrics = self.evaluator.compute()
        if self._evaluates_aux_heads:  # torchmetrics sums the states of every rank: a collective
            metrics.update(self.aux_metrics.compute())
        self._write_reports(prefix)
        self.last_metrics, self.last_eval_step = metrics, self.global_step
        # computed on rank 0 and broadcast by the evaluator: identical on every rank, no further reduction
        self.log_dict({f"{prefix}/{k}": v for k, v in metrics.items()})
        if (compiled := getattr(self.model, "_compiled_dense_features", None)) is not None:
            self.log("compile/graphs", float(compiled.graphs), rank_zero_only=True)
        # the metrics are over the images that could be read: say how many could not (all ranks)
        skipped = self._report_skipped(self.trainer.state.stage, prefix)
        self.log(f"{prefix}/skipped", sum(skipped.values()), **SUM_OVER_RANKS)
        return metrics

    def _write_reports(self, split: str) -> None:
        """On rank 0, after the evaluator's ``compute``: the per-category AP table, precision-recall curves
        and confusion matrices (``CocoEvaluator.write_reports``) into ``results_dir`` (a test split's into
        ``results_dir/test``), the table also to W&B when a W&B logger is active. Not in Lightning's sanity
        check, nor in a validation in the middle of training (unless ``mid_run_reports``), nor without
        ground-truth objects."""
        self.per_class_markdown = None
        writes = self.results_dir and self.trainer.is_global_zero and self._full_evaluation
        if not writes or self.trainer.sanity_checking:
            return
        table = self.evaluator.write_reports(Path(self.results_dir) / ("" if split == "val" else split))
        if table is not None:
            self.per_class_markdown = table.to_markdown()
            log_wandb_table(
                self.loggers, f"{split}/per_class_ap", table.columns, table.rows, self.global_step
            )

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
