"""The GPU check: everything a CPU cannot measure, in one bounded run on one GPU, as one JSON report.

    bash scripts/gpu_check.sh                    # on the GPU machine: wheels, then this script
    python scripts/gpu_check.py [--out FILE] [--deadline 540] [--parts NAME ...] [--smoke]

Parts, in order (each in its own process group, killed at its time limit; a part that fails or times out is
reported with the tail of its output and the next part still runs; a part that would start with less than
``MIN_PART_SECONDS`` of the ``--deadline`` left is skipped):

- ``environment``: Python, torch, torchvision, Lightning and the project's dependencies, CUDA, cuDNN, GPU.
- ``commands``: in a dry run only, every ``src/train.py`` command line below composes (``--cfg job``).
- ``model_checks``: an all-negative batch (no instance in any image) trains under bf16 autocast (finite
  losses, gradients), and under bf16 autocast the proposals and boxes of an 800x1216 image are float32 and
  its P2 anchors are exact (distinct centres past x=1024, error against float32; torchvision's stock
  generator beside, whose bf16 anchors snap to multiples of 8 there).
- ``train_bf16`` / ``train_fp16``: ``src/train.py experiment=demo trainer=gpu`` for 30 steps in
  ``bf16-mixed`` / ``16-mixed``, then evaluation: METRICS, the first and last logged losses, finiteness.
- ``train_step``: one training step of Light vs Mask R-CNN (ResNet-50 from ImageNet-shaped random weights,
  i.e. frozen BatchNorm and 3 trainable stages as in the paper; 2 images at short side 800 from the real
  data pipeline, bf16): median step time, time waiting on the loader, peak GPU memory.
- ``channels_last``: Heavy's training step with the channels-last memory format on and off (interleaved).
- ``ddp_multirun``: a 2-job Hydra multirun with ``trainer=ddp trainer.devices=1`` (NCCL set up twice in one
  process): both jobs complete, ``summary.json``.
- ``table7``: ``scripts/table7.py`` on the GPU: R50 Mask R-CNN, Light, Heavy in fp32 and bf16 (ms/image and
  ratio to Mask R-CNN).
- ``table7_compile``: the same in bf16 with ``module.compile``'s ``torch.compile`` of the dense part, eager
  and compiled side by side in one run.
- ``train_compile``: ``train_bf16`` with ``module.compile=true`` (the dense part compiled for training and
  evaluation): METRICS and losses beside the eager run's.

Without CUDA the parts that need a GPU are skipped and the report says ``"dry_run": true``. ``--smoke`` runs
every part on the CPU at toy sizes instead (ResNet-18, small images, few steps): it checks the script itself
(the test suite does so), and its timings mean nothing.
"""

import argparse
import contextlib
import csv
import importlib.metadata
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
RESULT_PREFIX = "PART_RESULT "
MIN_PART_SECONDS = 20
TAIL_CHARS = 3000
PACKAGES = (
    "torch",
    "torchvision",
    "pytorch-lightning",
    "torchmetrics",
    "numpy",
    "scipy",
    "opencv-python-headless",
    "hydra-core",
    "omegaconf",
    "pycocotools",
    "faster-coco-eval",
    "albumentations",
)


@dataclass(frozen=True)
class Settings:
    """Sizes of the check: ``full`` on a GPU, ``smoke`` on a CPU (toy sizes, to test the script)."""

    device: str = "cuda"
    backbone: str = "resnet50"
    min_size: int = 800
    max_size: int = 1333
    batch_size: int = 2
    num_workers: int = 4
    warmup: int = 3
    steps: int = 10
    train_steps: int = 30
    model_overrides: tuple[str, ...] = ()
    train_overrides: tuple[str, ...] = ()
    table7_args: tuple[str, ...] = ("--backbones", "resnet50", "--num-images", "4", "--repeats", "5")

    @property
    def trainer(self) -> tuple[str, ...]:
        return ("trainer=gpu",) if self.device == "cuda" else ("trainer=cpu",)

    @property
    def ddp_trainer(self) -> tuple[str, ...]:
        accelerator = "gpu" if self.device == "cuda" else "cpu"
        return ("trainer=ddp", f"trainer.accelerator={accelerator}", "trainer.devices=1")

    @property
    def table7_devices(self) -> tuple[str, ...]:
        return ("cuda-fp32", "cuda-bf16") if self.device == "cuda" else ("cpu",)


FULL = Settings()
SMOKE = Settings(
    device="cpu",
    backbone="resnet18",
    min_size=96,
    max_size=128,
    num_workers=0,
    warmup=1,
    steps=2,
    train_steps=2,
    model_overrides=(
        "model.backbone.out_channels=32",
        "model.detector.box_batch_size_per_image=16",
        "++model.detector.rpn_pre_nms_top_n_train=100",
        "++model.detector.rpn_post_nms_top_n_train=50",
        "++model.detector.rpn_pre_nms_top_n_test=100",
        "++model.detector.rpn_post_nms_top_n_test=50",
    ),
    train_overrides=(
        "data.num_train=8",
        "data.num_val=4",
        "data.num_workers=0",
        "data.min_size=96",
        "data.max_size=128",
        "model.detector.box_batch_size_per_image=16",
    ),
    table7_args=(
        *("--backbones", "resnet18", "--size", "64", "--num-images", "1", "--repeats", "1"),
        *("--num-classes", "5", "--overrides", "+model.detector.rpn_post_nms_top_n_test=20"),
        "+model.detector.box_detections_per_img=10",
    ),
)


@dataclass
class Context:
    """What a part needs: the settings, a scratch directory of its own, the Python to run scripts with."""

    settings: Settings
    work_dir: Path
    python: str = sys.executable


# --- helpers shared by the parts ---
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


def metrics_line(stdout: str) -> dict[str, Any]:
    """The ``METRICS {json}`` line that train.py and eval.py print last."""
    lines = [line for line in stdout.splitlines() if line.startswith("METRICS ")]
    if not lines:
        raise RuntimeError("no METRICS line in the output")
    return json.loads(lines[-1][len("METRICS ") :])


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


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def autocast(device: str, dtype: torch.dtype = torch.bfloat16):
    return torch.autocast(device, dtype=dtype)


def build_model(ctx: Context, preset: str, *overrides: str) -> torch.nn.Module:
    """The ``conf/model/<preset>.yaml`` detector for 81 classes on the check's backbone, resizing left to the
    data pipeline (as in training), with ImageNet-shaped random backbone weights (frozen BatchNorm, 3
    trainable stages: the paper's fine-tuning setting), on the check's device."""
    from hydra.utils import instantiate

    from datnet.configs import compose_config

    s = ctx.settings
    weights = ctx.work_dir / f"{s.backbone}_random_imagenet.pth"
    if not weights.is_file():
        from torchvision.models import get_model

        torch.save(get_model(s.backbone, weights=None).state_dict(), weights)
    cfg = compose_config(
        [
            f"+model={preset}",
            f"model.backbone.name={s.backbone}",
            f"model.backbone.weights={weights}",
            f"model.detector.min_size={s.min_size}",
            f"model.detector.max_size={s.max_size}",
            *s.model_overrides,
            *overrides,
        ]
    )
    torch.manual_seed(0)
    return instantiate(cfg.model, num_classes=81, resize_images=False).to(s.device)


def train_loader(ctx: Context) -> torch.utils.data.DataLoader:
    """The shapes data through the real training pipeline (resize to ``min_size``/``max_size``, flips,
    jitter, DT and semantic targets in the loader workers), ``batch_size`` images per batch."""
    from datnet.data.datamodule import ShapesDataModule

    s = ctx.settings
    datamodule = ShapesDataModule(
        ctx.work_dir.parent / "data" / "shapes_check",
        num_train=64,
        num_val=4,
        batch_size=s.batch_size,
        num_workers=s.num_workers,
        min_size=s.min_size,
        max_size=s.max_size,
        pin_memory=s.device == "cuda",
    )
    return datamodule.train_dataloader()


def to_device(batch: tuple, device: str) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    images, targets, _ = batch
    images = [image.to(device, non_blocking=True) for image in images]
    targets = [
        {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in t.items()}
        for t in targets
    ]
    return images, targets


def training_step(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, images: list, targets: list, device: str
) -> dict[str, float]:
    """One SGD step under bf16 autocast; the losses as floats."""
    with autocast(device):
        losses = model(images, targets)
    loss = sum(losses.values())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {k: float(v) for k, v in losses.items()}


def sgd(model: torch.nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=1e-3, momentum=0.9, weight_decay=1e-4)


def cycle(loader: torch.utils.data.DataLoader) -> Iterator:
    while True:
        yield from loader


def peak_memory_mb(device: str) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**20, 1) if device == "cuda" else None


def reset_peak_memory(device: str) -> None:
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


# --- the parts ---
def part_environment(ctx: Context) -> dict[str, Any]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    result: dict[str, Any] = {
        "python": platform.python_version(),
        "executable": sys.executable,
        "packages": versions,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cpu_count": os.cpu_count(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        result.update(
            gpu=props.name,
            gpu_memory_gb=round(props.total_memory / 2**30, 1),
            capability=f"{props.major}.{props.minor}",
            gpu_count=torch.cuda.device_count(),
        )
    import datnet.training.run  # noqa: F401  (the whole harness imports with these packages)

    return result


def part_commands(ctx: Context) -> dict[str, Any]:
    """Every train.py command line of the check composes (``--cfg job``): a typo fails here in seconds."""
    run_dir = ctx.work_dir / "run"
    commands = {
        "train_bf16": [*train_overrides(ctx, run_dir), "trainer.precision=bf16-mixed"],
        "train_fp16": [*train_overrides(ctx, run_dir), "trainer.precision=16-mixed"],
        "ddp_multirun": [*train_overrides(ctx, run_dir), *ctx.settings.ddp_trainer, "seed=1"],
        "train_compile": [*train_overrides(ctx, run_dir), "module.compile=true"],
    }
    for args in commands.values():
        run_command(ctx, ["src/train.py", *args, "--cfg", "job"], timeout=60)
    return {"composed": sorted(commands)}


def part_model_checks(ctx: Context) -> dict[str, Any]:
    from datnet.models.auxiliary import dense_target_size

    device = ctx.settings.device
    result: dict[str, Any] = {}
    # an all-negative batch: no instance in any image, every DT/semantic pixel background
    model = build_model(ctx, "light").train()
    h, w = ctx.settings.min_size, ctx.settings.min_size * 3 // 2
    images = [torch.rand(3, h, w, device=device) for _ in range(2)]
    aux_size = dense_target_size(h, w, model.auxiliary.loss_stride)
    empty = {
        "boxes": torch.zeros(0, 4, device=device),
        "labels": torch.zeros(0, dtype=torch.int64, device=device),
        "masks": torch.zeros(0, h, w, dtype=torch.uint8, device=device),
        "dt": torch.zeros(aux_size, dtype=torch.uint8, device=device),
        "sem": torch.zeros(aux_size, dtype=torch.uint8, device=device),
    }
    losses = training_step(model, sgd(model), images, [dict(empty), dict(empty)], device)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    result["all_negative"] = {
        "losses": {k: round(v, 5) for k, v in losses.items()},
        "finite": all(math.isfinite(v) for v in losses.values()),
        "finite_gradients": all(bool(torch.isfinite(g).all()) for g in grads),
        "parameters_with_gradients": len(grads),
    }
    # bf16 box coordinates: an 800x1216 image (1216 = 800 * 1.52, a typical COCO landscape image)
    model.eval()
    width = round(ctx.settings.min_size * 1.52)
    image = torch.rand(3, ctx.settings.min_size, width, device=device)
    with torch.inference_mode(), autocast(device):
        output = model([image], return_proposals=True)[0]
    result["bf16_boxes"] = {
        "image": [ctx.settings.min_size, width],
        "proposals_dtype": str(output["proposals"].dtype),
        "boxes_dtype": str(output["boxes"].dtype),
        "p2_anchors": p2_anchor_report(model, image, device),
    }
    return result


def p2_anchor_report(model: torch.nn.Module, image: torch.Tensor, device: str) -> dict[str, dict[str, Any]]:
    """The P2 anchors of ``image`` under bf16 autocast from the model's generator and from torchvision's
    stock ``AnchorGenerator``: dtype, distinct anchor centres past x=1024 (of the right half of the image when
    it is narrower) and the largest error against float32 anchors, in pixels."""
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.image_list import ImageList

    generator = model.rpn.anchor_generator
    stock = AnchorGenerator(generator.sizes, generator.aspect_ratios)
    images = ImageList(image[None], [tuple(image.shape[-2:])])
    with torch.inference_mode():
        features = list(model.backbone(images.tensors).values())
        reference = stock(images, features)[0]
        with autocast(device):
            low = list(model.backbone(images.tensors).values())
            anchors = {"model": generator(images, low)[0], "torchvision": stock(images, low)[0]}
    per_level = len(generator.aspect_ratios[0]) * len(generator.sizes[0])
    p2 = features[0].shape[-2] * features[0].shape[-1] * per_level
    edge = min(1024, image.shape[-1] // 2)
    report = {}
    for name, boxes in anchors.items():
        centres = (boxes[:p2, 0].float() + boxes[:p2, 2].float()) / 2
        report[name] = {
            "dtype": str(boxes.dtype),
            "distinct_centres_past_edge": int(centres[centres > edge].unique().numel()),
            "max_error_px": round(float((boxes.float() - reference).abs().max()), 3),
        }
    report["edge_x"] = edge
    return report


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


def part_train_compile(ctx: Context) -> dict[str, Any]:
    """``module.compile=true``: the dense part compiled (inductor) for training and evaluation, bf16."""
    return train_part(ctx, "bf16-mixed", "module.compile=true")


def part_train_step(ctx: Context) -> dict[str, Any]:
    """Light vs Mask R-CNN, each for ``warmup`` + ``steps`` steps from the real loader: median step time
    (device work only), mean time waiting on the loader per step, peak GPU memory."""
    s = ctx.settings
    batches = cycle(train_loader(ctx))
    rows = {}
    for preset in ("maskrcnn", "light"):
        model = build_model(ctx, preset).train()
        optimizer = sgd(model)
        reset_peak_memory(s.device)
        step_ms, wait_ms, shapes = [], [], set()
        for step in range(s.warmup + s.steps):
            synchronize(s.device)
            t0 = time.perf_counter()
            batch = next(batches)
            t1 = time.perf_counter()
            images, targets = to_device(batch, s.device)
            losses = training_step(model, optimizer, images, targets, s.device)
            synchronize(s.device)
            t2 = time.perf_counter()
            if step >= s.warmup:
                wait_ms.append(1000 * (t1 - t0))
                step_ms.append(1000 * (t2 - t1))
                shapes.add(tuple(max(i.shape[d] for i in images) for d in (1, 2)))
        rows[preset] = {
            "step_ms_median": round(statistics.median(step_ms), 1),
            "loader_wait_ms_mean": round(statistics.mean(wait_ms), 1),
            "peak_memory_mb": peak_memory_mb(s.device),
            "image_sizes": sorted(shapes),
            "last_losses": {k: round(v, 4) for k, v in losses.items()},
        }
        del model, optimizer
    rows["light_over_maskrcnn_step"] = round(
        rows["light"]["step_ms_median"] / rows["maskrcnn"]["step_ms_median"], 3
    )
    return {"batch_size": s.batch_size, "num_workers": s.num_workers, "precision": "bf16 autocast", **rows}


def part_channels_last(ctx: Context) -> dict[str, Any]:
    """Heavy's training step with and without channels-last, on the same cached batches, interleaved."""
    s = ctx.settings
    batches = cycle(train_loader(ctx))
    cached = [to_device(next(batches), s.device) for _ in range(2)]
    models = {
        "contiguous": build_model(ctx, "heavy").train(),
        "channels_last": build_model(ctx, "heavy").train().to(memory_format=torch.channels_last),
    }
    optimizers = {name: sgd(model) for name, model in models.items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    for step in range(s.warmup + s.steps):
        images, targets = cached[step % len(cached)]
        for name, model in models.items():
            synchronize(s.device)
            start = time.perf_counter()
            training_step(model, optimizers[name], images, targets, s.device)
            synchronize(s.device)
            if step >= s.warmup:
                times[name].append(1000 * (time.perf_counter() - start))
    medians = {name: round(statistics.median(t), 1) for name, t in times.items()}
    return {
        "model": "heavy",
        "step_ms_median": medians,
        "channels_last_over_contiguous": round(medians["channels_last"] / medians["contiguous"], 3),
    }


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
    metrics = [json.loads(line[8:]) for line in out.stdout.splitlines() if line.startswith("METRICS ")]
    return {
        "jobs": [{"job": j["job"], "status": j["status"], "overrides": j["overrides"]} for j in jobs],
        "all_completed": len(jobs) == 2 and all(j["status"] == "completed" for j in jobs),
        "metrics_lines": len(metrics),
        "box_ap": [m.get("val/bbox/AP") for m in metrics],
    }


def table7_part(ctx: Context, *extra: str) -> dict[str, Any]:
    """``scripts/table7.py --json`` rows; ``extra`` arguments come last (a later ``--devices`` wins)."""
    args = ["scripts/table7.py", *ctx.settings.table7_args, "--devices", *ctx.settings.table7_devices]
    out = run_command(ctx, [*args, *extra, "--json"])
    rows = json.loads(out.stdout.strip().splitlines()[-1])
    return {"rows": rows}


def part_table7(ctx: Context) -> dict[str, Any]:
    return table7_part(ctx)


def part_table7_compile(ctx: Context) -> dict[str, Any]:
    """bf16 only: each compiled model costs a compilation, and bf16 is how the GPU runs are meant to go."""
    devices = [d for d in ctx.settings.table7_devices if d != "cuda-fp32"]
    return table7_part(ctx, "--compile", "both", "--devices", *devices)


@dataclass(frozen=True)
class Part:
    """One part of the check: ``where`` it runs (``any``: always; ``gpu``: with CUDA or ``--smoke``;
    ``dry``: only in a dry run, where it stands in for the GPU parts) and its time limit in seconds."""

    name: str
    run: Callable[[Context], dict[str, Any]]
    where: str
    timeout: float


PARTS = (
    Part("environment", part_environment, "any", 60),
    Part("commands", part_commands, "dry", 90),
    Part("model_checks", part_model_checks, "gpu", 90),
    Part("train_bf16", part_train_bf16, "gpu", 150),
    Part("train_fp16", part_train_fp16, "gpu", 120),
    Part("train_step", part_train_step, "gpu", 120),
    Part("channels_last", part_channels_last, "gpu", 90),
    Part("ddp_multirun", part_ddp_multirun, "gpu", 150),
    Part("table7", part_table7, "gpu", 150),
    Part("table7_compile", part_table7_compile, "gpu", 200),
    Part("train_compile", part_train_compile, "gpu", 240),
)


# --- the driver ---
def run_part_here(name: str, settings: Settings, work_dir: Path) -> None:
    """Child process: runs one part and prints its result as the last line (``PART_RESULT {json}``)."""
    part = next(p for p in PARTS if p.name == name)
    ctx = Context(settings, work_dir)
    try:
        result = {"status": "ok", "result": part.run(ctx)}
    except Exception as error:  # reported, never fatal: the next part still runs
        result = {
            "status": "failed",
            "error": f"{type(error).__name__}: {error}"[-TAIL_CHARS:],
            "traceback": traceback.format_exc()[-TAIL_CHARS:],
        }
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def run_part_child(part: Part, smoke: bool, work_dir: Path, timeout: float) -> tuple[dict[str, Any], str]:
    """Runs ``part`` in a new process group (so that its children, loader workers and DDP ranks included,
    are killed with it at the time limit); returns its report entry and its whole output, the logs of the
    commands it ran included."""
    script = str(Path(__file__).resolve())
    command = [sys.executable, script, "--run-part", part.name, "--work-dir", str(work_dir)]
    if smoke:
        command.append("--smoke")
    start = time.perf_counter()
    child = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        output, _ = child.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        timed_out = True
    with contextlib.suppress(ProcessLookupError):  # at the limit, or anything it left behind
        os.killpg(child.pid, signal.SIGKILL)
    if timed_out:
        output, _ = child.communicate()
    results = [line for line in output.splitlines() if line.startswith(RESULT_PREFIX)]
    if timed_out:
        entry = {"status": "timeout", "error": f"killed after {timeout:.0f} s"}
    elif results:
        entry = json.loads(results[-1][len(RESULT_PREFIX) :])
    else:
        entry = {"status": "failed", "error": f"exit {child.returncode} without a result"}
    output += "".join(
        f"\n----- {log.name}\n{log.read_text()}" for log in sorted(work_dir.glob("command*.log"))
    )
    entry["seconds"] = round(time.perf_counter() - start, 1)
    if entry["status"] != "ok":
        entry["output_tail"] = output[-TAIL_CHARS:]
    return entry, output


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
        if args.parts and part.name not in args.parts:
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
