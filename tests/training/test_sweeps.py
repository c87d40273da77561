"""Hydra multirun: a job that fails on its config is reported while the sweep goes on (DDP jobs, W&B runs
and every other way of failing: test_sweep_failures.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TINY_CLI = [
    "model.backbone.name=resnet18",
    "model.detector.box_batch_size_per_image=16",
    "data.num_workers=0",
    "data.min_size=96",
    "data.max_size=128",
    "data.num_train=8",
    "data.num_val=5",
    "data.batch_size=2",
    "callbacks.rich_progress_bar=null",
]


def run_sweep(tmp_path: Path, overrides: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline"}
    command = [
        sys.executable,
        "src/train.py",
        "-m",
        *overrides,
        *TINY_CLI,
        f"data.root={tmp_path}/shapes",
        f"paths.log_dir={tmp_path}/logs",
        f"hydra.sweep.dir={tmp_path}/sweep",
    ]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


def still_running(marker: Path) -> list[str]:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if str(marker) in line and "ps -eo" not in line]


def test_a_failing_job_is_reported_and_the_sweep_goes_on(tmp_path):
    out = run_sweep(
        tmp_path,
        [
            "model.fusion=bogus,sum",
            "experiment=demo",
            "model=maskrcnn",
            "model.aux.dt=true",
            "trainer.max_steps=1",
            "logger=csv",
        ],
    )
    assert out.returncode == 1  # the sweep as a whole reports the failure, after running every job
    assert "JOB FAILED" in out.stdout and "model.fusion must be one of" in out.stdout
    assert len([line for line in out.stdout.splitlines() if line.startswith("METRICS ")]) == 1
    summary = json.loads((tmp_path / "sweep" / "summary.json").read_text())
    assert [row["status"] for row in summary] == ["failed", "completed"]
    assert "SWEEP FAILED JOBS" in out.stdout and "bogus" in (tmp_path / "sweep" / "summary.md").read_text()
