"""The GPU check's parts that run the project's own commands (``src/train.py``, ``scripts/paper/table7.py``)
in a process of their own and read what they print and log: ``commands``, ``train_bf16``, ``train_fp16``,
``ddp_multirun``, ``table7`` and ``table7_compile``."""

import csv
import json
import math
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from gpu_check_settings import REPO, TAIL_CHARS, Context

TABLE7 = "scripts/paper/table7.py"


# --- running a command and reading its output ---
def run_command(ctx: Context, args: list[str], timeout: float | None = None) -> subprocess.CompletedProcess:
    """Runs ``python args...`` from the repository root (W&B off). Its output streams into a ``*.log`` file
    of the part's directory as it comes (so that a part killed at its time limit still shows how far it
    got) and is returned as ``stdout``."""
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    log = ctx.work_dir / f"command{len(list(ctx.work_dir.glob('command*.log')))}.log"
    with log.open("w") as file:
        file.write(f"$ {' '.join(args)}\n")
        file.flush()
        returncode = subprocess.run(
            [ctx.python, *args], cwd=REPO, env=env, stdout=file, stderr=subprocess.STDOUT, timeout=timeout
        ).returncode
    output = log.read_text()
    if returncode != 0:
        raise RuntimeError(f"exit {returncode}: {' '.join(args)}\n{output[-TAIL_CHARS:]}")
    return subprocess.CompletedProcess(args, returncode, output, "")


def metrics_lines(stdout: str) -> list[dict[str, Any]]:
    """Every ``METRICS {json}`` line that train.py and eval.py print (one per job of a multirun)."""
    lines = [line for line in stdout.splitlines() if line.startswith("METRICS ")]
    return [json.loads(line[len("METRICS ") :]) for line in lines]


def metrics_line(stdout: str) -> dict[str, Any]:
    """The ``METRICS {json}`` line that train.py and eval.py print last."""
    metrics = metrics_lines(stdout)
    if not metrics:
        raise RuntimeError("no METRICS line in the output")
    return metrics[-1]


def logged_losses(run_dir: Path) -> list[float]:
    """``train/loss`` values of the CSV logger's ``metrics.csv`` in the order they were logged."""
    files = sorted(run_dir.glob("**/metrics.csv"))
    if not files:
        return []
    with files[0].open() as f:
        return [float(row["train/loss"]) for row in csv.DictReader(f) if row.get("train/loss")]


def train_overrides(ctx: Context, run_dir: Path) -> list[str]:
    """``src/train.py`` overrides of the demo job on this machine, writing into ``run_dir``."""
    s = ctx.settings
    return [
        "experiment=demo",
        *s.trainer,
        "logger=csv",
        "callbacks.rich_progress_bar=null",
        f"trainer.max_steps={s.train_steps}",
        "trainer.log_every_n_steps=1",
        f"paths.data_dir={ctx.work_dir.parent / 'data'}",
        *s.train_overrides,
        "resume.auto=false",  # every part starts afresh in the one run_dir (no resume of the last part)
        f"hydra.run.dir={run_dir}",
    ]


# --- the parts ---
def part_commands(ctx: Context) -> dict[str, Any]:
    """Every train.py command line of the check composes (``--cfg job``): a typo fails here in seconds."""
    run_dir = ctx.work_dir / "run"
    commands = {
        "train_bf16": [*train_overrides(ctx, run_dir), "trainer.precision=bf16-mixed"],
        "train_fp16": [*train_overrides(ctx, run_dir), "trainer.precision=16-mixed"],
        "ddp_multirun": [*train_overrides(ctx, run_dir), *ctx.settings.ddp_trainer, "seed=1"],
    }
    for args in commands.values():
        run_command(ctx, ["src/train.py", *args, "--cfg", "job"], timeout=60)
    return {"composed": sorted(commands)}


def train_part(ctx: Context, precision: str, *extra: str) -> dict[str, Any]:
    run_dir = ctx.work_dir / "run"
    start = time.perf_counter()
    overrides = [*train_overrides(ctx, run_dir), f"trainer.precision={precision}", *extra]
    out = run_command(ctx, ["src/train.py", *overrides])
    losses = logged_losses(run_dir)
    metrics = metrics_line(out.stdout)
    return {
        "precision": precision,
        "seconds": round(time.perf_counter() - start, 1),
        "steps": metrics.get("step"),
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "losses_logged": len(losses),
        "finite_losses": bool(losses) and all(math.isfinite(v) for v in losses),
        "metrics": metrics,
    }


def part_train_bf16(ctx: Context) -> dict[str, Any]:
    return train_part(ctx, "bf16-mixed")


def part_train_fp16(ctx: Context) -> dict[str, Any]:
    return train_part(ctx, "16-mixed")


def part_ddp_multirun(ctx: Context) -> dict[str, Any]:
    sweep_dir = ctx.work_dir / "sweep"
    overrides = [
        a for a in train_overrides(ctx, ctx.work_dir) if not a.startswith(("hydra.run", "trainer.max_steps"))
    ]
    out = run_command(
        ctx,
        [
            "src/train.py",
            "-m",
            *overrides,
            *ctx.settings.ddp_trainer,
            f"trainer.max_steps={min(ctx.settings.train_steps, 5)}",
            "seed=1,2",
            f"hydra.sweep.dir={sweep_dir}",
        ],
    )
    jobs = json.loads((sweep_dir / "summary.json").read_text())
    metrics = metrics_lines(out.stdout)
    return {
        "jobs": [{"job": j["job"], "status": j["status"], "overrides": j["overrides"]} for j in jobs],
        "all_completed": len(jobs) == 2 and all(j["status"] == "completed" for j in jobs),
        "metrics_lines": len(metrics),
        "box_ap": [m.get("val/bbox/AP") for m in metrics],
    }


def table7_part(ctx: Context, *extra: str) -> dict[str, Any]:
    """``scripts/paper/table7.py --json`` rows; ``extra`` arguments come last (a later ``--devices`` wins)."""
    args = [TABLE7, *ctx.settings.table7_args, "--devices", *ctx.settings.table7_devices]
    out = run_command(ctx, [*args, *extra, "--json"])
    rows = json.loads(out.stdout.strip().splitlines()[-1])
    return {"rows": rows}


def part_table7(ctx: Context) -> dict[str, Any]:
    return table7_part(ctx)


def part_table7_compile(ctx: Context) -> dict[str, Any]:
    """bf16 only: each compiled model costs a compilation, and bf16 is how the GPU runs are meant to go."""
    devices = [d for d in ctx.settings.table7_devices if d != "cuda-fp32"]
    return table7_part(ctx, "--compile", "both", "--devices", *devices)
