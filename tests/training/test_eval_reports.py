"""What an evaluation reports beyond METRICS: the per-category AP table (``results/per_class_ap.csv`` and
``.md``, printed by eval), precision-recall curves and confusion matrices, and the auxiliary heads' metrics
(``val/aux/...``, only for models with the heads)."""

import csv
import json
import math
from pathlib import Path

import pytest
from pytorch_lightning.loggers import CSVLogger, WandbLogger

from datnet.evaluation.per_class import CSV_NAME, MARKDOWN_NAME
from datnet.lightning.tables import log_wandb_table
from datnet.runs.tasks import evaluate, train

AUX_KEYS = {"val/aux/dt_acc", "val/aux/dt_miou", "val/aux/seg_miou"}
SHAPES = ["circle", "square", "triangle"]
# fewer validation images and detections than the other tests: an untrained model's 100 masks per image
# dominate the evaluation time
CHEAP = ["data.num_val=3", "++model.detector.box_detections_per_img=20"]


def cheap(shapes_overrides: list[str]) -> list[str]:
    return [o for o in shapes_overrides if not o.startswith("data.num_val=")] + CHEAP


def test_light_train_and_eval_write_per_class_table_and_aux_metrics(
    tiny_config, shapes_overrides, tmp_path, capsys
):
    """After a one-step training, ``eval`` prints the per-category table and writes it with a row per
    category; the curves and confusion matrices are beside it; METRICS has the auxiliary heads' metrics."""
    shapes = cheap(shapes_overrides)
    trained = train(
        tiny_config([*shapes, "trainer.max_steps=1", "schedule.checkpoint_every=1", "schedule.val_every=1"])
    )
    assert AUX_KEYS <= set(trained) and all(0 <= trained[key] <= 1 for key in AUX_KEYS)
    capsys.readouterr()
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    evaluated = evaluate(tiny_config([*shapes, f"ckpt_path={ckpt}"], config_name="eval"))
    printed = capsys.readouterr().out
    assert AUX_KEYS <= set(evaluated)
    results = tmp_path / "results"
    with (results / CSV_NAME).open() as file:
        rows = list(csv.DictReader(file))
    assert [row["category"] for row in rows] == SHAPES
    assert set(rows[0]) == {
        "category_id",
        "category",
        "instances",
        "bbox_AP",
        "segm_AP",
        "bbox_AP50",
        "segm_AP50",
    }
    table = (results / MARKDOWN_NAME).read_text()
    assert table.strip() in printed and all(f"| {name} |" in table for name in SHAPES)
    for kind in ("bbox", "segm"):
        for name in (f"pr_curves_{kind}.png", f"pr_curves_{kind}.json", f"confusion_matrix_{kind}.png"):
            assert (results / name).stat().st_size > 0, name
        with (results / f"confusion_matrix_{kind}.csv").open() as file:
            assert next(csv.reader(file)) == ["ground_truth", *SHAPES, "fp", "fn"]


def test_maskrcnn_has_no_aux_metrics(tiny_config, shapes_overrides):
    metrics = train(
        tiny_config(
            [
                "model=maskrcnn",
                *cheap(shapes_overrides),
                "callbacks.best_checkpoint=null", "callbacks.last_checkpoint=null",
                "trainer.fast_dev_run=true",
            ]
        )
    )
    assert "val/bbox/AP" in metrics and not any(key.startswith("val/aux/") for key in metrics)


def test_per_class_table_goes_to_wandb_only(tmp_path, monkeypatch):
    """The table reaches an (offline) W&B run as a table; without a W&B logger nothing is logged."""
    wandb_sdk = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    columns, rows = ["category", "bbox_AP"], [("circle", 0.5), ("square", math.nan)]
    assert not log_wandb_table([CSVLogger(tmp_path)], "val/per_class_ap", columns, rows, step=3)
    wandb = WandbLogger(save_dir=tmp_path, offline=True, project="datnet-test")
    assert log_wandb_table([CSVLogger(tmp_path), wandb], "val/per_class_ap", columns, rows, step=3)
    files = Path(wandb.experiment.dir)
    wandb.experiment.finish()
    # stops this process's W&B service and unsets its WANDB_SERVICE, which later subprocess runs would inherit
    wandb_sdk.teardown()
    (table,) = files.glob("media/table/val/per_class_ap_*.table.json")
    saved = json.loads(table.read_text())
    assert (
        saved["columns"] == columns
        and saved["data"][0] == ["circle", 0.5]
        and math.isnan(saved["data"][1][1])
    )
