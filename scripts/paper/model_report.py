"""Parameter counts of the model presets against Table 7 of the paper, or the parameters and arithmetic of any
configured model per component.

    python scripts/paper/model_report.py            # a table
    python scripts/paper/model_report.py --json     # one line: rows {model, backbone, num_classes, params}
    python scripts/paper/model_report.py --flops model=heavy --size 800            # per component
    python scripts/paper/model_report.py --flops experiment=demo model.aux.dt=false --size 256 --json

Models are built from ``conf/`` with random weights (nothing is downloaded). ``--flops`` composes
``conf/train.yaml`` with the given Hydra overrides (any ``model=``, ``experiment=``, ``ablation=`` or key),
builds its model (``model.num_classes`` classes, 81 unless overridden) resizing to a short side of
``--size`` (long side at most ``1333 * size / 800``, as in the paper's COCO evaluation) and runs one image
through it under torch's FLOP counter, whose module hierarchy gives the GFLOPs of each component: the
backbone (ResNet-FPN), the auxiliary DT/semantic heads, their fusion into the pyramid, the RPN and the ROI
heads; ``other`` is what runs outside them (resizing, normalisation, mask pasting: nothing the counter
counts). One multiply-accumulate is 2 FLOPs (``scripts/paper/table7.py`` reports GMAC, half these numbers).
The image and the calibration of the box score threshold are Table 7's (``table7.py``): the first
tiny_coco image of ``$DATNET_SHARED_DATA`` (else a random one), and a threshold that leaves ``--candidates``
(box, class) pairs before NMS, so that the mask branch runs on a trained model's number of detections.
Convolutions and matrix products count; element-wise work, ROIAlign and NMS do not.
"""

import argparse
import json

import torch
from hydra.utils import instantiate
from table7 import COCO_LONG, COCO_SHORT, calibrate_score_threshold, count_parameters, load_images
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from datnet.configs import compose_config, shared_data_root
from datnet.paper_tables import TABLE7

# component -> its module's path in DATNet (auxiliary.* absent for plain Mask R-CNN)
COMPONENTS = {
    "backbone": "backbone",
    "aux heads": "auxiliary.heads",
    "fusion": "auxiliary.fusion",
    "RPN": "rpn",
    "ROI heads": "roi_heads",
}
OTHER = "other"
COCO_NUM_CLASSES = 81  # 80 categories and the background, unless model.num_classes is given


def count_parameters_of_preset(preset: str, backbone: str, num_classes: int) -> int:
    cfg = compose_config(
        [
            f"+model={preset}",
            f"model.backbone.name={backbone}",
            "model.backbone.weights=scratch",  # random weights: nothing to look for, the same parameters
            f"model.num_classes={num_classes}",
        ]
    )
    model = instantiate(cfg.model)
    return sum(p.numel() for p in model.parameters())


def table7_rows(num_classes: int) -> list[dict]:
    """Rows ``{model, backbone, num_classes, params}`` of the Table 7 presets."""
    return [
        {
            "model": preset,
            "backbone": backbone,
            "num_classes": num_classes,
            "params": count_parameters_of_preset(preset, backbone, num_classes),
        }
        for preset, backbone in TABLE7
    ]


def print_table7(rows: list[dict]) -> None:
    print(f"{'model':<10}{'backbone':<20}{'params (M)':>12}{'Table 7 (M)':>13}{'diff':>9}")
    for row in rows:
        paper = TABLE7[(row["model"], row["backbone"])][1]
        params = row["params"] / 1e6
        diff = params / paper - 1
        print(f"{row['model']:<10}{row['backbone']:<20}{params:>12.2f}{paper:>13.1f}{diff:>9.2%}")


def build_configured_model(overrides: list[str], size: int) -> nn.Module:
    """The model of ``conf/train.yaml`` with ``overrides``, random weights, in eval mode, resizing images to
    short side ``size``."""
    torch.manual_seed(0)
    cfg = compose_config(
        [
            *overrides,
            "model.backbone.weights=scratch",  # random weights: no ImageNet file needed
            f"model.detector.min_size={size}",
            f"model.detector.max_size={round(COCO_LONG * size / COCO_SHORT)}",
        ],
        config_name="train",
    )
    return instantiate(cfg.model, num_classes=cfg.model.num_classes or COCO_NUM_CLASSES).eval()


def module_flops(counts: dict[str, dict], name: str) -> int:
    """FLOPs of the module ``name`` in the counter's hierarchy: its own total when it ran as a module, else
    the sum of its children that did (a ``ModuleDict`` of heads is never called itself)."""
    if name in counts:
        return sum(counts[name].values())
    prefix = f"{name}."
    children = [key for key in counts if key.startswith(prefix) and "." not in key[len(prefix) :]]
    return sum(sum(counts[key].values()) for key in children)


@torch.inference_mode()
def component_report(model: nn.Module, image: Tensor) -> dict[str, dict[str, float]]:
    """``{component: {params, gflops}}`` of one forward of ``model`` on ``image``, with ``other`` (the rest)
    and ``total``."""
    with FlopCounterMode(display=False) as counter:
        model([image])
    counts, root = counter.get_flop_counts(), type(model).__name__
    counted = {}  # component: (params, FLOPs)
    for component, path in COMPONENTS.items():
        try:
            module = model.get_submodule(path)
        except AttributeError:  # no auxiliary heads: plain Mask R-CNN
            counted[component] = (0, 0)
            continue
        counted[component] = (count_parameters(module), module_flops(counts, f"{root}.{path}"))
    total = (count_parameters(model), counter.get_total_flops())
    counted[OTHER] = tuple(t - sum(c[i] for c in counted.values()) for i, t in enumerate(total))
    counted["total"] = total
    return {name: {"params": params, "gflops": flops / 1e9} for name, (params, flops) in counted.items()}


def flops_report(args: argparse.Namespace) -> dict:
    """The ``--flops`` result: the overrides, image, resized size, threshold and per-component rows."""
    model = build_configured_model(args.overrides, args.size)
    images, source = load_images(1, args.size, shared_data_root())
    threshold = calibrate_score_threshold(model, images[0], args.candidates, "cpu")
    with torch.inference_mode():
        resized = model.transform([images[0]])[0].image_sizes[0]
    return {
        "overrides": args.overrides,
        "size": args.size,
        "image": source,
        "resized": list(resized),
        "box_score_thresh": threshold,
        "components": component_report(model, images[0]),
    }


def print_flops(report: dict) -> None:
    print(f"overrides: {' '.join(report['overrides']) or '(none)'}; image: {report['image']}")
    height, width = report["resized"]
    print(f"resized to {height} x {width}; box score threshold {report['box_score_thresh']:.4g}")
    print(f"{'component':<12}{'params (M)':>12}{'GFLOPs':>10}")
    for component, row in report["components"].items():
        print(f"{component:<12}{row['params'] / 1e6:>12.2f}{row['gflops']:>10.2f}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="with --flops: Hydra overrides of conf/train.yaml")
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of a table")
    parser.add_argument("--num-classes", type=int, default=81, help="of the Table 7 presets")
    parser.add_argument("--flops", action="store_true", help="params and GFLOPs per component of one model")
    parser.add_argument("--size", type=int, default=COCO_SHORT, help="with --flops: short image side")
    parser.add_argument(
        "--candidates", type=int, default=2000, help="with --flops: (box, class) pairs before NMS; 0: all"
    )
    args = parser.parse_args(argv)
    if args.overrides and not args.flops:
        parser.error("Hydra overrides are for --flops (the Table 7 report builds the presets as they are)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result = flops_report(args) if args.flops else table7_rows(args.num_classes)
    if args.json:
        print(json.dumps(result))
    elif args.flops:
        print_flops(result)
    else:
        print_table7(result)


if __name__ == "__main__":
    main()
