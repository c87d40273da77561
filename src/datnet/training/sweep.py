"""Hydra multirun support: each job runs to its end (a failing job is recorded, not fatal to the sweep), its
W&B run is closed, and a summary of all jobs is written when the sweep ends."""

import json
import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, read_write

log = logging.getLogger(__name__)
FAILED_FILE = "failed.json"
METRICS_FILE = "metrics.json"


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def prepare_ddp_relaunch() -> None:
    """Make Lightning's DDP launcher start this job's other ranks as single runs of *this job*.

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
    """Leave nothing of a job to the next job of the sweep in this process: its W&B run is finished (the
    next job starts its own), its DDP process group destroyed, and the environment variables that the DDP
    launcher set (``MASTER_PORT``, ``WORLD_SIZE``, ...) restored to ``environment``, so that the next job
    starts its ranks on a fresh port. A W&B run exists only if the wandb logger imported ``wandb``, so it is
    looked up, not imported: runs with other loggers need no wandb installed."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    for key in set(os.environ) - set(environment):
        del os.environ[key]
    os.environ.update(environment)


def run_task(task: Callable[[DictConfig], dict[str, Any]], cfg: DictConfig) -> dict[str, Any] | None:
    """Runs ``task``; in a multirun a failure is logged and written to ``<job dir>/failed.json`` and the
    sweep goes on with the next job (a single run still fails with the exception)."""
    environment = dict(os.environ)
    try:
        return task(cfg)
    except Exception as error:
        if not in_multirun():
            raise
        job_dir = Path(HydraConfig.get().runtime.output_dir)
        record = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
        (job_dir / FAILED_FILE).write_text(json.dumps(record, indent=2))
        log.error("job %d failed (%s); the sweep goes on", HydraConfig.get().job.num, record["error"])
        print(
            f"JOB FAILED {json.dumps({'job': HydraConfig.get().job.num, 'error': record['error']})}",
            flush=True,
        )
        return None
    finally:
        end_job(environment)


def collect_jobs(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job directory of a sweep: its overrides, status and metrics."""
    rows = []
    for overrides_file in sorted(sweep_dir.glob("*/.hydra/overrides.yaml"), key=lambda p: p.parts[-3]):
        job_dir = overrides_file.parent.parent
        row: dict[str, Any] = {"job": job_dir.name, "overrides": yaml.safe_load(overrides_file.read_text())}
        if (job_dir / METRICS_FILE).is_file():
            row.update(status="completed", metrics=json.loads((job_dir / METRICS_FILE).read_text()))
        elif (job_dir / FAILED_FILE).is_file():
            row.update(status="failed", error=json.loads((job_dir / FAILED_FILE).read_text())["error"])
        else:
            row.update(status="unknown")
        rows.append(row)
    return rows


def summary_markdown(
    rows: list[dict[str, Any]], keys: tuple[str, ...] = ("val/bbox/AP", "val/segm/AP")
) -> str:
    lines = ["| job | overrides | status | " + " | ".join(keys) + " |", "|---|---|---|" + "---|" * len(keys)]
    for row in rows:
        values = [row.get("metrics", {}).get(k) for k in keys]
        cells = ["" if v is None else f"{v:.4f}" for v in values]
        lines.append(
            f"| {row['job']} | {' '.join(row['overrides'])} | {row['status']} | " + " | ".join(cells) + " |"
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
