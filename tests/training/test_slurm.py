"""Multi-node through Hydra's submitit launcher, as far as a machine without SLURM allows: the launcher
config composes with the resources the command asks for, and the sbatch script that submitit would submit
carries them and the srun command."""

import os
from pathlib import Path

import submitit
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from datnet.configs import CONF_DIR


def compose_slurm(overrides: list[str]):
    with initialize_config_dir(str(CONF_DIR), version_base=None):
        return compose("train", overrides=overrides, return_hydra_config=True)


def test_slurm_launcher_for_8_gpus_x_2_nodes(tmp_path: Path, monkeypatch):
    """``trainer.num_nodes=2`` alone asks SLURM for 2 nodes, 8 tasks and GPUs each, 4 CPUs and 30 GB per GPU
    (a 32-core 8-GPU node)."""
    cfg = compose_slurm(
        [
            "hydra/launcher=slurm",
            "trainer=ddp",
            "trainer.num_nodes=2",
            "hydra.launcher.partition=gpu",
            "model=heavy",
        ]
    )
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert (launcher["nodes"], launcher["gpus_per_node"], launcher["tasks_per_node"]) == (2, 8, 8)
    assert cfg.trainer.num_nodes == launcher["nodes"] and cfg.trainer.devices == launcher["tasks_per_node"]

    # the executor set up as the submitit plugin does, writing (not submitting) its sbatch script; submitit
    # looks for SLURM's binaries, so a stand-in `srun` that is never run is put on the PATH
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 1\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}:{os.environ['PATH']}")
    executor = submitit.AutoExecutor(folder=tmp_path, cluster="slurm")
    base = {"timeout_min", "cpus_per_task", "gpus_per_node", "tasks_per_node", "mem_gb", "nodes", "name"}
    executor.update_parameters(
        **{
            (k if k in base else f"slurm_{k}"): v
            for k, v in launcher.items()
            if k in base | {"partition", "signal_delay_s", "setup", "mem_per_gpu"}
        }
    )
    script = executor._executor._make_submission_file_text("python src/train.py model=heavy", "uid")
    for line in [
        "#SBATCH --nodes=2",
        "#SBATCH --gpus-per-node=8",
        "#SBATCH --ntasks-per-node=8",
        "#SBATCH --partition=gpu",
        "#SBATCH --time=2880",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --mem-per-gpu=30G",
    ]:
        assert line in script, line
    assert "--mem=" not in script
    assert "srun" in script and "python src/train.py model=heavy" in script
    # the warning before the time limit is the signal that the run writes last.ckpt and requeues at
    assert f"#SBATCH --signal={cfg.resume.requeue_signal}@{launcher['signal_delay_s']}" in script
