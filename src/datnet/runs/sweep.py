"""Hydra multirun support: each job runs to its end (a failing job is recorded, not fatal to the sweep), and
a summary of all jobs is written when the sweep ends.

Under Hydra's basic launcher (jobs one after the other in the sweep process) each job runs in processes of
its own (:mod:`datnet.runs.job_process`); under a launcher that gives each job processes of its own
(submitit: one SLURM job per sweep job) the job runs where the launcher started it: a rank whose task
raises records the failure and fails the job (the sweep ends with its error), and under srun exits non-zero,
so that srun stops the job's other ranks instead of leaving them in a collective."""

import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from lightning_fabric.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig, read_write
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from datnet.runs.job_process import (
    FAILED_FILE,
    exception_record,
    record_rank_failure,
    run_job_in_processes,
)

log = logging.getLogger(__name__)
METRICS_FILE = "metrics.json"
# set in the sweep process for the jobs' processes: the entry script (src/train.py, src/eval.py), which a job
# that a launcher runs in a process of its own (``python -m submitit.core._submit``) starts its DDP ranks with
ENTRY_SCRIPT_ENV = "DATNET_ENTRY_SCRIPT"
# set in such a job's process for the ranks that Lightning starts from it: the job's failed.json
FAILED_FILE_ENV = "DATNET_JOB_FAILED_FILE"


class JobFailed(RuntimeError):
    """A sweep job failed: its first failing rank, that rank's error and the job's ``failed.json``."""


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def prepare_ddp_relaunch() -> None:
    """Make Lightning's DDP launcher start this job's other ranks as single runs of *this job*, where a
    launcher runs a multirun job in a process of its own that starts its ranks itself (``submitit_local``).

    Lightning starts ranks 1..N-1 by re-running ``sys.argv`` (``python -m <module>`` when ``__main__`` is a
    module) with ``hydra.run.dir`` set to Hydra's ``run.dir``. In such a job's process that would run the
    launcher's own module (``submitit.core._submit``), and the arguments would re-run the whole sweep (``-m``
    and every value list) in a second output directory: here ``__main__`` becomes the sweep's entry script
    (:data:`ENTRY_SCRIPT_ENV`), ``sys.argv`` the job's own overrides and ``run.dir`` the job's directory.
    """
    if not in_multirun():
        return
    import __main__

    hydra_cfg = HydraConfig.get()
    entry = os.environ.get(ENTRY_SCRIPT_ENV)  # set by SweepSummary, unless the sweep runs without it
    if entry is not None:
        __main__.__spec__ = None
    sys.argv = [entry or sys.argv[0], *hydra_cfg.overrides.task]
    with read_write(hydra_cfg.run):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir


def end_job(environment: dict[str, str]) -> None:
    """Leave nothing of a job to a next job in this process: its W&B run is finished (the next job starts
    its own), its DDP process group destroyed, and the environment variables that the DDP launcher set
    (``MASTER_PORT``, ``WORLD_SIZE``, ...) restored to ``environment``. A W&B run exists only if the wandb
    logger imported ``wandb``, so it is looked up, not imported: runs with other loggers need no wandb
    installed."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    for key in set(os.environ) - set(environment):
        del os.environ[key]
    os.environ.update(environment)


def report_failed_job(record: dict[str, Any]) -> None:
    """Logs a failed job and prints ``JOB FAILED {"job": N, "error": ...}``."""
    num = HydraConfig.get().job.num
    log.error("job %d failed (%s)", num, record["error"])
    print(f"JOB FAILED {json.dumps({'job': num, 'error': record['error']})}", flush=True)


def record_job_failure(failed_file: Path, error: BaseException) -> dict[str, Any]:
    """Writes ``error`` of this rank as the job's ``failed.json`` unless a rank of the job already did (the
    first failure is the cause, what fails on the other ranks then follows from it); returns the record in the
    file."""
    rank = {**exception_record(error), "rank": rank_zero_only.rank}
    record = {
        "error": f"rank {rank['rank']}: {rank['error']}",
        "failed_ranks": [rank["rank"]],
        "ranks": [rank],
    }
    try:
        with open(failed_file, "x") as file:
            json.dump(record, file, indent=2)
    except FileExistsError:
        return json.loads(failed_file.read_text())
    return record


def run_job_here(task: Callable[[DictConfig], dict[str, Any]], cfg: DictConfig) -> dict[str, Any]:
    """A multirun job in the process its launcher started (one rank of it; an earlier attempt's
    ``failed.json`` in the same directory is removed first). A failure is written to ``<job dir>/failed.json``
    by the first rank that fails, here or in a rank that Lightning starts from here (:data:`FAILED_FILE_ENV`),
    and the job fails with :class:`JobFailed` (naming that first failure, not this rank's own error, which
    may follow from it): Hydra makes it the job's failed result, which submitit hands to the sweep, and the
    sweep ends with it. A rank that srun started (SLURM) exits with status 1 instead: with the result it would
    exit 0, and srun would leave the job's other ranks waiting in their next collective (until
    ``trainer.strategy.timeout``) instead of stopping them (``SLURM_KILL_BAD_EXIT``, conf/hydra/launcher/
    slurm.yaml); submitit then reports the job as one without a result, with the end of its error output.
    Ranks that Lightning starts from here are stopped by this one (``runs.tasks.stop_ddp_processes``)."""
    environment = dict(os.environ)
    failed_file = Path(HydraConfig.get().runtime.output_dir) / FAILED_FILE
    if rank_zero_only.rank == 0:
        failed_file.unlink(missing_ok=True)
    os.environ[FAILED_FILE_ENV] = str(failed_file)
    try:
        return task(cfg)
    except Exception as error:
        record = record_job_failure(failed_file, error)
        report_failed_job(record)
        message = f"job {HydraConfig.get().job.num} failed: {record['error']} ({failed_file})"
        if SLURMEnvironment.detect():
            log.error("rank %d failed", rank_zero_only.rank, exc_info=error)
            raise SystemExit(message) from error
        raise JobFailed(message) from error
    finally:
        end_job(environment)


def run_task(task: Callable[[DictConfig], dict[str, Any]], cfg: DictConfig) -> dict[str, Any] | None:
    """Runs ``task``. A single run fails with the task's exception, recorded in its ``failed.json`` (a rank
    of a sweep job records it in the job's); in a multirun a failing job is recorded in
    ``<job dir>/failed.json``: under the basic launcher the sweep goes on with the next job (None for this
    one), under a launcher that runs the job where it started it (submitit) the job fails
    (:func:`run_job_here`). Returns the job's metrics."""
    if not in_multirun():
        run_failed_file = Path(HydraConfig.get().runtime.output_dir) / FAILED_FILE
        if rank_zero_only.rank == 0:
            run_failed_file.unlink(missing_ok=True)  # an earlier attempt's, before a resume
        try:
            return task(cfg)
        except Exception as error:
            record_rank_failure(error)
            # a rank that Lightning started from a job's process records the job's failure; a single run
            # its own (results_table.py lists it as failed)
            record_job_failure(Path(os.environ.get(FAILED_FILE_ENV, run_failed_file)), error)
            raise
    if HydraConfig.get().runtime.choices.get("hydra/launcher") != "basic":  # submitit: a process per job
        return run_job_here(task, cfg)
    record = run_job_in_processes(cfg)
    if record is not None:
        report_failed_job(record)
        return None
    metrics = Path(HydraConfig.get().runtime.output_dir) / METRICS_FILE
    return json.loads(metrics.read_text()) if metrics.is_file() else {}


def collect_jobs(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job directory of a sweep: its overrides, status (``failed`` when the job wrote
    ``failed.json``, even if a rank got as far as its metrics), failing ranks and error, and metrics."""
    rows = []
    for overrides_file in sorted(sweep_dir.glob("*/.hydra/overrides.yaml"), key=lambda p: p.parts[-3]):
        job_dir = overrides_file.parent.parent
        row: dict[str, Any] = {"job": job_dir.name, "overrides": yaml.safe_load(overrides_file.read_text())}
        if (job_dir / FAILED_FILE).is_file():
            failure = json.loads((job_dir / FAILED_FILE).read_text())
            row.update(status="failed", error=failure["error"], failed_ranks=failure.get("failed_ranks", []))
        else:
            row.update(status="completed" if (job_dir / METRICS_FILE).is_file() else "unknown")
        if (job_dir / METRICS_FILE).is_file():
            row["metrics"] = json.loads((job_dir / METRICS_FILE).read_text())
        rows.append(row)
    return rows


def summary_markdown(
    rows: list[dict[str, Any]], keys: tuple[str, ...] = ("val/bbox/AP", "val/segm/AP")
) -> str:
    """The jobs as a markdown table: overrides, status, the metrics ``keys`` and a failed job's error."""
    header = "| job | overrides | status | " + " | ".join(keys) + " | error |"
    lines = [header, "|---|---|---|" + "---|" * len(keys) + "---|"]
    for row in rows:
        values = [row.get("metrics", {}).get(k) for k in keys]
        cells = ["" if v is None else f"{v:.4f}" for v in values]
        error = row.get("error", "").replace("|", "\\|").replace("\n", " ")
        lines.append(
            f"| {row['job']} | {' '.join(row['overrides'])} | {row['status']} | "
            + " | ".join(cells)
            + f" | {error} |"
        )
    return "\n".join(lines) + "\n"


class SweepSummary(Callback):
    """The sweep process's side of a multirun: at its start, names the entry script for the jobs' processes
    (:data:`ENTRY_SCRIPT_ENV`, :func:`prepare_ddp_relaunch`); at its end, writes ``summary.json`` and
    ``summary.md`` into the sweep directory, prints the table, and exits non-zero when a job failed (after
    every job has run)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        os.environ[ENTRY_SCRIPT_ENV] = os.path.abspath(sys.argv[0])

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = collect_jobs(sweep_dir)
        (sweep_dir / "summary.json").write_text(json.dumps(rows, indent=2))
        table = summary_markdown(rows)
        (sweep_dir / "summary.md").write_text(table)
        print(table, flush=True)
        failed = [row["job"] for row in rows if row["status"] != "completed"]
        if failed:
            print(f"SWEEP FAILED JOBS {json.dumps(failed)}", flush=True)
            raise SystemExit(1)
