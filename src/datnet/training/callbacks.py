"""Callbacks of the training harness."""

import torch
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only

from datnet.visualization import (
    class_colors,
    dense_target_image,
    draw_detections,
    dt_image,
    resize_panel,
    semantic_image,
)


class PredictionImageLogger(Callback):
    """Every ``every_n_batches`` validation batches, logs for up to ``max_images`` of its images a panel:
    the prediction (masks and labelled boxes scoring ``>= score_threshold``), then the predicted DT map beside
    its target and the predicted semantic map beside its target (stride 4, ignored pixels white). To W&B
    (``log_image``) or TensorBoard; with other loggers it does nothing."""

    def __init__(self, every_n_batches: int = 50, max_images: int = 2, score_threshold: float = 0.5) -> None:
        self.every_n_batches = every_n_batches
        self.max_images = max_images
        self.score_threshold = score_threshold

    @rank_zero_only
    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs,
        batch,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, (WandbLogger, TensorBoardLogger))]
        images, targets, _ = batch
        if not loggers or not images or batch_idx % self.every_n_batches:
            return
        panels = [
            self.panel(pl_module, trainer, image, target)
            for image, target in list(zip(images, targets))[: self.max_images]
        ]
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

    def panel(self, pl_module: LightningModule, trainer: Trainer, image, target) -> torch.Tensor:
        """One uint8 image: prediction | DT prediction | DT target | semantic prediction | semantic target."""
        names = trainer.datamodule.class_names
        colors = class_colors(len(names))
        with torch.no_grad():
            detection = pl_module.model([image], return_aux_maps=True)[0]
        picture = draw_detections(
            (image * 255).round().to(torch.uint8).cpu(),
            {k: v.cpu() for k, v in detection.items()},
            names,
            colors,
            self.score_threshold,
        )
        size = tuple(picture.shape[-2:])
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
        resized = [resize_panel(m, size) for m in maps]
        return torch.cat([picture, *resized], dim=-1)
