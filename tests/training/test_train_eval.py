"""The harness end to end on tiny inputs: fast_dev_run per preset and data source, checkpoint evaluation,
the METRICS line, and resuming."""

import json
from pathlib import Path

import pytest
import torch

from datnet.runs.tasks import evaluate, train

REPO = Path(__file__).resolve().parents[2]
PRESETS = ["maskrcnn", "light", "heavy"]
NO_CHECKPOINT = [
    "callbacks.best_checkpoint=null", "callbacks.last_checkpoint=null",
    "trainer.fast_dev_run=true",
]
METRIC_KEYS = {"val/bbox/AP", "val/bbox/AP50", "val/segm/AP", "val/rpn/AR@100", "val/rpn/AR@1000"}


def real_source(name: str, shared_data_dir) -> list[str]:
    """Overrides that point a data source at a real dataset under ../shared/data."""
    if name == "coco":
        return ["data=coco", f"data.root={shared_data_dir('tiny_coco')}", "data.batch_size=2"]
    if name == "pennfudan":
        return ["data=pennfudan", f"data.root={shared_data_dir('PennFudanPed')}", "data.batch_size=2"]
    if name == "voc":
        return [
            "data=voc",
            f"data.root={shared_data_dir('BCCD_voc')}",
            "data.train_sets=[[BCCD,train]]",
            "data.val_sets=[[BCCD,val]]",
            "data.class_names=[RBC,WBC,Platelets]",
            "data.batch_size=2",
        ]
    root = shared_data_dir("labelme_voc2011_instseg") / "data_dataset_voc"
    return [
        "data=voc_instseg",
        f"data.root={root}",
        "data.train_split=all",
        "data.val_split=all",
        "data.batch_size=2",
    ]


@pytest.mark.parametrize("preset", PRESETS)
def test_fast_dev_run_on_shapes(tiny_config, shapes_overrides, preset):
    metrics = train(tiny_config([f"model={preset}", *shapes_overrides, *NO_CHECKPOINT]))
    assert METRIC_KEYS <= set(metrics) and metrics["step"] == 1


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("source", ["coco", "pennfudan", "voc", "voc_instseg"])
def test_fast_dev_run_on_real_data(tiny_config, shared_data_dir, preset, source):
    cfg = tiny_config([f"model={preset}", *real_source(source, shared_data_dir), *NO_CHECKPOINT])
    metrics = train(cfg)
    assert {"val/bbox/AP", "val/rpn/AR@100"} <= set(metrics)


def test_cli_trains_checkpoints_and_eval_reproduces_metrics(tmp_path, shapes_overrides, run_script):
    """`python src/train.py ...` prints METRICS and writes metrics.json; `python src/eval.py` on the last
    checkpoint gives the same numbers."""
    common = [
        "experiment=demo",
        "model.backbone.name=resnet18",
        "model.detector.box_batch_size_per_image=16",
        "data.num_workers=0",
        "data.min_size=96",
        "data.max_size=128",
        *shapes_overrides,
        f"paths.data_dir={tmp_path}/data",
    ]
    run_dir = tmp_path / "run"
    out = run_script(
        "src/train.py",
        [
            *common,
            "trainer.max_steps=2",
            "schedule.checkpoint_every=1",
            "schedule.val_every=2",
            f"hydra.run.dir={run_dir}",
        ],
    )
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("METRICS ")]
    assert len(lines) == 1
    trained = json.loads(lines[0][len("METRICS ") :])
    assert trained == json.loads((run_dir / "metrics.json").read_text())
    assert trained["step"] == 2 and (run_dir / "config_tree.log").exists() and (run_dir / ".hydra").exists()
    assert "num_classes: 4" in (run_dir / "config_tree.log").read_text()  # the shapes' 3 + background
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"] == 2

    # like `make eval`: model and data come from the training run's saved config
    out = run_script(
        "src/eval.py", [f"ckpt_path={ckpt}", "data.num_workers=0", f"hydra.run.dir={tmp_path / 'eval'}"]
    )
    evaluated = json.loads([ln for ln in out.stdout.splitlines() if ln.startswith("METRICS ")][0][8:])
    for key, value in trained.items():
        if key.startswith("val/"):
            assert evaluated[key] == pytest.approx(value, nan_ok=True), key


def test_eval_function_on_saved_checkpoint_matches(tiny_config, shapes_overrides, tmp_path):
    cfg = tiny_config(
        [*shapes_overrides, "trainer.max_steps=1", "schedule.checkpoint_every=1", "schedule.val_every=1"]
    )
    trained = train(cfg)
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    evaluated = evaluate(tiny_config([*shapes_overrides, f"ckpt_path={ckpt}"], config_name="eval"))
    assert evaluated["val/bbox/AP"] == pytest.approx(trained["val/bbox/AP"])


def test_test_dev_writes_result_files(tiny_config, shapes_overrides, tmp_path):
    """A test split given as an image-info file (no annotations, like COCO test-dev) gives COCO result files
    with the dataset's original category ids, for the images of that file."""
    root = Path(tiny_config(shapes_overrides).data.root)
    train(tiny_config([*shapes_overrides, *NO_CHECKPOINT]))
    info = json.loads((root / "annotations" / "instances_val2017.json").read_text())
    info = {"images": info["images"], "categories": info["categories"]}
    (tmp_path / "image_info.json").write_text(json.dumps(info))
    metrics = train(
        tiny_config(
            [
                *shapes_overrides,
                "train=false",
                "test=true",
                "callbacks.best_checkpoint=null", "callbacks.last_checkpoint=null",
                f"+data.test_ann_file={tmp_path / 'image_info.json'}",
                "+data.test_img_dir=val2017",
                "+model.detector.box_score_thresh=0.0",
            ]
        )
    )
    assert "val/bbox/AP" in metrics
    results = json.loads((tmp_path / "results" / "bbox_results.json").read_text())
    assert results and {r["category_id"] for r in results} <= {c["id"] for c in info["categories"]}
    assert {r["image_id"] for r in results} <= {im["id"] for im in info["images"]}
    assert (tmp_path / "results" / "segm_results.json").is_file()


@pytest.mark.parametrize("key", ["ckpt_path", "model.checkpoint"])
def test_eval_of_a_missing_checkpoint_names_it_before_the_data(tiny_config, tmp_path, key):
    cfg = tiny_config([f"{key}={tmp_path}/nope.ckpt", "data=coco", "data.root=/no/such/coco"], "eval")
    message = f"{key}: checkpoint file {tmp_path}/nope.ckpt does not exist"
    with pytest.raises(FileNotFoundError, match=message):
        evaluate(cfg)
