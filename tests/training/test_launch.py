"""Launch checks: a run that the launcher gives fewer ranks than it asks for stops before reading any data,
naming the fix; a CPU run on several processes says what it implies."""

import logging
import os
import subprocess
import sys
import time

from datnet.runs.build import build_trainer
from datnet.runs.plan import plan_training

from .conftest import QUIET, REPO, TINY

# what `sbatch` without `srun` gives the batch script: one task, and no --ntasks-per-node
SBATCH_WITHOUT_SRUN = {
    "SLURM_NTASKS": "1",
    "SLURM_JOB_NAME": "datnet",
    "SLURM_JOB_ID": "4242",
    "SLURM_NODELIST": "node001",
    "SLURM_PROCID": "0",
    "SLURM_LOCALID": "0",
    "SLURM_NODEID": "0",
}


def test_sbatch_without_srun_fails_before_reading_data_naming_the_fix(tmp_path):
    """The user's command in a batch script of one task: a non-zero exit within 60 s that names what was
    asked, what SLURM gives and the fix, before the data module is built (it would generate the shapes data
    set into ``data.root``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "WORLD_SIZE", "LOCAL_"))}
    command = [
        sys.executable,
        "src/train.py",
        "experiment=demo",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        *TINY,
        *QUIET,
        f"data.root={tmp_path}/no-such-dataset",
        f"hydra.run.dir={tmp_path}/run",
    ]
    start = time.monotonic()
    out = subprocess.run(
        command, cwd=REPO, env={**env, **SBATCH_WITHOUT_SRUN}, capture_output=True, text=True, timeout=120
    )
    assert out.returncode != 0 and time.monotonic() - start < 60
    message = out.stderr + out.stdout
    assert "trainer.devices=2 x trainer.num_nodes=1 asks for 2 ranks, but the launcher gives 1" in message
    assert "SLURM_NTASKS=1" in message and "srun" in message and "--ntasks-per-node=2" in message
    assert "LaunchError" in message and not (tmp_path / "no-such-dataset").exists()


def test_a_cpu_run_on_several_processes_warns_with_its_batch_and_lr(tiny_config, shapes_overrides, caplog):
    cfg = tiny_config([*shapes_overrides, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"])
    plan = plan_training(cfg)
    with caplog.at_level(logging.WARNING, logger="datnet.runs.launch"):
        build_trainer(plan, callbacks=[])
    assert plan.world_size == 2 and plan.total_batch_size == 4
    assert f"2 CPU processes (trainer.devices x trainer.num_nodes) on {os.cpu_count()} cores" in caplog.text
    assert f"total batch 4, LR {plan.recipe.lr:g}, as on 2 GPUs" in caplog.text

