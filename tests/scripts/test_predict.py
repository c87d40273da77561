"""scripts/predict.py: a small random model on the shapes data, and a run directory of tiny COCO whose model,
data, class names and category ids predict.py takes from the run's saved config."""

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from faster_coco_eval import COCO
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from datnet.configs import compose_config
from datnet.visualization import class_colors, draw_detections
from datnet.visualization.layout import bar_height

SMALL_MODEL = [
    "experiment=demo",
    "model.detector.min_size=64",
    "model.detector.max_size=96",
    "model.detector.rpn_post_nms_top_n_test=20",
]
# the run of a small model (ResNet-18 from scratch, 64-channel pyramid) at 96..128 px
RUN = [
    "experiment=demo",
    "data.min_size=96",
    "data.max_size=128",
    "model.detector.rpn_post_nms_top_n_test=50",
]


@pytest.fixture(scope="module")
def shapes_data(tmp_path_factory) -> list[str]:
    """The shapes data (categories 10, 20, 30), generated small once for these tests."""
    return [f"data.root={tmp_path_factory.mktemp('shapes')}", "data.num_train=4", "data.num_val=2"]


def run(load_script, shapes_data, *args: str) -> int:
    return load_script("predict").main([*SMALL_MODEL, *shapes_data, "--score-threshold", "0", *args])


def png_sizes(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: Image.open(p).size for p in sorted(folder.glob("*.png"))}


def test_one_png_per_image_at_its_size(load_script, shapes_data, image_dir, tmp_path, capsys):
    out = tmp_path / "out"
    args = [str(image_dir / "a.jpg"), str(image_dir / "b.png"), "--output-dir", str(out)]
    assert run(load_script, shapes_data, *args) == 0
    assert png_sizes(out) == {"a.png": (64, 48), "b.png": (30, 40)}
    assert "wrote 2 PNG(s)" in capsys.readouterr().out


def test_aux_maps_are_drawn_beside(load_script, shapes_data, image_dir, tmp_path):
    out = tmp_path / "out"
    assert (
        run(load_script, shapes_data, str(image_dir / "a.jpg"), "--aux-maps", "--output-dir", str(out)) == 0
    )
    (width, height), bar = png_sizes(out)["a.png"], bar_height(64)
    assert width == 3 * 64 and height in (48 + 2 * bar, 48 + 3 * bar)  # titles, a legend of one or two rows


def test_unreadable_image_is_counted_not_fatal(load_script, shapes_data, image_dir, tmp_path, capsys):
    out = tmp_path / "out"
    args = [str(image_dir), str(tmp_path / "missing.jpg"), "--output-dir", str(out)]
    assert run(load_script, shapes_data, *args) == 0
    assert set(png_sizes(out)) == {"a.png", "b.png"}
    captured = capsys.readouterr()
    assert "broken.jpg" in captured.err and "missing.jpg" in captured.err
    assert "2 unreadable image(s) skipped" in captured.out


def test_nothing_readable_is_an_error_status(load_script, shapes_data, image_dir, tmp_path):
    assert run(load_script, shapes_data, str(image_dir / "broken.jpg"), "--output-dir", str(tmp_path)) == 1


def test_state_dict_checkpoint_without_run_takes_the_command_line(
    load_script, shapes_data, image_dir, tmp_path
):
    """A Lightning-style checkpoint (``model.`` keys under ``state_dict``) outside a run directory: model
    and data come from the command line, and the weights load strictly into a model for the data's classes."""
    cfg = compose_config([*SMALL_MODEL, *shapes_data], config_name="train")
    model = instantiate(cfg.model, num_classes=instantiate(cfg.data).num_classes)
    checkpoint = tmp_path / "last.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, checkpoint)
    out = tmp_path / "out"
    args = [str(image_dir / "b.png"), "--checkpoint", str(checkpoint), "--output-dir", str(out)]
    assert run(load_script, shapes_data, *args) == 0
    assert png_sizes(out) == {"b.png": (30, 40)}


def test_model_resizes_like_the_training_data_pipeline(load_script, shapes_data):
    """``experiment=demo`` trains on images resized to 160..256 px: raw images are resized the same way,
    unless the detector's sizes are overridden."""
    cfg, from_run = load_script("predict").run_config(["experiment=demo", *shapes_data], None)
    assert (cfg.model.detector.min_size, cfg.model.detector.max_size) == (160, 256) and not from_run
    cfg, _ = load_script("predict").run_config(SMALL_MODEL, None)
    assert (cfg.model.detector.min_size, cfg.model.detector.max_size) == (64, 96)


def test_overrides_and_paths_are_told_apart(load_script, image_dir):
    paths, overrides = load_script("predict").split_arguments(["model=heavy", str(image_dir), "x.y=1"])
    assert paths == [image_dir] and overrides == ["model=heavy", "x.y=1"]


def test_image_ids_are_coco_file_numbers_when_all_inputs_have_one(load_script):
    image_ids = load_script("predict").image_ids
    assert image_ids([Path("000000397133.jpg"), Path("d/000000000042.png")]) == [397133, 42]
    assert image_ids([Path("000000397133.jpg"), Path("photo.jpg")]) == [1, 2]
    assert image_ids([Path("a/0001.jpg"), Path("b/1.jpg")]) == [1, 2]  # the same number twice


def test_detections_are_drawn_alike_on_uint8_and_float_images():
    """Data loaders give uint8 images, predict.py and notebooks may hold float images in [0, 1]."""
    torch.manual_seed(0)
    rgb = torch.randint(0, 256, (3, 40, 50), dtype=torch.uint8)
    detection = {
        "boxes": torch.tensor([[5.0, 5.0, 30.0, 20.0]]),
        "labels": torch.tensor([1]),
        "scores": torch.tensor([0.9]),
        "masks": torch.rand(1, 1, 40, 50),
    }
    names, colors = ["__background__", "thing"], class_colors(2)
    drawn = draw_detections(rgb, detection, names, colors, 0.5)
    assert drawn.dtype == torch.uint8 and not torch.equal(drawn, rgb)
    assert torch.equal(draw_detections(rgb.float() / 255, detection, names, colors, 0.5), drawn)


@pytest.fixture
def tiny_coco_run(shared_data_dir, tmp_path, write_random_run) -> tuple[Path, Path]:
    """A training run directory as ``src/train.py`` leaves it (``.hydra/config.yaml``, the composed config
    without the hydra node, and ``checkpoints/last.ckpt``, a Lightning checkpoint) for a small model of tiny
    COCO (4 train and 2 val images, 80 categories with COCO ids up to 90); and the val annotation file."""
    root = shared_data_dir("tiny_coco")
    for split, count in (("train", 4), ("val", 2)):
        coco = json.loads((root / "annotations" / f"instances_{split}2017.json").read_text())
        images = coco["images"][:count]
        ids = {image["id"] for image in images}
        annotations = [a for a in coco["annotations"] if a["image_id"] in ids]
        subset = {"images": images, "annotations": annotations, "categories": coco["categories"]}
        (tmp_path / f"{split}.json").write_text(json.dumps(subset))
    data = ["data=coco", f"data.root={root}", f"data.train_ann_file={tmp_path / 'train.json'}"]
    cfg = compose_config([*RUN, *data, f"data.val_ann_file={tmp_path / 'val.json'}"], config_name="train")
    run_dir = tmp_path / "run"
    write_random_run(run_dir, cfg, global_step=2)
    return run_dir, tmp_path / "val.json"


def test_run_on_tiny_coco_gives_pngs_and_coco_json(load_script, tiny_coco_run, tmp_path, capsys):
    """Like ``make predict``: a run's checkpoint with no model or data override: the run's model, its 80
    class names and its category ids are used (a model of the default config, Light ResNet-50 for COCO,
    would not load the checkpoint); the results load into COCO against the val ground truth, whose file
    names are the image ids."""
    run_dir, val_file = tiny_coco_run
    gt = COCO(str(val_file))
    files = [Path(gt.dataset["images"][0]["file_name"]), Path(gt.dataset["images"][1]["file_name"])]
    root = Path(OmegaConf.load(run_dir / ".hydra" / "config.yaml").data.root)
    out = tmp_path / "predictions"
    detections = ["+model.detector.box_score_thresh=0", "+model.detector.box_detections_per_img=20"]
    args = [*(str(root / "val2017" / f) for f in files), *detections, "--coco-json", "--output-dir", str(out)]
    status = load_script("predict").main(["--checkpoint", str(run_dir / "checkpoints" / "last.ckpt"), *args])
    assert status == 0 and "from the training run of the checkpoint" in capsys.readouterr().out
    sizes = {
        f"{f.stem}.png": (image["width"], image["height"]) for f, image in zip(files, gt.dataset["images"])
    }
    assert png_sizes(out) == sizes

    records = json.loads((out / "coco_results.json").read_text())
    assert len(records) == 2 * 20 and {r["image_id"] for r in records} == set(gt.getImgIds())
    assert {r["category_id"] for r in records} <= set(gt.getCatIds())
    for record in records:
        image = gt.imgs[record["image_id"]]
        assert record["segmentation"]["size"] == [image["height"], image["width"]]
    assert len(gt.loadRes(records).getAnnIds()) == len(records)
    info = json.loads((out / "image_info.json").read_text())
    assert info["categories"] == [{"id": c["id"], "name": c["name"]} for c in gt.dataset["categories"]]
    assert [image["id"] for image in info["images"]] == gt.getImgIds()


def test_coco_records_carry_the_category_ids_of_the_labels(load_script):
    """COCO labels 1..80 are category ids 1..90 with gaps: the records take the ids, boxes become xywh."""
    detection = {
        "boxes": torch.tensor([[10.0, 20.0, 40.0, 30.0], [0.0, 0.0, 5.0, 5.0]]),
        "labels": torch.tensor([80, 1]),
        "scores": torch.tensor([0.9, 0.3]),
        "masks": torch.zeros(2, 1, 32, 48),
    }
    records = load_script("predict").coco_records(detection, 7, {1: 1, 80: 90})
    assert [(r["image_id"], r["category_id"]) for r in records] == [(7, 90), (7, 1)]
    assert records[0]["bbox"] == [10.0, 20.0, 30.0, 10.0] and records[0]["segmentation"]["size"] == [32, 48]
    del detection["masks"]
    assert "segmentation" not in load_script("predict").coco_records(detection, 7, {1: 1, 80: 90})[0]


def test_a_missing_checkpoint_is_the_first_error(load_script, tmp_path, capsys):
    """Before any config is composed or data read (the data config points nowhere)."""
    with pytest.raises(SystemExit) as exit_info:
        load_script("predict").main([str(tmp_path), "data.root=/no/such/data", "--checkpoint", "nope.ckpt"])
    assert exit_info.value.code == 2
    assert "--checkpoint: checkpoint file nope.ckpt does not exist" in capsys.readouterr().err


def count_frames(path: Path) -> tuple[int, tuple[int, int]]:
    """The frames OpenCV decodes from a video file, and the (width, height) of the last."""
    capture, count, size = cv2.VideoCapture(str(path)), 0, (0, 0)
    while True:
        ok, frame = capture.read()
        if not ok:
            capture.release()
            return count, size
        count, size = count + 1, (frame.shape[1], frame.shape[0])


def test_video_gives_every_frame_drawn(load_script, shapes_data, tmp_path, capsys):
    """A 20-frame clip written with OpenCV: 20 frames out, all of one size (with the aux maps three times as
    wide, under title bars and above a legend of every class), and the frame rate printed."""
    clip = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    rng = np.random.default_rng(0)
    for _ in range(20):
        writer.write(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    writer.release()
    out = tmp_path / "out" / "drawn.mp4"
    # drawn at 0.5 (run's 0 would draw ~100 masks a frame: torchvision's mask drawing then takes the time)
    args = ["--video", str(clip), "--output", str(out), "--aux-maps", "--score-threshold", "0.5"]
    assert run(load_script, shapes_data, *args) == 0
    frames, (width, height) = count_frames(out)
    assert frames == 20 and width == 3 * 64 and height == 48 + 2 * bar_height(64)  # titles, legend
    assert re.search(r"wrote 20 frame\(s\) to .*drawn\.mp4 \([\d.]+ frames/s\)", capsys.readouterr().out)


def test_video_arguments_are_checked_before_anything_loads(load_script, image_dir, tmp_path, capsys):
    predict = load_script("predict")
    for args, message in (
        (["--video", "nope.mp4", "--output", "o.mp4"], "--video: video file nope.mp4 does not exist"),
        (["--video", str(image_dir / "a.jpg"), str(image_dir)], "--video takes --output OUT.mp4"),
        ([str(image_dir), "--output", "o.mp4"], "--output is the mp4 file of --video"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            predict.main([*args, "data.root=/no/such/data"])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
