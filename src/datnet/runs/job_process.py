"""A sweep job in processes of its own: Hydra's basic launcher runs every job of a multirun in the sweep
process, so a job that fails, or whose DDP rank dies, must not take that process with it.

The sweep process starts each rank of the job as a single run of the entry script (``src/train.py`` or
``src/eval.py``) with the job's overrides and ``hydra.run.dir=<job dir>``, each rank in a session of its own,
with the environment Lightning's launcher gives its ranks (``LOCAL_RANK``, ``WORLD_SIZE``, a fresh
``MASTER_PORT``); Lightning then takes the ranks as created outside it and starts none itself. When every
rank has ended, or a few seconds after the first one failed, every process that carries the job's marker in
its environment (ranks, their loader workers, anything they started) is killed, and the next job starts
only when none is left. A rank whose task raises writes its error into the job directory before it ends
(:func:`record_rank_failure`); the sweep process adds each rank's exit status (an exit code, or the signal
that killed it, e.g. SIGKILL from the kernel's out-of-memory killer) and writes ``failed.json``."""

import json
import logging
import os
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate, to_absolute_path
from omegaconf import DictConfig
from pytorch_lightning.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

from datnet.runs.loggers import wandb_run_identity

log = logging.getLogger(__name__)
JOB_ENV = "DATNET_SWEEP_JOB"  # the job directory, in the environment of every process of a sweep job
FAILED_FILE = "failed.json"
RANK_RECORD = "failed_pid{pid}.json"  # a rank's own error, merged into failed.json by the sweep process
GRACE_S = 5.0  # how long the other ranks of a job may take to end by themselves after one failed
POLL_S = 0.05
STOP_TIMEOUT_S = 60.0
PROCESS_KEYS = ("accelerator", "devices", "num_nodes", "strategy", "plugins")
RANK_HYDRA_KEYS = ("hydra.run.dir", "hydra.mode", "hydra.output_subdir", "hydra.job.name")


def record_rank_failure(error: BaseException) -> None:
    """In a rank of a sweep job (:data:`JOB_ENV` set), writes ``error`` and its traceback into the job
    directory for the sweep process; elsewhere nothing."""
    job_dir = os.environ.get(JOB_ENV)
    if job_dir is not None:
        (Path(job_dir) / RANK_RECORD.format(pid=os.getpid())).write_text(json.dumps(exception_record(error)))


def rank_environments(cfg: DictConfig) -> list[dict[str, str]]:
    """The DDP environment of each process of the job on this node, as Lightning's script launcher would
    set it: one entry per local rank when the job's strategy starts its ranks as scripts (``ddp``), else
    one empty entry (a single device, ``ddp_spawn``, or ranks started outside, e.g. by SLURM). Decided by
    Lightning itself from the trainer's ``accelerator``/``devices``/``num_nodes``/``strategy``; the port is a
    free one for every job, unless ``MASTER_PORT`` is set."""
    trainer_cfg = {key: cfg.trainer[key] for key in PROCESS_KEYS if key in cfg.trainer}
    quiet = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # no "GPU available" lines from the sweep process: the ranks say it
    try:
        trainer = instantiate(
            {"_target_": cfg.trainer._target_, **trainer_cfg},
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
    finally:
        quiet.setLevel(level)
    launcher = trainer.strategy.launcher
    if not isinstance(launcher, _SubprocessScriptLauncher):
        return [{}]
    environment = launcher.cluster_environment
    if environment.creates_processes_externally:
        return [{}]
    common = {
        "MASTER_ADDR": environment.main_address,
        "MASTER_PORT": str(environment.main_port),
        "NODE_RANK": str(environment.node_rank()),
        "WORLD_SIZE": str(launcher.num_processes * launcher.num_nodes),
    }
    return [{**common, "LOCAL_RANK": str(rank)} for rank in range(launcher.num_processes)]


def rank_command(local_rank: int) -> list[str]:
    """This job as a single run of the entry script: the job's overrides and the command line's Hydra
    overrides, in the job's directory, without writing its ``.hydra`` again (the sweep did); ranks > 0 log
    to ``train_ddp_process_<rank>.log`` as under Lightning's launcher."""
    import __main__

    hydra_cfg = HydraConfig.get()
    if __main__.__spec__ is None:
        command = [sys.executable, to_absolute_path(sys.argv[0])]
    else:
        command = [sys.executable, "-m", __main__.__spec__.name]
    hydra_overrides = [
        o for o in hydra_cfg.overrides.hydra if o.lstrip("+~").split("=", 1)[0] not in RANK_HYDRA_KEYS
    ]
    command += [*hydra_cfg.overrides.task, *hydra_overrides]
    command += [f'hydra.run.dir="{hydra_cfg.runtime.output_dir}"', "hydra.output_subdir=null"]
    if local_rank > 0:
        command.append(f"hydra.job.name=train_ddp_process_{local_rank}")
    return command


@dataclass
class Rank:
    """One process of a job: its global rank, the process, and when the sweep process saw it end."""

    rank: int
    process: subprocess.Popen
    ended: float | None = None
    killed_by_sweep: bool = False
    record: dict[str, Any] = field(default_factory=dict)

    def poll(self) -> bool:
        if self.ended is None and self.process.poll() is not None:
            self.ended = time.time()
        return self.ended is not None

    @property
    def failed(self) -> bool:
        """Ended by itself with an error (not killed by the sweep after another rank failed)."""
        return self.ended is not None and self.process.returncode != 0 and not self.killed_by_sweep

    def exit_status(self) -> str:
        code = self.process.returncode
        if self.killed_by_sweep:
            return "killed by the sweep (SIGKILL) after another rank of the job failed"
        if code is not None and code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exit code {code}"

    def cause(self) -> str:
        if "error" in self.record:
            return self.record["error"]
        if self.process.returncode == -signal.SIGKILL:
            return "killed by SIGKILL (e.g. the kernel's out-of-memory killer)"
        return f"{self.exit_status()}, no error recorded (see the rank's output)"

    def failure_order(self) -> tuple[int, float]:
        """A rank killed by a signal first (whatever fails on the other ranks then follows from it), then
        by the time of the error (as the rank wrote it) or of the end (as the sweep process saw it)."""
        killed = self.process.returncode is not None and self.process.returncode < 0
        return (0 if killed else 1, self.record.get("time", self.ended or 0.0))


def start_ranks(cfg: DictConfig, job_dir: Path, environments: list[dict[str, str]]) -> list[Rank]:
    """Starts every rank of the job (one per entry of ``environments``), each in a session of its own,
    marked with the job's directory; W&B names the job's run and groups it by the sweep as in-process."""
    identity = wandb_run_identity()
    wandb_env = {"WANDB_NAME": identity.get("name"), "WANDB_RUN_GROUP": identity.get("group")}
    base = {**os.environ, JOB_ENV: str(job_dir), **{k: str(v) for k, v in wandb_env.items() if v}}
    ranks = []
    for local_rank, ddp_env in enumerate(environments):
        process = subprocess.Popen(
            rank_command(local_rank),
            env={**base, **ddp_env},
            cwd=HydraConfig.get().runtime.cwd,
            start_new_session=True,
        )
        node_rank = int(ddp_env.get("NODE_RANK", 0))
        ranks.append(Rank(node_rank * len(environments) + local_rank, process))
    return ranks


def wait_for_ranks(ranks: list[Rank], grace_s: float = GRACE_S) -> None:
    """Returns when every rank has ended, or ``grace_s`` after the first rank failed."""
    first_failure = None
    while not all(rank.poll() for rank in ranks):
        if first_failure is None and any(rank.failed for rank in ranks):
            first_failure = time.monotonic()
        if first_failure is not None and time.monotonic() - first_failure > grace_s:
            return
        time.sleep(POLL_S)


def processes_with(entry: str) -> list[int]:
    """Processes (not zombies) whose environment holds ``entry`` (``KEY=value``), from Linux's ``/proc``."""
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            stat = (proc / "stat").read_text()
            environ = (proc / "environ").read_bytes()
        except OSError:  # gone meanwhile, or another user's
            continue
        if stat[stat.rindex(")") + 2] != "Z" and entry.encode() in environ.split(b"\0"):
            pids.append(int(proc.name))
    return pids


def stop_job(ranks: list[Rank], job_dir: Path, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Kills every process of the job (each rank's session, then anything else that carries the job's
    marker) and returns when none is left."""
    for rank in ranks:
        if not rank.poll():
            rank.killed_by_sweep = True
            os.killpg(rank.process.pid, signal.SIGKILL)
    for rank in ranks:
        rank.process.wait()
    deadline = time.monotonic() + timeout_s
    while survivors := processes_with(f"{JOB_ENV}={job_dir}"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes {survivors} of the sweep job {job_dir} survive SIGKILL")
        for pid in survivors:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(POLL_S)


def failure_record(ranks: list[Rank], job_dir: Path) -> dict[str, Any] | None:
    """``failed.json``'s content from each rank's exit status and its own record (removed once merged),
    or None when every rank ended well. ``error`` is the first failure's: the failing rank and its cause."""
    for rank in ranks:
        path = job_dir / RANK_RECORD.format(pid=rank.process.pid)
        if path.is_file():
            rank.record = json.loads(path.read_text())
            path.unlink()
    failed = sorted((rank for rank in ranks if rank.failed), key=Rank.failure_order)
    if not failed:
        return None
    rows = []
    for rank in ranks:
        row = {"rank": rank.rank, "pid": rank.process.pid, "exit": rank.exit_status(), **rank.record}
        rows.append({**row, "error": rank.cause()} if rank.failed else row)
    return {
        "error": f"rank {failed[0].rank}: {failed[0].cause()}",
        "failed_ranks": [rank.rank for rank in failed],
        "ranks": rows,
    }


def exception_record(error: BaseException) -> dict[str, Any]:
    """A failure as ``failed.json`` holds it, for an error raised in this process."""
    return {
        "pid": os.getpid(),
        "error": f"{type(error).__name__}: {error}",
        "traceback": "".join(traceback.format_exception(error)),
        "time": time.time(),
    }


def _terminated(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def run_job_in_processes(cfg: DictConfig) -> dict[str, Any] | None:
    """Runs the current job of a multirun in processes of its own (see the module's docstring); returns its
    failure record (also written to ``<job dir>/failed.json``), or None when it completed. Whatever happens
    here (a failure, Ctrl-C, SIGTERM to the sweep), no process of the job outlives this call."""
    job_dir = Path(HydraConfig.get().runtime.output_dir)
    for stale in [job_dir / FAILED_FILE, *job_dir.glob(RANK_RECORD.format(pid="*"))]:
        stale.unlink(missing_ok=True)  # left by an earlier attempt of this job in the same directory
    try:
        environments = rank_environments(cfg)
    except Exception as error:  # e.g. more devices asked for than there are: no rank could start
        record = {**exception_record(error), "failed_ranks": [], "ranks": []}
        record["error"] = f"the job's ranks could not be set up: {record['error']}"
    else:
        ranks: list[Rank] = []
        previous = signal.signal(signal.SIGTERM, _terminated)
        try:
            ranks = start_ranks(cfg, job_dir, environments)
            port = environments[0].get("MASTER_PORT", "-")
            log.info(
                "job %s: ranks (pids) %s, port %s", job_dir.name, {r.rank: r.process.pid for r in ranks}, port
            )
            wait_for_ranks(ranks)
        finally:  # a second SIGTERM or Ctrl-C must not cut the clean-up short and leave ranks running
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                stop_job(ranks, job_dir)
            finally:
                signal.signal(signal.SIGINT, interrupt)
                signal.signal(signal.SIGTERM, previous)
        record = failure_record(ranks, job_dir)
    if record is not None:
        (job_dir / FAILED_FILE).write_text(json.dumps(record, indent=2))
    return record
