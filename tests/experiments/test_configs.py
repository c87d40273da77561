"""Every experiment config composes, each table row carries the paper's numbers for it and the paper's recipe
(maskrcnn-benchmark's details, batch and schedule), and the CPU presets keep theirs."""

import pytest

from datnet.configs import CONF_DIR, compose_config
from datnet.models import build_datnet
from datnet.runs.plan import planned_world_size, scaled_schedule

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


@pytest.mark.parametrize("name", TABLE_ROWS)
def test_paper_rows_take_maskrcnn_benchmarks_details(name):
    """Every row: no colour jitter, maskrcnn-benchmark's initialisation, straddling anchors ignored, box
    smooth-L1 beta 1, both proposal-recall protocols (conf/experiment/paper/maskrcnn_benchmark.yaml); the
    DT border rule is ours and the data pipeline follows the model's switch."""
    cfg = compose_config([f"experiment={name}"], config_name="train")
    assert cfg.data.color_jitter == 0.0 and cfg.model.init == "maskrcnn_benchmark"
    assert (cfg.model.detector.rpn_straddle_thresh, cfg.model.detector.box_smooth_l1_beta) == (0, 1.0)
    assert list(cfg.module.proposal_protocols) == ["cocoeval", "maskrcnn_benchmark"]
    assert cfg.model.aux.image_border_is_boundary and cfg.data.aux_image_border_is_boundary


@pytest.mark.parametrize(
    "overrides",
    [
        ["experiment=demo"],
        *(
            [f"experiment=ablation/{data}", f"ablation={arm}"]
            for data in ("pennfudan", "tiny_coco", "bccd")
            for arm in ("maskrcnn", "dt_seg", "mspwa_res5")
        ),
    ],
)
def test_cpu_presets_keep_torchvisions_details(overrides):
    """The CPU presets keep what their published numbers were measured with: jitter 0.4, torchvision's
    initialisation, every anchor in the RPN loss, box beta 1/9, COCOeval's recall alone."""
    cfg = compose_config(overrides, config_name="train")
    assert cfg.data.color_jitter == 0.4 and cfg.model.init == "torchvision"
    assert (cfg.model.detector.rpn_straddle_thresh, cfg.model.detector.box_smooth_l1_beta) == (-1, 1 / 9)
    assert "proposal_protocols" not in cfg.module and cfg.data.aux_image_border_is_boundary


@pytest.mark.parametrize("row", ["faster_rcnn", "maskrcnn", "light"])
def test_table6_runs_the_papers_eight_images_per_step_on_the_readme_command(row):
    """``experiment=table6/<row> trainer=ddp trainer.devices=8``: 1 image per GPU, 8 per step, so the VOC
    schedule runs unscaled: LR 0.01, 24k iterations, /10 at 18k; images 600 / 1000 (Sec. 4)."""
    overrides = [f"experiment=table6/{row}", "trainer=ddp", "trainer.devices=8"]
    cfg = compose_config([*overrides, "trainer.accelerator=cpu"], config_name="train")  # planned here
    total = cfg.data.batch_size * planned_world_size(cfg.trainer) * cfg.trainer.accumulate_grad_batches
    assert total == 8 == cfg.schedule.reference_batch_size
    recipe, _ = scaled_schedule(cfg, total)
    assert (recipe.lr, recipe.max_steps, recipe.milestones) == (0.01, 24000, (18000,))
    assert (cfg.data.min_size, cfg.data.max_size, cfg.data.multiscale) == (600, 1000, False)


@pytest.mark.parametrize(
    ("name", "total", "lr", "steps", "milestones"),
    [
        ("table1/light_r50", 16, 0.02, 90000, (60000, 80000)),
        ("table1/light_r50_2x", 16, 0.02, 180000, (120000, 160000)),
        ("table4/heavy_mst_2x", 16, 0.02, 180000, (120000, 160000)),
        ("table1/maskrcnn_x101", 8, 0.01, 180000, (120000, 160000)),
        ("table1/heavy_x101_mst_2x", 8, 0.01, 360000, (240000, 320000)),
        ("table6/light", 8, 0.01, 24000, (18000,)),
    ],
)
def test_rows_run_the_papers_schedule_at_eight_gpus(name, total, lr, steps, milestones):
    """1x: 90k, /10 at 60k and 80k at 16 images; 2x doubles it; ResNeXt-101 at 8 images, "scaling the
    learning rate and the schedule proportionally"; VOC 24k, /10 at 18k at 8 images (Sec. 4)."""
    cfg = compose_config([f"experiment={name}", "trainer.devices=8"], config_name="train")
    assert cfg.data.batch_size * cfg.trainer.devices == total
    recipe, _ = scaled_schedule(cfg, total)
    assert recipe.lr == pytest.approx(lr) and (recipe.max_steps, recipe.milestones) == (steps, milestones)


def test_roi_sampling_settings_reach_the_model():
    """512 ROIs per image at 1:3 positives (Sec. 4): the built ROI heads' sampler."""
    detector = compose_config(["experiment=table1/light_r50"], config_name="train").model.detector
    assert (detector.box_batch_size_per_image, detector.box_positive_fraction) == (512, 0.25)
    sampler = build_datnet(
        num_classes=3, backbone=dict(name="resnet18"), detector=detector
    ).roi_heads.fg_bg_sampler
    assert (sampler.batch_size_per_image, sampler.positive_fraction) == (512, 0.25)
