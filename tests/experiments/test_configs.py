"""Every experiment config composes, and each table row carries the paper's numbers for it."""

import pytest

from datnet.configs import CONF_DIR, compose_config

EXPERIMENTS = CONF_DIR / "experiment"
TABLE_ROWS = sorted(
    p.relative_to(EXPERIMENTS).with_suffix("").as_posix() for p in EXPERIMENTS.glob("table*/*.yaml")
)
AP = ("AP", "AP50", "AP75", "AP_S", "AP_M", "AP_L")
AR = ("AR@100", "AR_S@100", "AR_M@100", "AR_L@100", "AR@1000", "AR_S@1000", "AR_M@1000", "AR_L@1000")
# The metrics each table reports (keys of METRICS without `val/`).
TABLE_METRICS = {
    **{t: {f"{i}/{k}" for i in ("bbox", "segm") for k in AP} for t in (1, 2, 3, 4)},
    5: {f"rpn/{k}" for k in AR},
    6: {f"bbox/{k}" for k in AP[:3]},
}


def test_every_table_has_rows():
    tables = {name.split("/")[0] for name in TABLE_ROWS}
    assert tables == {f"table{t}" for t in range(1, 7)}
    assert len(TABLE_ROWS) == 12 + 4 + 6 + 6 + 5 + 3


@pytest.mark.parametrize("name", TABLE_ROWS)
def test_experiment_composes_with_paper_numbers(name):
    cfg = compose_config([f"experiment={name}"], config_name="train")
    paper = cfg.paper
    assert f"table{paper.table}" == name.split("/")[0]
    assert paper.row and paper.index >= 0 and paper.split in ("val", "test-dev", "voc07-test")
    assert set(paper.metrics) == TABLE_METRICS[paper.table]
    assert all(0 < v < 1 for v in paper.metrics.values())
    assert cfg.model._target_ == "datnet.models.build_datnet"


def test_demo_and_defaults_have_no_paper():
    assert compose_config([], config_name="train").paper is None
    assert compose_config(["experiment=demo"], config_name="train").paper is None
    assert compose_config(["experiment=demo", "ckpt_path=x"], config_name="eval").paper is None


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "table1/light_x101_mst_2x",
            dict(backbone="resnext101_32x8d", batch=8, lr=0.01, steps=360000, mst=True),
        ),
        ("table1/heavy_r50", dict(backbone="resnet50", batch=16, lr=0.02, steps=90000, mst=False)),
        ("table4/heavy_mst_2x", dict(backbone="resnet50", batch=16, lr=0.02, steps=180000, mst=True)),
        ("table6/light", dict(backbone="resnet50", batch=8, lr=0.01, steps=24000, mst=False)),
    ],
)
def test_recipes(name, expected):
    cfg = compose_config([f"experiment={name}"], config_name="train")
    assert cfg.model.backbone.name == expected["backbone"]
    assert cfg.schedule.reference_batch_size == expected["batch"] and cfg.schedule.lr == expected["lr"]
    assert cfg.schedule.max_steps == expected["steps"] and cfg.data.multiscale == expected["mst"]


@pytest.mark.parametrize(
    ("name", "model"),
    [
        ("table2/maskrcnn", dict(dt=False, seg=False, pooler="fpn", box_head="2fc", mask_head="fpn")),
        ("table2/dt_seg", dict(dt=True, seg=True, pooler="fpn", box_head="2fc", mask_head="fpn")),
        (
            "table3/mspwa_4conv1fc",
            dict(dt=False, seg=False, pooler="mspwa", box_head="4conv1fc", mask_head="fpn"),
        ),
        ("table5/heavy_sum2conv", dict(dt=True, seg=True, pooler="mspwa", box_head="res5", mask_head="res5")),
        ("table6/faster_rcnn", dict(dt=False, seg=False, pooler="fpn", box_head="2fc", mask_head="none")),
    ],
)
def test_model_switches(name, model):
    m = compose_config([f"experiment={name}"], config_name="train").model
    got = dict(dt=m.aux.dt, seg=m.aux.seg, pooler=m.pooler, box_head=m.box_head, mask_head=m.mask_head)
    assert got == model
