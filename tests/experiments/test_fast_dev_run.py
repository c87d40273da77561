"""One row per table trains one step and evaluates on tiny inputs (ResNet-18, shapes data)."""

import pytest

from datnet.runs.tasks import train

# One row per table, chosen to cover the switches: X101 recipe + MST, an aux head alone, FPN pooling with
# res5, Light MST, the sum4conv fusion (RPN recall), and Faster R-CNN (no mask head).
ROWS = [
    "table1/heavy_x101_mst_2x",
    "table2/dt",
    "table3/fpn_res5",
    "table4/light_mst_2x",
    "table5/heavy_sum4conv",
    "table6/faster_rcnn",
]


@pytest.mark.parametrize("name", ROWS)
def test_one_step(name, tiny_experiment):
    cfg = tiny_experiment(name)
    assert cfg.model.backbone.weights == "imagenet"  # the paper's setting, from the seeded hub cache
    metrics = train(cfg)
    assert "val/bbox/AP" in metrics and metrics["step"] == 1
    assert ("val/segm/AP" in metrics) == (cfg.model.mask_head != "none")
    if name.startswith("table5"):  # both protocols (conf/experiment/paper/maskrcnn_benchmark.yaml)
        assert "val/rpn/AR@100" in metrics and "val/rpn/AR@1000" in metrics
        assert "val/rpn_mb/AR@100" in metrics and "val/rpn_mb/AR@1000" in metrics
