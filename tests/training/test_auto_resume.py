"""A long run survives as a user or SLURM runs it, through ``src/train.py`` in subprocesses: SLURM's warning
signal writes ``last.ckpt`` and requeues; the very same command started again (the requeued job) resumes
from it, also after a SIGKILL, and ends at the planned step with METRICS; ``ckpt_path=<run>/...last.ckpt``
alone continues that run with its saved config in its own directory."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from pytorch_lightning import Callback

from .conftest import QUIET, REPO, TINY

WAIT_S = 300  # for a marker of the paused run (a loaded 2-core machine)


class Pause(Callback):
    """Test-only: after each optimizer step ``s`` of ``steps``, writes ``<directory>/at-<s>`` and waits for
    ``<directory>/go-<s>`` (at most 5 minutes); nothing once that file exists."""

    def __init__(self, directory: str, steps: list[int]) -> None:
        self.directory, self.steps = Path(directory), list(steps)

    def on_train_batch_end(self, trainer, *args) -> None:
        step = trainer.global_step
        go = self.directory / f"go-{step}"
        if step in self.steps and not go.exists():
            (self.directory / f"at-{step}").touch()
            deadline = time.monotonic() + WAIT_S
            while not go.exists() and time.monotonic() < deadline:
                time.sleep(0.05)


def wait_for(path: Path, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + WAIT_S
    while not path.exists():
        assert process.poll() is None, f"the run ended (status {process.returncode}) before {path.name}"
        assert time.monotonic() < deadline, f"no {path.name} after {WAIT_S} s"
        time.sleep(0.1)


def step_of(checkpoint: Path) -> int:
    return torch.load(checkpoint, map_location="cpu", weights_only=False)["global_step"]


def test_requeue_signal_sigkill_and_the_same_command(tmp_path, shapes_overrides):
    run, marks, bin_dir = tmp_path / "run", tmp_path / "marks", tmp_path / "bin"
    marks.mkdir()
    bin_dir.mkdir()
    # a stand-in scontrol that records the requeue it was asked for (no SLURM here, and none touched)
    requeued = tmp_path / "scontrol.log"
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {requeued}\n')
    (bin_dir / "scontrol").chmod(0o755)
    slurm = {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1", "SLURM_PROCID": "0"}
    slurm |= {"SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NODELIST": "localhost", "SLURM_JOB_NAME": "t"}
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "PYTHONPATH": str(REPO),
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
    }
    command = [
        sys.executable,
        "src/train.py",
        "experiment=demo",
        *TINY,
        *QUIET,
        *shapes_overrides,
        "model=maskrcnn",
        "trainer.max_steps=6",
        "trainer.limit_val_batches=1",
        "schedule.checkpoint_every=2",
        "schedule.reference_batch_size=2",
        "schedule.val_every=100",
        "callbacks.best_checkpoint=null",
        "resume.check_every=1",
        f"+callbacks.pause._target_={__name__}.Pause",
        f"+callbacks.pause.directory={marks}",
        "+callbacks.pause.steps=[3,5]",
        f"hydra.run.dir={run}",
    ]
    last = run / "checkpoints" / "last.ckpt"

    def start(args: list[str], extra_env: dict[str, str]) -> tuple[subprocess.Popen, Path]:
        log = tmp_path / f"log{len(list(tmp_path.glob('log*')))}.txt"
        with log.open("w") as out:
            process = subprocess.Popen(
                args, cwd=REPO, env={**env, **extra_env}, stdout=out, stderr=subprocess.STDOUT, text=True
            )
        return process, log

    processes = []
    try:
        # 1: SLURM's USR2 at step 3 (not a periodic checkpoint step): last.ckpt of step 3, requeued, exit 0
        first, log = start(command, slurm)
        processes.append(first)
        wait_for(marks / "at-3", first)
        first.send_signal(signal.SIGUSR2)
        (marks / "go-3").touch()
        assert first.wait(timeout=WAIT_S) == 0, log.read_text()[-3000:]
        output = log.read_text()
        assert step_of(last) == 3 and "SIGUSR2: wrote last.ckpt at step 3" in output
        assert requeued.read_text().split() == ["requeue", "4242"] and "requeued SLURM job 4242" in output
        assert "METRICS" not in output and "Traceback" not in output

        # 2: the requeued job, the same command: resumes at step 3, is killed (SIGKILL) after step 5
        second, log = start(command, slurm)
        processes.append(second)
        wait_for(marks / "at-5", second)
        second.kill()
        second.wait(timeout=60)
        assert "auto-resume" in log.read_text() and step_of(last) == 4  # the periodic checkpoint

        # 3: the same command again: resumes at step 4 and ends at the planned step with METRICS
        (marks / "go-5").touch()
        third, log = start(command, slurm)
        processes.append(third)
        assert third.wait(timeout=600) == 0, log.read_text()[-3000:]
        output = log.read_text()
        assert f"auto-resume: {last} exists, resuming from it (step 4)" in output
        metrics = json.loads(output.split("METRICS ", 1)[1].splitlines()[0])
        assert metrics["step"] == 6 and "val/bbox/AP" in metrics and step_of(last) == 6

        # 4: the checkpoint alone (no SLURM): the run's saved config, in the run's directory, one more step
        fourth, log = start([sys.executable, "src/train.py", f"ckpt_path={last}", "trainer.max_steps=7"], {})
        processes.append(fourth)
        assert fourth.wait(timeout=600) == 0, log.read_text()[-3000:]
        assert json.loads((run / "metrics.json").read_text())["step"] == 7 and step_of(last) == 7
        assert len(list((run / ".hydra").glob("resume-*/config.yaml"))) == 1  # the run's own config kept
        assert "model=maskrcnn" in (run / ".hydra" / "overrides.yaml").read_text()
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=60)
