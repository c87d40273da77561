"""A sweep of 2-rank gloo DDP jobs survives every way a job can fail (an exception on rank 0 or on rank 1,
rank 1 killed by SIGKILL, a non-finite loss on rank 1): each failed job's ``failed.json`` names the failing
rank(s) and the cause, the jobs after it run (DDP set up afresh, each job in exactly one directory with its
own W&B run), ``summary.json`` lists every job with the completed one's metrics, the sweep exits non-zero, and
no process of the sweep is left."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import read_write

from datnet.configs import CONF_DIR
from datnet.runs.job_process import JOB_ENV, Rank, processes_with, rank_environments, stop_job
from datnet.runs.sweep import JobFailed, run_task

from .conftest import MARKER, QUIET, TINY, kill_all

REPO = Path(__file__).resolve().parents[2]
FAULT = "{_target_:sweep_faults.RankFault,rank:%d,kind:%s}"


def test_a_sweep_survives_every_kind_of_failing_ddp_job(tmp_path, shapes_overrides, sweep_marker):
    faults = [
        "null",
        FAULT % (1, "sigkill"),
        FAULT % (0, "raise"),
        FAULT % (1, "raise"),
        FAULT % (1, "nan_loss"),
    ]
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
        MARKER: sweep_marker.split("=", 1)[1],
    }
    command = [
        sys.executable,
        "src/train.py",
        "-m",
        "experiment=demo",
        *TINY,
        *QUIET,
        *shapes_overrides,
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.max_steps=2",
        "module.finite_check_every=1",
        "+callbacks.fault=" + ",".join(faults),
        "logger=wandb",
        f"paths.log_dir={tmp_path}/logs",
        f"hydra.sweep.dir={tmp_path}/sweep",
    ]
    out = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert processes_with(sweep_marker) == []  # no rank, loader worker or anything else of the sweep left
    sweep = tmp_path / "sweep"
    assert out.returncode == 1 and (sweep / "summary.json").is_file(), out.stdout[-2000:] + out.stderr[-3000:]
    summary = json.loads((sweep / "summary.json").read_text())
    assert [row["status"] for row in summary] == ["completed", "failed", "failed", "failed", "failed"]
    assert summary[0]["metrics"]["step"] == 2 and "val/bbox/AP" in summary[0]["metrics"]
    metrics = [json.loads(line[8:]) for line in out.stdout.splitlines() if line.startswith("METRICS ")]
    assert metrics == [summary[0]["metrics"]]
    assert 'SWEEP FAILED JOBS ["1", "2", "3", "4"]' in out.stdout
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1", "2", "3", "4"]
    assert not (tmp_path / "logs").exists()  # one directory per job, none elsewhere (e.g. a rank's own run)
    assert (sweep / "0" / "train_ddp_process_1.log").is_file()
    assert len(list((sweep / "0" / "wandb").glob("offline-run-*"))) == 1  # one W&B run per job

    failed = {job: json.loads((sweep / job / "failed.json").read_text()) for job in ("1", "2", "3", "4")}
    ranks = {job: {row["rank"]: row for row in record["ranks"]} for job, record in failed.items()}
    # rank 1 killed: no Python error of its own, its exit status says it
    assert failed["1"]["failed_ranks"][0] == 1 and ranks["1"][1]["exit"] == "killed by SIGKILL"
    assert failed["1"]["error"].startswith("rank 1: killed by SIGKILL")
    # an exception on one rank: that rank first, with its error and traceback; the other rank was stopped
    for job, rank in (("2", 0), ("3", 1)):
        assert failed[job]["failed_ranks"][0] == rank, failed[job]
        assert failed[job]["error"] == f"rank {rank}: RuntimeError: injected fault on rank {rank} at step 1"
        assert "sweep_faults.py" in ranks[job][rank]["traceback"]
    # a non-finite loss on rank 1 stops every rank with the same error
    assert sorted(failed["4"]["failed_ranks"]) == [0, 1]
    assert all(row["error"].startswith("FloatingPointError: non-finite loss") for row in ranks["4"].values())
    for job in failed:
        assert not list((sweep / job).glob("failed_pid*.json"))  # merged into failed.json
        assert f"JOB FAILED {json.dumps({'job': int(job), 'error': failed[job]['error']})}" in out.stdout
    table = (sweep / "summary.md").read_text()
    assert table.count("| failed |") == 4 and "injected fault on rank 0" in table


def test_stop_job_kills_every_marked_process_even_in_another_session(tmp_path):
    """A rank's own session is killed with it, and so is what it started in a session of its own (as the
    W&B service is): whatever carries the job's marker in its environment."""
    marker = f"{JOB_ENV}={tmp_path}"
    env = {**os.environ, JOB_ENV: str(tmp_path)}
    script = "setsid sleep 60 & sleep 60"
    rank = Rank(0, subprocess.Popen(["bash", "-c", script], env=env, start_new_session=True))
    try:
        deadline = time.monotonic() + 10
        while len(processes_with(marker)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(processes_with(marker)) == 3  # bash, its sleep, and the sleep in a new session
        stop_job([rank], tmp_path)
        assert processes_with(marker) == [] and rank.killed_by_sweep
        assert rank.exit_status().startswith("killed by the sweep")
    finally:
        kill_all(marker)


def test_each_rank_of_a_ddp_job_gets_the_environment_lightning_would_give_it(tiny_config):
    """Two script-launched ranks for ``ddp`` on 2 devices (one port for both), one process otherwise."""
    first, second = rank_environments(
        tiny_config(["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"])
    )
    assert (first["LOCAL_RANK"], second["LOCAL_RANK"]) == ("0", "1")
    assert (
        first["WORLD_SIZE"] == second["WORLD_SIZE"] == "2" and first["MASTER_PORT"] == second["MASTER_PORT"]
    )
    assert rank_environments(tiny_config(["trainer.accelerator=cpu"])) == [{}]
    spawn = ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp_spawn"]
    assert rank_environments(tiny_config(spawn)) == [{}]  # the strategy starts its processes itself


@pytest.mark.parametrize("srun", [False, True])
def test_a_job_under_submitit_records_its_failure_and_fails(tmp_path, monkeypatch, srun):
    """Under submitit each job is a process (per rank) of its own: the job fails there, recorded in its
    ``failed.json`` (one of an earlier attempt replaced), with ``JobFailed`` naming the failure (Hydra hands
    it to the sweep as the job's failed result); a rank that srun started exits with status 1 instead, so
    that srun stops the job's other ranks (with Hydra's failed result the process would exit 0)."""
    if srun:
        monkeypatch.setenv("SLURM_NTASKS", "2")
        monkeypatch.setenv("SLURM_JOB_NAME", "datnet")
    with initialize_config_dir(str(CONF_DIR), version_base=None):
        cfg = compose("train", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    with read_write(cfg.hydra):  # as in the job's process that submitit starts
        cfg.hydra.mode = RunMode.MULTIRUN
        cfg.hydra.runtime.output_dir = str(tmp_path)
        cfg.hydra.job.num = 3
    (tmp_path / "failed.json").write_text("{}")

    def task(cfg):
        raise FloatingPointError("non-finite loss at step 7")

    HydraConfig.instance().set_config(cfg)
    raised = SystemExit if srun else JobFailed  # SystemExit with a message: status 1
    try:
        with pytest.raises(raised, match="^job 3 failed: rank 0: FloatingPointError: non-finite loss"):
            run_task(task, cfg)
    finally:
        HydraConfig.instance().cfg = None
    record = json.loads((tmp_path / "failed.json").read_text())
    assert record["error"] == "rank 0: FloatingPointError: non-finite loss at step 7"
    assert record["failed_ranks"] == [0] and "task" in record["ranks"][0]["traceback"]
