"""Prediction panels logged during validation: detections beside the auxiliary heads' maps and targets."""

from typing import Any

import torch
import torch.nn.functional as F
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only
from torch import Tensor

from datnet.visualization import (
    class_colors,
    dense_target_image,
    draw_detections,
    dt_image,
    resize_panel,
    semantic_image,
)


class PredictionImageLogger(Callback):
    """Every ``every_n_batches`` validation batches, until ``max_images`` images were drawn in this
    validation, logs for the batch's images a panel: the prediction (masks and labelled boxes scoring
    ``>= score_threshold``), then the predicted DT map beside its target and the predicted semantic map
    beside its target (stride 4, ignored pixels white), each at most ``max_size`` pixels on its longer side.
    To W&B (``log_image``) or TensorBoard; with other loggers it does nothing.

    Only rank 0 draws, and no collective runs during validation batches (the evaluator gathers at the end),
    so the other ranks wait only for rank 0's total drawing time, once, at that gather: the cap per
    validation and the downsampling (drawing is on the CPU, masks are pasted at full size) keep it short.
    """

    def __init__(
        self,
        every_n_batches: int = 50,
        max_images: int = 4,
        score_threshold: float = 0.5,
        max_size: int = 512,
    ) -> None:
        self.every_n_batches = every_n_batches
        self.max_images = max_images
        self.score_threshold = score_threshold
        self.max_size = max_size
        self.drawn = 0

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.drawn = 0

    @rank_zero_only
    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, (WandbLogger, TensorBoardLogger))]
        images, targets, _ = batch
        todo = list(zip(images, targets))[: self.max_images - self.drawn]
        if not loggers or not todo or batch_idx % self.every_n_batches:
            return
        panels = [self.panel(pl_module, trainer, image, target) for image, target in todo]
        self.drawn += len(panels)
        for logger in loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(
                    "val/predictions", [p.permute(1, 2, 0).numpy() for p in panels], step=trainer.global_step
                )
            else:
                for i, panel in enumerate(panels):
                    logger.experiment.add_image(
                        f"val/predictions/{batch_idx}_{i}", panel, trainer.global_step
                    )

    def panel(self, pl_module: LightningModule, trainer: Trainer, image: Tensor, target: dict) -> Tensor:
        """One uint8 image: prediction | DT prediction | DT target | semantic prediction | semantic target.
        Only the detections drawn leave the device, already downsampled."""
        names = trainer.datamodule.class_names
        colors = class_colors(len(names))
        with torch.no_grad():
            detection = pl_module.model([image], return_aux_maps=True)[0]
        scale = min(1.0, self.max_size / max(image.shape[-2:]))
        size = tuple(round(side * scale) for side in image.shape[-2:])
        keep = detection["scores"] >= self.score_threshold
        drawn = {k: detection[k][keep].cpu() for k in ("boxes", "scores", "labels")}
        drawn["boxes"] *= scale
        if "masks" in detection:
            drawn["masks"] = F.interpolate(detection["masks"][keep], size=size, mode="bilinear").cpu()
        pixels = image[None].float() / (1.0 if image.is_floating_point() else 255.0)  # [0, 1] or uint8
        small = F.interpolate(pixels, size=size, mode="bilinear", antialias=True)[0]
        picture = draw_detections(small.cpu(), drawn, names, colors, 0.0)
        maps = []
        if "dt" in detection:
            maps += [
                dt_image(detection["dt"].cpu()),
                dense_target_image(target["dt"].cpu(), colors, detection["dt"].shape[0]),
            ]
        if "sem" in detection:
            maps += [
                semantic_image(detection["sem"].cpu(), colors),
                dense_target_image(target["sem"].cpu(), colors),
            ]
        return torch.cat([picture, *(resize_panel(m, size) for m in maps)], dim=-1)
