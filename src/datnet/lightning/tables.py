"""Tables logged during evaluation (the per-category AP) to the run's W&B loggers."""

from collections.abc import Sequence

from pytorch_lightning.loggers import Logger, WandbLogger


def log_wandb_table(
    loggers: Sequence[Logger],
    key: str,
    columns: Sequence[str],
    rows: Sequence[Sequence],
    step: int | None = None,
) -> bool:
    """Log a table (e.g. the per-category AP of an evaluation) to every W&B logger among ``loggers``, with
    Lightning's ``WandbLogger.log_table``; nothing without one. Return whether a W&B logger took it."""
    wandb_loggers = [logger for logger in loggers if isinstance(logger, WandbLogger)]
    for logger in wandb_loggers:
        logger.log_table(key=key, columns=list(columns), data=[list(row) for row in rows], step=step)
    return bool(wandb_loggers)
