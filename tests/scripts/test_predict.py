"""scripts/predict.py on tiny images with a small random or checkpointed model."""

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from datnet.configs import compose_config
from datnet.visualization import class_colors, draw_detections

MODEL = [
    "experiment=demo",
    "model.num_classes=4",
    "model.detector.min_size=64",
    "model.detector.max_size=96",
    "model.detector.rpn_post_nms_top_n_test=20",
]
NAMES = ["--class-names", "circle", "square", "triangle"]


def run(load_script, *args: str) -> int:
    return load_script("predict").main([*MODEL, *NAMES, "--score-threshold", "0", *args])


def png_sizes(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: Image.open(p).size for p in sorted(folder.glob("*.png"))}


def test_one_png_per_image_at_its_size(load_script, image_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(load_script, str(image_dir / "a.jpg"), str(image_dir / "b.png"), "--output-dir", str(out)) == 0
    assert png_sizes(out) == {"a.png": (64, 48), "b.png": (30, 40)}
    assert "wrote 2 PNG(s)" in capsys.readouterr().out


def test_aux_maps_are_drawn_beside(load_script, image_dir, tmp_path):
    out = tmp_path / "out"
    assert run(load_script, str(image_dir / "a.jpg"), "--aux-maps", "--output-dir", str(out)) == 0
    assert png_sizes(out) == {"a.png": (3 * 64, 48)}


def test_unreadable_image_is_counted_not_fatal(load_script, image_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(load_script, str(image_dir), str(tmp_path / "missing.jpg"), "--output-dir", str(out)) == 0
    assert set(png_sizes(out)) == {"a.png", "b.png"}
    captured = capsys.readouterr()
    assert "broken.jpg" in captured.err and "missing.jpg" in captured.err
    assert "2 unreadable image(s) skipped" in captured.out


def test_nothing_readable_is_an_error_status(load_script, image_dir, tmp_path):
    assert run(load_script, str(image_dir / "broken.jpg"), "--output-dir", str(tmp_path / "out")) == 1


def test_checkpoint_is_loaded(load_script, image_dir, tmp_path):
    """A Lightning-style checkpoint (``model.`` keys under ``state_dict``) of the model loads strictly."""
    model = instantiate(compose_config(MODEL, config_name="train").model)
    checkpoint = tmp_path / "last.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, checkpoint)
    out = tmp_path / "out"
    args = [str(image_dir / "b.png"), "--checkpoint", str(checkpoint), "--output-dir", str(out)]
    assert run(load_script, *args) == 0
    assert png_sizes(out) == {"b.png": (30, 40)}


def test_wrong_number_of_class_names(load_script):
    predict = load_script("predict")
    assert predict.resolve_class_names(["a", "b"], None, 3) == ["__background__", "a", "b"]
    assert predict.resolve_class_names(None, None, 3) == ["__background__", "class 1", "class 2"]
    with pytest.raises(SystemExit, match="2 class names for a model with 4 classes"):
        predict.resolve_class_names(["a", "b"], None, 4)


def test_overrides_and_paths_are_told_apart(load_script, image_dir):
    paths, overrides = load_script("predict").split_arguments(["model=heavy", str(image_dir), "x.y=1"])
    assert paths == [image_dir] and overrides == ["model=heavy", "x.y=1"]


def test_model_resizes_like_the_training_data_pipeline(load_script):
    """``experiment=demo`` trains on images resized to 160..256 px: raw images are resized the same way."""
    model = load_script("predict").build_model(["experiment=demo", "model.num_classes=4"], None, "cpu")
    assert model.transform.resize_images
    assert (model.transform.min_size, model.transform.max_size) == ((160,), 256)


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
