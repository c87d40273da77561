"""Tiny Hydra configurations of the training harness: ResNet-18, small images, few ROIs, no workers."""

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from datnet.configs import compose_config
from datnet.runs.job_process import processes_with

REPO = Path(__file__).resolve().parents[2]

TINY = [
    "model.backbone.name=resnet18",
    "model.detector.box_batch_size_per_image=16",
    "model.detector.rpn_pre_nms_top_n_train=100",
    "model.detector.rpn_post_nms_top_n_train=50",
    "model.detector.rpn_pre_nms_top_n_test=100",
    "model.detector.rpn_post_nms_top_n_test=50",
    "data.num_workers=0",
    "data.min_size=96",
    "data.max_size=128",
    "data.val_batch_size=2",
    "logger=csv",
]
QUIET = ["callbacks.rich_progress_bar=null", "callbacks.rich_model_summary=null"]
MARKER = "DATNET_TEST_SWEEP"


def kill_all(entry: str) -> None:
    """SIGKILL to every process whose environment holds ``entry``."""
    for pid in processes_with(entry):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def sweep_marker():
    """A unique ``MARKER=value`` for the environment of the processes a test starts (and all they start);
    whatever carries it is killed at the end."""
    entry = f"{MARKER}={uuid.uuid4().hex}"
    yield entry
    kill_all(entry)


@pytest.fixture
def shapes_overrides(tmp_path_factory) -> list[str]:
    """The embedded shapes data, generated small (8 train, 5 val images) in a temporary directory."""
    root = tmp_path_factory.mktemp("shapes")
    return ["data=shapes", f"data.root={root}", "data.num_train=8", "data.num_val=5", "data.batch_size=2"]


@pytest.fixture
def run_script() -> Callable[..., subprocess.CompletedProcess]:
    """``run_script(script, args, **env)``: ``python <script> <args>`` as a user runs it, from the repository
    root, W&B offline, with ``env`` added to the environment; it must succeed."""

    def run(script: str, args: list[str], **env: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "WANDB_MODE": "offline", **env}
        out = subprocess.run(
            [sys.executable, script, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
        )
        assert out.returncode == 0, out.stderr[-3000:]
        return out

    return run


@pytest.fixture
def tiny_config(tmp_path: Path) -> Callable[..., DictConfig]:
    """``tiny_config(overrides, config_name="train")``: a composed config writing into ``tmp_path``."""

    def compose(overrides: list[str], config_name: str = "train") -> DictConfig:
        quiet = QUIET if config_name == "train" else []
        return compose_config(
            [
                "experiment=demo",
                *TINY,
                *quiet,
                f"paths.output_dir={tmp_path}",
                f"paths.data_dir={tmp_path}/data",
                *overrides,
            ],
            config_name=config_name,
        )

    return compose
