"""The train and eval tasks behind ``src/train.py`` and ``src/eval.py`` (Hydra configs in ``conf/``): plan the
run, build its objects, run Lightning, report METRICS."""

import json
import logging
import math
import signal
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig

from datnet.runs.build import build_data_and_model, build_module, build_trainer, training_callbacks
from datnet.runs.plan import plan_evaluation, plan_training
from datnet.utils.config_tree import print_config_tree

log = logging.getLogger(__name__)


def report_metrics(metrics: dict[str, Any], directory: Path) -> dict[str, Any]:
    """Prints ``METRICS {json}`` (NaN -> null) and writes the same JSON to ``directory/metrics.json``."""
    clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}
    line = json.dumps(clean, sort_keys=True)
    print(f"METRICS {line}", flush=True)
    (directory / "metrics.json").write_text(line + "\n")
    return clean


def logged_metrics(trainer: pl.Trainer, prefix: str) -> dict[str, float]:
    """The last logged metrics under ``prefix`` (also brought back from spawned DDP processes)."""
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(prefix)}


def stop_ddp_processes(trainer: pl.Trainer) -> None:
    """Kill the DDP processes this one launched (Lightning's script launcher), so that a failing job does
    not leave ranks waiting forever on a collective."""
    launcher = getattr(trainer.strategy, "launcher", None)
    if launcher is not None and hasattr(launcher, "kill"):
        launcher.kill(signal.SIGKILL)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fits the model (from step 0, or resuming a run: ``datnet.runs.plan.plan_training``), evaluates the
    final weights on val (and test if ``cfg.test``), reports METRICS."""
    plan = plan_training(cfg)
    cfg = plan.cfg
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    trainer = build_trainer(plan, training_callbacks(plan))  # checks the launch before any data is read
    datamodule, model = build_data_and_model(cfg)
    if trainer.is_global_zero:
        print_config_tree(cfg, save_dir=str(plan.output_dir))
    module = build_module(plan, model)
    metrics: dict[str, Any] = {}
    try:
        if cfg.get("train", True):
            trainer.fit(module, datamodule=datamodule, ckpt_path=plan.resume.checkpoint)
        if module.last_eval_step != trainer.global_step or not module.last_metrics:
            trainer.validate(module, datamodule=datamodule)
        metrics.update(logged_metrics(trainer, "val/"))
        metrics.update(logged_metrics(trainer, "compile/"))  # graphs compiled, with module.compile=true
        if cfg.get("test"):
            trainer.test(module, datamodule=datamodule)
            metrics.update(logged_metrics(trainer, "test/"))
    except BaseException:
        stop_ddp_processes(trainer)
        raise
    metrics["step"] = trainer.global_step
    return report_metrics(metrics, plan.output_dir) if trainer.is_global_zero else metrics


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluates one whole-model checkpoint on ``cfg.split`` and reports METRICS: ``ckpt_path``, a training
    run's checkpoint (loaded strictly, with the run's saved model and data configs), or ``model.checkpoint``,
    any whole-model state dict for the model config given: ours, or torchvision's COCO detectors, whose 91
    category indices are mapped to the dataset's category ids (``datnet.models.checkpoint``);
    ``model.checkpoint_strict=false`` loads what matches and logs the rest."""
    plan, checkpoint, strict = plan_evaluation(cfg)
    cfg = plan.cfg
    trainer = build_trainer(plan, callbacks=[])
    datamodule, model = build_data_and_model(cfg, checkpoint, strict)
    if trainer.is_global_zero:
        print_config_tree(cfg, save_dir=str(plan.output_dir))
    module = build_module(plan, model)
    if cfg.split == "test":
        trainer.test(module, datamodule=datamodule)
    else:
        trainer.validate(module, datamodule=datamodule)
    if module.per_class_markdown:  # rank 0, with ground truth: also in results/per_class_ap.{csv,md}
        print(f"per-category AP ({cfg.split}):\n{module.per_class_markdown}", flush=True)
    metrics = logged_metrics(trainer, f"{cfg.split}/")
    metrics["checkpoint"] = checkpoint
    return report_metrics(metrics, plan.output_dir) if trainer.is_global_zero else metrics
