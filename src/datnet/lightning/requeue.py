"""Writing ``last.ckpt`` and requeueing a SLURM job at the signal it sends before its time limit."""

import logging
import os
import signal
import subprocess
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from pytorch_lightning import Callback, LightningModule, Trainer

from datnet.lightning.checkpoints import LAST, LastCheckpoint

log = logging.getLogger(__name__)


class Requeued(SystemExit):
    """Leaves a run that wrote ``last.ckpt`` at a requeue signal: exit status 0 when the job was requeued,
    1 when it was not (then the same command, run again, resumes)."""


def slurm_job_id() -> str | None:
    """The SLURM job to requeue (``<array job>_<task>`` for an array job), None outside SLURM."""
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array_job}_{task}" if array_job and task else os.environ.get("SLURM_JOB_ID")


class RequeueOnSignal(Callback):
    """At ``signal`` during fit, writes ``last.ckpt`` at a step boundary, requeues the SLURM job and leaves.

    SLURM sends the signal before the time limit when asked to (``#SBATCH --signal=USR2@120``; Hydra's
    submitit launcher asks for USR2 ``signal_delay_s`` seconds before, conf/hydra/launcher/slurm.yaml). The
    handler only notes it. Every ``check_every`` optimizer steps the ranks agree whether any rank got it (one
    all-reduce); then, at that step boundary, every rank writes ``last.ckpt`` (through the run's
    ``LastCheckpoint``), global rank 0 requeues the job, and every rank raises :class:`Requeued`: no
    validation or METRICS follow. The job that SLURM starts again runs the same command in the same directory
    and resumes from that ``last.ckpt`` (``resume.auto``, ``datnet.runs.resume``).

    Requeueing goes through the handler that was installed before fit when there is one (submitit's: it
    requeues, counts the timeouts against ``max_num_timeout`` and exits), else ``scontrol requeue`` of
    ``$SLURM_JOB_ID``; a failed requeue (no ``scontrol``, an error) is logged and the run exits with status 1;
    outside SLURM nothing is requeued. Lightning's own SLURM requeue (``SLURMEnvironment``) is not used: it
    listens on USR1 and writes ``hpc_ckpt_<n>.ckpt`` from inside the signal handler, in the middle of a step.
    """

    def __init__(self, signal_name: str = "USR2", check_every: int = 10) -> None:
        if check_every < 1:
            raise ValueError(f"resume.check_every must be >= 1, got {check_every}")
        try:
            self.signum = signal.Signals[f"SIG{signal_name.upper().removeprefix('SIG')}"]
        except KeyError:
            raise ValueError(f"resume.requeue_signal: unknown signal {signal_name!r} (e.g. USR2)") from None
        self.check_every = check_every
        self.received = False
        self._previous: Any = None
        self._installed = False
        self._step = -1

    def _note(self, signum: int, frame: FrameType | None) -> None:
        self.received = True
        log.warning("received %s: last.ckpt and requeue at the next check", signal.Signals(signum).name)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.received, self._step = False, -1
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(self.signum, self._note)
            self._installed = True
        else:
            log.warning("not the main thread: %s will not write last.ckpt", self.signum.name)

    def _restore(self) -> None:
        if self._installed:
            signal.signal(self.signum, self._previous)
            self._installed = False

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._restore()

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step, previous = trainer.global_step, self._step
        self._step = step
        if step == previous or step % self.check_every:  # within an accumulation, or not a checking step
            return
        if not trainer.strategy.reduce_boolean_decision(self.received, all=False):
            return
        checkpoints = [c for c in trainer.callbacks if isinstance(c, LastCheckpoint)]
        for checkpoint in checkpoints:
            checkpoint.save(trainer)
        if not checkpoints:
            trainer.save_checkpoint(Path(trainer.default_root_dir) / LAST)
        log.warning("%s: wrote last.ckpt at step %d", self.signum.name, step)
        self._restore()
        raise Requeued(self.requeue(trainer))

    def requeue(self, trainer: Trainer) -> int:
        """Requeues the job (see the class docstring); the exit status."""
        if callable(self._previous):
            self._previous(self.signum, None)  # submitit's: exits on global rank 0 once requeued
            return 0
        if not trainer.is_global_zero:
            return 0
        job = slurm_job_id()
        if job is None:
            log.warning("not a SLURM job: nothing to requeue; the same command resumes from last.ckpt")
            return 1
        try:
            result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
        except (FileNotFoundError, subprocess.TimeoutExpired) as error:
            log.error(
                "requeue of SLURM job %s failed (%s); the same command resumes from last.ckpt", job, error
            )
            return 1
        if result.returncode:
            log.error("requeue of SLURM job %s failed: %s", job, (result.stderr or result.stdout).strip())
            return 1
        log.warning("requeued SLURM job %s", job)
        return 0
