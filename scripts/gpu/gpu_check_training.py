"""The GPU check's training-speed parts on real COCO batches (tiny_coco train through the project's training
loader, multi-scale): ``coco_step`` (Light vs Mask R-CNN at each batch size, and the 1x schedule's time on 8
GPUs estimated from them) and ``coco_compile`` (the dense part compiled vs eager)."""

import itertools
import math
import statistics
import time
from collections.abc import Iterator
from typing import Any

import torch
from gpu_check_models import (
    autocast,
    build_model,
    coco_data,
    cycle,
    peak_memory_mb,
    reset_peak_memory,
    sgd,
    synchronize,
    to_device,
    train_config,
    training_step,
)
from gpu_check_settings import Context, report_partial
from omegaconf import DictConfig

PRESETS = ("maskrcnn", "light")
GPU_BATCH = 2  # images per GPU in the 1x schedule on 8 GPUs (16 per step)
COCO_VAL_IMAGES = 5000  # val2017: what each validation of a COCO run evaluates
SCHEDULE_FORMULA = (
    "hours = (max_steps * step_ms_median[batch gpu_batch] + validations * ceil(val_images / gpus) * "
    "val_ms_per_image) / 3.6e6; gpus = reference_batch_size / gpu_batch; validations = max_steps // "
    "val_every; one GPU's step time (DDP's gradient all-reduce, loader stalls, COCO scoring and checkpoints "
    "not included)"
)


# --- measuring ---
def timed_steps(
    ctx: Context, model: torch.nn.Module, batches: Iterator, steps: int
) -> tuple[list[float], list[float], dict[str, float]]:
    """``steps`` bf16 SGD steps of ``model`` on ``batches``: each step's time (from the batch in hand to the
    optimizer step done, device synchronised) and the time waiting on the loader before it, in ms; the last
    step's losses."""
    device = ctx.settings.device
    optimizer = sgd(model)
    step_ms, wait_ms, losses = [], [], {}
    for _ in range(steps):
        synchronize(device)
        t0 = time.perf_counter()
        batch = next(batches)
        t1 = time.perf_counter()
        images, targets = to_device(batch, device)
        losses = training_step(model, optimizer, images, targets, device)
        synchronize(device)
        wait_ms.append(1000 * (t1 - t0))
        step_ms.append(1000 * (time.perf_counter() - t1))
    return step_ms, wait_ms, losses


def val_ms_per_image(ctx: Context, model: torch.nn.Module, datamodule: Any) -> float:
    """Median bf16 inference time per image of tiny_coco val through the validation loader (one image per
    batch, short side ``data.min_size``), detections pasted at the original size as in a validation; the
    first image, the warm-up, left out."""
    device = ctx.settings.device
    model.eval()
    times = []
    with torch.inference_mode():
        for images, targets, _ in itertools.islice(datamodule.val_dataloader(), ctx.settings.val_images + 1):
            images = [image.to(device) for image in images]
            sizes = [tuple(int(v) for v in t["orig_size"]) for t in targets]
            synchronize(device)
            start = time.perf_counter()
            with autocast(device):
                model(images, output_sizes=sizes)
            synchronize(device)
            times.append(1000 * (time.perf_counter() - start))
    model.train()
    return round(statistics.median(times[1:] or times), 1)


def schedule_estimate(schedule: DictConfig, step_ms: float, val_ms: float) -> dict[str, Any]:
    """The schedule's time on ``reference_batch_size / GPU_BATCH`` GPUs (:data:`SCHEDULE_FORMULA`)."""
    gpus = schedule.reference_batch_size // GPU_BATCH
    validations = schedule.max_steps // schedule.val_every
    train_h = schedule.max_steps * step_ms / 3.6e6
    val_h = validations * math.ceil(COCO_VAL_IMAGES / gpus) * val_ms / 3.6e6
    hours = {"training_hours": round(train_h, 2), "validation_hours": round(val_h, 2)}
    return {"gpus": gpus, **hours, "hours": round(train_h + val_h, 2)}


# --- the parts ---
def part_coco_step(ctx: Context) -> dict[str, Any]:
    """Light vs Mask R-CNN at each of ``step_batch_sizes``, ``warmup`` + ``steps`` bf16 steps each on real
    COCO batches: median step, mean loader wait, peak memory; the validation time per image; and from the
    batch-2 steps the paper's 1x schedule (``conf/schedule/1x.yaml``) on 8 GPUs."""
    s = ctx.settings
    rows: dict[str, Any] = {}
    val_ms: dict[str, float] = {}
    for batch_size in s.step_batch_sizes:
        datamodule = coco_data(ctx, batch_size)
        batches = cycle(datamodule.train_dataloader())  # its workers stay up for both models
        for preset in PRESETS:
            model = build_model(ctx, preset).train()
            reset_peak_memory(s.device)
            step_ms, wait_ms, losses = timed_steps(ctx, model, batches, s.warmup + s.steps)
            rows[f"{preset}_b{batch_size}"] = {
                "step_ms_median": round(statistics.median(step_ms[s.warmup :]), 1),
                "step_ms_first": round(step_ms[0], 1),
                "loader_wait_ms_mean": round(statistics.mean(wait_ms[s.warmup :]), 1),
                "peak_memory_mb": peak_memory_mb(s.device),
                "last_losses": {k: round(v, 4) for k, v in losses.items()},
            }
            if batch_size == GPU_BATCH:
                val_ms[preset] = val_ms_per_image(ctx, model, datamodule)
            del model
        del batches
    ratios = {
        f"b{b}": round(rows[f"light_b{b}"]["step_ms_median"] / rows[f"maskrcnn_b{b}"]["step_ms_median"], 3)
        for b in s.step_batch_sizes
    }
    schedule = train_config(ctx, GPU_BATCH).schedule  # conf/schedule/1x.yaml, the training default
    return {
        "batch_sizes": list(s.step_batch_sizes),
        "num_workers": s.num_workers,
        "precision": "bf16 autocast",
        "steps": rows,
        "light_over_maskrcnn_step": ratios,
        "val_ms_per_image": val_ms,
        "schedule_1x": {
            "formula": SCHEDULE_FORMULA,
            "max_steps": schedule.max_steps,
            "val_every": schedule.val_every,
            "val_images": COCO_VAL_IMAGES,
            "gpu_batch": GPU_BATCH,
            **{
                preset: schedule_estimate(schedule, rows[f"{preset}_b{GPU_BATCH}"]["step_ms_median"], ms)
                for preset, ms in val_ms.items()
            },
        },
    }


def part_coco_compile(ctx: Context) -> dict[str, Any]:
    """Light at batch 2 eager, then with the dense part compiled (``datnet.models.compile_dense_``, as
    ``module.compile=true``), ``compile_steps`` bf16 steps each on real COCO batches: the first step (the
    compilation, for the compiled model), the median and the longest of the others, the graphs compiled (more
    than one: Dynamo recompiled for a new kind of batch, e.g. torch 2.11 guards the parity of the padded
    height in the FPN's last max-pool)."""
    from datnet.models import compile_dense_

    s = ctx.settings
    batches = cycle(coco_data(ctx, GPU_BATCH).train_dataloader())
    rows = {}
    for mode in ("eager", "compiled"):
        model = build_model(ctx, "light").train()
        if mode == "compiled":
            compile_dense_(model, backend=s.compile_backend, cache_dir=ctx.work_dir / "compile_cache")
        reset_peak_memory(s.device)
        step_ms, wait_ms, _ = timed_steps(ctx, model, batches, s.compile_steps)
        rows[mode] = {
            "step_ms_first": round(step_ms[0], 1),
            "step_ms_median": round(statistics.median(step_ms[1:]), 1),
            "step_ms_max": round(max(step_ms[1:]), 1),  # a recompilation after the first step shows here
            "loader_wait_ms_mean": round(statistics.mean(wait_ms[1:]), 1),
            "peak_memory_mb": peak_memory_mb(s.device),
        }
        if mode == "compiled":
            rows[mode]["graphs"] = model._compiled_dense_features.graphs
        else:  # kept if the compilation outlasts the part's time limit
            report_partial({"model": "light", "batch_size": GPU_BATCH, "steps": s.compile_steps, **rows})
        del model
    return {
        "model": "light",
        "batch_size": GPU_BATCH,
        "steps": s.compile_steps,
        "backend": s.compile_backend,
        **rows,
        "compiled_over_eager": round(rows["compiled"]["step_ms_median"] / rows["eager"]["step_ms_median"], 3),
    }
