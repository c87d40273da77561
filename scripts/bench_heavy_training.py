"""Heavy's ROI heads in training: one res5 pass (``shared_res5_losses``) vs torchvision's two-pass forward.

Times the ROI-head stage alone (sampling, MSPwA pooling, res5, box and mask losses, backward), both ways on
the same features, proposals and sampled ROIs, interleaved, median of repeats. Paper setting: ResNet-50,
frozen BatchNorm, 512 sampled ROIs per image with up to a quarter positives. One image with ``--objects``
ground-truth boxes; the proposals are ``--positives`` boxes jittered around them (IoU above 0.5: the
positives the sampler can take, at most a quarter of ``--rois``) and 1000 random boxes. The second pass costs
in proportion to the positives, so the saving is largest for crowded images.

    .venv/bin/python scripts/bench_heavy_training.py [--positives 128] [--size 512] [--repeats 3] [--json]
"""

import argparse
import json
import statistics
import time

import torch
from hydra.utils import instantiate
from torch import Tensor, nn

from datnet.configs import compose_config
from datnet.models.shared_res5 import shared_res5_losses


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--size", type=int, default=512, help="image side (features; ROI cost is per ROI)")
    parser.add_argument("--objects", type=int, default=8)
    parser.add_argument("--positives", type=int, default=128)
    parser.add_argument("--rois", type=int, default=512, help="sampled per image, a quarter at most positive")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON line only")
    args = parser.parse_args(argv)
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
                losses = shared_res5_losses(heads, features, proposals, shapes, targets)
            else:
                losses = heads(features, proposals, shapes, targets)[1]
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
