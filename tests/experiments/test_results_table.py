"""scripts/paper/results_table.py renders the paper's numbers beside ours from run directories."""

import importlib.util
import json
from pathlib import Path

import yaml

from datnet.configs import PROJECT_ROOT


def load_script():
    spec = importlib.util.spec_from_file_location(
        "results_table", PROJECT_ROOT / "scripts" / "paper" / "results_table.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_run(path: Path, config: dict, metrics: dict | None, overrides: list[str]) -> None:
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if metrics is not None:
        (path / "metrics.json").write_text(json.dumps(metrics))


def test_paper_and_ours_side_by_side(tmp_path):
    paper = yaml.safe_load((PROJECT_ROOT / "conf/experiment/table6/light.yaml").read_text())["paper"]
    fake_run(tmp_path / "sweep" / "0", {"paper": paper}, {"val/bbox/AP": 0.4321, "val/bbox/AP50": 0.7}, [])
    fake_run(tmp_path / "sweep" / "1", {"paper": None}, {"val/bbox/AP": 0.1}, ["experiment=demo"])
    output = tmp_path / "results.md"
    load_script().main([str(tmp_path / "sweep"), "--output", str(output)])
    text = output.read_text()
    table6 = text.split("### Table 6")[1].split("###")[0]
    assert "| Ours Light | paper | 49.2 | 77.3 | 53.4 |" in table6
    assert "|  | ours `sweep/0` | 43.2 | 70.0 | - |" in table6
    assert "| Faster R-CNN [23] | paper | 46.5 | 76.5 | 50.4 |" in table6
    assert "### Other runs" in text and "experiment=demo" in text and "| 10.0 |" in text
    assert "| PANet [21] ResNet-50 | paper (other work) | 41.2 |" in text


def test_pairs_and_missing_metrics(tmp_path):
    paper = yaml.safe_load((PROJECT_ROOT / "conf/experiment/table2/dt.yaml").read_text())["paper"]
    fake_run(tmp_path / "run", {"paper": paper}, None, ["experiment=table2/dt"])
    text = load_script().results_markdown([tmp_path])
    assert "| + DT head | paper | 39.0/35.2 | 60.3/56.9 |" in text
    assert "|  | ours `tmp_path0/run` (unfinished) | - | - |".replace("tmp_path0", tmp_path.name) in text


def test_failed_and_unfinished_runs_are_marked_and_do_not_fill_the_row(tmp_path):
    """A crashed run (``failed.json``, even beside a rank's METRICS) is listed as failed with its error, an
    unfinished one as unfinished, and the row still shows that ours has not been run."""
    paper = yaml.safe_load((PROJECT_ROOT / "conf/experiment/table2/dt.yaml").read_text())["paper"]
    fake_run(tmp_path / "crashed", {"paper": paper}, {"val/bbox/AP": 0.5}, ["experiment=table2/dt"])
    failure = {"error": "rank 1: RuntimeError: CUDA out of memory\nTraceback ...", "failed_ranks": [1]}
    (tmp_path / "crashed" / "failed.json").write_text(json.dumps(failure))
    fake_run(tmp_path / "running", {"paper": paper}, None, ["experiment=table2/dt"])
    fake_run(tmp_path / "other", {"paper": None}, None, ["experiment=demo"])
    (tmp_path / "other" / "failed.json").write_text(json.dumps({"error": "ValueError: bad"}))
    text = load_script().results_markdown([tmp_path])
    row = text.split("| + DT head | paper |")[1].split("| + ")[0]
    assert "|  | ours (not run) |" in row
    crashed = f"ours `{tmp_path.name}/crashed` (failed: rank 1: RuntimeError: CUDA out of memory) | - |"
    assert crashed in row
    assert "ours `" + tmp_path.name + "/running` (unfinished) | - |" in row
    assert "`" + tmp_path.name + "/other` (failed: ValueError: bad)" in text


def test_table7_rows(tmp_path):
    rows = [
        dict(
            model="light",
            backbone="resnet50",
            device="cpu",
            ms_per_image=500.0,
            ratio_to_maskrcnn=2.5,
            params=62.3e6,
        )
    ]
    text = load_script().results_markdown([tmp_path], table7=rows)
    assert "| light | resnet50 | cpu | 500 | 2.50 | 62.3 | 220 | 2.42 | 62.3 |" in text
