"""scripts/gpu/gpu_check.py on a CPU: the dry run, the driver's handling of failing and slow parts, and one
GPU part (the model checks) run at toy sizes on the CPU (``--smoke``)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gpu_check(load_script):
    return load_script("gpu/gpu_check")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the dry run is what a machine without CUDA does")
def test_dry_run_reports_environment_and_skips_gpu_parts(tmp_path):
    out = subprocess.run(
        [sys.executable, "scripts/gpu/gpu_check.py", "--parts", "environment", "model_checks"]
        + ["--work-dir", str(tmp_path), "--out", str(tmp_path / "report.json")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report == json.loads(out.stdout)
    assert report["dry_run"] is True and report["failed"] == []
    environment = report["parts"]["environment"]
    assert environment["status"] == "ok"
    assert environment["result"]["packages"]["torch"] == torch.__version__.split("+")[0]
    assert environment["result"]["cuda_available"] is False
    assert report["parts"]["model_checks"] == {"status": "skipped", "error": "no CUDA device (dry run)"}


def test_a_failing_part_is_reported_and_the_next_part_runs(gpu_check, tmp_path, monkeypatch):
    """A part whose process ends without a result (here: a name the child does not know) is ``failed`` with
    its output tail; the check goes on with the next part and exits non-zero."""
    broken = gpu_check.Part("no_such_part", gpu_check.part_environment, "any", 60)
    environment = next(p for p in gpu_check.PARTS if p.name == "environment")
    monkeypatch.setattr(gpu_check, "PARTS", (broken, environment))
    args = gpu_check.parse_args(["--work-dir", str(tmp_path)])
    report = gpu_check.run_check(args)
    failed = report["parts"]["no_such_part"]
    assert failed["status"] == "failed" and "without a result" in failed["error"]
    assert "StopIteration" in failed["output_tail"]
    assert report["parts"]["environment"]["status"] == "ok"
    assert report["failed"] == ["no_such_part"]


def test_a_slow_part_is_killed_with_its_process_group(gpu_check, tmp_path):
    part = next(p for p in gpu_check.PARTS if p.name == "environment")
    entry, _ = gpu_check.run_part_child(part, False, tmp_path, timeout=1.0)
    assert entry["status"] == "timeout" and entry["seconds"] < 30
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert not [line for line in out.splitlines() if str(tmp_path) in line and "ps -eo" not in line]


def test_deadline_skips_the_parts_that_no_longer_fit(gpu_check, tmp_path):
    args = gpu_check.parse_args(["--work-dir", str(tmp_path), "--parts", "environment", "--deadline", "5"])
    report = gpu_check.run_check(args)
    assert report["parts"]["environment"]["status"] == "skipped"
    assert report["parts"]["environment"]["error"].startswith("deadline")


def test_model_checks_on_cpu_at_toy_size(gpu_check, tmp_path):
    """The GPU part ``model_checks`` at toy sizes under CPU bf16 autocast: an all-negative batch trains
    (finite losses and gradients, no box or mask loss), and proposals and boxes stay float32."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    out = subprocess.run(
        [sys.executable, "scripts/gpu/gpu_check.py", "--smoke", "--parts", "model_checks"]
        + ["--work-dir", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result = json.loads(out.stdout)["parts"]["model_checks"]["result"]
    negative = result["all_negative"]
    assert negative["finite"] and negative["finite_gradients"] and negative["parameters_with_gradients"] > 0
    assert negative["losses"]["loss_box_reg"] == 0 and negative["losses"]["loss_mask"] == 0
    assert negative["losses"]["loss_dt"] > 0 and negative["losses"]["loss_seg"] > 0
    boxes = result["bf16_boxes"]
    assert boxes["proposals_dtype"] == boxes["boxes_dtype"] == "torch.float32"
    anchors = boxes["p2_anchors"]
    assert anchors["model"]["dtype"] == "torch.float32" and anchors["model"]["max_error_px"] == 0
    assert anchors["torchvision"]["dtype"] == "torch.bfloat16"  # the fault the model's generator avoids
    assert anchors["model"]["distinct_centres_past_edge"] > 0
