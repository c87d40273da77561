"""A rank that fails ends its whole 2-rank gloo DDP job with a non-zero status within a minute, with no
process of the job left, under every launcher the README names: a plain run (Lightning starts rank 1), a
Hydra sweep with the basic launcher (our job supervisor) and with ``submitit_local`` (Lightning starts rank 1
from submitit's job process), and torchrun; a sweep names the failing rank in the job's ``failed.json``. A
rank that stops taking part (as a dead rank does under NCCL) ends the job at ``trainer.strategy.timeout``."""

import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from hydra.utils import instantiate

from datnet.configs import compose_config
from datnet.runs.job_process import processes_with
from datnet.runs.launch import enable_nccl_error_handling

from .conftest import MARKER, QUIET, REPO, TINY

FAULT = "+callbacks.fault={_target_:sweep_faults.RankFault,rank:1,kind:%s}"
LIMIT_S = 60
LAUNCHERS = {
    "plain": [sys.executable, "src/train.py"],
    "basic": [sys.executable, "src/train.py", "-m"],
    "submitit_local": [sys.executable, "src/train.py", "-m", "hydra/launcher=submitit_local"],
    "torchrun": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"],
}
SWEEPS = ("basic", "submitit_local")


def run_job(launcher: str, fault: str, marker: str, tmp: Path, *overrides: str) -> tuple[int, float, str]:
    """The job as a user starts it, each process marked with ``marker``: its exit status, seconds and
    output."""
    command = [*LAUNCHERS[launcher], *(["src/train.py"] if launcher == "torchrun" else [])]
    command += [
        "experiment=demo",
        *TINY,
        *QUIET,
        f"data.root={tmp}/shapes",
        "data.num_train=8",
        "data.num_val=5",
        "data.batch_size=2",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.max_steps=2",
        "callbacks.best_checkpoint=null",
        "callbacks.last_checkpoint=null",
        FAULT % fault,
        f"hydra.run.dir={tmp}/run",
        f"hydra.sweep.dir={tmp}/sweep",
        *overrides,
    ]
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
        MARKER: marker.split("=", 1)[1],
    }
    start = time.monotonic()
    out = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=3 * LIMIT_S)
    return out.returncode, time.monotonic() - start, out.stdout[-2000:] + out.stderr[-3000:]


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_a_rank_that_raises_ends_the_job_within_a_minute(launcher, tmp_path, sweep_marker):
    code, seconds, output = run_job(launcher, "raise", sweep_marker, tmp_path)
    assert code != 0 and seconds < LIMIT_S, (code, seconds, output)
    assert processes_with(sweep_marker) == []  # no rank (nor anything a rank started) left
    if launcher == "plain":  # a single run records its failure too (results_table.py marks it failed)
        failed = json.loads((tmp_path / "run" / "failed.json").read_text())
        assert failed["error"] == "rank 1: RuntimeError: injected fault on rank 1 at step 1", failed
    if launcher in SWEEPS:
        failed = json.loads((tmp_path / "sweep" / "0" / "failed.json").read_text())
        assert failed["error"] == "rank 1: RuntimeError: injected fault on rank 1 at step 1", failed
        assert failed["failed_ranks"][0] == 1
        assert f"{failed['error']}" in output  # the sweep names the first failure, not what followed from it


def test_a_rank_left_waiting_in_a_collective_ends_at_the_configured_timeout(tmp_path, sweep_marker):
    """Rank 1 stops taking part; rank 0 waits for it in the gradients' all-reduce until
    ``trainer.strategy.timeout`` (10 s here, 30 min by default), then fails, and the job ends. (In a sweep,
    whose supervisor starts both ranks at once: the timeout also bounds how long rank 0 waits for rank 1 to
    join the process group, which a run that starts rank 1 itself reaches only after its start-up.)"""
    timeout = ["trainer.strategy.timeout.minutes=0", "trainer.strategy.timeout.seconds=10"]
    code, seconds, output = run_job("basic", "hang", sweep_marker, tmp_path, *timeout)
    # as long as a job whose rank raises, and the timeout and the supervisor's grace (5 s) more
    assert code != 0 and 10 < seconds < LIMIT_S + 15, (code, seconds, output)
    assert processes_with(sweep_marker) == []
    failed = json.loads((tmp_path / "sweep" / "0" / "failed.json").read_text())
    assert failed["error"].startswith("rank 0: RuntimeError: "), failed
    assert "Timed out waiting 10000ms" in failed["error"], failed  # gloo's collective, at the configured time


def test_the_collective_timeout_is_30_minutes_unless_configured():
    def timeout(*overrides: str) -> timedelta:
        return instantiate(compose_config(["trainer=ddp", *overrides], "train").trainer.strategy.timeout)

    assert timeout() == timedelta(minutes=30)
    assert timeout("trainer.strategy.timeout.minutes=5") == timedelta(minutes=5)


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ({}, {"TORCH_NCCL_ASYNC_ERROR_HANDLING": "1"}),
        ({"TORCH_NCCL_ASYNC_ERROR_HANDLING": "3"}, {"TORCH_NCCL_ASYNC_ERROR_HANDLING": "3"}),
        ({"NCCL_ASYNC_ERROR_HANDLING": "0"}, {"NCCL_ASYNC_ERROR_HANDLING": "0"}),  # the older name
    ],
)
def test_nccl_async_error_handling_is_on_unless_the_user_set_it(monkeypatch, user, expected):
    environment = {"PATH": "/bin", **user}
    monkeypatch.setattr(os, "environ", environment)
    enable_nccl_error_handling()
    assert environment == {"PATH": "/bin", **expected}
