"""Training-step benchmarks on a CPU: Heavy's ROI heads, one res5 pass vs two; whole steps of the presets.

Default mode: Heavy's ROI heads in training, one res5 pass (``SharedRes5RoIHeads``) vs torchvision's
two-pass forward. Times the ROI-head stage alone (sampling, MSPwA pooling, res5, box and mask losses,
backward), both ways on the same features, proposals and sampled ROIs, interleaved, median of repeats.
Paper setting: ResNet-50, frozen BatchNorm, 512 sampled ROIs per image with up to a quarter positives. One
image with ``--objects`` ground-truth boxes; the proposals are ``--positives`` boxes jittered around them
(IoU above 0.5: the positives the sampler can take, at most a quarter of ``--rois``) and 1000 random boxes.
The second pass costs in proportion to the positives, so the saving is largest for crowded images.

    .venv/bin/python scripts/bench/bench_heavy_training.py [--positives 128] [--size 512] [--repeats 3]
        [--json]

``--steps``: whole training steps (forward with every loss, backward, SGD step) of one ``--height`` x
``--width`` image (default 800x1216, a COCO landscape image under the 800/1333 resize) for each of
``--variants`` (``preset[:loss_stride]``; default ``maskrcnn light:4 light:1``: Mask R-CNN, DATNet Light with
the auxiliary loss at the heads' stride 4 and at the image's resolution, Sec. 3.1), each in a fresh process:
ResNet-50 with frozen BatchNorm and 3 trainable stages (the paper's ImageNet fine-tuning; random weights,
nothing to download), ``--rois`` sampled ROIs (512), the data pipeline's targets (pixel-level DT/semantic
maps at the variant's stride, ``dense_aux_targets``) for ``--objects`` elliptical instances of 24 px to
45 % of the short side, a ``--channels``-wide pyramid (256). Per variant: the median step of ``--repeats``
after one warm-up step, wall-clock and process CPU time (``--threads``: torch's threads), their ratios to
the first variant's, and the process's peak resident memory during the timed steps, absolute and above
the resident memory between steps (activations and gradients; measured after the allocator's cache is
returned to the system and the peak reset: Linux, glibc).

    .venv/bin/python scripts/bench/bench_heavy_training.py --steps [--variants maskrcnn light:1] [--threads 1]
"""

import argparse
import ctypes
import gc
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from hydra.utils import instantiate
from torch import Tensor, nn
from torchvision.models.detection.roi_heads import RoIHeads

from datnet.configs import compose_config
from datnet.contract import pack_masks
from datnet.data.aux_targets import dense_aux_targets


def build_heavy(size: int, backbone: str, rois: int) -> nn.Module:
    """The Heavy preset on ``backbone`` with frozen BatchNorm, sampling ``rois`` ROIs per image, in training
    mode."""
    torch.manual_seed(0)
    cfg = compose_config(
        [
            "+model=heavy",
            f"model.backbone.name={backbone}",
            "model.backbone.weights=scratch",  # random weights: no ImageNet file needed
            "model.backbone.norm=frozen_bn",
            f"model.detector.min_size={size}",
            f"model.detector.max_size={size}",
            f"model.detector.box_batch_size_per_image={rois}",
            "model.num_classes=81",
        ]
    )
    return instantiate(cfg.model).train()


def scene(size: int, objects: int, positives: int) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    """Proposals and a target for one ``size x size`` image."""
    generator = torch.Generator().manual_seed(0)
    xy = torch.rand(objects, 2, generator=generator) * size * 0.6
    wh = 48 + torch.rand(objects, 2, generator=generator) * size * 0.3
    boxes = torch.cat([xy, xy + wh], dim=1)
    masks = torch.zeros(objects, size, size, dtype=torch.uint8)
    for mask, (x1, y1, x2, y2) in zip(masks, boxes.int().tolist()):
        mask[y1:y2, x1:x2] = 1
    around = boxes[torch.arange(positives) % objects]
    jitter = (
        (torch.rand(positives, 4, generator=generator) - 0.5)
        * 0.1
        * (around[:, 2:] - around[:, :2]).repeat(1, 2)
    )
    corners = torch.rand(1000, 2, generator=generator) * size * 0.8
    background = torch.cat([corners, corners + 16 + torch.rand(1000, 2, generator=generator) * 64], dim=1)
    target = {"boxes": boxes, "labels": torch.randint(1, 81, (objects,), generator=generator), "masks": masks}
    return [torch.cat([around + jitter, background])], [target]


def seconds(step) -> float:
    """Wall-clock seconds of one call of ``step``."""
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def build_preset(spec: dict, loss_stride: int) -> nn.Module:
    """The ``conf/model`` preset of ``spec["variant"]`` as the training pipeline builds it (the data
    pipeline resizes): ``spec["backbone"]`` with frozen BatchNorm and 3 trainable stages, random weights, a
    pyramid of ``spec["channels"]``, ``spec["rois"]`` sampled ROIs per image, the auxiliary loss at
    ``loss_stride``, for ``spec["height"]`` x ``spec["width"]`` images."""
    torch.manual_seed(0)
    cfg = compose_config(
        [
            f"+model={spec['variant'].partition(':')[0]}",
            f"model.backbone.name={spec['backbone']}",
            "model.backbone.weights=scratch",  # random weights: no ImageNet file needed
            "model.backbone.norm=frozen_bn",
            "model.backbone.trainable_layers=3",
            f"model.backbone.out_channels={spec['channels']}",
            f"model.aux.loss_stride={loss_stride}",
            f"model.detector.min_size={min(spec['height'], spec['width'])}",
            f"model.detector.max_size={max(spec['height'], spec['width'])}",
            f"model.detector.box_batch_size_per_image={spec['rois']}",
        ]
    )
    return instantiate(cfg.model, num_classes=81, resize_images=False).train()


def step_sample(height: int, width: int, objects: int, stride: int) -> tuple[Tensor, dict[str, Tensor]]:
    """One uint8 image and its target as a loader worker sends it: ``objects`` filled ellipses from 24 px
    to 45 % of the short side, bit-packed masks, and the DT/semantic maps at ``stride``."""
    rng = np.random.default_rng(0)
    sizes = np.geomspace(24, 0.45 * min(height, width), objects)
    masks = np.zeros((objects, height, width), np.uint8)
    boxes = []
    for mask, size in zip(masks, sizes):
        w, h = size * rng.uniform(0.7, 1.4), size * rng.uniform(0.7, 1.4)
        x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
        cv2.ellipse(
            mask, (round(x + w / 2), round(y + h / 2)), (round(w / 2), round(h / 2)), 0, 0, 360, 1, -1
        )
        bx, by, bw, bh = cv2.boundingRect(mask)
        boxes.append([bx, by, bx + bw, by + bh])
    labels = rng.integers(1, 81, objects)
    dt, sem = dense_aux_targets(masks, labels, np.zeros((0, height, width), np.uint8), stride)
    image = torch.from_numpy(rng.integers(0, 256, (3, height, width), dtype=np.uint8))
    target = {
        "boxes": torch.tensor(boxes, dtype=torch.float32),
        "labels": torch.from_numpy(labels),
        "masks_packed": torch.from_numpy(pack_masks(masks)),
        "dt": torch.from_numpy(dt),
        "sem": torch.from_numpy(sem),
    }
    return image, target


def status_mb(field: str) -> float:
    """A memory field of Linux ``/proc/self/status`` (``VmRSS``: resident now, ``VmHWM``: peak resident),
    MB of 10^6 bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024 / 1e6
    raise KeyError(f"{field} not in /proc/self/status")


def reset_peak_memory() -> float:
    """Returns the allocator's free memory to the system (glibc ``malloc_trim``), resets the peak resident
    memory to the current (``/proc/self/clear_refs``) and returns the resident memory, MB."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")
    return status_mb("VmRSS")


def time_training_steps(spec: dict) -> dict:
    """In this process: the median seconds of ``spec["repeats"]`` training steps of one variant after a
    warm-up step (which also loads every kernel's code and the optimiser state), and the peak resident
    memory during those steps, absolute and above the resident memory before them."""
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    stride = int(spec["variant"].partition(":")[2] or 1)
    model = build_preset(spec, stride)
    image, target = step_sample(spec["height"], spec["width"], spec["objects"], stride)
    optimizer = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=1e-5, momentum=0.9, weight_decay=1e-4
    )

    def step() -> None:
        optimizer.zero_grad()
        losses = model([image], [target])
        sum(losses.values()).backward()
        optimizer.step()

    step()  # warm-up
    gc.collect()
    before = reset_peak_memory()
    times, cpu_times = [], []
    for _ in range(spec["repeats"]):
        cpu_start = time.process_time()
        times.append(seconds(step))
        cpu_times.append(time.process_time() - cpu_start)
    peak = status_mb("VmHWM")
    return {
        "variant": spec["variant"],
        "ms_per_step": round(1000 * statistics.median(times), 1),
        "cpu_ms_per_step": round(1000 * statistics.median(cpu_times), 1),
        "peak_rss_mb": round(peak),
        "step_peak_mb": round(peak - before),
    }


def compare_training_steps(args: argparse.Namespace) -> dict:
    """``time_training_steps`` of every variant, each in a fresh process (so that each peak is its own),
    one after the other, with each step time's ratio to the first variant's."""
    rows = []
    for variant in args.variants:
        spec = {
            "variant": variant,
            "backbone": args.backbone,
            "height": args.height,
            "width": args.width,
            "objects": args.objects,
            "rois": args.rois,
            "channels": args.channels,
            "repeats": args.repeats,
            "threads": args.threads,
        }
        out = subprocess.run(
            [sys.executable, __file__, "--child", json.dumps(spec)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    for row in rows:
        row["ratio"] = round(row["ms_per_step"] / rows[0]["ms_per_step"], 2)
        row["cpu_ratio"] = round(row["cpu_ms_per_step"] / rows[0]["cpu_ms_per_step"], 2)
    return {"image": [args.height, args.width], "backbone": args.backbone, "variants": rows}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", action="store_true", help="whole training steps of --variants")
    parser.add_argument("--variants", nargs="+", default=["maskrcnn", "light:4", "light:1"])
    parser.add_argument("--height", type=int, default=800, help="--steps: image height")
    parser.add_argument("--width", type=int, default=1216, help="--steps: image width")
    parser.add_argument("--channels", type=int, default=256, help="--steps: pyramid width")
    parser.add_argument("--threads", type=int, default=0, help="--steps: torch threads (0: torch's default)")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # one variant's steps, JSON spec (internal)
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--size", type=int, default=512, help="image side (features; ROI cost is per ROI)")
    parser.add_argument("--objects", type=int, default=8, help="ground-truth instances")
    parser.add_argument("--positives", type=int, default=128)
    parser.add_argument("--rois", type=int, default=512, help="sampled per image, a quarter at most positive")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON line only")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(time_training_steps(json.loads(args.child))))
        return
    if args.steps:
        result = compare_training_steps(args)
        if args.json:
            print(json.dumps(result))
            return
        print(f"{args.backbone}, one {args.height}x{args.width} image per step, frozen BN")
        columns = ("ms_per_step", "ratio", "cpu_ms_per_step", "cpu_ratio", "peak_rss_mb", "step_peak_mb")
        print(f"{'variant':<10}" + "".join(f"{c:>17}" for c in columns))
        for row in result["variants"]:
            print(f"{row['variant']:<10}" + "".join(f"{row[c]:>17}" for c in columns))
        return
    model = build_heavy(args.size, args.backbone, args.rois)
    heads = model.roi_heads
    proposals, targets = scene(args.size, args.objects, args.positives)
    with torch.no_grad():
        features = model.backbone(torch.rand(1, 3, args.size, args.size))
    shapes = [(args.size, args.size)]

    def step(shared: bool):
        def run() -> None:
            model.zero_grad()
            torch.manual_seed(0)
            if shared:
                losses = heads(features, proposals, shapes, targets)[1]
            else:  # torchvision's forward: the mask branch pools and runs res5 again
                losses = RoIHeads.forward(heads, features, proposals, shapes, targets)[1]
            sum(losses.values()).backward()

        return run

    steps = {"one_pass": step(True), "two_pass": step(False)}
    for run in steps.values():
        run()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, run in steps.items():
            times[name].append(seconds(run))
    labels = heads.select_training_samples(proposals, targets)[2]
    result = {
        "sampled_rois": int(labels[0].numel()),
        "positives": int((labels[0] > 0).sum()),
        **{f"ms_{name}": round(1000 * statistics.median(t), 1) for name, t in times.items()},
    }
    result["ratio_one_to_two_pass"] = round(result["ms_one_pass"] / result["ms_two_pass"], 3)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:<24}{value}")


if __name__ == "__main__":
    main()
