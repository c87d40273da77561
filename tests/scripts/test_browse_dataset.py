"""scripts/browse_dataset.py: augmented samples of tiny COCO and of the shapes data drawn into PNGs, with
the dense auxiliary targets beside them."""

import json

import numpy as np
import pytest
from PIL import Image

from datnet.visualization import DT_GREY_MAX, IGNORE_COLOR, class_colors
from datnet.visualization.layout import BAR_COLOR, bar_height

SMALL = ["data.num_workers=0", "data.min_size=96", "data.max_size=128"]


def panels(path) -> list[np.ndarray]:
    """The three equal panels of a browse PNG (instances, DT target, semantic target; HxWx3 each), between
    their title bar and a one-bar legend, both dark grey where no text is."""
    picture = np.asarray(Image.open(path))
    assert picture.shape[1] % 3 == 0, path
    bar = bar_height(picture.shape[1] // 3)
    for strip in (picture[:bar], picture[-bar:]):
        assert (strip == BAR_COLOR).all(axis=2).mean() > 0.5, path
    return np.split(picture[bar:-bar], 3, axis=1)


def test_tiny_coco_training_samples_at_the_augmented_size(load_script, shared_data_dir, tmp_path, capsys):
    """N PNGs, each three panels of the augmented image's size (short side 96, long side at most 128), also
    with the dense targets at stride 4."""
    root = shared_data_dir("tiny_coco")
    out = tmp_path / "browse"
    data = ["data=coco", f"data.root={root}", "data.aux_stride=4", *SMALL]
    argv = [*data, "--num", "3", "--output-dir", str(out), "--seed", "1"]
    assert load_script("browse_dataset").main(argv) == 0
    assert "wrote 3 PNG(s)" in capsys.readouterr().out
    images = json.loads((root / "annotations" / "instances_train2017.json").read_text())["images"]
    sizes = {image["id"]: (image["width"], image["height"]) for image in images}
    files = sorted(out.glob("train_*.png"))
    assert len(files) == 3
    for path in files:
        width, height = sizes[int(path.stem.split("_")[-1])]
        scale = min(96 / min(width, height), 128 / max(width, height))
        picture = Image.open(path)
        bar, extra = bar_height(picture.width // 3), picture.height - height * scale  # titles, legend rows
        assert abs(picture.width - 3 * width * scale) <= 3, path
        assert any(abs(extra - rows * bar) <= 1 for rows in (2, 3, 4)), path


def test_shapes_targets_are_drawn_beside_in_their_colours(load_script, tmp_path):
    """On the shapes data (no ignore regions) the DT panel holds the K=4 grey levels, the semantic panel the
    class colours, and both mark the same pixels as objects; the val split is drawn in full when --num
    asks for more than it has."""
    out = tmp_path / "browse"
    data = [
        "experiment=demo",
        f"data.root={tmp_path / 'shapes'}",
        "data.num_train=2",
        "data.num_val=3",
        *SMALL,
    ]
    assert (
        load_script("browse_dataset").main([*data, "--split", "val", "--num", "5", "--output-dir", str(out)])
        == 0
    )
    files = sorted(out.glob("val_*.png"))
    assert len(files) == 3
    grey_levels = {round(k * DT_GREY_MAX / 3) for k in range(4)}
    colours = {tuple(c) for c in class_colors(4)}
    for path in files:
        _, dt, sem = panels(path)
        assert set(np.unique(dt)) <= grey_levels and (dt[..., 0] == dt[..., 1]).all()
        assert {tuple(c) for c in np.unique(sem.reshape(-1, 3), axis=0)} <= colours
        assert ((dt[..., 0] > 0) == sem.any(axis=2)).all() and sem.any()
        assert not (sem == IGNORE_COLOR).all(axis=2).any()


def test_positional_arguments_must_be_overrides(load_script):
    with pytest.raises(SystemExit):
        load_script("browse_dataset").parse_args(["data=coco", "images/"])
