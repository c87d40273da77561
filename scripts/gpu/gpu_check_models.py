"""The GPU check's parts that build models in their own process and check them there: ``model_checks`` and
``channels_last``; and what every such part uses (models, the real training loader on tiny_coco, one step)."""

import math
import statistics
import time
from collections.abc import Iterator
from typing import Any

import torch
from gpu_check_settings import Context
from omegaconf import DictConfig
from torch.utils.data import DataLoader


# --- models, data and steps ---
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


def train_config(ctx: Context, batch_size: int, preset: str = "light") -> DictConfig:
    """``conf/train.yaml`` as a COCO training run of ``preset`` composes it, on tiny_coco
    (:func:`datnet.configs.shared_data_root`), multi-scale, ``batch_size`` images per batch and the check's
    loader workers (its ``schedule`` is the paper's 1x). Its ``data`` is the same for the three presets (their
    ``model.aux.loss_stride``, which ``data.aux_stride`` follows, is 1)."""
    from datnet.configs import compose_config, shared_data_root

    s = ctx.settings
    root = shared_data_root() / "tiny_coco"
    if not (root / "annotations").is_dir():
        raise FileNotFoundError(f"no tiny_coco at {root} (set DATNET_SHARED_DATA to the shared data folder)")
    overrides = [f"data.root={root}", f"data.batch_size={batch_size}", f"data.num_workers={s.num_workers}"]
    pin = str(s.device == "cuda").lower()
    return compose_config(
        ["data=coco", f"model={preset}", *overrides, f"data.pin_memory={pin}", *s.loader_overrides], "train"
    )


def coco_data(ctx: Context, batch_size: int, preset: str = "light") -> Any:
    """The COCO data module of :func:`train_config`: its ``train_dataloader`` is the project's real training
    loader (multi-scale resize, flips, jitter, DT and semantic targets in the loader workers, aspect-ratio
    groups)."""
    from hydra.utils import instantiate

    return instantiate(train_config(ctx, batch_size, preset).data)


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
    return {k: float(v.detach()) for k, v in losses.items()}


def sgd(model: torch.nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=1e-3, momentum=0.9, weight_decay=1e-4)


def cycle(loader: DataLoader) -> Iterator:
    while True:
        yield from loader


def peak_memory_mb(device: str) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**20, 1) if device == "cuda" else None


def reset_peak_memory(device: str) -> None:
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


# --- the parts ---
def part_model_checks(ctx: Context) -> dict[str, Any]:
    from datnet.contract import grid_shape

    device = ctx.settings.device
    result: dict[str, Any] = {}
    # an all-negative batch: no instance in any image, every DT/semantic pixel background
    model = build_model(ctx, "light").train()
    h, w = ctx.settings.min_size, ctx.settings.min_size * 3 // 2
    images = [torch.rand(3, h, w, device=device) for _ in range(2)]
    aux_size = grid_shape(h, w, model.auxiliary.loss_stride)
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


def part_channels_last(ctx: Context) -> dict[str, Any]:
    """Heavy's training step with and without channels-last, on the same cached batches, interleaved."""
    s = ctx.settings
    batches = cycle(coco_data(ctx, s.batch_size, "heavy").train_dataloader())
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
