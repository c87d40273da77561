"""The parts of resuming that need no training: which checkpoint auto-resume takes (or refuses), the W&B run
id kept in the run directory, the total batch kept on another number of ranks, the RNG states of the devices
that exist, and a requeue without ``scontrol``."""

import logging
import signal
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from datnet.lightning.checkpoints import restore_rng_states
from datnet.lightning.requeue import RequeueOnSignal
from datnet.runs.loggers import instantiate_loggers, wandb_run_id
from datnet.runs.resume import ResumePlan, accumulation_for, plan_resume


def test_auto_resume_takes_its_own_last_checkpoint_and_refuses_another_configs(tmp_path):
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    config = {"seed": 1, "trainer": {"max_steps": 10}}
    torch.save({"global_step": 5, "total_batch_size": 16, "world_size": 8, "run_config": config}, last)
    cfg = OmegaConf.create({"ckpt_path": None, "resume": {"auto": True}})

    assert plan_resume(cfg, tmp_path, config) == ResumePlan(str(last), 5, 16, 8)
    with pytest.raises(ValueError, match=r"another config: trainer.max_steps: 10 -> 20\. Resume it"):
        plan_resume(cfg, tmp_path, {"seed": 1, "trainer": {"max_steps": 20}})
    cfg.resume.auto = False
    assert not plan_resume(cfg, tmp_path, config).resuming
    cfg.ckpt_path = str(tmp_path / "missing.ckpt")
    with pytest.raises(FileNotFoundError, match="missing.ckpt does not exist"):
        plan_resume(cfg, tmp_path, config)


def test_a_requeued_job_prefers_its_newer_last_checkpoint_to_its_ckpt_path(tmp_path, monkeypatch):
    """A SLURM requeue re-runs the command with its ``ckpt_path``: the run's own ``last.ckpt`` wins when it is
    further on; a first start (no ``SLURM_RESTART_COUNT``) or ``resume.auto=false`` keeps ``ckpt_path``."""
    (tmp_path / "checkpoints").mkdir()
    start, last = tmp_path / "start.ckpt", tmp_path / "checkpoints" / "last.ckpt"
    torch.save({"global_step": 100}, start)
    torch.save({"global_step": 340}, last)
    cfg = OmegaConf.create({"ckpt_path": str(start), "resume": {"auto": True}})
    assert plan_resume(cfg, tmp_path, {}).checkpoint == str(start)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert plan_resume(cfg, tmp_path, {}) == ResumePlan(str(last), 340)
    cfg.resume.auto = False
    assert plan_resume(cfg, tmp_path, {}).checkpoint == str(start)
    cfg.resume.auto = True
    torch.save({"global_step": 50}, last)  # older than ckpt_path: ckpt_path
    assert plan_resume(cfg, tmp_path, {}).checkpoint == str(start)


def test_the_wandb_run_id_is_kept_in_the_run_directory(tmp_path):
    first = wandb_run_id(tmp_path, resuming=False)
    assert wandb_run_id(tmp_path, resuming=True) == first  # a resumed run: the same W&B run
    assert wandb_run_id(tmp_path, resuming=False) != first  # a new start: a new one
    logger_cfg = OmegaConf.create(
        {"wandb": {"_target_": "pytorch_lightning.loggers.wandb.WandbLogger", "offline": True}}
    )
    (logger,) = instantiate_loggers(logger_cfg, wandb_id="abc123")
    assert logger._wandb_init["id"] == "abc123" and logger._wandb_init["resume"] == "allow"


def test_a_resumed_run_keeps_its_total_batch_by_accumulation():
    run = ResumePlan("x.ckpt", 10, total_batch_size=16, world_size=8)
    assert accumulation_for(run, 2, 1, 1) == 8  # 2 images x 1 rank x 8 = the run's 16 per step
    assert accumulation_for(run, 2, 8, 1) == 1  # the run's own ranks
    assert accumulation_for(ResumePlan("x.ckpt", 10), 2, 1, 3) == 3  # the checkpoint does not say
    with pytest.raises(ValueError, match="16 images per step; 3 per rank x 1 ranks"):
        accumulation_for(run, 3, 1, 1)


def test_rng_states_of_the_devices_that_exist_are_restored_the_rest_reported(monkeypatch, caplog):
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: restored.append((device, state)))
    states = [torch.full((8,), k, dtype=torch.uint8) for k in range(8)]  # saved on 8 GPUs
    cpu_state = torch.get_rng_state()
    with caplog.at_level(logging.WARNING):
        restore_rng_states({"torch_rng_state": cpu_state, "cuda_rng_states": states})
    assert [(device, int(state[0])) for device, state in restored] == [(0, 0), (1, 1)]
    assert "restored 2, not restored: devices [2, 3, 4, 5, 6, 7]" in caplog.text
    assert torch.equal(torch.get_rng_state(), cpu_state)


def test_a_requeue_without_scontrol_is_reported_not_raised(monkeypatch, tmp_path, caplog):
    callback = RequeueOnSignal("USR2")
    assert callback.signum == signal.SIGUSR2
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no scontrol
    with caplog.at_level(logging.ERROR):
        assert callback.requeue(SimpleNamespace(is_global_zero=True)) == 1
    assert "requeue of SLURM job 77 failed" in caplog.text and "scontrol" in caplog.text
    with pytest.raises(ValueError, match="unknown signal 'USR9'"):
        RequeueOnSignal("USR9")
