"""The GPU check: everything a CPU cannot measure, in one bounded run on one GPU, as one JSON report.

    bash scripts/gpu_check.sh                    # on the GPU machine: wheels, then this script
    python scripts/gpu/gpu_check.py [--out FILE] [--deadline 540] [--parts NAME ...] [--smoke]

Parts, in order (each in its own process group, killed at its time limit; a part that fails or times out is
reported with the tail of its output and the next part still runs; a part that would start with less than
``MIN_PART_SECONDS`` of the ``--deadline`` left is skipped). The default run, within 540 s on an H100:

- ``environment``: Python, torch, torchvision, Lightning and the project's dependencies, CUDA, cuDNN, GPU.
- ``commands``: in a dry run only, every ``src/train.py`` command line below composes (``--cfg job``).
- ``model_checks``: an all-negative batch (no instance in any image) trains under bf16 autocast (finite
  losses, gradients), and under bf16 autocast the proposals and boxes of an 800x1216 image are float32 and
  its P2 anchors are exact (distinct centres past x=1024, error against float32; torchvision's stock
  generator beside, whose bf16 anchors snap to multiples of 8 there).
- ``train_bf16``: ``src/train.py experiment=demo trainer=gpu`` for 30 steps in ``bf16-mixed``, then
  evaluation: METRICS, the first and last logged losses, finiteness.
- ``coco_step``: Light vs Mask R-CNN (ResNet-50 from ImageNet-shaped random weights, i.e. frozen BatchNorm
  and 3 trainable stages as in the paper) at batch 2 and 4 on real COCO batches (tiny_coco train through the
  project's training loader, multi-scale, 4 workers), bf16: median step, loader wait, peak GPU memory; the
  validation time per image; the paper's 1x schedule on 8 GPUs estimated from them (the formula in the
  report).
- ``coco_compile``: Light at batch 2 eager, then with its dense part compiled (``compile_dense_``, as
  ``module.compile=true``), 60 steps each on the same loader: first step, median step, graphs compiled.
- ``ddp_multirun``: a 2-job Hydra multirun with ``trainer=ddp trainer.devices=1`` (NCCL set up twice in one
  process): both jobs complete, ``summary.json``.

Only when ``--parts`` names them: ``train_fp16`` (``train_bf16`` in ``16-mixed``), ``channels_last`` (Heavy's
training step with the channels-last memory format on and off, interleaved), ``table7``
(``scripts/paper/table7.py`` on the GPU: R50 Mask R-CNN, Light, Heavy in fp32 and bf16) and
``table7_compile`` (the same in bf16, eager and ``torch.compile``'d dense part side by side).

Without CUDA the parts that need a GPU are skipped and the report says ``"dry_run": true``. ``--smoke`` runs
the parts on the CPU at toy sizes instead (ResNet-18, small images, few steps, no loader workers, the
``aot_eager`` compile backend): it checks the script itself (the test suite does so), and its timings mean
nothing.

This file is the driver (the parts, their time limits, the report); the parts are in the modules beside it:
``gpu_check_environment``, ``gpu_check_commands`` (the project's commands), ``gpu_check_models`` (models
checked in the part's own process, and the helpers of such parts) and ``gpu_check_training`` (training speed
on COCO batches); their sizes and context in ``gpu_check_settings``.
"""

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from gpu_check_commands import (
    part_commands,
    part_ddp_multirun,
    part_table7,
    part_table7_compile,
    part_train_bf16,
    part_train_fp16,
)
from gpu_check_environment import part_environment
from gpu_check_models import part_channels_last, part_model_checks
from gpu_check_settings import FULL, REPO, RESULT_PREFIX, SMOKE, TAIL_CHARS, Context, Settings
from gpu_check_training import part_coco_compile, part_coco_step

MIN_PART_SECONDS = 20


@dataclass(frozen=True)
class Part:
    """One part of the check: ``where`` it runs (``any``: always; ``gpu``: with CUDA or ``--smoke``;
    ``dry``: only in a dry run, where it stands in for the GPU parts), its time limit in seconds, and whether
    it runs only when ``--parts`` names it (``optional``: outside the default run's 540 s)."""

    name: str
    run: Callable[[Context], dict[str, Any]]
    where: str
    timeout: float
    optional: bool = False


# The default run's GPU parts: limits summing to 525 s of the 540 s deadline on an H100 (tests check the sum).
PARTS = (
    Part("environment", part_environment, "any", 30),
    Part("commands", part_commands, "dry", 90),
    Part("model_checks", part_model_checks, "gpu", 30),
    Part("train_bf16", part_train_bf16, "gpu", 90),
    Part("coco_step", part_coco_step, "gpu", 105),
    Part("coco_compile", part_coco_compile, "gpu", 210),  # Inductor: ~1 min per training graph
    Part("ddp_multirun", part_ddp_multirun, "gpu", 60),
    Part("train_fp16", part_train_fp16, "gpu", 120, optional=True),
    Part("channels_last", part_channels_last, "gpu", 90, optional=True),
    Part("table7", part_table7, "gpu", 150, optional=True),
    Part("table7_compile", part_table7_compile, "gpu", 200, optional=True),
)


# --- one part, in a child process ---
def run_part_here(name: str, settings: Settings, work_dir: Path) -> None:
    """Child process: runs one part and prints its result as the last line (``PART_RESULT {json}``)."""
    part = next(p for p in PARTS if p.name == name)
    try:
        result = {"status": "ok", "result": part.run(Context(settings, work_dir))}
    except Exception as error:  # reported, never fatal: the next part still runs
        result = {
            "status": "failed",
            "error": f"{type(error).__name__}: {error}"[-TAIL_CHARS:],
            "traceback": traceback.format_exc()[-TAIL_CHARS:],
        }
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def run_in_own_session(command: list[str], timeout: float) -> tuple[str, int | None]:
    """Runs ``command`` from the repository root in a new session and kills that whole process group (its
    children, loader workers included) when it ends or at ``timeout``; returns its output and its exit
    status, None when it was killed at the time limit. Processes that leave the session escape: the ranks of
    a sweep job, which ``datnet.runs.job_process`` starts in sessions of their own and stops itself."""
    child = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        output, _ = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        output = None
    with contextlib.suppress(ProcessLookupError):  # at the limit, or anything it left behind
        os.killpg(child.pid, signal.SIGKILL)
    if output is None:
        return child.communicate()[0], None
    return output, child.returncode


def run_part_child(part: Part, smoke: bool, work_dir: Path, timeout: float) -> tuple[dict[str, Any], str]:
    """Runs ``part`` in a child process of its own (:func:`run_in_own_session`); returns its report entry and
    its whole output, the logs of the commands it ran included."""
    command = [sys.executable, str(Path(__file__).resolve()), "--run-part", part.name]
    command += ["--work-dir", str(work_dir), *(["--smoke"] if smoke else [])]
    start = time.perf_counter()
    output, returncode = run_in_own_session(command, timeout)
    results = [line for line in output.splitlines() if line.startswith(RESULT_PREFIX)]
    last = json.loads(results[-1][len(RESULT_PREFIX) :]) if results else {}
    if returncode == 0 and last:
        entry = last
    else:
        killed = returncode is None
        error = f"killed after {timeout:.0f} s" if killed else f"exit {returncode} without a result"
        entry = {"status": "timeout" if killed else "failed", "error": error}
        if "result" in last:  # what it reported before it ended (gpu_check_settings.report_partial)
            entry["partial"] = last["result"]
    output += "".join(
        f"\n----- {log.name}\n{log.read_text()}" for log in sorted(work_dir.glob("command*.log"))
    )
    entry["seconds"] = round(time.perf_counter() - start, 1)
    if entry["status"] != "ok":
        entry["output_tail"] = output[-TAIL_CHARS:]
    return entry, output


# --- every part, within the deadline ---
def run_check(args: argparse.Namespace) -> dict[str, Any]:
    has_gpu = torch.cuda.is_available()
    dry_run = not has_gpu and not args.smoke
    work_root = Path(args.work_dir or tempfile.mkdtemp(prefix="gpu_check_"))
    report: dict[str, Any] = {
        "dry_run": dry_run,
        "smoke": args.smoke,
        "settings": asdict(SMOKE if args.smoke else FULL),
        "deadline_s": args.deadline,
        "parts": {},
    }
    start = time.perf_counter()
    logs = []
    for part in PARTS:
        if (args.parts and part.name not in args.parts) or (not args.parts and part.optional):
            continue
        left = args.deadline - (time.perf_counter() - start)
        if part.where == "gpu" and dry_run:
            report["parts"][part.name] = {"status": "skipped", "error": "no CUDA device (dry run)"}
            continue
        if part.where == "dry" and not dry_run:
            continue
        if left < MIN_PART_SECONDS:
            report["parts"][part.name] = {"status": "skipped", "error": f"deadline: {left:.0f} s left"}
            continue
        work_dir = work_root / part.name
        work_dir.mkdir(parents=True, exist_ok=True)
        entry, output = run_part_child(part, args.smoke, work_dir, min(part.timeout, left))
        report["parts"][part.name] = entry
        logs.append(f"===== {part.name}: {entry['status']} in {entry['seconds']} s\n{output}")
        status = f"gpu_check: {part.name}: {entry['status']} ({entry['seconds']} s)"
        print(status, file=sys.stderr, flush=True)
    report["total_seconds"] = round(time.perf_counter() - start, 1)
    report["failed"] = [n for n, e in report["parts"].items() if e["status"] in ("failed", "timeout")]
    if args.log:
        Path(args.log).write_text("\n".join(logs))
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="write the JSON report here too")
    parser.add_argument("--log", help="write every part's whole output here")
    parser.add_argument("--deadline", type=float, default=540, help="seconds for all parts together")
    parser.add_argument("--parts", nargs="+", choices=[p.name for p in PARTS], help="only these parts")
    parser.add_argument("--smoke", action="store_true", help="every part on the CPU at toy sizes")
    parser.add_argument("--work-dir", help="scratch directory (default: a new temporary one)")
    parser.add_argument("--run-part", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.run_part:
        run_part_here(args.run_part, SMOKE if args.smoke else FULL, Path(args.work_dir))
        return 0
    report = run_check(args)
    text = json.dumps(report, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
