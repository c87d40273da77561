"""scripts/gpu/gpu_check.py on a CPU: the dry run, the driver's handling of failing, slow and optional parts
and the default run's time budget, and the GPU parts ``model_checks``, ``coco_step`` and ``coco_compile`` run
at toy sizes on the CPU (``--smoke``)."""

import json
import math
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


def test_default_parts_fit_the_deadline(gpu_check):
    """The GPU parts of the default run (``--parts`` not given) get their whole time limit within the default
    ``--deadline`` of 540 s."""
    default = [p for p in gpu_check.PARTS if not p.optional and p.where != "dry"]
    assert sum(p.timeout for p in default) <= gpu_check.parse_args([]).deadline == 540
    assert {"coco_step", "coco_compile", "train_bf16"} <= {p.name for p in default}


def test_optional_parts_run_only_when_named(gpu_check, tmp_path, monkeypatch):
    optional = gpu_check.Part("optional", gpu_check.part_environment, "any", 60, optional=True)
    monkeypatch.setattr(gpu_check, "PARTS", (optional,))
    assert gpu_check.run_check(gpu_check.parse_args(["--work-dir", str(tmp_path)]))["parts"] == {}


def test_a_part_killed_at_its_limit_keeps_its_partial_result(gpu_check, tmp_path, monkeypatch):
    line = json.dumps({"status": "ok", "result": {"eager": {"step_ms_median": 1}}})
    output = f"{gpu_check.RESULT_PREFIX}{line}\n"
    monkeypatch.setattr(gpu_check, "run_in_own_session", lambda command, timeout: (output, None))
    part = next(p for p in gpu_check.PARTS if p.name == "coco_compile")
    entry, _ = gpu_check.run_part_child(part, True, tmp_path, timeout=1.0)
    assert entry["status"] == "timeout" and entry["partial"] == {"eager": {"step_ms_median": 1}}


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory) -> dict:
    """``--smoke`` report of the GPU parts that build models in their own process, at toy sizes on the CPU."""
    work_dir = tmp_path_factory.mktemp("gpu_check_smoke")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    out = subprocess.run(
        [sys.executable, "scripts/gpu/gpu_check.py", "--smoke", "--parts", "model_checks", "coco_step"]
        + ["coco_compile", "--work-dir", str(work_dir)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return json.loads(out.stdout)


def test_model_checks_on_cpu_at_toy_size(smoke_report):
    """The GPU part ``model_checks`` at toy sizes under CPU bf16 autocast: an all-negative batch trains
    (finite losses and gradients, no box or mask loss), and proposals and boxes stay float32."""
    result = smoke_report["parts"]["model_checks"]["result"]
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


def test_coco_step_on_cpu_at_toy_size(smoke_report):
    """Light and Mask R-CNN steps on tiny_coco batches at each batch size, validation time per image and the
    1x schedule estimated from the batch-2 rows."""
    result = smoke_report["parts"]["coco_step"]["result"]
    assert result["batch_sizes"] == [1, 2]
    for name in ("maskrcnn_b1", "light_b1", "maskrcnn_b2", "light_b2"):
        row = result["steps"][name]
        assert row["step_ms_median"] > 0 and row["loader_wait_ms_mean"] >= 0 and "peak_memory_mb" in row
        assert all(math.isfinite(v) for v in row["last_losses"].values())
    assert "loss_dt" in result["steps"]["light_b2"]["last_losses"]
    assert set(result["light_over_maskrcnn_step"]) == {"b1", "b2"}
    assert set(result["val_ms_per_image"]) == {"maskrcnn", "light"}
    schedule = result["schedule_1x"]
    assert schedule["max_steps"] == 90000 and schedule["gpu_batch"] == 2 and "formula" in schedule
    light = schedule["light"]
    assert light["gpus"] == 8
    assert light["training_hours"] == round(90000 * result["steps"]["light_b2"]["step_ms_median"] / 3.6e6, 2)
    assert light["hours"] == pytest.approx(light["training_hours"] + light["validation_hours"], abs=0.011)


def test_coco_compile_on_cpu_at_toy_size(smoke_report):
    """Light eager, then with the dense part compiled (``eager`` backend on a CPU): its graphs counted (one
    with torch 2.14; torch 2.11 compiles a second when the padded height's parity in the FPN pool changes)."""
    result = smoke_report["parts"]["coco_compile"]["result"]
    assert result["backend"] == "eager" and result["batch_size"] == 2
    for mode in ("eager", "compiled"):
        row = result[mode]
        assert 0 < row["step_ms_median"] <= row["step_ms_max"] and row["step_ms_first"] > 0
    assert result["compiled"]["graphs"] >= 1 and result["compiled_over_eager"] > 0
