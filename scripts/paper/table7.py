"""Table 7 rebuilt: parameters and per-image inference latency of Mask R-CNN, Light and Heavy, side by side.

    python scripts/paper/table7.py                             # R50 + X101, CPU (+ GPU fp32/bf16 with CUDA)
    python scripts/paper/table7.py --backbones resnet50 --size 512 --repeats 3 --devices cpu
    python scripts/paper/table7.py --json                      # one line: a list of rows
    python scripts/paper/table7.py --overrides +model.detector.rpn_post_nms_top_n_test=100  # any model option

Every model of a backbone is timed on the same images in one run, one image per forward (as the paper: one
image per GPU), in eval mode under ``torch.inference_mode`` after warm-up passes; the repeats are interleaved
across the models (so that load on the machine affects them alike) and the median over repeats is reported.
Images are the real COCO images of ``$DATNET_SHARED_DATA/tiny_coco`` (default ``<repo>/../shared/data``)
when present, else random tensors of ``size x 1.52 size`` (800 x 1216); the models resize them to a short
side of ``--size`` (long side at most ``1333 * size / 800``), as in the paper's COCO evaluation.

Weights are random (nothing is downloaded), and a random classifier scores every class about 1/81: with the
default box score threshold (0.05) no detection survives and the mask branch would look free; with threshold
0 all 80 x 1000 (box, class) candidates reach torchvision's per-class NMS, which then costs seconds on a CPU,
far more than for a trained model. So each model's threshold is calibrated on the first image to leave
``--candidates`` (default 2000, a trained COCO model's order of magnitude at 0.05) candidates per image: NMS
does its usual work and the full ``box_detections_per_img`` (100) detections go through the mask branch
and the mask pasting, as for a trained model on COCO. ``--candidates 0`` sets the threshold to 0 instead.
Frozen BatchNorm is folded into the convolutions of every model (``datnet.models.fold_batchnorm_``: the
same outputs, without two extra passes over every activation, which weigh most in the res5 ROI heads);
``--unfolded-bn`` times the layers as the paper's maskrcnn-benchmark ran them. Parameters are counted before
folding. Devices: ``cpu``; ``cuda-fp32`` (PyTorch's default precision settings) and ``cuda-bf16``
(``torch.autocast`` to bfloat16), timed with ``torch.cuda.synchronize``. ``--compile both`` times every model
eager and with its dense part compiled (``module.compile``), side by side in the same interleaved repeats.
"""

import argparse
import json
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from hydra.utils import instantiate
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision.ops.misc import FrozenBatchNorm2d

from datnet.configs import compose_config, shared_data_root
from datnet.data.image_io import read_rgb
from datnet.data.transforms import image_to_tensor
from datnet.models import compile_dense_, fold_batchnorm_
from datnet.paper_tables import TABLE7

PRESETS = ("maskrcnn", "light", "heavy")
BACKBONES = ("resnet50", "resnext101_32x8d")
DEVICES = ("cpu", "cuda-fp32", "cuda-bf16")
COCO_SHORT, COCO_LONG = 800, 1333
RANDOM_ASPECT = 1.52  # 800 x 1216, a typical COCO landscape image


def load_images(num_images: int, size: int, data_dir: Path) -> tuple[list[Tensor], str]:
    """``num_images`` float RGB images in [0, 1] and where they come from: the first (sorted) tiny_coco
    images, cycled if there are fewer, else seeded random tensors of ``size x RANDOM_ASPECT * size``."""
    files = sorted((data_dir / "tiny_coco").glob("*2017/*.jpg"))
    if files:
        chosen = [files[i % len(files)] for i in range(num_images)]
        images = [image_to_tensor(read_rgb(f)) for f in chosen]
        return images, f"tiny_coco ({', '.join(f.name for f in chosen)})"
    generator = torch.Generator().manual_seed(0)
    shape = (3, size, round(size * RANDOM_ASPECT))
    return [torch.rand(shape, generator=generator) for _ in range(num_images)], f"random {shape}"


def build_model(
    preset: str, backbone: str, size: int, num_classes: int = 81, overrides: tuple[str, ...] = ()
) -> nn.Module:
    """The ``conf/model/<preset>.yaml`` model with Hydra ``overrides``, random weights, eval mode, resizing to
    short side ``size``, frozen BatchNorm (as when trained from ImageNet weights, torchvision's setting)."""
    torch.manual_seed(0)
    cfg = compose_config(
        [
            f"+model={preset}",
            f"model.backbone.name={backbone}",
            "model.backbone.weights=scratch",  # random weights: no ImageNet file needed
            f"model.num_classes={num_classes}",
            "model.backbone.norm=frozen_bn",
            f"model.detector.min_size={size}",
            f"model.detector.max_size={round(COCO_LONG * size / COCO_SHORT)}",
            *overrides,
        ]
    )
    return instantiate(cfg.model).eval()


@torch.inference_mode()
def calibrate_score_threshold(model: nn.Module, image: Tensor, candidates: int, device: str) -> float:
    """Sets (and returns) the box score threshold that leaves ``candidates`` (box, class) pairs of ``image``
    before NMS (0: keep them all), from the foreground class scores of its proposals."""
    model.roi_heads.score_thresh = 0.0
    if candidates > 0:
        logits = []
        hook = model.roi_heads.box_predictor.register_forward_hook(lambda m, i, out: logits.append(out[0]))
        with precision_context(device):
            model([image])
        hook.remove()
        scores = logits[0].float().softmax(-1)[:, 1:].flatten()
        model.roi_heads.score_thresh = scores.topk(min(candidates, scores.numel())).values[-1].item()
    return model.roi_heads.score_thresh


@torch.inference_mode()
def count_gmacs(model: nn.Module, image: Tensor, device: str) -> float:
    """Billions of multiply-accumulates of one forward on ``image``, from torch's FLOP counter: the arithmetic
    share of a model. Convolutions and matrix products count; element-wise work, ROIAlign, NMS and mask
    pasting count nothing (they are the part of the time that arithmetic does not predict)."""
    with FlopCounterMode(display=False) as counter, precision_context(device):
        model([image])
    return counter.get_total_flops() / 2e9


def count_parameters(model: nn.Module) -> int:
    """Learned weights: the parameters plus the scale and shift of frozen BatchNorm layers (buffers there),
    so that the count is the preset's with trainable BatchNorm (Table 7, ``scripts/paper/model_report.py``).
    """
    frozen_layers = [m for m in model.modules() if isinstance(m, FrozenBatchNorm2d)]
    frozen = sum(m.weight.numel() + m.bias.numel() for m in frozen_layers)
    return sum(p.numel() for p in model.parameters()) + frozen


def precision_context(device: str):
    """bfloat16 autocast for ``cuda-bf16``, nothing otherwise."""
    if device == "cuda-bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def synchronize(device: str) -> None:
    """Waits for queued GPU work, so that wall-clock time covers it."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@torch.inference_mode()
def time_pass(model: nn.Module, images: list[Tensor], device: str) -> tuple[float, float]:
    """One forward per image; returns the mean milliseconds per image and detections per image."""
    elapsed, detections = 0.0, 0
    with precision_context(device):
        for image in images:
            synchronize(device)
            start = time.perf_counter()
            output = model([image])
            synchronize(device)
            elapsed += time.perf_counter() - start
            detections += len(output[0]["boxes"])
    return 1000 * elapsed / len(images), detections / len(images)


COMPILE_CHOICES = {"off": (False,), "on": (True,), "both": (False, True)}


def benchmark_backbone(
    backbone: str, presets: list[str], device: str, images: list[Tensor], args: argparse.Namespace
) -> list[dict]:
    """Rows for every preset (eager and/or compiled) on one backbone and device: warm-up, then interleaved
    repeats, median. A compiled model has its dense part (backbone, auxiliary heads, fusion) compiled by
    ``datnet.models.compile_dense_`` after BatchNorm folding; its warm-up passes include the compilation."""
    torch_device = "cuda" if device.startswith("cuda") else "cpu"
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    variants = [(p, compiled) for compiled in COMPILE_CHOICES[args.compile] for p in presets]
    models = {
        variant: build_model(variant[0], backbone, args.size, args.num_classes, args.overrides).to(
            torch_device, memory_format=memory_format
        )
        for variant in variants
    }
    params = {variant: count_parameters(model) for variant, model in models.items()}
    for (_, compiled), model in models.items():
        if not args.unfolded_bn:
            fold_batchnorm_(model)
        if compiled:
            compile_dense_(model)
    on_device = [image.to(torch_device) for image in images]
    detections, gmacs = {}, {}
    for variant, model in models.items():
        calibrate_score_threshold(model, on_device[0], args.candidates, device)
        if not variant[1]:  # the FLOP counter does not see through compiled code; the arithmetic is the same
            gmacs[variant[0]] = count_gmacs(model, on_device[0], device)
        for _ in range(args.warmup):
            detections[variant] = time_pass(model, on_device, device)[1]
    times: dict[tuple[str, bool], list[float]] = {variant: [] for variant in models}
    for _ in range(args.repeats):
        for variant, model in models.items():
            times[variant].append(time_pass(model, on_device, device)[0])
    rows = []
    for (preset, compiled), ms_list in times.items():
        rows.append(
            {
                "model": preset,
                "backbone": backbone,
                "device": device,
                "compiled": compiled,
                "ms_per_image": round(statistics.median(ms_list), 2),
                "ratio_to_maskrcnn": None,
                "params": params[preset, compiled],
                "gmac_per_image": None if preset not in gmacs else round(gmacs[preset], 3),
                "gmac_ratio_to_maskrcnn": None,
                "detections_per_image": detections.get((preset, compiled)),
            }
        )
    return rows


def add_ratios(rows: list[dict]) -> list[dict]:
    """``ratio_to_maskrcnn`` (time) and ``gmac_ratio_to_maskrcnn`` (arithmetic) over Mask R-CNN's on the
    same backbone and device, eager or compiled alike (None without it); the arithmetic of a compiled model is
    its eager twin's."""
    gmacs = {(r["model"], r["backbone"], r["device"]): r["gmac_per_image"] for r in rows if not r["compiled"]}
    for row in rows:
        if row["gmac_per_image"] is None:
            row["gmac_per_image"] = gmacs.get((row["model"], row["backbone"], row["device"]))
    baseline = {(r["backbone"], r["device"], r["compiled"]): r for r in rows if r["model"] == "maskrcnn"}
    pairs = (("ms_per_image", "ratio_to_maskrcnn"), ("gmac_per_image", "gmac_ratio_to_maskrcnn"))
    for row in rows:
        base = baseline.get((row["backbone"], row["device"], row["compiled"]))
        for key, ratio in pairs:
            row[ratio] = round(row[key] / base[key], 3) if base and row[key] is not None else None
    return rows


def print_table(rows: list[dict], source: str, args: argparse.Namespace) -> None:
    """The measured rows (time, its ratio, the arithmetic and its ratio) with the paper's Table 7 (P100 ms,
    ratio, millions of parameters) beside them."""
    print(f"images: {source}; short side {args.size}; {args.repeats} repeats (median), {args.warmup} warm-up")
    header = f"{'model':<10}{'backbone':<18}{'device':<19}{'ms/img':>9}{'ratio':>7}{'GMAC':>7}{'ratio':>7}"
    print(header + f"{'dets':>6}{'params (M)':>12}{'paper ms':>10}{'ratio':>7}{'params':>8}")
    for row in rows:
        paper_ms, paper_params = TABLE7.get((row["model"], row["backbone"]), (None, None))
        paper_base = TABLE7.get(("maskrcnn", row["backbone"]), (None,))[0]
        ratios = [
            "-" if row[key] is None else f"{row[key]:.2f}"
            for key in ("ratio_to_maskrcnn", "gmac_ratio_to_maskrcnn")
        ]
        paper = f"{paper_ms:>10}{paper_ms / paper_base:>7.2f}{paper_params:>8.1f}" if paper_ms else ""
        device = row["device"] + (" compiled" if row["compiled"] else "")
        print(
            f"{row['model']:<10}{row['backbone']:<18}{device:<19}{row['ms_per_image']:>9.1f}"
            f"{ratios[0]:>7}{row['gmac_per_image']:>7.0f}{ratios[1]:>7}"
            f"{row['detections_per_image'] or 0:>6.0f}{row['params'] / 1e6:>12.2f}{paper}"
        )


def default_devices() -> list[str]:
    """CPU, plus GPU fp32 and bf16 when CUDA is available."""
    return list(DEVICES) if torch.cuda.is_available() else ["cpu"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON line (a list of rows)")
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES))
    parser.add_argument("--models", nargs="+", choices=PRESETS, default=list(PRESETS))
    parser.add_argument("--devices", nargs="+", choices=DEVICES, default=None, help="default: all available")
    parser.add_argument("--num-images", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="warm-up passes over the images per model")
    parser.add_argument("--size", type=int, default=COCO_SHORT, help="short image side")
    parser.add_argument("--num-classes", type=int, default=81)
    parser.add_argument(
        "--candidates", type=int, default=2000, help="(box, class) pairs per image before NMS; 0: all"
    )
    parser.add_argument(
        "--compile",
        choices=sorted(COMPILE_CHOICES),
        default="off",
        help="torch.compile the dense part (module.compile); both: eager and compiled side by side",
    )
    parser.add_argument("--channels-last", action="store_true", help="weights in channels-last memory format")
    parser.add_argument(
        "--unfolded-bn",
        action="store_true",
        help="keep frozen BatchNorm as separate layers (as the paper's maskrcnn-benchmark ran) instead of "
        "folding it into the convolutions",
    )
    parser.add_argument(
        "--overrides",
        nargs="+",
        default=[],
        help="more Hydra overrides for every model, e.g. +model.detector.rpn_post_nms_top_n_test=100",
    )
    args = parser.parse_args(argv)
    args.devices = args.devices or default_devices()
    if any(d.startswith("cuda") for d in args.devices) and not torch.cuda.is_available():
        parser.error("a cuda device was requested but torch.cuda.is_available() is False")
    if min(args.num_images, args.repeats, args.warmup) < 1:
        parser.error("--num-images, --repeats and --warmup must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    images, source = load_images(args.num_images, args.size, shared_data_root())
    rows = [
        row
        for backbone in args.backbones
        for device in args.devices
        for row in benchmark_backbone(backbone, args.models, device, images, args)
    ]
    add_ratios(rows)
    if args.json:
        print(json.dumps(rows))
    else:
        print_table(rows, source, args)


if __name__ == "__main__":
    main()
