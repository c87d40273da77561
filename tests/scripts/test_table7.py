"""scripts/paper/table7.py on tiny settings: well-formed JSON rows, ratios, parameter counts."""

import contextlib
import io
import json

import pytest
from hydra.utils import instantiate

from datnet.configs import compose_config

NUM_CLASSES = 5
DETECTIONS = 10
TINY = [
    *("--backbones", "resnet18", "--size", "64", "--num-images", "1", "--repeats", "1", "--devices", "cpu"),
    *("--num-classes", str(NUM_CLASSES), "--overrides", "+model.detector.rpn_post_nms_top_n_test=20"),
    f"+model.detector.box_detections_per_img={DETECTIONS}",
]
FIELDS = {"model", "backbone", "device", "ms_per_image", "ratio_to_maskrcnn", "params", "gmac_per_image"}


@pytest.fixture(scope="module")
def rows(load_script, tmp_path_factory) -> list[dict]:
    """The ``--json`` line of one tiny run on random images (the shared data is hidden)."""
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
        mp.setenv("DATNET_SHARED_DATA", str(tmp_path_factory.mktemp("no_data")))
        load_script("paper/table7").main([*TINY, "--json"])
    lines = out.getvalue().strip().splitlines()
    assert len(lines) == 1, out.getvalue()
    return json.loads(lines[0])


def test_rows_are_well_formed(rows):
    assert [(r["model"], r["backbone"], r["device"]) for r in rows] == [
        ("maskrcnn", "resnet18", "cpu"),
        ("light", "resnet18", "cpu"),
        ("heavy", "resnet18", "cpu"),
    ]
    for row in rows:
        assert FIELDS <= set(row)
        assert row["ms_per_image"] > 0
        assert isinstance(row["params"], int)


def test_ratios_are_relative_to_maskrcnn(rows):
    base = rows[0]["ms_per_image"]
    assert rows[0]["ratio_to_maskrcnn"] == 1
    for row in rows[1:]:
        assert row["ratio_to_maskrcnn"] == pytest.approx(row["ms_per_image"] / base, abs=1e-3)
        assert row["gmac_ratio_to_maskrcnn"] == pytest.approx(
            row["gmac_per_image"] / rows[0]["gmac_per_image"], abs=1e-2
        )


def test_arithmetic_grows_with_the_roi_heads(rows):
    """Light adds the auxiliary heads and res5 on every proposal; Heavy res5 at 14x14 (4x Light's)."""
    gmacs = {row["model"]: row["gmac_per_image"] for row in rows}
    assert 0 < gmacs["maskrcnn"] < gmacs["light"] < gmacs["heavy"]


def test_params_are_the_models_parameter_count(rows):
    for row in rows:
        cfg = compose_config(
            [
                f"+model={row['model']}",
                "model.backbone.name=resnet18",
                "model.backbone.weights=scratch",
                f"model.num_classes={NUM_CLASSES}",
            ]
        )
        assert row["params"] == sum(p.numel() for p in instantiate(cfg.model).parameters())


def test_random_weights_keep_every_detection(rows):
    """Score threshold 0: the mask branch gets every detection allowed per image, as a trained model."""
    assert all(row["detections_per_image"] == DETECTIONS for row in rows)


def test_table_output(load_script, rows, capsys):
    table7 = load_script("paper/table7")
    table7.print_table(rows, "random", table7.parse_args(TINY))
    lines = capsys.readouterr().out.splitlines()
    assert "ms/img" in lines[1]
    assert [line.split()[0] for line in lines[2:]] == ["maskrcnn", "light", "heavy"]
