"""Hydra multirun support: each job runs to its end (a failing job is recorded, not fatal to the sweep), and
a summary of all jobs is written when the sweep ends.

Under Hydra's basic launcher (jobs one after the other in the sweep process) each job runs in processes of
its own (:mod:`datnet.runs.job_process`); under a launcher that gives each job processes of its own
(submitit: one SLURM job per sweep job) the job runs where the launcher started it."""

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


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def prepare_ddp_relaunch() -> None:
    """Make Lightning's DDP launcher start this job's other ranks as single runs of *this job*, where a
    launcher runs a multirun job in a process of its own that starts its ranks itself (``submitit_local``).

    Lightning starts ranks 1..N-1 by re-running ``sys.argv`` with ``hydra.run.dir`` set to Hydra's
    ``run.dir``. In a multirun that would re-run the whole sweep (``-m`` and every value list) in a second
    output directory: here ``sys.argv`` becomes the job's own overrides and ``run.dir`` the job's directory.
    """
    if not in_multirun():
        return
    hydra_cfg = HydraConfig.get()
    sys.argv = [sys.argv[0], *hydra_cfg.overrides.task]
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
    log.error("job %d failed (%s); the sweep goes on", num, record["error"])
    print(f"JOB FAILED {json.dumps({'job': num, 'error': record['error']})}", flush=True)


def run_job_here(task: Callable[[DictConfig], dict[str, Any]], cfg: DictConfig) -> dict[str, Any] | None:
    """A multirun job in the process its launcher started (one rank of it): a failure is written to
    ``<job dir>/failed.json`` by the first rank that fails (the others find it there) and the launcher
    goes on with the next job (one of an earlier attempt in the same directory is removed first)."""
    environment = dict(os.environ)
    failed_file = Path(HydraConfig.get().runtime.output_dir) / FAILED_FILE
    if rank_zero_only.rank == 0:
        failed_file.unlink(missing_ok=True)
    try:
        return task(cfg)
    except Exception as error:
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
            pass
        report_failed_job(record)
        return None
    finally:
        end_job(environment)


def run_task(task: Callable[[DictConfig], dict[str, Any]], cfg: DictConfig) -> dict[str, Any] | None:
    """Runs ``task``. A single run fails with the task's exception (a rank of a sweep job also records it
    for the sweep); in a multirun a failing job is recorded in ``<job dir>/failed.json`` and the sweep goes on
    with the next job. Returns the job's metrics, None when it failed."""
    if not in_multirun():
        try:
            return task(cfg)
        except Exception as error:
            record_rank_failure(error)
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
    """Writes ``summary.json`` and ``summary.md`` into the sweep directory at the end of a multirun, prints
    the table, and exits non-zero when a job failed (after every job has run)."""

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
