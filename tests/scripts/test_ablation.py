"""The real-data ablation (docs/results.md): its configs, its report, and scripts/paper/ablation.sh end to
end."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from datnet.configs import CONF_DIR, PROJECT_ROOT, compose_config

DATASETS = ["pennfudan", "tiny_coco", "bccd"]
ARMS = sorted(p.stem for p in (CONF_DIR / "ablation").glob("*.yaml"))
# arm -> the paper's experiment with the same switches
SAME_AS = {
    "maskrcnn": "table2/maskrcnn",
    "dt": "table2/dt",
    "seg": "table2/seg",
    "dt_seg": "table2/dt_seg",
    "mspwa_2fc": "table3/mspwa_2fc",
    "fpn_res5": "table3/fpn_res5",
    "mspwa_res5": "table3/mspwa_res5",
}


def switches(model) -> dict:
    return dict(dt=model.aux.dt, seg=model.aux.seg, pooler=model.pooler, box_head=model.box_head)


def test_arms_are_the_table_rows():
    assert ARMS == sorted(SAME_AS)


@pytest.mark.parametrize("dataset", DATASETS)
def test_arms_set_the_paper_switches_on_the_same_budget(dataset):
    budgets = set()
    for arm, row in SAME_AS.items():
        cfg = compose_config([f"experiment=ablation/{dataset}", f"ablation={arm}"], config_name="train")
        assert switches(cfg.model) == switches(compose_config([f"experiment={row}"], "train").model), arm
        assert cfg.model.backbone.name == "resnet18" and cfg.model.mask_head == "fpn"
        budgets.add((cfg.schedule.max_steps, cfg.data.batch_size, cfg.data.min_size, cfg.optimizer.lr))
    assert len(budgets) == 1


def test_shared_data_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DATNET_SHARED_DATA", str(tmp_path))
    cfg = compose_config(["experiment=ablation/pennfudan"], config_name="train")
    assert cfg.data.root == f"{tmp_path}/PennFudanPed"


def write_job(sweep: Path, num: int, overrides: list[str], metrics: dict | None) -> None:
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (job / ".hydra" / "config.yaml").write_text("{}")
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps(metrics))


def test_report_means_spreads_and_paired_differences(load_script, tmp_path):
    report = load_script("paper/ablation_report")
    sweep = tmp_path / "toy"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text("{}")
    box = {("maskrcnn", 0): 0.10, ("maskrcnn", 1): 0.20, ("dt", 0): 0.13, ("dt", 1): 0.19}
    for num, ((arm, seed), ap) in enumerate(box.items()):
        metrics = {"val/bbox/AP": ap, "val/segm/AP": ap / 2}
        write_job(sweep, num, ["experiment=ablation/pennfudan", f"ablation={arm}", f"seed={seed}"], metrics)
    write_job(sweep, 4, ["experiment=ablation/pennfudan", "ablation=dt", "seed=2"], None)  # did not finish

    reports = {r["arm"]: r for r in report.build_reports(tmp_path)}
    dt = reports["dt"]
    assert dt["seeds"] == [0, 1] and dt["unfinished"] == ["toy/4 (unknown)"]
    assert 0 <= dt["seconds_per_job"] < 60
    assert dt["metrics"]["val/bbox/AP"]["mean"] == pytest.approx(0.16)
    assert dt["metrics"]["val/bbox/AP"]["sd"] == pytest.approx(0.0424264, abs=1e-6)
    delta = dt["delta"]["bbox/AP"]
    assert delta["mean"] == pytest.approx(0.01) and delta["ahead"] == 1 and delta["n"] == 2
    assert delta["paper"] == pytest.approx(0.390 - 0.377)  # Table 2: + DT head vs Mask R-CNN
    assert reports["maskrcnn"]["delta"]["bbox/AP"] == {"paper": None}

    text = report.markdown(list(reports.values()))
    assert "| dt | 2 | 16.0 ± 4.2 |" in text and "+1.0 ± 2.8 (1/2)" in text and "+1.3" in text
    assert "Unfinished jobs: toy/4 (unknown)" in text


def test_report_names_a_folder_without_sweeps(load_script, tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        load_script("paper/ablation_report").build_reports(tmp_path)


def test_ablation_script_runs_arms_and_seeds_and_reports(shared_data_dir, tmp_path):
    """`scripts/paper/ablation.sh` as a user runs it (two arms x two seeds on Penn-Fudan, one step each)."""
    shared_data_dir("PennFudanPed")  # skips with the reason when the shared data is absent
    env = {**os.environ, "PYTHON": sys.executable, "SEEDS": "0,1", "ARMS": "maskrcnn,dt"}
    env["OUT"] = str(tmp_path)
    tiny = ["trainer.fast_dev_run=true", "data.min_size=96", "data.max_size=128", "data.num_workers=0"]
    command = ["bash", "scripts/paper/ablation.sh", "pennfudan", *tiny]
    out = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert len(list((tmp_path / "pennfudan").glob("*/metrics.json"))) == 4
    text = (tmp_path / "results.md").read_text()
    assert "### pennfudan (data.max_size=128" in text
    assert "| maskrcnn | 2 |" in text
    assert re.search(r"\| dt \| 2 \| .* \([012]/2\) \|", text)  # paired with both seeds of Mask R-CNN
